//! A `dialtoned` of the bench's own: started on loopback with SQLite in a private directory
//! (or the database it is given), `builtin:echo` as its default brain, an operator key
//! ([`BENCH_KEY`]) and free ports; ready once `/readyz` answers. Dropping the [`Daemon`] kills it.
//! The capacity bench and the call setup bench ([`crate::cps`]) both run their daemons this way.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::LoadgenError;

/// The API key of the daemon the bench starts (an operator key: `/metrics` needs one).
pub const BENCH_KEY: &str = "bench-key";

/// How long a daemon has to answer `/readyz`.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// What to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSpec {
    /// The `dialtoned` binary.
    pub binary: PathBuf,
    /// Media worker threads (0: one per core).
    pub media_workers: usize,
    /// The daemon's database, when not its own SQLite file.
    pub database_url: Option<String>,
    /// The organisation's cap on concurrent calls, if any.
    pub org_cap: Option<u32>,
    /// Whether tenants may point the daemon at 127.0.0.1 (a scripted responder, a Media
    /// Streams app, a webhook receiver of this process).
    pub allow_loopback: bool,
}

/// A running daemon; killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// Its HTTP address (health, metrics).
    pub http: SocketAddr,
    /// Its gRPC address.
    pub grpc: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `spec` and waits until it is ready.
    pub fn start(spec: &DaemonSpec) -> Result<Self, LoadgenError> {
        let dir = tempfile::tempdir().map_err(LoadgenError::io("the daemon's directory"))?;
        let http: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let grpc: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut command = Command::new(&spec.binary);
        if let Some(url) = &spec.database_url {
            command.env("DIALTONE_DATABASE_URL", url);
        }
        if let Some(cap) = spec.org_cap {
            command.env("DIALTONE_ORG_MAX_CONCURRENT_CALLS", cap.to_string());
        }
        let child = command
            .env("DIALTONE_HTTP_ADDR", http.to_string())
            .env("DIALTONE_GRPC_ADDR", grpc.to_string())
            .env("DIALTONE_SIP_ADDR", "127.0.0.1:0")
            .env("DIALTONE_RTP_PORTS", "20000-29999")
            .env("DIALTONE_DATA_DIR", dir.path())
            .env("DIALTONE_API_KEY", BENCH_KEY)
            .env("DIALTONE_WEBHOOK_SECRET", "bench")
            .env("DIALTONE_BRAIN_ADDR", "builtin:echo")
            .env("DIALTONE_MEDIA_WORKERS", spec.media_workers.to_string())
            .env("DIALTONE_LOG", "warn")
            .env(
                "DIALTONE_PRIVATE_DESTINATIONS",
                if spec.allow_loopback { "127.0.0.1" } else { "" },
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(LoadgenError::io(format!(
                "starting {}",
                spec.binary.display()
            )))?;
        let daemon = Self {
            child,
            http,
            grpc,
            _dir: dir,
        };
        let up = Instant::now();
        while http_get(http, "/readyz").is_none() {
            if up.elapsed() > READY_WITHIN {
                return Err(LoadgenError::DaemonNotReady {
                    binary: spec.binary.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(daemon)
    }

    /// Its process id (its CPU and memory are read from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its gRPC endpoint, `http://host:port`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP GET on loopback (health and metrics of the daemon we started), with its key.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {BENCH_KEY}\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_owned()))
}

/// A TCP port of 127.0.0.1 free now.
pub fn free_port() -> Result<u16, LoadgenError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(LoadgenError::io("finding a free port"))
}
