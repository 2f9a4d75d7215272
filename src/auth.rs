//! Authenticated peer traffic: a pairwise HMAC-SHA256 authenticator on every node-to-node
//! datagram, with a sliding anti-replay window per peer.
//!
//! **Why MACs and not signatures.** Castro and Liskov's PBFT replaced signatures by
//! *authenticators*: every pair of replicas shares a secret key, and a message carries a MAC
//! under the key of the pair (sender, receiver). A MAC costs about a microsecond; an
//! Ed25519 verification about fifty. What a MAC cannot do is convince a third party, so it
//! only fits a protocol in which nothing is relayed as evidence. In fba every SCP statement
//! travels directly from the node that made it to each of its peers (no statement is
//! forwarded), catch-up accepts a ledger entry only when enough peers vouch for its chain
//! hash *each for itself*, and floods only carry requests that are checked on their own
//! merits. So a MAC proving "this datagram comes from configured node *i*, for me, now" is
//! exactly what every receive path needs, at a tiny fraction of a signature's cost.
//!
//! **The sealed datagram.**
//!
//! ```text
//! "FBA\x01" | sender u64 | receiver u64 | epoch u64 | seq u64 | payload | tag (32 bytes)
//! tag = HMAC-SHA256(K', header | payload)
//! K'  = HMAC-SHA256(K(sender, receiver), "fba-peer-v1" | network)
//! ```
//!
//! * The key is the one the two nodes share (from `fba_server keygen`), so a datagram
//!   sealed for node *j* fails at any other node (*re-targeting*), and nobody without the
//!   key can make a tag (*forgery*; the UDP source address plays no part any more).
//! * Any change to the header or payload, including truncation, breaks the tag.
//! * The network id separates clusters that happen to share node ids.
//! * **Replay.** `epoch` is the sender's boot epoch (strictly increasing across its
//!   restarts: see [`next_epoch`]) and `seq` counts its datagrams to this receiver. The
//!   receiver keeps, per peer, the newest epoch and a window of the last
//!   [`REPLAY_WINDOW`] sequence numbers (RFC 4303 §3.4.3's sliding window, wide because UDP
//!   reorders under load): an older epoch, a seq below the window, or one already seen is
//!   refused. The window moves only *after* the tag verifies, so forgeries cannot push it.
//!
//! Keys are compared in constant time by `ring::hmac::verify`.

use crate::quorum::NodeId;
use ring::hmac;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Length of a pairwise key and of the network id.
pub const KEY_LEN: usize = 32;
/// The first bytes of every sealed datagram (never the start of a JSON or text request).
pub const MAGIC: [u8; 4] = *b"FBA\x01";
/// Header length: magic, sender, receiver, epoch, seq.
pub const HEADER_LEN: usize = 4 + 4 * 8;
/// Length of the HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;
/// Bytes a seal adds to a payload.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Sequence numbers remembered per peer (a multiple of 64).
pub const REPLAY_WINDOW: u64 = 4096;
/// Domain separation of the tag.
const DOMAIN: &[u8] = b"fba-peer-v1";

/// Everything a node needs to authenticate itself to its peers and them to it: the
/// network's id (domain separation between clusters) and one secret key per peer, shared
/// by exactly the two nodes of the pair.
#[derive(Clone, PartialEq, Eq)]
pub struct NetworkKeys {
    /// A random id of the network, the same in every node's key file.
    pub network: [u8; KEY_LEN],
    /// This node.
    pub me: NodeId,
    /// The key this node shares with each peer.
    pub pairwise: BTreeMap<NodeId, [u8; KEY_LEN]>,
}

impl fmt::Debug for NetworkKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets.
        write!(f, "NetworkKeys {{ me: {}, peers: {:?} }}", self.me, self.pairwise.keys().collect::<Vec<_>>())
    }
}

/// Why a sealed datagram was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// Shorter than a header and a tag.
    Truncated(usize),
    /// The sender is not a configured peer.
    UnknownSender(u64),
    /// Sealed for another node.
    WrongReceiver(u64),
    /// The tag does not verify: forged, altered, truncated, or from another network.
    BadTag {
        /// The claimed sender.
        peer: NodeId,
    },
    /// An epoch older than the newest one seen from this peer (a replay from an earlier run).
    StaleEpoch {
        /// The sender.
        peer: NodeId,
    },
    /// A sequence number already seen, or too old to tell.
    Replayed {
        /// The sender.
        peer: NodeId,
        /// The sequence number.
        seq: u64,
    },
    /// The node has no keys (development mode) but the datagram is sealed.
    NoKeys,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Truncated(n) => write!(f, "sealed datagram of {n} bytes is truncated"),
            AuthError::UnknownSender(id) => write!(f, "sealed by {id}, which is not a configured peer"),
            AuthError::WrongReceiver(id) => write!(f, "sealed for node {id}, not for this node"),
            AuthError::BadTag { peer } => write!(f, "authenticator claiming peer {peer} does not verify"),
            AuthError::StaleEpoch { peer } => write!(f, "replay from an earlier run of peer {peer}"),
            AuthError::Replayed { peer, seq } => write!(f, "replayed datagram {seq} of peer {peer}"),
            AuthError::NoKeys => write!(f, "sealed datagram, but this node runs without --key-file"),
        }
    }
}

impl std::error::Error for AuthError {}

/// Does `bytes` look like a sealed datagram?
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

/// The epoch of a new run: the clock in microseconds, but always above the previous run's
/// (`previous`), so a clock set back cannot make peers refuse us as a replay.
pub fn next_epoch(previous: Option<u64>, clock_micros: u64) -> u64 {
    clock_micros.max(previous.map_or(0, |p| p.saturating_add(1)))
}

/// K': the pair's key bound to this protocol and network, so that a tag is an HMAC over
/// the datagram's own contiguous bytes (header and payload) and nothing is copied.
fn link_key(secret: &[u8; KEY_LEN], network: &[u8; KEY_LEN]) -> hmac::Key {
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, secret));
    ctx.update(DOMAIN);
    ctx.update(network);
    hmac::Key::new(hmac::HMAC_SHA256, ctx.sign().as_ref())
}

fn header(sender: NodeId, receiver: NodeId, epoch: u64, seq: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    for (i, word) in [sender.0, receiver.0, epoch, seq].into_iter().enumerate() {
        h[4 + 8 * i..12 + 8 * i].copy_from_slice(&word.to_be_bytes());
    }
    h
}

fn word(bytes: &[u8], index: usize) -> u64 {
    let at = 4 + 8 * index;
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("a header holds four words"))
}

/// The sending half: seals payloads for each peer. Shared by the threads that send.
pub struct Sealer {
    me: NodeId,
    epoch: u64,
    peers: HashMap<NodeId, (hmac::Key, AtomicU64)>,
}

impl Sealer {
    /// A sealer for this run (`epoch` from [`next_epoch`]).
    pub fn new(keys: &NetworkKeys, epoch: u64) -> Sealer {
        let peers = keys
            .pairwise
            .iter()
            .map(|(id, k)| (*id, (link_key(k, &keys.network), AtomicU64::new(0))))
            .collect();
        Sealer { me: keys.me, epoch, peers }
    }

    /// `payload` sealed for `to`, or `None` if `to` is not a peer.
    pub fn seal(&self, to: NodeId, payload: &[u8]) -> Option<Vec<u8>> {
        let (key, counter) = self.peers.get(&to)?;
        let seq = counter.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::with_capacity(OVERHEAD + payload.len());
        out.extend_from_slice(&header(self.me, to, self.epoch, seq));
        out.extend_from_slice(payload);
        let mac = hmac::sign(key, &out);
        out.extend_from_slice(mac.as_ref());
        Some(out)
    }
}

/// The receiving half: checks sealed datagrams. Owned by the reader thread.
pub struct Opener {
    me: NodeId,
    peers: HashMap<NodeId, (hmac::Key, ReplayWindow)>,
}

impl Opener {
    /// An opener for this node's keys.
    pub fn new(keys: &NetworkKeys) -> Opener {
        let peers = keys
            .pairwise
            .iter()
            .map(|(id, k)| (*id, (link_key(k, &keys.network), ReplayWindow::default())))
            .collect();
        Opener { me: keys.me, peers }
    }

    /// Checks a sealed datagram: the sender and the payload if it is authentic, fresh and
    /// meant for us. The checks run cheapest first; the replay window moves only after the
    /// tag verified.
    pub fn open<'a>(&mut self, bytes: &'a [u8]) -> Result<(NodeId, &'a [u8]), AuthError> {
        if bytes.len() < OVERHEAD || !is_sealed(bytes) {
            return Err(AuthError::Truncated(bytes.len()));
        }
        let (sender, receiver, epoch, seq) = (word(bytes, 0), word(bytes, 1), word(bytes, 2), word(bytes, 3));
        if receiver != self.me.0 {
            return Err(AuthError::WrongReceiver(receiver));
        }
        let peer = NodeId(sender);
        let (key, window) = self.peers.get_mut(&peer).ok_or(AuthError::UnknownSender(sender))?;
        window.check(peer, epoch, seq)?;
        let (signed, mac) = bytes.split_at(bytes.len() - TAG_LEN);
        hmac::verify(key, signed, mac).map_err(|_| AuthError::BadTag { peer })?;
        window.accept(epoch, seq);
        Ok((peer, &signed[HEADER_LEN..]))
    }
}

/// The anti-replay state of one peer: its newest epoch, the highest seq seen in it, and a
/// bitmap of which of the [`REPLAY_WINDOW`] seqs up to the highest were seen.
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    epoch: u64,
    highest: Option<u64>,
    seen: Vec<u64>,
}

impl ReplayWindow {
    /// Would (epoch, seq) be fresh? Changes nothing.
    pub fn check(&self, peer: NodeId, epoch: u64, seq: u64) -> Result<(), AuthError> {
        if epoch < self.epoch {
            return Err(AuthError::StaleEpoch { peer });
        }
        match self.highest {
            Some(highest) if epoch == self.epoch && seq <= highest => {
                if highest - seq >= REPLAY_WINDOW || self.bit(seq) {
                    Err(AuthError::Replayed { peer, seq })
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Records (epoch, seq) as seen; call only after [`ReplayWindow::check`] and the tag.
    pub fn accept(&mut self, epoch: u64, seq: u64) {
        if self.seen.is_empty() {
            self.seen = vec![0; (REPLAY_WINDOW / 64) as usize];
        }
        if epoch > self.epoch || self.highest.is_none() {
            self.epoch = epoch;
            self.highest = Some(seq);
            self.seen.fill(0);
        }
        let highest = self.highest.expect("set above");
        if seq > highest {
            // Clear the bits of the seqs the window slides over.
            let advance = seq - highest;
            if advance >= REPLAY_WINDOW {
                self.seen.fill(0);
            } else {
                for s in highest + 1..=seq {
                    self.set_bit(s, false);
                }
            }
            self.highest = Some(seq);
        }
        self.set_bit(seq, true);
    }

    fn bit(&self, seq: u64) -> bool {
        let i = (seq % REPLAY_WINDOW) as usize;
        self.seen.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn set_bit(&mut self, seq: u64, on: bool) {
        let i = (seq % REPLAY_WINDOW) as usize;
        let mask = 1u64 << (i % 64);
        if on {
            self.seen[i / 64] |= mask;
        } else {
            self.seen[i / 64] &= !mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys of a three-node network 1, 2, 3 as node `me` holds them.
    fn keys(me: u64) -> NetworkKeys {
        let pair = |a: u64, b: u64| {
            let (lo, hi) = (a.min(b), a.max(b));
            [(lo * 16 + hi) as u8; KEY_LEN]
        };
        let pairwise = [1, 2, 3].into_iter().filter(|&p| p != me).map(|p| (NodeId(p), pair(me, p))).collect();
        NetworkKeys { network: [9; KEY_LEN], me: NodeId(me), pairwise }
    }

    #[test]
    fn a_sealed_datagram_opens_once_at_its_receiver_only() {
        let sealer = Sealer::new(&keys(1), 100);
        let sealed = sealer.seal(NodeId(2), b"{\"hello\":1}").expect("2 is a peer");
        assert_eq!(sealed.len(), OVERHEAD + 11);
        let mut at2 = Opener::new(&keys(2));
        assert_eq!(at2.open(&sealed), Ok((NodeId(1), &b"{\"hello\":1}"[..])));
        // Replayed to the same node: refused.
        assert_eq!(at2.open(&sealed), Err(AuthError::Replayed { peer: NodeId(1), seq: 0 }));
        // Re-targeted to node 3: the header names 2.
        let mut at3 = Opener::new(&keys(3));
        assert_eq!(at3.open(&sealed), Err(AuthError::WrongReceiver(2)));
        assert!(sealer.seal(NodeId(9), b"x").is_none());
    }

    #[test]
    fn forged_altered_truncated_and_retargeted_datagrams_are_refused() {
        let sealer = Sealer::new(&keys(1), 100);
        let sealed = sealer.seal(NodeId(2), b"payload").expect("peer");
        let mut at2 = Opener::new(&keys(2));
        // Every single-bit flip anywhere is refused (header, payload or tag).
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x10;
            assert!(at2.open(&bad).is_err(), "flip at byte {i} accepted");
        }
        // Truncations, by any amount.
        for n in 0..sealed.len() {
            assert!(at2.open(&sealed[..n]).is_err(), "truncation to {n} accepted");
        }
        // Re-targeted by rewriting the receiver field to 3 (and sent to 3): the tag breaks.
        let mut retarget = sealed.clone();
        retarget[12..20].copy_from_slice(&3u64.to_be_bytes());
        assert_eq!(Opener::new(&keys(3)).open(&retarget), Err(AuthError::BadTag { peer: NodeId(1) }));
        // Forged by node 3 claiming to be node 1, with its own key: the tag breaks.
        let mut k3 = keys(3);
        k3.me = NodeId(1);
        k3.pairwise.insert(NodeId(2), [0x23; KEY_LEN]);
        let forged = Sealer::new(&k3, 100).seal(NodeId(2), b"payload").expect("peer");
        assert_eq!(at2.open(&forged), Err(AuthError::BadTag { peer: NodeId(1) }));
        // Another network with the same pairwise keys.
        let mut other = keys(1);
        other.network = [8; KEY_LEN];
        let foreign = Sealer::new(&other, 100).seal(NodeId(2), b"payload").expect("peer");
        assert_eq!(at2.open(&foreign), Err(AuthError::BadTag { peer: NodeId(1) }));
        // None of that moved the window: the genuine datagram still opens.
        assert!(at2.open(&sealed).is_ok());
    }

    #[test]
    fn reordering_within_the_window_is_accepted_and_old_epochs_are_not() {
        let sealer = Sealer::new(&keys(1), 100);
        let all: Vec<Vec<u8>> = (0..10).map(|_| sealer.seal(NodeId(2), b"m").expect("peer")).collect();
        let mut at2 = Opener::new(&keys(2));
        for i in [3, 0, 9, 1, 2, 8, 4, 7, 5, 6] {
            assert!(at2.open(&all[i]).is_ok(), "datagram {i} refused");
        }
        for d in &all {
            assert!(matches!(at2.open(d), Err(AuthError::Replayed { .. })));
        }
        // The peer restarts with a newer epoch: accepted, and its old run is now refused.
        let restarted = Sealer::new(&keys(1), 200);
        let fresh = restarted.seal(NodeId(2), b"m").expect("peer");
        assert!(at2.open(&fresh).is_ok());
        let late = sealer.seal(NodeId(2), b"m").expect("peer");
        assert_eq!(at2.open(&late), Err(AuthError::StaleEpoch { peer: NodeId(1) }));
    }

    #[test]
    fn the_window_slides_and_forgets_only_what_is_too_old() {
        let mut w = ReplayWindow::default();
        let p = NodeId(1);
        w.accept(1, 0);
        w.accept(1, REPLAY_WINDOW + 5);
        assert!(w.check(p, 1, 5).is_err(), "below the window");
        assert!(w.check(p, 1, 6).is_ok(), "inside the window, never seen");
        assert!(w.check(p, 1, REPLAY_WINDOW + 5).is_err(), "seen");
        w.accept(1, 6);
        assert!(w.check(p, 1, 6).is_err());
        // Sliding by less than the window clears exactly the bits slid over.
        w.accept(1, REPLAY_WINDOW + 7);
        assert!(w.check(p, 1, REPLAY_WINDOW + 6).is_ok());
        assert!(w.check(p, 1, 6).is_err(), "now below the window");
    }

    #[test]
    fn epochs_always_grow() {
        assert_eq!(next_epoch(None, 50), 50);
        assert_eq!(next_epoch(Some(10), 50), 50);
        assert_eq!(next_epoch(Some(80), 50), 81, "a clock set back still gives a newer epoch");
    }
}
