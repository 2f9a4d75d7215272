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

use super::{Server, ServerError};
use crate::hash::{hex, unhex, Digest};
use crate::ledger::{verify_entry, Entry};
use crate::net::{self, LedgerEntry, Message};
use crate::quorum::{NodeId, QuorumSet};
use crate::scp::{self, Input};
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
        let targets: Vec<NodeId> =
            if force || behind.is_empty() { self.config.peers.keys().copied().collect() } else { behind };
        self.log.verbose(format_args!("catch-up: asking {} peers for slots from {next}", targets.len()));
        for peer in targets {
            self.send_peer(peer, &bytes);
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
        self.send_peer(peer, &net::encode(&message));
    }

    /// A peer's ledger entries: record them, apply those enough peers vouch for.
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

    /// Applies, in order, every next entry vouched for (see [`agreed_batch`]) with one hash
    /// that chains from our ledger. Returns how many were applied.
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
        let entry = |b: Batch| (chain_hash(&[0; 32], 1, &b.encode()), b);
        let real = ids(honest).into_iter().map(|n| (n, entry(batch("real"))));
        real.chain(ids(liars).into_iter().map(|n| (n, entry(batch("forged"))))).collect()
    }

    fn agreed(me: u64, qset: &QuorumSet, offers: &BTreeMap<NodeId, (Digest, Batch)>) -> Option<Batch> {
        agreed_batch(NodeId(me), qset, &[0; 32], 1, offers)
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
        let wrong = (chain_hash(&[1; 32], 1, &batch("real").encode()), batch("real"));
        let offers = ids(&[2, 3, 4]).into_iter().map(|n| (n, wrong.clone())).collect();
        assert_eq!(agreed(1, &q, &offers), None);
    }
}
