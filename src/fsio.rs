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

/// Test hook for a simulated power loss (`tests/durability.rs`): with the environment
/// variable `FBA_SYNC_LOG` naming a file, each time the ledger or the journal is known
/// durable up to some length (opened, synced, rewritten) a line `<length> <path>` is
/// appended to it. A test kills the node, cuts each file back to its last logged length
/// (what a power loss keeps of an append-only file) and restarts it.
pub fn note_synced(path: &Path, len: u64) {
    static LOG: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let Some(log) = LOG.get_or_init(|| std::env::var_os("FBA_SYNC_LOG").map(PathBuf::from)) else { return };
    let line = format!("{len} {}\n", path.display());
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    if let Err(e) = appended {
        eprintln!("FBA_SYNC_LOG {}: {e}", log.display());
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

/// Why [`write_new_private`] wrote nothing (or stopped part way, for `Io`).
#[derive(Debug)]
pub enum PrivateWriteError {
    /// The file exists already; it was left alone.
    Exists,
    /// Creating, writing or syncing failed.
    Io(IoFailure),
}

/// Creates `path` (never overwriting), readable by its owner only (mode 0600 on Unix),
/// and writes and syncs `bytes`: how key files are made.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), PrivateWriteError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let failed = |operation| move |e| PrivateWriteError::Io(IoFailure::of(operation, path)(e));
    let mut file = options.open(path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => PrivateWriteError::Exists,
        _ => failed("create")(e),
    })?;
    file.write_all(bytes).map_err(failed("write"))?;
    file.sync_all().map_err(failed("sync"))
}

/// The file's mode when group or others may read or write it (a secret there is exposed);
/// `None` when it is private (or on systems without Unix modes).
pub fn exposed_mode(file: &std::fs::File) -> io::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata()?.permissions().mode();
        Ok((mode & 0o077 != 0).then_some(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        Ok(None)
    }
}

/// For unit tests: `<temp>/fba-<tag>-<pid>`, removed first if an earlier run left it
/// (not created).
#[cfg(test)]
pub(crate) fn fresh_test_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fba-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
