//! The node's side of trust: the authenticators of its peer links (with the boot epoch
//! that keeps replays of an earlier run out), and a watch on the quorum sets peers
//! announce, which warns when one of them breaks quorum intersection with ours.

use super::ServerError;
use crate::auth::{self, Opener, Sealer};
use crate::config::ServerConfig;
use crate::fsio::{self, IoFailure};
use crate::quorum::intersection::{self, Intersection, Network};
use crate::quorum::{NodeId, QuorumSet};
use crate::scp::Statement;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The reader's opener and the senders' sealer, or `None` in development mode.
pub(super) fn authenticators(config: &ServerConfig) -> Result<Option<(Opener, Sealer)>, ServerError> {
    let Some(keys) = &config.keys else { return Ok(None) };
    let epoch = boot_epoch(&config.data_dir, config.port).map_err(ServerError::Epoch)?;
    Ok(Some((Opener::new(keys), Sealer::new(keys, epoch))))
}

/// A boot epoch above every earlier run's, made durable before any datagram is sealed
/// with it (`assignment3_<port>.epoch`: temp file, fsync, rename, directory fsync).
fn boot_epoch(dir: &Path, port: u16) -> Result<u64, IoFailure> {
    let path = dir.join(format!("assignment3_{port}.epoch"));
    let previous = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().ok(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(IoFailure { operation: "read", path, source: e }),
    };
    let clock = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    let epoch = auth::next_epoch(previous, clock);
    let temp = dir.join(format!("assignment3_{port}.epoch.tmp"));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(format!("{epoch}\n").as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, &path)?;
        fsio::sync_dir(dir)
    };
    write().map_err(|source| IoFailure { operation: "write", path: path.clone(), source })?;
    Ok(epoch)
}

/// The quorum sets peers announce in their statements, checked for quorum intersection
/// with this node's own whenever one changes. Nodes not heard from yet are assumed to use
/// this node's quorum set (the assumption its start-up check made).
pub(super) struct QuorumWatch {
    me: NodeId,
    own: QuorumSet,
    known: BTreeMap<NodeId, QuorumSet>,
}

impl QuorumWatch {
    pub(super) fn new(me: NodeId, own: QuorumSet) -> QuorumWatch {
        QuorumWatch { me, own, known: BTreeMap::new() }
    }

    /// Records the quorum set of `peer`'s statement; a warning if it is new and the
    /// network as now known has two disjoint quorums.
    pub(super) fn saw(&mut self, peer: NodeId, statement: &Statement) -> Option<String> {
        if self.known.get(&peer) == Some(&statement.quorum_set) {
            return None;
        }
        self.known.insert(peer, statement.quorum_set.clone());
        match intersection::check(&self.network()) {
            Intersection::Split(a, b) => Some(format!(
                "peer {peer} announces quorum set {} which breaks quorum intersection: the disjoint \
                 quorums {} and {} could decide different values (fix the quorum configuration)",
                describe(&statement.quorum_set),
                set(&a),
                set(&b)
            )),
            _ => None,
        }
    }

    fn network(&self) -> Network {
        let mut network: Network = BTreeMap::new();
        let mut todo = vec![self.me];
        while let Some(node) = todo.pop() {
            if network.contains_key(&node) {
                continue;
            }
            let qset = if node == self.me { &self.own } else { self.known.get(&node).unwrap_or(&self.own) };
            todo.extend(qset.nodes());
            network.insert(node, qset.clone());
        }
        network
    }
}

fn set(nodes: &std::collections::BTreeSet<NodeId>) -> String {
    let names: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    format!("{{{}}}", names.join(", "))
}

fn describe(q: &QuorumSet) -> String {
    let mut parts: Vec<String> = q.validators.iter().map(|n| n.to_string()).collect();
    parts.extend(q.inner_sets.iter().map(describe));
    format!("{} of [{}]", q.threshold, parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scp::Pledges;

    fn statement(node: u64, qset: QuorumSet) -> Statement {
        Statement {
            node: NodeId(node),
            slot: 1,
            quorum_set: qset,
            pledges: Pledges::Nominate { voted: Default::default(), accepted: Default::default() },
        }
    }

    #[test]
    fn a_peer_quorum_set_that_splits_the_network_is_reported_once() {
        let ids = |v: &[u64]| v.iter().map(|&n| NodeId(n)).collect::<Vec<_>>();
        let own = QuorumSet::new(3, ids(&[1, 2, 3, 4]));
        let mut watch = QuorumWatch::new(NodeId(1), own.clone());
        assert_eq!(watch.saw(NodeId(2), &statement(2, own.clone())), None);
        // Node 4 trusts only itself: {4} is a quorum disjoint from {1, 2, 3}.
        let selfish = QuorumSet::new(1, ids(&[4]));
        let warning = watch.saw(NodeId(4), &statement(4, selfish.clone())).expect("a split");
        assert!(warning.contains("peer 4") && warning.contains("{4}"), "{warning}");
        assert_eq!(watch.saw(NodeId(4), &statement(4, selfish)), None, "said once");
    }

    #[test]
    fn boot_epochs_grow_across_runs_and_are_persisted() {
        let dir = std::env::temp_dir().join(format!("fba-epoch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let first = boot_epoch(&dir, 7).expect("epoch");
        let second = boot_epoch(&dir, 7).expect("epoch");
        assert!(second > first);
        std::fs::write(dir.join("assignment3_7.epoch"), format!("{}\n", u64::MAX / 2)).expect("write");
        assert_eq!(boot_epoch(&dir, 7).expect("epoch"), u64::MAX / 2 + 1, "a clock behind the file");
        std::fs::remove_dir_all(&dir).ok();
    }
}
