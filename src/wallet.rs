//! The replicated state machine: wallets (username → balance) and the requests that
//! change them.
//!
//! Everything here is pure and deterministic: no I/O, no clocks, no randomness, no hash
//! maps whose iteration order leaks into results. Every replica that applies the same
//! sequence of [`Batch`]es (one per SCP slot) to the same starting [`Wallet`] ends with
//! the same balances and produces the same [`Reply`]s, byte for byte.
//!
//! # Amounts
//!
//! [`Amount`] is an exact number of cents in a `u64`, never a float. Text such as `"$10"`,
//! `"10.5"` or `"$0.01"` is parsed strictly (at most two decimals, no sign, no exponent, no
//! spaces) and amounts above [`Amount::MAX`] ($1,000,000,000,000.00, that is 10¹⁴ cents)
//! are refused, so every balance fits comfortably in a `u64` and is exactly representable
//! as an IEEE double (below 2⁵³) should some JSON reader turn it into one. Amounts are
//! displayed as `$30` when whole and `$30.50` otherwise; that is also the format of the
//! values in the PickleDB database file (see [`crate::store`]) and on the wire.
//!
//! # Keys
//!
//! A [`Key`] (wallet name) has 1 to 64 characters, no control characters, no `:` (the
//! separator of the plain-text `foo:$10` syntax) and no leading or trailing whitespace.
//! Any other Unicode is allowed. Keys are validated when they are built and when they are
//! deserialized, so a [`Request`] can never carry an invalid one.
//!
//! # Operations and replies
//!
//! [`Op::Set`] creates or overwrites a wallet (the assignment's `foo:$10`),
//! [`Op::Deposit`] adds (creating the wallet at $0 first if needed), [`Op::Withdraw`]
//! subtracts, and [`Op::Get`] reads; reads go through consensus like writes, so they are
//! linearizable. Refusals (withdrawing more than the balance, touching a missing wallet,
//! growing a balance above [`Amount::MAX`]) are decided inside the state machine and are
//! therefore identical on every replica. A refused operation changes no balance but is
//! still an applied request: its [`Reply`] is remembered like any other.
//!
//! # Exactly-once
//!
//! Each [`Request`] names its client and a client-chosen sequence number. The wallet keeps,
//! per client, the last applied `seq` and its reply. A request with that same `seq` gets
//! the remembered reply again without being re-applied (a retry, or the same request
//! nominated by two nodes); a request with a smaller `seq` gets [`Outcome::Duplicate`];
//! a larger `seq` (gaps allowed) is applied. The cache holds at most
//! [`DEFAULT_CLIENT_LIMIT`] clients (configurable); when a new client arrives and the
//! cache is full, the client whose last *applied* request is oldest is forgotten. The
//! wallet counts applied requests, so "oldest" is decided identically on every replica.
//! A forgotten client that retries an old request has it applied again: the bound trades
//! memory for that (documented) limit of the guarantee.
//!
//! # Batches
//!
//! A [`Batch`] is the value of one SCP slot. Its requests are always sorted by
//! `(client, seq)`, unique per `(client, seq)`, and capped at [`MAX_BATCH_REQUESTS`]
//! requests and [`MAX_BATCH_BYTES`] encoded bytes. [`Batch::encode`] is compact JSON and
//! [`Batch::decode`] accepts only that exact canonical encoding, so one batch has exactly
//! one byte string and no two different byte strings mean the same batch.
//! [`Batch::combine`] merges candidate batches (SCP's combine step) deterministically.
//!
//! # Plain text
//!
//! For `nc` users, [`parse_text`] reads `foo:$10`, `set foo 10`, `deposit foo $5`,
//! `withdraw foo 5` and `get foo`; [`parse_text_list`] reads the assignment's
//! comma-separated `foo:$10, bar:$30`. A [`Reply`] displays as `OK foo=$30` or
//! `ERROR <reason>`, and [`WalletError::reply_text`] renders a parse error the same way.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

/// Cents in a dollar.
const CENTS_PER_DOLLAR: u64 = 100;

/// The largest amount, in cents: $1,000,000,000,000.00 (10¹⁴ cents, below 2⁵³).
pub const MAX_AMOUNT_CENTS: u64 = 100_000_000_000_000;

// Every amount, and the sum of any two, is exact as an IEEE double.
const _: () = assert!(2 * MAX_AMOUNT_CENTS < 1 << 53);

/// The most characters (Unicode scalar values) a wallet name may have.
pub const MAX_KEY_CHARS: usize = 64;

/// The most requests one [`Batch`] may hold.
pub const MAX_BATCH_REQUESTS: usize = 128;

/// The most bytes the encoding of one [`Batch`] may have: the largest value an SCP
/// statement may carry ([`crate::scp::MAX_VALUE_BYTES`]), so that every statement about a
/// batch fits in a datagram.
pub const MAX_BATCH_BYTES: usize = crate::scp::MAX_VALUE_BYTES;

/// How many clients' last replies a [`Wallet`] remembers by default.
pub const DEFAULT_CLIENT_LIMIT: usize = 1024;

/// How much of an offending input an error message quotes.
const QUOTE_CHARS: usize = 40;

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Everything that can go wrong building, parsing or decoding wallet data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalletError {
    /// Text that is not an acceptable amount.
    InvalidAmount {
        /// The offending text (shortened if long).
        input: String,
        /// What is wrong with it.
        problem: AmountProblem,
    },
    /// Text that is not an acceptable wallet name.
    InvalidKey {
        /// The offending name (shortened if long).
        key: String,
        /// What is wrong with it.
        problem: KeyProblem,
    },
    /// A plain-text command line that is empty.
    EmptyCommand,
    /// A plain-text command that is neither a known verb nor `key:amount`.
    UnknownCommand {
        /// The first word of the line (shortened if long).
        verb: String,
    },
    /// A known plain-text verb with the wrong number of arguments.
    Usage {
        /// The correct form, e.g. `withdraw <key> <amount>`.
        usage: &'static str,
    },
    /// Bytes that are not the JSON of a batch.
    Decode {
        /// The JSON parser's explanation.
        reason: String,
    },
    /// A well-formed batch that breaks a batch rule.
    InvalidBatch {
        /// The rule it breaks.
        problem: BatchProblem,
    },
    /// The same wallet name twice when building a [`Wallet`] from entries.
    DuplicateKey {
        /// The repeated name.
        key: String,
    },
}

/// Why text is not an [`Amount`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmountProblem {
    /// Nothing (or only `$`) was given.
    Empty,
    /// Not of the form `[$]digits[.d[d]]`.
    NotANumber,
    /// A minus sign: balances and amounts are never negative.
    Negative,
    /// More than two decimals (fractions of a cent).
    TooPrecise,
    /// Above [`Amount::MAX`].
    TooLarge,
}

/// Why text is not a [`Key`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyProblem {
    /// No characters.
    Empty,
    /// More than [`MAX_KEY_CHARS`] characters.
    TooLong {
        /// How many characters it has.
        chars: usize,
    },
    /// A control character (newline, tab, NUL, DEL, ...).
    ControlCharacter,
    /// A `:`, which separates key and amount in `foo:$10`.
    Colon,
    /// Whitespace at the start or the end.
    SurroundingWhitespace,
}

/// Which rule a decoded [`Batch`] breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchProblem {
    /// The encoding is longer than [`MAX_BATCH_BYTES`].
    TooLarge {
        /// Its length in bytes.
        bytes: usize,
    },
    /// More than [`MAX_BATCH_REQUESTS`] requests.
    TooManyRequests {
        /// How many it has.
        count: usize,
    },
    /// Requests not in strictly increasing `(client, seq)` order (unsorted or repeated).
    NotSorted,
    /// Valid JSON, but not byte for byte what [`Batch::encode`] writes.
    NotCanonical,
}

impl fmt::Display for WalletError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalletError::InvalidAmount { input, problem } => write!(f, "invalid amount {input:?}: {problem}"),
            WalletError::InvalidKey { key, problem } => write!(f, "invalid wallet name {key:?}: {problem}"),
            WalletError::EmptyCommand => f.write_str("empty command"),
            WalletError::UnknownCommand { verb } => {
                write!(f, "unknown command {verb:?} (expected key:amount, set, deposit, withdraw or get)")
            }
            WalletError::Usage { usage } => write!(f, "usage: {usage}"),
            WalletError::Decode { reason } => write!(f, "undecodable batch: {reason}"),
            WalletError::InvalidBatch { problem } => write!(f, "invalid batch: {problem}"),
            WalletError::DuplicateKey { key } => write!(f, "wallet {key:?} appears twice"),
        }
    }
}

impl fmt::Display for AmountProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AmountProblem::Empty => f.write_str("no amount given"),
            AmountProblem::NotANumber => f.write_str("expected dollars like $10 or 10.50"),
            AmountProblem::Negative => f.write_str("amounts cannot be negative"),
            AmountProblem::TooPrecise => f.write_str("at most two decimals (cents) are allowed"),
            AmountProblem::TooLarge => write!(f, "the maximum is {}", Amount::MAX),
        }
    }
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyProblem::Empty => f.write_str("it is empty"),
            KeyProblem::TooLong { chars } => {
                write!(f, "{chars} characters, the maximum is {MAX_KEY_CHARS}")
            }
            KeyProblem::ControlCharacter => f.write_str("control characters are not allowed"),
            KeyProblem::Colon => f.write_str("':' is not allowed"),
            KeyProblem::SurroundingWhitespace => f.write_str("leading or trailing whitespace"),
        }
    }
}

impl fmt::Display for BatchProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchProblem::TooLarge { bytes } => {
                write!(f, "{bytes} bytes, the maximum is {MAX_BATCH_BYTES}")
            }
            BatchProblem::TooManyRequests { count } => {
                write!(f, "{count} requests, the maximum is {MAX_BATCH_REQUESTS}")
            }
            BatchProblem::NotSorted => f.write_str("requests not strictly sorted by (client, seq)"),
            BatchProblem::NotCanonical => f.write_str("not in canonical encoding"),
        }
    }
}

impl std::error::Error for WalletError {}

impl WalletError {
    /// The error as a plain-text reply line: `ERROR <description>`.
    pub fn reply_text(&self) -> String {
        format!("ERROR {self}")
    }
}

/// At most [`QUOTE_CHARS`] characters of `text`, with `…` when shortened.
fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// Amount
// ---------------------------------------------------------------------------------------

/// A non-negative amount of money in exact cents, at most [`Amount::MAX`].
///
/// Serialized (JSON) as its display string, e.g. `"$30"` or `"$0.50"`; deserialized with
/// [`Amount::parse`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Amount(u64);

impl Amount {
    /// $0.
    pub const ZERO: Amount = Amount(0);
    /// The largest amount: $1,000,000,000,000 ([`MAX_AMOUNT_CENTS`] cents).
    pub const MAX: Amount = Amount(MAX_AMOUNT_CENTS);

    /// The amount of `cents` cents, refused above [`Amount::MAX`].
    pub fn from_cents(cents: u64) -> Result<Amount, WalletError> {
        if cents > MAX_AMOUNT_CENTS {
            return Err(amount_error(&format!("{cents} cents"), AmountProblem::TooLarge));
        }
        Ok(Amount(cents))
    }

    /// The amount in cents.
    pub fn cents(self) -> u64 {
        self.0
    }

    /// Parses dollars: an optional `$`, digits, and optionally `.` with one or two digits
    /// (`"$10"`, `"10"`, `"10.5"`, `"10.50"`, `"$0.01"`, `"0"`). No sign, spaces, exponent
    /// or thousands separators; at most [`Amount::MAX`].
    pub fn parse(text: &str) -> Result<Amount, WalletError> {
        parse_dollars(text).map(Amount).map_err(|problem| amount_error(text, problem))
    }

    /// `self + other`, or `None` above [`Amount::MAX`].
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        let sum = self.0.checked_add(other.0)?;
        (sum <= MAX_AMOUNT_CENTS).then_some(Amount(sum))
    }

    /// `self - other`, or `None` below $0.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
}

fn amount_error(input: &str, problem: AmountProblem) -> WalletError {
    WalletError::InvalidAmount { input: quote(input), problem }
}

/// The cents in `text`, or why there are none.
fn parse_dollars(text: &str) -> Result<u64, AmountProblem> {
    let body = text.strip_prefix('$').unwrap_or(text);
    if body.is_empty() {
        return Err(AmountProblem::Empty);
    }
    if let Some(unsigned) = body.strip_prefix('-') {
        let unsigned = unsigned.strip_prefix('$').unwrap_or(unsigned);
        return match parse_unsigned(unsigned) {
            Ok(_) | Err(AmountProblem::TooPrecise | AmountProblem::TooLarge) => Err(AmountProblem::Negative),
            Err(problem) => Err(problem),
        };
    }
    parse_unsigned(body)
}

/// The cents in `digits[.d[d]]`.
fn parse_unsigned(body: &str) -> Result<u64, AmountProblem> {
    let (whole, fraction) = match body.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (body, None),
    };
    if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return Err(AmountProblem::NotANumber);
    }
    let fraction = fraction.unwrap_or("");
    if fraction.len() > 2 {
        return Err(AmountProblem::TooPrecise);
    }
    let cents = digits_value(whole)
        .and_then(|dollars| dollars.checked_mul(CENTS_PER_DOLLAR))
        .and_then(|cents| cents.checked_add(fraction_cents(fraction)))
        .filter(|&cents| cents <= MAX_AMOUNT_CENTS);
    cents.ok_or(AmountProblem::TooLarge)
}

/// Whether `s` is one or more ASCII digits.
fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The value of a string of ASCII digits, `None` if it overflows a `u64`.
fn digits_value(digits: &str) -> Option<u64> {
    digits.bytes().try_fold(0u64, |acc, b| acc.checked_mul(10)?.checked_add(u64::from(b - b'0')))
}

/// The cents of zero to two decimal digits: "" → 0, "5" → 50, "05" → 5.
fn fraction_cents(fraction: &str) -> u64 {
    let padded = format!("{fraction:0<2}");
    digits_value(&padded).unwrap_or(0)
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (dollars, cents) = (self.0 / CENTS_PER_DOLLAR, self.0 % CENTS_PER_DOLLAR);
        if cents == 0 {
            write!(f, "${dollars}")
        } else {
            write!(f, "${dollars}.{cents:02}")
        }
    }
}

impl FromStr for Amount {
    type Err = WalletError;

    fn from_str(s: &str) -> Result<Amount, WalletError> {
        Amount::parse(s)
    }
}

impl TryFrom<String> for Amount {
    type Error = WalletError;

    fn try_from(s: String) -> Result<Amount, WalletError> {
        Amount::parse(&s)
    }
}

impl From<Amount> for String {
    fn from(amount: Amount) -> String {
        amount.to_string()
    }
}

// ---------------------------------------------------------------------------------------
// Key
// ---------------------------------------------------------------------------------------

/// A valid wallet name (see the [module docs](self#keys) for the rules).
///
/// Serialized as a plain JSON string; deserialization validates it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Key(String);

impl Key {
    /// Validates `name` as a wallet name.
    pub fn new(name: impl Into<String>) -> Result<Key, WalletError> {
        let name = name.into();
        match key_problem(&name) {
            Some(problem) => Err(WalletError::InvalidKey { key: quote(&name), problem }),
            None => Ok(Key(name)),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What is wrong with `name` as a wallet name, if anything.
fn key_problem(name: &str) -> Option<KeyProblem> {
    let chars = name.chars().count();
    if chars == 0 {
        Some(KeyProblem::Empty)
    } else if chars > MAX_KEY_CHARS {
        Some(KeyProblem::TooLong { chars })
    } else if name.chars().any(char::is_control) {
        Some(KeyProblem::ControlCharacter)
    } else if name.contains(':') {
        Some(KeyProblem::Colon)
    } else if name.trim() != name {
        Some(KeyProblem::SurroundingWhitespace)
    } else {
        None
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Key {
    type Err = WalletError;

    fn from_str(s: &str) -> Result<Key, WalletError> {
        Key::new(s)
    }
}

impl TryFrom<String> for Key {
    type Error = WalletError;

    fn try_from(s: String) -> Result<Key, WalletError> {
        Key::new(s)
    }
}

// ---------------------------------------------------------------------------------------
// Requests and replies
// ---------------------------------------------------------------------------------------

/// An operation on the wallets.
///
/// JSON: `{"type":"set","key":"foo","amount":"$10"}`, with `type` one of `set`,
/// `deposit`, `withdraw`, `get` (`get` has no `amount`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// Create `key` or overwrite its balance with `amount` (the assignment's `foo:$10`).
    Set {
        /// The wallet.
        key: Key,
        /// Its new balance.
        amount: Amount,
    },
    /// Add `amount` to `key`, creating it at $0 first if absent.
    Deposit {
        /// The wallet.
        key: Key,
        /// How much to add.
        amount: Amount,
    },
    /// Subtract `amount` from `key`; refused if absent or if the balance is too small.
    Withdraw {
        /// The wallet.
        key: Key,
        /// How much to take.
        amount: Amount,
    },
    /// Read the balance of `key`.
    Get {
        /// The wallet.
        key: Key,
    },
}

impl Op {
    /// The wallet the operation is about.
    pub fn key(&self) -> &Key {
        match self {
            Op::Set { key, .. } | Op::Deposit { key, .. } | Op::Withdraw { key, .. } | Op::Get { key } => key,
        }
    }
}

/// A client's request: the operation plus what makes it exactly-once.
///
/// JSON: `{"client":7,"seq":3,"op":{"type":"deposit","key":"foo","amount":"$5"}}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Request {
    /// The client's identifier (chosen by the client, e.g. at random).
    pub client: u64,
    /// The client's sequence number; each new request of a client uses a larger one.
    pub seq: u64,
    /// What to do.
    pub op: Op,
}

/// The answer to a [`Request`].
///
/// JSON: `{"client":7,"seq":3,"outcome":{"status":"ok","key":"foo","balance":"$35"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reply {
    /// The requesting client.
    pub client: u64,
    /// The request's sequence number.
    pub seq: u64,
    /// What happened.
    pub outcome: Outcome,
}

/// What applying a request did.
///
/// JSON: an object whose `status` is `ok`, `insufficient_funds`, `no_such_wallet`,
/// `overflow` or `duplicate`, plus the variant's fields.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Done; `balance` is the wallet's balance afterwards.
    Ok {
        /// The wallet.
        key: Key,
        /// Its balance after the operation.
        balance: Amount,
    },
    /// A withdrawal larger than the balance; nothing changed.
    InsufficientFunds {
        /// The wallet.
        key: Key,
        /// Its (unchanged) balance.
        balance: Amount,
        /// The amount asked for.
        amount: Amount,
    },
    /// A withdrawal from or read of a wallet that does not exist.
    NoSuchWallet {
        /// The missing wallet.
        key: Key,
    },
    /// A deposit that would take the balance above [`Amount::MAX`]; nothing changed.
    Overflow {
        /// The wallet.
        key: Key,
        /// Its (unchanged) balance.
        balance: Amount,
        /// The amount offered.
        amount: Amount,
    },
    /// The client already had a request with a larger `seq` applied; this one was not.
    Duplicate {
        /// The client's last applied sequence number.
        last_seq: u64,
    },
}

impl Outcome {
    /// Whether the operation succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok { .. })
    }
}

impl fmt::Display for Outcome {
    /// One line: `OK foo=$30` or `ERROR <reason>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok { key, balance } => write!(f, "OK {key}={balance}"),
            Outcome::InsufficientFunds { key, balance, amount } => {
                write!(f, "ERROR insufficient funds: {key} has {balance}, cannot withdraw {amount}")
            }
            Outcome::NoSuchWallet { key } => write!(f, "ERROR no such wallet: {key}"),
            Outcome::Overflow { key, balance, amount } => write!(
                f,
                "ERROR overflow: {key} has {balance}, depositing {amount} would exceed the maximum {}",
                Amount::MAX
            ),
            Outcome::Duplicate { last_seq } => {
                write!(
                    f,
                    "ERROR duplicate request: this client's newer request {last_seq} was already applied"
                )
            }
        }
    }
}

impl fmt::Display for Reply {
    /// The outcome's line (see [`Outcome`]'s `Display`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.outcome.fmt(f)
    }
}

// ---------------------------------------------------------------------------------------
// Plain-text commands
// ---------------------------------------------------------------------------------------

/// Parses one plain-text command (surrounding whitespace ignored):
///
/// * `foo:$10` — set (whitespace around `:` allowed; the key may contain inner spaces);
/// * `set foo 10`, `deposit foo $5`, `withdraw foo 5`, `get foo` — verbs are
///   case-insensitive and arguments are separated by whitespace.
///
/// A line whose first word is a verb is always read as that verb, so a wallet whose name
/// starts with a verb and a space can only be reached through JSON requests.
pub fn parse_text(line: &str) -> Result<Op, WalletError> {
    let line = line.trim();
    let mut words = line.split_whitespace();
    let verb = words.next().ok_or(WalletError::EmptyCommand)?;
    let args: Vec<&str> = words.collect();
    match verb.to_ascii_lowercase().as_str() {
        "set" => key_amount(&args, "set <key> <amount>").map(|(key, amount)| Op::Set { key, amount }),
        "deposit" => {
            key_amount(&args, "deposit <key> <amount>").map(|(key, amount)| Op::Deposit { key, amount })
        }
        "withdraw" => {
            key_amount(&args, "withdraw <key> <amount>").map(|(key, amount)| Op::Withdraw { key, amount })
        }
        "get" => match args[..] {
            [key] => Ok(Op::Get { key: Key::new(key)? }),
            _ => Err(WalletError::Usage { usage: "get <key>" }),
        },
        _ => parse_colon_form(line, verb),
    }
}

/// Parses the assignment's comma-separated list, e.g. `foo:$10, bar:$30, foo:$20`; every
/// item is a [`parse_text`] command. Empty items (as in a trailing comma) are skipped,
/// and keys containing `,` cannot be written in this form.
pub fn parse_text_list(line: &str) -> Result<Vec<Op>, WalletError> {
    line.split(',').filter(|item| !item.trim().is_empty()).map(parse_text).collect()
}

/// The two arguments `<key> <amount>`.
fn key_amount(args: &[&str], usage: &'static str) -> Result<(Key, Amount), WalletError> {
    match args {
        [key, amount] => Ok((Key::new(*key)?, Amount::parse(amount)?)),
        _ => Err(WalletError::Usage { usage }),
    }
}

/// `key:amount` (a set), or an unknown command.
fn parse_colon_form(line: &str, verb: &str) -> Result<Op, WalletError> {
    let (key, amount) =
        line.split_once(':').ok_or_else(|| WalletError::UnknownCommand { verb: quote(verb) })?;
    Ok(Op::Set { key: Key::new(key.trim())?, amount: Amount::parse(amount.trim())? })
}

// ---------------------------------------------------------------------------------------
// Batch
// ---------------------------------------------------------------------------------------

/// The requests decided in one SCP slot: sorted by `(client, seq)`, unique per
/// `(client, seq)`, at most [`MAX_BATCH_REQUESTS`] requests and [`MAX_BATCH_BYTES`]
/// encoded bytes. The fields are private so that these rules always hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawBatch")]
pub struct Batch {
    requests: Vec<Request>,
}

/// The JSON shape of a batch, for decoding.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    requests: Vec<Request>,
}

impl TryFrom<RawBatch> for Batch {
    type Error = WalletError;

    /// Accepts only a batch already in normal form (as [`Batch::new`] makes it), so that a
    /// batch deserialized inside another message is exactly the one that was decided.
    fn try_from(raw: RawBatch) -> Result<Batch, WalletError> {
        let normal = Batch::new(raw.requests.clone());
        if normal.requests != raw.requests {
            return Err(WalletError::InvalidBatch { problem: BatchProblem::NotCanonical });
        }
        Ok(normal)
    }
}

/// Bytes of `{"requests":[]}`.
const BATCH_OVERHEAD: usize = 15;

impl Batch {
    /// The empty batch.
    pub fn empty() -> Batch {
        Batch::default()
    }

    /// A batch of `requests`, normalized: sorted by `(client, seq)` (then by operation),
    /// one request kept per `(client, seq)` (the smallest operation, so the choice does
    /// not depend on input order), then cut to the longest prefix within the caps.
    /// Requests cut off are simply not in the batch; their senders' nodes propose them
    /// again later. Cutting a prefix never keeps a client's request while dropping one of
    /// its smaller `seq`s.
    pub fn new(mut requests: Vec<Request>) -> Batch {
        requests.sort();
        requests.dedup_by(|later, earlier| (later.client, later.seq) == (earlier.client, earlier.seq));
        requests.truncate(fitting_prefix(&requests));
        Batch { requests }
    }

    /// SCP's combine step: the union of the candidates' requests, normalized like
    /// [`Batch::new`]. The result depends only on the set of requests given, not on the
    /// order or grouping of the candidates.
    pub fn combine<'a>(batches: impl IntoIterator<Item = &'a Batch>) -> Batch {
        Batch::new(batches.into_iter().flat_map(|b| b.requests.iter().cloned()).collect())
    }

    /// The requests, in application order.
    pub fn requests(&self) -> &[Request] {
        &self.requests
    }

    /// How many requests.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether there are no requests.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Whether the batch holds the request `(client, seq)`.
    pub fn contains(&self, client: u64, seq: u64) -> bool {
        self.requests.binary_search_by(|r| (r.client, r.seq).cmp(&(client, seq))).is_ok()
    }

    /// The canonical encoding: compact JSON, `{"requests":[...]}`.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("batches hold only strings and integers, which always serialize")
    }

    /// Decodes bytes written by [`Batch::encode`], checking every rule: size, JSON shape,
    /// valid keys and amounts, count, order, and that the bytes are exactly the canonical
    /// encoding. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Batch, WalletError> {
        if bytes.len() > MAX_BATCH_BYTES {
            return Err(batch_error(BatchProblem::TooLarge { bytes: bytes.len() }));
        }
        let raw: RawBatch =
            serde_json::from_slice(bytes).map_err(|e| WalletError::Decode { reason: e.to_string() })?;
        let batch = Batch { requests: raw.requests };
        batch.check_rules()?;
        if batch.encode() != bytes {
            return Err(batch_error(BatchProblem::NotCanonical));
        }
        Ok(batch)
    }

    /// The count and order rules.
    fn check_rules(&self) -> Result<(), WalletError> {
        if self.requests.len() > MAX_BATCH_REQUESTS {
            return Err(batch_error(BatchProblem::TooManyRequests { count: self.requests.len() }));
        }
        let sorted = self.requests.windows(2).all(|w| (w[0].client, w[0].seq) < (w[1].client, w[1].seq));
        if !sorted {
            return Err(batch_error(BatchProblem::NotSorted));
        }
        Ok(())
    }
}

fn batch_error(problem: BatchProblem) -> WalletError {
    WalletError::InvalidBatch { problem }
}

/// How many of the leading `requests` fit in one batch.
fn fitting_prefix(requests: &[Request]) -> usize {
    let mut bytes = BATCH_OVERHEAD;
    for (count, request) in requests.iter().enumerate() {
        let separator = usize::from(count > 0);
        bytes += separator + encoded_len(request);
        if count == MAX_BATCH_REQUESTS || bytes > MAX_BATCH_BYTES {
            return count;
        }
    }
    requests.len()
}

/// The length of a request's compact JSON.
fn encoded_len(request: &Request) -> usize {
    serde_json::to_vec(request).map_or(usize::MAX / 2, |bytes| bytes.len())
}

// ---------------------------------------------------------------------------------------
// Wallet
// ---------------------------------------------------------------------------------------

/// What the wallet remembers about one client.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Session {
    /// The client's last applied sequence number.
    seq: u64,
    /// The reply to it.
    reply: Reply,
    /// When it was applied (the wallet's applied-request count at the time).
    tick: u64,
}

/// The replicated state: balances in first-insertion order plus the reply cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wallet {
    /// Balances, in the order the wallets were first created.
    entries: Vec<(Key, Amount)>,
    /// Position of each wallet in `entries`.
    index: HashMap<Key, usize>,
    /// The reply cache, by client.
    sessions: BTreeMap<u64, Session>,
    /// Clients by the tick of their last applied request (oldest first).
    by_tick: BTreeMap<u64, u64>,
    /// The most clients `sessions` may hold (at least 1).
    client_limit: usize,
    /// How many requests have been applied (duplicates and cached replays excluded).
    applied: u64,
}

impl Default for Wallet {
    fn default() -> Wallet {
        Wallet::new()
    }
}

impl Wallet {
    /// No wallets; remembers up to [`DEFAULT_CLIENT_LIMIT`] clients.
    pub fn new() -> Wallet {
        Wallet::with_client_limit(DEFAULT_CLIENT_LIMIT)
    }

    /// No wallets; remembers up to `limit` clients (at least one).
    pub fn with_client_limit(limit: usize) -> Wallet {
        Wallet {
            entries: Vec::new(),
            index: HashMap::new(),
            sessions: BTreeMap::new(),
            by_tick: BTreeMap::new(),
            client_limit: limit.max(1),
            applied: 0,
        }
    }

    /// Wallets with these balances, in this order (e.g. loaded from the database file),
    /// and an empty reply cache. Refuses a name given twice.
    pub fn from_entries(entries: impl IntoIterator<Item = (Key, Amount)>) -> Result<Wallet, WalletError> {
        let mut wallet = Wallet::new();
        for (key, amount) in entries {
            if wallet.index.contains_key(&key) {
                return Err(WalletError::DuplicateKey { key: quote(key.as_str()) });
            }
            wallet.put(&key, amount);
        }
        Ok(wallet)
    }

    /// The balance of `key`, if the wallet exists.
    pub fn get(&self, key: &str) -> Option<Amount> {
        self.index.get(key).map(|&i| self.entries[i].1)
    }

    /// All wallets and balances, in first-insertion order.
    pub fn entries(&self) -> impl Iterator<Item = (&Key, Amount)> + '_ {
        self.entries.iter().map(|(key, amount)| (key, *amount))
    }

    /// How many wallets exist.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no wallet exists.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many requests have been applied (cached replays and duplicates not counted).
    pub fn applied_count(&self) -> u64 {
        self.applied
    }

    /// The last applied sequence number of `client`, if the cache remembers it.
    pub fn last_seq(&self, client: u64) -> Option<u64> {
        self.sessions.get(&client).map(|s| s.seq)
    }

    /// The remembered reply to `client`'s last applied request, if any.
    pub fn cached_reply(&self, client: u64) -> Option<&Reply> {
        self.sessions.get(&client).map(|s| &s.reply)
    }

    /// Applies one request exactly once (see the [module docs](self#exactly-once)).
    pub fn apply(&mut self, request: &Request) -> Reply {
        if let Some(session) = self.sessions.get(&request.client) {
            if request.seq == session.seq {
                return session.reply.clone();
            }
            if request.seq < session.seq {
                let outcome = Outcome::Duplicate { last_seq: session.seq };
                return Reply { client: request.client, seq: request.seq, outcome };
            }
        }
        let outcome = self.execute(&request.op);
        let reply = Reply { client: request.client, seq: request.seq, outcome };
        self.remember(request.client, request.seq, reply.clone());
        reply
    }

    /// Applies a slot's requests in order, returning one reply per request.
    pub fn apply_batch(&mut self, batch: &Batch) -> Vec<Reply> {
        batch.requests.iter().map(|request| self.apply(request)).collect()
    }

    /// Performs an operation on the balances.
    fn execute(&mut self, op: &Op) -> Outcome {
        match op {
            Op::Set { key, amount } => {
                self.put(key, *amount);
                Outcome::Ok { key: key.clone(), balance: *amount }
            }
            Op::Deposit { key, amount } => self.deposit(key, *amount),
            Op::Withdraw { key, amount } => self.withdraw(key, *amount),
            Op::Get { key } => match self.balance(key) {
                Some(balance) => Outcome::Ok { key: key.clone(), balance },
                None => Outcome::NoSuchWallet { key: key.clone() },
            },
        }
    }

    fn deposit(&mut self, key: &Key, amount: Amount) -> Outcome {
        let balance = self.balance(key).unwrap_or(Amount::ZERO);
        match balance.checked_add(amount) {
            Some(sum) => {
                self.put(key, sum);
                Outcome::Ok { key: key.clone(), balance: sum }
            }
            None => Outcome::Overflow { key: key.clone(), balance, amount },
        }
    }

    fn withdraw(&mut self, key: &Key, amount: Amount) -> Outcome {
        let Some(balance) = self.balance(key) else {
            return Outcome::NoSuchWallet { key: key.clone() };
        };
        match balance.checked_sub(amount) {
            Some(rest) => {
                self.put(key, rest);
                Outcome::Ok { key: key.clone(), balance: rest }
            }
            None => Outcome::InsufficientFunds { key: key.clone(), balance, amount },
        }
    }

    /// The balance of `key`.
    fn balance(&self, key: &Key) -> Option<Amount> {
        self.get(key.as_str())
    }

    /// Sets the balance of `key`, appending it if new.
    fn put(&mut self, key: &Key, amount: Amount) {
        match self.index.get(key) {
            Some(&i) => self.entries[i].1 = amount,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key.clone(), amount));
            }
        }
    }

    /// Records `client`'s newly applied request, evicting the least recently applied
    /// client if a new client finds the cache full.
    fn remember(&mut self, client: u64, seq: u64, reply: Reply) {
        self.applied += 1;
        let tick = self.applied;
        if let Some(old) = self.sessions.get(&client) {
            self.by_tick.remove(&old.tick);
        } else if self.sessions.len() >= self.client_limit {
            if let Some((_, evicted)) = self.by_tick.pop_first() {
                self.sessions.remove(&evicted);
            }
        }
        self.sessions.insert(client, Session { seq, reply, tick });
        self.by_tick.insert(tick, client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        Key::new(name).unwrap()
    }

    fn dollars(text: &str) -> Amount {
        Amount::parse(text).unwrap()
    }

    fn request(client: u64, seq: u64, op: Op) -> Request {
        Request { client, seq, op }
    }

    fn set(name: &str, amount: &str) -> Op {
        Op::Set { key: key(name), amount: dollars(amount) }
    }

    fn deposit(name: &str, amount: &str) -> Op {
        Op::Deposit { key: key(name), amount: dollars(amount) }
    }

    fn withdraw(name: &str, amount: &str) -> Op {
        Op::Withdraw { key: key(name), amount: dollars(amount) }
    }

    fn get(name: &str) -> Op {
        Op::Get { key: key(name) }
    }

    fn amount_problem(text: &str) -> AmountProblem {
        match Amount::parse(text) {
            Err(WalletError::InvalidAmount { problem, .. }) => problem,
            other => panic!("{text:?} gave {other:?}"),
        }
    }

    fn key_problem_of(name: &str) -> KeyProblem {
        match Key::new(name) {
            Err(WalletError::InvalidKey { problem, .. }) => problem,
            other => panic!("{name:?} gave {other:?}"),
        }
    }

    /// A small deterministic generator for the no-panic tests.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn amounts_parse_to_exact_cents() {
        let cases = [
            ("$10", 1000),
            ("10", 1000),
            ("10.5", 1050),
            ("10.50", 1050),
            ("$0.01", 1),
            ("0", 0),
            ("$0", 0),
            ("0.05", 5),
            ("007", 700),
            ("$1000000000000", MAX_AMOUNT_CENTS),
            ("1000000000000.00", MAX_AMOUNT_CENTS),
        ];
        for (text, cents) in cases {
            assert_eq!(Amount::parse(text).map(Amount::cents), Ok(cents), "{text}");
        }
    }

    #[test]
    fn bad_amounts_are_refused_with_a_reason() {
        for text in ["", "$"] {
            assert_eq!(amount_problem(text), AmountProblem::Empty, "{text:?}");
        }
        for text in ["-5", "$-5", "-$5", "-0", "-1.234"] {
            assert_eq!(amount_problem(text), AmountProblem::Negative, "{text:?}");
        }
        for text in ["1.234", "$0.001", "5.000"] {
            assert_eq!(amount_problem(text), AmountProblem::TooPrecise, "{text:?}");
        }
        for text in ["1000000000000.01", "$99999999999999999999999999", "18446744073709551616"] {
            assert_eq!(amount_problem(text), AmountProblem::TooLarge, "{text:?}");
        }
        let syntax = [
            "$abc", ".", "$.", ".5", "10.", "1 0", " 10", "10 ", "$ 10", "1e3", "1E3", "+5", "$$5", "1,000",
            "1.2.3", "0x10", "١٢", "10$", "--5", "-", "NaN", "inf", "５",
        ];
        for text in syntax {
            assert_eq!(amount_problem(text), AmountProblem::NotANumber, "{text:?}");
        }
    }

    #[test]
    fn amounts_display_as_dollars_with_cents_only_when_needed() {
        let cases =
            [(0, "$0"), (1, "$0.01"), (50, "$0.50"), (3000, "$30"), (3050, "$30.50"), (3005, "$30.05")];
        for (cents, text) in cases {
            let amount = Amount::from_cents(cents).unwrap();
            assert_eq!(amount.to_string(), text);
            assert_eq!(Amount::parse(text), Ok(amount), "display parses back");
        }
        assert_eq!(Amount::MAX.to_string(), "$1000000000000");
    }

    #[test]
    fn amount_arithmetic_stays_within_bounds() {
        assert!(Amount::from_cents(MAX_AMOUNT_CENTS + 1).is_err());
        assert_eq!(Amount::MAX.checked_add(Amount::from_cents(1).unwrap()), None);
        assert_eq!(Amount::MAX.checked_add(Amount::ZERO), Some(Amount::MAX));
        assert_eq!(dollars("5").checked_sub(dollars("5.01")), None);
        assert_eq!(dollars("5").checked_sub(dollars("0.01")), Some(dollars("4.99")));
    }

    #[test]
    fn amounts_serialize_as_strings_and_validate_when_deserialized() {
        assert_eq!(serde_json::to_string(&dollars("30.5")).unwrap(), r#""$30.50""#);
        assert_eq!(serde_json::from_str::<Amount>(r#""10""#).unwrap(), dollars("10"));
        assert!(serde_json::from_str::<Amount>(r#""-1""#).is_err());
        assert!(serde_json::from_str::<Amount>("10").is_err(), "numbers are not amounts");
    }

    #[test]
    fn keys_are_validated() {
        for name in
            ["foo", "a b", "é", "中文", "😀", "q\"uote", "back\\slash", "$", &"x".repeat(64), &"é".repeat(64)]
        {
            assert_eq!(Key::new(name).map(|k| k.as_str().to_owned()), Ok(name.to_owned()));
        }
        assert_eq!(key_problem_of(""), KeyProblem::Empty);
        assert_eq!(key_problem_of(&"x".repeat(65)), KeyProblem::TooLong { chars: 65 });
        for name in ["a\nb", "\t", "nul\0", "del\u{7f}", "c1\u{85}"] {
            assert_eq!(key_problem_of(name), KeyProblem::ControlCharacter, "{name:?}");
        }
        assert_eq!(key_problem_of("a:b"), KeyProblem::Colon);
        for name in [" foo", "foo ", " ", "foo\u{a0}", "\u{3000}foo"] {
            assert_eq!(key_problem_of(name), KeyProblem::SurroundingWhitespace, "{name:?}");
        }
        assert!(serde_json::from_str::<Key>(r#""a:b""#).is_err());
        assert_eq!(serde_json::to_string(&key("foo")).unwrap(), r#""foo""#);
    }

    #[test]
    fn long_inputs_are_quoted_shortened_in_errors() {
        let err = Key::new("é".repeat(100)).unwrap_err();
        let WalletError::InvalidKey { key, .. } = &err else { panic!("{err:?}") };
        assert_eq!(key.chars().count(), QUOTE_CHARS + 1);
        assert!(err.to_string().contains("100 characters, the maximum is 64"));
    }

    #[test]
    fn the_assignment_ends_with_foo_30_and_bar_10_in_insertion_order() {
        let mut wallet = Wallet::new();
        let ops = parse_text_list("foo:$10, bar:$30, foo:$20, bar:$20, foo:$30, bar:$10").unwrap();
        for (seq, op) in ops.into_iter().enumerate() {
            assert!(wallet.apply(&request(1, seq as u64 + 1, op)).outcome.is_ok());
        }
        let entries: Vec<_> = wallet.entries().map(|(k, a)| (k.as_str().to_owned(), a.to_string())).collect();
        assert_eq!(entries, [("foo".to_owned(), "$30".to_owned()), ("bar".to_owned(), "$10".to_owned())]);
    }

    #[test]
    fn operations_change_balances_or_refuse() {
        let mut wallet = Wallet::new();
        let mut seq = 0;
        let mut run = |wallet: &mut Wallet, op: Op| {
            seq += 1;
            wallet.apply(&request(9, seq, op)).outcome
        };
        assert_eq!(run(&mut wallet, get("foo")), Outcome::NoSuchWallet { key: key("foo") });
        assert_eq!(run(&mut wallet, withdraw("foo", "1")), Outcome::NoSuchWallet { key: key("foo") });
        assert!(wallet.is_empty(), "refusals create nothing");
        assert_eq!(
            run(&mut wallet, deposit("foo", "5")),
            Outcome::Ok { key: key("foo"), balance: dollars("5") }
        );
        let refused = run(&mut wallet, withdraw("foo", "10"));
        let expected =
            Outcome::InsufficientFunds { key: key("foo"), balance: dollars("5"), amount: dollars("10") };
        assert_eq!(refused, expected);
        assert_eq!(
            run(&mut wallet, withdraw("foo", "4.99")),
            Outcome::Ok { key: key("foo"), balance: dollars("0.01") }
        );
        assert!(run(&mut wallet, set("bar", "$1000000000000")).is_ok());
        let overflow = run(&mut wallet, deposit("bar", "0.01"));
        let expected = Outcome::Overflow { key: key("bar"), balance: Amount::MAX, amount: dollars("0.01") };
        assert_eq!(overflow, expected);
        assert_eq!(run(&mut wallet, get("bar")), Outcome::Ok { key: key("bar"), balance: Amount::MAX });
        assert_eq!(
            run(&mut wallet, withdraw("foo", "0.01")),
            Outcome::Ok { key: key("foo"), balance: Amount::ZERO }
        );
        assert_eq!(wallet.get("foo"), Some(Amount::ZERO), "an empty wallet still exists");
        assert_eq!(wallet.len(), 2);
    }

    #[test]
    fn a_repeated_request_is_answered_from_the_cache_without_reapplying() {
        let mut wallet = Wallet::new();
        let first = wallet.apply(&request(1, 5, deposit("foo", "10")));
        let again = wallet.apply(&request(1, 5, deposit("foo", "10")));
        assert_eq!(first, again);
        assert_eq!(wallet.get("foo"), Some(dollars("10")));
        assert_eq!(wallet.applied_count(), 1);
        let stale = wallet.apply(&request(1, 4, deposit("foo", "10")));
        assert_eq!(stale, Reply { client: 1, seq: 4, outcome: Outcome::Duplicate { last_seq: 5 } });
        assert_eq!(wallet.get("foo"), Some(dollars("10")));
        wallet.apply(&request(1, 9, deposit("foo", "1")));
        assert_eq!(wallet.get("foo"), Some(dollars("11")), "gaps in seq are allowed");
        assert_eq!(wallet.last_seq(1), Some(9));
        wallet.apply(&request(2, 5, deposit("foo", "1")));
        assert_eq!(wallet.get("foo"), Some(dollars("12")), "sequence numbers are per client");
    }

    #[test]
    fn refusals_are_cached_too() {
        let mut wallet = Wallet::new();
        let refused = wallet.apply(&request(3, 1, withdraw("foo", "1")));
        wallet.apply(&request(4, 1, set("foo", "100")));
        assert_eq!(wallet.apply(&request(3, 1, withdraw("foo", "1"))), refused);
        assert_eq!(wallet.get("foo"), Some(dollars("100")));
    }

    #[test]
    fn the_cache_evicts_the_client_applied_longest_ago() {
        let mut wallet = Wallet::with_client_limit(2);
        wallet.apply(&request(10, 1, deposit("a", "1")));
        wallet.apply(&request(20, 1, deposit("a", "1")));
        wallet.apply(&request(10, 2, deposit("a", "1")));
        wallet.apply(&request(30, 1, deposit("a", "1")));
        assert_eq!(wallet.last_seq(20), None, "client 20 was least recently applied");
        assert_eq!(wallet.last_seq(10), Some(2));
        assert_eq!(wallet.last_seq(30), Some(1));
        // A replay of a cached request does not refresh the client.
        wallet.apply(&request(10, 2, deposit("a", "1")));
        wallet.apply(&request(40, 1, deposit("a", "1")));
        assert_eq!(wallet.last_seq(10), None);
        assert_eq!(wallet.get("a"), Some(dollars("5")));
        // The forgotten client's old request is applied again: the documented limit.
        wallet.apply(&request(20, 1, deposit("a", "1")));
        assert_eq!(wallet.get("a"), Some(dollars("6")));
        assert_eq!(Wallet::with_client_limit(0).client_limit, 1);
    }

    #[test]
    fn replicas_applying_the_same_batches_agree() {
        let mut rng = Lcg(42);
        let names = ["foo", "bar", "baz"];
        let batches: Vec<Batch> = (0..50)
            .map(|_| {
                let requests = (0..rng.below(8))
                    .map(|_| {
                        let name = names[rng.below(3)];
                        let amount = Amount::from_cents(rng.next() % 5000).unwrap();
                        let op = match rng.below(4) {
                            0 => Op::Set { key: key(name), amount },
                            1 => Op::Deposit { key: key(name), amount },
                            2 => Op::Withdraw { key: key(name), amount },
                            _ => get(name),
                        };
                        request(rng.next() % 6, rng.next() % 40, op)
                    })
                    .collect();
                Batch::new(requests)
            })
            .collect();
        let mut one = Wallet::with_client_limit(3);
        let mut two = Wallet::with_client_limit(3);
        let replies_one: Vec<_> = batches.iter().flat_map(|b| one.apply_batch(b)).collect();
        let replies_two: Vec<_> = batches
            .iter()
            .map(|b| Batch::decode(&b.encode()).unwrap())
            .flat_map(|b| two.apply_batch(&b))
            .collect();
        assert_eq!(replies_one, replies_two);
        assert_eq!(one, two);
        assert!(one.entries().all(|(_, a)| a <= Amount::MAX));
    }

    #[test]
    fn from_entries_keeps_order_and_refuses_duplicates() {
        let wallet = Wallet::from_entries([(key("b"), dollars("1")), (key("a"), dollars("2"))]).unwrap();
        let names: Vec<_> = wallet.entries().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(wallet.get("a"), Some(dollars("2")));
        let twice = Wallet::from_entries([(key("a"), dollars("1")), (key("a"), dollars("2"))]);
        assert_eq!(twice, Err(WalletError::DuplicateKey { key: "a".into() }));
    }

    #[test]
    fn batches_are_sorted_deduplicated_and_order_independent() {
        let batch = Batch::new(vec![
            request(2, 1, get("x")),
            request(1, 2, set("x", "2")),
            request(1, 1, set("x", "9")),
            request(1, 1, set("x", "1")),
        ]);
        let keys: Vec<_> = batch.requests().iter().map(|r| (r.client, r.seq)).collect();
        assert_eq!(keys, [(1, 1), (1, 2), (2, 1)]);
        assert_eq!(batch.requests()[0].op, set("x", "1"), "the smallest op wins a (client, seq) clash");
        assert!(batch.contains(1, 2) && !batch.contains(2, 2));
        let a = Batch::new(vec![request(1, 1, set("x", "9")), request(3, 1, get("y"))]);
        let b = Batch::new(vec![
            request(1, 1, set("x", "1")),
            request(2, 1, get("x")),
            request(1, 2, set("x", "2")),
        ]);
        let ab = Batch::combine([&a, &b]);
        assert_eq!(ab, Batch::combine([&b, &a]));
        assert_eq!(ab.len(), 4);
        assert_eq!(Batch::combine([]), Batch::empty());
    }

    #[test]
    fn batches_are_capped_by_count_and_size_as_a_prefix() {
        let many: Vec<_> = (0..1000).map(|i| request(i % 7, i, get("k"))).collect();
        let batch = Batch::new(many);
        assert_eq!(batch.len(), MAX_BATCH_REQUESTS);
        assert!(batch.encode().len() <= MAX_BATCH_BYTES);
        let big_key = "\u{10FFFF}".repeat(MAX_KEY_CHARS);
        let big: Vec<_> = (0..MAX_BATCH_REQUESTS as u64).map(|i| request(i, 1, set(&big_key, "1"))).collect();
        let batch = Batch::new(big);
        let encoded = batch.encode();
        assert!(batch.len() < MAX_BATCH_REQUESTS, "the size cap binds first");
        assert!(encoded.len() <= MAX_BATCH_BYTES);
        let one_more = Batch::new(vec![request(batch.len() as u64, 1, set(&big_key, "1"))]);
        assert!(
            encoded.len() + 1 + one_more.encode().len() - BATCH_OVERHEAD > MAX_BATCH_BYTES,
            "the cap is tight"
        );
        assert_eq!(Batch::decode(&encoded), Ok(batch));
    }

    #[test]
    fn a_client_never_loses_a_smaller_seq_to_the_cap() {
        let requests: Vec<_> = (0..400).map(|i| request(5, 400 - i, deposit("k", "1"))).collect();
        let batch = Batch::new(requests);
        let seqs: Vec<_> = batch.requests().iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=MAX_BATCH_REQUESTS as u64).collect::<Vec<_>>());
    }

    #[test]
    fn batch_encoding_is_canonical_json() {
        let batch = Batch::new(vec![request(7, 3, deposit("foo", "5")), request(1, 1, get("bar"))]);
        let text = String::from_utf8(batch.encode()).unwrap();
        assert_eq!(
            text,
            r#"{"requests":[{"client":1,"seq":1,"op":{"type":"get","key":"bar"}},{"client":7,"seq":3,"op":{"type":"deposit","key":"foo","amount":"$5"}}]}"#
        );
        assert_eq!(Batch::decode(text.as_bytes()), Ok(batch));
        assert_eq!(Batch::empty().encode(), br#"{"requests":[]}"#);
        assert_eq!(Batch::empty().encode().len(), BATCH_OVERHEAD);
    }

    #[test]
    fn decode_rejects_anything_but_canonical_valid_batches() {
        let not_canonical = [
            r#"{"requests": []}"#,
            r#"{"requests":[]} "#,
            r#"{"requests":[{"client":1,"seq":1,"op":{"type":"set","key":"a","amount":"10"}}]}"#,
            r#"{"requests":[{"seq":1,"client":1,"op":{"type":"get","key":"a"}}]}"#,
        ];
        for text in not_canonical {
            assert_eq!(
                Batch::decode(text.as_bytes()),
                Err(batch_error(BatchProblem::NotCanonical)),
                "{text}"
            );
        }
        let unsorted = r#"{"requests":[{"client":2,"seq":1,"op":{"type":"get","key":"a"}},{"client":1,"seq":1,"op":{"type":"get","key":"a"}}]}"#;
        assert_eq!(Batch::decode(unsorted.as_bytes()), Err(batch_error(BatchProblem::NotSorted)));
        let repeated = r#"{"requests":[{"client":1,"seq":1,"op":{"type":"get","key":"a"}},{"client":1,"seq":1,"op":{"type":"get","key":"b"}}]}"#;
        assert_eq!(Batch::decode(repeated.as_bytes()), Err(batch_error(BatchProblem::NotSorted)));
        let undecodable = [
            "",
            "garbage",
            "[]",
            r#"{"requests":[],"extra":1}"#,
            r#"{"requests":[{"client":1,"seq":1,"op":{"type":"get","key":"a:b"}}]}"#,
            r#"{"requests":[{"client":1,"seq":1,"op":{"type":"set","key":"a","amount":"-1"}}]}"#,
            r#"{"requests":[{"client":1,"seq":1,"op":{"type":"burn","key":"a"}}]}"#,
            r#"{"requests":[{"client":-1,"seq":1,"op":{"type":"get","key":"a"}}]}"#,
        ];
        for text in undecodable {
            assert!(matches!(Batch::decode(text.as_bytes()), Err(WalletError::Decode { .. })), "{text}");
        }
        let huge = vec![b' '; MAX_BATCH_BYTES + 1];
        assert_eq!(
            Batch::decode(&huge),
            Err(batch_error(BatchProblem::TooLarge { bytes: MAX_BATCH_BYTES + 1 }))
        );
        let too_many: Vec<String> = (0..=MAX_BATCH_REQUESTS)
            .map(|i| format!(r#"{{"client":{i},"seq":0,"op":{{"type":"get","key":"a"}}}}"#))
            .collect();
        let text = format!(r#"{{"requests":[{}]}}"#, too_many.join(","));
        let count = MAX_BATCH_REQUESTS + 1;
        assert_eq!(Batch::decode(text.as_bytes()), Err(batch_error(BatchProblem::TooManyRequests { count })));
    }

    #[test]
    fn decode_never_panics_on_mangled_input() {
        let valid =
            Batch::new(vec![request(1, 1, set("é😀", "10.5")), request(2, 7, withdraw("b\\\"", "1"))])
                .encode();
        let mut rng = Lcg(7);
        for _ in 0..5000 {
            let mut bytes = valid.clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(bytes.len() + 1);
                match rng.below(3) {
                    0 => bytes.insert(at, rng.next() as u8),
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.truncate(at),
                }
            }
            if let Ok(batch) = Batch::decode(&bytes) {
                assert_eq!(batch.encode(), bytes);
            }
        }
    }

    #[test]
    fn plain_text_commands_parse() {
        let cases = [
            ("foo:$10", set("foo", "10")),
            ("  foo : $10 \r\n", set("foo", "10")),
            ("a b:10.5", set("a b", "10.5")),
            ("get:$1", set("get", "1")),
            ("set foo 10", set("foo", "10")),
            ("SET foo $10", set("foo", "10")),
            ("deposit foo $5", deposit("foo", "5")),
            ("withdraw  foo\t5", withdraw("foo", "5")),
            ("get foo", get("foo")),
            ("Get é", get("é")),
        ];
        for (line, op) in cases {
            assert_eq!(parse_text(line), Ok(op), "{line:?}");
        }
    }

    #[test]
    fn bad_plain_text_commands_say_why() {
        assert_eq!(parse_text("  "), Err(WalletError::EmptyCommand));
        assert_eq!(parse_text("burn foo"), Err(WalletError::UnknownCommand { verb: "burn".into() }));
        assert_eq!(parse_text("get"), Err(WalletError::Usage { usage: "get <key>" }));
        assert_eq!(parse_text("set foo"), Err(WalletError::Usage { usage: "set <key> <amount>" }));
        assert_eq!(parse_text("set foo:10"), Err(WalletError::Usage { usage: "set <key> <amount>" }));
        assert_eq!(parse_text("deposit a b c"), Err(WalletError::Usage { usage: "deposit <key> <amount>" }));
        assert!(matches!(
            parse_text("foo:$-5"),
            Err(WalletError::InvalidAmount { problem: AmountProblem::Negative, .. })
        ));
        assert!(matches!(parse_text(":$5"), Err(WalletError::InvalidKey { problem: KeyProblem::Empty, .. })));
        assert!(matches!(parse_text("a:b:5"), Err(WalletError::InvalidAmount { .. })));
        assert!(matches!(
            parse_text("get a:b"),
            Err(WalletError::InvalidKey { problem: KeyProblem::Colon, .. })
        ));
        assert_eq!(
            parse_text("withdraw foo 1.234").unwrap_err().reply_text(),
            r#"ERROR invalid amount "1.234": at most two decimals (cents) are allowed"#
        );
        assert_eq!(parse_text_list("foo:$10,, bar:$5,"), Ok(vec![set("foo", "10"), set("bar", "5")]));
        assert!(parse_text_list("foo:$10, bar:oops").is_err());
    }

    #[test]
    fn replies_render_as_one_clear_line() {
        let reply = |outcome| Reply { client: 1, seq: 1, outcome }.to_string();
        assert_eq!(reply(Outcome::Ok { key: key("foo"), balance: dollars("30") }), "OK foo=$30");
        assert_eq!(
            reply(Outcome::InsufficientFunds {
                key: key("foo"),
                balance: dollars("5"),
                amount: dollars("10")
            }),
            "ERROR insufficient funds: foo has $5, cannot withdraw $10"
        );
        assert_eq!(reply(Outcome::NoSuchWallet { key: key("foo") }), "ERROR no such wallet: foo");
        assert_eq!(
            reply(Outcome::Overflow { key: key("foo"), balance: Amount::MAX, amount: dollars("0.50") }),
            "ERROR overflow: foo has $1000000000000, depositing $0.50 would exceed the maximum $1000000000000"
        );
        assert_eq!(
            reply(Outcome::Duplicate { last_seq: 4 }),
            "ERROR duplicate request: this client's newer request 4 was already applied"
        );
    }

    #[test]
    fn requests_and_replies_have_documented_json() {
        let req = request(7, 3, deposit("foo", "5"));
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(json, r#"{"client":7,"seq":3,"op":{"type":"deposit","key":"foo","amount":"$5"}}"#);
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), req);
        let reply =
            Reply { client: 7, seq: 3, outcome: Outcome::Ok { key: key("foo"), balance: dollars("35") } };
        let json = serde_json::to_string(&reply).unwrap();
        assert_eq!(json, r#"{"client":7,"seq":3,"outcome":{"status":"ok","key":"foo","balance":"$35"}}"#);
        assert_eq!(serde_json::from_str::<Reply>(&json).unwrap(), reply);
        let refused =
            Outcome::InsufficientFunds { key: key("a"), balance: dollars("1"), amount: dollars("2") };
        assert_eq!(
            serde_json::to_string(&refused).unwrap(),
            r#"{"status":"insufficient_funds","key":"a","balance":"$1","amount":"$2"}"#
        );
        let duplicate = serde_json::to_string(&Outcome::Duplicate { last_seq: 2 }).unwrap();
        assert_eq!(duplicate, r#"{"status":"duplicate","last_seq":2}"#);
    }
}
