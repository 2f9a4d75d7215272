//! The network edge: the wire format and the UDP socket.
//!
//! Every datagram is one JSON object, tagged by `"type"` (see [`Message`]), or a line of
//! plain text such as `foo:$10` for people poking a node with `nc -u`. The reader thread
//! blocks on [`UdpSocket::recv_from`], decodes each datagram and hands it to the protocol
//! thread over a crossbeam channel; malformed input is passed along as a typed
//! [`DecodeError`] so that the protocol thread can log it once and drop it. Client
//! signatures are checked on a verifier thread of their own ([`verifier`]), and floods
//! travel on a bulk channel ([`Inboxes`]), so that neither the reader nor consensus ever
//! waits behind signature checks or a flood.
//!
//! Two test hooks, both off by default: `FBA_NET_FAULTS` adds faults to outgoing datagrams,
//! e.g. `loss=0.2,dup=0.1,delay_ms=30,seed=7` (see [`Faults`]); while the file named by
//! `FBA_NET_PARTITION_FILE` exists, the node is cut off: it drops every datagram it would
//! send or receive (see [`Partition`]).

mod verifier;

pub use verifier::{check_flood, FloodCheck, Job};

use crate::auth::{self, AuthError, Opener, Sealer};
use crate::quorum::NodeId;
use crate::ratelimit::Buckets;
use crate::rng::Rng;
use crate::scp::{Statement, Value};
use crate::wallet::{Batch, Reply, Request};
use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Largest datagram a node accepts or sends (bytes); bigger ones are refused.
pub const MAX_DATAGRAM: usize = 60_000;

/// A JSON datagram.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Message {
    /// Peer to peer: an SCP statement.
    Scp {
        /// The statement; its `node` must be the peer the datagram came from.
        statement: Statement,
    },
    /// Peer to peer: client requests a node received, flooded so every node can
    /// nominate them.
    Flood {
        /// The requests.
        requests: Vec<Request>,
    },
    /// Peer to peer: the batch a value names (SCP values are digests of batches): sent
    /// by the node that created the value before its first statement naming it, and in
    /// answer to a [`Message::Fetch`].
    Value {
        /// The batch; its value is the SHA-256 of its canonical encoding.
        batch: Batch,
    },
    /// Peer to peer: "send me the batches these values name" (a statement named them and
    /// they are not here).
    Fetch {
        /// The values (digests) wanted.
        values: Vec<Value>,
    },
    /// Client to node: one request.
    Request {
        /// The request.
        request: Request,
    },
    /// Node to client: the outcome of a request.
    Reply {
        /// The replying node.
        node: NodeId,
        /// The outcome.
        reply: Reply,
    },
    /// Peer to peer: "send me your ledger from slot `from` on" (catch-up).
    CatchUp {
        /// The first slot wanted.
        from: u64,
    },
    /// Peer to peer: ledger entries answering a [`Message::CatchUp`].
    Ledger {
        /// How many slots the sender's ledger holds.
        last: u64,
        /// Consecutive entries from the slot asked for (as many as fit a datagram).
        entries: Vec<LedgerEntry>,
    },
    /// Node to client: the datagram could not be understood.
    Error {
        /// The replying node.
        node: NodeId,
        /// What was wrong.
        error: String,
    },
    /// Node to client: the node does not hear a quorum slice, so it did not take the
    /// request (nothing was applied); it hears `peers_heard` peers and needs `needed`.
    Unavailable {
        /// The replying node.
        node: NodeId,
        /// How many peers it heard from recently.
        peers_heard: u64,
        /// How many peers it needs (with itself) for one of its quorum slices.
        needed: u64,
    },
    /// Client to node: "how are you?" (answered with [`Message::StatusReply`]).
    Status {},
    /// Node to client: the answer to [`Message::Status`].
    StatusReply {
        /// The node's state.
        status: Box<NodeStatus>,
    },
}

/// What a node says about itself in a [`Message::StatusReply`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id.
    pub id: NodeId,
    /// The address it is bound to.
    pub address: String,
    /// The `fba` version it runs.
    pub version: String,
    /// Milliseconds since it started.
    pub uptime_ms: u64,
    /// The last slot it externalized (its ledger's length).
    pub slot: u64,
    /// The chain hash of its last ledger entry, in hex (all zeros for an empty ledger).
    pub ledger_hash: String,
    /// Requests waiting in its pool.
    pub pool: u64,
    /// Requests it applied per second over the last few seconds.
    pub requests_per_second: f64,
    /// Whether it hears one of its quorum slices now.
    pub quorum_available: bool,
    /// How many peers it heard from recently.
    pub peers_heard: u64,
    /// How many peers it needs (with itself) for one of its quorum slices.
    pub needed: u64,
    /// Slots behind the highest slot a peer reported (0 when level or ahead).
    pub lag: u64,
    /// Its peers, by id.
    pub peers: Vec<PeerStatus>,
    /// Its quorum set (`null` from a node that does not say).
    #[serde(default)]
    pub quorum_set: Option<crate::quorum::QuorumSet>,
}

/// One peer in a [`NodeStatus`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer's id.
    pub id: NodeId,
    /// Its address, as configured.
    pub address: String,
    /// Milliseconds since anything authenticated came from it (`null`: never).
    pub last_heard_ms: Option<u64>,
    /// The highest slot it reported having decided (`null`: none yet).
    pub slot: Option<u64>,
}

/// One ledger entry on the wire: the slot, its chain hash (hex) and its batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerEntry {
    /// The slot.
    pub slot: u64,
    /// The chain hash of the entry, in hex (see [`crate::ledger::chain_hash`]).
    pub hash: String,
    /// The slot's batch.
    pub batch: crate::wallet::Batch,
}

impl Message {
    /// Is this a node-to-node message (statement, flood, catch-up request or answer)? In
    /// keyed mode those are accepted only sealed ([`crate::auth`]).
    pub fn is_peer_message(&self) -> bool {
        matches!(
            self,
            Message::Scp { .. }
                | Message::Flood { .. }
                | Message::CatchUp { .. }
                | Message::Ledger { .. }
                | Message::Value { .. }
                | Message::Fetch { .. }
        )
    }
}

/// A decoded datagram.
#[derive(Clone, Debug, PartialEq)]
pub enum Datagram {
    /// A peer message whose authenticator verified: it comes from `peer`, whatever the
    /// datagram's source address.
    Peer {
        /// The authenticated sender.
        peer: NodeId,
        /// What it said (always a [`Message::is_peer_message`]).
        message: Message,
    },
    /// A JSON message.
    Json(Message),
    /// A plain-text line (the datagram did not start with `{`).
    Text(String),
}

/// Why a datagram was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Larger than [`MAX_DATAGRAM`].
    Oversized(usize),
    /// Empty datagram.
    Empty,
    /// Not UTF-8.
    NotUtf8,
    /// Looked like JSON but is not a valid message.
    BadJson(String),
    /// A sealed datagram whose authenticator failed, or one this node cannot check.
    Auth(AuthError),
    /// A sealed datagram whose authenticated payload is not a peer message.
    NotPeerMessage,
    /// A signed client request whose signature does not verify.
    BadSignature(String),
    /// A peer's ledger answers beyond its byte budget (see [`LedgerBudget`]).
    OverBudget(NodeId),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Oversized(n) => write!(f, "datagram of {n} bytes exceeds {MAX_DATAGRAM}"),
            DecodeError::Empty => write!(f, "empty datagram"),
            DecodeError::NotUtf8 => write!(f, "datagram is not UTF-8"),
            DecodeError::BadJson(e) => write!(f, "malformed message: {e}"),
            DecodeError::Auth(e) => write!(f, "authentication failed: {e}"),
            DecodeError::NotPeerMessage => write!(f, "sealed datagram does not carry a peer message"),
            DecodeError::BadSignature(e) => write!(f, "request signature refused: {e}"),
            DecodeError::OverBudget(peer) => write!(f, "peer {peer} sends ledger answers beyond its budget"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one datagram. Never panics, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Result<Datagram, DecodeError> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(DecodeError::Oversized(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DecodeError::Empty);
    }
    if !trimmed.starts_with('{') {
        return Ok(Datagram::Text(trimmed.to_string()));
    }
    let message =
        serde_json::from_str::<FastMessage>(trimmed).map_err(|e| DecodeError::BadJson(e.to_string()))?.0;
    Ok(Datagram::Json(message))
}

/// Decodes one datagram, opening it first if it is sealed. Never panics, whatever the bytes.
pub fn decode_with(bytes: &[u8], opener: Option<&mut Opener>) -> Result<Datagram, DecodeError> {
    decode_limited(bytes, opener, None)
}

/// [`decode_with`], refusing ledger answers beyond a peer's [`LedgerBudget`] unparsed.
pub fn decode_limited(
    bytes: &[u8],
    opener: Option<&mut Opener>,
    budget: Option<&mut LedgerBudget>,
) -> Result<Datagram, DecodeError> {
    if !auth::is_sealed(bytes) {
        return decode(bytes);
    }
    let opener = opener.ok_or(DecodeError::Auth(AuthError::NoKeys))?;
    let (peer, payload) = opener.open(bytes).map_err(DecodeError::Auth)?;
    if let Some(budget) = budget {
        if is_ledger_payload(payload) && !budget.allow(peer, payload.len()) {
            return Err(DecodeError::OverBudget(peer));
        }
    }
    match decode(payload)? {
        Datagram::Json(message) if message.is_peer_message() => Ok(Datagram::Peer { peer, message }),
        _ => Err(DecodeError::NotPeerMessage),
    }
}

/// A [`Message`] decoded as its derived decoder does, but the messages that carry
/// requests and statements without buffering them first ([`crate::tagged`]).
struct FastMessage(Message);

impl<'de> Deserialize<'de> for FastMessage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<FastMessage, D::Error> {
        crate::tagged::deserialize(d).map(FastMessage)
    }
}

impl crate::tagged::Tagged for Message {
    const EXPECTING: &'static str = "a message object";

    fn fast<'de, A: serde::de::MapAccess<'de>>(tag: &str, map: &mut A) -> Option<Result<Message, A::Error>> {
        fast_message(tag, map)
    }

    fn slow(object: serde_json::Value) -> Result<Message, serde_json::Error> {
        Message::deserialize(object)
    }
}

/// The field of the busiest messages, read straight from the object.
fn fast_message<'de, A: serde::de::MapAccess<'de>>(
    tag: &str,
    map: &mut A,
) -> Option<Result<Message, A::Error>> {
    use crate::tagged::only;
    Some(match tag {
        "request" => only(map, &["request"]).map(|request| Message::Request { request }),
        "flood" => only(map, &["requests"]).map(|requests| Message::Flood { requests }),
        "scp" => only(map, &["statement"]).map(|statement| Message::Scp { statement }),
        "value" => only(map, &["batch"]).map(|batch| Message::Value { batch }),
        "fetch" => only(map, &["values"]).map(|values| Message::Fetch { values }),
        _ => return None,
    })
}

/// Encodes a message as a datagram.
pub fn encode(message: &Message) -> Vec<u8> {
    serde_json::to_vec(message).expect("messages always serialize")
}

/// The encodings of [`Message::Flood`]s carrying `requests`, in order, each at most
/// `limit` bytes and `max_count` requests (a request too large on its own, which a node
/// never takes from a client, is left out).
pub fn encode_floods(requests: &[Request], limit: usize, max_count: usize) -> Vec<Vec<u8>> {
    const HEAD: &[u8] = br#"{"type":"flood","requests":["#;
    const TAIL: &[u8] = b"]}";
    let mut out = Vec::new();
    let mut current: Vec<u8> = HEAD.to_vec();
    let mut count = 0;
    for request in requests {
        let bytes = serde_json::to_vec(request).expect("requests always serialize");
        if HEAD.len() + bytes.len() + TAIL.len() > limit {
            continue;
        }
        if count == max_count || current.len() + 1 + bytes.len() + TAIL.len() > limit {
            current.extend_from_slice(TAIL);
            out.push(std::mem::replace(&mut current, HEAD.to_vec()));
            count = 0;
        }
        if count > 0 {
            current.push(b',');
        }
        current.extend_from_slice(&bytes);
        count += 1;
    }
    if count > 0 {
        current.extend_from_slice(TAIL);
        out.push(current);
    }
    out
}

/// The encoding of a [`Message::Value`] for a batch whose canonical encoding is `batch`
/// (the same bytes as [`encode`] gives, without encoding the batch again).
pub fn encode_value(batch: &[u8]) -> Vec<u8> {
    const HEAD: &[u8] = br#"{"type":"value","batch":"#;
    let mut out = Vec::with_capacity(HEAD.len() + batch.len() + 1);
    out.extend_from_slice(HEAD);
    out.extend_from_slice(batch);
    out.push(b'}');
    out
}

/// One datagram from the reader thread (through the verifier thread if it carried signatures).
#[derive(Debug)]
pub struct Incoming {
    /// Who sent it.
    pub from: SocketAddr,
    /// What it said, or why it could not be read.
    pub datagram: Result<Datagram, DecodeError>,
    /// Digests ([`crate::wallet::Request::digest`]) of the signed client requests in it
    /// whose signatures the verifier thread checked: the protocol thread need not check them again.
    pub verified: Vec<crate::hash::Digest>,
    /// Signed requests of a flood whose signatures failed (removed from the flood).
    pub forged: usize,
}

/// Verifies the signature of a signed client request, off the protocol thread: one
/// that fails becomes a [`DecodeError::BadSignature`] (the node answers it with an
/// error). Returns the digest of a verified request, and how many failed (0 or 1).
/// Flooded requests are checked with [`check_flood`] once pooled.
pub fn check_signatures(
    datagram: &mut Result<Datagram, DecodeError>,
    cache: &mut SignatureCache,
) -> (Vec<crate::hash::Digest>, usize) {
    if let Ok(Datagram::Json(Message::Request { request })) = datagram {
        if request.auth.is_some() {
            match cache.verify(request) {
                Ok(digest) => return (vec![digest], 0),
                Err(e) => {
                    *datagram = Err(DecodeError::BadSignature(e.to_string()));
                    return (Vec::new(), 1);
                }
            }
        }
    }
    (Vec::new(), 0)
}

/// The digests of the requests whose signatures were verified recently, so a
/// request flooded again (by several peers, or by a member repeating it on purpose) costs
/// a hash, not another Ed25519 verification. Two generations of [`SIGNATURE_CACHE`]
/// digests each: when the current one fills up, it becomes the previous one.
///
/// It also keeps each peer's **verification budget**: a peer's flood may cost at most
/// [`VERIFIES_PER_SECOND`] fresh verifications a second (burst [`VERIFY_BURST`]); beyond
/// that its flooded requests are dropped unverified (the node they came from floods its
/// own clients' requests again, so an honest peer over budget loses only time). One member
/// flooding signed junk thus costs each node a bounded share of a core.
pub struct SignatureCache {
    current: std::collections::HashSet<crate::hash::Digest>,
    previous: std::collections::HashSet<crate::hash::Digest>,
    budgets: Buckets<NodeId>,
}

impl Default for SignatureCache {
    fn default() -> SignatureCache {
        SignatureCache {
            current: Default::default(),
            previous: Default::default(),
            budgets: Buckets::new(VERIFIES_PER_SECOND, VERIFY_BURST),
        }
    }
}

/// Digests per generation of the [`SignatureCache`].
pub const SIGNATURE_CACHE: usize = 32_768;
/// Fresh signature verifications a second one peer's floods may cost.
pub const VERIFIES_PER_SECOND: f64 = 3_000.0;
/// Burst of fresh verifications one peer's floods may cost.
pub const VERIFY_BURST: f64 = 6_000.0;

impl SignatureCache {
    /// Verifies `request`'s signature unless it verified recently; its digest if valid.
    pub fn verify(
        &mut self,
        request: &crate::wallet::Request,
    ) -> Result<crate::hash::Digest, crate::wallet::SignatureError> {
        let digest = request.digest();
        if !self.seen(&digest) {
            request.verify()?;
            self.remember(digest);
        }
        Ok(digest)
    }

    /// [`SignatureCache::verify`] for a request `peer` flooded, charging a fresh
    /// verification to its budget: `Err(None)` when the budget is spent (nothing was
    /// checked), `Err(Some(_))` when the signature does not verify.
    pub fn verify_within(
        &mut self,
        request: &crate::wallet::Request,
        peer: NodeId,
    ) -> Result<crate::hash::Digest, Option<crate::wallet::SignatureError>> {
        let digest = request.digest();
        if !self.seen(&digest) {
            if !self.budgets.allow(peer, 1.0, std::time::Instant::now()) {
                return Err(None);
            }
            request.verify().map_err(Some)?;
            self.remember(digest);
        }
        Ok(digest)
    }

    fn seen(&self, digest: &crate::hash::Digest) -> bool {
        self.current.contains(digest) || self.previous.contains(digest)
    }

    fn remember(&mut self, digest: crate::hash::Digest) {
        if self.current.len() >= SIGNATURE_CACHE {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(digest);
    }
}

/// A per-peer byte budget for ledger answers, checked before they are parsed: an honest
/// peer sends them only when asked, at a rate its own limiter bounds, so a peer sending
/// far more (unsolicited offers) is refused before its megabytes of JSON cost anything.
pub struct LedgerBudget {
    peers: Buckets<NodeId>,
}

impl Default for LedgerBudget {
    fn default() -> LedgerBudget {
        LedgerBudget { peers: Buckets::new(LEDGER_BYTES_PER_SECOND, LEDGER_BURST_BYTES) }
    }
}

/// Sustained ledger-answer bytes per second accepted from one peer.
pub const LEDGER_BYTES_PER_SECOND: f64 = 2_000_000.0;
/// Burst of ledger-answer bytes accepted from one peer.
pub const LEDGER_BURST_BYTES: f64 = 4_000_000.0;

impl LedgerBudget {
    /// Whether `peer` may send a ledger answer of `bytes` now (and charges it).
    pub fn allow(&mut self, peer: NodeId, bytes: usize) -> bool {
        self.peers.allow(peer, bytes as f64, std::time::Instant::now())
    }
}

/// Does this (opened) peer payload announce a ledger answer? Messages are encoded with
/// their `type` first, so an honest one always matches; one that hides its type further in
/// is parsed normally and judged by the protocol thread.
fn is_ledger_payload(payload: &[u8]) -> bool {
    payload.starts_with(br#"{"type":"ledger""#)
}

/// Faults injected into outgoing datagrams, for tests of lossy networks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a datagram is sent twice.
    pub duplicate: f64,
    /// Upper bound of a random delay added to each datagram (reorders them).
    pub max_delay: Duration,
    /// Seed of the fault generator.
    pub seed: u64,
}

impl Faults {
    /// Parses `loss=0.2,dup=0.1,delay_ms=30,seed=7`; `None` when empty or malformed.
    pub fn parse(spec: &str) -> Option<Faults> {
        let mut f = Faults::default();
        for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part.split_once('=')?;
            match k.trim() {
                "loss" => f.loss = v.trim().parse().ok()?,
                "dup" => f.duplicate = v.trim().parse().ok()?,
                "delay_ms" => f.max_delay = Duration::from_millis(v.trim().parse().ok()?),
                "seed" => f.seed = v.trim().parse().ok()?,
                _ => return None,
            }
        }
        (f != Faults::default()).then_some(f)
    }

    /// Reads `FBA_NET_FAULTS`.
    pub fn from_env() -> Option<Faults> {
        std::env::var("FBA_NET_FAULTS").ok().and_then(|s| Faults::parse(&s))
    }
}

/// The partition test hook: the node is cut off while a given file exists. The check is
/// cached for a few milliseconds so that it costs nothing per datagram.
#[derive(Debug)]
pub struct Partition {
    path: std::path::PathBuf,
    cached: Mutex<Option<(std::time::Instant, bool)>>,
}

impl Partition {
    /// Reads `FBA_NET_PARTITION_FILE`.
    pub fn from_env() -> Option<Arc<Partition>> {
        let path = std::env::var_os("FBA_NET_PARTITION_FILE")?;
        Some(Arc::new(Partition { path: path.into(), cached: Mutex::new(None) }))
    }

    /// Is the node cut off right now?
    pub fn is_cut(&self) -> bool {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        match *cached {
            Some((at, cut)) if at.elapsed() < Duration::from_millis(20) => cut,
            _ => {
                let cut = self.path.exists();
                *cached = Some((std::time::Instant::now(), cut));
                cut
            }
        }
    }
}

/// The sending half of a node's socket, with optional fault injection.
#[derive(Clone)]
pub struct Outbox {
    socket: Arc<UdpSocket>,
    faults: Option<(Faults, Arc<Mutex<Rng>>)>,
    partition: Option<Arc<Partition>>,
    sealer: Option<Arc<Sealer>>,
}

impl Outbox {
    /// Sends a peer message's bytes to peer `peer` at `to`: sealed for it when the node has
    /// keys, as they are in development mode.
    pub fn send_peer(&self, peer: NodeId, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        match &self.sealer {
            Some(sealer) => match sealer.seal(peer, bytes) {
                Some(sealed) => self.send(to, &sealed),
                None => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("no key for peer {peer}"))),
            },
            None => self.send(to, bytes),
        }
    }

    /// Largest peer payload that still fits a datagram once sealed.
    pub fn peer_payload_limit(&self) -> usize {
        MAX_DATAGRAM - if self.sealer.is_some() { auth::OVERHEAD } else { 0 }
    }

    /// Sends `bytes` to `to`, through the fault injector if one is configured. Errors are
    /// returned for the caller to log; UDP gives no delivery guarantee anyway.
    pub fn send(&self, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        if self.partition.as_ref().is_some_and(|p| p.is_cut()) {
            return Ok(());
        }
        let Some((faults, rng)) = &self.faults else {
            return self.socket.send_to(bytes, to).map(drop);
        };
        let (drop_it, copies, delay) = {
            let mut rng = rng.lock().unwrap_or_else(|p| p.into_inner());
            let copies = if rng.chance(faults.duplicate) { 2 } else { 1 };
            let delay = faults.max_delay.mul_f64(rng.unit());
            (rng.chance(faults.loss), copies, delay)
        };
        if drop_it {
            return Ok(());
        }
        if delay.is_zero() {
            for _ in 0..copies {
                self.socket.send_to(bytes, to)?;
            }
            return Ok(());
        }
        let socket = Arc::clone(&self.socket);
        let bytes = bytes.to_vec();
        thread::spawn(move || {
            thread::sleep(delay);
            for _ in 0..copies {
                let _ = socket.send_to(&bytes, to);
            }
        });
        Ok(())
    }
}

/// Where the reader delivers what it reads, by urgency. Consensus is never queued
/// behind bulk work: the protocol thread takes everything urgent before each bit of bulk.
#[derive(Clone)]
pub struct Inboxes {
    /// Statements, ledger entries, catch-up requests, client requests, malformed input.
    pub urgent: Sender<Incoming>,
    /// Floods of client requests between peers.
    pub bulk: Sender<Incoming>,
    /// Peers whose floods are dropped on arrival, unverified.
    pub gate: FloodGate,
    /// The verifier's verdicts on flooded requests ([`Job::Flood`]).
    pub checked: Sender<FloodCheck>,
}

/// The peers whose share of the request pool is full: the protocol thread closes the gate
/// for them, and the reader drops their floods before any signature check (the pool would
/// refuse every request in them). Checking signatures a peer cannot get pooled would let
/// one member spend the node's CPU as fast as it can sign.
#[derive(Clone, Debug, Default)]
pub struct FloodGate(Arc<Mutex<Vec<NodeId>>>);

impl FloodGate {
    /// From now on, drops the floods of exactly the peers in `closed`.
    pub fn set_closed(&self, closed: Vec<NodeId>) {
        let mut peers = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if *peers != closed {
            *peers = closed;
        }
    }

    /// Whether floods from `peer` are dropped.
    pub fn is_closed(&self, peer: NodeId) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).contains(&peer)
    }
}

/// Jobs queued for the verifier thread ([`Job`]); beyond this many a client's request is
/// dropped (the client sends it again) and a flood is not pooled (its node floods it
/// again) rather than delay the reader or the protocol thread.
pub const VERIFY_QUEUE: usize = 256;

/// A bound UDP socket with its reader thread and its signature verifier thread.
pub struct Endpoint {
    /// The sending half.
    pub outbox: Outbox,
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    verifier: Option<JoinHandle<()>>,
    /// The verifier thread's queue: the protocol thread sends it [`Job::Flood`]s.
    pub jobs: Sender<Job>,
}

impl Endpoint {
    /// Binds `addr` and starts the reader thread, which sends every datagram to `inboxes`
    /// (floods to `bulk`, the rest to `urgent`), and the verifier thread (see
    /// [`verifier`]), which checks the signatures of client requests before they reach the
    /// protocol thread and of flooded requests the protocol thread pooled provisionally,
    /// so that neither reading nor consensus waits for signature checks. With `auth`
    /// (keyed mode) the reader opens sealed datagrams and outgoing peer messages are
    /// sealed.
    pub fn bind(
        addr: SocketAddr,
        inboxes: Inboxes,
        faults: Option<Faults>,
        auth: Option<(Opener, Sealer)>,
    ) -> io::Result<Endpoint> {
        let socket = Arc::new(UdpSocket::bind(addr)?);
        let (opener, sealer) = match auth {
            Some((opener, sealer)) => (Some(opener), Some(Arc::new(sealer))),
            None => (None, None),
        };
        let local = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let partition = Partition::from_env();
        let (jobs, jobs_rx) = crossbeam_channel::bounded(VERIFY_QUEUE);
        let verifier = {
            let (inboxes, checked) = (inboxes.clone(), inboxes.checked.clone());
            thread::Builder::new()
                .name("verifier".into())
                .spawn(move || verifier::verify_loop(&jobs_rx, &inboxes, &checked))?
        };
        let reader = {
            let (socket, stop, cut) = (Arc::clone(&socket), Arc::clone(&stop), partition.clone());
            let route = Router { inboxes, to_verify: jobs.clone() };
            thread::Builder::new()
                .name("udp-reader".into())
                .spawn(move || read_loop(&socket, &route, &stop, cut.as_deref(), opener))?
        };
        let faults = faults.map(|f| {
            let rng = Arc::new(Mutex::new(Rng::new(f.seed)));
            (f, rng)
        });
        Ok(Endpoint {
            outbox: Outbox { socket, faults, partition, sealer },
            local,
            stop,
            reader: Some(reader),
            verifier: Some(verifier),
            jobs,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops the reader thread (it is blocked in `recv_from`: wake it with an empty
    /// datagram to ourselves) and waits for it.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let mut wake = self.local;
        if wake.ip().is_unspecified() {
            wake.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let _ = self.outbox.socket.send_to(&[], wake);
        if let Some(handle) = self.reader.take() {
            let _ = handle.join();
        }
        if let Some(handle) = self.verifier.take() {
            let _ = self.jobs.send(Job::Stop);
            let _ = handle.join();
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Where the reader sends each decoded datagram.
struct Router {
    inboxes: Inboxes,
    to_verify: Sender<Job>,
}

impl Router {
    /// Sends `datagram` on: to the verifier if it carries client signatures, else to the
    /// protocol thread by urgency. False once the protocol thread has gone.
    fn route(&self, from: SocketAddr, datagram: Result<Datagram, DecodeError>) -> bool {
        if let Ok(Datagram::Peer { peer, message: Message::Flood { .. } }) = &datagram {
            if self.inboxes.gate.is_closed(*peer) {
                return true;
            }
        }
        if is_signed_request(&datagram) {
            // A full queue drops the datagram: the client sends its request again.
            return !matches!(
                self.to_verify.try_send(Job::Datagram(from, datagram)),
                Err(crossbeam_channel::TrySendError::Disconnected(_))
            );
        }
        let incoming = Incoming { from, datagram, verified: Vec::new(), forged: 0 };
        self.inboxes.deliver(incoming)
    }
}

impl Inboxes {
    /// Hands `incoming` to the protocol thread: floods as bulk, the rest as urgent.
    /// False once the protocol thread has gone.
    fn deliver(&self, incoming: Incoming) -> bool {
        let inbox = if is_flood(&incoming.datagram) { &self.bulk } else { &self.urgent };
        inbox.send(incoming).is_ok()
    }
}

/// Whether a datagram is a flood of client requests (from a peer, or unsealed).
fn is_flood(datagram: &Result<Datagram, DecodeError>) -> bool {
    matches!(
        datagram,
        Ok(Datagram::Json(Message::Flood { .. }) | Datagram::Peer { message: Message::Flood { .. }, .. })
    )
}

/// Whether a datagram is a signed client request (floods are checked after pooling).
fn is_signed_request(datagram: &Result<Datagram, DecodeError>) -> bool {
    matches!(datagram, Ok(Datagram::Json(Message::Request { request })) if request.auth.is_some())
}

fn read_loop(
    socket: &UdpSocket,
    route: &Router,
    stop: &AtomicBool,
    partition: Option<&Partition>,
    mut opener: Option<Opener>,
) {
    // One byte more than the limit, so that an oversized datagram is recognised.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut ledger_budget = LedgerBudget::default();
    while !stop.load(Ordering::SeqCst) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            // A datagram we sent to a closed port (a client that left, a peer that is down)
            // comes back as ICMP "port unreachable" and surfaces here as ECONNREFUSED (or
            // ECONNRESET on some systems). It says nothing about this socket: keep reading.
            Err(e)
                if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset) =>
            {
                continue
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Anything else is unexpected; never stop listening over it, but don't spin.
            Err(_) => {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if partition.is_some_and(Partition::is_cut) {
            continue;
        }
        let datagram = if n > MAX_DATAGRAM {
            Err(DecodeError::Oversized(n))
        } else {
            decode_limited(&buf[..n], opener.as_mut(), Some(&mut ledger_budget))
        };
        if !route.route(from, datagram) {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_json_and_garbage_are_told_apart() {
        assert_eq!(decode(b"foo:$10"), Ok(Datagram::Text("foo:$10".into())));
        assert_eq!(decode(b"  \n"), Err(DecodeError::Empty));
        assert_eq!(decode(&[0xff, 0xfe]), Err(DecodeError::NotUtf8));
        assert!(matches!(decode(b"{\"type\":\"scp\""), Err(DecodeError::BadJson(_))));
        assert!(matches!(decode(b"{\"type\":\"nope\"}"), Err(DecodeError::BadJson(_))));
        assert_eq!(decode(&vec![b'a'; MAX_DATAGRAM + 1]), Err(DecodeError::Oversized(MAX_DATAGRAM + 1)));
    }

    #[test]
    fn floods_are_cut_to_fit_a_datagram() {
        let key = "k".repeat(60);
        let requests: Vec<Request> = (0..500)
            .map(|i| {
                let op = crate::wallet::Op::Set {
                    key: key.parse().expect("key"),
                    amount: "$1".parse().expect("amount"),
                };
                Request::new(i, 1, op)
            })
            .collect();
        let floods = encode_floods(&requests, 4_000, 64);
        assert!(floods.len() > 500 * 60 / 4_000, "{} floods", floods.len());
        let mut seen = Vec::new();
        for bytes in &floods {
            assert!(bytes.len() <= 4_000);
            let Ok(Datagram::Json(Message::Flood { requests })) = decode(bytes) else {
                panic!("not a flood")
            };
            assert_eq!(bytes, &encode(&Message::Flood { requests: requests.clone() }));
            assert!(requests.len() <= 64);
            seen.extend(requests);
        }
        assert_eq!(seen, requests, "every request, in order");
        assert_eq!(encode_floods(&requests[..3], 4_000, 2).len(), 2, "the count cap");
        assert!(encode_floods(&requests[..1], 50, 64).is_empty(), "too large alone");
    }

    #[test]
    fn a_value_message_is_encoded_from_the_batch_bytes_alike() {
        let op = crate::wallet::Op::Get { key: "k".parse().expect("key") };
        let batch = Batch::new(vec![Request::new(1, 2, op)]);
        let bytes = encode_value(batch.encode());
        assert_eq!(bytes, encode(&Message::Value { batch: batch.clone() }));
        assert_eq!(decode(&bytes), Ok(Datagram::Json(Message::Value { batch })));
        let fetch = Message::Fetch { values: vec![Value::new([7u8; 32].to_vec())] };
        assert_eq!(decode(&encode(&fetch)), Ok(Datagram::Json(fetch.clone())));
        assert!(fetch.is_peer_message());
    }

    #[test]
    fn status_and_unavailable_messages_round_trip() {
        let status = NodeStatus {
            id: NodeId(3000),
            address: "127.0.0.1:3000".into(),
            version: "0.1.0".into(),
            uptime_ms: 1234,
            slot: 6,
            ledger_hash: "00".repeat(32),
            pool: 0,
            requests_per_second: 0.5,
            quorum_available: true,
            peers_heard: 3,
            needed: 2,
            lag: 0,
            peers: vec![PeerStatus {
                id: NodeId(3001),
                address: "127.0.0.1:3001".into(),
                last_heard_ms: None,
                slot: Some(6),
            }],
            quorum_set: None,
        };
        for message in [
            Message::Status {},
            Message::StatusReply { status: Box::new(status) },
            Message::Unavailable { node: NodeId(3000), peers_heard: 1, needed: 2 },
        ] {
            assert_eq!(decode(&encode(&message)), Ok(Datagram::Json(message.clone())));
            assert!(!message.is_peer_message());
        }
        assert_eq!(encode(&Message::Status {}), br#"{"type":"status"}"#);
        let unavailable = br#"{"type":"unavailable","node":7,"peers_heard":1,"needed":2}"#;
        assert_eq!(
            decode(unavailable),
            Ok(Datagram::Json(Message::Unavailable { node: NodeId(7), peers_heard: 1, needed: 2 }))
        );
    }

    /// Decoder fuzz: random bytes and mutations of every kind of valid message (bit flips,
    /// truncation, splices, nesting, huge numbers) never panic, and whatever decodes
    /// re-encodes to something that decodes to the same message.
    #[test]
    fn decoder_survives_random_and_mutated_datagrams() {
        let mut rng = Rng::new(0xf022);
        let seeds: Vec<Vec<u8>> = [
            r#"{"type":"request","request":{"client":7,"seq":3,"op":{"type":"deposit","key":"foo","amount":"$5"}}}"#,
            r#"{"type":"scp","statement":{"node":3001,"slot":4,"quorum_set":{"threshold":3,"validators":[3000,3001,3002,3003]},"pledges":{"type":"PREPARE","ballot":{"counter":2,"value":"ab01"},"prepared":{"counter":1,"value":"ab01"},"prepared_prime":null,"n_c":1,"n_h":1}}}"#,
            r#"{"type":"scp","statement":{"node":1,"slot":1,"quorum_set":{"threshold":1,"validators":[1],"inner_sets":[{"threshold":1,"validators":[2]}]},"pledges":{"type":"NOMINATE","voted":["00"],"accepted":[]}}}"#,
            r#"{"type":"flood","requests":[{"client":1,"seq":1,"op":{"type":"get","key":"x"}}]}"#,
            r#"{"type":"request","request":{"client":7,"seq":4,"session":2,"op":{"type":"many","ops":[{"type":"set","key":"a","amount":"$1"},{"amount":"$2","type":"transfer","from":"a","to":"b"},{"key":"b","type":"withdraw","amount":"1"}]}}}"#,
            r#"{"request":{"client":7,"seq":4,"op":{"nonce":5,"type":"register"}},"type":"request"}"#,
            r#"{"type":"value","batch":{"requests":[{"client":1,"seq":1,"op":{"type":"deposit","key":"x","amount":"$3"}}]}}"#,
            r#"{"type":"fetch","values":["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]}"#,
            r#"{"type":"catch_up","from":12}"#,
            r#"{"type":"status"}"#,
            r#"{"type":"unavailable","node":3000,"peers_heard":1,"needed":2}"#,
            r#"{"type":"ledger","last":3,"entries":[{"slot":1,"hash":"00","batch":{"requests":[]}}]}"#,
            "foo:$10",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let specials: [&[u8]; 6] =
            [b"[[[[[[[[[[[[[[[[[[[[", b"99999999999999999999999", b"-1", b"null", br"\u0000", b"{\"a\":"];
        for round in 0..100_000u32 {
            let mut bytes = seeds[round as usize % seeds.len()].clone();
            for _ in 0..1 + rng.below(4) {
                mutate(&mut rng, &mut bytes, &specials);
            }
            if round % 50 == 0 {
                bytes = (0..rng.below(200)).map(|_| rng.next_u64() as u8).collect();
            }
            if let Ok(Datagram::Json(message)) = decode(&bytes) {
                assert_eq!(decode(&encode(&message)), Ok(Datagram::Json(message)));
            }
            // The fast decoders accept exactly what the derived ones accept, alike.
            let derived = serde_json::from_slice::<Message>(&bytes).ok();
            let fast = serde_json::from_slice::<FastMessage>(&bytes).ok().map(|m| m.0);
            assert_eq!(fast, derived, "{}", String::from_utf8_lossy(&bytes));
        }
        let deep = "[".repeat(50_000);
        assert!(matches!(
            decode(format!("{{\"type\":\"flood\",\"requests\":{deep}").as_bytes()),
            Err(DecodeError::BadJson(_))
        ));
    }

    fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>, specials: &[&[u8]]) {
        let at = if bytes.is_empty() { 0 } else { rng.below(bytes.len() as u64) as usize };
        match rng.below(5) {
            0 if !bytes.is_empty() => bytes[at] ^= 1 << rng.below(8),
            1 => bytes.truncate(at),
            2 => {
                let special = specials[rng.below(specials.len() as u64) as usize];
                bytes.splice(at..at, special.iter().copied());
            }
            3 if !bytes.is_empty() => bytes[at] = b"{}[]\":,0123456789-".as_slice()[rng.below(18) as usize],
            _ => {
                let len = rng.below(8) as usize;
                bytes.drain(at..(at + len).min(bytes.len()));
            }
        }
    }

    /// Sending to a closed port makes the next `recv_from` fail with ECONNREFUSED on Linux;
    /// the reader must keep listening (it once stopped, leaving the node deaf).
    #[test]
    fn the_reader_survives_port_unreachable_errors() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (checked, _) = crossbeam_channel::unbounded();
        let inboxes = Inboxes { urgent: tx.clone(), bulk: tx, gate: FloodGate::default(), checked };
        let mut endpoint =
            Endpoint::bind("127.0.0.1:0".parse().expect("addr"), inboxes, None, None).expect("bind");
        let closed = UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        for _ in 0..3 {
            endpoint.outbox.send(closed, b"anyone?").expect("send");
        }
        std::thread::sleep(Duration::from_millis(50)); // let the ICMP errors arrive
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
        client.send_to(b"foo:$1", endpoint.local_addr()).expect("send");
        let got = rx.recv_timeout(Duration::from_secs(5)).expect("still listening");
        assert_eq!(got.datagram, Ok(Datagram::Text("foo:$1".into())));
        endpoint.shutdown();
    }

    /// Flooded signed requests: a valid one is reported with its digest, a forged one
    /// as forged, and a repeat is recognised without a second check.
    #[test]
    fn floods_keep_only_requests_whose_signatures_verify() {
        let (key, _) = crate::wallet::ClientKey::generate().expect("key");
        let op = crate::wallet::parse_text("deposit foo 5").expect("op");
        let good = key.sign(crate::wallet::Request::new(key.client_id(), 1, op.clone()).with_session(1));
        let mut forged = good.clone();
        forged.seq = 2;
        let mut cache = SignatureCache::default();
        for _ in 0..2 {
            let check = check_flood(NodeId(7), vec![good.clone(), forged.clone()], &mut cache);
            assert_eq!(check.verified, vec![(good.clone(), good.digest())]);
            assert_eq!(check.forged, vec![forged.clone()]);
            assert!(check.unchecked.is_empty());
        }
        assert!(cache.seen(&good.digest()) && !cache.seen(&forged.digest()));
        // A direct request whose signature fails becomes a refusal the node answers.
        let mut direct = Ok(Datagram::Json(Message::Request { request: forged }));
        assert_eq!(check_signatures(&mut direct, &mut cache).1, 1);
        assert!(matches!(direct, Err(DecodeError::BadSignature(_))));
    }

    #[test]
    fn fault_spec_parses_and_rejects_garbage() {
        let f = Faults::parse("loss=0.2,dup=0.1,delay_ms=30,seed=7").expect("valid");
        assert_eq!((f.loss, f.duplicate, f.max_delay, f.seed), (0.2, 0.1, Duration::from_millis(30), 7));
        assert_eq!(Faults::parse(""), None);
        assert_eq!(Faults::parse("loss=x"), None);
        assert_eq!(Faults::parse("bogus=1"), None);
    }
}
