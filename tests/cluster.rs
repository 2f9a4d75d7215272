//! The assignment, run on real processes over real UDP.

mod support;

use predicates::prelude::*;
use support::{wait_for, Cluster};

const ASSIGNMENT_DB: &str = r#"{"foo": "$30", "bar": "$10"}"#;

/// Runs the default client against node 0 and checks its six replies.
fn run_assignment_client(cluster: &Cluster) {
    let port = cluster.ports[0];
    let assert = cluster.client(0).assert().success();
    let out = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    let lines: Vec<&str> = out.lines().collect();
    let expected = ["foo:$10 -> OK foo=$10", "bar:$30 -> OK bar=$30", "foo:$20 -> OK foo=$20"];
    let expected =
        expected.iter().chain(&["bar:$20 -> OK bar=$20", "foo:$30 -> OK foo=$30", "bar:$10 -> OK bar=$10"]);
    assert_eq!(lines.len(), 6, "six replies: {out}");
    for (line, want) in lines.iter().zip(expected) {
        assert_eq!(*line, format!("[{port}] {want}"));
    }
}

#[test]
fn four_nodes_replicate_the_assignment() {
    let cluster = Cluster::start(4, 3, &[]);
    run_assignment_client(&cluster);
    cluster.wait_dbs(&[0, 1, 2, 3], ASSIGNMENT_DB);
    for i in 0..4 {
        // The file is written just before its entries are printed: wait for the line.
        wait_for("the final entries line", || cluster.log(i).contains("db 2 entries: {foo: $30, bar: $10}"));
        let log = cluster.log(i);
        assert!(
            log.contains("recv PREPARE from") && log.contains("send CONFIRM slot="),
            "protocol lines: {log}"
        );
        assert!(log.contains("EXTERNALIZE slot=6"), "six slots: {log}");
        // Entries printed at start and after each of the six changes; the last shows both.
        assert_eq!(log.matches("] db ").count(), 7, "{log}");
        assert!(log.contains("db 2 entries: {foo: $30, bar: $10}"), "{log}");
    }
    // Running the assignment again changes nothing.
    run_assignment_client(&cluster);
    cluster.wait_dbs(&[0, 1, 2, 3], ASSIGNMENT_DB);
}

#[test]
fn three_nodes_finish_and_agree_with_the_fourth_never_started() {
    let cluster = Cluster::start(4, 3, &[3]);
    run_assignment_client(&cluster);
    cluster.wait_dbs(&[0, 1, 2], ASSIGNMENT_DB);
    assert_eq!(cluster.db(3), "", "the node that never ran has no file");
}

#[test]
fn withdrawals_below_zero_are_refused_by_every_node_alike() {
    let cluster = Cluster::start(4, 3, &[]);
    cluster
        .client(1)
        .args(["set", "alice", "10"])
        .assert()
        .success()
        .stdout(predicate::str::contains("OK alice=$10"));
    cluster
        .client(2)
        .args(["withdraw", "alice", "$10.01"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("insufficient funds"));
    cluster
        .client(3)
        .args(["deposit", "alice", "0.5"])
        .assert()
        .success()
        .stdout(predicate::str::contains("OK alice=$10.50"));
    cluster
        .client(0)
        .args(["withdraw", "alice", "10.50"])
        .assert()
        .success()
        .stdout(predicate::str::contains("OK alice=$0"));
    cluster
        .client(0)
        .args(["get", "alice"])
        .assert()
        .success()
        .stdout(predicate::str::contains("OK alice=$0"));
    cluster
        .client(0)
        .args(["get", "bob"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("no such wallet"));
    cluster.wait_dbs(&[0, 1, 2, 3], r#"{"alice": "$0"}"#);
    for i in 0..4 {
        wait_for("every node to log the refusal", || {
            cluster.log(i).contains("withdraw alice $10.01 -> ERROR insufficient funds")
        });
    }
}

#[test]
fn concurrent_clients_on_different_nodes_end_identical() {
    let cluster = Cluster::start(4, 3, &[]);
    let script = |name: &str| {
        let path = cluster.dir.path().join(format!("{name}.txt"));
        let lines: Vec<String> = (0..15).map(|i| format!("deposit {name} {i}\ndeposit shared 1")).collect();
        std::fs::write(&path, lines.join("\n")).expect("script");
        path
    };
    let (a, b) = (script("a"), script("b"));
    let spawn = |node: usize, file: &std::path::Path| {
        std::process::Command::new(support::client_bin())
            .arg(cluster.ports[node].to_string())
            .arg("--file")
            .arg(file)
            .output()
            .expect("client runs")
    };
    let (out_a, out_b) = std::thread::scope(|s| {
        let ta = s.spawn(|| spawn(0, &a));
        let tb = s.spawn(|| spawn(2, &b));
        (ta.join().expect("client a"), tb.join().expect("client b"))
    });
    assert!(out_a.status.success() && out_b.status.success(), "{out_a:?} {out_b:?}");
    // 0 + 1 + ... + 14 = 105 each, and 30 deposits of $1 into the shared wallet; the order
    // of wallets in the file depends on which request was decided first.
    wait_for("all files identical and complete", || {
        let dbs: Vec<String> = (0..4).map(|i| cluster.db(i)).collect();
        let complete =
            [r#""a": "$105""#, r#""b": "$105""#, r#""shared": "$30""#].iter().all(|w| dbs[0].contains(w));
        dbs.iter().all(|d| d == &dbs[0]) && complete
    });
}

#[test]
fn a_retransmitted_request_is_applied_once_whichever_node_gets_it() {
    let cluster = Cluster::start(4, 3, &[]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(support::DEADLINE)).expect("timeout");
    let session = support::RawClient::new(cluster.ports[0], 77).register().expect("a session");
    let request = format!(
        r#"{{"type":"request","request":{{"client":77,"seq":1,"session":{session},"op":{{"type":"deposit","key":"x","amount":"$5"}}}}}}"#
    );
    let mut replies = vec![];
    for node in [0, 1, 0] {
        socket.send_to(request.as_bytes(), ("127.0.0.1", cluster.ports[node])).expect("send");
        let mut buf = [0u8; 2048];
        let (n, _) = socket.recv_from(&mut buf).expect("a reply");
        let reply: serde_json::Value = serde_json::from_slice(&buf[..n]).expect("json reply");
        replies.push(reply["reply"].clone());
    }
    assert_eq!(replies[0]["outcome"]["balance"], "$5");
    assert!(replies.iter().all(|r| *r == replies[0]), "identical cached replies: {replies:?}");
    cluster.wait_dbs(&[0, 1, 2, 3], r#"{"x": "$5"}"#);
}

#[test]
fn ctrl_c_stops_a_node_cleanly_with_its_database_complete() {
    let mut cluster = Cluster::start(4, 3, &[]);
    cluster.client(0).args(["set", "foo", "1"]).assert().success();
    cluster.wait_dbs(&[0, 1, 2, 3], r#"{"foo": "$1"}"#);
    let pid = cluster.pid(2).expect("running").to_string();
    std::process::Command::new("kill").args(["-INT", &pid]).status().expect("kill runs");
    let status = cluster.wait_exit(2);
    assert!(status.success(), "clean exit: {status:?}");
    assert!(cluster.log(2).contains("shutting down; database complete"), "{}", cluster.log(2));
    assert_eq!(cluster.db(2), r#"{"foo": "$1"}"#);
}
