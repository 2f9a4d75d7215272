//! The wallet node: the I/O shell around the SCP core.
//!
//! Three threads, joined by crossbeam channels:
//!
//! * the **UDP reader** ([`crate::net::Endpoint`]) decodes datagrams;
//! * the **timer thread** ([`crate::timer`]) fires the core's timers;
//! * the **protocol thread** (this module's [`run`]) owns the SCP [`Node`], the
//!   [`Wallet`] and the [`Store`], and is the only one that changes them.
//!
//! A client request reaching any node is answered from the reply cache if it was already
//! applied; otherwise it joins the node's bounded pool of pending requests and is flooded
//! to the peers, so every node can nominate it. A slot's value is a [`Batch`] of pending
//! requests; candidate batches are combined by union. When a slot externalizes, every node
//! applies its batch in order, writes the database file atomically, prints the entries, and
//! the node holding the client's address replies.

use crate::config::{ServerConfig, Verbosity};
use crate::net::{self, Datagram, DecodeError, Endpoint, Faults, Incoming, Message, Outbox};
use crate::quorum::NodeId;
use crate::scp::{self, Application, Input, Node, Output, SlotIndex, Statement, TimerId, Value};
use crate::store::{Store, StoreError};
use crate::timer::{self, TimerCommand};
use crate::wallet::{self, Batch, Op, Outcome, Reply, Request, Wallet, WalletError};
use crossbeam_channel::{select, Receiver, Sender};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most requests a node holds pending (beyond that, clients are told to retry).
pub const MAX_POOL: usize = 10_000;

/// Why a node could not start or had to stop.
#[derive(Debug)]
pub enum ServerError {
    /// The database file could not be read, is corrupt, or could not be written.
    Store(StoreError),
    /// The database file holds something the wallet refuses (e.g. a key twice).
    Wallet(WalletError),
    /// The UDP socket could not be bound.
    Bind(SocketAddr, std::io::Error),
    /// A thread could not be started.
    Spawn(std::io::Error),
    /// The SCP configuration was refused.
    Scp(scp::ConfigError),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Store(e) => write!(f, "{e}"),
            ServerError::Wallet(e) => write!(f, "database content refused: {e}"),
            ServerError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            ServerError::Spawn(e) => write!(f, "cannot start a thread: {e}"),
            ServerError::Scp(e) => write!(f, "consensus configuration: {e}"),
        }
    }
}

impl std::error::Error for ServerError {}

impl From<StoreError> for ServerError {
    fn from(e: StoreError) -> Self {
        ServerError::Store(e)
    }
}

/// The application policy SCP needs: a value is a non-empty, well-formed [`Batch`];
/// candidates combine by union.
pub struct WalletApp;

impl Application for WalletApp {
    fn validate(&self, _slot: SlotIndex, value: &Value) -> bool {
        Batch::decode(value.as_bytes()).is_ok_and(|b| !b.is_empty())
    }

    fn combine_candidates(&self, _slot: SlotIndex, candidates: &std::collections::BTreeSet<Value>) -> Value {
        let batches: Vec<Batch> =
            candidates.iter().filter_map(|v| Batch::decode(v.as_bytes()).ok()).collect();
        Value::new(Batch::combine(&batches).encode())
    }
}

/// How a client spoke to us, hence how to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Text,
}

/// Runs a node until `shutdown` receives (or closes). Returns after a clean stop.
pub fn run(config: ServerConfig, shutdown: Receiver<()>) -> Result<(), ServerError> {
    let store = Store::new(&config.data_dir, config.port);
    let wallet = Wallet::from_entries(store.load()?).map_err(ServerError::Wallet)?;
    let (net_tx, net_rx) = crossbeam_channel::bounded(4096);
    let mut endpoint = Endpoint::bind(config.bind, net_tx, Faults::from_env())
        .map_err(|e| ServerError::Bind(config.bind, e))?;
    let (timer_tx, timer_rx) = crossbeam_channel::unbounded();
    let (fired_tx, fired_rx) = crossbeam_channel::unbounded();
    let timer_thread = timer::spawn(timer_rx, fired_tx).map_err(ServerError::Spawn)?;
    let mut server = Server::new(config, wallet, store, endpoint.outbox.clone(), timer_tx)?;
    server.announce(endpoint.local_addr());
    let result = server.serve(&net_rx, &fired_rx, &shutdown);
    endpoint.shutdown();
    drop(server); // closes the timer channel, which ends the timer thread
    let _ = timer_thread.join();
    result
}

struct Server {
    config: ServerConfig,
    node: Node<WalletApp>,
    wallet: Wallet,
    store: Store,
    outbox: Outbox,
    timers: Sender<TimerCommand>,
    epoch: Instant,
    /// Peers by address, to authenticate statements.
    peer_ids: HashMap<SocketAddr, NodeId>,
    /// Pending requests by (client, seq).
    pool: BTreeMap<(u64, u64), Request>,
    /// Where to send the reply of a pending request we received from a client.
    waiting: HashMap<(u64, u64), (SocketAddr, Format)>,
    /// The slot we last proposed a batch for.
    proposed: Option<SlotIndex>,
    log: Log,
}

impl Server {
    fn new(
        config: ServerConfig,
        wallet: Wallet,
        store: Store,
        outbox: Outbox,
        timers: Sender<TimerCommand>,
    ) -> Result<Server, ServerError> {
        let mut scp_config = scp::Config::new(config.id, config.quorum_set.clone());
        scp_config.timeouts = config.timeouts.clone();
        let node = Node::new(scp_config, WalletApp, 1).map_err(ServerError::Scp)?;
        let peer_ids = config.peers.iter().map(|(id, addr)| (*addr, *id)).collect();
        let log = Log::new(config.id, config.verbosity);
        Ok(Server {
            config,
            node,
            wallet,
            store,
            outbox,
            timers,
            epoch: Instant::now(),
            peer_ids,
            pool: BTreeMap::new(),
            waiting: HashMap::new(),
            proposed: None,
            log,
        })
    }

    fn announce(&self, local: SocketAddr) {
        let q = &self.config.quorum_set;
        self.log.always(format_args!(
            "listening on {local}; quorum set {} of {:?}{}; database {} ({} entries)",
            q.threshold,
            q.validators,
            if q.inner_sets.is_empty() { "" } else { " + inner sets" },
            self.store.path().display(),
            self.wallet.len()
        ));
        self.print_entries();
    }

    fn serve(
        &mut self,
        net: &Receiver<Incoming>,
        fired: &Receiver<TimerId>,
        shutdown: &Receiver<()>,
    ) -> Result<(), ServerError> {
        loop {
            select! {
                recv(net) -> incoming => match incoming {
                    Ok(incoming) => self.on_datagram(incoming)?,
                    Err(_) => return Ok(()),
                },
                recv(fired) -> timer => if let Ok(timer) = timer { self.step(Input::Timer(timer))? },
                recv(shutdown) -> _ => {
                    self.log.always(format_args!("shutting down; database complete at {}", self.store.path().display()));
                    return Ok(());
                }
            }
            self.propose_if_idle()?;
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    // ----- Input ------------------------------------------------------------------------

    fn on_datagram(&mut self, incoming: Incoming) -> Result<(), ServerError> {
        let from = incoming.from;
        match incoming.datagram {
            Err(e) => self.on_malformed(from, &e),
            Ok(Datagram::Text(line)) => self.on_text(from, &line),
            Ok(Datagram::Json(message)) => match message {
                Message::Scp { statement } => self.on_statement(from, statement)?,
                Message::Flood { requests } => self.on_flood(from, requests),
                Message::Request { request } => self.on_request(from, request, Format::Json),
                Message::Reply { .. } | Message::Error { .. } => {
                    self.log.dropped("unexpected", from, format_args!("unexpected reply message"));
                }
            },
        }
        Ok(())
    }

    fn on_malformed(&mut self, from: SocketAddr, e: &DecodeError) {
        self.log.dropped("malformed", from, format_args!("{e}"));
        if !self.peer_ids.contains_key(&from) && matches!(e, DecodeError::BadJson(_)) {
            let error = Message::Error { node: self.config.id, error: e.to_string() };
            self.send(from, &net::encode(&error));
        }
    }

    fn on_statement(&mut self, from: SocketAddr, statement: Statement) -> Result<(), ServerError> {
        match self.peer_ids.get(&from) {
            None => self.log.dropped(
                "non-peer",
                from,
                format_args!("statement from {from}, which is not a configured peer"),
            ),
            Some(&peer) if peer != statement.node => self.log.dropped(
                "impersonation",
                from,
                format_args!("statement claims node {} but came from peer {peer}", statement.node),
            ),
            Some(_) => {
                self.log.protocol(format_args!(
                    "recv {} from {} slot={} {}",
                    statement.pledges.kind(),
                    statement.node,
                    statement.slot,
                    statement.pledges.fields()
                ));
                self.step(Input::Statement(statement))?;
            }
        }
        Ok(())
    }

    fn on_flood(&mut self, from: SocketAddr, requests: Vec<Request>) {
        if !self.peer_ids.contains_key(&from) {
            self.log.dropped(
                "non-peer",
                from,
                format_args!("flood from {from}, which is not a configured peer"),
            );
            return;
        }
        for request in requests {
            self.admit(request);
        }
    }

    fn on_text(&mut self, from: SocketAddr, line: &str) {
        match wallet::parse_text(line) {
            Ok(op) => {
                // Plain-text clients have no id: derive one from the address, and order
                // their requests by the time they arrive.
                let client = text_client_id(from);
                let seq = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
                self.on_request(from, Request { client, seq, op }, Format::Text);
            }
            Err(e) => {
                self.log.dropped("bad request", from, format_args!("bad text request {line:?}: {e}"));
                self.send(from, format!("[{}] {}", self.config.id, e.reply_text()).as_bytes());
            }
        }
    }

    /// A client's request: answer from the reply cache, or pool and flood it.
    fn on_request(&mut self, from: SocketAddr, request: Request, format: Format) {
        let id = (request.client, request.seq);
        if let Some(reply) =
            self.wallet.cached_reply(request.client).filter(|r| r.seq == request.seq).cloned()
        {
            self.reply(from, format, &reply);
            return;
        }
        if let Some(last_seq) = self.wallet.last_seq(request.client).filter(|last| request.seq < *last) {
            let reply =
                Reply { client: request.client, seq: request.seq, outcome: Outcome::Duplicate { last_seq } };
            self.reply(from, format, &reply);
            return;
        }
        if !self.pool.contains_key(&id) && self.pool.len() >= MAX_POOL {
            let error =
                Message::Error { node: self.config.id, error: "node busy: too many pending requests".into() };
            self.send(from, &net::encode(&error));
            return;
        }
        self.waiting.insert(id, (from, format));
        if self.admit(request.clone()) {
            let bytes = net::encode(&Message::Flood { requests: vec![request] });
            self.broadcast(&bytes);
        }
    }

    /// Adds a request to the pool unless it is known or already applied. True if added.
    fn admit(&mut self, request: Request) -> bool {
        let id = (request.client, request.seq);
        let applied = self.wallet.last_seq(request.client).is_some_and(|last| request.seq <= last);
        if applied || self.pool.contains_key(&id) || self.pool.len() >= MAX_POOL {
            return false;
        }
        self.pool.insert(id, request);
        true
    }

    /// Nominates the pending requests if this node has not yet proposed for the slot.
    fn propose_if_idle(&mut self) -> Result<(), ServerError> {
        let slot = self.node.current_slot();
        if self.pool.is_empty() || self.proposed == Some(slot) {
            return Ok(());
        }
        self.proposed = Some(slot);
        let batch = Batch::new(self.pool.values().cloned().collect());
        self.step(Input::Propose(Value::new(batch.encode())))
    }

    // ----- The core and its outputs -------------------------------------------------------

    fn step(&mut self, input: Input) -> Result<(), ServerError> {
        match self.node.handle(self.now(), input) {
            Ok(outputs) => self.execute(outputs),
            Err(rejection) => {
                self.log.verbose(format_args!("rejected: {rejection}"));
                Ok(())
            }
        }
    }

    fn execute(&mut self, outputs: Vec<Output>) -> Result<(), ServerError> {
        for output in outputs {
            match output {
                Output::Broadcast(st) => {
                    self.log.protocol(format_args!(
                        "send {} slot={} {}",
                        st.pledges.kind(),
                        st.slot,
                        st.pledges.fields()
                    ));
                    self.broadcast(&net::encode(&Message::Scp { statement: st }));
                }
                Output::Send { to, statement } => {
                    self.log.protocol(format_args!(
                        "send {} to {to} slot={} {}",
                        statement.pledges.kind(),
                        statement.slot,
                        statement.pledges.fields()
                    ));
                    if let Some(addr) = self.config.peers.get(&to).copied() {
                        self.send(addr, &net::encode(&Message::Scp { statement }));
                    }
                }
                Output::SetTimer { timer, at } => {
                    let _ = self.timers.send(TimerCommand::Set(timer, self.epoch + at));
                }
                Output::CancelTimer(timer) => {
                    let _ = self.timers.send(TimerCommand::Cancel(timer));
                }
                Output::Externalized { slot, value } => self.apply(slot, &value)?,
            }
        }
        Ok(())
    }

    /// Applies an externalized batch, persists, prints, and replies to waiting clients.
    fn apply(&mut self, slot: SlotIndex, value: &Value) -> Result<(), ServerError> {
        let batch = Batch::decode(value.as_bytes()).unwrap_or_else(|e| {
            // Only values our application validated can be externalized.
            panic!("externalized an invalid batch in slot {slot}: {e}")
        });
        self.log.protocol(format_args!("EXTERNALIZE slot={slot} value={value:?} ({} requests)", batch.len()));
        let replies = self.wallet.apply_batch(&batch);
        let mut changed = false;
        for (request, reply) in batch.requests().iter().zip(&replies) {
            changed |= reply.outcome.is_ok() && !matches!(request.op, Op::Get { .. });
            self.log.protocol(format_args!(
                "apply slot={slot} client={} seq={} {} -> {}",
                request.client,
                request.seq,
                describe_op(&request.op),
                reply
            ));
        }
        if changed {
            self.store.save(self.wallet.entries())?;
            self.print_entries();
        }
        for reply in &replies {
            if let Some((addr, format)) = self.waiting.remove(&(reply.client, reply.seq)) {
                self.reply(addr, format, reply);
            }
        }
        for request in batch.requests() {
            self.pool.remove(&(request.client, request.seq));
        }
        let wallet = &self.wallet;
        self.pool.retain(|(client, seq), _| wallet.last_seq(*client).is_none_or(|last| *seq > last));
        Ok(())
    }

    fn print_entries(&self) {
        let entries: Vec<String> = self.wallet.entries().map(|(k, v)| format!("{k}: {v}")).collect();
        self.log.always(format_args!("db {} entries: {{{}}}", entries.len(), entries.join(", ")));
    }

    // ----- Output ---------------------------------------------------------------------------

    fn reply(&self, to: SocketAddr, format: Format, reply: &Reply) {
        let bytes = match format {
            Format::Json => net::encode(&Message::Reply { node: self.config.id, reply: reply.clone() }),
            Format::Text => format!("[{}] {reply}", self.config.id).into_bytes(),
        };
        self.send(to, &bytes);
    }

    fn broadcast(&self, bytes: &[u8]) {
        for addr in self.config.peers.values() {
            self.send(*addr, bytes);
        }
    }

    fn send(&self, to: SocketAddr, bytes: &[u8]) {
        if let Err(e) = self.outbox.send(to, bytes) {
            self.log.verbose(format_args!("send to {to} failed: {e}"));
        }
    }
}

fn describe_op(op: &Op) -> String {
    match op {
        Op::Set { key, amount } => format!("set {key} {amount}"),
        Op::Deposit { key, amount } => format!("deposit {key} {amount}"),
        Op::Withdraw { key, amount } => format!("withdraw {key} {amount}"),
        Op::Get { key } => format!("get {key}"),
    }
}

/// A stable client id for a plain-text client: a hash of its address, top bit set so it
/// cannot collide with the ids the JSON client draws (which keep it clear).
fn text_client_id(addr: SocketAddr) -> u64 {
    let digest = crate::hash::sha256(addr.to_string().as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) | (1 << 63)
}

/// Console output with the node id prefix, filtered by verbosity. Dropped-input lines are
/// rate limited per kind, so a flood of one kind of garbage can neither turn into a flood
/// of log lines nor hide a different problem.
struct Log {
    id: NodeId,
    verbosity: Verbosity,
    drops: std::cell::RefCell<HashMap<&'static str, (Instant, u32)>>,
}

/// Most dropped-datagram lines printed per kind per second.
const DROP_LINES_PER_SECOND: u32 = 5;

impl Log {
    fn new(id: NodeId, verbosity: Verbosity) -> Log {
        Log { id, verbosity, drops: Default::default() }
    }

    fn always(&self, line: fmt::Arguments) {
        println!("[{}] {line}", self.id);
    }

    fn protocol(&self, line: fmt::Arguments) {
        if self.verbosity >= Verbosity::Normal {
            self.always(line);
        }
    }

    fn verbose(&self, line: fmt::Arguments) {
        if self.verbosity >= Verbosity::Verbose {
            self.always(line);
        }
    }

    /// Logs a dropped datagram of kind `kind`, at most a few lines per kind per second.
    fn dropped(&self, kind: &'static str, from: SocketAddr, reason: fmt::Arguments) {
        let mut drops = self.drops.borrow_mut();
        let (since, count) = drops.entry(kind).or_insert((Instant::now(), 0));
        if since.elapsed() >= Duration::from_secs(1) {
            if *count > DROP_LINES_PER_SECOND {
                let hidden = *count - DROP_LINES_PER_SECOND;
                self.always(format_args!("({hidden} more dropped datagrams ({kind}) not shown)"));
            }
            (*since, *count) = (Instant::now(), 0);
        }
        *count += 1;
        if *count <= DROP_LINES_PER_SECOND {
            self.always(format_args!("dropped datagram from {from}: {reason}"));
        }
    }
}
