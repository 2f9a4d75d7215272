//! # The Stellar Consensus Protocol, as a pure state machine
//!
//! SCP (Mazières, *The Stellar Consensus Protocol*, 2015; draft-mazieres-dinrg-scp) lets
//! nodes that each pick their own quorum slices agree on one value per **slot**. This
//! module implements it without any I/O: the caller feeds [`Input`]s with the current time
//! to [`Node::handle`] and carries out the [`Output`]s it returns (send these statements,
//! arm this timer, this slot externalized this value). Sockets, threads, clocks and disks
//! live in the shell.
//!
//! ## Federated voting (paper §5)
//!
//! Every protocol step is an instance of federated voting on a statement *a*. A node
//! **votes** for *a*; it **accepts** *a* when either a *v-blocking* set of nodes accepted
//! *a* (they cannot all be wrong without the node being blocked) or a *quorum* voted for or
//! accepted *a*; it **confirms** *a* when a quorum accepted it. The inputs are M, the
//! latest statement of every node, the local node's own included (stellar-core feeds its
//! own statements back the same way). Quorum math lives in [`crate::quorum`].
//!
//! ## Nomination (paper §6.1, draft §3.4)
//!
//! Each slot starts by nominating values. In round *r* a node computes **leaders**: among
//! its neighbours (nodes of its quorum set, weighted by how many slices contain them) the
//! node with the highest priority `H_P(slot, r, node)`, counting only nodes whose
//! `H_N(slot, r, node)` falls under their weight. Leaders accumulate over rounds, and
//! rounds time out after a delay that grows with *r*. A node votes for its own value when
//! it is a leader and adopts one new value per round from each leader's NOMINATE. Values
//! move X (voted) → Y (accepted) → Z (candidates, confirmed nominated) by federated voting,
//! and the composite of Z, combined by the application, becomes the value of the first
//! ballot. Once any ballot is confirmed prepared, the node votes for no new values. A
//! leader whose round timed out with none of its values accepted is barred from leading
//! the first rounds of the next slots, longer at each repeated offence (see
//! [`Node::barred_leaders`]), so that a Byzantine leader cannot stall every slot it leads.
//!
//! ## The ballot protocol (paper §6.2, draft §3.5)
//!
//! Ballots ⟨n, x⟩ are ordered by counter then value. The node holds b (current ballot),
//! p and p' (the two highest incompatible ballots accepted prepared), h (highest confirmed
//! prepared), c (lowest ballot it votes or accepts to commit) and z (the value to use for
//! new ballots once something is confirmed prepared). On every input it runs small
//! idempotent steps until none makes progress:
//!
//! 1. accept prepare (steps 1 and 5), 2. confirm prepare (steps 2, 3, 8),
//! 3. accept commit (steps 4, 6, 8), 4. confirm commit → EXTERNALIZE (step 7),
//! 5. bump the counter when a v-blocking set is ahead (step 9).
//!
//! The ballot timer runs only after the node has heard from a quorum at or above its
//! counter; when it fires the node moves to counter b.n + 1. Timeouts grow with the
//! counter, so after the network settles some counter lasts long enough for everyone.
//!
//! ## Slots and the caller's loop
//!
//! A [`Node`] runs consecutive slots. Slots externalize in any order but are reported in
//! order. Statements about slots the node already externalized are answered with its
//! EXTERNALIZE, for the last [`Config::history`] slots and across restarts
//! ([`Node::restore`]), so laggards catch up; statements too far ahead are refused.
//!
//! ```
//! use fba::quorum::{NodeId, QuorumSet};
//! use fba::scp::{Application, Config, Input, Node, Output, Value};
//! use std::collections::BTreeSet;
//! use std::time::Duration;
//!
//! struct App;
//! impl Application for App {
//!     fn validate(&self, _slot: u64, _value: &Value) -> bool { true }
//!     fn combine_candidates(&self, _slot: u64, z: &BTreeSet<Value>) -> Value {
//!         z.iter().next_back().cloned().unwrap_or_default()
//!     }
//! }
//!
//! // A network of one: its own slice is itself.
//! let me = NodeId(1);
//! let config = Config::new(me, QuorumSet::new(1, [me]));
//! let mut node = Node::new(config, App, 1).unwrap();
//! let mut now = Duration::ZERO;
//! let mut pending = vec![Input::Propose(Value::new(*b"hello"))];
//! let mut decided = None;
//! while let Some(input) = pending.pop() {
//!     for output in node.handle(now, input).unwrap() {
//!         match output {
//!             Output::Externalized { slot, value } => decided = Some((slot, value)),
//!             Output::SetTimer { timer, at } if decided.is_none() => {
//!                 now = now.max(at);
//!                 pending.push(Input::Timer(timer));
//!             }
//!             _ => {} // a real shell persists, then sends statements to its peers
//!         }
//!     }
//! }
//! assert_eq!(decided, Some((1, Value::new(*b"hello"))));
//! ```

mod ballot;
mod leaders;
mod nomination;
mod slot;
mod statement;

pub use statement::{
    Ballot, Fields, Pledges, Rejection, SlotIndex, Statement, Value, INFINITE_COUNTER, MAX_NOMINATION_BYTES,
    MAX_NOMINATION_VALUES, MAX_VALUE_BYTES,
};

pub use leaders::{BASE_BAR, FORGIVE_AFTER, MAX_LEVEL, PENALTY_ROUNDS};

use crate::quorum::{NodeId, QuorumSet, QuorumSetError};
use leaders::Leadership;

/// Ballot counters any peer may be ahead of a slot's start (see `Node::counter_bound`).
const COUNTER_SLACK: u32 = 1000;
use slot::Slot;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Application policy injected into the protocol (stellar-core's `SCPDriver` hooks).
///
/// Both functions must be deterministic and depend only on their arguments (and state
/// every honest node shares), or honest nodes may disagree about validity and stall.
pub trait Application {
    /// Is `value` acceptable for `slot`? Statements carrying invalid values are refused.
    fn validate(&self, slot: SlotIndex, value: &Value) -> bool;
    /// Combine the confirmed nominated candidates Z (never empty) into one value.
    fn combine_candidates(&self, slot: SlotIndex, candidates: &BTreeSet<Value>) -> Value;
}

/// Protocol timeouts. Round *r* of nomination lasts `nomination_initial +
/// (r-1)·nomination_increment`, ballot counter *n* lasts `ballot_initial +
/// (n-1)·ballot_increment`, both capped at `max`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Duration of nomination round 1.
    pub nomination_initial: Duration,
    /// Added per further nomination round.
    pub nomination_increment: Duration,
    /// Duration of ballot counter 1.
    pub ballot_initial: Duration,
    /// Added per further ballot counter.
    pub ballot_increment: Duration,
    /// Cap on any single timeout.
    pub max: Duration,
    /// Interval at which the latest statements of undecided slots are sent again, so
    /// that lost datagrams cannot stall a slot.
    pub rebroadcast: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            nomination_initial: Duration::from_millis(1000),
            nomination_increment: Duration::from_millis(1000),
            ballot_initial: Duration::from_millis(1000),
            ballot_increment: Duration::from_millis(1000),
            max: Duration::from_secs(30 * 60),
            rebroadcast: Duration::from_millis(1000),
        }
    }
}

impl Timeouts {
    fn grow(&self, initial: Duration, increment: Duration, n: u32) -> Duration {
        initial.saturating_add(increment.saturating_mul(n.saturating_sub(1))).min(self.max)
    }

    /// How long nomination round `round` lasts.
    pub fn nomination(&self, round: u32) -> Duration {
        self.grow(self.nomination_initial, self.nomination_increment, round)
    }

    /// How long ballot counter `counter` lasts.
    pub fn ballot(&self, counter: u32) -> Duration {
        self.grow(self.ballot_initial, self.ballot_increment, counter)
    }
}

/// Static configuration of a node.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's identity.
    pub node: NodeId,
    /// Q(v): this node's quorum set. It should contain `node` itself.
    pub quorum_set: QuorumSet,
    /// Protocol timeouts.
    pub timeouts: Timeouts,
    /// Statements for slots more than this far beyond the lowest undecided slot are refused.
    pub max_slots_ahead: u64,
    /// Externalized slots whose EXTERNALIZE is kept to answer laggards.
    pub history: u64,
    /// Most distinct senders tracked per slot (bounds memory whatever peers send).
    pub max_nodes_per_slot: usize,
}

impl Config {
    /// Defaults for everything but the identity and quorum set.
    pub fn new(node: NodeId, quorum_set: QuorumSet) -> Self {
        Config {
            node,
            quorum_set,
            timeouts: Timeouts::default(),
            max_slots_ahead: 16,
            history: 64,
            max_nodes_per_slot: 256,
        }
    }
}

/// The timers a node asks its shell to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerId {
    /// The nomination round timer of a slot.
    Nomination(SlotIndex),
    /// The ballot timer of a slot.
    Ballot(SlotIndex),
    /// The periodic re-send of the latest statements of undecided slots.
    Rebroadcast,
}

/// What the shell feeds the node.
#[derive(Clone, Debug)]
pub enum Input {
    /// A statement received from a peer (the shell has checked who sent it).
    Statement(Statement),
    /// A value to nominate for the lowest undecided slot.
    Propose(Value),
    /// A timer armed by [`Output::SetTimer`] fired.
    Timer(TimerId),
    /// Every slot below `next` was decided elsewhere and applied by the shell (it caught
    /// up from its peers' ledgers): forget them and continue at `next`.
    CaughtUp {
        /// The first slot still to decide.
        next: SlotIndex,
    },
}

/// What the node asks the shell to do, in order.
///
/// **Persist before you send**: every statement in a [`Output::Broadcast`] is the node's
/// newest statement of its kind (nomination or ballot) for its slot; a shell that must
/// survive restarts stores it before sending it and hands the latest of each kind back to
/// [`Node::restore`], so that a restarted node never contradicts what it said, carries
/// on its nomination, and answers laggards with the very EXTERNALIZE it sent. PREPARE and
/// CONFIRM must be durable before they leave; NOMINATE and EXTERNALIZE bind the node to
/// nothing new and may become durable a little later (see `crate::journal`). An
/// [`Output::Send`] repeats such an EXTERNALIZE and needs no storing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send this (own) statement to every peer.
    Broadcast(Statement),
    /// Send this statement to one peer (an EXTERNALIZE answering a laggard).
    Send {
        /// The peer.
        to: NodeId,
        /// The statement.
        statement: Statement,
    },
    /// Fire `timer` at time `at` (replaces any earlier deadline of the same timer).
    SetTimer {
        /// Which timer.
        timer: TimerId,
        /// When, on the caller's clock.
        at: Duration,
    },
    /// The timer is no longer needed.
    CancelTimer(TimerId),
    /// Slot `slot` decided `value`. Reported once per slot, in slot order.
    Externalized {
        /// The slot.
        slot: SlotIndex,
        /// The value agreed on.
        value: Value,
    },
}

/// Catch-up's trust rule: may node `me`, with quorum set `local`, take a decided value
/// (a peer's ledger entry) on the word of the peers in `vouchers`? Yes when they are
/// v-blocking for it, or when they together with `me` contain one of its quorum slices.
///
/// **Safety.** An entry is right as soon as one honest peer vouches for it: an honest
/// ledger holds only what its node externalized, intact nodes agree on that, and the
/// chain hash pins the whole history. A v-blocking set meets every slice of `me`, so it
/// holds an honest peer unless the faulty nodes are v-blocking, i.e. unless `me` is
/// befouled. A slice of `me` holds an honest peer besides `me` unless the faulty peers
/// fill a slice on their own, and a slice of an intact node is not all faulty under the
/// fault bound the configuration is built for: with threshold t of n nodes and f faults
/// (n ≥ 3f + 1, t = n − f) a slice holds t − 1 ≥ 2f peers, so 3-of-4 with one fault
/// leaves two peers of which one is honest; nested sets likewise (two of three
/// organisations, two of three nodes each: a slice holds three peers, and one node fails).
/// Formally: the rule is safe for `me` whenever its honest peers are v-blocking for it.
///
/// **Liveness.** Catch-up succeeds as soon as the peers that answer form a slice of `me`
/// with it, which may take fewer peers than a v-blocking set: in the tiered topology (two
/// of three organisations, two of three nodes each) a node's org-mate and two nodes of a
/// second organisation make a slice with it, while a v-blocking set needs two nodes in
/// each of two organisations besides itself. So a laggard whose organisation-mate and
/// one other organisation decided a slot can fetch it even when the rest are down.
pub fn vouched(me: NodeId, local: &QuorumSet, vouchers: &impl Fn(NodeId) -> bool) -> bool {
    local.is_v_blocking(&|n| n != me && vouchers(n)) || local.is_slice(&|n| n == me || vouchers(n))
}

/// Everything a step of a slot needs from the node, plus where its effects go.
pub(crate) struct Ctx<'a> {
    pub now: Duration,
    pub config: &'a Config,
    /// Silent peers and offence records: whom nomination may pick as leaders.
    pub leadership: &'a mut Leadership,
    pub app: &'a dyn Application,
    pub slot: SlotIndex,
    pub out: &'a mut Vec<Output>,
    pub timers: &'a mut BTreeMap<TimerId, Duration>,
}

impl Ctx<'_> {
    /// Arms `timer` to fire `after` from now.
    pub fn arm(&mut self, timer: TimerId, after: Duration) {
        let at = self.now.saturating_add(after);
        self.timers.insert(timer, at);
        self.out.push(Output::SetTimer { timer, at });
    }

    /// Cancels `timer` if it is armed.
    pub fn cancel(&mut self, timer: TimerId) {
        if self.timers.remove(&timer).is_some() {
            self.out.push(Output::CancelTimer(timer));
        }
    }

    /// Our own statement with these pledges, for this slot.
    pub fn own_statement(&self, pledges: Pledges) -> Statement {
        Statement {
            node: self.config.node,
            slot: self.slot,
            quorum_set: self.config.quorum_set.clone(),
            pledges,
        }
    }

    /// Does the application accept every value the pledges carry?
    pub fn values_valid(&self, pledges: &Pledges) -> bool {
        pledges.values().into_iter().all(|v| self.app.validate(self.slot, v))
    }
}

/// An SCP node running consecutive slots.
pub struct Node<A> {
    config: Config,
    app: A,
    /// Undecided slots, and decided ones not yet reported because an earlier one is open.
    slots: BTreeMap<SlotIndex, Slot>,
    /// The lowest slot not yet reported externalized.
    next: SlotIndex,
    /// Our EXTERNALIZE for recently reported slots, to answer laggards.
    history: BTreeMap<SlotIndex, Statement>,
    /// The value proposed for slot `next`, if any.
    proposal: Option<Value>,
    /// Deadlines of armed timers; a firing that does not match is stale and ignored.
    timers: BTreeMap<TimerId, Duration>,
    /// Peers the shell reports as silent (see [`Node::set_unresponsive`]) and peers
    /// barred from leading nomination for wasting their rounds (see [`Node::barred_leaders`]).
    leadership: Leadership,
}

/// Why a node cannot be built from a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The local quorum set is not sane.
    QuorumSet(QuorumSetError),
    /// Slot 0 is reserved; slots start at 1.
    SlotZero,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::QuorumSet(e) => write!(f, "quorum set: {e}"),
            ConfigError::SlotZero => write!(f, "slots start at 1"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl<A: Application> Node<A> {
    /// A node whose first undecided slot is `first_slot` (1 for a new network).
    pub fn new(config: Config, app: A, first_slot: SlotIndex) -> Result<Self, ConfigError> {
        config.quorum_set.check_sanity().map_err(ConfigError::QuorumSet)?;
        if first_slot == 0 {
            return Err(ConfigError::SlotZero);
        }
        Ok(Node {
            config,
            app,
            slots: BTreeMap::new(),
            next: first_slot,
            history: BTreeMap::new(),
            proposal: None,
            timers: BTreeMap::new(),
            leadership: Leadership::default(),
        })
    }

    /// Q(v) := `quorum_set` from now on: a reconfiguration decided in the slot just
    /// externalized, adopted at the slot boundary. Every statement carries its sender's
    /// quorum set, so peers judge ours by the statements we send from now on, and the
    /// slots still open (at most the next ones, whose statements may have arrived early)
    /// are evaluated with it from their next step. Refused, changing nothing, if not sane.
    pub fn set_quorum_set(&mut self, quorum_set: QuorumSet) -> Result<(), ConfigError> {
        quorum_set.check_sanity().map_err(ConfigError::QuorumSet)?;
        self.config.quorum_set = quorum_set;
        Ok(())
    }

    /// Tells the node which peers have gone silent (e.g. no datagram for a few seconds).
    /// Nomination then does not pick them as round leaders: a crashed leader would
    /// otherwise cost every slot it leads a whole round timeout. Leader choice only
    /// affects liveness, never safety, and nodes that see the same peer silent agree on
    /// the leaders again. Ignored if it would leave no neighbour.
    pub fn set_unresponsive(&mut self, peers: BTreeSet<NodeId>) {
        self.leadership.unresponsive = peers;
    }

    /// The nodes barred from leading the first [`PENALTY_ROUNDS`] nomination rounds of
    /// the current slot because none of the values they first put forward in a slot they
    /// led was accepted: they sent nothing, only invalid values, or a different value to each node
    /// (the rule and its liveness argument are in `src/scp/leaders.rs`). It may include
    /// this node itself, judged by the same rule so that honest nodes agree on leaders.
    /// For logs; the node applies it by itself.
    pub fn barred_leaders(&self) -> BTreeSet<NodeId> {
        self.leadership.penalties.barred(&self.config.quorum_set, self.next, 1)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The application.
    pub fn app(&self) -> &A {
        &self.app
    }

    /// The application, mutably (e.g. to update what it considers valid between slots).
    pub fn app_mut(&mut self) -> &mut A {
        &mut self.app
    }

    /// The lowest slot not yet reported externalized.
    pub fn current_slot(&self) -> SlotIndex {
        self.next
    }

    /// Our latest statements (nomination and ballot) for `slot`, if we made any.
    pub fn own_statements(&self, slot: SlotIndex) -> Vec<Statement> {
        match self.slots.get(&slot) {
            Some(s) => s.own_statements(),
            None => self.history.get(&slot).cloned().into_iter().collect(),
        }
    }

    /// Our EXTERNALIZE statements for the recently decided slots still answered to
    /// laggards (at most [`Config::history`], oldest first): what a shell keeps in its
    /// journal so that a restarted node answers them too ([`Node::restore`]).
    pub fn decided_statements(&self) -> impl Iterator<Item = &Statement> {
        self.history.values()
    }

    /// The phase of `slot`'s ballot protocol and its b, p, p', h, c, for tests and logs.
    pub fn ballot_state(&self, slot: SlotIndex) -> Option<String> {
        self.slots.get(&slot).map(|s| s.describe())
    }

    /// Feeds one input at time `now` and returns what to do, in order.
    pub fn handle(&mut self, now: Duration, input: Input) -> Result<Vec<Output>, Rejection> {
        let mut out = Vec::new();
        match input {
            Input::Statement(st) => self.receive(now, st, &mut out)?,
            Input::Propose(value) => self.propose(now, value, &mut out)?,
            Input::Timer(timer) => self.fire(now, timer, &mut out),
            Input::CaughtUp { next } => self.skip_to(next, &mut out),
        }
        self.report_externalized(now, &mut out);
        self.arm_rebroadcast(now, &mut out);
        Ok(out)
    }

    /// Crash recovery: adopt `own`, one of our statements as persisted before it was sent
    /// (see [`Output`]), so that the restarted node never contradicts what it said and
    /// carries on where it stopped. Call after [`Node::new`] and before any input, with
    /// the latest statement of each kind (nomination, ballot) of each slot:
    ///
    /// * PREPARE, CONFIRM or EXTERNALIZE of an undecided slot: the ballot protocol resumes
    ///   from it (b, p, p', c, h; a restored EXTERNALIZE of the current slot is reported
    ///   by the next [`Node::handle`]);
    /// * NOMINATE of an undecided slot: X and Y are voted and accepted again, so our next
    ///   NOMINATE covers the old one (peers take it as newer);
    /// * EXTERNALIZE of a decided slot (below [`Node::current_slot`], within
    ///   [`Config::history`]): kept, exactly as said, to answer laggards about that slot.
    ///
    /// Anything else is refused: not ours ([`Rejection::FromSelf`]), or a decided slot's
    /// statement that is not an EXTERNALIZE or is older than the history
    /// ([`Rejection::TooOld`]).
    pub fn restore(&mut self, now: Duration, own: Statement) -> Result<Vec<Output>, Rejection> {
        own.check_sanity(true)?;
        if own.node != self.config.node {
            return Err(Rejection::FromSelf);
        }
        if own.slot < self.next {
            return self.remember_decided(own).map(|()| Vec::new());
        }
        let mut out = Vec::new();
        let slot = self.slots.entry(own.slot).or_insert_with(|| Slot::new(self.config.node, now));
        let mut ctx = Self::ctx(
            &self.config,
            &self.app,
            &mut self.leadership,
            own.slot,
            now,
            &mut out,
            &mut self.timers,
        );
        slot.restore(&mut ctx, own);
        self.report_externalized(now, &mut out);
        self.arm_rebroadcast(now, &mut out);
        Ok(out)
    }

    /// Keeps our EXTERNALIZE of a decided slot to answer laggards (see [`Node::restore`]).
    fn remember_decided(&mut self, own: Statement) -> Result<(), Rejection> {
        let oldest = self.next.saturating_sub(self.config.history);
        if !matches!(own.pledges, Pledges::Externalize { .. }) || own.slot < oldest {
            return Err(Rejection::TooOld);
        }
        self.history.insert(own.slot, own);
        self.trim_history();
        Ok(())
    }

    fn trim_history(&mut self) {
        while self.history.len() as u64 > self.config.history {
            self.history.pop_first();
        }
    }

    /// Forgets every slot below `next` (decided elsewhere) and moves on to `next`.
    fn skip_to(&mut self, next: SlotIndex, out: &mut Vec<Output>) {
        if next <= self.next {
            return;
        }
        let kept = self.slots.split_off(&next);
        for slot in std::mem::replace(&mut self.slots, kept).into_keys() {
            for timer in [TimerId::Nomination(slot), TimerId::Ballot(slot)] {
                if self.timers.remove(&timer).is_some() {
                    out.push(Output::CancelTimer(timer));
                }
            }
        }
        self.next = next;
        self.proposal = None;
    }

    fn ctx<'a>(
        config: &'a Config,
        app: &'a A,
        leadership: &'a mut Leadership,
        slot: SlotIndex,
        now: Duration,
        out: &'a mut Vec<Output>,
        timers: &'a mut BTreeMap<TimerId, Duration>,
    ) -> Ctx<'a> {
        Ctx { now, config, app, slot, out, timers, leadership }
    }

    fn receive(&mut self, now: Duration, st: Statement, out: &mut Vec<Output>) -> Result<(), Rejection> {
        if st.node == self.config.node {
            return Err(Rejection::FromSelf);
        }
        st.check_sanity(false)?;
        if st.slot < self.next {
            let ours = self.history.get(&st.slot).cloned().ok_or(Rejection::TooOld)?;
            return Self::answer_laggard(ours, st, out);
        }
        if st.slot > self.next.saturating_add(self.config.max_slots_ahead) {
            return Err(Rejection::TooFarAhead);
        }
        let opened = self.slots.get(&st.slot).map_or(now, Slot::opened);
        if st.pledges.max_finite_counter() > self.counter_bound(now.saturating_sub(opened)) {
            return Err(Rejection::CounterTooHigh);
        }
        let decided = self.slots.get(&st.slot).and_then(Slot::externalize_statement);
        if let Some(ours) = decided.filter(|_| !matches!(st.pledges, Pledges::Externalize { .. })) {
            // Decided, not yet reported (an earlier slot is open): answer like a laggard.
            return Self::answer_laggard(ours, st, out);
        }
        let starts_nomination = st.slot == self.next && !st.pledges.is_ballot();
        let slot = self.slots.entry(st.slot).or_insert_with(|| Slot::new(self.config.node, now));
        let mut ctx =
            Self::ctx(&self.config, &self.app, &mut self.leadership, st.slot, now, out, &mut self.timers);
        slot.receive(&mut ctx, st)?;
        if starts_nomination && !slot.nomination_started() {
            // A peer is nominating for our current slot: join in even if we have nothing
            // of our own to propose, so that we help it finish.
            slot.nominate(&mut ctx, self.proposal.clone(), false);
        }
        Ok(())
    }

    /// The highest finite ballot counter a peer's statement may carry about a slot this
    /// node has known for `age` (draft-mazieres-dinrg-scp: at most 1000 plus the seconds
    /// spent on the slot). An honest node moves to counter n + 1 only after counter n
    /// timed out, which takes at least `ballot_initial`, so no honest counter gets near
    /// it; a Byzantine node announcing a counter near ∞ (`u32::MAX`) could otherwise pull
    /// an honest node's commit up to counters the others can only reach by billions of
    /// timeouts, and stall the slot for good.
    fn counter_bound(&self, age: Duration) -> u32 {
        let per_counter = self.config.timeouts.ballot_initial.max(Duration::from_millis(1));
        let counters = age.as_nanos() / per_counter.as_nanos();
        COUNTER_SLACK.saturating_add(u32::try_from(counters).unwrap_or(u32::MAX))
    }

    /// A statement about a slot we decided: answer a sender still working on it with
    /// `ours`, our EXTERNALIZE (each time it speaks, so that a lost answer costs only
    /// time); an EXTERNALIZE is only checked against ours.
    fn answer_laggard(ours: Statement, st: Statement, out: &mut Vec<Output>) -> Result<(), Rejection> {
        if !matches!(st.pledges, Pledges::Externalize { .. }) {
            out.push(Output::Send { to: st.node, statement: ours });
            return Ok(());
        }
        if st.pledges.ballot_value() != ours.pledges.ballot_value() {
            return Err(Rejection::ContradictsExternalized);
        }
        Err(Rejection::Stale)
    }

    fn propose(&mut self, now: Duration, value: Value, out: &mut Vec<Output>) -> Result<(), Rejection> {
        if value.as_bytes().len() > MAX_VALUE_BYTES {
            return Err(Rejection::ValueTooLarge);
        }
        if !self.app.validate(self.next, &value) {
            return Err(Rejection::InvalidValue);
        }
        self.proposal = Some(value.clone());
        let slot = self.slots.entry(self.next).or_insert_with(|| Slot::new(self.config.node, now));
        let mut ctx =
            Self::ctx(&self.config, &self.app, &mut self.leadership, self.next, now, out, &mut self.timers);
        slot.nominate(&mut ctx, Some(value), false);
        Ok(())
    }

    fn fire(&mut self, now: Duration, timer: TimerId, out: &mut Vec<Output>) {
        match self.timers.get(&timer) {
            Some(&at) if at <= now => {
                self.timers.remove(&timer);
            }
            _ => return, // stale, cancelled or early: ignore
        }
        match timer {
            TimerId::Rebroadcast => self.rebroadcast(out),
            TimerId::Nomination(s) | TimerId::Ballot(s) => {
                let Some(slot) = self.slots.get_mut(&s) else { return };
                let mut ctx =
                    Self::ctx(&self.config, &self.app, &mut self.leadership, s, now, out, &mut self.timers);
                if let TimerId::Nomination(_) = timer {
                    let own = if s == self.next { self.proposal.clone() } else { None };
                    slot.nominate(&mut ctx, own, true);
                } else {
                    slot.ballot_timer_expired(&mut ctx);
                }
            }
        }
    }

    /// Re-sends our latest statements for every slot still open, for lossy networks.
    fn rebroadcast(&mut self, out: &mut Vec<Output>) {
        for slot in self.slots.values().filter(|s| !s.is_externalized()) {
            out.extend(slot.own_statements().into_iter().map(Output::Broadcast));
        }
    }

    fn arm_rebroadcast(&mut self, now: Duration, out: &mut Vec<Output>) {
        let open = self.slots.values().any(|s| !s.is_externalized() && s.has_spoken());
        let armed = self.timers.contains_key(&TimerId::Rebroadcast);
        if open && !armed {
            let at = now.saturating_add(self.config.timeouts.rebroadcast);
            self.timers.insert(TimerId::Rebroadcast, at);
            out.push(Output::SetTimer { timer: TimerId::Rebroadcast, at });
        } else if !open && armed {
            self.timers.remove(&TimerId::Rebroadcast);
            out.push(Output::CancelTimer(TimerId::Rebroadcast));
        }
    }

    /// Reports externalized slots in order, moves them to history and starts the next.
    fn report_externalized(&mut self, now: Duration, out: &mut Vec<Output>) {
        while let Some(ext) = self.slots.get(&self.next).and_then(|s| s.externalize_statement()) {
            let slot = self.next;
            let value = ext.pledges.ballot_value().cloned().unwrap_or_default();
            self.slots.remove(&slot);
            for timer in [TimerId::Nomination(slot), TimerId::Ballot(slot)] {
                if self.timers.remove(&timer).is_some() {
                    out.push(Output::CancelTimer(timer));
                }
            }
            self.history.insert(slot, ext);
            self.trim_history();
            self.next = slot + 1;
            self.proposal = None;
            out.push(Output::Externalized { slot, value });
            // Peers may already be nominating the new slot: join them.
            if let Some(next) = self.slots.get_mut(&self.next) {
                if next.has_peer_nominations() && !next.nomination_started() {
                    let mut ctx = Self::ctx(
                        &self.config,
                        &self.app,
                        &mut self.leadership,
                        self.next,
                        now,
                        out,
                        &mut self.timers,
                    );
                    next.nominate(&mut ctx, None, false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
