//! Errors of building, parsing and decoding wallet data.

use super::{Amount, MAX_BATCH_BYTES, MAX_BATCH_REQUESTS, MAX_KEY_CHARS, QUOTE_CHARS};
use std::fmt;

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
    /// The same wallet name twice when building a [`Wallet`](super::Wallet) from entries.
    DuplicateKey {
        /// The repeated name.
        key: String,
    },
    /// A `many` operation that is empty, longer than [`super::MAX_MANY_OPS`], or holds
    /// something other than set, deposit, withdraw, get and transfer.
    InvalidMany {
        /// What is wrong.
        problem: &'static str,
    },
    /// A wallet image (a checkpoint's state) that no wallet could have produced.
    InvalidImage {
        /// What is wrong.
        problem: &'static str,
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

/// Why text is not a [`Key`](super::Key).
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

/// Which rule a decoded [`Batch`](super::Batch) breaks.
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
    /// Requests not in strictly increasing `(client, session, seq)` order (unsorted or
    /// repeated).
    NotSorted,
    /// Valid JSON, but not byte for byte what [`Batch::encode`](super::Batch::encode) writes.
    NotCanonical,
}

impl fmt::Display for WalletError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalletError::InvalidAmount { input, problem } => write!(f, "invalid amount {input:?}: {problem}"),
            WalletError::InvalidKey { key, problem } => write!(f, "invalid wallet name {key:?}: {problem}"),
            WalletError::EmptyCommand => f.write_str("empty command"),
            WalletError::UnknownCommand { verb } => {
                write!(
                    f,
                    "unknown command {verb:?} (expected key:amount, set, deposit, withdraw, transfer or get)"
                )
            }
            WalletError::Usage { usage } => write!(f, "usage: {usage}"),
            WalletError::Decode { reason } => write!(f, "undecodable batch: {reason}"),
            WalletError::InvalidBatch { problem } => write!(f, "invalid batch: {problem}"),
            WalletError::DuplicateKey { key } => write!(f, "wallet {key:?} appears twice"),
            WalletError::InvalidMany { problem } => write!(f, "invalid many operation: {problem}"),
            WalletError::InvalidImage { problem } => write!(f, "invalid wallet image: {problem}"),
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
            BatchProblem::NotSorted => f.write_str("requests not strictly sorted by (client, session, seq)"),
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
pub(crate) fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}
