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
}

impl Cluster {
    /// Configures `n` nodes without starting them.
    pub fn new(n: usize, threshold: usize) -> Cluster {
        Cluster {
            dir: TempDir::new("cluster"),
            ports: free_ports(n),
            threshold,
            children: (0..n).map(|_| None).collect(),
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
        let mut cmd = Command::new(server_bin());
        cmd.arg(self.ports[i].to_string()).arg("--data-dir").arg(self.dir.path());
        for (j, port) in self.ports.iter().enumerate() {
            if j != i {
                cmd.arg("--peer").arg(format!("127.0.0.1:{port}"));
            }
        }
        cmd.arg("--threshold").arg(self.threshold.to_string()).args(&self.extra_args);
        cmd
    }

    pub fn start_node(&mut self, i: usize) {
        let log = fs::File::create(self.log_path(i)).expect("log file");
        let err = log.try_clone().expect("log file");
        let child =
            self.server_command(i).stdout(Stdio::from(log)).stderr(Stdio::from(err)).spawn().expect("spawn");
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
    pub fn client(&self, i: usize) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::new(client_bin());
        cmd.arg(self.ports[i].to_string()).timeout(DEADLINE);
        cmd
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
