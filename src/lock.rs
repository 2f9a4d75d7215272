//! One node per data directory and port: an exclusive lock held for the process lifetime.
//!
//! Two processes writing the same ledger would interleave appends and break its hash
//! chain, so [`DataDirLock::acquire`] takes an exclusive lock on
//! `DIR/assignment3_<port>.lock` (the assignment runs its four nodes in one directory
//! with different ports, hence one lock per port). After locking, the holder writes
//! `pid <pid> port <port>` into the file, so that a refused second process can name it.
//! The lock is the operating system's (`flock` on Unix): it disappears with the process,
//! however that ends, and the file itself is left in place.

use crate::fsio::IoFailure;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The exclusive lock of one node on its data directory; released when dropped.
#[derive(Debug)]
pub struct DataDirLock {
    /// The open, locked file (closing it releases the lock).
    _file: File,
    path: PathBuf,
}

/// The process holding a lock, as it recorded itself in the lock file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// The port it serves.
    pub port: u16,
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// The directory or the lock file could not be created, opened or written.
    Io(IoFailure),
    /// Another process holds the lock.
    Busy {
        /// The data directory.
        dir: PathBuf,
        /// The lock file.
        path: PathBuf,
        /// Who holds it, if the file says (it may be caught between locking and writing).
        holder: Option<Holder>,
    },
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Io(e) => write!(f, "{e}"),
            LockError::Busy { dir, path, holder } => {
                write!(f, "data directory {} is in use by another fba_server", dir.display())?;
                if let Some(Holder { pid, port }) = holder {
                    write!(f, " (pid {pid}, port {port})")?;
                }
                write!(f, ": lock file {}", path.display())
            }
        }
    }
}

impl std::error::Error for LockError {}

impl DataDirLock {
    /// The lock file of the node on `port` in `dir`.
    pub fn path_for(dir: &Path, port: u16) -> PathBuf {
        dir.join(format!("assignment3_{port}.lock"))
    }

    /// Creates `dir` if needed and locks it for the node on `port`, or names the process
    /// that already holds it. Never waits.
    pub fn acquire(dir: &Path, port: u16) -> Result<DataDirLock, LockError> {
        fs::create_dir_all(dir).map_err(|e| LockError::Io(IoFailure::of("create directory", dir)(e)))?;
        let path = Self::path_for(dir, port);
        let io = |operation| {
            let path = path.clone();
            move |source| LockError::Io(IoFailure { operation, path, source })
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = read_holder(&mut file);
                return Err(LockError::Busy { dir: dir.to_path_buf(), path, holder });
            }
            Err(TryLockError::Error(e)) => return Err(io("lock")(e)),
        }
        file.set_len(0).map_err(io("truncate"))?;
        writeln!(file, "pid {} port {port}", std::process::id()).map_err(io("write"))?;
        Ok(DataDirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Parses `pid <pid> port <port>` from the lock file, if it is there.
fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    let mut words = text.split_whitespace();
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some("pid"), Some(pid), Some("port"), Some(port)) => {
            Some(Holder { pid: pid.parse().ok()?, port: port.parse().ok()? })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        crate::fsio::fresh_test_dir(&format!("lock-{tag}"))
    }

    #[test]
    fn a_second_lock_on_the_same_port_is_refused_and_names_the_holder() {
        let dir = temp_dir("busy");
        let first = DataDirLock::acquire(&dir, 3000).expect("first lock");
        let content = fs::read_to_string(first.path()).expect("lock file");
        assert_eq!(content, format!("pid {} port 3000\n", std::process::id()));
        match DataDirLock::acquire(&dir, 3000) {
            Err(e @ LockError::Busy { .. }) => {
                let message = e.to_string();
                assert!(message.contains(&format!("(pid {}, port 3000)", std::process::id())), "{message}");
                assert!(message.contains("assignment3_3000.lock"), "{message}");
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        // Another port in the same directory is another node.
        let other = DataDirLock::acquire(&dir, 3001).expect("another port");
        drop(first);
        let again = DataDirLock::acquire(&dir, 3000).expect("released on drop");
        drop((other, again));
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_missing_directory_is_created() {
        let dir = temp_dir("create").join("nested");
        let lock = DataDirLock::acquire(&dir, 4000).expect("lock");
        assert!(lock.path().exists());
        drop(lock);
        fs::remove_dir_all(dir.parent().expect("parent")).ok();
    }
}
