//! Authenticated peer traffic: pairwise HMAC-SHA256 authenticators on every node-to-node
//! datagram (PBFT's choice), with a sliding anti-replay window per peer.
//!
//! (Being written; this stub only fixes the key type the configuration produces.)

use crate::quorum::NodeId;
use std::collections::BTreeMap;

/// Length of a pairwise key and of the network id.
pub const KEY_LEN: usize = 32;

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

impl std::fmt::Debug for NetworkKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        write!(f, "NetworkKeys {{ me: {}, peers: {:?} }}", self.me, self.pairwise.keys().collect::<Vec<_>>())
    }
}
