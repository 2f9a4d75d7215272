//! Catch-up: fetching the slots a node missed from its peers' ledgers.
//!
//! SCP itself lets a node that fell a little behind finish: its statements about old slots
//! are answered with EXTERNALIZE. A node that was down for longer asks its peers for their
//! ledger from its next slot on (`catchup {from}`); each answers with as many entries as
//! fit in a datagram (`ledger {last, entries}`). A peer may lie, so an entry is applied
//! only when the peers that offered the same chain hash for it are **v-blocking** for the
//! local node, or **form one of its quorum slices together with it** (either must contain
//! an honest peer under the fault bound; see [`crate::scp::vouched`] for why, and why the
//! second rule matters), and the hash chains from the node's own last entry. The node asks
//! again until it has every slot its peers have, then tells the SCP core to carry on from
//! there.
//!
//! **Bounds.** A 30-byte request buys an answer of up to 40 kB, so answers are rationed per
//! peer by a token bucket ([`Limiter`]: a burst of [`SERVE_BURST`], then one per
//! [`SERVE_EVERY`]); requests over the limit are dropped and counted. Offers are kept only
//! from peers this node asked, only for the slots it asked them for (from the request's
//! `from`, at most [`MAX_OFFER_SLOTS`] of them, which is also the most an answer carries),
//! and only up to [`MAX_OFFER_REQUESTS`] requests per peer (a few answers' worth): an
//! unsolicited offer costs nothing but its decoding, and a lying peer's offers at most
//! a few hundred kilobytes.

use super::{Server, ServerError};
use crate::hash::{hex, unhex, Digest};
use crate::ledger::{verify_entry, Entry};
use crate::net::{self, LedgerEntry, Message};
use crate::quorum::{NodeId, QuorumSet};
use crate::ratelimit::TokenBucket;
use crate::scp::{self, Input};
use crate::wallet::Batch;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Bytes of ledger entries per answer (a datagram holds 60,000).
const CHUNK_BYTES: usize = 40_000;
/// Offers are kept for at most this many slots from the one asked for, and an answer
/// carries at most this many entries (a full chunk of one-request slots).
const MAX_OFFER_SLOTS: u64 = 256;
/// Most requests (over all slots) kept from one peer's offers: memory is bounded by
/// peers x this x the size of a request (at most about a kilobyte).
const MAX_OFFER_REQUESTS: usize = 4 * crate::wallet::MAX_BATCH_REQUESTS;
/// Catch-up answers a peer may get at once, before the rate limit applies.
const SERVE_BURST: u32 = 4;
/// After a burst, a peer gets one catch-up answer per this interval.
const SERVE_EVERY: Duration = Duration::from_millis(100);
/// Least time between two requests while behind.
const REQUEST_INTERVAL: Duration = Duration::from_millis(200);
/// SCP itself finishes slots a node is only a little behind on; ledger catch-up starts
/// when a peer is this many slots ahead, or when the node is behind and stalled.
const LAG_SLOTS: u64 = 4;
/// How long a node that is behind may make no progress before it catches up.
const STALL: Duration = Duration::from_secs(1);
/// Interval of the probe that lets a node which heard nothing (it was cut off, and the
/// cluster is quiet) learn how long its peers' ledgers are.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Least time between two catch-up progress lines.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// A catch-up is announced (started, progress, finished lines at info level) only when the
/// node is at least this many slots behind; a slot or so is everyday SCP business.
const ANNOUNCE_SLOTS: u64 = 2;

/// A catch-up in progress, for the operator's `n/N` lines.
#[derive(Debug)]
struct Session {
    /// The ledger's length when it started.
    start: u64,
    /// The highest slot a peer reported (the end of the catch-up, as far as known).
    target: u64,
    /// When progress was last logged, and the ledger's length then.
    logged: (Instant, u64),
    /// Whether its lines are at info level (see [`ANNOUNCE_SLOTS`]).
    announced: bool,
}

/// Catch-up bookkeeping.
#[derive(Default)]
pub(super) struct CatchUp {
    /// Entries offered for slots above our ledger: slot -> sender -> (hash, batch).
    offers: BTreeMap<u64, BTreeMap<NodeId, (Digest, Batch)>>,
    /// The longest ledger each peer reported, and the highest slot it spoke about.
    peer_ahead: BTreeMap<NodeId, u64>,
    /// When we last asked, and from which slot.
    last_request: Option<(Instant, u64)>,
    /// When the ledger last grew (and how long it was then).
    progress: Option<(Instant, u64)>,
    /// When we last probed every peer.
    last_probe: Option<Instant>,
    /// The first slot we last asked each peer for: its offers count from there.
    asked: BTreeMap<NodeId, u64>,
    /// Peers whose offered entries were applied, not yet reported to the caller.
    helped: Vec<NodeId>,
    /// Each peer's allowance of catch-up answers.
    serving: BTreeMap<NodeId, Limiter>,
    /// Catch-up requests dropped over the rate limit, since start.
    refused: u64,
    /// The catch-up in progress, if any.
    session: Option<Session>,
}

impl CatchUp {
    /// A peer spoke about `slot` or reported a ledger that long.
    pub fn saw(&mut self, peer: NodeId, slot: u64) {
        let e = self.peer_ahead.entry(peer).or_insert(0);
        *e = (*e).max(slot);
    }

    /// The highest slot `peer` reported having (its ledger's length, or a slot below one
    /// it spoke about), if it reported any.
    pub fn peer_slot(&self, peer: NodeId) -> Option<u64> {
        self.peer_ahead.get(&peer).copied()
    }

    /// The highest slot any peer reported (0 if none).
    pub fn highest_peer_slot(&self) -> u64 {
        self.peer_ahead.values().copied().max().unwrap_or(0)
    }

    /// The peer that reported the highest slot, if any.
    fn most_ahead(&self) -> Option<NodeId> {
        self.peer_ahead.iter().max_by_key(|(_, slot)| **slot).map(|(peer, _)| *peer)
    }

    /// How many requests the offers kept from `peer` hold.
    fn requests_offered_by(&self, peer: NodeId) -> usize {
        self.offers.values().filter_map(|by_peer| by_peer.get(&peer)).map(|(_, batch)| batch.len()).sum()
    }
}

/// Up to `burst` events at once, then one per `every`: a [`TokenBucket`] counted in events.
/// Pure (the time is passed in), so it is tested without sleeping.
#[derive(Clone, Debug)]
pub(super) struct Limiter(TokenBucket);

impl Limiter {
    /// A full bucket.
    pub(super) fn new(burst: u32, every: Duration, now: Instant) -> Limiter {
        let rate = 1.0 / every.as_secs_f64().max(f64::MIN_POSITIVE);
        Limiter(TokenBucket::new(rate, f64::from(burst), now))
    }

    /// Whether one more event is allowed at `now` (it takes a token if so).
    pub(super) fn allow(&mut self, now: Instant) -> bool {
        self.0.allow(1.0, now)
    }
}

impl Server {
    /// Asks the peers that are ahead for their ledger from our next slot. The same slot is
    /// asked for at most once per [`REQUEST_INTERVAL`]; `force` asks every peer (start-up).
    pub(super) fn request_catchup_if_behind(&mut self, force: bool) {
        let len = self.ledger.len();
        let next = len + 1;
        if self.catchup.progress.is_none_or(|(_, at)| at != len) {
            self.catchup.progress = Some((Instant::now(), len));
        }
        // A peer whose ledger holds more than ours is ahead; SCP itself finishes small lags
        // unless the node has stalled.
        let stalled = self.catchup.progress.is_some_and(|(since, _)| since.elapsed() >= STALL);
        let lag = if stalled { 0 } else { LAG_SLOTS };
        let behind: Vec<NodeId> =
            self.catchup.peer_ahead.iter().filter(|(_, slot)| **slot > len + lag).map(|(n, _)| *n).collect();
        let repeated = self
            .catchup
            .last_request
            .is_some_and(|(at, from)| from == next && at.elapsed() < REQUEST_INTERVAL);
        if (!force && behind.is_empty()) || repeated {
            return;
        }
        self.catchup.last_request = Some((Instant::now(), next));
        if !behind.is_empty() {
            self.catchup_started(len);
        }
        let bytes = net::encode(&Message::CatchUp { from: next });
        let targets: Vec<NodeId> =
            if force || behind.is_empty() { self.config.peers.keys().copied().collect() } else { behind };
        self.log.debug(format_args!("catch-up: asking {} peers for slots from {next}", targets.len()));
        self.metrics.catchup_requests_sent.add(targets.len() as u64);
        for peer in targets {
            self.catchup.asked.insert(peer, next);
            self.send_peer(peer, &bytes);
        }
    }

    /// A peer asks for our ledger from `from`: answer it, within its rate limit.
    pub(super) fn serve_catchup(&mut self, peer: NodeId, from: u64) {
        let now = Instant::now();
        let limiter =
            self.catchup.serving.entry(peer).or_insert_with(|| Limiter::new(SERVE_BURST, SERVE_EVERY, now));
        if !limiter.allow(now) {
            self.catchup.refused += 1;
            let addr = self.config.peers.get(&peer).copied().unwrap_or(self.config.bind);
            let refused = self.catchup.refused;
            let reason =
                format_args!("catch-up request from peer {peer} over its rate limit ({refused} refused)");
            self.log.dropped("catch-up rate", addr, reason);
            return;
        }
        let entries = if from == 0 || from > self.ledger.len() {
            Vec::new()
        } else {
            match self.ledger.read_from(from, CHUNK_BYTES) {
                Ok(entries) => entries,
                Err(e) => {
                    self.log.error(format_args!("catch-up: cannot read the ledger for {peer}: {e}"));
                    return;
                }
            }
        };
        let entries = entries
            .into_iter()
            .take(MAX_OFFER_SLOTS as usize)
            .map(|Entry { slot, batch, hash }| LedgerEntry { slot, hash: hex(&hash), batch })
            .collect();
        let message = Message::Ledger { last: self.ledger.len(), entries };
        self.send_peer(peer, &net::encode(&message));
    }

    /// A peer's ledger entries: keep those for slots we asked it for, apply those enough
    /// peers vouch for. Returns the peers whose offered entries were applied (they helped).
    pub(super) fn on_ledger_offer(
        &mut self,
        peer: NodeId,
        last: u64,
        entries: Vec<LedgerEntry>,
    ) -> Result<Vec<NodeId>, ServerError> {
        self.catchup.saw(peer, last);
        let Some(&asked) = self.catchup.asked.get(&peer) else { return Ok(Vec::new()) };
        let wanted = asked.max(self.ledger.len() + 1)..asked.saturating_add(MAX_OFFER_SLOTS);
        let mut held = self.catchup.requests_offered_by(peer);
        let mut kept = 0;
        for entry in entries.into_iter().filter(|e| wanted.contains(&e.slot)) {
            let Some(hash) = unhex(&entry.hash).and_then(|h| Digest::try_from(h).ok()) else { continue };
            held += entry.batch.len();
            if held > MAX_OFFER_REQUESTS {
                break;
            }
            self.catchup.offers.entry(entry.slot).or_default().insert(peer, (hash, entry.batch));
            kept += 1;
        }
        if kept == 0 {
            return Ok(Vec::new());
        }
        let before = self.ledger.len();
        let applied = self.apply_agreed_offers()?;
        if applied > 0 {
            self.log.debug(format_args!(
                "caught up {applied} slots from peers' ledgers; now at slot {}",
                self.ledger.len()
            ));
            self.metrics.catchup_slots_applied.add(applied);
            self.catchup_started(before);
            self.catchup_progress();
            self.observer.forget_below(self.ledger.len() + 1);
            self.step(Input::CaughtUp { next: self.ledger.len() + 1 })?;
            // Progress, and more to fetch: ask for the next chunk straight away (only an
            // answer that moved us on does this, so duplicates cannot multiply requests).
            self.request_catchup_if_behind(false);
        }
        Ok(std::mem::take(&mut self.catchup.helped))
    }

    /// Starts a catch-up session from ledger length `from`, unless one is in progress.
    fn catchup_started(&mut self, from: u64) {
        if self.catchup.session.is_some() {
            return;
        }
        let target = self.catchup.highest_peer_slot().max(from);
        let announced = target - from >= ANNOUNCE_SLOTS;
        let session = Session { start: from, target, logged: (Instant::now(), from), announced };
        self.log_catchup(&session, 0);
        self.catchup.session = Some(session);
    }

    /// Logs catch-up progress (at most once per [`PROGRESS_EVERY`]) and its end, once the
    /// ledger reaches the highest slot a peer reported (by catch-up or by SCP itself).
    pub(super) fn catchup_progress(&mut self) {
        let len = self.ledger.len();
        let highest = self.catchup.highest_peer_slot();
        let Some(mut session) = self.catchup.session.take() else { return };
        session.target = session.target.max(highest);
        let done = len.saturating_sub(session.start);
        if len >= session.target {
            self.log_catchup(&session, done);
        } else {
            let (at, then) = session.logged;
            if at.elapsed() >= PROGRESS_EVERY && len > then {
                self.log_catchup(&session, done);
                session.logged = (Instant::now(), len);
            }
            self.catchup.session = Some(session);
        }
    }

    /// One catch-up line: `done` of the session's slots applied.
    fn log_catchup(&self, session: &Session, done: u64) {
        let total = session.target - session.start;
        let peer = self.catchup.most_ahead().map_or(0, |p| p.0);
        if session.announced {
            self.log.catchup(peer, done, total);
        } else {
            self.log.debug(format_args!("catch-up from {peer}: {done}/{total} slots"));
        }
    }

    /// Every [`PROBE_INTERVAL`], asks every peer for the ledger from our next slot; the
    /// answers (empty when a peer has nothing newer) tell us who is ahead.
    pub(super) fn probe_peers(&mut self) {
        if self.catchup.last_probe.is_some_and(|t| t.elapsed() < PROBE_INTERVAL) {
            return;
        }
        self.catchup.last_probe = Some(Instant::now());
        let from = self.ledger.len() + 1;
        for peer in self.config.peers.keys() {
            self.catchup.asked.insert(*peer, from);
        }
        self.broadcast(&net::encode(&Message::CatchUp { from }));
    }

    /// Applies, in order, every next entry vouched for (see [`agreed_batch`]) with one hash
    /// that chains from our ledger. Returns how many were applied.
    fn apply_agreed_offers(&mut self) -> Result<u64, ServerError> {
        let mut applied = 0;
        let mut changed = Vec::new();
        loop {
            let slot = self.ledger.len() + 1;
            self.catchup.offers.retain(|s, _| *s >= slot);
            let Some(offers) = self.catchup.offers.get(&slot) else { break };
            let Some(batch) = self.agreed(slot, offers) else { break };
            let offers = self.catchup.offers.remove(&slot).unwrap_or_default();
            changed.extend(self.apply_decided(slot, &batch)?);
            applied += 1;
            let hash = self.ledger.last_hash();
            let helpers = offers.into_iter().filter(|(_, (h, _))| *h == hash).map(|(peer, _)| peer);
            self.catchup.helped.extend(helpers);
        }
        if !changed.is_empty() {
            self.save_db(&changed)?;
        }
        Ok(applied)
    }

    /// The batch for `slot` that enough peers vouch for, if it chains from our ledger.
    fn agreed(&self, slot: u64, offers: &BTreeMap<NodeId, (Digest, Batch)>) -> Option<Batch> {
        agreed_batch(self.config.id, &self.config.quorum_set, &self.ledger.last_hash(), slot, offers)
    }
}

/// The batch offered for `slot` (by peer: chain hash and batch) that node `me` may apply
/// after the entry hashed `prev`: the peers offering its hash are v-blocking for `me`, or
/// a quorum slice of `me` together with it ([`crate::scp::vouched`]), and the entry chains
/// from `prev`.
fn agreed_batch(
    me: NodeId,
    qset: &QuorumSet,
    prev: &Digest,
    slot: u64,
    offers: &BTreeMap<NodeId, (Digest, Batch)>,
) -> Option<Batch> {
    offers.values().find_map(|(hash, batch)| {
        let vouching = |n: NodeId| offers.get(&n).is_some_and(|(h, _)| h == hash);
        let entry = Entry { slot, batch: batch.clone(), hash: *hash };
        (scp::vouched(me, qset, &vouching) && verify_entry(prev, &entry)).then_some(entry.batch)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::chain_hash;
    use crate::wallet::{Op, Request};

    fn ids(v: &[u64]) -> Vec<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    fn batch(key: &str) -> Batch {
        let op: Op = crate::wallet::parse_text(&format!("set {key} 1")).expect("valid op");
        Batch::new(vec![Request::new(1, 1, op)])
    }

    /// Offers for slot 1 (after the genesis hash): `honest` peers offer the real batch,
    /// `liars` a forged one (chaining correctly, so only the vouching rule stops it).
    fn offers(honest: &[u64], liars: &[u64]) -> BTreeMap<NodeId, (Digest, Batch)> {
        let entry = |b: Batch| (chain_hash(&[0; 32], 1, b.encode()), b);
        let real = ids(honest).into_iter().map(|n| (n, entry(batch("real"))));
        real.chain(ids(liars).into_iter().map(|n| (n, entry(batch("forged"))))).collect()
    }

    fn agreed(me: u64, qset: &QuorumSet, offers: &BTreeMap<NodeId, (Digest, Batch)>) -> Option<Batch> {
        agreed_batch(NodeId(me), qset, &[0; 32], 1, offers)
    }

    #[test]
    fn the_limiter_allows_a_burst_then_one_per_interval() {
        let start = Instant::now();
        let ms = |n| start + Duration::from_millis(n);
        let mut limiter = Limiter::new(3, Duration::from_millis(100), start);
        assert!((0..3).all(|_| limiter.allow(start)), "the burst");
        assert!(!limiter.allow(start) && !limiter.allow(ms(99)));
        assert!(limiter.allow(ms(100)) && !limiter.allow(ms(150)) && limiter.allow(ms(200)));
        // A long pause refills the bucket only up to the burst.
        assert!((0..3).all(|_| limiter.allow(ms(10_000))));
        assert!(!limiter.allow(ms(10_000)));
        // Part of an interval is not lost: 250 ms earn two answers and half a third.
        assert!(limiter.allow(ms(10_250)) && limiter.allow(ms(10_250)) && !limiter.allow(ms(10_250)));
        assert!(limiter.allow(ms(10_300)));
        // A clock that seems to go back earns nothing and breaks nothing.
        assert!(!limiter.allow(start));
    }

    #[test]
    fn a_peer_asking_a_thousand_times_a_second_gets_the_sustained_rate() {
        let start = Instant::now();
        let mut limiter = Limiter::new(SERVE_BURST, SERVE_EVERY, start);
        let answered = (0..10_000).filter(|i| limiter.allow(start + Duration::from_millis(*i))).count();
        assert_eq!(answered, SERVE_BURST as usize + 99, "a burst, then 10 a second for 9.9 s");
    }

    #[test]
    fn three_of_four_trusts_two_peers_and_never_one() {
        let q = QuorumSet::new(3, ids(&[1, 2, 3, 4]));
        assert_eq!(agreed(1, &q, &offers(&[2, 3], &[4])), Some(batch("real")));
        assert_eq!(agreed(1, &q, &offers(&[2], &[4])), None, "one peer may be the faulty one");
        assert_eq!(agreed(1, &q, &offers(&[], &[4])), None);
    }

    #[test]
    fn tiered_trusts_a_slice_with_itself_where_v_blocking_needs_more() {
        // Two of three organisations, two of three nodes each; the node is 1, in {1, 2, 3}.
        let orgs = [[1, 2, 3], [4, 5, 6], [7, 8, 9]].map(|o| QuorumSet::new(2, ids(&o)));
        let q = QuorumSet { threshold: 2, validators: vec![], inner_sets: orgs.to_vec() };
        // Its org-mate and two nodes of a second organisation: a slice with the node, not
        // v-blocking (that needs two nodes in each of two organisations besides it).
        let slice_only = offers(&[2, 4, 5], &[]);
        assert!(!q.is_v_blocking(&|n| slice_only.contains_key(&n)));
        assert_eq!(agreed(1, &q, &slice_only), Some(batch("real")));
        // One faulty node cannot fill a slice, however it answers.
        assert_eq!(agreed(1, &q, &offers(&[4, 5, 7], &[2])), None);
        assert_eq!(agreed(1, &q, &offers(&[2, 4], &[5])), None);
        // Two whole organisations that finished are v-blocking anyway.
        assert_eq!(agreed(1, &q, &offers(&[4, 5, 7, 8], &[])), Some(batch("real")));
    }

    #[test]
    fn an_entry_that_does_not_chain_is_refused_whoever_vouches() {
        let q = QuorumSet::new(3, ids(&[1, 2, 3, 4]));
        let wrong = (chain_hash(&[1; 32], 1, batch("real").encode()), batch("real"));
        let offers = ids(&[2, 3, 4]).into_iter().map(|n| (n, wrong.clone())).collect();
        assert_eq!(agreed(1, &q, &offers), None);
    }
}
