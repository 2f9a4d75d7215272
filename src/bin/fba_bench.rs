//! `fba_bench`: throughput and latency of an fba cluster, against the machine's floor.
//!
//! By default it starts a local cluster of `--nodes` quiet `fba_server` processes in a
//! temporary directory (leaving `--down` of them configured but not started), then runs
//! `--clients` closed-loop clients that send `--requests` requests in all (a mix of set,
//! deposit and get over `--keys` keys) to the running nodes, round robin. With `--target`
//! it measures a cluster that is already running instead. It prints a progress line, then
//! throughput and latency percentiles, and the same run's floor: one loopback UDP round
//! trip and one atomic fsynced file write. `--json` prints the result as JSON.
//!
//! It never waits for hours on a dead cluster: `--target` nodes are first asked for their
//! status (a few tries over about three seconds; if none answers it exits 1 with
//! `fba_bench: no answer from HOST:PORT (is the cluster running?)`), and a run in which no
//! request succeeds for [`STALL`] stops with an error (exit 1).

use clap::Parser;
use fba::client::{status, Client};
use fba::rng::Rng;
use fba::wallet::{Amount, Key, Op, Ops};
use serde::Serialize;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A run in which no request succeeds for this long is stopped.
const STALL: Duration = Duration::from_secs(10);
/// Sends of a request to one node before a client tries the next ([`Client::attempts`]):
/// with the round-trip timeout doubling from a few round trips, a paused or dead node is
/// left within a few hundred milliseconds.
const NODE_ATTEMPTS: u32 = 3;
/// Largest `--batch`: a `many` request of this many operations stays within
/// [`fba::wallet::MAX_REQUEST_BYTES`] (12 KiB) with keys of up to a million (`--keys`).
const MAX_BATCH: usize = 200;
/// How often the progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// How often the progress watcher looks at the counts.
const WATCH_POLL: Duration = Duration::from_millis(10);
/// Status requests sent to each `--target` before the run, one per [`PREFLIGHT_WAIT`].
const PREFLIGHT_ATTEMPTS: u32 = 3;
/// How long each status request of the pre-flight check waits for its answer.
const PREFLIGHT_WAIT: Duration = Duration::from_secs(1);

#[derive(Parser, Debug)]
#[command(name = "fba_bench", version, about = "Benchmark an fba cluster")]
struct Args {
    /// Nodes in the local cluster.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// How many of the local nodes are configured but not started.
    #[arg(long, default_value_t = 0)]
    down: usize,
    /// Concurrent clients (each waits for its reply before its next request).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Requests in all.
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Operations per request: above 1, each request is one `many` request of this many
    /// operations (applied in order in one slot, each with its own result); at most 200.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Distinct wallet keys.
    #[arg(long, default_value_t = 100)]
    keys: u64,
    /// Measure a running cluster at these addresses instead of starting one.
    #[arg(long = "target", value_name = "HOST:PORT")]
    targets: Vec<SocketAddr>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Directory of the `fba_server` binary (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Run the local cluster authenticated (`fba_server keygen`, `--key-file`).
    #[arg(long)]
    authenticated: bool,
    /// First create this many wallets (`k0` …, 50 per `many` request, not timed); the
    /// measured mix then runs over them (its keys are at least this many).
    #[arg(long, default_value_t = 0)]
    wallets: u64,
    /// After the run, `kill -9` the first local node, start it again and report how long
    /// it took to answer (its restart time).
    #[arg(long)]
    restart: bool,
}

/// Latency percentiles in microseconds.
#[derive(Serialize, Debug)]
struct Latency {
    p50_us: u64,
    p95_us: u64,
    p99_us: u64,
    max_us: u64,
}

/// The machine's floor, measured in the same run.
#[derive(Serialize, Debug)]
struct Floor {
    udp_round_trip_us: u64,
    fsynced_atomic_write_us: u64,
    /// Sealing and opening one 1 KiB peer datagram (HMAC-SHA256 both ways), in nanoseconds.
    authenticator_1kib_ns: u64,
}

#[derive(Serialize, Debug)]
struct Report {
    authenticated: bool,
    nodes: usize,
    down: usize,
    clients: usize,
    requests: u64,
    failed: u64,
    seconds: f64,
    requests_per_second: f64,
    /// Operations per request (`--batch`).
    batch: usize,
    /// Operations applied per second: requests per second times `batch`.
    operations_per_second: f64,
    latency: Latency,
    floor: Floor,
    p50_over_udp_round_trip: f64,
    p50_over_fsynced_write: f64,
    /// Largest resident set of a local node at the end (KiB); 0 with `--target`.
    max_node_rss_kib: u64,
    /// Wallets created before the run (`--wallets`).
    wallets: u64,
    /// Seconds from `kill -9` of a node to its first answer after a restart (`--restart`).
    restart_seconds: Option<f64>,
}

/// VmHWM (peak resident set, KiB) of a process, from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap_or("");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Median round trip of a datagram to an echo thread on loopback.
fn udp_round_trip() -> std::io::Result<Duration> {
    let echo = UdpSocket::bind("127.0.0.1:0")?;
    let addr = echo.local_addr()?;
    let handle = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            if n == 0 || echo.send_to(&buf[..n], from).is_err() {
                break;
            }
        }
    });
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let payload = [7u8; 200];
    let mut buf = [0u8; 512];
    let mut samples = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let start = Instant::now();
        socket.send_to(&payload, addr)?;
        socket.recv_from(&mut buf)?;
        samples.push(start.elapsed());
    }
    socket.send_to(&[], addr)?;
    let _ = handle.join();
    samples.sort();
    Ok(samples[samples.len() / 2])
}

/// Median cost of writing a small file atomically: temp file, fsync, rename, fsync dir.
fn fsynced_write(dir: &Path) -> std::io::Result<Duration> {
    let target = dir.join("floor.db");
    let tmp = dir.join("floor.db.tmp");
    let mut samples = Vec::with_capacity(200);
    for i in 0..200 {
        let start = Instant::now();
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(format!(r#"{{"foo": "${i}", "bar": "$10"}}"#).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        std::fs::File::open(dir)?.sync_all()?;
        samples.push(start.elapsed());
    }
    let _ = std::fs::remove_file(&target);
    samples.sort();
    Ok(samples[samples.len() / 2])
}

/// A local cluster, killed on drop.
struct LocalCluster {
    dir: PathBuf,
    children: Vec<Child>,
    /// The command of each running node (program and arguments), to restart it.
    commands: Vec<(PathBuf, Vec<String>)>,
}

impl LocalCluster {
    /// Starts running node `i` (`commands[i]`), its output appended to its log.
    fn spawn(&self, i: usize) -> Result<Child, String> {
        let (server, args) = &self.commands[i];
        let log_path = self.dir.join(format!("node{}.log", args[0]));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        Command::new(server)
            .args(args)
            .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", server.display()))
    }

    /// `kill -9` of running node `i`, then starts it again; the time until it answers a
    /// status request.
    fn restart(&mut self, i: usize, addr: SocketAddr) -> Result<Duration, String> {
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
        let started = Instant::now();
        self.children[i] = self.spawn(i)?;
        while status::query(addr, Duration::from_millis(50), 1).is_err() {
            if started.elapsed() > Duration::from_secs(120) {
                return Err(format!("node {addr} did not answer within 120 s of its restart"));
            }
        }
        Ok(started.elapsed())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let sockets: Vec<UdpSocket> = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    sockets.iter().map(|s| s.local_addr().map(|a| a.port())).collect()
}

/// The time to seal and open one 1 KiB peer datagram (median of many).
fn authenticator_cost() -> Duration {
    use fba::auth::{NetworkKeys, Opener, Sealer};
    use fba::quorum::NodeId;
    let keys = |me: u64, peer: u64| NetworkKeys {
        network: [1; 32],
        me: NodeId(me),
        pairwise: [(NodeId(peer), [2; 32])].into_iter().collect(),
    };
    let (sealer, mut opener) = (Sealer::new(&keys(1, 2), 1), Opener::new(&keys(2, 1)));
    let payload = vec![b'x'; 1024];
    let mut samples: Vec<Duration> = (0..2000)
        .map(|_| {
            let start = Instant::now();
            let sealed = sealer.seal(NodeId(2), &payload).expect("a peer");
            let opened = opener.open(&sealed).map(|(_, p)| p.len());
            assert_eq!(opened, Ok(1024));
            start.elapsed()
        })
        .collect();
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Keys for the local cluster (`fba_server keygen`), one file per port.
fn keygen(server: &Path, dir: &Path, ports: &[u16]) -> Result<PathBuf, String> {
    let keys = dir.join("keys");
    let out = Command::new(server)
        .arg("keygen")
        .arg("--out")
        .arg(&keys)
        .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
        .output()
        .map_err(|e| format!("cannot run {} keygen: {e}", server.display()))?;
    if !out.status.success() {
        return Err(format!("keygen failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(keys)
}

fn start_cluster(args: &Args) -> Result<(LocalCluster, Vec<SocketAddr>), String> {
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    let server = bin_dir.join("fba_server");
    let dir = std::env::temp_dir().join(format!("fba-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ports = free_ports(args.nodes).map_err(|e| e.to_string())?;
    let threshold = (2 * args.nodes) / 3 + 1;
    let mut cluster = LocalCluster { dir: dir.clone(), children: Vec::new(), commands: Vec::new() };
    let keys = if args.authenticated { Some(keygen(&server, &dir, &ports)?) } else { None };
    let mut up = Vec::new();
    for (i, port) in ports.iter().enumerate().skip(args.down) {
        let mut cmd =
            vec![port.to_string(), "--quiet".into(), "--data-dir".into(), dir.display().to_string()];
        cmd.extend(["--threshold".into(), threshold.to_string()]);
        cmd.extend(["--nomination-timeout-ms", "100", "--ballot-timeout-ms", "200"].map(String::from));
        for (j, p) in ports.iter().enumerate() {
            if j != i {
                cmd.extend(["--peer".into(), format!("127.0.0.1:{p}")]);
            }
        }
        if let Some(keys) = &keys {
            cmd.extend(["--key-file".into(), keys.join(format!("{port}.key")).display().to_string()]);
        }
        cluster.commands.push((server.clone(), cmd));
        let child = cluster.spawn(cluster.commands.len() - 1)?;
        cluster.children.push(child);
        up.push(SocketAddr::from(([127, 0, 0, 1], *port)));
    }
    for addr in &up {
        let log = dir.join(format!("node{}.log", addr.port()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&log).unwrap_or_default().contains("listening on") {
            if Instant::now() > deadline {
                return Err(format!("node {addr} did not start; see {}", log.display()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok((cluster, up))
}

fn random_op(rng: &mut Rng, keys: u64) -> Op {
    let key = Key::new(format!("k{}", rng.below(keys))).expect("valid key");
    let amount = Amount::from_cents(1 + rng.below(10_000)).expect("valid amount");
    match rng.below(10) {
        0..=3 => Op::Set { key, amount },
        4..=7 => Op::Deposit { key, amount },
        _ => Op::Get { key },
    }
}

/// A `many` request of `n` random operations.
fn many_op(rng: &mut Rng, keys: u64, n: usize) -> Op {
    let ops: Vec<Op> = (0..n).map(|_| random_op(rng, keys)).collect();
    Op::Many { ops: Ops::try_from(ops).expect("--batch is checked to be 1 to MAX_BATCH") }
}

/// The targets that answer a status request (asked in parallel); an error naming them
/// all if none does.
fn preflight(targets: &[SocketAddr]) -> Result<Vec<SocketAddr>, String> {
    let answers: Vec<bool> = std::thread::scope(|scope| {
        let asks: Vec<_> = targets
            .iter()
            .map(|t| scope.spawn(move || status::query(*t, PREFLIGHT_WAIT, PREFLIGHT_ATTEMPTS).is_ok()))
            .collect();
        asks.into_iter().map(|ask| ask.join().unwrap_or(false)).collect()
    });
    let (up, down): (Vec<_>, Vec<_>) = targets.iter().zip(answers).partition(|(_, ok)| *ok);
    let names = |list: &[(&SocketAddr, bool)]| list.iter().map(|(t, _)| t.to_string()).collect::<Vec<_>>();
    if up.is_empty() {
        return Err(format!("no answer from {} (is the cluster running?)", names(&down).join(", ")));
    }
    if !down.is_empty() {
        eprintln!("fba_bench: no answer from {}; running against the others", names(&down).join(", "));
    }
    Ok(up.into_iter().map(|(t, _)| *t).collect())
}

/// Counts of the run so far, shared by the clients and the watcher.
#[derive(Default)]
struct Counts {
    /// Requests handed out.
    issued: AtomicU64,
    /// Requests finished (answered or given up).
    done: AtomicU64,
    /// Requests answered.
    succeeded: AtomicU64,
}

/// Prints progress every [`PROGRESS_EVERY`] until every request is done; an error if none
/// succeeds for [`STALL`]. It looks every [`WATCH_POLL`], so it returns soon after the
/// last request (the run's time is measured by the clients, not here).
fn watch(counts: &Counts, total: u64, started: Instant) -> Result<(), String> {
    let mut last = (0, Instant::now());
    let mut printed = Instant::now();
    loop {
        let (done, ok) = (counts.done.load(Ordering::Relaxed), counts.succeeded.load(Ordering::Relaxed));
        if done >= total {
            eprintln!();
            return Ok(());
        }
        if ok != last.0 {
            last = (ok, Instant::now());
        } else if last.1.elapsed() >= STALL {
            eprintln!();
            return Err(format!(
                "no request succeeded for {} s ({done}/{total} done): is the cluster still running?",
                STALL.as_secs()
            ));
        }
        std::thread::sleep(WATCH_POLL);
        if printed.elapsed() >= PROGRESS_EVERY {
            printed = Instant::now();
            let rate = done as f64 / started.elapsed().as_secs_f64();
            eprint!("\r{done}/{total} requests, {rate:.0}/s   ");
        }
    }
}

/// Runs the clients; returns every latency in microseconds, the number of failures and
/// the time from the start to the last client's last reply, or an error if the run
/// stalled.
fn run_clients(args: &Args, targets: &[SocketAddr]) -> Result<(Vec<u64>, u64, Duration), String> {
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let handles: Vec<_> = (0..args.clients)
        .map(|c| {
            // Each client talks to one node, and to the others in turn if it stops answering.
            let mut servers = targets.to_vec();
            servers.rotate_left(c % targets.len());
            let (counts, total, keys, batch) = (Arc::clone(&counts), args.requests, args.keys, args.batch);
            let signed = args.authenticated;
            std::thread::spawn(move || {
                let mut rng = Rng::new(c as u64 + 1);
                let mut latencies = Vec::new();
                let mut failed = 0;
                // Authenticated clusters take only signed requests: each client its own key.
                let client = match signed {
                    true => fba::wallet::ClientKey::generate()
                        .ok()
                        .and_then(|(key, _)| Client::with_servers(servers, Some(key)).ok()),
                    false => Client::with_servers(servers, None).ok(),
                };
                let Some(mut client) = client else { return (latencies, total, Instant::now()) };
                client.timeout = Duration::from_millis(1000);
                // A few sends to a node (about 1 s at the longest timeout) before the next.
                client.attempts = NODE_ATTEMPTS;
                // Open the session before the clock starts (a failure shows in the first call).
                let _ = client.register();
                while counts.issued.fetch_add(1, Ordering::Relaxed) < total {
                    let op = match batch {
                        1 => random_op(&mut rng, keys),
                        n => many_op(&mut rng, keys, n),
                    };
                    let start = Instant::now();
                    match client.call(op) {
                        Ok(_) => {
                            latencies.push(start.elapsed().as_micros() as u64);
                            counts.succeeded.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => failed += 1,
                    }
                    counts.done.fetch_add(1, Ordering::Relaxed);
                }
                (latencies, failed, Instant::now())
            })
        })
        .collect();
    // On a stall the client threads are left behind: the process exits without them.
    watch(&counts, args.requests, started)?;
    let mut all = Vec::new();
    let mut failed = 0;
    let mut finished = started;
    for h in handles {
        let Ok((lat, f, at)) = h.join() else { continue };
        all.extend(lat);
        failed += f;
        finished = finished.max(at);
    }
    Ok((all, failed, finished - started))
}

/// Clients that create the `--wallets` before the run.
const PRELOAD_CLIENTS: u64 = 16;

/// Creates wallets `k0` … `k{n-1}` at $1 each, [`MAX_BATCH`] per `many` request, from
/// [`PRELOAD_CLIENTS`] clients; how long it took.
fn preload(targets: &[SocketAddr], n: u64, signed: bool) -> Result<Duration, String> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..PRELOAD_CLIENTS)
        .map(|c| {
            let mut servers = targets.to_vec();
            servers.rotate_left(c as usize % targets.len());
            let next = Arc::clone(&next);
            std::thread::spawn(move || -> Result<(), String> {
                let key = match signed {
                    true => Some(fba::wallet::ClientKey::generate().map_err(|e| e.to_string())?.0),
                    false => None,
                };
                let mut client = Client::with_servers(servers, key).map_err(|e| e.to_string())?;
                client.attempts = NODE_ATTEMPTS;
                loop {
                    let first = next.fetch_add(MAX_BATCH as u64, Ordering::Relaxed);
                    if first >= n {
                        return Ok(());
                    }
                    let ops: Vec<Op> = (first..n.min(first + MAX_BATCH as u64))
                        .map(|k| Op::Set {
                            key: Key::new(format!("k{k}")).expect("valid key"),
                            amount: Amount::from_cents(100).expect("valid amount"),
                        })
                        .collect();
                    let many = Op::Many { ops: Ops::try_from(ops).expect("1 to MAX_BATCH sets") };
                    client.call(many).map_err(|e| format!("creating wallets from k{first}: {e}"))?;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().map_err(|_| "a wallet-creating client panicked".to_owned())??;
    }
    Ok(started.elapsed())
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    args.keys = args.keys.max(args.wallets);
    if args.clients == 0 || args.nodes == 0 || args.down >= args.nodes {
        eprintln!("fba_bench: need at least one client and one running node");
        return ExitCode::FAILURE;
    }
    if !(1..=MAX_BATCH).contains(&args.batch) {
        eprintln!("fba_bench: --batch must be 1 to {MAX_BATCH} (a request carries at most 12 KiB)");
        return ExitCode::FAILURE;
    }
    let (mut cluster, targets, floor_dir) = if args.targets.is_empty() {
        match start_cluster(&args) {
            Ok((cluster, up)) => {
                let dir = cluster.dir.clone();
                (Some(cluster), up, dir)
            }
            Err(e) => {
                eprintln!("fba_bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        match preflight(&args.targets) {
            Ok(up) => (None, up, std::env::temp_dir()),
            Err(e) => {
                eprintln!("fba_bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let floor = match (udp_round_trip(), fsynced_write(&floor_dir)) {
        (Ok(rtt), Ok(write)) => Floor {
            udp_round_trip_us: rtt.as_micros() as u64,
            fsynced_atomic_write_us: write.as_micros() as u64,
            authenticator_1kib_ns: authenticator_cost().as_nanos() as u64,
        },
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("fba_bench: cannot measure the floor: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.wallets > 0 {
        match preload(&targets, args.wallets, args.authenticated) {
            Ok(took) => eprintln!(
                "created {} wallets in {:.1} s ({:.0} wallets/s)",
                args.wallets,
                took.as_secs_f64(),
                args.wallets as f64 / took.as_secs_f64()
            ),
            Err(e) => {
                eprintln!("fba_bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let (mut latencies, failed, elapsed) = match run_clients(&args, &targets) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("fba_bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let restart_seconds = match (&mut cluster, args.restart) {
        (Some(cluster), true) => match cluster.restart(0, targets[0]) {
            Ok(took) => Some(took.as_secs_f64()),
            Err(e) => {
                eprintln!("fba_bench: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let max_node_rss_kib =
        cluster.as_ref().map_or(0, |c| c.children.iter().map(|ch| peak_rss_kib(ch.id())).max().unwrap_or(0));
    latencies.sort_unstable();
    let p50 = percentile(&latencies, 0.50);
    let report = Report {
        authenticated: args.authenticated,
        nodes: args.nodes,
        down: args.down,
        clients: args.clients,
        requests: latencies.len() as u64,
        failed,
        seconds: elapsed.as_secs_f64(),
        requests_per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        batch: args.batch,
        operations_per_second: (latencies.len() * args.batch) as f64 / elapsed.as_secs_f64(),
        latency: Latency {
            p50_us: p50,
            p95_us: percentile(&latencies, 0.95),
            p99_us: percentile(&latencies, 0.99),
            max_us: latencies.last().copied().unwrap_or(0),
        },
        p50_over_udp_round_trip: p50 as f64 / floor.udp_round_trip_us.max(1) as f64,
        p50_over_fsynced_write: p50 as f64 / floor.fsynced_atomic_write_us.max(1) as f64,
        floor,
        max_node_rss_kib,
        wallets: args.wallets,
        restart_seconds,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
    } else {
        let ms = |us: u64| us as f64 / 1000.0;
        println!(
            "{} nodes ({} down{}), {} clients: {} requests in {:.2} s = {:.0} requests/s ({} failed)",
            report.nodes,
            report.down,
            if report.authenticated { ", authenticated" } else { "" },
            report.clients,
            report.requests,
            report.seconds,
            report.requests_per_second,
            failed
        );
        if report.batch > 1 {
            println!(
                "batches of {} operations: {:.0} operations/s",
                report.batch, report.operations_per_second
            );
        }
        let l = &report.latency;
        println!(
            "latency p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(l.p50_us),
            ms(l.p95_us),
            ms(l.p99_us),
            ms(l.max_us)
        );
        println!(
            "floor: UDP round trip {:.3} ms, fsynced atomic write {:.3} ms; p50 = {:.1}x round trip = {:.1}x write",
            ms(report.floor.udp_round_trip_us),
            ms(report.floor.fsynced_atomic_write_us),
            report.p50_over_udp_round_trip,
            report.p50_over_fsynced_write
        );
        println!(
            "authenticator: seal + open of a 1 KiB peer datagram {} ns",
            report.floor.authenticator_1kib_ns
        );
        if let Some(seconds) = report.restart_seconds {
            println!("restart of a node (kill -9, start, first answer): {seconds:.2} s");
        }
        if report.max_node_rss_kib > 0 {
            println!("largest node peak RSS: {:.1} MiB", report.max_node_rss_kib as f64 / 1024.0);
        }
    }
    if failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
