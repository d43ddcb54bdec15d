//! SIPp as a peer: a UAS playing a scenario file, or a UAC with SIPp's built-in `uac` scenario.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{PeerError, SipTransport, WorkDir, free_port, wait_port_bound_on};

/// The path of a scenario or configuration file shipped in this crate's `scenarios/` folder.
pub fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

/// A SIPp scenario step that starts replaying the RTP capture at `pcap` to the call's media
/// address (`play_pcap_audio`, in the background: the scenario goes on meanwhile).
pub fn sipp_play_pcap(pcap: &Path) -> String {
    format!(
        "  <nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n",
        pcap.display()
    )
}

/// The address SIPp binds unless told otherwise.
const LOOPBACK: &str = "127.0.0.1";

/// One SIPp process.
#[derive(Debug)]
pub struct Sipp {
    child: Child,
    /// The port SIPp listens on.
    pub port: u16,
    /// Its transport.
    pub transport: SipTransport,
    dir: WorkDir,
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

/// Writes `scenario` (a file path) into `dir` as `name`, its `__KEY__` placeholders replaced
/// by `options`' values; returns where.
fn write_scenario(
    dir: &WorkDir,
    scenario: &Path,
    name: &Path,
    options: &SippOptions,
) -> Result<PathBuf, PeerError> {
    let mut text = std::fs::read_to_string(scenario)
        .map_err(PeerError::io(format!("reading {}", scenario.display())))?;
    for (key, value) in &options.replacements {
        text = text.replace(&format!("__{}__", key.to_uppercase()), value);
    }
    let path = dir.path().join(name);
    std::fs::write(&path, text).map_err(PeerError::io("writing the scenario"))?;
    Ok(path)
}

impl Sipp {
    /// Starts SIPp as a UAS playing `scenario` (a file path), with placeholders replaced.
    pub fn uas(
        scenario: &Path,
        transport: SipTransport,
        options: &SippOptions,
    ) -> Result<Sipp, PeerError> {
        let port = free_port()?;
        let dir = WorkDir::for_peer("sipp")?;
        let name = scenario
            .file_name()
            .map_or_else(|| PathBuf::from("scenario.xml"), PathBuf::from);
        let path = write_scenario(&dir, scenario, &name, options)?;
        let mut args = vec![
            "-sf".to_owned(),
            path.display().to_string(),
            "-p".to_owned(),
            port.to_string(),
        ];
        args.extend(options.args.iter().cloned());
        Self::spawn(dir, LOOPBACK, port, transport, options.calls, &args)
    }

    /// Starts SIPp as a UAC playing `scenario` (a file path, placeholders replaced) against
    /// `target` over UDP, from `local_ip` (a loopback address: `127.0.0.2` plays a stranger).
    pub fn uac_playing(
        scenario: &Path,
        target: &str,
        local_ip: &str,
        options: &SippOptions,
    ) -> Result<Sipp, PeerError> {
        let port = free_port()?;
        let dir = WorkDir::for_peer("sipp")?;
        let path = write_scenario(&dir, scenario, Path::new("uac.xml"), options)?;
        let mut args = vec![
            target.to_owned(),
            "-sf".to_owned(),
            path.display().to_string(),
            "-p".to_owned(),
            port.to_string(),
            "-mi".to_owned(),
            local_ip.to_owned(),
        ];
        args.extend(options.args.iter().cloned());
        Self::spawn(dir, local_ip, port, SipTransport::Udp, options.calls, &args)
    }

    /// Starts SIPp as a UAC with its built-in `uac` scenario against `target`.
    pub fn uac(target: &str, options: &SippOptions) -> Result<Sipp, PeerError> {
        let port = free_port()?;
        let dir = WorkDir::for_peer("sipp")?;
        let mut args = vec![
            target.to_owned(),
            "-sn".to_owned(),
            "uac".to_owned(),
            "-p".to_owned(),
            port.to_string(),
        ];
        args.extend(options.args.iter().cloned());
        Self::spawn(dir, LOOPBACK, port, SipTransport::Udp, options.calls, &args)
    }

    fn spawn(
        dir: WorkDir,
        local_ip: &str,
        port: u16,
        transport: SipTransport,
        calls: u32,
        args: &[String],
    ) -> Result<Sipp, PeerError> {
        let stdout = std::fs::File::create(dir.path().join("stdout.log"))
            .map_err(PeerError::io("creating stdout.log"))?;
        let stderr = std::fs::File::create(dir.path().join("stderr.log"))
            .map_err(PeerError::io("creating stderr.log"))?;
        let child = Command::new("sipp")
            .current_dir(dir.path())
            .args(args)
            .args(["-i", local_ip, "-m", &calls.to_string()])
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
            .map_err(PeerError::io("starting sipp (Debian package sip-tester)"))?;
        let sipp = Sipp {
            child,
            port,
            transport,
            dir,
        };
        wait_port_bound_on("sipp", local_ip, sipp.port, sipp.transport)?;
        Ok(sipp)
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
            match self
                .child
                .try_wait()
                .map_err(PeerError::io("waiting for sipp"))?
            {
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
