//! A real S3-compatible server on a loopback port: `s3s-fs` (the `s3s` implementation of the
//! S3 protocol, over a directory), served from the test's process with its signature checks
//! on. Objects are files: `<dir>/<bucket>/<key>`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

/// The access key id the server accepts.
pub const ACCESS_KEY_ID: &str = "dialtone";
/// Its secret.
pub const SECRET_ACCESS_KEY: &str = "dialtone-secret";

/// A running server; it stops with the test's runtime.
#[derive(Debug)]
pub struct S3Server {
    /// Where it listens (`http://` this is the endpoint).
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl S3Server {
    /// Serves `dir` on a free loopback port, with `bucket` made.
    ///
    /// # Errors
    /// When the directory or the port cannot be had.
    pub async fn start(dir: &Path, bucket: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join(bucket))?;
        let fs =
            s3s_fs::FileSystem::new(dir).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        let mut service = S3ServiceBuilder::new(fs);
        service.set_auth(SimpleAuth::from_single(ACCESS_KEY_ID, SECRET_ACCESS_KEY));
        let service = service.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let service = service.clone();
                tokio::spawn(async move {
                    Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await
                        .ok();
                });
            }
        });
        Ok(Self {
            addr,
            dir: dir.to_path_buf(),
        })
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The file holding object `key` of `bucket`.
    pub fn object(&self, bucket: &str, key: &str) -> PathBuf {
        self.dir.join(bucket).join(key)
    }
}
