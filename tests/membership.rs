//! Membership changes through consensus, on real processes in development mode:
//! `fba_client PORT reconfigure ...` is decided in a slot, recorded in the ledger and
//! adopted by every node at the slot boundary. A fifth node joins under load by catching
//! up; a removed node stops and refuses to start again; an unsafe configuration is refused
//! and changes nothing; a restarted node takes its membership from the ledger, not from
//! its command line.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use support::{deposit_op, parse_db, wait_for, Cluster, RawClient};

/// The first four nodes of a five-port cluster, started as a 4-node cluster (3 of 4).
fn four_of_five() -> Cluster {
    let mut cluster = Cluster::new(5, 3);
    for i in 0..4 {
        cluster.start_node_among(i, &[0, 1, 2, 3], 3);
    }
    cluster
}

/// A client depositing $1 at a time into `load` through `port` until `stop`; counts the
/// acknowledged deposits.
fn load(port: u16, stop: Arc<AtomicBool>, acked: Arc<AtomicU64>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut client = RawClient::new(port, 77);
        while !stop.load(Ordering::Relaxed) {
            let reply = client.call(&deposit_op("load", 1)).expect("every deposit is answered");
            assert_eq!(reply["outcome"]["status"], "ok", "deposit refused: {reply}");
            acked.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Runs `fba_client` against node `i` with `args`; its exit code and standard output.
fn client(cluster: &Cluster, i: usize, args: &[&str]) -> (i32, String) {
    let out = cluster.client(i).args(args).output().expect("fba_client runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_fifth_node_joins_under_load_and_every_database_ends_identical() {
    let mut cluster = four_of_five();
    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let loader = load(cluster.ports[1], Arc::clone(&stop), Arc::clone(&acked));
    wait_for("the load to be under way", || acked.load(Ordering::Relaxed) >= 20);

    // The new node starts first: the members ignore it until they have added it.
    cluster.start_node_among(4, &[0, 1, 2, 3, 4], 4);
    let fifth = format!("127.0.0.1:{}", cluster.ports[4]);
    let (code, out) = client(&cluster, 0, &["reconfigure", "--add", &fifth]);
    assert_eq!(code, 0, "reconfigure failed: {out}");
    let mut ports = cluster.ports.clone();
    ports.sort_unstable();
    let ids: Vec<String> = ports.iter().map(u16::to_string).collect();
    assert!(out.contains(&format!("OK reconfigured: 4 of {{{}}}", ids.join(", "))), "{out}");

    let at_join = acked.load(Ordering::Relaxed);
    wait_for("the load to go on with five members", || acked.load(Ordering::Relaxed) >= at_join + 30);
    stop.store(true, Ordering::Relaxed);
    loader.join().expect("the load thread");

    // The new member serves, and takes part: with 4 of 5 needed, one old member down
    // leaves exactly a quorum that includes it.
    cluster.kill(3);
    let (code, out) = client(&cluster, 4, &["set", "joined", "1"]);
    assert_eq!(code, 0, "the new member did not serve: {out}");
    let expected = cluster.db(4);
    let db = parse_db(&expected);
    assert_eq!(db.get("joined").map(String::as_str), Some("$1"), "{expected}");
    let deposits = acked.load(Ordering::Relaxed);
    assert_eq!(db.get("load"), Some(&format!("${deposits}")), "every acknowledged deposit applied once");
    cluster.wait_dbs(&[0, 1, 2, 4], &expected);
    assert!(
        cluster.log(4).contains("membership from the ledger")
            || cluster.log(4).contains("membership changed")
    );
    let status = cluster.client(4).args(["status", "--json"]).output().expect("status runs");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["quorum_set"]["threshold"], 4, "{status}");
    assert_eq!(status["peers"].as_array().map(Vec::len), Some(4), "{status}");
}

#[test]
fn a_removed_node_stops_refuses_to_restart_and_the_others_carry_on() {
    let mut cluster = Cluster::start(4, 3, &[]);
    assert_eq!(client(&cluster, 0, &["set", "before", "1"]).0, 0);
    let removed = cluster.ports[3].to_string();
    let (code, out) = client(&cluster, 1, &["reconfigure", "--remove", &removed, "--threshold", "2"]);
    assert_eq!(code, 0, "reconfigure failed: {out}");
    assert!(out.contains("OK reconfigured: 2 of {"), "{out}");

    let status = cluster.wait_exit(3);
    assert!(status.success(), "a removed node stops cleanly: {status:?}");
    assert!(cluster.log(3).contains("removed from the cluster"), "{}", cluster.log(3));

    // Two of the three remaining members now make a quorum: one more may go down.
    cluster.kill(2);
    assert_eq!(client(&cluster, 0, &["set", "after", "2"]).0, 0, "the others carry on with 2 of 3");
    let expected = cluster.db(0);
    assert!(expected.contains("after"), "{expected}");
    cluster.wait_dbs(&[0, 1], &expected);

    // The removed node does not come back with its old command line...
    let out = cluster.server_command(3).output().expect("the node runs");
    assert!(!out.status.success(), "a removed node started again");
    assert!(String::from_utf8_lossy(&out.stderr).contains("was removed from the cluster"));

    // ... and a restarted member takes its membership from the ledger, not its flags.
    cluster.kill(1);
    cluster.start_node(1);
    assert!(cluster.log(1).contains("membership from the ledger's last reconfiguration: 2 of {"));
    assert_eq!(client(&cluster, 1, &["set", "restarted", "3"]).0, 0, "2 of {{0, 1, 2}} with 2 down");
    assert!(
        !cluster.log(1).contains("membership changed"),
        "adopted at start-up, not again at the next slot"
    );
    cluster.start_node(2);
    let expected = cluster.db(1);
    cluster.wait_dbs(&[0, 1, 2], &expected);
}

#[test]
fn an_unsafe_or_malformed_reconfiguration_is_refused_and_changes_nothing() {
    let cluster = Cluster::start(4, 3, &[]);
    let (code, out) = client(&cluster, 0, &["reconfigure", "--threshold", "2"]);
    assert_eq!(code, 1, "an unsafe configuration is a refusal: {out}");
    assert!(out.contains("unsafe") && out.contains("disjoint quorums"), "{out}");

    let only = format!("1 {}@127.0.0.1:{}", cluster.ports[0], cluster.ports[0]);
    let full: Vec<&str> = std::iter::once("reconfigure").chain(only.split(' ')).collect();
    let (code, out) = client(&cluster, 0, &full);
    assert_eq!(code, 1, "dropping three of four members at once: {out}");
    assert!(out.contains("fewer than the current threshold"), "{out}");

    let (code, _) = client(&cluster, 0, &["reconfigure", "--remove", "1"]);
    assert_eq!(code, 2, "removing a node that is not a member is a usage error");

    let (code, out) = client(&cluster, 0, &["--json", "reconfigure", "--threshold", "5"]);
    assert_eq!(code, 1, "{out}");
    let first = out.lines().next().unwrap_or_default();
    let reply: serde_json::Value = serde_json::from_str(first).expect("one JSON object on stdout");
    assert_eq!(reply["status"], "configuration_refused", "{reply}");

    assert_eq!(client(&cluster, 2, &["set", "still", "4"]).0, 0, "the cluster still works");
    for i in 0..4 {
        let status = cluster.client(i).args(["status", "--json"]).output().expect("status runs");
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
        assert_eq!(status["quorum_set"]["threshold"], 3, "node {i}: {status}");
        assert!(!cluster.log(i).contains("membership changed"), "node {i} changed membership");
    }
}

/// A client key made with `fba_client keygen --json` at `path`; its client id.
fn client_key_at(cluster: &Cluster, path: &std::path::Path) -> u64 {
    let out = std::process::Command::new(support::client_bin())
        .args(["keygen", "--json", "--out"])
        .arg(path)
        .env("FBA_CLIENT_HOME", cluster.dir.path().join("client-home"))
        .output()
        .expect("fba_client keygen runs");
    assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).expect("keygen JSON");
    made["client"].as_u64().expect("a client id")
}

#[test]
fn an_authenticated_cluster_adds_a_spare_node_on_its_operators_word_only() {
    let mut cluster = Cluster::new(5, 3);
    // The cluster's own client key (the one `cluster.client` signs with) is the operator's.
    let operator = client_key_at(&cluster, &cluster.dir.path().join("client.key"));
    cluster.with_keys_args(&["--operator", &operator.to_string()]);
    for i in 0..4 {
        cluster.start_node_among(i, &[0, 1, 2, 3], 3);
    }
    assert!(cluster.log(0).contains("is not a peer (no --peer names it): a spare"), "{}", cluster.log(0));
    assert_eq!(client(&cluster, 0, &["set", "before", "1"]).0, 0);
    cluster.start_node_among(4, &[0, 1, 2, 3, 4], 4);

    // Anyone else's signed reconfiguration is refused by the wallet on every node.
    let stranger = cluster.dir.path().join("stranger.key");
    client_key_at(&cluster, &stranger);
    let fifth = format!("127.0.0.1:{}", cluster.ports[4]);
    let out = assert_cmd::Command::new(support::client_bin())
        .arg(cluster.ports[0].to_string())
        .arg("--key")
        .arg(&stranger)
        .args(["reconfigure", "--add", &fifth])
        .env("FBA_CLIENT_HOME", cluster.dir.path().join("client-home"))
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .expect("fba_client runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("is not an operator"), "{stdout}");

    let (code, out) = client(&cluster, 0, &["reconfigure", "--add", &fifth]);
    assert_eq!(code, 0, "the operator's reconfiguration: {out}");
    assert!(out.contains("OK reconfigured: 4 of {"), "{out}");
    let (code, out) = client(&cluster, 4, &["set", "joined", "2"]);
    assert_eq!(code, 0, "the new member serves: {out}");
    let expected = cluster.db(4);
    assert!(
        expected.contains("before") && expected.contains("joined"),
        "{expected}\n{out}\n{}",
        cluster.log(4)
    );
    cluster.wait_dbs(&[0, 1, 2, 3], &expected);
}
