//! Durability and fault tolerance on real processes: crashes (SIGKILL) in the middle of a
//! stream of writes, a node that missed many slots, a lossy network, partitions, damaged
//! files and a full disk. The invariant checked everywhere: every write a client saw
//! acknowledged is on every node, all database files are identical, all ledgers are
//! identical, and `fba_server --verify` accepts every node's ledger and database.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::{deposit_op, parse_db, set_op, wait_for, Cluster, RawClient};

const ALL: [usize; 4] = [0, 1, 2, 3];

/// Nodes cache the state of their partition file for 20 ms: a new state certainly holds
/// after this long.
const HOOK_CACHE: Duration = Duration::from_millis(100);

/// Writes acknowledged so far, by key.
type Acked = BTreeMap<String, String>;

/// Is the reply a successful one?
fn ok(reply: &Option<serde_json::Value>) -> bool {
    reply.as_ref().is_some_and(|r| r["outcome"]["status"] == "ok")
}

/// Do the listed nodes' database files all read the same, holding every acknowledged write?
fn converged(cluster: &Cluster, nodes: &[usize], acked: &Acked) -> bool {
    let dbs: Vec<String> = nodes.iter().map(|&i| cluster.db(i)).collect();
    if dbs[0].is_empty() || dbs.iter().any(|d| d != &dbs[0]) {
        return false;
    }
    let ledgers: Vec<String> = nodes.iter().map(|&i| cluster.ledger(i)).collect();
    if ledgers.iter().any(|l| l != &ledgers[0]) {
        return false;
    }
    let db = parse_db(&dbs[0]);
    acked.iter().all(|(k, v)| db.get(k) == Some(v))
}

/// Waits until every running node converged, stops them all cleanly, and checks the files
/// at rest: identical databases and ledgers holding every acknowledged write, and
/// `--verify` accepting each node. Returns the number of slots.
fn check_final_state(cluster: &mut Cluster, acked: &Acked) -> u64 {
    wait_for("every node to hold every acknowledged write, identically", || converged(cluster, &ALL, acked));
    for i in ALL {
        cluster.stop(i);
    }
    let db = cluster.db(0);
    let ledger = cluster.ledger(0);
    for i in ALL {
        assert_eq!(cluster.db(i), db, "database of node {} differs", cluster.ports[i]);
        assert_eq!(cluster.ledger(i), ledger, "ledger of node {} differs", cluster.ports[i]);
    }
    let content = parse_db(&db);
    for (key, value) in acked {
        assert_eq!(content.get(key), Some(value), "acknowledged write {key}={value} is missing: {db}");
    }
    let slots: Vec<u64> = ALL.iter().map(|&i| cluster.verify_ok(i)).collect();
    assert!(slots.iter().all(|&s| s == slots[0] && s as usize == ledger.lines().count()), "{slots:?}");
    slots[0]
}

/// The ledger length node `i` reported when it (last) started.
fn restarted_from_ledger(cluster: &Cluster, i: usize) -> u64 {
    let log = cluster.log(i);
    let at = log.find("; ledger at slot ").unwrap_or_else(|| panic!("no start-up line: {log}"));
    let digits: String = log[at + 17..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().expect("a slot number")
}

/// A stream of `set` requests from several concurrent clients, all to one node.
struct Stream {
    acked: Mutex<Acked>,
    unanswered: Mutex<Vec<String>>,
    count: AtomicUsize,
    stop: AtomicBool,
}

impl Stream {
    fn new() -> Stream {
        Stream {
            acked: Mutex::default(),
            unanswered: Mutex::default(),
            count: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// One client: sequential sets `c{client}k{i}` = $i+1, at least `min` of them, until
    /// told to stop (or a hard cap is reached).
    fn client(&self, port: u16, client: u64, min: u64) {
        let mut raw = RawClient::new(port, 100 + client);
        raw.timeout = Duration::from_millis(250);
        raw.attempts = 60;
        for i in 0..400 {
            if i >= min && self.stop.load(Ordering::SeqCst) {
                break;
            }
            let key = format!("c{client}k{i}");
            let reply = raw.call(&set_op(&key, i + 1));
            if ok(&reply) {
                self.acked.lock().unwrap().insert(key, format!("${}", i + 1));
                self.count.fetch_add(1, Ordering::SeqCst);
            } else {
                self.unanswered.lock().unwrap().push(format!("{key}: {reply:?}"));
            }
        }
    }
}

/// Sets the stream's stop flag when dropped, so that client threads end even if the
/// orchestrating code panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Three concurrent clients write to node 0; after 20 acknowledgements `fault` strikes
/// (and restarts what it stopped), and the stream goes on until 30 more writes were
/// acknowledged after it. Returns the stream.
fn fault_during_stream(cluster: &mut Cluster, fault: impl FnOnce(&mut Cluster, &Stream)) -> Stream {
    let stream = Stream::new();
    let port = cluster.ports[0];
    std::thread::scope(|s| {
        for client in 0..3 {
            let stream = &stream;
            s.spawn(move || stream.client(port, client, 40));
        }
        let _stop = StopOnDrop(&stream.stop);
        wait_for("20 acknowledged writes", || stream.count() >= 20);
        fault(cluster, &stream);
        let at_restart = stream.count();
        wait_for("writes to commit after the restart", || stream.count() >= at_restart + 30);
    });
    stream
}

/// [`fault_during_stream`] with node `victim` killed (SIGKILL) and restarted.
fn crash_during_stream(cluster: &mut Cluster, victim: usize) -> Stream {
    fault_during_stream(cluster, |cluster, stream| {
        cluster.kill(victim);
        if victim == 0 {
            // The clients talk to the victim: nothing can be acknowledged while it is
            // down. Leave it down for a moment of retransmissions.
            std::thread::sleep(Duration::from_millis(500));
        } else {
            let at_kill = stream.count();
            wait_for("writes to commit while the node is down", || stream.count() >= at_kill + 20);
        }
        cluster.start_node_with(victim, &[], &[]);
    })
}

#[test]
fn kill_9_of_a_non_primary_node_mid_stream_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(4, 3, &[]);
    let stream = crash_during_stream(&mut cluster, 2);
    let acked = stream.acked.into_inner().unwrap();
    let unanswered = stream.unanswered.into_inner().unwrap();
    // Node 0 and a quorum stayed up the whole time: every request was answered.
    assert!(unanswered.is_empty(), "unanswered: {unanswered:?}");
    assert!(acked.len() >= 120, "{} writes", acked.len());
    assert!(restarted_from_ledger(&cluster, 2) > 0);
    check_final_state(&mut cluster, &acked);
}

#[test]
fn kill_9_of_the_primary_mid_stream_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(4, 3, &[]);
    let stream = crash_during_stream(&mut cluster, 0);
    let acked = stream.acked.into_inner().unwrap();
    assert!(acked.len() >= 50, "{} writes", acked.len());
    assert!(restarted_from_ledger(&cluster, 0) > 0);
    // Unacknowledged writes may or may not be there; acknowledged ones must.
    check_final_state(&mut cluster, &acked);
}

/// What a power loss keeps of node `i`'s files, after it was killed: the ledger and the
/// journal cut back to the length they were last synced to (as logged through
/// `FBA_SYNC_LOG`, see `fba::fsio::note_synced`), and the database file, which is written
/// without sync, lost entirely (left empty, the worst it can be).
fn lose_power(cluster: &Cluster, i: usize, sync_log: &std::path::Path) {
    let log = std::fs::read_to_string(sync_log).expect("the node logged its syncs");
    let mut durable: BTreeMap<String, u64> = BTreeMap::new();
    for line in log.lines() {
        let (len, path) = line.split_once(' ').expect("`<length> <path>`");
        durable.insert(path.to_string(), len.parse().expect("a length"));
    }
    assert!(durable.len() >= 2, "ledger and journal both logged: {durable:?}");
    let mut cut = 0;
    for (path, len) in &durable {
        let file = std::fs::OpenOptions::new().write(true).open(path).expect("file exists");
        let size = file.metadata().expect("metadata").len();
        assert!(size >= *len, "{path}: {size} bytes, synced up to {len}");
        cut += size - len;
        file.set_len(*len).expect("truncate");
    }
    eprintln!("node {}: power loss dropped {cut} unsynced bytes", cluster.ports[i]);
    std::fs::write(cluster.db_path(i), b"").expect("empty the database file");
}

#[test]
fn a_power_loss_of_every_node_mid_stream_loses_no_acknowledged_write() {
    let mut cluster = Cluster::new(4, 3);
    let logs: Vec<std::path::PathBuf> =
        ALL.iter().map(|&i| cluster.dir.path().join(format!("sync-{}.log", cluster.ports[i]))).collect();
    let start = |cluster: &mut Cluster, i: usize| {
        cluster.start_node_with(i, &[("FBA_SYNC_LOG", logs[i].as_os_str())], &[]);
    };
    ALL.iter().for_each(|&i| start(&mut cluster, i));
    let stream = fault_during_stream(&mut cluster, |cluster, _| {
        // The whole cluster loses power at once: every process dies, and every write not
        // synced is gone.
        ALL.iter().for_each(|&i| cluster.kill(i));
        ALL.iter().for_each(|&i| lose_power(cluster, i, &logs[i]));
        ALL.iter().for_each(|&i| start(cluster, i));
    });
    let acked = stream.acked.into_inner().unwrap();
    assert!(acked.len() >= 50, "{} writes", acked.len());
    for i in ALL {
        let log = cluster.log(i);
        assert!(log.contains("rewritten from the ledger"), "the lost database was rebuilt: {log}");
    }
    check_final_state(&mut cluster, &acked);
}

/// Stops node 3, has the other three decide `slots` slots (one request each, sent one at a
/// time), restarts node 3, and checks that it catches up and then serves a request.
fn catch_up_after_many_slots(slots: u64) {
    let mut cluster = Cluster::new(4, 3);
    // Node 3 is the round-1 nomination leader of about a quarter of the slots; while it
    // is down those slots wait for the nomination timeout, so keep it short (a healthy
    // round takes about a millisecond here).
    cluster.set_timeouts(4, 300);
    for i in ALL {
        cluster.start_node_with(i, &[], &["--quiet"]);
    }
    let mut client = RawClient::new(cluster.ports[0], 1);
    assert!(ok(&client.call(&set_op("before", 1))));
    wait_for("node 3 to apply the first write", || cluster.db(3).contains("before"));
    cluster.stop(3);

    let started = Instant::now();
    for i in 0..slots {
        let reply = client.call(&deposit_op("x", 1));
        assert!(ok(&reply), "deposit {i}: {reply:?}");
    }
    let deciding = started.elapsed();
    eprintln!("{slots} slots decided in {deciding:?}");
    let expected = format!(r#"{{"before": "$1", "x": "${slots}"}}"#);
    cluster.wait_dbs(&[0, 1, 2], &expected);

    let restarted = Instant::now();
    cluster.start_node_with(3, &[], &["--quiet"]);
    wait_for("node 3 to catch up", || cluster.db(3) == expected);
    let catching_up = restarted.elapsed();
    eprintln!("node 3 caught up {slots} slots in {catching_up:?}");
    // The database file is written before the line that reports the catch-up finished.
    wait_for("node 3 to report it caught up", || cluster.log(3).contains("caught up"));

    let mut client3 = RawClient::new(cluster.ports[3], 2);
    let reply = client3.call(&set_op("after", 2));
    assert!(ok(&reply), "node 3 serves after catching up: {reply:?}");
    assert_eq!(reply.unwrap()["outcome"]["balance"], "$2");
    let acked = Acked::from([("after".into(), "$2".into()), ("x".into(), format!("${slots}"))]);
    let total = check_final_state(&mut cluster, &acked);
    assert_eq!(total, slots + 4, "two clients' registers, two sets and the deposits");
}

/// Deciding the 5,000 slots takes about 20 s on 2 cores; catching up, about 1 s.
#[test]
fn a_node_down_for_5000_slots_catches_up_and_serves() {
    catch_up_after_many_slots(5_000);
}

#[test]
fn every_request_commits_through_loss_duplication_and_reordering() {
    let mut cluster = Cluster::new(4, 3);
    for i in ALL {
        let faults = format!("loss=0.2,dup=0.2,delay_ms=20,seed={}", 11 + i);
        cluster.start_node_with(i, &[("FBA_NET_FAULTS", OsStr::new(&faults))], &[]);
    }
    // Three clients, on nodes 0, 1 and 2, ten requests each.
    let acked = Mutex::new(Acked::new());
    std::thread::scope(|s| {
        for c in 0..3u64 {
            let (acked, port) = (&acked, cluster.ports[c as usize]);
            s.spawn(move || {
                let mut client = RawClient::new(port, 10 + c);
                client.timeout = Duration::from_millis(300);
                client.attempts = 80;
                for i in 0..10 {
                    let key = format!("n{c}k{i}");
                    let reply = client.call(&set_op(&key, i + 1));
                    assert!(ok(&reply), "{key}: {reply:?}");
                    acked.lock().unwrap().insert(key, format!("${}", i + 1));
                }
            });
        }
    });
    let acked = acked.into_inner().unwrap();
    assert_eq!(acked.len(), 30);
    check_final_state(&mut cluster, &acked);
    // Values travel by hash: some batch announcements were lost or overtaken by the
    // statements naming them, and those batches were fetched from the statements' senders
    // (without that, their slots could not have been decided).
    let fetched: usize = ALL.iter().map(|&i| cluster.log(i).matches("recv FETCH from").count()).sum();
    let answered: usize = ALL.iter().map(|&i| cluster.log(i).matches("send VALUE to").count()).sum();
    assert!(fetched > 0 && answered > 0, "no batch was fetched ({fetched} fetches, {answered} answers)");
}

#[test]
fn a_partitioned_node_catches_up_and_a_minority_partition_commits_nothing() {
    let mut cluster = Cluster::new(4, 3);
    let cut: Vec<std::path::PathBuf> =
        ALL.iter().map(|i| cluster.dir.path().join(format!("cut{i}"))).collect();
    for i in ALL {
        cluster.start_node_with(i, &[("FBA_NET_PARTITION_FILE", cut[i].as_os_str())], &[]);
    }
    let mut acked = Acked::new();
    let mut client = RawClient::new(cluster.ports[0], 1);
    assert!(ok(&client.call(&set_op("start", 1))));
    acked.insert("start".into(), "$1".into());
    wait_for("all nodes to apply the first write", || converged(&cluster, &ALL, &acked));

    // Node 3 cut off for a few seconds while writes go on through node 0.
    std::fs::write(&cut[3], "").unwrap();
    std::thread::sleep(HOOK_CACHE);
    let db3 = cluster.db(3);
    let started = Instant::now();
    let mut i = 0;
    while i < 10 || started.elapsed() < Duration::from_secs(3) {
        let key = format!("p{i}");
        let reply = client.call(&set_op(&key, i + 1));
        assert!(ok(&reply), "{key} commits without node 3: {reply:?}");
        acked.insert(key, format!("${}", i + 1));
        i += 1;
    }
    wait_for("nodes 0-2 to agree", || converged(&cluster, &[0, 1, 2], &acked));
    assert_eq!(cluster.db(3), db3, "the cut-off node changed nothing");
    std::fs::remove_file(&cut[3]).unwrap();
    wait_for("node 3 to catch up after the partition heals, with no further writes", || {
        converged(&cluster, &ALL, &acked)
    });

    // A minority (nodes 0 and 1) cannot commit anything.
    std::fs::write(&cut[2], "").unwrap();
    std::fs::write(&cut[3], "").unwrap();
    std::thread::sleep(HOOK_CACHE);
    let before: Vec<(String, String)> = ALL.iter().map(|&i| (cluster.db(i), cluster.ledger(i))).collect();
    client.attempts = 6;
    client.timeout = Duration::from_millis(250);
    let seq = client.next_seq();
    let op = set_op("minority", 9);
    let reply = client.send_until_reply(seq, &op);
    assert!(reply.is_none(), "a write answered without a quorum: {reply:?}");
    for i in ALL {
        assert_eq!((cluster.db(i), cluster.ledger(i)), before[i], "node {} changed", cluster.ports[i]);
    }
    // Heal: the same request, retransmitted, commits everywhere.
    std::fs::remove_file(&cut[2]).unwrap();
    std::fs::remove_file(&cut[3]).unwrap();
    client.attempts = 80;
    let reply = client.send_until_reply(seq, &op);
    assert!(ok(&reply), "the write commits once the partition heals: {reply:?}");
    acked.insert("minority".into(), "$9".into());
    check_final_state(&mut cluster, &acked);
}

/// Five writes through node 0, applied by every node.
fn five_writes(cluster: &Cluster) -> Acked {
    let mut client = RawClient::new(cluster.ports[0], 1);
    let mut acked = Acked::new();
    for i in 0..5 {
        let key = format!("w{i}");
        assert!(ok(&client.call(&set_op(&key, i + 1))));
        acked.insert(key, format!("${}", i + 1));
    }
    wait_for("every node to apply five writes", || converged(cluster, &ALL, &acked));
    acked
}

#[test]
fn a_torn_last_ledger_entry_is_dropped_and_fetched_again() {
    let mut cluster = Cluster::start(4, 3, &[]);
    let mut acked = five_writes(&cluster);
    cluster.kill(1);
    let path = cluster.ledger_path(1);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 10).unwrap();
    cluster.start_node_with(1, &[], &[]);
    let log = cluster.log(1);
    assert!(log.contains("recovery: ledger: dropped a torn last entry"), "{log}");
    wait_for("node 1 to catch up the dropped slot", || converged(&cluster, &ALL, &acked));
    // And it serves.
    let mut client = RawClient::new(cluster.ports[1], 2);
    assert!(ok(&client.call(&set_op("later", 7))));
    acked.insert("later".into(), "$7".into());
    assert_eq!(check_final_state(&mut cluster, &acked), 8, "two registers and six writes");
}

#[test]
fn a_missing_database_is_rebuilt_from_the_ledger() {
    let mut cluster = Cluster::start(4, 3, &[]);
    let acked = five_writes(&cluster);
    cluster.kill(1);
    std::fs::remove_file(cluster.db_path(1)).unwrap();
    cluster.start_node_with(1, &[], &[]);
    let log = cluster.log(1);
    assert!(log.contains("was missing: rebuilt from the ledger"), "{log}");
    assert!(!log.contains("kept as"), "nothing to set aside: {log}");
    assert_eq!(cluster.db(1), cluster.db(0), "rebuilt before it listens");
    assert_eq!(check_final_state(&mut cluster, &acked), 6, "a register and five writes");
}

#[test]
fn a_corrupt_database_is_set_aside_and_rewritten_from_the_ledger() {
    let mut cluster = Cluster::start(4, 3, &[]);
    let acked = five_writes(&cluster);
    cluster.kill(2);
    let garbage = "{\"w0\": \"$1\", garbage \u{0} not json";
    std::fs::write(cluster.db_path(2), garbage).unwrap();
    cluster.start_node_with(2, &[], &[]);
    let log = cluster.log(2);
    assert!(log.contains("kept as") && log.contains("rewritten from the ledger"), "{log}");
    assert_eq!(cluster.db(2), cluster.db(0), "rewritten before it listens");
    let name = format!("assignment3_{}.db.bad-", cluster.ports[2]);
    let bad: Vec<_> = std::fs::read_dir(cluster.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&name))
        .collect();
    assert_eq!(bad.len(), 1, "one set-aside file: {bad:?}");
    assert_eq!(std::fs::read_to_string(&bad[0]).unwrap(), garbage, "kept as it was");
    assert_eq!(check_final_state(&mut cluster, &acked), 6, "a register and five writes");
}

#[test]
fn a_full_disk_stops_the_node_before_it_acknowledges_and_the_others_go_on() {
    let mut cluster = Cluster::new(4, 3);
    // Room for four ledger entries: the client's register and three sets.
    cluster.start_node_with(0, &[("FBA_DISK_FULL_AFTER", OsStr::new("4"))], &[]);
    for i in 1..4 {
        cluster.start_node(i);
    }
    let script = cluster.dir.path().join("five.txt");
    std::fs::write(&script, "set k1 1\nset k2 2\nset k3 3\nset k4 4\nset k5 5\n").unwrap();
    let assert = cluster
        .client(0)
        .args(["--attempts", "6", "--timeout-ms", "250", "--file"])
        .arg(&script)
        .assert()
        .code(3);
    let out = assert.get_output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let port = cluster.ports[0];
    let want: Vec<String> = (1..=3).map(|i| format!("[{port}] set k{i} {i} -> OK k{i}=${i}")).collect();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), want, "three acknowledged");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("set k4 4") && stderr.contains("no answer"), "{stderr}");

    let status = cluster.wait_exit(0);
    assert!(!status.success(), "node 0 exits non-zero: {status:?}");
    let log = cluster.log(0);
    let ledger_path = cluster.ledger_path(0);
    assert!(log.contains("No space left on device"), "{log}");
    assert!(log.contains(&*ledger_path.to_string_lossy()), "names the ledger: {log}");
    assert_eq!(cluster.ledger(0).lines().count(), 4, "exactly four slots in node 0's ledger");
    assert!(!log.contains("apply slot=5"), "{log}");
    assert_eq!(cluster.verify_ok(0), 4);

    // The fourth request was flooded before node 0 stopped: the others commit it.
    let mut acked: Acked = (1..=4).map(|i| (format!("k{i}"), format!("${i}"))).collect();
    wait_for("nodes 1-3 to commit the fourth request", || converged(&cluster, &[1, 2, 3], &acked));
    assert!(!cluster.db(1).contains("k5"), "the fifth was never sent");
    // With room on its disk again, node 0 catches up and serves.
    cluster.start_node_with(0, &[], &[]);
    let mut client = RawClient::new(cluster.ports[0], 2);
    assert!(ok(&client.call(&set_op("k6", 6))));
    acked.insert("k6".into(), "$6".into());
    assert_eq!(check_final_state(&mut cluster, &acked), 7, "two registers and five sets");
}

/// Creates `count` wallets `big-<n>` through 16 concurrent clients spread over the nodes.
fn many_wallets(cluster: &Cluster, count: usize) {
    std::thread::scope(|s| {
        for t in 0..16 {
            let port = cluster.ports[t % 4];
            s.spawn(move || {
                let mut client = RawClient::new(port, 9_000 + t as u64);
                for n in (t..count).step_by(16) {
                    assert!(ok(&client.call(&set_op(&format!("big-{n}"), 1))), "set big-{n}");
                }
            });
        }
    });
}

/// Beyond 1,000 wallets a node writes its database file at most every 200 ms rather than
/// after every slot: the file still ends complete while the node runs, a clean stop writes
/// it before exiting, and after `kill -9` a file left behind the ledger by several slots is
/// set aside and rewritten at start-up.
#[test]
fn a_large_database_written_at_a_bounded_rate_ends_complete_and_survives_kill_9() {
    const WALLETS: usize = 1_100;
    let mut cluster = Cluster::start(4, 3, &[]);
    many_wallets(&cluster, WALLETS);
    let complete = |db: &str| parse_db(db).len() == WALLETS;
    wait_for("every database file to hold every wallet", || (0..4).all(|i| complete(&cluster.db(i))));
    let expected = cluster.db(0);
    cluster.wait_dbs(&ALL, &expected);

    // A clean stop writes the file; a restart finds it matching the ledger.
    cluster.stop(3);
    assert!(complete(&cluster.db(3)));
    cluster.start_node_with(3, &[], &[]);
    assert!(!cluster.log(3).contains("differed from the ledger"), "{}", cluster.log(3));

    // kill -9 right after a burst of slots: the file may be several slots behind.
    let mut client = RawClient::new(cluster.ports[1], 9_999);
    for n in 0..20 {
        assert!(ok(&client.call(&deposit_op(&format!("big-{n}"), 1))));
    }
    cluster.kill(1);
    cluster.start_node_with(1, &[], &[]);
    let db = parse_db(&cluster.db(1));
    assert_eq!(db.len(), WALLETS, "rebuilt from the ledger before it listens");
    assert!((0..20).all(|n| db.get(&format!("big-{n}")).map(String::as_str) == Some("$2")), "{db:?}");
    let expected = cluster.db(1); // the others' files catch up within 200 ms
    cluster.wait_dbs(&ALL, &expected);
    assert!(cluster.verify_ok(1) > WALLETS as u64 / 16, "the ledger and the file agree");
}

/// A node keeps a checkpoint (`assignment3_<port>.ckpt`) and, restarted, rebuilds its
/// wallets from it and replays only the ledger after it: after a clean stop nothing is
/// replayed; after a `kill -9` only the slots the checkpoint had not reached. A damaged
/// checkpoint costs a full replay and loses nothing; `--verify` checks it against the
/// ledger.
#[test]
fn a_restarted_node_replays_only_the_ledger_after_its_checkpoint() {
    let mut cluster = Cluster::start(4, 3, &[]);
    let mut client = RawClient::new(cluster.ports[0], 4_242);
    for _ in 0..10 {
        assert!(ok(&client.call(&deposit_op("k", 1))));
    }
    cluster.wait_dbs(&ALL, r#"{"k": "$10"}"#);
    cluster.stop(2);
    let slots = cluster.verify_ok(2);
    let verified = String::from_utf8_lossy(&cluster.verify(2).stdout).to_string();
    assert!(verified.contains(&format!("checkpoint of slot {slots} matches")), "{verified}");
    assert!(cluster.log(2).contains(&format!("checkpoint of slot {slots}")), "{}", cluster.log(2));

    cluster.start_node_with(2, &[], &[]);
    let rebuilt = format!("from the checkpoint of slot {slots} and the 0 ledger entries after it");
    assert!(cluster.log(2).contains(&rebuilt), "{}", cluster.log(2));

    // kill -9 right after a burst: the checkpoint may be behind; the tail is replayed.
    let mut client = RawClient::new(cluster.ports[2], 4_343);
    for _ in 0..10 {
        assert!(ok(&client.call(&deposit_op("k", 1))));
    }
    cluster.kill(2);
    cluster.start_node_with(2, &[], &[]);
    assert!(cluster.log(2).contains("state rebuilt in"), "{}", cluster.log(2));
    assert!(cluster.log(2).contains("from the checkpoint of slot"), "{}", cluster.log(2));
    cluster.wait_dbs(&ALL, r#"{"k": "$20"}"#);

    // A damaged checkpoint: the whole ledger is replayed, nothing is lost.
    cluster.stop(2);
    let slots = cluster.verify_ok(2);
    let path = cluster.db_path(2).with_extension("ckpt");
    let mut bytes = std::fs::read(&path).expect("a checkpoint");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).expect("damage it");
    cluster.start_node_with(2, &[], &[]);
    let log = cluster.log(2);
    assert!(
        log.contains("is damaged") && log.contains(&format!("from the whole ledger ({slots} entries)")),
        "{log}"
    );
    assert_eq!(cluster.db(2), r#"{"k": "$20"}"#);
    let mut client = RawClient::new(cluster.ports[2], 4_444);
    assert!(ok(&client.call(&deposit_op("k", 1))));
    cluster.wait_dbs(&ALL, r#"{"k": "$21"}"#);
}
