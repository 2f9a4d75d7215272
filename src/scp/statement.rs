//! SCP statements: what nodes say to each other, their sanity rules, and their order.
//!
//! The four pledges follow the paper and draft-mazieres-dinrg-scp §3:
//!
//! * `NOMINATE {X, Y}`: vote nominate(x) for every x ∈ X, accept nominate(y) for y ∈ Y;
//! * `PREPARE {b, p, p', c.n, h.n}`: vote-or-accept prepare(b); accept prepare(p) and
//!   prepare(p'); confirm prepare(⟨h.n, b.x⟩); vote commit(⟨n, b.x⟩) for c.n ≤ n ≤ h.n;
//! * `CONFIRM {b, p.n, c.n, h.n}` (the draft's COMMIT): accept commit(⟨n, b.x⟩) for
//!   c.n ≤ n ≤ h.n; accept prepare(⟨p.n, b.x⟩); confirm prepare(⟨h.n, b.x⟩); vote
//!   commit(⟨n, b.x⟩) for every n ≥ c.n;
//! * `EXTERNALIZE {c, h.n}`: accept commit(⟨n, c.x⟩) for every n ≥ c.n; confirm
//!   commit(⟨n, c.x⟩) for c.n ≤ n ≤ h.n; accept prepare(⟨∞, c.x⟩).

use crate::quorum::{NodeId, QuorumSet, QuorumSetError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

/// Index of a slot: one instance of consensus, one entry of the replicated log.
pub type SlotIndex = u64;

/// The counter standing for ∞ (the draft's 0xffffffff): "every counter".
pub const INFINITE_COUNTER: u32 = u32::MAX;

/// Largest value, in bytes. A PREPARE carries up to three values (b, p, p'), base64
/// encoded (4/3 of their size), so every ballot statement fits in a 60,000-byte datagram.
pub const MAX_VALUE_BYTES: usize = 12 * 1024;
/// Most values a NOMINATE may carry in X and Y together.
pub const MAX_NOMINATION_VALUES: usize = 64;
/// Most bytes of values a NOMINATE may carry in X and Y together (so it fits a datagram).
pub const MAX_NOMINATION_BYTES: usize = 3 * MAX_VALUE_BYTES;

/// An opaque value to agree on; SCP only needs values to be totally ordered (by bytes).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Value(Arc<[u8]>);

impl Value {
    /// Wraps bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Value(Arc::from(bytes.into().into_boxed_slice()))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Value {
    /// `#` and the first 4 bytes of the value's SHA-256: short, and the same on every node.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", crate::hash::hex(&crate::hash::sha256(&self.0)[..4]))
    }
}

impl Serialize for Value {
    /// Values travel as base64 strings.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::hash::base64(&self.0))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.len() > MAX_VALUE_BYTES.div_ceil(3) * 4 {
            return Err(serde::de::Error::custom("value too large"));
        }
        crate::hash::unbase64(&s)
            .map(Value::new)
            .ok_or_else(|| serde::de::Error::custom("value is not base64"))
    }
}

/// A ballot ⟨n, x⟩: counter n and value x. Ballots are ordered by counter, then value.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// n: the ballot counter.
    pub counter: u32,
    /// x: the value.
    pub value: Value,
}

impl fmt::Debug for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({},{:?})", self.counter, self.value)
    }
}

impl Ballot {
    /// ⟨counter, value⟩.
    pub fn new(counter: u32, value: Value) -> Self {
        Ballot { counter, value }
    }

    /// b ~ b': the two ballots carry the same value.
    pub fn compatible(&self, other: &Ballot) -> bool {
        self.value == other.value
    }

    /// b ≲ b': b ≤ b' and compatible.
    pub fn less_and_compatible(&self, other: &Ballot) -> bool {
        self <= other && self.compatible(other)
    }

    /// b ⋦ b': b ≤ b' and incompatible (b' aborts b).
    pub fn less_and_incompatible(&self, other: &Ballot) -> bool {
        self <= other && !self.compatible(other)
    }
}

/// The pledges of a statement, one variant per message type.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub enum Pledges {
    /// NOMINATE {X, Y}, with X and Y disjoint (draft §3.4): accepting a value implies
    /// having voted for it, so a value moves from X to Y.
    Nominate {
        /// X: values voted nominated (and not yet accepted).
        voted: BTreeSet<Value>,
        /// Y: values accepted nominated.
        accepted: BTreeSet<Value>,
    },
    /// PREPARE {b, p, p', c.n, h.n}.
    Prepare {
        /// b: the current ballot.
        ballot: Ballot,
        /// p: the highest ballot accepted prepared.
        prepared: Option<Ballot>,
        /// p': the highest ballot accepted prepared that is incompatible with p.
        prepared_prime: Option<Ballot>,
        /// c.n: lowest counter voted commit (0 for none).
        n_c: u32,
        /// h.n: highest counter confirmed prepared (0 for none).
        n_h: u32,
    },
    /// CONFIRM {b, p.n, c.n, h.n}.
    Confirm {
        /// b: the current ballot.
        ballot: Ballot,
        /// p.n: counter of the highest ballot accepted prepared.
        n_prepared: u32,
        /// c.n: lowest counter accepted committed.
        n_commit: u32,
        /// h.n: highest counter accepted committed.
        n_h: u32,
    },
    /// EXTERNALIZE {c, h.n}.
    Externalize {
        /// c: the lowest ballot confirmed committed.
        commit: Ballot,
        /// h.n: the highest counter confirmed committed.
        n_h: u32,
    },
}

/// A signed-off claim by `node` about slot `slot` (signatures belong to the transport).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// The node making the statement.
    pub node: NodeId,
    /// The slot it is about.
    pub slot: SlotIndex,
    /// Q(node): the sender's quorum set.
    pub quorum_set: QuorumSet,
    /// What it pledges.
    pub pledges: Pledges,
}

/// Why a statement (or a proposed value) was refused. Logged by the shell and dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The sender's quorum set is not sane.
    BadQuorumSet(QuorumSetError),
    /// A PREPARE, CONFIRM or EXTERNALIZE with a zero counter where one is required.
    ZeroCounter,
    /// PREPARE with p' present but p absent, or p' not less than and incompatible with p.
    BadPreparedPrime,
    /// PREPARE whose h.n exceeds p.n.
    HighAbovePrepared,
    /// The commit/high counters violate c.n ≤ h.n ≤ b.n (or h.n ≥ c.n for EXTERNALIZE).
    BadCommitRange,
    /// c.n is ∞: ∞ stands for "every counter" when preparing, but a commit is of a real
    /// ballot, and no node can ever reach ballot counter ∞ to confirm it.
    CommitAtInfinity,
    /// A finite ballot counter beyond what any honest node can have reached in the time
    /// the slot has been open here (see `Node`'s counter bound).
    CounterTooHigh,
    /// NOMINATE with X and Y both empty.
    EmptyNomination,
    /// NOMINATE with more than [`MAX_NOMINATION_VALUES`] values or
    /// [`MAX_NOMINATION_BYTES`] bytes of values in X and Y.
    TooManyValues,
    /// NOMINATE with a value in both X and Y.
    OverlappingNomination,
    /// A value larger than [`MAX_VALUE_BYTES`].
    ValueTooLarge,
    /// The application judged a value invalid.
    InvalidValue,
    /// Not newer than what we already hold from this node (a duplicate or an old one).
    Stale,
    /// About a slot beyond the window the node keeps.
    TooFarAhead,
    /// About a slot so old the node no longer holds it.
    TooOld,
    /// About a slot already externalized, with a value different from ours.
    ContradictsExternalized,
    /// The node's own identity in a statement received from the network.
    FromSelf,
    /// The node is tracking as many peers as it allows for a slot.
    TooManyNodes,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::BadQuorumSet(e) => write!(f, "insane quorum set: {e}"),
            Rejection::ZeroCounter => write!(f, "ballot counter is zero"),
            Rejection::BadPreparedPrime => write!(f, "p' must be below and incompatible with p"),
            Rejection::HighAbovePrepared => write!(f, "h.n exceeds p.n"),
            Rejection::BadCommitRange => write!(f, "counters violate c.n <= h.n <= b.n"),
            Rejection::CommitAtInfinity => write!(f, "c.n is infinite"),
            Rejection::CounterTooHigh => write!(f, "ballot counter implausibly high for the slot's age"),
            Rejection::EmptyNomination => write!(f, "nomination with empty X and Y"),
            Rejection::TooManyValues => write!(f, "nomination carries too many values"),
            Rejection::OverlappingNomination => write!(f, "nomination has a value in both X and Y"),
            Rejection::ValueTooLarge => write!(f, "value too large"),
            Rejection::InvalidValue => write!(f, "value rejected by the application"),
            Rejection::Stale => write!(f, "not newer than the sender's latest statement"),
            Rejection::TooFarAhead => write!(f, "slot too far in the future"),
            Rejection::TooOld => write!(f, "slot too old"),
            Rejection::ContradictsExternalized => write!(f, "contradicts the externalized value"),
            Rejection::FromSelf => write!(f, "claims to come from this node"),
            Rejection::TooManyNodes => write!(f, "too many distinct senders for this slot"),
        }
    }
}

impl std::error::Error for Rejection {}

impl Pledges {
    /// The paper's name of the message type.
    pub fn kind(&self) -> &'static str {
        match self {
            Pledges::Nominate { .. } => "NOMINATE",
            Pledges::Prepare { .. } => "PREPARE",
            Pledges::Confirm { .. } => "CONFIRM",
            Pledges::Externalize { .. } => "EXTERNALIZE",
        }
    }

    /// True for the three ballot-protocol pledges.
    pub fn is_ballot(&self) -> bool {
        !matches!(self, Pledges::Nominate { .. })
    }

    /// Every value the pledges mention.
    pub fn values(&self) -> Vec<&Value> {
        match self {
            Pledges::Nominate { voted, accepted } => voted.iter().chain(accepted).collect(),
            Pledges::Prepare { ballot, prepared, prepared_prime, .. } => {
                std::iter::once(ballot).chain(prepared).chain(prepared_prime).map(|b| &b.value).collect()
            }
            Pledges::Confirm { ballot, .. } => vec![&ballot.value],
            Pledges::Externalize { commit, .. } => vec![&commit.value],
        }
    }

    /// The sender's ballot value ("working ballot" value) for ballot pledges.
    pub fn ballot_value(&self) -> Option<&Value> {
        match self {
            Pledges::Nominate { .. } => None,
            Pledges::Prepare { ballot, .. } | Pledges::Confirm { ballot, .. } => Some(&ballot.value),
            Pledges::Externalize { commit, .. } => Some(&commit.value),
        }
    }

    /// The counter a sender is at, for bumping and timers (∞ for EXTERNALIZE).
    pub fn ballot_counter(&self) -> Option<u32> {
        match self {
            Pledges::Nominate { .. } => None,
            Pledges::Prepare { ballot, .. } | Pledges::Confirm { ballot, .. } => Some(ballot.counter),
            Pledges::Externalize { .. } => Some(INFINITE_COUNTER),
        }
    }

    /// The highest finite ballot counter the pledges mention (∞ aside), 0 if none.
    pub fn max_finite_counter(&self) -> u32 {
        let counters: Vec<u32> = match self {
            Pledges::Nominate { .. } => vec![],
            Pledges::Prepare { ballot, prepared, prepared_prime, n_c, n_h } => {
                let p = [prepared, prepared_prime].into_iter().flatten().map(|b| b.counter);
                p.chain([ballot.counter, *n_c, *n_h]).collect()
            }
            Pledges::Confirm { ballot, n_prepared, n_commit, n_h } => {
                vec![ballot.counter, *n_prepared, *n_commit, *n_h]
            }
            Pledges::Externalize { commit, n_h } => vec![commit.counter, *n_h],
        };
        counters.into_iter().filter(|&n| n != INFINITE_COUNTER).max().unwrap_or(0)
    }

    /// Checks the structural rules of draft §3 (stellar-core `isStatementSane`), and that
    /// c.n is finite.
    /// `own` relaxes b.n > 0 for the local node's PREPARE before it has a ballot.
    pub fn check_sanity(&self, own: bool) -> Result<(), Rejection> {
        if self.values().iter().any(|v| v.as_bytes().len() > MAX_VALUE_BYTES) {
            return Err(Rejection::ValueTooLarge);
        }
        match self {
            Pledges::Nominate { voted, accepted } => {
                if voted.is_empty() && accepted.is_empty() {
                    return Err(Rejection::EmptyNomination);
                }
                let bytes: usize = voted.iter().chain(accepted).map(|v| v.as_bytes().len()).sum();
                if voted.len() + accepted.len() > MAX_NOMINATION_VALUES || bytes > MAX_NOMINATION_BYTES {
                    return Err(Rejection::TooManyValues);
                }
                if !voted.is_disjoint(accepted) {
                    return Err(Rejection::OverlappingNomination);
                }
            }
            Pledges::Prepare { ballot, prepared, prepared_prime, n_c, n_h } => {
                if ballot.counter == 0 && !own {
                    return Err(Rejection::ZeroCounter);
                }
                match (prepared, prepared_prime) {
                    (None, Some(_)) => return Err(Rejection::BadPreparedPrime),
                    (Some(p), Some(pp)) if !pp.less_and_incompatible(p) => {
                        return Err(Rejection::BadPreparedPrime)
                    }
                    _ => {}
                }
                if *n_h != 0 && prepared.as_ref().is_none_or(|p| *n_h > p.counter) {
                    return Err(Rejection::HighAbovePrepared);
                }
                if *n_c != 0 && !(*n_c <= *n_h && *n_h <= ballot.counter) {
                    return Err(Rejection::BadCommitRange);
                }
                if *n_c == INFINITE_COUNTER {
                    return Err(Rejection::CommitAtInfinity);
                }
            }
            Pledges::Confirm { ballot, n_commit, n_h, .. } => {
                if ballot.counter == 0 {
                    return Err(Rejection::ZeroCounter);
                }
                if !(*n_commit >= 1 && n_commit <= n_h && *n_h <= ballot.counter) {
                    return Err(Rejection::BadCommitRange);
                }
                if *n_commit == INFINITE_COUNTER {
                    return Err(Rejection::CommitAtInfinity);
                }
            }
            Pledges::Externalize { commit, n_h } => {
                if commit.counter == 0 {
                    return Err(Rejection::ZeroCounter);
                }
                if *n_h < commit.counter {
                    return Err(Rejection::BadCommitRange);
                }
                if commit.counter == INFINITE_COUNTER {
                    return Err(Rejection::CommitAtInfinity);
                }
            }
        }
        Ok(())
    }

    /// Is `self` newer than `old` from the same node (draft §3, stellar `isNewerStatement`)?
    ///
    /// Nominations grow: newer means X ∪ Y and Y are supersets of the old ones and at least
    /// one strictly grew (X alone may shrink, as its values move to Y).
    /// Ballot statements are ordered PREPARE < CONFIRM < EXTERNALIZE, then within a type
    /// lexicographically by (b, p, p', h.n) for PREPARE and (b, p.n, h.n) for CONFIRM;
    /// an EXTERNALIZE is final.
    pub fn is_newer_than(&self, old: &Pledges) -> bool {
        use Pledges::*;
        match (old, self) {
            (Nominate { voted: ox, accepted: oy }, Nominate { voted: nx, accepted: ny }) => {
                let covered = |v: &Value| nx.contains(v) || ny.contains(v);
                let (old_all, new_all) = (ox.len() + oy.len(), nx.len() + ny.len());
                ox.iter().chain(oy).all(covered)
                    && oy.is_subset(ny)
                    && (new_all > old_all || ny.len() > oy.len())
            }
            (Nominate { .. }, _) | (_, Nominate { .. }) => false,
            (
                Prepare { ballot: ob, prepared: op, prepared_prime: opp, n_h: oh, .. },
                Prepare { ballot: nb, prepared: np, prepared_prime: npp, n_h: nh, .. },
            ) => (nb, np, npp, nh).cmp(&(ob, op, opp, oh)) == Ordering::Greater,
            (
                Confirm { ballot: ob, n_prepared: op, n_h: oh, .. },
                Confirm { ballot: nb, n_prepared: np, n_h: nh, .. },
            ) => (nb, np, nh).cmp(&(ob, op, oh)) == Ordering::Greater,
            (Externalize { .. }, _) => false,
            (_, _) => self.phase_rank() > old.phase_rank(),
        }
    }

    fn phase_rank(&self) -> u8 {
        match self {
            Pledges::Nominate { .. } => 0,
            Pledges::Prepare { .. } => 1,
            Pledges::Confirm { .. } => 2,
            Pledges::Externalize { .. } => 3,
        }
    }
}

impl Statement {
    /// Full structural check: the sender's quorum set and the pledges.
    pub fn check_sanity(&self, own: bool) -> Result<(), Rejection> {
        self.quorum_set.check_sanity().map_err(Rejection::BadQuorumSet)?;
        self.pledges.check_sanity(own)
    }

    /// The quorum set to use for this sender in quorum checks. An EXTERNALIZE sender has
    /// finished and counts as its own quorum (stellar `getQuorumSetFromStatement`).
    pub fn effective_quorum_set(&self) -> std::borrow::Cow<'_, QuorumSet> {
        match self.pledges {
            Pledges::Externalize { .. } => std::borrow::Cow::Owned(QuorumSet::singleton(self.node)),
            _ => std::borrow::Cow::Borrowed(&self.quorum_set),
        }
    }
}

fn fmt_opt(b: &Option<Ballot>) -> String {
    b.as_ref().map_or_else(|| "-".to_string(), |b| format!("{b:?}"))
}

impl Pledges {
    /// The fields in the paper's notation, without the message type; formatted only when
    /// displayed (values print as hashes, which cost time to compute).
    pub fn fields(&self) -> Fields<'_> {
        Fields(self)
    }
}

/// The fields of [`Pledges`] in the paper's notation, e.g. `b=(1,#ab12cd34) p=- …`.
pub struct Fields<'a>(&'a Pledges);

impl fmt::Display for Fields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Pledges::Nominate { voted, accepted } => write!(f, "X={voted:?} Y={accepted:?}"),
            Pledges::Prepare { ballot, prepared, prepared_prime, n_c, n_h } => write!(
                f,
                "b={ballot:?} p={} p'={} c.n={n_c} h.n={n_h}",
                fmt_opt(prepared),
                fmt_opt(prepared_prime)
            ),
            Pledges::Confirm { ballot, n_prepared, n_commit, n_h } => {
                write!(f, "b={ballot:?} p.n={n_prepared} c.n={n_commit} h.n={n_h}")
            }
            Pledges::Externalize { commit, n_h } => write!(f, "c={commit:?} h.n={n_h}"),
        }
    }
}

impl fmt::Debug for Pledges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.fields())
    }
}

impl fmt::Debug for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} slot={} {:?}", self.node, self.slot, self.pledges)
    }
}
