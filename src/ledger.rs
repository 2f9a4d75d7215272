//! The ledger: an append-only, hash-chained log of every externalized slot.
//!
//! Each node keeps, beside its database file (see [`crate::store`]), the file
//! `assignment3_{port}.ledger` in the same data directory. It holds one entry per
//! externalized SCP slot, in slot order, numbered from 1 without gaps: entry *k* holds slot
//! *k*. The database file is only a projection of it: replaying the ledger from the start
//! ([`Ledger::replay`]) and applying every [`Batch`] rebuilds the wallets, and a node that
//! fell behind can fetch the entries it misses from a peer ([`Ledger::read_from`]) and
//! check them with [`verify_entry`].
//!
//! # Format
//!
//! The file is UTF-8 text, one line per entry, each line terminated by `\n`:
//!
//! ```text
//! {"slot":1,"hash":"1701e88b…55d1","batch":{"requests":[]}}
//! {"slot":2,"hash":"c40f7adf…20f3","batch":{"requests":[{"client":7,"seq":3,"op":{...}}]}}
//! ```
//!
//! Each line is, byte for byte, the concatenation of
//!
//! 1. `{"slot":` and the slot in decimal (no sign, no leading zero),
//! 2. `,"hash":"` and the entry hash as 64 lowercase hex digits,
//! 3. `","batch":` and exactly the bytes of [`Batch::encode`] (the batch's canonical
//!    compact JSON, embedded as JSON, not as a string),
//! 4. `}` and `\n`.
//!
//! There are no spaces outside the batch's strings, and the canonical batch encoding
//! escapes control characters, so a line never contains a raw newline. Every line is thus
//! a JSON object that any JSON reader can parse, but this module reads back only that exact
//! form: a line with different spacing, field order or escaping is refused as malformed.
//!
//! The hashes chain the entries:
//!
//! ```text
//! hash_0 = 32 zero bytes
//! hash_k = SHA-256("fba-ledger" ‖ hash_(k-1) ‖ k as a big-endian u64 ‖ batch bytes of entry k)
//! ```
//!
//! ([`chain_hash`]), so the last hash commits to the whole history, and two nodes with the
//! same last hash at the same slot have the same ledger.
//!
//! # Durability and crashes
//!
//! [`Ledger::append`] writes the whole line with one write and calls `fsync` (data only)
//! before returning, so an entry that was acknowledged survives a crash. A crash during an
//! append can leave a *torn tail*: the start of the line, a line without its newline, or a
//! line whose bytes were not all written (zeros or garbage in it, so its hash does not
//! verify). [`Ledger::open`] reads and checks every line (shape, slot numbering, hash
//! chain, that the batch decodes) and then:
//!
//! * if everything checks, reports [`Recovery::Clean`];
//! * if only the **last** line is bad in one of those torn-write ways (no newline,
//!   malformed, hash mismatch), truncates the file to the end of the last good line,
//!   fsyncs it and reports [`Recovery::DroppedTornTail`]; nothing acknowledged is lost,
//!   because that line's append never returned;
//! * otherwise refuses with [`LedgerError::Corrupt`], naming the file, the line and the
//!   problem, and leaves the file untouched. That covers a bad line followed by more data,
//!   and also a last line that no torn write can produce: a well-formed line for the wrong
//!   slot (a repeated or skipped entry), a line longer than any entry, or a batch that does
//!   not decode although its hash verifies (a file from an incompatible version). Data is
//!   never dropped silently, and no file content makes this module panic.
//!
//! A missing or empty file is an empty ledger; `open` creates the file (and the
//! directory).
//!
//! # Memory
//!
//! The ledger keeps no batches in memory: only the byte offset of every line (8 bytes per
//! slot), the end of the file and the last hash. Reads open their own read handle.

use crate::fsio::{sync_dir, IoFailure};
use crate::hash::{hex, unhex, Digest, Sha256};
use crate::wallet::{Batch, WalletError, MAX_BATCH_BYTES};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The domain separator hashed in front of every entry.
const DOMAIN: &[u8] = b"fba-ledger";

/// The hash before the first entry.
const GENESIS: Digest = [0; 32];

/// A line starts with this.
const SLOT_FIELD: &[u8] = b"{\"slot\":";
/// Comes after the slot number.
const HASH_FIELD: &[u8] = b",\"hash\":\"";
/// Comes after the hash.
const BATCH_FIELD: &[u8] = b"\",\"batch\":";
/// Closes the line.
const LINE_END: &[u8] = b"}\n";
/// Digits of `u64::MAX`.
const MAX_SLOT_DIGITS: usize = 20;
/// Hex digits of a digest.
const HASH_HEX_DIGITS: usize = 64;

/// The longest line an entry can have, newline included.
const MAX_LINE_BYTES: usize = SLOT_FIELD.len()
    + MAX_SLOT_DIGITS
    + HASH_FIELD.len()
    + HASH_HEX_DIGITS
    + BATCH_FIELD.len()
    + MAX_BATCH_BYTES
    + LINE_END.len();

/// Buffer size for sequential reads of the file.
const READ_BUFFER_BYTES: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why a ledger operation failed.
#[derive(Debug)]
pub enum LedgerError {
    /// The operating system refused an operation.
    Io(IoFailure),
    /// A line of the file is not a valid entry (and is not a droppable torn tail).
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The 1-based line number, which is also the slot that line must hold.
        line: u64,
        /// What is wrong with the line.
        problem: EntryProblem,
    },
    /// [`Ledger::append`] was given a slot other than the next one.
    OutOfOrder {
        /// The slot that must come next (`len() + 1`).
        expected: u64,
        /// The slot given.
        got: u64,
    },
    /// [`Ledger::read_from`] was asked for slot 0; slots are numbered from 1.
    SlotZero,
    /// An earlier append failed and its partial line could not be removed, so the file
    /// may end with a partial line; the ledger refuses further appends. Reopening it
    /// (which drops a torn tail) makes it usable again.
    Poisoned {
        /// The file.
        path: PathBuf,
    },
}

/// What is wrong with one line of the ledger file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryProblem {
    /// The file ends inside the line: it has no terminating newline.
    Incomplete,
    /// The line is longer than any entry can be.
    TooLong {
        /// Its length in bytes, newline included.
        bytes: u64,
    },
    /// The line is not of the form `{"slot":N,"hash":"<hex>","batch":<batch>}`.
    Malformed {
        /// The byte offset within the line where the form breaks.
        offset: usize,
        /// What should have been there.
        expected: &'static str,
    },
    /// A well-formed line holding another slot than its position requires (an entry
    /// missing before it, or repeated).
    WrongSlot {
        /// The slot the line must hold (its line number).
        expected: u64,
        /// The slot it holds.
        found: u64,
    },
    /// The stored hash is not the chain hash of the previous entry, the slot and the batch.
    HashMismatch {
        /// The hash written in the line.
        stored: Digest,
        /// The hash the chain gives.
        computed: Digest,
    },
    /// The hash verifies but the batch is not a valid canonical [`Batch`].
    BadBatch(WalletError),
}

impl EntryProblem {
    /// Whether a crash in the middle of an append can leave a last line with this problem.
    fn may_be_torn_write(&self) -> bool {
        matches!(
            self,
            EntryProblem::Incomplete | EntryProblem::Malformed { .. } | EntryProblem::HashMismatch { .. }
        )
    }
}

impl fmt::Display for LedgerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerError::Io(e) => e.fmt(f),
            LedgerError::Corrupt { path, line, problem } => {
                write!(f, "corrupt ledger file {}: line {line} (slot {line}): {problem}", path.display())
            }
            LedgerError::OutOfOrder { expected, got } => {
                write!(f, "cannot append slot {got} to the ledger: the next slot must be {expected}")
            }
            LedgerError::SlotZero => f.write_str("there is no ledger slot 0: slots are numbered from 1"),
            LedgerError::Poisoned { path } => write!(
                f,
                "ledger file {} is unusable: a failed append could not be undone (reopen it)",
                path.display()
            ),
        }
    }
}

impl fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryProblem::Incomplete => f.write_str("the file ends inside the line (no terminating newline)"),
            EntryProblem::TooLong { bytes } => {
                write!(f, "the line has {bytes} bytes, more than any entry ({MAX_LINE_BYTES})")
            }
            EntryProblem::Malformed { offset, expected } => {
                write!(f, "malformed entry: at byte {offset} of the line, expected {expected}")
            }
            EntryProblem::WrongSlot { expected, found } => write!(
                f,
                "the line holds slot {found} but must hold slot {expected} (an entry is missing or repeated)"
            ),
            EntryProblem::HashMismatch { stored, computed } => {
                write!(f, "hash mismatch: the line says {}, the chain gives {}", hex(stored), hex(computed))
            }
            EntryProblem::BadBatch(error) => write!(f, "the hash verifies but the batch is invalid: {error}"),
        }
    }
}

impl std::error::Error for LedgerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LedgerError::Io(e) => Some(e),
            _ => None,
        }
    }
}

fn io_error<'a>(operation: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LedgerError + 'a {
    move |source| LedgerError::Io(IoFailure { operation, path: path.to_path_buf(), source })
}

fn corrupt(path: &Path, line: u64, problem: EntryProblem) -> LedgerError {
    LedgerError::Corrupt { path: path.to_path_buf(), line, problem }
}

// ---------------------------------------------------------------------------------------
// Entries and hashes
// ---------------------------------------------------------------------------------------

/// One ledger entry: the batch externalized in a slot, and the chain hash up to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The slot (numbered from 1).
    pub slot: u64,
    /// The slot's value.
    pub batch: Batch,
    /// `chain_hash(previous entry's hash, slot, batch.encode())`.
    pub hash: Digest,
}

/// The hash of the entry for `slot` holding the batch encoded as `batch_bytes`, following
/// the entry whose hash is `prev` (32 zero bytes before slot 1):
/// `SHA-256("fba-ledger" ‖ prev ‖ slot as big-endian u64 ‖ batch_bytes)`.
pub fn chain_hash(prev: &Digest, slot: u64, batch_bytes: &[u8]) -> Digest {
    Sha256::new().update(DOMAIN).update(prev).update(&slot.to_be_bytes()).update(batch_bytes).finish()
}

/// Whether `entry` (e.g. received from a peer) correctly follows the entry whose hash is
/// `prev`: its hash must be the chain hash of `prev`, its slot and its batch. The caller
/// checks that the slot is the one it expects next.
pub fn verify_entry(prev: &Digest, entry: &Entry) -> bool {
    chain_hash(prev, entry.slot, entry.batch.encode()) == entry.hash
}

/// The line for an entry, newline included.
fn encode_line(slot: u64, hash: &Digest, batch_bytes: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(MAX_LINE_BYTES - MAX_BATCH_BYTES + batch_bytes.len());
    line.extend_from_slice(SLOT_FIELD);
    line.extend_from_slice(slot.to_string().as_bytes());
    line.extend_from_slice(HASH_FIELD);
    line.extend_from_slice(hex(hash).as_bytes());
    line.extend_from_slice(BATCH_FIELD);
    line.extend_from_slice(batch_bytes);
    line.extend_from_slice(LINE_END);
    line
}

/// The fields of a well-formed line.
struct Fields<'a> {
    slot: u64,
    hash: Digest,
    batch: &'a [u8],
}

/// Splits a line (without its newline) into its fields, checking the exact form.
fn parse_line(line: &[u8]) -> Result<Fields<'_>, EntryProblem> {
    let malformed = |offset, expected| EntryProblem::Malformed { offset, expected };
    let mut at = 0;
    let expect = |at: &mut usize, field: &[u8], expected: &'static str| {
        if line[*at..].starts_with(field) {
            *at += field.len();
            Ok(())
        } else {
            Err(malformed(*at, expected))
        }
    };
    expect(&mut at, SLOT_FIELD, r#"`{"slot":`"#)?;
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    let slot = parse_slot(&line[at..at + digits])
        .ok_or(malformed(at, "a slot number (decimal u64 without leading zeros)"))?;
    at += digits;
    expect(&mut at, HASH_FIELD, r#"`,"hash":"`"#)?;
    let hash = line
        .get(at..at + HASH_HEX_DIGITS)
        .and_then(parse_digest)
        .ok_or(malformed(at, "a hash of 64 lowercase hex digits"))?;
    at += HASH_HEX_DIGITS;
    expect(&mut at, BATCH_FIELD, r#"`","batch":`"#)?;
    match line[at..].strip_suffix(b"}") {
        Some(batch) => Ok(Fields { slot, hash, batch }),
        None => Err(malformed(line.len(), "`}` closing the entry")),
    }
}

/// A canonical decimal `u64`: 1 to 20 digits, no leading zero (except `0` itself).
fn parse_slot(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > MAX_SLOT_DIGITS || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// 64 lowercase hex digits as a digest.
fn parse_digest(text: &[u8]) -> Option<Digest> {
    if !text.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)) {
        return None;
    }
    unhex(std::str::from_utf8(text).ok()?)?.try_into().ok()
}

/// Checks `line` (newline included if it has one) as the entry for `slot` following the
/// entry whose hash is `prev`, in this order: complete, well-formed, right slot, hash
/// verifies, batch decodes.
fn check_line(line: &[u8], slot: u64, prev: &Digest) -> Result<Entry, EntryProblem> {
    let (hash, batch_bytes) = check_chain(line, slot, prev)?;
    let batch = Batch::decode(batch_bytes).map_err(EntryProblem::BadBatch)?;
    Ok(Entry { slot, batch, hash })
}

/// [`check_line`] without decoding the batch: complete, well-formed, right slot, hash
/// verifies. Returns the hash and the batch's bytes.
fn check_chain<'a>(line: &'a [u8], slot: u64, prev: &Digest) -> Result<(Digest, &'a [u8]), EntryProblem> {
    let body = line.strip_suffix(b"\n").ok_or(EntryProblem::Incomplete)?;
    let fields = parse_line(body)?;
    if fields.slot != slot {
        return Err(EntryProblem::WrongSlot { expected: slot, found: fields.slot });
    }
    let computed = chain_hash(prev, slot, fields.batch);
    if computed != fields.hash {
        return Err(EntryProblem::HashMismatch { stored: fields.hash, computed });
    }
    Ok((computed, fields.batch))
}

/// What [`read_line`] found.
struct RawLine {
    /// Bytes consumed from the reader, newline included; 0 at the end of the input.
    consumed: u64,
    /// Whether the line ended with a newline (rather than the end of the input).
    newline: bool,
    /// Whether the line was longer than [`MAX_LINE_BYTES`] (then only a prefix was kept).
    overlong: bool,
}

/// Reads the next line, newline included, into `buf`, keeping at most
/// [`MAX_LINE_BYTES`] bytes of it so that garbage without newlines cannot exhaust memory.
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<RawLine> {
    buf.clear();
    let mut raw = RawLine { consumed: 0, newline: false, overlong: false };
    loop {
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(raw);
        }
        let (take, newline) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = MAX_LINE_BYTES.saturating_sub(buf.len());
        buf.extend_from_slice(&available[..take.min(room)]);
        raw.overlong |= take > room;
        raw.consumed += take as u64;
        reader.consume(take);
        if newline {
            raw.newline = true;
            return Ok(raw);
        }
    }
}

/// Checks a line read by [`read_line`] into `buf`.
fn check_raw_line(raw: &RawLine, buf: &[u8], slot: u64, prev: &Digest) -> Result<Entry, EntryProblem> {
    check_raw_shape(raw)?;
    check_line(buf, slot, prev)
}

/// That a line read by [`read_line`] is complete and not too long.
fn check_raw_shape(raw: &RawLine) -> Result<(), EntryProblem> {
    if !raw.newline {
        Err(EntryProblem::Incomplete)
    } else if raw.overlong {
        Err(EntryProblem::TooLong { bytes: raw.consumed })
    } else {
        Ok(())
    }
}

/// Checks a line read by [`read_line`] into `buf` as the scan at opening does: its batch
/// is decoded only if `decode`. Returns its hash.
fn scan_raw_line(
    raw: &RawLine,
    buf: &[u8],
    slot: u64,
    prev: &Digest,
    decode: bool,
) -> Result<Digest, EntryProblem> {
    check_raw_shape(raw)?;
    match decode {
        true => check_line(buf, slot, prev).map(|entry| entry.hash),
        false => check_chain(buf, slot, prev).map(|(hash, _)| hash),
    }
}

// ---------------------------------------------------------------------------------------
// The ledger
// ---------------------------------------------------------------------------------------

/// What [`Ledger::open`] had to do to the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing: every line was a valid entry (or the file was missing or empty).
    Clean,
    /// The last line was a torn write from a crash during an append; the file was truncated
    /// to the end of the line before it.
    DroppedTornTail {
        /// How many bytes were cut off.
        bytes: u64,
        /// What was wrong with the dropped line.
        problem: EntryProblem,
    },
}

/// An open ledger file (see the [module documentation](self)).
#[derive(Debug)]
pub struct Ledger {
    /// The file.
    path: PathBuf,
    /// Opened for reading and appending; appends go through it.
    file: File,
    /// `offsets[k - 1]` is the byte offset of the line of slot `k`.
    offsets: Vec<u64>,
    /// The byte offset just after the last line (the file's length).
    end: u64,
    /// The hash of the last entry ([`GENESIS`] when empty).
    last_hash: Digest,
    /// Set when a failed append could not be undone.
    poisoned: bool,
}

/// The valid prefix of a file, found by [`scan`].
struct Scan {
    offsets: Vec<u64>,
    end: u64,
    last_hash: Digest,
    /// The bytes after `end`, and what is wrong with them, if they are a torn tail.
    torn: Option<(u64, EntryProblem)>,
}

impl Ledger {
    /// The ledger's file name for the node on `port`: `assignment3_{port}.ledger`.
    pub fn file_name(port: u16) -> String {
        format!("assignment3_{port}.ledger")
    }

    /// Opens (creating it, and `dir`, if missing) the ledger of the node on `port` in
    /// `dir`, checking every entry. A torn last line is cut off and reported as
    /// [`Recovery::DroppedTornTail`]; any other bad line fails with
    /// [`LedgerError::Corrupt`] and leaves the file untouched.
    pub fn open(dir: &Path, port: u16) -> Result<(Ledger, Recovery), LedgerError> {
        Ledger::open_covered(dir, port, 0)
    }

    /// [`Ledger::open`] for a node whose checkpoint holds the effect of the first
    /// `covered` entries: their batches are not decoded again (form, numbering and hash
    /// chain are still checked), so that opening a long ledger costs little more than
    /// reading and hashing it. [`Ledger::replay_from`] checks every entry it returns in
    /// full, so a checkpoint that turns out not to match loses nothing.
    pub fn open_covered(dir: &Path, port: u16, covered: u64) -> Result<(Ledger, Recovery), LedgerError> {
        fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
        let path = dir.join(Ledger::file_name(port));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_error("open ledger file", &path))?;
        // Make the file's directory entry durable, so that synced appends cannot vanish
        // with a file that was just created.
        sync_dir(dir).map_err(io_error("sync directory", dir))?;
        let scan = scan(&file, &path, covered)?;
        let recovery = match scan.torn {
            None => Recovery::Clean,
            Some((bytes, problem)) => {
                truncate(&path, scan.end)
                    .map_err(io_error("truncate the torn tail of ledger file", &path))?;
                Recovery::DroppedTornTail { bytes, problem }
            }
        };
        crate::fsio::note_synced(&path, scan.end);
        let ledger = Ledger {
            path,
            file,
            offsets: scan.offsets,
            end: scan.end,
            last_hash: scan.last_hash,
            poisoned: false,
        };
        Ok((ledger, recovery))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of entries, which is also the last slot (0 when empty).
    pub fn len(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The hash of the last entry (32 zero bytes when empty).
    pub fn last_hash(&self) -> Digest {
        self.last_hash
    }

    /// Appends the entry for `slot`, which must be `len() + 1`, and returns its hash. The
    /// line is written with one write and synced (`fsync` of the data) before this returns.
    /// If writing or syncing fails the partial line is cut off again and the ledger is
    /// unchanged; if even that fails, the ledger refuses further appends
    /// ([`LedgerError::Poisoned`]).
    pub fn append(&mut self, slot: u64, batch: &Batch) -> Result<Digest, LedgerError> {
        if self.poisoned {
            return Err(LedgerError::Poisoned { path: self.path.clone() });
        }
        let expected = self.len() + 1;
        if slot != expected {
            return Err(LedgerError::OutOfOrder { expected, got: slot });
        }
        let batch_bytes = batch.encode();
        let hash = chain_hash(&self.last_hash, slot, batch_bytes);
        let line = encode_line(slot, &hash, batch_bytes);
        let written = match self.file.write_all(&line) {
            Ok(()) => self.file.sync_data().map_err(io_error("sync ledger file", &self.path)),
            Err(e) => Err(io_error("append to ledger file", &self.path)(e)),
        };
        if let Err(error) = written {
            if truncate(&self.path, self.end).is_err() {
                self.poisoned = true;
            }
            return Err(error);
        }
        self.offsets.push(self.end);
        self.end += line.len() as u64;
        self.last_hash = hash;
        crate::fsio::note_synced(&self.path, self.end);
        Ok(hash)
    }

    /// The entries from `slot` on, as many consecutive ones as fit in `max_bytes` bytes
    /// of file lines (newlines included), but always at least one if `slot` exists; an
    /// empty vector when `slot > len()`. Meant for serving catch-up to peers. The entries
    /// are checked again (form, slot, hash chain, batch) while read.
    pub fn read_from(&self, slot: u64, max_bytes: usize) -> Result<Vec<Entry>, LedgerError> {
        if slot == 0 {
            return Err(LedgerError::SlotZero);
        }
        if slot > self.len() {
            return Ok(Vec::new());
        }
        let max_bytes = u64::try_from(max_bytes).unwrap_or(u64::MAX);
        let first = (slot - 1) as usize;
        let mut stop = first;
        let mut total = 0u64;
        while stop < self.offsets.len() {
            let size = self.line_end(stop) - self.offsets[stop];
            if stop > first && total + size > max_bytes {
                break;
            }
            total += size;
            stop += 1;
        }
        // Read the line before `slot` too, for the hash the first entry must chain from.
        let from = if first > 0 { self.offsets[first - 1] } else { 0 };
        let to = self.line_end(stop - 1);
        let mut bytes = vec![0; (to - from) as usize];
        let mut reader = File::open(&self.path).map_err(io_error("open ledger file", &self.path))?;
        reader
            .seek(SeekFrom::Start(from))
            .and_then(|_| reader.read_exact(&mut bytes))
            .map_err(io_error("read ledger file", &self.path))?;
        let mut at = 0;
        let mut prev = GENESIS;
        if first > 0 {
            let size = (self.offsets[first] - from) as usize;
            let line = &bytes[..size];
            let body = line.strip_suffix(b"\n").ok_or(EntryProblem::Incomplete);
            prev = body
                .and_then(|body| parse_line(body).map(|fields| fields.hash))
                .map_err(|problem| corrupt(&self.path, first as u64, problem))?;
            at = size;
        }
        let mut entries = Vec::with_capacity(stop - first);
        for index in first..stop {
            let size = (self.line_end(index) - self.offsets[index]) as usize;
            let number = index as u64 + 1;
            let entry = check_line(&bytes[at..at + size], number, &prev)
                .map_err(|problem| corrupt(&self.path, number, problem))?;
            prev = entry.hash;
            entries.push(entry);
            at += size;
        }
        Ok(entries)
    }

    /// Calls `f` with every entry, in slot order, reading the file sequentially and
    /// checking every entry again (form, slot, hash chain, batch). For rebuilding the
    /// wallets at startup.
    pub fn replay(&self, f: impl FnMut(Entry)) -> Result<(), LedgerError> {
        self.replay_from(1, f)
    }

    /// [`Ledger::replay`] of the entries from `first` on (none if `first > len()`); the
    /// first is checked against the hash of the entry before it. For rebuilding the
    /// wallets from a checkpoint of slot `first - 1`.
    pub fn replay_from(&self, first: u64, mut f: impl FnMut(Entry)) -> Result<(), LedgerError> {
        let first = first.max(1);
        if first > self.len() {
            return Ok(());
        }
        let mut prev = GENESIS;
        let mut from = 0;
        if first > 1 {
            prev = self.hash_of(first - 1)?;
            from = self.offsets[first as usize - 1];
        }
        let mut file = File::open(&self.path).map_err(io_error("open ledger file", &self.path))?;
        file.seek(SeekFrom::Start(from)).map_err(io_error("read ledger file", &self.path))?;
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file.take(self.end - from));
        let mut buf = Vec::new();
        for slot in first..=self.len() {
            let raw = read_line(&mut reader, &mut buf).map_err(io_error("read ledger file", &self.path))?;
            let entry = check_raw_line(&raw, &buf, slot, &prev)
                .map_err(|problem| corrupt(&self.path, slot, problem))?;
            prev = entry.hash;
            f(entry);
        }
        Ok(())
    }

    /// The hash of entry `slot` (`1..=len()`), as its line records it (the scan at
    /// opening checked the chain).
    pub fn hash_of(&self, slot: u64) -> Result<Digest, LedgerError> {
        let entry = self.read_from(slot, 0)?;
        let first = entry.first().ok_or(LedgerError::OutOfOrder { expected: self.len(), got: slot })?;
        Ok(first.hash)
    }

    /// The byte offset just after the line at `index` (slot `index + 1`).
    fn line_end(&self, index: usize) -> u64 {
        self.offsets.get(index + 1).copied().unwrap_or(self.end)
    }
}

/// Reads and checks every line of `file` from its start.
fn scan(file: &File, path: &Path, covered: u64) -> Result<Scan, LedgerError> {
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    let mut buf = Vec::new();
    let mut valid = Scan { offsets: Vec::new(), end: 0, last_hash: GENESIS, torn: None };
    // The first bad line that might be a torn tail: fine only if nothing follows it.
    let mut bad: Option<(u64, EntryProblem)> = None;
    let mut total = 0u64;
    loop {
        let raw = read_line(&mut reader, &mut buf).map_err(io_error("read ledger file", path))?;
        if raw.consumed == 0 {
            break;
        }
        if let Some((line, problem)) = bad.take() {
            return Err(corrupt(path, line, problem));
        }
        let line = valid.offsets.len() as u64 + 1;
        match scan_raw_line(&raw, &buf, line, &valid.last_hash, line > covered) {
            Ok(hash) => {
                valid.offsets.push(total);
                valid.last_hash = hash;
                valid.end = total + raw.consumed;
            }
            Err(problem) if problem.may_be_torn_write() => bad = Some((line, problem)),
            Err(problem) => return Err(corrupt(path, line, problem)),
        }
        total += raw.consumed;
    }
    valid.torn = bad.map(|(_, problem)| (total - valid.end, problem));
    Ok(valid)
}

/// Cuts the file at `path` to `len` bytes and syncs it. Uses its own write handle:
/// truncating through an append-only handle is not portable.
fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::wallet::{Amount, Key, Op, Request};
    use std::sync::atomic::{AtomicU64, Ordering};

    const PORT: u16 = 5001;

    /// A scratch directory removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("fba-ledger-{name}-{}-{unique}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            Scratch(dir)
        }

        fn file(&self) -> PathBuf {
            self.0.join(Ledger::file_name(PORT))
        }

        fn read(&self) -> Vec<u8> {
            fs::read(self.file()).unwrap()
        }

        fn write(&self, bytes: &[u8]) {
            fs::create_dir_all(&self.0).unwrap();
            fs::write(self.file(), bytes).unwrap();
        }

        fn open(&self) -> Result<(Ledger, Recovery), LedgerError> {
            Ledger::open(&self.0, PORT)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn deposit(client: u64, seq: u64, name: &str, dollars: &str) -> Request {
        let op = Op::Deposit { key: Key::new(name).unwrap(), amount: Amount::parse(dollars).unwrap() };
        Request::new(client, seq, op)
    }

    /// A distinct, non-trivial batch for `slot`.
    fn batch(slot: u64) -> Batch {
        let requests =
            (0..slot % 4).map(|i| deposit(i + 1, slot, &format!("w{slot}é\"{i}"), "1.5")).collect();
        Batch::new(requests)
    }

    /// A ledger of `n` entries in `scratch`; returns the file's lines (newlines included).
    fn filled(scratch: &Scratch, n: u64) -> Vec<Vec<u8>> {
        let (mut ledger, recovery) = scratch.open().unwrap();
        assert_eq!(recovery, Recovery::Clean);
        for slot in 1..=n {
            ledger.append(slot, &batch(slot)).unwrap();
        }
        lines(&scratch.read())
    }

    fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
        bytes.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec).collect()
    }

    fn replayed(ledger: &Ledger) -> Vec<Entry> {
        let mut entries = Vec::new();
        ledger.replay(|e| entries.push(e)).unwrap();
        entries
    }

    /// The entries a ledger of `n` batches must hold.
    fn expected_entries(n: u64) -> Vec<Entry> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|slot| {
                let batch = batch(slot);
                prev = chain_hash(&prev, slot, batch.encode());
                Entry { slot, batch, hash: prev }
            })
            .collect()
    }

    #[test]
    fn file_name_follows_the_database_naming() {
        assert_eq!(Ledger::file_name(5000), "assignment3_5000.ledger");
    }

    #[test]
    fn chain_hash_is_pinned() {
        // Computed independently with Python's hashlib:
        // sha256(b"fba-ledger" + prev + slot.to_bytes(8, "big") + batch_bytes).
        let empty = Batch::empty().encode().to_vec();
        let first = chain_hash(&GENESIS, 1, &empty);
        assert_eq!(hex(&first), "1701e88ba0f5d0987ab04229e8b5ba2d0720b692aa35c13a851f36ffc62755d1");
        let bytes =
            br#"{"requests":[{"client":7,"seq":3,"op":{"type":"deposit","key":"foo","amount":"$5"}}]}"#;
        assert_eq!(Batch::new(vec![deposit(7, 3, "foo", "5")]).encode(), bytes);
        assert_eq!(
            hex(&chain_hash(&first, 2, bytes)),
            "c40f7adff68841822acc22fdf221556fe83050bd79636440ead54fb09f3020f3"
        );
    }

    #[test]
    fn lines_have_the_documented_form() {
        let scratch = Scratch::new("form");
        let (mut ledger, _) = scratch.open().unwrap();
        ledger.append(1, &Batch::empty()).unwrap();
        ledger.append(2, &Batch::new(vec![deposit(7, 3, "foo", "5")])).unwrap();
        let text = String::from_utf8(scratch.read()).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"slot":1,"hash":"1701e88ba0f5d0987ab04229e8b5ba2d0720b692aa35c13a851f36ffc62755d1","batch":{"requests":[]}}"#,
                "\n",
                r#"{"slot":2,"hash":"c40f7adff68841822acc22fdf221556fe83050bd79636440ead54fb09f3020f3","batch":{"requests":[{"client":7,"seq":3,"op":{"type":"deposit","key":"foo","amount":"$5"}}]}}"#,
                "\n",
            )
        );
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(value["batch"]["requests"].is_array(), "the batch is embedded as JSON: {line}");
        }
    }

    #[test]
    fn append_and_reopen_round_trip() {
        let scratch = Scratch::new("round-trip");
        let (mut ledger, recovery) = scratch.open().unwrap();
        assert_eq!(recovery, Recovery::Clean);
        assert!(ledger.is_empty());
        assert_eq!(ledger.len(), 0);
        assert_eq!(ledger.last_hash(), GENESIS);
        assert_eq!(ledger.path(), scratch.file());
        assert_eq!(scratch.read(), b"", "open creates the directory and an empty file");
        let expected = expected_entries(9);
        for entry in &expected {
            assert_eq!(ledger.append(entry.slot, &entry.batch).unwrap(), entry.hash);
        }
        assert_eq!((ledger.len(), ledger.last_hash()), (9, expected[8].hash));
        drop(ledger);
        let (mut ledger, recovery) = scratch.open().unwrap();
        assert_eq!(recovery, Recovery::Clean);
        assert_eq!((ledger.len(), ledger.last_hash()), (9, expected[8].hash));
        assert_eq!(replayed(&ledger), expected);
        let next = chain_hash(&expected[8].hash, 10, batch(10).encode());
        assert_eq!(ledger.append(10, &batch(10)).unwrap(), next);
        assert_eq!(lines(&scratch.read()).len(), 10);
    }

    #[test]
    fn append_refuses_any_slot_but_the_next() {
        let scratch = Scratch::new("order");
        filled(&scratch, 2);
        let (mut ledger, _) = scratch.open().unwrap();
        let before = scratch.read();
        for got in [0, 1, 2, 4, u64::MAX] {
            let error = ledger.append(got, &batch(3)).unwrap_err();
            assert!(matches!(error, LedgerError::OutOfOrder { expected: 3, got: g } if g == got), "{error}");
        }
        assert_eq!(scratch.read(), before);
        assert_eq!(ledger.len(), 2);
        ledger.append(3, &batch(3)).unwrap();
    }

    #[test]
    fn replay_streams_every_entry_in_order_and_verifies() {
        let scratch = Scratch::new("replay");
        filled(&scratch, 25);
        let (ledger, _) = scratch.open().unwrap();
        let entries = replayed(&ledger);
        assert_eq!(entries, expected_entries(25));
        let mut prev = GENESIS;
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(entry.slot, i as u64 + 1);
            assert!(verify_entry(&prev, entry));
            prev = entry.hash;
        }
        let empty = Scratch::new("replay-empty");
        let (ledger, _) = empty.open().unwrap();
        assert!(replayed(&ledger).is_empty());
    }

    #[test]
    fn read_from_respects_the_byte_limit() {
        let scratch = Scratch::new("read-from");
        let sizes: Vec<usize> = filled(&scratch, 8).iter().map(Vec::len).collect();
        let (ledger, _) = scratch.open().unwrap();
        let expected = expected_entries(8);
        let slots = |from: u64, max: usize| -> Vec<u64> {
            let entries = ledger.read_from(from, max).unwrap();
            for entry in &entries {
                assert_eq!(entry, &expected[entry.slot as usize - 1]);
            }
            entries.iter().map(|e| e.slot).collect()
        };
        assert_eq!(slots(1, 0), [1], "at least one entry, whatever the limit");
        assert_eq!(slots(5, 1), [5]);
        assert_eq!(slots(1, sizes[0] + sizes[1]), [1, 2], "exactly two lines");
        assert_eq!(slots(1, sizes[0] + sizes[1] + sizes[2] - 1), [1, 2], "one byte short of three");
        assert_eq!(slots(3, sizes[2..6].iter().sum()), [3, 4, 5, 6]);
        assert_eq!(slots(4, usize::MAX), [4, 5, 6, 7, 8]);
        assert_eq!(slots(8, usize::MAX), [8]);
        assert!(slots(9, usize::MAX).is_empty());
        assert!(slots(u64::MAX, 10).is_empty());
        assert!(matches!(ledger.read_from(0, 100), Err(LedgerError::SlotZero)));
    }

    #[test]
    fn read_from_and_replay_notice_damage_after_open() {
        let scratch = Scratch::new("late-damage");
        let mut lines = filled(&scratch, 4);
        let (ledger, _) = scratch.open().unwrap();
        let at = lines[2].len() - 5;
        lines[2][at] ^= 0x01;
        scratch.write(&lines.concat());
        let error = ledger.read_from(3, 0).unwrap_err();
        assert!(matches!(error, LedgerError::Corrupt { line: 3, .. }), "{error}");
        assert!(matches!(ledger.replay(|_| ()), Err(LedgerError::Corrupt { line: 3, .. })));
        assert_eq!(
            ledger.read_from(1, lines[0].len() + lines[1].len()).unwrap().len(),
            2,
            "the entries before are fine"
        );
    }

    /// Opens a ledger whose file is `good` full lines plus `tail`, expects the tail to be
    /// dropped for `problem`, and checks that appending then continues cleanly.
    fn assert_torn_tail_dropped(name: &str, tail: &[u8], problem: impl Fn(&EntryProblem) -> bool) {
        let scratch = Scratch::new(name);
        let lines = filled(&scratch, 4);
        let good = lines[..3].concat();
        scratch.write(&[&good[..], tail].concat());
        let (mut ledger, recovery) = scratch.open().unwrap();
        match &recovery {
            Recovery::DroppedTornTail { bytes, problem: p } => {
                assert_eq!(*bytes, tail.len() as u64, "{name}");
                assert!(problem(p), "{name}: {p}");
            }
            Recovery::Clean => panic!("{name}: the torn tail was not noticed"),
        }
        assert_eq!(scratch.read(), good, "{name}: truncated to the last good line");
        assert_eq!(ledger.len(), 3);
        assert_eq!(ledger.last_hash(), expected_entries(3)[2].hash);
        ledger.append(4, &batch(4)).unwrap();
        ledger.append(5, &batch(5)).unwrap();
        drop(ledger);
        let (ledger, recovery) = scratch.open().unwrap();
        assert_eq!(recovery, Recovery::Clean, "{name}");
        assert_eq!(replayed(&ledger), expected_entries(5), "{name}");
    }

    #[test]
    fn torn_tails_are_dropped_and_appending_continues() {
        let scratch = Scratch::new("torn-source");
        let line4 = filled(&scratch, 4).swap_remove(3);
        let half = &line4[..line4.len() / 2];
        assert_torn_tail_dropped("half-line", half, |p| *p == EntryProblem::Incomplete);
        let unterminated = &line4[..line4.len() - 1];
        assert_torn_tail_dropped("no-newline", unterminated, |p| *p == EntryProblem::Incomplete);
        assert_torn_tail_dropped("garbage", b"garbage\n", |p| matches!(p, EntryProblem::Malformed { .. }));
        assert_torn_tail_dropped("empty-line", b"\n", |p| matches!(p, EntryProblem::Malformed { .. }));
        assert_torn_tail_dropped("zeros", &[0; 300], |p| *p == EntryProblem::Incomplete);
        let mut zeroed = line4.clone();
        zeroed[30..60].fill(0);
        assert_torn_tail_dropped("zeroed-middle", &zeroed, |p| matches!(p, EntryProblem::Malformed { .. }));
        let mut wrong_hash = line4.clone();
        let digit = SLOT_FIELD.len() + 1 + HASH_FIELD.len() + 10;
        wrong_hash[digit] = if wrong_hash[digit] == b'0' { b'1' } else { b'0' };
        assert_torn_tail_dropped("wrong-hash", &wrong_hash, |p| {
            matches!(p, EntryProblem::HashMismatch { .. })
        });
        let mut flipped_batch = line4.clone();
        let at = flipped_batch.len() - 10;
        flipped_batch[at] ^= 0x04;
        assert_torn_tail_dropped("flipped-batch", &flipped_batch, |p| {
            matches!(p, EntryProblem::HashMismatch { .. } | EntryProblem::Malformed { .. })
        });
    }

    #[test]
    fn a_missing_or_empty_file_is_an_empty_ledger() {
        let scratch = Scratch::new("empty");
        scratch.write(b"");
        let (ledger, recovery) = scratch.open().unwrap();
        assert_eq!((ledger.len(), recovery), (0, Recovery::Clean));
        let nested = Scratch::new("nested");
        let (ledger, _) = Ledger::open(&nested.0.join("a/b"), PORT).unwrap();
        assert!(ledger.is_empty());
        assert!(ledger.path().exists());
    }

    /// Writes `content`, expects `open` to refuse it as corrupt at `line`, and checks the
    /// file is untouched and the message names the file and the line.
    fn assert_refused(name: &str, content: &[u8], line: u64, problem: impl Fn(&EntryProblem) -> bool) {
        let scratch = Scratch::new(name);
        scratch.write(content);
        let error = scratch.open().unwrap_err();
        let message = error.to_string();
        match &error {
            LedgerError::Corrupt { path, line: l, problem: p } => {
                assert_eq!(path, &scratch.file(), "{name}");
                assert_eq!(*l, line, "{name}: {message}");
                assert!(problem(p), "{name}: {message}");
            }
            other => panic!("{name}: expected corruption, got {other}"),
        }
        assert!(message.contains(&scratch.file().display().to_string()), "{message}");
        assert!(message.contains(&format!("line {line}")), "{message}");
        assert_eq!(scratch.read(), content, "{name}: the file is left untouched");
    }

    #[test]
    fn corruption_before_the_last_line_is_refused() {
        let source = Scratch::new("corrupt-source");
        let lines = filled(&source, 5);
        let with_line2 = |line2: &[u8]| [&lines[0][..], line2, &lines[2..].concat()].concat();

        let mut flipped = lines[1].clone();
        let at = flipped.len() - 12;
        flipped[at] ^= 0x01;
        assert_refused("bit-flip", &with_line2(&flipped), 2, |p| {
            matches!(p, EntryProblem::HashMismatch { .. } | EntryProblem::Malformed { .. })
        });

        let mut wrong_hash = lines[1].clone();
        let digit = SLOT_FIELD.len() + 1 + HASH_FIELD.len();
        wrong_hash[digit] = if wrong_hash[digit] == b'f' { b'e' } else { b'f' };
        assert_refused("wrong-hash", &with_line2(&wrong_hash), 2, |p| {
            matches!(p, EntryProblem::HashMismatch { .. })
        });

        let gap = [&lines[0][..], &lines[2..].concat()].concat();
        assert_refused("gap", &gap, 2, |p| *p == EntryProblem::WrongSlot { expected: 2, found: 3 });

        let duplicated = [&lines[..3].concat()[..], &lines[2..].concat()].concat();
        assert_refused("duplicate", &duplicated, 4, |p| {
            *p == EntryProblem::WrongSlot { expected: 4, found: 3 }
        });

        assert_refused("garbage-middle", &with_line2(b"garbage\n"), 2, |p| {
            matches!(p, EntryProblem::Malformed { offset: 0, .. })
        });
        assert_refused("blank-middle", &with_line2(b"\n"), 2, |p| {
            matches!(p, EntryProblem::Malformed { .. })
        });

        // A bad line followed only by an incomplete one: two damaged lines, not one torn
        // append.
        let half = &lines[4][..lines[4].len() / 2];
        let content = [&lines[..3].concat()[..], b"garbage\n", half].concat();
        assert_refused("bad-then-torn", &content, 4, |p| matches!(p, EntryProblem::Malformed { .. }));
    }

    #[test]
    fn last_lines_no_crash_can_produce_are_refused() {
        let source = Scratch::new("tail-source");
        let lines = filled(&source, 3);

        // The last line repeated.
        let repeated = [&lines.concat()[..], &lines[2]].concat();
        assert_refused("repeated-last", &repeated, 4, |p| {
            *p == EntryProblem::WrongSlot { expected: 4, found: 3 }
        });

        // A correctly hashed batch that does not decode (e.g. written by another version).
        let prev = expected_entries(3)[2].hash;
        let bad_batch = br#"{"requests":[{"client":1}]}"#;
        let line = encode_line(4, &chain_hash(&prev, 4, bad_batch), bad_batch);
        let content = [&lines.concat()[..], &line].concat();
        assert_refused("undecodable", &content, 4, |p| matches!(p, EntryProblem::BadBatch(_)));

        // A complete line longer than any entry.
        let mut long = vec![b'x'; MAX_LINE_BYTES + 10];
        long.push(b'\n');
        let content = [&lines.concat()[..], &long].concat();
        assert_refused("too-long", &content, 4, |p| *p == EntryProblem::TooLong { bytes: long.len() as u64 });
    }

    #[test]
    fn parse_line_accepts_only_the_exact_form() {
        let good = encode_line(12, &[0xab; 32], br#"{"requests":[]}"#);
        let body = &good[..good.len() - 1];
        let fields = parse_line(body).unwrap();
        assert_eq!((fields.slot, fields.hash, fields.batch), (12, [0xab; 32], &br#"{"requests":[]}"#[..]));
        let hash = "ab".repeat(32);
        let bad = [
            format!(r#"{{"slot":012,"hash":"{hash}","batch":{{"requests":[]}}}}"#),
            format!(r#"{{"slot":+12,"hash":"{hash}","batch":{{"requests":[]}}}}"#),
            format!(r#"{{"slot":99999999999999999999,"hash":"{hash}","batch":{{"requests":[]}}}}"#),
            format!(r#"{{"slot": 12,"hash":"{hash}","batch":{{"requests":[]}}}}"#),
            format!(r#"{{"hash":"{hash}","slot":12,"batch":{{"requests":[]}}}}"#),
            format!(r#"{{"slot":12,"hash":"{}","batch":{{"requests":[]}}}}"#, hash.to_uppercase()),
            format!(r#"{{"slot":12,"hash":"{}","batch":{{"requests":[]}}}}"#, &hash[2..]),
            format!(r#"{{"slot":12,"hash":"{hash}","batch":{{"requests":[]}}"#),
            format!(r#"{{"slot":12,"hash":"{hash}","batch":"{{\"requests\":[]}}"}}"#),
            r#"{"slot":12"#.to_string(),
            String::new(),
        ];
        for text in &bad {
            let parsed = parse_line(text.as_bytes());
            let ok = match &parsed {
                // Shape errors, or a batch field that is not a batch.
                Err(EntryProblem::Malformed { .. }) => true,
                Ok(fields) => Batch::decode(fields.batch).is_err(),
                Err(_) => false,
            };
            assert!(ok, "{text}");
        }
    }

    #[test]
    fn verify_entry_rejects_tampering() {
        let entries = expected_entries(3);
        assert!(verify_entry(&entries[1].hash, &entries[2]));
        let mut tampered = entries[2].clone();
        tampered.batch = Batch::new(vec![deposit(1, 1, "thief", "1000")]);
        assert!(!verify_entry(&entries[1].hash, &tampered));
        let mut moved = entries[2].clone();
        moved.slot = 4;
        assert!(!verify_entry(&entries[1].hash, &moved));
        assert!(!verify_entry(&entries[0].hash, &entries[2]), "wrong predecessor");
    }

    #[test]
    fn open_never_panics_and_never_invents_entries() {
        let source = Scratch::new("fuzz-source");
        let original = filled(&source, 6).concat();
        let expected = expected_entries(6);
        let mut rng = Rng::new(11);
        let scratch = Scratch::new("fuzz");
        for _ in 0..300 {
            let mut bytes = original.clone();
            for _ in 0..=rng.below(3) {
                let at = rng.below(bytes.len() as u64 + 1) as usize;
                match rng.below(4) {
                    0 => bytes.insert(at, rng.next_u64() as u8),
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    2 if at < bytes.len() => bytes[at] ^= 1 << rng.below(8),
                    _ => bytes.truncate(at),
                }
            }
            scratch.write(&bytes);
            match scratch.open() {
                Ok((ledger, recovery)) => {
                    let entries = replayed(&ledger);
                    assert_eq!(entries, expected[..entries.len()], "only a prefix of what was written");
                    let kept = fs::metadata(scratch.file()).unwrap().len();
                    match recovery {
                        Recovery::Clean => assert_eq!(kept, bytes.len() as u64),
                        Recovery::DroppedTornTail { bytes: dropped, .. } => {
                            assert_eq!(kept + dropped, bytes.len() as u64)
                        }
                    }
                }
                Err(LedgerError::Corrupt { .. }) => assert_eq!(scratch.read(), bytes),
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
    }
}
