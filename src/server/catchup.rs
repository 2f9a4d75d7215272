//! Catch-up: fetching the slots a node missed from its peers' ledgers.
//!
//! SCP itself lets a node that fell a little behind finish: its statements about old slots
//! are answered with EXTERNALIZE. A node that was down for longer asks its peers for their
//! ledger from its next slot on (`catchup {from}`); each answers with as many entries as
//! fit in a datagram (`ledger {last, entries}`). A peer may lie, so an entry is applied
//! only when a **v-blocking** set of peers offered the same chain hash for it (a set that
//! must contain an honest node if the local node's quorum slices are well chosen) and the
//! hash chains from the node's own last entry. The node asks again until it has every slot
//! its peers have, then tells the SCP core to carry on from there.

use super::{Server, ServerError};
use crate::hash::{hex, unhex, Digest};
use crate::ledger::{verify_entry, Entry};
use crate::net::{self, LedgerEntry, Message};
use crate::quorum::NodeId;
use crate::scp::Input;
use crate::wallet::Batch;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Bytes of ledger entries per answer (a datagram holds 60,000).
const CHUNK_BYTES: usize = 40_000;
/// Offers are kept for at most this many slots beyond the ledger (bounded memory).
const MAX_OFFER_SLOTS: u64 = 4096;
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
}

impl CatchUp {
    /// A peer spoke about `slot` or reported a ledger that long.
    pub fn saw(&mut self, peer: NodeId, slot: u64) {
        let e = self.peer_ahead.entry(peer).or_insert(0);
        *e = (*e).max(slot);
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
        let bytes = net::encode(&Message::CatchUp { from: next });
        let targets: Vec<_> = if force || behind.is_empty() {
            self.config.peers.values().copied().collect()
        } else {
            behind.iter().filter_map(|n| self.config.peers.get(n).copied()).collect()
        };
        self.log.verbose(format_args!("catch-up: asking {} peers for slots from {next}", targets.len()));
        for addr in targets {
            self.send(addr, &bytes);
        }
    }

    /// A peer asks for our ledger from `from`.
    pub(super) fn serve_catchup(&mut self, peer: NodeId, from: u64) {
        let entries = if from == 0 || from > self.ledger.len() {
            Vec::new()
        } else {
            match self.ledger.read_from(from, CHUNK_BYTES) {
                Ok(entries) => entries,
                Err(e) => {
                    self.log.always(format_args!("catch-up: cannot read the ledger for {peer}: {e}"));
                    return;
                }
            }
        };
        let entries = entries
            .into_iter()
            .map(|Entry { slot, batch, hash }| LedgerEntry { slot, hash: hex(&hash), batch })
            .collect();
        let message = Message::Ledger { last: self.ledger.len(), entries };
        if let Some(addr) = self.config.peers.get(&peer).copied() {
            self.send(addr, &net::encode(&message));
        }
    }

    /// A peer's ledger entries: record them, apply those a v-blocking set agrees on.
    pub(super) fn on_ledger_offer(
        &mut self,
        peer: NodeId,
        last: u64,
        entries: Vec<LedgerEntry>,
    ) -> Result<(), ServerError> {
        self.catchup.saw(peer, last);
        let base = self.ledger.len();
        for entry in entries {
            let Some(hash) = unhex(&entry.hash).and_then(|h| Digest::try_from(h).ok()) else { continue };
            if entry.slot > base && entry.slot <= base + MAX_OFFER_SLOTS {
                self.catchup.offers.entry(entry.slot).or_default().insert(peer, (hash, entry.batch));
            }
        }
        let applied = self.apply_agreed_offers()?;
        if applied > 0 {
            self.log.always(format_args!(
                "caught up {applied} slots from peers' ledgers; now at slot {}",
                self.ledger.len()
            ));
            self.step(Input::CaughtUp { next: self.ledger.len() + 1 })?;
            // Progress, and more to fetch: ask for the next chunk straight away (only an
            // answer that moved us on does this, so duplicates cannot multiply requests).
            self.request_catchup_if_behind(false);
        }
        Ok(())
    }

    /// Every [`PROBE_INTERVAL`], asks every peer for the ledger from our next slot; the
    /// answers (empty when a peer has nothing newer) tell us who is ahead.
    pub(super) fn probe_peers(&mut self) {
        if self.catchup.last_probe.is_some_and(|t| t.elapsed() < PROBE_INTERVAL) {
            return;
        }
        self.catchup.last_probe = Some(Instant::now());
        let bytes = net::encode(&Message::CatchUp { from: self.ledger.len() + 1 });
        self.broadcast(&bytes);
    }

    /// Applies, in order, every next entry that a v-blocking set offered with one hash that
    /// chains from our ledger. Returns how many were applied.
    fn apply_agreed_offers(&mut self) -> Result<u64, ServerError> {
        let mut applied = 0;
        let mut changed = false;
        loop {
            let slot = self.ledger.len() + 1;
            self.catchup.offers.retain(|s, _| *s >= slot);
            let Some(offers) = self.catchup.offers.get(&slot) else { break };
            let Some(batch) = self.agreed(slot, offers) else { break };
            self.catchup.offers.remove(&slot);
            changed |= self.apply_decided(slot, &batch)?;
            applied += 1;
        }
        if changed {
            self.save_db()?;
        }
        Ok(applied)
    }

    /// The batch for `slot` that a v-blocking set of peers vouches for, if it chains.
    fn agreed(&self, slot: u64, offers: &BTreeMap<NodeId, (Digest, Batch)>) -> Option<Batch> {
        let prev = self.ledger.last_hash();
        let qset = &self.config.quorum_set;
        offers.values().find_map(|(hash, batch)| {
            let vouching = |n: NodeId| offers.get(&n).is_some_and(|(h, _)| h == hash);
            let entry = Entry { slot, batch: batch.clone(), hash: *hash };
            (qset.is_v_blocking(&vouching) && verify_entry(&prev, &entry)).then_some(entry.batch)
        })
    }
}
