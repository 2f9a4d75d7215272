//! The nomination protocol (paper §6.1, draft §3.4).
//!
//! Nomination turns the values nodes propose into candidate values for the ballot
//! protocol. A node holds X (values it voted nominated), Y (values it accepted nominated)
//! and Z (candidates: values it confirmed nominated). Federated voting moves values from
//! X to Y to Z; once Z is non-empty the node stops voting for new values, and the
//! application's `combine_candidates(Z)` gives the composite value for the first ballot.
//!
//! To keep the number of distinct values small, in each round a node only votes for values
//! of the round's **leaders**. Leader selection is the draft's §3.3, with a hash that is
//! the same on every platform:
//!
//! ```text
//! H(tag, slot, round, node) = first 8 bytes, big-endian, of
//!     SHA-256("fba-scp" ‖ tag ‖ slot as u64 BE ‖ round as u32 BE ‖ node as u64 BE)
//! priority(node) = H(P=2, …) if H(N=1, …) ≤ weight(node) else 0
//! ```
//!
//! where `weight(node)` is the fraction of the local node's slices containing `node`
//! ([`crate::quorum::QuorumSet::weight`]), for the local node too. (stellar-core gives the
//! local node the maximum weight instead; then a node the others filter out still elects
//! itself, votes split and the slot waits a whole round. With the draft's rule, nodes that
//! share a quorum set compute the same leaders and nomination converges in round 1.)
//! The round's leaders are the neighbours of highest priority; leaders accumulate over
//! rounds, and a round that would add no new leader is skipped. Neighbours the shell
//! reports as silent are left out ([`crate::scp::Node::set_unresponsive`]): a crashed
//! leader would otherwise cost each slot it leads a round timeout. So are, in the first
//! rounds, nodes barred for wasting a round they led (see `leaders.rs`): when a round
//! times out with Z empty, each leader of it (the local node included) whose first
//! NOMINATE put forward no value in our Y is judged to have offended, and barred from
//! leading the first rounds of the next slots; within the slot at hand it stays a leader
//! (leaders only accumulate). When the slot externalizes, the first round's leaders not
//! yet judged (with bars and without) are judged by the same rule.
//! From a leader's NOMINATE a node adopts the valid value, not yet voted, with the highest
//! `H(V=3, slot, round, value)`, preferring values the leader already accepted. A node
//! that is a leader votes for its own value when it has voted for nothing else, and again
//! when it enters a round after a timeout, so that an honest leader drives that round
//! with its own value rather than echo what a griefing leader fed it.

use super::leaders::PENALTY_ROUNDS;
use super::slot::{federated_accept, federated_ratify, Latest};
use super::{
    Ctx, Pledges, Rejection, Statement, TimerId, Value, MAX_NOMINATION_BYTES, MAX_NOMINATION_VALUES,
};
use crate::hash::Sha256;
use crate::quorum::NodeId;
use std::collections::{BTreeMap, BTreeSet};

const TAG_NEIGHBOUR: u8 = 1;
const TAG_PRIORITY: u8 = 2;
const TAG_VALUE: u8 = 3;

fn round_hash(tag: u8, slot: u64, round: u32, tail: &[u8]) -> u64 {
    let mut h = Sha256::new();
    h.update(b"fba-scp").update(&[tag]).update(&slot.to_be_bytes()).update(&round.to_be_bytes()).update(tail);
    let digest = h.finish();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The priority of `node` in `round` given its weight (draft §3.3).
pub(crate) fn priority(slot: u64, round: u32, node: NodeId, weight: u64) -> u64 {
    let id = node.0.to_be_bytes();
    if round_hash(TAG_NEIGHBOUR, slot, round, &id) <= weight {
        round_hash(TAG_PRIORITY, slot, round, &id)
    } else {
        0
    }
}

/// Nomination state of one slot.
#[derive(Default)]
pub(crate) struct Nomination {
    /// The current round (0 before nomination starts).
    round: u32,
    started: bool,
    /// Set once a ballot is confirmed prepared: no new votes from then on.
    stopped: bool,
    /// X: values voted nominated.
    votes: BTreeSet<Value>,
    /// Y: values accepted nominated.
    accepted: BTreeSet<Value>,
    /// Z: candidate values (confirmed nominated).
    candidates: BTreeSet<Value>,
    /// Leaders of this and all earlier rounds.
    leaders: BTreeSet<NodeId>,
    /// The leaders of the first round, as chosen (with bars applied).
    first_leaders: BTreeSet<NodeId>,
    /// Nodes already judged: each at most once per slot, when the first round it led
    /// times out, or when the slot externalizes.
    judged: BTreeSet<NodeId>,
    /// Set once the slot externalized and its first-round leaders were judged.
    judged_at_end: bool,
    /// N: the latest NOMINATE of each node, our own included.
    latest: Latest,
    /// The values of the first NOMINATE we saw from each node, our own included: what a
    /// leader put forward before anything was accepted, as it is judged by.
    first_offers: BTreeMap<NodeId, BTreeSet<Value>>,
}

impl Nomination {
    pub fn started(&self) -> bool {
        self.started
    }

    pub fn own(&self, me: NodeId) -> Option<&Statement> {
        self.latest.get(&me)
    }

    pub fn has_peer_statements(&self, me: NodeId) -> bool {
        self.latest.keys().any(|n| *n != me)
    }

    /// `nominate(value)` (draft §3.4): start nomination, or on a timeout (the round ended
    /// with Z empty) judge the round's leaders and move to the next round. A call while
    /// nomination runs without a timeout only adds our own value. Returns a new composite
    /// value if the candidate set grew.
    pub fn nominate(&mut self, ctx: &mut Ctx, own: Option<Value>, timed_out: bool) -> Option<Value> {
        if !self.candidates.is_empty() || self.stopped || (timed_out && !self.started) {
            return None;
        }
        if self.started && !timed_out {
            self.vote_own_value(ctx, own, false);
            return self.after_own_change(ctx);
        }
        if timed_out {
            let leaders = self.leaders.clone();
            self.judge(ctx, &leaders);
        }
        self.start_round(ctx, own, timed_out);
        self.after_own_change(ctx)
    }

    /// Starts the next round (draft §3.4): computes its leaders, votes for our own value
    /// if we lead, adopts one new value from each leader's NOMINATE, arms the round timer.
    fn start_round(&mut self, ctx: &mut Ctx, own: Option<Value>, timed_out: bool) {
        self.started = true;
        self.round += 1;
        self.update_round_leaders(ctx);
        if self.first_leaders.is_empty() {
            self.first_leaders = self.leaders.clone();
        }
        self.vote_own_value(ctx, own, timed_out);
        let adopted: Vec<Value> = self
            .leaders
            .iter()
            .filter_map(|l| self.latest.get(l))
            .filter_map(|st| self.new_value_from(ctx, st))
            .collect();
        self.votes.extend(adopted);
        ctx.arm(TimerId::Nomination(ctx.slot), ctx.config.timeouts.nomination(self.round));
    }

    /// A leader votes for its own value (added to X) while it has voted for nothing else
    /// (stellar-core #3525), and, on entering a round after a timeout, whatever else it
    /// voted for: the values it echoed led nowhere, so it offers its own.
    fn vote_own_value(&mut self, ctx: &Ctx, own: Option<Value>, timed_out: bool) {
        if let Some(v) = own {
            if self.leaders.contains(&ctx.config.node)
                && (self.votes.is_empty() || timed_out)
                && !self.stopped
                && self.fits(&v)
            {
                self.votes.insert(v);
            }
        }
    }

    /// The slot externalized: judge, if not yet judged at a timeout, each node that led our
    /// first round or would have led it with no bars (`leaders.rs`), so that a node whose
    /// round 1 never timed out keeps the same book as those whose did. A node that took no
    /// part in nomination (it never started, or accepted nothing) judges nobody: it lacks
    /// the evidence the others have.
    pub fn judge_first_leaders(&mut self, ctx: &mut Ctx) {
        if self.judged_at_end || !self.started || self.accepted.is_empty() {
            return;
        }
        self.judged_at_end = true;
        let first: BTreeSet<NodeId> =
            self.first_leaders.union(&unbarred_first_leaders(ctx)).copied().collect();
        self.judge(ctx, &first);
    }

    /// Judges each of `leaders` not yet judged this slot, ourselves included (so that
    /// every honest node keeps the same book): one that put forward no value in our Y has
    /// offended (`leaders.rs`), and is barred from leading the first rounds of the next
    /// slots.
    fn judge(&mut self, ctx: &mut Ctx, leaders: &BTreeSet<NodeId>) {
        for &leader in leaders {
            if self.judged.insert(leader) && !self.offered_accepted_value(leader) {
                ctx.leadership.penalties.offence(leader, ctx.slot);
            }
        }
    }

    /// Did the first NOMINATE we saw from `leader` vote for or accept a value we accepted
    /// (Y)? Y holds only valid values that one of our quorums voted for or accepted, or one
    /// of our v-blocking sets accepted. Its later NOMINATEs do not count: echoing what the
    /// others accepted once its round failed redeems nothing.
    fn offered_accepted_value(&self, leader: NodeId) -> bool {
        self.first_offers.get(&leader).is_some_and(|offer| offer.iter().any(|v| self.accepted.contains(v)))
    }

    /// Records a peer's NOMINATE; once nomination runs, adopts a leader's value and
    /// promotes values by federated voting. Returns a new composite if Z grew.
    pub fn receive(&mut self, ctx: &mut Ctx, st: Statement) -> Result<Option<Value>, Rejection> {
        if let Some(old) = self.latest.get(&st.node) {
            if !st.pledges.is_newer_than(&old.pledges) {
                return Err(Rejection::Stale);
            }
        } else if self.latest.len() >= ctx.config.max_nodes_per_slot {
            return Err(Rejection::TooManyNodes);
        }
        let sender = st.node;
        self.first_offers.entry(sender).or_insert_with(|| st.pledges.values().into_iter().cloned().collect());
        self.latest.insert(sender, st);
        if !self.started {
            return Ok(None);
        }
        if self.candidates.is_empty() && !self.stopped && self.leaders.contains(&sender) {
            if let Some(v) = self.new_value_from(ctx, &self.latest[&sender]) {
                self.votes.insert(v);
            }
        }
        Ok(self.after_own_change(ctx))
    }

    /// Crash recovery: our own persisted NOMINATE {X, Y}. X ∪ Y are voted again and Y
    /// accepted again, so every NOMINATE we send from now on covers the restored one and
    /// peers take it as newer. Rounds start afresh when nomination next starts (our
    /// proposal or a peer's NOMINATE); Z is rebuilt by federated voting.
    pub fn restore(&mut self, ctx: &Ctx, own: &Statement) {
        let Pledges::Nominate { voted, accepted } = &own.pledges else { return };
        self.votes.extend(voted.iter().chain(accepted).cloned());
        self.accepted.extend(accepted.iter().cloned());
        self.record_own(ctx);
    }

    /// Stops voting for new values and stops the round timer.
    pub fn stop(&mut self, ctx: &mut Ctx) {
        if !self.stopped {
            self.stopped = true;
            ctx.cancel(TimerId::Nomination(ctx.slot));
        }
    }

    /// Records our own statement and runs federated voting until nothing changes.
    fn after_own_change(&mut self, ctx: &mut Ctx) -> Option<Value> {
        let before = self.candidates.len();
        loop {
            self.record_own(ctx);
            let accepted = self.attempt_accept(ctx);
            let confirmed = self.attempt_confirm(ctx);
            if !accepted && !confirmed {
                break;
            }
        }
        (self.candidates.len() > before).then(|| ctx.app.combine_candidates(ctx.slot, &self.candidates))
    }

    fn record_own(&mut self, ctx: &Ctx) {
        if self.votes.is_empty() && self.accepted.is_empty() {
            return;
        }
        let voted = self.votes.difference(&self.accepted).cloned().collect();
        let pledges = Pledges::Nominate { voted, accepted: self.accepted.clone() };
        let me = ctx.config.node;
        self.first_offers.entry(me).or_insert_with(|| pledges.values().into_iter().cloned().collect());
        self.latest.insert(ctx.config.node, ctx.own_statement(pledges));
    }

    /// Accept nominate(v) when a v-blocking set accepted it or a quorum voted or accepted it.
    fn attempt_accept(&mut self, ctx: &Ctx) -> bool {
        let mut progress = false;
        for v in self.mentioned_values() {
            if self.accepted.contains(&v) {
                continue;
            }
            let voted = |st: &Statement| nominates(st, &v, true);
            let accepted = |st: &Statement| nominates(st, &v, false);
            if federated_accept(&ctx.config.quorum_set, &self.latest, voted, accepted)
                && ctx.app.validate(ctx.slot, &v)
            {
                self.votes.insert(v.clone());
                self.accepted.insert(v);
                progress = true;
            }
        }
        progress
    }

    /// Confirm nominate(v) (v becomes a candidate) when a quorum accepted it.
    fn attempt_confirm(&mut self, ctx: &mut Ctx) -> bool {
        let mut progress = false;
        for v in self.accepted.clone() {
            if self.candidates.contains(&v) {
                continue;
            }
            if federated_ratify(&ctx.config.quorum_set, &self.latest, |st| nominates(st, &v, false)) {
                self.candidates.insert(v);
                ctx.cancel(TimerId::Nomination(ctx.slot));
                progress = true;
            }
        }
        progress
    }

    /// Would our NOMINATE still fit its limits with `v` added to X ∪ Y?
    fn fits(&self, v: &Value) -> bool {
        if self.votes.contains(v) {
            return true;
        }
        let bytes: usize = self.votes.iter().map(|x| x.as_bytes().len()).sum();
        self.votes.len() < MAX_NOMINATION_VALUES && bytes + v.as_bytes().len() <= MAX_NOMINATION_BYTES
    }

    /// Every value any node voted for or accepted.
    fn mentioned_values(&self) -> BTreeSet<Value> {
        self.latest.values().flat_map(|st| st.pledges.values()).cloned().collect()
    }

    /// The leader's value to adopt: valid, not yet voted, highest value hash; from its Y
    /// if possible (stellar-core #3524), else from its X.
    fn new_value_from(&self, ctx: &Ctx, st: &Statement) -> Option<Value> {
        let Pledges::Nominate { voted, accepted } = &st.pledges else { return None };
        let best = |set: &BTreeSet<Value>| {
            set.iter()
                .filter(|v| !self.votes.contains(*v) && self.fits(v) && ctx.app.validate(ctx.slot, v))
                .max_by_key(|v| (round_hash(TAG_VALUE, ctx.slot, self.round, v.as_bytes()), (*v).clone()))
                .cloned()
        };
        best(accepted).or_else(|| best(voted))
    }

    /// Adds the highest-priority eligible neighbours of the current round (neither silent
    /// nor, in the first rounds, barred) to the leaders, moving on to further rounds while
    /// a round would add nobody new.
    fn update_round_leaders(&mut self, ctx: &Ctx) {
        let qset = &ctx.config.quorum_set;
        for _ in 0..=qset.nodes().len() + PENALTY_ROUNDS as usize {
            let eligible = ctx.leadership.eligible(qset, ctx.slot, self.round);
            let before = self.leaders.len();
            self.leaders.extend(highest_priority(ctx, &eligible, self.round));
            let all_lead = eligible.is_subset(&self.leaders) && self.round > PENALTY_ROUNDS;
            if self.leaders.len() > before || all_lead {
                return;
            }
            self.round += 1;
        }
    }
}

/// The leaders of a slot's first round when no node is silent or barred: the
/// highest-priority neighbours of the first round in which any has a priority. Every
/// honest node computes the same set, whatever its book says.
fn unbarred_first_leaders(ctx: &Ctx) -> BTreeSet<NodeId> {
    let nodes = ctx.config.quorum_set.nodes();
    (1..=nodes.len() as u32 + PENALTY_ROUNDS)
        .map(|round| highest_priority(ctx, &nodes, round))
        .find(|leaders| !leaders.is_empty())
        .unwrap_or_default()
}

/// The nodes of `candidates` with the highest non-zero priority in `round` (none if every
/// priority is zero).
fn highest_priority(ctx: &Ctx, candidates: &BTreeSet<NodeId>, round: u32) -> BTreeSet<NodeId> {
    let qset = &ctx.config.quorum_set;
    let scored: Vec<(u64, NodeId)> =
        candidates.iter().map(|&n| (priority(ctx.slot, round, n, qset.weight(n)), n)).collect();
    let top = scored.iter().map(|(p, _)| *p).max().unwrap_or(0);
    scored.into_iter().filter(|(p, _)| *p == top && top > 0).map(|(_, n)| n).collect()
}

/// Does `st` vote for (`or_voted`) or accept nominate(v)?
fn nominates(st: &Statement, v: &Value, or_voted: bool) -> bool {
    match &st.pledges {
        Pledges::Nominate { voted, accepted } => accepted.contains(v) || (or_voted && voted.contains(v)),
        _ => false,
    }
}
