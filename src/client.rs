//! The client side: send requests to one node over UDP, retransmitting until it answers.
//!
//! On first use a client registers a session (a register request with a random nonce;
//! see [`crate::wallet`]). Each request then carries this client's id (random, or derived
//! from its key when it signs), its session and a sequence number; a retransmission reuses
//! all three, so the cluster applies it once and answers a late copy from its session.
//! A request refused as `session_expired` is reported, never resent: the next call opens
//! a new session.

use crate::net::{self, Datagram, Message};
use crate::quorum::NodeId;
use crate::wallet::{ClientKey, Op, Outcome, Reply, Request};
use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The assignment's six requests, in order.
pub const ASSIGNMENT_REQUESTS: [&str; 6] = ["foo:$10", "bar:$30", "foo:$20", "bar:$20", "foo:$30", "bar:$10"];

/// Why a request got no reply.
#[derive(Debug)]
pub enum ClientError {
    /// No answer after every attempt.
    NoAnswer {
        /// The node asked.
        server: SocketAddr,
        /// How many times the request was sent.
        attempts: u32,
    },
    /// The node answered with an error message instead of a reply.
    Server {
        /// The node.
        node: NodeId,
        /// Its message.
        error: String,
    },
    /// The local socket failed.
    Io(io::Error),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NoAnswer { server, attempts } => {
                write!(f, "no answer from {server} after {attempts} attempts (is the node running?)")
            }
            ClientError::Server { node, error } => write!(f, "node {node} refused the request: {error}"),
            ClientError::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// A client bound to one node.
pub struct Client {
    socket: UdpSocket,
    server: SocketAddr,
    id: u64,
    seq: u64,
    /// The session (0 until registered).
    session: u64,
    /// The key requests are signed with, if any.
    key: Option<ClientKey>,
    /// How long to wait for a reply before sending again.
    pub timeout: Duration,
    /// How many times to send a request before giving up.
    pub attempts: u32,
}

impl Client {
    /// A client with a fresh random id talking to `server`.
    pub fn new(server: SocketAddr) -> Result<Client, ClientError> {
        let local: SocketAddr =
            if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
        let socket = UdpSocket::bind(local)?;
        Ok(Client {
            socket,
            server,
            id: fresh_random(b"fba-client-id", 0) >> 1,
            seq: 0,
            session: 0,
            key: None,
            timeout: Duration::from_millis(500),
            attempts: 20,
        })
    }

    /// A client talking to `server` that signs its requests with `key` (its id is the
    /// key's client id).
    pub fn with_key(server: SocketAddr, key: ClientKey) -> Result<Client, ClientError> {
        let mut client = Client::new(server)?;
        client.id = key.client_id();
        client.key = Some(key);
        Ok(client)
    }

    /// This client's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The current session, once registered.
    pub fn session(&self) -> Option<u64> {
        (self.session != 0).then_some(self.session)
    }

    /// Opens a new session (a register with a fresh random nonce, retransmitted until
    /// answered) and returns its id; later requests use it, numbered from 1.
    pub fn register(&mut self) -> Result<u64, ClientError> {
        let nonce = fresh_random(b"fba-register-nonce", self.id);
        let (node, reply) = self.send(Request::new(self.id, 0, Op::Register { nonce }))?;
        let session = reply.outcome.registered_session().ok_or_else(|| ClientError::Server {
            node,
            error: format!("unexpected answer to a register: {}", reply.outcome),
        })?;
        (self.session, self.seq) = (session, 0);
        Ok(session)
    }

    /// Sends `op` (registering a session first if there is none) and waits for its reply,
    /// retransmitting the same request on timeouts. A `session_expired` reply is returned
    /// like any other, and the next call registers a new session.
    pub fn call(&mut self, op: Op) -> Result<(NodeId, Reply), ClientError> {
        if self.session == 0 {
            self.register()?;
        }
        self.seq += 1;
        let answer = self.send(Request::new(self.id, self.seq, op).with_session(self.session))?;
        if matches!(answer.1.outcome, Outcome::SessionExpired { .. }) {
            self.session = 0;
        }
        Ok(answer)
    }

    /// Signs `request` if the client has a key, sends it until a reply to it comes.
    fn send(&self, request: Request) -> Result<(NodeId, Reply), ClientError> {
        let request = match &self.key {
            Some(key) => key.sign(request),
            None => request,
        };
        let bytes = net::encode(&Message::Request { request: request.clone() });
        for _ in 0..self.attempts {
            self.socket.send_to(&bytes, self.server)?;
            if let Some(answer) = self.await_reply(&request)? {
                return answer;
            }
        }
        Err(ClientError::NoAnswer { server: self.server, attempts: self.attempts })
    }

    /// Waits up to the timeout for the reply to `request`; stale replies are skipped.
    #[allow(clippy::type_complexity)]
    fn await_reply(
        &self,
        request: &Request,
    ) -> Result<Option<Result<(NodeId, Reply), ClientError>>, ClientError> {
        let deadline = Instant::now() + self.timeout;
        let mut buf = vec![0u8; net::MAX_DATAGRAM + 1];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.socket.set_read_timeout(Some(left))?;
            let (n, from) = match self.socket.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Ok(None)
                }
                // The node's port is closed (ICMP unreachable): keep retrying until the end.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::thread::sleep(left.min(self.timeout));
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            };
            if from != self.server {
                continue;
            }
            match net::decode(&buf[..n]) {
                Ok(Datagram::Json(Message::Reply { node, reply })) if reply.answers(request) => {
                    return Ok(Some(Ok((node, reply))));
                }
                Ok(Datagram::Json(Message::Error { node, error })) => {
                    return Ok(Some(Err(ClientError::Server { node, error })));
                }
                _ => continue,
            }
        }
    }
}

/// A random-enough number from the clock, the process id and `salt` (a client id is
/// this shifted right once: top bit clear, since ids with it set are reserved for
/// plain-text clients).
fn fresh_random(domain: &[u8], salt: u64) -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut h = crate::hash::Sha256::new();
    h.update(domain).update(&nanos.to_be_bytes()).update(&std::process::id().to_be_bytes());
    let digest = h.update(&salt.to_be_bytes()).finish();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}
