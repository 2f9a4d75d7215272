//! An in-process Byzantine member for process tests.
//!
//! It takes over node 3 of a keyed four-node cluster (`Cluster::new(4, 3)`, `with_keys()`,
//! nodes 0..3 started): it loads node 3's key file, so every datagram it sends is sealed
//! with node 3's legitimate pairwise keys and accepted as node 3's, binds node 3's UDP
//! port, and then lies in one way ([`Attack`]) on a thread of its own, as fast as the
//! attack's pace allows, until stopped.
//!
//! What it sees: honest nodes treat it as a peer, so they send it their statements, their
//! floods of client requests and their catch-up probes. A reader thread opens those
//! datagrams and keeps a [`View`]: the current slot, the recent real client requests, and
//! a replica of the wallet built from the values the honest nodes externalize (so the
//! attacker knows the sessions its fake clients were given and how far each got).
//!
//! Every attack sends only well-formed peer messages (statements, floods, catch-up
//! requests, ledger offers): whatever the honest nodes refuse, they refuse for what the
//! messages say, not for how they are encoded.
#![allow(dead_code)] // each test uses a different subset

use crate::support::Cluster;
use fba::auth::{Opener, Sealer};
use fba::keys::KeyFile;
use fba::net::{self, Datagram, LedgerEntry, Message};
use fba::quorum::{NodeId, QuorumSet};
use fba::rng::Rng;
use fba::scp::{Ballot, Pledges, Statement, Value, INFINITE_COUNTER};
use fba::wallet::{Amount, Batch, ClientKey, Key, Op, Request, Wallet};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The index of the node the Byzantine member replaces.
pub const BYZANTINE: usize = 3;

/// One way to lie. Each is a function below, named after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// Nothing at all: the baseline, a silent fourth member (it still reads its socket).
    Silent,
    /// (a) Floods rewritten copies of real clients' requests (seq+1 and `set K $0`,
    /// seq `u64::MAX`, another op under the same id, re-signed by the attacker, unsigned)
    /// and nominates a batch of them.
    Rewrite,
    /// (b) Floods validly signed deposits of a few hundred fake clients whose keys were
    /// ground for small client ids, each many sequence numbers ahead, to crowd real
    /// clients out of batches and pools.
    FakeFlood,
    /// (c) Floods validly signed registers from ever new fake keys (session churn).
    RegisterChurn,
    /// (d) Equivocates as an SCP participant: each round, a different valid junk batch to
    /// each peer in NOMINATE and PREPARE/CONFIRM statements for the current slot, with
    /// counters at `u32::MAX`; it announces those batches, and also names digests of
    /// batches it never sends (honest nodes park those statements and fetch in vain).
    Equivocate,
    /// (e) Mute: sends nothing but catch-up requests, as fast as its pace allows.
    Mute,
    /// (f) Offers junk ledger entries, unasked, for thousands of future slots.
    LedgerOffers,
    /// (g) Spams catch-up requests `from: 1` (each answered with up to 40 kB).
    CatchUpSpam,
}

/// Counters of what the attacker did and saw.
#[derive(Debug, Default)]
pub struct Stats {
    /// Datagrams sent.
    pub sent: AtomicU64,
    /// Bytes sent (sealed).
    pub sent_bytes: AtomicU64,
    /// Datagrams received.
    pub received: AtomicU64,
    /// Bytes received.
    pub received_bytes: AtomicU64,
    /// Bytes of ledger answers received (answers to catch-up requests).
    pub ledger_bytes: AtomicU64,
    /// Real client requests seen in the honest nodes' floods.
    pub real_seen: AtomicU64,
    /// Forged or junk requests put in floods and values.
    pub forged: AtomicU64,
    /// Statements sent.
    pub statements: AtomicU64,
}

impl Stats {
    /// The current value of one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What the attacker knows of the cluster, from what honest nodes send it.
struct View {
    /// The wallet as the honest nodes decided it (slots `1..=applied`).
    replica: Wallet,
    /// Slots applied to the replica.
    applied: u64,
    /// Decided batches seen ahead of the replica, by slot.
    decided: BTreeMap<u64, Batch>,
    /// The highest slot an honest statement was about.
    highest: u64,
    /// Recent requests of real clients, from the honest nodes' floods.
    real: VecDeque<Request>,
}

/// Real requests remembered for rewriting.
const REAL_KEPT: usize = 256;

impl View {
    fn new() -> View {
        View {
            replica: Wallet::new(),
            applied: 0,
            decided: BTreeMap::new(),
            highest: 0,
            real: VecDeque::new(),
        }
    }

    /// Learns from one authenticated peer message.
    fn observe(&mut self, message: Message, fakes: &BTreeSet<u64>, stats: &Stats) {
        match message {
            Message::Scp { statement } => {
                self.highest = self.highest.max(statement.slot);
                if let Pledges::Externalize { commit, .. } = &statement.pledges {
                    if let Ok(batch) = Batch::decode(commit.value.as_bytes()) {
                        self.learn(statement.slot, batch);
                    }
                }
            }
            Message::Flood { requests } => {
                for request in requests.into_iter().filter(|r| !fakes.contains(&r.client)) {
                    Stats::add(&stats.real_seen, 1);
                    if self.real.len() >= REAL_KEPT {
                        self.real.pop_front();
                    }
                    self.real.push_back(request);
                }
            }
            Message::Ledger { entries, .. } => {
                for LedgerEntry { slot, batch, .. } in entries {
                    self.learn(slot, batch);
                }
            }
            _ => {}
        }
    }

    /// Records a decided batch and applies every consecutive one to the replica.
    fn learn(&mut self, slot: u64, batch: Batch) {
        if slot > self.applied {
            self.decided.insert(slot, batch);
        }
        while let Some(batch) = self.decided.remove(&(self.applied + 1)) {
            self.replica.apply_batch(&batch);
            self.applied += 1;
        }
        self.decided.retain(|s, _| *s > self.applied);
    }

    /// The slot being decided now, as far as the attacker can tell.
    fn current_slot(&self) -> u64 {
        (self.applied + 1).max(self.highest)
    }
}

/// State shared by the attacker's threads.
struct Shared {
    socket: UdpSocket,
    sealer: Sealer,
    me: NodeId,
    /// The honest nodes: id and address.
    peers: Vec<(NodeId, SocketAddr)>,
    qset: QuorumSet,
    stop: AtomicBool,
    /// Set by an attack once it is in full swing.
    ready: AtomicBool,
    view: Mutex<View>,
    /// Client ids of every key the attacker made.
    fakes: Mutex<BTreeSet<u64>>,
    stats: Stats,
    /// When the replica last asked for a catch-up.
    last_sync: Mutex<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    /// Seals `message` for peer `to` and sends it.
    fn send(&self, to: NodeId, addr: SocketAddr, message: &Message) {
        let Some(sealed) = self.sealer.seal(to, &net::encode(message)) else { return };
        if self.socket.send_to(&sealed, addr).is_ok() {
            Stats::add(&self.stats.sent, 1);
            Stats::add(&self.stats.sent_bytes, sealed.len() as u64);
        }
    }

    /// Sends `message` to every honest node.
    fn broadcast(&self, message: &Message) {
        for (id, addr) in &self.peers {
            self.send(*id, *addr, message);
        }
    }

    /// Sends every honest node `batch` (a `value` message) and returns the value naming
    /// it, as a node announces the batches it proposes.
    fn announce(&self, batch: &Batch) -> Value {
        let bytes = batch.encode();
        for (id, addr) in &self.peers {
            let Some(sealed) = self.sealer.seal(*id, &net::encode_value(bytes)) else { continue };
            if self.socket.send_to(&sealed, addr).is_ok() {
                Stats::add(&self.stats.sent, 1);
                Stats::add(&self.stats.sent_bytes, sealed.len() as u64);
            }
        }
        Value::new(fba::hash::sha256(bytes).to_vec())
    }

    /// A statement of ours.
    fn statement(&self, slot: u64, pledges: Pledges) -> Message {
        Stats::add(&self.stats.statements, 1);
        Message::Scp { statement: Statement { node: self.me, slot, quorum_set: self.qset.clone(), pledges } }
    }

    fn current_slot(&self) -> u64 {
        lock(&self.view).current_slot()
    }

    /// Keeps the replica close to the honest ledger: when it lags, asks an honest node
    /// for the missing slots (at most every 100 ms, rotating over the nodes).
    fn sync_replica(&self) {
        let (applied, highest) = {
            let view = lock(&self.view);
            (view.applied, view.highest)
        };
        let mut last = lock(&self.last_sync);
        if highest <= applied + 1 || last.elapsed() < Duration::from_millis(100) {
            return;
        }
        *last = Instant::now();
        let (id, addr) = self.peers[(applied as usize) % self.peers.len()];
        self.send(id, addr, &Message::CatchUp { from: applied + 1 });
    }

    /// `n` fresh keys whose client ids are below 2^(63 - `grind_bits`) (so they sort
    /// before nearly every real client), recorded as fakes.
    fn fake_keys(&self, n: usize, grind_bits: u32) -> Vec<ClientKey> {
        let bound = 1u64 << (63 - grind_bits);
        let mut keys = Vec::with_capacity(n);
        while keys.len() < n && self.running() {
            let (key, _) = ClientKey::generate().expect("key generation");
            if key.client_id() < bound {
                lock(&self.fakes).insert(key.client_id());
                keys.push(key);
            }
        }
        keys
    }
}

/// The Byzantine member: node 3's key and port, an attack thread and a reader thread.
pub struct Byzantine {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// The attack it runs.
    pub attack: Attack,
}

impl Byzantine {
    /// Takes over node [`BYZANTINE`] of `cluster` (keyed, that node never started) and
    /// starts `attack`.
    pub fn start(cluster: &Cluster, attack: Attack) -> Byzantine {
        let file = KeyFile::load(&cluster.key_path(BYZANTINE)).expect("node 3's key file loads");
        let keys = file.network_keys();
        let epoch = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_micros() as u64;
        let peers: Vec<(NodeId, SocketAddr)> =
            file.peers().map(|n| (n.id, n.address.parse().expect("a loopback HOST:PORT"))).collect();
        let all = file.nodes.iter().map(|n| n.id).collect::<BTreeSet<_>>();
        let socket = UdpSocket::bind(("127.0.0.1", cluster.ports[BYZANTINE])).expect("bind node 3's port");
        socket.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
        let shared = Arc::new(Shared {
            socket,
            sealer: Sealer::new(&keys, epoch),
            me: keys.me,
            peers,
            qset: QuorumSet::new(3, all),
            stop: AtomicBool::new(false),
            ready: AtomicBool::new(attack == Attack::Silent),
            view: Mutex::new(View::new()),
            fakes: Mutex::new(BTreeSet::new()),
            stats: Stats::default(),
            last_sync: Mutex::new(Instant::now()),
        });
        let opener = Opener::new(&keys);
        let reader = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || read_loop(&shared, opener))
        };
        let attacker = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || run(&shared, attack))
        };
        Byzantine { shared, threads: vec![reader, attacker], attack }
    }

    /// Whether the attack is in full swing (a flood under way, fake sessions open...).
    pub fn ready(&self) -> bool {
        self.shared.ready.load(Ordering::Relaxed)
    }

    /// The attacker's counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Client ids of every key the attacker made.
    pub fn fake_ids(&self) -> BTreeSet<u64> {
        lock(&self.shared.fakes).clone()
    }

    /// Slots the attacker's replica has applied.
    pub fn replica_slots(&self) -> u64 {
        lock(&self.shared.view).applied
    }

    /// Stops the attack and the reader.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Byzantine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads node 3's socket: opens sealed datagrams and updates the view.
fn read_loop(shared: &Shared, mut opener: Opener) {
    let mut buf = vec![0u8; 65_536];
    while shared.running() {
        let Ok((n, _)) = shared.socket.recv_from(&mut buf) else { continue };
        Stats::add(&shared.stats.received, 1);
        Stats::add(&shared.stats.received_bytes, n as u64);
        let Ok(Datagram::Peer { message, .. }) = net::decode_with(&buf[..n], Some(&mut opener)) else {
            continue;
        };
        if let Message::Ledger { .. } = message {
            Stats::add(&shared.stats.ledger_bytes, n as u64);
        }
        let fakes = lock(&shared.fakes);
        lock(&shared.view).observe(message, &fakes, &shared.stats);
    }
}

/// Runs `attack` until stopped.
fn run(shared: &Shared, attack: Attack) {
    match attack {
        Attack::Silent => {}
        Attack::Rewrite => rewrite(shared),
        Attack::FakeFlood => fake_flood(shared),
        Attack::RegisterChurn => register_churn(shared),
        Attack::Equivocate => equivocate(shared),
        Attack::Mute => mute(shared),
        Attack::LedgerOffers => ledger_offers(shared),
        Attack::CatchUpSpam => catchup_spam(shared),
    }
}

/// Paces a loop to `per_second` events, sleeping when ahead.
struct Pace {
    start: Instant,
    per_second: f64,
    done: f64,
}

impl Pace {
    fn new(per_second: f64) -> Pace {
        Pace { start: Instant::now(), per_second, done: 0.0 }
    }

    /// Counts `n` events and sleeps until they are due.
    fn tick(&mut self, n: usize) {
        self.done += n as f64;
        let due = self.start + Duration::from_secs_f64(self.done / self.per_second);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

/// A random nonce (registers differ by it).
fn nonce(rng: &mut Rng) -> u64 {
    rng.next_u64() | 1
}

fn rng() -> Rng {
    Rng::new(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos() as u64)
}

// ----- (a) Rewrite ----------------------------------------------------------------------------

/// Rounds of rewriting per second (each: one flood and one NOMINATE per honest node).
const REWRITE_ROUNDS: f64 = 100.0;

/// (a) Rewrites the real requests the honest nodes flood to it: floods the rewrites and
/// nominates a batch of them, for the current slot.
fn rewrite(shared: &Shared) {
    let mallory = shared.fake_keys(1, 0).pop().expect("a key");
    shared.ready.store(true, Ordering::Relaxed); // it acts as soon as real clients do
    let mut pace = Pace::new(REWRITE_ROUNDS);
    let mut cursor = 0usize;
    while shared.running() {
        let victims: Vec<Request> = {
            let view = lock(&shared.view);
            (0..view.real.len().min(4)).map(|k| view.real[(cursor + k) % view.real.len()].clone()).collect()
        };
        cursor += 4;
        if !victims.is_empty() {
            let forged: Vec<Request> = victims.iter().flat_map(|r| rewrites(r, &mallory)).collect();
            Stats::add(&shared.stats.forged, forged.len() as u64);
            shared.broadcast(&Message::Flood { requests: forged.clone() });
            let value = shared.announce(&Batch::new(forged));
            let pledges = Pledges::Nominate { voted: BTreeSet::from([value]), accepted: BTreeSet::new() };
            shared.broadcast(&shared.statement(shared.current_slot(), pledges));
        }
        pace.tick(1);
    }
}

/// Forged variants of a real request: none verifies any more.
fn rewrites(real: &Request, mallory: &ClientKey) -> Vec<Request> {
    let victim = match &real.op {
        Op::Set { key, .. } | Op::Deposit { key, .. } | Op::Withdraw { key, .. } | Op::Get { key } => {
            key.clone()
        }
        Op::Transfer { from, .. } => from.clone(),
        Op::Register { .. } | Op::Reconfigure(_) | Op::Many { .. } => Key::new("victim").expect("a key"),
    };
    let zero = Op::Set { key: victim, amount: Amount::from_cents(0).expect("an amount") };
    let with = |seq: u64, op: &Op| Request { seq, op: op.clone(), ..real.clone() };
    let next = with(real.seq + 1, &zero);
    let last = with(u64::MAX, &zero);
    let altered = with(real.seq, &Op::Deposit { key: key("stolen"), amount: dollars(1_000) });
    let mut resigned = mallory.sign(next.clone());
    resigned.client = real.client;
    let unsigned = Request { auth: None, ..next.clone() };
    vec![next, last, altered, resigned, unsigned]
}

fn key(name: &str) -> Key {
    Key::new(name).expect("a valid key")
}

fn dollars(n: u64) -> Amount {
    Amount::from_cents(n * 100).expect("a valid amount")
}

// ----- (b) FakeFlood --------------------------------------------------------------------------

/// Fake clients of the flood.
const FLOOD_KEYS: usize = 256;
/// Their ids are below 2^(63 - this): smaller than about 98% of real ids.
const FLOOD_GRIND_BITS: u32 = 6;
/// How many sequence numbers ahead of its last applied one each fake client has pending.
const FLOOD_WINDOW: u64 = 64;
/// New signed requests per second, at most.
const FLOOD_RATE: f64 = 4_000.0;
/// Requests per flood datagram.
const FLOOD_CHUNK: usize = 64;

/// (b) Registers its fake clients, learns their sessions from the replica, then keeps
/// each one [`FLOOD_WINDOW`] validly signed deposits ahead, flooding them to every node.
fn fake_flood(shared: &Shared) {
    let keys = shared.fake_keys(FLOOD_KEYS, FLOOD_GRIND_BITS);
    let registers: Vec<Request> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| k.sign(Request::new(0, 0, Op::Register { nonce: i as u64 + 1 })))
        .collect();
    let mut pending: Vec<VecDeque<Request>> = keys.iter().map(|_| VecDeque::new()).collect();
    let mut pace = Pace::new(FLOOD_RATE);
    let mut last_register = None::<Instant>;
    let mut last_reflood = Instant::now();
    while shared.running() {
        shared.sync_replica();
        let sessions = fake_sessions(shared, &keys, &registers);
        if last_register.is_none_or(|t| t.elapsed() > Duration::from_millis(500)) {
            let unregistered: Vec<Request> = registers
                .iter()
                .zip(&sessions)
                .filter(|(_, s)| s.is_none())
                .map(|(r, _)| r.clone())
                .collect();
            flood(shared, &unregistered);
            last_register = Some(Instant::now());
        }
        let mut fresh = Vec::new();
        for (i, session) in sessions.iter().enumerate() {
            let Some((session, last)) = *session else { continue };
            let queue = &mut pending[i];
            queue.retain(|r| r.session == session && r.seq > last);
            let mut next = queue.back().map_or(last + 1, |r| r.seq + 1);
            while next <= last + FLOOD_WINDOW && fresh.len() < FLOOD_CHUNK * 4 {
                let op = Op::Deposit {
                    key: key(&format!("junk-{i}")),
                    amount: Amount::from_cents(1).expect("1c"),
                };
                let request = keys[i].sign(Request::new(0, next, op).with_session(session));
                queue.push_back(request.clone());
                fresh.push(request);
                next += 1;
            }
        }
        if fresh.is_empty() && last_reflood.elapsed() > Duration::from_secs(1) {
            // Floods may be lost: send everything still pending again, now and then.
            fresh = pending.iter().flatten().cloned().collect();
            last_reflood = Instant::now();
        } else if !fresh.is_empty() {
            shared.ready.store(true, Ordering::Relaxed);
        }
        flood(shared, &fresh);
        pace.tick(fresh.len().max(16));
    }
}

/// Each fake client's session and its last applied seq, from the replica.
fn fake_sessions(shared: &Shared, keys: &[ClientKey], registers: &[Request]) -> Vec<Option<(u64, u64)>> {
    let view = lock(&shared.view);
    keys.iter()
        .zip(registers)
        .map(|(k, register)| {
            let session = view.replica.admission(register).reply()?.outcome.registered_session()?;
            Some((session, view.replica.last_seq(k.client_id(), session)?))
        })
        .collect()
}

/// Floods `requests` to every honest node, in datagram-sized chunks.
fn flood(shared: &Shared, requests: &[Request]) {
    for chunk in requests.chunks(FLOOD_CHUNK) {
        Stats::add(&shared.stats.forged, chunk.len() as u64);
        shared.broadcast(&Message::Flood { requests: chunk.to_vec() });
    }
}

// ----- (c) RegisterChurn ----------------------------------------------------------------------

/// Registers of fresh keys per second.
const CHURN_RATE: f64 = 2_000.0;

/// (c) Floods registers, each from a brand new key.
fn register_churn(shared: &Shared) {
    let mut rng = rng();
    let mut pace = Pace::new(CHURN_RATE);
    while shared.running() {
        let registers: Vec<Request> = shared
            .fake_keys(FLOOD_CHUNK, 0)
            .iter()
            .map(|k| k.sign(Request::new(0, 0, Op::Register { nonce: nonce(&mut rng) })))
            .collect();
        flood(shared, &registers);
        shared.ready.store(true, Ordering::Relaxed);
        pace.tick(registers.len().max(1));
    }
}

// ----- (d) Equivocate -------------------------------------------------------------------------

/// Rounds of equivocation per second.
const EQUIVOCATION_ROUNDS: f64 = 40.0;

/// (d) Each round, for the current slot and the next, tells each honest node a different
/// story: NOMINATE of its own junk batches, and a ballot statement about one of them with
/// counters at `u32::MAX` (in turn: PREPARE at ∞, PREPARE at the round's counter, CONFIRM
/// at ∞).
fn equivocate(shared: &Shared) {
    let keys = shared.fake_keys(16, 0);
    let mut rng = rng();
    let mut pace = Pace::new(EQUIVOCATION_ROUNDS);
    let mut round = 0u32;
    while shared.running() {
        round += 1;
        shared.sync_replica();
        let slot = shared.current_slot();
        for &(id, addr) in &shared.peers {
            for slot in [slot, slot + 1] {
                // One batch sent, one withheld: honest nodes fetch it in vain.
                let (v, w) = (junk_value(&keys, &mut rng, shared), withheld_value(&mut rng));
                let nominate =
                    Pledges::Nominate { voted: BTreeSet::from([v.clone()]), accepted: BTreeSet::from([w]) };
                shared.send(id, addr, &shared.statement(slot, nominate));
                shared.send(id, addr, &shared.statement(slot, ballot_lie(round, v)));
            }
        }
        shared.ready.store(true, Ordering::Relaxed);
        pace.tick(1);
    }
}

/// A valid batch nobody asked for: two registers of the attacker's fake clients.
fn junk_value(keys: &[ClientKey], rng: &mut Rng, shared: &Shared) -> Value {
    let requests: Vec<Request> = (0..2)
        .map(|_| {
            let key = &keys[rng.below(keys.len() as u64) as usize];
            key.sign(Request::new(0, 0, Op::Register { nonce: nonce(rng) }))
        })
        .collect();
    Stats::add(&shared.stats.forged, 2);
    shared.announce(&Batch::new(requests))
}

/// A value naming a batch nobody was ever sent (the attacker withholds it).
fn withheld_value(rng: &mut Rng) -> Value {
    let bytes: Vec<u8> = (0..4).flat_map(|_| rng.next_u64().to_be_bytes()).collect();
    Value::new(bytes)
}

/// A ballot statement about `value` with absurd counters, by round.
fn ballot_lie(round: u32, value: Value) -> Pledges {
    let infinite = Ballot::new(INFINITE_COUNTER, value.clone());
    match round % 3 {
        0 => Pledges::Prepare {
            ballot: infinite.clone(),
            prepared: Some(infinite),
            prepared_prime: None,
            n_c: 0,
            n_h: INFINITE_COUNTER,
        },
        1 => Pledges::Prepare {
            ballot: Ballot::new(round, value),
            prepared: None,
            prepared_prime: None,
            n_c: 0,
            n_h: 0,
        },
        _ => Pledges::Confirm {
            ballot: infinite,
            n_prepared: INFINITE_COUNTER,
            n_commit: 1,
            n_h: INFINITE_COUNTER,
        },
    }
}

// ----- (e) Mute -------------------------------------------------------------------------------

/// Catch-up requests per second to each honest node.
const MUTE_RATE: f64 = 2_000.0;

/// (e) Never says anything useful, yet never falls silent: only catch-up requests for
/// the slot being decided (their answers are empty).
fn mute(shared: &Shared) {
    let mut pace = Pace::new(MUTE_RATE);
    shared.ready.store(true, Ordering::Relaxed);
    while shared.running() {
        shared.broadcast(&Message::CatchUp { from: shared.current_slot() });
        pace.tick(1);
    }
}

// ----- (f) LedgerOffers -----------------------------------------------------------------------

/// Future slots offered in one sweep.
const OFFER_SLOTS: u64 = 4_096;
/// Ledger entries per datagram (each batch is close to 48 KiB, so one fills a datagram).
const OFFER_ENTRIES: usize = 1;
/// Datagrams per second to each honest node.
const OFFER_RATE: f64 = 500.0;
/// A new sweep (with new junk) this often.
const OFFER_SWEEP: Duration = Duration::from_secs(3);

/// (f) Offers every honest node junk entries for the next [`OFFER_SLOTS`] slots, unasked,
/// claiming a ledger that long; again every [`OFFER_SWEEP`] with different junk.
fn ledger_offers(shared: &Shared) {
    let mut sweep = 0u64;
    let mut pace = Pace::new(OFFER_RATE);
    while shared.running() {
        let started = Instant::now();
        let base = shared.current_slot();
        let junk: Vec<Batch> = (0..OFFER_ENTRIES as u64).map(|k| junk_batch(sweep * 16 + k)).collect();
        let hash = fba::hash::hex(&fba::hash::sha256(&sweep.to_be_bytes()));
        let mut slot = base;
        while slot < base + OFFER_SLOTS && shared.running() {
            let entries = (0..OFFER_ENTRIES as u64)
                .map(|k| LedgerEntry { slot: slot + k, hash: hash.clone(), batch: junk[k as usize].clone() })
                .collect();
            shared.broadcast(&Message::Ledger { last: base + OFFER_SLOTS, entries });
            slot += OFFER_ENTRIES as u64;
            pace.tick(1);
        }
        shared.ready.store(true, Ordering::Relaxed);
        sweep += 1;
        while shared.running() && started.elapsed() < OFFER_SWEEP {
            std::thread::sleep(Duration::from_millis(10));
        }
        pace = Pace::new(OFFER_RATE);
    }
}

/// A well-formed batch of 512 short unsigned requests (as many as a batch may hold),
/// near the byte cap: cheap to send, as costly as possible to keep.
fn junk_batch(salt: u64) -> Batch {
    let requests = (0..fba::wallet::MAX_BATCH_REQUESTS as u64)
        .map(|i| {
            let op = Op::Set { key: key(&format!("junk-{salt:08}-{i:016}")), amount: dollars(1) };
            Request::new(salt * 1_000 + i + 1, 1, op)
        })
        .collect();
    Batch::new(requests)
}

// ----- (g) CatchUpSpam ------------------------------------------------------------------------

/// Catch-up requests per second to each honest node.
const SPAM_RATE: f64 = 500.0;

/// (g) Asks every honest node for its whole ledger, again and again.
fn catchup_spam(shared: &Shared) {
    let mut pace = Pace::new(SPAM_RATE);
    shared.ready.store(true, Ordering::Relaxed);
    while shared.running() {
        shared.broadcast(&Message::CatchUp { from: 1 });
        pace.tick(1);
    }
}
