//! Setting a network up: `keygen`, key files, development mode, quorum safety,
//! `check-quorum`, the data-directory lock and `--verify` on an empty directory, all through
//! real `fba_server` processes.

mod support;

use fba::keys::KeyFile;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use support::{free_ports, server_bin, wait_for, TempDir, DEADLINE};

/// Runs `fba_server ARGS` to completion.
fn server(args: &[&str]) -> Output {
    let mut cmd = assert_cmd::Command::new(server_bin());
    cmd.args(args).timeout(DEADLINE).output().expect("fba_server runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Asserts `out` failed with exit code 1 and exactly one line on stderr containing every
/// one of `needles`; returns that line.
fn refused(out: &Output, needles: &[&str]) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "expected exit 1, got {:?}: {err}", out.status);
    assert_eq!(err.lines().count(), 1, "expected one line on stderr: {err:?}");
    for needle in needles {
        assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    }
    err
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// `fba_server keygen --out DIR NODES...`.
fn keygen(dir: &Path, nodes: &[String]) -> Output {
    let mut args = vec!["keygen", "--out", path_str(dir)];
    args.extend(nodes.iter().map(String::as_str));
    server(&args)
}

/// `n` loopback nodes on free ports, as `127.0.0.1:PORT`, and their ports.
fn loopback_nodes(n: usize) -> (Vec<String>, Vec<u16>) {
    let ports = free_ports(n);
    (ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(), ports)
}

/// A running `fba_server`, killed on drop; its output goes to a log file.
struct Node {
    child: Child,
    log: PathBuf,
}

impl Node {
    /// Starts `fba_server ARGS` and waits until it listens (panics if it exits first).
    fn start(log: PathBuf, args: &[&str]) -> Node {
        let file = fs::File::create(&log).expect("log file");
        let child = Command::new(server_bin())
            .args(args)
            .stdout(Stdio::from(file.try_clone().expect("log file")))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn fba_server");
        let mut node = Node { child, log };
        wait_for("the node to listen", || {
            assert!(node.is_running(), "the node exited: {}", node.log());
            node.log().contains("listening on")
        });
        node
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn keygen_writes_one_private_file_per_node_that_a_node_starts_with() {
    let dir = TempDir::new("keygen");
    let keys = dir.path().join("keys");
    let (nodes, ports) = loopback_nodes(4);
    let out = keygen(&keys, &nodes);
    assert!(out.status.success(), "keygen failed: {}", stderr(&out));
    let text = stdout(&out);
    for port in &ports {
        let path = keys.join(format!("{port}.key"));
        assert!(text.contains(&format!("wrote {}", path.display())), "{text}");
        assert!(text.contains(&format!("fba_server {port} --bind 127.0.0.1 --key-file {}", path.display())));
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        let file = KeyFile::load(&path).expect("the key file loads");
        assert_eq!(file.id.0, u64::from(*port));
        assert_eq!(file.peers().count(), 3);
    }
    #[cfg(unix)]
    assert_eq!(mode(&keys), 0o700);
    assert_eq!(fs::read_dir(&keys).expect("list").count(), 4);
    // A node starts on its key file alone: its id, address and peers come from it.
    let key = keys.join(format!("{}.key", ports[0]));
    let port = ports[0].to_string();
    let data = dir.path().join("data");
    let node = Node::start(
        dir.path().join("node.log"),
        &[&port, "--key-file", path_str(&key), "--data-dir", path_str(&data)],
    );
    assert!(node.log().contains(&format!("listening on 127.0.0.1:{port}")), "{}", node.log());
}

#[test]
fn keygen_refuses_to_overwrite_and_then_writes_nothing() {
    let dir = TempDir::new("keygen-exists");
    let keys = dir.path().join("keys");
    fs::create_dir_all(&keys).expect("mkdir");
    let (nodes, ports) = loopback_nodes(3);
    let existing = keys.join(format!("{}.key", ports[1]));
    fs::write(&existing, "precious").expect("write");
    let out = keygen(&keys, &nodes);
    refused(&out, &[path_str(&existing), "refusing to overwrite"]);
    assert_eq!(fs::read_to_string(&existing).expect("still there"), "precious");
    assert_eq!(fs::read_dir(&keys).expect("list").count(), 1, "no other file was written");
    // Usage errors are clap's: exit 2.
    assert_eq!(server(&["keygen", "--out", path_str(&keys)]).status.code(), Some(2));
    refused(&keygen(&keys, &[nodes[0].clone()]), &["at least 2"]);
}

#[cfg(unix)]
#[test]
fn a_node_refuses_an_exposed_unreadable_or_mismatched_key_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("keyfile-bad");
    let keys = dir.path().join("keys");
    let (nodes, ports) = loopback_nodes(3);
    assert!(keygen(&keys, &nodes).status.success());
    let data = path_str(dir.path()).to_string();
    let key = |i: usize| keys.join(format!("{}.key", ports[i]));
    let run = |port: u16, key: &Path, extra: &[&str]| {
        let port = port.to_string();
        server(&[&[port.as_str(), "--key-file", path_str(key), "--data-dir", &data], extra].concat())
    };
    // World-readable.
    fs::set_permissions(key(0), fs::Permissions::from_mode(0o644)).expect("chmod");
    refused(&run(ports[0], &key(0), &[]), &[path_str(&key(0)), "mode 0644", "chmod 600"]);
    // Unreadable (missing).
    let missing = keys.join("missing.key");
    refused(&run(ports[0], &missing, &[]), &["cannot read key file", path_str(&missing)]);
    // Another node's file (the port does not match), and a peer that is not the file's.
    refused(&run(ports[2], &key(1), &[]), &[path_str(&key(1)), &format!("port {}", ports[2])]);
    let stranger = format!("127.0.0.1:{}", free_ports(1)[0]);
    let out = run(ports[1], &key(1), &["--peer", &nodes[0], "--peer", &nodes[2], "--peer", &stranger]);
    refused(&out, &[path_str(&key(1)), &stranger]);
    // (A --peer list naming only some of the file's nodes is allowed: the others are
    // spares, see tests/membership.rs.)
    // Not a key file at all.
    let junk = keys.join("junk.key");
    fs::write(&junk, "{\"format\": \"something else\"}").expect("write");
    fs::set_permissions(&junk, fs::Permissions::from_mode(0o600)).expect("chmod");
    refused(&run(ports[0], &junk, &[]), &[path_str(&junk), "format"]);
}

#[test]
fn without_a_key_file_only_loopback_is_allowed() {
    let dir = TempDir::new("devmode");
    let out = server(&["22000", "--bind", "10.1.2.3", "--data-dir", path_str(dir.path())]);
    refused(
        &out,
        &["refusing to bind 10.1.2.3 without --key-file", "fba_server keygen --out keys 10.1.2.3:22000"],
    );
    let out = server(&["22000", "--peer", "10.1.2.4:22000", "--data-dir", path_str(dir.path())]);
    refused(&out, &["refusing peer 10.1.2.4:22000", "keygen"]);
    assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 0, "nothing was created");
}

#[test]
fn thresholds_that_let_quorums_split_are_refused_unless_unsafe_quorum() {
    let dir = TempDir::new("unsafe");
    let (nodes, ports) = loopback_nodes(4);
    let port = ports[0].to_string();
    let mut args = vec![port.as_str(), "--data-dir", path_str(dir.path()), "--threshold", "2"];
    for peer in &nodes[1..] {
        args.extend(["--peer", peer.as_str()]);
    }
    let line =
        refused(&server(&args), &["threshold 2 of 4 lets two disjoint quorums decide", "--unsafe-quorum"]);
    let sorted: Vec<String> = {
        let mut p = ports.clone();
        p.sort();
        p.iter().map(u16::to_string).collect()
    };
    let expected = format!("{{{}, {}}} and {{{}, {}}}", sorted[0], sorted[1], sorted[2], sorted[3]);
    assert!(line.contains(&expected), "{line}");
    args.push("--unsafe-quorum");
    let mut node = Node::start(dir.path().join("node.log"), &args);
    assert!(node.is_running());
}

/// Writes a network file of `n` nodes 1..=n, each with a flat `threshold`-of-all set.
fn network_file(dir: &Path, name: &str, ids: &[u64], all: &[u64], threshold: u32) -> String {
    let nodes: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| serde_json::json!({"node": id, "qset": {"threshold": threshold, "validators": all}}))
        .collect();
    let path = dir.join(name);
    fs::write(&path, serde_json::json!({ "nodes": nodes }).to_string()).expect("write");
    path_str(&path).to_string()
}

/// The two sets of `... disjoint quorums {a, b} and {c, d}`.
fn counter_example(line: &str) -> (Vec<u64>, Vec<u64>) {
    let sets: Vec<Vec<u64>> = line
        .split('{')
        .skip(1)
        .map(|s| s.split('}').next().unwrap_or("").split(", ").map(|n| n.parse().expect("an id")).collect())
        .collect();
    assert_eq!(sets.len(), 2, "{line}");
    (sets[0].clone(), sets[1].clone())
}

#[test]
fn check_quorum_accepts_intersecting_networks_and_prints_a_split() {
    let dir = TempDir::new("check-quorum");
    let all = [1, 2, 3, 4];
    let good = network_file(dir.path(), "good.json", &all, &all, 3);
    let out = server(&["check-quorum", &good]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("quorum intersection holds: 4 nodes"), "{}", stdout(&out));

    let bad = network_file(dir.path(), "split.json", &all, &all, 2);
    let out = server(&["check-quorum", &bad]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("quorum intersection FAILS: disjoint quorums {"), "{text}");
    let (a, b) = counter_example(&text);
    assert!(a.len() == 2 && b.len() == 2 && a.iter().all(|n| !b.contains(n)), "{text}");

    // A network split over several files is merged; a node described twice is an error.
    let half1 = network_file(dir.path(), "half1.json", &[1, 2], &all, 3);
    let half2 = network_file(dir.path(), "half2.json", &[3, 4], &all, 3);
    let out = server(&["check-quorum", &half1, &half2]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("holds: 4 nodes"), "{}", stdout(&out));
    refused(&server(&["check-quorum", &half1, &good]), &["node 1"]);
    refused(&server(&["check-quorum", path_str(&dir.path().join("none.json"))]), &["cannot read"]);
    assert_eq!(server(&["check-quorum"]).status.code(), Some(2));
}

#[test]
fn a_second_process_on_the_same_data_directory_and_port_is_refused() {
    let dir = TempDir::new("lock");
    let port = free_ports(1)[0].to_string();
    let me = format!("127.0.0.1:{port}");
    // A one-node network (its only --peer is itself), so it commits alone.
    let args = [port.as_str(), "--peer", me.as_str(), "--data-dir", path_str(dir.path())];
    let mut first = Node::start(dir.path().join("first.log"), &args);
    let pid = first.child.id();
    let lock = dir.path().join(format!("assignment3_{port}.lock"));
    let line = refused(&server(&args), &[&format!("pid {pid}, port {port}"), path_str(&lock), "in use"]);
    assert!(line.contains(path_str(dir.path())), "{line}");
    assert!(first.is_running(), "the first node keeps running: {}", first.log());
    let mut client = assert_cmd::Command::new(support::client_bin());
    client.args([&port, "set", "foo", "10"]).timeout(DEADLINE).assert().success();
    let db = dir.path().join(format!("assignment3_{port}.db"));
    wait_for("the first node to write its database", || {
        fs::read_to_string(&db).is_ok_and(|s| s == r#"{"foo": "$10"}"#)
    });
}

#[test]
fn verify_fails_on_a_directory_without_a_ledger_and_creates_nothing() {
    let dir = TempDir::new("verify-empty");
    let port = free_ports(1)[0].to_string();
    let out = server(&[&port, "--data-dir", path_str(dir.path()), "--verify"]);
    refused(&out, &[&format!("assignment3_{port}.ledger"), "does not exist"]);
    assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 0, "nothing was created");
    let missing = dir.path().join("missing");
    let out = server(&[&port, "--data-dir", path_str(&missing), "--verify"]);
    refused(&out, &["does not exist"]);
    assert!(!missing.exists(), "the directory was not created");
}
