//! Command-line configuration of `fba_server`, and its validation.
//!
//! With only a port the server is one of the assignment's four nodes: peers 3000–3003 on
//! 127.0.0.1, quorum set 3-of-{3000, 3001, 3002, 3003}. Flags describe other deployments:
//! peers on other hosts, a different threshold, or a nested quorum set read from a JSON
//! file such as `{"threshold": 2, "inner_sets": [{"threshold": 2, "validators": [1, 2, 3]}, …]}`.
//! Every problem is reported as one [`ConfigError`] naming it; nothing starts half-configured.

use crate::quorum::{NodeId, QuorumSet, QuorumSetError};
use crate::scp::Timeouts;
use clap::Parser;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// The ports of the assignment's four nodes.
pub const ASSIGNMENT_PORTS: [u16; 4] = [3000, 3001, 3002, 3003];

/// `fba_server`: one node of the replicated wallet store.
#[derive(Parser, Debug, Clone)]
#[command(name = "fba_server", version, about = "One node of the fba replicated wallet store (SCP over UDP)")]
pub struct ServerArgs {
    /// UDP port to listen on; also the node id unless --id is given.
    pub port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// This node's id (default: the port).
    #[arg(long)]
    pub id: Option<u64>,
    /// A peer as `host:port` (id = port) or `id@host:port`; repeat for each peer.
    /// Default: the assignment's nodes 3000-3003 on the bind address.
    #[arg(long = "peer", value_name = "[ID@]HOST:PORT")]
    pub peers: Vec<String>,
    /// Quorum threshold over this node and its peers (default: 3 of the 4 assignment nodes,
    /// otherwise the smallest threshold above two thirds).
    #[arg(long)]
    pub threshold: Option<u32>,
    /// JSON file with a (possibly nested) quorum set; overrides --threshold.
    #[arg(long, value_name = "FILE")]
    pub quorum_file: Option<PathBuf>,
    /// Directory of the database file `assignment3_<port>.db`.
    #[arg(long, default_value = ".")]
    pub data_dir: PathBuf,
    /// Duration of nomination round 1 in milliseconds (grows by as much per round).
    #[arg(long, default_value_t = 1000)]
    pub nomination_timeout_ms: u64,
    /// Duration of ballot counter 1 in milliseconds (grows by as much per counter).
    #[arg(long, default_value_t = 1000)]
    pub ballot_timeout_ms: u64,
    /// Interval at which undecided slots' statements are sent again, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub rebroadcast_ms: u64,
    /// Print only errors and the database after each change (no protocol messages).
    #[arg(short, long)]
    pub quiet: bool,
    /// Also print rejected statements and other diagnostics.
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Check this node's ledger (hash chain, order, batches) and database against each
    /// other, print the result and exit (0 when they agree).
    #[arg(long)]
    pub verify: bool,
}

/// How much the node prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Errors and database contents only.
    Quiet,
    /// Also every SCP message sent and received.
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
    /// Peer authentication keys (`--key-file`); `None` in development mode.
    pub keys: Option<crate::auth::NetworkKeys>,
}

/// A configuration problem, named precisely.
#[derive(Debug)]
pub enum ConfigError {
    /// A `--peer` value that is not `[id@]host:port`.
    BadPeer(String),
    /// Two peers (or a peer and this node) with the same id.
    DuplicateNode(NodeId),
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
    /// A timeout of zero.
    ZeroTimeout(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::BadPeer(p) => write!(f, "bad --peer {p:?}: expected HOST:PORT or ID@HOST:PORT"),
            ConfigError::DuplicateNode(n) => write!(f, "node id {n} is configured twice"),
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
            ConfigError::ZeroTimeout(name) => write!(f, "--{name} must be above 0"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ServerArgs {
    /// Validates the arguments into a configuration.
    pub fn into_config(self) -> Result<ServerConfig, ConfigError> {
        let id = NodeId(self.id.unwrap_or(u64::from(self.port)));
        let bind = SocketAddr::new(self.bind, self.port);
        let mut nodes = self.nodes(id)?;
        let quorum_set = match &self.quorum_file {
            Some(path) => read_quorum_file(path)?,
            None => default_quorum_set(&nodes, self.threshold)?,
        };
        quorum_set.check_sanity().map_err(ConfigError::QuorumSet)?;
        if let Some(unknown) = quorum_set.nodes().into_iter().find(|n| *n != id && !nodes.contains_key(n)) {
            return Err(ConfigError::UnknownNode(unknown));
        }
        nodes.remove(&id);
        Ok(ServerConfig {
            id,
            bind,
            port: self.port,
            peers: nodes,
            quorum_set,
            data_dir: self.data_dir.clone(),
            timeouts: self.timeouts()?,
            verbosity: match (self.quiet, self.verbose) {
                (true, _) => Verbosity::Quiet,
                (_, true) => Verbosity::Verbose,
                _ => Verbosity::Normal,
            },
            keys: None,
        })
    }

    /// Every node (this one included) by id.
    fn nodes(&self, id: NodeId) -> Result<BTreeMap<NodeId, SocketAddr>, ConfigError> {
        let mut nodes = BTreeMap::new();
        nodes.insert(id, SocketAddr::new(self.bind, self.port));
        let peers: Vec<(NodeId, SocketAddr)> = if self.peers.is_empty() {
            ASSIGNMENT_PORTS.iter().map(|&p| (NodeId(u64::from(p)), SocketAddr::new(self.bind, p))).collect()
        } else {
            self.peers.iter().map(|p| parse_peer(p)).collect::<Result<_, _>>()?
        };
        for (peer, addr) in peers {
            if peer == id && addr.port() == self.port {
                continue; // the node itself, listed among the defaults
            }
            if nodes.insert(peer, addr).is_some() {
                return Err(ConfigError::DuplicateNode(peer));
            }
        }
        Ok(nodes)
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

/// Parses `host:port` (id = port) or `id@host:port`, resolving the host.
pub fn parse_peer(spec: &str) -> Result<(NodeId, SocketAddr), ConfigError> {
    let bad = || ConfigError::BadPeer(spec.to_string());
    let (id, addr) = match spec.split_once('@') {
        Some((id, addr)) => (Some(id.parse::<u64>().map_err(|_| bad())?), addr),
        None => (None, spec),
    };
    let addr = addr.to_socket_addrs().map_err(|_| bad())?.next().ok_or_else(bad)?;
    Ok((NodeId(id.unwrap_or(u64::from(addr.port()))), addr))
}

/// `threshold` of all nodes; by default 3 of 4 for the assignment, otherwise the smallest
/// threshold above two thirds (tolerating ⌊(n-1)/3⌋ Byzantine nodes).
fn default_quorum_set(
    nodes: &BTreeMap<NodeId, SocketAddr>,
    threshold: Option<u32>,
) -> Result<QuorumSet, ConfigError> {
    let n = nodes.len();
    let threshold = threshold.unwrap_or((2 * n as u32) / 3 + 1);
    if threshold == 0 || threshold as usize > n {
        return Err(ConfigError::BadThreshold { threshold, nodes: n });
    }
    Ok(QuorumSet::new(threshold, nodes.keys().copied()))
}

fn read_quorum_file(path: &PathBuf) -> Result<QuorumSet, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::QuorumFileUnreadable(path.clone(), e))?;
    serde_json::from_str(&text).map_err(|e| ConfigError::QuorumFileMalformed(path.clone(), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<ServerConfig, ConfigError> {
        let argv = ["fba_server"].iter().chain(extra).copied();
        ServerArgs::try_parse_from(argv).expect("clap accepts").into_config()
    }

    #[test]
    fn bare_port_is_an_assignment_node() {
        let c = args(&["3001"]).expect("valid");
        assert_eq!(c.id, NodeId(3001));
        assert_eq!(c.quorum_set, QuorumSet::new(3, [3000, 3001, 3002, 3003].map(NodeId)));
        assert_eq!(c.peers.keys().copied().collect::<Vec<_>>(), [3000, 3002, 3003].map(NodeId));
        assert_eq!(c.verbosity, Verbosity::Normal);
    }

    #[test]
    fn explicit_peers_and_threshold() {
        let c = args(&["4000", "--peer", "7@127.0.0.1:4001", "--peer", "127.0.0.1:4002", "--threshold", "2"])
            .expect("valid");
        assert_eq!(c.peers.keys().copied().collect::<Vec<_>>(), [NodeId(7), NodeId(4002)]);
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
    fn nested_quorum_file_is_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("fba-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let good = dir.join("good.json");
        std::fs::write(&good, r#"{"threshold": 2, "inner_sets": [{"threshold": 1, "validators": [3000, 3001]}, {"threshold": 1, "validators": [3002, 3003]}]}"#).expect("write");
        let c = args(&["3000", "--quorum-file", good.to_str().expect("utf8")]).expect("valid");
        assert_eq!(c.quorum_set.inner_sets.len(), 2);
        let bad = dir.join("bad.json");
        std::fs::write(&bad, r#"{"threshold": "two"}"#).expect("write");
        assert!(matches!(
            args(&["3000", "--quorum-file", bad.to_str().expect("utf8")]),
            Err(ConfigError::QuorumFileMalformed(..))
        ));
        let unknown = dir.join("unknown.json");
        std::fs::write(&unknown, r#"{"threshold": 1, "validators": [3000, 9999]}"#).expect("write");
        assert!(matches!(
            args(&["3000", "--quorum-file", unknown.to_str().expect("utf8")]),
            Err(ConfigError::UnknownNode(NodeId(9999)))
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
