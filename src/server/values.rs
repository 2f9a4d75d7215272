//! Values by hash: what SCP agrees on is the SHA-256 of a slot's batch, not the batch.
//!
//! SCP statements name their values again and again: a slot's x appears in the NOMINATE
//! sets X and Y of every node, then in b, p, p', c and h of every ballot statement, each
//! sent to every peer and journaled. When x was the batch itself, a slot of 64 requests
//! moved about a hundred copies of it through JSON and base64 on every node. Here x is
//! the 32-byte digest of the batch's canonical encoding ([`Batch::encode`]), as
//! stellar-core's values name transaction sets by hash, and the batch travels once:
//!
//! * the node that **creates** a value (its proposal, or the composite it combined from
//!   the candidates Z) sends the batch to its peers in a `value` message just before the
//!   first statement naming it ([`Values::announce`]);
//! * a statement naming a digest the node does not hold is **parked** and the batch
//!   **fetched** from the statement's sender, which holds it since it named it; the
//!   statement goes to the core once every batch it names is here ([`Values::ready`]).
//!   A lost answer is asked for again when the peer re-sends its statement;
//! * a batch is kept while slots that may still name it are open, and for the decided
//!   slots the core still answers laggards about ([`Values::prune`]);
//! * every batch named by one of the node's own statements is written to the SCP journal
//!   with it ([`Values::unjournaled`]), so a restarted node can still validate and apply
//!   what it voted for even if every peer restarted too.
//!
//! The core never sees a digest it cannot resolve: [`Values::missing`] holds statements
//! back, and [`crate::server::WalletApp`] refuses any value it cannot resolve. Unsolicited
//! batches (announcements) are bounded per peer, so a member cannot fill memory with
//! batches nobody names.

use crate::hash::Digest;
use crate::quorum::NodeId;
use crate::scp::{SlotIndex, Statement, Value};
use crate::wallet::Batch;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Unsolicited batches kept per peer before its oldest unnamed one is dropped.
const UNSOLICITED_PER_PEER: usize = 16;
/// Statements held back waiting for batches, in all (beyond that new ones are dropped:
/// their senders re-send them).
const MAX_PARKED: usize = 1024;
/// A batch asked for is not asked for again from the same peer sooner than this.
const ASK_AGAIN_AFTER: Duration = Duration::from_millis(20);
/// Most digests one `fetch` message may ask for.
pub const MAX_FETCH: usize = 8;
/// Fetches remembered (beyond that the oldest are forgotten: at worst a batch is asked
/// for again sooner), so statements naming ever new digests cannot grow memory.
const MAX_ASKED: usize = 4096;
/// Bytes of batches per second a node sends one peer in answer to its fetches; an
/// honest peer fetches only what it missed, a few batches a second at most.
pub const FETCH_BYTES_PER_SECOND: f64 = 2_000_000.0;
/// Burst of those bytes.
pub const FETCH_BURST_BYTES: f64 = 4_000_000.0;

/// A batch and what is known about its use.
struct Entry {
    batch: Arc<Batch>,
    /// Its canonical encoding (the digest's preimage), for announcing and journaling.
    bytes: Arc<[u8]>,
    /// The highest slot a statement named it for (or the slot open when it arrived).
    slot: SlotIndex,
}

/// Where a parked statement waits: one per sender, slot and kind, the newest replacing.
type ParkKey = (NodeId, SlotIndex, bool);

/// The node's batches by digest, and the statements waiting for batches it lacks.
#[derive(Default)]
pub struct Values {
    known: HashMap<Digest, Entry>,
    /// Unsolicited batches per peer, oldest first, until a statement names them.
    unsolicited: HashMap<NodeId, VecDeque<Digest>>,
    /// Digests asked for: from which peer and when.
    asked: HashMap<(Digest, NodeId), Instant>,
    /// Statements held back, with the sender to fetch from.
    parked: BTreeMap<ParkKey, Statement>,
    /// Values this node created that no peer was sent yet.
    unannounced: HashSet<Digest>,
    /// Values named by our own statements already written to the journal.
    journaled: HashSet<Digest>,
}

/// The digest a value stands for, if it is one (32 bytes).
pub fn digest_of(value: &Value) -> Option<Digest> {
    Digest::try_from(value.as_bytes()).ok()
}

impl Values {
    /// Stores a batch this node made (a proposal or a composite) for `slot`; returns the
    /// value naming it. It is announced with the first statement that names it.
    pub fn create(&mut self, batch: Batch, slot: SlotIndex) -> Value {
        let bytes = Arc::clone(batch.encoded());
        let digest = crate::hash::sha256(&bytes);
        if !self.known.contains_key(&digest) {
            self.unannounced.insert(digest);
        }
        self.store(digest, Arc::new(batch), bytes, slot);
        Value::new(digest.to_vec())
    }

    /// Stores a batch read back from the journal (it was named by our own statements).
    pub fn restore(&mut self, bytes: &[u8], slot: SlotIndex) -> Option<Digest> {
        let batch = Batch::decode(bytes).ok()?;
        let digest = crate::hash::sha256(bytes);
        self.store(digest, Arc::new(batch), bytes.into(), slot);
        self.journaled.insert(digest);
        Some(digest)
    }

    /// A batch a peer sent, with its `digest` (answering our fetch, or announcing its own value). Kept if
    /// we asked for it or a parked statement names it; otherwise as one of the peer's
    /// few unsolicited batches. Returns whether it is new here.
    pub fn offer(&mut self, peer: NodeId, batch: Batch, digest: Digest, slot: SlotIndex) -> bool {
        debug_assert_eq!(digest, crate::hash::sha256(batch.encode()), "the caller hashed this batch");
        let bytes = Arc::clone(batch.encoded());
        if self.known.contains_key(&digest) {
            // Every node pools the same flooded requests, so proposals often coincide: a
            // peer announced this batch to everyone already, ours need not go out.
            self.unannounced.remove(&digest);
            return false;
        }
        let asked = self.asked.keys().any(|(d, _)| *d == digest);
        let named = self.parked.values().any(|st| names(st, &digest));
        if !asked && !named {
            let queue = self.unsolicited.entry(peer).or_default();
            if queue.len() >= UNSOLICITED_PER_PEER {
                if let Some(old) = queue.pop_front() {
                    self.known.remove(&old);
                }
            }
            queue.push_back(digest);
        }
        self.asked.retain(|(d, _), _| *d != digest);
        self.store(digest, Arc::new(batch), bytes, slot);
        true
    }

    fn store(&mut self, digest: Digest, batch: Arc<Batch>, bytes: Arc<[u8]>, slot: SlotIndex) {
        let entry = self.known.entry(digest).or_insert(Entry { batch, bytes, slot });
        entry.slot = entry.slot.max(slot);
    }

    /// The batch a value names, if this node holds it.
    pub fn get(&self, value: &Value) -> Option<&Arc<Batch>> {
        self.known.get(&digest_of(value)?).map(|e| &e.batch)
    }

    /// The canonical encoding of the batch with this digest, if held.
    pub fn bytes(&self, digest: &Digest) -> Option<&Arc<[u8]>> {
        self.known.get(digest).map(|e| &e.bytes)
    }

    /// The digests a statement names that this node does not hold (values that are not
    /// digests are left to the core, which refuses them as invalid).
    pub fn missing(&self, statement: &Statement) -> Vec<Digest> {
        let mut missing: Vec<Digest> = statement
            .pledges
            .values()
            .into_iter()
            .filter_map(digest_of)
            .filter(|d| !self.known.contains_key(d))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// Whether every value `statement` names is a digest of a batch held here.
    pub fn resolves(&self, statement: &Statement) -> bool {
        statement.pledges.values().into_iter().all(|v| self.get(v).is_some())
    }

    /// Marks the batches a peer's statement names as in use up to its slot (and no
    /// longer unsolicited), so pruning keeps them. A batch a peer names is not ours to
    /// announce any more: the node that made it announced it, and a peer that lacks it
    /// fetches it.
    pub fn touch(&mut self, statement: &Statement) {
        for digest in statement.pledges.values().into_iter().filter_map(digest_of) {
            self.unannounced.remove(&digest);
            if let Some(entry) = self.known.get_mut(&digest) {
                entry.slot = entry.slot.max(statement.slot);
                for queue in self.unsolicited.values_mut() {
                    queue.retain(|d| *d != digest);
                }
            }
        }
    }

    /// Holds `statement` from `peer` back until the batches it names arrive; returns the
    /// digests to ask `peer` for now (none asked of it in the last [`ASK_AGAIN_AFTER`]).
    pub fn park(
        &mut self,
        peer: NodeId,
        statement: Statement,
        missing: &[Digest],
        now: Instant,
    ) -> Vec<Digest> {
        let key = (peer, statement.slot, statement.pledges.is_ballot());
        if self.parked.len() < MAX_PARKED || self.parked.contains_key(&key) {
            self.parked.insert(key, statement);
        }
        if self.asked.len() >= MAX_ASKED {
            let oldest = self.asked.values().min().copied();
            self.asked.retain(|_, at| Some(*at) != oldest);
        }
        let mut ask = Vec::new();
        for digest in missing.iter().take(MAX_FETCH) {
            let last = self.asked.get(&(*digest, peer));
            if last.is_none_or(|at| now.duration_since(*at) >= ASK_AGAIN_AFTER) {
                self.asked.insert((*digest, peer), now);
                ask.push(*digest);
            }
        }
        ask
    }

    /// The parked statements whose batches are all here now, taken out, with their
    /// senders.
    pub fn ready(&mut self) -> Vec<(NodeId, Statement)> {
        let known = &self.known;
        let complete: Vec<ParkKey> = self
            .parked
            .iter()
            .filter(|(_, st)| {
                st.pledges.values().into_iter().filter_map(digest_of).all(|d| known.contains_key(&d))
            })
            .map(|(key, _)| *key)
            .collect();
        complete.into_iter().filter_map(|key| self.parked.remove(&key).map(|st| (key.0, st))).collect()
    }

    /// The batches of our own `statement` to send before it: those we created and have
    /// not announced yet (their values, encodings and request counts).
    pub fn announce(&mut self, statement: &Statement) -> Vec<(Value, Arc<[u8]>, usize)> {
        let mut out = Vec::new();
        for value in statement.pledges.values() {
            let Some(digest) = digest_of(value) else { continue };
            if self.unannounced.remove(&digest) {
                if let Some(entry) = self.known.get(&digest) {
                    out.push((value.clone(), entry.bytes.clone(), entry.batch.len()));
                }
            }
        }
        out
    }

    /// The batches of our own `statement` not yet written to the journal (marked as
    /// written: the caller writes them before the statement).
    pub fn unjournaled(&mut self, statement: &Statement) -> Vec<Arc<[u8]>> {
        let mut out = Vec::new();
        for digest in statement.pledges.values().into_iter().filter_map(digest_of) {
            if let Some(bytes) = self.known.get(&digest).map(|e| e.bytes.clone()) {
                if self.journaled.insert(digest) {
                    out.push(bytes);
                }
            }
        }
        out
    }

    /// The journal was rewritten keeping exactly the batches named by `kept`.
    pub fn journal_rewritten<'a>(&mut self, kept: impl IntoIterator<Item = &'a Statement>) {
        self.journaled = kept.into_iter().flat_map(|st| st.pledges.values()).filter_map(digest_of).collect();
    }

    /// Forgets batches last named for a slot before `oldest`, parked statements about
    /// slots before `next`, and fetches older than a second.
    pub fn prune(&mut self, oldest: SlotIndex, next: SlotIndex, now: Instant) {
        self.known.retain(|_, e| e.slot >= oldest);
        let known = &self.known;
        for queue in self.unsolicited.values_mut() {
            queue.retain(|d| known.contains_key(d));
        }
        self.unannounced.retain(|d| known.contains_key(d));
        self.parked.retain(|(_, slot, _), _| *slot >= next);
        self.asked.retain(|_, at| now.duration_since(*at) < Duration::from_secs(1));
    }

    /// How many batches are held and how many statements wait.
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize) {
        (self.known.len(), self.parked.len())
    }
}

/// Whether `statement` names the batch with this digest.
fn names(statement: &Statement, digest: &Digest) -> bool {
    statement.pledges.values().into_iter().any(|v| v.as_bytes() == digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::QuorumSet;
    use crate::scp::{Ballot, Pledges};
    use crate::wallet::{Op, Request};

    fn batch(n: u64) -> Batch {
        Batch::new(vec![Request::new(n, 1, Op::Get { key: "k".parse().unwrap() })])
    }

    fn digest(batch: &Batch) -> Digest {
        crate::hash::sha256(batch.encode())
    }

    fn prepare(node: u64, slot: SlotIndex, value: &Value) -> Statement {
        Statement {
            node: NodeId(node),
            slot,
            quorum_set: QuorumSet::new(1, [NodeId(node)]),
            pledges: Pledges::Prepare {
                ballot: Ballot::new(1, value.clone()),
                prepared: None,
                prepared_prime: None,
                n_c: 0,
                n_h: 0,
            },
        }
    }

    #[test]
    fn a_statement_waits_for_its_batch_and_the_batch_is_asked_for_once_per_interval() {
        let mut owner = Values::default();
        let value = owner.create(batch(1), 5);
        let statement = prepare(2, 5, &value);
        let announced = owner.announce(&statement);
        assert_eq!(announced.len(), 1, "the creator sends its batch once");
        assert_eq!((&announced[0].0, announced[0].2), (&value, 1));
        assert!(owner.announce(&statement).is_empty());

        let mut values = Values::default();
        let now = Instant::now();
        let missing = values.missing(&statement);
        assert_eq!(missing.len(), 1);
        assert_eq!(values.park(NodeId(2), statement.clone(), &missing, now), missing);
        assert!(
            values.park(NodeId(2), statement.clone(), &missing, now).is_empty(),
            "not asked again at once"
        );
        assert_eq!(values.park(NodeId(2), statement, &missing, now + ASK_AGAIN_AFTER), missing);
        assert!(values.ready().is_empty());
        assert!(values.offer(NodeId(2), batch(1), digest(&batch(1)), 5));
        let ready = values.ready();
        assert_eq!(ready.len(), 1);
        assert_eq!(values.get(&value).map(|b| b.len()), Some(1));
        assert_eq!(values.counts(), (1, 0));
    }

    #[test]
    fn unsolicited_batches_are_bounded_per_peer_and_pruning_keeps_named_ones() {
        let mut values = Values::default();
        for n in 0..3 * UNSOLICITED_PER_PEER as u64 {
            values.offer(NodeId(9), batch(n), digest(&batch(n)), 1);
        }
        assert_eq!(values.counts().0, UNSOLICITED_PER_PEER, "a peer cannot fill memory");
        let named = Value::new(crate::hash::sha256(batch(100).encode()).to_vec());
        values.offer(NodeId(9), batch(100), digest(&batch(100)), 1);
        values.touch(&prepare(9, 40, &named));
        for n in 200..200 + 2 * UNSOLICITED_PER_PEER as u64 {
            values.offer(NodeId(9), batch(n), digest(&batch(n)), 1);
        }
        assert!(values.get(&named).is_some(), "a named batch is no longer unsolicited");
        values.prune(10, 11, Instant::now());
        assert_eq!(values.counts().0, 1, "only the batch named for slot 40 is still needed");
        assert!(values.get(&Value::new(*b"not a digest")).is_none());
    }

    #[test]
    fn statements_naming_ever_new_digests_cost_bounded_memory() {
        let mut values = Values::default();
        let now = Instant::now();
        for n in 0..3 * MAX_ASKED as u64 {
            let mut digest = [0u8; 32];
            digest[..8].copy_from_slice(&n.to_be_bytes());
            let statement = prepare(9, 5 + n % 3, &Value::new(digest.to_vec()));
            let missing = values.missing(&statement);
            values.park(NodeId(9), statement, &missing, now + Duration::from_micros(n));
        }
        assert!(values.asked.len() <= MAX_ASKED, "{} fetches remembered", values.asked.len());
        assert_eq!(values.counts(), (0, 3), "one statement per sender, slot and kind");
    }

    #[test]
    fn own_batches_are_journaled_once() {
        let mut values = Values::default();
        let value = values.create(batch(1), 3);
        let statement = prepare(1, 3, &value);
        assert_eq!(values.unjournaled(&statement).len(), 1);
        assert!(values.unjournaled(&statement).is_empty());
        values.journal_rewritten([]);
        assert_eq!(values.unjournaled(&statement).len(), 1, "a rewrite that dropped it writes it again");
        let mut restored = Values::default();
        let bytes = values.bytes(&digest_of(&value).unwrap()).unwrap().clone();
        assert_eq!(restored.restore(&bytes, 3), digest_of(&value));
        assert!(restored.unjournaled(&statement).is_empty(), "read back from the journal");
    }
}
