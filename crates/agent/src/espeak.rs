//! `builtin:espeak`: espeak-ng run as a separate program ([`EspeakNg`]; it is GPL, so it is
//! never linked). Audio is streamed: the program's WAV output is read as it is produced,
//! resampled from 22.05 kHz to 16 kHz in 20 ms frames (exactly as long as espeak-ng made it),
//! and handed on in chunks, so the first words play before the sentence is done.

use std::process::Stdio;

use dialtone_codec::PcmResampler;
use dialtone_model::BUILTIN_ESPEAK;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::error::AgentError;
use crate::provider::{ENGINE_RATE, TextToSpeech};

/// Longest text spoken at once.
pub const MAX_TEXT_BYTES: usize = 4096;

/// espeak-ng (Debian package `espeak-ng`).
#[derive(Debug, Clone)]
pub struct EspeakNg {
    program: String,
}

impl Default for EspeakNg {
    fn default() -> Self {
        Self {
            program: "espeak-ng".into(),
        }
    }
}

impl EspeakNg {
    /// Whether espeak-ng has `voice`: a language ("en-us"), a voice name ("English_(America)")
    /// or file ("gmw/en-US") from its `--voices` list, optionally with a variant ("en-us+f3").
    pub fn has_voice(&self, voice: &str) -> bool {
        let base = voice
            .split('+')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        !base.is_empty() && self.voices().contains(&base)
    }

    /// Every name espeak-ng answers to, lowercase, read once from `--voices`.
    fn voices(&self) -> &'static [String] {
        static VOICES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        VOICES.get_or_init(|| {
            let listed = std::process::Command::new(&self.program)
                .arg("--voices")
                .stderr(Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            listed
                .lines()
                .skip(1)
                .flat_map(|line| {
                    // Pty, Language, Age/Gender, VoiceName, File, Other languages…
                    let columns: Vec<&str> = line.split_whitespace().collect();
                    let file = columns.get(4).copied().unwrap_or_default();
                    [
                        columns.get(1).copied().unwrap_or_default(),
                        columns.get(3).copied().unwrap_or_default(),
                        file,
                        file.rsplit('/').next().unwrap_or_default(),
                    ]
                    .map(str::to_ascii_lowercase)
                })
                .filter(|name| !name.is_empty())
                .collect()
        })
    }
}

/// Samples per chunk handed on (100 ms at 16 kHz).
const CHUNK_SAMPLES: usize = ENGINE_RATE as usize / 10;

impl TextToSpeech for EspeakNg {
    fn speak(
        &self,
        text: &str,
        voice: Option<&str>,
        language: Option<&str>,
    ) -> mpsc::Receiver<Result<Vec<i16>, AgentError>> {
        let (tx, rx) = mpsc::channel(16);
        let mut text: String = text.chars().filter(|c| !c.is_control()).collect();
        if text.len() > MAX_TEXT_BYTES {
            let mut cut = MAX_TEXT_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        // espeak-ng voices are named by language ("en-us"); a voice it does not have (one of
        // another synthesiser's, say) falls back to the language, then to English: espeak-ng
        // itself gives no audio for an unknown voice.
        let voice = [voice, language]
            .into_iter()
            .flatten()
            .find(|v| self.has_voice(v))
            .unwrap_or("en")
            .to_ascii_lowercase();
        let program = self.program.clone();
        tokio::spawn(async move {
            if let Err(error) = stream(&program, &voice, &text, &tx).await {
                tracing::warn!(%error, "text to speech failed");
                let _ = tx
                    .send(Err(AgentError::Unreachable {
                        provider: BUILTIN_ESPEAK.into(),
                        detail: error.to_string(),
                    }))
                    .await;
            }
        });
        rx
    }
}

async fn stream(
    program: &str,
    voice: &str,
    text: &str,
    tx: &mpsc::Sender<Result<Vec<i16>, AgentError>>,
) -> std::io::Result<()> {
    let mut child = tokio::process::Command::new(program)
        .args(["--stdout", "-v", voice, "--", text])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let Some(mut out) = child.stdout.take() else {
        return Ok(());
    };
    let mut header = [0u8; 44];
    out.read_exact(&mut header).await?;
    let rate = u32::from_le_bytes([header[24], header[25], header[26], header[27]]);
    let mut pcm = PcmResampler::new(rate, ENGINE_RATE)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut bytes = vec![0u8; 4096];
    loop {
        let n = out.read(&mut bytes).await?;
        if n == 0 {
            break;
        }
        pcm.push_bytes(bytes.get(..n).unwrap_or_default());
        if let Some(chunk) = pcm.take_chunk(CHUNK_SAMPLES)
            && tx.send(Ok(chunk)).await.is_err()
        {
            return Ok(());
        }
    }
    let rest = pcm.finish();
    if !rest.is_empty() {
        let _ = tx.send(Ok(rest)).await;
    }
    let _ = child.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs espeak-ng (Debian package `espeak-ng`, installed by `scripts/setup.sh`).
    #[test]
    fn voices_are_espeaks_languages_names_and_files() {
        let espeak = EspeakNg::default();
        for voice in [
            "en-us",
            "en-US",
            "English_(America)",
            "gmw/en-US",
            "en-us+f3",
            "fr",
        ] {
            assert!(espeak.has_voice(voice), "{voice}");
        }
        for voice in ["alloy", "", "+f3", "xx-nope"] {
            assert!(!espeak.has_voice(voice), "{voice}");
        }
    }

    /// The audio is espeak-ng's own, at 16 kHz: exactly as long as the program's output, the
    /// last part of a 20 ms frame neither padded nor lost.
    #[tokio::test]
    async fn the_speech_is_exactly_as_long_as_espeaks_output() {
        let text = "Your table is booked for eight.";
        let wav = std::process::Command::new("espeak-ng")
            .args(["--stdout", "-v", "en", "--", text])
            .output()
            .unwrap()
            .stdout;
        let rate = u64::from(u32::from_le_bytes([wav[24], wav[25], wav[26], wav[27]]));
        let made = (wav.len() as u64 - 44) / 2;
        assert_ne!(
            made % (rate / 50),
            0,
            "the output ends part-way through a frame"
        );
        let mut audio = EspeakNg::default().speak(text, Some("en"), None);
        let mut samples = 0;
        while let Some(chunk) = audio.recv().await {
            samples += chunk.unwrap().len() as u64;
        }
        assert_eq!(
            samples,
            (made * 16_000 + rate / 2) / rate,
            "{made} samples at {rate} Hz"
        );
    }

    /// A voice espeak-ng lacks falls back to the language: audio still comes.
    #[tokio::test]
    async fn an_unknown_voice_falls_back_to_the_language() {
        let mut audio = EspeakNg::default().speak("Hello there.", Some("alloy"), Some("en-US"));
        let mut samples = 0;
        while let Some(chunk) = audio.recv().await {
            samples += chunk.unwrap().len();
        }
        assert!(samples > 8000, "{samples} samples");
    }
}
