//! The client side: send requests to a node over UDP, retransmitting until one answers.
//!
//! On first use a client registers a session (a register request with a random nonce;
//! see [`crate::wallet`]). Each request then carries this client's id (random, or derived
//! from its key when it signs), its session and a sequence number; a retransmission reuses
//! all three, so the cluster applies it once and answers a late copy from its session.
//! A request refused as `session_expired` is reported, never resent: the next call opens
//! a new session.
//!
//! A request is sent again after the retransmission timeout ([`rtt`]): a few round trips,
//! learned from the replies so far, doubling at each resend up to [`Client::timeout`].
//!
//! A client knows one or more nodes ([`Client::with_servers`]): it sends a request to the
//! first up to [`Client::attempts`] times, then the same request (same id, so still
//! applied at most once) to the next, and so on, before giving up with
//! [`ClientError::NoAnswer`]: the request's outcome is then unknown. A node that answers
//! that it cannot reach a quorum ends the call with [`ClientError::Unavailable`]; one that
//! is busy is asked again after a longer wait.
//!
//! [`keyfile`] reads and writes client keys, [`state`] the state that lets `fba_client`
//! resend a request whose outcome was unknown, and [`status`] asks nodes how they are.

pub mod keyfile;
pub mod reconfigure;
pub mod rtt;
pub mod state;
pub mod status;

use crate::net::{self, Datagram, Message};
use crate::quorum::NodeId;
use crate::wallet::{ClientKey, Op, Outcome, Reply, Request};
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The assignment's six requests, in order.
pub const ASSIGNMENT_REQUESTS: [&str; 6] = ["foo:$10", "bar:$30", "foo:$20", "bar:$20", "foo:$30", "bar:$10"];

/// The prefix of a node's `error` text saying that it cannot reach a quorum.
pub const UNAVAILABLE_PREFIX: &str = "unavailable:";

/// The prefix of a node's `error` text saying that its pool is full.
pub const BUSY_PREFIX: &str = "node busy";

/// The longest a busy node makes the client wait between two sends.
const MAX_BUSY_WAIT: Duration = Duration::from_secs(4);

/// Why a request got no reply.
#[derive(Debug)]
pub enum ClientError {
    /// No answer from any node after every attempt: the request may still be applied.
    NoAnswer {
        /// The nodes asked, in order.
        servers: Vec<SocketAddr>,
        /// How many times the request was sent, in all.
        attempts: u32,
        /// How long the client waited.
        elapsed: Duration,
    },
    /// A node answered that it cannot reach a quorum: nothing was applied.
    Unavailable {
        /// The node.
        node: NodeId,
        /// How many peers it hears, when it said.
        peers_heard: Option<u64>,
        /// How many it needs for a quorum, when it said.
        needed: Option<u64>,
        /// Its text, for an `error` message (empty for an `unavailable` message).
        detail: String,
    },
    /// The node answered with an error message instead of a reply.
    Server {
        /// The node.
        node: NodeId,
        /// Its message.
        error: String,
    },
    /// A host name did not resolve.
    Resolve {
        /// The name, with its port.
        host: String,
        /// Why (no address at all is [`io::ErrorKind::NotFound`]).
        error: io::Error,
    },
    /// The local socket failed.
    Io(io::Error),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NoAnswer { servers, attempts, elapsed } => write!(
                f,
                "no answer from {} after {attempts} attempts over {:.1} s (is the node running?)",
                join_or(servers),
                elapsed.as_secs_f64()
            ),
            ClientError::Unavailable { node, peers_heard: Some(heard), needed: Some(needed), .. } => write!(
                f,
                "node {node} is unavailable: it hears {heard} peers and needs {needed} for a quorum; \
                 nothing was applied"
            ),
            ClientError::Unavailable { node, detail, .. } => {
                write!(f, "node {node} is unavailable ({}); nothing was applied", unavailable_reason(detail))
            }
            ClientError::Server { node, error } => write!(f, "node {node} refused the request: {error}"),
            ClientError::Resolve { host, error } => write!(f, "cannot resolve {host}: {error}"),
            ClientError::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

/// What an `unavailable: ...` error says after its prefix.
fn unavailable_reason(detail: &str) -> &str {
    match detail.strip_prefix(UNAVAILABLE_PREFIX).map(str::trim) {
        Some(rest) if !rest.is_empty() => rest,
        _ => "it cannot reach a quorum",
    }
}

/// `a`, `a or b`, `a, b or c`.
fn join_or(servers: &[SocketAddr]) -> String {
    let names: Vec<String> = servers.iter().map(SocketAddr::to_string).collect();
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => "no node".to_string(),
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// The first address of `host:port` (a name or an IP address), preferring IPv4 (the
/// nodes' default), since a name such as `localhost` may also resolve to `::1`.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, ClientError> {
    let name =
        if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
    let spec = format!("{name}:{port}");
    let addrs: Vec<SocketAddr> =
        spec.to_socket_addrs().map_err(|error| ClientError::Resolve { host: spec.clone(), error })?.collect();
    let first = addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()).copied();
    first.ok_or_else(|| ClientError::Resolve {
        host: spec,
        error: io::Error::new(io::ErrorKind::NotFound, "no address"),
    })
}

/// Resolves `HOST:PORT` (`[v6]:PORT` for an IPv6 address) with [`resolve`].
pub fn resolve_host_port(spec: &str) -> Result<SocketAddr, ClientError> {
    let bad = |why: &str| ClientError::Resolve {
        host: spec.to_string(),
        error: io::Error::new(io::ErrorKind::InvalidInput, why.to_string()),
    };
    let (host, port) = spec.rsplit_once(':').ok_or_else(|| bad("expected HOST:PORT"))?;
    let port = port.parse().map_err(|_| bad("bad port"))?;
    resolve(host.trim_start_matches('[').trim_end_matches(']'), port)
}

/// Where a request's retransmissions stand, for a progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The node being asked.
    pub server: SocketAddr,
    /// The attempt about to be made at that node (from 2).
    pub attempt: u32,
    /// How many attempts each node gets.
    pub attempts: u32,
    /// Since the request was first sent.
    pub elapsed: Duration,
    /// Whether the node answered that it is busy.
    pub busy: bool,
}

/// What a node answered to one transmission.
enum Answer {
    Reply(NodeId, Reply),
    Busy,
    Failed(ClientError),
}

/// A client of one or more nodes.
pub struct Client {
    /// One socket per address family in use (IPv4 first).
    sockets: Vec<UdpSocket>,
    /// The nodes, in the order they are tried (the last to answer first).
    servers: Vec<SocketAddr>,
    id: u64,
    seq: u64,
    /// The session (0 until registered).
    session: u64,
    /// The key requests are signed with, if any.
    key: Option<ClientKey>,
    /// Called before each retransmission.
    progress: Option<Box<dyn FnMut(Progress) + Send>>,
    /// The longest wait for a reply before sending again (and the wait until a round trip
    /// has been measured; see [`rtt`]).
    pub timeout: Duration,
    /// Round trips measured so far: the retransmission timeout.
    rtt: rtt::RttEstimator,
    /// How many times to send a request to each node before giving up on it.
    pub attempts: u32,
}

impl Client {
    /// A client with a fresh random id talking to `server`.
    pub fn new(server: SocketAddr) -> Result<Client, ClientError> {
        Client::with_servers(vec![server], None)
    }

    /// A client talking to `server` that signs its requests with `key` (its id is the
    /// key's client id).
    pub fn with_key(server: SocketAddr, key: ClientKey) -> Result<Client, ClientError> {
        Client::with_servers(vec![server], Some(key))
    }

    /// A client of `servers` (tried in this order; at least one), signing with `key` if
    /// given (its id is then the key's, otherwise random).
    pub fn with_servers(servers: Vec<SocketAddr>, key: Option<ClientKey>) -> Result<Client, ClientError> {
        if servers.is_empty() {
            return Err(ClientError::Io(io::Error::new(io::ErrorKind::InvalidInput, "no node to talk to")));
        }
        let mut sockets = Vec::new();
        for (v4, any) in [(true, "0.0.0.0:0"), (false, "[::]:0")] {
            if servers.iter().any(|s| s.is_ipv4() == v4) {
                sockets.push(UdpSocket::bind(any.parse::<SocketAddr>().expect("literal"))?);
            }
        }
        let id = key.as_ref().map_or_else(|| random_u64(b"fba-client-id", 0) >> 1, ClientKey::client_id);
        Ok(Client {
            sockets,
            servers,
            id,
            seq: 0,
            session: 0,
            key,
            progress: None,
            timeout: Duration::from_millis(500),
            rtt: rtt::RttEstimator::default(),
            attempts: 20,
        })
    }

    /// This client's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Uses `id` as this client's id; a client with a key keeps its key's id (it could
    /// not sign for another) and this returns false.
    pub fn set_id(&mut self, id: u64) -> bool {
        if self.key.is_some() {
            return false;
        }
        self.id = id;
        true
    }

    /// Whether requests are signed.
    pub fn is_signed(&self) -> bool {
        self.key.is_some()
    }

    /// The current session, once registered.
    pub fn session(&self) -> Option<u64> {
        (self.session != 0).then_some(self.session)
    }

    /// The sequence number the next request of the session gets.
    pub fn next_seq(&self) -> u64 {
        self.seq + 1
    }

    /// Continues `session` (0: none, the next call registers) from `next_seq` on, e.g. a
    /// session kept on disk.
    pub fn resume(&mut self, session: u64, next_seq: u64) {
        (self.session, self.seq) = (session, next_seq.saturating_sub(1));
    }

    /// The nodes, in the order the next request tries them.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Calls `report` before each retransmission of a request.
    pub fn on_progress(&mut self, report: impl FnMut(Progress) + Send + 'static) {
        self.progress = Some(Box::new(report));
    }

    /// Opens a new session (a register with a fresh random nonce, retransmitted until
    /// answered) and returns its id; later requests use it, numbered from 1.
    pub fn register(&mut self) -> Result<u64, ClientError> {
        self.register_with(random_u64(b"fba-register-nonce", self.id))
    }

    /// Opens a session with the register of `nonce`: sending it again (after an unknown
    /// outcome) returns the same session while the cluster holds it.
    pub fn register_with(&mut self, nonce: u64) -> Result<u64, ClientError> {
        let (node, reply) = self.send(&Request::new(self.id, 0, Op::Register { nonce }))?;
        let session = reply.outcome.registered_session().ok_or_else(|| ClientError::Server {
            node,
            error: format!("unexpected answer to a register: {}", reply.outcome),
        })?;
        (self.session, self.seq) = (session, 0);
        Ok(session)
    }

    /// The next request of the session for `op` (its sequence number is used up whether
    /// or not it is sent), unsigned: [`Client::send`] signs it.
    pub fn next_request(&mut self, op: Op) -> Request {
        self.seq += 1;
        Request::new(self.id, self.seq, op).with_session(self.session)
    }

    /// Sends `op` (registering a session first if there is none) and waits for its reply,
    /// retransmitting the same request on timeouts. A `session_expired` reply is returned
    /// like any other, and the next call registers a new session.
    pub fn call(&mut self, op: Op) -> Result<(NodeId, Reply), ClientError> {
        if self.session == 0 {
            self.register()?;
        }
        let request = self.next_request(op);
        self.send(&request)
    }

    /// Sends `request` (signed if the client has a key) until a reply to it comes: up to
    /// [`Client::attempts`] times to each node in turn. A `session_expired` reply drops the
    /// session (the next [`Client::call`] registers).
    pub fn send(&mut self, request: &Request) -> Result<(NodeId, Reply), ClientError> {
        let request = match &self.key {
            Some(key) => key.sign(request.clone()),
            None => request.clone(),
        };
        let answer = self.send_everywhere(&request)?;
        if matches!(answer.1.outcome, Outcome::SessionExpired { .. }) && request.session == self.session {
            self.session = 0;
        }
        Ok(answer)
    }

    /// Tries each node in turn; the one that answers is tried first next time.
    fn send_everywhere(&mut self, request: &Request) -> Result<(NodeId, Reply), ClientError> {
        let bytes = net::encode(&Message::Request { request: request.clone() });
        let started = Instant::now();
        let mut sent = 0;
        for index in 0..self.servers.len() {
            match self.send_to(index, request, &bytes, started, &mut sent)? {
                Some(answer) => {
                    self.servers[..=index].rotate_right(1);
                    return Ok(answer);
                }
                None => continue,
            }
        }
        Err(ClientError::NoAnswer {
            servers: self.servers.clone(),
            attempts: sent,
            elapsed: started.elapsed(),
        })
    }

    /// Sends to node `index` up to [`Client::attempts`] times; `None` if it never answered.
    fn send_to(
        &mut self,
        index: usize,
        request: &Request,
        bytes: &[u8],
        started: Instant,
        sent: &mut u32,
    ) -> Result<Option<(NodeId, Reply)>, ClientError> {
        let server = self.servers[index];
        let mut wait = self.rtt.rto(self.timeout);
        let mut busy = false;
        for attempt in 1..=self.attempts.max(1) {
            if attempt > 1 {
                let progress =
                    Progress { server, attempt, attempts: self.attempts, elapsed: started.elapsed(), busy };
                if let Some(report) = &mut self.progress {
                    report(progress);
                }
            }
            self.socket(server).send_to(bytes, server)?;
            let sent_at = Instant::now();
            *sent += 1;
            match self.await_answer(server, request, wait)? {
                Some(Answer::Reply(node, reply)) => {
                    if attempt == 1 {
                        self.rtt.sample(sent_at.elapsed());
                    }
                    return Ok(Some((node, reply)));
                }
                Some(Answer::Failed(e)) => return Err(e),
                Some(Answer::Busy) => {
                    busy = true;
                    wait = (wait * 2).min(MAX_BUSY_WAIT.max(self.timeout));
                }
                None => {
                    busy = false;
                    wait = (wait * 2).min(self.timeout); // back off, as TCP does
                }
            }
        }
        Ok(None)
    }

    /// The socket of `server`'s address family.
    fn socket(&self, server: SocketAddr) -> &UdpSocket {
        let v4 = self.sockets[0].local_addr().is_ok_and(|a| a.is_ipv4());
        match (server.is_ipv4(), v4) {
            (true, true) | (false, false) => &self.sockets[0],
            _ => self.sockets.last().expect("a socket per family"),
        }
    }

    /// Waits up to `wait` for an answer to `request` from `server` (a late reply from
    /// another node asked before counts too); stale replies are skipped. A busy answer is
    /// returned after waiting out the rest of `wait`.
    fn await_answer(
        &self,
        server: SocketAddr,
        request: &Request,
        wait: Duration,
    ) -> Result<Option<Answer>, ClientError> {
        let deadline = Instant::now() + wait;
        let socket = self.socket(server);
        let mut buf = vec![0u8; net::MAX_DATAGRAM + 1];
        let mut busy = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(busy.then_some(Answer::Busy));
            }
            socket.set_read_timeout(Some(left))?;
            let (n, from) = match socket.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
                // The node's port is closed (ICMP unreachable): wait out the attempt.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    std::thread::sleep(left);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if !self.servers.contains(&from) {
                continue;
            }
            match classify(&buf[..n], request) {
                Some(Answer::Busy) if from == server => busy = true,
                Some(Answer::Reply(node, reply)) => return Ok(Some(Answer::Reply(node, reply))),
                Some(failed @ Answer::Failed(_)) if from == server => return Ok(Some(failed)),
                _ => continue,
            }
        }
    }
}

/// What a datagram from a node says about `request`: its reply, busy, a refusal or
/// unavailability, or nothing (`None`: another request's reply, or noise).
fn classify(bytes: &[u8], request: &Request) -> Option<Answer> {
    match net::decode(bytes) {
        Ok(Datagram::Json(Message::Reply { node, reply })) => {
            reply.answers(request).then_some(Answer::Reply(node, reply))
        }
        Ok(Datagram::Json(Message::Error { node, error })) => Some(classify_error(node, error)),
        Ok(Datagram::Json(Message::Unavailable { node, peers_heard, needed })) => {
            Some(Answer::Failed(ClientError::Unavailable {
                node,
                peers_heard: Some(peers_heard),
                needed: Some(needed),
                detail: String::new(),
            }))
        }
        _ => unavailable_message(bytes).map(Answer::Failed),
    }
}

/// A node's `error` message: busy, unavailable, or a refusal.
fn classify_error(node: NodeId, error: String) -> Answer {
    if error.starts_with(BUSY_PREFIX) {
        Answer::Busy
    } else if error.starts_with(UNAVAILABLE_PREFIX) {
        Answer::Failed(ClientError::Unavailable { node, peers_heard: None, needed: None, detail: error })
    } else {
        Answer::Failed(ClientError::Server { node, error })
    }
}

/// `{"type":"unavailable","node":…,"peers_heard":…,"needed":…}`, read loosely (any
/// further fields are ignored), whether or not [`Message`] knows the type.
fn unavailable_message(bytes: &[u8]) -> Option<ClientError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if value.get("type")?.as_str()? != "unavailable" {
        return None;
    }
    Some(ClientError::Unavailable {
        node: NodeId(value.get("node")?.as_u64()?),
        peers_heard: value.get("peers_heard").and_then(serde_json::Value::as_u64),
        needed: value.get("needed").and_then(serde_json::Value::as_u64),
        detail: String::new(),
    })
}

/// A random number from the system generator (should it fail, from the clock, the
/// process id and `salt`). A client id is this shifted right once: top bit clear, since
/// ids with it set are reserved for plain-text clients.
pub fn random_u64(domain: &[u8], salt: u64) -> u64 {
    let mut bytes = [0u8; 8];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_ok() {
        return u64::from_be_bytes(bytes);
    }
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut h = crate::hash::Sha256::new();
    h.update(domain).update(&nanos.to_be_bytes()).update(&std::process::id().to_be_bytes());
    let digest = h.update(&salt.to_be_bytes()).finish();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wallet::parse_text;

    /// A fake node: answers each datagram with what `answer` returns for it.
    fn fake_node(
        mut answer: impl FnMut(&Request) -> Option<Vec<u8>> + Send + 'static,
    ) -> (SocketAddr, std::thread::JoinHandle<()>) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("addr");
        let handle = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            socket.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let Ok(Datagram::Json(Message::Request { request })) = net::decode(&buf[..n]) else { return };
                match answer(&request) {
                    Some(bytes) => drop(socket.send_to(&bytes, from)),
                    None if request.op == parse_text("get stop").unwrap() => return,
                    None => {}
                }
            }
        });
        (addr, handle)
    }

    fn reply_to(request: &Request) -> Vec<u8> {
        let outcome = match request.op {
            Op::Register { .. } => Outcome::Registered { session: 9 },
            _ => Outcome::NoSuchWallet { key: crate::wallet::Key::new("x").unwrap() },
        };
        net::encode(&Message::Reply { node: NodeId(42), reply: Reply::to(request, outcome) })
    }

    #[test]
    fn a_busy_node_is_asked_again_and_an_unavailable_one_ends_the_call() {
        let mut busy_left = 2;
        let (addr, fake) = fake_node(move |request| {
            if matches!(request.op, Op::Get { ref key } if key.as_str() == "down") {
                return Some(
                    br#"{"type":"unavailable","node":42,"peers_heard":0,"needed":2,"extra":1}"#.to_vec(),
                );
            }
            if busy_left > 0 && !matches!(request.op, Op::Register { .. }) {
                busy_left -= 1;
                let busy =
                    Message::Error { node: NodeId(42), error: "node busy: too many pending requests".into() };
                return Some(net::encode(&busy));
            }
            (request.op != parse_text("get stop").unwrap()).then(|| reply_to(request))
        });
        let mut client = Client::new(addr).expect("client");
        client.timeout = Duration::from_millis(50);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = std::sync::Arc::clone(&seen);
        client.on_progress(move |p| log.lock().unwrap().push(p.busy));
        let (node, reply) = client.call(parse_text("get x").unwrap()).expect("answered after two busy");
        assert_eq!((node, reply.session, reply.seq), (NodeId(42), 9, 1));
        assert_eq!(*seen.lock().unwrap(), [true, true]);
        let err = client.call(parse_text("get down").unwrap()).expect_err("unavailable");
        assert!(matches!(
            err,
            ClientError::Unavailable { node: NodeId(42), peers_heard: Some(0), needed: Some(2), .. }
        ));
        assert!(err.to_string().contains("hears 0 peers and needs 2"), "{err}");
        client.attempts = 1;
        let _ = client.call(parse_text("get stop").unwrap());
        fake.join().expect("fake node");
    }

    #[test]
    fn a_silent_node_is_left_for_the_next_and_errors_name_them_all() {
        let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let silent_addr = silent.local_addr().expect("addr");
        let (addr, node) =
            fake_node(|request| (request.op != parse_text("get stop").unwrap()).then(|| reply_to(request)));
        let mut client = Client::with_servers(vec![silent_addr, addr], None).expect("client");
        (client.timeout, client.attempts) = (Duration::from_millis(30), 2);
        client.call(parse_text("get x").unwrap()).expect("the second node answers");
        assert_eq!(client.servers()[0], addr, "the node that answered is tried first");
        let err = ClientError::NoAnswer {
            servers: vec![silent_addr, addr],
            attempts: 4,
            elapsed: Duration::from_millis(1500),
        };
        assert_eq!(
            err.to_string(),
            format!(
                "no answer from {silent_addr} or {addr} after 4 attempts over 1.5 s (is the node running?)"
            )
        );
        client.attempts = 1;
        let _ = client.call(parse_text("get stop").unwrap());
        node.join().expect("fake node");
    }

    #[test]
    fn unavailable_errors_and_host_names_are_understood() {
        let err = classify_error(NodeId(3), "unavailable: hears 1 of 3 peers".into());
        let Answer::Failed(err) = err else { panic!("not a failure") };
        assert_eq!(err.to_string(), "node 3 is unavailable (hears 1 of 3 peers); nothing was applied");
        assert!(matches!(classify_error(NodeId(3), "node busy: full".into()), Answer::Busy));
        assert!(matches!(
            classify_error(NodeId(3), "bad".into()),
            Answer::Failed(ClientError::Server { .. })
        ));
        assert_eq!(resolve("localhost", 3000).expect("localhost").to_string(), "127.0.0.1:3000");
        assert_eq!(resolve("::1", 7).expect("v6").to_string(), "[::1]:7");
        assert_eq!(resolve_host_port("[::1]:7").expect("v6").to_string(), "[::1]:7");
        assert_eq!(resolve_host_port("127.0.0.1:9").expect("v4").port(), 9);
        assert!(resolve_host_port("nowhere").is_err());
        assert!(resolve("no-such-host.invalid", 1).is_err());
        assert_eq!(join_or(&[]), "no node");
    }
}
