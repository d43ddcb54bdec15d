//! Recordings in an S3-compatible object store ([`S3Recordings`]): the production
//! [`RecordingStore`], which every node of a cluster shares. A finished file is uploaded
//! (in parts past the buffer's size) and then removed locally; reads ask the store for the
//! byte range and stream it; removal of a missing object is no error. Requests are retried
//! with backoff by the client (`object_store`'s retry configuration); server-side encryption
//! is whatever the settings name (`AES256`, `aws:kms`…), sent with every upload.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig};
use tokio::io::AsyncWriteExt;

use crate::recordings::{RecordingStore, StoreFuture, StoredRange};
use crate::{Result, StorageError};

/// Where and how to reach the bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// The bucket.
    pub bucket: String,
    /// Prepended to every recording's id (`calls/` keeps them under `calls/`); may be empty.
    pub prefix: String,
    /// The endpoint of an S3-compatible service (`None`: AWS's, from the region).
    pub endpoint: Option<String>,
    /// The region (`None`: `us-east-1`).
    pub region: Option<String>,
    /// The access key id (`None`: the usual AWS sources — `AWS_*` variables, a web identity,
    /// the container's or instance's role).
    pub access_key_id: Option<String>,
    /// The secret access key, with the access key id.
    pub secret_access_key: Option<String>,
    /// Plain HTTP to the endpoint (a loopback or private test service).
    pub allow_http: bool,
    /// Server-side encryption asked for on upload (`AES256`, `aws:kms`, `aws:kms:dsse`).
    pub server_side_encryption: Option<String>,
    /// Retries of a failed request, with exponential backoff.
    pub max_retries: usize,
}

/// Recordings as objects of an S3-compatible bucket.
#[derive(Debug, Clone)]
pub struct S3Recordings {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

/// How long retries of one request may go on.
const RETRY_TIMEOUT: Duration = Duration::from_secs(60);

impl S3Recordings {
    /// A store on `settings`' bucket; an error names what the settings lack.
    pub fn new(settings: &S3Settings) -> Result<Self> {
        // The `AWS_*` environment first (credentials, a web identity or container role), the
        // settings over it.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_region(settings.region.as_deref().unwrap_or("us-east-1"))
            .with_allow_http(settings.allow_http)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: settings.max_retries,
                retry_timeout: RETRY_TIMEOUT,
            });
        if let Some(endpoint) = &settings.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_config(AmazonS3ConfigKey::VirtualHostedStyleRequest, "false");
        }
        if let Some(key) = &settings.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &settings.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(sse) = &settings.server_side_encryption {
            let key = "aws_server_side_encryption"
                .parse::<AmazonS3ConfigKey>()
                .map_err(|source| StorageError::ObjectStore {
                    id: settings.bucket.clone(),
                    source,
                })?;
            builder = builder.with_config(key, sse);
        }
        let store = builder
            .build()
            .map_err(|source| StorageError::ObjectStore {
                id: settings.bucket.clone(),
                source,
            })?;
        Ok(Self {
            store: Arc::new(store),
            prefix: settings.prefix.clone(),
        })
    }

    /// The object of `id`.
    fn location(&self, id: &str) -> ObjectPath {
        ObjectPath::from(format!("{}{id}", self.prefix))
    }
}

fn store_error(id: &str, source: object_store::Error) -> StorageError {
    match source {
        object_store::Error::NotFound { .. } => StorageError::NotFound {
            entity: "recording",
            id: id.to_owned(),
        },
        source => StorageError::ObjectStore {
            id: id.to_owned(),
            source,
        },
    }
}

impl RecordingStore for S3Recordings {
    fn put<'a>(&'a self, id: &'a str, file: &'a Path) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let io = |source| StorageError::Recording {
                id: id.to_owned(),
                source,
            };
            let mut local = tokio::fs::File::open(file).await.map_err(io)?;
            let mut upload = BufWriter::new(self.store.clone(), self.location(id));
            if let Err(source) = tokio::io::copy(&mut local, &mut upload).await {
                upload.abort().await.ok();
                return Err(io(source));
            }
            upload.shutdown().await.map_err(io)?;
            tokio::fs::remove_file(file).await.map_err(io)
        })
    }

    fn read<'a>(
        &'a self,
        id: &'a str,
        start: u64,
        end: Option<u64>,
    ) -> StoreFuture<'a, StoredRange> {
        Box::pin(async move {
            let range = match (start, end) {
                (0, None) => None,
                (start, None) => Some(GetRange::Offset(start)),
                (start, Some(end)) => Some(GetRange::Bounded(start..end.saturating_add(1))),
            };
            let options = GetOptions {
                range,
                ..GetOptions::default()
            };
            let got = self
                .store
                .get_opts(&self.location(id), options)
                .await
                .map_err(|source| store_error(id, source))?;
            let total = got.meta.size;
            let stream = got.into_stream().map_err(std::io::Error::from);
            Ok(StoredRange {
                reader: Box::new(tokio_util::io::StreamReader::new(stream)),
                total,
            })
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            match self.store.delete(&self.location(id)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(source) => Err(store_error(id, source)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    //! The store against a real S3 server on loopback (`s3s-fs`, signatures checked).

    use super::*;
    use crate::Storage;
    use crate::tests::{on_both, purge_race};
    use dialtone_test_support::s3::{ACCESS_KEY_ID, S3Server, SECRET_ACCESS_KEY};
    use tokio::io::AsyncReadExt;

    /// Settings reaching `server`'s bucket `recordings`, objects under `calls/`.
    fn settings(server: &S3Server) -> S3Settings {
        S3Settings {
            bucket: "recordings".into(),
            prefix: "calls/".into(),
            endpoint: Some(server.endpoint()),
            region: Some("us-east-1".into()),
            access_key_id: Some(ACCESS_KEY_ID.into()),
            secret_access_key: Some(SECRET_ACCESS_KEY.into()),
            allow_http: true,
            server_side_encryption: Some("AES256".into()),
            max_retries: 2,
        }
    }

    async fn read_all(
        store: &S3Recordings,
        id: &str,
        start: u64,
        end: Option<u64>,
    ) -> (Vec<u8>, u64) {
        let mut range = store.read(id, start, end).await.unwrap();
        let mut bytes = Vec::new();
        range.reader.read_to_end(&mut bytes).await.unwrap();
        (bytes, range.total)
    }

    #[tokio::test]
    async fn the_s3_store_uploads_serves_ranges_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let server = S3Server::start(dir.path(), "recordings").await.unwrap();
        let store = S3Recordings::new(&settings(&server)).unwrap();
        let staged = tempfile::tempdir().unwrap();
        let file = staged.path().join("a.wav.part");
        // Past the upload buffer (10 MB), so it goes up in parts.
        let body: Vec<u8> = (0..12_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&file, &body).unwrap();
        store.put("a.wav", &file).await.unwrap();
        assert!(
            !file.exists(),
            "the local file is the store's once uploaded"
        );
        assert_eq!(
            std::fs::read(server.object("recordings", "calls/a.wav")).unwrap(),
            body
        );
        assert_eq!(
            read_all(&store, "a.wav", 0, None).await,
            (body.clone(), 12_000_000)
        );
        assert_eq!(
            read_all(&store, "a.wav", 2, Some(4)).await,
            (body[2..=4].to_vec(), 12_000_000)
        );
        assert_eq!(
            read_all(&store, "a.wav", 11_999_990, None).await,
            (body[11_999_990..].to_vec(), 12_000_000)
        );
        store.delete("a.wav").await.unwrap();
        store.delete("a.wav").await.unwrap();
        assert!(!server.object("recordings", "calls/a.wav").exists());
        assert!(matches!(
            store.read("a.wav", 0, None).await,
            Err(StorageError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn wrong_credentials_are_an_error_not_a_missing_recording() {
        let dir = tempfile::tempdir().unwrap();
        let server = S3Server::start(dir.path(), "recordings").await.unwrap();
        let store = S3Recordings::new(&S3Settings {
            secret_access_key: Some("not-the-secret".into()),
            ..settings(&server)
        })
        .unwrap();
        assert!(matches!(
            store.read("a.wav", 0, None).await,
            Err(StorageError::ObjectStore { .. })
        ));
    }

    on_both!(retention_purges_recordings_from_the_bucket);
    async fn retention_purges_recordings_from_the_bucket(s: Storage) {
        let dir = tempfile::tempdir().unwrap();
        let server = S3Server::start(dir.path(), "recordings").await.unwrap();
        let store = S3Recordings::new(&settings(&server)).unwrap();
        // Two nodes purging at once remove each object once between them.
        let (old, new, [a, b]) = purge_race(&s, &store).await;
        assert_eq!(a.removed + b.removed, 1);
        assert_eq!((a.failed, b.failed), (vec![], vec![]));
        let object = |c: &crate::Call| server.object("recordings", &format!("calls/{}.wav", c.id));
        assert!(!object(&old).exists());
        assert!(object(&new).exists());
        assert_eq!(s.get_call(old.id).await.unwrap().recording, None);
        assert_eq!(
            read_all(&store, &format!("{}.wav", new.id), 0, None)
                .await
                .0,
            b"RIFF"
        );
    }
}
