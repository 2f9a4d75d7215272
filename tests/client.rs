//! `fba_client` as a user and a script see it: keys, signed requests, exit codes, `--json`,
//! re-running a command whose outcome was unknown, other nodes and host names. Every client
//! here keeps its keys and state in a temporary `FBA_CLIENT_HOME`.

mod support;

use predicates::prelude::*;
use serde_json::{json, Value};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use support::{client_bin, free_ports, Cluster, TempDir, DEADLINE};

/// `fba_client` with its home in `home`, not aimed at any node yet.
fn client(home: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(client_bin());
    cmd.env("FBA_CLIENT_HOME", home).timeout(DEADLINE);
    cmd
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Every line of standard output as a JSON object.
fn json_lines(out: &std::process::Output) -> Vec<Value> {
    let text = stdout(out);
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .inspect(|v| assert!(v.is_object(), "not an object: {v}"))
        .collect()
}

/// Creates a key with `fba_client keygen --out`, returning its path.
fn keygen(home: &Path, name: &str) -> PathBuf {
    let path = home.join(name);
    client(home).args(["keygen", "--out"]).arg(&path).assert().success();
    path
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

/// A closed standard output (`fba_client ... | head`) ends the client quietly with 141,
/// as SIGPIPE ends other commands, after it did its work; no panic, no backtrace.
#[test]
fn a_closed_standard_output_ends_the_client_quietly() {
    let dir = TempDir::new("client-epipe");
    let home = dir.path().join("home");
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader); // nobody will ever read: the first write fails with EPIPE
    let out = std::process::Command::new(client_bin())
        .env("FBA_CLIENT_HOME", &home)
        .arg("keygen")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(141), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "quiet: {}", stderr(&out));
    assert!(home.join("client.key").exists(), "the key was written before the line that could not be");
}

#[test]
fn keygen_writes_a_private_key_and_never_overwrites_it() {
    let dir = TempDir::new("client-keygen");
    let home = dir.path().join("home");
    let out = client(&home).arg("keygen").output().expect("keygen runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let key = home.join("client.key");
    let line = stdout(&out);
    assert!(line.starts_with(&format!("wrote {} (client id ", key.display())), "{line}");
    #[cfg(unix)]
    assert_eq!((mode(&key), mode(&home)), (0o600, 0o700));
    let before = std::fs::read(&key).expect("key");
    client(&home).arg("keygen").assert().code(2).stderr(predicate::str::contains("refusing to overwrite"));
    assert_eq!(std::fs::read(&key).expect("key"), before, "untouched");
    // --out and --json.
    let other = dir.path().join("other.key");
    let out = client(&home).args(["keygen", "--json", "--out"]).arg(&other).output().expect("runs");
    let object = &json_lines(&out)[0];
    assert_eq!(object["path"], other.display().to_string());
    assert!(object["client"].as_u64().is_some() && object["status"] == "ok", "{object}");
    // A key others may read is refused with one line saying how to fix it; nothing is sent.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let port = free_ports(1)[0].to_string();
        let out = client(&home).args([&port, "--key"]).arg(&other).args(["get", "x"]).output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
        assert!(stderr(&out).contains(&format!("chmod 600 {}", other.display())), "{}", stderr(&out));
    }
}

#[test]
fn signed_requests_work_and_a_keyed_wallet_refuses_other_keys() {
    let cluster = Cluster::start(4, 3, &[]);
    let home = cluster.dir.path().join("home");
    let (alice, bob) = (keygen(&home, "alice.key"), keygen(&home, "bob.key"));
    let run = |key: &Path, node: usize, command: &[&str]| {
        cluster.client_in(node, &home).arg("--key").arg(key).args(command).output().expect("client runs")
    };
    let ok = |out: std::process::Output, want: &str| {
        assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
        assert!(stdout(&out).contains(want), "{}", stdout(&out));
    };
    let refused = |out: std::process::Output, want: &str| {
        assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
        assert!(stdout(&out).contains(want), "{}", stdout(&out));
    };
    ok(run(&alice, 0, &["set", "a", "10"]), "OK a=$10");
    ok(run(&bob, 1, &["deposit", "b", "1"]), "OK b=$1");
    ok(run(&alice, 2, &["transfer", "a", "b", "3"]), "OK a=$7 b=$4");
    refused(run(&bob, 3, &["withdraw", "a", "1"]), "not owner");
    refused(run(&bob, 0, &["set", "a", "100"]), "not owner");
    refused(run(&bob, 1, &["transfer", "a", "b", "1"]), "not owner");
    ok(run(&bob, 2, &["deposit", "a", "2"]), "OK a=$9");
    // Unsigned development requests may not debit an owned wallet either.
    let out = cluster.client_in(3, &home).args(["withdraw", "a", "1"]).output().expect("runs");
    refused(out, "not owner");
    cluster.wait_dbs(&[0, 1, 2, 3], r#"{"a": "$9", "b": "$4"}"#);
    // The key's state sits beside it, and records nothing pending.
    let state: Value = serde_json::from_str(&std::fs::read_to_string(home.join("alice.key.state")).unwrap())
        .expect("state is JSON");
    assert!(state["client"].as_u64().is_some() && state.get("pending").is_none(), "{state}");
}

#[test]
fn a_keyed_cluster_refuses_unsigned_requests_saying_how_to_sign() {
    let mut cluster = Cluster::new(4, 3);
    cluster.with_keys();
    for i in 0..4 {
        cluster.start_node(i);
    }
    let home = cluster.dir.path().join("home");
    let out = cluster.client_in(0, &home).args(["set", "x", "1"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("fba_client --key FILE"), "{}", stderr(&out));
    let key = keygen(&home, "k");
    cluster.client_in(1, &home).arg("--key").arg(&key).args(["set", "x", "1"]).assert().success();
    cluster.wait_dbs(&[0, 1, 2, 3], r#"{"x": "$1"}"#);
}

#[test]
fn exit_codes_and_json_replies_one_object_each() {
    let cluster = Cluster::start(4, 3, &[]);
    let port = cluster.ports[0];
    let home = cluster.dir.path().join("home");
    // The assignment's run, as JSON.
    let out = cluster.client_in(0, &home).arg("--json").output().expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let replies = json_lines(&out);
    let commands: Vec<&str> = replies.iter().map(|r| r["command"].as_str().unwrap_or("?")).collect();
    assert_eq!(commands, support_assignment());
    for r in &replies {
        assert_eq!((r["node"].as_u64(), r["status"].as_str()), (Some(u64::from(port)), Some("ok")), "{r}");
        assert!(
            r["client"].as_u64().is_some() && r["session"].as_u64() > Some(0) && r["seq"].as_u64() > Some(0)
        );
    }
    assert_eq!(replies[5]["key"], "bar");
    assert_eq!(replies[5]["balance"], "$10");
    // 1: refused by the wallet.
    let out = cluster.client_in(1, &home).args(["--json", "withdraw", "foo", "31"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_lines(&out)[0]["status"], "insufficient_funds");
    cluster
        .client_in(2, &home)
        .args(["get", "nobody"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("no such wallet"));
    // 2: usage and input errors, before anything is sent.
    cluster
        .client_in(0, &home)
        .args(["set", "foo", "ten"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("bad command"));
    cluster.client_in(0, &home).args(["--bogus", "get", "foo"]).assert().code(2);
    let script = cluster.dir.path().join("script.txt");
    std::fs::write(&script, "set foo 1\nfly me to the moon\n").expect("script");
    let out = cluster.client_in(0, &home).args(["--json", "--file"]).arg(&script).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json_lines(&out)[0]["status"], "error");
    // A transfer, and a file of commands: one object per reply.
    std::fs::write(&script, "transfer foo bar 5\nget foo\nget bar\n").expect("script");
    let out = cluster.client_in(3, &home).args(["--json", "--file"]).arg(&script).output().expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let replies = json_lines(&out);
    assert_eq!(replies.len(), 3);
    assert_eq!((&replies[0]["status"], &replies[0]["from_balance"]), (&json!("transferred"), &json!("$25")));
    assert_eq!((&replies[2]["key"], &replies[2]["balance"]), (&json!("bar"), &json!("$15")));
    cluster.wait_dbs(&[0, 1, 2, 3], r#"{"foo": "$25", "bar": "$15"}"#);
    // Nothing is left in the home: development state is kept only while a request is pending.
    assert_eq!(
        std::fs::read_dir(&home).expect("home").count(),
        0,
        "{:?}",
        std::fs::read_dir(&home).unwrap().collect::<Vec<_>>()
    );
}

/// `--many`: several operations in one request, applied in order in one slot on every
/// node, each with its own result; a list over the size limit is refused by the node with
/// nothing applied, and a malformed list is refused before anything is sent.
#[test]
fn many_operations_in_one_request_apply_in_order_each_with_its_result() {
    let cluster = Cluster::start(4, 3, &[]);
    let home = cluster.dir.path().join("home");
    let out = cluster
        .client_in(1, &home)
        .args(["--json", "--many", "set foo 10, withdraw foo 25, deposit foo 5, transfer foo bar 3, get bar"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "one operation was refused: {}", stderr(&out));
    let reply = &json_lines(&out)[0];
    let statuses: Vec<&str> = reply["outcomes"]
        .as_array()
        .expect("outcomes")
        .iter()
        .map(|o| o["status"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(statuses, ["ok", "insufficient_funds", "ok", "no_such_wallet", "no_such_wallet"], "{reply}");
    assert_eq!(reply["outcomes"][2]["balance"], "$15", "applied in order");
    let out = cluster
        .client_in(2, &home)
        .args(["--many", "deposit bar 1, transfer foo bar 3"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("2 results: OK bar=$1; OK foo=$12 bar=$4"), "{}", stdout(&out));
    cluster.wait_dbs(&[0, 1, 2, 3], r#"{"foo": "$12", "bar": "$4"}"#);
    // Too large for a slot's fair share: refused, nothing applied.
    let big = vec!["deposit some-rather-long-wallet-name 1"; 250].join(", ");
    cluster
        .client_in(0, &home)
        .args(["--many", &big])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("request too large"));
    // Not a list of wallet operations: refused before anything is sent.
    cluster
        .client_in(0, &home)
        .args(["--many", "reconfigure 3 1@127.0.0.1:1, get foo"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid many operation"));
    let out =
        cluster.client_in(3, &home).args(["get", "some-rather-long-wallet-name"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(1), "the refused list applied nothing: {}", stdout(&out));
    cluster.wait_dbs(&[0, 1, 2, 3], r#"{"foo": "$12", "bar": "$4"}"#);
}

fn support_assignment() -> Vec<&'static str> {
    vec!["foo:$10", "bar:$30", "foo:$20", "bar:$20", "foo:$30", "bar:$10"]
}

#[test]
fn no_answer_is_exit_3_with_progress_and_how_to_retry() {
    let dir = TempDir::new("client-silent");
    let port = free_ports(1)[0];
    let out = client(dir.path())
        .args([&port.to_string(), "--attempts", "4", "--timeout-ms", "400", "deposit", "foo", "5"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    for needle in [
        format!("no answer from 127.0.0.1:{port} after 4 attempts over 1."),
        "(is the node running?)".to_string(),
        "may still be applied".to_string(),
        "Re-run the same command".to_string(),
        format!("waiting for 127.0.0.1:{port} (attempt "),
    ] {
        assert!(err.contains(&needle), "{needle:?} not in: {err}");
    }
    assert_eq!(err.matches("waiting for").count(), 1, "at most once a second: {err}");
    // The state records the register it sent, so a re-run sends that same one.
    let state =
        std::fs::read_to_string(dir.path().join(format!("dev-127.0.0.1-{port}.state"))).expect("state");
    assert!(state.contains(r#""pending":{"session":0,"seq":0,"op":{"type":"register""#), "{state}");
    // --json: the failure as an object; --no-state: said to be unsafe to re-run.
    let out = client(dir.path())
        .args([
            &port.to_string(),
            "--no-state",
            "--json",
            "--attempts",
            "1",
            "--timeout-ms",
            "50",
            "get",
            "foo",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(3));
    let object = &json_lines(&out)[0];
    assert_eq!((&object["status"], &object["command"]), (&json!("unknown"), &json!("get foo")));
    assert!(object["message"].as_str().is_some_and(|m| m.contains("no answer")), "{object}");
}

#[test]
fn a_deposit_tried_without_a_quorum_is_applied_once_when_re_run() {
    let mut cluster = Cluster::start(4, 3, &[]);
    let home = cluster.dir.path().join("home");
    cluster.client_in(0, &home).args(["set", "foo", "10"]).assert().success();
    cluster.wait_dbs(&[0, 1, 2, 3], r#"{"foo": "$10"}"#);
    for i in 1..4 {
        cluster.kill(i);
    }
    let out = cluster
        .client_in(0, &home)
        .args(["--attempts", "4", "--timeout-ms", "250", "deposit", "foo", "5"])
        .output()
        .expect("runs");
    // No answer (3), or, from a node that tells, no quorum (4): a re-run is safe either way.
    let code = out.status.code();
    assert!(code == Some(3) || code == Some(4), "{code:?}: {}{}", stdout(&out), stderr(&out));
    // Without a quorum the session's register got no answer, so the deposit was not sent.
    if code == Some(3) {
        let err = stderr(&out);
        assert!(
            err.contains("`deposit foo 5` was not sent") && err.contains("Re-run the same command"),
            "{err}"
        );
    }
    for i in 1..4 {
        cluster.start_node(i);
    }
    let out = cluster.client_in(0, &home).args(["deposit", "foo", "5"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("OK foo=$15"), "{}", stdout(&out));
    cluster.wait_dbs(&[0, 1, 2, 3], r#"{"foo": "$15"}"#);
    std::thread::sleep(Duration::from_secs(1));
    cluster
        .client_in(1, &home)
        .args(["get", "foo"])
        .assert()
        .success()
        .stdout(predicate::str::contains("OK foo=$15"));
}

/// A UDP relay in front of a node that can lose the replies to everything but registers:
/// requests are applied, their answers never come.
struct LossyRelay {
    port: u16,
    lose: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LossyRelay {
    fn new(node: u16) -> LossyRelay {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let back = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = front.local_addr().expect("addr").port();
        let (lose, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (l, s) = (Arc::clone(&lose), Arc::clone(&stop));
        let thread = std::thread::spawn(move || relay(&front, &back, node, &l, &s));
        LossyRelay { port, lose, stop, thread: Some(thread) }
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn relay(front: &UdpSocket, back: &UdpSocket, node: u16, lose: &AtomicBool, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65536];
    let mut client: Option<SocketAddr> = None;
    for socket in [front, back] {
        socket.set_read_timeout(Some(Duration::from_millis(5))).expect("timeout");
    }
    while !stop.load(Ordering::SeqCst) {
        if let Ok((n, from)) = front.recv_from(&mut buf) {
            client = Some(from);
            let _ = back.send_to(&buf[..n], ("127.0.0.1", node));
        }
        if let (Ok((n, _)), Some(to)) = (back.recv_from(&mut buf), client) {
            let registered = String::from_utf8_lossy(&buf[..n]).contains(r#""status":"registered""#);
            if registered || !lose.load(Ordering::SeqCst) {
                let _ = front.send_to(&buf[..n], to);
            }
        }
    }
}

#[test]
fn a_deposit_whose_reply_was_lost_is_applied_once_when_re_run() {
    let cluster = Cluster::start(4, 3, &[]);
    let home = cluster.dir.path().join("home");
    let relay = LossyRelay::new(cluster.ports[0]);
    let via_relay =
        |args: &[&str]| client(&home).arg(relay.port.to_string()).args(args).output().expect("runs");
    relay.lose.store(true, Ordering::SeqCst);
    let out = via_relay(&["--attempts", "3", "--timeout-ms", "300", "deposit", "foo", "5"]);
    assert_eq!(out.status.code(), Some(3), "{}{}", stdout(&out), stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("it resends the same request (client ") && err.contains(", seq 1)"), "{err}");
    cluster.wait_dbs(&[0, 1, 2, 3], r#"{"foo": "$5"}"#);
    // The same command again resends the same request: answered, not applied again.
    relay.lose.store(false, Ordering::SeqCst);
    let out = via_relay(&["deposit", "foo", "5"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), format!("[{}] deposit foo 5 -> OK foo=$5\n", cluster.ports[0]));
    assert!(stderr(&out).contains("resending the request whose outcome was unknown"), "{}", stderr(&out));
    // A lost reply followed by another command: the earlier request is settled first, its
    // reply shown on standard error (standard output holds this run's commands).
    let port = cluster.ports[0];
    relay.lose.store(true, Ordering::SeqCst);
    let out = via_relay(&["--attempts", "2", "--timeout-ms", "300", "deposit", "bar", "1"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    relay.lose.store(false, Ordering::SeqCst);
    let out = via_relay(&["get", "foo"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("[{port}] get foo -> OK foo=$5\n"));
    let previous = format!("[{port}] (previous command) deposit bar 1 -> OK bar=$1");
    assert!(stderr(&out).contains(&previous), "{}", stderr(&out));
    // The same with --json: an object marked "previous", then this run's.
    relay.lose.store(true, Ordering::SeqCst);
    let out = via_relay(&["--attempts", "2", "--timeout-ms", "300", "deposit", "bar", "1"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    relay.lose.store(false, Ordering::SeqCst);
    let out = via_relay(&["--json", "get", "foo"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let replies = json_lines(&out);
    assert_eq!(replies.len(), 2, "{}", stdout(&out));
    assert_eq!((&replies[0]["previous"], &replies[0]["command"]), (&json!(true), &json!("deposit bar 1")));
    assert_eq!((&replies[0]["balance"], &replies[1]["balance"]), (&json!("$2"), &json!("$5")));
    assert!(replies[1].get("previous").is_none());
    cluster.wait_dbs(&[0, 1, 2, 3], r#"{"foo": "$5", "bar": "$2"}"#);
}

#[test]
fn other_nodes_are_tried_and_host_names_resolve() {
    let cluster = Cluster::start(4, 3, &[]);
    let home = cluster.dir.path().join("home");
    let dead = free_ports(1)[0].to_string();
    let peer = format!("localhost:{}", cluster.ports[2]);
    let out = client(&home)
        .args([&dead, "--peer", &peer, "--attempts", "2", "--timeout-ms", "200", "set", "x", "1"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("[{}] set x 1 -> OK x=$1\n", cluster.ports[2]));
    cluster
        .client_in(1, &home)
        .args(["--host", "localhost", "get", "x"])
        .assert()
        .success()
        .stdout(predicate::str::contains("OK x=$1"));
    cluster.client_in(1, &home).args(["--host", "no-such-host.invalid", "get", "x"]).assert().code(2);
}

#[test]
fn scripts_keeping_their_own_ids_resend_the_same_request() {
    let cluster = Cluster::start(4, 3, &[]);
    let home = cluster.dir.path().join("home");
    let session = support::RawClient::new(cluster.ports[0], 4242).register().expect("a session").to_string();
    let args = ["--json", "--client-id", "4242", "--session", &session, "--seq", "1", "deposit", "z", "5"];
    for node in [0, 1] {
        let out = cluster.client_in(node, &home).args(args).output().expect("runs");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let reply = &json_lines(&out)[0];
        assert_eq!(
            (&reply["client"], &reply["seq"], &reply["balance"]),
            (&json!(4242), &json!(1), &json!("$5"))
        );
    }
    cluster.wait_dbs(&[0, 1, 2, 3], r#"{"z": "$5"}"#);
}

/// A node that answers every request with `answer(request)`.
struct FakeNode {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeNode {
    fn new(answer: impl Fn(&Value) -> Value + Send + 'static) -> FakeNode {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = socket.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            socket.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
            let mut buf = vec![0u8; 65536];
            while !done.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                let Ok(message) = serde_json::from_slice::<Value>(&buf[..n]) else { continue };
                let reply = answer(&message["request"]);
                let _ = socket.send_to(reply.to_string().as_bytes(), from);
            }
        });
        FakeNode { port, stop, thread: Some(thread) }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The reply to `request` with `outcome`.
fn reply(request: &Value, outcome: Value) -> Value {
    let mut reply = json!({"client": request["client"], "seq": request["seq"], "outcome": outcome});
    if let Some(session) = request.get("session") {
        reply["session"] = session.clone();
    }
    json!({"type": "reply", "node": 7, "reply": reply})
}

#[test]
fn a_node_without_a_quorum_is_exit_4_and_an_expired_session_is_not_resent() {
    let dir = TempDir::new("client-fake");
    let unavailable =
        FakeNode::new(|_| json!({"type": "unavailable", "node": 7, "peers_heard": 1, "needed": 2}));
    let out = client(dir.path())
        .args([&unavailable.port.to_string(), "--json", "get", "x"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let object = &json_lines(&out)[0];
    assert_eq!(
        (&object["status"], &object["peers_heard"], &object["needed"]),
        (&json!("unavailable"), &json!(1), &json!(2))
    );
    assert!(stderr(&out).contains("node 7 is unavailable: it hears 1 peers and needs 2"), "{}", stderr(&out));
    let as_error =
        FakeNode::new(|_| json!({"type": "error", "node": 7, "error": "unavailable: no quorum heard"}));
    let out = client(dir.path()).args([&as_error.port.to_string(), "get", "x"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("unavailable (no quorum heard); nothing was applied"), "{}", stderr(&out));
    // A session the cluster no longer holds: reported, not resent, exit 1.
    let expired = FakeNode::new(|request| match request["op"]["type"].as_str() {
        Some("register") => reply(request, json!({"status": "registered", "session": 3})),
        _ => reply(request, json!({"status": "session_expired", "session": 3})),
    });
    let out =
        client(dir.path()).args([&expired.port.to_string(), "deposit", "x", "1"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).contains("ERROR session expired"), "{}", stdout(&out));
    assert!(stderr(&out).contains("not applied") && stderr(&out).contains("not resent"), "{}", stderr(&out));
}
