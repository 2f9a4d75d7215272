//! The database file: wallets saved exactly as the assignment's PickleDB would save them.
//!
//! Each node keeps its wallets in `assignment3_{port}.db` inside a data directory. The
//! content is a JSON object of wallet name → amount string, byte for byte what Python's
//! `json.dump(obj, f)` writes with default arguments (PickleDB 0.9's format), e.g.
//! `{"foo": "$30", "bar": "$10"}`:
//!
//! * separators `", "` and `": "`, keys in first-insertion order, no trailing newline,
//!   `{}` when empty;
//! * `ensure_ascii` escaping: `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`, other characters
//!   outside printable ASCII (controls, DEL, all non-ASCII) as `\uXXXX` with lowercase
//!   hex, characters above U+FFFF as a UTF-16 surrogate pair. `/` is not escaped.
//!
//! # Saving
//!
//! [`Store::save`] is atomic: it writes a fresh temporary file in the same directory,
//! fsyncs it, renames it over the database file and fsyncs the directory, so after a
//! crash the file holds either the old or the new content, never a mixture or nothing.
//! The temporary file is removed if any step fails.
//!
//! # Loading
//!
//! [`Store::load`] treats a missing file as an empty store. An existing file must parse
//! completely with the strict parser below, or loading fails with
//! [`StoreError::Corrupt`] naming the file, the byte offset and the problem; data is never
//! silently dropped. The parser accepts exactly one JSON object whose values are all
//! strings, with any JSON whitespace between tokens (so files written by other JSON
//! writers, such as newer PickleDB's compact `{"foo":"$30"}`, load too) and every string
//! escape including surrogate pairs. It is hand-written because `serde_json` without extra
//! features would not keep the keys in file order. On top of JSON it requires:
//!
//! * every key to be a valid wallet name ([`Key`]) and every value a valid [`Amount`];
//! * no key twice. Python would keep the last value silently; a file this module writes
//!   never repeats a key, so a repeated one means the file was damaged or hand-edited and
//!   is reported rather than guessed about;
//! * a non-empty file. PickleDB 0.9 fails on an empty file too (PickleDB 1.x reads it as
//!   empty); since saves here are atomic, an empty file can only be damage;
//! * no byte-order mark, no lone surrogate escapes (a Rust string cannot hold one).

use crate::fsio::{sync_dir, IoFailure};
use crate::wallet::{Amount, Key, WalletError};
use std::collections::HashSet;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How far a save waits for the disk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// File and directory synced: the new content survives a power loss.
    Full,
    /// No sync: the new content survives a killed process, not a power loss.
    None,
}

/// Distinguishes the temporary files of concurrent saves within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why loading or saving the database file failed.
#[derive(Debug)]
pub enum StoreError {
    /// The operating system refused an operation.
    Io(IoFailure),
    /// The file exists but is not a valid wallet database.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: CorruptReason,
    },
}

/// What is wrong with a database file's content. Offsets are in bytes from the start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorruptReason {
    /// The file has no bytes at all.
    Empty,
    /// The bytes are not UTF-8.
    InvalidUtf8 {
        /// Where the first bad byte is.
        offset: usize,
    },
    /// The file ends in the middle of the object (e.g. a truncated write).
    UnexpectedEnd {
        /// What should have come next.
        expected: &'static str,
    },
    /// A character that does not belong there.
    Unexpected {
        /// Where it is.
        offset: usize,
        /// What should have been there.
        expected: &'static str,
        /// What is there.
        found: char,
    },
    /// A raw control character inside a string (JSON requires them escaped).
    ControlCharacter {
        /// Where it is.
        offset: usize,
    },
    /// A backslash escape that JSON does not define, or a malformed `\u` escape.
    InvalidEscape {
        /// Where the backslash is.
        offset: usize,
    },
    /// A `\u` escape of half a surrogate pair without its other half.
    LoneSurrogate {
        /// Where the escape is.
        offset: usize,
    },
    /// Non-whitespace after the closing `}`.
    TrailingData {
        /// Where it starts.
        offset: usize,
    },
    /// A key present twice.
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// A key that is not a valid wallet name.
    BadKey {
        /// Why.
        error: WalletError,
    },
    /// A value that is not a valid amount.
    BadAmount {
        /// The wallet.
        key: String,
        /// Why.
        error: WalletError,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io(e) => e.fmt(f),
            StoreError::Corrupt { path, reason } => {
                write!(f, "corrupt database file {}: {reason}", path.display())
            }
        }
    }
}

impl fmt::Display for CorruptReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptReason::Empty => f.write_str("the file is empty (0 bytes)"),
            CorruptReason::InvalidUtf8 { offset } => write!(f, "invalid UTF-8 at byte {offset}"),
            CorruptReason::UnexpectedEnd { expected } => {
                write!(f, "the file ends early (truncated?): expected {expected}")
            }
            CorruptReason::Unexpected { offset, expected, found } => {
                write!(f, "at byte {offset}: expected {expected}, found {found:?}")
            }
            CorruptReason::ControlCharacter { offset } => {
                write!(f, "at byte {offset}: unescaped control character in a string")
            }
            CorruptReason::InvalidEscape { offset } => write!(f, "at byte {offset}: invalid escape"),
            CorruptReason::LoneSurrogate { offset } => {
                write!(f, "at byte {offset}: unpaired UTF-16 surrogate escape")
            }
            CorruptReason::TrailingData { offset } => {
                write!(f, "at byte {offset}: unexpected data after the object")
            }
            CorruptReason::DuplicateKey { key } => write!(f, "wallet {key:?} appears twice"),
            CorruptReason::BadKey { error } => write!(f, "{error}"),
            CorruptReason::BadAmount { key, error } => write!(f, "wallet {key:?}: {error}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io(e) => Some(e),
            StoreError::Corrupt { .. } => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------

/// One node's database file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Store {
    /// The database file.
    path: PathBuf,
}

impl Store {
    /// The database of the node on `port`: `dir/assignment3_{port}.db`. Touches nothing.
    pub fn new(dir: impl AsRef<Path>, port: u16) -> Store {
        Store { path: dir.as_ref().join(Store::file_name(port)) }
    }

    /// A database at an arbitrary path. Touches nothing.
    pub fn at_path(path: impl Into<PathBuf>) -> Store {
        Store { path: path.into() }
    }

    /// The file name for `port`: `assignment3_{port}.db`.
    pub fn file_name(port: u16) -> String {
        format!("assignment3_{port}.db")
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding the file (`.` for a bare file name).
    pub fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        }
    }

    /// The wallets in file order; a missing file is an empty store.
    pub fn load(&self) -> Result<Vec<(Key, Amount)>, StoreError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(self.io_error("read", &self.path, source)),
        };
        decode(&bytes).map_err(|reason| StoreError::Corrupt { path: self.path.clone(), reason })
    }

    /// Replaces the file's content with `entries` (in that order), atomically. Creates the
    /// directory if it is missing.
    pub fn save<K: AsRef<str>>(
        &self,
        entries: impl IntoIterator<Item = (K, Amount)>,
    ) -> Result<(), StoreError> {
        self.replace(entries, Durability::Full)
    }

    /// Like [`Store::save`] (temp file, rename: readers and a killed process see the old
    /// or the new file, never a mix) but with no sync at all: for a file that is the
    /// projection of a durable log, such as the node's ledger, so that writing it adds no
    /// disk wait to a slot. After a power loss the file may hold an older content, or be
    /// empty or damaged; recovery rebuilds it from the log.
    pub fn save_projection<K: AsRef<str>>(
        &self,
        entries: impl IntoIterator<Item = (K, Amount)>,
    ) -> Result<(), StoreError> {
        self.replace(entries, Durability::None)
    }

    /// Like [`Store::save`], for content already [`encode`]d.
    pub fn save_encoded(&self, content: &str) -> Result<(), StoreError> {
        self.replace_content(content, Durability::Full)
    }

    fn replace<K: AsRef<str>>(
        &self,
        entries: impl IntoIterator<Item = (K, Amount)>,
        durability: Durability,
    ) -> Result<(), StoreError> {
        self.replace_content(&encode(entries), durability)
    }

    fn replace_content(&self, content: &str, durability: Durability) -> Result<(), StoreError> {
        let dir = self.dir();
        fs::create_dir_all(dir).map_err(|e| self.io_error("create directory", dir, e))?;
        let temp = self.temp_path();
        let written = self.write_temp(&temp, content.as_bytes(), durability == Durability::Full);
        let renamed = written.and_then(|()| {
            fs::rename(&temp, &self.path)
                .map_err(|e| self.io_error("rename temporary file over", &self.path, e))
        });
        if renamed.is_err() {
            // Best effort: the original error matters more than a failed clean-up.
            let _ = fs::remove_file(&temp);
        }
        renamed?;
        if durability == Durability::Full {
            sync_dir(dir).map_err(|e| self.io_error("sync directory", dir, e))?;
        }
        Ok(())
    }

    /// A temporary file name next to the database, unique within this process and
    /// unlikely to collide across processes.
    fn temp_path(&self) -> PathBuf {
        let name = self.path.file_name().map_or_else(|| "db".into(), |n| n.to_string_lossy().into_owned());
        let unique = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.dir().join(format!(".{name}.{}.{unique}.tmp", std::process::id()))
    }

    /// Creates `path` (which must not exist), writes `bytes` and, if `sync`, fsyncs it.
    fn write_temp(&self, path: &Path, bytes: &[u8], sync: bool) -> Result<(), StoreError> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| self.io_error("create temporary file", path, e))?;
        file.write_all(bytes).map_err(|e| self.io_error("write temporary file", path, e))?;
        if sync {
            file.sync_all().map_err(|e| self.io_error("sync temporary file", path, e))?;
        }
        Ok(())
    }

    fn io_error(&self, operation: &'static str, path: &Path, source: io::Error) -> StoreError {
        StoreError::Io(IoFailure { operation, path: path.to_path_buf(), source })
    }
}

// ---------------------------------------------------------------------------------------
// Encoding (Python's json.dump)
// ---------------------------------------------------------------------------------------

/// The file content for `entries`, exactly as Python's `json.dump(dict(entries), f)`
/// writes it, e.g. `{"foo": "$30", "bar": "$10"}`.
pub fn encode<K: AsRef<str>>(entries: impl IntoIterator<Item = (K, Amount)>) -> String {
    let mut out = String::from("{");
    for (i, (key, amount)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_json_string(&mut out, key.as_ref());
        out.push_str(": ");
        // An amount's text (`$`, digits, `.`) needs no escaping.
        let _ = std::fmt::Write::write_fmt(&mut out, format_args!("\"{amount}\""));
    }
    out.push('}');
    out
}

/// Appends `s` as a JSON string literal with Python's `ensure_ascii` escaping.
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => push_utf16_escapes(out, c),
        }
    }
    out.push('"');
}

/// Appends `c` as one or two `\uXXXX` escapes (lowercase hex).
fn push_utf16_escapes(out: &mut String, c: char) {
    let mut units = [0u16; 2];
    for unit in c.encode_utf16(&mut units) {
        out.push_str(&format!("\\u{unit:04x}"));
    }
}

// ---------------------------------------------------------------------------------------
// Decoding (strict JSON object of strings)
// ---------------------------------------------------------------------------------------

/// Parses file content into wallets, in file order, applying every rule of the
/// [module docs](self#loading).
pub fn decode(bytes: &[u8]) -> Result<Vec<(Key, Amount)>, CorruptReason> {
    if bytes.is_empty() {
        return Err(CorruptReason::Empty);
    }
    let text =
        std::str::from_utf8(bytes).map_err(|e| CorruptReason::InvalidUtf8 { offset: e.valid_up_to() })?;
    let pairs = Parser { text, pos: 0 }.document()?;
    let mut seen = HashSet::new();
    let mut entries = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        if !seen.insert(key.clone()) {
            return Err(CorruptReason::DuplicateKey { key });
        }
        let amount =
            Amount::parse(&value).map_err(|error| CorruptReason::BadAmount { key: key.clone(), error })?;
        let key = Key::new(key).map_err(|error| CorruptReason::BadKey { error })?;
        entries.push((key, amount));
    }
    Ok(entries)
}

/// A cursor over the text of a JSON object of strings.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    /// The whole document: whitespace, one object, whitespace, end.
    fn document(mut self) -> Result<Vec<(String, String)>, CorruptReason> {
        self.skip_whitespace();
        let pairs = self.object()?;
        self.skip_whitespace();
        if self.pos < self.text.len() {
            return Err(CorruptReason::TrailingData { offset: self.pos });
        }
        Ok(pairs)
    }

    /// `{ "k": "v", ... }`, starting at `{`.
    fn object(&mut self) -> Result<Vec<(String, String)>, CorruptReason> {
        self.expect('{', "'{'")?;
        let mut pairs = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some('}') {
            self.pos += 1;
            return Ok(pairs);
        }
        loop {
            pairs.push(self.member()?);
            self.skip_whitespace();
            match self.next_char("',' or '}'")? {
                ',' => self.skip_whitespace(),
                '}' => return Ok(pairs),
                found => return Err(self.unexpected_before("',' or '}'", found)),
            }
        }
    }

    /// `"k" : "v"`, starting at the key's quote.
    fn member(&mut self) -> Result<(String, String), CorruptReason> {
        let key = self.string("a string key")?;
        self.skip_whitespace();
        self.expect(':', "':'")?;
        self.skip_whitespace();
        let value = self.string("a string value (an amount such as \"$30\")")?;
        Ok((key, value))
    }

    /// A string literal, starting at its opening quote.
    fn string(&mut self, what: &'static str) -> Result<String, CorruptReason> {
        self.expect('"', what)?;
        let mut out = String::new();
        loop {
            let run_start = self.pos;
            let run = self.text.as_bytes()[self.pos..]
                .iter()
                .take_while(|&&b| b != b'"' && b != b'\\' && b >= 0x20);
            self.pos += run.count();
            out.push_str(&self.text[run_start..self.pos]);
            match self.text.as_bytes().get(self.pos) {
                None => return Err(CorruptReason::UnexpectedEnd { expected: "the end of a string ('\"')" }),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => out.push(self.escape()?),
                Some(_) => return Err(CorruptReason::ControlCharacter { offset: self.pos }),
            }
        }
    }

    /// One escape sequence, starting at its backslash.
    fn escape(&mut self) -> Result<char, CorruptReason> {
        let start = self.pos;
        self.pos += 1;
        let simple = match self.next_char("an escape character")? {
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => return self.unicode_escape(start),
            _ => return Err(CorruptReason::InvalidEscape { offset: start }),
        };
        Ok(simple)
    }

    /// The rest of a `\uXXXX` escape (and of its low surrogate partner, if any).
    fn unicode_escape(&mut self, start: usize) -> Result<char, CorruptReason> {
        let unit = self.hex4(start)?;
        match unit {
            0xD800..=0xDBFF => {
                let rest = &self.text[self.pos..];
                if rest.len() < 2 && "\\u".starts_with(rest) {
                    return Err(CorruptReason::UnexpectedEnd { expected: "a low surrogate escape" });
                }
                if !rest.starts_with("\\u") {
                    return Err(CorruptReason::LoneSurrogate { offset: start });
                }
                self.pos += 2;
                let low = self.hex4(start)?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(CorruptReason::LoneSurrogate { offset: start });
                }
                let code = 0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00);
                char::from_u32(code).ok_or(CorruptReason::InvalidEscape { offset: start })
            }
            0xDC00..=0xDFFF => Err(CorruptReason::LoneSurrogate { offset: start }),
            _ => char::from_u32(u32::from(unit)).ok_or(CorruptReason::InvalidEscape { offset: start }),
        }
    }

    /// Four hex digits (either case) of a `\u` escape that began at `start`.
    fn hex4(&mut self, start: usize) -> Result<u16, CorruptReason> {
        let rest = &self.text.as_bytes()[self.pos..];
        let hex = rest.iter().take(4).take_while(|b| b.is_ascii_hexdigit()).count();
        if hex < 4 {
            let truncated = hex == rest.len();
            return Err(if truncated {
                CorruptReason::UnexpectedEnd { expected: "four hex digits" }
            } else {
                CorruptReason::InvalidEscape { offset: start }
            });
        }
        let digits = &self.text[self.pos..self.pos + 4];
        self.pos += 4;
        u16::from_str_radix(digits, 16).map_err(|_| CorruptReason::InvalidEscape { offset: start })
    }

    fn skip_whitespace(&mut self) {
        let rest = &self.text.as_bytes()[self.pos..];
        self.pos += rest.iter().take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')).count();
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    /// Consumes and returns the next character; `expected` names it for the error.
    fn next_char(&mut self, expected: &'static str) -> Result<char, CorruptReason> {
        let c = self.peek().ok_or(CorruptReason::UnexpectedEnd { expected })?;
        self.pos += c.len_utf8();
        Ok(c)
    }

    /// Consumes `want`, or fails naming `expected`.
    fn expect(&mut self, want: char, expected: &'static str) -> Result<(), CorruptReason> {
        match self.next_char(expected)? {
            c if c == want => Ok(()),
            found => Err(self.unexpected_before(expected, found)),
        }
    }

    /// The error for `found`, which was just consumed.
    fn unexpected_before(&self, expected: &'static str, found: char) -> CorruptReason {
        CorruptReason::Unexpected { offset: self.pos - found.len_utf8(), expected, found }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let unique = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("fba-store-{name}-{}-{unique}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn files(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn entry(key: &str, amount: &str) -> (Key, Amount) {
        (Key::new(key).unwrap(), Amount::parse(amount).unwrap())
    }

    fn entries(pairs: &[(&str, &str)]) -> Vec<(Key, Amount)> {
        pairs.iter().map(|(k, a)| entry(k, a)).collect()
    }

    fn reason(text: &[u8]) -> CorruptReason {
        decode(text).expect_err(&String::from_utf8_lossy(text))
    }

    /// The assignment's six sets, then the file.
    #[test]
    fn the_assignment_file_is_exactly_what_pickledb_writes() {
        let scratch = Scratch::new("assignment");
        let store = Store::new(&scratch.0, 5000);
        let mut wallet = crate::wallet::Wallet::new();
        let ops =
            crate::wallet::parse_text_list("foo:$10, bar:$30, foo:$20, bar:$20, foo:$30, bar:$10").unwrap();
        let session = wallet.register(1, 1);
        for (seq, op) in ops.into_iter().enumerate() {
            wallet.apply(&crate::wallet::Request::new(1, seq as u64 + 1, op).with_session(session));
            store.save(wallet.entries()).unwrap();
        }
        assert_eq!(store.path(), scratch.0.join("assignment3_5000.db"));
        assert_eq!(fs::read(store.path()).unwrap(), br#"{"foo": "$30", "bar": "$10"}"#);
        assert_eq!(store.load().unwrap(), entries(&[("foo", "$30"), ("bar", "$10")]));
        assert_eq!(scratch.files(), ["assignment3_5000.db"], "no temporary file is left behind");
    }

    /// Vectors produced by Python 3.11's `json.dumps` (the second one with a key no
    /// wallet may have, to exercise every escape of the encoder).
    #[test]
    fn encoding_matches_python_json_dumps() {
        assert_eq!(encode(Vec::<(Key, Amount)>::new()), "{}");
        let tricky = entries(&[
            ("é", "1"),
            ("中文", "0.01"),
            ("😀x", "0"),
            ("q\"uote", "2.5"),
            ("back\\slash", "3"),
            ("sl/ash", "4"),
            ("a b", "5"),
        ]);
        assert_eq!(
            encode(tricky.iter().map(|(k, a)| (k, *a))),
            r#"{"\u00e9": "$1", "\u4e2d\u6587": "$0.01", "\ud83d\ude00x": "$0", "q\"uote": "$2.50", "back\\slash": "$3", "sl/ash": "$4", "a b": "$5"}"#
        );
        let controls = "\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}\u{80}\u{2028}\u{feff}\u{10ffff}~ ";
        assert_eq!(
            encode([(controls, Amount::parse("1").unwrap())]),
            r#"{"\n\r\t\b\f\u0000\u001f\u007f\u0080\u2028\ufeff\udbff\udfff~ ": "$1"}"#
        );
    }

    #[test]
    fn files_in_other_json_layouts_load() {
        let layouts: [&[u8]; 5] = [
            b"{\n    \"foo\": \"$30\",\n    \"bar\": \"$10\"\n}",
            br#"{"foo":"$30","bar":"$10"}"#,
            b" \t\r\n{ \"foo\" :\"$30\" ,\"bar\": \"$10\" } \n",
            br#"{"f\u006fo": "30", "\u0062ar": "$10.00"}"#,
            "{\"foo\": \"$30\", \"bar\": \"10\"}".as_bytes(),
        ];
        for text in layouts {
            assert_eq!(
                decode(text),
                Ok(entries(&[("foo", "$30"), ("bar", "$10")])),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        assert_eq!(decode(b"{}"), Ok(Vec::new()));
        assert_eq!(decode(b" { } "), Ok(Vec::new()));
    }

    #[test]
    fn every_escape_decodes() {
        let text =
            r#"{"\"\\\/\b\f\n\r\t": "1", "\u00e9\u00E9\ud83d\ude00\uD83D\uDE00": "2", "raw é😀": "3"}"#;
        let decoded = Parser { text, pos: 0 }.document().unwrap();
        let keys: Vec<&str> = decoded.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["\"\\/\u{8}\u{c}\n\r\t", "éé😀😀", "raw é😀"]);
        let wallets = decode(r#"{"\u00e9\ud83d\ude00": "$1"}"#.as_bytes()).unwrap();
        assert_eq!(wallets, entries(&[("é😀", "$1")]));
    }

    #[test]
    fn round_trips_keep_order_and_values() {
        let scratch = Scratch::new("roundtrip");
        let store = Store::new(&scratch.0, 7);
        assert_eq!(store.load().unwrap(), Vec::new(), "a missing file is an empty store");
        let wallets =
            entries(&[("zeta", "1"), ("alpha", "0.01"), ("中文", "1000000000000"), ("q\"\\/", "0")]);
        store.save(wallets.iter().map(|(k, a)| (k, *a))).unwrap();
        assert_eq!(store.load().unwrap(), wallets);
        store.save(Vec::<(Key, Amount)>::new()).unwrap();
        assert_eq!(fs::read(store.path()).unwrap(), b"{}");
        assert_eq!(store.load().unwrap(), Vec::new());
        assert_eq!(scratch.files(), ["assignment3_7.db"]);
    }

    #[test]
    fn truncated_files_are_corrupt_at_every_length() {
        let full = br#"{"\u00e9\ud83d\ude00": "$30", "bar": "$10.50"}"#;
        for len in 1..full.len() {
            let prefix = &full[..len];
            assert!(
                matches!(reason(prefix), CorruptReason::UnexpectedEnd { .. }),
                "{len}: {:?}",
                reason(prefix)
            );
        }
        assert!(decode(full).is_ok());
    }

    #[test]
    fn corrupt_content_is_reported_precisely() {
        assert_eq!(reason(b""), CorruptReason::Empty);
        assert_eq!(reason(b"{\"a\": \"\xff\"}"), CorruptReason::InvalidUtf8 { offset: 7 });
        assert_eq!(
            reason(b"\xef\xbb\xbf{}"),
            CorruptReason::Unexpected { offset: 0, expected: "'{'", found: '\u{feff}' }
        );
        assert_eq!(
            reason(br#"{"foo": 30}"#),
            CorruptReason::Unexpected {
                offset: 8,
                expected: "a string value (an amount such as \"$30\")",
                found: '3'
            }
        );
        assert!(matches!(reason(br#"{"foo": null}"#), CorruptReason::Unexpected { found: 'n', .. }));
        assert!(matches!(reason(br#"{"foo": {"a": "1"}}"#), CorruptReason::Unexpected { found: '{', .. }));
        assert!(matches!(
            reason(br#"["foo", "$1"]"#),
            CorruptReason::Unexpected { offset: 0, found: '[', .. }
        ));
        assert!(matches!(reason(br#"{foo: "$1"}"#), CorruptReason::Unexpected { offset: 1, found: 'f', .. }));
        assert!(matches!(
            reason(br#"{"a": "1",}"#),
            CorruptReason::Unexpected { offset: 10, found: '}', .. }
        ));
        assert!(matches!(
            reason(br#"{"a": "1" "b": "2"}"#),
            CorruptReason::Unexpected { offset: 10, found: '"', .. }
        ));
        assert!(matches!(reason(br#"{"a" "1"}"#), CorruptReason::Unexpected { offset: 5, .. }));
        assert_eq!(reason(br#"{} {}"#), CorruptReason::TrailingData { offset: 3 });
        assert_eq!(reason(b"{\"a\nb\": \"1\"}"), CorruptReason::ControlCharacter { offset: 3 });
        assert_eq!(reason(br#"{"a\x": "1"}"#), CorruptReason::InvalidEscape { offset: 3 });
        assert_eq!(reason(br#"{"a\u12g4": "1"}"#), CorruptReason::InvalidEscape { offset: 3 });
        assert_eq!(reason(br#"{"a\ud83d": "1"}"#), CorruptReason::LoneSurrogate { offset: 3 });
        assert_eq!(reason(br#"{"a\ud83d\u0041": "1"}"#), CorruptReason::LoneSurrogate { offset: 3 });
        assert_eq!(reason(br#"{"a\ude00": "1"}"#), CorruptReason::LoneSurrogate { offset: 3 });
    }

    #[test]
    fn wallet_rules_apply_to_loaded_files() {
        assert_eq!(
            reason(br#"{"foo": "$1", "foo": "$2"}"#),
            CorruptReason::DuplicateKey { key: "foo".into() }
        );
        assert_eq!(
            reason(br#"{"foo": "$1", "f\u006fo": "$2"}"#),
            CorruptReason::DuplicateKey { key: "foo".into() }
        );
        for text in
            [&br#"{"foo": "$-5"}"#[..], br#"{"foo": "1.234"}"#, br#"{"foo": "abc"}"#, br#"{"foo": ""}"#]
        {
            assert!(matches!(reason(text), CorruptReason::BadAmount { ref key, .. } if key == "foo"));
        }
        for text in [&br#"{"": "$1"}"#[..], br#"{"a:b": "$1"}"#, br#"{" a": "$1"}"#, br#"{"a\u0000": "$1"}"#]
        {
            assert!(
                matches!(reason(text), CorruptReason::BadKey { .. }),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn load_errors_name_the_file() {
        let scratch = Scratch::new("corrupt");
        let store = Store::new(&scratch.0, 9);
        fs::write(store.path(), br#"{"foo": "$30", "bar"#).unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(&err, StoreError::Corrupt { path, .. } if path == store.path()));
        let message = err.to_string();
        assert!(message.contains("assignment3_9.db") && message.contains("truncated"), "{message}");
        fs::remove_file(store.path()).unwrap();
        fs::create_dir(store.path()).unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(&err, StoreError::Io(IoFailure { operation: "read", .. })), "{err:?}");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn saving_replaces_the_file_and_leaves_no_temporary_files() {
        let scratch = Scratch::new("atomic");
        let store = Store::new(scratch.0.join("nested").join("data"), 5001);
        for round in 0..20u64 {
            let amount = Amount::from_cents(round * 101).unwrap();
            store.save([("foo", amount), ("bar", Amount::ZERO)]).unwrap();
            assert_eq!(store.load().unwrap(), vec![(Key::new("foo").unwrap(), amount), entry("bar", "0")]);
        }
        let files: Vec<_> = fs::read_dir(store.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(files, ["assignment3_5001.db"]);
    }

    #[test]
    fn a_failed_save_reports_the_step_and_cleans_up() {
        let scratch = Scratch::new("failed");
        let store = Store::new(&scratch.0, 5002);
        fs::create_dir(store.path()).unwrap();
        fs::write(store.path().join("keep"), b"x").unwrap();
        let err = store.save([("foo", Amount::ZERO)]).unwrap_err();
        assert!(
            matches!(&err, StoreError::Io(IoFailure { operation: "rename temporary file over", .. })),
            "{err:?}"
        );
        assert_eq!(scratch.files(), ["assignment3_5002.db"], "the temporary file was removed");
        let blocked = Store::new(store.path().join("keep"), 1);
        let err = blocked.save([("foo", Amount::ZERO)]).unwrap_err();
        assert!(matches!(&err, StoreError::Io(IoFailure { operation: "create directory", .. })), "{err:?}");
    }

    #[test]
    fn paths_are_derived_from_directory_and_port() {
        assert_eq!(Store::file_name(65535), "assignment3_65535.db");
        let store = Store::new("data", 5000);
        assert_eq!(store.path(), Path::new("data/assignment3_5000.db"));
        assert_eq!(store.dir(), Path::new("data"));
        assert_eq!(Store::at_path("x.db").dir(), Path::new("."));
    }

    #[test]
    fn decode_never_panics_on_mangled_input() {
        let valid = br#"{"\u00e9\ud83d\ude00": "$30", "b\\\"r": "$10.50"}"#.to_vec();
        let mut state = 99u64;
        let mut next = move |n: usize| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % n as u64) as usize
        };
        let alphabet = b"{}[]\":,\\u0dD8e \n\xff\xc3$.-";
        for _ in 0..5000 {
            let mut bytes = valid.clone();
            for _ in 0..=next(3) {
                let at = next(bytes.len() + 1);
                match next(3) {
                    0 => bytes.insert(at, alphabet[next(alphabet.len())]),
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.truncate(at),
                }
            }
            if let Ok(wallets) = decode(&bytes) {
                assert_eq!(decode(encode(wallets.iter().map(|(k, a)| (k, *a))).as_bytes()), Ok(wallets));
            }
        }
    }
}
