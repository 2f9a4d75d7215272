//! A deterministic simulated network for the SCP core.
//!
//! [`run`] drives a set of [`fba::scp::Node`]s through a [`Scenario`] on a virtual clock:
//! every message, timer, crash and Byzantine action is an event in one priority queue
//! ordered by (virtual time, sequence number), and every random choice comes from one
//! [`Rng`] seeded by the scenario's seed, so a seed replays the same run bit for bit.
//!
//! The network delivers each message after a random delay (hence reordering), and a
//! scenario may add an **asynchrony period**: a phase of loss, duplication and long delays,
//! or a partition that heals. The nodes share one of three fixed quorum configurations or
//! each have their own ([`Topology::Asymmetric`], drawn so that the honest nodes stay
//! intact despite one Byzantine node). Some nodes may be faulty: crashed (never started,
//! or stopped at some time, or stopped and later restarted, once or again and again, from
//! its ledger and the statements it journaled), or Byzantine: **equivocating** (two
//! honest [`Node`]s with different proposals behind one identity, each peer hearing one or
//! the other), **babbling** (random well-formed statements under its own identity), or a
//! targeted attacker: backing each peer's own value one step ahead, telling each half of
//! the network another value at every stage up to EXTERNALIZE, counters at `u32::MAX`,
//! values injected only through ballot statements, a colluding coalition beyond the fault
//! bound, or a **griefing nomination leader** (an honest node underneath whose NOMINATE
//! statements give each peer a different value, carry only an invalid value, or are
//! never sent). [`Outcome::slots_per_second`] measures what such a leader costs. Nodes may also fetch decided slots from their peers' ledgers, as the
//! server's catch-up does and under its trust rule ([`Scenario::catch_up`]).
//!
//! While it runs the simulation checks the safety properties at every externalization:
//!
//! * **agreement**: no two honest nodes externalize different values for a slot;
//! * **validity**: every externalized value is valid and was proposed for that slot by
//!   some node (honest or Byzantine);
//! * **order**: each node reports its slots once each, in order;
//! * **isolation**: a node cut off from every quorum from the start of a partition does
//!   not externalize before the partition heals;
//! * **interface**: nodes send only their own, sane statements, arm timers in the future,
//!   never go back on what they said about a slot (even across a restart), answer
//!   laggards with exactly the EXTERNALIZE they sent, and honest statements are never
//!   refused as malformed or invalid (beyond the fault bound, only this and order are
//!   checked: see [`Scenario::befouled`]);
//!
//! and at the end **termination**: once the asynchrony period is over, every honest node
//! that did not crash externalizes every slot of the run within [`Scenario::horizon`]
//! (where SCP promises it: see [`Scenario::guarantees_termination`]).
//! A failed run's [`Outcome::report`] gives the seed, the scenario, the broken property,
//! the nodes' final state, the tail of the event trace and the command that replays it.

use fba::quorum::intersection::{self, Intersection};
use fba::quorum::{self, NodeId, QuorumSet};
use fba::rng::Rng;
use fba::scp::{
    vouched, Application, Ballot, Config, Input, Node, Output, Pledges, Rejection, Statement, Timeouts,
    TimerId, Value, INFINITE_COUNTER,
};
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

/// Trace lines kept for the report of a failed run.
const TAIL: usize = 200;
/// Events after which a run is declared stuck (no honest run comes near it).
const MAX_EVENTS: u64 = 2_000_000;
/// Honest nodes make their first proposal at a random time below this.
const START_SPREAD_MS: u64 = 200;
/// Probability that a babbling node sends a given statement to a given peer.
const BABBLE_REACH: f64 = 0.7;
/// Modelled catch-up: a peer this many slots ahead makes a node fetch from the ledgers
/// (the server's `LAG_SLOTS`).
pub const CATCH_UP_LAG: u64 = 4;
/// Modelled catch-up: a node behind a peer that decided nothing for this long fetches
/// from the ledgers (the server's `STALL`).
pub const CATCH_UP_STALL: Duration = Duration::from_secs(1);
/// How often a node looks whether to catch up (the server's housekeeping interval).
const CATCH_UP_EVERY: Duration = Duration::from_millis(250);
/// The salt of the value a Byzantine node forges in its ledger.
const FORGED: u64 = 99;

/// Shorthand for a number of milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A uniformly random duration in `lo..=hi` milliseconds.
/// Does `st` survive a power loss in the model? The server syncs every ballot statement
/// that binds it (PREPARE, CONFIRM) before sending it, and an EXTERNALIZE only repeats
/// the decision its synced ledger holds (`fba::journal`); a NOMINATE is written without a
/// sync and may be lost.
fn synced(st: &Statement) -> bool {
    st.pledges.is_ballot()
}

fn between(rng: &mut Rng, lo: u64, hi: u64) -> Duration {
    ms(lo + rng.below(hi - lo + 1))
}

// ----- The application ------------------------------------------------------------------

/// The simulated application: values are 8-byte big-endian `u64`s, `u64::MAX` is
/// invalid, and the composite of the candidates is the largest.
pub struct SimApp;

/// The value carrying `x`.
pub fn encode(x: u64) -> Value {
    Value::new(x.to_be_bytes())
}

/// The `u64` a value carries, if it is 8 bytes long.
pub fn decode(value: &Value) -> Option<u64> {
    value.as_bytes().try_into().ok().map(u64::from_be_bytes)
}

impl Application for SimApp {
    fn validate(&self, _slot: u64, value: &Value) -> bool {
        decode(value).is_some_and(|x| x != u64::MAX)
    }

    fn combine_candidates(&self, _slot: u64, candidates: &BTreeSet<Value>) -> Value {
        candidates.iter().max_by_key(|v| decode(v)).cloned().unwrap_or_default()
    }
}

/// The value `node` proposes for `slot` in the run of `seed`; `salt` tells apart the
/// several values a Byzantine node may put forward. Never `u64::MAX`.
fn proposal(seed: u64, node: NodeId, slot: u64, salt: u64) -> Value {
    let mixed =
        seed ^ node.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ slot.rotate_left(40) ^ salt.rotate_left(20);
    encode(Rng::new(mixed).next_u64() >> 1)
}

/// The usual protocol timeouts of the simulated nodes (virtual time costs nothing).
pub fn patient_timeouts() -> Timeouts {
    Timeouts {
        nomination_initial: ms(1000),
        nomination_increment: ms(1000),
        ballot_initial: ms(1000),
        ballot_increment: ms(1000),
        rebroadcast: ms(500),
        ..Timeouts::default()
    }
}

/// Random timeouts of 20 to 200 ms, as short as message delays: nomination rounds and
/// ballots time out often, which drives the ballot protocol to higher counters and
/// conflicting ballots. They still grow, so termination is still expected.
fn hasty_timeouts(rng: &mut Rng) -> Timeouts {
    Timeouts {
        nomination_initial: between(rng, 20, 200),
        nomination_increment: between(rng, 20, 200),
        ballot_initial: between(rng, 20, 200),
        ballot_increment: between(rng, 20, 200),
        rebroadcast: between(rng, 100, 500),
        ..Timeouts::default()
    }
}

// ----- Topologies -----------------------------------------------------------------------

/// The networks the simulation runs. Node ids start at 3000; every node of a fixed
/// topology uses the same quorum set, every node of an asymmetric one its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Four nodes 3000..=3003, threshold 3: tolerates one faulty node.
    Four,
    /// Seven nodes 3000..=3006, threshold 5: tolerates two faulty nodes.
    Seven,
    /// Three organisations of three nodes (3000-3002, 3003-3005, 3006-3008), two of three
    /// inside each, two of three organisations: tolerates one crashed node, or one whole
    /// organisation crashed, but **no Byzantine node**: two minimal quorums (two nodes of
    /// each of two organisations) can share a single node, so a Byzantine node there can
    /// legitimately lead honest nodes to different values.
    Tiered,
    /// `nodes` nodes (4 to 8), each with its own random quorum set drawn from `seed`
    /// ([`asymmetric_quorum_sets`]) so that the honest nodes stay intact despite one
    /// Byzantine node, the last one ([`Topology::byzantine_slot`]).
    Asymmetric {
        /// How many nodes.
        nodes: u8,
        /// Seeds the quorum sets.
        seed: u64,
    },
}

impl Topology {
    /// Every topology, indexed by [`Topology::index`].
    pub const ALL: [Topology; 3] = [Topology::Four, Topology::Seven, Topology::Tiered];

    /// Position in [`Topology::ALL`] (3 for the asymmetric topologies).
    pub fn index(self) -> u64 {
        match self {
            Topology::Four => 0,
            Topology::Seven => 1,
            Topology::Tiered => 2,
            Topology::Asymmetric { .. } => 3,
        }
    }

    /// The node ids.
    pub fn nodes(self) -> Vec<NodeId> {
        let n = match self {
            Topology::Four => 4,
            Topology::Seven => 7,
            Topology::Tiered => 9,
            Topology::Asymmetric { nodes, .. } => u64::from(nodes),
        };
        (3000..3000 + n).map(NodeId).collect()
    }

    /// The one node an asymmetric topology is drawn to survive as Byzantine (the last);
    /// the fixed topologies tolerate any [`Topology::max_faulty`] nodes.
    pub fn byzantine_slot(self) -> Option<NodeId> {
        matches!(self, Topology::Asymmetric { .. }).then(|| *self.nodes().last().expect("nodes"))
    }

    /// The organisations of the tiered topology (consecutive triples of node ids).
    pub fn organisations(self) -> Vec<Vec<NodeId>> {
        self.nodes().chunks(3).map(<[NodeId]>::to_vec).collect()
    }

    /// Each node's quorum set.
    pub fn quorum_sets(self) -> BTreeMap<NodeId, QuorumSet> {
        let shared = match self {
            Topology::Four => QuorumSet::new(3, self.nodes()),
            Topology::Seven => QuorumSet::new(5, self.nodes()),
            Topology::Tiered => QuorumSet {
                threshold: 2,
                validators: vec![],
                inner_sets: self.organisations().into_iter().map(|org| QuorumSet::new(2, org)).collect(),
            },
            Topology::Asymmetric { nodes, seed } => return asymmetric_quorum_sets(nodes, seed),
        };
        self.nodes().into_iter().map(|n| (n, shared.clone())).collect()
    }

    /// How many faulty nodes the topology tolerates (for safety and termination).
    pub fn max_faulty(self) -> u64 {
        match self {
            Topology::Seven => 2,
            Topology::Four | Topology::Tiered | Topology::Asymmetric { .. } => 1,
        }
    }

    /// Whether its faulty nodes may be Byzantine rather than merely crashed: the honest
    /// nodes keep quorum intersection despite [`Topology::max_faulty`] Byzantine nodes
    /// (in an asymmetric topology: the one drawn for, [`Topology::byzantine_slot`]).
    pub fn tolerates_byzantine(self) -> bool {
        self != Topology::Tiered
    }
}

// ----- Asymmetric quorum configurations ---------------------------------------------------

/// The quorum sets of an asymmetric topology: every node draws its own (a threshold of
/// itself and a random subset of the others, sometimes nested in two groups), redrawn
/// until the honest nodes, all but the last node `b`, are **intact** despite `b` being
/// Byzantine (paper §3.2): they form a quorum without `b`, and once `b` is deleted from
/// every slice, every two quorums of the honest nodes intersect ([`intact_despite`],
/// decided by `fba::quorum::intersection::check`). SCP then promises every honest node
/// agreement and termination whatever `b` does. `b` appears in most honest quorum sets,
/// so that it matters.
pub fn asymmetric_quorum_sets(nodes: u8, seed: u64) -> BTreeMap<NodeId, QuorumSet> {
    let ids: Vec<NodeId> = (3000..3000 + u64::from(nodes)).map(NodeId).collect();
    let byzantine = *ids.last().expect("at least one node");
    let mut rng = Rng::new(seed ^ 0x0a5e_10de_50f5_ca1e);
    for _ in 0..10_000 {
        let qsets: BTreeMap<NodeId, QuorumSet> =
            ids.iter().map(|&id| (id, random_quorum_set(&mut rng, id, &ids, byzantine))).collect();
        if intact_despite(&qsets, byzantine) {
            return qsets;
        }
    }
    panic!("no intact asymmetric configuration of {nodes} nodes drawn from seed {seed}");
}

/// A random quorum set for `me` over `ids`: itself and 3 or more others (`byzantine`
/// among them 80% of the time), either flat with a threshold of at least two thirds, or
/// (a third of the time) itself plus two inner groups, 2 or 3 of those 3 entries.
fn random_quorum_set(rng: &mut Rng, me: NodeId, ids: &[NodeId], byzantine: NodeId) -> QuorumSet {
    let mut others: Vec<NodeId> = ids.iter().copied().filter(|&n| n != me).collect();
    rng.shuffle(&mut others);
    let k = 3 + rng.below(others.len() as u64 - 2) as usize;
    if me != byzantine && rng.chance(0.8) && !others[..k].contains(&byzantine) {
        let at = others.iter().position(|&n| n == byzantine).expect("byzantine is another node");
        others.swap(0, at);
    }
    others.truncate(k);
    if k >= 4 && rng.chance(1.0 / 3.0) {
        let (a, b) = others.split_at(k / 2);
        let inner = [a, b].map(|g| QuorumSet::new(two_thirds(rng, g.len()), g.iter().copied())).to_vec();
        return QuorumSet { threshold: 2 + rng.below(2) as u32, validators: vec![me], inner_sets: inner };
    }
    let members: Vec<NodeId> = std::iter::once(me).chain(others).collect();
    QuorumSet::new(two_thirds(rng, members.len()), members)
}

/// A threshold of `m` entries: two thirds rounded up, or one more (at most `m`).
fn two_thirds(rng: &mut Rng, m: usize) -> u32 {
    ((2 * m).div_ceil(3) + rng.below(2) as usize).min(m) as u32
}

/// Are the nodes other than `byzantine` intact despite it: a quorum without it, and with
/// quorum intersection once it is deleted from every slice?
pub fn intact_despite(qsets: &BTreeMap<NodeId, QuorumSet>, byzantine: NodeId) -> bool {
    let honest: BTreeMap<NodeId, QuorumSet> = qsets
        .iter()
        .filter(|(&n, _)| n != byzantine)
        .map(|(&n, q)| (n, delete(q, byzantine).unwrap_or_else(|| QuorumSet::singleton(n))))
        .collect();
    let quorum = qsets.iter().all(|(&n, q)| n == byzantine || q.is_slice(&|x| x != byzantine));
    quorum && matches!(intersection::check(&honest), Intersection::Holds { .. })
}

/// `q` with `gone` deleted from every slice (paper §3.2): an entry that is `gone`, or an
/// inner set left with an empty slice, is satisfied for free, so the threshold drops by
/// one for each. `None` when the empty set is a slice.
pub fn delete(q: &QuorumSet, gone: NodeId) -> Option<QuorumSet> {
    let validators: Vec<NodeId> = q.validators.iter().copied().filter(|&v| v != gone).collect();
    let inner: Vec<Option<QuorumSet>> = q.inner_sets.iter().map(|i| delete(i, gone)).collect();
    let free = (q.validators.len() - validators.len()) + inner.iter().filter(|i| i.is_none()).count();
    let threshold = (q.threshold as usize).saturating_sub(free);
    (threshold > 0).then(|| QuorumSet {
        threshold: threshold as u32,
        validators,
        inner_sets: inner.into_iter().flatten().collect(),
    })
}

// ----- Scenarios ------------------------------------------------------------------------

/// How a faulty node misbehaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Crashes: never starts (`None`), or stops processing at the given time.
    Crash(Option<Duration>),
    /// Crashes at `at` and restarts `down` later, from its ledger (the slots it decided)
    /// and its journal (the last NOMINATE and ballot statement it broadcast for each slot,
    /// persisted before sending). It must then decide every slot like a correct node, and
    /// answer laggards about the slots it decided with the EXTERNALIZE it sent.
    Restart {
        /// When it crashes.
        at: Duration,
        /// How long it stays down.
        down: Duration,
    },
    /// Crashes and restarts again and again, as [`Behaviour::Restart`]: at each `at`, for
    /// `down` (in order, not overlapping).
    Storm(Vec<(Duration, Duration)>),
    /// Runs two honest nodes with different proposals under its identity; each peer hears
    /// always the same twin (`per_peer`) or a random twin per message.
    Equivocate {
        /// Whether each peer is tied to one twin.
        per_peer: bool,
    },
    /// Sends random well-formed statements under its own identity (sometimes announcing
    /// an odd quorum set).
    Babble,
    /// Answers each peer's statement, to that peer alone, one step ahead on the peer's own
    /// value: accepts what it votes, confirms prepared and votes to commit its ballot,
    /// accepts its commit, externalizes its CONFIRM. Each peer hears its own value backed.
    Flatter,
    /// Splits its peers in two halves and tells each a different (honestly proposed)
    /// value, one stage further every tick: votes, accepts, PREPARE, accepted and
    /// confirmed prepared, CONFIRM, and finally EXTERNALIZE.
    Split,
    /// Sends random well-formed statements whose ballot counters are at or near
    /// `u32::MAX` (the draft's ∞): PREPARE, CONFIRM and EXTERNALIZE at ∞ − 1 and ∞.
    MaxCounters,
    /// Injects values of its own that nobody nominated, only through PREPARE, CONFIRM and
    /// EXTERNALIZE. They are not recorded as proposed: an honest node externalizing one
    /// fails validity (one node is never v-blocking for an intact node).
    BallotOnly,
    /// Babbles in concert with every other colluding node: each random statement (small
    /// or huge counters) goes out under every colluder's name to the same peers, so that
    /// colluders make v-blocking sets and quorums say what they like. Beyond the fault
    /// bound only.
    Collude,
    /// Runs an honest node, but every NOMINATE it sends gives each peer a different valid
    /// value of its own: as a round's nomination leader it splits the honest nodes' votes
    /// (each echoes the value it was given), so no value reaches a quorum in that round.
    EquivocatingLeader,
    /// Runs an honest node, but every NOMINATE it sends votes only for an invalid value
    /// (`u64::MAX`): as a leader it offers nothing anyone may vote for.
    InvalidLeader,
    /// Runs an honest node but never sends a NOMINATE. It takes part in every ballot, so
    /// a shell would not find it silent, yet as a leader it offers nothing.
    MuteLeader,
}

impl Behaviour {
    /// Is the node honest whenever it runs (so its decisions must agree)?
    pub fn is_honest(&self) -> bool {
        matches!(self, Behaviour::Crash(_) | Behaviour::Restart { .. } | Behaviour::Storm(_))
    }

    /// Is the node honest and running in the end (it must decide every slot)?
    pub fn is_correct(&self) -> bool {
        matches!(self, Behaviour::Restart { .. } | Behaviour::Storm(_))
    }
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Behaviour::Crash(None) => write!(f, "never starts"),
            Behaviour::Crash(Some(at)) => write!(f, "crashes at {at:?}"),
            Behaviour::Restart { at, down } => write!(f, "crashes at {at:?} and restarts {down:?} later"),
            Behaviour::Equivocate { per_peer: true } => write!(f, "equivocates (fixed twin per peer)"),
            Behaviour::Equivocate { per_peer: false } => write!(f, "equivocates (random twin per message)"),
            Behaviour::Storm(windows) => {
                let windows: Vec<String> =
                    windows.iter().map(|(at, down)| format!("{at:?}+{down:?}")).collect();
                write!(f, "crashes and restarts at {}", windows.join(", "))
            }
            Behaviour::Babble => write!(f, "sends random well-formed statements"),
            Behaviour::Flatter => write!(f, "backs each peer's own value one step ahead"),
            Behaviour::Split => write!(f, "tells each half of the network another value at every stage"),
            Behaviour::MaxCounters => write!(f, "sends statements with counters at u32::MAX"),
            Behaviour::BallotOnly => write!(f, "injects unnominated values through ballot statements"),
            Behaviour::Collude => write!(f, "babbles in concert with the other colluders"),
            Behaviour::EquivocatingLeader => write!(f, "nominates a different value to each peer"),
            Behaviour::InvalidLeader => write!(f, "nominates only an invalid value"),
            Behaviour::MuteLeader => write!(f, "takes part in ballots but never nominates"),
        }
    }
}

/// The network's asynchrony period, if any. After it ends, delays are at most
/// [`Scenario::max_delay`] and nothing is lost or duplicated.
#[derive(Clone, Debug, PartialEq)]
pub enum Network {
    /// Bounded delays from the start.
    Calm,
    /// Until `until`, each message is lost with probability `loss`, otherwise sent twice
    /// with probability `duplicate`, and delayed up to `max_delay`.
    Lossy {
        /// End of the lossy phase.
        until: Duration,
        /// Loss probability.
        loss: f64,
        /// Duplication probability.
        duplicate: f64,
        /// Largest delay during the phase.
        max_delay: Duration,
    },
    /// During `from..until`, messages between different groups are dropped.
    Partition {
        /// The groups; together they hold every node.
        groups: Vec<BTreeSet<NodeId>>,
        /// Start of the partition.
        from: Duration,
        /// When it heals.
        until: Duration,
    },
}

impl Network {
    /// A partition cutting `cut` off from the rest of `topology` during `from..until`.
    pub fn isolate(topology: Topology, cut: &[NodeId], from: Duration, until: Duration) -> Network {
        let cut: BTreeSet<NodeId> = cut.iter().copied().collect();
        let rest = topology.nodes().into_iter().filter(|n| !cut.contains(n)).collect();
        Network::Partition { groups: vec![cut, rest], from, until }
    }

    /// A random lossy phase ending within 30 s; a third of the time nothing is lost but
    /// delays exceed the protocol timeouts (so rounds and ballots time out).
    fn random_lossy(rng: &mut Rng) -> Network {
        let slow = rng.chance(1.0 / 3.0);
        Network::Lossy {
            until: between(rng, 2_000, 30_000),
            loss: if slow { 0.0 } else { 0.05 + 0.45 * rng.unit() },
            duplicate: 0.3 * rng.unit(),
            max_delay: if slow { between(rng, 1_000, 4_000) } else { between(rng, 100, 2_000) },
        }
    }

    /// A random partition (a random minority, or in the tiered topology sometimes a whole
    /// organisation, cut off), starting at 0 half of the time and otherwise within the
    /// first second (while the first slots are being decided), lasting up to 40 s.
    fn random_partition(rng: &mut Rng, topology: Topology) -> Network {
        let mut nodes = topology.nodes();
        rng.shuffle(&mut nodes);
        let size = 1 + rng.below(nodes.len() as u64 / 2) as usize;
        let mut cut = nodes[..size].to_vec();
        if topology == Topology::Tiered && rng.chance(0.5) {
            cut = topology.organisations()[rng.below(3) as usize].clone();
        }
        let from = if rng.chance(0.5) { Duration::ZERO } else { between(rng, 0, 1_000) };
        let until = from + between(rng, 1_000, 40_000);
        Network::isolate(topology, &cut, from, until)
    }

    /// When the asynchrony period ends.
    pub fn calm_after(&self) -> Duration {
        match self {
            Network::Calm => Duration::ZERO,
            Network::Lossy { until, .. } | Network::Partition { until, .. } => *until,
        }
    }

    /// Is the link between `a` and `b` cut at `now`?
    fn cuts(&self, now: Duration, a: NodeId, b: NodeId) -> bool {
        let Network::Partition { groups, from, until } = self else { return false };
        let group = |n: NodeId| groups.iter().position(|g| g.contains(&n));
        *from <= now && now < *until && group(a) != group(b)
    }

    /// The loss and duplication probabilities and largest delay in force at `now`.
    fn lossy_at(&self, now: Duration) -> Option<(f64, f64, Duration)> {
        match self {
            Network::Lossy { until, loss, duplicate, max_delay } if now < *until => {
                Some((*loss, *duplicate, *max_delay))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Network::Calm => write!(f, "calm"),
            Network::Lossy { until, loss, duplicate, max_delay } => write!(
                f,
                "lossy until {until:?} (loss {:.0}%, duplication {:.0}%, delays up to {max_delay:?})",
                loss * 100.0,
                duplicate * 100.0
            ),
            Network::Partition { groups, from, until } => {
                write!(f, "partitioned {groups:?} from {from:?} until {until:?}")
            }
        }
    }
}

/// Everything that determines a run.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Seeds every random choice of the run.
    pub seed: u64,
    /// The network's nodes and quorum sets.
    pub topology: Topology,
    /// Slots 1..=`slots` must be decided.
    pub slots: u64,
    /// Largest message delay outside the asynchrony period (the smallest is 1 ms).
    pub max_delay: Duration,
    /// The asynchrony period.
    pub network: Network,
    /// The faulty nodes; every other node is honest.
    pub faulty: BTreeMap<NodeId, Behaviour>,
    /// The protocol timeouts of every node.
    pub timeouts: Timeouts,
    /// How long after the asynchrony period every honest node has to decide every slot.
    pub horizon: Duration,
    /// The test that replays this scenario from `FBA_SIM_SEED`.
    pub replay_test: &'static str,
    /// Whether nodes fetch decided slots from their peers' ledgers, as the server's
    /// catch-up does: when a peer is more than [`CATCH_UP_LAG`] slots ahead, or ahead
    /// while the node made no progress for [`CATCH_UP_STALL`], subject to the server's
    /// trust rule [`fba::scp::vouched`]. Off, laggards must finish through SCP alone.
    pub catch_up: bool,
    /// More nodes are Byzantine than the topology tolerates, so the honest nodes are
    /// befouled: SCP promises them neither agreement nor termination, and only the
    /// interface (no panic, sane statements, never going back on one's word, exact
    /// answers) and the order of reports are checked. Set by [`Scenario::beyond_fault_bound`].
    pub befouled: bool,
    /// Honest nodes are told from the start which nodes never start
    /// ([`fba::scp::Node::set_unresponsive`]), as the server's silence detection tells
    /// them a few seconds in: such a node is then never chosen as a nomination leader.
    pub silent_known: bool,
    /// Every restart follows a **power loss**, not a killed process: the node gets back
    /// only what the server syncs before sending (its ballot statements, see
    /// `fba::journal`) and forgets its NOMINATE statements, which the server writes
    /// without a sync. It may then nominate differently in an undecided slot, and its
    /// peers ignore its new nominations as stale until they cover the lost ones.
    pub power_loss: bool,
}

impl Scenario {
    /// Five slots on `topology`, delays up to 20 ms, no fault, ten minutes to decide.
    pub fn calm(topology: Topology, seed: u64) -> Scenario {
        Scenario {
            seed,
            topology,
            slots: 5,
            max_delay: ms(20),
            network: Network::Calm,
            faulty: BTreeMap::new(),
            timeouts: patient_timeouts(),
            horizon: Duration::from_secs(600),
            replay_test: "replay",
            catch_up: false,
            befouled: false,
            silent_known: false,
            power_loss: false,
        }
    }

    /// The random scenario of `seed`: the topology is `Topology::ALL[seed % 3]`; 4 to 6
    /// slots; then no fault, a lossy phase, a partition that heals, crashed nodes or
    /// Byzantine nodes (sometimes together with a lossy phase or partition); and a quarter
    /// of the time, hasty timeouts.
    pub fn random(seed: u64) -> Scenario {
        let mut rng = Rng::new(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5ca1_ab1e);
        let topology = Topology::ALL[(seed % 3) as usize];
        let mut s = Scenario::calm(topology, seed);
        s.slots = 4 + rng.below(3);
        s.max_delay = between(&mut rng, 5, 50);
        match rng.below(5) {
            0 => {}
            1 => s.network = Network::random_lossy(&mut rng),
            2 => s.network = Network::random_partition(&mut rng, topology),
            kind => {
                s.add_random_faults(&mut rng, kind == 3);
                if rng.chance(0.2) {
                    s.network = match rng.below(2) {
                        0 => Network::random_lossy(&mut rng),
                        _ => Network::random_partition(&mut rng, topology),
                    };
                }
            }
        }
        if rng.chance(0.25) {
            s.timeouts = hasty_timeouts(&mut rng);
        }
        s
    }

    /// The random asymmetric scenario of `seed`: 5 to 8 nodes with their own quorum sets
    /// ([`asymmetric_quorum_sets`]), 4 to 6 slots; the node the configuration survives is
    /// Byzantine (any attacker) most of the time, or crashed, or correct; a fifth of the
    /// time a lossy phase or a partition; a quarter of the time hasty timeouts.
    pub fn random_asymmetric(seed: u64) -> Scenario {
        let mut rng = Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xa513_e71c);
        let topology = Topology::Asymmetric { nodes: 5 + rng.below(4) as u8, seed };
        let mut s = Scenario::calm(topology, seed);
        s.slots = 4 + rng.below(3);
        s.max_delay = between(&mut rng, 5, 50);
        let byzantine = topology.byzantine_slot().expect("asymmetric");
        match rng.below(10) {
            0 => {}
            1 => {
                s.faulty.insert(byzantine, random_crash(&mut rng));
            }
            _ => {
                s.faulty.insert(byzantine, random_byzantine(&mut rng));
            }
        }
        if rng.chance(0.2) {
            s.network = match rng.below(2) {
                0 => Network::random_lossy(&mut rng),
                _ => Network::random_partition(&mut rng, topology),
            };
        }
        if rng.chance(0.25) {
            s.timeouts = hasty_timeouts(&mut rng);
        }
        s
    }

    /// A restart storm on `topology`: every node crashes and restarts two to four times
    /// in the first few seconds (down 10 ms to 1.5 s each time) while 8 to 12 slots are
    /// being decided; half of the runs model the ledger catch-up, a quarter use hasty
    /// timeouts. Every node must decide every slot.
    pub fn storm(topology: Topology, seed: u64) -> Scenario {
        let mut rng = Rng::new(seed.wrapping_mul(0xd1b5_4a32_d192_ed03) ^ 0x0005_7073);
        let mut s = Scenario::calm(topology, seed);
        s.slots = 8 + rng.below(5);
        s.max_delay = between(&mut rng, 5, 50);
        for node in topology.nodes() {
            let mut at = Duration::ZERO;
            let mut windows = Vec::new();
            for _ in 0..2 + rng.below(3) {
                at += between(&mut rng, 50, 1_000);
                let down = between(&mut rng, 10, 1_500);
                windows.push((at, down));
                at += down;
            }
            s.faulty.insert(node, Behaviour::Storm(windows));
        }
        s.catch_up = rng.chance(0.5);
        if rng.chance(0.25) {
            s.timeouts = hasty_timeouts(&mut rng);
        }
        s
    }

    /// Makes up to [`Topology::max_faulty`] random nodes faulty, the first crashed
    /// (`crash`) or Byzantine (where the topology tolerates it), the others either; in the
    /// tiered topology a crash sometimes takes a whole organisation down.
    fn add_random_faults(&mut self, rng: &mut Rng, crash: bool) {
        let crash = crash || !self.topology.tolerates_byzantine();
        if crash && self.topology == Topology::Tiered && rng.chance(0.3) {
            let org = &self.topology.organisations()[rng.below(3) as usize];
            let behaviour = random_crash(rng);
            self.faulty.extend(org.iter().map(|&n| (n, behaviour.clone())));
            return;
        }
        let mut nodes = self.topology.nodes();
        rng.shuffle(&mut nodes);
        let count = 1 + rng.below(self.topology.max_faulty()) as usize;
        for (i, &node) in nodes[..count].iter().enumerate() {
            let crashes =
                if i == 0 { crash } else { rng.chance(0.5) || !self.topology.tolerates_byzantine() };
            let behaviour = if crashes { random_crash(rng) } else { random_byzantine(rng) };
            self.faulty.insert(node, behaviour);
        }
    }

    /// Sets the number of slots.
    pub fn slots(mut self, slots: u64) -> Scenario {
        self.slots = slots;
        self
    }

    /// Makes `node` faulty.
    pub fn fault(mut self, node: u64, behaviour: Behaviour) -> Scenario {
        self.faulty.insert(NodeId(node), behaviour);
        self
    }

    /// Sets the asynchrony period.
    pub fn network(mut self, network: Network) -> Scenario {
        self.network = network;
        self
    }

    /// Sets the protocol timeouts of every node.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Scenario {
        self.timeouts = timeouts;
        self
    }

    /// Sets how long after the asynchrony period the run may last.
    pub fn horizon(mut self, horizon: Duration) -> Scenario {
        self.horizon = horizon;
        self
    }

    /// Declares that the Byzantine nodes exceed the fault bound (see [`Scenario::befouled`]).
    pub fn beyond_fault_bound(mut self) -> Scenario {
        self.befouled = true;
        self
    }

    /// Makes every restart follow a power loss (see [`Scenario::power_loss`]).
    pub fn power_loss(mut self, on: bool) -> Scenario {
        self.power_loss = on;
        self
    }

    /// Tells honest nodes from the start which nodes never start (see
    /// [`Scenario::silent_known`]).
    pub fn silent_known(mut self, on: bool) -> Scenario {
        self.silent_known = on;
        self
    }

    /// The nodes that never start.
    fn never_started(&self) -> BTreeSet<NodeId> {
        self.faulty.iter().filter(|(_, b)| **b == Behaviour::Crash(None)).map(|(n, _)| *n).collect()
    }

    /// Turns the modelled ledger catch-up on or off.
    pub fn catch_up(mut self, on: bool) -> Scenario {
        self.catch_up = on;
        self
    }

    /// Names the test that replays this scenario from `FBA_SIM_SEED`.
    pub fn replayed_by(mut self, test: &'static str) -> Scenario {
        self.replay_test = test;
        self
    }

    /// Must every correct node decide every slot? Where SCP promises it:
    ///
    /// * four and seven nodes: always (at most [`Topology::max_faulty`] faulty nodes);
    /// * asymmetric: when at most the node it was drawn for is faulty (the others are
    ///   intact despite it, see [`asymmetric_quorum_sets`]);
    /// * tiered: unless a node crashes for good during an asynchrony period. Then no set
    ///   of nodes is *intact* (two quorums may share just that node), and it happens: a
    ///   partition lets two organisations decide without the third, one of the two
    ///   crashes for good, and the survivors' EXTERNALIZE messages are not v-blocking for
    ///   the laggards. Nodes that restart come back and answer with the EXTERNALIZE they
    ///   journaled, so they strand nobody. Safety is checked either way.
    pub fn guarantees_termination(&self) -> bool {
        if self.befouled {
            return false;
        }
        match self.topology {
            Topology::Four | Topology::Seven => true,
            Topology::Tiered => {
                self.network == Network::Calm || self.faulty.values().all(Behaviour::is_correct)
            }
            Topology::Asymmetric { .. } => {
                self.faulty.keys().all(|&n| Some(n) == self.topology.byzantine_slot())
            }
        }
    }

    /// The nodes that must decide every slot: the honest ones that do not crash for good.
    pub fn correct_nodes(&self) -> Vec<NodeId> {
        let correct = |b: Option<&Behaviour>| b.is_none_or(Behaviour::is_correct);
        self.topology.nodes().into_iter().filter(|n| correct(self.faulty.get(n))).collect()
    }

    /// Nodes whose decisions must agree: the correct ones and the crashing ones.
    fn is_honest(&self, node: NodeId) -> bool {
        self.faulty.get(&node).is_none_or(Behaviour::is_honest)
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        format!(
            "FBA_SIM_SEED={} cargo test --test simulation {} -- --exact --nocapture",
            self.seed, self.replay_test
        )
    }
}

/// Never starts, crashes within the first 1.5 s, or crashes then and restarts within 10 s.
fn random_crash(rng: &mut Rng) -> Behaviour {
    match rng.below(3) {
        0 => Behaviour::Crash(None),
        1 => Behaviour::Crash(Some(between(rng, 0, 1_500))),
        _ => Behaviour::Restart { at: between(rng, 0, 1_500), down: between(rng, 10, 10_000) },
    }
}

/// Any of the Byzantine behaviours.
pub fn random_byzantine(rng: &mut Rng) -> Behaviour {
    match rng.below(10) {
        0 => Behaviour::Equivocate { per_peer: true },
        1 => Behaviour::Equivocate { per_peer: false },
        2 => Behaviour::Babble,
        3 => Behaviour::Flatter,
        4 => Behaviour::Split,
        5 => Behaviour::MaxCounters,
        6 => Behaviour::BallotOnly,
        7 => Behaviour::EquivocatingLeader,
        8 => Behaviour::InvalidLeader,
        _ => Behaviour::MuteLeader,
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: {:?} topology, {} slots, delays 1 ms..={:?}, network {}, ",
            self.seed, self.topology, self.slots, self.max_delay, self.network
        )?;
        if self.catch_up {
            write!(f, "ledger catch-up, ")?;
        }
        if self.silent_known {
            write!(f, "silent nodes known, ")?;
        }
        if self.timeouts != patient_timeouts() {
            let t = &self.timeouts;
            write!(
                f,
                "hasty timeouts (nomination {:?}+{:?}, ballot {:?}+{:?}, rebroadcast {:?}), ",
                t.nomination_initial,
                t.nomination_increment,
                t.ballot_initial,
                t.ballot_increment,
                t.rebroadcast
            )?;
        }
        if self.befouled {
            write!(f, "BEYOND the fault bound, ")?;
        }
        if self.faulty.is_empty() {
            return write!(f, "no faulty node");
        }
        let faults: Vec<String> = self.faulty.iter().map(|(n, b)| format!("{n} {b}")).collect();
        write!(f, "faulty: {}", faults.join(", "))
    }
}

// ----- Results --------------------------------------------------------------------------

/// A safety or liveness property of SCP (or a sanity rule of the core's interface).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Property {
    /// Two honest nodes externalized different values for a slot.
    Agreement,
    /// A value externalized was invalid or never proposed.
    Validity,
    /// Slots were not reported once each, in order.
    Order,
    /// A node cut off from every quorum externalized.
    Isolation,
    /// A node broke the interface contract: a statement not its own or not sane, a
    /// timer armed in the past, or an honest statement refused by a peer as malformed.
    Interface,
    /// Some correct node did not decide every slot in time.
    Termination,
    /// The core panicked.
    Panic,
}

/// Why a run failed.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The property broken.
    pub property: Property,
    /// What happened.
    pub detail: String,
    /// When (virtual time).
    pub at: Duration,
}

/// One externalization by one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// When it was reported.
    pub at: Duration,
    /// The value.
    pub value: Value,
}

/// What a run did.
pub struct Outcome {
    /// The scenario run.
    pub scenario: Scenario,
    /// Each honest node's decisions, slot 1 first.
    pub decisions: BTreeMap<NodeId, Vec<Decision>>,
    /// The first property broken, if any.
    pub failure: Option<Failure>,
    /// Virtual time at the end of the run.
    pub end: Duration,
    /// Events processed.
    pub events: u64,
    /// Coverage: the highest finite ballot counter an honest node broadcast.
    pub max_counter: u32,
    /// Coverage: whether some honest node broadcast a PREPARE with p' set.
    pub saw_prepared_prime: bool,
    /// Coverage: how many journaled statements restarted nodes restored.
    pub restored: usize,
    /// Final state of each running node.
    pub states: Vec<String>,
    /// The last events of the trace.
    trace: Trace,
}

impl Outcome {
    /// Did every check pass?
    pub fn is_ok(&self) -> bool {
        self.failure.is_none()
    }

    /// How many slots `node` decided.
    pub fn decided(&self, node: u64) -> usize {
        self.decisions.get(&NodeId(node)).map_or(0, Vec::len)
    }

    /// How many slots `node` decided before `t`.
    pub fn decided_before(&self, node: u64, t: Duration) -> usize {
        self.decisions.get(&NodeId(node)).map_or(0, |d| d.iter().filter(|d| d.at < t).count())
    }

    /// Throughput in slots decided per simulated second: for each correct node, the
    /// slots it decided over the time of its last decision; the slowest node's figure.
    pub fn slots_per_second(&self) -> f64 {
        let rate = |n: &NodeId| {
            let decided = self.decisions.get(n).map_or(&[][..], Vec::as_slice);
            decided.last().map_or(0.0, |last| decided.len() as f64 / last.at.as_secs_f64().max(1e-9))
        };
        self.scenario.correct_nodes().iter().map(rate).fold(f64::INFINITY, f64::min)
    }

    /// Seed, scenario, failure, final states, trace tail and replay command.
    pub fn report(&self) -> String {
        let mut out = format!("simulation run: {}\n", self.scenario);
        match &self.failure {
            Some(f) => out += &format!("FAILED {:?} at {:?}: {}\n", f.property, f.at, f.detail),
            None => out += "passed\n",
        }
        out += &format!("ended at {:?} after {} events\n", self.end, self.events);
        out += &format!("replay: {}\n", self.scenario.replay_command());
        out += "node states at the end:\n";
        self.states.iter().for_each(|s| out += &format!("  {s}\n"));
        out += &format!("last {} trace events:\n", self.trace.tail.len());
        self.trace_tail().iter().for_each(|l| out += &format!("  {l}\n"));
        out
    }

    /// The last events of the run, one line each.
    pub fn trace_tail(&self) -> Vec<String> {
        self.trace.lines()
    }
}

// ----- The trace ------------------------------------------------------------------------

/// One traced event; formatted only when printed.
enum Note {
    Propose {
        node: NodeId,
        twin: usize,
        slot: u64,
        value: Value,
        verdict: Result<usize, Rejection>,
    },
    Deliver {
        from: NodeId,
        to: NodeId,
        twin: usize,
        statement: Rc<Statement>,
        verdict: Result<usize, Rejection>,
    },
    Drop {
        from: NodeId,
        to: NodeId,
        statement: Rc<Statement>,
        why: &'static str,
    },
    Timer {
        node: NodeId,
        twin: usize,
        timer: TimerId,
    },
    Decide {
        node: NodeId,
        twin: usize,
        slot: u64,
        value: Value,
    },
    Crash(NodeId),
    Restart {
        node: NodeId,
        next: u64,
    },
    Restore {
        node: NodeId,
        statement: Statement,
        verdict: Result<usize, Rejection>,
    },
    CatchUp {
        node: NodeId,
        slots: Vec<(u64, Value)>,
    },
    Fail(String),
}

/// A node name, with the twin of an equivocating node.
fn who(node: NodeId, twin: usize) -> String {
    if twin == 0 {
        node.to_string()
    } else {
        format!("{node}/twin{twin}")
    }
}

fn verdict(v: &Result<usize, Rejection>) -> String {
    match v {
        Ok(n) => format!("ok, {n} outputs"),
        Err(r) => format!("rejected: {r:?}"),
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Propose { node, twin, slot, value, verdict: v } => {
                write!(f, "{} proposes {value:?} for slot {slot} ({})", who(*node, *twin), verdict(v))
            }
            Note::Deliver { from, to, twin, statement, verdict: v } => {
                write!(f, "{from} -> {}: {statement:?} ({})", who(*to, *twin), verdict(v))
            }
            Note::Drop { from, to, statement, why } => {
                write!(f, "{from} -> {to}: DROPPED ({why}) {statement:?}")
            }
            Note::Timer { node, twin, timer } => write!(f, "{} timer {timer:?} fires", who(*node, *twin)),
            Note::Decide { node, twin, slot, value } => {
                write!(f, "{} EXTERNALIZED slot {slot} = {value:?}", who(*node, *twin))
            }
            Note::Crash(node) => write!(f, "{node} crashes"),
            Note::Restart { node, next } => write!(f, "{node} restarts at slot {next}"),
            Note::Restore { node, statement, verdict: v } => {
                write!(f, "{node} restores {statement:?} ({})", verdict(v))
            }
            Note::CatchUp { node, slots } => write!(f, "{node} catches up from the ledgers: {slots:?}"),
            Note::Fail(what) => write!(f, "CHECK FAILED: {what}"),
        }
    }
}

/// The last [`TAIL`] events, and every event printed as it happens when `live`.
struct Trace {
    live: bool,
    tail: VecDeque<(Duration, Note)>,
}

impl Trace {
    fn push(&mut self, at: Duration, note: Note) {
        if self.live {
            println!("{}", line(at, &note));
        }
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back((at, note));
    }

    fn lines(&self) -> Vec<String> {
        self.tail.iter().map(|(at, note)| line(*at, note)).collect()
    }
}

fn line(at: Duration, note: &Note) -> String {
    format!("{:>10.3}s  {note}", at.as_secs_f64())
}

// ----- Events ---------------------------------------------------------------------------

/// Something that happens at a point of virtual time.
enum Event {
    /// An honest or equivocating node makes its first proposal.
    Start(NodeId),
    /// A message arrives.
    Deliver { from: NodeId, to: NodeId, statement: Rc<Statement> },
    /// A timer armed for `at` is due (ignored if re-armed or cancelled since).
    Timer { node: NodeId, twin: usize, timer: TimerId, at: Duration },
    /// The node stops (for good, unless a restart is scheduled).
    Crash(NodeId),
    /// The node comes back from its ledger and journal.
    Restart(NodeId),
    /// A Byzantine node's periodic attack (babbling and the like).
    Attack(NodeId),
    /// A node looks whether to catch up from its peers' ledgers.
    CatchUp(NodeId),
}

/// An event in the queue, ordered by time then by scheduling order.
struct Scheduled {
    at: Duration,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

// ----- Nodes ----------------------------------------------------------------------------

/// An SCP node and the deadlines of the timers it armed.
struct Member {
    node: Node<SimApp>,
    timers: BTreeMap<TimerId, Duration>,
}

impl Member {
    fn new(id: NodeId, scenario: &Scenario, qset: &QuorumSet, first_slot: u64) -> Member {
        let mut config = Config::new(id, qset.clone());
        config.timeouts = scenario.timeouts.clone();
        let mut node = Node::new(config, SimApp, first_slot).expect("simulated configurations are sane");
        if scenario.silent_known {
            node.set_unresponsive(scenario.never_started());
        }
        Member { node, timers: BTreeMap::new() }
    }

    fn describe(&self, who: String) -> String {
        let slot = self.node.current_slot();
        let ballot = self.node.ballot_state(slot).unwrap_or_else(|| "no state".into());
        let own: Vec<String> =
            self.node.own_statements(slot).iter().map(|s| format!("{:?}", s.pledges)).collect();
        format!("{who}: at slot {slot}, {ballot}, latest {own:?}")
    }
}

/// What stands behind a node id.
enum Actor {
    Honest(Box<Member>),
    Crashed,
    /// Two honest nodes under one id; `split` maps each peer to the twin it hears, or is
    /// `None` when every message goes to a random twin.
    Equivocator {
        twins: Vec<Member>,
        split: Option<BTreeMap<NodeId, usize>>,
    },
    /// A Byzantine node that runs no SCP node.
    Attacker(Attack),
    /// A Byzantine node running an honest SCP node whose NOMINATE statements it rewrites
    /// or withholds (see [`Lie`]); its ballot statements go out as they are.
    Nominator {
        member: Box<Member>,
        lie: Lie,
    },
}

/// What an [`Actor::Nominator`] does with the NOMINATE statements of its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lie {
    /// [`Behaviour::EquivocatingLeader`]: each peer hears a different valid value.
    PerPeer,
    /// [`Behaviour::InvalidLeader`]: every peer hears only an invalid value.
    Invalid,
    /// [`Behaviour::MuteLeader`]: nobody hears anything.
    Withhold,
}

/// What a Byzantine [`Actor::Attacker`] does (see [`Behaviour`]).
enum Attack {
    Babble,
    Flatter,
    /// The half each peer is in, and the stage reached per slot.
    Split {
        halves: BTreeMap<NodeId, usize>,
        stages: BTreeMap<u64, u32>,
    },
    MaxCounters,
    BallotOnly,
    Collude,
}

impl Attack {
    /// Whether it acts on a timer (the others only answer).
    fn is_periodic(&self) -> bool {
        !matches!(self, Attack::Flatter)
    }
}

// ----- The simulation -------------------------------------------------------------------

/// The state of one run.
struct Sim {
    scenario: Scenario,
    rng: Rng,
    now: Duration,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    events: u64,
    ids: Vec<NodeId>,
    /// [`Scenario::correct_nodes`], computed once.
    correct: Vec<NodeId>,
    /// Each node's quorum set.
    qsets: BTreeMap<NodeId, QuorumSet>,
    actors: BTreeMap<NodeId, Actor>,
    /// Values some node put forward, per slot.
    proposed: BTreeMap<u64, BTreeSet<Value>>,
    /// Each honest node's decisions.
    decisions: BTreeMap<NodeId, Vec<Decision>>,
    /// The first honest decision of each slot.
    agreed: BTreeMap<u64, (NodeId, Value)>,
    /// Nodes cut off from every quorum from time 0 until the partition heals.
    isolated: BTreeSet<NodeId>,
    trace: Trace,
    failure: Option<Failure>,
    /// The latest statement each honest node broadcast, per slot and kind (ballot or
    /// not): what a real shell persists before sending, restored after a restart.
    journal: BTreeMap<(NodeId, u64, bool), Statement>,
    /// When each node last decided a slot or (re)started, for the catch-up stall rule.
    progress: BTreeMap<NodeId, Duration>,
    max_counter: u32,
    saw_prepared_prime: bool,
    restored: usize,
}

/// Runs `scenario` to the end; with `live` every event is printed as it happens.
pub fn run(scenario: Scenario, live: bool) -> Outcome {
    let mut sim = Sim::new(scenario, live);
    sim.run();
    sim.finish()
}

impl Sim {
    fn new(scenario: Scenario, live: bool) -> Sim {
        let topology = scenario.topology;
        let mut sim = Sim {
            rng: Rng::new(scenario.seed ^ 0x00d1_ce5e_ed0f_fba0),
            now: Duration::ZERO,
            queue: BinaryHeap::new(),
            seq: 0,
            events: 0,
            ids: topology.nodes(),
            correct: scenario.correct_nodes(),
            qsets: topology.quorum_sets(),
            actors: BTreeMap::new(),
            proposed: BTreeMap::new(),
            decisions: BTreeMap::new(),
            agreed: BTreeMap::new(),
            isolated: isolated_nodes(&scenario),
            trace: Trace { live, tail: VecDeque::with_capacity(TAIL) },
            failure: None,
            journal: BTreeMap::new(),
            progress: BTreeMap::new(),
            max_counter: 0,
            saw_prepared_prime: false,
            restored: 0,
            scenario,
        };
        for id in sim.ids.clone() {
            sim.spawn(id);
        }
        sim
    }

    /// Creates the actor behind `id` and schedules its first events.
    fn spawn(&mut self, id: NodeId) {
        let start = between(&mut self.rng, 0, START_SPREAD_MS);
        let member = |sim: &Sim| Member::new(id, &sim.scenario, &sim.qsets[&id], 1);
        let actor = match self.scenario.faulty.get(&id).cloned() {
            None => Actor::Honest(Box::new(member(self))),
            Some(Behaviour::Crash(None)) => Actor::Crashed,
            Some(Behaviour::Crash(Some(at))) => {
                self.schedule(at, Event::Crash(id));
                Actor::Honest(Box::new(member(self)))
            }
            Some(Behaviour::Restart { at, down }) => {
                self.schedule(at, Event::Crash(id));
                self.schedule(at + down, Event::Restart(id));
                Actor::Honest(Box::new(member(self)))
            }
            Some(Behaviour::Storm(windows)) => {
                for (at, down) in windows {
                    self.schedule(at, Event::Crash(id));
                    self.schedule(at + down, Event::Restart(id));
                }
                Actor::Honest(Box::new(member(self)))
            }
            Some(Behaviour::Equivocate { per_peer }) => Actor::Equivocator {
                twins: vec![member(self), member(self)],
                split: per_peer.then(|| self.split_peers(id)),
            },
            Some(Behaviour::Babble) => Actor::Attacker(Attack::Babble),
            Some(Behaviour::Flatter) => Actor::Attacker(Attack::Flatter),
            Some(Behaviour::Split) => {
                Actor::Attacker(Attack::Split { halves: self.split_peers(id), stages: BTreeMap::new() })
            }
            Some(Behaviour::MaxCounters) => Actor::Attacker(Attack::MaxCounters),
            Some(Behaviour::BallotOnly) => Actor::Attacker(Attack::BallotOnly),
            Some(Behaviour::Collude) => Actor::Attacker(Attack::Collude),
            Some(Behaviour::EquivocatingLeader) => {
                Actor::Nominator { member: Box::new(member(self)), lie: Lie::PerPeer }
            }
            Some(Behaviour::InvalidLeader) => {
                Actor::Nominator { member: Box::new(member(self)), lie: Lie::Invalid }
            }
            Some(Behaviour::MuteLeader) => {
                Actor::Nominator { member: Box::new(member(self)), lie: Lie::Withhold }
            }
        };
        match &actor {
            Actor::Honest(_) | Actor::Equivocator { .. } | Actor::Nominator { .. } => {
                self.schedule(start, Event::Start(id))
            }
            Actor::Attacker(attack) if attack.is_periodic() => self.schedule(start, Event::Attack(id)),
            _ => {}
        }
        if self.scenario.catch_up && self.scenario.is_honest(id) {
            self.schedule(start + CATCH_UP_EVERY, Event::CatchUp(id));
        }
        self.actors.insert(id, actor);
    }

    /// Assigns the peers of an equivocating node to its twins, half and half at random.
    fn split_peers(&mut self, id: NodeId) -> BTreeMap<NodeId, usize> {
        let mut peers = self.peers(id);
        self.rng.shuffle(&mut peers);
        peers.into_iter().enumerate().map(|(i, p)| (p, i % 2)).collect()
    }

    fn peers(&self, id: NodeId) -> Vec<NodeId> {
        self.ids.iter().copied().filter(|&n| n != id).collect()
    }

    fn schedule(&mut self, at: Duration, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled { at: at.max(self.now), seq: self.seq, event }));
    }

    fn note(&mut self, note: Note) {
        self.trace.push(self.now, note);
    }

    fn fail(&mut self, property: Property, detail: String) {
        if self.failure.is_none() {
            self.note(Note::Fail(format!("{property:?}: {detail}")));
            self.failure = Some(Failure { property, detail, at: self.now });
        }
    }

    // ----- The main loop ------------------------------------------------------------------

    /// Processes events until every correct node decided every slot, a check fails, or
    /// the deadline passes.
    fn run(&mut self) {
        let deadline = self.scenario.network.calm_after() + self.scenario.horizon;
        while self.failure.is_none() && !self.all_decided() {
            let Some(Reverse(next)) = self.queue.pop() else {
                return self.stall("nothing left to do");
            };
            if next.at > deadline {
                self.now = deadline;
                return self.stall(&format!("deadline {deadline:?} passed"));
            }
            if self.events == MAX_EVENTS {
                return self.stall(&format!("{MAX_EVENTS} events processed"));
            }
            self.now = next.at;
            self.events += 1;
            self.dispatch(next.event);
        }
    }

    /// The run ends undecided: a termination failure where termination is guaranteed.
    fn stall(&mut self, why: &str) {
        if self.scenario.guarantees_termination() {
            self.fail(Property::Termination, format!("{why}: {}", self.missing()));
        }
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Start(id) => (0..self.twins(id)).for_each(|twin| self.propose(id, twin)),
            Event::Deliver { from, to, statement } => self.deliver(from, to, statement),
            Event::Timer { node, twin, timer, at } => self.fire(node, twin, timer, at),
            Event::Crash(id) => {
                self.note(Note::Crash(id));
                self.actors.insert(id, Actor::Crashed);
            }
            Event::Restart(id) => self.restart(id),
            Event::Attack(id) => self.attack(id),
            Event::CatchUp(id) => self.catch_up(id),
        }
    }

    fn all_decided(&self) -> bool {
        let slots = self.scenario.slots as usize;
        self.correct.iter().all(|n| self.decisions.get(n).map_or(0, Vec::len) >= slots)
    }

    /// Which correct nodes lack which slots.
    fn missing(&self) -> String {
        let lacking: Vec<String> = self
            .correct
            .iter()
            .map(|n| (n, self.decisions.get(n).map_or(0, Vec::len)))
            .filter(|&(_, d)| d < self.scenario.slots as usize)
            .map(|(n, d)| format!("{n} decided {d} of {} slots", self.scenario.slots))
            .collect();
        lacking.join(", ")
    }

    // ----- Driving nodes ------------------------------------------------------------------

    /// How many SCP nodes run behind `id` (0 if crashed or babbling).
    fn twins(&self, id: NodeId) -> usize {
        match self.actors.get(&id) {
            Some(Actor::Honest(_)) | Some(Actor::Nominator { .. }) => 1,
            Some(Actor::Equivocator { twins, .. }) => twins.len(),
            _ => 0,
        }
    }

    fn member(&mut self, id: NodeId, twin: usize) -> Option<&mut Member> {
        match self.actors.get_mut(&id)? {
            Actor::Honest(m) | Actor::Nominator { member: m, .. } if twin == 0 => Some(m.as_mut()),
            Actor::Equivocator { twins, .. } => twins.get_mut(twin),
            _ => None,
        }
    }

    /// Feeds one input to a node; `None` if it no longer runs or panicked (a failure).
    fn feed(&mut self, id: NodeId, twin: usize, input: Input) -> Option<Result<Vec<Output>, Rejection>> {
        self.call(id, twin, |node, now| node.handle(now, input))
    }

    /// Calls into a node, catching panics; `None` if it no longer runs or panicked.
    fn call(
        &mut self,
        id: NodeId,
        twin: usize,
        f: impl FnOnce(&mut Node<SimApp>, Duration) -> Result<Vec<Output>, Rejection>,
    ) -> Option<Result<Vec<Output>, Rejection>> {
        let now = self.now;
        let member = self.member(id, twin)?;
        match panic::catch_unwind(AssertUnwindSafe(|| f(&mut member.node, now))) {
            Ok(result) => Some(result),
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                self.fail(Property::Panic, format!("{} panicked: {msg}", who(id, twin)));
                None
            }
        }
    }

    /// Gives a node its value for its current slot, unless the run has no such slot.
    fn propose(&mut self, id: NodeId, twin: usize) {
        let Some(slot) = self.member(id, twin).map(|m| m.node.current_slot()) else { return };
        if slot > self.scenario.slots {
            return;
        }
        let salt = if self.scenario.faulty.contains_key(&id) { twin as u64 + 1 } else { 0 };
        let value = proposal(self.scenario.seed, id, slot, salt);
        self.proposed.entry(slot).or_default().insert(value.clone());
        let Some(result) = self.feed(id, twin, Input::Propose(value.clone())) else { return };
        let verdict = result.as_ref().map(Vec::len).map_err(Clone::clone);
        self.note(Note::Propose { node: id, twin, slot, value, verdict });
        if let Ok(outputs) = result {
            self.apply(id, twin, outputs);
        }
    }

    /// Brings a crashed node back: a new node at the slot after the last one it decided
    /// (its ledger), which restores its journal, as the server does: the NOMINATE and
    /// ballot statement of every undecided slot, and the EXTERNALIZE of the decided slots
    /// within the core's history window. Then it proposes again.
    fn restart(&mut self, id: NodeId) {
        let next = self.decisions.get(&id).map_or(0, Vec::len) as u64 + 1;
        self.note(Note::Restart { node: id, next });
        let member = Member::new(id, &self.scenario, &self.qsets[&id], next);
        let oldest = next.saturating_sub(member.node.config().history);
        self.actors.insert(id, Actor::Honest(Box::new(member)));
        self.progress.insert(id, self.now);
        let saved: Vec<Statement> = self
            .journal
            .range((id, oldest, false)..(NodeId(id.0 + 1), 0, false))
            .map(|(_, st)| st)
            .filter(|st| st.slot >= next || matches!(st.pledges, Pledges::Externalize { .. }))
            .filter(|st| !self.scenario.power_loss || synced(st))
            .cloned()
            .collect();
        for statement in saved {
            let Some(result) = self.call(id, 0, |node, now| node.restore(now, statement.clone())) else {
                return;
            };
            let verdict = result.as_ref().map(Vec::len).map_err(Clone::clone);
            if let Err(e) = &verdict {
                self.fail(Property::Interface, format!("{id} refused to restore {statement:?}: {e:?}"));
            }
            self.restored += 1;
            self.note(Note::Restore { node: id, statement, verdict });
            if let Ok(outputs) = result {
                self.apply(id, 0, outputs);
            }
        }
        self.propose(id, 0);
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, statement: Rc<Statement>) {
        match self.actors.get(&to) {
            Some(Actor::Crashed) => return self.note(Note::Drop { from, to, statement, why: "crashed" }),
            Some(Actor::Attacker(Attack::Flatter)) => return self.flatter(to, from, &statement),
            _ => {}
        }
        for twin in 0..self.twins(to) {
            let Some(result) = self.feed(to, twin, Input::Statement((*statement).clone())) else { return };
            let verdict = result.as_ref().map(Vec::len).map_err(Clone::clone);
            self.check_refusal(from, to, &verdict);
            self.note(Note::Deliver { from, to, twin, statement: statement.clone(), verdict });
            if let Ok(outputs) = result {
                self.apply(to, twin, outputs);
            }
        }
    }

    fn fire(&mut self, id: NodeId, twin: usize, timer: TimerId, at: Duration) {
        let Some(member) = self.member(id, twin) else { return };
        if member.timers.get(&timer) != Some(&at) {
            return; // re-armed or cancelled since
        }
        member.timers.remove(&timer);
        self.note(Note::Timer { node: id, twin, timer });
        if let Some(Ok(outputs)) = self.feed(id, twin, Input::Timer(timer)) {
            self.apply(id, twin, outputs);
        }
    }

    /// Carries out a node's outputs; after an externalization, proposes for the next slot.
    fn apply(&mut self, id: NodeId, twin: usize, outputs: Vec<Output>) {
        let mut decided = false;
        for output in outputs {
            self.check_output(id, twin, &output);
            match output {
                Output::Broadcast(st) => self.broadcast(id, twin, Rc::new(st)),
                Output::Send { to, statement } => {
                    self.check_answer(id, &statement);
                    self.send(id, to, Rc::new(statement));
                }
                Output::SetTimer { timer, at } => self.set_timer(id, twin, timer, at),
                Output::CancelTimer(timer) => {
                    self.member(id, twin).map(|m| m.timers.remove(&timer));
                }
                Output::Externalized { slot, value } => {
                    self.decide(id, twin, slot, value);
                    decided = true;
                }
            }
        }
        if decided {
            self.propose(id, twin);
        }
    }

    fn set_timer(&mut self, id: NodeId, twin: usize, timer: TimerId, at: Duration) {
        if let Some(member) = self.member(id, twin) {
            member.timers.insert(timer, at);
            self.schedule(at, Event::Timer { node: id, twin, timer, at });
        }
    }

    // ----- The network --------------------------------------------------------------------

    /// Sends a node's statement to every peer (an equivocator's twin: to its share).
    fn broadcast(&mut self, id: NodeId, twin: usize, statement: Rc<Statement>) {
        if self.scenario.is_honest(id) {
            self.cover(&statement.pledges);
            self.check_progress(id, &statement);
        }
        if let Some(Actor::Nominator { lie, .. }) = self.actors.get(&id) {
            if !statement.pledges.is_ballot() {
                return self.nominate_falsely(id, *lie, &statement);
            }
        }
        for peer in self.peers(id) {
            if self.routes(id, twin, peer) {
                self.send(id, peer, statement.clone());
            }
        }
    }

    /// Does a broadcast of `twin` of `id` reach `peer`?
    fn routes(&mut self, id: NodeId, twin: usize, peer: NodeId) -> bool {
        match self.actors.get(&id) {
            Some(Actor::Equivocator { split: Some(split), .. }) => split.get(&peer) == Some(&twin),
            Some(Actor::Equivocator { split: None, .. }) => self.rng.chance(0.5),
            _ => true,
        }
    }

    /// Puts a message on the wire: cut by a partition, lost, duplicated, delayed.
    fn send(&mut self, from: NodeId, to: NodeId, statement: Rc<Statement>) {
        if self.scenario.network.cuts(self.now, from, to) {
            return self.note(Note::Drop { from, to, statement, why: "partition" });
        }
        let lossy = self.scenario.network.lossy_at(self.now);
        let (loss, duplicate, max_delay) = lossy.unwrap_or((0.0, 0.0, self.scenario.max_delay));
        if loss > 0.0 && self.rng.chance(loss) {
            return self.note(Note::Drop { from, to, statement, why: "lost" });
        }
        let copies = if duplicate > 0.0 && self.rng.chance(duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = between(&mut self.rng, 1, max_delay.as_millis() as u64);
            self.schedule(self.now + delay, Event::Deliver { from, to, statement: statement.clone() });
        }
    }

    /// Notes how far into the ballot protocol an honest statement goes.
    fn cover(&mut self, pledges: &Pledges) {
        if let Pledges::Prepare { prepared_prime: Some(_), .. } = pledges {
            self.saw_prepared_prime = true;
        }
        let counter = pledges.ballot_counter().filter(|&n| n != INFINITE_COUNTER);
        self.max_counter = self.max_counter.max(counter.unwrap_or(0));
    }

    // ----- The checks ---------------------------------------------------------------------

    /// Records and checks an externalization.
    fn decide(&mut self, id: NodeId, twin: usize, slot: u64, value: Value) {
        self.note(Note::Decide { node: id, twin, slot, value: value.clone() });
        if !self.scenario.is_honest(id) {
            return;
        }
        self.progress.insert(id, self.now);
        let decided = self.decisions.entry(id).or_default();
        let expected = decided.len() as u64 + 1;
        decided.push(Decision { at: self.now, value: value.clone() });
        if slot != expected {
            return self.fail(Property::Order, format!("{id} reported slot {slot}, expected {expected}"));
        }
        if self.scenario.befouled {
            return;
        }
        self.check_validity(id, slot, &value);
        self.check_agreement(id, slot, value);
        self.check_isolation(id, slot);
    }

    /// Every output of a node (an equivocator's twins are honest nodes too) must be
    /// well-formed: its own, sane statements and timers in the future.
    fn check_output(&mut self, id: NodeId, twin: usize, output: &Output) {
        let problem = match output {
            Output::Broadcast(st) | Output::Send { statement: st, .. } => {
                if st.node != id {
                    Some(format!("sent a statement in the name of {}: {st:?}", st.node))
                } else {
                    st.check_sanity(false).err().map(|e| format!("sent an insane statement ({e:?}): {st:?}"))
                }
            }
            Output::SetTimer { timer, at } if *at < self.now => Some(format!("armed {timer:?} in the past")),
            _ => None,
        };
        if let Some(problem) = problem {
            self.fail(Property::Interface, format!("{} {problem}", who(id, twin)));
        }
    }

    /// An honest node's statements about a slot only move forward (equal, when sent
    /// again, or newer), also across a restart; then the journal keeps the new one.
    /// After a power loss ([`Scenario::power_loss`]) only going back on a synced statement
    /// (an accepted commit) is a failure.
    fn check_progress(&mut self, id: NodeId, statement: &Statement) {
        let key = (id, statement.slot, statement.pledges.is_ballot());
        if let Some(old) = self.journal.get(&key) {
            let forgettable = self.scenario.power_loss && !synced(old);
            if old.pledges != statement.pledges
                && !statement.pledges.is_newer_than(&old.pledges)
                && !forgettable
            {
                let detail = format!("{id} went back on its word: {old:?}, then {statement:?}");
                self.fail(Property::Interface, detail);
            }
        }
        self.journal.insert(key, statement.clone());
    }

    /// An honest node answers a laggard with exactly the EXTERNALIZE it broadcast (and
    /// journaled), also after a restart: same c, same h.n.
    fn check_answer(&mut self, id: NodeId, statement: &Statement) {
        if !self.scenario.is_honest(id) {
            return;
        }
        let said = self.journal.get(&(id, statement.slot, true));
        if said != Some(statement) {
            let detail = format!("{id} answered {statement:?} but had said {said:?}");
            self.fail(Property::Interface, detail);
        }
    }

    /// An honest node's statement may be refused as stale, too old or contradicting the
    /// receiver's decision (a PREPARE for another value), never as malformed or invalid.
    fn check_refusal(&mut self, from: NodeId, to: NodeId, verdict: &Result<usize, Rejection>) {
        let Err(rejection) = verdict else { return };
        let expected =
            matches!(rejection, Rejection::Stale | Rejection::TooOld | Rejection::ContradictsExternalized);
        if self.scenario.is_honest(from) && !expected {
            self.fail(Property::Interface, format!("{to} refused {from}'s statement: {rejection:?}"));
        }
    }

    fn check_validity(&mut self, id: NodeId, slot: u64, value: &Value) {
        if !SimApp.validate(slot, value) {
            self.fail(Property::Validity, format!("{id} externalized invalid {value:?} for slot {slot}"));
        } else if !self.proposed.get(&slot).is_some_and(|p| p.contains(value)) {
            self.fail(Property::Validity, format!("{id} externalized unproposed {value:?} for slot {slot}"));
        }
    }

    fn check_agreement(&mut self, id: NodeId, slot: u64, value: Value) {
        match self.agreed.get(&slot) {
            None => {
                self.agreed.insert(slot, (id, value));
            }
            Some((first, agreed)) if *agreed != value => {
                let detail = format!("slot {slot}: {id} externalized {value:?} but {first} {agreed:?}");
                self.fail(Property::Agreement, detail);
            }
            Some(_) => {}
        }
    }

    fn check_isolation(&mut self, id: NodeId, slot: u64) {
        let Network::Partition { until, .. } = self.scenario.network else { return };
        if self.isolated.contains(&id) && self.now < until {
            let detail = format!("{id} externalized slot {slot} while cut off from every quorum");
            self.fail(Property::Isolation, detail);
        }
    }

    // ----- Byzantine attackers ---------------------------------------------------------------

    /// A periodic attacker's move, then the next one 10 to 300 ms later.
    fn attack(&mut self, id: NodeId) {
        let noise = match self.actors.get(&id) {
            Some(Actor::Attacker(Attack::Babble)) => Noise::Any,
            Some(Actor::Attacker(Attack::MaxCounters)) => Noise::Huge,
            Some(Actor::Attacker(Attack::BallotOnly)) => Noise::BallotOnly,
            Some(Actor::Attacker(Attack::Split { .. })) => Noise::Split,
            Some(Actor::Attacker(Attack::Collude)) => Noise::Collude,
            _ => return,
        };
        match noise {
            Noise::Split => self.split(id),
            Noise::Collude => self.collude(id),
            _ => self.babble(id, noise),
        }
        let next = self.now + between(&mut self.rng, 10, 300);
        self.schedule(next, Event::Attack(id));
    }

    /// Sends one to three random statements, each to a random subset of the peers.
    fn babble(&mut self, id: NodeId, noise: Noise) {
        for _ in 0..1 + self.rng.below(3) {
            let statement = Rc::new(self.random_statement(id, noise));
            for peer in self.peers(id) {
                if self.rng.chance(BABBLE_REACH) {
                    self.send(id, peer, statement.clone());
                }
            }
        }
    }

    /// A random well-formed statement by `id` about a slot near the honest nodes' own.
    fn random_statement(&mut self, id: NodeId, noise: Noise) -> Statement {
        let slot = self.babble_slot();
        let pledges = match noise {
            Noise::BallotOnly => {
                let own: Vec<Value> =
                    (0..2).map(|k| proposal(self.scenario.seed, id, slot, 20 + k)).collect();
                random_ballot_pledges(&mut self.rng, &own, SMALL)
            }
            Noise::Huge => {
                let pool = self.babble_pool(id, slot);
                let span = if self.rng.chance(0.7) { HUGE } else { SMALL };
                random_pledges(&mut self.rng, &pool, span)
            }
            Noise::Any | Noise::Split | Noise::Collude => {
                let pool = self.babble_pool(id, slot);
                random_pledges(&mut self.rng, &pool, SMALL)
            }
        };
        let quorum_set =
            if self.rng.chance(0.8) { self.qsets[&id].clone() } else { self.random_quorum_set(id) };
        Statement { node: id, slot, quorum_set, pledges }
    }

    /// [`Behaviour::Collude`]: one random statement, sent under the name of every
    /// colluder to the same random subset of peers.
    fn collude(&mut self, id: NodeId) {
        let noise = if self.rng.chance(0.3) { Noise::Huge } else { Noise::Any };
        let statement = self.random_statement(id, noise);
        let colluders: Vec<NodeId> = self
            .ids
            .iter()
            .copied()
            .filter(|n| self.scenario.faulty.get(n) == Some(&Behaviour::Collude))
            .collect();
        let reached: Vec<NodeId> =
            self.ids.iter().copied().filter(|_| self.rng.chance(BABBLE_REACH)).collect();
        for colluder in colluders {
            let from =
                Statement { node: colluder, quorum_set: self.qsets[&colluder].clone(), ..statement.clone() };
            let from = Rc::new(from);
            for &peer in reached.iter().filter(|&&p| p != colluder) {
                self.send(colluder, peer, from.clone());
            }
        }
    }

    /// [`Behaviour::Flatter`]: answers `peer`'s statement, to it alone, one step ahead on
    /// the peer's own value.
    fn flatter(&mut self, id: NodeId, peer: NodeId, statement: &Statement) {
        let pledges = one_step_ahead(&statement.pledges);
        let quorum_set = self.qsets[&id].clone();
        self.send(id, peer, Rc::new(Statement { node: id, slot: statement.slot, quorum_set, pledges }));
    }

    /// An [`Actor::Nominator`]'s node broadcast `statement`, a NOMINATE: sends each peer
    /// what its [`Lie`] says instead (values it puts forward are recorded as proposed).
    fn nominate_falsely(&mut self, id: NodeId, lie: Lie, statement: &Statement) {
        let slot = statement.slot;
        for (i, peer) in self.peers(id).into_iter().enumerate() {
            let value = match lie {
                Lie::Withhold => return,
                Lie::Invalid => encode(u64::MAX),
                Lie::PerPeer => {
                    let value = proposal(self.scenario.seed, id, slot, 30 + i as u64);
                    self.proposed.entry(slot).or_default().insert(value.clone());
                    value
                }
            };
            let pledges = Pledges::Nominate { voted: [value].into(), accepted: BTreeSet::new() };
            self.send(id, peer, Rc::new(Statement { pledges, ..statement.clone() }));
        }
    }

    /// [`Behaviour::Split`]: one stage further on the slot some correct node is at, each
    /// half of the peers hearing its own value.
    fn split(&mut self, id: NodeId) {
        let slot = self.babble_slot();
        let Some(Actor::Attacker(Attack::Split { halves, stages })) = self.actors.get_mut(&id) else {
            return;
        };
        let stage = stages.entry(slot).or_insert(0);
        let now = *stage;
        *stage = (now + 1).min(LAST_STAGE);
        let halves = halves.clone();
        let values = [0, 1].map(|half| self.split_value(id, slot, &halves, half));
        let quorum_set = self.qsets[&id].clone();
        for (peer, half) in halves {
            let pledges = stage_pledges(now, &values[half]);
            let statement = Statement { node: id, slot, quorum_set: quorum_set.clone(), pledges };
            self.send(id, peer, Rc::new(statement));
        }
    }

    /// The value a split attacker backs in `half`: the proposal of an honest node there
    /// (else one of its own), recorded as proposed (the attacker puts it forward).
    fn split_value(&mut self, id: NodeId, slot: u64, halves: &BTreeMap<NodeId, usize>, half: usize) -> Value {
        let honest = halves.iter().find(|(n, h)| **h == half && self.scenario.is_honest(**n));
        let value = match honest {
            Some((&n, _)) => proposal(self.scenario.seed, n, slot, 0),
            None => proposal(self.scenario.seed, id, slot, 10 + half as u64),
        };
        self.proposed.entry(slot).or_default().insert(value.clone());
        value
    }

    /// A sane but arbitrary quorum set for a babbler to announce: just itself, or a
    /// random threshold of a random set of nodes containing it.
    fn random_quorum_set(&mut self, id: NodeId) -> QuorumSet {
        if self.rng.chance(0.5) {
            return QuorumSet::singleton(id);
        }
        let mut others = self.peers(id);
        self.rng.shuffle(&mut others);
        others.truncate(self.rng.below(others.len() as u64 + 1) as usize);
        others.push(id);
        let threshold = 1 + self.rng.below(others.len() as u64) as u32;
        QuorumSet::new(threshold, others)
    }

    /// The current slot of a random correct node, give or take one.
    fn babble_slot(&mut self) -> u64 {
        let pick = self.rng.below(self.correct.len().max(1) as u64) as usize;
        let Some(&node) = self.correct.get(pick) else { return 1 };
        let current = self.decisions.get(&node).map_or(0, Vec::len) as u64 + 1;
        (current + self.rng.below(3)).saturating_sub(1).clamp(1, self.scenario.slots + 1)
    }

    /// Values to babble about: what the honest nodes propose for `slot`, two values of
    /// the babbler's own (all recorded as proposed), and sometimes the invalid `u64::MAX`.
    fn babble_pool(&mut self, id: NodeId, slot: u64) -> Vec<Value> {
        let seed = self.scenario.seed;
        let honest = self.correct.iter().map(|&n| proposal(seed, n, slot, 0));
        let own = (0..2).map(|k| proposal(seed, id, slot, 10 + k));
        let mut pool: Vec<Value> = honest.chain(own).collect();
        self.proposed.entry(slot).or_default().extend(pool.iter().cloned());
        if self.rng.chance(0.1) {
            pool.push(encode(u64::MAX));
        }
        pool
    }

    // ----- Catch-up from the ledgers -------------------------------------------------------

    /// [`Scenario::catch_up`], as the server does it: a node that a reachable peer's
    /// ledger is more than [`CATCH_UP_LAG`] slots ahead of, or ahead of while the node
    /// decided nothing for [`CATCH_UP_STALL`], fetches its next slots from the ledgers of
    /// the peers it can reach, trusting an entry by the server's rule
    /// ([`fba::scp::vouched`]), applies them and tells its core ([`Input::CaughtUp`]).
    /// Byzantine peers offer forged entries, never proposed: applying one fails validity.
    fn catch_up(&mut self, id: NodeId) {
        self.schedule(self.now + CATCH_UP_EVERY, Event::CatchUp(id));
        if !matches!(self.actors.get(&id), Some(Actor::Honest(_))) {
            return;
        }
        let decided = self.decisions.get(&id).map_or(0, Vec::len) as u64;
        let reachable: Vec<NodeId> = self
            .peers(id)
            .into_iter()
            .filter(|&p| !self.scenario.network.cuts(self.now, id, p))
            .filter(|p| !matches!(self.actors.get(p), Some(Actor::Crashed)))
            .collect();
        let ahead = reachable.iter().map(|&p| self.ledger_len(p)).max().unwrap_or(0).saturating_sub(decided);
        let idle = self.now.saturating_sub(self.progress.get(&id).copied().unwrap_or_default());
        if ahead <= CATCH_UP_LAG && (ahead == 0 || idle < CATCH_UP_STALL) {
            return;
        }
        let mut slots = Vec::new();
        while let Some(value) = self.vouched_entry(id, decided + 1 + slots.len() as u64, &reachable) {
            slots.push((decided + 1 + slots.len() as u64, value));
        }
        let Some(&(last, _)) = slots.last() else { return };
        self.note(Note::CatchUp { node: id, slots: slots.clone() });
        for (slot, value) in slots {
            self.decide(id, 0, slot, value);
        }
        if let Some(Ok(outputs)) = self.feed(id, 0, Input::CaughtUp { next: last + 1 }) {
            self.apply(id, 0, outputs);
        }
        self.propose(id, 0);
    }

    /// How many slots `peer` offers: an honest node its ledger, a Byzantine one all.
    fn ledger_len(&self, peer: NodeId) -> u64 {
        match self.scenario.is_honest(peer) {
            true => self.decisions.get(&peer).map_or(0, Vec::len) as u64,
            false => self.scenario.slots,
        }
    }

    /// What `peer` offers for `slot`: an honest node its decision, a Byzantine one a
    /// forged value.
    fn ledger_entry(&self, peer: NodeId, slot: u64) -> Option<Value> {
        match self.scenario.is_honest(peer) {
            true => self.decisions.get(&peer)?.get(slot as usize - 1).map(|d| d.value.clone()),
            false => (slot <= self.scenario.slots).then(|| proposal(self.scenario.seed, peer, slot, FORGED)),
        }
    }

    /// The value for `slot` that the `reachable` peers offering it vouch for, if any.
    fn vouched_entry(&self, id: NodeId, slot: u64, reachable: &[NodeId]) -> Option<Value> {
        let mut offers: BTreeMap<Value, BTreeSet<NodeId>> = BTreeMap::new();
        for &peer in reachable {
            if let Some(value) = self.ledger_entry(peer, slot) {
                offers.entry(value).or_default().insert(peer);
            }
        }
        let qset = &self.qsets[&id];
        offers.into_iter().find(|(_, by)| vouched(id, qset, &|n| by.contains(&n))).map(|(v, _)| v)
    }

    // ----- The end ------------------------------------------------------------------------

    fn finish(self) -> Outcome {
        let states = self.states();
        if self.trace.live {
            states.iter().for_each(|s| println!("final state: {s}"));
        }
        Outcome {
            trace: self.trace,
            scenario: self.scenario,
            decisions: self.decisions,
            failure: self.failure,
            end: self.now,
            events: self.events,
            max_counter: self.max_counter,
            saw_prepared_prime: self.saw_prepared_prime,
            restored: self.restored,
            states,
        }
    }

    /// A line per running node: its slot, ballot state and latest statements.
    fn states(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (id, actor) in &self.actors {
            match actor {
                Actor::Honest(m) => out.push(m.describe(id.to_string())),
                Actor::Equivocator { twins, .. } => {
                    out.extend(twins.iter().enumerate().map(|(t, m)| m.describe(who(*id, t))));
                }
                Actor::Crashed => out.push(format!("{id}: crashed")),
                Actor::Attacker(_) => out.push(format!("{id}: Byzantine ({})", self.scenario.faulty[id])),
                Actor::Nominator { member, .. } => out.push(member.describe(format!("{id} (Byzantine)"))),
            }
        }
        out
    }
}

/// Nodes that a partition starting at time 0 leaves without any quorum: their group
/// (less the nodes that never start) contains no quorum for them.
fn isolated_nodes(scenario: &Scenario) -> BTreeSet<NodeId> {
    let Network::Partition { groups, from: Duration::ZERO, .. } = &scenario.network else {
        return BTreeSet::new();
    };
    let qsets = scenario.topology.quorum_sets();
    let never_starts = |n: &NodeId| scenario.faulty.get(n) == Some(&Behaviour::Crash(None));
    let mut out = BTreeSet::new();
    for group in groups {
        let members: BTreeMap<NodeId, &QuorumSet> =
            group.iter().filter(|n| !never_starts(n)).map(|n| (*n, &qsets[n])).collect();
        out.extend(group.iter().copied().filter(|n| !quorum::is_quorum(&qsets[n], &members)));
    }
    out
}

// ----- Random statements ------------------------------------------------------------------

fn pick(rng: &mut Rng, pool: &[Value]) -> Value {
    pool[rng.below(pool.len() as u64) as usize].clone()
}

/// A counter in `lo..=hi`.
fn counter(rng: &mut Rng, lo: u32, hi: u32) -> u32 {
    lo + rng.below(u64::from(hi - lo) + 1) as u32
}

/// How a periodic attacker makes its statements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Noise {
    /// Any kind, small counters ([`Behaviour::Babble`]).
    Any,
    /// Any kind, counters near ∞ ([`Behaviour::MaxCounters`]).
    Huge,
    /// Ballot statements with values nobody nominated ([`Behaviour::BallotOnly`]).
    BallotOnly,
    /// [`Behaviour::Split`]'s stages.
    Split,
    /// [`Behaviour::Collude`]: babbling in concert.
    Collude,
}

/// The range of ballot counters random statements draw from.
#[derive(Clone, Copy)]
struct Span {
    lo: u32,
    hi: u32,
}

/// Small counters, as honest nodes use.
const SMALL: Span = Span { lo: 1, hi: 5 };
/// Counters at and just below ∞ (`u32::MAX`).
const HUGE: Span = Span { lo: INFINITE_COUNTER - 3, hi: INFINITE_COUNTER };

/// Random pledges with counters from `span` and values from `pool`, sane by construction
/// (c.n is never ∞: that is insane, and refused before it reaches the protocol).
fn random_pledges(rng: &mut Rng, pool: &[Value], span: Span) -> Pledges {
    match rng.below(4) {
        0 => random_nominate(rng, pool),
        _ => random_ballot_pledges(rng, pool, span),
    }
}

/// A random PREPARE (45%), CONFIRM (40%) or EXTERNALIZE (15%: it is final, so the
/// sender's later statements about the slot are stale to whoever got it).
fn random_ballot_pledges(rng: &mut Rng, pool: &[Value], span: Span) -> Pledges {
    let pledges = match rng.below(20) {
        0..9 => random_prepare(rng, pool, span),
        9..17 => random_confirm(rng, pool, span),
        _ => random_externalize(rng, pool, span),
    };
    debug_assert_eq!(pledges.check_sanity(false), Ok(()), "babbled {pledges:?}");
    pledges
}

/// X and Y are disjoint (draft §3.4) and not both empty.
fn random_nominate(rng: &mut Rng, pool: &[Value]) -> Pledges {
    let accepted: BTreeSet<Value> = (0..rng.below(3)).map(|_| pick(rng, pool)).collect();
    let mut voted: BTreeSet<Value> =
        (0..1 + rng.below(3)).map(|_| pick(rng, pool)).filter(|v| !accepted.contains(v)).collect();
    if voted.is_empty() && accepted.is_empty() {
        voted.insert(pick(rng, pool));
    }
    Pledges::Nominate { voted, accepted }
}

fn random_prepare(rng: &mut Rng, pool: &[Value], span: Span) -> Pledges {
    let ballot = Ballot::new(counter(rng, span.lo, span.hi), pick(rng, pool));
    let prepared = rng.chance(0.7).then(|| Ballot::new(counter(rng, span.lo, span.hi), pick(rng, pool)));
    let mut prepared_prime = None;
    let mut n_h = 0;
    if let Some(p) = &prepared {
        let pp = Ballot::new(counter(rng, span.lo, p.counter), pick(rng, pool));
        prepared_prime = (rng.chance(0.4) && pp < *p && !pp.compatible(p)).then_some(pp);
        n_h = if rng.chance(0.5) { counter(rng, span.lo, p.counter) } else { 0 };
    }
    let n_c = if n_h > 0 && n_h <= ballot.counter && rng.chance(0.5) {
        counter(rng, span.lo, n_h.min(INFINITE_COUNTER - 1))
    } else {
        0
    };
    Pledges::Prepare { ballot, prepared, prepared_prime, n_c, n_h }
}

fn random_confirm(rng: &mut Rng, pool: &[Value], span: Span) -> Pledges {
    let ballot = Ballot::new(counter(rng, span.lo, span.hi), pick(rng, pool));
    let n_h = counter(rng, span.lo, ballot.counter);
    let n_commit = counter(rng, span.lo, n_h.min(INFINITE_COUNTER - 1));
    let n_prepared = counter(rng, span.lo, span.hi);
    Pledges::Confirm { ballot, n_prepared, n_commit, n_h }
}

fn random_externalize(rng: &mut Rng, pool: &[Value], span: Span) -> Pledges {
    let commit = Ballot::new(counter(rng, span.lo, span.lo + 2), pick(rng, pool));
    let n_h = counter(rng, commit.counter, span.hi);
    Pledges::Externalize { commit, n_h }
}

/// [`Behaviour::Flatter`]'s answer to `pledges`: the next step on the sender's value.
fn one_step_ahead(pledges: &Pledges) -> Pledges {
    match pledges {
        Pledges::Nominate { voted, accepted } => {
            Pledges::Nominate { voted: BTreeSet::new(), accepted: voted.union(accepted).cloned().collect() }
        }
        Pledges::Prepare { ballot, prepared, n_h, .. } if prepared.is_none() || *n_h == 0 => {
            let n = ballot.counter;
            Pledges::Prepare {
                ballot: ballot.clone(),
                prepared: Some(ballot.clone()),
                prepared_prime: None,
                n_c: n,
                n_h: n,
            }
        }
        Pledges::Prepare { ballot, .. } => {
            let n = ballot.counter;
            Pledges::Confirm { ballot: ballot.clone(), n_prepared: n, n_commit: n, n_h: n }
        }
        Pledges::Confirm { ballot, n_commit, n_h, .. } => {
            Pledges::Externalize { commit: Ballot::new(*n_commit, ballot.value.clone()), n_h: *n_h }
        }
        Pledges::Externalize { .. } => pledges.clone(),
    }
}

/// [`Behaviour::Split`]'s last stage.
const LAST_STAGE: u32 = 6;

/// [`Behaviour::Split`]'s statement for `value` at `stage`: votes, accepts, PREPARE,
/// accepted prepared, confirmed prepared (voting commit), CONFIRM, EXTERNALIZE.
fn stage_pledges(stage: u32, value: &Value) -> Pledges {
    let b = Ballot::new(1, value.clone());
    let one: BTreeSet<Value> = [value.clone()].into();
    let prepare = |p: bool, n: u32| Pledges::Prepare {
        ballot: b.clone(),
        prepared: p.then(|| b.clone()),
        prepared_prime: None,
        n_c: n,
        n_h: n,
    };
    match stage {
        0 => Pledges::Nominate { voted: one, accepted: BTreeSet::new() },
        1 => Pledges::Nominate { voted: BTreeSet::new(), accepted: one },
        2 => prepare(false, 0),
        3 => prepare(true, 0),
        4 => prepare(true, 1),
        5 => Pledges::Confirm { ballot: b, n_prepared: 1, n_commit: 1, n_h: 1 },
        _ => Pledges::Externalize { commit: b, n_h: 1 },
    }
}

// ----- Environment ------------------------------------------------------------------------

/// `FBA_SIM_SCALE`: the factor applied to the number of random runs (default 1).
pub fn scale() -> u64 {
    std::env::var("FBA_SIM_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1)
}

/// `FBA_SIM_SEED`: the one seed to replay, if set.
pub fn replay_seed() -> Option<u64> {
    std::env::var("FBA_SIM_SEED").ok().and_then(|s| s.trim().parse().ok())
}
