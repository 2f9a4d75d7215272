//! `fba_server <port>`: one node of the replicated wallet store. See `--help`.
//!
//! Two subcommands, chosen by the first argument and each with its own `--help`:
//! `fba_server keygen --out DIR NODE...` writes one key file per node, and
//! `fba_server check-quorum FILE...` checks a network's quorum intersection.
//! Exit codes: 0 success, 1 failure (or a counter-example), 2 usage error.

use clap::{CommandFactory, FromArgMatches, Parser};
use fba::config::{ConfigError, NodeSpec, ServerArgs};
use fba::keys::{self, KeyFile, KeygenNode};
use fba::quorum::intersection::{self, Intersection, Network};
use fba::quorum::NodeId;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `fba_server keygen`: keys for a whole network, one file per node.
#[derive(Parser, Debug)]
#[command(
    name = "fba_server keygen",
    about = "Write one key file per node (DIR/<id>.key, mode 0600): a random network id and a \
             random key per pair of nodes. Refuses to overwrite any existing key file."
)]
struct KeygenArgs {
    /// Directory for the key files (created with mode 0700 if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Every node of the network: ID@HOST:PORT, or HOST:PORT (id derived from the address).
    /// Nodes may be listed ahead of need: a node runs with the peers its `--peer` flags
    /// name, and the others can be added later by `fba_client PORT reconfigure`.
    #[arg(value_name = "NODE", required = true)]
    nodes: Vec<String>,
    /// A client id (printed by `fba_client keygen`) allowed to change the cluster's
    /// membership with signed `reconfigure` requests; repeat for several.
    #[arg(long = "operator", value_name = "CLIENT_ID")]
    operators: Vec<u64>,
}

/// `fba_server check-quorum`: quorum intersection of a whole network.
#[derive(Parser, Debug)]
#[command(
    name = "fba_server check-quorum",
    about = "Check that every two quorums of a network intersect; print two disjoint quorums if not. \
             A FILE is {\"nodes\": [{\"node\": 1, \"qset\": {\"threshold\": 2, \"validators\": [1, 2, 3]}}, ...]} \
             or one node's {\"node\": 1, \"qset\": {...}}; several FILEs are merged (a node may appear once)."
)]
struct CheckQuorumArgs {
    /// Network description files.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let rest = || args.iter().skip(2).cloned();
    match args.get(1).and_then(|a| a.to_str()) {
        Some("keygen") => {
            keygen(KeygenArgs::parse_from(std::iter::once("fba_server keygen".into()).chain(rest())))
        }
        Some("check-quorum") => check_quorum(CheckQuorumArgs::parse_from(
            std::iter::once("fba_server check-quorum".into()).chain(rest()),
        )),
        _ => node(args),
    }
}

/// The node's options: the command line (a usage error exits with clap's message and
/// code 2) over the `--config` file.
fn node_args(argv: Vec<OsString>) -> Result<ServerArgs, ConfigError> {
    let matches = ServerArgs::command().get_matches_from(argv);
    let args = ServerArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    args.merge_config_file(&matches)
}

/// Runs one node (or `--verify`).
fn node(argv: Vec<OsString>) -> ExitCode {
    let args = match node_args(argv) {
        Ok(args) => args,
        Err(e) => return fail("fba_server", e),
    };
    if args.verify {
        let Some(port) = args.port else { return fail("fba_server", ConfigError::NoPort) };
        return match fba::server::verify(&args.data_dir, port) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => fail("fba_server", e),
        };
    }
    let config = match args.into_config() {
        Ok(config) => config,
        Err(e) => return fail("fba_server", e),
    };
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    }) {
        return fail("fba_server", format_args!("cannot install the Ctrl-C handler: {e}"));
    }
    match fba::server::run(config, stop_rx) {
        Ok(()) => ExitCode::SUCCESS,
        // The node logged why it stopped (on stderr).
        Err(_) => ExitCode::FAILURE,
    }
}

/// Prints `who: problem` on stderr; exit code 1.
fn fail(who: &str, problem: impl fmt::Display) -> ExitCode {
    eprintln!("{who}: {problem}");
    ExitCode::FAILURE
}

/// `keygen`: generates and writes the files, then says how to start each node.
fn keygen(args: KeygenArgs) -> ExitCode {
    let written = args
        .nodes
        .iter()
        .map(|n| KeygenNode::parse(n))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|nodes| keys::generate(&nodes))
        .map(|files| files.into_iter().map(|f| f.with_operators(&args.operators)).collect::<Vec<_>>())
        .and_then(|files| Ok((keys::write_key_files(&args.out, &files)?, files)));
    let (paths, files) = match written {
        Ok(written) => written,
        Err(e) => return fail("fba_server keygen", e),
    };
    for (path, file) in paths.iter().zip(&files) {
        println!("wrote {} (node {}, {})", path.display(), file.id, file.address);
    }
    println!("copy each key file to its node's host (keep it mode 600) and start the node there:");
    for (path, file) in paths.iter().zip(&files) {
        println!("  {}", start_command(path, file));
    }
    ExitCode::SUCCESS
}

/// `on 10.0.0.1: fba_server 22000 --bind 10.0.0.1 --key-file keys/1.key`.
fn start_command(path: &Path, file: &KeyFile) -> String {
    let spec = NodeSpec { id: None, address: file.address.clone() };
    let host = spec.host();
    let bind = match host.parse::<IpAddr>() {
        Ok(ip) => format!(" --bind {ip}"),
        Err(_) => String::new(), // a host name: the node binds what it resolves to
    };
    format!("on {host}: fba_server {}{bind} --key-file {}", spec.port(), path.display())
}

/// Why `check-quorum` could not check.
#[derive(Debug)]
enum CheckQuorumError {
    /// A file could not be read.
    Read(PathBuf, std::io::Error),
    /// A file is not a network description.
    Parse(PathBuf, intersection::NetworkFileError),
    /// The files together describe a node twice.
    Merge(intersection::NetworkFileError),
}

impl fmt::Display for CheckQuorumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckQuorumError::Read(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            CheckQuorumError::Parse(p, e) => write!(f, "{}: {e}", p.display()),
            CheckQuorumError::Merge(e) => write!(f, "the files together: {e}"),
        }
    }
}

/// Reads and merges every file.
fn read_network(files: &[PathBuf]) -> Result<Network, CheckQuorumError> {
    let networks = files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).map_err(|e| CheckQuorumError::Read(path.clone(), e))?;
            intersection::parse_network(&text).map_err(|e| CheckQuorumError::Parse(path.clone(), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    intersection::merge(networks).map_err(CheckQuorumError::Merge)
}

/// `{1, 2, 3}`.
fn show_set(set: &BTreeSet<NodeId>) -> String {
    let ids: Vec<String> = set.iter().map(NodeId::to_string).collect();
    format!("{{{}}}", ids.join(", "))
}

/// `check-quorum`: exit 0 when intersection holds, 1 otherwise (or on bad input).
fn check_quorum(args: CheckQuorumArgs) -> ExitCode {
    let network = match read_network(&args.files) {
        Ok(network) => network,
        Err(e) => return fail("fba_server check-quorum", e),
    };
    let named: BTreeSet<NodeId> = network.values().flat_map(|q| q.nodes()).collect();
    let undescribed: BTreeSet<NodeId> = named.into_iter().filter(|n| !network.contains_key(n)).collect();
    if !undescribed.is_empty() {
        println!(
            "note: nodes named in quorum sets but not described (never in a quorum): {}",
            show_set(&undescribed)
        );
    }
    match intersection::check(&network) {
        Intersection::Holds { minimal_quorums } => {
            println!("quorum intersection holds: {} nodes, {minimal_quorums} minimal quorums", network.len());
            ExitCode::SUCCESS
        }
        Intersection::Split(a, b) => {
            println!("quorum intersection FAILS: disjoint quorums {} and {}", show_set(&a), show_set(&b));
            ExitCode::FAILURE
        }
        Intersection::NoQuorum => {
            println!("quorum intersection FAILS: there is no quorum at all (the network can never decide)");
            ExitCode::FAILURE
        }
    }
}
