//! A client's key file and its home directory.
//!
//! `fba_client keygen` writes a new Ed25519 key as a small JSON document, owner-only
//! (mode 0600, never overwriting, synced):
//! `{"client":123,"public_key":"<base64 of 32 bytes>","pkcs8":"<base64 of the PKCS#8 v2 key>"}`.
//! `client` and `public_key` are there for people to read; the key is `pkcs8`, and a file
//! whose other two fields do not match it is refused. A key file that group or others may
//! read is refused too, with the `chmod` that fixes it.
//!
//! Keys and client state live in the client home: `$FBA_CLIENT_HOME`, or `$HOME/.fba`
//! (created with mode 0700).

use crate::fsio::{sync_dir, IoFailure};
use crate::hash::{base64, unbase64};
use crate::wallet::{ClientKey, KeyError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The environment variable naming the client home.
pub const HOME_VAR: &str = "FBA_CLIENT_HOME";

/// The key file's name in the client home.
pub const DEFAULT_KEY_NAME: &str = "client.key";

/// Key files are tiny; a larger file is not one.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Why a key file could not be written or read.
#[derive(Debug)]
pub enum KeyFileError {
    /// `keygen` refuses to overwrite an existing file.
    Exists(PathBuf),
    /// The file system refused an operation.
    Io(IoFailure),
    /// Group or others may access the file (its mode is given).
    Exposed(PathBuf, u32),
    /// The file is not a key file's JSON.
    Malformed(PathBuf, serde_json::Error),
    /// The `pkcs8` field is not base64, or the key in it is not an Ed25519 key.
    BadKey(PathBuf, Option<KeyError>),
    /// The `client` or `public_key` field does not match the key.
    Mismatch(PathBuf),
    /// The system random generator failed.
    Generate(KeyError),
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::Exists(p) => write!(f, "{} exists; refusing to overwrite a key", p.display()),
            KeyFileError::Io(e) => e.fmt(f),
            KeyFileError::Exposed(p, mode) => write!(
                f,
                "key file {} is accessible to group or others (mode {:04o}); make it private with: chmod 600 {}",
                p.display(),
                mode & 0o7777,
                p.display()
            ),
            KeyFileError::Malformed(p, e) => write!(f, "{} is not a client key file: {e}", p.display()),
            KeyFileError::BadKey(p, Some(e)) => write!(f, "key file {}: {e}", p.display()),
            KeyFileError::BadKey(p, None) => write!(f, "key file {}: pkcs8 is not base64", p.display()),
            KeyFileError::Mismatch(p) => {
                write!(f, "key file {}: client or public_key does not match the key", p.display())
            }
            KeyFileError::Generate(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for KeyFileError {}

/// The JSON shape of a client key file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyJson {
    client: u64,
    public_key: String,
    pkcs8: String,
}

/// The client home: `$FBA_CLIENT_HOME`, else `$HOME/.fba`; `None` when neither is set.
pub fn client_home() -> Option<PathBuf> {
    let nonempty = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from);
    nonempty(HOME_VAR).or_else(|| nonempty("HOME").map(|home| home.join(".fba")))
}

/// Creates `dir` and its missing parents, the new ones with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), IoFailure> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(IoFailure::of("create directory", dir))
}

/// Generates a new key and writes it to `path` (mode 0600, synced; the parent directory is
/// created if missing). Refuses if `path` exists.
pub fn generate_key_file(path: &Path) -> Result<ClientKey, KeyFileError> {
    if path.symlink_metadata().is_ok() {
        return Err(KeyFileError::Exists(path.to_path_buf()));
    }
    let dir = parent_dir(path);
    create_private_dir(&dir).map_err(KeyFileError::Io)?;
    let (key, pkcs8) = ClientKey::generate().map_err(KeyFileError::Generate)?;
    let json =
        KeyJson { client: key.client_id(), public_key: key.public_key().to_string(), pkcs8: base64(&pkcs8) };
    let mut text = serde_json::to_string(&json).expect("strings and integers serialize");
    text.push('\n');
    write_new_private(path, text.as_bytes())?;
    sync_dir(&dir).map_err(|e| KeyFileError::Io(IoFailure::of("sync", &dir)(e)))?;
    Ok(key)
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates `path` (never overwriting), owner-only, and writes and syncs `bytes`.
fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    crate::fsio::write_new_private(path, bytes).map_err(|e| match e {
        crate::fsio::PrivateWriteError::Exists => KeyFileError::Exists(path.to_path_buf()),
        crate::fsio::PrivateWriteError::Io(failure) => KeyFileError::Io(failure),
    })
}

/// Reads the key in `path`, refusing a file group or others may access.
pub fn read_key_file(path: &Path) -> Result<ClientKey, KeyFileError> {
    let io = |operation| move |e| KeyFileError::Io(IoFailure::of(operation, path)(e));
    let file = File::open(path).map_err(io("read"))?;
    check_private(&file, path)?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE_BYTES).read_to_string(&mut text).map_err(io("read"))?;
    let json: KeyJson =
        serde_json::from_str(&text).map_err(|e| KeyFileError::Malformed(path.to_path_buf(), e))?;
    let pkcs8 = unbase64(&json.pkcs8).ok_or_else(|| KeyFileError::BadKey(path.to_path_buf(), None))?;
    let key = ClientKey::from_pkcs8(&pkcs8).map_err(|e| KeyFileError::BadKey(path.to_path_buf(), Some(e)))?;
    if key.client_id() != json.client || key.public_key().to_string() != json.public_key {
        return Err(KeyFileError::Mismatch(path.to_path_buf()));
    }
    Ok(key)
}

/// Refuses a file that group or others may read or write.
fn check_private(file: &File, path: &Path) -> Result<(), KeyFileError> {
    match crate::fsio::exposed_mode(file) {
        Ok(None) => Ok(()),
        Ok(Some(mode)) => Err(KeyFileError::Exposed(path.to_path_buf(), mode)),
        Err(e) => Err(KeyFileError::Io(IoFailure::of("read", path)(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        crate::fsio::fresh_test_dir(&format!("clientkey-{tag}"))
    }

    #[test]
    fn a_generated_key_reads_back_and_is_never_overwritten() {
        let dir = temp_dir("roundtrip");
        let path = dir.join("sub").join("client.key");
        let key = generate_key_file(&path).expect("keygen");
        let again = read_key_file(&path).expect("read back");
        assert_eq!((again.client_id(), again.public_key()), (key.client_id(), key.public_key()));
        assert!(matches!(generate_key_file(&path), Err(KeyFileError::Exists(_))));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(&dir.join("sub")), 0o700);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
            let err = read_key_file(&path).expect_err("exposed");
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn broken_key_files_are_refused_with_a_reason() {
        let dir = temp_dir("broken");
        create_private_dir(&dir).expect("dir");
        let path = dir.join("k");
        let key = generate_key_file(&path).expect("keygen");
        let text = fs::read_to_string(&path).expect("read");
        let cases = [
            ("not json".to_string(), "is not a client key file"),
            (text.replace(&key.client_id().to_string(), "7"), "does not match"),
            (text.replace("\"pkcs8\":\"", "\"pkcs8\":\"!"), "not base64"),
        ];
        for (n, (content, reason)) in cases.iter().enumerate() {
            let bad = dir.join(format!("bad{n}"));
            write_new_private(&bad, content.as_bytes()).expect("write");
            let err = read_key_file(&bad).expect_err("refused");
            assert!(err.to_string().contains(reason), "{err}");
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
