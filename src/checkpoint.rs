//! The checkpoint: the whole wallet state at one decided slot, so that start-up replays
//! only the ledger after it.
//!
//! The ledger ([`crate::ledger`]) is the durable truth; rebuilding the wallets from it
//! alone costs time in proportion to the whole history. Each node therefore keeps
//! `assignment3_{port}.ckpt` beside it: an [`Image`] of the wallet (balances, owners,
//! sessions, membership) after slot *S*, with *S* and the ledger's hash of entry *S*. At
//! start-up a checkpoint is used only if the ledger holds entry *S* with that very hash
//! (so it describes this ledger's history, not another's); the node then replays entries
//! *S*+1 onwards. A missing, damaged or foreign checkpoint costs only time: the node
//! replays the whole ledger, as it did before checkpoints existed.
//!
//! # Format
//!
//! ```text
//! <the image, JSON, one line>\n
//! {"version":1,"slot":S,"ledger_hash":"<64 hex>","database_sha256":"<64 hex>"|null,"body_sha256":"<64 hex>","body_bytes":N}\n
//! ```
//!
//! The trailer comes last so the file is written in one streaming pass; it carries the
//! SHA-256 and length of the body (everything before the body's newline), so a torn or
//! damaged file is recognised, never half read. `database_sha256` is the SHA-256 of the
//! database file written together with this checkpoint (if any), so that start-up knows
//! such a file as the checkpoint's own, older but sound, rather than as damage.
//!
//! # Durability
//!
//! [`write`] writes a temporary file, syncs it, renames it over the checkpoint and syncs
//! the directory: after a crash or a power loss the file is the old or the new
//! checkpoint, complete. A checkpoint is only ever taken of a slot already synced to the
//! ledger, so it is never ahead of it.

use crate::fsio::{sync_dir, IoFailure};
use crate::hash::{hex, unhex, Digest, Sha256};
use crate::wallet::Image;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// The format version this build writes and reads.
const VERSION: u32 = 1;

/// A checkpoint: the wallet after `slot`.
#[derive(Debug)]
pub struct Checkpoint {
    /// The last slot whose batch the image includes.
    pub slot: u64,
    /// The ledger's hash of entry `slot`.
    pub ledger_hash: Digest,
    /// The SHA-256 of the database file written with this checkpoint, if one was.
    pub database_sha256: Option<Digest>,
    /// The wallet after `slot`.
    pub image: Image,
}

/// The last line of the file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trailer {
    version: u32,
    slot: u64,
    ledger_hash: String,
    database_sha256: Option<String>,
    body_sha256: String,
    body_bytes: u64,
}

/// Why a checkpoint could not be read or written.
#[derive(Debug)]
pub enum CheckpointError {
    /// The operating system refused an operation.
    Io(IoFailure),
    /// The file exists but is not a sound checkpoint.
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: Problem,
    },
}

/// What is wrong with a checkpoint file.
#[derive(Debug)]
pub enum Problem {
    /// It does not end with a trailer line.
    NoTrailer,
    /// The trailer is not the JSON this module writes.
    Trailer(serde_json::Error),
    /// Written by a format this build does not read.
    Version(u32),
    /// A digest in the trailer is not 64 lowercase hex digits.
    Digest,
    /// The body's length or SHA-256 differs from the trailer's (a torn or damaged file).
    Checksum,
    /// The body is not the JSON of a wallet image.
    Body(serde_json::Error),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NoTrailer => write!(f, "no trailer line"),
            Problem::Trailer(e) => write!(f, "bad trailer: {e}"),
            Problem::Version(v) => write!(f, "format version {v}, this build reads {VERSION}"),
            Problem::Digest => write!(f, "a digest in the trailer is not 64 lowercase hex digits"),
            Problem::Checksum => write!(f, "the body does not match the trailer's length and SHA-256"),
            Problem::Body(e) => write!(f, "bad body: {e}"),
        }
    }
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::Io(failure) => write!(f, "{failure}"),
            CheckpointError::Damaged { path, problem } => {
                write!(f, "checkpoint {} is damaged: {problem}", path.display())
            }
        }
    }
}

impl std::error::Error for CheckpointError {}

/// The checkpoint's file name for the node on `port`: `assignment3_{port}.ckpt`.
pub fn file_name(port: u16) -> String {
    format!("assignment3_{port}.ckpt")
}

/// Writes `checkpoint` as the checkpoint of the node on `port` in `dir`, atomically and
/// durably (see the [module docs](self)). Returns the file's size.
pub fn write(dir: &Path, port: u16, checkpoint: &Checkpoint) -> Result<u64, CheckpointError> {
    let path = dir.join(file_name(port));
    let temp = dir.join(format!(".{}.{}.tmp", file_name(port), std::process::id()));
    let written = write_temp(&temp, checkpoint).and_then(|size| {
        fs::rename(&temp, &path).map_err(IoFailure::of("rename temporary file over", &path))?;
        sync_dir(dir).map_err(IoFailure::of("sync directory", dir))?;
        Ok(size)
    });
    if written.is_err() {
        let _ = fs::remove_file(&temp); // best effort: the first error matters more
    }
    written.map_err(CheckpointError::Io)
}

/// Streams the body, buffered, through a hasher into `temp` (the hasher sees whole
/// buffers, not the encoder's small pieces), then the trailer; syncs.
fn write_temp(temp: &Path, checkpoint: &Checkpoint) -> Result<u64, IoFailure> {
    let failed = |operation| IoFailure::of(operation, temp);
    let file =
        OpenOptions::new().write(true).create(true).truncate(true).open(temp).map_err(failed("create"))?;
    let hashing = Hashing { inner: file, hash: Sha256::new(), bytes: 0 };
    let mut buffered = BufWriter::with_capacity(1 << 20, hashing);
    serde_json::to_writer(&mut buffered, &checkpoint.image)
        .map_err(|e| failed("write")(io::Error::from(e)))?;
    let body = buffered.into_inner().map_err(|e| failed("write")(e.into_error()))?;
    let trailer = Trailer {
        version: VERSION,
        slot: checkpoint.slot,
        ledger_hash: hex(&checkpoint.ledger_hash),
        database_sha256: checkpoint.database_sha256.as_ref().map(|d| hex(d)),
        body_sha256: hex(&body.hash.finish()),
        body_bytes: body.bytes,
    };
    let mut tail = b"\n".to_vec();
    serde_json::to_writer(&mut tail, &trailer).map_err(|e| failed("write")(io::Error::from(e)))?;
    tail.push(b'\n');
    let mut file = body.inner;
    file.write_all(&tail).map_err(failed("write"))?;
    file.sync_all().map_err(failed("sync"))?;
    Ok(body.bytes + tail.len() as u64)
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The checkpoint of the node on `port` in `dir`; `None` if there is none.
pub fn load(dir: &Path, port: u16) -> Result<Option<Checkpoint>, CheckpointError> {
    let path = dir.join(file_name(port));
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CheckpointError::Io(IoFailure::of("read", &path)(e))),
    };
    decode(&bytes).map(Some).map_err(|problem| CheckpointError::Damaged { path, problem })
}

/// Parses and checks a checkpoint file's content.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, Problem> {
    let content = bytes.strip_suffix(b"\n").ok_or(Problem::NoTrailer)?;
    let split = content.iter().rposition(|&b| b == b'\n').ok_or(Problem::NoTrailer)?;
    let (body, trailer) = (&content[..split], &content[split + 1..]);
    let trailer: Trailer = serde_json::from_slice(trailer).map_err(Problem::Trailer)?;
    if trailer.version != VERSION {
        return Err(Problem::Version(trailer.version));
    }
    let digest = |text: &str| -> Result<Digest, Problem> {
        let digest: Option<Digest> = unhex(text).and_then(|bytes| bytes.try_into().ok());
        digest.filter(|d| hex(d) == text).ok_or(Problem::Digest)
    };
    let body_sha256 = digest(&trailer.body_sha256)?;
    if trailer.body_bytes != body.len() as u64 || Sha256::new().update(body).finish() != body_sha256 {
        return Err(Problem::Checksum);
    }
    let database_sha256 = trailer.database_sha256.as_deref().map(digest).transpose()?;
    Ok(Checkpoint {
        slot: trailer.slot,
        ledger_hash: digest(&trailer.ledger_hash)?,
        database_sha256,
        image: serde_json::from_slice(body).map_err(Problem::Body)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wallet::{Key, Op, Request, Wallet, TEXT_CLIENT_BIT};

    fn wallet(n: usize) -> Wallet {
        let mut wallet = Wallet::new();
        for i in 0..n {
            let op = Op::Set { key: Key::new(format!("w{i}")).unwrap(), amount: "$1.50".parse().unwrap() };
            wallet.apply(&Request::new(TEXT_CLIENT_BIT | 9, i as u64 + 1, op));
        }
        wallet
    }

    fn checkpoint(wallet: &Wallet) -> Checkpoint {
        Checkpoint { slot: 12, ledger_hash: [7; 32], database_sha256: Some([9; 32]), image: wallet.image() }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fba-checkpoint-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_written_checkpoint_loads_back_exactly_and_leaves_no_temporary_file() {
        let dir = scratch("round-trip");
        assert!(load(&dir, 4000).unwrap().is_none(), "none yet");
        let wallet = wallet(300);
        let size = write(&dir, 4000, &checkpoint(&wallet)).unwrap();
        let loaded = load(&dir, 4000).unwrap().unwrap();
        assert_eq!((loaded.slot, loaded.ledger_hash, loaded.database_sha256), (12, [7; 32], Some([9; 32])));
        assert_eq!(Wallet::from_image(loaded.image).unwrap(), wallet);
        let files: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(files, [std::ffi::OsString::from(file_name(4000))]);
        assert_eq!(fs::metadata(dir.join(file_name(4000))).unwrap().len(), size);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_truncation_and_any_flipped_byte_is_refused() {
        let mut bytes = Vec::new();
        let dir = scratch("damage");
        write(&dir, 4001, &checkpoint(&wallet(20))).unwrap();
        bytes.extend(fs::read(dir.join(file_name(4001))).unwrap());
        fs::remove_dir_all(&dir).unwrap();
        assert!(decode(&bytes).is_ok());
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "cut at {len}");
        }
        for at in (0..bytes.len()).step_by(7) {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x20;
            let decoded = decode(&damaged);
            // A flipped bit may leave the trailer's digests' hex valid but different, or the
            // JSON of the trailer invalid: either way it is refused.
            assert!(decoded.is_err(), "flipped byte {at}: {:?}", decoded.map(|c| c.slot));
        }
    }
}
