//! Per-call recording to a 16 kHz WAV file — stereo (caller left, agent right) or mixed — written
//! off the hot path: the media worker pushes one frame pair per tick into the recording's
//! lock-free ring, and one writer thread shared by every recording of the process drains all
//! the rings to disk, fixing each file's RIFF sizes when its call ends. The worker never waits
//! on the disk: a full ring (the disk five seconds behind) drops the tick and counts it, and the
//! writer puts silence where it was, so the recording keeps the call's timeline (and its length);
//! a failed write marks the recording failed without touching the call.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::dtmf_mask::InbandMask;
use crate::{FRAME_SAMPLES, MediaError};

/// One tick of both directions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StereoFrame {
    pub(crate) caller: [i16; FRAME_SAMPLES],
    pub(crate) agent: [i16; FRAME_SAMPLES],
}

impl StereoFrame {
    /// Both sides silent.
    pub(crate) const SILENCE: Self = Self {
        caller: [0; FRAME_SAMPLES],
        agent: [0; FRAME_SAMPLES],
    };
}

/// A tick on its way to the writer, after the ticks dropped just before it (written as silence).
#[derive(Debug, Clone, Copy)]
struct Tick {
    silent_before: u64,
    frame: StereoFrame,
}

/// What to record and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordTo {
    /// The file to write (created, or truncated).
    pub path: PathBuf,
    /// Both sides summed into one channel rather than caller left, agent right.
    pub mixed: bool,
    /// Key presses are silenced in both channels: RFC 4733 events, and in-band tones (the
    /// speech loop's detector, on the writer's side: [`crate::dtmf_mask`]).
    pub mask_dtmf: bool,
}

impl RecordTo {
    /// A stereo recording to `path`, digits left in.
    pub fn stereo(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            mixed: false,
            mask_dtmf: false,
        }
    }
}

/// How a recording ended: its length and size, or why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordingOutcome {
    /// The file is complete.
    Complete {
        /// Ticks (20 ms each) written.
        frames: u64,
        /// Size of the file.
        bytes: u64,
    },
    /// Writing failed (a full disk, say); the file is incomplete.
    Failed(String),
}

/// Ticks buffered between the worker and the writer (five seconds).
const RECORDING_RING: usize = 250;
const SAMPLE_RATE: u32 = 16_000;
/// How long the writer rests between passes over the rings: well under the five seconds a
/// ring holds.
const WRITER_REST: Duration = Duration::from_millis(40);

/// The worker's end of a recording.
#[derive(Debug)]
pub(crate) struct Recorder {
    ring: rtrb::Producer<Tick>,
    /// Ticks dropped in all, shared with the writer (which writes those after the last tick
    /// pushed when the recording finishes).
    dropped: Arc<AtomicU64>,
    /// Ticks dropped since the last one pushed.
    gap: u64,
}

impl Recorder {
    /// Creates the file and hands it to the shared writer; the receiver resolves once the file
    /// is complete (after the recorder is dropped and the ring drained) or failed.
    pub(crate) fn start(
        to: &RecordTo,
    ) -> Result<(Self, oneshot::Receiver<RecordingOutcome>), MediaError> {
        let fail = |source| MediaError::Recording {
            path: to.path.clone(),
            source,
        };
        let mut file = BufWriter::new(File::create(&to.path).map_err(fail)?);
        let channels = if to.mixed { 1 } else { 2 };
        write_header(&mut file, channels, 0).map_err(fail)?;
        let (ring, frames) = rtrb::RingBuffer::new(RECORDING_RING);
        let dropped = Arc::new(AtomicU64::new(0));
        let (done, finished) = oneshot::channel();
        let open = OpenRecording {
            path: to.path.clone(),
            channels,
            file,
            frames,
            mask: to.mask_dtmf.then(InbandMask::default),
            written: 0,
            dropped: Arc::clone(&dropped),
            silence_written: 0,
            done,
        };
        writer()
            .map_err(fail)?
            .send(open)
            .map_err(|_| fail(std::io::Error::other("the recording writer stopped")))?;
        Ok((
            Self {
                ring,
                dropped,
                gap: 0,
            },
            finished,
        ))
    }

    /// Hands one tick to the writer; a full ring (the disk fell five seconds behind) drops it
    /// and counts it, and the writer puts silence in its place.
    pub(crate) fn push(&mut self, frame: StereoFrame) {
        let tick = Tick {
            silent_before: self.gap,
            frame,
        };
        if self.ring.push(tick).is_ok() {
            self.gap = 0;
        } else {
            self.gap += 1;
            self.dropped.fetch_add(1, Ordering::Release);
        }
    }

    /// Ticks dropped so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A recording the writer serves.
struct OpenRecording {
    path: PathBuf,
    channels: u16,
    file: BufWriter<File>,
    frames: rtrb::Consumer<Tick>,
    /// In-band key tones found and silenced (with `mask_dtmf`).
    mask: Option<InbandMask>,
    written: u64,
    /// Ticks the worker dropped, in all.
    dropped: Arc<AtomicU64>,
    /// Of those, the ones already written as silence.
    silence_written: u64,
    done: oneshot::Sender<RecordingOutcome>,
}

/// The shared writer's queue of new recordings, its thread started on first use.
fn writer() -> std::io::Result<mpsc::Sender<OpenRecording>> {
    static WRITER: OnceLock<Mutex<Option<mpsc::Sender<OpenRecording>>>> = OnceLock::new();
    let slot = WRITER.get_or_init(|| Mutex::new(None));
    let mut slot = slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(sender) = slot.as_ref() {
        return Ok(sender.clone());
    }
    let (sender, added) = mpsc::channel();
    std::thread::Builder::new()
        .name("dialtone-recorder".into())
        .spawn(move || write_all(&added))?;
    *slot = Some(sender.clone());
    Ok(sender)
}

/// The writer thread: drains every open recording's ring each pass, finishing those whose
/// call ended.
fn write_all(added: &mpsc::Receiver<OpenRecording>) {
    let mut open: Vec<OpenRecording> = Vec::new();
    let mut bytes = Vec::with_capacity(FRAME_SAMPLES * 4);
    loop {
        // With nothing open, wait for the next recording rather than polling.
        if open.is_empty() {
            match added.recv() {
                Ok(recording) => open.push(recording),
                Err(_) => return,
            }
        }
        open.extend(added.try_iter());
        let mut i = 0;
        while let Some(recording) = open.get_mut(i) {
            let closed = recording.frames.is_abandoned();
            match drain(recording, &mut bytes) {
                Ok(()) if !closed => i += 1,
                result => {
                    let recording = open.swap_remove(i);
                    finish(recording, result);
                }
            }
        }
        std::thread::sleep(WRITER_REST);
    }
}

/// Writes what the recording's ring holds, silence in place of the ticks dropped before each.
fn drain(recording: &mut OpenRecording, bytes: &mut Vec<u8>) -> std::io::Result<()> {
    while let Ok(tick) = recording.frames.pop() {
        write_silence(recording, tick.silent_before, bytes)?;
        put(recording, tick.frame, bytes)?;
    }
    Ok(())
}

/// Writes `ticks` of silence in place of dropped ones.
fn write_silence(
    recording: &mut OpenRecording,
    ticks: u64,
    bytes: &mut Vec<u8>,
) -> std::io::Result<()> {
    for _ in 0..ticks {
        put(recording, StereoFrame::SILENCE, bytes)?;
    }
    recording.silence_written += ticks;
    Ok(())
}

/// Writes one tick through the mask's delay line, if masking.
fn put(
    recording: &mut OpenRecording,
    frame: StereoFrame,
    bytes: &mut Vec<u8>,
) -> std::io::Result<()> {
    let frame = match recording.mask.as_mut() {
        Some(mask) => match mask.push(frame) {
            Some(frame) => frame,
            None => return Ok(()),
        },
        None => frame,
    };
    write_frame(recording, &frame, bytes)
}

/// Appends one tick to the file.
fn write_frame(
    recording: &mut OpenRecording,
    frame: &StereoFrame,
    bytes: &mut Vec<u8>,
) -> std::io::Result<()> {
    bytes.clear();
    for (c, a) in frame.caller.iter().zip(frame.agent.iter()) {
        if recording.channels == 1 {
            bytes.extend_from_slice(&c.saturating_add(*a).to_le_bytes());
        } else {
            bytes.extend_from_slice(&c.to_le_bytes());
            bytes.extend_from_slice(&a.to_le_bytes());
        }
    }
    recording.file.write_all(bytes)?;
    recording.written += 1;
    Ok(())
}

/// Writes silence for the ticks dropped after the last one pushed and the frames the mask still
/// holds back, fixes the header of a finished recording (or reports why it failed) and tells
/// its call.
fn finish(mut recording: OpenRecording, drained: std::io::Result<()>) {
    let mut bytes = Vec::with_capacity(FRAME_SAMPLES * 4);
    let drained = drained.and_then(|()| {
        let trailing = recording
            .dropped
            .load(Ordering::Acquire)
            .saturating_sub(recording.silence_written);
        write_silence(&mut recording, trailing, &mut bytes)?;
        let held: Vec<StereoFrame> = recording
            .mask
            .as_mut()
            .map(|mask| mask.flush().collect())
            .unwrap_or_default();
        held.iter()
            .try_for_each(|frame| write_frame(&mut recording, frame, &mut bytes))
    });
    let data_bytes = recording.written * FRAME_SAMPLES as u64 * 2 * u64::from(recording.channels);
    let result = drained.and_then(|()| {
        let data = u32::try_from(data_bytes).map_err(|_| {
            std::io::Error::other("the recording is longer than a WAV file can hold (4 GiB)")
        })?;
        recording.file.seek(SeekFrom::Start(0))?;
        write_header(&mut recording.file, recording.channels, data)?;
        recording.file.flush()?;
        recording.file.get_ref().sync_data()
    });
    let outcome = match result {
        Ok(()) => RecordingOutcome::Complete {
            frames: recording.written,
            bytes: data_bytes + 44,
        },
        Err(error) => {
            tracing::error!(path = %recording.path.display(), %error, "recording failed");
            RecordingOutcome::Failed(error.to_string())
        }
    };
    let _ = recording.done.send(outcome);
}

fn write_header(out: &mut impl Write, channels: u16, data_bytes: u32) -> std::io::Result<()> {
    let block_align = channels * 2;
    out.write_all(b"RIFF")?;
    out.write_all(&(36 + data_bytes).to_le_bytes())?;
    out.write_all(b"WAVEfmt ")?;
    out.write_all(&16u32.to_le_bytes())?;
    out.write_all(&1u16.to_le_bytes())?;
    out.write_all(&channels.to_le_bytes())?;
    out.write_all(&SAMPLE_RATE.to_le_bytes())?;
    out.write_all(&(SAMPLE_RATE * u32::from(block_align)).to_le_bytes())?;
    out.write_all(&block_align.to_le_bytes())?;
    out.write_all(&16u16.to_le_bytes())?;
    out.write_all(b"data")?;
    out.write_all(&data_bytes.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tick whose caller samples all hold `n`, the agent's silent.
    fn numbered(n: i16) -> StereoFrame {
        StereoFrame {
            caller: [n; FRAME_SAMPLES],
            agent: [0; FRAME_SAMPLES],
        }
    }

    /// Far more ticks than the ring holds, pushed at once as a worker whose disk fell behind
    /// would: every tick has its place in the file, the ones dropped (counted) as silence, so
    /// the recording is as long as the call and each kept tick is where it was said.
    #[test]
    fn dropped_ticks_are_written_as_silence_in_their_place() {
        const TICKS: i16 = 1_000;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gaps.wav");
        let (mut recorder, finished) = Recorder::start(&RecordTo {
            path: path.clone(),
            mixed: true,
            mask_dtmf: false,
        })
        .unwrap();
        for n in 1..=TICKS {
            recorder.push(numbered(n));
        }
        let dropped = recorder.dropped();
        drop(recorder);
        let outcome = finished.blocking_recv().unwrap();
        assert!(dropped > 0, "the ring never filled: nothing was tested");
        assert_eq!(
            outcome,
            RecordingOutcome::Complete {
                frames: u64::try_from(TICKS).unwrap(),
                bytes: 44 + u64::try_from(TICKS).unwrap() * FRAME_SAMPLES as u64 * 2,
            }
        );
        let wav = std::fs::read(&path).unwrap();
        let ticks: Vec<i16> = wav[44..]
            .chunks_exact(FRAME_SAMPLES * 2)
            .map(|tick| i16::from_le_bytes([tick[0], tick[1]]))
            .collect();
        let silent = ticks.iter().filter(|&&first| first == 0).count();
        assert_eq!(silent as u64, dropped);
        for (place, first) in (1..).zip(&ticks) {
            assert!(*first == place || *first == 0, "tick {place} holds {first}");
        }
    }
}
