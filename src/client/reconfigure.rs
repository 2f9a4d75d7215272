//! `fba_client PORT reconfigure --add ID@IP:PORT --remove ID --threshold T`: the complete
//! configuration a reconfiguration request carries, planned from what one node says it
//! runs (its [`NodeStatus`]) and the operator's changes.
//!
//! The request carries the whole new configuration (see [`crate::wallet::membership`]),
//! so the plan starts from the node's members (itself and its peers, at the addresses it
//! reports) and its flat quorum set's threshold, removes and adds members, and takes the
//! given threshold or, without one, the smallest above two thirds of the new members (the
//! same default as `fba_server`). Whether the result is safe is for the cluster to say.

use crate::config::derive_node_id;
use crate::net::NodeStatus;
use crate::wallet::membership::{parse_member, Member, Membership};
use std::fmt;
use std::net::SocketAddr;

/// What the operator asked to change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Members to add.
    pub add: Vec<Member>,
    /// Ids of members to remove.
    pub remove: Vec<u64>,
    /// The new threshold, if given.
    pub threshold: Option<u32>,
}

/// Why no configuration could be planned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// A word of the command line that is not understood.
    Usage(String),
    /// The node did not say what its quorum set is (an older version).
    NoQuorumSet,
    /// The node's quorum set is not a flat threshold over its members.
    Nested,
    /// `--remove` of a node that is not a member.
    NotMember(u64),
    /// `--add` of a node that is already a member (by id or address).
    AlreadyMember(String),
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::Usage(problem) => write!(
                f,
                "{problem}; usage: reconfigure [--add [ID@]IP:PORT]... [--remove ID]... [--threshold T], \
                 or reconfigure THRESHOLD ID@IP:PORT..."
            ),
            PlanError::NoQuorumSet => {
                write!(f, "the node does not report its quorum set: give the full configuration")
            }
            PlanError::Nested => write!(
                f,
                "the node's quorum set is not one threshold over its members: give the full configuration \
                 (reconfigure THRESHOLD ID@IP:PORT...)"
            ),
            PlanError::NotMember(id) => write!(f, "node {id} is not a member"),
            PlanError::AlreadyMember(member) => write!(f, "{member} is already a member"),
        }
    }
}

impl std::error::Error for PlanError {}

/// Parses the words after `reconfigure` in the `--add/--remove/--threshold` form.
pub fn parse_changes(words: &[String]) -> Result<Changes, PlanError> {
    let mut changes = Changes::default();
    let mut words = words.iter();
    while let Some(flag) = words.next() {
        let value = words.next().ok_or_else(|| PlanError::Usage(format!("{flag} needs a value")))?;
        match flag.as_str() {
            "--add" => changes.add.push(parse_new_member(value)?),
            "--remove" => changes.remove.push(
                value.parse().map_err(|_| PlanError::Usage(format!("--remove {value:?}: not a node id")))?,
            ),
            "--threshold" => {
                let t = value
                    .parse()
                    .map_err(|_| PlanError::Usage(format!("--threshold {value:?}: not a number")))?;
                changes.threshold = Some(t);
            }
            other => return Err(PlanError::Usage(format!("unexpected {other:?}"))),
        }
    }
    if changes == Changes::default() {
        return Err(PlanError::Usage("nothing to change".into()));
    }
    Ok(changes)
}

/// `ID@IP:PORT`, or `IP:PORT` with the id `fba_server` derives from it.
fn parse_new_member(text: &str) -> Result<Member, PlanError> {
    if let Some(member) = parse_member(text) {
        return Ok(member);
    }
    let bad = || PlanError::Usage(format!("--add {text:?}: expected [ID@]IP:PORT"));
    let addr: SocketAddr = text.parse().map_err(|_| bad())?;
    let id = derive_node_id(addr).ok_or_else(bad)?;
    Ok(Member { id: id.0, address: addr.to_string() })
}

/// The configuration `status`'s node runs, changed by `changes`.
pub fn plan(status: &NodeStatus, changes: &Changes) -> Result<Membership, PlanError> {
    let mut members: Vec<Member> =
        std::iter::once(Member { id: status.id.0, address: status.address.clone() })
            .chain(status.peers.iter().map(|p| Member { id: p.id.0, address: p.address.clone() }))
            .collect();
    let qset = status.quorum_set.as_ref().ok_or(PlanError::NoQuorumSet)?;
    let mut ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    let mut named: Vec<u64> = qset.validators.iter().map(|v| v.0).collect();
    ids.sort_unstable();
    named.sort_unstable();
    if !qset.inner_sets.is_empty() || ids != named {
        return Err(PlanError::Nested);
    }
    for id in &changes.remove {
        let before = members.len();
        members.retain(|m| m.id != *id);
        if members.len() == before {
            return Err(PlanError::NotMember(*id));
        }
    }
    for member in &changes.add {
        if members.iter().any(|m| m.id == member.id || m.address == member.address) {
            return Err(PlanError::AlreadyMember(member.to_string()));
        }
        members.push(member.clone());
    }
    members.sort();
    let n = members.len() as u32;
    let threshold = changes.threshold.unwrap_or(2 * n / 3 + 1);
    Ok(Membership { threshold, members })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::PeerStatus;
    use crate::quorum::{NodeId, QuorumSet};

    fn status(threshold: u32, ids: &[u64]) -> NodeStatus {
        let peers = ids[1..]
            .iter()
            .map(|id| PeerStatus {
                id: NodeId(*id),
                address: format!("127.0.0.1:{id}"),
                last_heard_ms: None,
                slot: None,
            })
            .collect();
        NodeStatus {
            id: NodeId(ids[0]),
            address: format!("127.0.0.1:{}", ids[0]),
            version: "0".into(),
            uptime_ms: 0,
            slot: 0,
            ledger_hash: String::new(),
            pool: 0,
            requests_per_second: 0.0,
            quorum_available: true,
            peers_heard: 0,
            needed: 0,
            lag: 0,
            peers,
            quorum_set: Some(QuorumSet::new(threshold, ids.iter().map(|id| NodeId(*id)))),
        }
    }

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn adding_a_node_keeps_the_others_and_takes_the_default_threshold() {
        let changes = parse_changes(&words("--add 127.0.0.1:3004")).expect("changes");
        let planned = plan(&status(3, &[3000, 3001, 3002, 3003]), &changes).expect("a plan");
        assert_eq!(planned.to_string(), "4 3000@127.0.0.1:3000 3001@127.0.0.1:3001 3002@127.0.0.1:3002 3003@127.0.0.1:3003 3004@127.0.0.1:3004");
    }

    #[test]
    fn removing_a_node_with_an_explicit_threshold() {
        let changes = parse_changes(&words("--remove 3001 --threshold 2")).expect("changes");
        let planned = plan(&status(3, &[3000, 3001, 3002, 3003]), &changes).expect("a plan");
        assert_eq!((planned.threshold, planned.ids()), (2, vec![3000, 3002, 3003]));
    }

    #[test]
    fn impossible_changes_say_why() {
        let four = status(3, &[3000, 3001, 3002, 3003]);
        let plan_of = |text: &str| parse_changes(&words(text)).and_then(|c| plan(&four, &c));
        assert_eq!(plan_of("--remove 9"), Err(PlanError::NotMember(9)));
        assert!(matches!(plan_of("--add 3001@127.0.0.1:9"), Err(PlanError::AlreadyMember(_))));
        assert!(matches!(plan_of("--add localhost"), Err(PlanError::Usage(_))));
        assert!(matches!(plan_of("--threshold"), Err(PlanError::Usage(_))));
        assert!(matches!(plan_of(""), Err(PlanError::Usage(_))));
        let mut nested = four.clone();
        nested.quorum_set = Some(QuorumSet {
            threshold: 1,
            validators: vec![],
            inner_sets: vec![QuorumSet::new(1, [NodeId(1)])],
        });
        assert_eq!(
            plan(&nested, &Changes { threshold: Some(1), ..Changes::default() }),
            Err(PlanError::Nested)
        );
    }
}
