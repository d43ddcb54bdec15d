//! # dialtone-test-support — real peers for Dialtone's tests
//!
//! Everything `dialtone-peers` has (SIPp and its scenarios, RTP captures, work directories),
//! re-exported, and what only tests need: Kamailio ([`Kamailio`]) and baresip
//! ([`media::Baresip`]) on free loopback ports, ready once they have bound them (readiness, not
//! a fixed sleep) and killed when dropped; espeak-ng speech ([`media`]); tones and their
//! measurement ([`audio`]); a DNS server ([`dns`]); a seeded impairing UDP reflector
//! ([`impair`]); signatures checked by `openssl`; the tests' PostgreSQL database
//! ([`postgres_test_url`]); with the `openai` feature, a scripted OpenAI-compatible server
//! (`openai::ScriptedOpenAi`); with the `deepgram`, `cartesia` and `elevenlabs` features,
//! scripted websocket peers of those streaming speech services (`deepgram::ScriptedDeepgram`,
//! `cartesia::ScriptedCartesia`, `elevenlabs::ScriptedElevenLabs`, sharing `websocket`); a
//! labelled set of answering-machine-detection clips, person pick-ups and machine greetings
//! sent down a telephone line, generated at test time ([`amd_set`]); a throw-away certificate
//! authority for TLS peers ([`pki`]); a loopback capture of UDP datagrams with tshark
//! ([`sniff`]); with the `s3` feature, a real S3-compatible server on loopback (`s3::S3Server`).

pub mod amd_set;
pub mod audio;
#[cfg(feature = "cartesia")]
pub mod cartesia;
#[cfg(feature = "deepgram")]
pub mod deepgram;
pub mod dns;
#[cfg(feature = "elevenlabs")]
pub mod elevenlabs;
pub mod impair;
pub mod media;
#[cfg(feature = "openai")]
pub mod openai;
pub mod pki;
#[cfg(feature = "s3")]
pub mod s3;
pub mod sniff;
#[cfg(any(feature = "deepgram", feature = "cartesia", feature = "elevenlabs"))]
pub mod websocket;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub use dialtone_peers::{
    PeerError, SipTransport, Sipp, SippOptions, WorkDir, free_port, scenario, sipp_play_pcap,
    wait_port_bound,
};

/// Writes `seconds` of a sine tone at `hz` and `amplitude` as headerless PCMU (µ-law), the
/// format SIPp's `rtp_stream` plays, and returns its path.
pub fn write_ulaw_tone(
    path: &Path,
    hz: f64,
    amplitude: f64,
    seconds: u32,
) -> Result<PathBuf, PeerError> {
    let bytes: Vec<u8> = (0..8000 * seconds)
        .map(|i| {
            let s = amplitude * (2.0 * std::f64::consts::PI * hz * f64::from(i) / 8000.0).sin();
            dialtone_codec::linear_to_ulaw(s as i16)
        })
        .collect();
    std::fs::write(path, bytes).map_err(PeerError::io(format!("writing {}", path.display())))?;
    Ok(path.to_path_buf())
}

/// A Kamailio process run from a configuration template, in the foreground.
#[derive(Debug)]
pub struct Kamailio {
    child: Child,
    /// The port it listens on (UDP and TCP).
    pub port: u16,
    dir: WorkDir,
}

impl Kamailio {
    /// Starts Kamailio with `config`, `__PORT__` set to a free port and every other `__KEY__`
    /// replaced; waits until it has bound UDP and TCP.
    pub fn start(config: &Path, replacements: &[(&str, String)]) -> Result<Kamailio, PeerError> {
        let port = free_port()?;
        let dir = WorkDir::for_peer("kamailio")?;
        let mut text = std::fs::read_to_string(config)
            .map_err(PeerError::io(format!("reading {}", config.display())))?;
        text = text.replace("__PORT__", &port.to_string());
        for (key, value) in replacements {
            text = text.replace(&format!("__{}__", key.to_uppercase()), value);
        }
        let cfg = dir.path().join("kamailio.cfg");
        std::fs::write(&cfg, text).map_err(PeerError::io("writing kamailio.cfg"))?;
        Self::launch(&cfg, port, dir, &[], true)
    }

    /// Starts Kamailio with `config` (a template like `kamailio-tls-auth-proxy.cfg`) and its TLS
    /// module presenting `server` (issued by `ca`) on a free port, `__TLS_PORT__`, with
    /// `__TLS_CFG__` the module's settings; with `client_certificates`, only clients with a
    /// certificate from `ca` get through (mutual TLS). Returns it and its TLS port.
    pub fn start_tls(
        config: &Path,
        replacements: &[(&str, String)],
        ca: &pki::TestCa,
        server: &pki::Issued,
        client_certificates: bool,
    ) -> Result<(Kamailio, u16), PeerError> {
        let tls_port = free_port()?;
        let ask = if client_certificates { "yes" } else { "no" };
        let tls_cfg = ca.dir().join(format!("kamailio-tls-{tls_port}.cfg"));
        std::fs::write(
            &tls_cfg,
            format!(
                "[server:default]\nmethod = TLSv1.2+\nverify_certificate = {ask}\n\
                 require_certificate = {ask}\nprivate_key = {}\ncertificate = {}\nca_list = {}\n\n\
                 [client:default]\nmethod = TLSv1.2+\nverify_certificate = no\n\
                 require_certificate = no\n",
                server.key_path.display(),
                server.cert_path.display(),
                ca.ca.cert_path.display(),
            ),
        )
        .map_err(PeerError::io("writing Kamailio's TLS settings"))?;
        let mut all = replacements.to_vec();
        all.push(("tls_port", tls_port.to_string()));
        all.push(("tls_cfg", tls_cfg.display().to_string()));
        let kamailio = Self::start(config, &all)?;
        wait_port_bound("kamailio", tls_port, SipTransport::Tcp)?;
        Ok((kamailio, tls_port))
    }

    /// Starts Kamailio with `config` as it is, its `#!define`s overridden with `-A`: `LISTEN`
    /// set to UDP on a free loopback port, and `defines` (numbers as they are, other values
    /// quoted as strings).
    pub fn start_defined(config: &Path, defines: &[(&str, String)]) -> Result<Kamailio, PeerError> {
        let port = free_port()?;
        let dir = WorkDir::for_peer("kamailio")?;
        let mut args = vec!["-A".to_owned(), format!("LISTEN=udp:127.0.0.1:{port}")];
        for (key, value) in defines {
            args.push("-A".into());
            if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                args.push(format!("{key}={value}"));
            } else {
                args.push(format!("{key}=\"{value}\""));
            }
        }
        Self::launch(config, port, dir, &args, false)
    }

    fn launch(
        cfg: &Path,
        port: u16,
        dir: WorkDir,
        args: &[String],
        tcp: bool,
    ) -> Result<Kamailio, PeerError> {
        let log = std::fs::File::create(dir.path().join("kamailio.log"))
            .map_err(PeerError::io("creating kamailio.log"))?;
        let child = Command::new("kamailio")
            .current_dir(dir.path())
            .arg("-f")
            .arg(cfg)
            .args(args)
            .args(["-DD", "-E", "-m", "64", "-M", "8", "-w"])
            .arg(dir.path())
            .arg("-P")
            .arg(dir.path().join("kamailio.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .process_group(0)
            .spawn()
            .map_err(PeerError::io("starting kamailio (Debian package kamailio)"))?;
        let k = Kamailio { child, port, dir };
        wait_port_bound("kamailio", port, SipTransport::Udp)?;
        if tcp {
            wait_port_bound("kamailio", port, SipTransport::Tcp)?;
        }
        Ok(k)
    }

    /// Kamailio's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    /// Kills the whole process group: Kamailio's worker processes are its children, and
    /// killing only the main one would leave them holding the port.
    fn drop(&mut self) {
        let group = i32::try_from(self.child.id()).map(nix::unistd::Pid::from_raw);
        match group {
            Ok(group) => {
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            }
            Err(_) => {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

/// HMAC-SHA256 of `data` under `key`, hex, computed by the `openssl` program: code that shares
/// nothing with ours, for checking signatures.
pub fn openssl_hmac_sha256(key: &str, data: &str) -> Result<String, PeerError> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", key, "-r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(PeerError::io("starting openssl"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(data.as_bytes())
            .map_err(PeerError::io("writing to openssl"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(PeerError::io("waiting for openssl"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// The PostgreSQL database the tests use: `DIALTONE_TEST_POSTGRES_URL`, by default
/// `postgres://postgres@127.0.0.1:5432/test` (what scripts/postgres.sh sets up), once `psql`
/// (Debian package postgresql-client) has run a query in it. Where it cannot: under CI (`CI`
/// set and not empty), where scripts/test.sh has set the database up, a panic saying why;
/// elsewhere `None`, the reason on stderr, and the caller skips its PostgreSQL half.
pub fn postgres_test_url() -> Option<String> {
    use std::io::Write;
    let url = std::env::var("DIALTONE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let reason = match Command::new("psql")
        .arg(&url)
        .args(["-Atqc", "SELECT 1"])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
    {
        Ok(out) if out.status.success() => return Some(url),
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        Err(e) => format!("cannot run psql (Debian package postgresql-client): {e}"),
    };
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    assert!(
        !ci,
        "PostgreSQL at {url} does not answer, and under CI the PostgreSQL tests must run \
         (scripts/postgres.sh sets it up): {reason}"
    );
    // Straight to stderr, past the test harness's capture: the skip shows in a passing run.
    let _ = writeln!(
        std::io::stderr(),
        "PostgreSQL half skipped (CI is not set): {url} does not answer: {reason}"
    );
    None
}
