//! One slot: its nomination protocol, its ballot protocol, and federated voting over the
//! latest statements.
//!
//! The slot routes statements to the two protocols, hands the composite candidate from
//! nomination to the ballot protocol, stops nomination once a ballot is confirmed
//! prepared, and broadcasts the node's own statements when they change (at most one
//! NOMINATE and one ballot statement per input: output is coalesced as in stellar-core).

use super::ballot::BallotProtocol;
use super::nomination::Nomination;
use super::{Ctx, Pledges, Rejection, Statement};
use crate::quorum::{self, NodeId, QuorumSet};
use std::collections::BTreeMap;

/// The latest statement of each node (the paper's M), own statement included.
pub(crate) type Latest = BTreeMap<NodeId, Statement>;

/// Do the nodes whose latest statement satisfies `pred` form a v-blocking set for `local`?
pub(crate) fn is_v_blocking(local: &QuorumSet, m: &Latest, pred: impl Fn(&Statement) -> bool) -> bool {
    local.is_v_blocking(&|n| m.get(&n).is_some_and(&pred))
}

/// Do the nodes whose latest statement satisfies `pred` contain a quorum (of the local
/// node), each judged by the quorum set it announced?
pub(crate) fn is_quorum(local: &QuorumSet, m: &Latest, pred: impl Fn(&Statement) -> bool) -> bool {
    let qsets: Vec<_> =
        m.values().filter(|st| pred(st)).map(|st| (st.node, st.effective_quorum_set())).collect();
    let members = qsets.iter().map(|(n, q)| (*n, q.as_ref())).collect();
    quorum::is_quorum(local, &members)
}

/// Federated accept (paper §5.3): the nodes that `accepted` are v-blocking, or the nodes
/// that `voted` or `accepted` form a quorum.
pub(crate) fn federated_accept(
    local: &QuorumSet,
    m: &Latest,
    voted: impl Fn(&Statement) -> bool,
    accepted: impl Fn(&Statement) -> bool,
) -> bool {
    is_v_blocking(local, m, &accepted) || is_quorum(local, m, |st| voted(st) || accepted(st))
}

/// Federated ratify / confirm (paper §5.4): the nodes that accepted form a quorum.
pub(crate) fn federated_ratify(local: &QuorumSet, m: &Latest, accepted: impl Fn(&Statement) -> bool) -> bool {
    is_quorum(local, m, accepted)
}

/// Broadcasts our own statement if it is sane, as every peer will check (draft §3,
/// stellar-core `isStatementSane`). An insane one is a bug of this node: debug builds
/// panic, release builds keep it to themselves rather than send it. Returns whether sent.
fn emit(ctx: &mut Ctx, st: &Statement) -> bool {
    let sane = st.check_sanity(false);
    debug_assert_eq!(sane, Ok(()), "own statement insane: {st:?}");
    if sane.is_ok() {
        ctx.out.push(super::Output::Broadcast(st.clone()));
    }
    sane.is_ok()
}

/// The state of one slot.
pub(crate) struct Slot {
    me: NodeId,
    /// When this node first heard of the slot (on the caller's clock).
    opened: std::time::Duration,
    nomination: Nomination,
    ballot: BallotProtocol,
    /// The last NOMINATE we broadcast.
    sent_nomination: Option<Pledges>,
    /// The last ballot statement we broadcast.
    sent_ballot: Option<Pledges>,
}

impl Slot {
    pub fn new(me: NodeId, opened: std::time::Duration) -> Self {
        Slot {
            me,
            opened,
            nomination: Nomination::default(),
            ballot: BallotProtocol::default(),
            sent_nomination: None,
            sent_ballot: None,
        }
    }

    /// A peer's statement.
    pub fn receive(&mut self, ctx: &mut Ctx, st: Statement) -> Result<(), Rejection> {
        if st.pledges.is_ballot() {
            self.ballot.receive(ctx, st)?;
        } else {
            let composite = self.nomination.receive(ctx, st)?;
            self.take_composite(ctx, composite);
        }
        self.settle(ctx);
        Ok(())
    }

    /// Starts nomination, continues it when its timer fires, or adds our own value.
    pub fn nominate(&mut self, ctx: &mut Ctx, own: Option<super::Value>, timed_out: bool) {
        if self.ballot.is_externalized() {
            return;
        }
        let composite = self.nomination.nominate(ctx, own, timed_out);
        self.take_composite(ctx, composite);
        self.settle(ctx);
    }

    /// Restores our own persisted statement (NOMINATE or ballot) after a restart; it
    /// counts as sent.
    pub fn restore(&mut self, ctx: &mut Ctx, own: Statement) {
        if !own.pledges.is_ballot() {
            self.nomination.restore(ctx, &own);
            self.sent_nomination = self.nomination.own(self.me).map(|st| st.pledges.clone());
            return;
        }
        self.ballot.restore(ctx, own);
        self.sent_ballot = self.ballot.own(self.me).map(|st| st.pledges.clone());
        if self.ballot.confirmed_prepared() {
            self.nomination.stop(ctx);
        }
    }

    /// The ballot timer fired.
    pub fn ballot_timer_expired(&mut self, ctx: &mut Ctx) {
        self.ballot.timer_expired(ctx);
        self.settle(ctx);
    }

    fn take_composite(&mut self, ctx: &mut Ctx, composite: Option<super::Value>) {
        if let Some(value) = composite {
            self.ballot.set_composite(ctx, value);
        }
    }

    /// Stops nomination once a ballot is confirmed prepared, judges the first-round
    /// leaders once the slot externalized, then broadcasts what changed.
    fn settle(&mut self, ctx: &mut Ctx) {
        if self.ballot.is_externalized() {
            self.nomination.judge_first_leaders(ctx);
        }
        if self.ballot.confirmed_prepared() {
            self.nomination.stop(ctx);
        }
        let nomination = self.nomination.own(self.me).cloned();
        if let Some(st) = nomination {
            if self.sent_nomination.as_ref() != Some(&st.pledges) && emit(ctx, &st) {
                self.sent_nomination = Some(st.pledges);
            }
        }
        let ballot = self.ballot.own(self.me).filter(|st| st.pledges.ballot_counter() != Some(0)).cloned();
        if let Some(st) = ballot {
            if self.sent_ballot.as_ref() != Some(&st.pledges) && emit(ctx, &st) {
                self.sent_ballot = Some(st.pledges);
            }
        }
    }

    /// Our latest statements, as last broadcast.
    pub fn own_statements(&self) -> Vec<Statement> {
        let nomination = self.nomination.own(self.me).filter(|_| self.sent_nomination.is_some());
        let ballot = self.ballot.own(self.me).filter(|_| self.sent_ballot.is_some());
        nomination.into_iter().chain(ballot).cloned().collect()
    }

    /// When this node first heard of the slot.
    pub fn opened(&self) -> std::time::Duration {
        self.opened
    }

    pub fn has_spoken(&self) -> bool {
        self.sent_nomination.is_some() || self.sent_ballot.is_some()
    }

    pub fn is_externalized(&self) -> bool {
        self.ballot.is_externalized()
    }

    /// Our EXTERNALIZE, once the slot decided.
    pub fn externalize_statement(&self) -> Option<Statement> {
        self.ballot.is_externalized().then(|| self.ballot.own(self.me).cloned()).flatten()
    }

    pub fn nomination_started(&self) -> bool {
        self.nomination.started()
    }

    pub fn has_peer_nominations(&self) -> bool {
        self.nomination.has_peer_statements(self.me)
    }

    pub fn describe(&self) -> String {
        self.ballot.describe()
    }
}
