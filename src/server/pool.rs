//! The pool of pending requests, and how a node fills its proposals from it fairly.
//!
//! Every request a node has not yet seen applied waits here, keyed by [`Request::id`]
//! (`(client, session, seq)`), until a decided slot carries it. Each pending request
//! remembers its **source**: the node it entered the cluster through, as seen from here
//! ([`Source::Client`] when a client sent it to this node, [`Source::Peer`] when a peer
//! flooded it). A request that arrives both ways keeps the source it arrived by first.
//!
//! # Why fairness has to be designed in
//!
//! Client requests are not scarce: in development mode anyone may write a request in any
//! client's name, and with keys anyone may make as many client keys as they like. A pool
//! that proposes its head in id order therefore belongs to whoever picks the smallest ids:
//! a Byzantine member flooding requests of clients 1, 2, 3… kept every real request out
//! of dozens of consecutive slots and filled the pool until real clients were told the
//! node is busy. The rules below take id order out of every decision that matters, and
//! give each node a client entered through a bounded share of the pool and of each batch,
//! whatever it sends (stellar-core's transaction queue makes the same choices: one
//! pending transaction per account, a bounded queue, shuffled ties).
//!
//! # The rules
//!
//! * **Quotas.** The pool holds at most `capacity` requests ([`crate::server::MAX_POOL`]),
//!   and each source at most `capacity / (peers + 1)`: every peer, and this node's own
//!   clients together, get the same share, so the shares add up to the whole pool and
//!   none can take another's. Each client may have at most [`CLIENT_QUOTA`] requests
//!   pending (over all its sessions and sources): a well-behaved client has one in flight
//!   at a time, and a burst of plain-text lines a few. A request over a quota is not
//!   pooled: a peer's is dropped silently (its node floods it again later), this node's
//!   own client is told the node is busy ([`Full`]) and retries.
//! * **Few new sessions per peer.** Each peer may have at most [`PEER_REGISTER_QUOTA`]
//!   registers pending. A register is the costliest request a stranger can make: it
//!   comes with a key nobody has seen (a signature check nothing can skip), it joins a
//!   batch that every statement of the slot carries, and applying it grows the bounded
//!   session table, whose least recent entry it evicts. A real client registers once per
//!   identity and then sends many requests, so a node's clients open sessions slowly;
//!   a peer flooding registers of ever new keys is opening sessions for nobody. Its
//!   registers beyond the quota are dropped unverified, and an honest peer's own clients
//!   still get theirs decided: it floods them again ([`Pool::stale_for_reflood`]) and
//!   proposes them itself when it leads. This node's own clients have no such quota.
//! * **Fair batches** ([`Pool::next_batch`]). A proposal is filled round-robin: one request
//!   from each source in turn, and within a source one request from each of its clients
//!   in turn, until the batch is full by count or bytes. A client belongs to the source of
//!   its smallest pending id, and its own requests go in id order, oldest session and
//!   lowest `seq` first (the order its session must apply them in). A request too large
//!   for what is left of the batch ends its client's turn for this batch (a later `seq`
//!   of the same session must not overtake it), and the turn passes to the next request.
//! * **A peer gets its share, not the leftovers.** Requests a peer flooded take at most
//!   `1 / (peers + 1)` of a batch, by count (rounded up) and by bytes, per peer, even when nothing else is
//!   pending; this node's own clients may take whatever is left. The cost of a slot grows
//!   with its batch and every client in the slot waits for it: a peer that could fill the
//!   batches honest nodes propose would decide how long everyone else's requests take.
//!   Each node proposes its own clients' requests in full when it leads, so a node whose
//!   clients send far more than the others still gets them decided, at a quarter of a
//!   batch per slot in a four-node cluster when another node leads and a full batch when
//!   it does.
//! * **No order an attacker can choose.** The order of the sources within each round, and
//!   of the clients within each source, is a permutation drawn from a hash of the slot
//!   seed (the previous ledger hash and the slot number, known to every node only once
//!   the previous slot is decided) and the source's or client's id. A client id wins the
//!   first place in one slot and not the next; no id always wins. Given the pool and the
//!   seed, the batch is fully determined.
//! * **Only what is still to do.** After each applied slot, requests the wallet no longer
//!   admits as new (applied, or never to be applied) leave the pool
//!   ([`Pool::retain_new`]); only requests this node's own clients sent are flooded again
//!   ([`Pool::stale_for_reflood`]), so a peer's flood is never amplified.
//!
//! # What one Byzantine member can and cannot do
//!
//! It **can** fill its own share of every honest pool (a quarter in a four-node cluster)
//! with requests of invented clients, and so take at most one request in every round of
//! an honest node's proposal, and at most a quarter of it in a four-node cluster, however
//! little the others send. It can
//! keep those requests pending only until they are applied, which costs it their
//! execution in the ledger. It can also speak to an honest node as a client, with as
//! many client ids as it likes; those compete only inside that node's share for its
//! clients, one request per client per round, like any client's.
//!
//! It **cannot** push the other sources' requests out of the pool (its quota is its own),
//! cannot make a proposal leave out a source that has requests pending (every source gets
//! a turn in each round), cannot make a real client's requests wait behind its own by
//! choosing small ids (the order is drawn per slot), and cannot make honest nodes flood
//! its requests again. What it nominates as a leader is its own business: the batch a
//! slot decides combines the leaders' candidates, which is outside this module.

use crate::hash::sha256;
use crate::quorum::NodeId;
use crate::wallet::{Batch, Op, Request};
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// What identifies a pending request: [`Request::id`], `(client, session, seq)`.
pub(super) type Id = (u64, u64, u64);

/// Most requests one client may have pending (over all its sessions and sources).
pub(super) const CLIENT_QUOTA: usize = 4;
/// Most registers one peer may have pending (see the module docs): a peer's flooded
/// registers take at most this many places in any batch this node proposes.
pub(super) const PEER_REGISTER_QUOTA: usize = 4;
/// A pending request of this node's own client is flooded again after this long (its
/// first flood may have been lost).
pub(super) const REFLOOD_AFTER: Duration = Duration::from_secs(1);
/// Most requests flooded again per call of [`Pool::stale_for_reflood`].
const REFLOOD_MAX: usize = crate::wallet::MAX_BATCH_REQUESTS;
/// Bytes of an empty batch's encoding, `{"requests":[]}`.
const BATCH_FRAME: usize = 15;
/// Hash salts keeping the permutation of sources apart from that of clients.
const SALT_OWN: u64 = 0x6f77_6e00;
const SALT_PEER: u64 = 0x7065_6572;
const SALT_CLIENT: u64 = 0x636c_6965;

/// The node a pending request entered the cluster through, as seen from this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Source {
    /// A client sent it to this node.
    Client,
    /// This peer flooded it to us.
    Peer(NodeId),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Client => write!(f, "own clients"),
            Source::Peer(peer) => write!(f, "peer {peer}"),
        }
    }
}

/// Why a request was not pooled: a quota is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Full {
    /// The whole pool is full.
    Pool,
    /// The request's source holds its whole share of the pool.
    Source(Source),
    /// The client has [`CLIENT_QUOTA`] requests pending.
    Client(u64),
    /// The peer has [`PEER_REGISTER_QUOTA`] registers pending.
    Registers(NodeId),
}

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Full::Pool => write!(f, "node busy: too many pending requests"),
            Full::Source(source) => {
                write!(f, "node busy: too many pending requests from {source}")
            }
            Full::Client(client) => {
                write!(f, "node busy: client {client} already has {CLIENT_QUOTA} requests pending")
            }
            Full::Registers(peer) => {
                write!(f, "node busy: peer {peer} already has {PEER_REGISTER_QUOTA} registers pending")
            }
        }
    }
}

impl std::error::Error for Full {}

/// What [`Pool::admit`] did with a request it accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Admitted {
    /// Newly pooled.
    Added,
    /// Already pending (a retransmission, or a copy from another node); nothing changed.
    Known,
    /// Another request with the same id is pending, its signature still unchecked: this
    /// one should be checked too (the first may be an altered copy).
    Contested,
}

/// One pending request.
#[derive(Clone, Debug)]
struct Pending {
    request: Request,
    source: Source,
    /// When it was last flooded (for this node's own clients' requests).
    flooded: Instant,
    /// Bytes of its compact JSON, as a batch encodes it.
    bytes: usize,
    /// Whether its signature (if any) has been checked; an unchecked request counts
    /// against every quota but goes in no batch.
    checked: bool,
}

/// Pending requests with per-source and per-client quotas (see the module docs). Pure:
/// no I/O, and the time is passed in.
#[derive(Debug)]
pub(super) struct Pool {
    entries: BTreeMap<Id, Pending>,
    /// Pending requests per source (sources with none are absent).
    per_source: BTreeMap<Source, usize>,
    /// Pending registers per peer (peers with none are absent).
    registers: BTreeMap<NodeId, usize>,
    capacity: usize,
    source_quota: usize,
    /// The peers and this node's own clients: `peers + 1`.
    sources: usize,
}

impl Pool {
    /// A pool of at most `capacity` requests for a node with `peers` peers: each peer and
    /// the node's own clients may hold `capacity / (peers + 1)` of them (at least one).
    pub(super) fn new(capacity: usize, peers: usize) -> Pool {
        let sources = peers.saturating_add(1);
        let source_quota = (capacity / sources).max(1);
        Pool {
            entries: BTreeMap::new(),
            per_source: BTreeMap::new(),
            registers: BTreeMap::new(),
            capacity,
            source_quota,
            sources,
        }
    }

    /// The node now has `peers` peers (a reconfiguration): the shares of the pool and of
    /// a batch are recomputed; pending requests stay, each with its source.
    pub(super) fn set_peers(&mut self, peers: usize) {
        self.sources = peers.saturating_add(1);
        self.source_quota = (self.capacity / self.sources).max(1);
    }

    /// How many requests are pending.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no request is pending.
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the request with this id is pending.
    pub(super) fn contains(&self, id: &Id) -> bool {
        self.entries.contains_key(id)
    }

    /// Whether `client` has a request pending.
    pub(super) fn has_client(&self, client: u64) -> bool {
        self.client_entries(client).next().is_some()
    }

    /// Pending requests per source, for status lines (sources with none left out).
    pub(super) fn per_source(&self) -> impl Iterator<Item = (Source, usize)> + '_ {
        self.per_source.iter().map(|(source, n)| (*source, *n))
    }

    /// The peers whose share of the pool is full: their floods would be refused.
    pub(super) fn full_peers(&self) -> Vec<NodeId> {
        self.per_source
            .iter()
            .filter(|(_, n)| **n >= self.source_quota)
            .filter_map(|(source, _)| match source {
                Source::Peer(peer) => Some(*peer),
                Source::Client => None,
            })
            .collect()
    }

    /// Pools `request`, which entered through `source`, unless a quota is full. A request
    /// already pending keeps its first source and is [`Admitted::Known`]. The caller has
    /// checked that the wallet admits it as new.
    pub(super) fn admit(&mut self, request: Request, source: Source, now: Instant) -> Result<Admitted, Full> {
        self.insert(request, source, now, true)
    }

    /// [`Pool::admit`] for a request whose signature is still to be checked: it holds its
    /// place in the quotas, and goes in no batch until [`Pool::checked`] says it verified.
    pub(super) fn admit_unchecked(
        &mut self,
        request: Request,
        source: Source,
        now: Instant,
    ) -> Result<Admitted, Full> {
        self.insert(request, source, now, false)
    }

    fn insert(
        &mut self,
        request: Request,
        source: Source,
        now: Instant,
        checked: bool,
    ) -> Result<Admitted, Full> {
        let id = request.id();
        if let Some(pending) = self.entries.get_mut(&id) {
            if pending.request == request {
                pending.checked |= checked;
                return Ok(Admitted::Known);
            }
            if checked && !pending.checked {
                // A copy under the same id that is still unchecked (perhaps an altered
                // one) gives way to one known to verify.
                pending.bytes = encoded_len(&request);
                pending.request = request;
                pending.checked = true;
                return Ok(Admitted::Known);
            }
            return Ok(if checked || pending.checked { Admitted::Known } else { Admitted::Contested });
        }
        self.check_quotas(&request, source)?;
        let bytes = encoded_len(&request);
        if let Some(peer) = peer_register(&request, source) {
            *self.registers.entry(peer).or_insert(0) += 1;
        }
        self.entries.insert(id, Pending { request, source, flooded: now, bytes, checked });
        *self.per_source.entry(source).or_insert(0) += 1;
        Ok(Admitted::Added)
    }

    /// The verdict on `request`, admitted unchecked (or [`Admitted::Contested`]) from
    /// `source`: if its signature verified it stays for batches (taking the place of an
    /// unchecked copy with the same id, or pooled again if its entry left meanwhile);
    /// if not, its entry leaves, unless it holds another request by then.
    pub(super) fn checked(&mut self, request: &Request, verified: bool, source: Source, now: Instant) {
        let id = request.id();
        match self.entries.get(&id) {
            Some(pending) if pending.request == *request && verified => self.mark_checked(&id),
            Some(pending) if pending.request == *request && !pending.checked => self.remove(&id),
            Some(_) | None if verified => {
                let _ = self.insert(request.clone(), source, now, true);
            }
            _ => {}
        }
    }

    fn mark_checked(&mut self, id: &Id) {
        if let Some(pending) = self.entries.get_mut(id) {
            pending.checked = true;
        }
    }

    fn check_quotas(&self, request: &Request, source: Source) -> Result<(), Full> {
        if self.entries.len() >= self.capacity {
            return Err(Full::Pool);
        }
        if self.per_source.get(&source).copied().unwrap_or(0) >= self.source_quota {
            return Err(Full::Source(source));
        }
        if self.client_entries(request.client).count() >= CLIENT_QUOTA {
            return Err(Full::Client(request.client));
        }
        if let Some(peer) = peer_register(request, source) {
            if self.registers.get(&peer).copied().unwrap_or(0) >= PEER_REGISTER_QUOTA {
                return Err(Full::Registers(peer));
            }
        }
        Ok(())
    }

    /// The pending requests of `client`, in id order.
    fn client_entries(&self, client: u64) -> impl Iterator<Item = (&Id, &Pending)> + '_ {
        self.entries.range((client, 0, 0)..=(client, u64::MAX, u64::MAX))
    }

    /// Keeps only the requests for which `is_new` holds (call it with the wallet's
    /// [`crate::wallet::Wallet::admission`] after each applied slot). Returns how many left.
    pub(super) fn retain_new(&mut self, mut is_new: impl FnMut(&Request) -> bool) -> usize {
        let gone: Vec<Id> =
            self.entries.iter().filter(|(_, pending)| !is_new(&pending.request)).map(|(id, _)| *id).collect();
        for id in &gone {
            self.remove(id);
        }
        gone.len()
    }

    fn remove(&mut self, id: &Id) {
        let Some(pending) = self.entries.remove(id) else { return };
        decrement(&mut self.per_source, &pending.source);
        if let Some(peer) = peer_register(&pending.request, pending.source) {
            decrement(&mut self.registers, &peer);
        }
    }

    /// This node's own clients' requests last flooded [`REFLOOD_AFTER`] or more before
    /// `now`, least recently flooded first (at most a batch's worth), marked flooded at
    /// `now`. Requests peers flooded to us are theirs to flood again.
    pub(super) fn stale_for_reflood(&mut self, now: Instant) -> Vec<Request> {
        let mut stale: Vec<(Instant, Id)> = self
            .entries
            .iter()
            .filter(|(_, p)| {
                p.source == Source::Client && now.saturating_duration_since(p.flooded) >= REFLOOD_AFTER
            })
            .map(|(id, p)| (p.flooded, *id))
            .collect();
        stale.sort_unstable();
        stale.truncate(REFLOOD_MAX);
        let mut requests = Vec::with_capacity(stale.len());
        for (_, id) in stale {
            if let Some(pending) = self.entries.get_mut(&id) {
                pending.flooded = now;
                requests.push(pending.request.clone());
            }
        }
        requests
    }

    /// The fair proposal for the slot whose seed is `slot_seed`: at most `max_requests`
    /// requests whose batch encodes in at most `max_bytes` bytes, chosen round-robin across
    /// sources and, within each source, across clients, both in an order drawn from the
    /// seed, each peer taking at most `1 / (peers + 1)` of them and of the bytes, and this
    /// node's own clients what is left (see the module docs). Deterministic given the
    /// pool and the seed.
    pub(super) fn next_batch(&self, slot_seed: &[u8], max_requests: usize, max_bytes: usize) -> Batch {
        let key = seed_key(slot_seed);
        let share = Share { requests: max_requests.div_ceil(self.sources), bytes: max_bytes / self.sources };
        let mut lanes: Vec<_> = self
            .lanes(key)
            .into_iter()
            .map(|(source, lane)| {
                let cap = if source == Source::Client { Share::UNLIMITED } else { share };
                (lane.into_iter(), cap)
            })
            .collect();
        let mut fill = Fill::new(max_requests, max_bytes);
        while !fill.is_full() {
            let mut took = false;
            for (lane, cap) in &mut lanes {
                if fill.is_full() {
                    break;
                }
                if cap.requests == 0 {
                    continue;
                }
                // The lane's next request that fits the batch, or the first that would
                // overrun the lane's share, which ends the lane's turns.
                match lane.find(|pending| pending.bytes > cap.bytes || fill.try_take(pending)) {
                    Some(pending) if pending.bytes <= cap.bytes => {
                        cap.requests -= 1;
                        cap.bytes -= pending.bytes;
                        took = true;
                    }
                    Some(_) => cap.requests = 0,
                    None => {}
                }
            }
            if !took {
                break;
            }
        }
        Batch::new(fill.chosen)
    }

    /// One lane per source, in the seed's order of sources; each lane lists the source's
    /// requests round-robin across its clients (in the seed's order of clients), each
    /// client's in id order.
    fn lanes(&self, key: u64) -> Vec<(Source, Vec<&Pending>)> {
        let mut by_source: BTreeMap<Source, Vec<Vec<&Pending>>> = BTreeMap::new();
        for client in self.clients(key) {
            let Some(first) = client.first() else { continue };
            by_source.entry(first.source).or_default().push(client);
        }
        let mut sources: Vec<(u64, Source, Vec<Vec<&Pending>>)> = by_source
            .into_iter()
            .map(|(source, clients)| (source_rank(key, source), source, clients))
            .collect();
        sources.sort_unstable_by_key(|(rank, source, _)| (*rank, *source));
        sources.into_iter().map(|(_, source, clients)| (source, round_robin(clients))).collect()
    }

    /// Every client's pending requests (in id order, up to the first still unchecked),
    /// clients in the seed's order.
    fn clients(&self, key: u64) -> Vec<Vec<&Pending>> {
        let mut clients: Vec<(u64, u64, Vec<&Pending>)> = Vec::new();
        let mut blocked = None;
        for ((client, _, _), pending) in &self.entries {
            if blocked == Some(*client) {
                continue; // a later request must not overtake one still being checked
            }
            if !pending.checked {
                blocked = Some(*client);
                continue;
            }
            match clients.last_mut() {
                Some((_, last, requests)) if last == client => requests.push(pending),
                _ => clients.push((rank(key, SALT_CLIENT, *client), *client, vec![pending])),
            }
        }
        clients.sort_unstable_by_key(|(rank, client, _)| (*rank, *client));
        clients.into_iter().map(|(_, _, requests)| requests).collect()
    }
}

/// The peer whose register `request` is, if it is a register a peer flooded.
fn peer_register(request: &Request, source: Source) -> Option<NodeId> {
    match (source, &request.op) {
        (Source::Peer(peer), Op::Register { .. }) => Some(peer),
        _ => None,
    }
}

/// Counts one entry less at `key`, dropping the count when it reaches zero.
fn decrement<K: Ord>(counts: &mut BTreeMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// The requests of `clients` taken one per client in turn: every client's first, then
/// every client's second, and so on.
fn round_robin(clients: Vec<Vec<&Pending>>) -> Vec<&Pending> {
    let mut order: Vec<(usize, usize, &Pending)> = clients
        .into_iter()
        .enumerate()
        .flat_map(|(place, requests)| requests.into_iter().enumerate().map(move |(turn, p)| (turn, place, p)))
        .collect();
    order.sort_unstable_by_key(|(turn, place, _)| (*turn, *place));
    order.into_iter().map(|(_, _, pending)| pending).collect()
}

/// What one source may still add to a batch.
#[derive(Clone, Copy, Debug)]
struct Share {
    requests: usize,
    bytes: usize,
}

impl Share {
    /// No cap but the batch's own (this node's own clients).
    const UNLIMITED: Share = Share { requests: usize::MAX, bytes: usize::MAX };
}

/// A batch being filled within its caps.
struct Fill {
    chosen: Vec<Request>,
    bytes: usize,
    max_requests: usize,
    max_bytes: usize,
    /// Clients one of whose requests did not fit: their later ones must not overtake it.
    stopped: Vec<u64>,
}

impl Fill {
    fn new(max_requests: usize, max_bytes: usize) -> Fill {
        Fill { chosen: Vec::new(), bytes: BATCH_FRAME, max_requests, max_bytes, stopped: Vec::new() }
    }

    fn is_full(&self) -> bool {
        self.chosen.len() >= self.max_requests
    }

    /// Takes `pending` if it fits and its client has not been stopped; a request that
    /// does not fit stops its client for this batch.
    fn try_take(&mut self, pending: &Pending) -> bool {
        let client = pending.request.client;
        if self.stopped.contains(&client) {
            return false;
        }
        let separator = usize::from(!self.chosen.is_empty());
        let bytes = self.bytes.saturating_add(separator).saturating_add(pending.bytes);
        if bytes > self.max_bytes {
            self.stopped.push(client);
            return false;
        }
        self.bytes = bytes;
        self.chosen.push(pending.request.clone());
        true
    }
}

/// The length of a request's compact JSON (as a batch encodes it); a request that cannot
/// be encoded counts as too large for any batch.
fn encoded_len(request: &Request) -> usize {
    serde_json::to_vec(request).map_or(usize::MAX / 2, |bytes| bytes.len())
}

/// The permutation key of a slot: the first 8 bytes of SHA-256 of its seed.
fn seed_key(seed: &[u8]) -> u64 {
    let digest = sha256(seed);
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

fn source_rank(key: u64, source: Source) -> u64 {
    match source {
        Source::Client => rank(key, SALT_OWN, 0),
        Source::Peer(NodeId(id)) => rank(key, SALT_PEER, id),
    }
}

/// The place of `id` in the slot's permutation: a keyed 64-bit mix. Without the key
/// (the seed of a slot not yet decided) no id can be chosen to come first.
fn rank(key: u64, salt: u64, id: u64) -> u64 {
    mix(key ^ mix(id ^ mix(salt)))
}

/// SplitMix64's finaliser: a bijection on `u64` whose every output bit depends on every
/// input bit.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wallet::{MAX_BATCH_BYTES, MAX_BATCH_REQUESTS};

    const PEER: Source = Source::Peer(NodeId(3001));
    const OTHER: Source = Source::Peer(NodeId(3002));

    fn op(text: &str) -> Op {
        crate::wallet::parse_text(text).expect("a valid op")
    }

    fn req(client: u64, session: u64, seq: u64) -> Request {
        Request::new(client, seq, op("get k")).with_session(session)
    }

    fn at(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    fn ids(batch: &Batch) -> Vec<Id> {
        batch.requests().iter().map(Request::id).collect()
    }

    /// A pool of `capacity` for a node with three peers.
    fn pool(capacity: usize) -> Pool {
        Pool::new(capacity, 3)
    }

    fn batch(pool: &Pool, seed: &[u8]) -> Batch {
        pool.next_batch(seed, MAX_BATCH_REQUESTS, MAX_BATCH_BYTES)
    }

    #[test]
    fn a_request_is_keyed_by_client_session_and_seq_and_keeps_its_first_source() {
        let now = Instant::now();
        let mut pool = pool(100);
        assert_eq!(pool.admit(req(7, 1, 5), PEER, now), Ok(Admitted::Added));
        assert_eq!(pool.admit(req(7, 2, 5), Source::Client, now), Ok(Admitted::Added), "another session");
        assert_eq!(pool.admit(req(7, 1, 5), Source::Client, now), Ok(Admitted::Known));
        assert_eq!(pool.len(), 2);
        assert!(pool.contains(&(7, 1, 5)) && pool.contains(&(7, 2, 5)) && !pool.contains(&(7, 0, 5)));
        let counts: Vec<_> = pool.per_source().collect();
        assert_eq!(
            counts,
            [(Source::Client, 1), (PEER, 1)],
            "the copy from a client kept the peer as source"
        );
    }

    #[test]
    fn each_source_gets_an_equal_share_and_each_client_a_few_requests() {
        let now = Instant::now();
        let mut pool = pool(40); // 10 per source
        for client in 0..10 {
            assert_eq!(pool.admit(req(client, 1, 1), PEER, now), Ok(Admitted::Added));
        }
        assert_eq!(pool.admit(req(99, 1, 1), PEER, now), Err(Full::Source(PEER)));
        assert_eq!(pool.full_peers(), [NodeId(3001)], "its floods may be dropped unverified");
        assert_eq!(pool.admit(req(99, 1, 1), Source::Client, now), Ok(Admitted::Added), "own share intact");
        for seq in 2..=CLIENT_QUOTA as u64 {
            assert_eq!(pool.admit(req(99, 1, seq), Source::Client, now), Ok(Admitted::Added));
        }
        let over = pool.admit(req(99, 2, 1), OTHER, now);
        assert_eq!(over, Err(Full::Client(99)), "the client quota spans sessions and sources");
        assert!(over.is_err_and(|e| e.to_string().starts_with("node busy")));
    }

    fn register(client: u64) -> Request {
        Request::new(client, 0, Op::Register { nonce: client })
    }

    #[test]
    fn a_peer_may_have_only_a_few_registers_pending_and_its_other_requests_are_unaffected() {
        let now = Instant::now();
        let mut pool = pool(10_000);
        for client in 0..PEER_REGISTER_QUOTA as u64 {
            assert_eq!(pool.admit(register(client), PEER, now), Ok(Admitted::Added));
        }
        let over = pool.admit(register(100), PEER, now);
        assert_eq!(over, Err(Full::Registers(NodeId(3001))));
        assert!(over.is_err_and(|e| e.to_string().starts_with("node busy")));
        assert_eq!(pool.admit(req(100, 1, 1), PEER, now), Ok(Admitted::Added), "other requests still pool");
        assert_eq!(pool.admit(register(101), OTHER, now), Ok(Admitted::Added), "each peer its own quota");
        for client in 200..220 {
            assert_eq!(pool.admit(register(client), Source::Client, now), Ok(Admitted::Added), "own clients");
        }
        let batch = batch(&pool, b"seed");
        let from_peer = batch.requests().iter().filter(|r| r.client < PEER_REGISTER_QUOTA as u64).count();
        assert_eq!(from_peer, PEER_REGISTER_QUOTA, "the peer's registers in a batch are as few");
        pool.retain_new(|r| r.client != 0);
        assert_eq!(
            pool.admit(register(100), PEER, now),
            Ok(Admitted::Added),
            "an applied register frees its place"
        );
    }

    #[test]
    fn the_global_bound_holds_when_the_shares_do_not_divide_it() {
        let now = Instant::now();
        let mut pool = Pool::new(3, 0); // one source may take it all
        for client in 0..3 {
            assert_eq!(pool.admit(req(client, 1, 1), Source::Client, now), Ok(Admitted::Added));
        }
        assert_eq!(pool.admit(req(9, 1, 1), Source::Client, now), Err(Full::Pool));
    }

    #[test]
    fn a_flood_of_small_client_ids_cannot_keep_a_real_request_out() {
        let now = Instant::now();
        let mut pool = pool(10_000);
        for client in 1..=2_000 {
            pool.admit(req(client, 1, 1), PEER, now).expect("within the peer's share");
        }
        let real = req(u64::MAX >> 1, 1, 1);
        pool.admit(real.clone(), Source::Client, now).expect("pooled");
        for slot in 0..20u64 {
            let batch = batch(&pool, &slot.to_be_bytes());
            assert_eq!(batch.len(), MAX_BATCH_REQUESTS / 4 + 1, "a quarter for the flood, one real");
            assert!(batch.contains(real.id()), "slot {slot}: the real request is in every proposal");
        }
    }

    #[test]
    fn sources_share_a_batch_equally_when_all_have_more_than_their_share() {
        let now = Instant::now();
        let mut pool = pool(10_000);
        let sources = [Source::Client, PEER, OTHER, Source::Peer(NodeId(3003))];
        for (n, source) in sources.iter().enumerate() {
            for client in 0..200 {
                pool.admit(req(client * 4 + n as u64, 1, 1), *source, now).expect("pooled");
            }
        }
        let batch = batch(&pool, b"seed");
        for n in 0..4 {
            let from_source = batch.requests().iter().filter(|r| r.client % 4 == n).count();
            assert_eq!(from_source, MAX_BATCH_REQUESTS / 4, "source {n}");
        }
    }

    #[test]
    fn a_peer_takes_its_share_and_not_what_the_others_leave() {
        let now = Instant::now();
        let mut pool = pool(10_000);
        for client in 0..500 {
            pool.admit(req(client, 1, 1), PEER, now).expect("pooled");
        }
        let light = [Source::Client, OTHER, Source::Peer(NodeId(3003))];
        for (n, source) in light.iter().enumerate() {
            pool.admit(req(1_000 + n as u64, 1, 1), *source, now).expect("pooled");
        }
        let proposal = batch(&pool, b"seed");
        let flood = proposal.requests().iter().filter(|r| r.client < 1_000).count();
        assert_eq!(flood, MAX_BATCH_REQUESTS / 4, "a quarter in a four-node cluster");
        assert_eq!(proposal.len(), MAX_BATCH_REQUESTS / 4 + 3, "and every light source's request");
        pool.retain_new(|r| r.client < 1_000);
        assert_eq!(batch(&pool, b"seed").len(), MAX_BATCH_REQUESTS / 4, "alone, still a quarter");
        let mut own = super::Pool::new(10_000, 3);
        for client in 0..MAX_BATCH_REQUESTS as u64 + 100 {
            own.admit(req(client, 1, 1), Source::Client, now).expect("pooled");
        }
        assert_eq!(batch(&own, b"seed").len(), MAX_BATCH_REQUESTS, "our own clients may fill it");
    }

    #[test]
    fn a_peer_share_holds_by_bytes_too() {
        let now = Instant::now();
        let mut pool = pool(10_000);
        for client in 0..500 {
            let big = Request::new(client, 1, op(&format!("set {} 1", "k".repeat(60)))).with_session(1);
            pool.admit(big, PEER, now).expect("pooled");
        }
        let proposal = batch(&pool, b"seed");
        let bytes: usize = proposal.requests().iter().map(encoded_len).sum();
        assert!(bytes <= MAX_BATCH_BYTES / 4, "{bytes} bytes of a peer's requests");
        assert!(bytes + encoded_len(&proposal.requests()[0]) > MAX_BATCH_BYTES / 4, "and nearly that many");
    }

    #[test]
    fn an_unchecked_request_holds_its_quota_but_joins_no_batch_until_it_verifies() {
        let now = Instant::now();
        let mut pool = pool(8); // 2 per source
        pool.admit_unchecked(req(1, 1, 1), PEER, now).expect("pooled");
        pool.admit(req(1, 1, 2), PEER, now).expect("pooled");
        assert_eq!(pool.admit_unchecked(req(2, 1, 1), PEER, now), Err(Full::Source(PEER)), "it counts");
        assert!(batch(&pool, b"seed").is_empty(), "seq 2 must not overtake the unchecked seq 1");
        pool.checked(&req(1, 1, 1), true, PEER, now);
        assert_eq!(ids(&batch(&pool, b"seed")), [(1, 1, 1), (1, 1, 2)]);
        pool.admit_unchecked(req(3, 1, 1), OTHER, now).expect("pooled");
        pool.checked(&req(3, 1, 1), false, OTHER, now);
        assert!(!pool.contains(&(3, 1, 1)), "a forgery leaves");
        pool.checked(&req(1, 1, 1), false, PEER, now);
        assert!(pool.contains(&(1, 1, 1)), "a verified request stays");
    }

    #[test]
    fn an_altered_copy_under_a_real_id_never_displaces_the_real_request() {
        let now = Instant::now();
        let real = req(5, 1, 1);
        let altered = Request::new(5, 1, op("set k 0")).with_session(1);
        // The altered copy first, unchecked; the real one is contested, then verifies.
        let mut first = pool(100);
        assert_eq!(first.admit_unchecked(altered.clone(), PEER, now), Ok(Admitted::Added));
        assert_eq!(first.admit_unchecked(real.clone(), OTHER, now), Ok(Admitted::Contested));
        first.checked(&altered, false, PEER, now);
        first.checked(&real, true, OTHER, now);
        assert_eq!(batch(&first, b"seed").requests(), std::slice::from_ref(&real));
        // The verdicts the other way round end the same.
        let mut second = pool(100);
        second.admit_unchecked(altered.clone(), PEER, now).expect("pooled");
        second.admit_unchecked(real.clone(), OTHER, now).expect("contested");
        second.checked(&real, true, OTHER, now);
        second.checked(&altered, false, PEER, now);
        assert_eq!(batch(&second, b"seed").requests(), std::slice::from_ref(&real));
        // A real copy known to verify takes the unchecked altered copy's place at once,
        // and a verified copy is never displaced by an unchecked one.
        let mut third = pool(100);
        third.admit_unchecked(altered.clone(), PEER, now).expect("pooled");
        assert_eq!(third.admit(real.clone(), Source::Client, now), Ok(Admitted::Known));
        assert_eq!(batch(&third, b"seed").requests(), std::slice::from_ref(&real));
        assert_eq!(third.admit_unchecked(altered.clone(), PEER, now), Ok(Admitted::Known));
        third.checked(&altered, false, PEER, now);
        assert_eq!(batch(&third, b"seed").requests(), [real]);
    }

    #[test]
    fn clients_of_one_source_take_turns_and_each_goes_in_id_order() {
        let now = Instant::now();
        let mut pool = pool(10_000);
        for seq in [3, 1, 2, 4] {
            pool.admit(req(1, 1, seq), Source::Client, now).expect("pooled");
        }
        pool.admit(req(2, 1, 1), Source::Client, now).expect("pooled");
        let batch = pool.next_batch(b"seed", 3, MAX_BATCH_BYTES);
        assert_eq!(ids(&batch), [(1, 1, 1), (1, 1, 2), (2, 1, 1)], "one each, then the busy client again");
    }

    #[test]
    fn the_order_is_drawn_per_slot_and_is_the_same_for_the_same_seed() {
        let now = Instant::now();
        let mut pool = pool(10_000);
        for client in 0..100 {
            pool.admit(req(client, 1, 1), PEER, now).expect("pooled");
        }
        let first: Vec<Vec<Id>> =
            (0..50u64).map(|slot| ids(&pool.next_batch(&slot.to_be_bytes(), 1, 1000))).collect();
        let again: Vec<Vec<Id>> =
            (0..50u64).map(|slot| ids(&pool.next_batch(&slot.to_be_bytes(), 1, 1000))).collect();
        assert_eq!(first, again, "deterministic");
        let mut winners: Vec<Id> = first.into_iter().flatten().collect();
        winners.sort_unstable();
        winners.dedup();
        assert!(winners.len() > 25, "no id always wins: {} winners in 50 slots", winners.len());
    }

    #[test]
    fn a_batch_respects_the_byte_cap_and_a_request_that_does_not_fit_stops_its_client() {
        let now = Instant::now();
        let mut pool = pool(10_000);
        let big = Request::new(1, 1, op(&format!("set {} 1", "k".repeat(60)))).with_session(1);
        let after_big = Request::new(1, 2, op("get k")).with_session(1);
        pool.admit(big.clone(), Source::Client, now).expect("pooled");
        pool.admit(after_big, Source::Client, now).expect("pooled");
        pool.admit(req(2, 1, 1), Source::Client, now).expect("pooled");
        let small = encoded_len(&req(2, 1, 1));
        let batch = pool.next_batch(b"seed", 10, BATCH_FRAME + small);
        assert_eq!(ids(&batch), [(2, 1, 1)], "seq 2 of client 1 must not overtake its seq 1");
        let roomy = pool.next_batch(b"seed", 10, MAX_BATCH_BYTES);
        assert_eq!(roomy.len(), 3);
        assert!(roomy.encode().len() <= MAX_BATCH_BYTES);
        let exact = BATCH_FRAME + 2 + pool.entries.values().map(|p| p.bytes).sum::<usize>();
        assert_eq!(roomy.encode().len(), exact, "the byte count matches the encoding");
        assert_eq!(Batch::empty().encode().len(), BATCH_FRAME);
    }

    #[test]
    fn applied_requests_leave_the_pool_and_free_their_share() {
        let now = Instant::now();
        let mut pool = pool(8); // 2 per source
        pool.admit(req(1, 1, 1), PEER, now).expect("pooled");
        pool.admit(req(2, 1, 1), PEER, now).expect("pooled");
        assert_eq!(pool.retain_new(|r| r.client != 1), 1);
        assert!(!pool.contains(&(1, 1, 1)) && pool.contains(&(2, 1, 1)));
        assert_eq!(pool.admit(req(3, 1, 1), PEER, now), Ok(Admitted::Added));
        assert_eq!(pool.retain_new(|_| false), 2);
        assert!(pool.is_empty() && pool.per_source().next().is_none());
        assert!(pool.next_batch(b"seed", 10, MAX_BATCH_BYTES).is_empty());
    }

    #[test]
    fn only_own_clients_requests_are_flooded_again_once_stale() {
        let start = Instant::now();
        let mut pool = pool(100);
        pool.admit(req(1, 1, 1), Source::Client, start).expect("pooled");
        pool.admit(req(2, 1, 1), PEER, start).expect("pooled");
        pool.admit(req(3, 1, 1), Source::Client, at(start, 500)).expect("pooled");
        assert!(pool.stale_for_reflood(at(start, 999)).is_empty());
        let stale: Vec<Id> = pool.stale_for_reflood(at(start, 1000)).iter().map(Request::id).collect();
        assert_eq!(stale, [(1, 1, 1)]);
        assert!(pool.stale_for_reflood(at(start, 1400)).is_empty(), "just flooded");
        let stale: Vec<Id> = pool.stale_for_reflood(at(start, 2000)).iter().map(Request::id).collect();
        assert_eq!(stale, [(3, 1, 1), (1, 1, 1)], "least recently flooded first");
    }
}
