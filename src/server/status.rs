//! What a node can tell about itself: whether it hears a quorum, which peers went silent,
//! how fast it applies requests, how long its slots take; the `status` answer built from
//! that, the `unavailable` answer to requests it cannot serve, and the metrics exporter.
//!
//! **Hearing a quorum.** A peer is *heard* when something authenticated came from it
//! within [`SILENT_AFTER`] (every live peer answers the once-a-second catch-up probe, so a
//! live peer is heard about once a second even when the cluster is idle). The node hears a
//! quorum when the peers it hears, with itself, contain one of its quorum slices. During
//! the first [`SILENT_AFTER`] after start a peer never heard yet counts as heard (start-up
//! grace), so nodes started one after another accept requests at once. Each housekeeping
//! tick recomputes it, logs `quorum lost` / `quorum regained` and `peers silent` / `peers
//! back` on changes, and updates the metrics. A node that does not hear a quorum answers
//! a new request at once with `unavailable` instead of pooling it.
//!
//! **Status.** `{"type":"status"}` from any address is answered with the node's
//! [`NodeStatus`]; answers are rationed per source IP (it is read-only and small, but a
//! spoofed source could otherwise turn the node into an amplifier).

use super::catchup::Limiter;
use super::{Format, Server, ServerError, SILENT_AFTER};
use crate::hash::hex;
use crate::metrics::{self, Metrics};
use crate::net::{self, Message, NodeStatus, PeerStatus, MAX_DATAGRAM};
use crate::quorum::{NodeId, QuorumSet};
use crate::scp::SlotIndex;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Over how long `requests_per_second` is measured.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Applied requests are counted in buckets this wide.
const RATE_BUCKET: Duration = Duration::from_millis(100);
/// Status answers a source IP may get at once, before the rate limit applies.
const STATUS_BURST: u32 = 20;
/// After a burst, a source IP gets one status answer per this interval (10 a second).
const STATUS_EVERY: Duration = Duration::from_millis(100);
/// Source IPs whose status allowance is remembered (then the table starts afresh).
const STATUS_SOURCES: usize = 4096;

/// Requests applied over the last [`RATE_WINDOW`], in buckets of [`RATE_BUCKET`].
#[derive(Debug, Default)]
pub(super) struct RateWindow {
    buckets: VecDeque<(Instant, u64)>,
}

impl RateWindow {
    /// Counts `n` requests applied at `now`.
    pub(super) fn record(&mut self, now: Instant, n: u64) {
        match self.buckets.back_mut() {
            Some((at, count)) if now.saturating_duration_since(*at) < RATE_BUCKET => *count += n,
            _ => self.buckets.push_back((now, n)),
        }
        self.trim(now);
    }

    /// Requests per second over the last [`RATE_WINDOW`] (or since `started`, if later).
    pub(super) fn per_second(&mut self, now: Instant, started: Instant) -> f64 {
        self.trim(now);
        let total: u64 = self.buckets.iter().map(|(_, n)| n).sum();
        let span = now.saturating_duration_since(started).min(RATE_WINDOW).max(Duration::from_secs(1));
        total as f64 / span.as_secs_f64()
    }

    fn trim(&mut self, now: Instant) {
        while self.buckets.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) >= RATE_WINDOW) {
            self.buckets.pop_front();
        }
    }
}

/// The node's view of its own health, kept by the protocol thread.
#[derive(Debug)]
pub(super) struct Observer {
    /// Whether the node heard a quorum at the last housekeeping tick.
    pub(super) quorum_available: bool,
    /// Peers not heard within [`SILENT_AFTER`] at the last tick (for the silent/back lines).
    pub(super) down: BTreeSet<NodeId>,
    /// Requests applied recently.
    pub(super) applied: RateWindow,
    /// When this node first nominated, or first heard a nomination, for each open slot.
    first_nominated: BTreeMap<SlotIndex, Instant>,
    /// The ballot counter of our last EXTERNALIZE, with its slot.
    externalized_at: Option<(SlotIndex, u32)>,
    /// Each source IP's allowance of status answers.
    status_limits: HashMap<IpAddr, Limiter>,
}

impl Observer {
    /// A node that has just started (and so hears a quorum, by the start-up grace).
    pub(super) fn new() -> Observer {
        Observer {
            quorum_available: true,
            down: BTreeSet::new(),
            applied: RateWindow::default(),
            first_nominated: BTreeMap::new(),
            externalized_at: None,
            status_limits: HashMap::new(),
        }
    }

    /// The node nominated, or heard a nomination, for `slot` now (only the first counts).
    pub(super) fn nominated(&mut self, slot: SlotIndex) {
        self.first_nominated.entry(slot).or_insert_with(Instant::now);
    }

    /// The node sent its EXTERNALIZE for `slot` at ballot counter `counter`.
    pub(super) fn externalized(&mut self, slot: SlotIndex, counter: u32) {
        self.externalized_at = Some((slot, counter));
    }

    /// `slot` was decided: the time since its first nomination (zero if none was seen)
    /// and the ballot counter of our EXTERNALIZE (if we sent one). Forgets older slots.
    pub(super) fn decided(&mut self, slot: SlotIndex) -> (Duration, Option<u32>) {
        let elapsed = self.first_nominated.get(&slot).map_or(Duration::ZERO, Instant::elapsed);
        self.first_nominated = self.first_nominated.split_off(&slot.saturating_add(1));
        let counter = self.externalized_at.filter(|(s, _)| *s == slot).map(|(_, c)| c);
        (elapsed, counter)
    }

    /// Forgets nominations of slots below `next` (they were caught up, not decided here).
    pub(super) fn forget_below(&mut self, next: SlotIndex) {
        self.first_nominated = self.first_nominated.split_off(&next);
    }

    /// Whether `from` may have another status answer now.
    fn allow_status(&mut self, from: IpAddr, now: Instant) -> bool {
        if self.status_limits.len() >= STATUS_SOURCES && !self.status_limits.contains_key(&from) {
            self.status_limits.clear();
        }
        let limiter =
            self.status_limits.entry(from).or_insert_with(|| Limiter::new(STATUS_BURST, STATUS_EVERY, now));
        limiter.allow(now)
    }
}

/// The fewest peers that, with node `me`, contain one of `qset`'s slices (each entry of a
/// set costs one peer, nothing for `me` itself, or an inner set's own fewest).
pub(super) fn peers_needed(qset: &QuorumSet, me: NodeId) -> usize {
    let validators = qset.validators.iter().map(|v| usize::from(*v != me));
    let inner = qset.inner_sets.iter().map(|set| peers_needed(set, me));
    let mut costs: Vec<usize> = validators.chain(inner).collect();
    costs.sort_unstable();
    costs.iter().take(qset.threshold as usize).sum()
}

/// `d` in whole milliseconds (saturating).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Server {
    /// Whether `peer` was heard within [`SILENT_AFTER`] (or, never heard, whether the node
    /// is still in its start-up grace).
    pub(super) fn hears(&self, peer: NodeId, now: Instant) -> bool {
        match self.last_heard.get(&peer) {
            Some(at) => now.saturating_duration_since(*at) < SILENT_AFTER,
            None => now.saturating_duration_since(self.epoch) < SILENT_AFTER,
        }
    }

    /// The peers heard within [`SILENT_AFTER`].
    pub(super) fn heard_peers(&self, now: Instant) -> Vec<NodeId> {
        self.config.peers.keys().copied().filter(|peer| self.hears(*peer, now)).collect()
    }

    /// Whether `heard`, with this node, contain one of its quorum slices.
    fn slice_among(&self, heard: &[NodeId]) -> bool {
        let me = self.config.id;
        self.config.quorum_set.is_slice(&|n| n == me || heard.contains(&n))
    }

    /// Recomputes whether the node hears a quorum and which peers are down; logs the
    /// changes and updates the metrics (each housekeeping tick).
    pub(super) fn update_health(&mut self) {
        let now = Instant::now();
        let heard = self.heard_peers(now);
        let available = self.slice_among(&heard);
        self.metrics.peers_heard.set_count(heard.len());
        self.metrics.quorum_available.set_bool(available);
        self.metrics.pool_size.set_count(self.pool.len());
        self.metrics.ledger_slot.set_count(self.ledger.len());
        self.log_down_peers(&heard);
        if available != self.observer.quorum_available {
            self.observer.quorum_available = available;
            let ids: Vec<u64> = heard.iter().map(|n| n.0).collect();
            let needed = peers_needed(&self.config.quorum_set, self.config.id);
            self.log.quorum_changed(available, &ids, self.config.peers.len(), needed);
        }
    }

    /// Logs the peers that went silent (nothing heard for [`SILENT_AFTER`]) or came back.
    fn log_down_peers(&mut self, heard: &[NodeId]) {
        let down: BTreeSet<NodeId> =
            self.config.peers.keys().copied().filter(|p| !heard.contains(p)).collect();
        let gone: Vec<u64> = down.difference(&self.observer.down).map(|n| n.0).collect();
        let back: Vec<u64> = self.observer.down.difference(&down).map(|n| n.0).collect();
        self.log.peers_silent(true, &gone);
        self.log.peers_silent(false, &back);
        self.observer.down = down;
    }

    /// Answers a new request the node cannot serve (it hears no quorum) at once, without
    /// pooling it: `unavailable`, with how many peers it hears and needs.
    pub(super) fn refuse_unavailable(&mut self, to: SocketAddr, format: Format) {
        let heard = self.heard_peers(Instant::now()).len();
        let needed = peers_needed(&self.config.quorum_set, self.config.id);
        let (id, peers) = (self.config.id, self.config.peers.len());
        self.metrics.requests_unavailable.inc();
        self.log.debug(format_args!(
            "request from {to} refused: unavailable (hearing {heard} of {peers} peers, need {needed})"
        ));
        let bytes = match format {
            Format::Json => net::encode(&Message::Unavailable {
                node: id,
                peers_heard: heard as u64,
                needed: needed as u64,
            }),
            Format::Text => {
                format!("[{id}] UNAVAILABLE: hearing {heard} of {peers} peers, need {needed}").into_bytes()
            }
        };
        self.send(to, &bytes);
    }

    /// A status request from `from`: answered within the source's allowance.
    pub(super) fn on_status(&mut self, from: SocketAddr) {
        let now = Instant::now();
        self.metrics.status_requests.inc();
        if !self.observer.allow_status(from.ip(), now) {
            self.log.dropped("status rate", from, format_args!("status request over the rate limit"));
            return;
        }
        let mut status = self.node_status(now);
        let mut bytes = net::encode(&Message::StatusReply { status: Box::new(status.clone()) });
        while bytes.len() > MAX_DATAGRAM && !status.peers.is_empty() {
            // Thousands of peers: list as many as fit.
            status.peers.truncate(status.peers.len() / 2);
            bytes = net::encode(&Message::StatusReply { status: Box::new(status.clone()) });
        }
        if bytes.len() > MAX_DATAGRAM {
            // A quorum set too large to say in one datagram.
            status.quorum_set = None;
            bytes = net::encode(&Message::StatusReply { status: Box::new(status) });
        }
        self.send(from, &bytes);
    }

    /// What the node says about itself.
    pub(super) fn node_status(&mut self, now: Instant) -> NodeStatus {
        let heard = self.heard_peers(now);
        let slot = self.ledger.len();
        let highest = self.catchup.highest_peer_slot();
        let peers = self
            .config
            .peers
            .iter()
            .map(|(id, addr)| PeerStatus {
                id: *id,
                address: addr.to_string(),
                last_heard_ms: self.last_heard.get(id).map(|at| millis(now.saturating_duration_since(*at))),
                slot: self.catchup.peer_slot(*id),
            })
            .collect();
        NodeStatus {
            id: self.config.id,
            address: self.local.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_ms: millis(now.saturating_duration_since(self.epoch)),
            slot,
            ledger_hash: hex(&self.ledger.last_hash()),
            pool: self.pool.len() as u64,
            requests_per_second: self.observer.applied.per_second(now, self.epoch),
            quorum_available: self.observer.quorum_available,
            peers_heard: heard.len() as u64,
            needed: peers_needed(&self.config.quorum_set, self.config.id) as u64,
            lag: highest.saturating_sub(slot),
            peers,
            quorum_set: Some(self.config.quorum_set.clone()),
        }
    }
}

/// The `--metrics` HTTP thread, stopped (and waited for) on drop.
pub(super) struct Exporter {
    /// The address it serves on.
    pub(super) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Serves `metrics` on `addr` ([`metrics::serve`]).
    pub(super) fn start(addr: SocketAddr, metrics: &Arc<Metrics>) -> Result<Exporter, ServerError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, handle) = metrics::serve(addr, Arc::clone(metrics), Arc::clone(&stop))
            .map_err(|e| ServerError::Metrics(addr, e))?;
        Ok(Exporter { addr, stop, handle: Some(handle) })
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> Vec<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    #[test]
    fn peers_needed_counts_the_cheapest_slice() {
        let flat = QuorumSet::new(3, ids(&[1, 2, 3, 4]));
        assert_eq!(peers_needed(&flat, NodeId(1)), 2);
        assert_eq!(peers_needed(&QuorumSet::new(1, ids(&[1])), NodeId(1)), 0);
        let orgs = [[1, 2, 3], [4, 5, 6], [7, 8, 9]].map(|o| QuorumSet::new(2, ids(&o)));
        let tiered = QuorumSet { threshold: 2, validators: vec![], inner_sets: orgs.to_vec() };
        // Its org-mate (1 peer) and two nodes of another organisation (2 peers).
        assert_eq!(peers_needed(&tiered, NodeId(1)), 3);
        assert_eq!(peers_needed(&tiered, NodeId(42)), 4);
    }

    #[test]
    fn the_rate_covers_the_last_ten_seconds() {
        let start = Instant::now();
        let mut rate = RateWindow::default();
        for i in 0..100 {
            rate.record(start + Duration::from_millis(i * 10), 1);
        }
        assert!(rate.buckets.len() <= 11, "{:?}", rate.buckets.len());
        assert_eq!(rate.per_second(start + Duration::from_secs(1), start), 100.0);
        assert_eq!(rate.per_second(start + Duration::from_secs(5), start), 20.0);
        assert_eq!(rate.per_second(start + Duration::from_secs(20), start), 0.0);
        assert!(rate.buckets.is_empty());
    }

    #[test]
    fn decided_slots_report_their_latency_and_counter() {
        let mut observer = Observer::new();
        observer.nominated(3);
        observer.nominated(4);
        std::thread::sleep(Duration::from_millis(5));
        observer.nominated(3); // only the first nomination counts
        observer.externalized(3, 2);
        let (elapsed, counter) = observer.decided(3);
        assert!(elapsed >= Duration::from_millis(5), "{elapsed:?}");
        assert_eq!(counter, Some(2));
        assert_eq!(observer.decided(4).1, None);
        assert_eq!(observer.decided(9), (Duration::ZERO, None));
        assert!(observer.first_nominated.is_empty());
    }

    #[test]
    fn status_answers_are_rationed_per_source() {
        let mut observer = Observer::new();
        let now = Instant::now();
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let allowed = (0..100).filter(|_| observer.allow_status(a, now)).count();
        assert_eq!(allowed, STATUS_BURST as usize);
        assert!(observer.allow_status(b, now), "another source has its own allowance");
        assert!(observer.allow_status(a, now + STATUS_EVERY));
    }
}
