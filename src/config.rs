//! Command-line configuration of `fba_server`, and its validation.
//!
//! With only a port the server is one of the assignment's four nodes: peers 3000–3003 on
//! 127.0.0.1, quorum set 3-of-{3000, 3001, 3002, 3003}. Flags describe other deployments:
//! peers on other hosts, a different threshold, or a nested quorum set read from a JSON
//! file such as `{"threshold": 2, "inner_sets": [{"threshold": 2, "validators": [1, 2, 3]}, …]}`.
//! Every problem is reported as one [`ConfigError`] naming it; nothing starts half-configured.
//!
//! **Trust.** With `--key-file` (written by `fba_server keygen`, see [`crate::keys`]) every
//! peer datagram is authenticated, and the node may bind any address. Without one the node
//! is in *development mode*: peers are recognised by source address only, so it binds only
//! loopback addresses and talks only to loopback peers.
//!
//! With a key file, `--peer` may name only some of the file's nodes: the others are
//! *spares*, keyed but not members until a reconfiguration adds them (a note says so).
//!
//! **Identity.** A node's id is explicit (`--id`, `ID@HOST:PORT`, the key file) or derived
//! from its address by [`derive_node_id`]; a peer entry at our own address is us, a peer
//! with our id elsewhere, and two peers with one id or one address, are refused.
//!
//! **Safety.** A quorum configuration whose quorums need not intersect (flat: 2·t ≤ n) is
//! refused, naming two disjoint quorums, unless `--unsafe-quorum` is given.

use crate::hash::sha256;
use crate::keys::KeyFile;
use crate::logging::LogFormat;
use crate::quorum::intersection::{self, Intersection};
use crate::quorum::{NodeId, QuorumSet, QuorumSetError};
use crate::scp::Timeouts;
use clap::Parser;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The ports of the assignment's four nodes.
pub const ASSIGNMENT_PORTS: [u16; 4] = [3000, 3001, 3002, 3003];

/// `fba_server`: one node of the replicated wallet store.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "fba_server",
    version,
    about = "One node of the fba replicated wallet store (SCP over UDP)",
    after_help = "Subcommands (each with its own --help):\n  \
                  fba_server keygen --out DIR [ID@]HOST:PORT...   write one key file per node\n  \
                  fba_server check-quorum FILE...                 check a network's quorum intersection"
)]
pub struct ServerArgs {
    /// UDP port to listen on; also names the database files (with --key-file it must be the
    /// port of this node's address in the file). May come from --config instead.
    #[arg(required_unless_present = "config")]
    pub port: Option<u16>,
    /// Address to bind (default: 127.0.0.1, or with --key-file the IP of this node's address
    /// in it). Without --key-file only loopback addresses are allowed.
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// This node's id (default: the key file's, else derived from the bind address and port:
    /// on loopback the port itself).
    #[arg(long)]
    pub id: Option<u64>,
    /// A peer as `host:port` (id derived from the address: the port on loopback) or
    /// `id@host:port`; repeat for each peer. Default: the key file's other nodes, else the
    /// assignment's nodes 3000-3003 on the bind address.
    #[arg(long = "peer", value_name = "[ID@]HOST:PORT")]
    pub peers: Vec<String>,
    /// Key file written by `fba_server keygen`: authenticate every peer datagram. Without it
    /// the node runs in development mode (loopback only).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Quorum threshold over this node and its peers (default: 3 of the 4 assignment nodes,
    /// otherwise the smallest threshold above two thirds).
    #[arg(long)]
    pub threshold: Option<u32>,
    /// JSON file with a (possibly nested) quorum set; overrides --threshold.
    #[arg(long, value_name = "FILE")]
    pub quorum_file: Option<PathBuf>,
    /// Start even if two quorums of the configuration can be disjoint (the network can fork).
    #[arg(long)]
    pub unsafe_quorum: bool,
    /// Directory of the database file `assignment3_<port>.db`.
    #[arg(long, default_value = ".")]
    pub data_dir: PathBuf,
    /// Duration of nomination round 1 in milliseconds (grows by as much per round).
    #[arg(long, default_value_t = 1000)]
    pub nomination_timeout_ms: u64,
    /// Duration of ballot counter 1 in milliseconds (grows by as much per counter).
    #[arg(long, default_value_t = 1000)]
    pub ballot_timeout_ms: u64,
    /// Interval at which undecided slots' statements are sent again, in milliseconds: a
    /// statement lost on the way is repaired within it (a slot that takes less sends
    /// nothing again).
    #[arg(long, default_value_t = 50)]
    pub rebroadcast_ms: u64,
    /// Print only warnings, errors and operator events (one summary per decided slot,
    /// quorum, peers, catch-up): no protocol trace.
    #[arg(short, long)]
    pub quiet: bool,
    /// Also print rejected statements and other diagnostics.
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Log line format: `text` (`2026-01-01T00:00:00.000Z INFO [3000] ...`) or `json` (one
    /// object per line with ts, level, node and msg).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve Prometheus metrics (`GET /metrics`) and a health check (`GET /health`: 200
    /// while the node hears a quorum, else 503) over HTTP on this address, e.g.
    /// 127.0.0.1:9100.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Print all database entries after each change while there are at most this many
    /// wallets; beyond that only the entries a slot changed.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PRINT_ENTRIES_MAX)]
    pub print_entries_max: usize,
    /// JSON file holding any of these options by their long names (`{"port": 3000,
    /// "peers": ["127.0.0.1:3001"], "threshold": 3, "data_dir": "d", "quiet": true}`);
    /// options on the command line override it; relative paths in it are relative to it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check this node's ledger (hash chain, order, batches) and database against each
    /// other, print the result and exit (0 when they agree).
    #[arg(long)]
    pub verify: bool,
}

/// How many wallets a node prints in full after each change (`--print-entries-max`).
pub const DEFAULT_PRINT_ENTRIES_MAX: usize = 100;

/// How much the node prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Errors, warnings and operator events (slot summaries, quorum, peers, catch-up).
    Quiet,
    /// Also the protocol trace: every SCP message sent and received, each decision, the
    /// database entries.
    Normal,
    /// Also rejections and diagnostics.
    Verbose,
}

/// A validated server configuration.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// This node's id.
    pub id: NodeId,
    /// The UDP address to bind.
    pub bind: SocketAddr,
    /// The port naming the database file.
    pub port: u16,
    /// Peers by id (never including this node).
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// This node's quorum set.
    pub quorum_set: QuorumSet,
    /// Directory of the database file.
    pub data_dir: PathBuf,
    /// Protocol timeouts.
    pub timeouts: Timeouts,
    /// How much to print.
    pub verbosity: Verbosity,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Where to serve metrics over HTTP, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Most wallets printed in full after each change.
    pub print_entries_max: usize,
    /// Peer authentication keys (`--key-file`); `None` in development mode.
    pub keys: Option<crate::auth::NetworkKeys>,
    /// The client ids whose signed `reconfigure` requests the cluster obeys (from the key
    /// file; none in development mode, where unsigned ones are obeyed).
    pub operators: BTreeSet<u64>,
    /// Complete lines to print at start-up (such as an unsafe quorum allowed by
    /// `--unsafe-quorum`).
    pub warnings: Vec<String>,
}

impl ServerConfig {
    /// Development mode: no key file, so peers are trusted by source address (and every
    /// address is loopback).
    pub fn development_mode(&self) -> bool {
        self.keys.is_none()
    }
}

/// The address a development-mode node would expose beyond loopback.
#[derive(Debug)]
pub enum Exposed {
    /// The bind address.
    Bind(IpAddr),
    /// A peer, as given.
    Peer(String),
}

/// Two disjoint quorums of a node's configuration: the network can fork.
#[derive(Debug)]
pub struct QuorumSplit {
    /// A flat quorum set's threshold and number of validators (`None` when nested).
    pub flat: Option<(u32, usize)>,
    /// The quorum file it was read from, if any.
    pub file: Option<PathBuf>,
    /// One quorum.
    pub a: BTreeSet<NodeId>,
    /// Another, disjoint from the first.
    pub b: BTreeSet<NodeId>,
}

impl QuorumSplit {
    /// What lets the quorums be disjoint, and the two quorums.
    fn problem(&self) -> String {
        let subject = match (&self.flat, &self.file) {
            (Some((t, n)), _) => format!("threshold {t} of {n}"),
            (None, Some(file)) => format!("the quorum set of {}", file.display()),
            (None, None) => "the quorum set".to_string(),
        };
        format!("{subject} lets two disjoint quorums decide: {} and {}", show_set(&self.a), show_set(&self.b))
    }

    /// The start-up warning when `--unsafe-quorum` lets the node run anyway.
    pub fn warning(&self) -> String {
        format!("warning: {}; starting anyway (--unsafe-quorum): the network can fork", self.problem())
    }
}

impl fmt::Display for QuorumSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; ", self.problem())?;
        match self.flat {
            Some((_, n)) => write!(f, "use a threshold above n/2 ({} of {n})", n / 2 + 1)?,
            None => write!(f, "raise its thresholds until every two quorums share a node")?,
        }
        write!(f, " or pass --unsafe-quorum")
    }
}

/// `{1, 2, 3}`.
fn show_set(set: &BTreeSet<NodeId>) -> String {
    let ids: Vec<String> = set.iter().map(NodeId::to_string).collect();
    format!("{{{}}}", ids.join(", "))
}

/// A configuration problem, named precisely.
#[derive(Debug)]
pub enum ConfigError {
    /// A `--peer` value that is not `[id@]host:port`.
    BadPeer(String),
    /// A host name that does not resolve.
    Unresolvable {
        /// The `HOST:PORT` as given.
        address: String,
        /// Why.
        source: io::Error,
    },
    /// Two peers (or a peer and this node) with the same id.
    DuplicateNode(NodeId),
    /// Two peers with the same address.
    DuplicateAddress(SocketAddr),
    /// A peer entry at this node's own address that names another id.
    SelfWithOtherId {
        /// The entry as given.
        peer: String,
        /// The id it names.
        id: NodeId,
        /// This node's id.
        me: NodeId,
    },
    /// A peer entry with this node's id at another address.
    OwnIdElsewhere {
        /// The entry as given.
        peer: String,
        /// This node's id.
        id: NodeId,
    },
    /// No id can be derived from an unspecified address (0.0.0.0 or ::).
    NeedId(SocketAddr),
    /// Development mode (no key file) with an address beyond loopback.
    Unauthenticated {
        /// What would be exposed.
        exposed: Exposed,
        /// The `fba_server keygen` command for this configuration.
        keygen: String,
    },
    /// The key file is unusable.
    KeyFile(crate::keys::KeyFileError),
    /// `--id` differs from the key file's id.
    KeyFileId {
        /// The key file.
        file: PathBuf,
        /// The `--id` given.
        given: NodeId,
        /// The id in the file.
        expected: NodeId,
    },
    /// The port differs from the port of this node's address in the key file.
    KeyFilePort {
        /// The key file.
        file: PathBuf,
        /// The port given.
        port: u16,
        /// This node's address in the file.
        address: String,
    },
    /// A `--peer` that is not a node of the key file.
    PeerNotInKeyFile {
        /// The key file.
        file: PathBuf,
        /// The peer as given.
        peer: String,
    },
    /// A `--peer` whose id differs from the key file's id for that address.
    PeerIdNotInKeyFile {
        /// The key file.
        file: PathBuf,
        /// The peer as given.
        peer: String,
        /// The id the file gives that address.
        expected: NodeId,
    },
    /// The threshold is 0 or above the number of nodes.
    BadThreshold {
        /// The threshold asked for.
        threshold: u32,
        /// How many nodes there are.
        nodes: usize,
    },
    /// The quorum file could not be read.
    QuorumFileUnreadable(PathBuf, std::io::Error),
    /// The quorum file is not a quorum set.
    QuorumFileMalformed(PathBuf, String),
    /// The quorum set is not sane.
    QuorumSet(QuorumSetError),
    /// The quorum set names a node with no known address.
    UnknownNode(NodeId),
    /// Two quorums can be disjoint (and `--unsafe-quorum` was not given).
    UnsafeQuorum(QuorumSplit),
    /// The quorum set admits no quorum at all.
    NoQuorum,
    /// A timeout of zero.
    ZeroTimeout(&'static str),
    /// No port, neither on the command line nor in the `--config` file.
    NoPort,
    /// The `--config` file could not be read.
    ConfigFileUnreadable(PathBuf, std::io::Error),
    /// The `--config` file is not a JSON object of known options.
    ConfigFile {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::BadPeer(p) => write!(f, "bad --peer {p:?}: expected HOST:PORT or ID@HOST:PORT"),
            ConfigError::Unresolvable { address, source } => write!(f, "cannot resolve {address}: {source}"),
            ConfigError::DuplicateNode(n) => write!(f, "node id {n} is configured twice"),
            ConfigError::DuplicateAddress(a) => write!(f, "address {a} is configured twice"),
            ConfigError::SelfWithOtherId { peer, id, me } => {
                write!(f, "peer {peer} is this node's own address but names id {id}; this node is {me}")
            }
            ConfigError::OwnIdElsewhere { peer, id } => {
                write!(f, "peer {peer} has this node's id {id} but another address")
            }
            ConfigError::NeedId(addr) => {
                write!(f, "no node id derives from {addr}: give one with --id or ID@HOST:PORT")
            }
            ConfigError::Unauthenticated { exposed, keygen } => {
                match exposed {
                    Exposed::Bind(ip) => write!(f, "refusing to bind {ip} without --key-file")?,
                    Exposed::Peer(p) => write!(f, "refusing peer {p} without --key-file")?,
                }
                write!(f, ": peers would be trusted by source address. Create keys with: {keygen}")
            }
            ConfigError::KeyFile(e) => write!(f, "{e}"),
            ConfigError::KeyFileId { file, given, expected } => {
                write!(f, "--id {given} differs from id {expected} in key file {}", file.display())
            }
            ConfigError::KeyFilePort { file, port, address } => write!(
                f,
                "port {port} differs from this node's address {address} in key file {}",
                file.display()
            ),
            ConfigError::PeerNotInKeyFile { file, peer } => {
                write!(f, "--peer {peer} is not a node of key file {}", file.display())
            }
            ConfigError::PeerIdNotInKeyFile { file, peer, expected } => {
                write!(f, "--peer {peer}: key file {} gives that address id {expected}", file.display())
            }
            ConfigError::BadThreshold { threshold, nodes } => {
                write!(f, "threshold {threshold} is impossible with {nodes} nodes (must be 1..={nodes})")
            }
            ConfigError::QuorumFileUnreadable(p, e) => {
                write!(f, "cannot read quorum file {}: {e}", p.display())
            }
            ConfigError::QuorumFileMalformed(p, e) => {
                write!(f, "quorum file {} is malformed: {e}", p.display())
            }
            ConfigError::QuorumSet(e) => write!(f, "quorum set is not sane: {e}"),
            ConfigError::UnknownNode(n) => {
                write!(f, "quorum set names node {n}, which is not a configured peer")
            }
            ConfigError::UnsafeQuorum(split) => write!(f, "{split}"),
            ConfigError::NoQuorum => {
                write!(f, "the quorum set admits no quorum: the network could never decide")
            }
            ConfigError::ZeroTimeout(name) => write!(f, "--{name} must be above 0"),
            ConfigError::NoPort => write!(f, "no port: give one on the command line or in the --config file"),
            ConfigError::ConfigFileUnreadable(p, e) => {
                write!(f, "cannot read config file {}: {e}", p.display())
            }
            ConfigError::ConfigFile { file, problem } => {
                write!(f, "config file {}: {problem}", file.display())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// A node as written on a command line or in a key file: `ID@HOST:PORT` or `HOST:PORT`
/// (IPv6 literals in brackets, host names allowed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    /// The explicit id, if any.
    pub id: Option<NodeId>,
    /// `HOST:PORT` as written.
    pub address: String,
}

impl NodeSpec {
    /// Checks the form (not whether the host resolves); `None` if it is not a node.
    pub fn parse(text: &str) -> Option<NodeSpec> {
        let (id, address) = match text.split_once('@') {
            Some((id, address)) => (Some(NodeId(id.parse().ok()?)), address),
            None => (None, text),
        };
        let (host, port) = address.rsplit_once(':')?;
        port.parse::<u16>().ok()?;
        let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        let bare = bracketed.unwrap_or(host);
        let bad_char = |c: char| c.is_whitespace() || "@[]/".contains(c);
        if bare.is_empty() || bare.contains(bad_char) || (bracketed.is_none() && host.contains(':')) {
            return None;
        }
        Some(NodeSpec { id, address: address.to_string() })
    }

    /// The host, without IPv6 brackets.
    pub fn host(&self) -> &str {
        let host = self.address.rsplit_once(':').map_or("", |(h, _)| h);
        host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.address.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(0)
    }
}

impl fmt::Display for NodeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Some(id) => write!(f, "{id}@{}", self.address),
            None => write!(f, "{}", self.address),
        }
    }
}

/// Resolves `HOST:PORT`, preferring an address of the same family as `family` (so that
/// `localhost` means 127.0.0.1 to a node bound to 127.0.0.1).
pub fn resolve_address(address: &str, family: IpAddr) -> io::Result<SocketAddr> {
    let all: Vec<SocketAddr> = address.to_socket_addrs()?.collect();
    all.iter()
        .find(|a| a.is_ipv4() == family.is_ipv4())
        .or(all.first())
        .copied()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address found"))
}

/// The id of a node named without one, derived from its resolved address (the one rule
/// used by the configuration and by `keygen`):
///
/// * a loopback address: the port, so the assignment's nodes are 3000–3003;
/// * an IPv4 address: `ip << 16 | port` (injective, and above 65535);
/// * an IPv6 address: the first 63 bits of SHA-256 of its `[ip]:port` text, with the
///   top bit set (so it never equals an IPv4 or loopback id);
/// * an unspecified address (0.0.0.0 or ::): none.
///
/// IPv4-mapped IPv6 addresses count as IPv4. Loopback ids ignore the address, so two
/// loopback nodes need different ports (as they do on one host).
pub fn derive_node_id(addr: SocketAddr) -> Option<NodeId> {
    let ip = addr.ip().to_canonical();
    let port = addr.port();
    match ip {
        _ if ip.is_unspecified() => None,
        _ if ip.is_loopback() => Some(NodeId(u64::from(port))),
        IpAddr::V4(v4) => Some(NodeId(u64::from(u32::from(v4)) << 16 | u64::from(port))),
        IpAddr::V6(_) => {
            let digest = sha256(SocketAddr::new(ip, port).to_string().as_bytes());
            let mut first = [0u8; 8];
            first.copy_from_slice(&digest[..8]);
            Some(NodeId(u64::from_be_bytes(first) | 1 << 63))
        }
    }
}

/// A peer entry, resolved.
struct Peer {
    /// Its explicit id, if any.
    id: Option<NodeId>,
    /// As given (with its id), for messages.
    label: String,
    addr: SocketAddr,
}

impl Peer {
    fn resolve(spec: NodeSpec, family: IpAddr) -> Result<Peer, ConfigError> {
        let addr = resolve_address(&spec.address, family)
            .map_err(|source| ConfigError::Unresolvable { address: spec.address.clone(), source })?;
        Ok(Peer { id: spec.id, label: spec.to_string(), addr })
    }
}

/// The peers by id, by the identity rules: an entry at one of `own` addresses is this
/// node (skipped; naming another id there is an error), an entry with this node's id
/// elsewhere is an error, and so are two entries with one id or one address.
fn assemble(
    me: NodeId,
    own: &[SocketAddr],
    peers: Vec<Peer>,
) -> Result<BTreeMap<NodeId, SocketAddr>, ConfigError> {
    let mut nodes = BTreeMap::new();
    let mut addresses = BTreeSet::new();
    for peer in peers {
        if own.contains(&peer.addr) {
            match peer.id {
                Some(id) if id != me => {
                    return Err(ConfigError::SelfWithOtherId { peer: peer.label, id, me })
                }
                _ => continue,
            }
        }
        let id = match peer.id {
            Some(id) => id,
            None => derive_node_id(peer.addr).ok_or(ConfigError::NeedId(peer.addr))?,
        };
        if id == me {
            return Err(ConfigError::OwnIdElsewhere { peer: peer.label, id });
        }
        if nodes.insert(id, peer.addr).is_some() {
            return Err(ConfigError::DuplicateNode(id));
        }
        if !addresses.insert(peer.addr) {
            return Err(ConfigError::DuplicateAddress(peer.addr));
        }
    }
    Ok(nodes)
}

/// This node's id, bind address and peers.
type Nodes = (NodeId, SocketAddr, BTreeMap<NodeId, SocketAddr>);

impl ServerArgs {
    /// Validates the arguments into a configuration.
    pub fn into_config(self) -> Result<ServerConfig, ConfigError> {
        let port = self.port.ok_or(ConfigError::NoPort)?;
        let key_file = match &self.key_file {
            Some(path) => Some((path.as_path(), KeyFile::load(path).map_err(ConfigError::KeyFile)?)),
            None => None,
        };
        let (id, bind, peers) = match &key_file {
            None => self.development_nodes()?,
            Some((path, file)) => self.keyed_nodes(path, file)?,
        };
        let quorum_set = self.quorum_set(id, &peers)?;
        let mut warnings = Vec::new();
        match check_intersection(id, &quorum_set, self.quorum_file.as_deref()) {
            Err(ConfigError::UnsafeQuorum(split)) if self.unsafe_quorum => warnings.push(split.warning()),
            other => other?,
        }
        let own_peers = !self.peers.is_empty() || key_file.is_some();
        if own_peers && self.quorum_file.is_none() && self.threshold.is_none() {
            warnings.push(defaulted_threshold_note(&quorum_set));
        }
        if let Some((_, file)) = &key_file {
            warnings.extend(spare_notes(file, &peers));
        }
        Ok(ServerConfig {
            id,
            bind,
            port,
            peers,
            quorum_set,
            data_dir: self.data_dir.clone(),
            timeouts: self.timeouts()?,
            verbosity: match (self.quiet, self.verbose) {
                (true, _) => Verbosity::Quiet,
                (_, true) => Verbosity::Verbose,
                _ => Verbosity::Normal,
            },
            operators: key_file
                .as_ref()
                .map(|(_, file)| file.operators.iter().copied().collect())
                .unwrap_or_default(),
            keys: key_file.map(|(_, file)| file.network_keys()),
            warnings,
            log_format: self.log_format,
            metrics: self.metrics,
            print_entries_max: self.print_entries_max,
        })
    }

    /// The port ([`ServerArgs::into_config`] checks first that there is one).
    fn port(&self) -> u16 {
        self.port.unwrap_or(0)
    }

    /// Development mode: loopback only, ids given or derived.
    fn development_nodes(&self) -> Result<Nodes, ConfigError> {
        let bind = SocketAddr::new(self.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)), self.port());
        let peers = if self.peers.is_empty() {
            let defaults = ASSIGNMENT_PORTS.iter().map(|&p| SocketAddr::new(bind.ip(), p));
            defaults.map(|addr| Peer { id: None, label: addr.to_string(), addr }).collect()
        } else {
            self.given_peers(bind.ip())?
        };
        self.require_loopback(bind, &peers)?;
        let id = match self.id {
            Some(id) => NodeId(id),
            None => derive_node_id(bind).ok_or(ConfigError::NeedId(bind))?,
        };
        Ok((id, bind, assemble(id, &[bind], peers)?))
    }

    /// The `--peer` entries, resolved.
    fn given_peers(&self, family: IpAddr) -> Result<Vec<Peer>, ConfigError> {
        self.peers
            .iter()
            .map(|text| {
                let spec = NodeSpec::parse(text).ok_or_else(|| ConfigError::BadPeer(text.clone()))?;
                Peer::resolve(spec, family)
            })
            .collect()
    }

    /// Refuses any address beyond loopback without a key file.
    fn require_loopback(&self, bind: SocketAddr, peers: &[Peer]) -> Result<(), ConfigError> {
        let exposed = if !bind.ip().to_canonical().is_loopback() {
            Exposed::Bind(bind.ip())
        } else if let Some(peer) = peers.iter().find(|p| !p.addr.ip().to_canonical().is_loopback()) {
            Exposed::Peer(peer.label.clone())
        } else {
            return Ok(());
        };
        Err(ConfigError::Unauthenticated { exposed, keygen: self.keygen_hint(bind) })
    }

    /// `fba_server keygen --out keys <this node> <its peers>`, as far as they are known.
    fn keygen_hint(&self, bind: SocketAddr) -> String {
        let own = if bind.ip().is_unspecified() { format!("HOST:{}", bind.port()) } else { bind.to_string() };
        let mut nodes = vec![match self.id {
            Some(id) => format!("{id}@{own}"),
            None => own,
        }];
        if self.peers.is_empty() {
            nodes.push("HOST:PORT ...".to_string());
        } else {
            nodes.extend(self.peers.iter().cloned());
        }
        format!("fba_server keygen --out keys {}", nodes.join(" "))
    }

    /// With a key file: its id, its address's port and IP (unless --bind), and its nodes
    /// as peers (which --peer entries, if any, must match exactly).
    fn keyed_nodes(&self, path: &Path, file: &KeyFile) -> Result<Nodes, ConfigError> {
        let me = file.id;
        if let Some(given) = self.id.map(NodeId).filter(|&given| given != me) {
            return Err(ConfigError::KeyFileId { file: path.to_path_buf(), given, expected: me });
        }
        let own_spec = NodeSpec { id: Some(me), address: file.address.clone() };
        if own_spec.port() != self.port() {
            let (file, address) = (path.to_path_buf(), file.address.clone());
            return Err(ConfigError::KeyFilePort { file, port: self.port(), address });
        }
        let family = self.bind.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let own_addr = Peer::resolve(own_spec, family)?.addr;
        let bind = SocketAddr::new(self.bind.unwrap_or(own_addr.ip()), self.port());
        let file_peers = file
            .peers()
            .map(|n| Peer::resolve(NodeSpec { id: Some(n.id), address: n.address.clone() }, bind.ip()))
            .collect::<Result<Vec<_>, _>>()?;
        let own = [bind, own_addr];
        let file_peers = match self.peers.is_empty() {
            true => file_peers,
            false => {
                let named = match_key_file(path, me, &own, &self.given_peers(bind.ip())?, &file_peers)?;
                file_peers.into_iter().filter(|p| p.id.is_some_and(|id| named.contains(&id))).collect()
            }
        };
        Ok((me, bind, assemble(me, &own, file_peers)?))
    }

    /// This node's quorum set: from --quorum-file, or a threshold over every node.
    fn quorum_set(&self, me: NodeId, peers: &BTreeMap<NodeId, SocketAddr>) -> Result<QuorumSet, ConfigError> {
        let quorum_set = match &self.quorum_file {
            Some(path) => read_quorum_file(path)?,
            None => default_quorum_set(me, peers, self.threshold)?,
        };
        quorum_set.check_sanity().map_err(ConfigError::QuorumSet)?;
        if let Some(unknown) = quorum_set.nodes().into_iter().find(|n| *n != me && !peers.contains_key(n)) {
            return Err(ConfigError::UnknownNode(unknown));
        }
        Ok(quorum_set)
    }

    fn timeouts(&self) -> Result<Timeouts, ConfigError> {
        let ms = |v: u64, name| {
            if v == 0 {
                Err(ConfigError::ZeroTimeout(name))
            } else {
                Ok(Duration::from_millis(v))
            }
        };
        let nomination = ms(self.nomination_timeout_ms, "nomination-timeout-ms")?;
        let ballot = ms(self.ballot_timeout_ms, "ballot-timeout-ms")?;
        Ok(Timeouts {
            nomination_initial: nomination,
            nomination_increment: nomination,
            ballot_initial: ballot,
            ballot_increment: ballot,
            max: Duration::from_secs(30 * 60),
            rebroadcast: ms(self.rebroadcast_ms, "rebroadcast-ms")?,
        })
    }
}

/// The keys of a `--config` file: each option by its long name with `_` for `-` (as clap
/// knows the argument), and `peers` for `--peer`.
const FILE_KEYS: [&str; 17] = [
    "port",
    "bind",
    "id",
    "peers",
    "key_file",
    "threshold",
    "quorum_file",
    "unsafe_quorum",
    "data_dir",
    "nomination_timeout_ms",
    "ballot_timeout_ms",
    "rebroadcast_ms",
    "quiet",
    "verbose",
    "log_format",
    "metrics",
    "print_entries_max",
];

impl ServerArgs {
    /// Fills in, from the `--config` file if one was given, every option the command line
    /// (`matches`, from which `self` was parsed) left out. Unknown keys and values of the
    /// wrong type are errors naming them.
    pub fn merge_config_file(mut self, matches: &clap::ArgMatches) -> Result<ServerArgs, ConfigError> {
        let Some(path) = self.config.clone() else { return Ok(self) };
        let text =
            std::fs::read_to_string(&path).map_err(|e| ConfigError::ConfigFileUnreadable(path.clone(), e))?;
        let problem = |problem: String| ConfigError::ConfigFile { file: path.clone(), problem };
        let object = match serde_json::from_str(&text) {
            Ok(serde_json::Value::Object(object)) => object,
            Ok(_) => return Err(problem("not a JSON object".into())),
            Err(e) => return Err(problem(format!("not JSON: {e}"))),
        };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let on_command_line =
            |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
        let verbosity_given = on_command_line("quiet") || on_command_line("verbose");
        for (key, value) in object {
            let id = file_key_id(&key).ok_or_else(|| problem(unknown_key(&key)))?;
            let given = if id == "quiet" || id == "verbose" { verbosity_given } else { on_command_line(id) };
            if !given {
                self.set_from_file(id, value, &base).map_err(|e| problem(format!("{key}: {e}")))?;
            }
        }
        Ok(self)
    }

    /// Sets option `id` from a config file's `value`; relative paths are taken from `base`.
    fn set_from_file(&mut self, id: &str, value: serde_json::Value, base: &Path) -> Result<(), String> {
        let path = |v: serde_json::Value| from_json::<PathBuf>(v).map(|p| base.join(p));
        match id {
            "port" => self.port = Some(from_json(value)?),
            "bind" => self.bind = Some(from_json(value)?),
            "id" => self.id = Some(from_json(value)?),
            "peers" => self.peers = from_json(value)?,
            "key_file" => self.key_file = Some(path(value)?),
            "threshold" => self.threshold = Some(from_json(value)?),
            "quorum_file" => self.quorum_file = Some(path(value)?),
            "unsafe_quorum" => self.unsafe_quorum = from_json(value)?,
            "data_dir" => self.data_dir = path(value)?,
            "nomination_timeout_ms" => self.nomination_timeout_ms = from_json(value)?,
            "ballot_timeout_ms" => self.ballot_timeout_ms = from_json(value)?,
            "rebroadcast_ms" => self.rebroadcast_ms = from_json(value)?,
            "quiet" => self.quiet = from_json(value)?,
            "verbose" => self.verbose = from_json(value)?,
            "log_format" => {
                let name: String = from_json(value)?;
                self.log_format = clap::ValueEnum::from_str(&name, true)
                    .map_err(|_| format!("{name:?} is not a log format (text or json)"))?;
            }
            "metrics" => self.metrics = Some(from_json(value)?),
            "print_entries_max" => self.print_entries_max = from_json(value)?,
            _ => return Err(unknown_key(id)),
        }
        Ok(())
    }
}

/// The argument id of a config file key (`data_dir` or `data-dir`), if it is one.
fn file_key_id(key: &str) -> Option<&'static str> {
    let key = key.replace('-', "_");
    match key.as_str() {
        "peer" => Some("peers"),
        _ => FILE_KEYS.iter().copied().find(|id| *id == key),
    }
}

/// `unknown key "x" (known: port, bind, ...)`.
fn unknown_key(key: &str) -> String {
    format!("unknown key {key:?} (known: {})", FILE_KEYS.join(", "))
}

/// A config file value as a `T`.
fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// Checks that the `--peer` entries are exactly the key file's other nodes: same
/// addresses and, where given, same ids. Names the first mismatch.
/// Checks that every `--peer` is a node of the key file (at its address, with its id);
/// returns the ids they name. Key-file nodes no `--peer` names are spares: keyed, but not
/// members until a reconfiguration adds them.
fn match_key_file(
    path: &Path,
    me: NodeId,
    own: &[SocketAddr],
    given: &[Peer],
    file_peers: &[Peer],
) -> Result<BTreeSet<NodeId>, ConfigError> {
    let file = || path.to_path_buf();
    let mut matched = BTreeSet::new();
    for peer in given {
        if own.contains(&peer.addr) {
            match peer.id {
                Some(id) if id != me => {
                    return Err(ConfigError::SelfWithOtherId { peer: peer.label.clone(), id, me })
                }
                _ => continue,
            }
        }
        let Some(expected) = file_peers.iter().find(|n| n.addr == peer.addr).and_then(|n| n.id) else {
            return Err(ConfigError::PeerNotInKeyFile { file: file(), peer: peer.label.clone() });
        };
        if peer.id.is_some_and(|id| id != expected) {
            return Err(ConfigError::PeerIdNotInKeyFile { file: file(), peer: peer.label.clone(), expected });
        }
        if !matched.insert(expected) {
            return Err(ConfigError::DuplicateNode(expected));
        }
    }
    Ok(matched)
}

/// A note for each node of the key file that is not a peer: a spare, which a
/// reconfiguration can add.
fn spare_notes(file: &KeyFile, peers: &BTreeMap<NodeId, SocketAddr>) -> Vec<String> {
    file.peers()
        .filter(|n| !peers.contains_key(&n.id))
        .map(|n| {
            format!(
                "note: key file node {}@{} is not a peer (no --peer names it): a spare, which \
                 `fba_client PORT reconfigure --add` can make a member",
                n.id, n.address
            )
        })
        .collect()
}

/// Refuses a quorum set whose quorums need not intersect when every node it names uses
/// it too (what a single node can check at start-up).
fn check_intersection(me: NodeId, qset: &QuorumSet, file: Option<&Path>) -> Result<(), ConfigError> {
    let file = file.map(Path::to_path_buf);
    if qset.inner_sets.is_empty() {
        let nodes: BTreeSet<NodeId> = qset.validators.iter().copied().collect();
        let Some((a, b)) = crate::quorum::flat_split(qset.threshold, &nodes) else { return Ok(()) };
        let flat = Some((qset.threshold, qset.validators.len()));
        return Err(ConfigError::UnsafeQuorum(QuorumSplit { flat, file, a, b }));
    }
    match intersection::check(&intersection::symmetric(me, qset)) {
        Intersection::Holds { .. } => Ok(()),
        Intersection::Split(a, b) => Err(ConfigError::UnsafeQuorum(QuorumSplit { flat: None, file, a, b })),
        Intersection::NoQuorum => Err(ConfigError::NoQuorum),
    }
}

/// `threshold` of all nodes; by default 3 of 4 for the assignment, otherwise the smallest
/// threshold above two thirds (tolerating ⌊(n-1)/3⌋ Byzantine nodes).
fn default_quorum_set(
    me: NodeId,
    peers: &BTreeMap<NodeId, SocketAddr>,
    threshold: Option<u32>,
) -> Result<QuorumSet, ConfigError> {
    let nodes: BTreeSet<NodeId> = peers.keys().copied().chain([me]).collect();
    let n = nodes.len();
    let threshold = threshold.unwrap_or((2 * n as u32) / 3 + 1);
    if threshold == 0 || threshold as usize > n {
        return Err(ConfigError::BadThreshold { threshold, nodes: n });
    }
    Ok(QuorumSet::new(threshold, nodes))
}

/// The line saying that the threshold was chosen, not given: it moves when nodes are
/// added, so an operator should know and may pin it.
fn defaulted_threshold_note(quorum_set: &QuorumSet) -> String {
    let n = quorum_set.validators.len();
    let t = quorum_set.threshold as usize;
    format!(
        "note: threshold {t} of {n} chosen by default (the smallest above two thirds, tolerating {} \
         faulty node(s)); it changes when nodes are added or removed: pass --threshold {t} to pin it",
        n - t
    )
}

fn read_quorum_file(path: &PathBuf) -> Result<QuorumSet, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::QuorumFileUnreadable(path.clone(), e))?;
    serde_json::from_str(&text).map_err(|e| ConfigError::QuorumFileMalformed(path.clone(), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{generate, write_key_files, KeygenNode};

    fn args(extra: &[&str]) -> Result<ServerConfig, ConfigError> {
        let argv = ["fba_server"].iter().chain(extra).copied();
        ServerArgs::try_parse_from(argv).expect("clap accepts").into_config()
    }

    fn ids(c: &ServerConfig) -> Vec<u64> {
        c.peers.keys().map(|n| n.0).collect()
    }

    /// A private temporary directory, removed on drop.
    struct Temp(PathBuf);

    impl Temp {
        fn new(tag: &str) -> Temp {
            let dir = std::env::temp_dir().join(format!("fba-config-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            Temp(dir)
        }

        fn file(&self, name: &str, text: &str) -> String {
            let path = self.0.join(name);
            std::fs::write(&path, text).expect("write");
            path.to_str().expect("utf8").to_string()
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Key files for `nodes` in `dir`; their paths as strings.
    fn key_files(dir: &Temp, nodes: &[&str]) -> Vec<String> {
        let nodes: Vec<KeygenNode> = nodes.iter().map(|n| KeygenNode::parse(n).expect("node")).collect();
        let paths = write_key_files(&dir.0.join("keys"), &generate(&nodes).expect("keys")).expect("written");
        paths.iter().map(|p| p.to_str().expect("utf8").to_string()).collect()
    }

    /// Parses `argv` and merges its `--config` file, as `fba_server` does.
    fn with_file(argv: &[&str]) -> Result<ServerArgs, ConfigError> {
        use clap::{CommandFactory, FromArgMatches};
        let argv = std::iter::once("fba_server").chain(argv.iter().copied());
        let matches = ServerArgs::command().try_get_matches_from(argv).expect("clap accepts");
        ServerArgs::from_arg_matches(&matches).expect("arguments").merge_config_file(&matches)
    }

    #[test]
    fn a_config_file_holds_the_flags_and_the_command_line_overrides_it() {
        let dir = Temp::new("file");
        let file = dir.file(
            "node.json",
            r#"{"port": 4000, "peers": ["127.0.0.1:4001", "127.0.0.1:4002"], "threshold": 2,
                "data_dir": "d", "metrics": "127.0.0.1:9100", "quiet": true, "log-format": "json",
                "print_entries_max": 5, "nomination_timeout_ms": 70}"#,
        );
        let c = with_file(&["--config", &file]).expect("valid").into_config().expect("config");
        assert_eq!((c.port, c.quorum_set.threshold, ids(&c)), (4000, 2, vec![4001, 4002]));
        assert_eq!(c.data_dir, dir.0.join("d"), "relative to the file");
        assert_eq!(c.metrics, Some("127.0.0.1:9100".parse().expect("addr")));
        assert_eq!((c.verbosity, c.log_format, c.print_entries_max), (Verbosity::Quiet, LogFormat::Json, 5));
        assert_eq!(c.timeouts.nomination_initial, Duration::from_millis(70));
        let argv = ["4009", "--config", &file, "--threshold", "3", "--verbose", "--data-dir", "/x"];
        let c = with_file(&argv).expect("valid").into_config().expect("config");
        assert_eq!((c.port, c.quorum_set.threshold, c.verbosity), (4009, 3, Verbosity::Verbose));
        assert_eq!(c.data_dir, PathBuf::from("/x"));
        assert_eq!(ids(&c), [4001, 4002], "what the command line leaves out still comes from the file");
    }

    #[test]
    fn bad_config_files_are_named() {
        let dir = Temp::new("badfile");
        let unknown = dir.file("unknown.json", r#"{"port": 4000, "treshold": 3}"#);
        let e = with_file(&["--config", &unknown]).expect_err("unknown key");
        assert!(e.to_string().contains(r#"unknown key "treshold""#), "{e}");
        assert!(e.to_string().contains("unknown.json"), "{e}");
        let wrong = dir.file("wrong.json", r#"{"port": "four thousand"}"#);
        assert!(with_file(&["--config", &wrong]).expect_err("bad value").to_string().contains("port: "));
        let format = dir.file("format.json", r#"{"port": 4000, "log_format": "xml"}"#);
        assert!(with_file(&["--config", &format]).is_err());
        let list = dir.file("list.json", "[1, 2]");
        assert!(with_file(&["--config", &list])
            .expect_err("not an object")
            .to_string()
            .contains("not a JSON object"));
        let missing = dir.0.join("none.json");
        let e = with_file(&["--config", missing.to_str().expect("utf8")]).expect_err("unreadable");
        assert!(matches!(e, ConfigError::ConfigFileUnreadable(..)), "{e}");
        let portless = dir.file("portless.json", r#"{"quiet": true}"#);
        let args = with_file(&["--config", &portless]).expect("parses");
        assert!(matches!(args.into_config(), Err(ConfigError::NoPort)));
        assert!(ServerArgs::try_parse_from(["fba_server"]).is_err(), "a port or --config is required");
    }

    #[test]
    fn bare_port_is_an_assignment_node() {
        let c = args(&["3001"]).expect("valid");
        assert_eq!(c.id, NodeId(3001));
        assert_eq!(c.quorum_set, QuorumSet::new(3, [3000, 3001, 3002, 3003].map(NodeId)));
        assert_eq!(ids(&c), [3000, 3002, 3003]);
        assert_eq!(c.verbosity, Verbosity::Normal);
        assert_eq!(c.bind, SocketAddr::from(([127, 0, 0, 1], 3001)));
        assert!(c.development_mode() && c.keys.is_none() && c.warnings.is_empty());
    }

    #[test]
    fn a_defaulted_threshold_over_given_peers_is_announced() {
        let c = args(&[
            "4000",
            "--peer",
            "127.0.0.1:4001",
            "--peer",
            "127.0.0.1:4002",
            "--peer",
            "127.0.0.1:4003",
            "--peer",
            "127.0.0.1:4004",
        ])
        .expect("valid");
        assert_eq!(c.quorum_set.threshold, 4);
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("threshold 4 of 5 chosen by default") && w.contains("--threshold 4")),
            "{:?}",
            c.warnings
        );
        let pinned =
            args(&["4000", "--peer", "127.0.0.1:4001", "--peer", "127.0.0.1:4002", "--threshold", "3"])
                .expect("valid");
        assert!(pinned.warnings.is_empty(), "{:?}", pinned.warnings);
    }

    #[test]
    fn explicit_peers_and_threshold() {
        let c = args(&["4000", "--peer", "7@127.0.0.1:4001", "--peer", "127.0.0.1:4002", "--threshold", "2"])
            .expect("valid");
        assert_eq!(ids(&c), [7, 4002]);
        assert_eq!(c.quorum_set.threshold, 2);
        assert_eq!(c.quorum_set.validators.len(), 3);
    }

    #[test]
    fn bad_configurations_are_named() {
        assert!(matches!(
            args(&["3000", "--threshold", "5"]),
            Err(ConfigError::BadThreshold { threshold: 5, nodes: 4 })
        ));
        assert!(matches!(args(&["3000", "--threshold", "0"]), Err(ConfigError::BadThreshold { .. })));
        assert!(matches!(args(&["3000", "--peer", "nonsense"]), Err(ConfigError::BadPeer(_))));
        assert!(matches!(args(&["3000", "--peer", "::1:3001"]), Err(ConfigError::BadPeer(_))));
        assert!(matches!(
            args(&["3000", "--peer", "127.0.0.1:3001", "--peer", "127.0.0.1:3001"]),
            Err(ConfigError::DuplicateNode(_))
        ));
        assert!(matches!(args(&["3000", "--ballot-timeout-ms", "0"]), Err(ConfigError::ZeroTimeout(_))));
        assert!(matches!(
            args(&["3000", "--quorum-file", "/nonexistent/q.json"]),
            Err(ConfigError::QuorumFileUnreadable(..))
        ));
    }

    #[test]
    fn derived_ids_are_the_port_on_loopback_and_distinct_across_hosts() {
        let id = |s: &str| derive_node_id(s.parse().expect("address"));
        assert_eq!(id("127.0.0.1:4002"), Some(NodeId(4002)));
        assert_eq!(id("[::1]:4002"), Some(NodeId(4002)));
        assert_eq!(id("0.0.0.0:4002"), None);
        assert_eq!(id("[::]:4002"), None);
        let hosts: BTreeSet<_> = (1..=4).map(|h| id(&format!("10.0.0.{h}:22000")).expect("an id")).collect();
        assert_eq!(hosts.len(), 4, "four hosts on one port are four nodes");
        assert!(hosts.iter().all(|n| n.0 > u64::from(u16::MAX)), "never a loopback id");
        assert_eq!(id("10.0.0.1:22000"), Some(NodeId((0x0a00_0001 << 16) | 22000)));
        assert_eq!(id("[::ffff:10.0.0.1]:22000"), id("10.0.0.1:22000"));
        let v6 = id("[2001:db8::1]:22000").expect("an id");
        assert!(v6.0 >= 1 << 63);
        assert_ne!(Some(v6), id("[2001:db8::2]:22000"));
    }

    #[test]
    fn identity_rules() {
        // An entry at our own address is us; naming another id there is an error.
        let c = args(&["4000", "--peer", "127.0.0.1:4000", "--peer", "127.0.0.1:4001"]).expect("valid");
        assert_eq!(ids(&c), [4001]);
        assert!(matches!(
            args(&["4000", "--peer", "5@127.0.0.1:4000", "--peer", "127.0.0.1:4001"]),
            Err(ConfigError::SelfWithOtherId { id: NodeId(5), me: NodeId(4000), .. })
        ));
        // --id with the default peers: our own default entry is skipped, not a fifth node.
        let c = args(&["3000", "--id", "7"]).expect("valid");
        assert_eq!((c.id, ids(&c)), (NodeId(7), vec![3001, 3002, 3003]));
        // Our id at another address, and two peers with one id or one address.
        assert!(matches!(
            args(&["4000", "--id", "4001", "--peer", "127.0.0.1:4001"]),
            Err(ConfigError::OwnIdElsewhere { id: NodeId(4001), .. })
        ));
        assert!(matches!(
            args(&["4000", "--peer", "1@127.0.0.1:4001", "--peer", "1@127.0.0.1:4002"]),
            Err(ConfigError::DuplicateNode(NodeId(1)))
        ));
        assert!(matches!(
            args(&["4000", "--peer", "1@127.0.0.1:4001", "--peer", "2@127.0.0.1:4001"]),
            Err(ConfigError::DuplicateAddress(_))
        ));
    }

    #[test]
    fn development_mode_binds_only_loopback() {
        let e = args(&["22000", "--bind", "10.1.2.3"]).expect_err("refused");
        assert!(matches!(e, ConfigError::Unauthenticated { exposed: Exposed::Bind(_), .. }));
        let text = e.to_string();
        assert!(text.starts_with("refusing to bind 10.1.2.3 without --key-file"), "{text}");
        assert!(text.contains("fba_server keygen --out keys 10.1.2.3:22000 HOST:PORT"), "{text}");
        let e = args(&["22000", "--bind", "10.0.0.1", "--peer", "10.0.0.2:22000"]).expect_err("refused");
        assert!(e.to_string().ends_with("keygen --out keys 10.0.0.1:22000 10.0.0.2:22000"), "{e}");
        let e = args(&["4000", "--peer", "10.0.0.2:4000"]).expect_err("refused");
        assert!(matches!(e, ConfigError::Unauthenticated { exposed: Exposed::Peer(_), .. }), "{e}");
        let e = args(&["4000", "--bind", "0.0.0.0", "--id", "1"]).expect_err("refused");
        assert!(e.to_string().contains("keygen --out keys 1@HOST:4000"), "{e}");
        assert!(args(&["4000", "--bind", "::1", "--peer", "[::1]:4001"]).is_ok());
        assert!(args(&["4000", "--peer", "localhost:4001"]).is_ok());
    }

    #[test]
    fn flat_thresholds_at_or_below_half_are_refused_unless_unsafe_quorum() {
        let e = args(&["3000", "--threshold", "2"]).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "threshold 2 of 4 lets two disjoint quorums decide: {3000, 3001} and {3002, 3003}; \
             use a threshold above n/2 (3 of 4) or pass --unsafe-quorum"
        );
        let c = args(&["3000", "--threshold", "2", "--unsafe-quorum"]).expect("allowed");
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("{3000, 3001} and {3002, 3003}"), "{:?}", c.warnings);
        assert!(args(&["3000", "--threshold", "3"]).is_ok());
        let e = args(&["3000", "--peer", "127.0.0.1:3001", "--threshold", "1"]).expect_err("refused");
        assert!(e.to_string().contains("{3000} and {3001}"), "{e}");
    }

    #[test]
    fn nested_quorum_file_is_read_and_checked() {
        let dir = Temp::new("nested");
        let good = dir.file(
            "good.json",
            r#"{"threshold": 2, "inner_sets": [{"threshold": 2, "validators": [3000, 3001, 3002]}, {"threshold": 1, "validators": [3003]}]}"#,
        );
        let c = args(&["3000", "--quorum-file", &good]).expect("valid");
        assert_eq!(c.quorum_set.inner_sets.len(), 2);
        let bad = dir.file("bad.json", r#"{"threshold": "two"}"#);
        assert!(matches!(args(&["3000", "--quorum-file", &bad]), Err(ConfigError::QuorumFileMalformed(..))));
        let unknown = dir.file("unknown.json", r#"{"threshold": 1, "validators": [3000, 9999]}"#);
        assert!(matches!(
            args(&["3000", "--quorum-file", &unknown]),
            Err(ConfigError::UnknownNode(NodeId(9999)))
        ));
    }

    #[test]
    fn nested_quorum_sets_that_split_are_refused_unless_unsafe_quorum() {
        let dir = Temp::new("split");
        let split = dir.file(
            "split.json",
            r#"{"threshold": 2, "inner_sets": [{"threshold": 1, "validators": [3000, 3001]}, {"threshold": 1, "validators": [3002, 3003]}]}"#,
        );
        let e = args(&["3000", "--quorum-file", &split]).expect_err("refused");
        let ConfigError::UnsafeQuorum(QuorumSplit { a, b, flat: None, .. }) = &e else { panic!("{e}") };
        assert!(a.is_disjoint(b) && a.len() == 2 && b.len() == 2, "{e}");
        assert!(e.to_string().contains("split.json lets two disjoint quorums decide"), "{e}");
        let c = args(&["3000", "--quorum-file", &split, "--unsafe-quorum"]).expect("allowed");
        assert_eq!(c.warnings.len(), 1);
    }

    #[test]
    fn key_files_give_each_host_its_identity_and_keys() {
        let dir = Temp::new("keyed");
        let hosts = ["10.0.0.1:22000", "10.0.0.2:22000", "10.0.0.3:22000", "10.0.0.4:22000"];
        let files = key_files(&dir, &hosts);
        let configs: Vec<ServerConfig> =
            files.iter().map(|f| args(&["22000", "--key-file", f]).expect("valid")).collect();
        let all: BTreeSet<NodeId> = configs.iter().map(|c| c.id).collect();
        assert_eq!(all.len(), 4);
        for (c, host) in configs.iter().zip(hosts) {
            assert_eq!(c.bind, host.parse().expect("address"));
            assert_eq!(c.peers.len(), 3);
            assert!(!c.peers.contains_key(&c.id));
            assert_eq!(c.quorum_set.threshold, 3);
            let keys = c.keys.as_ref().expect("authenticated");
            assert_eq!(keys.me, c.id);
            assert!(keys.pairwise.keys().eq(c.peers.keys()));
            assert!(!c.development_mode());
        }
        let any = args(&["22000", "--key-file", &files[0], "--bind", "0.0.0.0"]).expect("0.0.0.0 is allowed");
        assert_eq!(any.peers, configs[0].peers);
    }

    #[test]
    fn peers_must_match_the_key_file() {
        let dir = Temp::new("match");
        let files = key_files(&dir, &["1@127.0.0.1:5001", "2@127.0.0.1:5002", "3@127.0.0.1:5003"]);
        let f = files[0].as_str();
        let run = |extra: &[&str]| args(&[&["5001", "--key-file", f], extra].concat());
        let c = run(&["--peer", "127.0.0.1:5001", "--peer", "127.0.0.1:5002", "--peer", "3@127.0.0.1:5003"])
            .expect("the file's nodes");
        assert_eq!(ids(&c), [2, 3]);
        let subset = run(&["--peer", "127.0.0.1:5002", "--threshold", "2"]).expect("a spare is allowed");
        assert_eq!(ids(&subset), [2], "node 3 is a spare, not a peer");
        assert!(
            subset.keys.as_ref().is_some_and(|k| k.pairwise.contains_key(&NodeId(3))),
            "keyed all the same"
        );
        assert!(
            subset.warnings.iter().any(|w| w.contains("node 3@127.0.0.1:5003 is not a peer")),
            "{:?}",
            subset.warnings
        );
        let extra =
            run(&["--peer", "127.0.0.1:5002", "--peer", "127.0.0.1:5003", "--peer", "127.0.0.1:5004"]);
        assert!(matches!(extra, Err(ConfigError::PeerNotInKeyFile { .. })));
        let wrong = run(&["--peer", "9@127.0.0.1:5002", "--peer", "127.0.0.1:5003"]);
        assert!(matches!(wrong, Err(ConfigError::PeerIdNotInKeyFile { expected: NodeId(2), .. })));
        assert!(matches!(run(&["--id", "2"]), Err(ConfigError::KeyFileId { .. })));
        assert!(matches!(args(&["5009", "--key-file", f]), Err(ConfigError::KeyFilePort { port: 5009, .. })));
        let missing = dir.0.join("none.key");
        let e = args(&["5001", "--key-file", missing.to_str().expect("utf8")]).expect_err("unreadable");
        assert!(e.to_string().starts_with("cannot read key file"), "{e}");
    }
}
