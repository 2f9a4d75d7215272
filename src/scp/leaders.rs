//! Who may lead nomination rounds: the record of leaders that wasted their rounds
//! (nomination griefing; stellar-core's leader rules with a penalty on top).
//!
//! In each round of a slot's nomination (paper §6.1) a node votes only for values of the
//! round's **leaders**, and the round ends when its timer fires with no candidate (Z = ∅).
//! A leader that offers nothing, offers only invalid values, or tells each node a
//! different value (so that every node echoes its own and no value reaches a quorum)
//! costs the slot a whole round timeout; a Byzantine node leads about one slot in four of
//! a four-node network, which then runs at a fraction of its speed (a quarter to two
//! fifths in the simulation). So every node keeps a record of **offences**:
//!
//! > **Rule.** A node (a peer, or the local node itself) commits an offence in slot *s*
//! > when none of the values in the first NOMINATE we saw from it for *s* is in our Y
//! > (accepted nominated): no value it put forward is both valid and voted for or
//! > accepted by one of our quorums (or accepted by one of our v-blocking sets). It is
//! > judged once per slot: when a round it led for us times out with Z = ∅; or else,
//! > when *s* externalizes, if it led our first round of *s* or would have led it with no
//! > bars. A node that took no part in nominating *s* (it accepted nothing) judges nobody.
//!
//! Why both moments: a node whose first round times out judges at once, so that its next
//! round already passes over the griefer; a node whose first round never timed out (the
//! others, after their timeout, decided a value before its own timer fired) would
//! otherwise judge nobody, and for the slots after that the honest nodes would disagree
//! on who leads, each echoing a different leader, and lose a round timeout again. The
//! unbarred first-round leader is judged too, so that a node barred by everyone keeps
//! being judged by everyone, and the bars stay the same length everywhere. Only the
//! *first* NOMINATE counts: a griefer that echoes the value the others accepted once its
//! round failed redeems nothing, and an honest leader's first NOMINATE is its own value
//! (or, when it is barred, the value of the leader it follows).
//!
//! An offence raises the node's **level** by one (at most [`MAX_LEVEL`]) and **bars** it
//! from being chosen as a leader for the rest of slot *s* and the next
//! [`BASE_BAR`]·2^(level−1) slots: 8, 16, 32, … 512. One level is **forgiven** per
//! [`FORGIVE_AFTER`] slots without an offence, so a node judged wrongly once soon faces
//! short bars again, while one that grieves whenever it may lead is barred longer and
//! longer and costs the network a round timeout ever more rarely.
//!
//! **Only the first rounds.** Bars apply to rounds 1..=[`PENALTY_ROUNDS`] of a slot; from
//! the next round on every neighbour may lead again, as without penalties. An offender
//! already among a slot's leaders stays one: leaders only accumulate within a slot.
//!
//! **Never a v-blocking set.** Of the barred nodes only as many bars apply as leave the
//! barred set short of v-blocking (highest level first, then latest offence): a
//! v-blocking set holds an honest node unless the local node is befouled, so a larger set
//! means honest nodes were judged wrongly (after a spell of asynchrony), and barring them
//! all could leave each honest node leading alone.
//!
//! **Why honest nodes agree.** The rule uses only what honest nodes see alike once the
//! network is calm: nodes that share a quorum set compute the same leaders, round
//! timeouts are long compared with message delays, and a griefing leader's first values
//! are missing from every honest Y (one that sends nothing or only invalid values fails
//! everywhere; one that sends each node a different value leaves each value voted by one
//! honest node). A node judges itself by the same rule, so that honest books do not differ
//! by who wrote them. The honest nodes then bar the griefer for the same slots and agree
//! on the leader that replaces it, and those slots decide in round 1. An honest leader is
//! judged wrongly only when its round times out with none of its values accepted, which a
//! calm network does not do: every honest node echoes its value, and they form a quorum.
//! Where views differ for a while (a restarted node starts with an empty record), the
//! cost is a round timeout, after which the judgements meet again.
//!
//! **Safety and liveness.** Leaders decide only which values are *proposed*; federated
//! voting, which gives agreement, does not look at them, so no penalty can break safety.
//! Liveness: from round [`PENALTY_ROUNDS`] + 1 on, leader selection is the unpenalised
//! one, so stellar-core's argument applies (leaders accumulate over rounds whose timeouts
//! grow, until the nodes share an honest leader whose value a quorum echoes). Penalties
//! only change which nodes lead the first [`PENALTY_ROUNDS`] rounds.
//!
//! The record is deterministic (slot numbers, no clocks) and lives in memory: a restarted
//! node starts with a clean one.

use super::SlotIndex;
use crate::quorum::{NodeId, QuorumSet};
use std::collections::{BTreeMap, BTreeSet};

/// Slots after its first offence during which a node is barred from leading; each
/// further level doubles them.
pub const BASE_BAR: u64 = 8;
/// Highest level: bars stop doubling at `BASE_BAR << (MAX_LEVEL - 1)` (512) slots.
pub const MAX_LEVEL: u32 = 7;
/// Slots without offence after which one level is forgiven.
pub const FORGIVE_AFTER: u64 = 512;
/// Rounds of a slot in which bars apply; later rounds choose leaders among everyone.
pub const PENALTY_ROUNDS: u32 = 2;

/// A node's record: its level after its last offence, and that offence's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    level: u32,
    last_offence: SlotIndex,
}

impl Record {
    /// The level at `slot`, after forgiveness for the slots since the last offence.
    fn level_at(&self, slot: SlotIndex) -> u32 {
        let forgiven = slot.saturating_sub(self.last_offence) / FORGIVE_AFTER;
        self.level.saturating_sub(u32::try_from(forgiven).unwrap_or(u32::MAX))
    }

    /// Is the node barred from leading `slot`? In the offending slot and the [`bar`]
    /// slots after it.
    fn bars(&self, slot: SlotIndex) -> bool {
        slot >= self.last_offence && slot - self.last_offence <= bar(self.level)
    }
}

/// How many slots after its offence a node at `level` (≥ 1) stays barred.
pub fn bar(level: u32) -> u64 {
    BASE_BAR << level.clamp(1, MAX_LEVEL).saturating_sub(1)
}

/// The offence records of the nodes that led nomination rounds for the local node
/// (itself included), by the rule of this module.
#[derive(Clone, Debug, Default)]
pub struct LeaderPenalties {
    records: BTreeMap<NodeId, Record>,
}

impl LeaderPenalties {
    /// Records an offence of `node` in `slot`: one level up (after forgiveness), barred
    /// from now until [`bar`] slots later.
    pub fn offence(&mut self, node: NodeId, slot: SlotIndex) {
        let level = self.level(node, slot).saturating_add(1).min(MAX_LEVEL);
        let last_offence = self.records.get(&node).map_or(slot, |r| r.last_offence.max(slot));
        self.records.insert(node, Record { level, last_offence });
    }

    /// `node`'s level at `slot` (0: nothing left on its record).
    pub fn level(&self, node: NodeId, slot: SlotIndex) -> u32 {
        self.records.get(&node).map_or(0, |r| r.level_at(slot))
    }

    /// The nodes barred from leading round `round` of `slot` for a local node with quorum
    /// set `qset`: none after round [`PENALTY_ROUNDS`]; otherwise the barred ones, highest
    /// level (then latest offence) first, as many as stay short of a v-blocking set.
    pub fn barred(&self, qset: &QuorumSet, slot: SlotIndex, round: u32) -> BTreeSet<NodeId> {
        let mut barred = BTreeSet::new();
        if round > PENALTY_ROUNDS {
            return barred;
        }
        let mut offenders: Vec<(&NodeId, &Record)> =
            self.records.iter().filter(|(_, r)| r.bars(slot)).collect();
        offenders.sort_by_key(|(n, r)| std::cmp::Reverse((r.level_at(slot), r.last_offence, **n)));
        for (&node, _) in offenders {
            barred.insert(node);
            if qset.is_v_blocking(&|n| barred.contains(&n)) {
                barred.remove(&node);
            }
        }
        barred
    }
}

/// What the local node knows of its neighbours as nomination leaders: the peers its shell
/// reports silent ([`crate::scp::Node::set_unresponsive`]) and the offence records.
#[derive(Clone, Debug, Default)]
pub struct Leadership {
    /// Peers the shell reports as silent: never leaders.
    pub unresponsive: BTreeSet<NodeId>,
    /// Offence records: barred nodes do not lead the first rounds.
    pub penalties: LeaderPenalties,
}

impl Leadership {
    /// The neighbours (nodes of `qset`) that may lead round `round` of `slot`: all but
    /// the silent and the barred ones; all of them if that would leave none.
    pub fn eligible(&self, qset: &QuorumSet, slot: SlotIndex, round: u32) -> BTreeSet<NodeId> {
        let all = qset.nodes();
        let barred = self.penalties.barred(qset, slot, round);
        let eligible: BTreeSet<NodeId> =
            all.iter().filter(|n| !self.unresponsive.contains(n) && !barred.contains(n)).copied().collect();
        if eligible.is_empty() {
            all
        } else {
            eligible
        }
    }
}
