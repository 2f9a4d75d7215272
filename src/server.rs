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
//! **Durability.** Before any of its statements leaves the node, it is appended to the SCP
//! journal ([`crate::journal`]; ballot statements are synced first, nominations and
//! externalizations ride on the next sync), so a restarted node never contradicts itself.
//! An externalized batch is appended to the hash-chained ledger and synced
//! ([`crate::ledger`]) before it is applied and before any client hears of it; the database
//! file is the ledger's projection, rebuilt at start-up if needed ([`recovery`]). Slots a
//! node missed while down are fetched from its peers' ledgers ([`catchup`]).
//!
//! **Operability** ([`status`]). Every line goes through one [`Logger`] (UTC timestamp,
//! level, node id; warnings and errors on stderr; a closed stdout is survived). Each
//! decided slot gets a summary line; the node tracks whether it hears a quorum and which
//! peers went silent, answers `status` requests, refuses new requests with `unavailable`
//! while it hears no quorum, and keeps a [`Metrics`] registry, served over HTTP with
//! `--metrics`.

mod catchup;
mod membership;
mod persist;
mod pool;
mod recovery;
mod status;
mod trust;
mod values;

pub use recovery::{verify, Verified};

use crate::config::ServerConfig;
use crate::fsio::IoFailure;
use crate::journal::{Journal, JournalError};
use crate::ledger::{Ledger, LedgerError};
use crate::logging::Logger;
use crate::metrics::Metrics;
use crate::net::{self, Datagram, DecodeError, Endpoint, Faults, Incoming, Message, Outbox};
use crate::quorum::NodeId;
use crate::scp::{
    self, Application, Input, Node, Output, Pledges, Rejection, SlotIndex, Statement, TimerId, Value,
};
use crate::store::StoreError;
use crate::timer::{self, TimerCommand};
use crate::wallet::{self, Batch, Key, Op, Outcome, Reply, Request, Wallet, MAX_REQUEST_BYTES};
use crossbeam_channel::{select, Receiver, Sender};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a keyed node answers an unsigned request.
const UNSIGNED_REFUSED: &str = "this cluster accepts only signed requests: create a client key with \
     `fba_client keygen` and send with `fba_client --key FILE ...`";
/// Most requests a node holds pending (beyond that, clients are told to retry).
pub const MAX_POOL: usize = 10_000;
/// Interval of the protocol thread's housekeeping (re-flooding, catch-up).
const HOUSEKEEPING: Duration = Duration::from_millis(250);
/// A peer that sent nothing for this long is reported silent to the core.
const SILENT_AFTER: Duration = Duration::from_secs(3);
/// Longest a node lets its pool fill before proposing (see [`Server::propose_if_idle`]).
const BATCH_WAIT: Duration = Duration::from_millis(1);
/// Most queued datagrams handled before persisting and sending what they produced.
const MAX_BURST: usize = 256;
/// Most floods handled in one turn of the protocol loop, after everything urgent.
const BULK_BURST: usize = 4;
/// Floods queued for the protocol thread; beyond this the verifier waits, its own queue
/// fills and the reader drops floods (their nodes flood them again).
const BULK_QUEUE: usize = 256;
/// Most requests per flood datagram (fewer when they would not fit one).
const FLOOD_CHUNK: usize = 64;

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
    /// The checkpoint could not be read or written.
    Checkpoint(crate::checkpoint::CheckpointError),
    /// The SCP journal could not be read or written, or is damaged.
    Journal(JournalError),
    /// The boot epoch file (anti-replay of peer traffic) could not be read or written.
    Epoch(IoFailure),
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
    /// `--verify`: the checkpoint is not the wallet the ledger gives at its slot.
    CheckpointMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// Its slot.
        slot: u64,
    },
    /// The data directory is locked by another process (or the lock could not be taken).
    Lock(crate::lock::LockError),
    /// The `--metrics` address could not be served.
    Metrics(SocketAddr, std::io::Error),
    /// A reconfiguration in the ledger left this node out of the cluster.
    Removed {
        /// This node.
        id: NodeId,
        /// The cluster's membership now.
        membership: String,
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
            ServerError::Checkpoint(e) => write!(f, "{e}"),
            ServerError::Journal(e) => write!(f, "{e}"),
            ServerError::Epoch(e) => write!(f, "{e}"),
            ServerError::DatabaseWithoutLedger { path, entries } => write!(
                f,
                "database {} holds {entries} wallets but there is no ledger to check them against; \
                 move it away to start a fresh node",
                path.display()
            ),
            ServerError::Mismatch { db, ledger } => {
                write!(f, "database {} does not match ledger {}", db.display(), ledger.display())
            }
            ServerError::CheckpointMismatch { path, slot } => write!(
                f,
                "checkpoint {} differs from the ledger replayed to its slot {slot}",
                path.display()
            ),
            ServerError::Lock(e) => write!(f, "{e}"),
            ServerError::Metrics(addr, e) => write!(f, "cannot serve metrics on {addr}: {e}"),
            ServerError::Removed { id, membership } => write!(
                f,
                "node {id} was removed from the cluster by a reconfiguration (now {membership}); \
                 to join again, add it with `fba_client PORT reconfigure` and start it with an empty data directory"
            ),
        }
    }
}

impl std::error::Error for ServerError {}

impl From<StoreError> for ServerError {
    fn from(e: StoreError) -> Self {
        ServerError::Store(e)
    }
}

/// The application policy SCP needs: a value is the digest of a non-empty, well-formed
/// [`Batch`] this node holds ([`values`]: the shell fetches a missing batch before the core
/// sees a statement naming it); candidates combine by union, and the composite is stored
/// under its own digest. Validity depends only on the value, so the answers for recent
/// values are remembered: every statement about a slot names its values again.
///
/// A batch is valid only if every signed request in it verifies (and, in a keyed cluster,
/// every request is signed): a batch carrying one forged or altered request is refused as
/// a whole. Requests whose signatures the verifier thread already checked on arrival are
/// not checked again (their digests are remembered), so verification stays off the
/// protocol thread for everything that entered through this node or a flood.
#[derive(Default)]
pub struct WalletApp {
    known_valid: std::cell::RefCell<std::collections::HashSet<Value>>,
    /// Every request must be signed (the node runs with keys).
    require_signatures: bool,
    /// Digests of requests whose signatures were verified.
    verified: std::cell::RefCell<std::collections::HashSet<crate::hash::Digest>>,
    /// The batches values name ([`values`]).
    values: std::cell::RefCell<values::Values>,
}

/// Values whose validity [`WalletApp`] remembers (then it starts afresh).
const KNOWN_VALID: usize = 256;
/// Verified request digests remembered (then the set starts afresh).
const KNOWN_VERIFIED: usize = 65_536;

impl WalletApp {
    /// The policy of a node that does (`true`) or does not require signed requests.
    pub fn new(require_signatures: bool) -> WalletApp {
        WalletApp { require_signatures, ..WalletApp::default() }
    }

    /// Whether the request with this digest is known to verify.
    pub fn is_verified(&self, digest: &crate::hash::Digest) -> bool {
        self.verified.borrow().contains(digest)
    }

    /// Remembers requests whose signatures were verified elsewhere (the verifier thread).
    pub fn note_verified(&self, digests: impl IntoIterator<Item = crate::hash::Digest>) {
        let mut verified = self.verified.borrow_mut();
        for digest in digests {
            if verified.len() >= KNOWN_VERIFIED {
                verified.clear();
            }
            verified.insert(digest);
        }
    }

    fn batch_is_valid(&self, value: &Value) -> bool {
        let Some(batch) = self.values.borrow().get(value).cloned() else { return false };
        if batch.is_empty() {
            return false;
        }
        let verified = self.verified.borrow();
        batch.verify_signatures_skipping(self.require_signatures, |d| verified.contains(d)).is_ok()
    }
}

impl Application for WalletApp {
    fn validate(&self, _slot: SlotIndex, value: &Value) -> bool {
        if self.known_valid.borrow().contains(value) {
            return true;
        }
        let valid = self.batch_is_valid(value);
        if valid {
            let mut known = self.known_valid.borrow_mut();
            if known.len() >= KNOWN_VALID {
                known.clear();
            }
            known.insert(value.clone());
        }
        valid
    }

    fn combine_candidates(&self, slot: SlotIndex, candidates: &std::collections::BTreeSet<Value>) -> Value {
        let mut values = self.values.borrow_mut();
        let batches: Vec<Arc<Batch>> = candidates.iter().filter_map(|v| values.get(v).cloned()).collect();
        values.create(Batch::combine(batches.iter().map(|b| &**b)), slot)
    }
}

/// How a client spoke to us, hence how to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Text,
}

/// Runs a node until `shutdown` receives (or closes). Returns after a clean stop; an error
/// that stops the node is logged (at error level, on stderr) before it is returned.
pub fn run(config: ServerConfig, shutdown: Receiver<()>) -> Result<(), ServerError> {
    let (id, verbosity, format) = (config.id.0, config.verbosity, config.log_format);
    let result = run_node(config, &shutdown);
    if let Err(e) = &result {
        Logger::new(id, verbosity, format).error(format_args!("{e}"));
    }
    result
}

/// Takes the data directory, recovers, binds, and serves until `shutdown`.
fn run_node(config: ServerConfig, shutdown: &Receiver<()>) -> Result<(), ServerError> {
    let _lock =
        crate::lock::DataDirLock::acquire(&config.data_dir, config.port).map_err(ServerError::Lock)?;
    let mut recovered = recovery::recover(&config.data_dir, config.port, &config.operators)?;
    let (config, note) = membership::recovered_config(config, recovered.wallet.membership())?;
    recovered.notes.extend(note);
    let (net_tx, net_rx) = crossbeam_channel::bounded(4096);
    let (bulk_tx, bulk_rx) = crossbeam_channel::bounded(BULK_QUEUE);
    let auth = trust::authenticators(&config)?;
    let gate = net::FloodGate::default();
    let (checked_tx, checked_rx) = crossbeam_channel::bounded(BULK_QUEUE);
    let inboxes = net::Inboxes { urgent: net_tx, bulk: bulk_tx, gate: gate.clone(), checked: checked_tx };
    let mut endpoint = Endpoint::bind(config.bind, inboxes, Faults::from_env(), auth)
        .map_err(|e| ServerError::Bind(config.bind, e))?;
    let metrics = Arc::new(Metrics::new());
    let exporter = config.metrics.map(|addr| status::Exporter::start(addr, &metrics)).transpose()?;
    let (timer_tx, timer_rx) = crossbeam_channel::unbounded();
    let (fired_tx, fired_rx) = crossbeam_channel::unbounded();
    let timer_thread = timer::spawn(timer_rx, fired_tx).map_err(ServerError::Spawn)?;
    let own = recovered.own.clone();
    let shell = Shell {
        outbox: endpoint.outbox.clone(),
        timers: timer_tx,
        local: endpoint.local_addr(),
        metrics,
        gate,
        verifier: endpoint.jobs.clone(),
    };
    let mut server = Server::new(config, recovered, shell)?;
    server.announce(exporter.as_ref().map(|e| e.addr));
    let inbound = Inbound { net: net_rx, bulk: bulk_rx, checked: checked_rx, fired: fired_rx };
    let result = server.restore(own).and_then(|()| server.serve(&inbound, shutdown));
    drop(inbound); // the reader and the verifier stop sending once nobody listens
    endpoint.shutdown();
    drop(server); // closes the timer channel, which ends the timer thread
    let _ = timer_thread.join();
    drop(exporter); // stops the metrics thread
    result
}

/// What the protocol thread is given to act on the world with.
/// The protocol thread's inbound channels.
struct Inbound {
    /// Urgent datagrams: statements, ledger entries, catch-up, client requests.
    net: Receiver<Incoming>,
    /// Floods.
    bulk: Receiver<Incoming>,
    /// The verifier's verdicts on flooded requests.
    checked: Receiver<net::FloodCheck>,
    /// Fired timers.
    fired: Receiver<TimerId>,
}

struct Shell {
    /// The socket's sending half.
    outbox: Outbox,
    /// The timer thread's commands.
    timers: Sender<TimerCommand>,
    /// The bound address.
    local: SocketAddr,
    /// Closed for peers whose pool share is full (see [`net::FloodGate`]).
    gate: net::FloodGate,
    /// The verifier thread's queue.
    verifier: Sender<net::Job>,
    /// The metrics registry (shared with the `--metrics` thread).
    metrics: Arc<Metrics>,
}

struct Server {
    config: ServerConfig,
    node: Node<WalletApp>,
    wallet: Wallet,
    ledger: Ledger,
    journal: Journal,
    outbox: Outbox,
    timers: Sender<TimerCommand>,
    /// When the node started; the core's clock counts from it.
    epoch: Instant,
    /// The bound address.
    local: SocketAddr,
    /// Closed for peers whose pool share is full (see [`net::FloodGate`]).
    gate: net::FloodGate,
    /// The verifier thread's queue: flooded requests pooled unchecked go there.
    verifier: Sender<net::Job>,
    catchup: catchup::CatchUp,
    /// Test hook `FBA_DISK_FULL_AFTER=n`: ledger appends fail (as on a full disk) after n.
    disk_budget: Option<u64>,
    /// Lines recovery wants the operator to see.
    notes: Vec<String>,
    /// How start-up rebuilt the wallet (`None` for an empty ledger).
    rebuilt: Option<recovery::Rebuilt>,
    /// Peers by address: how development mode (no keys) tells who sent a peer message.
    peer_ids: HashMap<SocketAddr, NodeId>,
    /// The quorum sets peers announce, checked for intersection with ours.
    quorum_watch: trust::QuorumWatch,
    /// When each peer was last heard from (any authenticated message), to spot crashed
    /// ones; absent until it is first heard.
    last_heard: HashMap<NodeId, Instant>,
    /// When each peer last sent something useful, on the busy clock, to spot mute ones
    /// (see [`Server::update_silent_peers`]).
    last_useful: HashMap<NodeId, Duration>,
    /// Time spent busy (requests pending, a slot in progress); silence is measured on it.
    busy_clock: Duration,
    /// When the busy clock last moved, and whether anything useful arrived since.
    busy_tick: (Instant, bool),
    /// Peers reported silent to the core.
    silent: std::collections::BTreeSet<NodeId>,
    /// Pending requests, with their sources and quotas ([`pool`]).
    pool: pool::Pool,
    /// Where to send the reply of a pending request we received from a client, by
    /// [`Request::id`] (and, for a register, its nonce); only for requests in the pool.
    waiting: HashMap<pool::Id, (SocketAddr, Format, Option<u64>)>,
    /// The slot we last proposed a batch for.
    proposed: Option<SlotIndex>,
    /// Replies of applied slots, sent by [`Server::flush`].
    replies: Vec<(SocketAddr, Format, Reply)>,
    /// Our statements not yet in the journal; nothing below is sent before they are.
    unjournaled: Vec<Statement>,
    /// Batches our statements name, to journal before those statements.
    unjournaled_values: Vec<Arc<[u8]>>,
    /// Bytes of batches each peer may still fetch from us ([`Server::on_fetch`]).
    fetch_budget: crate::ratelimit::Buckets<NodeId>,
    /// Peer messages to send at the next flush: to one peer, or to every peer.
    outgoing: Vec<(Option<NodeId>, Vec<u8>)>,
    /// New requests to flood to the peers at the next flush.
    to_flood: Vec<Request>,
    /// The clients of the last decided batch, but for its registers: clients in a closed
    /// loop, whose next requests are on their way (see [`Server::batch_wait`]).
    returning: BTreeSet<u64>,
    /// Since when the pool has been filling for the next proposal.
    filling_since: Option<Instant>,
    /// The membership last adopted from a reconfiguration ([`membership`]).
    adopted: Option<crate::wallet::membership::Membership>,
    /// A reconfiguration left this node out: it stops once its replies are sent.
    removed: bool,
    /// The database file and the checkpoint ([`persist`]).
    persist: persist::Persister,
    /// Quorum, silent peers, request rate and slot timing ([`status`]).
    observer: status::Observer,
    log: Logger,
    metrics: Arc<Metrics>,
}

impl Server {
    fn new(
        config: ServerConfig,
        recovered: recovery::Recovered,
        shell: Shell,
    ) -> Result<Server, ServerError> {
        let mut scp_config = scp::Config::new(config.id, config.quorum_set.clone());
        scp_config.timeouts = config.timeouts.clone();
        let first_slot = recovered.ledger.len() + 1;
        let app = WalletApp::new(config.keys.is_some());
        let node = Node::new(scp_config, app, first_slot).map_err(ServerError::Scp)?;
        let peer_ids = config.peers.iter().map(|(id, addr)| (*addr, *id)).collect();
        let last_useful = config.peers.keys().map(|id| (*id, Duration::ZERO)).collect();
        let pool = pool::Pool::new(MAX_POOL, config.peers.len());
        let log = Logger::new(config.id.0, config.verbosity, config.log_format)
            .with_metrics(Arc::clone(&shell.metrics));
        let config_id_qset = (config.id, config.quorum_set.clone());
        // The membership a replayed ledger set is already in `config` (see
        // [`membership::recovered_config`]): adopted, not to be adopted again.
        let adopted = recovered.wallet.membership().cloned();
        let latest = (recovered.ledger.len(), recovered.ledger.last_hash());
        let persist =
            persist::Persister::start(recovered.store, config.port, latest, recovered.checkpointed)?;
        Ok(Server {
            config,
            node,
            wallet: recovered.wallet,
            ledger: recovered.ledger,
            journal: recovered.journal,
            outbox: shell.outbox,
            timers: shell.timers,
            epoch: Instant::now(),
            local: shell.local,
            gate: shell.gate,
            verifier: shell.verifier,
            catchup: catchup::CatchUp::default(),
            disk_budget: std::env::var("FBA_DISK_FULL_AFTER").ok().and_then(|v| v.parse().ok()),
            notes: recovered.notes,
            rebuilt: (latest.0 > 0).then_some(recovered.rebuilt),
            last_heard: HashMap::new(),
            last_useful,
            busy_clock: Duration::ZERO,
            busy_tick: (Instant::now(), false),
            silent: Default::default(),
            peer_ids,
            quorum_watch: trust::QuorumWatch::new(config_id_qset.0, config_id_qset.1),
            pool,
            waiting: HashMap::new(),
            proposed: None,
            replies: Vec::new(),
            unjournaled: Vec::new(),
            unjournaled_values: Vec::new(),
            fetch_budget: crate::ratelimit::Buckets::new(
                values::FETCH_BYTES_PER_SECOND,
                values::FETCH_BURST_BYTES,
            ),
            outgoing: Vec::new(),
            to_flood: Vec::new(),
            returning: BTreeSet::new(),
            filling_since: None,
            adopted,
            removed: false,
            persist,
            observer: status::Observer::new(),
            log,
            metrics: shell.metrics,
        })
    }

    /// The start-up lines: the trust mode first, then warnings, recovery notes, where the
    /// node listens (and serves metrics), and the database.
    fn announce(&self, metrics: Option<SocketAddr>) {
        match &self.config.keys {
            None => self.log.info(format_args!(
                "development mode: no --key-file, so peers are told apart by source address and only \
                 loopback addresses are used; see `fba_server keygen --help` for authenticated peers"
            )),
            Some(keys) => self.log.info(format_args!(
                "authenticated mode: every peer datagram carries an HMAC-SHA256 authenticator ({} peer keys)",
                keys.pairwise.len()
            )),
        }
        for warning in &self.config.warnings {
            self.log.warn(format_args!("{warning}"));
        }
        let q = &self.config.quorum_set;
        for note in &self.notes {
            self.log.warn(format_args!("recovery: {note}"));
        }
        if let Some(rebuilt) = &self.rebuilt {
            self.log.info(format_args!("{rebuilt}"));
        }
        self.log.info(format_args!(
            "listening on {local}; quorum set {} of {:?}{}; database {} ({} entries); ledger at slot {}",
            q.threshold,
            q.validators,
            if q.inner_sets.is_empty() { "" } else { " + inner sets" },
            self.persist.store().path().display(),
            self.wallet.len(),
            self.ledger.len(),
            local = self.local
        ));
        if let Some(addr) = metrics {
            self.log.info(format_args!("metrics on http://{addr}/metrics (health: http://{addr}/health)"));
        }
        self.print_entries(None);
    }

    /// Re-adopts our own statements from the journal (see [`Node::restore`]): those of
    /// undecided slots, to carry on without contradicting them, and our EXTERNALIZE of the
    /// decided slots still in the core's history window, to answer laggards about them.
    /// Then asks peers what we missed.
    fn restore(&mut self, own: Vec<Statement>) -> Result<(), ServerError> {
        let next = self.node.current_slot();
        let oldest = next.saturating_sub(self.node.config().history);
        for content in self.journal.take_contents() {
            if self.node.app().values.borrow_mut().restore(&content, next).is_none() {
                self.log.warn(format_args!("recovery: a journaled batch does not decode; dropped"));
            }
        }
        let mut answerable = 0;
        for st in own.into_iter().filter(|st| st.slot >= oldest) {
            let decided = st.slot < next;
            if !decided && !self.node.app().values.borrow().resolves(&st) {
                // Written by a version that put whole batches in statements (a batch is
                // journaled before the first statement naming it, so nothing else lacks
                // one): the core could never resolve it.
                self.log.warn(format_args!(
                    "recovery: journal statement for slot {} names a batch this node does not hold; not restored",
                    st.slot
                ));
                continue;
            }
            if !decided {
                self.log.protocol(format_args!(
                    "restore {} slot={} {}",
                    st.pledges.kind(),
                    st.slot,
                    st.pledges.fields()
                ));
            }
            match self.node.restore(self.now(), st) {
                Ok(outputs) => {
                    answerable += usize::from(decided);
                    self.execute(outputs)?;
                }
                Err(e) => self.log.warn(format_args!("recovery: journal statement not restored: {e}")),
            }
        }
        if answerable > 0 {
            let line = format_args!("restore EXTERNALIZE of {answerable} decided slots, for laggards");
            self.log.protocol(line);
        }
        self.flush()?;
        self.request_catchup_if_behind(true);
        self.update_health();
        Ok(())
    }

    /// The protocol thread's loop: waits for anything (`net`: urgent datagrams, `bulk`:
    /// floods, `fired`: timers), takes everything urgent that is waiting and at most
    /// [`BULK_BURST`] floods, then persists once and sends what that produced (group
    /// commit). A flood never waits in front of a statement.
    fn serve(&mut self, inbound: &Inbound, shutdown: &Receiver<()>) -> Result<(), ServerError> {
        let Inbound { net, bulk, checked, fired } = inbound;
        let housekeeping = crossbeam_channel::tick(HOUSEKEEPING);
        let written = self.persist.done().clone();
        loop {
            let batch_timer = match self.pool.is_empty() || self.proposed == Some(self.node.current_slot()) {
                true => crossbeam_channel::never(),
                false => self.batch_wait().map_or_else(crossbeam_channel::never, crossbeam_channel::after),
            };
            let db_timer = self.persist.due().map_or_else(crossbeam_channel::never, crossbeam_channel::after);
            let mut bulk_left = BULK_BURST;
            select! {
                recv(housekeeping) -> _ => self.housekeeping(),
                recv(batch_timer) -> _ => {}
                recv(db_timer) -> _ => self.persist.start_if_due(&self.wallet),
                recv(written) -> done => if let Ok(done) = done {
                    self.persist.on_done(done)?;
                    self.checkpoint_written();
                },
                recv(net) -> incoming => match incoming {
                    Ok(incoming) => self.on_datagram(incoming)?,
                    Err(_) => return Ok(()),
                },
                recv(bulk) -> incoming => if let Ok(incoming) = incoming {
                    bulk_left -= 1;
                    self.on_datagram(incoming)?;
                },
                recv(checked) -> check => if let Ok(check) = check { self.on_flood_checked(check); },
                recv(fired) -> timer => if let Ok(timer) = timer { self.on_timer(timer)?; },
                recv(shutdown) -> _ => {
                    self.persist.finish(&self.wallet)?;
                    let (path, slot) = (self.persist.store().path().display(), self.persist.written());
                    self.log.info(format_args!("shutting down; database complete at {path}; checkpoint of slot {slot}"));
                    return Ok(());
                }
            }
            // Group commit: take whatever else is already waiting (urgent first), then
            // persist once and send everything it produced.
            for incoming in net.try_iter().take(MAX_BURST) {
                self.on_datagram(incoming)?;
            }
            for timer in fired.try_iter() {
                self.on_timer(timer)?;
            }
            for check in checked.try_iter() {
                self.on_flood_checked(check);
            }
            if net.is_empty() {
                for incoming in bulk.try_iter().take(bulk_left) {
                    self.on_datagram(incoming)?;
                }
            }
            self.propose_if_idle()?;
            self.flush()?;
            if self.removed {
                return self.persist.finish(&self.wallet);
            }
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// A timer fired: counted (nomination and ballot timeouts), then fed to the core.
    fn on_timer(&mut self, timer: TimerId) -> Result<(), ServerError> {
        match timer {
            TimerId::Nomination(_) => self.metrics.nomination_timeouts.inc(),
            TimerId::Ballot(_) => self.metrics.ballot_timeouts.inc(),
            TimerId::Rebroadcast => {}
        }
        self.step(Input::Timer(timer)).map(drop)
    }

    // ----- Input ------------------------------------------------------------------------

    fn on_datagram(&mut self, incoming: Incoming) -> Result<(), ServerError> {
        let from = incoming.from;
        self.node.app().note_verified(incoming.verified);
        if incoming.forged > 0 {
            self.log.dropped(
                "forged request",
                from,
                format_args!("{} flooded requests with signatures that do not verify", incoming.forged),
            );
        }
        match incoming.datagram {
            Err(e) => self.on_malformed(from, &e),
            Ok(Datagram::Text(line)) => self.on_text(from, &line),
            Ok(Datagram::Peer { peer, message }) => self.on_peer_message(peer, message)?,
            Ok(Datagram::Json(message)) if message.is_peer_message() => {
                if let Some(peer) = self.unsealed_peer(from) {
                    self.on_peer_message(peer, message)?;
                }
            }
            Ok(Datagram::Json(Message::Request { request })) => self.on_request(from, request, Format::Json),
            Ok(Datagram::Json(Message::Status {})) => self.on_status(from),
            Ok(Datagram::Json(_)) => {
                self.log.dropped("unexpected", from, format_args!("unexpected reply message"));
            }
        }
        Ok(())
    }

    /// Who sent an unsealed peer message: in development mode, the configured peer at its
    /// source address; with keys, nobody (only sealed peer messages count).
    fn unsealed_peer(&self, from: SocketAddr) -> Option<NodeId> {
        if self.config.keys.is_some() {
            self.log.dropped(
                "authentication",
                from,
                format_args!("peer message without an authenticator (this node runs with --key-file)"),
            );
            return None;
        }
        let peer = self.peer_ids.get(&from).copied();
        if peer.is_none() {
            self.log.dropped(
                "non-peer",
                from,
                format_args!("peer message from {from}, which is not a configured peer"),
            );
        }
        peer
    }

    /// A message from an authenticated peer (by its authenticator, or in development mode
    /// by its address). Any message shows the peer is up; only a useful one shows it takes
    /// part (see [`Server::update_silent_peers`]): a statement in its own name about the
    /// slot in progress or one of the next few, or ledger entries we asked for that were
    /// applied. Catch-up requests, empty or unsolicited ledger answers and floods are not.
    fn on_peer_message(&mut self, peer: NodeId, message: Message) -> Result<(), ServerError> {
        if !self.config.peers.contains_key(&peer) {
            // A node of the key file that is not a member (a spare not added yet, or one
            // removed): authenticated, but it has no say.
            self.log.debug(format_args!("dropped a message from node {peer}, which is not a member"));
            return Ok(());
        }
        self.last_heard.insert(peer, Instant::now());
        match message {
            Message::Scp { statement } => {
                if self.is_current(peer, &statement) {
                    self.heard_useful(peer);
                }
                self.on_statement(peer, statement)?;
            }
            Message::Flood { requests } => self.on_flood(peer, requests),
            Message::Value { batch } => self.on_value(peer, batch)?,
            Message::Fetch { values } => self.on_fetch(peer, &values),
            Message::CatchUp { from } => self.serve_catchup(peer, from),
            Message::Ledger { last, entries } => {
                for helper in self.on_ledger_offer(peer, last, entries)? {
                    self.heard_useful(helper);
                }
            }
            Message::Request { .. }
            | Message::Reply { .. }
            | Message::Error { .. }
            | Message::Unavailable { .. }
            | Message::Status {}
            | Message::StatusReply { .. } => {
                debug_assert!(false, "not a peer message");
            }
        }
        Ok(())
    }

    /// Whether `statement`, from `peer`, is in its own name and about the slot in progress
    /// or one the core would accept ahead of it.
    fn is_current(&self, peer: NodeId, statement: &Statement) -> bool {
        let next = self.node.current_slot();
        let last = next.saturating_add(self.node.config().max_slots_ahead);
        statement.node == peer && (next..=last).contains(&statement.slot)
    }

    /// `peer` sent something useful: it takes part, and the node is busy.
    fn heard_useful(&mut self, peer: NodeId) {
        self.last_useful.insert(peer, self.busy_clock);
        self.busy_tick.1 = true;
    }

    /// Requests a peer flooded: pool those still to apply within the peer's quotas (in a
    /// keyed cluster only signed ones). Those over a quota are dropped; the node they
    /// entered through floods them again. A signed request not yet known to verify is
    /// pooled unchecked and sent to the verifier thread ([`net::Job::Flood`]): only what
    /// the pool takes is ever verified, and the verdict comes back to
    /// [`Server::on_flood_checked`].
    fn on_flood(&mut self, peer: NodeId, requests: Vec<Request>) {
        let keyed = self.config.keys.is_some();
        let (now, source) = (Instant::now(), pool::Source::Peer(peer));
        let mut refused = None;
        let mut to_check = Vec::new();
        for request in requests.into_iter().filter(|r| !keyed || r.auth.is_some()) {
            if !self.wallet.pool_admission(&request).is_new() {
                continue;
            }
            let checked = request.auth.is_none() || self.node.app().is_verified(&request.digest());
            let admitted = match checked {
                true => self.pool.admit(request.clone(), source, now),
                false => self.pool.admit_unchecked(request.clone(), source, now),
            };
            match admitted {
                Ok(pool::Admitted::Added | pool::Admitted::Contested) if !checked => to_check.push(request),
                Ok(_) => {}
                Err(full) => refused = Some(full),
            }
        }
        if let Some(full) = refused {
            self.log.debug(format_args!("flood from peer {peer} not all pooled: {full}"));
        }
        if to_check.is_empty() {
            return;
        }
        if let Err(e) = self.verifier.try_send(net::Job::Flood { peer, requests: to_check }) {
            let net::Job::Flood { requests, .. } = e.into_inner() else { return };
            for request in &requests {
                // The verifier is behind: the flood comes again.
                self.pool.checked(request, false, source, now);
            }
        }
    }

    /// The verifier's verdict on requests [`Server::on_flood`] pooled unchecked.
    fn on_flood_checked(&mut self, check: net::FloodCheck) {
        self.node.app().note_verified(check.verified.iter().map(|(_, digest)| *digest));
        let (now, source) = (Instant::now(), pool::Source::Peer(check.peer));
        for (request, _) in &check.verified {
            if self.wallet.pool_admission(request).is_new() {
                self.pool.checked(request, true, source, now);
            }
        }
        for request in check.forged.iter().chain(&check.unchecked) {
            self.pool.checked(request, false, source, now);
        }
        if !check.forged.is_empty() {
            let peer = check.peer;
            let addr = self.config.peers.get(&peer).copied().unwrap_or(self.config.bind);
            let n = check.forged.len();
            self.log.dropped(
                "forged request",
                addr,
                format_args!("{n} flooded requests with signatures that do not verify"),
            );
        }
    }

    fn on_malformed(&mut self, from: SocketAddr, e: &DecodeError) {
        let kind = match e {
            DecodeError::Auth(_) | DecodeError::NotPeerMessage => "authentication",
            DecodeError::OverBudget(_) => "catch-up rate",
            DecodeError::BadSignature(_) => "forged request",
            _ => "malformed",
        };
        self.log.dropped(kind, from, format_args!("{e}"));
        if !self.peer_ids.contains_key(&from) && matches!(e, DecodeError::BadJson(_)) {
            let error = Message::Error { node: self.config.id, error: e.to_string() };
            self.send(from, &net::encode(&error));
        }
    }

    fn on_statement(&mut self, peer: NodeId, statement: Statement) -> Result<(), ServerError> {
        if peer != statement.node {
            let addr = self.config.peers.get(&peer).copied().unwrap_or(self.config.bind);
            self.log.dropped(
                "impersonation",
                addr,
                format_args!("statement claims node {} but came from peer {peer}", statement.node),
            );
            return Ok(());
        }
        self.log.protocol(format_args!(
            "recv {} from {} slot={} {}",
            statement.pledges.kind(),
            statement.node,
            statement.slot,
            statement.pledges.fields()
        ));
        if let Some(warning) = self.quorum_watch.saw(peer, &statement) {
            self.log.warn(format_args!("{warning}"));
        }
        if matches!(statement.pledges, Pledges::Nominate { .. }) && self.is_current(peer, &statement) {
            self.observer.nominated(statement.slot);
        }
        // A peer speaking about a slot beyond our next one is ahead of us.
        self.catchup.saw(peer, statement.slot.saturating_sub(1));
        let next = self.node.current_slot();
        let open = next..=next.saturating_add(self.node.config().max_slots_ahead);
        let missing = self.node.app().values.borrow().missing(&statement);
        if !missing.is_empty() && open.contains(&statement.slot) {
            // It names batches we lack: the core sees it once they are here.
            let slot = statement.slot;
            let ask = self.node.app().values.borrow_mut().park(peer, statement, &missing, Instant::now());
            if !ask.is_empty() {
                self.metrics.batch_fetches.add(ask.len() as u64);
                let values: Vec<Value> = ask.iter().map(|d| Value::new(d.to_vec())).collect();
                self.log.protocol(format_args!(
                    "send FETCH to {peer} {values:?} (named by its statement for slot {slot})"
                ));
                self.outgoing.push((Some(peer), net::encode(&Message::Fetch { values })));
            }
            return Ok(());
        }
        self.deliver_statement(statement)
    }

    /// Hands a statement whose batches are all here to the core.
    fn deliver_statement(&mut self, statement: Statement) -> Result<(), ServerError> {
        self.node.app().values.borrow_mut().touch(&statement);
        if self.step(Input::Statement(statement))? == Some(Rejection::TooFarAhead) {
            self.request_catchup_if_behind(false);
        }
        Ok(())
    }

    /// A batch from a peer (announced, or fetched): kept within the peer's bounds, and
    /// the statements that waited for it go to the core.
    fn on_value(&mut self, peer: NodeId, batch: Batch) -> Result<(), ServerError> {
        let slot = self.node.current_slot();
        let digest = crate::hash::sha256(batch.encode());
        let value = Value::new(digest.to_vec());
        self.log.protocol(format_args!("recv VALUE from {peer} {value:?} ({} requests)", batch.len()));
        let ready = {
            let mut values = self.node.app().values.borrow_mut();
            if !values.offer(peer, batch, digest, slot) {
                return Ok(());
            }
            values.ready()
        };
        for (_, statement) in ready {
            self.deliver_statement(statement)?;
        }
        Ok(())
    }

    /// A peer asks for batches its statements' senders named: those held are sent,
    /// within the peer's byte budget (an honest peer asks only for what it missed).
    fn on_fetch(&mut self, peer: NodeId, wanted: &[Value]) {
        let values = self.node.app().values.borrow();
        let now = Instant::now();
        let wanted = &wanted[..wanted.len().min(values::MAX_FETCH)]; // the rest is ignored
        self.log.protocol(format_args!("recv FETCH from {peer} {wanted:?}"));
        for digest in wanted.iter().filter_map(values::digest_of) {
            let Some(bytes) = values.bytes(&digest) else { continue };
            if !self.fetch_budget.allow(peer, bytes.len() as f64, now) {
                self.log.debug(format_args!("fetch from peer {peer} over its budget; not answered"));
                return;
            }
            self.log.protocol(format_args!("send VALUE to {peer} {:?}", Value::new(digest.to_vec())));
            self.outgoing.push((Some(peer), net::encode_value(bytes)));
        }
    }

    fn on_text(&mut self, from: SocketAddr, line: &str) {
        if self.config.keys.is_some() {
            self.log.dropped("unsigned request", from, format_args!("plain-text request {line:?}"));
            self.send(from, format!("[{}] ERROR {UNSIGNED_REFUSED}", self.config.id).as_bytes());
            return;
        }
        match wallet::parse_text(line) {
            Ok(op) => {
                // Plain-text clients have no id: derive one from the address, and order
                // their requests by the time they arrive.
                let client = text_client_id(from);
                let seq = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
                self.on_request(from, Request::new(client, seq, op), Format::Text);
            }
            Err(e) => {
                self.log.dropped("bad request", from, format_args!("bad text request {line:?}: {e}"));
                self.send(from, format!("[{}] {}", self.config.id, e.reply_text()).as_bytes());
            }
        }
    }

    /// A client's request: answer from the reply cache, refuse it at once if the node
    /// hears no quorum (unless it is already pending), or pool and flood it.
    fn on_request(&mut self, from: SocketAddr, request: Request, format: Format) {
        let kind = match format {
            Format::Json => "json",
            Format::Text => "text",
        };
        self.metrics.requests_received.inc(kind);
        if self.config.keys.is_some() && request.auth.is_none() {
            self.log.dropped(
                "unsigned request",
                from,
                format_args!("unsigned request from client {}", request.client),
            );
            let error = Message::Error { node: self.config.id, error: UNSIGNED_REFUSED.into() };
            self.send(from, &net::encode(&error));
            return;
        }
        if let Some(bytes) = oversized(&request) {
            self.log.dropped("too large", from, format_args!("request of {bytes} bytes"));
            let error = format!(
                "request too large: {bytes} bytes encoded, at most {MAX_REQUEST_BYTES} (about 200 short operations in a many request)"
            );
            self.send(from, &net::encode(&Message::Error { node: self.config.id, error }));
            return;
        }
        let id = request.id();
        let admission = self.wallet.pool_admission(&request);
        if let Some(reply) = admission.reply() {
            self.reply(from, format, reply);
            return;
        }
        if let Op::Reconfigure(membership) = &request.op {
            if let Err(refusal) = self.check_reconfigure(membership) {
                let reason = refusal.to_string();
                self.log.warn(format_args!("reconfiguration from {from} refused: {reason}"));
                self.reply(from, format, &Reply::to(&request, Outcome::ConfigurationRefused { reason }));
                return;
            }
        }
        if !self.observer.quorum_available && !self.pool.contains(&id) {
            self.refuse_unavailable(from, format);
            return;
        }
        match self.pool.admit(request.clone(), pool::Source::Client, Instant::now()) {
            Ok(admitted) => {
                self.waiting.insert(id, (from, format, register_nonce(&request)));
                // New, or sent again by a client that got no reply: flood it (again). A
                // resend says the request may be stuck, its flood to the leader lost,
                // so it is repaired in a client round trip, not a re-flood period.
                if matches!(admitted, pool::Admitted::Added | pool::Admitted::Known) {
                    self.to_flood.push(request);
                }
            }
            Err(full) => self.refuse_busy(from, format, &request, full),
        }
    }

    /// Tells our own client that its request was not pooled because a quota is full.
    fn refuse_busy(&mut self, from: SocketAddr, format: Format, request: &Request, full: pool::Full) {
        let pending: Vec<String> =
            self.pool.per_source().map(|(source, n)| format!("{source} {n}")).collect();
        let reason = format_args!("client {}: {full} (pending: {})", request.client, pending.join(", "));
        self.log.dropped("busy", from, reason);
        let bytes = match format {
            Format::Json => net::encode(&Message::Error { node: self.config.id, error: full.to_string() }),
            Format::Text => format!("[{}] ERROR {full}", self.config.id).into_bytes(),
        };
        self.send(from, &bytes);
    }

    /// Periodic work: re-flood our clients' requests that may have been lost, forget reply
    /// addresses of requests no longer pending, catch up if behind, spot silent peers.
    fn housekeeping(&mut self) {
        let stale = self.pool.stale_for_reflood(Instant::now());
        for flood in net::encode_floods(&stale, self.outbox.peer_payload_limit(), FLOOD_CHUNK) {
            self.broadcast(&flood);
        }
        let pool = &self.pool;
        self.waiting.retain(|id, _| pool.contains(id));
        let next = self.node.current_slot();
        let oldest = next.saturating_sub(self.node.config().history + 1);
        self.node.app().values.borrow_mut().prune(oldest, next, Instant::now());
        self.probe_peers();
        self.request_catchup_if_behind(false);
        self.catchup_progress();
        self.update_silent_peers();
        self.update_health();
    }

    /// Tells the core which peers are silent, so they are not chosen as nomination leaders:
    ///
    /// * **down**: nothing at all came from it for [`SILENT_AFTER`] (a live peer answers
    ///   the one-second catch-up probe);
    /// * **mute**: nothing useful came from it (see [`Server::on_peer_message`]) for
    ///   [`SILENT_AFTER`] of *busy* time. The busy clock stands still while the cluster is
    ///   idle, so honest peers with nothing to say stay live, and a member that only
    ///   answers probes or asks for catch-up stays silent through idle spells too.
    fn update_silent_peers(&mut self) {
        self.advance_busy_clock();
        let clock = self.busy_clock;
        let now = Instant::now();
        let down = self.config.peers.keys().copied().filter(|peer| !self.hears(*peer, now));
        let mute = self.last_useful.iter().filter(|(_, at)| clock.saturating_sub(**at) >= SILENT_AFTER);
        let silent: BTreeSet<NodeId> = down.chain(mute.map(|(id, _)| *id)).collect();
        if silent != self.silent {
            self.log.debug(format_args!("silent peers: {silent:?} (not chosen as nomination leaders)"));
            self.node.set_unresponsive(silent.clone());
            self.silent = silent;
        }
    }

    /// Moves the busy clock on by the time since it last moved, if the node was busy
    /// meanwhile: requests pending, our proposal out for the slot in progress, or a useful
    /// message from any peer.
    fn advance_busy_clock(&mut self) {
        let now = Instant::now();
        let (since, heard) = std::mem::replace(&mut self.busy_tick, (now, false));
        let busy = heard || !self.pool.is_empty() || self.proposed == Some(self.node.current_slot());
        if busy {
            self.busy_clock += now.saturating_duration_since(since);
        }
    }

    /// Nominates a fair batch of pending requests ([`pool::Pool::next_batch`]) if this
    /// node has not yet proposed for the slot.
    ///
    /// Adaptive batching: a slot's value is its leaders' batches, so proposing the moment
    /// the first request of a burst arrives would decide that request alone while the rest
    /// of the burst waits a whole slot. Clients in a closed loop send their next request as
    /// soon as their reply arrives; were the next slot proposed before those requests come
    /// back, it would carry only the clients that missed the last slot, and the clients
    /// would split into two halves taking turns, each waiting two slots per request. So
    /// [`Server::batch_wait`] waits, up to [`BATCH_WAIT`], for the clients of the last
    /// slot to come back; a lone sequential client is back the moment its request arrives.
    fn propose_if_idle(&mut self) -> Result<(), ServerError> {
        let slot = self.node.current_slot();
        if self.pool.is_empty() || self.proposed == Some(slot) {
            return Ok(());
        }
        if self.batch_wait().is_some() {
            return Ok(());
        }
        let seed = self.slot_seed(slot);
        let batch = self.pool.next_batch(&seed, wallet::MAX_BATCH_REQUESTS, wallet::MAX_BATCH_BYTES);
        if batch.is_empty() {
            return Ok(()); // nothing fits a batch (cannot happen with the wallet's caps)
        }
        self.proposed = Some(slot);
        self.filling_since = None;
        self.observer.nominated(slot);
        let value = self.node.app().values.borrow_mut().create(batch, slot);
        self.step(Input::Propose(value)).map(drop)
    }

    /// What orders the proposal for `slot` ([`pool::Pool::next_batch`]): the previous
    /// ledger hash and the slot, the same on every node and unknown before the previous
    /// slot is decided.
    fn slot_seed(&self, slot: SlotIndex) -> Vec<u8> {
        let mut seed = self.ledger.last_hash().to_vec();
        seed.extend_from_slice(&slot.to_be_bytes());
        seed
    }

    /// How much longer to let the pool fill before proposing, if at all: until every
    /// client of the last decided batch (but for its registers, which open a session for a
    /// client that may never send) has a request pending, or [`BATCH_WAIT`] has passed
    /// since the pool started filling. A client that does not come back (a one-shot
    /// command, a client gone) costs the next slot that wait, once.
    fn batch_wait(&mut self) -> Option<Duration> {
        let pool = &self.pool;
        if self.returning.iter().all(|client| pool.has_client(*client)) {
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
                self.log.debug(format_args!("rejected: {rejection}"));
                Ok(Some(rejection))
            }
        }
    }

    /// Carries out the core's outputs. Our statements are queued for [`Server::flush`],
    /// which journals them before anything is sent (syncing if one binds us, see
    /// [`crate::journal`]); an answer to a laggard repeats a journaled EXTERNALIZE.
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
                    if let Pledges::Externalize { commit, .. } = &st.pledges {
                        self.observer.externalized(st.slot, commit.counter);
                    }
                    let (announce, journal) = {
                        let mut values = self.node.app().values.borrow_mut();
                        (values.announce(&st), values.unjournaled(&st))
                    };
                    // The batch of a value we created goes out before the first statement
                    // naming it, and into the journal with it.
                    for (value, bytes, requests) in announce {
                        self.log.protocol(format_args!("send VALUE {value:?} ({requests} requests)"));
                        self.outgoing.push((None, net::encode_value(&bytes)));
                    }
                    self.unjournaled_values.extend(journal);
                    self.unjournaled.push(st.clone());
                    self.outgoing.push((None, net::encode(&Message::Scp { statement: st })));
                }
                Output::Send { to, statement } => {
                    self.log.protocol(format_args!(
                        "send {} to {to} slot={} {}",
                        statement.pledges.kind(),
                        statement.slot,
                        statement.pledges.fields()
                    ));
                    self.outgoing.push((Some(to), net::encode(&Message::Scp { statement })));
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

    /// Journals our new statements (one write, and one sync if any PREPARE or CONFIRM is
    /// among them), then sends everything queued: statements, floods of new requests, and
    /// replies.
    fn flush(&mut self) -> Result<(), ServerError> {
        self.gate.set_closed(self.pool.full_peers());
        if !self.unjournaled.is_empty() || !self.unjournaled_values.is_empty() {
            let started = Instant::now();
            if self
                .journal
                .record(&self.unjournaled_values, &self.unjournaled)
                .map_err(ServerError::Journal)?
            {
                self.metrics.fsync_seconds.observe_duration(started.elapsed());
            }
            self.unjournaled.clear();
            self.unjournaled_values.clear();
        }
        for (to, bytes) in std::mem::take(&mut self.outgoing) {
            match to {
                Some(peer) => self.send_peer(peer, &bytes),
                None => self.broadcast(&bytes),
            }
        }
        let to_flood = std::mem::take(&mut self.to_flood);
        for flood in net::encode_floods(&to_flood, self.outbox.peer_payload_limit(), FLOOD_CHUNK) {
            self.broadcast(&flood);
        }
        for (addr, format, reply) in std::mem::take(&mut self.replies) {
            self.reply(addr, format, &reply);
        }
        Ok(())
    }

    /// Rewrites the journal once it is large, keeping our EXTERNALIZE of the decided slots
    /// still answered to laggards and our statements of the undecided ones.
    fn compact_journal(&mut self) -> Result<(), ServerError> {
        if !self.journal.is_large() {
            return Ok(());
        }
        let next = self.node.current_slot();
        let open: Vec<Statement> = (next..=next + self.node.config().max_slots_ahead)
            .flat_map(|slot| self.node.own_statements(slot))
            .collect();
        let keep: Vec<Statement> = self.node.decided_statements().chain(&open).cloned().collect();
        // The batches the undecided slots' statements name; a decided slot's batch is in
        // the ledger (laggards that lack it catch up from ledgers).
        let mut values = self.node.app().values.borrow_mut();
        let mut contents: Vec<Arc<[u8]>> = Vec::new();
        for digest in open.iter().flat_map(|st| st.pledges.values()).filter_map(values::digest_of) {
            if let Some(bytes) = values.bytes(&digest).filter(|b| !contents.contains(b)) {
                contents.push(bytes.clone());
            }
        }
        if self.journal.compact_if_large(&keep, &contents).map_err(ServerError::Journal)? {
            values.journal_rewritten(&open);
        }
        Ok(())
    }

    /// An externalized slot: log it durably, apply it, write the database, reply.
    fn apply(&mut self, slot: SlotIndex, value: &Value) -> Result<(), ServerError> {
        let batch = self.node.app().values.borrow().get(value).cloned().unwrap_or_else(|| {
            // Only values our application validated, hence holds, can be externalized.
            panic!("externalized slot {slot} with value {value:?}, whose batch is not here")
        });
        let oldest = slot.saturating_sub(self.node.config().history);
        self.node.app().values.borrow_mut().prune(oldest, slot + 1, Instant::now());
        self.log.protocol(format_args!("EXTERNALIZE slot={slot} value={value:?} ({} requests)", batch.len()));
        self.returning = returning_clients(&batch);
        self.slot_decided(slot, &batch);
        let changed = self.apply_decided(slot, &batch)?;
        if !changed.is_empty() {
            self.save_db(&changed)?;
        }
        self.compact_journal()
    }

    /// The summary line and metrics of a slot decided through SCP: its requests, the
    /// ballot counter of our EXTERNALIZE, and the time from the first nomination seen.
    fn slot_decided(&mut self, slot: SlotIndex, batch: &Batch) {
        let (elapsed, counter) = self.observer.decided(slot);
        let counter = counter.or_else(|| self.externalize_counter(slot)).unwrap_or(0);
        self.metrics.record_slot(counter, elapsed);
        self.observer.applied.record(Instant::now(), batch.len() as u64);
        self.log.slot_summary(slot, batch.len(), counter, elapsed);
    }

    /// The commit counter of our EXTERNALIZE of `slot`, from the core's history.
    fn externalize_counter(&self, slot: SlotIndex) -> Option<u32> {
        self.node.decided_statements().find(|st| st.slot == slot).and_then(|st| match &st.pledges {
            Pledges::Externalize { commit, .. } => Some(commit.counter),
            _ => None,
        })
    }

    /// Appends a decided slot to the ledger (durably) and applies it to the wallet; the
    /// replies for clients waiting here are queued, and sent by [`Server::flush`] once the
    /// database file is written too. Returns the wallets whose balances may have changed.
    fn apply_decided(&mut self, slot: SlotIndex, batch: &Batch) -> Result<Vec<Key>, ServerError> {
        if slot <= self.ledger.len() {
            return Ok(Vec::new()); // already applied (learned by catch-up first)
        }
        self.append_ledger(slot, batch)?;
        let replies = self.wallet.apply_batch(batch);
        let mut changed = Vec::new();
        for (request, reply) in batch.requests().iter().zip(&replies) {
            let ok = reply.outcome.is_ok();
            self.metrics.requests_applied.inc(if ok { "ok" } else { "refused" });
            if ok {
                changed.extend(written_keys(&request.op).into_iter().cloned());
            }
            self.log.protocol(format_args!(
                "apply slot={slot} client={} seq={} {} -> {}",
                request.client,
                request.seq,
                describe_op(&request.op),
                reply
            ));
        }
        for (request, reply) in batch.requests().iter().zip(replies) {
            // Every register of a client has the id (client, 0, 0): only the one with the
            // nonce the client is waiting with answers it (an older one, replayed in a
            // catch-up, opened a session the client may have used up since).
            let id = request.id();
            if self.waiting.get(&id).is_some_and(|w| w.2 == register_nonce(request)) {
                if let Some((addr, format, _)) = self.waiting.remove(&id) {
                    self.replies.push((addr, format, reply));
                }
            }
        }
        let wallet = &self.wallet;
        self.pool.retain_new(|request| wallet.pool_admission(request).is_new());
        self.metrics.ledger_slot.set_count(slot);
        self.adopt_membership(slot)?;
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
        let started = Instant::now();
        self.ledger.append(slot, batch).map_err(ServerError::Ledger)?;
        self.metrics.fsync_seconds.observe_duration(started.elapsed());
        Ok(())
    }

    /// Reports a checkpoint the writer thread finished.
    fn checkpoint_written(&self) {
        let slot = self.persist.written();
        self.metrics.checkpoint_slot.set_count(slot);
        if let Some((database, took)) = self.persist.last() {
            let with = if database { " with the database file" } else { "" };
            self.log.debug(format_args!("checkpoint of slot {slot} written{with} in {took:?}"));
        }
    }

    /// Prints the database after a slot (or the `changed` wallets when it is large) and
    /// hands the slot to [`persist`]: a small database file is written at once (the
    /// assignment's case: the file always shows the last slot), a large one and the
    /// checkpoint by the writer thread at a bounded pace, so that a slot's cost does not
    /// grow with the data. Both are projections of the synced ledger, which replies wait
    /// for.
    fn save_db(&mut self, changed: &[Key]) -> Result<(), ServerError> {
        self.persist.after_slot(&self.wallet, self.ledger.len(), self.ledger.last_hash())?;
        self.print_entries(Some(changed));
        Ok(())
    }

    /// The protocol trace's database line: every entry (`db 2 entries: {foo: $30, bar:
    /// $10}`) while there are at most `--print-entries-max`, else those in `changed` (at
    /// start-up, none).
    fn print_entries(&self, changed: Option<&[Key]>) {
        if !self.log.enabled(crate::logging::Level::Protocol) {
            return;
        }
        let (len, max) = (self.wallet.len(), self.config.print_entries_max);
        if len <= max {
            let entries: Vec<String> = self.wallet.entries().map(|(k, v)| format!("{k}: {v}")).collect();
            self.log.protocol(format_args!("db {len} entries: {{{}}}", entries.join(", ")));
            return;
        }
        let Some(changed) = changed else {
            let why = format_args!("db {len} entries (more than --print-entries-max {max}: not shown)");
            return self.log.protocol(why);
        };
        let keys: BTreeSet<&Key> = changed.iter().collect();
        let shown: Vec<String> = keys
            .iter()
            .take(max)
            .filter_map(|k| self.wallet.get(k.as_str()).map(|v| format!("{k}: {v}")))
            .collect();
        let more = if keys.len() > max { format!(", and {} more", keys.len() - max) } else { String::new() };
        let n = keys.len();
        self.log.protocol(format_args!("db {len} entries, {n} changed: {{{}{more}}}", shown.join(", ")));
    }

    // ----- Output ---------------------------------------------------------------------------

    fn reply(&self, to: SocketAddr, format: Format, reply: &Reply) {
        self.metrics.replies_sent.inc();
        let bytes = match format {
            Format::Json => net::encode(&Message::Reply { node: self.config.id, reply: reply.clone() }),
            Format::Text => format!("[{}] {reply}", self.config.id).into_bytes(),
        };
        self.send(to, &bytes);
    }

    /// Sends a peer message to every peer.
    fn broadcast(&self, bytes: &[u8]) {
        for peer in self.config.peers.keys() {
            self.send_peer(*peer, bytes);
        }
    }

    /// Sends a peer message to one peer, sealed for it when the node has keys.
    fn send_peer(&self, peer: NodeId, bytes: &[u8]) {
        let Some(addr) = self.config.peers.get(&peer).copied() else { return };
        if let Err(e) = self.outbox.send_peer(peer, addr, bytes) {
            self.log.warn(format_args!("send of {} bytes to peer {peer} at {addr} failed: {e}", bytes.len()));
        }
    }

    fn send(&self, to: SocketAddr, bytes: &[u8]) {
        if let Err(e) = self.outbox.send(to, bytes) {
            self.log.warn(format_args!("send of {} bytes to {to} failed: {e}", bytes.len()));
        }
    }
}

/// The nonce of a register (`None` for any other request).
fn register_nonce(request: &Request) -> Option<u64> {
    match request.op {
        Op::Register { nonce } => Some(nonce),
        _ => None,
    }
}

/// The clients of `batch` that are expected to send again soon: all but those whose
/// request in it is a register.
fn returning_clients(batch: &Batch) -> BTreeSet<u64> {
    batch.requests().iter().filter(|r| !matches!(r.op, Op::Register { .. })).map(|r| r.client).collect()
}

/// The encoded size of a request over [`MAX_REQUEST_BYTES`], which no batch could
/// carry fairly; `None` if it fits. Only a `many` request can be that large (a
/// reconfiguration is bounded by [`wallet::membership::MAX_MEMBERS`]).
fn oversized(request: &Request) -> Option<usize> {
    if !matches!(request.op, Op::Many { .. }) {
        return None;
    }
    let bytes = serde_json::to_vec(request).map_or(usize::MAX, |b| b.len());
    (bytes > MAX_REQUEST_BYTES).then_some(bytes)
}

fn describe_op(op: &Op) -> String {
    op.to_string()
}

/// The wallets an operation writes (none for a read or a register).
fn written_keys(op: &Op) -> Vec<&Key> {
    match op {
        Op::Set { key, .. } | Op::Deposit { key, .. } | Op::Withdraw { key, .. } => vec![key],
        Op::Transfer { from, to, .. } => vec![from, to],
        Op::Many { ops } => ops.as_slice().iter().flat_map(written_keys).collect(),
        Op::Get { .. } | Op::Register { .. } | Op::Reconfigure(_) => Vec::new(),
    }
}

/// A stable client id for a plain-text client: a hash of its address, top bit set so it
/// cannot collide with the ids the JSON client draws (which keep it clear).
fn text_client_id(addr: SocketAddr) -> u64 {
    let digest = crate::hash::sha256(addr.to_string().as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) | (1 << 63)
}
