//! Client requests, their signatures, and the replies to them.

use super::signing::{self, PublicKey, Signature, SignatureError};
use super::{Amount, Key, Op, MAX_SEQ_GAP, TEXT_CLIENT_BIT};
use crate::hash::{Digest, Sha256};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// Domain separation of the bytes a client signs.
const REQUEST_DOMAIN: &[u8] = b"fba-request-v1\0";

/// Whether `client` is a plain-text client's id (top bit set, [`TEXT_CLIENT_BIT`]):
/// those have no sessions.
pub fn is_text_client(client: u64) -> bool {
    client & TEXT_CLIENT_BIT != 0
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A client's request: the operation plus what makes it exactly-once and authentic.
///
/// JSON, unsigned (development mode):
/// `{"client":7,"seq":3,"session":12,"op":{"type":"deposit","key":"foo","amount":"$5"}}`;
/// signed, with `"auth":{"key":"<base64 of 32 bytes>","sig":"<base64 of 64 bytes>"}`
/// after `op`. `session` is omitted when 0 (no session: a register, or plain text) and
/// `auth` when absent, so a request has one encoding.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Request {
    /// The client's identifier: [`PublicKey::client_id`] of its key when signed, a random
    /// number with the top bit clear for unsigned JSON clients, and an id with the top bit
    /// set for plain-text clients.
    pub client: u64,
    /// The client's sequence number within its session; each new request uses a larger
    /// one, at most [`MAX_SEQ_GAP`] beyond the last.
    pub seq: u64,
    /// The session (from [`Outcome::Registered`]); 0 for none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub session: u64,
    /// What to do.
    #[serde(deserialize_with = "super::op::deserialize_op")]
    pub op: Op,
    /// The client's key and signature, if signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RequestAuth>,
}

/// A request's signature: the signing key (whose [`PublicKey::client_id`] must be the
/// request's client) and its Ed25519 signature of [`Request::signed_bytes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestAuth {
    /// The client's public key (base64).
    pub key: PublicKey,
    /// The signature (base64).
    pub sig: Signature,
}

/// The fields a client signs, in this fixed order.
#[derive(Serialize)]
struct SignedFields<'a> {
    client: u64,
    seq: u64,
    session: u64,
    op: &'a Op,
}

impl Request {
    /// An unsigned request with no session (a register, or plain text).
    pub fn new(client: u64, seq: u64, op: Op) -> Request {
        Request { client, seq, session: 0, op, auth: None }
    }

    /// The same request in `session`.
    pub fn with_session(mut self, session: u64) -> Request {
        self.session = session;
        self
    }

    /// What identifies a request: `(client, session, seq)`. A batch holds at most one
    /// request per id, in id order.
    pub fn id(&self) -> (u64, u64, u64) {
        (self.client, self.session, self.seq)
    }

    /// The bytes a client signs: `fba-request-v1\0` followed by the compact JSON of
    /// `{"client":…,"seq":…,"session":…,"op":…}`, fields in that order and `session`
    /// always present (the canonical form, identical on every node).
    pub fn signed_bytes(&self) -> Vec<u8> {
        let fields = SignedFields { client: self.client, seq: self.seq, session: self.session, op: &self.op };
        let mut bytes = REQUEST_DOMAIN.to_vec();
        serde_json::to_writer(&mut bytes, &fields).expect("requests hold only strings and integers");
        bytes
    }

    /// SHA-256 of [`Request::signed_bytes`] followed by the key and signature when
    /// signed: one digest per distinct signed request, for remembering which ones were
    /// verified already.
    pub fn digest(&self) -> Digest {
        let mut hasher = Sha256::new();
        hasher.update(&self.signed_bytes());
        if let Some(auth) = &self.auth {
            hasher.update(auth.key.as_bytes()).update(auth.sig.as_bytes());
        }
        hasher.finish()
    }

    /// Checks that the request is signed, that its client is its key's client id, and that
    /// the signature verifies (Ed25519, about 50 µs).
    pub fn verify(&self) -> Result<(), SignatureError> {
        let auth = self.auth.as_ref().ok_or(SignatureError::Unsigned)?;
        let key_client = auth.key.client_id();
        if key_client != self.client {
            return Err(SignatureError::WrongClient { client: self.client, key_client });
        }
        signing::verify(&auth.key, &self.signed_bytes(), &auth.sig)
    }

    /// The client the request speaks for with a signature: its client, when it carries a
    /// [`RequestAuth`] whose key has that client id. The signature itself is not checked
    /// here (see [`Request::verify`]): the wallet relies on batches being verified before
    /// they are decided ([`crate::wallet::Batch::verify_signatures`]).
    pub fn signer(&self) -> Option<u64> {
        let auth = self.auth.as_ref()?;
        (auth.key.client_id() == self.client).then_some(self.client)
    }
}

impl PartialOrd for Request {
    fn partial_cmp(&self, other: &Request) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Request {
    /// By [`Request::id`], then operation, then signature: the order of a batch.
    fn cmp(&self, other: &Request) -> Ordering {
        (self.id(), &self.op, &self.auth).cmp(&(other.id(), &other.op, &other.auth))
    }
}

/// The answer to a [`Request`].
///
/// JSON: `{"client":7,"seq":3,"session":12,"outcome":{"status":"ok","key":"foo","balance":"$35"}}`
/// (`session` omitted when 0).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reply {
    /// The requesting client.
    pub client: u64,
    /// The request's sequence number.
    pub seq: u64,
    /// The request's session.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub session: u64,
    /// What happened.
    pub outcome: Outcome,
}

impl Reply {
    /// The reply to `request`.
    pub fn to(request: &Request, outcome: Outcome) -> Reply {
        Reply { client: request.client, seq: request.seq, session: request.session, outcome }
    }

    /// Whether this is the reply to `request` (same client, session and seq).
    pub fn answers(&self, request: &Request) -> bool {
        (self.client, self.session, self.seq) == request.id()
    }
}

/// What applying a request did.
///
/// JSON: an object whose `status` is `ok`, `transferred`, `registered`,
/// `insufficient_funds`, `no_such_wallet`, `overflow`, `not_owner`, `same_wallet`,
/// `duplicate`, `bad_seq`, `session_expired`, `reconfigured` or `configuration_refused`,
/// plus the variant's fields.
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
    /// A withdrawal or transfer larger than the balance; nothing changed.
    InsufficientFunds {
        /// The wallet.
        key: Key,
        /// Its (unchanged) balance.
        balance: Amount,
        /// The amount asked for.
        amount: Amount,
    },
    /// A withdrawal from, transfer from or to, or read of a wallet that does not exist.
    NoSuchWallet {
        /// The missing wallet.
        key: Key,
    },
    /// A deposit or transfer that would take the balance above [`Amount::MAX`]; nothing
    /// changed.
    Overflow {
        /// The wallet.
        key: Key,
        /// Its (unchanged) balance.
        balance: Amount,
        /// The amount offered.
        amount: Amount,
    },
    /// The request's session already had a request with a larger `seq` applied; this one
    /// was not.
    Duplicate {
        /// The session's last applied sequence number.
        last_seq: u64,
    },
    /// A transfer done; both balances afterwards.
    Transferred {
        /// The wallet debited.
        from: Key,
        /// Its balance afterwards.
        from_balance: Amount,
        /// The wallet credited.
        to: Key,
        /// Its balance afterwards.
        to_balance: Amount,
    },
    /// A session opened (or, for a retransmitted register, the one already opened).
    Registered {
        /// The session id, to put in the client's next requests.
        session: u64,
    },
    /// A set, withdrawal or transfer out of a wallet owned by another client's key (or by
    /// a key, for an unsigned request); nothing changed.
    NotOwner {
        /// The wallet.
        key: Key,
    },
    /// A transfer from a wallet to itself; nothing changed.
    SameWallet {
        /// The wallet.
        key: Key,
    },
    /// The request names a session the wallet does not hold (never opened, or evicted),
    /// or no session at all; it was not applied and never will be. Register a new session.
    SessionExpired {
        /// The session the request named (0: none).
        session: u64,
    },
    /// The request's `seq` is more than [`MAX_SEQ_GAP`] beyond its session's last; it was
    /// not applied and nothing was recorded.
    BadSeq {
        /// The session's last applied sequence number.
        last_seq: u64,
    },
    /// A reconfiguration applied: from the next slot on, the cluster is `threshold` of
    /// `members`.
    Reconfigured {
        /// The new threshold.
        threshold: u32,
        /// The new members' ids.
        members: Vec<u64>,
    },
    /// A reconfiguration refused (unsafe, malformed, or not allowed); nothing changed.
    ConfigurationRefused {
        /// Why.
        reason: String,
    },
    /// The outcomes of a `many` request's operations ([`super::Op::Many`]), in order.
    Many {
        /// One outcome per operation.
        outcomes: Vec<Outcome>,
    },
}

impl Outcome {
    /// Whether the request succeeded (`ok`, `transferred`, `registered`, `reconfigured`,
    /// or `many` with every operation succeeding).
    pub fn is_ok(&self) -> bool {
        match self {
            Outcome::Ok { .. }
            | Outcome::Transferred { .. }
            | Outcome::Registered { .. }
            | Outcome::Reconfigured { .. } => true,
            Outcome::Many { outcomes } => outcomes.iter().all(Outcome::is_ok),
            _ => false,
        }
    }

    /// The session a register opened, if this is [`Outcome::Registered`].
    pub fn registered_session(&self) -> Option<u64> {
        match self {
            Outcome::Registered { session } => Some(*session),
            _ => None,
        }
    }
}

/// What an expired session's client should do.
const REGISTER: &str = "register a new session (fba_client does this itself)";

impl fmt::Display for Outcome {
    /// One line: `OK foo=$30`, `OK alice=$5 bob=$15`, `OK registered session 12`, or
    /// `ERROR <reason>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok { key, balance } => write!(f, "OK {key}={balance}"),
            Outcome::Transferred { from, from_balance, to, to_balance } => {
                write!(f, "OK {from}={from_balance} {to}={to_balance}")
            }
            Outcome::Registered { session } => write!(f, "OK registered session {session}"),
            Outcome::InsufficientFunds { key, balance, amount } => {
                write!(f, "ERROR insufficient funds: {key} has {balance}, cannot withdraw {amount}")
            }
            Outcome::NoSuchWallet { key } => write!(f, "ERROR no such wallet: {key}"),
            Outcome::Overflow { key, balance, amount } => write!(
                f,
                "ERROR overflow: {key} has {balance}, depositing {amount} would exceed the maximum {}",
                Amount::MAX
            ),
            Outcome::NotOwner { key } => {
                write!(f, "ERROR not owner: {key} belongs to another key; only its owner may debit or set it")
            }
            Outcome::SameWallet { key } => write!(f, "ERROR same wallet: cannot transfer from {key} to itself"),
            Outcome::Duplicate { last_seq } => {
                write!(f, "ERROR duplicate request: this client's newer request {last_seq} was already applied")
            }
            Outcome::BadSeq { last_seq } => write!(
                f,
                "ERROR bad sequence number: more than {MAX_SEQ_GAP} beyond this session's last request {last_seq}"
            ),
            Outcome::SessionExpired { session: 0 } => {
                write!(f, "ERROR session expired: the request names no session; {REGISTER}")
            }
            Outcome::SessionExpired { .. } => write!(f, "ERROR session expired: {REGISTER}"),
            Outcome::Reconfigured { threshold, members } => {
                let ids: Vec<String> = members.iter().map(u64::to_string).collect();
                write!(f, "OK reconfigured: {threshold} of {{{}}} from the next slot", ids.join(", "))
            }
            Outcome::ConfigurationRefused { reason } => write!(f, "ERROR configuration refused: {reason}"),
            Outcome::Many { outcomes } => {
                let list: Vec<String> = outcomes.iter().map(Outcome::to_string).collect();
                write!(f, "{} results: {}", outcomes.len(), list.join("; "))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wallet::testing::*;

    fn line(outcome: Outcome) -> String {
        Reply { client: 1, seq: 1, session: 0, outcome }.to_string()
    }

    #[test]
    fn replies_render_as_one_clear_line() {
        assert_eq!(line(Outcome::Ok { key: key("foo"), balance: dollars("30") }), "OK foo=$30");
        assert_eq!(
            line(Outcome::InsufficientFunds {
                key: key("foo"),
                balance: dollars("5"),
                amount: dollars("10")
            }),
            "ERROR insufficient funds: foo has $5, cannot withdraw $10"
        );
        assert_eq!(line(Outcome::NoSuchWallet { key: key("foo") }), "ERROR no such wallet: foo");
        assert_eq!(
            line(Outcome::Overflow { key: key("foo"), balance: Amount::MAX, amount: dollars("0.50") }),
            "ERROR overflow: foo has $1000000000000, depositing $0.50 would exceed the maximum $1000000000000"
        );
        assert_eq!(
            line(Outcome::Duplicate { last_seq: 4 }),
            "ERROR duplicate request: this client's newer request 4 was already applied"
        );
    }

    #[test]
    fn the_new_outcomes_render_as_one_clear_line() {
        let transferred = Outcome::Transferred {
            from: key("alice"),
            from_balance: dollars("5"),
            to: key("bob"),
            to_balance: dollars("15"),
        };
        let cases = [
            (transferred, "OK alice=$5 bob=$15"),
            (Outcome::Registered { session: 12 }, "OK registered session 12"),
            (
                Outcome::NotOwner { key: key("foo") },
                "ERROR not owner: foo belongs to another key; only its owner may debit or set it",
            ),
            (Outcome::SameWallet { key: key("foo") }, "ERROR same wallet: cannot transfer from foo to itself"),
            (
                Outcome::SessionExpired { session: 3 },
                "ERROR session expired: register a new session (fba_client does this itself)",
            ),
            (
                Outcome::SessionExpired { session: 0 },
                "ERROR session expired: the request names no session; register a new session (fba_client does this itself)",
            ),
            (
                Outcome::BadSeq { last_seq: 7 },
                "ERROR bad sequence number: more than 1000 beyond this session's last request 7",
            ),
        ];
        for (outcome, text) in cases {
            let ok = text.starts_with("OK");
            assert_eq!(outcome.is_ok(), ok, "{text}");
            assert_eq!(line(outcome), text);
        }
        assert_eq!(Outcome::Registered { session: 4 }.registered_session(), Some(4));
        assert_eq!(Outcome::SessionExpired { session: 4 }.registered_session(), None);
    }

    #[test]
    fn requests_and_replies_have_documented_json() {
        let req = request(7, 3, deposit("foo", "5"));
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(json, r#"{"client":7,"seq":3,"op":{"type":"deposit","key":"foo","amount":"$5"}}"#);
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), req);
        let req = req.with_session(12);
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"client":7,"seq":3,"session":12,"op":{"type":"deposit","key":"foo","amount":"$5"}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), req);
        let reply = Reply::to(&req, Outcome::Ok { key: key("foo"), balance: dollars("35") });
        assert!(reply.answers(&req) && !reply.answers(&req.clone().with_session(13)));
        let json = serde_json::to_string(&reply).unwrap();
        assert_eq!(
            json,
            r#"{"client":7,"seq":3,"session":12,"outcome":{"status":"ok","key":"foo","balance":"$35"}}"#
        );
        assert_eq!(serde_json::from_str::<Reply>(&json).unwrap(), reply);
        let old = r#"{"client":7,"seq":3,"outcome":{"status":"ok","key":"foo","balance":"$35"}}"#;
        assert_eq!(serde_json::from_str::<Reply>(old).unwrap().session, 0);
        let refused =
            Outcome::InsufficientFunds { key: key("a"), balance: dollars("1"), amount: dollars("2") };
        assert_eq!(
            serde_json::to_string(&refused).unwrap(),
            r#"{"status":"insufficient_funds","key":"a","balance":"$1","amount":"$2"}"#
        );
        let duplicate = serde_json::to_string(&Outcome::Duplicate { last_seq: 2 }).unwrap();
        assert_eq!(duplicate, r#"{"status":"duplicate","last_seq":2}"#);
    }

    #[test]
    fn the_new_outcomes_have_snake_case_statuses() {
        let cases = [
            (Outcome::Registered { session: 5 }, r#"{"status":"registered","session":5}"#),
            (Outcome::SessionExpired { session: 5 }, r#"{"status":"session_expired","session":5}"#),
            (Outcome::BadSeq { last_seq: 5 }, r#"{"status":"bad_seq","last_seq":5}"#),
            (Outcome::NotOwner { key: key("a") }, r#"{"status":"not_owner","key":"a"}"#),
            (Outcome::SameWallet { key: key("a") }, r#"{"status":"same_wallet","key":"a"}"#),
            (
                Outcome::Transferred {
                    from: key("a"),
                    from_balance: dollars("1"),
                    to: key("b"),
                    to_balance: dollars("2"),
                },
                r#"{"status":"transferred","from":"a","from_balance":"$1","to":"b","to_balance":"$2"}"#,
            ),
        ];
        for (outcome, json) in cases {
            assert_eq!(serde_json::to_string(&outcome).unwrap(), json);
            assert_eq!(serde_json::from_str::<Outcome>(json).unwrap(), outcome);
        }
    }

    #[test]
    fn signed_bytes_are_the_domain_and_the_canonical_fields() {
        let req = request(7, 3, get("foo"));
        let expected = b"fba-request-v1\0{\"client\":7,\"seq\":3,\"session\":0,\"op\":{\"type\":\"get\",\"key\":\"foo\"}}";
        assert_eq!(req.signed_bytes(), expected.to_vec());
        let in_session = req.clone().with_session(2);
        assert_ne!(in_session.signed_bytes(), req.signed_bytes());
        assert_ne!(in_session.digest(), req.digest());
        assert_eq!(req.digest(), crate::hash::sha256(expected), "unsigned: the digest of the signed bytes");
        let (key, _) = crate::wallet::ClientKey::generate().unwrap();
        let signed = key.sign(req.clone());
        let mut other_sig = signed.clone();
        other_sig.auth.as_mut().unwrap().sig = Signature::from_bytes([0; 64]);
        assert_ne!(signed.digest(), other_sig.digest());
        assert_eq!(signed.signer(), Some(key.client_id()));
        assert_eq!(req.signer(), None);
        let mut wrong_client = signed;
        wrong_client.client = 7;
        assert_eq!(wrong_client.signer(), None, "a key speaks only for its own client id");
    }

    #[test]
    fn requests_order_by_client_session_and_seq() {
        let mut requests = [
            request(2, 1, get("a")),
            request(1, 5, get("a")).with_session(9),
            request(1, 7, get("a")).with_session(3),
            request(1, 1, get("b")),
            request(1, 1, get("a")),
        ];
        requests.sort();
        let ids: Vec<_> = requests.iter().map(Request::id).collect();
        assert_eq!(ids, [(1, 0, 1), (1, 0, 1), (1, 3, 7), (1, 9, 5), (2, 0, 1)]);
        assert_eq!(requests[0].op, get("a"));
        assert!(is_text_client(TEXT_CLIENT_BIT | 5) && !is_text_client(5));
    }
}
