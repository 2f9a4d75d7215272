//! Hostile input: a live cluster blasted with 100,000 random and mutated datagrams while a
//! client keeps writing. Half the blast comes from the address of the fourth, never
//! started, node, so it is a configured (Byzantine) peer in development mode and its
//! statements, carrying well-formed and valid values, reach the SCP core (checked below);
//! the rest comes from a stranger.

mod support;

use fba::rng::Rng;
use std::net::UdpSocket;
use std::time::{Duration, Instant};
use support::{wait_for, Cluster};

const BLAST: usize = 100_000;

/// The bytes of a valid slot value: a one-request batch, as the wallet encodes it.
fn valid_value_bytes() -> Vec<u8> {
    let request: fba::wallet::Request =
        serde_json::from_str(r#"{"client":1,"seq":1,"op":{"type":"get","key":"x"}}"#).expect("a request");
    fba::wallet::Batch::new(vec![request]).encode().to_vec()
}

/// The digest naming the valid batch: what statements carry as its value.
fn valid_digest() -> [u8; 32] {
    fba::hash::sha256(&valid_value_bytes())
}

/// A valid slot value as statements carry it (base64 of the batch's digest).
fn valid_value() -> String {
    fba::hash::base64(&valid_digest())
}

/// How the nodes print the valid value: `#` and the first bytes of its SHA-256.
fn valid_value_tag() -> String {
    format!("#{}", fba::hash::hex(&fba::hash::sha256(&valid_digest())[..4]))
}

/// The `value` message carrying the valid batch (values travel by hash).
fn valid_batch_message() -> Vec<u8> {
    fba::net::encode_value(&valid_value_bytes())
}

/// A random statement from `node` about a random slot, often well-formed.
fn statement(rng: &mut Rng, node: u16, others: &[u16]) -> String {
    let slot = match rng.below(4) {
        0 => rng.next_u64(),
        _ => 1 + rng.below(40),
    };
    let value =
        if rng.chance(0.5) { valid_value() } else { fba::hash::base64(&rng.next_u64().to_be_bytes()) };
    let n = |rng: &mut Rng| if rng.chance(0.1) { u64::from(u32::MAX) - 2 } else { rng.below(5) };
    let validators: Vec<String> = others.iter().map(|p| p.to_string()).collect();
    let pledges = match rng.below(4) {
        0 => format!(r#"{{"type":"NOMINATE","voted":["{value}"],"accepted":[]}}"#),
        1 => format!(
            r#"{{"type":"PREPARE","ballot":{{"counter":{},"value":"{value}"}},"prepared":null,"prepared_prime":null,"n_c":0,"n_h":0}}"#,
            1 + n(rng)
        ),
        2 => {
            let (c, h) = (1 + n(rng), 1 + n(rng));
            format!(
                r#"{{"type":"CONFIRM","ballot":{{"counter":{},"value":"{value}"}},"n_prepared":{h},"n_commit":{c},"n_h":{}}}"#,
                h.max(c).saturating_add(1),
                h.max(c)
            )
        }
        _ => {
            let c = 1 + n(rng);
            format!(
                r#"{{"type":"EXTERNALIZE","commit":{{"counter":{c},"value":"{value}"}},"n_h":{}}}"#,
                c.max(1 + n(rng))
            )
        }
    };
    format!(
        r#"{{"type":"scp","statement":{{"node":{node},"slot":{slot},"quorum_set":{{"threshold":3,"validators":[{}]}},"pledges":{pledges}}}}}"#,
        validators.join(",")
    )
}

/// One hostile datagram: garbage, a mutation of a valid message, a wrong-typed or absurd
/// message, or a (possibly impersonating) statement.
fn datagram(rng: &mut Rng, ports: &[u16]) -> Vec<u8> {
    let me = ports[3];
    let claimed = if rng.chance(0.8) { me } else { ports[rng.below(3) as usize] };
    let mut bytes = match rng.below(8) {
        0 => (0..rng.below(300)).map(|_| rng.next_u64() as u8).collect(),
        1 => br#"{"type":"request","request":{"client":"seven","seq":-1,"op":{"type":"set","key":7}}}"#.to_vec(),
        2 => format!(r#"{{"type":"flood","requests":{}}}"#, "[".repeat(1 + rng.below(5000) as usize)).into_bytes(),
        3 => format!(r#"{{"type":"catch_up","from":{}}}"#, rng.next_u64()).into_bytes(),
        4 => br#"{"type":"ledger","last":99999999999,"entries":[{"slot":1,"hash":"zz","batch":{"requests":[]}}]}"#.to_vec(),
        5 => format!("deposit foo {}", rng.next_u64()).into_bytes(),
        6 if rng.chance(0.2) => valid_batch_message(),
        _ => statement(rng, claimed, ports).into_bytes(),
    };
    if rng.chance(0.3) && !bytes.is_empty() {
        let at = rng.below(bytes.len() as u64) as usize;
        match rng.below(3) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes.truncate(at),
            _ => bytes.insert(at, b"{}[]\":,9"[rng.below(8) as usize]),
        }
    }
    bytes
}

/// The last lines of node `n`'s log, for failure messages.
fn log_tail(cluster: &Cluster, n: usize) -> String {
    let log = cluster.log(n);
    let lines: Vec<&str> = log.lines().collect();
    format!("--- node {n}, last lines:\n{}\n", lines[lines.len().saturating_sub(30)..].join("\n"))
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The generator's statements are what a Byzantine peer would really send: unmutated, they
/// decode as SCP statements whose values are well-formed batches, so the blast exercises
/// the core and not only the decoder.
#[test]
fn the_blast_statements_are_well_formed_and_carry_valid_values() {
    let mut rng = Rng::new(7);
    let ports = [3000, 3001, 3002, 3003];
    let mut valid = 0;
    for _ in 0..1000 {
        let text = statement(&mut rng, 3003, &ports);
        let Ok(fba::net::Datagram::Json(fba::net::Message::Scp { statement })) =
            fba::net::decode(text.as_bytes())
        else {
            panic!("not a statement: {text}");
        };
        statement.check_sanity(false).unwrap_or_else(|e| panic!("insane statement {text}: {e}"));
        let values = statement.pledges.values();
        assert!(!values.is_empty());
        valid += values.iter().filter(|v| v.as_bytes() == valid_digest()).count();
    }
    assert!(valid > 300, "only {valid} valid values in 1000 statements");
}

#[test]
fn a_blast_of_hostile_datagrams_neither_crashes_nor_stalls_the_cluster() {
    let mut cluster = Cluster::new(4, 3);
    for i in 0..3 {
        cluster.start_node(i);
    }
    let ports = cluster.ports.clone();
    let byzantine = UdpSocket::bind(("127.0.0.1", ports[3])).expect("take over node 3's address");
    let stranger = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let rss_before: Vec<u64> = (0..3).map(|i| rss_kb(cluster.pid(i).expect("running"))).collect();
    let started = Instant::now();
    let written = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            (0..20)
                .map(|i| {
                    let key = format!("good{i}");
                    let out = cluster
                        .client(i % 3)
                        .args(["set", &key, &i.to_string()])
                        .output()
                        .expect("client runs");
                    assert!(
                        out.status.success(),
                        "{key} not acknowledged: {}\n{}",
                        String::from_utf8_lossy(&out.stderr),
                        (0..3).map(|n| log_tail(&cluster, n)).collect::<String>()
                    );
                    key
                })
                .collect::<Vec<_>>()
        });
        let mut rng = Rng::new(0xbad);
        for k in 0..BLAST {
            let target = ports[rng.below(3) as usize];
            let socket = if k % 2 == 0 { &byzantine } else { &stranger };
            let _ = socket.send_to(&datagram(&mut rng, &ports), ("127.0.0.1", target));
            if k % 1000 == 0 {
                std::thread::sleep(Duration::from_millis(1)); // let the writer's datagrams in too
            }
        }
        writer.join().expect("every good request was acknowledged")
    });
    eprintln!("blast of {BLAST} datagrams with 20 writes took {:?}", started.elapsed());
    for (i, before) in rss_before.iter().enumerate() {
        assert!(cluster.is_running(i), "node {i} crashed:\n{}", cluster.log(i));
        let rss = rss_kb(cluster.pid(i).expect("running"));
        eprintln!("node {i}: RSS {before} KiB -> {rss} KiB");
        assert!(rss < 128 * 1024, "node {i} uses {rss} KiB");
    }
    // Every acknowledged write is on every node, and the nodes agree.
    wait_for("the three nodes to agree on every good write", || {
        let dbs: Vec<String> = (0..3).map(|i| cluster.db(i)).collect();
        dbs.iter().all(|d| d == &dbs[0]) && written.iter().all(|k| dbs[0].contains(&format!("\"{k}\"")))
    });
    // The Byzantine peer's statements with valid values reached the core: the nodes logged
    // receiving them (a statement is logged only once it passed decoding and the sender
    // check, right before the core takes it).
    let from_byzantine = format!("from {} ", ports[3]);
    let tag = valid_value_tag();
    let reached: usize = (0..3)
        .map(|i| cluster.log(i).lines().filter(|l| l.contains(&from_byzantine) && l.contains(&tag)).count())
        .sum();
    assert!(reached > 100, "only {reached} Byzantine statements with valid values reached the cores");
    // Still serving after the blast.
    cluster.client(0).args(["deposit", "good0", "1"]).assert().success();
}
