//! `fba_client PORT status [--all] [--json]`: ask nodes how they are.
//!
//! A node answers `{"type":"status"}` with its [`NodeStatus`]: id, version, uptime, last
//! externalized slot, ledger chain hash, pool size, requests per second, whether it hears
//! a quorum, how far behind its peers it is, and each peer's address, when it was last
//! heard and the highest slot it reported. [`query`] asks one node (retransmitting, since
//! UDP may lose either datagram); [`survey`] asks one node for its peers' addresses and
//! then every node, in parallel. [`describe`] and [`table`] render the answers for people
//! (the table is like `etcdctl endpoint status --cluster -w table`), [`to_json`] for
//! scripts.

use super::ClientError;
use crate::net::{self, Datagram, Message, NodeStatus};
use crate::quorum::NodeId;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// One node asked: its address, its id if known, and its status or why there is none.
#[derive(Clone, Debug)]
pub struct Probe {
    /// Where it was asked.
    pub address: SocketAddr,
    /// Its id (from its answer, or from the peer list that named it).
    pub id: Option<NodeId>,
    /// Its status, or why it did not give one.
    pub result: Result<NodeStatus, String>,
}

impl Probe {
    /// Whether the node answered.
    pub fn answered(&self) -> bool {
        self.result.is_ok()
    }
}

/// Asks the node at `addr` for its status: sends the request up to `attempts` times,
/// waiting `timeout` for the answer after each.
pub fn query(addr: SocketAddr, timeout: Duration, attempts: u32) -> Result<NodeStatus, ClientError> {
    let any: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(any)?;
    let request = net::encode(&Message::Status {});
    let started = Instant::now();
    let attempts = attempts.max(1);
    for _ in 0..attempts {
        socket.send_to(&request, addr)?;
        if let Some(status) = await_status(&socket, addr, timeout)? {
            return Ok(status);
        }
    }
    Err(ClientError::NoAnswer { servers: vec![addr], attempts, elapsed: started.elapsed() })
}

/// Waits up to `wait` for a status answer from `addr`; other datagrams are skipped.
fn await_status(
    socket: &UdpSocket,
    addr: SocketAddr,
    wait: Duration,
) -> Result<Option<NodeStatus>, ClientError> {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; net::MAX_DATAGRAM + 1];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if from == addr => {
                if let Ok(Datagram::Json(Message::StatusReply { status })) = net::decode(&buf[..n]) {
                    return Ok(Some(*status));
                }
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // ICMP port unreachable: nobody listens there; wait out the attempt.
            Err(e)
                if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset) =>
            {
                std::thread::sleep(left.min(wait));
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Asks `first` for its status and its peers' addresses, then every peer and every node of
/// `extra` not already asked, in parallel. The answers come first-asked first, then in
/// the order of the first node's peer list, then `extra`.
pub fn survey(first: SocketAddr, extra: &[SocketAddr], timeout: Duration, attempts: u32) -> Vec<Probe> {
    let head = probe(first, None, timeout, attempts);
    let mut others: Vec<(SocketAddr, Option<NodeId>)> = Vec::new();
    if let Ok(status) = &head.result {
        for peer in &status.peers {
            if let Ok(addr) = super::resolve_host_port(&peer.address) {
                others.push((addr, Some(peer.id)));
            }
        }
    }
    others.extend(extra.iter().map(|addr| (*addr, None)));
    let mut seen = vec![first];
    others.retain(|(addr, _)| {
        let new = !seen.contains(addr);
        seen.push(*addr);
        new
    });
    let rest: Vec<Probe> = std::thread::scope(|scope| {
        let handles: Vec<_> = others
            .iter()
            .map(|(addr, id)| scope.spawn(move || probe(*addr, *id, timeout, attempts)))
            .collect();
        handles
            .into_iter()
            .zip(&others)
            .map(|(handle, (addr, id))| {
                handle.join().unwrap_or_else(|_| Probe {
                    address: *addr,
                    id: *id,
                    result: Err("the query failed".to_string()),
                })
            })
            .collect()
    });
    std::iter::once(head).chain(rest).collect()
}

/// Asks one node; `id` is what the asker knows of its id.
fn probe(address: SocketAddr, id: Option<NodeId>, timeout: Duration, attempts: u32) -> Probe {
    match query(address, timeout, attempts) {
        Ok(status) => Probe { address, id: Some(status.id), result: Ok(status) },
        Err(e) => Probe { address, id, result: Err(e.to_string()) },
    }
}

/// A duration for people: `850ms`, `12.3s`, `4m05s`, `2h07m`, `3d04h`.
pub fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{}.{}s", s, ms % 1000 / 100),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{:02}h", s / 86_400, s / 3600 % 24),
    }
}

/// `yes` / `NO`.
fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "NO"
    }
}

/// One node's status as lines of text.
pub fn describe(status: &NodeStatus) -> String {
    let mut out = String::new();
    let s = status;
    let quorum = if s.quorum_available { "available" } else { "NOT available" };
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "node {} at {}: fba {}, up {}",
        s.id,
        s.address,
        s.version,
        human_duration(s.uptime_ms)
    );
    let _ = writeln!(out, "slot {}, ledger hash {}, lag {}", s.slot, s.ledger_hash, s.lag);
    let _ = writeln!(
        out,
        "quorum {quorum}: hearing {} of {} peers, need {}",
        s.peers_heard,
        s.peers.len(),
        s.needed
    );
    let _ = writeln!(out, "pool {} requests, {:.1} requests/s", s.pool, s.requests_per_second);
    let rows: Vec<Vec<String>> = s
        .peers
        .iter()
        .map(|p| {
            let heard =
                p.last_heard_ms.map_or("never".to_string(), |ms| format!("{} ago", human_duration(ms)));
            let slot = p.slot.map_or("-".to_string(), |n| n.to_string());
            vec![p.id.to_string(), p.address.clone(), heard, slot]
        })
        .collect();
    if !rows.is_empty() {
        out.push_str("peers:\n");
        out.push_str(&render_table(&["ID", "ADDRESS", "LAST HEARD", "SLOT"], &rows));
    }
    out
}

/// The columns of [`table`].
pub const TABLE_HEADER: [&str; 10] =
    ["ID", "ADDRESS", "VERSION", "SLOT", "LEDGER HASH", "LAG", "QUORUM", "POOL", "REQ/S", "UPTIME"];

/// Hex digits of the ledger hash shown in [`table`].
const SHORT_HASH: usize = 16;

/// Every node asked, one row each (unreachable ones too), as a bordered table.
pub fn table(probes: &[Probe]) -> String {
    let rows: Vec<Vec<String>> = probes.iter().map(row).collect();
    render_table(&TABLE_HEADER, &rows)
}

/// One row of [`table`].
fn row(probe: &Probe) -> Vec<String> {
    let id = probe.id.map_or("?".to_string(), |id| id.to_string());
    match &probe.result {
        Ok(s) => vec![
            id,
            probe.address.to_string(),
            s.version.clone(),
            s.slot.to_string(),
            s.ledger_hash.chars().take(SHORT_HASH).collect(),
            s.lag.to_string(),
            yes_no(s.quorum_available).to_string(),
            s.pool.to_string(),
            format!("{:.1}", s.requests_per_second),
            human_duration(s.uptime_ms),
        ],
        Err(_) => {
            let mut cells = vec![id, probe.address.to_string(), "unreachable".to_string()];
            cells.resize(TABLE_HEADER.len(), "-".to_string());
            cells
        }
    }
}

/// A table with `+---+` borders, every cell left-aligned.
fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .chain(std::iter::once("+\n".into()))
        .collect();
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let padded = cells.zip(&widths).map(|(cell, w)| format!("| {cell:<w$} "));
        padded.chain(std::iter::once("|\n".to_string())).collect()
    };
    let mut out = rule.clone();
    out.push_str(&line(&mut header.iter().copied()));
    out.push_str(&rule);
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out.push_str(&rule);
    out
}

/// A probe as JSON: the node's status with `"reachable": true`, or its address, id (if
/// known) and error with `"reachable": false`.
pub fn to_json(probe: &Probe) -> Value {
    match &probe.result {
        Ok(status) => {
            let mut value = serde_json::to_value(status).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut value {
                map.insert("reachable".into(), true.into());
            }
            value
        }
        Err(e) => json!({
            "address": probe.address.to_string(),
            "id": probe.id.map(|id| id.0),
            "reachable": false,
            "error": e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::PeerStatus;

    fn status(id: u64, slot: u64) -> NodeStatus {
        NodeStatus {
            id: NodeId(id),
            address: format!("127.0.0.1:{id}"),
            version: "0.1.0".into(),
            uptime_ms: 65_000,
            slot,
            ledger_hash: "ab".repeat(32),
            pool: 2,
            requests_per_second: 12.34,
            quorum_available: true,
            peers_heard: 1,
            needed: 2,
            lag: 0,
            peers: vec![PeerStatus {
                id: NodeId(id + 1),
                address: format!("127.0.0.1:{}", id + 1),
                last_heard_ms: Some(250),
                slot: Some(slot),
            }],
            quorum_set: None,
        }
    }

    #[test]
    fn durations_read_well() {
        let cases = [
            (850, "850ms"),
            (12_345, "12.3s"),
            (245_000, "4m05s"),
            (7_620_000, "2h07m"),
            (273_600_000, "3d04h"),
        ];
        for (ms, text) in cases {
            assert_eq!(human_duration(ms), text);
        }
    }

    #[test]
    fn the_table_has_a_row_per_node_and_marks_the_unreachable() {
        let probes = [
            Probe {
                address: "127.0.0.1:3000".parse().unwrap(),
                id: Some(NodeId(3000)),
                result: Ok(status(3000, 6)),
            },
            Probe {
                address: "127.0.0.1:3003".parse().unwrap(),
                id: Some(NodeId(3003)),
                result: Err("no".into()),
            },
        ];
        let text = table(&probes);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert!(lines[1].starts_with("| ID   | ADDRESS        | VERSION     | SLOT |"), "{text}");
        assert!(lines[3].contains("| 3000 | 127.0.0.1:3000 | 0.1.0 "), "{text}");
        assert!(lines[3].contains(&format!("| {} |", "ab".repeat(8))), "{text}");
        assert!(lines[3].contains("| yes    | 2    | 12.3  | 1m05s  |"), "{text}");
        assert!(lines[4].contains("| 3003 | 127.0.0.1:3003 | unreachable | -    |"), "{text}");
        assert!(lines.iter().all(|l| l.chars().count() == lines[0].chars().count()), "{text}");
    }

    #[test]
    fn one_node_is_described_with_its_peers() {
        let text = describe(&status(3000, 6));
        assert!(text.contains("node 3000 at 127.0.0.1:3000: fba 0.1.0, up 1m05s"), "{text}");
        assert!(text.contains("quorum available: hearing 1 of 1 peers, need 2"), "{text}");
        assert!(text.contains("| 3001 | 127.0.0.1:3001 | 250ms ago  | 6    |"), "{text}");
    }

    #[test]
    fn json_says_whether_a_node_answered() {
        let ok = Probe { address: "127.0.0.1:3000".parse().unwrap(), id: None, result: Ok(status(3000, 6)) };
        let value = to_json(&ok);
        assert_eq!((value["reachable"].as_bool(), value["slot"].as_u64()), (Some(true), Some(6)));
        assert_eq!(value["peers"][0]["last_heard_ms"], 250);
        let down =
            Probe { address: "127.0.0.1:9".parse().unwrap(), id: Some(NodeId(9)), result: Err("x".into()) };
        assert_eq!(
            to_json(&down),
            json!({"address": "127.0.0.1:9", "id": 9, "reachable": false, "error": "x"})
        );
    }

    #[test]
    fn a_silent_address_is_reported_as_no_answer() {
        let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = silent.local_addr().expect("addr");
        let err = query(addr, Duration::from_millis(30), 2).expect_err("no answer");
        assert!(matches!(err, ClientError::NoAnswer { attempts: 2, .. }), "{err}");
    }
}
