//! Bad input and bad configuration: clear errors, no crash, nothing lost.

mod support;

use predicates::prelude::*;
use std::net::UdpSocket;
use std::time::Duration;
use support::{wait_for, Cluster};

fn udp_exchange(socket: &UdpSocket, port: u16, payload: &[u8]) -> Option<String> {
    socket.send_to(payload, ("127.0.0.1", port)).expect("send");
    let mut buf = vec![0u8; 65536];
    socket.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    socket.recv_from(&mut buf).ok().map(|(n, _)| String::from_utf8_lossy(&buf[..n]).to_string())
}

#[test]
fn garbage_is_refused_and_the_cluster_keeps_committing() {
    let cluster = Cluster::start(4, 3, &[]);
    cluster.client(0).args(["set", "foo", "10"]).assert().success();
    cluster.wait_dbs(&[0, 1, 2, 3], r#"{"foo": "$10"}"#);
    let port = cluster.ports[0];
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    // Plain-text requests with bad amounts get a plain-text error reply.
    for bad in ["foo:$abc", "foo:-5", "foo:$1.234", "withdraw foo", "fly me to the moon"] {
        let reply = udp_exchange(&s, port, bad.as_bytes()).expect("an error reply");
        assert!(reply.starts_with(&format!("[{port}] ERROR")), "{bad:?} -> {reply}");
    }
    // Truncated JSON gets a JSON error; raw garbage and oversized datagrams are dropped.
    let reply = udp_exchange(&s, port, br#"{"type":"request","request":{"client":1,"#).expect("error reply");
    assert!(reply.contains(r#""type":"error""#), "{reply}");
    for junk in [vec![0xff, 0x00, 0x13], vec![b'{'; 60_001]] {
        s.send_to(&junk, ("127.0.0.1", port)).expect("send");
    }
    // A well-formed statement from an address that is not a peer is dropped and logged.
    let forged = format!(
        r#"{{"type":"scp","statement":{{"node":{},"slot":1,"quorum_set":{{"threshold":1,"validators":[{}]}},"pledges":{{"type":"EXTERNALIZE","commit":{{"counter":1,"value":"AA=="}},"n_h":1}}}}}}"#,
        cluster.ports[1], cluster.ports[1]
    );
    s.send_to(forged.as_bytes(), ("127.0.0.1", port)).expect("send");
    wait_for("the non-peer statement to be logged", || cluster.log(0).contains("not a configured peer"));
    assert!(cluster.log(0).contains("dropped datagram"), "{}", cluster.log(0));
    // Nothing changed, and the next good request (plain text this time) commits everywhere.
    assert_eq!(cluster.db(0), r#"{"foo": "$10"}"#);
    let reply = udp_exchange(&s, port, b"foo:$12.50").expect("reply");
    assert_eq!(reply, format!("[{port}] OK foo=$12.50"));
    cluster.wait_dbs(&[0, 1, 2, 3], r#"{"foo": "$12.50"}"#);
}

#[test]
fn bad_server_configurations_exit_with_one_clear_line() {
    let dir = support::TempDir::new("badcfg");
    let port = support::free_ports(1)[0].to_string();
    let run = |args: &[&str]| {
        assert_cmd::Command::new(support::server_bin())
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .timeout(support::DEADLINE)
            .assert()
    };
    let one_line = |needle: &'static str| {
        predicate::str::contains(needle).and(predicate::function(|s: &str| s.lines().count() == 1))
    };
    // The assignment's node 3000 (validation fails before anything binds the port).
    run(&["3000", "--threshold", "5"]).failure().stderr(one_line("threshold 5 is impossible with 4 nodes"));
    run(&[&port, "--peer", "nowhere"]).failure().stderr(one_line("bad --peer"));
    run(&[&port, "--quorum-file", "/nonexistent.json"]).failure().stderr(one_line("cannot read quorum file"));
    // Port in use.
    let holder = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let busy = holder.local_addr().expect("addr").port().to_string();
    run(&[&busy]).failure().stderr(one_line("cannot listen on"));
    // A corrupt database is never replaced by an empty one.
    let db = dir.path().join(format!("assignment3_{port}.db"));
    std::fs::write(&db, r#"{"foo": "$30", "bar""#).expect("write");
    run(&[&port]).failure().stderr(one_line("assignment3_"));
    assert_eq!(std::fs::read_to_string(&db).expect("still there"), r#"{"foo": "$30", "bar""#);
    std::fs::write(&db, r#"{"foo": "thirty"}"#).expect("write");
    run(&[&port]).failure().stderr(one_line("assignment3_"));
    // Bad arguments are refused by the parser.
    assert_cmd::Command::new(support::server_bin())
        .arg("notaport")
        .assert()
        .failure()
        .stderr(predicate::str::contains("notaport"));
}

#[test]
fn bad_client_commands_and_silent_nodes_fail_clearly() {
    let port = support::free_ports(1)[0].to_string();
    let client = || {
        let mut c = assert_cmd::Command::new(support::client_bin());
        c.timeout(support::DEADLINE);
        c
    };
    client()
        .args([&port, "set", "foo", "ten"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("bad command"));
    client()
        .args([&port, "withdraw", "foo", "-5"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("bad command"));
    client()
        .args([&port, "--attempts", "2", "--timeout-ms", "100", "get", "foo"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("no answer").and(predicate::str::contains("after 2 attempts")));
}
