//! Helpers for process tests: a cluster of real `fba_server` processes on free UDP ports
//! in a private temporary directory, killed when the test ends.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long any condition may take before a test gives up.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A private temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("fba-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `n` distinct free UDP ports on 127.0.0.1 (held together while chosen).
pub fn free_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind")).collect();
    sockets.iter().map(|s| s.local_addr().expect("addr").port()).collect()
}

/// Polls `condition` until it holds or [`DEADLINE`] passes.
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fba_server"))
}

pub fn client_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fba_client"))
}

/// A cluster of nodes, all peers of each other, threshold `threshold`.
pub struct Cluster {
    pub dir: TempDir,
    pub ports: Vec<u16>,
    pub threshold: usize,
    children: Vec<Option<Child>>,
    extra_args: Vec<String>,
    /// Whether nodes run with `--key-file DIR/keys/<port>.key` (see [`Cluster::with_keys`]).
    keyed: bool,
}

impl Cluster {
    /// Configures `n` nodes without starting them.
    pub fn new(n: usize, threshold: usize) -> Cluster {
        Cluster {
            dir: TempDir::new("cluster"),
            ports: free_ports(n),
            threshold,
            children: (0..n).map(|_| None).collect(),
            keyed: false,
            extra_args: vec![
                "--nomination-timeout-ms".into(),
                "200".into(),
                "--ballot-timeout-ms".into(),
                "300".into(),
            ],
        }
    }

    /// Starts every node but those listed in `down`, and waits until they listen.
    pub fn start(n: usize, threshold: usize, down: &[usize]) -> Cluster {
        let mut c = Cluster::new(n, threshold);
        for i in (0..n).filter(|i| !down.contains(i)) {
            c.start_node(i);
        }
        c
    }

    /// The command line of node `i`.
    pub fn server_command(&self, i: usize) -> Command {
        let all: Vec<usize> = (0..self.ports.len()).collect();
        self.server_command_among(i, &all, self.threshold)
    }

    /// The command line of node `i` configured with only `members` (indices, `i` among
    /// them) as its cluster, at `threshold`.
    pub fn server_command_among(&self, i: usize, members: &[usize], threshold: usize) -> Command {
        let mut cmd = Command::new(server_bin());
        cmd.arg(self.ports[i].to_string()).arg("--data-dir").arg(self.dir.path());
        for &j in members.iter().filter(|&&j| j != i) {
            cmd.arg("--peer").arg(format!("127.0.0.1:{}", self.ports[j]));
        }
        cmd.arg("--threshold").arg(threshold.to_string()).args(&self.extra_args);
        if self.keyed {
            cmd.arg("--key-file").arg(self.key_path(i));
        }
        cmd
    }

    /// Creates keys for every node with `fba_server keygen` and runs the nodes
    /// authenticated from then on.
    pub fn with_keys(&mut self) {
        self.with_keys_args(&[]);
    }

    /// [`Cluster::with_keys`] with more `fba_server keygen` arguments (`--operator ID`).
    pub fn with_keys_args(&mut self, extra: &[&str]) {
        let nodes: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new(server_bin())
            .arg("keygen")
            .arg("--out")
            .arg(self.dir.path().join("keys"))
            .args(extra)
            .args(&nodes)
            .output()
            .expect("keygen runs");
        assert!(out.status.success(), "keygen failed: {}", String::from_utf8_lossy(&out.stderr));
        self.keyed = true;
    }

    /// Node `i`'s key file (loopback nodes are named by their port).
    pub fn key_path(&self, i: usize) -> PathBuf {
        self.dir.path().join("keys").join(format!("{}.key", self.ports[i]))
    }

    pub fn start_node(&mut self, i: usize) {
        let cmd = self.server_command(i);
        self.spawn_node(i, cmd);
    }

    /// Starts node `i` configured with only `members` as its cluster, at `threshold`
    /// ([`Cluster::server_command_among`]), and waits until it listens.
    pub fn start_node_among(&mut self, i: usize, members: &[usize], threshold: usize) {
        let cmd = self.server_command_among(i, members, threshold);
        self.spawn_node(i, cmd);
    }

    fn spawn_node(&mut self, i: usize, mut cmd: Command) {
        let log = fs::File::create(self.log_path(i)).expect("log file");
        let err = log.try_clone().expect("log file");
        let child = cmd.stdout(Stdio::from(log)).stderr(Stdio::from(err)).spawn().expect("spawn");
        self.children[i] = Some(child);
        wait_for(&format!("node {} to listen", self.ports[i]), || self.log(i).contains("listening on"));
    }

    /// Kills node `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{}.log", self.ports[i]))
    }

    /// Everything node `i` printed so far.
    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    pub fn db_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("assignment3_{}.db", self.ports[i]))
    }

    /// The database file of node `i` ("" if absent).
    pub fn db(&self, i: usize) -> String {
        fs::read_to_string(self.db_path(i)).unwrap_or_default()
    }

    /// Waits until every listed node's database file is exactly `expected`.
    pub fn wait_dbs(&self, nodes: &[usize], expected: &str) {
        wait_for(&format!("databases to read {expected}"), || nodes.iter().all(|&i| self.db(i) == expected));
    }

    /// A client command aimed at node `i`.
    /// `fba_client <port of node i>`, keeping its state files in the cluster's directory
    /// (never in the real home).
    pub fn client(&self, i: usize) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::new(client_bin());
        cmd.arg(self.ports[i].to_string()).env("FBA_CLIENT_HOME", self.dir.path().join("client-home"));
        if self.keyed {
            cmd.arg("--key").arg(self.client_key());
        }
        cmd.timeout(DEADLINE);
        cmd
    }

    /// The client key of a keyed cluster (made by `fba_client keygen` on first use).
    pub fn client_key(&self) -> PathBuf {
        let key = self.dir.path().join("client.key");
        if !key.exists() {
            let out = Command::new(client_bin())
                .args(["keygen", "--out"])
                .arg(&key)
                .env("FBA_CLIENT_HOME", self.dir.path().join("client-home"))
                .output()
                .expect("fba_client keygen runs");
            assert!(out.status.success(), "client keygen: {}", String::from_utf8_lossy(&out.stderr));
        }
        key
    }

    /// The process id of node `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(Child::id)
    }

    /// Waits for node `i` to exit on its own and returns its status.
    pub fn wait_exit(&mut self, i: usize) -> std::process::ExitStatus {
        let mut status = None;
        wait_for("the node to exit", || {
            status = self.children[i].as_mut().and_then(|c| c.try_wait().ok().flatten());
            status.is_some()
        });
        self.children[i] = None;
        status.expect("exited")
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        self.children[i].as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

// ----- Additions for the durability tests (they change no helper above) -----------------

impl Cluster {
    /// Starts node `i` with extra environment variables and command-line arguments, and
    /// waits until it listens. A log left by an earlier run of the node is kept as
    /// `node<port>.log.<k>` (k = 1, 2, ...) rather than overwritten.
    pub fn start_node_with(&mut self, i: usize, env: &[(&str, &std::ffi::OsStr)], args: &[&str]) {
        let log_path = self.log_path(i);
        if log_path.exists() {
            let k =
                (1..).find(|k| !log_path.with_extension(format!("log.{k}")).exists()).expect("a free name");
            fs::rename(&log_path, log_path.with_extension(format!("log.{k}"))).expect("keep the old log");
        }
        let log = fs::File::create(&log_path).expect("log file");
        let err = log.try_clone().expect("log file");
        let mut cmd = self.server_command(i);
        cmd.args(args).stdout(Stdio::from(log)).stderr(Stdio::from(err));
        for (key, value) in env {
            cmd.env(key, value);
        }
        self.children[i] = Some(cmd.spawn().expect("spawn"));
        wait_for(&format!("node {} to listen", self.ports[i]), || self.log(i).contains("listening on"));
    }

    /// Stops node `i` cleanly (SIGTERM) and waits for it; panics unless it exits 0.
    pub fn stop(&mut self, i: usize) {
        let pid = self.pid(i).expect("the node runs").to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(status.success(), "kill -TERM {pid}");
        let status = self.wait_exit(i);
        assert!(status.success(), "node {} stopped uncleanly: {status:?}\n{}", self.ports[i], self.log(i));
    }

    pub fn ledger_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("assignment3_{}.ledger", self.ports[i]))
    }

    /// The ledger file of node `i` ("" if absent).
    pub fn ledger(&self, i: usize) -> String {
        fs::read_to_string(self.ledger_path(i)).unwrap_or_default()
    }

    /// Runs `fba_server <port> --data-dir D --verify` for node `i` (read-only; may run while
    /// the node runs) and returns its output.
    pub fn verify(&self, i: usize) -> std::process::Output {
        Command::new(server_bin())
            .arg(self.ports[i].to_string())
            .arg("--data-dir")
            .arg(self.dir.path())
            .arg("--verify")
            .output()
            .expect("fba_server --verify runs")
    }

    /// Runs `--verify` for node `i`, asserts it succeeds and returns the slot count it reports.
    pub fn verify_ok(&self, i: usize) -> u64 {
        let out = self.verify(i);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "verify of node {} failed: {stdout}{}",
            self.ports[i],
            String::from_utf8_lossy(&out.stderr)
        );
        let slots =
            stdout.strip_prefix("ledger OK: ").and_then(|s| s.split(' ').next()).and_then(|n| n.parse().ok());
        slots.unwrap_or_else(|| panic!("unexpected verify output: {stdout}"))
    }

    /// Resident set size of node `i` in KiB (Linux), if it runs.
    pub fn rss_kb(&self, i: usize) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid(i)?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

/// A JSON-speaking UDP client with an explicit id, retransmitting one request id until it
/// is answered: the wire protocol without a process per request. It registers a session
/// on first use, like `fba_client`.
pub struct RawClient {
    socket: UdpSocket,
    server: std::net::SocketAddr,
    /// The client id put in every request.
    pub id: u64,
    seq: u64,
    /// The session put in every request (0 until registered).
    pub session: u64,
    /// How long to wait for a reply before sending again.
    pub timeout: Duration,
    /// How many times to send a request before giving up.
    pub attempts: u32,
}

impl RawClient {
    /// A client with id `id` (unique within the cluster) talking to the node on `port`.
    pub fn new(port: u16, id: u64) -> RawClient {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        RawClient {
            socket,
            server: ([127, 0, 0, 1], port).into(),
            id,
            seq: 0,
            session: 0,
            timeout: Duration::from_millis(300),
            attempts: 40,
        }
    }

    /// Opens a session (a register request, retransmitted until answered); its id, or
    /// None if no answer came.
    pub fn register(&mut self) -> Option<u64> {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let nonce = (nanos as u64) ^ self.id.rotate_left(17);
        let register =
            serde_json::json!({"client": self.id, "seq": 0, "op": {"type": "register", "nonce": nonce}});
        let reply = self.exchange(&register)?;
        self.session = reply["outcome"]["session"].as_u64()?;
        self.seq = 0;
        Some(self.session)
    }

    /// The next request's sequence number (registering a session first if needed).
    pub fn next_seq(&mut self) -> u64 {
        if self.session == 0 {
            self.register();
        }
        self.seq += 1;
        self.seq
    }

    /// Sends a new request (the next sequence number) until answered; the `reply` object.
    pub fn call(&mut self, op: &serde_json::Value) -> Option<serde_json::Value> {
        if self.session == 0 {
            self.register()?;
        }
        let seq = self.next_seq();
        self.send_until_reply(seq, op)
    }

    /// Sends request (`id`, `session`, `seq`, `op`) up to `attempts` times, waiting
    /// `timeout` after each, and returns the `reply` object of the first answer to it, or
    /// None.
    pub fn send_until_reply(&self, seq: u64, op: &serde_json::Value) -> Option<serde_json::Value> {
        let mut request = serde_json::json!({"client": self.id, "seq": seq, "op": op});
        if self.session != 0 {
            request["session"] = self.session.into();
        }
        self.exchange(&request)
    }

    /// Sends `request` until a reply to it (same client, session and seq) comes.
    fn exchange(&self, request: &serde_json::Value) -> Option<serde_json::Value> {
        let (seq, session) = (request["seq"].clone(), request["session"].as_u64().unwrap_or(0));
        let message = serde_json::json!({"type": "request", "request": request});
        let bytes = serde_json::to_vec(&message).expect("json");
        let mut buf = vec![0u8; 65_536];
        for _ in 0..self.attempts {
            let _ = self.socket.send_to(&bytes, self.server);
            let deadline = Instant::now() + self.timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                self.socket.set_read_timeout(Some(left)).expect("timeout");
                let n = match self.socket.recv_from(&mut buf) {
                    Ok((n, from)) if from == self.server => n,
                    Ok(_) => continue,
                    // ICMP port unreachable (the node is down): wait out the attempt.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        std::thread::sleep(left);
                        break;
                    }
                    Err(_) => break,
                };
                let Ok(message) = serde_json::from_slice::<serde_json::Value>(&buf[..n]) else { continue };
                let reply = &message["reply"];
                let same_session = reply["session"].as_u64().unwrap_or(0) == session;
                if message["type"] == "reply"
                    && reply["client"] == self.id
                    && reply["seq"] == seq
                    && same_session
                {
                    return Some(reply.clone());
                }
            }
        }
        None
    }
}

/// A `set` operation for [`RawClient`].
pub fn set_op(key: &str, dollars: u64) -> serde_json::Value {
    serde_json::json!({"type": "set", "key": key, "amount": format!("${dollars}")})
}

/// A `deposit` operation for [`RawClient`].
pub fn deposit_op(key: &str, dollars: u64) -> serde_json::Value {
    serde_json::json!({"type": "deposit", "key": key, "amount": format!("${dollars}")})
}

/// A database file's content as a map (panics if it is not a JSON object of strings).
pub fn parse_db(content: &str) -> std::collections::BTreeMap<String, String> {
    serde_json::from_str(content).unwrap_or_else(|e| panic!("database is not a JSON object ({e}): {content}"))
}

impl Cluster {
    /// Sets the nomination and ballot timeouts of nodes started from now on (the default
    /// is 200 ms and 300 ms).
    pub fn set_timeouts(&mut self, nomination_ms: u64, ballot_ms: u64) {
        self.extra_args = vec![
            "--nomination-timeout-ms".into(),
            nomination_ms.to_string(),
            "--ballot-timeout-ms".into(),
            ballot_ms.to_string(),
        ];
    }
}

// ----- Additions for the Byzantine, churn and linearizability tests (they change no helper
// above) -------------------------------------------------------------------------------------

impl Cluster {
    /// Peak resident set size of node `i` in KiB (`VmHWM`, Linux), if it runs.
    pub fn peak_rss_kb(&self, i: usize) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid(i)?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Sends signal `signal` (e.g. `STOP`, `CONT`) to node `i`; panics if it does not run.
    pub fn signal(&self, i: usize, signal: &str) {
        let pid = self.pid(i).expect("the node runs").to_string();
        let status = Command::new("kill").arg(format!("-{signal}")).arg(&pid).status().expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid}");
    }
}

/// The entries of a ledger file's text: (slot, batch) per line, in order. Panics on a line
/// that is not an entry (the ledger of a running node has no torn tail once it is quiet).
pub fn ledger_entries(content: &str) -> Vec<(u64, fba::wallet::Batch)> {
    #[derive(serde::Deserialize)]
    struct Line {
        slot: u64,
        batch: fba::wallet::Batch,
    }
    content
        .lines()
        .map(|line| {
            let entry: Line =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not a ledger entry ({e}): {line}"));
            (entry.slot, entry.batch)
        })
        .collect()
}

// ----- Additions for the client tests (they change no helper above) ------------------------

impl Cluster {
    /// A client command aimed at node `i` whose keys and state live in `home`
    /// (`FBA_CLIENT_HOME`), so that nothing touches the real home directory.
    /// (No key is added, even in a keyed cluster: the caller chooses.)
    pub fn client_in(&self, i: usize, home: &Path) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::new(client_bin());
        cmd.arg(self.ports[i].to_string()).env("FBA_CLIENT_HOME", home).timeout(DEADLINE);
        cmd
    }
}
