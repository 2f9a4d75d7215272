//! The ballot protocol (paper §6.2, draft §3.5).
//!
//! The node's state is the paper's: phase φ ∈ {PREPARE, CONFIRM, EXTERNALIZE}; b, the
//! current ballot; p and p', the two highest mutually incompatible ballots accepted
//! prepared (p' < p); h, the highest ballot confirmed prepared; c, the lowest ballot voted
//! (PREPARE) or accepted (CONFIRM) committed; z, the value of h, used for every new ballot
//! once set; and M, the latest ballot statement of every node including our own.
//!
//! Each input runs [`BallotProtocol::advance`]: the idempotent steps below, in the paper's
//! order, until none makes progress. Every step that changes the state re-records our
//! own statement in M at once, so the next step sees it.
//!
//! | step | paper | function |
//! |---|---|---|
//! | accept prepare(b') | 1, 5 | [`BallotProtocol::attempt_accept_prepared`] |
//! | confirm prepare(b'); set h, c; raise b to h | 2, 3, 8 | [`BallotProtocol::attempt_confirm_prepared`] |
//! | accept commit; PREPARE → CONFIRM | 4, 6, 8 | [`BallotProtocol::attempt_accept_commit`] |
//! | confirm commit; → EXTERNALIZE | 7 | [`BallotProtocol::attempt_confirm_commit`] |
//! | v-blocking set ahead: bump counter | 9 | [`BallotProtocol::attempt_bump`] |

use super::slot::{federated_accept, federated_ratify, is_quorum, is_v_blocking, Latest};
use super::{Ballot, Ctx, Pledges, Rejection, Statement, TimerId, Value, INFINITE_COUNTER};
use crate::quorum::NodeId;
use std::collections::BTreeSet;

/// More rounds of [`BallotProtocol::advance`] than any honest input can cause.
const MAX_ADVANCE_ROUNDS: usize = 1000;

/// φ: the phase of the ballot protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Phase {
    /// Trying to confirm a ballot prepared and to vote it committed.
    #[default]
    Prepare,
    /// Accepted a ballot committed; trying to confirm it.
    Confirm,
    /// Confirmed committed: the slot's value is decided.
    Externalize,
}

/// Ballot-protocol state of one slot.
#[derive(Default)]
pub(crate) struct BallotProtocol {
    /// φ: the phase.
    phase: Phase,
    /// b: the current ballot (None before the first).
    b: Option<Ballot>,
    /// p: the highest ballot accepted prepared.
    p: Option<Ballot>,
    /// p': the highest ballot accepted prepared that is incompatible with p (p' < p).
    p_prime: Option<Ballot>,
    /// h: the highest ballot confirmed prepared (PREPARE) or accepted committed (CONFIRM)
    /// or confirmed committed (EXTERNALIZE). Invariant: c ≤ h ≤ b, all compatible.
    h: Option<Ballot>,
    /// c: the lowest ballot voted committed (PREPARE), accepted committed (CONFIRM) or
    /// confirmed committed (EXTERNALIZE).
    c: Option<Ballot>,
    /// z: the value every new ballot must carry once something is confirmed prepared.
    z: Option<Value>,
    /// The latest composite of nomination's candidates.
    composite: Option<Value>,
    /// M: the latest ballot statement of every node, ours included.
    m: Latest,
    /// Whether a quorum is at or above b.n (the ballot timer runs only then).
    heard_from_quorum: bool,
}

impl BallotProtocol {
    pub fn is_externalized(&self) -> bool {
        self.phase == Phase::Externalize
    }

    /// Some ballot is confirmed prepared (h is set), so nomination may stop.
    pub fn confirmed_prepared(&self) -> bool {
        self.h.is_some()
    }

    pub fn own(&self, me: NodeId) -> Option<&Statement> {
        self.m.get(&me)
    }

    pub fn describe(&self) -> String {
        format!(
            "{:?} b={:?} p={:?} p'={:?} h={:?} c={:?} z={:?}",
            self.phase, self.b, self.p, self.p_prime, self.h, self.c, self.z
        )
    }

    /// A peer's PREPARE, CONFIRM or EXTERNALIZE: record it if newer, then advance.
    pub fn receive(&mut self, ctx: &mut Ctx, st: Statement) -> Result<(), Rejection> {
        match self.m.get(&st.node) {
            Some(old) if !st.pledges.is_newer_than(&old.pledges) => return Err(Rejection::Stale),
            None if self.m.len() >= ctx.config.max_nodes_per_slot => return Err(Rejection::TooManyNodes),
            _ => {}
        }
        if !ctx.values_valid(&st.pledges) {
            return Err(Rejection::InvalidValue);
        }
        if self.phase == Phase::Externalize {
            // Decided: keep only statements that agree, to answer with a consistent M.
            if st.pledges.ballot_value() != self.c.as_ref().map(|c| &c.value) {
                return Err(Rejection::ContradictsExternalized);
            }
            self.m.insert(st.node, st);
            return Ok(());
        }
        self.m.insert(st.node, st);
        self.advance(ctx);
        Ok(())
    }

    /// Crash recovery (stellar-core `setStateFromEnvelope`): adopt our own statement, as
    /// persisted before it was sent, as the current state, so that nothing we say after
    /// a restart contradicts it. PREPARE restores b, p, p', and c, h as ⟨c.n, b.x⟩,
    /// ⟨h.n, b.x⟩; CONFIRM restores φ = CONFIRM with p = ⟨p.n, b.x⟩; EXTERNALIZE restores
    /// the decision itself.
    pub fn restore(&mut self, ctx: &Ctx, own: Statement) {
        let at = |n: u32, v: &Value| (n != 0).then(|| Ballot::new(n, v.clone()));
        match &own.pledges {
            Pledges::Prepare { ballot, prepared, prepared_prime, n_c, n_h } => {
                self.phase = Phase::Prepare;
                self.b = (ballot.counter != 0).then(|| ballot.clone());
                (self.p, self.p_prime) = (prepared.clone(), prepared_prime.clone());
                (self.c, self.h) = (at(*n_c, &ballot.value), at(*n_h, &ballot.value));
            }
            Pledges::Confirm { ballot, n_prepared, n_commit, n_h } => {
                self.phase = Phase::Confirm;
                self.b = Some(ballot.clone());
                self.p = at(*n_prepared, &ballot.value);
                self.p_prime = None;
                (self.c, self.h) = (at(*n_commit, &ballot.value), at(*n_h, &ballot.value));
            }
            Pledges::Externalize { commit, n_h } => {
                self.phase = Phase::Externalize;
                self.b = Some(Ballot::new(INFINITE_COUNTER, commit.value.clone()));
                self.p = self.b.clone();
                self.p_prime = None;
                (self.c, self.h) = (Some(commit.clone()), at(*n_h, &commit.value));
            }
            Pledges::Nominate { .. } => return,
        }
        self.z = self.h.as_ref().map(|h| h.value.clone());
        self.record_own(ctx);
    }

    /// Nomination produced a (new) composite value: remember it for future ballots and
    /// start ballot ⟨1, composite⟩ if there is no ballot yet (stellar `bumpState(force=false)`).
    pub fn set_composite(&mut self, ctx: &mut Ctx, value: Value) {
        self.composite = Some(value.clone());
        if self.b.is_none() && self.bump_state(ctx, value, 1) {
            self.advance(ctx);
        }
    }

    /// The ballot timer fired: abandon b and move to counter b.n + 1.
    pub fn timer_expired(&mut self, ctx: &mut Ctx) {
        if self.abandon_ballot(ctx, 0) {
            self.advance(ctx);
        }
    }

    /// Runs the steps until none makes progress, then updates the ballot timer.
    fn advance(&mut self, ctx: &mut Ctx) {
        for _ in 0..MAX_ADVANCE_ROUNDS {
            let mut progress = self.attempt_accept_prepared(ctx);
            progress |= self.attempt_confirm_prepared(ctx);
            progress |= self.attempt_accept_commit(ctx);
            progress |= self.attempt_confirm_commit(ctx);
            // Bump only once everything else is quiet, as stellar-core does.
            if !progress && !self.attempt_bump(ctx) {
                self.check_heard_from_quorum(ctx);
                return;
            }
        }
        panic!("ballot protocol did not settle: {}", self.describe());
    }

    // ----- Steps 1 and 5: accept prepared -------------------------------------------------

    /// Steps 1 and 5: accept prepare(b') for the highest ballot b' that a v-blocking set
    /// accepted prepared or a quorum voted or accepted prepared, and that would raise p or
    /// p'. In CONFIRM only ballots compatible with c (and above p) count: any other would
    /// abort c, which the node accepted committed, and a node never accepts a statement
    /// contradicting one it accepted (paper §5.3).
    fn attempt_accept_prepared(&mut self, ctx: &mut Ctx) -> bool {
        if self.phase == Phase::Externalize {
            return false;
        }
        for ballot in self.prepare_candidates().iter().rev() {
            if self.phase == Phase::Confirm && !self.raises_p_in_confirm(ballot) {
                continue;
            }
            if self.p_prime.as_ref().is_some_and(|pp| ballot <= pp)
                || self.p.as_ref().is_some_and(|p| ballot.less_and_compatible(p))
            {
                continue;
            }
            let voted = |st: &Statement| votes_prepare(ballot, st);
            let accepted = |st: &Statement| accepted_prepare(ballot, st);
            if federated_accept(&ctx.config.quorum_set, &self.m, voted, accepted) {
                return self.set_accept_prepared(ctx, ballot.clone());
            }
        }
        false
    }

    /// In CONFIRM, would accepting `ballot` prepared raise p while keeping it compatible
    /// with c (the invariant p ~ c of that phase)?
    fn raises_p_in_confirm(&self, ballot: &Ballot) -> bool {
        self.c.as_ref().is_some_and(|c| c.compatible(ballot)) && self.p.as_ref().is_none_or(|p| p < ballot)
    }

    /// Raises p (or p') to `ballot`; clears c if p or p' now aborts h (PREPARE only: in
    /// CONFIRM p stays compatible with c, see [`Self::raises_p_in_confirm`]).
    fn set_accept_prepared(&mut self, ctx: &Ctx, ballot: Ballot) -> bool {
        let mut did = self.set_prepared(ballot);
        if let (Some(h), Some(_)) = (&self.h, &self.c) {
            let aborted = |x: &Option<Ballot>| x.as_ref().is_some_and(|x| h.less_and_incompatible(x));
            if aborted(&self.p) || aborted(&self.p_prime) {
                debug_assert_eq!(self.phase, Phase::Prepare);
                self.c = None;
                did = true;
            }
        }
        if did {
            self.record_own(ctx);
        }
        did
    }

    /// p/p' bookkeeping: keep the two highest incompatible accepted-prepared ballots.
    fn set_prepared(&mut self, ballot: Ballot) -> bool {
        let Some(p) = &self.p else {
            self.p = Some(ballot);
            return true;
        };
        if *p < ballot {
            if !p.compatible(&ballot) {
                self.p_prime = self.p.take();
            }
            self.p = Some(ballot);
            true
        } else if ballot < *p && !p.compatible(&ballot) && self.p_prime.as_ref().is_none_or(|pp| *pp < ballot)
        {
            self.p_prime = Some(ballot);
            true
        } else {
            false
        }
    }

    // ----- Steps 2, 3 and 8: confirm prepared ---------------------------------------------

    /// Steps 2, 3 and 8: find the highest ballot confirmed prepared above h (new h); if
    /// c is unset and nothing accepted prepared aborts it, set c to the lowest confirmed
    /// prepared ballot b ≤ c ≲ h with a finite counter (⟨∞, x⟩ only stands for every
    /// counter; no node can commit it); raise b to h.
    fn attempt_confirm_prepared(&mut self, ctx: &mut Ctx) -> bool {
        if self.phase != Phase::Prepare || self.p.is_none() {
            return false;
        }
        let candidates: Vec<Ballot> = self.prepare_candidates().into_iter().rev().collect();
        let qset = &ctx.config.quorum_set;
        let ratified = |b: &Ballot| federated_ratify(qset, &self.m, |st| accepted_prepare(b, st));
        let Some(i) =
            candidates.iter().take_while(|b| self.h.as_ref().is_none_or(|h| *b > h)).position(&ratified)
        else {
            return false;
        };
        let new_h = &candidates[i];
        let aborted = |x: &Option<Ballot>| x.as_ref().is_some_and(|x| new_h.less_and_incompatible(x));
        let mut new_c = None;
        if self.c.is_none() && !aborted(&self.p) && !aborted(&self.p_prime) {
            for ballot in &candidates[i..] {
                if self.b.as_ref().is_some_and(|b| ballot < b) {
                    break;
                }
                if !ballot.less_and_compatible(new_h) || ballot.counter == INFINITE_COUNTER {
                    continue;
                }
                if !ratified(ballot) {
                    break;
                }
                new_c = Some(ballot.clone());
            }
        }
        self.set_confirm_prepared(ctx, new_c, new_h.clone())
    }

    fn set_confirm_prepared(&mut self, ctx: &Ctx, new_c: Option<Ballot>, new_h: Ballot) -> bool {
        self.z = Some(new_h.value.clone());
        let mut did = false;
        if self.b.as_ref().is_none_or(|b| b.compatible(&new_h)) {
            if self.h.as_ref().is_none_or(|h| new_h > *h) {
                self.h = Some(new_h.clone());
                did = true;
            }
            if let Some(c) = new_c {
                debug_assert!(self.c.is_none());
                self.c = Some(c);
                did = true;
            }
        }
        did |= self.update_current_if_needed(&new_h);
        if did {
            self.record_own(ctx);
        }
        did
    }

    // ----- Steps 4, 6 and 8: accept commit ------------------------------------------------

    /// Steps 4, 6 and 8: accept commit for the widest interval [c.n, h.n] (c.n finite) of
    /// counters that a v-blocking set accepted committed or a quorum voted or accepted
    /// committed; move to CONFIRM. In CONFIRM, only a higher h of the same value counts.
    /// An interval that p or p' aborts is never accepted: a node never accepts a statement
    /// contradicting one it accepted (paper §5.3), and accept prepare(p) is accept abort
    /// of every ballot below p and incompatible with it. (An intact node never meets such
    /// a contradiction; a befouled one may, and must still say nothing insane.)
    fn attempt_accept_commit(&mut self, ctx: &mut Ctx) -> bool {
        if self.phase == Phase::Externalize {
            return false;
        }
        for value in self.commit_values() {
            if self.phase == Phase::Confirm && self.h.as_ref().is_none_or(|h| h.value != value) {
                continue;
            }
            let boundaries = self.commit_boundaries(&value);
            let qset = &ctx.config.quorum_set;
            let test = |lo: u32, hi: u32| {
                if lo == INFINITE_COUNTER || self.aborts_commit(&Ballot::new(lo, value.clone())) {
                    return false;
                }
                let voted = |st: &Statement| votes_commit(&value, lo, hi, st);
                let accepted = |st: &Statement| accepted_commit(&value, lo, hi, st);
                federated_accept(qset, &self.m, voted, accepted)
            };
            let Some((lo, hi)) = find_extended_interval(&boundaries, test) else { continue };
            if self.phase == Phase::Confirm && self.h.as_ref().is_some_and(|h| hi <= h.counter) {
                continue;
            }
            return self.set_accept_commit(ctx, Ballot::new(lo, value.clone()), Ballot::new(hi, value));
        }
        false
    }

    /// Does p or p' (accepted prepared) abort `ballot`, i.e. lie above it with another
    /// value? Then commit(`ballot`) and every commit below it contradict what we accepted.
    fn aborts_commit(&self, ballot: &Ballot) -> bool {
        [&self.p, &self.p_prime].into_iter().flatten().any(|x| ballot.less_and_incompatible(x))
    }

    /// Accepts commit for [c, h]; PREPARE → CONFIRM. Entering CONFIRM, p' is dropped and p
    /// becomes the highest accepted-prepared ballot compatible with c (p or p', else none):
    /// the CONFIRM statement pledges accept prepare(⟨p.n, b.x⟩), so p must carry b's value.
    /// An incompatible p is below c here ([`Self::aborts_commit`] held it off), so
    /// forgetting it contradicts nothing.
    fn set_accept_commit(&mut self, ctx: &Ctx, c: Ballot, h: Ballot) -> bool {
        debug_assert!(!self.aborts_commit(&c), "accepting an aborted commit: {}", self.describe());
        self.z = Some(h.value.clone());
        let mut did = false;
        if self.h.as_ref() != Some(&h) || self.c.as_ref() != Some(&c) {
            self.c = Some(c);
            self.h = Some(h.clone());
            did = true;
        }
        if self.phase == Phase::Prepare {
            self.phase = Phase::Confirm;
            if self.b.as_ref().is_some_and(|b| !h.less_and_compatible(b)) {
                self.bump_to_ballot(h.clone());
            }
            let p_prime = self.p_prime.take();
            if self.p.as_ref().is_some_and(|p| !p.compatible(&h)) {
                self.p = p_prime.filter(|pp| pp.compatible(&h));
            }
            did = true;
        }
        if did {
            self.update_current_if_needed(&h);
            self.record_own(ctx);
        }
        did
    }

    // ----- Step 7: confirm commit ---------------------------------------------------------

    /// Step 7: confirm commit for the widest interval (c.n finite) a quorum accepted
    /// committed; the slot externalizes c.x.
    fn attempt_confirm_commit(&mut self, ctx: &mut Ctx) -> bool {
        if self.phase != Phase::Confirm {
            return false;
        }
        let Some(value) = self.h.as_ref().map(|h| h.value.clone()) else { return false };
        let boundaries = self.commit_boundaries(&value);
        let qset = &ctx.config.quorum_set;
        let test = |lo: u32, hi: u32| {
            lo != INFINITE_COUNTER
                && federated_ratify(qset, &self.m, |st| accepted_commit(&value, lo, hi, st))
        };
        let Some((lo, hi)) = find_extended_interval(&boundaries, test) else { return false };
        self.c = Some(Ballot::new(lo, value.clone()));
        self.h = Some(Ballot::new(hi, value.clone()));
        self.z = Some(value);
        self.phase = Phase::Externalize;
        self.record_own(ctx);
        true
    }

    // ----- Step 9: bump -------------------------------------------------------------------

    /// Step 9: if the nodes with a counter above b.n form a v-blocking set, move to the
    /// lowest counter n such that the nodes above n are no longer v-blocking.
    fn attempt_bump(&mut self, ctx: &mut Ctx) -> bool {
        if self.phase == Phase::Externalize {
            return false;
        }
        let local = self.b.as_ref().map_or(0, |b| b.counter);
        let counter = |st: &Statement| st.pledges.ballot_counter().unwrap_or(0);
        let ahead: BTreeSet<u32> = self.m.values().map(counter).filter(|&n| n > local).collect();
        let qset = &ctx.config.quorum_set;
        if !is_v_blocking(qset, &self.m, |st| counter(st) > local) {
            return false;
        }
        let Some(&n) = ahead.iter().find(|&&n| !is_v_blocking(qset, &self.m, |st| counter(st) > n)) else {
            return false;
        };
        self.abandon_ballot(ctx, n)
    }

    /// Moves to counter `n` (or b.n + 1 when `n` is 0) with value z, else the latest
    /// composite, else b's value.
    fn abandon_ballot(&mut self, ctx: &Ctx, n: u32) -> bool {
        let value = self
            .z
            .clone()
            .or_else(|| self.composite.clone())
            .or_else(|| self.b.as_ref().map(|b| b.value.clone()));
        let Some(value) = value else { return false };
        let n = if n == 0 { self.b.as_ref().map_or(1, |b| b.counter.saturating_add(1)) } else { n };
        self.bump_state(ctx, value, n)
    }

    /// Moves b to ⟨n, z or value⟩ if that is a step forward.
    fn bump_state(&mut self, ctx: &Ctx, value: Value, n: u32) -> bool {
        if self.phase == Phase::Externalize || n == INFINITE_COUNTER {
            return false;
        }
        let ballot = Ballot::new(n, self.z.clone().unwrap_or(value));
        if self.c.as_ref().is_some_and(|c| !c.compatible(&ballot)) {
            return false;
        }
        if self.b.as_ref().is_some_and(|b| *b >= ballot) {
            return false;
        }
        self.bump_to_ballot(ballot);
        self.record_own(ctx);
        true
    }

    /// Step 8 helper: raise b to h when b < h.
    fn update_current_if_needed(&mut self, h: &Ballot) -> bool {
        if self.b.as_ref().is_none_or(|b| b < h) {
            self.bump_to_ballot(h.clone());
            true
        } else {
            false
        }
    }

    /// Sets b; drops h and c if they no longer match b's value (PREPARE only: in CONFIRM
    /// every new ballot carries z = c.x); a new counter restarts the wait for a quorum.
    fn bump_to_ballot(&mut self, ballot: Ballot) {
        debug_assert_ne!(self.phase, Phase::Externalize);
        let new_counter = self.b.as_ref().is_none_or(|b| b.counter != ballot.counter);
        if self.h.as_ref().is_some_and(|h| !h.compatible(&ballot)) {
            debug_assert_eq!(self.phase, Phase::Prepare, "CONFIRM must keep c: {}", self.describe());
            self.h = None;
            self.c = None;
        }
        self.b = Some(ballot);
        if new_counter {
            self.heard_from_quorum = false;
        }
    }

    /// Arms the ballot timer for b.n once a quorum is at or above b.n (stellar-core #1548);
    /// stops it when that is no longer true or the slot is decided.
    fn check_heard_from_quorum(&mut self, ctx: &mut Ctx) {
        let timer = TimerId::Ballot(ctx.slot);
        let Some(b) = &self.b else { return };
        if self.phase == Phase::Externalize {
            ctx.cancel(timer);
            return;
        }
        let at_or_above = |st: &Statement| match &st.pledges {
            Pledges::Prepare { ballot, .. } => ballot.counter >= b.counter,
            _ => true,
        };
        if is_quorum(&ctx.config.quorum_set, &self.m, at_or_above) {
            if !self.heard_from_quorum {
                self.heard_from_quorum = true;
                ctx.arm(timer, ctx.config.timeouts.ballot(b.counter));
            }
        } else {
            self.heard_from_quorum = false;
            ctx.cancel(timer);
        }
    }

    // ----- Our own statement ----------------------------------------------------------------

    /// Writes our current state into M as our own statement (it counts in every vote).
    fn record_own(&mut self, ctx: &Ctx) {
        self.check_invariants();
        let Some(pledges) = self.own_pledges() else { return };
        debug_assert_eq!(pledges.check_sanity(true), Ok(()), "own statement insane: {}", self.describe());
        self.m.insert(ctx.config.node, ctx.own_statement(pledges));
    }

    fn own_pledges(&self) -> Option<Pledges> {
        let n = |x: &Option<Ballot>| x.as_ref().map_or(0, |x| x.counter);
        Some(match self.phase {
            Phase::Prepare => Pledges::Prepare {
                ballot: self.b.clone().unwrap_or_else(|| Ballot::new(0, Value::default())),
                prepared: self.p.clone(),
                prepared_prime: self.p_prime.clone(),
                n_c: n(&self.c),
                n_h: n(&self.h),
            },
            Phase::Confirm => Pledges::Confirm {
                ballot: self.b.clone()?,
                n_prepared: self.p.as_ref().map_or(n(&self.h), |p| p.counter),
                n_commit: n(&self.c),
                n_h: n(&self.h),
            },
            Phase::Externalize => Pledges::Externalize { commit: self.c.clone()?, n_h: n(&self.h) },
        })
    }

    /// The paper's invariants on (b, p, p', h, c); a violation is a bug, not bad input.
    fn check_invariants(&self) {
        if let (Some(p), Some(pp)) = (&self.p, &self.p_prime) {
            debug_assert!(pp < p && !pp.compatible(p), "p' must be below and incompatible with p");
        }
        if let Some(c) = &self.c {
            debug_assert_ne!(c.counter, INFINITE_COUNTER, "c is a real ballot");
            let h = self.h.as_ref().expect("c implies h");
            debug_assert!(c.less_and_compatible(h), "c ≲ h");
            if self.phase != Phase::Externalize {
                let b = self.b.as_ref().expect("c implies b");
                debug_assert!(h.less_and_compatible(b), "h ≲ b when c is set");
            }
        }
        if self.phase != Phase::Prepare {
            debug_assert!(self.c.is_some() && self.h.is_some(), "CONFIRM and EXTERNALIZE need c and h");
            let c = self.c.as_ref().expect("checked above");
            debug_assert!(self.p.as_ref().is_none_or(|p| p.compatible(c)), "p ~ c after PREPARE");
            debug_assert!(self.p_prime.is_none(), "no p' after PREPARE");
        }
    }

    // ----- Reading M ------------------------------------------------------------------------

    /// Every ballot some statement in M says something about being prepared.
    fn prepare_candidates(&self) -> BTreeSet<Ballot> {
        let mut out = BTreeSet::new();
        for st in self.m.values() {
            match &st.pledges {
                Pledges::Prepare { ballot, prepared, prepared_prime, .. } => {
                    out.extend(
                        [Some(ballot), prepared.as_ref(), prepared_prime.as_ref()]
                            .into_iter()
                            .flatten()
                            .cloned(),
                    );
                }
                Pledges::Confirm { ballot, n_prepared, .. } => {
                    out.insert(Ballot::new(*n_prepared, ballot.value.clone()));
                    out.insert(Ballot::new(INFINITE_COUNTER, ballot.value.clone()));
                }
                Pledges::Externalize { commit, .. } => {
                    out.insert(Ballot::new(INFINITE_COUNTER, commit.value.clone()));
                }
                Pledges::Nominate { .. } => {}
            }
        }
        out.retain(|b| b.counter > 0);
        out
    }

    /// Values some statement votes or accepts to commit.
    fn commit_values(&self) -> BTreeSet<Value> {
        self.m
            .values()
            .filter_map(|st| match &st.pledges {
                Pledges::Prepare { ballot, n_c, .. } if *n_c != 0 => Some(ballot.value.clone()),
                Pledges::Confirm { ballot, .. } => Some(ballot.value.clone()),
                Pledges::Externalize { commit, .. } => Some(commit.value.clone()),
                _ => None,
            })
            .collect()
    }

    /// The counters at which the commit intervals of statements for `value` start or end.
    fn commit_boundaries(&self, value: &Value) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        for st in self.m.values() {
            match &st.pledges {
                Pledges::Prepare { ballot, n_c, n_h, .. } if ballot.value == *value && *n_c != 0 => {
                    out.extend([*n_c, *n_h]);
                }
                Pledges::Confirm { ballot, n_commit, n_h, .. } if ballot.value == *value => {
                    out.extend([*n_commit, *n_h]);
                }
                Pledges::Externalize { commit, n_h } if commit.value == *value => {
                    out.extend([commit.counter, *n_h, INFINITE_COUNTER]);
                }
                _ => {}
            }
        }
        out
    }
}

/// Does `st` vote (or accept) prepare(ballot)?
fn votes_prepare(ballot: &Ballot, st: &Statement) -> bool {
    match &st.pledges {
        Pledges::Prepare { ballot: b, .. } => ballot.less_and_compatible(b),
        Pledges::Confirm { ballot: b, .. } => ballot.compatible(b),
        Pledges::Externalize { commit, .. } => ballot.compatible(commit),
        Pledges::Nominate { .. } => false,
    }
}

/// Does `st` accept prepare(ballot)?
fn accepted_prepare(ballot: &Ballot, st: &Statement) -> bool {
    match &st.pledges {
        Pledges::Prepare { prepared, prepared_prime, .. } => [prepared, prepared_prime]
            .into_iter()
            .any(|x| x.as_ref().is_some_and(|x| ballot.less_and_compatible(x))),
        Pledges::Confirm { ballot: b, n_prepared, .. } => {
            ballot.compatible(b) && ballot.counter <= *n_prepared
        }
        Pledges::Externalize { commit, .. } => ballot.compatible(commit),
        Pledges::Nominate { .. } => false,
    }
}

/// Does `st` vote (or accept) commit(⟨n, value⟩) for every n in [lo, hi]?
fn votes_commit(value: &Value, lo: u32, hi: u32, st: &Statement) -> bool {
    match &st.pledges {
        Pledges::Prepare { ballot, n_c, n_h, .. } => {
            ballot.value == *value && *n_c != 0 && *n_c <= lo && hi <= *n_h
        }
        Pledges::Confirm { ballot, n_commit, .. } => ballot.value == *value && *n_commit <= lo,
        Pledges::Externalize { commit, .. } => commit.value == *value && commit.counter <= lo,
        Pledges::Nominate { .. } => false,
    }
}

/// Does `st` accept commit(⟨n, value⟩) for every n in [lo, hi]?
fn accepted_commit(value: &Value, lo: u32, hi: u32, st: &Statement) -> bool {
    match &st.pledges {
        Pledges::Confirm { ballot, n_commit, n_h, .. } => {
            ballot.value == *value && *n_commit <= lo && hi <= *n_h
        }
        Pledges::Externalize { commit, .. } => commit.value == *value && commit.counter <= lo,
        _ => false,
    }
}

/// The widest interval [lo, hi] of `boundaries` passing `test`: first the highest boundary
/// k with [k, k] passing, then lowering lo while the test still passes.
fn find_extended_interval(boundaries: &BTreeSet<u32>, test: impl Fn(u32, u32) -> bool) -> Option<(u32, u32)> {
    let mut found: Option<(u32, u32)> = None;
    for &k in boundaries.iter().rev() {
        let candidate = match found {
            None => (k, k),
            Some((_, hi)) => (k, hi),
        };
        if test(candidate.0, candidate.1) {
            found = Some(candidate);
        } else if found.is_some() {
            break;
        }
    }
    found
}
