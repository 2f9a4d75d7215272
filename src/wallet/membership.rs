//! Cluster membership as replicated state: which nodes take part, at which addresses, and
//! the threshold of the flat quorum set they all use.
//!
//! Membership changes through consensus like everything else: a `reconfigure` request
//! ([`super::Op::Reconfigure`]) carries the **complete** new configuration, not a change
//! to it, so applying it gives the same result on every replica whatever each started
//! with. Applied in slot s, it takes effect at the slot boundary: every node uses it from
//! slot s + 1 (the node reads [`super::Wallet::membership`] after each slot). It is in the
//! ledger, so a restarted node, or one catching up, replays it like any request.
//!
//! The check made when applying ([`Membership::check`]) depends on the request alone, so
//! every replica refuses or accepts it alike: at least one member, no id or address
//! twice, literal `IP:PORT` addresses (host names would resolve differently on different
//! nodes), a threshold between 1 and the number of members, and **quorum intersection**:
//! with n members and threshold t, any t members form a quorum, and two quorums can be
//! disjoint exactly when 2t ≤ n, so such a configuration is refused, naming two disjoint
//! quorums.

use crate::quorum::{NodeId, QuorumSet};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;

/// Most members a configuration may have.
pub const MAX_MEMBERS: usize = 64;

/// One member: its node id and the literal `IP:PORT` it listens on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The node's id.
    pub id: u64,
    /// Where it listens, as `IP:PORT`.
    pub address: String,
}

impl fmt::Display for Member {
    /// `3000@127.0.0.1:3000`, the form `fba_server --peer` and `reconfigure` take.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.address)
    }
}

/// A cluster configuration: every member uses the quorum set `threshold` of `members`.
///
/// JSON (inside a `reconfigure` op): `"threshold": 4, "members": [{"id": 3000,
/// "address": "127.0.0.1:3000"}, …]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Membership {
    /// How many members make a quorum slice.
    pub threshold: u32,
    /// The members, in any order (applied ones are kept sorted by id).
    pub members: Vec<Member>,
}

/// Why a configuration is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipProblem {
    /// No member at all.
    Empty,
    /// More than [`MAX_MEMBERS`] members.
    TooMany {
        /// How many were given.
        members: usize,
    },
    /// Two members with one id.
    DuplicateId {
        /// The id.
        id: u64,
    },
    /// Two members at one address.
    DuplicateAddress {
        /// The address.
        address: String,
    },
    /// An address that is not a literal `IP:PORT`.
    BadAddress {
        /// The address.
        address: String,
    },
    /// A threshold of zero or above the number of members.
    Threshold {
        /// The threshold.
        threshold: u32,
        /// The number of members.
        members: usize,
    },
    /// Two quorums can be disjoint (2t ≤ n): the cluster could decide two different
    /// values for one slot.
    Disjoint {
        /// The threshold.
        threshold: u32,
        /// One quorum.
        a: Vec<u64>,
        /// Another quorum, sharing no member with `a`.
        b: Vec<u64>,
        /// The number of members.
        members: usize,
    },
}

impl fmt::Display for MembershipProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipProblem::Empty => write!(f, "a configuration needs at least one member"),
            MembershipProblem::TooMany { members } => {
                write!(f, "{members} members: at most {MAX_MEMBERS} are allowed")
            }
            MembershipProblem::DuplicateId { id } => write!(f, "node id {id} is given twice"),
            MembershipProblem::DuplicateAddress { address } => write!(f, "address {address} is given twice"),
            MembershipProblem::BadAddress { address } => {
                write!(f, "address {address:?} is not a literal IP:PORT")
            }
            MembershipProblem::Threshold { threshold, members } => {
                write!(f, "threshold {threshold} must be between 1 and the number of members ({members})")
            }
            MembershipProblem::Disjoint { threshold, a, b, members } => write!(
                f,
                "unsafe: threshold {threshold} of {members} lets two disjoint quorums decide: {} and {}; \
                 use a threshold above n/2 ({} of {members})",
                show_ids(a),
                show_ids(b),
                members / 2 + 1
            ),
        }
    }
}

impl std::error::Error for MembershipProblem {}

/// `{3000, 3001}`.
fn show_ids(ids: &[u64]) -> String {
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    format!("{{{}}}", ids.join(", "))
}

impl Membership {
    /// Checks the configuration (see the module docs) and returns it with its members
    /// sorted by id: the form a replica keeps.
    pub fn check(&self) -> Result<Membership, MembershipProblem> {
        let n = self.members.len();
        if n == 0 {
            return Err(MembershipProblem::Empty);
        }
        if n > MAX_MEMBERS {
            return Err(MembershipProblem::TooMany { members: n });
        }
        let (mut ids, mut addresses) = (BTreeSet::new(), BTreeSet::new());
        for member in &self.members {
            if member.address.parse::<SocketAddr>().is_err() {
                return Err(MembershipProblem::BadAddress { address: member.address.clone() });
            }
            if !ids.insert(member.id) {
                return Err(MembershipProblem::DuplicateId { id: member.id });
            }
            if !addresses.insert(member.address.as_str()) {
                return Err(MembershipProblem::DuplicateAddress { address: member.address.clone() });
            }
        }
        let t = self.threshold as usize;
        if t == 0 || t > n {
            return Err(MembershipProblem::Threshold { threshold: self.threshold, members: n });
        }
        let nodes = self.members.iter().map(|m| NodeId(m.id)).collect();
        if let Some((a, b)) = crate::quorum::flat_split(self.threshold, &nodes) {
            let (a, b) = (a.iter().map(|id| id.0).collect(), b.iter().map(|id| id.0).collect());
            return Err(MembershipProblem::Disjoint { threshold: self.threshold, a, b, members: n });
        }
        let mut sorted = self.clone();
        sorted.members.sort();
        Ok(sorted)
    }

    /// The member ids.
    pub fn ids(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.id).collect()
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: u64) -> bool {
        self.members.iter().any(|m| m.id == id)
    }

    /// The quorum set every member uses: `threshold` of all members.
    pub fn quorum_set(&self) -> QuorumSet {
        QuorumSet::new(self.threshold, self.members.iter().map(|m| NodeId(m.id)))
    }

    /// `me`'s peers: every other member at its address (members whose address does not
    /// parse are left out; [`Membership::check`] refuses them).
    pub fn peers_of(&self, me: NodeId) -> BTreeMap<NodeId, SocketAddr> {
        self.members
            .iter()
            .filter(|m| m.id != me.0)
            .filter_map(|m| m.address.parse().ok().map(|addr| (NodeId(m.id), addr)))
            .collect()
    }
}

impl fmt::Display for Membership {
    /// `4 3000@127.0.0.1:3000 3001@127.0.0.1:3001 …` (the arguments of `reconfigure`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.threshold)?;
        for member in &self.members {
            write!(f, " {member}")?;
        }
        Ok(())
    }
}

/// Parses `ID@IP:PORT`.
pub fn parse_member(text: &str) -> Option<Member> {
    let (id, address) = text.split_once('@')?;
    let id = id.parse().ok()?;
    address.parse::<SocketAddr>().ok()?;
    Some(Member { id, address: address.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[u64]) -> Vec<Member> {
        ids.iter().map(|id| Member { id: *id, address: format!("127.0.0.1:{id}") }).collect()
    }

    fn config(threshold: u32, ids: &[u64]) -> Membership {
        Membership { threshold, members: members(ids) }
    }

    #[test]
    fn a_safe_configuration_is_kept_sorted_by_id() {
        let checked = config(4, &[3004, 3000, 3002, 3001, 3003]).check().expect("4 of 5 is safe");
        assert_eq!(checked.ids(), [3000, 3001, 3002, 3003, 3004]);
        assert_eq!(checked.quorum_set(), QuorumSet::new(4, [3000, 3001, 3002, 3003, 3004].map(NodeId)));
        let peers = checked.peers_of(NodeId(3001));
        assert_eq!(peers.keys().map(|id| id.0).collect::<Vec<_>>(), [3000, 3002, 3003, 3004]);
        assert_eq!(peers[&NodeId(3004)], "127.0.0.1:3004".parse().expect("an address"));
        assert_eq!(config(1, &[7]).check().map(|m| m.ids()), Ok(vec![7]), "a single node is its own quorum");
    }

    #[test]
    fn a_configuration_whose_quorums_can_be_disjoint_is_refused_naming_them() {
        let problem = config(2, &[3000, 3001, 3002, 3003]).check().expect_err("2 of 4 can fork");
        assert_eq!(
            problem,
            MembershipProblem::Disjoint {
                threshold: 2,
                a: vec![3000, 3001],
                b: vec![3002, 3003],
                members: 4
            }
        );
        assert!(problem.to_string().contains("{3000, 3001} and {3002, 3003}"), "{problem}");
        assert!(matches!(config(3, &[1, 2, 3, 4, 5, 6]).check(), Err(MembershipProblem::Disjoint { .. })));
        assert!(config(4, &[1, 2, 3, 4, 5, 6]).check().is_ok());
    }

    #[test]
    fn malformed_configurations_say_what_is_wrong() {
        assert_eq!(config(1, &[]).check(), Err(MembershipProblem::Empty));
        assert_eq!(config(0, &[1]).check(), Err(MembershipProblem::Threshold { threshold: 0, members: 1 }));
        assert_eq!(
            config(3, &[1, 2]).check(),
            Err(MembershipProblem::Threshold { threshold: 3, members: 2 })
        );
        assert_eq!(config(2, &[1, 1]).check(), Err(MembershipProblem::DuplicateId { id: 1 }));
        let mut same_address = config(2, &[1, 2]);
        same_address.members[1].address = same_address.members[0].address.clone();
        assert!(matches!(same_address.check(), Err(MembershipProblem::DuplicateAddress { .. })));
        let mut host_name = config(1, &[1]);
        host_name.members[0].address = "localhost:3000".into();
        assert!(matches!(host_name.check(), Err(MembershipProblem::BadAddress { .. })));
        let many: Vec<u64> = (0..=MAX_MEMBERS as u64).collect();
        assert!(matches!(config(60, &many).check(), Err(MembershipProblem::TooMany { .. })));
    }

    #[test]
    fn members_parse_and_print_as_id_at_address() {
        let member = parse_member("3004@127.0.0.1:3004").expect("a member");
        assert_eq!(member, Member { id: 3004, address: "127.0.0.1:3004".into() });
        assert_eq!(member.to_string(), "3004@127.0.0.1:3004");
        for bad in ["3004", "x@127.0.0.1:1", "1@localhost:1", "1@127.0.0.1"] {
            assert_eq!(parse_member(bad), None, "{bad}");
        }
        assert_eq!(config(2, &[1, 2]).to_string(), "2 1@127.0.0.1:1 2@127.0.0.1:2");
    }
}
