//! The client side: send requests to one node over UDP, retransmitting until it answers.
//!
//! Each request carries this client's random id and a sequence number; a retransmission
//! reuses both, so the cluster applies it once and answers a late copy from its reply cache.

use crate::net::{self, Datagram, Message};
use crate::quorum::NodeId;
use crate::wallet::{Op, Reply, Request};
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
            id: fresh_id(),
            seq: 0,
            timeout: Duration::from_millis(500),
            attempts: 20,
        })
    }

    /// This client's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sends `op` and waits for its reply, retransmitting the same request on timeouts.
    pub fn call(&mut self, op: Op) -> Result<(NodeId, Reply), ClientError> {
        self.seq += 1;
        let request = Request { client: self.id, seq: self.seq, op };
        let bytes = net::encode(&Message::Request { request });
        for _ in 0..self.attempts {
            self.socket.send_to(&bytes, self.server)?;
            if let Some(answer) = self.await_reply(self.seq)? {
                return answer;
            }
        }
        Err(ClientError::NoAnswer { server: self.server, attempts: self.attempts })
    }

    /// Waits up to the timeout for the reply to `seq`; stale replies are skipped.
    #[allow(clippy::type_complexity)]
    fn await_reply(&self, seq: u64) -> Result<Option<Result<(NodeId, Reply), ClientError>>, ClientError> {
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
                Ok(Datagram::Json(Message::Reply { node, reply }))
                    if reply.client == self.id && reply.seq == seq =>
                {
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

/// A random-enough client id from the clock and the process id (top bit clear: ids with
/// it set are reserved for plain-text clients).
fn fresh_id() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut h = crate::hash::Sha256::new();
    h.update(&nanos.to_be_bytes()).update(&std::process::id().to_be_bytes());
    let digest = h.finish();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) >> 1
}
