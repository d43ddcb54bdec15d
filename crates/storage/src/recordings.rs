//! Recordings: where the files go ([`RecordingStore`], the local data directory
//! [`LocalRecordings`] being the embedded default) and the call record's side of them —
//! taking one off a call (`DELETE`) and finding those past retention.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use sqlx::Row;
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

/// A recording past retention: its call, when the call ended, and its id in the store (none
/// when the record names no file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredRecording {
    /// The call.
    pub call_id: Uuid,
    /// When it ended (Unix ms).
    pub ended_at: i64,
    /// The recording's id in the store.
    pub recording_id: Option<String>,
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
    /// and from their records, a batch at a time, oldest first. Safe with several nodes at
    /// once: a file is removed before its record lets go of it, removing one already gone is no
    /// error, and a record lets go once. A recording that cannot be removed (the store refuses,
    /// or its record names no file) is passed over and counted, so it never holds the rest up;
    /// the next run tries it again.
    pub async fn purge_recordings(
        &self,
        store: &dyn RecordingStore,
        ended_before: i64,
    ) -> Result<Purged> {
        let mut purged = Purged::default();
        let mut after = None;
        loop {
            let batch = self.expired_recordings(ended_before, after, 100).await?;
            let Some(last) = batch.last() else {
                return Ok(purged);
            };
            after = Some((last.ended_at, last.call_id));
            for expired in batch {
                let Some(recording_id) = expired.recording_id else {
                    purged
                        .failed
                        .push((expired.call_id, "its record names no file".into()));
                    continue;
                };
                if let Err(error) = store.delete(&recording_id).await {
                    purged.failed.push((expired.call_id, error.to_string()));
                    continue;
                }
                if self.clear_recording(expired.call_id).await? {
                    purged.removed += 1;
                }
            }
        }
    }

    /// Up to `limit` recordings of calls that ended before `ended_before` (Unix ms), oldest
    /// first (then by call id), after `after` (the last one's end and call) when given.
    pub async fn expired_recordings(
        &self,
        ended_before: i64,
        after: Option<(i64, Uuid)>,
        limit: u32,
    ) -> Result<Vec<ExpiredRecording>> {
        let (after_end, after_id) = match after {
            Some((ended_at, id)) => (ended_at, id.to_string()),
            None => (i64::MIN, String::new()),
        };
        let rows = sqlx::query(
            "SELECT id, ended_at, recording FROM calls WHERE recording IS NOT NULL \
             AND ended_at < $1 AND (ended_at > $2 OR (ended_at = $3 AND id > $4)) \
             ORDER BY ended_at, id LIMIT $5",
        )
        .bind(ended_before)
        .bind(after_end)
        .bind(after_end)
        .bind(after_id)
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
                .map(str::to_owned);
            expired.push(ExpiredRecording {
                call_id: uuid_of(row, "id")?,
                ended_at: row.try_get("ended_at")?,
                recording_id,
            });
        }
        Ok(expired)
    }
}

/// What a retention run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Purged {
    /// Recordings removed from the store and from their records.
    pub removed: u64,
    /// Recordings passed over, with why (the next run tries them again).
    pub failed: Vec<(Uuid, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{another, call, end_recorded, on_both, purge_race};
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
        assert_eq!(s.expired_recordings(1_000, None, 10).await.unwrap(), []);
        let expired = s.expired_recordings(1_001, None, 10).await.unwrap();
        assert_eq!(
            expired,
            [ExpiredRecording {
                call_id: c.id,
                ended_at: 1_000,
                recording_id: Some(format!("{}.wav", c.id))
            }]
        );
        assert_eq!(
            s.expired_recordings(1_001, Some((1_000, c.id)), 10)
                .await
                .unwrap(),
            []
        );
        assert!(s.clear_recording(c.id).await.unwrap());
        assert!(!s.clear_recording(c.id).await.unwrap());
        assert_eq!(s.get_call(c.id).await.unwrap().recording, None);
        assert_eq!(s.expired_recordings(i64::MAX, None, 10).await.unwrap(), []);
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
        // Two nodes purging at once remove each file once between them.
        let (old, new, [a, b]) = purge_race(&s, &store).await;
        assert_eq!(a.removed + b.removed, 1);
        assert_eq!((a.failed, b.failed), (vec![], vec![]));
        assert!(!dir.path().join(format!("{}.wav", old.id)).exists());
        assert!(dir.path().join(format!("{}.wav", new.id)).exists());
        assert_eq!(s.get_call(old.id).await.unwrap().recording, None);
        assert!(s.get_call(new.id).await.unwrap().recording.is_some());
    }

    on_both!(a_recording_that_cannot_be_removed_does_not_hold_the_rest_up);
    /// The oldest recording's file cannot be removed (its name is a directory with a file in
    /// it): it is passed over and named, the newer ones are still purged, and the next run
    /// tries it again.
    async fn a_recording_that_cannot_be_removed_does_not_hold_the_rest_up(s: Storage) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalRecordings::new(dir.path());
        let first = call(&s).await;
        let mut calls = vec![first.clone()];
        for i in 0..3 {
            let to = format!("+1555000030{i}");
            calls.push(s.insert_call(another(&first, &to, None)).await.unwrap());
        }
        for (n, c) in calls.iter().enumerate() {
            let id = format!("{}.wav", c.id);
            if n == 0 {
                std::fs::create_dir_all(dir.path().join(&id).join("inside")).unwrap();
            } else {
                let staged = dir.path().join("staged");
                std::fs::write(&staged, b"RIFF").unwrap();
                store.put(&id, &staged).await.unwrap();
            }
            end_recorded(&s, c, 1_000 + i64::try_from(n).unwrap(), &id).await;
        }
        let purged = s.purge_recordings(&store, 2_000).await.unwrap();
        assert_eq!(purged.removed, 3);
        assert_eq!(purged.failed.len(), 1);
        assert_eq!(purged.failed[0].0, calls[0].id);
        assert!(s.get_call(calls[0].id).await.unwrap().recording.is_some());
        let again = s.purge_recordings(&store, 2_000).await.unwrap();
        assert_eq!((again.removed, again.failed.len()), (0, 1));
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
