//! Call recording, the engine's side: what a call's media records to ([`Recordings::record_to`],
//! from the agent's `record` and `mask_dtmf`), keeping the finished file in the store with its
//! description for the record ([`Recordings::keep`]), retention ([`purge_expired`]), and the
//! sweep of staging files a crash left behind ([`sweep_abandoned`]).
//!
//! A recording never ends or delays a call: a file that cannot be created leaves the call
//! unrecorded, and a write or store failure puts `recording_error` on the record instead of
//! `recording`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dialtone_media::{FRAME_SAMPLES, RecordTo, RecordingOutcome};
use dialtone_model::{AgentFields, RecordChannels, RecordOptions, RecordingView};
use dialtone_storage::{RecordingStore, Storage};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Where recordings are written while their calls run, and where they are kept after.
#[derive(Debug, Clone)]
pub struct Recordings {
    /// Files being written (on the local disk; each moves to the store when complete).
    pub staging: PathBuf,
    /// Where finished recordings are kept.
    pub store: Arc<dyn RecordingStore>,
}

/// What a call records, decided from its agent: the options and the staging file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallRecording {
    pub(crate) options: RecordOptions,
    pub(crate) to: RecordTo,
}

/// What a finished recording puts on the call record.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Kept {
    pub(crate) recording: Option<Value>,
    pub(crate) error: Option<String>,
}

impl Recordings {
    /// What a call of an agent with `settings` records, into a staging file named after
    /// `staging_id` (its directory made if need be); `None` when the agent does not record.
    pub(crate) fn record_to(
        &self,
        staging_id: Uuid,
        settings: &AgentFields,
    ) -> Option<CallRecording> {
        let options = settings.record?.options()?;
        // Made with the first recording; a directory that cannot be made fails the recording
        // (`recording_error`), not the call.
        if let Err(error) = std::fs::create_dir_all(&self.staging) {
            tracing::error!(%error, dir = %self.staging.display(), "no directory for recordings");
        }
        Some(CallRecording {
            to: RecordTo {
                path: self.staging.join(format!("{staging_id}.wav.part")),
                mixed: options.channels == RecordChannels::Mixed,
                mask_dtmf: options.mask_dtmf.or(settings.mask_dtmf).unwrap_or(false),
            },
            options,
        })
    }

    /// Keeps call `call_id`'s finished recording in the store (its id: `{call_id}.wav`) and
    /// describes it, or says why there is none.
    pub(crate) async fn keep(
        &self,
        call_id: Uuid,
        recording: &CallRecording,
        outcome: Option<RecordingOutcome>,
    ) -> Kept {
        let staged = recording.to.path.clone();
        let frames = match outcome {
            Some(RecordingOutcome::Complete { frames, .. }) => frames,
            Some(RecordingOutcome::Failed(error)) => return self.failed(&staged, error).await,
            None => {
                return self
                    .failed(&staged, "the recording did not start".into())
                    .await;
            }
        };
        let hashed = tokio::task::spawn_blocking({
            let staged = staged.clone();
            move || digest_of(&staged)
        })
        .await;
        let (sha256, bytes) = match hashed {
            Ok(Ok(digest)) => digest,
            Ok(Err(error)) => return self.failed(&staged, error.to_string()).await,
            Err(error) => return self.failed(&staged, error.to_string()).await,
        };
        let id = format!("{call_id}.wav");
        if let Err(error) = self.store.put(&id, &staged).await {
            return self.failed(&staged, error.to_string()).await;
        }
        let view = RecordingView {
            url: format!("/v1/calls/{call_id}/recording"),
            id,
            format: recording.options.format,
            channels: recording.options.channels,
            duration_ms: frames * (FRAME_SAMPLES as u64 * 1000 / 16_000),
            bytes,
            sha256,
        };
        Kept {
            recording: serde_json::to_value(view).ok(),
            error: None,
        }
    }

    /// A recording that failed: the partial file removed, the reason kept.
    async fn failed(&self, staged: &std::path::Path, error: String) -> Kept {
        tracing::warn!(%error, "the call's recording failed");
        metrics::counter!("dialtone_recordings_failed_total").increment(1);
        let _ = tokio::fs::remove_file(staged).await;
        Kept {
            recording: None,
            error: Some(error),
        }
    }
}

/// The file's SHA-256 (lower-case hex) and size.
fn digest_of(path: &std::path::Path) -> std::io::Result<(String, u64)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(buffer.get(..n).unwrap_or_default());
        bytes += n as u64;
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    Ok((hex, bytes))
}

/// How long a staging file may go unwritten before it is taken for the leftover of a process that
/// died mid-recording: a live recording's file is written several times a second, hold and
/// silence included.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(10 * 60);

/// Removes, every `every`, the staging files (`*.part`) in `staging` that nothing has written
/// for [`ABANDONED_AFTER`]: what a crash or a kill left mid-recording (its call was closed by the
/// restart, or by a survivor). Safe with several nodes sharing the directory, as it goes by the
/// file's last write and not by whose it is.
pub async fn sweep_abandoned(staging: PathBuf, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let staging = staging.clone();
        let swept = tokio::task::spawn_blocking(move || {
            sweep_abandoned_once(&staging, std::time::SystemTime::now())
        })
        .await;
        match swept {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => {
                metrics::counter!("dialtone_recordings_abandoned_total").increment(removed);
                tracing::info!(
                    removed,
                    "staging files of recordings cut short by a crash removed"
                );
            }
            Ok(Err(error)) => tracing::warn!(%error, "sweeping abandoned recordings failed"),
            Err(error) => tracing::warn!(%error, "sweeping abandoned recordings failed"),
        }
    }
}

/// One pass of [`sweep_abandoned`] at `now`: how many files it removed. A directory not made yet
/// holds nothing.
fn sweep_abandoned_once(
    staging: &std::path::Path,
    now: std::time::SystemTime,
) -> std::io::Result<u64> {
    let entries = match std::fs::read_dir(staging) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        if entry.path().extension().is_none_or(|e| e != "part") {
            continue;
        }
        // Gone meanwhile (another node's sweep, or kept in the store): nothing to do.
        let written = match entry.metadata().and_then(|m| m.modified()) {
            Ok(written) => written,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let quiet = now.duration_since(written).unwrap_or_default();
        if quiet < ABANDONED_AFTER {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            // Another node's sweep took it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Removes the recordings of calls that ended more than `retention` ago, a batch at a time,
/// every `every`, until the process ends. Safe with several nodes: a file is removed before
/// the record lets go of it, removing one already gone is no error, and taking it off the
/// record twice changes nothing.
pub async fn purge_expired(
    storage: Storage,
    store: Arc<dyn RecordingStore>,
    retention: Duration,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let before =
            dialtone_storage::now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        match storage.purge_recordings(store.as_ref(), before).await {
            Ok(purged) => {
                if purged.removed > 0 {
                    tracing::info!(purged = purged.removed, "recordings past retention removed");
                }
                for (call_id, why) in purged.failed {
                    tracing::warn!(%call_id, why, "a recording past retention is not removed; will try again");
                }
            }
            Err(error) => tracing::warn!(%error, "purging recordings failed; will try again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    /// Only staging files unwritten for [`ABANDONED_AFTER`] go; a live recording's and a
    /// finished one stay, and a directory not made yet is no error.
    #[test]
    fn the_sweep_takes_only_staging_files_left_unwritten() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let file = |name: &str, written_ago: Duration| {
            let path = dir.path().join(name);
            let f = std::fs::File::create(&path).unwrap();
            f.set_modified(now - written_ago).unwrap();
            path
        };
        let crashed = file("a.wav.part", ABANDONED_AFTER + Duration::from_secs(1));
        let live = file("b.wav.part", Duration::from_secs(1));
        let kept = file("c.wav", ABANDONED_AFTER * 10);
        assert_eq!(sweep_abandoned_once(dir.path(), now).unwrap(), 1);
        assert!(!crashed.exists());
        assert!(live.exists() && kept.exists());
        assert_eq!(sweep_abandoned_once(dir.path(), now).unwrap(), 0);
        assert_eq!(
            sweep_abandoned_once(&dir.path().join("not-made"), now).unwrap(),
            0
        );
    }
}
