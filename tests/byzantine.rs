//! One Byzantine member among four keyed nodes, lying one way per test (see
//! `tests/byzantine/mod.rs`), while real clients with their own keys run a known workload
//! against the three honest nodes.
//!
//! Every test asserts the same invariants, never timings:
//!
//! * every real request is acknowledged (the client sends it up to 120 times, 250 ms
//!   apart or longer when told the node is busy: a liveness check, not a timing);
//! * every request in the honest ledgers carries a signature that verifies, by one of the
//!   real clients or of the attacker's own fake clients, and no request appears twice;
//! * the honest ledgers and databases are identical;
//! * each real wallet's balance is exactly the sum of the acknowledged operations on it;
//! * each honest node's peak RSS (`VmHWM`) stays under 32 MiB.
//!
//! Throughput and the longest client wait are printed beside those of a run with a silent
//! fourth member, for information. The runs take turns (one cluster at a time), so the
//! figures are comparable and the file stays within two cores.

mod support;

#[path = "byzantine/mod.rs"]
mod byzantine;

use byzantine::{Attack, Byzantine, Stats};
use fba::client::Client;
use fba::rng::Rng;
use fba::wallet::{Amount, ClientKey, Key, Op, Outcome, Request, Wallet};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use support::{ledger_entries, parse_db, wait_for, Cluster};

/// The honest nodes (node 3 is the Byzantine member).
const HONEST: [usize; 3] = [0, 1, 2];
/// Real clients, each with its own key and wallet, spread over the honest nodes.
const REAL_CLIENTS: usize = 6;
/// How long the real clients keep calling.
const WORKLOAD: Duration = Duration::from_secs(4);
/// A client sends a request again after this long without a reply...
const CLIENT_TIMEOUT: Duration = Duration::from_millis(250);
/// ... this many times: 30 s in all, a liveness check rather than a timing.
const CLIENT_ATTEMPTS: u32 = 120;
/// Peak RSS allowed to each honest node.
const RSS_LIMIT_KB: u64 = 32 * 1024;

/// One run at a time: the figures stay comparable and two cores suffice.
static SERIAL: Mutex<()> = Mutex::new(());
/// The figures of a run with a silent fourth member.
static BASELINE: OnceLock<Figures> = OnceLock::new();

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Throughput and waits of the real clients in one run.
#[derive(Clone, Copy, Debug)]
struct Figures {
    ops: usize,
    elapsed: Duration,
    median_wait: Duration,
    max_wait: Duration,
}

impl Figures {
    fn of(calls: &[Call], elapsed: Duration) -> Figures {
        let mut waits: Vec<Duration> = calls.iter().map(|c| c.wait).collect();
        waits.sort();
        let median_wait = waits.get(waits.len() / 2).copied().unwrap_or_default();
        let max_wait = waits.last().copied().unwrap_or_default();
        Figures { ops: calls.len(), elapsed, median_wait, max_wait }
    }

    fn line(&self) -> String {
        format!(
            "{:6.1} requests/s ({} in {:.1} s), median wait {:5.1} ms, max wait {:6.1} ms",
            self.ops as f64 / self.elapsed.as_secs_f64(),
            self.ops,
            self.elapsed.as_secs_f64(),
            self.median_wait.as_secs_f64() * 1e3,
            self.max_wait.as_secs_f64() * 1e3
        )
    }
}

/// One call of a real client: what it asked, what came back, how long it waited.
struct Call {
    op: Op,
    result: Result<Outcome, String>,
    wait: Duration,
}

/// A finished run: the cluster (still running), the stopped attacker and the calls.
struct Run {
    cluster: Cluster,
    byzantine: Byzantine,
    calls: Vec<Call>,
    real_ids: BTreeSet<u64>,
    figures: Figures,
}

/// The wallet of real client `i`.
fn wallet_of(i: usize) -> Key {
    Key::new(format!("real-{i}")).expect("a valid key")
}

fn amount(dollars: u64) -> Amount {
    Amount::from_cents(dollars * 100).expect("a valid amount")
}

/// Real client `i`'s next operation: mostly deposits into its own wallet, some
/// withdrawals from it, transfers to the next client's wallet, and reads.
fn next_op(rng: &mut Rng, i: usize) -> Op {
    let (own, next) = (wallet_of(i), wallet_of((i + 1) % REAL_CLIENTS));
    match rng.below(100) {
        0..=54 => Op::Deposit { key: own, amount: amount(1 + rng.below(9)) },
        55..=69 => Op::Withdraw { key: own, amount: amount(1 + rng.below(5)) },
        70..=84 => Op::Transfer { from: own, to: next, amount: amount(1 + rng.below(3)) },
        _ => Op::Get { key: own },
    }
}

/// Runs the real clients against the honest nodes for [`WORKLOAD`].
fn workload(cluster: &Cluster) -> (Vec<Call>, BTreeSet<u64>, Duration) {
    let keys: Vec<ClientKey> =
        (0..REAL_CLIENTS).map(|_| ClientKey::generate().expect("a client key").0).collect();
    let ids = keys.iter().map(ClientKey::client_id).collect();
    let start = Instant::now();
    let calls = std::thread::scope(|s| {
        let threads: Vec<_> = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| {
                let server = SocketAddr::from(([127, 0, 0, 1], cluster.ports[HONEST[i % HONEST.len()]]));
                s.spawn(move || client_loop(i, server, key, start))
            })
            .collect();
        threads.into_iter().flat_map(|t| t.join().expect("a client thread")).collect()
    });
    (calls, ids, start.elapsed())
}

/// One real client's closed loop until the workload's end.
fn client_loop(i: usize, server: SocketAddr, key: ClientKey, start: Instant) -> Vec<Call> {
    let mut client = Client::with_key(server, key).expect("a client");
    client.timeout = CLIENT_TIMEOUT;
    client.attempts = CLIENT_ATTEMPTS;
    let mut rng = Rng::new(0x5eed + i as u64);
    let mut calls = Vec::new();
    while start.elapsed() < WORKLOAD {
        let op = next_op(&mut rng, i);
        let asked = Instant::now();
        let result = client.call(op.clone()).map(|(_, reply)| reply.outcome).map_err(|e| e.to_string());
        calls.push(Call { op, result, wait: asked.elapsed() });
    }
    calls
}

/// A keyed cluster of nodes 0..3 with `attack` on node 3's key and port, under the real
/// workload; the attack is stopped at the end.
fn attack_run(attack: Attack) -> Run {
    let mut cluster = Cluster::new(4, 3);
    cluster.with_keys();
    for i in HONEST {
        cluster.start_node(i);
    }
    let mut byzantine = Byzantine::start(&cluster, attack);
    wait_for(&format!("the {attack:?} attack to be under way"), || byzantine.ready());
    let (calls, real_ids, elapsed) = workload(&cluster);
    byzantine.stop();
    let figures = Figures::of(&calls, elapsed);
    Run { cluster, byzantine, calls, real_ids, figures }
}

/// The figures with a silent fourth member (measured once per process).
fn baseline() -> Figures {
    *BASELINE.get_or_init(|| attack_run(Attack::Silent).figures)
}

/// What the ledger holds, for the attack-specific checks.
struct LedgerFacts {
    requests: usize,
    /// Requests of the attacker's fake clients.
    fake: usize,
}

/// Every invariant of the module docs; prints the figures.
fn check(run: &Run, base: Figures) -> LedgerFacts {
    let cluster = &run.cluster;
    let attack = run.byzantine.attack;
    eprintln!("{attack:?}: {}", run.figures.line());
    eprintln!("{:?} (silent member): {}", Attack::Silent, base.line());
    let stats = run.byzantine.stats();
    eprintln!(
        "{attack:?}: the attacker sent {} datagrams ({} kB), received {} ({} kB, {} kB of ledger answers)",
        Stats::get(&stats.sent),
        Stats::get(&stats.sent_bytes) / 1000,
        Stats::get(&stats.received),
        Stats::get(&stats.received_bytes) / 1000,
        Stats::get(&stats.ledger_bytes) / 1000
    );
    check_every_request_acknowledged(run);
    let ledger = converged_ledger(cluster);
    let facts = check_ledger(&ledger, &run.real_ids, &run.byzantine.fake_ids());
    check_balances(cluster, &ledger, &run.calls);
    check_memory(cluster, attack);
    facts
}

/// Every real call got a reply (no timeout, no busy node, no other error).
fn check_every_request_acknowledged(run: &Run) {
    let failed: Vec<String> = run
        .calls
        .iter()
        .filter_map(|c| c.result.as_ref().err().map(|e| format!("{} after {:?}: {e}", c.op, c.wait)))
        .collect();
    assert!(
        failed.is_empty(),
        "{:?}: {} of {} real requests were not acknowledged:\n{}",
        run.byzantine.attack,
        failed.len(),
        run.calls.len(),
        failed.join("\n")
    );
    assert!(!run.calls.is_empty(), "the real clients made no call at all");
}

/// Waits until the honest nodes' ledgers and databases are identical; the ledger.
fn converged_ledger(cluster: &Cluster) -> String {
    wait_for("the honest ledgers and databases to be identical", || {
        let ledger = cluster.ledger(HONEST[0]);
        let db = cluster.db(HONEST[0]);
        !ledger.is_empty()
            && ledger.ends_with('\n')
            && HONEST.iter().all(|&i| cluster.ledger(i) == ledger && cluster.db(i) == db)
    });
    cluster.ledger(HONEST[0])
}

/// What makes a request itself: (client, session, seq), and for a register its nonce
/// (a client may open several sessions, each with its own register of seq 0).
fn identity(request: &Request) -> (u64, u64, u64, u64) {
    let nonce = match request.op {
        Op::Register { nonce } => nonce,
        _ => 0,
    };
    (request.client, request.session, request.seq, nonce)
}

/// Every request verifies, comes from a real or a fake client, and appears once.
fn check_ledger(ledger: &str, real: &BTreeSet<u64>, fake: &BTreeSet<u64>) -> LedgerFacts {
    let mut seen = BTreeSet::new();
    let mut facts = LedgerFacts { requests: 0, fake: 0 };
    for (slot, batch) in ledger_entries(ledger) {
        for request in batch.requests() {
            if let Err(e) = request.verify() {
                panic!("slot {slot} holds a request its client did not sign ({e}): {request:?}");
            }
            let known = real.contains(&request.client) || fake.contains(&request.client);
            assert!(known, "slot {slot} holds a request of unknown client {}: {request:?}", request.client);
            assert!(seen.insert(identity(request)), "slot {slot} holds a request a second time: {request:?}");
            facts.requests += 1;
            facts.fake += usize::from(fake.contains(&request.client));
        }
    }
    facts
}

/// What the acknowledged calls did to each wallet, in cents (signed).
fn expected_balances(calls: &[Call]) -> BTreeMap<String, i64> {
    let mut balances = BTreeMap::new();
    let mut add = |key: &Key, amount: &Amount, sign: i64| {
        *balances.entry(key.as_str().to_string()).or_insert(0) += sign * amount.cents() as i64;
    };
    for call in calls {
        match (&call.op, &call.result) {
            (Op::Deposit { key, amount }, Ok(Outcome::Ok { .. })) => add(key, amount, 1),
            (Op::Withdraw { key, amount }, Ok(Outcome::Ok { .. })) => add(key, amount, -1),
            (Op::Transfer { from, to, amount }, Ok(Outcome::Transferred { .. })) => {
                add(from, amount, -1);
                add(to, amount, 1);
            }
            _ => {}
        }
    }
    balances
}

/// Each real wallet holds exactly what its acknowledged operations add up to, in the
/// replayed ledger and in every honest database.
fn check_balances(cluster: &Cluster, ledger: &str, calls: &[Call]) {
    let mut wallet = Wallet::new();
    for (_, batch) in ledger_entries(ledger) {
        wallet.apply_batch(&batch);
    }
    let db = parse_db(&cluster.db(HONEST[0]));
    for (key, expected) in expected_balances(calls) {
        let replayed = wallet.get(&key).map_or(0, |a| a.cents() as i64);
        assert_eq!(replayed, expected, "wallet {key} in the replayed ledger");
        let stored = db.get(&key).map_or(0, |v| Amount::parse(v).expect("an amount").cents() as i64);
        assert_eq!(stored, expected, "wallet {key} in the database");
    }
}

/// Each honest node still runs, with a peak RSS under [`RSS_LIMIT_KB`].
fn check_memory(cluster: &Cluster, attack: Attack) {
    for i in HONEST {
        let peak = cluster.peak_rss_kb(i).unwrap_or_else(|| panic!("node {i} is gone:\n{}", cluster.log(i)));
        eprintln!("{attack:?}: node {i} peak RSS {peak} KiB");
        assert!(peak < RSS_LIMIT_KB, "{attack:?}: node {i} peaked at {peak} KiB (limit {RSS_LIMIT_KB} KiB)");
    }
}

/// Runs `attack` after the baseline, checks every invariant, returns the run and facts.
fn attacked(attack: Attack) -> (Run, LedgerFacts) {
    let _turn = serial();
    let base = baseline();
    let run = attack_run(attack);
    let facts = check(&run, base);
    (run, facts)
}

#[test]
fn a_silent_fourth_member_is_the_baseline() {
    let _turn = serial();
    let run = attack_run(Attack::Silent);
    let _ = BASELINE.set(run.figures);
    let facts = check(&run, baseline());
    assert!(facts.requests >= run.calls.len(), "every acknowledged call is in the ledger");
    assert_eq!(facts.fake, 0, "a silent member adds nothing");
}

#[test]
fn rewritten_client_requests_are_never_applied() {
    let (run, _) = attacked(Attack::Rewrite);
    let stats = run.byzantine.stats();
    assert!(Stats::get(&stats.real_seen) > 0, "the attacker saw no real request to rewrite");
    assert!(Stats::get(&stats.forged) > 0, "the attacker rewrote nothing");
}

#[test]
fn a_flood_of_validly_signed_fake_clients_does_not_starve_real_ones() {
    let (_, facts) = attacked(Attack::FakeFlood);
    assert!(facts.fake > 0, "no fake request reached the ledger: the flood did not happen");
    eprintln!("FakeFlood: {} of {} requests in the ledger are the attacker's", facts.fake, facts.requests);
}

#[test]
fn register_churn_from_fresh_keys_costs_real_clients_nothing() {
    let (_, facts) = attacked(Attack::RegisterChurn);
    assert!(facts.fake > 0, "no fake register reached the ledger: the churn did not happen");
    eprintln!("RegisterChurn: {} fake sessions opened", facts.fake);
}

#[test]
fn an_equivocating_participant_with_infinite_counters_breaks_nothing() {
    let (run, facts) = attacked(Attack::Equivocate);
    assert!(Stats::get(&run.byzantine.stats().statements) > 0, "the attacker made no statement");
    eprintln!("Equivocate: {} junk requests of the attacker decided", facts.fake);
}

#[test]
fn a_mute_member_asking_only_for_catch_up_breaks_nothing() {
    let (run, _) = attacked(Attack::Mute);
    let stats = run.byzantine.stats();
    assert!(Stats::get(&stats.sent) > 0 && Stats::get(&stats.received) > 0, "no catch-up exchange happened");
}

#[test]
fn unsolicited_ledger_offers_for_future_slots_cost_no_memory() {
    let (run, _) = attacked(Attack::LedgerOffers);
    assert!(Stats::get(&run.byzantine.stats().sent) > 0, "no offer was sent");
}

#[test]
fn catch_up_spam_from_slot_one_breaks_nothing() {
    let (run, _) = attacked(Attack::CatchUpSpam);
    let stats = run.byzantine.stats();
    let (sent, answers) = (Stats::get(&stats.sent_bytes), Stats::get(&stats.ledger_bytes));
    assert!(sent > 0, "no catch-up request was sent");
    eprintln!(
        "CatchUpSpam: {} kB of requests bought {} kB of ledger answers (x{:.1})",
        sent / 1000,
        answers / 1000,
        answers as f64 / sent as f64
    );
}
