//! What crossed the loopback interface: `tshark` capturing UDP datagrams that match a capture
//! filter, for tests that must show what was (and was not) sent in clear.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{PeerError, WorkDir};

/// A running capture on `lo`.
#[derive(Debug)]
pub struct UdpSniffer {
    child: Child,
    out: PathBuf,
    _dir: WorkDir,
}

/// One captured datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Its destination port.
    pub dst_port: u16,
    /// Its UDP payload.
    pub payload: Vec<u8>,
}

impl UdpSniffer {
    /// Starts capturing UDP on `lo` with the BPF `filter` (e.g. `udp dst portrange
    /// 47000-47999`); returns once tshark says it is capturing (at most 10 s).
    pub fn start(filter: &str) -> Result<UdpSniffer, PeerError> {
        let dir = WorkDir::for_peer("tshark")?;
        let out = dir.path().join("datagrams.txt");
        let stdout =
            std::fs::File::create(&out).map_err(PeerError::io("creating tshark's output"))?;
        let mut child = Command::new("tshark")
            .args(["-l", "-n", "-i", "lo", "-f", filter])
            .args(["-T", "fields", "-e", "udp.dstport", "-e", "udp.payload"])
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::piped())
            .spawn()
            .map_err(PeerError::io("starting tshark (Debian package tshark)"))?;
        let stderr = child.stderr.take().ok_or_else(|| PeerError::Io {
            what: "reading tshark's messages".into(),
            source: std::io::Error::other("no stderr"),
        })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("Capturing on") => break,
                Some(Ok(_)) if Instant::now() < deadline => {}
                _ => {
                    let _ = child.kill();
                    return Err(PeerError::NotReady {
                        peer: "tshark",
                        port: 0,
                        seconds: 10,
                    });
                }
            }
        }
        // Keep draining its messages so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(UdpSniffer {
            child,
            out,
            _dir: dir,
        })
    }

    /// Stops the capture (after a moment for the last datagrams) and returns what it saw.
    pub fn stop(mut self) -> Result<Vec<Datagram>, PeerError> {
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text =
            std::fs::read_to_string(&self.out).map_err(PeerError::io("reading tshark's output"))?;
        Ok(text
            .lines()
            .filter_map(|line| {
                let (port, hex) = line.split_once('\t')?;
                let payload = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                    .collect::<Option<Vec<u8>>>()?;
                Some(Datagram {
                    dst_port: port.trim().parse().ok()?,
                    payload,
                })
            })
            .collect())
    }
}

impl Drop for UdpSniffer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Shannon entropy of `bytes` in bits per byte: 8 for random (encrypted) bytes, far less for
/// µ-law audio, whose silence is a run of one value.
pub fn entropy_bits_per_byte(bytes: &[u8]) -> f64 {
    let mut counts = [0usize; 256];
    for b in bytes {
        if let Some(count) = counts.get_mut(usize::from(*b)) {
            *count += 1;
        }
    }
    let n = bytes.len().max(1) as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum()
}
