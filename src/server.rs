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
//!
//! **Durability.** Before any of its ballot statements leaves the node, it is appended to
//! the SCP journal and synced ([`crate::journal`]), so a restarted node never contradicts
//! itself. An externalized batch is appended to the hash-chained ledger and synced
//! ([`crate::ledger`]) before it is applied and before any client hears of it; the database
//! file is the ledger's projection, rebuilt at start-up if needed ([`recovery`]). Slots a
//! node missed while down are fetched from its peers' ledgers ([`catchup`]).

mod catchup;
mod recovery;

pub use recovery::{verify, Verified};

use crate::config::{ServerConfig, Verbosity};
use crate::fsio::IoFailure;
use crate::journal::{Journal, JournalError};
use crate::ledger::{Ledger, LedgerError};
use crate::net::{self, Datagram, DecodeError, Endpoint, Faults, Incoming, Message, Outbox};
use crate::quorum::NodeId;
use crate::scp::{
    self, Application, Input, Node, Output, Pledges, Rejection, SlotIndex, Statement, TimerId, Value,
};
use crate::store::{Store, StoreError};
use crate::timer::{self, TimerCommand};
use crate::wallet::{self, Batch, Op, Outcome, Reply, Request, Wallet};
use crossbeam_channel::{select, Receiver, Sender};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most requests a node holds pending (beyond that, clients are told to retry).
pub const MAX_POOL: usize = 10_000;
/// Interval of the protocol thread's housekeeping (re-flooding, catch-up).
const HOUSEKEEPING: Duration = Duration::from_millis(250);
/// A peer that sent nothing for this long is reported silent to the core.
const SILENT_AFTER: Duration = Duration::from_secs(3);
/// Longest a node lets its pool fill before proposing (see [`Server::propose_if_idle`]).
const BATCH_WAIT: Duration = Duration::from_micros(500);
/// Most queued datagrams handled before persisting and sending what they produced.
const MAX_BURST: usize = 256;
/// Requests per flood datagram.
const FLOOD_CHUNK: usize = 64;
/// A pending request is flooded again after this long (its first flood may be lost).
const REFLOOD_AFTER: Duration = Duration::from_secs(1);

/// Why a node could not start or had to stop.
#[derive(Debug)]
pub enum ServerError {
    /// The database file could not be read, is corrupt, or could not be written.
    Store(StoreError),
    /// The UDP socket could not be bound.
    Bind(SocketAddr, std::io::Error),
    /// A thread could not be started.
    Spawn(std::io::Error),
    /// The SCP configuration was refused.
    Scp(scp::ConfigError),
    /// The ledger could not be read or written, or is damaged.
    Ledger(LedgerError),
    /// The SCP journal could not be read or written, or is damaged.
    Journal(JournalError),
    /// The database file has entries but there is no ledger to check them against.
    DatabaseWithoutLedger {
        /// The database file.
        path: PathBuf,
        /// How many wallets it holds.
        entries: usize,
    },
    /// `--verify`: the database is not the projection of the ledger.
    Mismatch {
        /// The database file.
        db: PathBuf,
        /// The ledger.
        ledger: PathBuf,
    },
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Store(e) => write!(f, "{e}"),
            ServerError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            ServerError::Spawn(e) => write!(f, "cannot start a thread: {e}"),
            ServerError::Scp(e) => write!(f, "consensus configuration: {e}"),
            ServerError::Ledger(e) => write!(f, "{e}"),
            ServerError::Journal(e) => write!(f, "{e}"),
            ServerError::DatabaseWithoutLedger { path, entries } => write!(
                f,
                "database {} holds {entries} wallets but there is no ledger to check them against; \
                 move it away to start a fresh node",
                path.display()
            ),
            ServerError::Mismatch { db, ledger } => {
                write!(f, "database {} does not match ledger {}", db.display(), ledger.display())
            }
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
/// candidates combine by union. Validity depends only on the value, so the answers for
/// recent values are remembered: every statement about a slot carries its values again.
#[derive(Default)]
pub struct WalletApp {
    known_valid: std::cell::RefCell<std::collections::HashSet<Value>>,
}

/// Values whose validity [`WalletApp`] remembers (then it starts afresh).
const KNOWN_VALID: usize = 256;

impl Application for WalletApp {
    fn validate(&self, _slot: SlotIndex, value: &Value) -> bool {
        if self.known_valid.borrow().contains(value) {
            return true;
        }
        let valid = Batch::decode(value.as_bytes()).is_ok_and(|b| !b.is_empty());
        if valid {
            let mut known = self.known_valid.borrow_mut();
            if known.len() >= KNOWN_VALID {
                known.clear();
            }
            known.insert(value.clone());
        }
        valid
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
    let recovered = recovery::recover(&config.data_dir, config.port)?;
    let (net_tx, net_rx) = crossbeam_channel::bounded(4096);
    let mut endpoint = Endpoint::bind(config.bind, net_tx, Faults::from_env())
        .map_err(|e| ServerError::Bind(config.bind, e))?;
    let (timer_tx, timer_rx) = crossbeam_channel::unbounded();
    let (fired_tx, fired_rx) = crossbeam_channel::unbounded();
    let timer_thread = timer::spawn(timer_rx, fired_tx).map_err(ServerError::Spawn)?;
    let own = recovered.own.clone();
    let mut server = Server::new(config, recovered, endpoint.outbox.clone(), timer_tx)?;
    server.announce(endpoint.local_addr());
    let result = server.restore(own).and_then(|()| server.serve(&net_rx, &fired_rx, &shutdown));
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
    ledger: Ledger,
    journal: Journal,
    outbox: Outbox,
    timers: Sender<TimerCommand>,
    epoch: Instant,
    catchup: catchup::CatchUp,
    /// Test hook `FBA_DISK_FULL_AFTER=n`: ledger appends fail (as on a full disk) after n.
    disk_budget: Option<u64>,
    /// Lines recovery wants the operator to see.
    notes: Vec<String>,
    /// Peers by address, to authenticate statements.
    peer_ids: HashMap<SocketAddr, NodeId>,
    /// When each peer was last heard from (any datagram), to spot silent ones.
    last_heard: HashMap<NodeId, Instant>,
    /// Peers reported silent to the core.
    silent: std::collections::BTreeSet<NodeId>,
    /// Pending requests by (client, seq), with when they were last flooded.
    pool: BTreeMap<(u64, u64), (Request, Instant)>,
    /// Where to send the reply of a pending request we received from a client.
    waiting: HashMap<(u64, u64), (SocketAddr, Format)>,
    /// The slot we last proposed a batch for.
    proposed: Option<SlotIndex>,
    /// Replies of applied slots, sent by [`Server::flush`].
    replies: Vec<(SocketAddr, Format, Reply)>,
    /// Our ballot statements not yet in the journal; nothing below is sent before they are.
    unjournaled: Vec<Statement>,
    /// Datagrams to send at the next flush: to one address, or to every peer.
    outgoing: Vec<(Option<SocketAddr>, Vec<u8>)>,
    /// New requests to flood to the peers at the next flush.
    to_flood: Vec<Request>,
    /// Requests in the last decided batch (the recent concurrency).
    last_batch: usize,
    /// Since when the pool has been filling for the next proposal.
    filling_since: Option<Instant>,
    log: Log,
}

impl Server {
    fn new(
        config: ServerConfig,
        recovered: recovery::Recovered,
        outbox: Outbox,
        timers: Sender<TimerCommand>,
    ) -> Result<Server, ServerError> {
        let mut scp_config = scp::Config::new(config.id, config.quorum_set.clone());
        scp_config.timeouts = config.timeouts.clone();
        let first_slot = recovered.ledger.len() + 1;
        let node = Node::new(scp_config, WalletApp::default(), first_slot).map_err(ServerError::Scp)?;
        let peer_ids = config.peers.iter().map(|(id, addr)| (*addr, *id)).collect();
        let last_heard = config.peers.keys().map(|id| (*id, Instant::now())).collect();
        let log = Log::new(config.id, config.verbosity);
        Ok(Server {
            config,
            node,
            wallet: recovered.wallet,
            store: recovered.store,
            ledger: recovered.ledger,
            journal: recovered.journal,
            outbox,
            timers,
            epoch: Instant::now(),
            catchup: catchup::CatchUp::default(),
            disk_budget: std::env::var("FBA_DISK_FULL_AFTER").ok().and_then(|v| v.parse().ok()),
            notes: recovered.notes,
            last_heard,
            silent: Default::default(),
            peer_ids,
            pool: BTreeMap::new(),
            waiting: HashMap::new(),
            proposed: None,
            replies: Vec::new(),
            unjournaled: Vec::new(),
            outgoing: Vec::new(),
            to_flood: Vec::new(),
            last_batch: 0,
            filling_since: None,
            log,
        })
    }

    fn announce(&self, local: SocketAddr) {
        let q = &self.config.quorum_set;
        for note in &self.notes {
            self.log.always(format_args!("recovery: {note}"));
        }
        self.log.always(format_args!(
            "listening on {local}; quorum set {} of {:?}{}; database {} ({} entries); ledger at slot {}",
            q.threshold,
            q.validators,
            if q.inner_sets.is_empty() { "" } else { " + inner sets" },
            self.store.path().display(),
            self.wallet.len(),
            self.ledger.len()
        ));
        self.print_entries();
    }

    /// Re-adopts our own statements from the journal, then asks peers what we missed.
    fn restore(&mut self, own: Vec<Statement>) -> Result<(), ServerError> {
        for st in own {
            self.log.protocol(format_args!(
                "restore {} slot={} {}",
                st.pledges.kind(),
                st.slot,
                st.pledges.fields()
            ));
            match self.node.restore(self.now(), st) {
                Ok(outputs) => self.execute(outputs)?,
                Err(e) => self.log.always(format_args!("recovery: journal statement not restored: {e}")),
            }
        }
        self.flush()?;
        self.request_catchup_if_behind(true);
        Ok(())
    }

    fn serve(
        &mut self,
        net: &Receiver<Incoming>,
        fired: &Receiver<TimerId>,
        shutdown: &Receiver<()>,
    ) -> Result<(), ServerError> {
        let housekeeping = crossbeam_channel::tick(HOUSEKEEPING);
        loop {
            let batch_timer = match self.pool.is_empty() || self.proposed == Some(self.node.current_slot()) {
                true => crossbeam_channel::never(),
                false => self.batch_wait().map_or_else(crossbeam_channel::never, crossbeam_channel::after),
            };
            select! {
                recv(housekeeping) -> _ => self.housekeeping(),
                recv(batch_timer) -> _ => {}
                recv(net) -> incoming => match incoming {
                    Ok(incoming) => self.on_datagram(incoming)?,
                    Err(_) => return Ok(()),
                },
                recv(fired) -> timer => if let Ok(timer) = timer { self.step(Input::Timer(timer))?; },
                recv(shutdown) -> _ => {
                    self.log.always(format_args!("shutting down; database complete at {}", self.store.path().display()));
                    return Ok(());
                }
            }
            // Group commit: take whatever else is already waiting, then persist once and
            // send everything it produced.
            for incoming in net.try_iter().take(MAX_BURST) {
                self.on_datagram(incoming)?;
            }
            for timer in fired.try_iter() {
                self.step(Input::Timer(timer))?;
            }
            self.propose_if_idle()?;
            self.flush()?;
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    // ----- Input ------------------------------------------------------------------------

    fn on_datagram(&mut self, incoming: Incoming) -> Result<(), ServerError> {
        let from = incoming.from;
        if let Some(peer) = self.peer_ids.get(&from) {
            self.last_heard.insert(*peer, Instant::now());
        }
        match incoming.datagram {
            Err(e) => self.on_malformed(from, &e),
            Ok(Datagram::Text(line)) => self.on_text(from, &line),
            Ok(Datagram::Json(message)) => match message {
                Message::Scp { statement } => self.on_statement(from, statement)?,
                Message::Flood { requests } => self.on_flood(from, requests),
                Message::CatchUp { from: slot } => {
                    if let Some(peer) = self.peer(from, "catch-up request") {
                        self.serve_catchup(peer, slot);
                    }
                }
                Message::Ledger { last, entries } => {
                    if let Some(peer) = self.peer(from, "ledger entries") {
                        self.on_ledger_offer(peer, last, entries)?;
                    }
                }
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
            Some(&peer) => {
                self.log.protocol(format_args!(
                    "recv {} from {} slot={} {}",
                    statement.pledges.kind(),
                    statement.node,
                    statement.slot,
                    statement.pledges.fields()
                ));
                // A peer speaking about a slot beyond our next one is ahead of us.
                self.catchup.saw(peer, statement.slot.saturating_sub(1));
                if self.step(Input::Statement(statement))? == Some(Rejection::TooFarAhead) {
                    self.request_catchup_if_behind(false);
                }
            }
        }
        Ok(())
    }

    /// The id of the configured peer at `from`, or None (logged) for anyone else.
    fn peer(&self, from: SocketAddr, what: &str) -> Option<NodeId> {
        let peer = self.peer_ids.get(&from).copied();
        if peer.is_none() {
            self.log.dropped(
                "non-peer",
                from,
                format_args!("{what} from {from}, which is not a configured peer"),
            );
        }
        peer
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
            self.to_flood.push(request);
        }
    }

    /// Adds a request to the pool unless it is known or already applied. True if added.
    fn admit(&mut self, request: Request) -> bool {
        let id = (request.client, request.seq);
        let applied = self.wallet.last_seq(request.client).is_some_and(|last| request.seq <= last);
        if applied || self.pool.contains_key(&id) || self.pool.len() >= MAX_POOL {
            return false;
        }
        self.pool.insert(id, (request, Instant::now()));
        true
    }

    /// Periodic work: re-flood requests that may have been lost, and catch up if behind.
    fn housekeeping(&mut self) {
        let stale: Vec<Request> = self
            .pool
            .values_mut()
            .filter(|(_, flooded)| flooded.elapsed() >= REFLOOD_AFTER)
            .take(wallet::MAX_BATCH_REQUESTS)
            .map(|(request, flooded)| {
                *flooded = Instant::now();
                request.clone()
            })
            .collect();
        for chunk in stale.chunks(FLOOD_CHUNK) {
            self.broadcast(&net::encode(&Message::Flood { requests: chunk.to_vec() }));
        }
        self.probe_peers();
        self.request_catchup_if_behind(false);
        self.update_silent_peers();
    }

    /// Tells the core which peers have sent nothing for [`SILENT_AFTER`] (they still get
    /// the one-second catch-up probe, so a live peer always answers something).
    fn update_silent_peers(&mut self) {
        let silent: std::collections::BTreeSet<NodeId> = self
            .last_heard
            .iter()
            .filter(|(_, at)| at.elapsed() >= SILENT_AFTER)
            .map(|(id, _)| *id)
            .collect();
        if silent != self.silent {
            self.log.protocol(format_args!("silent peers: {silent:?} (not chosen as nomination leaders)"));
            self.node.set_unresponsive(silent.clone());
            self.silent = silent;
        }
    }

    /// Nominates the pending requests if this node has not yet proposed for the slot.
    ///
    /// Adaptive batching: a slot's value is its leader's batch, so proposing the moment the
    /// first request of a new burst arrives would decide a batch of one while the rest of
    /// the burst waits a whole slot. When the last slot decided several requests (clients
    /// are concurrent), wait up to [`BATCH_WAIT`] for the pool to grow as large; after a
    /// slot of one request (a lone sequential client), propose at once.
    fn propose_if_idle(&mut self) -> Result<(), ServerError> {
        let slot = self.node.current_slot();
        if self.pool.is_empty() || self.proposed == Some(slot) {
            return Ok(());
        }
        if self.batch_wait().is_some() {
            return Ok(());
        }
        self.proposed = Some(slot);
        self.filling_since = None;
        // The pool is ordered by (client, seq), as a batch is: its head is the next batch.
        let head = self.pool.values().take(wallet::MAX_BATCH_REQUESTS).map(|(r, _)| r.clone()).collect();
        let batch = Batch::new(head);
        self.step(Input::Propose(Value::new(batch.encode()))).map(drop)
    }

    /// How much longer to let the pool fill before proposing, if at all.
    fn batch_wait(&mut self) -> Option<Duration> {
        if self.pool.len() >= self.last_batch.max(1) {
            return None;
        }
        let since = *self.filling_since.get_or_insert_with(Instant::now);
        BATCH_WAIT.checked_sub(since.elapsed()).filter(|left| !left.is_zero())
    }

    // ----- The core and its outputs -------------------------------------------------------

    /// Feeds the core and carries out its outputs; returns the rejection, if any.
    fn step(&mut self, input: Input) -> Result<Option<Rejection>, ServerError> {
        match self.node.handle(self.now(), input) {
            Ok(outputs) => self.execute(outputs).map(|()| None),
            Err(rejection) => {
                self.log.verbose(format_args!("rejected: {rejection}"));
                Ok(Some(rejection))
            }
        }
    }

    /// Carries out the core's outputs. Statements are queued for [`Server::flush`], which
    /// journals our ballot statements before anything is sent. An EXTERNALIZE needs no
    /// journal entry: the slot is in the (synced) ledger before the flush sends it.
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
                    if matches!(st.pledges, Pledges::Prepare { .. } | Pledges::Confirm { .. }) {
                        self.unjournaled.push(st.clone());
                    }
                    self.outgoing.push((None, net::encode(&Message::Scp { statement: st })));
                }
                Output::Send { to, statement } => {
                    self.log.protocol(format_args!(
                        "send {} to {to} slot={} {}",
                        statement.pledges.kind(),
                        statement.slot,
                        statement.pledges.fields()
                    ));
                    if let Some(addr) = self.config.peers.get(&to).copied() {
                        self.outgoing.push((Some(addr), net::encode(&Message::Scp { statement })));
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

    /// Makes our new statements durable (one sync for all of them), then sends everything
    /// queued: statements, floods of new requests, and replies.
    fn flush(&mut self) -> Result<(), ServerError> {
        if !self.unjournaled.is_empty() {
            self.journal.record(&self.unjournaled).map_err(ServerError::Journal)?;
            self.unjournaled.clear();
        }
        for (to, bytes) in std::mem::take(&mut self.outgoing) {
            match to {
                Some(addr) => self.send(addr, &bytes),
                None => self.broadcast(&bytes),
            }
        }
        for chunk in std::mem::take(&mut self.to_flood).chunks(FLOOD_CHUNK) {
            self.broadcast(&net::encode(&Message::Flood { requests: chunk.to_vec() }));
        }
        for (addr, format, reply) in std::mem::take(&mut self.replies) {
            self.reply(addr, format, &reply);
        }
        Ok(())
    }

    /// Rewrites the journal once it is large, keeping the statements of undecided slots.
    fn compact_journal(&mut self) -> Result<(), ServerError> {
        if !self.journal.is_large() {
            return Ok(());
        }
        let next = self.node.current_slot();
        let keep: Vec<Statement> = (next..=next + self.node.config().max_slots_ahead)
            .flat_map(|slot| self.node.own_statements(slot))
            .filter(|st| st.pledges.is_ballot())
            .collect();
        self.journal.compact_if_large(&keep).map_err(ServerError::Journal)
    }

    /// An externalized slot: log it durably, apply it, write the database, reply.
    fn apply(&mut self, slot: SlotIndex, value: &Value) -> Result<(), ServerError> {
        let batch = Batch::decode(value.as_bytes()).unwrap_or_else(|e| {
            // Only values our application validated can be externalized.
            panic!("externalized an invalid batch in slot {slot}: {e}")
        });
        self.log.protocol(format_args!("EXTERNALIZE slot={slot} value={value:?} ({} requests)", batch.len()));
        self.last_batch = batch.len();
        if self.apply_decided(slot, &batch)? {
            self.save_db()?;
        }
        self.compact_journal()
    }

    /// Appends a decided slot to the ledger (durably) and applies it to the wallet; the
    /// replies for clients waiting here are queued, and sent by [`Server::flush`] once the
    /// database file is written too. Returns whether the balances changed.
    fn apply_decided(&mut self, slot: SlotIndex, batch: &Batch) -> Result<bool, ServerError> {
        if slot <= self.ledger.len() {
            return Ok(false); // already applied (learned by catch-up first)
        }
        self.append_ledger(slot, batch)?;
        let replies = self.wallet.apply_batch(batch);
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
        for reply in replies {
            if let Some((addr, format)) = self.waiting.remove(&(reply.client, reply.seq)) {
                self.replies.push((addr, format, reply));
            }
        }
        let wallet = &self.wallet;
        self.pool.retain(|(client, seq), _| wallet.last_seq(*client).is_none_or(|last| *seq > last));
        Ok(changed)
    }

    fn append_ledger(&mut self, slot: SlotIndex, batch: &Batch) -> Result<(), ServerError> {
        if let Some(budget) = self.disk_budget.as_mut() {
            if *budget == 0 {
                let source = std::io::Error::from_raw_os_error(28); // ENOSPC, injected by the test hook
                let path = self.ledger.path().to_path_buf();
                return Err(ServerError::Ledger(LedgerError::Io(IoFailure {
                    operation: "append to",
                    path,
                    source,
                })));
            }
            *budget -= 1;
        }
        self.ledger.append(slot, batch).map(drop).map_err(ServerError::Ledger)
    }

    /// Writes the database file (temp file, fsync, rename; the directory sync is left out
    /// because the file is the projection of the already synced ledger) and prints it.
    fn save_db(&mut self) -> Result<(), ServerError> {
        self.store.save_projection(self.wallet.entries())?;
        self.print_entries();
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
            self.log.always(format_args!("send of {} bytes to {to} failed: {e}", bytes.len()));
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
