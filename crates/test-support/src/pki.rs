//! A throw-away certificate authority for TLS tests, made with the `openssl` program: a CA,
//! and leaf certificates it signs for loopback names (`localhost`, `127.0.0.1`), as PEM files
//! in a work directory and as text.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{PeerError, WorkDir};

/// A certificate and its private key, as files and as PEM text.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate file.
    pub cert_path: PathBuf,
    /// The private key file (PKCS#8).
    pub key_path: PathBuf,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM.
    pub key_pem: String,
}

impl Issued {
    /// The certificate followed by its key in one file (the form baresip's
    /// `sip_certificate` takes), written next to them.
    pub fn combined_path(&self) -> Result<PathBuf, PeerError> {
        let path = self.cert_path.with_extension("combined.pem");
        std::fs::write(&path, format!("{}{}", self.cert_pem, self.key_pem))
            .map_err(PeerError::io(format!("writing {}", path.display())))?;
        Ok(path)
    }
}

/// A test CA in its own work directory.
#[derive(Debug)]
pub struct TestCa {
    dir: WorkDir,
    /// The CA's own certificate and key.
    pub ca: Issued,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), PeerError> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(PeerError::io("running openssl (Debian package openssl)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PeerError::Io {
            what: format!("openssl {}", args.join(" ")),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()),
        })
    }
}

fn read(path: &Path) -> Result<String, PeerError> {
    std::fs::read_to_string(path).map_err(PeerError::io(format!("reading {}", path.display())))
}

impl TestCa {
    /// A new CA named `name` (its subject's common name), valid for two days.
    pub fn new(name: &str) -> Result<TestCa, PeerError> {
        let dir = WorkDir::for_peer("pki")?;
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )?;
        let ca = Issued {
            cert_path: dir.path().join("ca.pem"),
            key_path: dir.path().join("ca.key"),
            cert_pem: read(&dir.path().join("ca.pem"))?,
            key_pem: read(&dir.path().join("ca.key"))?,
        };
        Ok(TestCa { dir, ca })
    }

    /// A leaf certificate for `names` (DNS names or IP addresses), usable by a TLS server and
    /// client alike, stored as `<file>.pem` and `<file>.key`.
    pub fn issue(&self, file: &str, names: &[&str]) -> Result<Issued, PeerError> {
        let dir = self.dir.path();
        let san: Vec<String> = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(_) => format!("IP:{n}"),
                Err(_) => format!("DNS:{n}"),
            })
            .collect();
        let ext = dir.join(format!("{file}.ext"));
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth,clientAuth\n",
                san.join(",")
            ),
        )
        .map_err(PeerError::io("writing a certificate extension file"))?;
        let (key, csr, pem) = (
            format!("{file}.key"),
            format!("{file}.csr"),
            format!("{file}.pem"),
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={}", names.first().copied().unwrap_or(file)),
            ],
        )?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &pem,
                "-extfile",
                &format!("{file}.ext"),
            ],
        )?;
        Ok(Issued {
            cert_path: dir.join(&pem),
            key_path: dir.join(&key),
            cert_pem: read(&dir.join(&pem))?,
            key_pem: read(&dir.join(&key))?,
        })
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
