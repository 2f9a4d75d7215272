//! Membership changes, the shell's part: refusing at once a reconfiguration that cannot
//! work, and adopting one the cluster decided.
//!
//! The replicated part is in [`crate::wallet::membership`]: a `reconfigure` request is
//! decided in a slot like any other and applied by the wallet, which checks it alike on
//! every node. After each applied slot (decided here or learned by catch-up, and at
//! start-up after replaying the ledger) the node compares the wallet's membership with the
//! one it runs and, if it changed, adopts it before the next slot: its quorum set (the
//! core's Q(v)), its peers and their addresses, the pool's shares, and the silent-peer
//! and quorum bookkeeping. A node the new configuration leaves out stops once its
//! replies are sent; a node it adds joins by catching up from the members' ledgers.

use super::{Server, ServerError};
use crate::config::ServerConfig;
use crate::quorum::NodeId;
use crate::wallet::membership::{Membership, MembershipProblem};
use std::fmt;

/// Why a node refuses a reconfiguration the moment a client sends it, before consensus.
#[derive(Debug)]
pub(super) enum EntryRefusal {
    /// The cluster would refuse it when applying it.
    Invalid(MembershipProblem),
    /// An address that is not loopback, in development mode.
    NotLoopback {
        /// The address.
        address: String,
    },
    /// A node this node's key file has no key for: it could not talk to it.
    NoKey {
        /// The node.
        id: u64,
    },
    /// Too few of the current members stay members: the new ones could not catch up
    /// from enough of them, and the old and new configurations need not share a quorum.
    TooFewStay {
        /// Current members that stay.
        kept: usize,
        /// The current threshold.
        threshold: u32,
    },
}

impl fmt::Display for EntryRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryRefusal::Invalid(problem) => write!(f, "{problem}"),
            EntryRefusal::NotLoopback { address } => write!(
                f,
                "address {address} is not loopback: a node without --key-file talks only to loopback peers"
            ),
            EntryRefusal::NoKey { id } => write!(
                f,
                "node {id} is not in this node's key file: list every node that may join when running \
                 `fba_server keygen`"
            ),
            EntryRefusal::TooFewStay { kept, threshold } => write!(
                f,
                "only {kept} of the current members stay, fewer than the current threshold {threshold}: \
                 change membership a few nodes at a time, keeping a quorum of the current members"
            ),
        }
    }
}

impl Server {
    /// The membership this node runs: `threshold` of itself and its configured peers
    /// (a nested quorum set counts by its own threshold).
    fn running_members(&self) -> (u32, Vec<u64>) {
        let mut ids: Vec<u64> = self.config.peers.keys().map(|id| id.0).collect();
        ids.push(self.config.id.0);
        (self.config.quorum_set.threshold, ids)
    }

    /// Checks a reconfiguration a client sent: what the wallet would refuse, a non-loopback
    /// address in development mode, and a change that keeps fewer of the current members
    /// than the current threshold. A refusal here is an answer, not a decision: the
    /// wallet's check when the request is applied is the one every node makes alike.
    pub(super) fn check_reconfigure(&self, membership: &Membership) -> Result<(), EntryRefusal> {
        let checked = membership.check().map_err(EntryRefusal::Invalid)?;
        if let Some(keys) = &self.config.keys {
            let me = self.config.id;
            let keyless =
                checked.members.iter().find(|m| m.id != me.0 && !keys.pairwise.contains_key(&NodeId(m.id)));
            if let Some(member) = keyless {
                return Err(EntryRefusal::NoKey { id: member.id });
            }
        }
        if self.config.development_mode() {
            let remote = checked
                .members
                .iter()
                .find(|m| m.address.parse().is_ok_and(|a: std::net::SocketAddr| !a.ip().is_loopback()));
            if let Some(member) = remote {
                return Err(EntryRefusal::NotLoopback { address: member.address.clone() });
            }
        }
        let (threshold, current) = self.running_members();
        let kept = current.iter().filter(|id| checked.contains(**id)).count();
        if kept < threshold as usize {
            return Err(EntryRefusal::TooFewStay { kept, threshold });
        }
        Ok(())
    }

    /// After a slot is applied: adopts the wallet's membership if it changed (see the
    /// module docs). A node left out is marked to stop.
    pub(super) fn adopt_membership(&mut self, slot: u64) -> Result<(), ServerError> {
        let Some(membership) = self.wallet.membership().cloned() else { return Ok(()) };
        if self.adopted.as_ref() == Some(&membership) {
            return Ok(());
        }
        let me = self.config.id;
        self.adopted = Some(membership.clone());
        if !membership.contains(me.0) {
            self.log.warn(format_args!(
                "removed from the cluster by the reconfiguration of slot {slot} (now {}): stopping",
                describe(&membership)
            ));
            self.removed = true;
            return Ok(());
        }
        self.node.set_quorum_set(membership.quorum_set()).map_err(ServerError::Scp)?;
        self.config.quorum_set = membership.quorum_set();
        self.config.peers = membership.peers_of(me);
        self.peer_ids = self.config.peers.iter().map(|(id, addr)| (*addr, *id)).collect();
        self.forget_former_peers();
        self.pool.set_peers(self.config.peers.len());
        self.quorum_watch = super::trust::QuorumWatch::new(me, self.config.quorum_set.clone());
        self.log.info(format_args!("membership changed in slot {slot}: now {}", describe(&membership)));
        Ok(())
    }

    /// Drops what is known about nodes that are no longer peers, and starts the silence
    /// clocks of new ones at the current busy time (a new peer is not mute at once).
    fn forget_former_peers(&mut self) {
        let peers = &self.config.peers;
        self.last_heard.retain(|id, _| peers.contains_key(id));
        self.last_useful.retain(|id, _| peers.contains_key(id));
        for id in peers.keys() {
            self.last_useful.entry(*id).or_insert(self.busy_clock);
        }
        let silent: std::collections::BTreeSet<NodeId> =
            self.silent.iter().copied().filter(|id| peers.contains_key(id)).collect();
        self.node.set_unresponsive(silent.clone());
        self.silent = silent;
    }
}

/// At start-up, after the ledger is replayed: the configuration to run with. A
/// reconfiguration in the ledger overrides the command line's peers and quorum set (the
/// line to log says so); a node it left out does not start.
pub(super) fn recovered_config(
    mut config: ServerConfig,
    membership: Option<&Membership>,
) -> Result<(ServerConfig, Option<String>), ServerError> {
    let Some(membership) = membership else { return Ok((config, None)) };
    if !membership.contains(config.id.0) {
        return Err(ServerError::Removed { id: config.id, membership: describe(membership) });
    }
    config.quorum_set = membership.quorum_set();
    config.peers = membership.peers_of(config.id);
    let note = format!("membership from the ledger's last reconfiguration: {}", describe(membership));
    Ok((config, Some(note)))
}

/// `4 of {3000, 3001, 3002, 3003, 3004}`.
pub(super) fn describe(membership: &Membership) -> String {
    let ids: Vec<String> = membership.ids().iter().map(u64::to_string).collect();
    format!("{} of {{{}}}", membership.threshold, ids.join(", "))
}
