//! The verifier thread: client signatures are checked here, off the reader's and the
//! protocol thread's paths.
//!
//! Two kinds of work arrive ([`Job`]):
//!
//! * a datagram from the socket carrying a signed client request: checked, then handed to
//!   the protocol thread like any other datagram (a forgery becomes a
//!   [`DecodeError::BadSignature`]);
//! * requests a peer flooded that the protocol thread has already pooled provisionally:
//!   the pool checks its quotas and whether a request is still to apply *before* anything
//!   is verified, so a member flooding requests the pool would refuse anyway (over a
//!   client's quota, already applied, duplicates) costs no signature check at all. The
//!   verdict ([`FloodCheck`]) goes back to the protocol thread, which keeps the requests
//!   that verify and drops the rest.
//!
//! Each flooded request is charged to its peer's verify budget ([`SignatureCache`]), so
//! one member cannot buy more than its budget of this thread's time either way.

use super::{check_signatures, Datagram, DecodeError, Inboxes, Incoming, SignatureCache};
use crate::hash::Digest;
use crate::quorum::NodeId;
use crate::wallet::Request;
use crossbeam_channel::{Receiver, Sender};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

/// Work for the verifier thread.
#[derive(Debug)]
pub enum Job {
    /// A datagram with a signed client request, from `SocketAddr`.
    Datagram(SocketAddr, Result<Datagram, DecodeError>),
    /// Signed requests `peer` flooded, pooled provisionally by the protocol thread.
    Flood {
        /// The peer that flooded them.
        peer: NodeId,
        /// The requests.
        requests: Vec<Request>,
    },
    /// Stop (sent at shutdown).
    Stop,
}

/// The verdict on a [`Job::Flood`]: every request of the job is in exactly one list.
#[derive(Debug)]
pub struct FloodCheck {
    /// The peer that flooded them.
    pub peer: NodeId,
    /// Requests whose signatures verify, with their digests.
    pub verified: Vec<(Request, Digest)>,
    /// Requests whose signatures do not verify.
    pub forged: Vec<Request>,
    /// Requests left unchecked: the peer's verify budget was spent.
    pub unchecked: Vec<Request>,
}

/// Checks `requests` that `peer` flooded, within the peer's budget.
pub fn check_flood(peer: NodeId, requests: Vec<Request>, cache: &mut SignatureCache) -> FloodCheck {
    let mut check = FloodCheck { peer, verified: Vec::new(), forged: Vec::new(), unchecked: Vec::new() };
    for request in requests {
        match cache.verify_within(&request, peer) {
            Ok(digest) => check.verified.push((request, digest)),
            Err(Some(_)) => check.forged.push(request),
            Err(None) => check.unchecked.push(request),
        }
    }
    check
}

/// Requests of one flood checked at a time before the turn passes to another source.
const CHUNK: usize = 8;

/// The verifier thread's loop, until [`Job::Stop`] or until the protocol thread is gone.
/// Jobs are served fairly: queued per source (clients' requests, and each peer's floods in
/// chunks of [`CHUNK`]) and taken in turn, so a member flooding as fast as it can delays
/// another peer's requests by at most one chunk per turn.
pub(super) fn verify_loop(jobs: &Receiver<Job>, inboxes: &Inboxes, checked: &Sender<FloodCheck>) {
    let mut signatures = SignatureCache::default();
    let mut queues = Queues::default();
    loop {
        let first = if queues.is_empty() { jobs.recv().ok() } else { None };
        for job in first.into_iter().chain(jobs.try_iter()) {
            if !queues.push(job) {
                return;
            }
        }
        let delivered = match queues.pop() {
            Some(Work::Datagram(from, mut datagram)) => {
                let (verified, forged) = check_signatures(&mut datagram, &mut signatures);
                inboxes.deliver(Incoming { from, datagram, verified, forged })
            }
            Some(Work::Flood(peer, requests)) => {
                checked.send(check_flood(peer, requests, &mut signatures)).is_ok()
            }
            None => false, // nothing queued and nobody left to send more
        };
        if !delivered {
            return;
        }
    }
}

/// One unit of the verifier's work.
enum Work {
    Datagram(SocketAddr, Result<Datagram, DecodeError>),
    Flood(NodeId, Vec<Request>),
}

/// The verifier's queues, one per source, served in turn.
#[derive(Default)]
struct Queues {
    clients: VecDeque<Work>,
    peers: BTreeMap<NodeId, VecDeque<Work>>,
    /// The peer served last (the next turn goes to the one after it).
    last: Option<NodeId>,
    /// Whether the clients' queue was served last.
    clients_last: bool,
}

impl Queues {
    /// Queues a job; false for [`Job::Stop`].
    fn push(&mut self, job: Job) -> bool {
        match job {
            Job::Datagram(from, datagram) => self.clients.push_back(Work::Datagram(from, datagram)),
            Job::Flood { peer, mut requests } => {
                let queue = self.peers.entry(peer).or_default();
                while !requests.is_empty() {
                    let rest = requests.split_off(requests.len().min(CHUNK));
                    queue.push_back(Work::Flood(peer, std::mem::replace(&mut requests, rest)));
                }
            }
            Job::Stop => return false,
        }
        true
    }

    fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.peers.values().all(VecDeque::is_empty)
    }

    /// The next unit of work: clients and peers take turns, peers in id order after the
    /// one served last.
    fn pop(&mut self) -> Option<Work> {
        if !self.clients_last || self.peers.values().all(VecDeque::is_empty) {
            if let Some(work) = self.clients.pop_front() {
                self.clients_last = true;
                return Some(work);
            }
        }
        self.clients_last = false;
        let after = self.last;
        let ids: Vec<NodeId> = self.peers.iter().filter(|(_, q)| !q.is_empty()).map(|(id, _)| *id).collect();
        let next = ids.iter().find(|id| after.is_none_or(|last| **id > last)).or(ids.first()).copied()?;
        self.last = Some(next);
        let work = self.peers.get_mut(&next).and_then(VecDeque::pop_front);
        if self.peers.get(&next).is_some_and(VecDeque::is_empty) {
            self.peers.remove(&next);
        }
        work
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wallet::Op;

    fn flood(peer: u64, n: u64) -> Job {
        let requests = (0..n)
            .map(|seq| Request::new(peer, seq, Op::Get { key: crate::wallet::Key::new("k").expect("key") }))
            .collect();
        Job::Flood { peer: NodeId(peer), requests }
    }

    fn source(work: &Work) -> Option<u64> {
        match work {
            Work::Datagram(..) => None,
            Work::Flood(peer, _) => Some(peer.0),
        }
    }

    #[test]
    fn sources_take_turns_and_a_big_flood_goes_in_chunks() {
        let mut queues = Queues::default();
        assert!(queues.push(flood(1, 64)));
        assert!(queues.push(flood(2, 3)));
        let addr = "127.0.0.1:9".parse().expect("addr");
        assert!(queues.push(Job::Datagram(addr, Err(DecodeError::Empty))));
        let order: Vec<Option<u64>> =
            std::iter::from_fn(|| queues.pop()).map(|w| source(&w)).take(5).collect();
        assert_eq!(order, [None, Some(1), Some(2), Some(1), Some(1)]);
        let left: usize = std::iter::from_fn(|| queues.pop())
            .map(|w| match w {
                Work::Flood(_, requests) => requests.len(),
                Work::Datagram(..) => 0,
            })
            .sum();
        assert_eq!(left, 64 - 3 * CHUNK, "every request of the big flood, in chunks");
        assert!(queues.is_empty());
        assert!(!queues.push(Job::Stop));
    }
}
