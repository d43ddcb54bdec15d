//! A private work directory that is removed when dropped.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::PeerError;

/// A directory under the system's temporary directory, named after a prefix, the process, the
/// clock and a counter, created mode 0700 (only its owner may enter it) by a call that fails if
/// the name exists, so no two are ever the same directory; removed with its contents on drop.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

/// Directories made by this process so far: the counter in their names.
static MADE: AtomicU64 = AtomicU64::new(0);

impl WorkDir {
    /// Creates a new directory whose name starts with `prefix`.
    pub fn new(prefix: &str) -> std::io::Result<WorkDir> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        loop {
            let n = MADE.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("{prefix}-{}-{nanos:09}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(WorkDir { path }),
                // Left by an earlier process with the same id: take the next name.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// A work directory for `peer` (the program's name), failing as a [`PeerError`].
    pub fn for_peer(peer: &str) -> Result<WorkDir, PeerError> {
        WorkDir::new(&format!("dialtone-{peer}")).map_err(PeerError::io(format!(
            "creating a work directory for {peer}"
        )))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn each_is_new_private_and_gone_when_dropped() {
        let a = WorkDir::new("dialtone-peers-test").unwrap();
        let b = WorkDir::new("dialtone-peers-test").unwrap();
        assert_ne!(a.path(), b.path());
        let mode = std::fs::metadata(a.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::create_dir(a.path().join("inner")).unwrap();
        std::fs::write(a.path().join("inner/file"), b"x").unwrap();
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists());
        assert!(b.path().is_dir());
    }
}
