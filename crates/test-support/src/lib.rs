//! # dialtone-test-support — real peers for Dialtone's tests
//!
//! Starts SIPp (Debian package `sip-tester`) on a free loopback port with a scenario file,
//! waits until it has bound its port (readiness, not a fixed sleep), and checks its verdict.
//! Every peer listens on 127.0.0.1 only and is killed when dropped. Finds the tests' PostgreSQL
//! database ([`postgres_test_url`]).

pub mod audio;
pub mod dns;
pub mod impair;
pub mod media;

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The path of a scenario or configuration file shipped in this crate's `scenarios/` folder.
pub fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

/// Errors starting or judging a peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// Reading the scenario or writing the work directory failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The peer did not bind its port in time.
    #[error("{peer} did not bind port {port} within {seconds} s")]
    NotReady {
        /// Which program.
        peer: &'static str,
        /// The port.
        port: u16,
        /// How long we waited.
        seconds: u64,
    },
    /// The peer did not finish in time (it was killed).
    #[error("{peer} did not finish within {seconds} s")]
    Timeout {
        /// Which program.
        peer: &'static str,
        /// How long we waited.
        seconds: u64,
    },
    /// The peer finished and reported failed calls.
    #[error("{peer} failed ({status}):\n{log}")]
    Failed {
        /// Which program.
        peer: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// Its stderr and error traces.
        log: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PeerError {
    let what = what.into();
    move |source| PeerError::Io { what, source }
}

/// SIP transport for a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipTransport {
    /// UDP, one socket.
    Udp,
    /// TCP, one connection per peer.
    Tcp,
}

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
    std::fs::write(path, bytes).map_err(io(format!("writing {}", path.display())))?;
    Ok(path.to_path_buf())
}

/// Readiness of a peer: its port on 127.0.0.1 is taken once it has bound it.
fn wait_port_bound(
    peer: &'static str,
    port: u16,
    transport: SipTransport,
) -> Result<(), PeerError> {
    let limit = Duration::from_secs(10);
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let taken = match transport {
            SipTransport::Udp => UdpSocket::bind(("127.0.0.1", port)).is_err(),
            SipTransport::Tcp => TcpStream::connect(("127.0.0.1", port)).is_ok(),
        };
        if taken {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(PeerError::NotReady {
        peer,
        port,
        seconds: limit.as_secs(),
    })
}

/// A Kamailio process run from a configuration template, in the foreground.
#[derive(Debug)]
pub struct Kamailio {
    child: Child,
    /// The port it listens on (UDP and TCP).
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Kamailio {
    /// Starts Kamailio with `config`, `__PORT__` set to a free port and every other `__KEY__`
    /// replaced; waits until it has bound UDP and TCP.
    pub fn start(config: &Path, replacements: &[(&str, String)]) -> Result<Kamailio, PeerError> {
        let port = free_port()?;
        let dir = tempfile::tempdir().map_err(io("creating a work directory"))?;
        let mut text =
            std::fs::read_to_string(config).map_err(io(format!("reading {}", config.display())))?;
        text = text.replace("__PORT__", &port.to_string());
        for (key, value) in replacements {
            text = text.replace(&format!("__{}__", key.to_uppercase()), value);
        }
        let cfg = dir.path().join("kamailio.cfg");
        std::fs::write(&cfg, text).map_err(io("writing kamailio.cfg"))?;
        Self::launch(&cfg, port, dir, &[], true)
    }

    /// Starts Kamailio with `config` as it is, its `#!define`s overridden with `-A`: `LISTEN`
    /// set to UDP on a free loopback port, and `defines` (string values, quoted for it).
    pub fn start_defined(config: &Path, defines: &[(&str, String)]) -> Result<Kamailio, PeerError> {
        let port = free_port()?;
        let dir = tempfile::tempdir().map_err(io("creating a work directory"))?;
        let mut args = vec!["-A".to_owned(), format!("LISTEN=udp:127.0.0.1:{port}")];
        for (key, value) in defines {
            args.push("-A".into());
            args.push(format!("{key}=\"{value}\""));
        }
        Self::launch(config, port, dir, &args, false)
    }

    fn launch(
        cfg: &Path,
        port: u16,
        dir: tempfile::TempDir,
        args: &[String],
        tcp: bool,
    ) -> Result<Kamailio, PeerError> {
        let log = std::fs::File::create(dir.path().join("kamailio.log"))
            .map_err(io("creating kamailio.log"))?;
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
            .map_err(io("starting kamailio (Debian package kamailio)"))?;
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
        .map_err(io("starting openssl"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(data.as_bytes())
            .map_err(io("writing to openssl"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io("waiting for openssl"))?;
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

/// A port free for both UDP and TCP on 127.0.0.1 right now.
pub fn free_port() -> Result<u16, PeerError> {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").map_err(io("binding a probe socket"))?;
        let port = udp.local_addr().map_err(io("reading a probe port"))?.port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
}

/// One SIPp process.
#[derive(Debug)]
pub struct Sipp {
    child: Child,
    /// The port SIPp listens on.
    pub port: u16,
    /// Its transport.
    pub transport: SipTransport,
    dir: tempfile::TempDir,
}

/// Options for starting SIPp.
#[derive(Debug, Clone)]
pub struct SippOptions {
    /// Stop after this many calls (`-m`).
    pub calls: u32,
    /// `__KEY__` placeholders in the scenario and their values.
    pub replacements: Vec<(String, String)>,
    /// Extra command-line arguments.
    pub args: Vec<String>,
}

impl Default for SippOptions {
    fn default() -> Self {
        Self {
            calls: 1,
            replacements: Vec::new(),
            args: Vec::new(),
        }
    }
}

impl Sipp {
    /// Starts SIPp as a UAS playing `scenario` (a file path), with placeholders replaced.
    pub fn uas(
        scenario: &Path,
        transport: SipTransport,
        options: &SippOptions,
    ) -> Result<Sipp, PeerError> {
        let port = free_port()?;
        let dir = tempfile::tempdir().map_err(io("creating a work directory"))?;
        let mut text = std::fs::read_to_string(scenario)
            .map_err(io(format!("reading {}", scenario.display())))?;
        for (key, value) in &options.replacements {
            text = text.replace(&format!("__{}__", key.to_uppercase()), value);
        }
        let name = scenario
            .file_name()
            .map_or_else(|| PathBuf::from("scenario.xml"), PathBuf::from);
        let path = dir.path().join(name);
        std::fs::write(&path, text).map_err(io("writing the scenario"))?;
        let mut args = vec![
            "-sf".to_owned(),
            path.display().to_string(),
            "-p".to_owned(),
            port.to_string(),
        ];
        args.extend(options.args.iter().cloned());
        Self::spawn(dir, port, transport, options.calls, &args)
    }

    /// Starts SIPp as a UAC with its built-in `uac` scenario against `target`.
    pub fn uac(target: &str, options: &SippOptions) -> Result<Sipp, PeerError> {
        let port = free_port()?;
        let dir = tempfile::tempdir().map_err(io("creating a work directory"))?;
        let mut args = vec![
            target.to_owned(),
            "-sn".to_owned(),
            "uac".to_owned(),
            "-p".to_owned(),
            port.to_string(),
        ];
        args.extend(options.args.iter().cloned());
        Self::spawn(dir, port, SipTransport::Udp, options.calls, &args)
    }

    fn spawn(
        dir: tempfile::TempDir,
        port: u16,
        transport: SipTransport,
        calls: u32,
        args: &[String],
    ) -> Result<Sipp, PeerError> {
        let stdout = std::fs::File::create(dir.path().join("stdout.log"))
            .map_err(io("creating stdout.log"))?;
        let stderr = std::fs::File::create(dir.path().join("stderr.log"))
            .map_err(io("creating stderr.log"))?;
        let child = Command::new("sipp")
            .current_dir(dir.path())
            .args(args)
            .args(["-i", "127.0.0.1", "-m", &calls.to_string()])
            .args([
                "-t",
                match transport {
                    SipTransport::Udp => "u1",
                    SipTransport::Tcp => "t1",
                },
            ])
            .args([
                "-nostdin",
                "-trace_err",
                "-timeout",
                "120",
                "-timeout_error",
            ])
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(io("starting sipp (Debian package sip-tester)"))?;
        let sipp = Sipp {
            child,
            port,
            transport,
            dir,
        };
        sipp.wait_bound()?;
        Ok(sipp)
    }

    fn wait_bound(&self) -> Result<(), PeerError> {
        wait_port_bound("sipp", self.port, self.transport)
    }

    /// SIPp's error traces and stderr, the last 4 KiB of each.
    fn log(&self) -> String {
        const KEEP: usize = 4096;
        let mut log = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".log") && name != "stdout.log" {
                    log.push_str(&format!("--- {name}\n"));
                    let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    let mut cut = text.len().saturating_sub(KEEP);
                    while !text.is_char_boundary(cut) {
                        cut += 1;
                    }
                    log.push_str(text.get(cut..).unwrap_or_default());
                }
            }
        }
        log
    }

    /// Waits (at most `limit`) for SIPp to finish, and fails unless every call succeeded.
    pub fn finish(mut self, limit: Duration) -> Result<(), PeerError> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait().map_err(io("waiting for sipp"))? {
                Some(status) if status.success() => return Ok(()),
                Some(status) => {
                    return Err(PeerError::Failed {
                        peer: "sipp",
                        status,
                        log: self.log(),
                    });
                }
                None if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    return Err(PeerError::Timeout {
                        peer: "sipp",
                        seconds: limit.as_secs(),
                    });
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
