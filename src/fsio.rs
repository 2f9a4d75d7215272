//! The one shape of a file-system failure, shared by the store, the ledger and the journal.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// An operation on a file or directory that the operating system refused.
#[derive(Debug)]
pub struct IoFailure {
    /// What was being done, e.g. `"read"` or `"append to"`.
    pub operation: &'static str,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// The underlying error.
    pub source: io::Error,
}

impl IoFailure {
    /// For `map_err`: `file.sync_data().map_err(IoFailure::of("sync", &path))`.
    pub fn of<'a>(operation: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> IoFailure + 'a {
        move |source| IoFailure { operation, path: path.to_path_buf(), source }
    }
}

/// Makes a rename or file creation inside `dir` durable (fsync of the directory).
#[cfg(unix)]
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Directories cannot be opened for syncing here; a rename is as durable as it gets.
#[cfg(not(unix))]
pub fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {} {}: {}", self.operation, self.path.display(), self.source)
    }
}

impl std::error::Error for IoFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}
