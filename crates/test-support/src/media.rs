//! Media peers and media files for tests: baresip as a callee that plays a WAV file and records
//! what it hears, speech from espeak-ng, and (from `dialtone-peers`) RTP captures SIPp can
//! replay and the RFC 4733 digit captures SIPp ships.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use dialtone_peers::capture::write_rtp_pcap;
pub use dialtone_peers::dtmf::{sipp_dtmf_captures, sipp_key_presses};

use crate::{PeerError, SipTransport, WorkDir, free_port, wait_port_bound};

/// Speaks `text` with espeak-ng (`espeak_args` before it: voice, rate, pitch) into a file that
/// sox converts with `format` arguments and then `effects`; returns the converted bytes. The
/// files are `dir`'s `speech.wav` and `speech.converted`, so concurrent callers need their own
/// `dir`. sox runs repeatably (`-R`: the same dither on every run).
fn speak(
    dir: &Path,
    text: &str,
    espeak_args: &[&str],
    format: &[&str],
    effects: &[&str],
) -> Result<Vec<u8>, PeerError> {
    let wav = dir.join("speech.wav");
    let converted = dir.join("speech.converted");
    run(
        Command::new("espeak-ng")
            .args(espeak_args)
            .arg("-w")
            .arg(&wav)
            .arg(text),
        "espeak-ng",
    )?;
    run(
        Command::new("sox")
            .arg("-R")
            .arg(&wav)
            .args(format)
            .arg(&converted)
            .args(effects),
        "sox",
    )?;
    std::fs::read(&converted).map_err(PeerError::io("reading the converted speech"))
}

/// Speaks `text` with espeak-ng and returns it as 8 kHz headerless µ-law (sox converts), the
/// format of a PCMU stream.
pub fn speech_ulaw(dir: &Path, text: &str) -> Result<Vec<u8>, PeerError> {
    speak(dir, text, &[], &["-r", "8000", "-c", "1", "-t", "ul"], &[])
}

/// Writes `samples` as a 16-bit mono WAV file at `rate`.
pub fn write_wav(path: &Path, rate: u32, samples: &[i16]) -> Result<(), PeerError> {
    write_wav_channels(path, rate, 1, samples)
}

/// Writes mono `samples` as a 16-bit WAV file at `rate` with `channels` channels, each the
/// same (baresip's Opus is stereo, RFC 7587, and wants its source so).
pub fn write_wav_channels(
    path: &Path,
    rate: u32,
    channels: u16,
    samples: &[i16],
) -> Result<(), PeerError> {
    let block = 2 * u32::from(channels);
    let data = samples.len() as u32 * block;
    let mut out = Vec::with_capacity(44 + data as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * block).to_le_bytes());
    out.extend_from_slice(&(block as u16).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        for _ in 0..channels {
            out.extend_from_slice(&s.to_le_bytes());
        }
    }
    std::fs::write(path, out).map_err(PeerError::io(format!("writing {}", path.display())))
}

/// Converts 8 kHz µ-law to a 16-bit mono WAV file at `rate` (sox), for peers that play WAV.
pub fn ulaw_to_wav(ulaw: &[u8], rate: u32, path: &Path) -> Result<(), PeerError> {
    let raw = path.with_extension("ul");
    std::fs::write(&raw, ulaw).map_err(PeerError::io("writing µ-law"))?;
    run(
        Command::new("sox")
            .args(["-t", "ul", "-r", "8000", "-c", "1"])
            .arg(&raw)
            .args(["-r", &rate.to_string(), "-b", "16", "-c", "1"])
            .arg(path),
        "sox",
    )
}

/// Runs `command` to completion; its stderr is the error when it fails.
pub(crate) fn run(command: &mut Command, program: &'static str) -> Result<(), PeerError> {
    let out = command
        .output()
        .map_err(PeerError::io(format!("starting {program}")))?;
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

/// How a [`Baresip`] callee is set up.
#[derive(Debug, Clone)]
pub struct CalleeSetup<'a> {
    /// Its audio codec modules (`g711`, `g722`, `opus`).
    pub codecs: &'a [&'a str],
    /// SIP over TLS too, on the port above its UDP/TCP one.
    pub tls: Option<BaresipTls>,
    /// Media encryption of its account (`srtp`, `srtp-mand`, …; loads the `srtp` module).
    pub mediaenc: Option<&'a str>,
}

impl Default for CalleeSetup<'_> {
    fn default() -> Self {
        Self {
            codecs: &["g711"],
            tls: None,
            mediaenc: None,
        }
    }
}

/// baresip's TLS files.
#[derive(Debug, Clone)]
pub struct BaresipTls {
    /// Its certificate and private key in one PEM file.
    pub certificate: PathBuf,
    /// The CA it trusts.
    pub ca: PathBuf,
}

/// A baresip process answering calls automatically: it plays a WAV file into each call and
/// dumps what it receives (decoded) to WAV files.
#[derive(Debug)]
pub struct Baresip {
    child: Child,
    /// The port it listens on (UDP).
    pub port: u16,
    dir: WorkDir,
}

impl Baresip {
    /// Starts baresip on a free loopback port as `+15551230000`, answering every call and
    /// playing `source` (a 16-bit mono WAV). Media stays on the loopback interface.
    pub fn callee(source: &Path) -> Result<Baresip, PeerError> {
        Self::callee_with_codec(source, "g711")
    }

    /// [`Baresip::callee`] with one audio codec module: `g711`, or `g722` (wideband: baresip
    /// then offers and answers G.722 alone).
    pub fn callee_with_codec(source: &Path, codec: &str) -> Result<Baresip, PeerError> {
        Self::callee_with(
            source,
            &CalleeSetup {
                codecs: &[codec],
                ..CalleeSetup::default()
            },
        )
    }

    /// [`Baresip::callee`] that takes encrypted media only: SDES SRTP (RFC 4568, baresip's
    /// `srtp` module) with `mediaenc=srtp-mand` on its account, so it answers with its own
    /// `a=crypto` key and sends and receives SRTP alone.
    pub fn srtp_callee(source: &Path) -> Result<Baresip, PeerError> {
        Self::callee_with(
            source,
            &CalleeSetup {
                mediaenc: Some("srtp-mand"),
                ..CalleeSetup::default()
            },
        )
    }

    /// [`Baresip::callee`] set up as `setup` says: its codec, SIP over TLS, media encryption.
    pub fn callee_with(source: &Path, setup: &CalleeSetup<'_>) -> Result<Baresip, PeerError> {
        let mut port = free_port()?;
        // Its TLS listener takes the port above: that one must be free too.
        while setup.tls.is_some() && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_err() {
            port = free_port()?;
        }
        let dir = WorkDir::for_peer("baresip")?;
        let mut config = format!(
            "sip_listen 127.0.0.1:{port}\n\
             net_interface 127.0.0.1\n\
             audio_player aubridge,nil\n\
             audio_source aufile,{source}\n\
             audio_alert aubridge,nil\n\
             rtp_ports 47000-47999\n\
             module_path {modules}\n\
             {codecs}\
             module aufile.so\n\
             module aubridge.so\n\
             module sndfile.so\n\
             module_tmp account.so\n\
             snd_path {dumps}\n",
            source = source.display(),
            dumps = dir.path().display(),
            modules = baresip_modules().display(),
            codecs = setup
                .codecs
                .iter()
                .map(|c| format!("module {c}.so\n"))
                .collect::<String>(),
        );
        if let Some(tls) = &setup.tls {
            config.push_str(&format!(
                "sip_certificate {}\nsip_cafile {}\n",
                tls.certificate.display(),
                tls.ca.display()
            ));
        }
        let mut account = "<sip:+15551230000@127.0.0.1>;regint=0;answermode=auto".to_owned();
        if let Some(mediaenc) = setup.mediaenc {
            config.push_str("module srtp.so\n");
            account.push_str(&format!(";mediaenc={mediaenc}"));
        }
        std::fs::write(dir.path().join("config"), config)
            .map_err(PeerError::io("writing baresip config"))?;
        std::fs::write(dir.path().join("accounts"), format!("{account}\n"))
            .map_err(PeerError::io("writing baresip accounts"))?;
        let log = std::fs::File::create(dir.path().join("baresip.log"))
            .map_err(PeerError::io("creating baresip.log"))?;
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir.path())
            .args(["-n", "127.0.0.1"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                log.try_clone()
                    .map_err(PeerError::io("sharing baresip.log"))?,
            ))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(PeerError::io("starting baresip (Debian package baresip)"))?;
        let b = Baresip { child, port, dir };
        wait_port_bound("baresip", port, SipTransport::Udp)?;
        if setup.tls.is_some() {
            wait_port_bound("baresip", b.tls_port(), SipTransport::Tcp)?;
        }
        Ok(b)
    }

    /// The port of its SIP over TLS listener (baresip takes the one above `port`).
    pub fn tls_port(&self) -> u16 {
        self.port + 1
    }

    /// baresip's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default()
    }

    /// What baresip received and decoded in its last call, once written (waiting at most
    /// `limit`): its sample rate and 16-bit mono samples (a stereo dump's first channel).
    pub fn received_pcm(&self, limit: Duration) -> Result<(u32, Vec<i16>), PeerError> {
        let path = self.received_wav(limit)?;
        let bytes = std::fs::read(&path).map_err(PeerError::io("reading baresip's recording"))?;
        let rate = bytes
            .get(24..28)
            .and_then(|r| <[u8; 4]>::try_from(r).ok())
            .map_or(0, u32::from_le_bytes);
        let channels = bytes
            .get(22..24)
            .and_then(|c| <[u8; 2]>::try_from(c).ok())
            .map_or(1, u16::from_le_bytes)
            .max(1);
        let samples = bytes
            .get(44..)
            .unwrap_or_default()
            .chunks_exact(2 * usize::from(channels))
            .filter_map(|b| b.first_chunk::<2>().copied())
            .map(i16::from_le_bytes)
            .collect();
        Ok((rate, samples))
    }

    /// The WAV file of what baresip received and decoded in its last call, once it is
    /// written (after the call ended), waiting at most `limit`.
    pub fn received_wav(&self, limit: Duration) -> Result<PathBuf, PeerError> {
        let deadline = Instant::now() + limit;
        loop {
            let found = std::fs::read_dir(self.dir.path())
                .map_err(PeerError::io("listing baresip's dumps"))?
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
    speech_pcm16k_voiced(dir, text, &[], false)
}

/// Like [`speech_pcm16k`], with `espeak_args` for espeak-ng before the text (e.g. `["-v",
/// "en-us+f3", "-s", "170", "-p", "60"]`) and, when `trim`, espeak-ng's leading and trailing
/// silence cut (sox `silence` at −60 dBFS), so the samples' length is the speech's.
pub fn speech_pcm16k_voiced(
    dir: &Path,
    text: &str,
    espeak_args: &[&str],
    trim: bool,
) -> Result<Vec<i16>, PeerError> {
    let effects: &[&str] = if trim {
        &[
            "silence", "1", "0.002", "0.1%", "reverse", "silence", "1", "0.002", "0.1%", "reverse",
        ]
    } else {
        &[]
    };
    speech_pcm_with(dir, text, espeak_args, 16000, effects)
}

/// Speaks `text` with espeak-ng as 16-bit mono PCM at `rate` Hz (sox resamples): a source
/// for a callee whose codec samples at that rate.
pub fn speech_pcm_at(dir: &Path, text: &str, rate: u32) -> Result<Vec<i16>, PeerError> {
    speech_pcm_with(dir, text, &[], rate, &[])
}

/// espeak-ng's `text` (with `espeak_args`) as 16-bit mono PCM at `rate`, after sox `effects`.
fn speech_pcm_with(
    dir: &Path,
    text: &str,
    espeak_args: &[&str],
    rate: u32,
    effects: &[&str],
) -> Result<Vec<i16>, PeerError> {
    let rate = rate.to_string();
    let bytes = speak(
        dir,
        text,
        espeak_args,
        &[
            "-r",
            &rate,
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-t",
            "raw",
        ],
        effects,
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
