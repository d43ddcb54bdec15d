//! Per-call recording to a stereo 16 kHz WAV file (caller left, agent right), written off the
//! hot path: the media worker pushes one stereo frame per tick into a lock-free ring, and a
//! writer thread of the recording's own drains it to disk, fixing the RIFF sizes when the call
//! ends.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::{FRAME_SAMPLES, MediaError};

/// One tick of both directions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StereoFrame {
    pub(crate) caller: [i16; FRAME_SAMPLES],
    pub(crate) agent: [i16; FRAME_SAMPLES],
}

/// Ticks buffered between the worker and the writer (five seconds).
const RECORDING_RING: usize = 250;
const SAMPLE_RATE: u32 = 16_000;

/// The worker's end of a recording.
#[derive(Debug)]
pub(crate) struct Recorder {
    ring: rtrb::Producer<StereoFrame>,
    dropped: Arc<AtomicU64>,
}

impl Recorder {
    /// Creates the file and starts its writer thread; the receiver resolves once the file is
    /// complete (after the recorder is dropped and the ring drained).
    pub(crate) fn start(path: &Path) -> Result<(Self, oneshot::Receiver<()>), MediaError> {
        let fail = |source| MediaError::Recording {
            path: path.to_path_buf(),
            source,
        };
        let mut file = BufWriter::new(File::create(path).map_err(fail)?);
        write_header(&mut file, 0).map_err(fail)?;
        let (ring, frames) = rtrb::RingBuffer::new(RECORDING_RING);
        let dropped = Arc::new(AtomicU64::new(0));
        let owned = path.to_path_buf();
        let (done, finished) = oneshot::channel();
        std::thread::Builder::new()
            .name("dialtone-recorder".into())
            .spawn(move || {
                write_until_closed(owned, file, frames);
                let _ = done.send(());
            })
            .map_err(fail)?;
        Ok((Self { ring, dropped }, finished))
    }

    /// Hands one tick to the writer; a full ring (the disk fell five seconds behind) drops it
    /// and counts it.
    pub(crate) fn push(&mut self, frame: StereoFrame) {
        if self.ring.push(frame).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Ticks dropped so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn write_header(out: &mut impl Write, data_bytes: u32) -> std::io::Result<()> {
    let channels = 2u16;
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

fn write_until_closed(
    path: PathBuf,
    mut file: BufWriter<File>,
    mut frames: rtrb::Consumer<StereoFrame>,
) {
    let mut data_bytes = 0u32;
    let mut interleaved = [0u8; FRAME_SAMPLES * 4];
    let result = (|| -> std::io::Result<()> {
        loop {
            let closed = frames.is_abandoned();
            while let Ok(frame) = frames.pop() {
                for (i, (c, a)) in frame.caller.iter().zip(frame.agent.iter()).enumerate() {
                    if let Some(slot) = interleaved.get_mut(i * 4..i * 4 + 4) {
                        let [c0, c1] = c.to_le_bytes();
                        let [a0, a1] = a.to_le_bytes();
                        slot.copy_from_slice(&[c0, c1, a0, a1]);
                    }
                }
                file.write_all(&interleaved)?;
                data_bytes = data_bytes.saturating_add(interleaved.len() as u32);
            }
            if closed {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        file.seek(SeekFrom::Start(0))?;
        write_header(&mut file, data_bytes)?;
        file.flush()
    })();
    if let Err(error) = result {
        tracing::error!(path = %path.display(), %error, "recording failed");
    }
}
