//! A deterministic simulated network for the SCP core.
//!
//! [`run`] drives a set of [`fba::scp::Node`]s through a [`Scenario`] on a virtual clock:
//! every message, timer, crash and Byzantine action is an event in one priority queue
//! ordered by (virtual time, sequence number), and every random choice comes from one
//! [`Rng`] seeded by the scenario's seed, so a seed replays the same run bit for bit.
//!
//! The network delivers each message after a random delay (hence reordering), and a
//! scenario may add an **asynchrony period**: a phase of loss, duplication and long delays,
//! or a partition that heals. Some nodes may be faulty: crashed (never started, or stopped
//! at some time, or stopped and later restarted from the statements it persisted), or
//! Byzantine, either **equivocating** (two honest [`Node`]s with
//! different proposals behind one identity, each peer hearing one or the other) or
//! **babbling** (random well-formed statements under its own identity).
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
//!   never go back on what they said about a slot (even across a restart), and honest
//!   statements are never refused as malformed or invalid;
//!
//! and at the end **termination**: once the asynchrony period is over, every honest node
//! that did not crash externalizes every slot of the run within [`Scenario::horizon`]
//! (where SCP promises it: see [`Scenario::guarantees_termination`]).
//! A failed run's [`Outcome::report`] gives the seed, the scenario, the broken property,
//! the nodes' final state, the tail of the event trace and the command that replays it.

use fba::quorum::{self, NodeId, QuorumSet};
use fba::rng::Rng;
use fba::scp::{
    Application, Ballot, Config, Input, Node, Output, Pledges, Rejection, Statement, Timeouts, TimerId,
    Value, INFINITE_COUNTER,
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

/// Shorthand for a number of milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A uniformly random duration in `lo..=hi` milliseconds.
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

/// The networks the simulation runs. Node ids start at 3000; every node of a topology
/// uses the same quorum set.
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
}

impl Topology {
    /// Every topology, indexed by [`Topology::index`].
    pub const ALL: [Topology; 3] = [Topology::Four, Topology::Seven, Topology::Tiered];

    /// Position in [`Topology::ALL`].
    pub fn index(self) -> u64 {
        self as u64
    }

    /// The node ids.
    pub fn nodes(self) -> Vec<NodeId> {
        let n = match self {
            Topology::Four => 4,
            Topology::Seven => 7,
            Topology::Tiered => 9,
        };
        (3000..3000 + n).map(NodeId).collect()
    }

    /// The organisations of the tiered topology (consecutive triples of node ids).
    pub fn organisations(self) -> Vec<Vec<NodeId>> {
        self.nodes().chunks(3).map(<[NodeId]>::to_vec).collect()
    }

    /// The quorum set every node uses.
    pub fn quorum_set(self) -> QuorumSet {
        match self {
            Topology::Four => QuorumSet::new(3, self.nodes()),
            Topology::Seven => QuorumSet::new(5, self.nodes()),
            Topology::Tiered => QuorumSet {
                threshold: 2,
                validators: vec![],
                inner_sets: self.organisations().into_iter().map(|org| QuorumSet::new(2, org)).collect(),
            },
        }
    }

    /// How many faulty nodes the topology tolerates (for safety and termination).
    pub fn max_faulty(self) -> u64 {
        match self {
            Topology::Seven => 2,
            Topology::Four | Topology::Tiered => 1,
        }
    }

    /// Whether its faulty nodes may be Byzantine rather than merely crashed: the honest
    /// nodes keep quorum intersection despite [`Topology::max_faulty`] Byzantine nodes.
    pub fn tolerates_byzantine(self) -> bool {
        self != Topology::Tiered
    }
}

// ----- Scenarios ------------------------------------------------------------------------

/// How a faulty node misbehaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Crashes: never starts (`None`), or stops processing at the given time.
    Crash(Option<Duration>),
    /// Crashes at `at` and restarts `down` later, from its ledger (the slots it decided)
    /// and its journal (the last ballot statement it broadcast for each slot, persisted
    /// before sending). It must then decide every slot like a correct node.
    Restart {
        /// When it crashes.
        at: Duration,
        /// How long it stays down.
        down: Duration,
    },
    /// Runs two honest nodes with different proposals under its identity; each peer hears
    /// always the same twin (`per_peer`) or a random twin per message.
    Equivocate {
        /// Whether each peer is tied to one twin.
        per_peer: bool,
    },
    /// Sends random well-formed statements under its own identity (sometimes announcing
    /// an odd quorum set).
    Babble,
}

impl Behaviour {
    /// Is the node honest whenever it runs (so its decisions must agree)?
    pub fn is_honest(&self) -> bool {
        matches!(self, Behaviour::Crash(_) | Behaviour::Restart { .. })
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
            Behaviour::Babble => write!(f, "sends random well-formed statements"),
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

    /// Names the test that replays this scenario from `FBA_SIM_SEED`.
    pub fn replayed_by(mut self, test: &'static str) -> Scenario {
        self.replay_test = test;
        self
    }

    /// Must every correct node decide every slot? Always, except in the tiered topology
    /// when a faulty node meets an asynchrony period: there no set of nodes is *intact*
    /// once one node fails (two quorums may share just that node), so SCP promises no
    /// termination. It happens: a partition lets two organisations decide without the
    /// third, then one of the two crashes, and the survivor's EXTERNALIZE messages are not
    /// v-blocking for the laggards, which therefore never catch up. Safety is still checked.
    pub fn guarantees_termination(&self) -> bool {
        self.topology.tolerates_byzantine() || self.faulty.is_empty() || self.network == Network::Calm
    }

    /// The nodes that must decide every slot: the honest ones that do not crash for good.
    pub fn correct_nodes(&self) -> Vec<NodeId> {
        let correct = |b: Option<&Behaviour>| matches!(b, None | Some(Behaviour::Restart { .. }));
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

fn random_byzantine(rng: &mut Rng) -> Behaviour {
    match rng.below(3) {
        0 => Behaviour::Equivocate { per_peer: true },
        1 => Behaviour::Equivocate { per_peer: false },
        _ => Behaviour::Babble,
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: {:?} topology, {} slots, delays 1 ms..={:?}, network {}, ",
            self.seed, self.topology, self.slots, self.max_delay, self.network
        )?;
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
    /// A babbling node sends random statements.
    Babble(NodeId),
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
    fn new(id: NodeId, scenario: &Scenario, first_slot: u64) -> Member {
        let mut config = Config::new(id, scenario.topology.quorum_set());
        config.timeouts = scenario.timeouts.clone();
        let node = Node::new(config, SimApp, first_slot).expect("simulated configurations are sane");
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
    Babbler,
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
    qset: QuorumSet,
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
            qset: topology.quorum_set(),
            actors: BTreeMap::new(),
            proposed: BTreeMap::new(),
            decisions: BTreeMap::new(),
            agreed: BTreeMap::new(),
            isolated: isolated_nodes(&scenario),
            trace: Trace { live, tail: VecDeque::with_capacity(TAIL) },
            failure: None,
            journal: BTreeMap::new(),
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
        let actor = match self.scenario.faulty.get(&id).cloned() {
            None => Actor::Honest(Box::new(Member::new(id, &self.scenario, 1))),
            Some(Behaviour::Crash(None)) => Actor::Crashed,
            Some(Behaviour::Crash(Some(at))) => {
                self.schedule(at, Event::Crash(id));
                Actor::Honest(Box::new(Member::new(id, &self.scenario, 1)))
            }
            Some(Behaviour::Restart { at, down }) => {
                self.schedule(at, Event::Crash(id));
                self.schedule(at + down, Event::Restart(id));
                Actor::Honest(Box::new(Member::new(id, &self.scenario, 1)))
            }
            Some(Behaviour::Equivocate { per_peer }) => Actor::Equivocator {
                twins: vec![Member::new(id, &self.scenario, 1), Member::new(id, &self.scenario, 1)],
                split: per_peer.then(|| self.split_peers(id)),
            },
            Some(Behaviour::Babble) => {
                self.schedule(start, Event::Babble(id));
                Actor::Babbler
            }
        };
        if matches!(actor, Actor::Honest(_) | Actor::Equivocator { .. }) {
            self.schedule(start, Event::Start(id));
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
            Event::Babble(id) => self.babble(id),
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
            Some(Actor::Honest(_)) => 1,
            Some(Actor::Equivocator { twins, .. }) => twins.len(),
            _ => 0,
        }
    }

    fn member(&mut self, id: NodeId, twin: usize) -> Option<&mut Member> {
        match self.actors.get_mut(&id)? {
            Actor::Honest(m) if twin == 0 => Some(m.as_mut()),
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

    /// Brings a crashed node back: a new node at the slot after the last one it decided,
    /// which restores its journaled ballot statements and proposes again. Its nomination
    /// state is lost (only ballot statements are restored).
    fn restart(&mut self, id: NodeId) {
        let next = self.decisions.get(&id).map_or(0, Vec::len) as u64 + 1;
        self.note(Note::Restart { node: id, next });
        self.actors.insert(id, Actor::Honest(Box::new(Member::new(id, &self.scenario, next))));
        self.journal.retain(|&(node, _, ballot), _| node != id || ballot);
        let saved: Vec<Statement> = self
            .journal
            .range((id, next, true)..(NodeId(id.0 + 1), 0, false))
            .map(|(_, st)| st.clone())
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
        if matches!(self.actors.get(&to), Some(Actor::Crashed)) {
            return self.note(Note::Drop { from, to, statement, why: "crashed" });
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
                Output::Send { to, statement } => self.send(id, to, Rc::new(statement)),
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
        let decided = self.decisions.entry(id).or_default();
        let expected = decided.len() as u64 + 1;
        decided.push(Decision { at: self.now, value: value.clone() });
        if slot != expected {
            return self.fail(Property::Order, format!("{id} reported slot {slot}, expected {expected}"));
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
    fn check_progress(&mut self, id: NodeId, statement: &Statement) {
        let key = (id, statement.slot, statement.pledges.is_ballot());
        if let Some(old) = self.journal.get(&key) {
            if old.pledges != statement.pledges && !statement.pledges.is_newer_than(&old.pledges) {
                let detail = format!("{id} went back on its word: {old:?}, then {statement:?}");
                self.fail(Property::Interface, detail);
            }
        }
        self.journal.insert(key, statement.clone());
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

    // ----- Babbling Byzantine nodes ---------------------------------------------------------

    /// Sends one to three random statements, each to a random subset of the peers, and
    /// schedules the next burst.
    fn babble(&mut self, id: NodeId) {
        for _ in 0..1 + self.rng.below(3) {
            let statement = Rc::new(self.random_statement(id));
            for peer in self.peers(id) {
                if self.rng.chance(BABBLE_REACH) {
                    self.send(id, peer, statement.clone());
                }
            }
        }
        let next = self.now + between(&mut self.rng, 10, 300);
        self.schedule(next, Event::Babble(id));
    }

    /// A random well-formed statement by `id` about a slot near the honest nodes' own.
    fn random_statement(&mut self, id: NodeId) -> Statement {
        let slot = self.babble_slot();
        let pool = self.babble_pool(id, slot);
        let pledges = random_pledges(&mut self.rng, &pool);
        let quorum_set = if self.rng.chance(0.8) { self.qset.clone() } else { self.random_quorum_set(id) };
        Statement { node: id, slot, quorum_set, pledges }
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
                Actor::Babbler => out.push(format!("{id}: babbling")),
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
    let qset = scenario.topology.quorum_set();
    let never_starts = |n: &NodeId| scenario.faulty.get(n) == Some(&Behaviour::Crash(None));
    let mut out = BTreeSet::new();
    for group in groups {
        let members: BTreeMap<NodeId, &QuorumSet> =
            group.iter().filter(|n| !never_starts(n)).map(|&n| (n, &qset)).collect();
        if !quorum::is_quorum(&qset, &members) {
            out.extend(group.iter().copied());
        }
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

/// Random pledges with small counters and values from `pool`, sane by construction.
fn random_pledges(rng: &mut Rng, pool: &[Value]) -> Pledges {
    let pledges = match rng.below(4) {
        0 => random_nominate(rng, pool),
        1 => random_prepare(rng, pool),
        2 => random_confirm(rng, pool),
        _ => random_externalize(rng, pool),
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

fn random_prepare(rng: &mut Rng, pool: &[Value]) -> Pledges {
    let ballot = Ballot::new(counter(rng, 1, 5), pick(rng, pool));
    let prepared = rng.chance(0.7).then(|| Ballot::new(counter(rng, 1, 5), pick(rng, pool)));
    let mut prepared_prime = None;
    let mut n_h = 0;
    if let Some(p) = &prepared {
        let pp = Ballot::new(counter(rng, 1, p.counter), pick(rng, pool));
        prepared_prime = (rng.chance(0.4) && pp < *p && !pp.compatible(p)).then_some(pp);
        n_h = if rng.chance(0.5) { counter(rng, 1, p.counter) } else { 0 };
    }
    let n_c = if n_h > 0 && n_h <= ballot.counter && rng.chance(0.5) { counter(rng, 1, n_h) } else { 0 };
    Pledges::Prepare { ballot, prepared, prepared_prime, n_c, n_h }
}

fn random_confirm(rng: &mut Rng, pool: &[Value]) -> Pledges {
    let ballot = Ballot::new(counter(rng, 1, 5), pick(rng, pool));
    let n_h = counter(rng, 1, ballot.counter);
    let n_commit = counter(rng, 1, n_h);
    let n_prepared = counter(rng, 1, 5);
    Pledges::Confirm { ballot, n_prepared, n_commit, n_h }
}

fn random_externalize(rng: &mut Rng, pool: &[Value]) -> Pledges {
    let commit = Ballot::new(counter(rng, 1, 3), pick(rng, pool));
    let n_h = counter(rng, commit.counter, 5);
    Pledges::Externalize { commit, n_h }
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
