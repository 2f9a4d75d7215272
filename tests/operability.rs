//! Operating a cluster, through real processes: `fba_client status` (one node, `--all`,
//! text and JSON) on a healthy cluster, a lagging node and a node without a quorum; the
//! `--metrics` endpoint (`/metrics`, `/health`) over TCP; log lines (text and JSON,
//! warnings and errors on stderr); a node whose stdout is closed; the client's exit codes;
//! and `--config FILE`.

mod support;

use serde_json::Value;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{client_bin, free_ports, server_bin, set_op, wait_for, Cluster, RawClient, TempDir, DEADLINE};

/// Runs `fba_client <port of node i> status ARGS`: (exit code, stdout, stderr).
fn status_cmd(cluster: &Cluster, i: usize, args: &[&str]) -> (i32, String, String) {
    let out = cluster.client(i).arg("status").args(args).output().expect("fba_client runs");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).to_string();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// Node i's status as JSON, if it answered.
fn status(cluster: &Cluster, i: usize) -> Option<Value> {
    let (code, stdout, _) = status_cmd(cluster, i, &["--json"]);
    (code == 0).then(|| serde_json::from_str(&stdout).expect("status JSON"))
}

/// Node i's status, waiting until `condition` holds of it.
fn status_when(cluster: &Cluster, i: usize, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
    let mut last = None;
    wait_for(what, || {
        last = status(cluster, i);
        let done = last.as_ref().is_some_and(&condition);
        if !done {
            // Within the node's allowance of status answers (10 a second per source).
            std::thread::sleep(Duration::from_millis(150));
        }
        done
    });
    last.expect("a status")
}

/// A free TCP port on 127.0.0.1, as an address for `--metrics`.
fn free_tcp_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr")
}

/// `GET path` over plain HTTP: (status code, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    let code = answer.get(9..12).and_then(|c| c.parse().ok()).expect("status line");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_string();
    (code, body)
}

/// The value of sample `series` (`name` or `name{label="v"}`) in a Prometheus text body.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.rsplit_once(' ').filter(|(name, _)| *name == series))
        .and_then(|(_, value)| value.parse().ok())
}

/// Whether `ts` is `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn is_timestamp(ts: &str) -> bool {
    let pattern = "dddd-dd-ddTdd:dd:dd.dddZ";
    ts.len() == pattern.len()
        && ts.bytes().zip(pattern.bytes()).all(|(c, p)| if p == b'd' { c.is_ascii_digit() } else { c == p })
}

/// Asserts a text log line is `TIMESTAMP LEVEL [id] message`; returns the level.
fn text_level(line: &str, id: u16) -> &str {
    let mut parts = line.splitn(4, ' ');
    let (ts, level, node) =
        (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    assert!(is_timestamp(ts), "no timestamp: {line:?}");
    assert!(["ERROR", "WARN", "INFO", "PROTOCOL", "DEBUG"].contains(&level), "no level: {line:?}");
    assert_eq!(node, format!("[{id}]"), "no node id: {line:?}");
    assert!(parts.next().is_some_and(|msg| !msg.is_empty()), "no message: {line:?}");
    level
}

/// Asserts a JSON log line has ts, level, node and msg; returns the level.
fn json_level(line: &str, id: u16) -> String {
    let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
    assert!(value["ts"].as_str().is_some_and(is_timestamp), "{line}");
    assert_eq!(value["node"], u64::from(id), "{line}");
    assert!(value["msg"].as_str().is_some_and(|m| !m.is_empty()), "{line}");
    value["level"].as_str().expect("level").to_string()
}

/// A process killed when dropped (for nodes started outside [`Cluster`]).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Checks the fields of a healthy node's status JSON.
fn check_healthy_status(s: &Value, port: u16, slot: u64) {
    assert_eq!(s["id"], u64::from(port), "{s}");
    assert_eq!(s["address"], format!("127.0.0.1:{port}"), "{s}");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"), "{s}");
    assert!(s["uptime_ms"].is_u64() && s["pool"].is_u64() && s["requests_per_second"].is_f64(), "{s}");
    assert_eq!((s["slot"].as_u64(), s["lag"].as_u64()), (Some(slot), Some(0)), "{s}");
    let hash = s["ledger_hash"].as_str().expect("hash");
    assert!(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "{s}");
    assert_eq!((s["quorum_available"].as_bool(), s["needed"].as_u64()), (Some(true), Some(2)), "{s}");
    let peers = s["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 3, "{s}");
    for peer in peers {
        assert!(peer["id"].is_u64() && peer["address"].is_string(), "{peer}");
        assert!(peer["last_heard_ms"].as_u64().is_some_and(|ms| ms < 3000), "{peer}");
        assert!(peer["slot"].as_u64().is_some_and(|n| n <= slot), "{peer}");
    }
}

#[test]
fn status_of_a_healthy_cluster_one_node_and_all_in_text_and_json() {
    let cluster = Cluster::start(4, 3, &[]);
    cluster.client(0).args(["set", "alice", "10"]).assert().success();
    // A register and a set: two slots, which every node reports once it applied them.
    let first = status_when(&cluster, 0, "node 0 at slot 2", |s| s["slot"] == 2);
    for i in 1..4 {
        let s = status_when(&cluster, i, "every node at slot 2", |s| s["slot"] == 2);
        assert_eq!(s["ledger_hash"], first["ledger_hash"], "one chain");
    }
    let s = status_when(&cluster, 0, "every peer heard, at slot 2", |s| {
        s["peers"].as_array().is_some_and(|p| p.iter().all(|p| p["slot"] == 2 && p["last_heard_ms"].is_u64()))
    });
    check_healthy_status(&s, cluster.ports[0], 2);

    let (code, text, _) = status_cmd(&cluster, 0, &[]);
    assert_eq!(code, 0, "{text}");
    let port = cluster.ports[0];
    assert!(text.contains(&format!("node {port} at 127.0.0.1:{port}: fba ")), "{text}");
    assert!(text.contains("slot 2, ledger hash ") && text.contains("lag 0"), "{text}");
    assert!(text.contains("quorum available: hearing 3 of 3 peers, need 2"), "{text}");
    for peer in &cluster.ports[1..] {
        assert!(text.contains(&format!("| {peer} | 127.0.0.1:{peer} |")), "{text}");
    }

    let (code, table, _) = status_cmd(&cluster, 1, &["--all"]);
    assert_eq!(code, 0, "{table}");
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| ID")).collect();
    assert_eq!(rows.len(), 4, "{table}");
    for port in &cluster.ports {
        let row = rows.iter().find(|r| r.starts_with(&format!("| {port} "))).expect("a row per node");
        assert!(row.contains("| 2    |") && row.contains("| yes    |"), "{table}");
    }
    let (code, json, _) = status_cmd(&cluster, 2, &["--all", "--json"]);
    assert_eq!(code, 0);
    let all: Vec<Value> = serde_json::from_str(&json).expect("an array");
    assert_eq!(all.len(), 4, "{json}");
    for s in &all {
        assert_eq!((s["reachable"].as_bool(), s["slot"].as_u64()), (Some(true), Some(2)), "{s}");
        assert_eq!(s["ledger_hash"], first["ledger_hash"]);
    }
}

#[test]
fn a_lagging_node_shows_its_lag_and_no_quorum_then_catches_up() {
    let mut cluster = Cluster::start(4, 3, &[]);
    let mut client = RawClient::new(cluster.ports[0], 1);
    assert!(client.call(&set_op("a", 1)).is_some());
    wait_for("node 3 to apply the first write", || cluster.db(3).contains("\"a\""));
    cluster.kill(3);
    for i in 0..5 {
        assert!(client.call(&set_op(&format!("b{i}"), i)).is_some());
    }
    let ahead = status_when(&cluster, 0, "node 0 at slot 7", |s| s["slot"] == 7);
    let peer3 =
        ahead["peers"].as_array().expect("peers").iter().find(|p| p["id"] == cluster.ports[3]).cloned();
    assert!(peer3.is_some_and(|p| p["slot"].as_u64().is_some_and(|n| n <= 2)), "{ahead}");
    // Node 3 comes back hearing only node 0: it learns it is 5 slots behind, but one peer
    // cannot vouch for a slot, and 1 of 3 peers is no quorum.
    cluster.kill(1);
    cluster.kill(2);
    cluster.start_node(3);
    let behind = status_when(&cluster, 3, "node 3 to see its lag, without a quorum", |s| {
        s["lag"] == 5 && s["quorum_available"] == false
    });
    assert_eq!((behind["slot"].as_u64(), behind["peers_heard"].as_u64()), (Some(2), Some(1)), "{behind}");
    let (code, table, _) = status_cmd(&cluster, 3, &["--all"]);
    assert_eq!(code, 3, "two nodes do not answer: {table}");
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| ID")).collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert_eq!(rows.iter().filter(|r| r.contains("| unreachable |")).count(), 2, "{table}");
    assert!(rows
        .iter()
        .any(|r| r.starts_with(&format!("| {} ", cluster.ports[3])) && r.contains("| 5   | NO ")));
    let (code, text, _) = status_cmd(&cluster, 3, &[]);
    assert_eq!(code, 0);
    assert!(
        text.contains("lag 5") && text.contains("quorum NOT available: hearing 1 of 3 peers, need 2"),
        "{text}"
    );

    // A write to it is refused at once: exit 4, nothing applied.
    let out = cluster.client(3).args(["--json", "set", "c", "1"]).output().expect("client");
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (answer["status"].as_str(), answer["needed"].as_u64()),
        (Some("unavailable"), Some(2)),
        "{answer}"
    );

    cluster.start_node(1);
    cluster.start_node(2);
    let level = status_when(&cluster, 3, "node 3 to catch up", |s| s["slot"] == 7 && s["lag"] == 0);
    assert_eq!(level["quorum_available"], true, "{level}");
    let log = cluster.log(3);
    assert!(log.contains("catch-up started from ") && log.contains(": 0/5 slots"), "{log}");
    assert!(log.contains("5/5 slots, caught up"), "{log}");
    assert!(log.contains("WARN [") && log.contains("quorum lost (hearing 1 of 3 peers: "), "{log}");
    wait_for("quorum regained", || {
        cluster.log(3).contains("INFO [") && cluster.log(3).contains("quorum regained")
    });
}

#[test]
fn metrics_and_health_over_http() {
    let mut cluster = Cluster::new(4, 3);
    let addr = free_tcp_addr();
    cluster.start_node_with(0, &[], &["--metrics", &addr.to_string()]);
    for i in 1..4 {
        cluster.start_node(i);
    }
    assert!(cluster.log(0).contains(&format!("metrics on http://{addr}/metrics")), "{}", cluster.log(0));
    let (code, before) = http_get(addr, "/metrics");
    assert_eq!(code, 200);
    assert!(before.contains("# TYPE fba_slots_externalized_total counter"), "{before}");
    let count =
        |body: &str, series: &str| sample(body, series).unwrap_or_else(|| panic!("no {series}: {body}"));
    for series in [
        "fba_requests_received_total{kind=\"json\"}",
        "fba_datagrams_dropped_total{reason=\"malformed\"}",
        "fba_authentication_failures_total",
        "fba_nomination_timeouts_total",
        "fba_ballot_timeouts_total",
        "fba_catchup_requests_sent_total",
        "fba_fsync_seconds_count",
        "fba_pool_size",
        "fba_uptime_seconds",
    ] {
        count(&before, series);
    }
    let mut client = RawClient::new(cluster.ports[0], 7);
    for i in 0..3 {
        assert!(client.call(&set_op(&format!("m{i}"), 1)).is_some());
    }
    let (_, after) = http_get(addr, "/metrics");
    for series in [
        "fba_slots_externalized_total",
        "fba_requests_received_total{kind=\"json\"}",
        "fba_requests_applied_total{outcome=\"ok\"}",
        "fba_replies_sent_total",
        "fba_slot_latency_seconds_count",
        "fba_ballot_counter_count",
        "fba_fsync_seconds_count",
        "fba_ledger_slot",
    ] {
        assert!(count(&after, series) >= count(&before, series) + 3.0, "{series}: {before}\n{after}");
    }
    assert_eq!(count(&after, "fba_quorum_available"), 1.0);
    assert_eq!(count(&after, "fba_peers_heard"), 3.0);
    assert_eq!(
        count(&after, "fba_slot_latency_seconds_bucket{le=\"+Inf\"}"),
        count(&after, "fba_slot_latency_seconds_count")
    );
    assert_eq!(http_get(addr, "/health"), (200, "ok\n".to_string()));
    assert_eq!(http_get(addr, "/nope").0, 404);
}

#[test]
fn a_lone_node_answers_unavailable_and_its_health_fails() {
    let mut cluster = Cluster::new(4, 3);
    let addr = free_tcp_addr();
    cluster.start_node_with(0, &[], &["--metrics", &addr.to_string()]);
    let lone = status_when(&cluster, 0, "the start-up grace to end", |s| s["quorum_available"] == false);
    assert_eq!((lone["peers_heard"].as_u64(), lone["needed"].as_u64()), (Some(0), Some(2)), "{lone}");
    assert!(lone["peers"].as_array().expect("peers").iter().all(|p| p["last_heard_ms"].is_null()), "{lone}");
    wait_for("/health to fail", || http_get(addr, "/health") == (503, "no quorum\n".to_string()));
    let (_, metrics) = http_get(addr, "/metrics");
    assert_eq!(sample(&metrics, "fba_quorum_available"), Some(0.0), "{metrics}");

    let out = cluster.client(0).args(["set", "x", "1"]).output().expect("client");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("is unavailable: it hears 0 peers and needs 2"), "{stderr}");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    socket.send_to(b"foo:$1", ("127.0.0.1", cluster.ports[0])).expect("send");
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("an answer at once");
    let port = cluster.ports[0];
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        format!("[{port}] UNAVAILABLE: hearing 0 of 3 peers, need 2")
    );
    let (_, metrics) = http_get(addr, "/metrics");
    assert!(sample(&metrics, "fba_requests_unavailable_total").is_some_and(|n| n >= 2.0), "{metrics}");
    assert!(cluster.db(0).is_empty() || !cluster.db(0).contains("foo"), "nothing was applied");
    let log = cluster.log(0);
    assert!(
        log.contains("peers silent: ") && log.contains("quorum lost (hearing 0 of 3 peers: none; need 2)"),
        "{log}"
    );
}

#[test]
fn log_lines_parse_in_text_and_json_with_warnings_on_stderr() {
    // Text, from a healthy cluster's node (stdout and stderr in one file).
    let cluster = Cluster::start(4, 3, &[]);
    cluster.client(0).args(["set", "t", "1"]).assert().success();
    wait_for("the slot summary", || {
        cluster.log(1).contains("INFO [") && cluster.log(1).contains(" decided: ")
    });
    let log = cluster.log(1);
    for line in log.lines() {
        text_level(line, cluster.ports[1]);
    }
    let summary = log.lines().find(|l| l.contains(" decided: ")).expect("a slot summary");
    assert!(summary.contains(" INFO [") && summary.contains("requests, ballot counter 1, "), "{summary}");
    assert!(log.contains(" PROTOCOL [") && log.contains("] recv NOMINATE from "), "{log}");

    // JSON, from a node whose peers are all down: warnings (peers silent, quorum lost)
    // on stderr, everything else on stdout.
    let dir = TempDir::new("jsonlog");
    let ports = free_ports(2);
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let child = Command::new(server_bin())
        .arg(ports[0].to_string())
        .args(["--peer", &format!("127.0.0.1:{}", ports[1]), "--threshold", "2", "--log-format", "json"])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(fs::File::create(&out_path).expect("file"))
        .stderr(fs::File::create(&err_path).expect("file"))
        .spawn()
        .expect("spawn");
    let _node = Killed(child);
    wait_for("quorum lost on stderr", || {
        fs::read_to_string(&err_path).unwrap_or_default().contains("quorum lost")
    });
    let (out, err) =
        (fs::read_to_string(&out_path).expect("out"), fs::read_to_string(&err_path).expect("err"));
    let levels: Vec<String> = out.lines().map(|l| json_level(l, ports[0])).collect();
    assert!(levels.iter().all(|l| ["info", "protocol", "debug"].contains(&l.as_str())), "{out}");
    let first: Value = serde_json::from_str(out.lines().next().expect("a line")).expect("json");
    assert!(first["msg"].as_str().is_some_and(|m| m.starts_with("development mode")), "{first}");
    assert!(out.contains("listening on"), "{out}");
    let levels: Vec<String> = err.lines().map(|l| json_level(l, ports[0])).collect();
    assert!(!levels.is_empty() && levels.iter().all(|l| l == "warn" || l == "error"), "{err}");
    let lost = err.lines().find(|l| l.contains("quorum lost")).expect("quorum lost");
    let lost: Value = serde_json::from_str(lost).expect("json");
    assert_eq!((lost["quorum"].as_bool(), lost["needed"].as_u64()), (Some(false), Some(1)), "{lost}");
}

#[test]
fn errors_go_to_stderr_with_a_level_and_stdout_stays_empty() {
    let dir = TempDir::new("busy");
    let holder = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().expect("addr").port();
    let out = Command::new(server_bin())
        .arg(port.to_string())
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("fba_server runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "stdout: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(text_level(err.trim_end(), port), "ERROR", "{err}");
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{err}");
}

#[test]
fn a_node_whose_stdout_is_closed_keeps_serving() {
    let mut cluster = Cluster::new(4, 3);
    for i in 0..3 {
        cluster.start_node(i);
    }
    let err_path = cluster.dir.path().join("node3.err");
    let mut child = cluster
        .server_command(3)
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&err_path).expect("file"))
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut first).expect("first line");
    assert!(first.contains("development mode"), "{first}"); // the reader is dropped here
    let mut node = Killed(child);
    let mut client = RawClient::new(cluster.ports[0], 3);
    for i in 0..3 {
        assert!(client.call(&set_op(&format!("p{i}"), i + 1)).is_some());
    }
    wait_for("node 3 to apply every write", || cluster.db(3).contains("\"p2\": \"$3\""));
    assert!(
        matches!(node.0.try_wait(), Ok(None)),
        "node 3 died: {}",
        fs::read_to_string(&err_path).unwrap_or_default()
    );
    let s = status_when(&cluster, 3, "node 3 to answer its status", |s| s["slot"].as_u64() >= Some(4));
    assert_eq!(s["quorum_available"], true);
    let err = fs::read_to_string(&err_path).expect("stderr");
    assert!(err.contains("WARN [") && err.contains("stdout is closed or failing"), "{err}");
}

#[test]
fn client_exit_codes_end_to_end() {
    let mut cluster = Cluster::start(4, 3, &[]);
    let code = |cmd: &mut assert_cmd::Command| cmd.output().expect("client").status.code();
    assert_eq!(code(cluster.client(0).args(["set", "alice", "10"])), Some(0), "success");
    assert_eq!(code(cluster.client(1).args(["withdraw", "alice", "20"])), Some(1), "refused by the wallet");
    assert_eq!(code(cluster.client(0).args(["set", "alice", "ten"])), Some(2), "usage");
    assert_eq!(code(cluster.client(0).args(["status", "--bogus"])), Some(2), "usage");
    let nobody = free_ports(1)[0].to_string();
    let home = cluster.dir.path().join("client-home");
    let mut silent = assert_cmd::Command::new(client_bin());
    silent
        .args([&nobody, "--attempts", "2", "--timeout-ms", "100", "get", "alice"])
        .env("FBA_CLIENT_HOME", &home);
    assert_eq!(code(&mut silent), Some(3), "outcome unknown");
    let mut silent = assert_cmd::Command::new(client_bin());
    silent.args([&nobody, "--timeout-ms", "100", "status"]).env("FBA_CLIENT_HOME", &home);
    assert_eq!(code(&mut silent), Some(3), "no status");
    for i in 1..4 {
        cluster.kill(i);
    }
    status_when(&cluster, 0, "node 0 to lose its quorum", |s| s["quorum_available"] == false);
    assert_eq!(code(cluster.client(0).args(["set", "alice", "1"])), Some(4), "unavailable");
}

#[test]
fn a_config_file_starts_a_node() {
    let dir = TempDir::new("config");
    let port = free_ports(1)[0];
    let addr = free_tcp_addr();
    let data = dir.path().join("data");
    let config = serde_json::json!({
        "port": port,
        "peers": [format!("127.0.0.1:{port}")],
        "threshold": 1,
        "data_dir": data,
        "metrics": addr.to_string(),
        "quiet": true,
    });
    let file = dir.path().join("node.json");
    fs::write(&file, config.to_string()).expect("write");
    let log_path = dir.path().join("node.log");
    let log = fs::File::create(&log_path).expect("log");
    let child = Command::new(server_bin())
        .arg("--config")
        .arg(&file)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn");
    let _node = Killed(child);
    let read_log = || fs::read_to_string(&log_path).unwrap_or_default();
    wait_for("the node to listen", || read_log().contains("listening on"));
    assert!(read_log().contains(&format!("listening on 127.0.0.1:{port}")), "{}", read_log());
    let mut client = assert_cmd::Command::new(client_bin());
    client.args([&port.to_string(), "set", "solo", "5"]).env("FBA_CLIENT_HOME", dir.path().join("home"));
    client.timeout(DEADLINE).assert().success();
    let db = data.join(format!("assignment3_{port}.db"));
    wait_for("the database", || fs::read_to_string(&db).is_ok_and(|s| s == r#"{"solo": "$5"}"#));
    assert_eq!(http_get(addr, "/health").0, 200);
    wait_for("the slot summaries", || read_log().contains("slot 2 decided"));
    assert!(!read_log().contains("PROTOCOL"), "quiet: no protocol trace\n{}", read_log());

    let bad = dir.path().join("bad.json");
    fs::write(&bad, r#"{"port": 1, "treshold": 3}"#).expect("write");
    let out = Command::new(server_bin()).arg("--config").arg(&bad).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown key \"treshold\"") && err.contains(path_str(&bad)), "{err}");
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}
