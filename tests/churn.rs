//! Client churn and exactly-once: thousands of client ids come and go (each registers a
//! session, makes a few deposits and leaves; some sign their requests, most do not), while
//! old acknowledged requests are sent again, byte for byte, at random later times: during
//! the churn, and again after more sessions were opened than the wallet's session table
//! holds, so that the old sessions have been evicted.
//!
//! Asserted: a request sent again gets its original reply (from the session's cache),
//! `duplicate` or `session_expired`, never a second application; and every wallet ends
//! with exactly the sum of its acknowledged deposits, on every node.
//!
//! `fba_server` has no option for the size of the session table, so the test opens more
//! than [`DEFAULT_SESSION_LIMIT`] sessions (pipelined registers) to evict the old ones.

mod support;

use fba::net::{self, Datagram, Message};
use fba::rng::Rng;
use fba::wallet::{Amount, ClientKey, Key, Op, Outcome, Reply, Request, DEFAULT_SESSION_LIMIT};
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::{parse_db, wait_for, Cluster};

const NODES: usize = 4;
/// Client ids that come and go.
const CHURN_CLIENTS: usize = 2_000;
/// Threads running them, one client at a time each.
const WORKERS: usize = 16;
/// Deposits per client before it leaves.
const DEPOSITS: u64 = 3;
/// Every this many clients, one signs its requests.
const SIGNED_EVERY: usize = 8;
/// Wallets the deposits go to.
const WALLETS: u64 = 32;
/// How long a request waits for its reply before it is sent again, and how often.
const TIMEOUT: Duration = Duration::from_millis(300);
const ATTEMPTS: u32 = 100;
/// Registers in flight at once per node in the bulk phase (a node's own clients may have
/// a quarter of its 10,000-request pool).
const BULK_IN_FLIGHT: usize = 1_000;

/// An acknowledged request and its reply.
#[derive(Clone)]
struct Acked {
    request: Request,
    reply: Reply,
}

/// How re-sent requests were answered.
#[derive(Debug, Default)]
struct Resent {
    cached: AtomicUsize,
    duplicate: AtomicUsize,
    expired: AtomicUsize,
}

impl Resent {
    fn total(&self) -> usize {
        [&self.cached, &self.duplicate, &self.expired].iter().map(|c| c.load(Ordering::Relaxed)).sum()
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

fn addr(cluster: &Cluster, node: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], cluster.ports[node]))
}

/// Sends `request` to `to` until a reply to it comes (retransmitting the same bytes).
fn exchange(socket: &UdpSocket, to: SocketAddr, request: &Request) -> Option<Reply> {
    let bytes = net::encode(&Message::Request { request: request.clone() });
    let mut buf = vec![0u8; net::MAX_DATAGRAM + 1];
    for _ in 0..ATTEMPTS {
        socket.send_to(&bytes, to).ok()?;
        let deadline = Instant::now() + TIMEOUT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            socket.set_read_timeout(Some(left)).expect("timeout");
            let Ok((n, _)) = socket.recv_from(&mut buf) else { break };
            if let Ok(Datagram::Json(Message::Reply { reply, .. })) = net::decode(&buf[..n]) {
                if reply.answers(request) {
                    return Some(reply);
                }
            }
        }
    }
    None
}

/// One client that comes, registers, deposits [`DEPOSITS`] times and leaves; its
/// acknowledged deposits. Like `fba_client`, it talks to one node (see
/// `a_lagging_node_never_calls_a_live_session_expired` for why that matters).
fn churn_client(cluster: &Cluster, socket: &UdpSocket, rng: &mut Rng, signed: bool) -> Vec<Acked> {
    let key = signed.then(|| ClientKey::generate().expect("a key").0);
    let id = key.as_ref().map_or(rng.next_u64() >> 1, ClientKey::client_id);
    let sign = |r: Request| match &key {
        Some(k) => k.sign(r),
        None => r,
    };
    let register = sign(Request::new(id, 0, Op::Register { nonce: rng.next_u64() | 1 }));
    let to = addr(cluster, rng.below(NODES as u64) as usize);
    let reply = exchange(socket, to, &register).expect("the register is answered");
    let session = reply.outcome.registered_session().expect("a session");
    (1..=DEPOSITS)
        .map(|seq| {
            let wallet = Key::new(format!("w{}", rng.below(WALLETS))).expect("a key");
            let amount = Amount::from_cents(1 + rng.below(9_999)).expect("an amount");
            let request =
                sign(Request::new(id, seq, Op::Deposit { key: wallet, amount }).with_session(session));
            let reply = exchange(socket, to, &request).expect("the deposit is answered");
            assert!(reply.outcome.is_ok(), "a fresh deposit is applied: {reply:?}");
            Acked { request, reply }
        })
        .collect()
}

/// Sends an old acknowledged request again and checks the answer: its original reply,
/// `duplicate` or `session_expired`, never a new application.
fn resend(cluster: &Cluster, socket: &UdpSocket, rng: &mut Rng, old: &Acked, counts: &Resent) {
    let to = addr(cluster, rng.below(NODES as u64) as usize);
    let reply = exchange(socket, to, &old.request).expect("a re-sent request is answered");
    let counter = match &reply.outcome {
        outcome if *outcome == old.reply.outcome => &counts.cached,
        Outcome::Duplicate { last_seq } if *last_seq > old.request.seq => &counts.duplicate,
        Outcome::SessionExpired { session } if *session == old.request.session => &counts.expired,
        other => panic!(
            "request {:?} sent again was answered {other:?}; its first reply was {:?}",
            old.request.id(),
            old.reply.outcome
        ),
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Opens `count` sessions of fresh unsigned client ids, keeping up to
/// [`BULK_IN_FLIGHT`] registers in flight per node; returns how many were answered.
fn open_sessions(cluster: &Cluster, count: usize, seed: u64) -> usize {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    let mut rng = Rng::new(seed);
    let mut waiting: HashMap<u64, (Request, usize, Instant)> = HashMap::new();
    let (mut issued, mut answered) = (0, 0);
    let mut buf = vec![0u8; net::MAX_DATAGRAM + 1];
    let started = Instant::now();
    while answered < count {
        assert!(started.elapsed() < Duration::from_secs(120), "bulk registers stalled at {answered}");
        while issued < count && waiting.len() < BULK_IN_FLIGHT * NODES {
            let id = rng.next_u64() >> 1;
            let request = Request::new(id, 0, Op::Register { nonce: rng.next_u64() | 1 });
            let node = issued % NODES;
            let _ = socket
                .send_to(&net::encode(&Message::Request { request: request.clone() }), addr(cluster, node));
            waiting.insert(id, (request, node, Instant::now()));
            issued += 1;
        }
        while let Ok((n, _)) = socket.recv_from(&mut buf) {
            if let Ok(Datagram::Json(Message::Reply { reply, .. })) = net::decode(&buf[..n]) {
                if waiting.remove(&reply.client).is_some() {
                    assert!(reply.outcome.registered_session().is_some(), "{reply:?}");
                    answered += 1;
                }
            }
        }
        for (request, node, sent) in
            waiting.values_mut().filter(|(_, _, sent)| sent.elapsed() > Duration::from_secs(1))
        {
            let _ = socket
                .send_to(&net::encode(&Message::Request { request: request.clone() }), addr(cluster, *node));
            *sent = Instant::now();
        }
    }
    answered
}

/// Node `i`'s database (empty until the node writes one).
fn db_of(cluster: &Cluster, i: usize) -> BTreeMap<String, String> {
    let content = cluster.db(i);
    if content.is_empty() {
        return BTreeMap::new();
    }
    parse_db(&content)
}

/// Every wallet's balance on every node is the sum of its acknowledged deposits.
fn check_balances(cluster: &Cluster, acked: &[Acked]) {
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for a in acked {
        if let Op::Deposit { key, amount } = &a.request.op {
            *expected.entry(key.as_str().to_string()).or_insert(0) += amount.cents();
        }
    }
    let matches = |i: usize| {
        let db = db_of(cluster, i);
        expected.iter().all(|(k, cents)| {
            db.get(k).and_then(|v| Amount::parse(v).ok()).map(Amount::cents) == Some(*cents)
        }) && db.len() == expected.len()
    };
    wait_for("every node to hold exactly the acknowledged deposits", || (0..NODES).all(matches));
    let ledger = cluster.ledger(0);
    for i in 1..NODES {
        assert_eq!(cluster.ledger(i), ledger, "the ledgers of nodes 0 and {i} differ");
    }
}

#[test]
fn churning_clients_and_resent_requests_are_never_applied_twice() {
    let cluster = Cluster::start(NODES, 3, &[]);
    let acked: Mutex<Vec<Acked>> = Mutex::new(Vec::new());
    let counts = Resent::default();
    let next = AtomicUsize::new(0);
    let churning = AtomicBool::new(true);
    let started = Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (cluster, acked, next) = (&cluster, &acked, &next);
                s.spawn(move || {
                    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
                    let mut rng = Rng::new(0xc4e2 + w as u64);
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= CHURN_CLIENTS {
                            break;
                        }
                        let done = churn_client(cluster, &socket, &mut rng, k % SIGNED_EVERY == 0);
                        acked.lock().expect("lock").extend(done);
                    }
                })
            })
            .collect();
        // Meanwhile, old acknowledged requests come back at random.
        let resender = s.spawn(|| {
            let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let mut rng = Rng::new(0x5e5d);
            while churning.load(Ordering::Relaxed) {
                let old = {
                    let acked = acked.lock().expect("lock");
                    (!acked.is_empty()).then(|| acked[rng.below(acked.len() as u64) as usize].clone())
                };
                match old {
                    Some(old) => resend(&cluster, &socket, &mut rng, &old, &counts),
                    None => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let stop_resending = StoreOnDrop(&churning, false); // also if a worker panicked
        for worker in workers {
            worker.join().expect("a churn worker");
        }
        drop(stop_resending);
        resender.join().expect("the re-sender");
    });
    let acked = acked.into_inner().expect("lock");
    eprintln!(
        "{CHURN_CLIENTS} clients made {} deposits in {:.1} s; {} re-sent during the churn: {counts:?}",
        acked.len(),
        started.elapsed().as_secs_f64(),
        counts.total()
    );
    assert_eq!(acked.len(), CHURN_CLIENTS * DEPOSITS as usize);
    assert!(counts.total() > 0, "nothing was re-sent during the churn");

    // Open more sessions than the table holds: every churn client's session is evicted.
    let bulk = DEFAULT_SESSION_LIMIT + 1_000;
    let opened = Instant::now();
    let answered = open_sessions(&cluster, bulk, 0xb01c);
    eprintln!("opened {answered} more sessions in {:.1} s", opened.elapsed().as_secs_f64());

    // Every old deposit comes back once more, in random order.
    let after = Resent::default();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut rng = Rng::new(0xa7e2);
    let mut order: Vec<&Acked> = acked.iter().collect();
    rng.shuffle(&mut order);
    for old in order.iter().take(1_000) {
        resend(&cluster, &socket, &mut rng, old, &after);
    }
    eprintln!("re-sent after the sessions were evicted: {after:?}");
    assert!(
        after.expired.load(Ordering::Relaxed) > 0,
        "no session was evicted after {bulk} new sessions (limit {DEFAULT_SESSION_LIMIT})"
    );
    check_balances(&cluster, &acked);
    for i in 0..NODES {
        eprintln!("node {i}: peak RSS {} KiB", cluster.peak_rss_kb(i).unwrap_or(0));
    }
}

/// Nodes cache the state of their partition file for 20 ms: a new state certainly holds
/// after this long.
const HOOK_CACHE: Duration = Duration::from_millis(100);

/// Rounds of the lagging-node scenario: in each, the request reaches the lagging node
/// within a few milliseconds of the partition's end, before its next catch-up probe (once
/// a second) can have caught it up, most of the time; several rounds make that certain.
const LAG_ROUNDS: u64 = 5;

/// A node that missed the slots in which a session was opened and used (it was cut off)
/// must not answer a request of that session `session_expired` ("not applied, never will
/// be"): neither a retransmission of a request the cluster applied, nor the session's next
/// request. Session ids only grow (a session's id is the count of requests applied when it
/// opened), so a node can tell a session it has not reached yet from one it evicted.
#[test]
fn a_lagging_node_never_calls_a_live_session_expired() {
    let mut cluster = Cluster::new(NODES, 3);
    let cuts: Vec<_> = (0..NODES).map(|i| cluster.dir.path().join(format!("cut{i}"))).collect();
    for (i, cut) in cuts.iter().enumerate() {
        cluster.start_node_with(i, &[("FBA_NET_PARTITION_FILE", cut.as_os_str())], &[]);
    }
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let deposit = |client: u64, seq: u64, session: u64| {
        let op = Op::Deposit {
            key: Key::new("lag").expect("a key"),
            amount: Amount::from_cents(100).expect("$1"),
        };
        Request::new(client, seq, op).with_session(session)
    };
    let mut expired = Vec::new();
    let mut applied = 0;
    for client in 1..=LAG_ROUNDS {
        std::fs::write(&cuts[3], b"cut").expect("partition file");
        std::thread::sleep(HOOK_CACHE);
        let register = Request::new(client, 0, Op::Register { nonce: 1 });
        let session = exchange(&socket, addr(&cluster, 0), &register)
            .and_then(|r| r.outcome.registered_session())
            .expect("a session, opened without node 3");
        let first = exchange(&socket, addr(&cluster, 0), &deposit(client, 1, session)).expect("an answer");
        assert!(first.outcome.is_ok(), "{first:?}");
        applied += 1;
        std::fs::remove_file(&cuts[3]).expect("partition file");
        std::thread::sleep(Duration::from_millis(30)); // the partition file's cache, and no more
        for (what, seq) in [("a retransmission of the applied deposit", 1), ("the next deposit", 2)] {
            let reply =
                exchange(&socket, addr(&cluster, 3), &deposit(client, seq, session)).expect("an answer");
            match reply.outcome {
                Outcome::SessionExpired { .. } => {
                    expired.push(format!("session {session}: {what} (seq {seq}) -> {:?}", reply.outcome))
                }
                ref outcome => applied += usize::from(seq == 2 && outcome.is_ok()),
            }
        }
    }
    let expected = format!("${applied}");
    wait_for("every node to apply every acknowledged deposit exactly once", || {
        (0..NODES).all(|i| db_of(&cluster, i).get("lag") == Some(&expected))
    });
    assert!(expired.is_empty(), "node 3, behind, called live sessions expired:\n{}", expired.join("\n"));
}
