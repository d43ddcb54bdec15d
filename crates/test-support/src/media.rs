//! Media peers and media files for tests: baresip as a callee that plays a WAV file and records
//! what it hears, speech from espeak-ng, and RTP captures SIPp can replay.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{PeerError, SipTransport, free_port, io, wait_port_bound};

/// Speaks `text` with espeak-ng into a file that sox converts with `format` arguments;
/// returns the converted bytes.
fn speak(dir: &Path, text: &str, format: &[&str]) -> Result<Vec<u8>, PeerError> {
    let wav = dir.join("speech.wav");
    let converted = dir.join("speech.converted");
    run(
        Command::new("espeak-ng").arg("-w").arg(&wav).arg(text),
        "espeak-ng",
    )?;
    run(
        Command::new("sox").arg(&wav).args(format).arg(&converted),
        "sox",
    )?;
    std::fs::read(&converted).map_err(io("reading the converted speech"))
}

/// Speaks `text` with espeak-ng and returns it as 8 kHz headerless µ-law (sox converts), the
/// format of a PCMU stream.
pub fn speech_ulaw(dir: &Path, text: &str) -> Result<Vec<u8>, PeerError> {
    speak(dir, text, &["-r", "8000", "-c", "1", "-t", "ul"])
}

/// Converts 8 kHz µ-law to a 16-bit mono WAV file at `rate` (sox), for peers that play WAV.
pub fn ulaw_to_wav(ulaw: &[u8], rate: u32, path: &Path) -> Result<(), PeerError> {
    let raw = path.with_extension("ul");
    std::fs::write(&raw, ulaw).map_err(io("writing µ-law"))?;
    run(
        Command::new("sox")
            .args(["-t", "ul", "-r", "8000", "-c", "1"])
            .arg(&raw)
            .args(["-r", &rate.to_string(), "-b", "16", "-c", "1"])
            .arg(path),
        "sox",
    )
}

fn run(command: &mut Command, program: &'static str) -> Result<(), PeerError> {
    let out = command
        .output()
        .map_err(io(format!("starting {program}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PeerError::Failed {
            peer: program,
            status: out.status,
            log: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// Writes `ulaw` as a pcap of RTP packets (PT 0, 160 bytes every 20 ms, between two loopback
/// addresses), which SIPp's `play_pcap_audio` replays with the capture's timing.
pub fn write_rtp_pcap(path: &Path, ulaw: &[u8]) -> Result<(), PeerError> {
    let mut out = Vec::new();
    // Global header: magic, version 2.4, zone, accuracy, snaplen, link type 1 (Ethernet).
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, chunk) in ulaw.chunks(160).enumerate() {
        let i = i as u32;
        let mut rtp = vec![0x80, 0x00];
        rtp.extend_from_slice(&(i as u16).to_be_bytes());
        rtp.extend_from_slice(&(i * 160).to_be_bytes());
        rtp.extend_from_slice(&0x5eed_u32.to_be_bytes());
        rtp.extend_from_slice(chunk);
        let udp_len = 8 + rtp.len() as u16;
        let ip_len = 20 + udp_len;
        let mut frame = Vec::with_capacity(14 + ip_len as usize);
        frame.extend_from_slice(&[0; 12]);
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&ip_len.to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        frame.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
        frame.extend_from_slice(&6000u16.to_be_bytes());
        frame.extend_from_slice(&6002u16.to_be_bytes());
        frame.extend_from_slice(&udp_len.to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&rtp);
        let micros = u64::from(i) * 20_000;
        out.extend_from_slice(&((micros / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).map_err(io(format!("writing {}", path.display())))
}

/// Where the baresip package keeps its modules (Debian's multiarch or plain layout).
fn baresip_modules() -> PathBuf {
    ["/usr/lib/baresip/modules", "/usr/local/lib/baresip/modules"]
        .iter()
        .map(PathBuf::from)
        .chain(
            std::fs::read_dir("/usr/lib")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("baresip/modules")),
        )
        .find(|p| p.join("g711.so").exists())
        .unwrap_or_else(|| PathBuf::from("/usr/lib/baresip/modules"))
}

/// A baresip process answering calls automatically: it plays a WAV file into each call and
/// dumps what it receives (decoded) to WAV files.
#[derive(Debug)]
pub struct Baresip {
    child: Child,
    /// The port it listens on (UDP).
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Baresip {
    /// Starts baresip on a free loopback port as `+15551230000`, answering every call and
    /// playing `source` (a 16-bit mono WAV). Media stays on the loopback interface.
    pub fn callee(source: &Path) -> Result<Baresip, PeerError> {
        let port = free_port()?;
        let dir = tempfile::tempdir().map_err(io("creating a work directory"))?;
        let config = format!(
            "sip_listen 127.0.0.1:{port}\n\
             net_interface 127.0.0.1\n\
             audio_player aubridge,nil\n\
             audio_source aufile,{source}\n\
             audio_alert aubridge,nil\n\
             rtp_ports 47000-47999\n\
             module_path {modules}\n\
             module g711.so\n\
             module aufile.so\n\
             module aubridge.so\n\
             module sndfile.so\n\
             module_tmp account.so\n\
             snd_path {dumps}\n",
            source = source.display(),
            dumps = dir.path().display(),
            modules = baresip_modules().display(),
        );
        std::fs::write(dir.path().join("config"), config).map_err(io("writing baresip config"))?;
        std::fs::write(
            dir.path().join("accounts"),
            "<sip:+15551230000@127.0.0.1>;regint=0;answermode=auto\n",
        )
        .map_err(io("writing baresip accounts"))?;
        let log = std::fs::File::create(dir.path().join("baresip.log"))
            .map_err(io("creating baresip.log"))?;
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir.path())
            .args(["-n", "127.0.0.1"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                log.try_clone().map_err(io("sharing baresip.log"))?,
            ))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(io("starting baresip (Debian package baresip)"))?;
        let b = Baresip { child, port, dir };
        wait_port_bound("baresip", port, SipTransport::Udp)?;
        Ok(b)
    }

    /// baresip's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default()
    }

    /// The WAV file of what baresip received and decoded in its last call, once it is
    /// written (after the call ended), waiting at most `limit`.
    pub fn received_wav(&self, limit: Duration) -> Result<PathBuf, PeerError> {
        let deadline = Instant::now() + limit;
        loop {
            let found = std::fs::read_dir(self.dir.path())
                .map_err(io("listing baresip's dumps"))?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().ends_with("-dec.wav"));
            if let Some(path) = found
                && std::fs::metadata(&path).is_ok_and(|m| m.len() > 44)
            {
                return Ok(path);
            }
            if Instant::now() > deadline {
                return Err(PeerError::Timeout {
                    peer: "baresip",
                    seconds: limit.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Speaks `text` with espeak-ng and returns it as 16 kHz mono PCM16 (sox converts), the
/// speech loop's format.
pub fn speech_pcm16k(dir: &Path, text: &str) -> Result<Vec<i16>, PeerError> {
    let bytes = speak(
        dir,
        text,
        &[
            "-r",
            "16000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-t",
            "raw",
        ],
    )?;
    Ok(bytes
        .chunks_exact(2)
        .map(|b| {
            i16::from_le_bytes([
                b.first().copied().unwrap_or(0),
                b.get(1).copied().unwrap_or(0),
            ])
        })
        .collect())
}

/// The folder of the RFC 4733 digit captures (`dtmf_2833_<digit>.pcap`) the `sip-tester`
/// package ships for SIPp's `play_pcap_audio`, found through dpkg.
pub fn sipp_dtmf_captures() -> Result<PathBuf, PeerError> {
    let out = Command::new("dpkg")
        .args(["-L", "sip-tester"])
        .output()
        .map_err(io("asking dpkg where sip-tester's files are"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.ends_with("dtmf_2833_1.pcap"))
        .and_then(|l| Path::new(l).parent().map(Path::to_path_buf))
        .ok_or_else(|| PeerError::Failed {
            peer: "dpkg",
            status: out.status,
            log: "sip-tester ships no dtmf_2833_1.pcap".into(),
        })
}

/// SIPp scenario steps pressing `keys` (0-9, `*`, `#`) 400 ms apart by replaying the RFC 4733
/// captures of `captures` ([`sipp_dtmf_captures`]); for the `__PRESSES__` of
/// `callee_presses_digits.xml`.
pub fn sipp_key_presses(captures: &Path, keys: &str) -> String {
    keys.chars()
        .filter_map(|k| match k {
            '0'..='9' => Some(k.to_string()),
            '#' => Some("pound".to_owned()),
            '*' => Some("star".to_owned()),
            _ => None,
        })
        .map(|name| {
            format!(
                "  <nop><action><exec play_pcap_audio=\"{}/dtmf_2833_{name}.pcap\"/></action></nop>\n  <pause milliseconds=\"400\"/>\n",
                captures.display()
            )
        })
        .collect()
}
