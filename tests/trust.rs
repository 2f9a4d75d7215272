//! Authenticated peers on real processes: a keyed cluster replicates, and peer datagrams
//! that do not carry a valid authenticator change nothing, even when their source address
//! is forged to be a live peer's (with a raw socket, as any root process or LAN host can).

mod support;

use fba::net::{self, Message};
use fba::quorum::{NodeId, QuorumSet};
use fba::scp::{Ballot, Pledges, Statement, Value};
use std::io::Write;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use support::{parse_db, wait_for, Cluster};

/// A batch nobody proposed: it would set `forged` to $1,000,000.
fn forged_batch() -> Vec<u8> {
    let request: fba::wallet::Request = serde_json::from_str(
        r#"{"client":666,"seq":1,"op":{"type":"set","key":"forged","amount":"$1000000"}}"#,
    )
    .expect("a request");
    fba::wallet::Batch::new(vec![request]).encode().to_vec()
}

/// The value naming [`forged_batch`] (values are digests of batches).
fn forged_value() -> Value {
    Value::new(fba::hash::sha256(&forged_batch()).to_vec())
}

/// EXTERNALIZE of the forged value for `slot` in the name of `node`: two of these from
/// two peers are v-blocking for a 3-of-4 node and would make it externalize.
fn forged_externalize(node: u16, slot: u64, ports: &[u16]) -> Vec<u8> {
    let statement = Statement {
        node: NodeId(u64::from(node)),
        slot,
        quorum_set: QuorumSet::new(3, ports.iter().map(|p| NodeId(u64::from(*p)))),
        pledges: Pledges::Externalize { commit: Ballot::new(1, forged_value()), n_h: 1 },
    };
    net::encode(&Message::Scp { statement })
}

/// Sends `payload` to 127.0.0.1:`to` with the forged source 127.0.0.1:`from`, through a
/// raw socket (Python's, as std has none). `Err` says why it cannot here (not root, no
/// python3), and the caller falls back to a plain socket.
fn spoof(from: u16, to: u16, payload: &[u8]) -> Result<(), String> {
    const SCRIPT: &str = r#"
import socket, struct, sys
src, dst = int(sys.argv[1]), int(sys.argv[2])
payload = sys.stdin.buffer.read()
udp = struct.pack('!HHHH', src, dst, 8 + len(payload), 0)
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 28 + len(payload), 0, 0, 64, 17, 0,
                 socket.inet_aton('127.0.0.1'), socket.inet_aton('127.0.0.1'))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(ip + udp + payload, ('127.0.0.1', 0))
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT, &from.to_string(), &to.to_string()])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("no python3: {e}"))?;
    child.stdin.take().expect("piped").write_all(payload).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    }
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn forged_peer_datagrams_change_nothing_in_a_keyed_cluster() {
    let mut cluster = Cluster::new(4, 3);
    cluster.with_keys();
    for i in 0..4 {
        cluster.start_node(i);
    }
    let ports = cluster.ports.clone();
    assert!(cluster.log(0).lines().next().is_some_and(|l| l.contains("authenticated")), "{}", cluster.log(0));
    cluster.client(0).args(["set", "alice", "10"]).assert().success();
    let next_slot = cluster.ledger(0).lines().count() as u64 + 1;

    // The attack that broke agreement in development mode: EXTERNALIZE of a value nobody
    // proposed, in the names of two live peers, from their own (forged) addresses.
    let mut forged = 0;
    let mut spoofed = true;
    // The first forger also sends the batch (values travel by hash; the node needs it
    // once). Five forged datagrams in all: the node logs up to five drops of a kind a
    // second, so each one shows.
    let batch = net::encode_value(&forged_batch());
    for (from, with_batch) in [(ports[1], true), (ports[2], false)] {
        let statement = forged_externalize(from, next_slot, &ports);
        let datagrams = if with_batch { vec![batch.clone(), statement] } else { vec![statement] };
        for bytes in datagrams {
            if let Err(why) = spoof(from, ports[0], &bytes) {
                eprintln!("cannot forge source addresses here ({why}); sending from a plain socket instead");
                spoofed = false;
                let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
                socket.send_to(&bytes, ("127.0.0.1", ports[0])).expect("send");
            }
            forged += 1;
        }
    }
    // The same statement wrapped in a seal made with a key nobody configured, and a
    // genuine-looking seal truncated: refused by the authenticator.
    let mut fake = fba::auth::NetworkKeys {
        network: [7; 32],
        me: NodeId(u64::from(ports[1])),
        pairwise: Default::default(),
    };
    fake.pairwise.insert(NodeId(u64::from(ports[0])), [1; 32]);
    let sealed = fba::auth::Sealer::new(&fake, 1)
        .seal(NodeId(u64::from(ports[0])), &forged_externalize(ports[1], next_slot, &ports))
        .expect("a peer");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for bytes in [&sealed[..], &sealed[..sealed.len() / 2]] {
        socket.send_to(bytes, ("127.0.0.1", ports[0])).expect("send");
        forged += 1;
    }
    wait_for("node 0 to drop every forged datagram", || {
        count(&cluster.log(0), "(authentication, ") >= forged
    });

    // The cluster goes on deciding real requests, and nobody applied the forged value.
    cluster.client(0).args(["set", "bob", "20"]).assert().success();
    cluster.client(1).args(["deposit", "alice", "1"]).assert().success();
    wait_for("every node to apply both writes", || {
        (0..4).all(|i| {
            let db = parse_db(&cluster.db(i));
            db.get("bob").map(String::as_str) == Some("$20")
                && db.get("alice").map(String::as_str) == Some("$11")
        })
    });
    for i in 0..4 {
        assert!(!cluster.db(i).contains("forged"), "node {i} applied the forged value: {}", cluster.db(i));
        assert_eq!(cluster.ledger(i), cluster.ledger(0), "ledgers of nodes 0 and {i} differ");
    }
    eprintln!("{forged} forged datagrams dropped (source addresses really forged: {spoofed})");
}

#[test]
fn development_mode_says_so_in_its_first_line() {
    let cluster = Cluster::start(4, 3, &[1, 2, 3]);
    let log = cluster.log(0);
    assert!(log.lines().next().is_some_and(|l| l.contains("development mode")), "{log}");
}
