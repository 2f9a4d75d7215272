//! Linearizability under faults, on real processes: concurrent clients run sets,
//! deposits, withdrawals, reads and transfers over four wallets on a four-node cluster
//! while one node is killed with SIGKILL and restarted, another is paused (SIGSTOP, then
//! SIGCONT) and a third is cut off by a partition and healed. Every call is recorded (when
//! it was invoked, when and what it answered, or that its outcome is unknown because the
//! client gave up) and the history is checked by `tests/linearize` against a sequential
//! wallet. Transfers join wallets a-b and c-d, so the history has two components of two
//! wallets each, checked apart.

mod linearize;
mod support;

use fba::client::Client;
use fba::rng::Rng;
use fba::wallet::{Amount, Key, Op, Outcome};
use linearize::{check, Event, Output, WalletOp};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::{wait_for, Cluster};

const NODES: usize = 4;
/// Concurrent clients; client `i` starts on node `i % 4`.
const CLIENTS: usize = 5;
/// The clients of the nodes that are killed and cut off give up soon (leaving unknown
/// outcomes) and move on to the next node; the others outwait every fault.
const IMPATIENT_CLIENTS: [usize; 2] = [1, 3];
/// Wallets, in the pairs transfers move money between.
const PAIRS: [[&str; 2]; 2] = [["a", "b"], ["c", "d"]];
/// A client waits this long for a reply before sending its request again...
const TIMEOUT: Duration = Duration::from_millis(150);
/// ... this many times when patient (longer than any fault lasts) or impatient.
const PATIENT: u32 = 40;
const IMPATIENT: u32 = 3;
/// Time between two fault steps.
const FAULT_STEP: Duration = Duration::from_millis(1_500);

/// The recorded history, with times in microseconds since the start.
struct Recorder {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn record(&self, event: Event) {
        self.events.lock().expect("lock").push(event);
    }
}

/// Stores a value in a flag when dropped, also while a panic unwinds, so that threads
/// polling the flag end and the scope that waits for them does not hang.
struct StoreOnDrop<'a>(&'a AtomicBool, bool);

impl Drop for StoreOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(self.1, Ordering::Relaxed);
    }
}

/// A random operation; amounts are whole dollars, so every balance is a multiple of 100.
fn random_op(rng: &mut Rng) -> WalletOp {
    let pair = PAIRS[rng.below(2) as usize];
    let side = rng.below(2) as usize;
    let (k, other) = (pair[side].to_string(), pair[1 - side].to_string());
    let amount = 100 * (1 + rng.below(20));
    match rng.below(100) {
        0..=9 => WalletOp::Set(k, amount),
        10..=39 => WalletOp::Deposit(k, amount),
        40..=59 => WalletOp::Withdraw(k, amount),
        60..=79 => WalletOp::Get(k),
        _ => WalletOp::Transfer(k, other, amount),
    }
}

/// The wallet request for an operation.
fn request_op(op: &WalletOp) -> Op {
    let key = |k: &str| Key::new(k).expect("a key");
    let amount = |c: u64| Amount::from_cents(c).expect("an amount");
    match op {
        WalletOp::Set(k, a) => Op::Set { key: key(k), amount: amount(*a) },
        WalletOp::Deposit(k, a) => Op::Deposit { key: key(k), amount: amount(*a) },
        WalletOp::Withdraw(k, a) => Op::Withdraw { key: key(k), amount: amount(*a) },
        WalletOp::Get(k) => Op::Get { key: key(k) },
        WalletOp::Transfer(f, t, a) => Op::Transfer { from: key(f), to: key(t), amount: amount(*a) },
    }
}

/// What a reply says in the model's terms; `None` when it does not tell whether the
/// request took effect (a refusal of the session or sequence number).
fn output(outcome: &Outcome) -> Option<Output> {
    match outcome {
        Outcome::Ok { balance, .. } => Some(Output::Ok(balance.cents())),
        Outcome::Transferred { from_balance, to_balance, .. } => {
            Some(Output::Transferred(from_balance.cents(), to_balance.cents()))
        }
        Outcome::InsufficientFunds { balance, .. } => Some(Output::Insufficient(balance.cents())),
        Outcome::NoSuchWallet { key } => Some(Output::NoSuchWallet(key.as_str().to_string())),
        Outcome::SameWallet { .. } => Some(Output::SameWallet),
        Outcome::Duplicate { .. } | Outcome::BadSeq { .. } | Outcome::SessionExpired { .. } => None,
        other => panic!("unexpected outcome for an unsigned wallet operation: {other:?}"),
    }
}

fn new_client(ports: &[u16], node: usize, attempts: u32) -> Client {
    let mut client = Client::new(SocketAddr::from(([127, 0, 0, 1], ports[node]))).expect("a client");
    client.timeout = TIMEOUT;
    client.attempts = attempts;
    client
}

/// Calls `op` and records it: its response, or an unknown outcome.
fn call(client: &mut Client, op: WalletOp, recorder: &Recorder) -> bool {
    let invoked = recorder.now();
    let result = client.call(request_op(&op));
    let answered = recorder.now();
    let response = match &result {
        Ok((_, reply)) => output(&reply.outcome).map(|out| (answered, out)),
        Err(_) => None,
    };
    recorder.record(Event { op, invoked, response });
    result.is_ok()
}

/// Client `i`: random operations with pauses, until `stop`. After a call without answer
/// it starts afresh (a new client, with a new session) on the next node.
fn client_loop(i: usize, ports: &[u16], recorder: &Recorder, stop: &AtomicBool) {
    let attempts = if IMPATIENT_CLIENTS.contains(&i) { IMPATIENT } else { PATIENT };
    let mut node = i % NODES;
    let mut client = new_client(ports, node, attempts);
    let mut rng = Rng::new(0x11ea + i as u64);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(40 + rng.below(60)));
        if !call(&mut client, random_op(&mut rng), recorder) {
            node = (node + 1) % NODES;
            client = new_client(ports, node, attempts);
        }
    }
}

/// The faults, one at a time (a quorum of three always remains): kill -9 and restart of
/// node 1, a pause of node 2, a partition of node 3.
fn inject_faults(cluster: &mut Cluster, cuts: &[PathBuf]) {
    let mut step = |what: &str, f: &mut dyn FnMut(&mut Cluster)| {
        std::thread::sleep(FAULT_STEP);
        eprintln!("fault: {what}");
        f(cluster);
    };
    step("kill -9 node 1", &mut |c| c.kill(1));
    step("restart node 1", &mut |c| {
        c.start_node_with(1, &[("FBA_NET_PARTITION_FILE", cuts[1].as_os_str())], &[])
    });
    step("pause node 2", &mut |c| c.signal(2, "STOP"));
    step("resume node 2", &mut |c| c.signal(2, "CONT"));
    step("partition node 3", &mut |_| std::fs::write(&cuts[3], b"cut").expect("partition file"));
    step("heal node 3", &mut |_| std::fs::remove_file(&cuts[3]).expect("partition file"));
    std::thread::sleep(FAULT_STEP);
}

#[test]
fn client_histories_under_kill_pause_and_partition_are_linearizable() {
    let mut cluster = Cluster::new(NODES, 3);
    let cuts: Vec<PathBuf> = (0..NODES).map(|i| cluster.dir.path().join(format!("cut{i}"))).collect();
    for (i, cut) in cuts.iter().enumerate() {
        cluster.start_node_with(i, &[("FBA_NET_PARTITION_FILE", cut.as_os_str())], &[]);
    }
    let recorder = Recorder { start: Instant::now(), events: Mutex::new(Vec::new()) };
    let stop = AtomicBool::new(false);
    // The clients need only the ports; the faults change the cluster meanwhile.
    let ports = cluster.ports.clone();
    std::thread::scope(|s| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (ports, recorder, stop) = (&ports, &recorder, &stop);
                s.spawn(move || client_loop(i, ports, recorder, stop))
            })
            .collect();
        let stop_clients = StoreOnDrop(&stop, true); // also if a fault step panics
        inject_faults(&mut cluster, &cuts);
        drop(stop_clients);
        for client in clients {
            client.join().expect("a client thread");
        }
    });
    wait_for("every node to hold the same ledger and database", || {
        let (ledger, db) = (cluster.ledger(0), cluster.db(0));
        !ledger.is_empty() && (1..NODES).all(|i| cluster.ledger(i) == ledger && cluster.db(i) == db)
    });
    // Final reads, after everything: the history must also explain the final state.
    let mut reader = new_client(&ports, 0, PATIENT);
    for k in PAIRS.iter().flatten() {
        assert!(call(&mut reader, WalletOp::Get(k.to_string()), &recorder), "final read of {k}");
    }
    let history = recorder.events.into_inner().expect("lock");
    let unknown = history.iter().filter(|e| e.response.is_none()).count();
    let transfers =
        history.iter().filter(|e| matches!(e.response, Some((_, Output::Transferred(..))))).count();
    let started = Instant::now();
    let verdict = check(&history);
    eprintln!(
        "{} operations ({} unknown outcomes, {} transfers done) checked in {:?}",
        history.len(),
        unknown,
        transfers,
        started.elapsed()
    );
    if let Err(violation) = verdict {
        panic!("{violation}");
    }
    assert!(transfers > 0, "no transfer succeeded: the history does not couple wallets");

    // The checker is not vacuous on this very history: a final read one cent off (no
    // balance can be, all amounts being whole dollars) is refused.
    let mut tampered = history.clone();
    let last =
        tampered.iter_mut().rev().find(|e| matches!(e.response, Some((_, Output::Ok(_))))).expect("a read");
    if let Some((_, Output::Ok(balance))) = &mut last.response {
        *balance += 1;
    }
    assert!(check(&tampered).is_err(), "a read one cent off was accepted");
}
