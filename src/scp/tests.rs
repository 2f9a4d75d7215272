//! Single-node tests: one real node, hand-built statements from its peers, exact outputs.
//!
//! The topology is stellar-core's "core5": five nodes, each with quorum set 4-of-5. A set
//! of two peers is v-blocking (it meets every slice) but not a quorum, and three peers plus
//! the node itself are a quorum, so each test can tell the two rules apart.

use super::*;
use crate::quorum::{NodeId, QuorumSet};
use std::time::Duration;

const ME: NodeId = NodeId(1);
const PEERS: [NodeId; 4] = [NodeId(2), NodeId(3), NodeId(4), NodeId(5)];

struct MaxApp;

impl Application for MaxApp {
    fn validate(&self, _slot: SlotIndex, value: &Value) -> bool {
        value.as_bytes() != b"bad"
    }
    fn combine_candidates(&self, _slot: SlotIndex, z: &BTreeSet<Value>) -> Value {
        z.iter().next_back().cloned().expect("Z is never empty")
    }
}

fn qset() -> QuorumSet {
    QuorumSet::new(4, [ME].into_iter().chain(PEERS))
}

fn node() -> Node<MaxApp> {
    Node::new(Config::new(ME, qset()), MaxApp, 1).expect("sane config")
}

fn x() -> Value {
    Value::new(*b"x")
}

fn y() -> Value {
    Value::new(*b"y")
}

fn ballot(n: u32, v: &Value) -> Ballot {
    Ballot::new(n, v.clone())
}

fn st(node: NodeId, slot: SlotIndex, pledges: Pledges) -> Statement {
    Statement { node, slot, quorum_set: qset(), pledges }
}

fn nominate(node: NodeId, voted: &[Value], accepted: &[Value]) -> Statement {
    let pledges = Pledges::Nominate {
        voted: voted.iter().cloned().collect(),
        accepted: accepted.iter().cloned().collect(),
    };
    st(node, 1, pledges)
}

fn prepare(node: NodeId, b: Ballot, p: Option<Ballot>, n_c: u32, n_h: u32) -> Statement {
    st(node, 1, Pledges::Prepare { ballot: b, prepared: p, prepared_prime: None, n_c, n_h })
}

fn confirm(node: NodeId, b: Ballot, n_prepared: u32, n_commit: u32, n_h: u32) -> Statement {
    st(node, 1, Pledges::Confirm { ballot: b, n_prepared, n_commit, n_h })
}

fn externalize(node: NodeId, slot: SlotIndex, c: Ballot, n_h: u32) -> Statement {
    st(node, slot, Pledges::Externalize { commit: c, n_h })
}

impl Statement {
    fn at_slot(mut self, slot: SlotIndex) -> Statement {
        self.slot = slot;
        self
    }
}

const T0: Duration = Duration::from_secs(100);

fn feed(n: &mut Node<MaxApp>, statement: Statement) -> Vec<Output> {
    n.handle(T0, Input::Statement(statement)).expect("statement accepted")
}

fn broadcasts(out: &[Output]) -> Vec<&Pledges> {
    out.iter()
        .filter_map(|o| match o {
            Output::Broadcast(s) => Some(&s.pledges),
            _ => None,
        })
        .collect()
}

/// Drives a fresh node to ballot ⟨1, x⟩: it proposes x and three peers accept x.
fn node_on_ballot_x() -> Node<MaxApp> {
    let mut n = node();
    n.handle(T0, Input::Propose(x())).expect("valid proposal");
    for peer in &PEERS[..3] {
        feed(&mut n, nominate(*peer, &[], &[x()]));
    }
    assert_eq!(n.own_statements(1).last().map(|s| s.pledges.kind()), Some("PREPARE"));
    n
}

// ----- Nomination ---------------------------------------------------------------------

#[test]
fn quorum_accepting_a_value_makes_it_a_candidate_and_starts_ballot_one() {
    let mut n = node();
    n.handle(T0, Input::Propose(x())).expect("valid proposal");
    feed(&mut n, nominate(PEERS[0], &[], &[x()]));
    // Two peers accepted x: v-blocking, so the node accepts x (Y = {x}) but cannot confirm.
    let out = feed(&mut n, nominate(PEERS[1], &[], &[x()]));
    assert_eq!(broadcasts(&out), vec![&Pledges::Nominate { voted: [].into(), accepted: [x()].into() }]);
    // Three peers plus ourselves accepted x: a quorum confirms it, x is the composite, and
    // the ballot protocol starts at ⟨1, x⟩. The nomination timer is cancelled.
    let out = feed(&mut n, nominate(PEERS[2], &[], &[x()]));
    assert_eq!(
        out,
        vec![
            Output::CancelTimer(TimerId::Nomination(1)),
            Output::Broadcast(prepare(ME, ballot(1, &x()), None, 0, 0)),
        ]
    );
}

#[test]
fn a_single_peer_accepting_is_not_enough() {
    let mut n = node();
    n.handle(T0, Input::Propose(y())).expect("valid proposal");
    let out = feed(&mut n, nominate(PEERS[0], &[], &[x()]));
    assert!(broadcasts(&out)
        .iter()
        .all(|p| !matches!(p, Pledges::Nominate { accepted, .. } if accepted.contains(&x()))));
}

#[test]
fn leader_priority_hash_is_pinned() {
    // Computed independently (Python hashlib) from the documented formula:
    // SHA-256("fba-scp" ‖ 0x02 ‖ slot u64 BE ‖ round u32 BE ‖ node u64 BE)[..8] as u64 BE.
    assert_eq!(nomination::priority(1, 1, NodeId(3000), u64::MAX), PINNED_PRIORITY);
    assert_eq!(nomination::priority(1, 1, NodeId(3000), 0), 0);
}
const PINNED_PRIORITY: u64 = 15_407_815_570_179_005_122;

// ----- Ballot protocol: prepare -------------------------------------------------------

#[test]
fn v_blocking_set_accepting_prepared_makes_the_node_accept() {
    let mut n = node_on_ballot_x();
    feed(&mut n, prepare(PEERS[0], ballot(1, &x()), Some(ballot(1, &x())), 0, 0));
    let out = feed(&mut n, prepare(PEERS[1], ballot(1, &x()), Some(ballot(1, &x())), 0, 0));
    assert_eq!(broadcasts(&out), vec![&prepare(ME, ballot(1, &x()), Some(ballot(1, &x())), 0, 0).pledges]);
}

#[test]
fn quorum_accepting_prepared_confirms_it_and_votes_commit() {
    let mut n = node_on_ballot_x();
    let mut last = vec![];
    for peer in &PEERS[..3] {
        last = feed(&mut n, prepare(*peer, ballot(1, &x()), Some(ballot(1, &x())), 0, 0));
    }
    // Accept prepared came from the first two; the third completes a quorum that accepted:
    // h = c = ⟨1, x⟩.
    assert_eq!(broadcasts(&last), vec![&prepare(ME, ballot(1, &x()), Some(ballot(1, &x())), 1, 1).pledges]);
}

#[test]
fn quorum_voting_commit_moves_to_confirm() {
    let mut n = node_on_ballot_x();
    for peer in &PEERS[..3] {
        feed(&mut n, prepare(*peer, ballot(1, &x()), Some(ballot(1, &x())), 1, 1));
    }
    let own = n.own_statements(1).pop().expect("ballot statement");
    assert_eq!(own.pledges, confirm(ME, ballot(1, &x()), 1, 1, 1).pledges);
}

#[test]
fn v_blocking_set_of_confirms_makes_the_node_accept_commit() {
    let mut n = node_on_ballot_x();
    feed(&mut n, confirm(PEERS[0], ballot(1, &x()), 1, 1, 1));
    let out = feed(&mut n, confirm(PEERS[1], ballot(1, &x()), 1, 1, 1));
    assert_eq!(broadcasts(&out), vec![&confirm(ME, ballot(1, &x()), 1, 1, 1).pledges]);
}

#[test]
fn quorum_of_confirms_externalizes() {
    let mut n = node_on_ballot_x();
    let mut out = vec![];
    for peer in &PEERS[..3] {
        out = feed(&mut n, confirm(*peer, ballot(1, &x()), 1, 1, 1));
    }
    assert!(out.contains(&Output::Broadcast(externalize(ME, 1, ballot(1, &x()), 1))), "{out:?}");
    assert!(out.contains(&Output::Externalized { slot: 1, value: x() }), "{out:?}");
    assert_eq!(n.current_slot(), 2);
}

#[test]
fn a_node_without_a_ballot_is_carried_along_by_a_quorum() {
    // No proposal, no nomination: confirming prepared gives the node its first ballot.
    let mut n = node();
    let mut out = vec![];
    for peer in &PEERS[..3] {
        out = feed(&mut n, prepare(*peer, ballot(2, &y()), Some(ballot(2, &y())), 0, 0));
    }
    assert_eq!(broadcasts(&out), vec![&prepare(ME, ballot(2, &y()), Some(ballot(2, &y())), 2, 2).pledges]);
}

#[test]
fn higher_incompatible_prepared_moves_old_p_to_p_prime_and_aborts_c() {
    let mut n = node_on_ballot_x();
    for peer in &PEERS[..3] {
        feed(&mut n, prepare(*peer, ballot(1, &x()), Some(ballot(1, &x())), 0, 0));
    }
    // A v-blocking set accepted ⟨2, y⟩ prepared: p = ⟨2, y⟩, p' = ⟨1, x⟩, and c (⟨1, x⟩)
    // is aborted by p, so the node stops voting to commit it.
    feed(&mut n, prepare(PEERS[0], ballot(2, &y()), Some(ballot(2, &y())), 0, 0));
    feed(&mut n, prepare(PEERS[1], ballot(2, &y()), Some(ballot(2, &y())), 0, 0));
    let own = n.own_statements(1).pop().expect("ballot statement");
    match own.pledges {
        Pledges::Prepare { prepared, prepared_prime, n_c, .. } => {
            assert_eq!(prepared, Some(ballot(2, &y())));
            assert_eq!(prepared_prime, Some(ballot(1, &x())));
            assert_eq!(n_c, 0);
        }
        other => panic!("expected PREPARE, got {other:?}"),
    }
}

// ----- Timers and bumping ---------------------------------------------------------------

fn ballot_timer(out: &[Output]) -> Option<Duration> {
    out.iter().find_map(|o| match o {
        Output::SetTimer { timer: TimerId::Ballot(1), at } => Some(*at),
        _ => None,
    })
}

#[test]
fn ballot_timer_starts_only_after_hearing_from_a_quorum() {
    let mut n = node_on_ballot_x();
    let a = feed(&mut n, prepare(PEERS[0], ballot(1, &x()), None, 0, 0));
    let b = feed(&mut n, prepare(PEERS[1], ballot(1, &x()), None, 0, 0));
    assert_eq!((ballot_timer(&a), ballot_timer(&b)), (None, None));
    let c = feed(&mut n, prepare(PEERS[2], ballot(1, &x()), None, 0, 0));
    assert_eq!(ballot_timer(&c), Some(T0 + Duration::from_secs(1)));
    // That quorum voted prepare(⟨1, x⟩), so the node accepted it prepared. The timer fires:
    // the node abandons ⟨1, x⟩ for ⟨2, x⟩.
    let out = n.handle(T0 + Duration::from_secs(1), Input::Timer(TimerId::Ballot(1))).expect("timer");
    assert_eq!(broadcasts(&out), vec![&prepare(ME, ballot(2, &x()), Some(ballot(1, &x())), 0, 0).pledges]);
}

#[test]
fn stale_and_early_timers_are_ignored() {
    let mut n = node_on_ballot_x();
    assert_eq!(n.handle(T0, Input::Timer(TimerId::Ballot(1))).expect("ignored"), vec![]);
    assert_eq!(n.handle(T0, Input::Timer(TimerId::Ballot(9))).expect("ignored"), vec![]);
}

#[test]
fn v_blocking_set_ahead_bumps_to_the_lowest_counter_it_is_ahead_of() {
    let mut n = node_on_ballot_x();
    feed(&mut n, prepare(PEERS[0], ballot(3, &x()), None, 0, 0));
    let out = feed(&mut n, prepare(PEERS[1], ballot(5, &x()), None, 0, 0));
    // Nodes above 3 are only {5}: not v-blocking, so the node stops at counter 3.
    assert_eq!(broadcasts(&out), vec![&prepare(ME, ballot(3, &x()), None, 0, 0).pledges]);
}

#[test]
fn timeouts_grow_with_round_and_counter_and_are_capped() {
    let t = Timeouts::default();
    assert_eq!(t.ballot(1), Duration::from_secs(1));
    assert_eq!(t.ballot(3), Duration::from_secs(3));
    assert_eq!(t.nomination(2), Duration::from_secs(2));
    assert_eq!(t.ballot(u32::MAX), t.max);
}

// ----- Slots ------------------------------------------------------------------------------

fn externalized_node() -> Node<MaxApp> {
    let mut n = node_on_ballot_x();
    for peer in &PEERS[..3] {
        feed(&mut n, confirm(*peer, ballot(1, &x()), 1, 1, 1));
    }
    assert_eq!(n.current_slot(), 2);
    n
}

#[test]
fn a_laggard_is_answered_with_our_externalize() {
    let mut n = externalized_node();
    let out = feed(&mut n, prepare(PEERS[3], ballot(1, &y()), None, 0, 0));
    assert_eq!(out, vec![Output::Send { to: PEERS[3], statement: externalize(ME, 1, ballot(1, &x()), 1) }]);
}

#[test]
fn peers_externalize_messages_let_a_laggard_decide() {
    let mut n = node();
    let mut out = vec![];
    for peer in &PEERS[..3] {
        out = feed(&mut n, externalize(*peer, 1, ballot(4, &y()), 6));
    }
    assert!(out.contains(&Output::Externalized { slot: 1, value: y() }), "{out:?}");
}

#[test]
fn future_slots_decide_but_are_reported_in_order() {
    let mut n = node();
    let mut out = vec![];
    for peer in &PEERS[..3] {
        out.extend(feed(&mut n, externalize(*peer, 2, ballot(1, &y()), 1)));
    }
    assert!(!out.iter().any(|o| matches!(o, Output::Externalized { .. })), "slot 1 is still open");
    for peer in &PEERS[..3] {
        out = feed(&mut n, externalize(*peer, 1, ballot(1, &x()), 1));
    }
    let decided: Vec<_> = out.iter().filter(|o| matches!(o, Output::Externalized { .. })).collect();
    assert_eq!(
        decided,
        vec![&Output::Externalized { slot: 1, value: x() }, &Output::Externalized { slot: 2, value: y() }]
    );
}

// ----- Rejections ---------------------------------------------------------------------------

fn rejection(n: &mut Node<MaxApp>, s: Statement) -> Rejection {
    n.handle(T0, Input::Statement(s)).expect_err("statement must be refused")
}

#[test]
fn insane_statements_are_rejected_with_their_reason() {
    let mut n = node();
    let cases = [
        (prepare(PEERS[0], ballot(0, &x()), None, 0, 0), Rejection::ZeroCounter),
        (prepare(PEERS[0], ballot(2, &x()), Some(ballot(1, &x())), 0, 2), Rejection::HighAbovePrepared),
        (prepare(PEERS[0], ballot(2, &x()), Some(ballot(2, &x())), 2, 1), Rejection::BadCommitRange),
        (prepare(PEERS[0], ballot(1, &x()), Some(ballot(2, &x())), 1, 2), Rejection::BadCommitRange),
        (confirm(PEERS[0], ballot(1, &x()), 1, 2, 1), Rejection::BadCommitRange),
        (confirm(PEERS[0], ballot(1, &x()), 1, 0, 1), Rejection::BadCommitRange),
        (externalize(PEERS[0], 1, ballot(3, &x()), 2), Rejection::BadCommitRange),
        (
            externalize(PEERS[0], 1, ballot(INFINITE_COUNTER, &x()), INFINITE_COUNTER),
            Rejection::CommitAtInfinity,
        ),
        (
            confirm(PEERS[0], ballot(INFINITE_COUNTER, &x()), 1, INFINITE_COUNTER, INFINITE_COUNTER),
            Rejection::CommitAtInfinity,
        ),
        (nominate(PEERS[0], &[], &[]), Rejection::EmptyNomination),
        (prepare(ME, ballot(1, &x()), None, 0, 0), Rejection::FromSelf),
        (prepare(PEERS[0], ballot(1, &Value::new(*b"bad")), None, 0, 0), Rejection::InvalidValue),
        (externalize(PEERS[0], 1000, ballot(1, &x()), 1), Rejection::TooFarAhead),
    ];
    for (statement, reason) in cases {
        assert_eq!(rejection(&mut n, statement.clone()), reason, "{statement:?}");
    }
    let mut bad_pp = prepare(PEERS[0], ballot(2, &x()), Some(ballot(2, &x())), 0, 0);
    if let Pledges::Prepare { prepared_prime, .. } = &mut bad_pp.pledges {
        *prepared_prime = Some(ballot(1, &x())); // compatible with p: not a p'
    }
    assert_eq!(rejection(&mut n, bad_pp), Rejection::BadPreparedPrime);
    let mut bad_q = prepare(PEERS[0], ballot(1, &x()), None, 0, 0);
    bad_q.quorum_set.threshold = 9;
    assert!(matches!(rejection(&mut n, bad_q), Rejection::BadQuorumSet(_)));
}

#[test]
fn duplicates_and_older_statements_are_stale() {
    let mut n = node_on_ballot_x();
    feed(&mut n, prepare(PEERS[0], ballot(2, &x()), None, 0, 0));
    assert_eq!(rejection(&mut n, prepare(PEERS[0], ballot(2, &x()), None, 0, 0)), Rejection::Stale);
    assert_eq!(rejection(&mut n, prepare(PEERS[0], ballot(1, &x()), None, 0, 0)), Rejection::Stale);
    feed(&mut n, confirm(PEERS[0], ballot(2, &x()), 2, 1, 1));
    assert_eq!(rejection(&mut n, prepare(PEERS[0], ballot(9, &x()), None, 0, 0)), Rejection::Stale);
}

#[test]
fn newer_statement_order_follows_the_draft() {
    let p = |b: u32, p: Option<u32>, h: u32| {
        prepare(PEERS[0], ballot(b, &x()), p.map(|n| ballot(n, &x())), 0, h).pledges
    };
    assert!(p(2, None, 0).is_newer_than(&p(1, None, 0)));
    assert!(p(1, Some(1), 0).is_newer_than(&p(1, None, 0)));
    assert!(p(1, Some(1), 1).is_newer_than(&p(1, Some(1), 0)));
    assert!(!p(1, Some(1), 0).is_newer_than(&p(1, Some(1), 0)));
    let c = confirm(PEERS[0], ballot(1, &x()), 1, 1, 1).pledges;
    let e = externalize(PEERS[0], 1, ballot(1, &x()), 1).pledges;
    assert!(c.is_newer_than(&p(9, Some(9), 9)));
    assert!(e.is_newer_than(&c));
    assert!(!e.is_newer_than(&e) && !c.is_newer_than(&e));
    let n1 = nominate(PEERS[0], &[x()], &[]).pledges;
    let n2 = nominate(PEERS[0], &[x(), y()], &[]).pledges;
    let n3 = nominate(PEERS[0], &[y()], &[x()]).pledges;
    let n4 = nominate(PEERS[0], &[y()], &[]).pledges;
    assert!(n2.is_newer_than(&n1) && !n1.is_newer_than(&n2));
    assert!(n3.is_newer_than(&n2), "x moving from X to Y is progress");
    assert!(!n2.is_newer_than(&n3), "un-accepting is not");
    assert!(!n4.is_newer_than(&n2), "dropping a vote is not newer");
    assert_eq!(
        nominate(PEERS[0], &[x()], &[x()]).pledges.check_sanity(false),
        Err(Rejection::OverlappingNomination)
    );
}

// ----- Crash recovery -------------------------------------------------------------------------

#[test]
fn a_restored_prepare_is_where_the_node_carries_on() {
    let mut n = node();
    let own = prepare(ME, ballot(2, &x()), Some(ballot(2, &x())), 1, 2);
    assert_eq!(
        n.restore(T0, own.clone()).expect("restores"),
        vec![Output::SetTimer { timer: TimerId::Rebroadcast, at: T0 + Timeouts::default().rebroadcast }]
    );
    assert_eq!(n.own_statements(1), vec![own]);
    // A later composite for another value does not move the node off ⟨2, x⟩, and a
    // v-blocking set ahead bumps it to counter 3 with the value it confirmed prepared.
    feed(&mut n, prepare(PEERS[0], ballot(3, &y()), None, 0, 0));
    feed(&mut n, prepare(PEERS[1], ballot(3, &y()), None, 0, 0));
    let ours = n.own_statements(1).pop().expect("statement");
    assert_eq!(ours.pledges, prepare(ME, ballot(3, &x()), Some(ballot(2, &x())), 1, 2).pledges);
}

#[test]
fn a_restored_confirm_goes_on_to_externalize_its_value() {
    let mut n = node();
    n.restore(T0, confirm(ME, ballot(1, &x()), 1, 1, 1)).expect("restores");
    let mut out = vec![];
    for peer in &PEERS[..3] {
        out = feed(&mut n, confirm(*peer, ballot(1, &x()), 1, 1, 1));
    }
    assert!(out.contains(&Output::Externalized { slot: 1, value: x() }), "{out:?}");
}

#[test]
fn a_restored_externalize_is_reported_and_bad_restores_are_refused() {
    let mut n = node();
    let out = n.restore(T0, externalize(ME, 1, ballot(1, &x()), 1)).expect("restores");
    assert!(out.contains(&Output::Externalized { slot: 1, value: x() }), "{out:?}");
    assert_eq!(n.current_slot(), 2);
    assert_eq!(n.restore(T0, prepare(ME, ballot(1, &x()), None, 0, 0)), Err(Rejection::TooOld));
    assert_eq!(n.restore(T0, prepare(PEERS[0], ballot(1, &x()), None, 0, 0)), Err(Rejection::FromSelf));
}

#[test]
fn a_restarted_node_answers_laggards_with_the_externalize_it_said() {
    // Decided slots 1..=3 before the crash; restarts at slot 4 from its ledger. Its
    // journal holds the EXTERNALIZE of slot 2 with the counters it actually sent.
    let mut n = Node::new(Config::new(ME, qset()), MaxApp, 4).expect("sane config");
    let said = externalize(ME, 2, ballot(3, &y()), 5);
    assert_eq!(n.restore(T0, said.clone()), Ok(vec![]));
    assert_eq!(n.decided_statements().collect::<Vec<_>>(), vec![&said]);
    let out = feed(&mut n, prepare(PEERS[3], ballot(1, &x()), None, 0, 0).at_slot(2));
    assert_eq!(out, vec![Output::Send { to: PEERS[3], statement: said }]);
    // Slots it has no EXTERNALIZE for, or beyond the history window, are too old.
    assert_eq!(rejection(&mut n, prepare(PEERS[3], ballot(1, &x()), None, 0, 0)), Rejection::TooOld);
    let mut far = Node::new(Config::new(ME, qset()), MaxApp, 100).expect("sane config");
    assert_eq!(far.restore(T0, externalize(ME, 2, ballot(1, &x()), 1)), Err(Rejection::TooOld));
}

#[test]
fn a_restored_nomination_is_carried_on_not_contradicted() {
    let mut n = node();
    let said = nominate(ME, &[y()], &[x()]);
    let out = n.restore(T0, said.clone()).expect("restores");
    assert!(out.contains(&Output::SetTimer {
        timer: TimerId::Rebroadcast,
        at: T0 + Timeouts::default().rebroadcast
    }));
    assert_eq!(n.own_statements(1), vec![said.clone()]);
    // Peers nominate: the node joins in, and whatever it says next covers X and Y.
    let mut sent = vec![];
    for peer in &PEERS[..3] {
        sent.extend(broadcasts(&feed(&mut n, nominate(*peer, &[], &[x()]))).into_iter().cloned());
    }
    assert!(!sent.is_empty());
    for pledges in sent.iter().filter(|p| !p.is_ballot()) {
        assert!(pledges.is_newer_than(&said.pledges), "{pledges:?} does not cover {said:?}");
    }
}

#[test]
fn a_decided_but_unreported_slot_is_answered_like_a_laggard() {
    let mut n = node();
    for peer in &PEERS[..3] {
        feed(&mut n, externalize(*peer, 2, ballot(1, &y()), 1));
    }
    assert_eq!(n.current_slot(), 1, "slot 1 is still open");
    let ours = n.own_statements(2).pop().expect("our EXTERNALIZE of slot 2");
    let out = feed(&mut n, prepare(PEERS[3], ballot(1, &x()), None, 0, 0).at_slot(2));
    assert_eq!(out, vec![Output::Send { to: PEERS[3], statement: ours }]);
}

#[test]
fn catching_up_skips_the_slots_decided_elsewhere() {
    let mut n = node_on_ballot_x();
    let out = n.handle(T0, Input::CaughtUp { next: 40 }).expect("caught up");
    assert_eq!(out, vec![Output::CancelTimer(TimerId::Rebroadcast)], "nothing left open to resend");
    assert_eq!(n.current_slot(), 40);
    assert_eq!(rejection(&mut n, prepare(PEERS[0], ballot(1, &x()), None, 0, 0)), Rejection::TooOld);
}

#[test]
fn silent_peers_are_not_chosen_as_nomination_leaders() {
    let q = qset();
    let ranked = |slot: SlotIndex| {
        let mut r: Vec<(u64, NodeId)> =
            q.nodes().into_iter().map(|n| (nomination::priority(slot, 1, n, q.weight(n)), n)).collect();
        r.sort_unstable_by(|a, b| b.cmp(a));
        r
    };
    // A slot whose round-1 leader is a peer, with this node next in line.
    let slot = (1..10_000).find(|&s| ranked(s)[1].1 == ME && ranked(s)[1].0 > 0).expect("such a slot exists");
    let leader = ranked(slot)[0].1;
    let propose = |silent: &[NodeId]| {
        let mut n = Node::new(Config::new(ME, qset()), MaxApp, slot).expect("sane config");
        n.set_unresponsive(silent.iter().copied().collect());
        let out = n.handle(T0, Input::Propose(x())).expect("valid proposal");
        broadcasts(&out).into_iter().cloned().collect::<Vec<_>>()
    };
    assert_eq!(propose(&[]), vec![], "not a leader: waits for {leader}'s value");
    assert_eq!(propose(&[leader]), vec![Pledges::Nominate { voted: [x()].into(), accepted: [].into() }]);
    assert_eq!(
        propose(&[NodeId(1), NodeId(2), NodeId(3), NodeId(4), NodeId(5)]),
        vec![],
        "all silent: ignored"
    );
}

// ----- Regression: CONFIRM with an incompatible p ------------------------------------------
//
// A befouled node (here: two contradicting v-blocking sets, beyond the fault bound of
// core5) used to accept commit ⟨1, x⟩ while p = ⟨2, y⟩ aborted it, entering CONFIRM with
// p incompatible with c; the next ⟨3, y⟩ accepted prepared then cleared c in CONFIRM:
// debug builds panicked, release builds broadcast a CONFIRM with c.n = 0.

/// Every statement the outputs carry is sane, whatever the node's peers said.
fn assert_sane(out: &[Output]) {
    for o in out {
        if let Output::Broadcast(s) | Output::Send { statement: s, .. } = o {
            assert_eq!(s.check_sanity(false), Ok(()), "insane {s:?}");
        }
    }
}

fn feed_sane(n: &mut Node<MaxApp>, statement: Statement) {
    let out = feed(n, statement);
    assert_sane(&out);
}

#[test]
fn a_commit_that_p_aborts_is_never_accepted() {
    let mut n = node_on_ballot_x();
    // A v-blocking set accepted ⟨2, y⟩ prepared: p = ⟨2, y⟩, which aborts ⟨1, x⟩.
    feed_sane(&mut n, prepare(PEERS[0], ballot(2, &y()), Some(ballot(2, &y())), 0, 0));
    feed_sane(&mut n, prepare(PEERS[1], ballot(2, &y()), Some(ballot(2, &y())), 0, 0));
    // Another v-blocking set accepted commit ⟨1, x⟩: accepting it would contradict p.
    feed_sane(&mut n, confirm(PEERS[2], ballot(1, &x()), 1, 1, 1));
    feed_sane(&mut n, confirm(PEERS[3], ballot(1, &x()), 1, 1, 1));
    let own = n.own_statements(1).pop().expect("ballot statement");
    assert_eq!(own.pledges.kind(), "PREPARE", "{}", n.ballot_state(1).unwrap_or_default());
    // p moves on to ⟨3, y⟩ (what panicked in CONFIRM); the node stays sane and in PREPARE.
    feed_sane(&mut n, prepare(PEERS[0], ballot(3, &y()), Some(ballot(3, &y())), 0, 0));
    feed_sane(&mut n, prepare(PEERS[1], ballot(3, &y()), Some(ballot(3, &y())), 0, 0));
    match n.own_statements(1).pop().expect("ballot statement").pledges {
        Pledges::Prepare { prepared, prepared_prime, n_c, .. } => {
            assert_eq!((prepared, prepared_prime, n_c), (Some(ballot(3, &y())), Some(ballot(1, &x())), 0));
        }
        other => panic!("expected PREPARE, got {other:?}"),
    }
}

#[test]
fn entering_confirm_keeps_p_compatible_with_c() {
    let mut n = node_on_ballot_x();
    // p = ⟨1, y⟩ (a v-blocking set accepted it); it does not abort ⟨2, x⟩.
    feed_sane(&mut n, prepare(PEERS[0], ballot(1, &y()), Some(ballot(1, &y())), 0, 0));
    feed_sane(&mut n, prepare(PEERS[1], ballot(1, &y()), Some(ballot(1, &y())), 0, 0));
    // A v-blocking set accepted prepare ⟨1, x⟩ and commit ⟨2..3, x⟩: the node accepts
    // both (p' = ⟨1, x⟩, as x < y), enters CONFIRM, and keeps p = ⟨1, x⟩, compatible with c.
    feed_sane(&mut n, confirm(PEERS[2], ballot(3, &x()), 1, 2, 3));
    feed_sane(&mut n, confirm(PEERS[3], ballot(3, &x()), 1, 2, 3));
    let own = n.own_statements(1).pop().expect("ballot statement");
    assert_eq!(own.pledges, confirm(ME, ballot(3, &x()), 1, 2, 3).pledges);
    // ⟨5, y⟩ accepted prepared by a v-blocking set would abort c: not accepted. The set is
    // ahead, so the node bumps to counter 5, keeping its value.
    feed_sane(&mut n, prepare(PEERS[0], ballot(5, &y()), Some(ballot(5, &y())), 0, 0));
    feed_sane(&mut n, prepare(PEERS[1], ballot(5, &y()), Some(ballot(5, &y())), 0, 0));
    let own = n.own_statements(1).pop().expect("ballot statement");
    assert_eq!(own.pledges, confirm(ME, ballot(5, &x()), 1, 2, 3).pledges);
}

// ----- Regression: counters near ∞ ---------------------------------------------------------
//
// A Byzantine peer sent EXTERNALIZE c = ⟨2³² − 3, x⟩, h.n = ∞. An EXTERNALIZE sender counts
// as its own quorum and a CONFIRM votes commit for every n ≥ c.n, so with one honest
// CONFIRM it made a quorum voting commit ⟨2³² − 3 .. ∞, x⟩: the honest node moved its
// accepted commit there, where the others could only follow by billions of ballot
// timeouts, and the slot never finished (found by the simulation's u32::MAX attacker).

#[test]
fn counters_beyond_the_slots_age_are_refused() {
    let mut n = node();
    let far = |k: u32| prepare(PEERS[0], ballot(k, &x()), Some(ballot(k, &x())), 0, 0);
    // 1000 counters of slack on a slot first heard of now, one more per ballot timeout.
    assert_eq!(rejection(&mut n, far(1001)), Rejection::CounterTooHigh);
    feed(&mut n, far(1000));
    let later = T0 + Duration::from_secs(500);
    assert_eq!(n.handle(later, Input::Statement(far(1400))).map(|_| ()), Ok(()));
    assert_eq!(n.handle(later, Input::Statement(far(1600))), Err(Rejection::CounterTooHigh));
    // ∞ itself is "every counter", as CONFIRM and EXTERNALIZE senders imply: allowed.
    let inf = ballot(INFINITE_COUNTER, &x());
    feed(&mut n, prepare(PEERS[1], inf.clone(), Some(inf), 0, 0));
}

#[test]
fn a_byzantine_externalize_near_infinity_cannot_pull_an_honest_commit_out_of_reach() {
    let mut n = node_on_ballot_x();
    // A v-blocking set accepted commit ⟨1, x⟩: CONFIRM c = h = ⟨1, x⟩.
    feed(&mut n, confirm(PEERS[0], ballot(1, &x()), 1, 1, 1));
    feed(&mut n, confirm(PEERS[1], ballot(1, &x()), 1, 1, 1));
    assert_eq!(
        n.own_statements(1).pop().map(|s| s.pledges),
        Some(confirm(ME, ballot(1, &x()), 1, 1, 1).pledges)
    );
    let near = ballot(INFINITE_COUNTER - 2, &x());
    assert_eq!(
        rejection(&mut n, externalize(PEERS[2], 1, near, INFINITE_COUNTER)),
        Rejection::CounterTooHigh
    );
    let at = ballot(INFINITE_COUNTER, &x());
    assert_eq!(
        rejection(&mut n, externalize(PEERS[2], 1, at, INFINITE_COUNTER)),
        Rejection::CommitAtInfinity
    );
    // The honest peers still finish at ⟨1, x⟩ with it.
    let out = feed(&mut n, confirm(PEERS[3], ballot(1, &x()), 1, 1, 1));
    assert!(out.contains(&Output::Externalized { slot: 1, value: x() }), "{out:?}");
}

#[test]
fn a_laggard_carried_by_externalize_statements_commits_a_real_ballot() {
    // Peers finished with c = ⟨2, y⟩ and h.n = ∞: the laggard confirms ⟨∞, y⟩ prepared
    // (h = b = ⟨∞, y⟩) but commits, and externalizes, from ⟨2, y⟩, never from ∞.
    let mut n = node();
    let mut sent = vec![];
    for peer in &PEERS[..3] {
        let out = feed(&mut n, externalize(*peer, 1, ballot(2, &y()), INFINITE_COUNTER));
        assert_sane(&out);
        sent.extend(broadcasts(&out).into_iter().cloned());
    }
    let last = sent.last().expect("the laggard spoke");
    match last {
        Pledges::Externalize { commit, .. } => assert_eq!(commit, &ballot(2, &y())),
        other => panic!("expected EXTERNALIZE, got {other:?}"),
    }
    for pledges in &sent {
        let commit = match pledges {
            Pledges::Prepare { n_c, .. } => *n_c,
            Pledges::Confirm { n_commit, .. } => *n_commit,
            Pledges::Externalize { commit, .. } => commit.counter,
            Pledges::Nominate { .. } => 0,
        };
        assert_ne!(commit, INFINITE_COUNTER, "{pledges:?}");
    }
}

// ----- Griefing nomination leaders ----------------------------------------------------------
//
// A leader whose round times out with none of its values in our Y offends and is barred
// from leading the first rounds of the next slots (src/scp/leaders.rs). In core5 two
// nodes are v-blocking, so at most one node is barred at a time.

use leaders::{bar, LeaderPenalties};

/// The nodes of core5 ranked by priority in `round` of `slot`, highest first.
fn ranked(slot: SlotIndex, round: u32) -> Vec<NodeId> {
    let q = qset();
    let mut r: Vec<(u64, NodeId)> =
        q.nodes().into_iter().map(|n| (nomination::priority(slot, round, n, q.weight(n)), n)).collect();
    r.sort_unstable_by(|a, b| b.cmp(a));
    r.into_iter().filter(|(p, _)| *p > 0).map(|(_, n)| n).collect()
}

/// A slot whose round-1 leader is a peer and whose round-2 leader, that peer left out,
/// is this node; and that peer.
fn slot_led_by_a_peer_then_by_me() -> (SlotIndex, NodeId) {
    (1..10_000)
        .find_map(|s| {
            let leader = *ranked(s, 1).first()?;
            let next = ranked(s, 2).into_iter().find(|&n| n != leader)?;
            (leader != ME && next == ME).then_some((s, leader))
        })
        .expect("such a slot exists")
}

fn node_at(slot: SlotIndex) -> Node<MaxApp> {
    Node::new(Config::new(ME, qset()), MaxApp, slot).expect("sane config")
}

fn nominate_at(slot: SlotIndex, node: NodeId, voted: &[Value], accepted: &[Value]) -> Statement {
    nominate(node, voted, accepted).at_slot(slot)
}

/// Fires the nomination timer of `slot` one round-1 timeout after `T0`.
fn time_out(n: &mut Node<MaxApp>, slot: SlotIndex) -> Vec<Output> {
    let at = T0 + Timeouts::default().nomination(1);
    n.handle(at, Input::Timer(TimerId::Nomination(slot))).expect("timer")
}

#[test]
fn offences_bar_a_node_for_doubling_spans_and_are_forgiven_slowly() {
    let mut p = LeaderPenalties::default();
    let q = qset();
    p.offence(PEERS[0], 100);
    assert_eq!(p.level(PEERS[0], 100), 1);
    assert!(p.barred(&q, 100, 1).contains(&PEERS[0]), "barred in the offending slot already");
    assert!(p.barred(&q, 100 + bar(1), 2).contains(&PEERS[0]));
    assert!(p.barred(&q, 101 + bar(1), 1).is_empty(), "the bar is over");
    assert!(p.barred(&q, 101, PENALTY_ROUNDS + 1).is_empty(), "later rounds are open to all");
    p.offence(PEERS[0], 120);
    assert_eq!((p.level(PEERS[0], 120), bar(2)), (2, 2 * BASE_BAR));
    assert!(p.barred(&q, 120 + bar(2), 1).contains(&PEERS[0]));
    // One level forgiven per FORGIVE_AFTER slots without an offence.
    assert_eq!(p.level(PEERS[0], 120 + FORGIVE_AFTER - 1), 2);
    assert_eq!(p.level(PEERS[0], 120 + FORGIVE_AFTER), 1);
    assert_eq!(p.level(PEERS[0], 120 + 2 * FORGIVE_AFTER), 0);
    // Bars stop doubling at MAX_LEVEL.
    (0..2 * MAX_LEVEL as u64).for_each(|k| p.offence(PEERS[1], 1000 + k));
    assert_eq!(p.level(PEERS[1], 1100), MAX_LEVEL);
    assert_eq!(bar(MAX_LEVEL + 5), bar(MAX_LEVEL));
}

#[test]
fn barred_nodes_never_make_a_v_blocking_set() {
    let mut p = LeaderPenalties::default();
    p.offence(PEERS[0], 10);
    p.offence(PEERS[1], 10);
    p.offence(PEERS[1], 11);
    // Two nodes are v-blocking in core5: only the worse offender is barred.
    assert_eq!(p.barred(&qset(), 12, 1), [PEERS[1]].into());
    p.offence(PEERS[0], 12);
    p.offence(PEERS[0], 13);
    assert_eq!(p.barred(&qset(), 14, 1), [PEERS[0]].into(), "highest level, then latest offence");
}

#[test]
fn a_barred_leader_is_passed_over_in_the_first_rounds_only() {
    // A slot whose round-1 leader is a peer, with this node next in line.
    let (slot, leader) = (1..10_000)
        .find_map(|s| match ranked(s, 1)[..] {
            [first, ME, ..] if first != ME => Some((s, first)),
            _ => None,
        })
        .expect("such a slot exists");
    let propose = |barred: bool| {
        let mut n = node_at(slot);
        if barred {
            n.leadership.penalties.offence(leader, slot - 1);
            assert_eq!(n.barred_leaders(), [leader].into());
        }
        let out = n.handle(T0, Input::Propose(x())).expect("valid proposal");
        broadcasts(&out).into_iter().cloned().collect::<Vec<_>>()
    };
    assert_eq!(propose(false), vec![], "not a leader: waits for {leader}'s value");
    assert_eq!(propose(true), vec![Pledges::Nominate { voted: [x()].into(), accepted: [].into() }]);
    let mut p = LeaderPenalties::default();
    p.offence(leader, slot - 1);
    assert!(p.barred(&qset(), slot, PENALTY_ROUNDS + 1).is_empty(), "later rounds: everyone may lead");
}

/// Three peers other than `leader`, each accepting `v` for `slot` (beside what `voted`
/// says it voted before), then externalizing it at ballot ⟨1, v⟩: the node accepts and
/// confirms v, and decides the slot.
fn others_decide(
    n: &mut Node<MaxApp>,
    slot: SlotIndex,
    leader: NodeId,
    v: &Value,
    voted: impl Fn(NodeId) -> Vec<Value>,
) -> Vec<Output> {
    let others: Vec<NodeId> = PEERS.iter().copied().filter(|&p| p != leader).take(3).collect();
    for peer in &others {
        feed(n, nominate_at(slot, *peer, &voted(*peer), std::slice::from_ref(v)));
    }
    let mut out = vec![];
    for peer in &others {
        out.extend(feed(n, externalize(*peer, slot, ballot(1, v), 1)));
    }
    assert!(out.contains(&Output::Externalized { slot, value: v.clone() }), "{out:?}");
    out
}

#[test]
fn a_leader_that_sends_nothing_offends_when_its_round_times_out() {
    let (slot, leader) = slot_led_by_a_peer_then_by_me();
    let mut n = node_at(slot);
    n.handle(T0, Input::Propose(x())).expect("valid proposal");
    assert_eq!(n.leadership.penalties.level(leader, slot), 0);
    time_out(&mut n, slot);
    assert_eq!(n.leadership.penalties.level(leader, slot), 1);
    assert!(n.barred_leaders().contains(&leader));
    // Judged once per slot: the decision adds nothing.
    others_decide(&mut n, slot, leader, &x(), |_| vec![]);
    assert_eq!(n.leadership.penalties.level(leader, slot), 1);
    assert_eq!(n.leadership.penalties.level(ME, slot), 0, "x was accepted");
}

#[test]
fn a_node_whose_first_round_never_timed_out_judges_its_leader_when_the_slot_is_decided() {
    // The leader told us y; the others (whose rounds timed out) went on and decided x,
    // which reached us before our own timeout. We judge as they did.
    let (slot, leader) = slot_led_by_a_peer_then_by_me();
    let mut n = node_at(slot);
    n.handle(T0, Input::Propose(x())).expect("valid proposal");
    feed(&mut n, nominate_at(slot, leader, &[y()], &[]));
    others_decide(&mut n, slot, leader, &x(), |_| vec![]);
    assert_eq!(n.leadership.penalties.level(leader, slot), 1);
    assert!(n.barred_leaders().contains(&leader), "barred in the next slot");
}

#[test]
fn a_leader_giving_each_node_its_own_value_offends_and_an_honest_leader_takes_over() {
    let (slot, leader) = slot_led_by_a_peer_then_by_me();
    let mut n = node_at(slot);
    n.handle(T0, Input::Propose(x())).expect("valid proposal");
    // The leader tells us y; each other peer echoes the value it was told.
    feed(&mut n, nominate_at(slot, leader, &[y()], &[]));
    let told = |peer: NodeId| Value::new([b'j', peer.0 as u8]);
    for peer in PEERS.iter().filter(|&&p| p != leader) {
        feed(&mut n, nominate_at(slot, *peer, &[told(*peer)], &[]));
    }
    assert_eq!(n.own_statements(slot), vec![nominate(ME, &[y()], &[]).at_slot(slot)], "echoes y");
    // Round 1 times out with y unaccepted. We lead round 2 and offer our own value
    // beside the one we echoed.
    let out = time_out(&mut n, slot);
    assert_eq!(broadcasts(&out), vec![&Pledges::Nominate { voted: [x(), y()].into(), accepted: [].into() }]);
    // The leader echoing x once the others accept it redeems nothing: it is judged by
    // what it first put forward.
    feed(&mut n, nominate_at(slot, leader, &[y()], &[x()]));
    others_decide(&mut n, slot, leader, &x(), |peer| vec![told(peer)]);
    assert_eq!(n.leadership.penalties.level(leader, slot), 1);
    assert_eq!(n.leadership.penalties.level(ME, slot), 0);
}

#[test]
fn a_leader_whose_value_we_accepted_does_not_offend() {
    let (slot, leader) = slot_led_by_a_peer_then_by_me();
    let mut n = node_at(slot);
    n.handle(T0, Input::Propose(x())).expect("valid proposal");
    feed(&mut n, nominate_at(slot, leader, &[y()], &[]));
    // Two more peers echo y: with us and the leader a quorum voted y, so we accept it
    // (Y = {y}), but no quorum accepted it yet when the round times out.
    for peer in PEERS.iter().filter(|&&p| p != leader).take(2) {
        feed(&mut n, nominate_at(slot, *peer, &[y()], &[]));
    }
    assert_eq!(n.own_statements(slot), vec![nominate(ME, &[], &[y()]).at_slot(slot)]);
    time_out(&mut n, slot);
    others_decide(&mut n, slot, leader, &y(), |_| vec![]);
    assert_eq!(n.leadership.penalties.level(leader, slot), 0);
}

#[test]
fn a_leading_node_judges_itself_by_the_same_rule() {
    let slot = (1..10_000).find(|&s| ranked(s, 1).first() == Some(&ME)).expect("such a slot exists");
    let mut n = node_at(slot);
    n.handle(T0, Input::Propose(x())).expect("valid proposal");
    time_out(&mut n, slot);
    // Nobody took up x; the peers decide y, which we accept and echo, too late to count.
    others_decide(&mut n, slot, ME, &y(), |_| vec![]);
    assert_eq!(n.leadership.penalties.level(ME, slot), 1, "nobody took up x");
}

#[test]
fn a_node_that_took_no_part_in_nomination_judges_nobody() {
    let (slot, leader) = slot_led_by_a_peer_then_by_me();
    let mut n = node_at(slot);
    // Carried to the decision by EXTERNALIZE statements alone: no evidence about leaders.
    for peer in PEERS.iter().filter(|&&p| p != leader).take(3) {
        feed(&mut n, externalize(*peer, slot, ballot(1, &y()), 1));
    }
    assert_eq!(n.current_slot(), slot + 1);
    assert_eq!(n.leadership.penalties.level(leader, slot), 0);
}

#[test]
fn a_new_quorum_set_is_taken_only_if_sane_and_carried_by_the_next_statements() {
    let mut node = node();
    let insane = QuorumSet::new(0, [ME]);
    assert!(matches!(node.set_quorum_set(insane), Err(ConfigError::QuorumSet(_))));
    assert_eq!(node.config().quorum_set, qset(), "a refused quorum set changes nothing");
    // Q(v) := 3 of {1, 2, 3} (a reconfiguration that removed nodes 4 and 5).
    let smaller = QuorumSet::new(3, [ME, NodeId(2), NodeId(3)]);
    node.set_quorum_set(smaller.clone()).expect("a sane quorum set");
    // Node 2 accepted x: with 3 of 3 every member is v-blocking (under 4-of-5 one peer is
    // not), so this node accepts x too and says so.
    node.handle(T0, Input::Propose(x())).expect("valid proposal");
    let outputs = feed(&mut node, nominate(NodeId(2), &[], &[x()]));
    let sent: Vec<&Statement> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Broadcast(st) => Some(st),
            _ => None,
        })
        .collect();
    assert!(
        sent.iter()
            .any(|st| matches!(&st.pledges, Pledges::Nominate { accepted, .. } if accepted.contains(&x()))),
        "the node follows its new v-blocking set: {sent:?}"
    );
    assert!(sent.iter().all(|st| st.quorum_set == smaller), "statements carry the new Q(v)");
}
