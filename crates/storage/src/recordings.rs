//! Recordings: where the files go ([`RecordingStore`], the local data directory
//! [`LocalRecordings`] being the embedded default) and the call record's side of them —
//! taking one off a call (`DELETE`) and finding those past retention.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};
use uuid::Uuid;

use crate::rows::uuid_of;
use crate::{Result, Storage, StorageError, now_ms};

/// A boxed future of a store's operation.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// A byte range of a stored recording, read as it streams.
pub struct StoredRange {
    /// The range's bytes.
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    /// The whole file's size.
    pub total: u64,
}

impl std::fmt::Debug for StoredRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredRange")
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

/// Where finished recordings are kept, by id.
pub trait RecordingStore: Send + Sync + std::fmt::Debug {
    /// Takes in the finished file at `file` (a file of the local data directory) as `id`; the
    /// file is the store's (moved or uploaded and removed) once this returns `Ok`.
    fn put<'a>(&'a self, id: &'a str, file: &'a Path) -> StoreFuture<'a, ()>;
    /// Bytes `start..=end` of `id` (`end` past the file: to its end); `NotFound` when there is
    /// no such recording.
    fn read<'a>(
        &'a self,
        id: &'a str,
        start: u64,
        end: Option<u64>,
    ) -> StoreFuture<'a, StoredRange>;
    /// Removes `id`; removing one that is not there is not an error (two nodes may purge the
    /// same one).
    fn delete<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()>;
}

/// Recordings as files of a local directory (the data directory's `recordings/`).
#[derive(Debug, Clone)]
pub struct LocalRecordings {
    dir: PathBuf,
}

impl LocalRecordings {
    /// Keeps recordings in `dir` (made when the first recording is).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `id`; ids are the store's own (a call id and an extension), never a path.
    fn path(&self, id: &str) -> Result<PathBuf> {
        let plain = !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && !id.starts_with('.');
        match plain {
            true => Ok(self.dir.join(id)),
            false => Err(StorageError::NotFound {
                entity: "recording",
                id: id.to_owned(),
            }),
        }
    }
}

impl RecordingStore for LocalRecordings {
    fn put<'a>(&'a self, id: &'a str, file: &'a Path) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let to = self.path(id)?;
            if to != file {
                tokio::fs::rename(file, &to)
                    .await
                    .map_err(|source| recording_error(id, source))?;
            }
            Ok(())
        })
    }

    fn read<'a>(
        &'a self,
        id: &'a str,
        start: u64,
        end: Option<u64>,
    ) -> StoreFuture<'a, StoredRange> {
        Box::pin(async move {
            let path = self.path(id)?;
            let mut file = match tokio::fs::File::open(&path).await {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StorageError::NotFound {
                        entity: "recording",
                        id: id.to_owned(),
                    });
                }
                Err(source) => return Err(recording_error(id, source)),
            };
            let total = file
                .metadata()
                .await
                .map_err(|source| recording_error(id, source))?
                .len();
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(|source| recording_error(id, source))?;
            let len = end
                .map_or(total, |e| e.saturating_add(1).min(total))
                .saturating_sub(start);
            Ok(StoredRange {
                reader: Box::new(file.take(len)),
                total,
            })
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            match tokio::fs::remove_file(self.path(id)?).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(recording_error(id, source)),
            }
        })
    }
}

fn recording_error(id: &str, source: std::io::Error) -> StorageError {
    StorageError::Recording {
        id: id.to_owned(),
        source,
    }
}

/// A recording past retention: its call and its id in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredRecording {
    /// The call.
    pub call_id: Uuid,
    /// The recording's id in the store.
    pub recording_id: String,
}

impl Storage {
    /// Takes the recording off call `id`'s record; whether it had one.
    pub async fn clear_recording(&self, id: Uuid) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE calls SET recording = NULL, updated_at = $1 WHERE id = $2 \
             AND recording IS NOT NULL",
        )
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes the recordings of calls that ended before `ended_before` (Unix ms) from `store`
    /// and from their records, a batch at a time; how many. Safe with several nodes at once: a
    /// file is removed before its record lets go of it, removing one already gone is no error,
    /// and a record lets go once.
    pub async fn purge_recordings(
        &self,
        store: &dyn RecordingStore,
        ended_before: i64,
    ) -> Result<u64> {
        let mut purged = 0;
        loop {
            let batch = self.expired_recordings(ended_before, 100).await?;
            if batch.is_empty() {
                return Ok(purged);
            }
            for expired in batch {
                store.delete(&expired.recording_id).await?;
                if self.clear_recording(expired.call_id).await? {
                    purged += 1;
                }
            }
        }
    }

    /// Up to `limit` recordings of calls that ended before `ended_before` (Unix ms), oldest
    /// first.
    pub async fn expired_recordings(
        &self,
        ended_before: i64,
        limit: u32,
    ) -> Result<Vec<ExpiredRecording>> {
        let rows = sqlx::query(
            "SELECT id, recording FROM calls WHERE recording IS NOT NULL AND ended_at < $1 \
             ORDER BY ended_at LIMIT $2",
        )
        .bind(ended_before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut expired = Vec::with_capacity(rows.len());
        for row in &rows {
            let recording = crate::rows::opt_json_of(row, "recording")?;
            let recording_id = recording
                .as_ref()
                .and_then(|r| r.get("id"))
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| StorageError::Corrupt {
                    column: "recording",
                    detail: "no id".into(),
                })?;
            expired.push(ExpiredRecording {
                call_id: uuid_of(row, "id")?,
                recording_id: recording_id.to_owned(),
            });
        }
        Ok(expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{another, call, on_both};
    use crate::{CallProgress, CallStatus};
    use serde_json::json;

    on_both!(a_recording_goes_on_the_ended_call_and_comes_off_past_retention);
    async fn a_recording_goes_on_the_ended_call_and_comes_off_past_retention(s: Storage) {
        let c = call(&s).await;
        let recording = json!({"id": format!("{}.wav", c.id), "url": "u", "format": "wav",
            "channels": "stereo", "duration_ms": 1000, "bytes": 64044, "sha256": "00"});
        let progress = CallProgress {
            at: Some(1_000),
            recording: Some(recording.clone()),
            ..CallProgress::default()
        };
        assert!(
            s.advance_call(c.id, CallStatus::Completed, progress)
                .await
                .unwrap()
        );
        let read = s.get_call(c.id).await.unwrap();
        assert_eq!(
            serde_json::to_value(read.recording.unwrap()).unwrap(),
            recording
        );
        assert_eq!(s.expired_recordings(1_000, 10).await.unwrap(), []);
        let expired = s.expired_recordings(1_001, 10).await.unwrap();
        assert_eq!(
            expired,
            [ExpiredRecording {
                call_id: c.id,
                recording_id: format!("{}.wav", c.id)
            }]
        );
        assert!(s.clear_recording(c.id).await.unwrap());
        assert!(!s.clear_recording(c.id).await.unwrap());
        assert_eq!(s.get_call(c.id).await.unwrap().recording, None);
        assert_eq!(s.expired_recordings(i64::MAX, 10).await.unwrap(), []);
    }

    on_both!(the_ended_event_carries_the_recording);
    async fn the_ended_event_carries_the_recording(s: Storage) {
        let first = call(&s).await;
        let c = s
            .insert_call(another(
                &first,
                "+15550000297",
                Some("https://hooks.example/x"),
            ))
            .await
            .unwrap();
        let recording = json!({"id": format!("{}.wav", c.id), "url": "u", "format": "wav",
            "channels": "mixed", "duration_ms": 20, "bytes": 684, "sha256": "ab"});
        let progress = CallProgress {
            recording: Some(recording.clone()),
            ..CallProgress::default()
        };
        s.advance_call(c.id, CallStatus::Completed, progress)
            .await
            .unwrap();
        let claim = std::time::Duration::from_secs(30);
        let mut bodies = Vec::new();
        for _ in 0..2 {
            for event in s.claim_due_webhooks(now_ms(), 10, claim).await.unwrap() {
                s.record_delivery(event.id, crate::Delivery::Delivered)
                    .await
                    .unwrap();
                bodies.push(serde_json::from_str::<serde_json::Value>(&event.body).unwrap());
            }
        }
        let ended = bodies.iter().find(|b| b["type"] == "call.ended").unwrap();
        assert_eq!(ended["data"]["call"]["recording"], recording);
    }

    on_both!(a_failed_recording_says_why);
    async fn a_failed_recording_says_why(s: Storage) {
        let c = call(&s).await;
        let progress = CallProgress {
            recording_error: Some("no space left on device".into()),
            ..CallProgress::default()
        };
        s.advance_call(c.id, CallStatus::Failed, progress)
            .await
            .unwrap();
        let read = s.get_call(c.id).await.unwrap();
        assert_eq!(
            read.recording_error.as_deref(),
            Some("no space left on device")
        );
        assert_eq!(read.recording, None);
    }

    on_both!(retention_removes_old_recordings_from_the_store_and_the_record);
    async fn retention_removes_old_recordings_from_the_store_and_the_record(s: Storage) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalRecordings::new(dir.path());
        let old = call(&s).await;
        let new = s
            .insert_call(another(&old, "+15550000298", None))
            .await
            .unwrap();
        for (c, ended) in [(&old, 1_000), (&new, 5_000)] {
            let id = format!("{}.wav", c.id);
            let staged = dir.path().join("staged");
            std::fs::write(&staged, b"RIFF").unwrap();
            store.put(&id, &staged).await.unwrap();
            let progress = CallProgress {
                at: Some(ended),
                recording: Some(json!({"id": id, "url": "u", "format": "wav",
                    "channels": "stereo", "duration_ms": 0, "bytes": 4, "sha256": "00"})),
                ..CallProgress::default()
            };
            s.advance_call(c.id, CallStatus::Completed, progress)
                .await
                .unwrap();
        }
        // Two nodes purging at once remove each file once between them.
        let (a, b) = tokio::join!(
            s.purge_recordings(&store, 2_000),
            s.purge_recordings(&store, 2_000)
        );
        assert_eq!(a.unwrap() + b.unwrap(), 1);
        assert!(!dir.path().join(format!("{}.wav", old.id)).exists());
        assert!(dir.path().join(format!("{}.wav", new.id)).exists());
        assert_eq!(s.get_call(old.id).await.unwrap().recording, None);
        assert!(s.get_call(new.id).await.unwrap().recording.is_some());
    }

    #[tokio::test]
    async fn the_local_store_serves_ranges_and_forgets_deleted_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalRecordings::new(dir.path().join("r"));
        std::fs::create_dir_all(store.dir()).unwrap();
        let staged = store.dir().join("staged.part");
        std::fs::write(&staged, b"0123456789").unwrap();
        store.put("a.wav", &staged).await.unwrap();
        assert!(!staged.exists());
        let mut part = Vec::new();
        let mut range = store.read("a.wav", 2, Some(4)).await.unwrap();
        range.reader.read_to_end(&mut part).await.unwrap();
        assert_eq!((part.as_slice(), range.total), (&b"234"[..], 10));
        let mut rest = Vec::new();
        let mut range = store.read("a.wav", 7, None).await.unwrap();
        range.reader.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"789");
        store.delete("a.wav").await.unwrap();
        store.delete("a.wav").await.unwrap();
        assert!(matches!(
            store.read("a.wav", 0, None).await,
            Err(StorageError::NotFound { .. })
        ));
        assert!(matches!(
            store.read("../x", 0, None).await,
            Err(StorageError::NotFound { .. })
        ));
    }
}
