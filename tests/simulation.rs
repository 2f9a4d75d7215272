//! Deterministic simulated-network tests of the SCP core.
//!
//! Every run checks agreement, validity, in-order reporting, isolation, the core's
//! interface contract and (after the asynchrony period) termination; see [`sim`]. The `random_*` tests run seeded random scenarios
//! over the three topologies (seed `s` uses `Topology::ALL[s % 3]`); `FBA_SIM_SCALE=k`
//! multiplies their number of runs. A failing run prints its seed, scenario, the tail of
//! its event trace, and the command replaying it, e.g.
//!
//! ```text
//! FBA_SIM_SEED=1234 cargo test --test simulation replay -- --exact --nocapture
//! ```
//!
//! With `FBA_SIM_SEED` set, the named scenario tests also run only that seed, printing
//! their whole trace (the `random_*` batches run as usual, silently).

mod sim;

use fba::quorum::NodeId;
use fba::scp::Timeouts;
use sim::{ms, replay_seed, run, scale, Behaviour, Network, Outcome, Property, Scenario, Topology};
use std::ops::Range;
use std::time::Duration;

/// The topologies whose honest nodes keep quorum intersection despite a Byzantine node.
const BYZANTINE_TOLERANT: [Topology; 2] = [Topology::Four, Topology::Seven];
/// Failed runs whose full report a failing batch prints.
const REPORTS: usize = 3;

/// Runs scenarios (printing every event if `live`) and panics, listing every failed seed
/// and reporting the first few, if any run failed. Returns the outcomes for more checks.
fn run_all(scenarios: impl Iterator<Item = Scenario>, live: bool) -> Vec<Outcome> {
    let outcomes: Vec<Outcome> = scenarios.map(|s| run(s, live)).collect();
    assert!(!outcomes.is_empty(), "no scenario ran");
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.is_ok()).collect();
    if !failed.is_empty() {
        for outcome in failed.iter().take(REPORTS) {
            eprintln!("{}", outcome.report());
        }
        let seeds: Vec<String> = failed
            .iter()
            .map(|o| format!("{} ({:?})", o.scenario.seed, o.failure.as_ref().map(|f| f.property)))
            .collect();
        panic!("{} of {} runs failed: seeds {}", failed.len(), outcomes.len(), seeds.join(", "));
    }
    outcomes
}

/// Random runs per `random_*` test of `topology`, before scaling: each test takes a few
/// seconds (5,400 runs in all, about 16 s on two cores).
fn runs_per_test(topology: Topology) -> u64 {
    match topology {
        Topology::Four => 1_000,
        Topology::Seven => 500,
        Topology::Tiered => 225,
    }
}

/// Runs the random scenarios of `topology` numbered `batch` (each batch holds
/// [`runs_per_test`] × [`scale`] seeds).
fn random_batch(topology: Topology, batch: u64) {
    let runs = runs_per_test(topology) * scale();
    let seeds = (batch * runs..(batch + 1) * runs).map(|i| 3 * i + topology.index());
    let outcomes = run_all(seeds.map(Scenario::random), false);
    assert_eq!(outcomes.len() as u64, runs);
}

/// Timeouts of `ms` milliseconds, growing by as much per round or counter.
fn hasty(millis: u64) -> Timeouts {
    Timeouts {
        nomination_initial: ms(millis),
        nomination_increment: ms(millis),
        ballot_initial: ms(millis),
        ballot_increment: ms(millis),
        rebroadcast: ms(4 * millis),
        ..Timeouts::default()
    }
}

/// The seeds a named test runs: `FBA_SIM_SEED` alone when set, else `default`.
fn seeds(default: Range<u64>) -> Vec<u64> {
    replay_seed().map_or_else(|| default.collect(), |seed| vec![seed])
}

/// Runs `make(seed)` for the named test's seeds; every run must pass.
fn named(test: &'static str, default: Range<u64>, make: impl Fn(u64) -> Scenario) -> Vec<Outcome> {
    let scenarios = seeds(default).into_iter().map(|seed| make(seed).replayed_by(test));
    run_all(scenarios, replay_seed().is_some())
}

#[test]
fn random_four_nodes_a() {
    random_batch(Topology::Four, 0);
}

#[test]
fn random_four_nodes_b() {
    random_batch(Topology::Four, 1);
}

#[test]
fn random_four_nodes_c() {
    random_batch(Topology::Four, 2);
}

#[test]
fn random_seven_nodes_a() {
    random_batch(Topology::Seven, 0);
}

#[test]
fn random_seven_nodes_b() {
    random_batch(Topology::Seven, 1);
}

#[test]
fn random_seven_nodes_c() {
    random_batch(Topology::Seven, 2);
}

#[test]
fn random_tiered_a() {
    random_batch(Topology::Tiered, 0);
}

#[test]
fn random_tiered_b() {
    random_batch(Topology::Tiered, 1);
}

#[test]
fn random_tiered_c() {
    random_batch(Topology::Tiered, 2);
}

#[test]
fn random_tiered_d() {
    random_batch(Topology::Tiered, 3);
}

/// Replays `FBA_SIM_SEED` with its whole trace printed; without it, runs seed 1.
#[test]
fn replay() {
    let seed = replay_seed().unwrap_or(1);
    let outcome = run(Scenario::random(seed), replay_seed().is_some());
    assert!(outcome.is_ok(), "{}", outcome.report());
    for node in outcome.scenario.correct_nodes() {
        assert_eq!(outcome.decided(node.0), outcome.scenario.slots as usize, "{}", outcome.report());
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    for seed in [7, 8, 9, 10, 11] {
        let (a, b) = (run(Scenario::random(seed), false), run(Scenario::random(seed), false));
        assert_eq!(a.decisions, b.decisions, "seed {seed}");
        assert_eq!((a.events, a.end), (b.events, b.end), "seed {seed}");
        assert_eq!(a.trace_tail(), b.trace_tail(), "seed {seed}");
    }
}

#[test]
fn calm_network_decides_every_slot_everywhere() {
    let outcomes = named("calm_network_decides_every_slot_everywhere", 0..10, |seed| {
        Scenario::calm(Topology::ALL[seed as usize % 3], seed)
    });
    for outcome in &outcomes {
        for node in outcome.scenario.topology.nodes() {
            assert_eq!(outcome.decided(node.0), 5, "{}", outcome.report());
        }
    }
}

#[test]
fn assignment_topology_with_node_3003_crashed_decides_every_slot() {
    let outcomes = named("assignment_topology_with_node_3003_crashed_decides_every_slot", 0..20, |seed| {
        let crash = if seed % 2 == 0 { None } else { Some(ms(seed * 30)) };
        Scenario::calm(Topology::Four, seed).slots(6).fault(3003, Behaviour::Crash(crash))
    });
    for outcome in &outcomes {
        for node in 3000..3003 {
            assert_eq!(outcome.decided(node), 6, "{}", outcome.report());
        }
    }
}

#[test]
fn equivocating_node_cannot_split_honest_nodes() {
    named("equivocating_node_cannot_split_honest_nodes", 0..60, |seed| {
        let topology = BYZANTINE_TOLERANT[seed as usize % 2];
        let byzantine = 3000 + seed % topology.nodes().len() as u64;
        let per_peer = seed % 2 == 0;
        Scenario::calm(topology, seed).fault(byzantine, Behaviour::Equivocate { per_peer })
    });
}

#[test]
fn random_statements_from_a_byzantine_node_are_harmless() {
    named("random_statements_from_a_byzantine_node_are_harmless", 0..60, |seed| {
        let topology = BYZANTINE_TOLERANT[seed as usize % 2];
        let byzantine = 3000 + seed % topology.nodes().len() as u64;
        Scenario::calm(topology, seed).fault(byzantine, Behaviour::Babble)
    });
}

#[test]
fn seven_nodes_tolerate_two_byzantine_nodes() {
    named("seven_nodes_tolerate_two_byzantine_nodes", 0..30, |seed| {
        Scenario::calm(Topology::Seven, seed)
            .fault(3000 + seed % 7, Behaviour::Equivocate { per_peer: seed % 2 == 0 })
            .fault(3000 + (seed + 3) % 7, Behaviour::Babble)
    });
}

#[test]
fn tiered_network_survives_a_whole_organisation_crashing() {
    let outcomes = named("tiered_network_survives_a_whole_organisation_crashing", 0..15, |seed| {
        let org = Topology::Tiered.organisations()[seed as usize % 3].clone();
        let crash = if seed % 2 == 0 { None } else { Some(ms(50 * seed)) };
        org.iter().fold(Scenario::calm(Topology::Tiered, seed), |s, n| s.fault(n.0, Behaviour::Crash(crash)))
    });
    for outcome in &outcomes {
        assert_eq!(outcome.scenario.correct_nodes().len(), 6);
    }
}

#[test]
fn restarted_node_keeps_its_word_and_catches_up() {
    // Crashes land in the middle of ballots (hasty timeouts and a lossy phase keep the
    // ballot protocol busy); the restarted node restores its journal, must not go back on
    // anything it said, and must decide every slot.
    let outcomes = named("restarted_node_keeps_its_word_and_catches_up", 0..100, |seed| {
        let topology = BYZANTINE_TOLERANT[seed as usize % 2];
        let at = ms(20 + 37 * seed);
        let restart = Behaviour::Restart { at, down: ms(5 + 7 * (seed % 8)) };
        let network = Network::Lossy { until: ms(3_000), loss: 0.2, duplicate: 0.1, max_delay: ms(200) };
        let mut scenario = Scenario::calm(topology, seed).fault(3001, restart);
        if seed % 2 == 1 {
            scenario = scenario.network(network).timeouts(hasty(60));
        }
        scenario
    });
    for o in &outcomes {
        assert_eq!(o.decided(3001), 5, "{}", o.report());
    }
    if replay_seed().is_none() {
        let restored: usize = outcomes.iter().map(|o| o.restored).sum();
        assert!(restored >= 15, "only {restored} statements restored in 100 runs");
    }
}

#[test]
fn lossy_duplicating_reordering_network_still_decides() {
    named("lossy_duplicating_reordering_network_still_decides", 0..20, |seed| {
        let network = Network::Lossy { until: ms(20_000), loss: 0.4, duplicate: 0.3, max_delay: ms(1_500) };
        Scenario::calm(Topology::ALL[seed as usize % 3], seed).network(network)
    });
}

#[test]
fn hasty_timeouts_on_a_lossy_network_exercise_the_ballot_protocol() {
    let outcomes = named("hasty_timeouts_on_a_lossy_network_exercise_the_ballot_protocol", 0..30, |seed| {
        let network = Network::Lossy { until: ms(10_000), loss: 0.3, duplicate: 0.1, max_delay: ms(400) };
        Scenario::calm(BYZANTINE_TOLERANT[seed as usize % 2], seed).network(network).timeouts(hasty(50))
    });
    // Coverage, so that the harness keeps reaching the ballot protocol's harder paths.
    if replay_seed().is_none() {
        let high = outcomes.iter().filter(|o| o.max_counter >= 4).count();
        let prime = outcomes.iter().filter(|o| o.saw_prepared_prime).count();
        assert!(high >= 20, "only {high} of 30 runs reached ballot counter 4");
        assert!(prime >= 6, "only {prime} of 30 runs set p'");
    }
}

#[test]
fn partition_heals_and_minority_catches_up() {
    let heal = Duration::from_secs(30);
    let outcomes = named("partition_heals_and_minority_catches_up", 0..10, |seed| {
        let minority = [NodeId(3003)];
        Scenario::calm(Topology::Four, seed).network(Network::isolate(Topology::Four, &minority, ms(0), heal))
    });
    for o in &outcomes {
        for node in 3000..3003 {
            assert_eq!(o.decided_before(node, heal), 5, "majority decides while split: {}", o.report());
        }
        assert_eq!(o.decided_before(3003, heal), 0, "minority must not decide alone: {}", o.report());
        assert_eq!(o.decided(3003), 5, "minority catches up after the heal: {}", o.report());
    }
}

#[test]
fn minority_partition_alone_never_externalizes() {
    let heal = Duration::from_secs(60);
    let outcomes = named("minority_partition_alone_never_externalizes", 0..10, |seed| {
        // Four nodes split 2|2: neither half is a quorum. Tiered: one organisation cut
        // off: the other two still form a quorum, the cut one does not.
        let (topology, cut) = if seed % 2 == 0 {
            (Topology::Four, vec![NodeId(3000), NodeId(3001)])
        } else {
            (Topology::Tiered, Topology::Tiered.organisations()[seed as usize % 3].clone())
        };
        Scenario::calm(topology, seed).network(Network::isolate(topology, &cut, ms(0), heal))
    });
    for o in &outcomes {
        let Network::Partition { groups, .. } = &o.scenario.network else { unreachable!() };
        for node in o.scenario.topology.nodes() {
            if o.scenario.topology == Topology::Four || groups[0].contains(&node) {
                assert_eq!(o.decided_before(node.0, heal), 0, "{node} decided alone: {}", o.report());
            }
            assert_eq!(o.decided(node.0), 5, "{node} must catch up: {}", o.report());
        }
    }
}

#[test]
fn no_quorum_means_no_decision() {
    // Two of four nodes never start: no quorum exists, so nobody may externalize; the
    // run ends with the termination check failing, and nothing else.
    for seed in seeds(0..5) {
        let scenario = Scenario::calm(Topology::Four, seed)
            .fault(3000 + seed % 4, Behaviour::Crash(None))
            .fault(3000 + (seed + 1) % 4, Behaviour::Crash(None))
            .horizon(Duration::from_secs(60))
            .replayed_by("no_quorum_means_no_decision");
        let outcome = run(scenario, replay_seed().is_some());
        let property = outcome.failure.as_ref().map(|f| f.property);
        assert_eq!(property, Some(Property::Termination), "{}", outcome.report());
        assert!(outcome.decisions.values().all(Vec::is_empty), "{}", outcome.report());
        assert!(outcome.end >= Duration::from_secs(60), "{}", outcome.report());
    }
}
