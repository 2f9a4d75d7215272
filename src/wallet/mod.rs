//! The replicated state machine: wallets (username → balance, and who owns them) and the
//! requests that change them.
//!
//! Everything here is pure and deterministic: no I/O, no clocks, no randomness (except
//! [`ClientKey::generate`], which only clients call), no hash maps whose iteration order
//! leaks into results. Every replica that applies the same sequence of [`Batch`]es (one per
//! SCP slot) to the same starting [`Wallet`] ends with the same balances, owners and
//! sessions and produces the same [`Reply`]s, byte for byte.
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
//! subtracts, [`Op::Transfer`] moves money between two existing wallets atomically, and
//! [`Op::Get`] reads; reads go through consensus like writes, so they are linearizable.
//! [`Op::Register`] opens a session (below). Refusals (withdrawing or transferring more
//! than the balance, touching a missing wallet, growing a balance above [`Amount::MAX`],
//! debiting a wallet one does not own) are decided inside the state machine and are
//! therefore identical on every replica. A refused operation changes no balance but is
//! still an applied request: its [`Reply`] is remembered like any other.
//!
//! # Owners and signed requests
//!
//! A client may hold an Ed25519 key pair ([`ClientKey`]); its client id is derived from
//! the public key ([`PublicKey::client_id`]: 63 bits of a SHA-256, top bit clear) and its
//! requests carry a [`RequestAuth`] (the key and a signature over
//! [`Request::signed_bytes`]). A wallet created by a signed request (a set or a deposit
//! that creates it) is *owned* by the signer: only its owner may set it, withdraw from it
//! or transfer out of it ([`Outcome::NotOwner`] otherwise, and nothing changes); anyone
//! may deposit into it, transfer into it or read it. A wallet created by an unsigned
//! request (development mode, plain text) is unowned and accepts anyone. Owners are part
//! of the replicated state but not of the database file, whose shape stays the
//! assignment's `{"foo": "$30", "bar": "$10"}`: they are rebuilt by replaying the ledger.
//!
//! The state machine does not verify signatures itself (an Ed25519 verification costs
//! about 50 µs, too much to repeat for every request of every replayed slot). It trusts a
//! request's [`RequestAuth`] only when the key's client id is the request's client
//! ([`Request::signer`]), and relies on value validation: a batch is a valid slot value
//! only if [`Batch::verify_signatures`] accepts it, so a batch carrying a forged or
//! altered signed request is refused as a whole and never decided. Nodes also verify each
//! request before pooling it, and may skip the second verification of requests they
//! already checked, by [`Request::digest`] ([`Batch::verify_signatures_skipping`]). A
//! node with peer keys requires every request to be signed (`require = true`), so there a
//! forged request never reaches the wallet: a Byzantine member that relays requests can
//! drop them but not alter them, nor invent requests in another client's name.
//!
//! # Exactly-once: sessions
//!
//! Exactly-once follows the rule that makes eviction safe (Raft §6.3, TigerBeetle's
//! client sessions): a request the wallet can no longer prove is new is refused, never
//! applied again.
//!
//! * A JSON client first registers: [`Op::Register`] with a random nonce opens a session
//!   and answers [`Outcome::Registered`] with its id. Session ids are the index of the
//!   registering request among all applied requests, so they only grow: an old session
//!   can never pass for a new one. A repeated register with the same nonce from the same
//!   client (a retransmission) returns the same session while it is alive. A client may
//!   hold several sessions (e.g. two processes sharing a key file).
//! * Every later request names its session. The wallet keeps, per session, the last
//!   applied `seq` and its reply: the same `seq` gets the remembered reply again without
//!   being re-applied (a retry, or the same request nominated by two nodes), a smaller one
//!   gets [`Outcome::Duplicate`], one more than [`MAX_SEQ_GAP`] beyond the last gets
//!   [`Outcome::BadSeq`] and is not recorded (so a forged far-ahead `seq` cannot lock the
//!   session out), and any other larger one is applied.
//! * A request naming a session the wallet does not hold (never opened, or evicted) gets
//!   [`Outcome::SessionExpired`] and is never applied; so does a JSON request naming no
//!   session. The client must register again and decide itself whether its in-flight
//!   request took effect (`fba_client` reports the error; it never resends automatically).
//! * The table holds at most [`DEFAULT_SESSION_LIMIT`] sessions (configurable); when a new
//!   one finds it full, the session whose last applied request is oldest is evicted. The
//!   wallet counts applied requests, so "oldest" is decided identically on every replica
//!   (no clock, no hash-map order).
//!
//! **Plain text** (`nc`) has no sessions: the node gives each line the client id of its
//! source address with the top bit set ([`TEXT_CLIENT_BIT`]) and its arrival time in
//! microseconds as `seq`, and each such request is applied as a new one (nc never
//! retransmits, so there is no exactly-once across retransmissions). The wallet still
//! remembers each text client's last `seq` in the same bounded table, so a copy of a text
//! request that a peer pools again after it was applied is answered from the cache; once
//! a text client is evicted, its requests at or below the largest evicted text `seq` are
//! refused as expired rather than applied again.
//!
//! **Forgery.** With peer keys every request is signed, so only its client can open a
//! session, advance it or act in its name. In development mode (no keys, loopback only)
//! requests are not authenticated and anyone may write a request naming any client and
//! session; the damage is bounded: such a request cannot debit an owned wallet (only a
//! signature makes one the owner), cannot move a session more than [`MAX_SEQ_GAP`] ahead,
//! and an evicted or replaced session is refused, never replayed.
//!
//! # Batches
//!
//! A [`Batch`] is the value of one SCP slot. Its requests are always sorted by
//! `(client, session, seq)` ([`Request::id`]), unique per id, and capped at
//! [`MAX_BATCH_REQUESTS`] requests and [`MAX_BATCH_BYTES`] encoded bytes. [`Batch::encode`]
//! is compact JSON and [`Batch::decode`] accepts only that exact canonical encoding, so
//! one batch has exactly one byte string and no two different byte strings mean the same
//! batch. [`Batch::combine`] merges candidate batches (SCP's combine step)
//! deterministically.
//!
//! # Plain text
//!
//! For `nc` users, [`parse_text`] reads `foo:$10`, `set foo 10`, `deposit foo $5`,
//! `withdraw foo 5`, `transfer alice bob 5` and `get foo`; [`parse_text_list`] reads the
//! assignment's comma-separated `foo:$10, bar:$30`. A [`Reply`] displays as `OK foo=$30`
//! or `ERROR <reason>`, and [`WalletError::reply_text`] renders a parse error the same way.

mod amount;
mod batch;
mod error;
mod image;
pub mod membership;
mod op;
mod request;
mod session;
mod signing;
mod state;
pub mod table;
#[cfg(test)]
mod testing;

pub use amount::{Amount, Key};
pub use batch::{Batch, BatchSignatureError};
pub use error::{AmountProblem, BatchProblem, KeyProblem, WalletError};
pub use image::Image;
pub use op::{parse_text, parse_text_list, Op, Ops};
pub use request::{is_text_client, Outcome, Reply, Request, RequestAuth};
pub use signing::{ClientKey, EncodingError, KeyError, PublicKey, Signature, SignatureError};
pub use state::{Admission, Wallet};

/// Cents in a dollar.
pub(crate) const CENTS_PER_DOLLAR: u64 = 100;

/// The largest amount, in cents: $1,000,000,000,000.00 (10¹⁴ cents, below 2⁵³).
pub const MAX_AMOUNT_CENTS: u64 = 100_000_000_000_000;

// Every amount, and the sum of any two, is exact as an IEEE double.
const _: () = assert!(2 * MAX_AMOUNT_CENTS < 1 << 53);

/// The most characters (Unicode scalar values) a wallet name may have.
pub const MAX_KEY_CHARS: usize = 64;

/// The most requests one [`Batch`] may hold.
pub const MAX_BATCH_REQUESTS: usize = 512;

/// The most bytes the encoding of one [`Batch`] may have. SCP statements name a batch by
/// its digest, and the batch itself travels alone (a `value` message, or one entry of a
/// catch-up answer), so it only has to fit one datagram with its envelope and
/// authenticator ([`crate::net::MAX_DATAGRAM`]).
pub const MAX_BATCH_BYTES: usize = 48 * 1024;

// A batch in its `value` message (or a catch-up answer), sealed, fits a datagram.
const _: () = assert!(MAX_BATCH_BYTES + 1024 + crate::auth::OVERHEAD <= crate::net::MAX_DATAGRAM);

/// How many sessions (registered ones and plain-text clients) a [`Wallet`] holds by
/// default.
pub const DEFAULT_SESSION_LIMIT: usize = 65_536;

/// How far beyond its session's last applied `seq` a request's `seq` may be
/// ([`Outcome::BadSeq`] beyond that).
pub const MAX_SEQ_GAP: u64 = 1_000;

/// Most operations one `many` request ([`Op::Many`]) may carry. Its size is bounded too:
/// a request must fit in a quarter of a slot's batch ([`MAX_REQUEST_BYTES`]).
pub const MAX_MANY_OPS: usize = 256;

/// Largest encoded request a node takes from a client: a quarter of a slot's batch, the
/// share a peer's requests get in a four-node cluster's proposals, so that any node can
/// propose it (12 KiB: a `many` request of 256 short operations).
pub const MAX_REQUEST_BYTES: usize = MAX_BATCH_BYTES / 4;

/// The bit set in the client ids of plain-text clients (which have no sessions); ids
/// derived from keys ([`PublicKey::client_id`]) and drawn by JSON clients keep it clear.
pub const TEXT_CLIENT_BIT: u64 = 1 << 63;

/// How much of an offending input an error message quotes.
pub(crate) const QUOTE_CHARS: usize = 40;
