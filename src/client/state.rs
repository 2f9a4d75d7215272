//! The client's state on disk, so that re-running a command whose outcome was unknown
//! cannot apply it twice.
//!
//! One JSON file per identity (`KEY.state` beside a key file; `dev-<ip>-<port>.state` in
//! the client home for unsigned development mode):
//!
//! ```json
//! {"client":123,"session":4,"next_seq":8,
//!  "pending":{"session":4,"seq":7,"op":{"type":"deposit","key":"foo","amount":"$5"},"command":"deposit foo 5"}}
//! ```
//!
//! `pending` is the request sent last whose reply has not come (absent when none); it is
//! written, atomically (temporary file, fsync, rename, directory fsync), *before* the
//! request is first sent, and cleared when its reply arrives. A client that finds a
//! pending request first sends exactly that request again (same client, session, seq and
//! op): the cluster answers it from its session cache or applies it, once.
//!
//! A process holds `<state>.lock` (an exclusive `flock`) while it uses the file, so two
//! clients never interleave their updates; a second one waits for the first. A state with
//! nothing pending may be deleted ([`StateFile::remove`]; `fba_client` does so in
//! development mode, where the client id is random anyway).

use crate::fsio::{sync_dir, IoFailure};
use crate::wallet::{Op, Request};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// State files are small; a larger file is not one.
const MAX_STATE_BYTES: u64 = 64 * 1024;

/// What a client keeps on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientState {
    /// The client id.
    pub client: u64,
    /// The last session registered (0: none).
    pub session: u64,
    /// The sequence number of the next request in `session`.
    pub next_seq: u64,
    /// The request whose reply has not come yet, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

/// A request sent (or about to be) whose reply has not come.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    /// The session it names (0 for a register).
    pub session: u64,
    /// Its sequence number.
    pub seq: u64,
    /// The operation.
    pub op: Op,
    /// The command line it came from (`deposit foo 5`), for messages.
    #[serde(default)]
    pub command: String,
}

impl Pending {
    /// The request, unsigned, from `client`.
    pub fn request(&self, client: u64) -> Request {
        Request::new(client, self.seq, self.op.clone()).with_session(self.session)
    }
}

/// Why the state file could not be used.
#[derive(Debug)]
pub enum StateError {
    /// The file system refused an operation.
    Io(IoFailure),
    /// The file is not a state file's JSON.
    Malformed(PathBuf, serde_json::Error),
    /// The file belongs to another client id (e.g. a key file was replaced).
    OtherClient {
        /// The state file.
        path: PathBuf,
        /// The client id in it.
        found: u64,
        /// The client id of this client.
        expected: u64,
    },
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Io(e) => e.fmt(f),
            StateError::Malformed(p, e) => write!(f, "client state {} is corrupt: {e}", p.display()),
            StateError::OtherClient { path, found, expected } => write!(
                f,
                "client state {} belongs to client {found}, not to this key's client {expected}; \
                 move it away if the old key is gone",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StateError {}

/// The state file of one client, locked for as long as this value lives.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    /// The open, locked `<state>.lock` (closing it releases the lock).
    _lock: File,
    /// The state as last read or saved.
    pub state: ClientState,
}

impl StateFile {
    /// Locks and reads the state at `path` (waiting for another process that holds it,
    /// after calling `on_wait` once); a missing file starts as `fresh` and is written at
    /// once. With `client`, a file holding another client id is refused.
    pub fn open(
        path: &Path,
        fresh: ClientState,
        client: Option<u64>,
        on_wait: impl FnOnce(),
    ) -> Result<StateFile, StateError> {
        let lock = lock_file(&lock_path(path), on_wait)?;
        let state = match read_state(path)? {
            Some(state) => state,
            None => {
                let mut file = StateFile { path: path.to_path_buf(), _lock: lock, state: fresh };
                file.save()?;
                return Ok(file);
            }
        };
        match client {
            Some(expected) if expected != state.client => {
                Err(StateError::OtherClient { path: path.to_path_buf(), found: state.client, expected })
            }
            _ => Ok(StateFile { path: path.to_path_buf(), _lock: lock, state }),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the state atomically: temporary file, fsync, rename, directory fsync.
    pub fn save(&mut self) -> Result<(), StateError> {
        let dir = super::keyfile::parent_dir(&self.path);
        let mut temp = self.path.clone().into_os_string();
        temp.push(".tmp");
        let temp = PathBuf::from(temp);
        let mut text = serde_json::to_string(&self.state).expect("state serializes");
        text.push('\n');
        let io = |operation, path: &Path| {
            let path = path.to_path_buf();
            move |e| StateError::Io(IoFailure { operation, path, source: e })
        };
        let mut file = private_options().open(&temp).map_err(io("create", &temp))?;
        file.write_all(text.as_bytes()).map_err(io("write", &temp))?;
        file.sync_all().map_err(io("sync", &temp))?;
        fs::rename(&temp, &self.path).map_err(io("replace", &self.path))?;
        sync_dir(&dir).map_err(io("sync", &dir))
    }
}

impl StateFile {
    /// Deletes the state file and its lock file (for a state that holds nothing worth
    /// keeping: no pending request).
    pub fn remove(self) -> Result<(), StateError> {
        let remove = |path: &Path| match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(StateError::Io(IoFailure::of("remove", path)(e)))
            }
            _ => Ok(()),
        };
        remove(&self.path)?;
        // The lock goes last, while still held: a process waiting for it then finds it
        // unlinked and opens the path again.
        remove(&lock_path(&self.path))
    }
}

/// Options that create or truncate a file with mode 0600.
fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// `<path>.lock`.
fn lock_path(path: &Path) -> PathBuf {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    PathBuf::from(lock)
}

/// Opens and exclusively locks `path`, waiting (after `on_wait`) if another process holds
/// it. A lock file removed by its holder ([`StateFile::remove`]) while this one waited is
/// opened again.
fn lock_file(path: &Path, on_wait: impl FnOnce()) -> Result<File, StateError> {
    let io = |operation| move |e| StateError::Io(IoFailure::of(operation, path)(e));
    let mut on_wait = Some(on_wait);
    loop {
        let mut options = private_options();
        options.truncate(false);
        let file = options.open(path).map_err(io("create"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                if let Some(on_wait) = on_wait.take() {
                    on_wait();
                }
                file.lock().map_err(io("lock"))?;
            }
            Err(TryLockError::Error(e)) => return Err(io("lock")(e)),
        }
        if still_linked(&file, path) {
            return Ok(file);
        }
    }
}

/// Whether `path` still names the open `file`.
#[cfg(unix)]
fn still_linked(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(open), Ok(named)) => (open.dev(), open.ino()) == (named.dev(), named.ino()),
        _ => false,
    }
}

/// Without inode numbers, trust the path.
#[cfg(not(unix))]
fn still_linked(_file: &File, _path: &Path) -> bool {
    true
}

/// The state in `path`, or `None` if there is no such file.
fn read_state(path: &Path) -> Result<Option<ClientState>, StateError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateError::Io(IoFailure::of("read", path)(e))),
    };
    let mut text = String::new();
    file.take(MAX_STATE_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| StateError::Io(IoFailure::of("read", path)(e)))?;
    serde_json::from_str(&text).map(Some).map_err(|e| StateError::Malformed(path.to_path_buf(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wallet::parse_text;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = crate::fsio::fresh_test_dir(&format!("clientstate-{tag}"));
        fs::create_dir_all(&dir).expect("dir");
        dir
    }

    fn fresh(client: u64) -> ClientState {
        ClientState { client, session: 0, next_seq: 1, pending: None }
    }

    #[test]
    fn state_survives_a_reopen_and_has_the_documented_json() {
        let dir = temp_dir("roundtrip");
        let path = dir.join("dev.state");
        let mut file = StateFile::open(&path, fresh(123), None, || {}).expect("open");
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"client\":123,\"session\":0,\"next_seq\":1}\n");
        let op = parse_text("deposit foo 5").unwrap();
        let pending = Pending { session: 4, seq: 7, op, command: "deposit foo 5".into() };
        file.state = ClientState { client: 123, session: 4, next_seq: 8, pending: Some(pending.clone()) };
        file.save().expect("save");
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "{\"client\":123,\"session\":4,\"next_seq\":8,\"pending\":{\"session\":4,\"seq\":7,\
             \"op\":{\"type\":\"deposit\",\"key\":\"foo\",\"amount\":\"$5\"},\"command\":\"deposit foo 5\"}}\n"
        );
        drop(file);
        let again = StateFile::open(&path, fresh(9), Some(123), || {}).expect("reopen");
        assert_eq!(again.state.pending, Some(pending.clone()));
        assert_eq!(pending.request(123).id(), (123, 4, 7));
        drop(again);
        let err = StateFile::open(&path, fresh(9), Some(5), || {}).expect_err("another client's");
        assert!(err.to_string().contains("belongs to client 123"), "{err}");
        fs::write(&path, "{").unwrap();
        assert!(matches!(StateFile::open(&path, fresh(9), None, || {}), Err(StateError::Malformed(..))));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_user_of_the_state_waits_for_the_first() {
        let dir = temp_dir("lock");
        let path = dir.join("k.state");
        let first = StateFile::open(&path, fresh(1), None, || {}).expect("open");
        let (tx, rx) = std::sync::mpsc::channel();
        let second = std::thread::spawn({
            let path = path.clone();
            move || StateFile::open(&path, fresh(1), None, move || tx.send(()).unwrap()).map(|f| f.state)
        });
        rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the second one waits");
        first.remove().expect("remove");
        assert_eq!(second.join().unwrap().expect("then opens").client, 1);
        assert!(path.exists() && lock_path(&path).exists(), "opened afresh by the second");
        let _ = fs::remove_dir_all(&dir);
    }
}
