//! `builtin:espeak`: espeak-ng run as a separate program ([`EspeakNg`]; it is GPL, so it is
//! never linked). Audio is streamed: the program's WAV output is read as it is produced,
//! resampled from 22.05 kHz to 16 kHz in 20 ms frames, and handed on in chunks, so the first
//! words play before the sentence is done.

use std::process::Stdio;

use dialtone_codec::Resampler;
use dialtone_model::BUILTIN_ESPEAK;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::error::AgentError;
use crate::provider::TextToSpeech;

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

/// Frames of 20 ms sent together (100 ms of audio per chunk).
const FRAMES_PER_CHUNK: usize = 5;

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
    let mut resampler = Resampler::new(rate, 16_000)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let (n_in, n_out) = (resampler.input_samples(), resampler.output_samples());
    let mut pending: Vec<i16> = Vec::with_capacity(n_in * 2);
    let mut chunk: Vec<i16> = Vec::with_capacity(n_out * FRAMES_PER_CHUNK);
    let mut frame_out = vec![0i16; n_out];
    let mut bytes = vec![0u8; 4096];
    let mut odd: Option<u8> = None;
    loop {
        let n = out.read(&mut bytes).await?;
        let end = n == 0;
        for b in bytes.get(..n).unwrap_or_default() {
            match odd.take() {
                None => odd = Some(*b),
                Some(lo) => pending.push(i16::from_le_bytes([lo, *b])),
            }
        }
        if end && !pending.is_empty() {
            // The last partial frame, padded with silence.
            pending.resize(pending.len().div_ceil(n_in) * n_in, 0);
        }
        while pending.len() >= n_in {
            let input: Vec<i16> = pending.drain(..n_in).collect();
            if resampler.process(&input, &mut frame_out).is_ok() {
                chunk.extend_from_slice(&frame_out);
            }
            if chunk.len() >= n_out * FRAMES_PER_CHUNK
                && tx.send(Ok(std::mem::take(&mut chunk))).await.is_err()
            {
                return Ok(());
            }
        }
        if end {
            break;
        }
    }
    if !chunk.is_empty() {
        let _ = tx.send(Ok(chunk)).await;
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
