//! Operations on the wallets, and the plain-text commands that spell them.

use super::error::quote;
use super::membership::{parse_member, Membership};
use super::{Amount, Key, WalletError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An operation on the wallets.
///
/// JSON: `{"type":"set","key":"foo","amount":"$10"}`, with `type` one of `set`,
/// `deposit`, `withdraw`, `get` (`get` has no `amount`);
/// `{"type":"transfer","from":"alice","to":"bob","amount":"$5"}`;
/// `{"type":"register","nonce":8077241}`; and
/// `{"type":"reconfigure","threshold":4,"members":[{"id":3000,"address":"127.0.0.1:3000"},…]}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// Create `key` or overwrite its balance with `amount` (the assignment's `foo:$10`);
    /// refused on a wallet owned by someone else.
    Set {
        /// The wallet.
        key: Key,
        /// Its new balance.
        amount: Amount,
    },
    /// Add `amount` to `key`, creating it at $0 first if absent (anyone may deposit).
    Deposit {
        /// The wallet.
        key: Key,
        /// How much to add.
        amount: Amount,
    },
    /// Subtract `amount` from `key`; refused if absent, owned by someone else, or if the
    /// balance is too small.
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
    /// Move `amount` from `from` to `to` atomically; both must exist, `from` must not be
    /// owned by someone else, and neither balance may leave `[$0, Amount::MAX]`.
    Transfer {
        /// The wallet debited.
        from: Key,
        /// The wallet credited.
        to: Key,
        /// How much to move.
        amount: Amount,
    },
    /// Open a session for the request's client (see the
    /// [module docs](crate::wallet#exactly-once-sessions)); the request's own `session`
    /// is ignored.
    Register {
        /// The client's random number for this session: a retransmitted register (same
        /// client, same nonce) gets the same session.
        nonce: u64,
    },
    /// Replace the cluster's membership with this configuration from the next slot on
    /// (see [`super::membership`]); refused as a whole if unsafe or malformed.
    Reconfigure(Membership),
    /// Several operations in one request, applied in order in the same slot, each with its
    /// own outcome ([`super::Outcome::Many`]); one sequence number, so exactly-once holds
    /// for the whole list. JSON: `{"type":"many","ops":[{"type":"deposit",…},…]}`.
    Many {
        /// The operations: set, deposit, withdraw, get and transfer only.
        ops: Ops,
    },
}

/// The operations of an [`Op::Many`]: 1 to [`super::MAX_MANY_OPS`] of them, each a set,
/// deposit, withdraw, get or transfer (no register, reconfiguration or nested list). The
/// field is private so that these rules always hold, also for decoded requests.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<FastOp>", into = "Vec<Op>")]
pub struct Ops(Vec<Op>);

/// An [`Op`] decoded by [`deserialize_op`].
pub(crate) struct FastOp(Op);

impl<'de> Deserialize<'de> for FastOp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<FastOp, D::Error> {
        deserialize_op(d).map(FastOp)
    }
}

impl TryFrom<Vec<FastOp>> for Ops {
    type Error = WalletError;

    fn try_from(ops: Vec<FastOp>) -> Result<Ops, WalletError> {
        Ops::try_from(ops.into_iter().map(|op| op.0).collect::<Vec<Op>>())
    }
}

/// Decodes an [`Op`] as its derived decoder does, but the common operations without
/// buffering the object first ([`crate::tagged`]).
pub(crate) fn deserialize_op<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Op, D::Error> {
    crate::tagged::deserialize(d)
}

impl crate::tagged::Tagged for Op {
    const EXPECTING: &'static str = "an operation object";

    fn fast<'de, A: serde::de::MapAccess<'de>>(tag: &str, map: &mut A) -> Option<Result<Op, A::Error>> {
        fast_op(tag, map)
    }

    fn slow(object: serde_json::Value) -> Result<Op, serde_json::Error> {
        Op::deserialize(object)
    }
}

/// The fields of the common operations, read straight from the object.
fn fast_op<'de, A: serde::de::MapAccess<'de>>(tag: &str, map: &mut A) -> Option<Result<Op, A::Error>> {
    use crate::tagged::single;
    Some(match tag {
        "set" => json_key_amount(map).map(|(key, amount)| Op::Set { key, amount }),
        "deposit" => json_key_amount(map).map(|(key, amount)| Op::Deposit { key, amount }),
        "withdraw" => json_key_amount(map).map(|(key, amount)| Op::Withdraw { key, amount }),
        "get" => single(map, "key").map(|key| Op::Get { key }),
        "register" => single(map, "nonce").map(|nonce| Op::Register { nonce }),
        "many" => single(map, "ops").map(|ops| Op::Many { ops }),
        "transfer" => json_transfer(map),
        _ => return None,
    })
}

fn json_key_amount<'de, A: serde::de::MapAccess<'de>>(map: &mut A) -> Result<(Key, Amount), A::Error> {
    use crate::tagged::{fields, once, required};
    let (mut key, mut amount) = (None, None);
    fields(map, |name, map| match name {
        "key" => once(map, &mut key, "key"),
        "amount" => once(map, &mut amount, "amount"),
        _ => Ok(false),
    })?;
    Ok((required(key, "key")?, required(amount, "amount")?))
}

fn json_transfer<'de, A: serde::de::MapAccess<'de>>(map: &mut A) -> Result<Op, A::Error> {
    use crate::tagged::{fields, once, required};
    let (mut from, mut to, mut amount) = (None, None, None);
    fields(map, |name, map| match name {
        "from" => once(map, &mut from, "from"),
        "to" => once(map, &mut to, "to"),
        "amount" => once(map, &mut amount, "amount"),
        _ => Ok(false),
    })?;
    Ok(Op::Transfer {
        from: required(from, "from")?,
        to: required(to, "to")?,
        amount: required(amount, "amount")?,
    })
}

impl Ops {
    /// The operations, in the order they are applied.
    pub fn as_slice(&self) -> &[Op] {
        &self.0
    }
}

impl TryFrom<Vec<Op>> for Ops {
    type Error = WalletError;

    fn try_from(ops: Vec<Op>) -> Result<Ops, WalletError> {
        let problem = if ops.is_empty() {
            "no operations"
        } else if ops.len() > super::MAX_MANY_OPS {
            "too many operations"
        } else if !ops.iter().all(Op::is_plain) {
            "only set, deposit, withdraw, get and transfer may be listed"
        } else {
            return Ok(Ops(ops));
        };
        Err(WalletError::InvalidMany { problem })
    }
}

impl From<Ops> for Vec<Op> {
    fn from(ops: Ops) -> Vec<Op> {
        ops.0
    }
}

impl Op {
    /// A set, deposit, withdraw, get or transfer: an operation on wallets alone, which a
    /// [`Op::Many`] may list.
    pub fn is_plain(&self) -> bool {
        matches!(
            self,
            Op::Set { .. } | Op::Deposit { .. } | Op::Withdraw { .. } | Op::Get { .. } | Op::Transfer { .. }
        )
    }

    /// Whether the operation may change a balance (set, deposit, withdraw, transfer, or a
    /// list holding one).
    pub fn is_write(&self) -> bool {
        match self {
            Op::Set { .. } | Op::Deposit { .. } | Op::Withdraw { .. } | Op::Transfer { .. } => true,
            Op::Many { ops } => ops.as_slice().iter().any(Op::is_write),
            Op::Get { .. } | Op::Register { .. } | Op::Reconfigure(_) => false,
        }
    }
}

impl fmt::Display for Op {
    /// The plain-text spelling: `set foo $10`, `transfer alice bob $5`, `get foo`, and
    /// `register 8077241` (which has no plain-text form).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Set { key, amount } => write!(f, "set {key} {amount}"),
            Op::Deposit { key, amount } => write!(f, "deposit {key} {amount}"),
            Op::Withdraw { key, amount } => write!(f, "withdraw {key} {amount}"),
            Op::Get { key } => write!(f, "get {key}"),
            Op::Transfer { from, to, amount } => write!(f, "transfer {from} {to} {amount}"),
            Op::Register { nonce } => write!(f, "register {nonce}"),
            Op::Reconfigure(membership) => write!(f, "reconfigure {membership}"),
            Op::Many { ops } => {
                let list: Vec<String> = ops.as_slice().iter().map(Op::to_string).collect();
                write!(f, "many [{}]", list.join(", "))
            }
        }
    }
}

/// Parses one plain-text command (surrounding whitespace ignored):
///
/// * `foo:$10` — set (whitespace around `:` allowed; the key may contain inner spaces);
/// * `set foo 10`, `deposit foo $5`, `withdraw foo 5`, `transfer alice bob 5`, `get foo`
///   — verbs are case-insensitive and arguments are separated by whitespace.
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
        "transfer" => parse_transfer(&args),
        "reconfigure" => parse_reconfigure(&args),
        "get" => match args[..] {
            [key] => Ok(Op::Get { key: Key::new(key)? }),
            _ => Err(WalletError::Usage { usage: "get <key>" }),
        },
        _ => parse_colon_form(line, verb),
    }
}

/// The arguments `<from> <to> <amount>` of a transfer.
fn parse_transfer(args: &[&str]) -> Result<Op, WalletError> {
    match args {
        [from, to, amount] => {
            Ok(Op::Transfer { from: Key::new(*from)?, to: Key::new(*to)?, amount: Amount::parse(amount)? })
        }
        _ => Err(WalletError::Usage { usage: "transfer <from> <to> <amount>" }),
    }
}

/// The arguments `<threshold> <id@ip:port>...` of a reconfiguration (checked only when
/// applied, so that a refusal says what is unsafe).
fn parse_reconfigure(args: &[&str]) -> Result<Op, WalletError> {
    let usage = WalletError::Usage { usage: "reconfigure <threshold> <id@ip:port>..." };
    let Some((threshold, members)) = args.split_first() else { return Err(usage) };
    let threshold = threshold.parse().map_err(|_| usage.clone())?;
    let members = members.iter().map(|m| parse_member(m)).collect::<Option<Vec<_>>>().ok_or(usage)?;
    Ok(Op::Reconfigure(Membership { threshold, members }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wallet::testing::*;

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
            ("transfer alice bob 5", transfer("alice", "bob", "5")),
            ("TRANSFER  a\tb $0.01", transfer("a", "b", "0.01")),
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
        let usage = WalletError::Usage { usage: "transfer <from> <to> <amount>" };
        assert_eq!(parse_text("transfer alice bob"), Err(usage.clone()));
        assert_eq!(parse_text("transfer alice bob 5 6"), Err(usage));
        assert!(matches!(parse_text("transfer a:b c 5"), Err(WalletError::InvalidKey { .. })));
        assert!(parse_text("register 5").is_err(), "registering is not a plain-text command");
    }

    #[test]
    fn operations_have_documented_json_and_display_as_their_plain_text() {
        let cases = [
            (set("foo", "10"), r#"{"type":"set","key":"foo","amount":"$10"}"#, "set foo $10"),
            (get("foo"), r#"{"type":"get","key":"foo"}"#, "get foo"),
            (
                transfer("alice", "bob", "5"),
                r#"{"type":"transfer","from":"alice","to":"bob","amount":"$5"}"#,
                "transfer alice bob $5",
            ),
            (Op::Register { nonce: 8077241 }, r#"{"type":"register","nonce":8077241}"#, "register 8077241"),
        ];
        for (op, json, text) in cases {
            assert_eq!(serde_json::to_string(&op).unwrap(), json);
            assert_eq!(serde_json::from_str::<Op>(json).unwrap(), op);
            assert_eq!(op.to_string(), text);
            if !matches!(op, Op::Register { .. }) {
                assert_eq!(parse_text(text), Ok(op.clone()), "Display parses back");
            }
        }
        assert!(set("a", "1").is_write() && transfer("a", "b", "1").is_write() && !get("a").is_write());
        assert!(!Op::Register { nonce: 1 }.is_write());
        assert!(serde_json::from_str::<Op>(r#"{"type":"transfer","from":"a","amount":"$5"}"#).is_err());
    }
}
