//! # Metrics: what a node counts, and how Prometheus reads it
//!
//! A node is one protocol thread doing all the work and, with `--metrics ADDR`, one small
//! HTTP thread answering scrapers. The two share a single [`Metrics`] registry behind an
//! `Arc`. Every field of the registry is made of atomics, so the protocol thread updates a
//! counter with one relaxed `fetch_add` and never waits for a scrape, and the HTTP thread
//! reads whatever values are there when it renders. No lock is taken on either side.
//!
//! There are four kinds of metric, mirroring the Prometheus data model:
//!
//! * [`Counter`]: a number that only goes up (requests received, slots externalized);
//! * [`Gauge`]: a number that goes up and down (pool size, ledger slot, quorum available);
//! * [`LabelledCounter`]: a counter split by one label whose values are fixed when the
//!   registry is made (datagrams dropped by reason). A value outside the set is counted
//!   under `other`, so a new drop reason in the server is never lost, only lumped;
//! * [`Histogram`]: observations sorted into buckets with fixed upper bounds (slot latency
//!   in seconds, the ballot counter at externalize). Each bucket holds its own count; the
//!   cumulative `le` counts Prometheus expects are summed at render time, and the total
//!   count is the last cumulative bucket, so a rendered histogram is always consistent
//!   (`+Inf` equals `_count`) even while the protocol thread keeps observing.
//!
//! [`Metrics::render`] writes the Prometheus text exposition format, version 0.0.4: for
//! each metric a `# HELP` and a `# TYPE` line, then one `name{labels} value` sample per
//! line. Counters end in `_total`, durations are in seconds, as the naming conventions ask.
//!
//! [`serve`] is the HTTP side: one thread, `std::net::TcpListener`, no framework. It answers
//! `GET /metrics` with the rendering and `GET /health` with `200 ok` while the node hears a
//! quorum and `503 no quorum` otherwise. Requests are handled one at a time, which is all a
//! scraper needs; to keep one slow or hostile client from holding the thread, each request
//! head must arrive whole within [`REQUEST_TIMEOUT`] and within [`MAX_REQUEST_BYTES`], or the
//! connection is answered with an error status and closed. Anything that is not a well-formed
//! HTTP/1.x request head gets `400`, a method other than GET or HEAD `405`, an unknown path
//! `404`. The listener is non-blocking and polls a stop flag between accepts, so shutting
//! down takes at most one poll interval plus the request in progress.
//!
//! The endpoint is meant for an operator's network: it reveals counts, never wallet data or
//! keys, but it is unauthenticated and serves one client at a time.

use std::fmt::{self, Display, Write as _};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A count that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// A gauge at zero.
    pub const fn new() -> Gauge {
        Gauge(AtomicI64::new(0))
    }

    /// Sets the value.
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Sets the value from a count or slot number (saturating at `i64::MAX`).
    pub fn set_count<T: TryInto<i64>>(&self, value: T) {
        self.set(value.try_into().unwrap_or(i64::MAX));
    }

    /// Sets the value to 1 for true and 0 for false.
    pub fn set_bool(&self, value: bool) {
        self.set(i64::from(value));
    }

    /// Adds `delta` (which may be negative).
    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The label value under which a [`LabelledCounter`] counts values outside its fixed set.
pub const OTHER_LABEL: &str = "other";

/// A counter split by one label whose values are fixed at construction, plus
/// [`OTHER_LABEL`] for anything else.
#[derive(Debug)]
pub struct LabelledCounter {
    label: &'static str,
    values: &'static [&'static str],
    /// One count per value, then the count for [`OTHER_LABEL`].
    counts: Box<[AtomicU64]>,
}

impl LabelledCounter {
    /// A counter with label name `label` and label values `values` (which should not
    /// include [`OTHER_LABEL`]; it is added).
    pub fn new(label: &'static str, values: &'static [&'static str]) -> LabelledCounter {
        debug_assert!(!values.contains(&OTHER_LABEL), "{OTHER_LABEL} is implicit");
        let counts = (0..=values.len()).map(|_| AtomicU64::new(0)).collect();
        LabelledCounter { label, values, counts }
    }

    /// Adds one to the count for `value`.
    pub fn inc(&self, value: &str) {
        self.add(value, 1);
    }

    /// Adds `n` to the count for `value` (for [`OTHER_LABEL`] if `value` is not in the set).
    pub fn add(&self, value: &str, n: u64) {
        self.counts[self.index(value)].fetch_add(n, Ordering::Relaxed);
    }

    /// The count for `value` (the [`OTHER_LABEL`] count if `value` is not in the set).
    pub fn get(&self, value: &str) -> u64 {
        self.counts[self.index(value)].load(Ordering::Relaxed)
    }

    /// Every label value with its count, [`OTHER_LABEL`] last.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let names = self.values.iter().copied().chain([OTHER_LABEL]);
        names.zip(self.counts.iter().map(|c| c.load(Ordering::Relaxed))).collect()
    }

    fn index(&self, value: &str) -> usize {
        self.values.iter().position(|v| *v == value).unwrap_or(self.values.len())
    }
}

/// Observations sorted into buckets with fixed upper bounds, lock-free.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds, increasing; the implicit last bucket is `+Inf`.
    bounds: &'static [f64],
    /// Per-bucket (not cumulative) counts, one more than `bounds`.
    buckets: Box<[AtomicU64]>,
    /// The sum of all observations, as `f64` bits.
    sum_bits: AtomicU64,
}

/// A consistent reading of a [`Histogram`].
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, cumulative count)` per finite bucket, increasing.
    pub buckets: Vec<(f64, u64)>,
    /// All observations (the `+Inf` bucket).
    pub count: u64,
    /// The sum of all observations.
    pub sum: f64,
}

impl Histogram {
    /// A histogram with the given increasing upper bounds (`+Inf` is implicit).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds must increase");
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram { bounds, buckets, sum_bits: AtomicU64::new(0f64.to_bits()) }
    }

    /// Records one observation; NaN is ignored.
    pub fn observe(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let add = |bits: u64| Some((f64::from_bits(bits) + value).to_bits());
        // The closure always returns Some, so the update always succeeds.
        let _ = self.sum_bits.fetch_update(Ordering::Relaxed, Ordering::Relaxed, add);
    }

    /// Records a duration, in seconds.
    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(elapsed.as_secs_f64());
    }

    /// Reads the histogram, with cumulative bucket counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (bound, count) in self.bounds.iter().zip(self.buckets.iter()) {
            running += count.load(Ordering::Relaxed);
            buckets.push((*bound, running));
        }
        let count = running + self.buckets[self.bounds.len()].load(Ordering::Relaxed);
        HistogramSnapshot { buckets, count, sum: f64::from_bits(self.sum_bits.load(Ordering::Relaxed)) }
    }
}

/// Bucket bounds for the time from first nomination to externalize, in seconds.
pub const SLOT_LATENCY_BOUNDS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Bucket bounds for the ballot counter a slot externalized at.
pub const BALLOT_COUNTER_BOUNDS: &[f64] = &[1.0, 2.0, 3.0, 5.0, 10.0, 100.0];
/// Bucket bounds for one fsync (or one durable write), in seconds.
pub const FSYNC_BOUNDS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
/// Encodings a client request can arrive in (label `kind`).
pub const REQUEST_KINDS: &[&str] = &["json", "text"];
/// Outcomes of an applied request (label `outcome`).
pub const REQUEST_OUTCOMES: &[&str] = &["ok", "refused"];
/// Reasons a datagram is dropped (label `reason`); the server's drop kinds.
pub const DROP_REASONS: &[&str] = &[
    "malformed",
    "authentication",
    "non-peer",
    "impersonation",
    "unexpected",
    "bad request",
    "busy",
    "forged request",
    "unsigned request",
    "catch-up rate",
    "status rate",
];

/// Everything a node counts, shared between the protocol thread and the HTTP thread.
#[derive(Debug)]
pub struct Metrics {
    /// Client requests received, by encoding ([`REQUEST_KINDS`]).
    pub requests_received: LabelledCounter,
    /// Requests applied to the wallet, by outcome ([`REQUEST_OUTCOMES`]).
    pub requests_applied: LabelledCounter,
    /// Replies sent to clients.
    pub replies_sent: Counter,
    /// New requests answered `unavailable` (the node heard no quorum).
    pub requests_unavailable: Counter,
    /// Status requests received.
    pub status_requests: Counter,
    /// Slots externalized (decided).
    pub slots_externalized: Counter,
    /// Seconds from a slot's first nomination to its externalize.
    pub slot_latency: Histogram,
    /// The ballot counter each slot externalized at.
    pub ballot_counter: Histogram,
    /// Nomination timer expiries.
    pub nomination_timeouts: Counter,
    /// Ballot timer expiries.
    pub ballot_timeouts: Counter,
    /// Datagrams dropped, by reason ([`DROP_REASONS`]).
    pub datagrams_dropped: LabelledCounter,
    /// Datagrams whose authenticator was missing or did not verify.
    pub authentication_failures: Counter,
    /// Catch-up requests sent to peers.
    pub catchup_requests_sent: Counter,
    /// Slots applied from a peer's ledger during catch-up.
    pub catchup_slots_applied: Counter,
    /// Batches asked of a peer because a statement named one not held here.
    pub batch_fetches: Counter,
    /// Seconds per fsync of the database or ledger.
    pub fsync_seconds: Histogram,
    /// Requests waiting in the pool for a slot.
    pub pool_size: Gauge,
    /// The last slot applied to the ledger.
    pub ledger_slot: Gauge,
    /// The slot of the newest checkpoint on disk.
    pub checkpoint_slot: Gauge,
    /// Peers heard from recently.
    pub peers_heard: Gauge,
    /// 1 while the node hears a quorum, else 0.
    pub quorum_available: Gauge,
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero, its uptime starting now.
    pub fn new() -> Metrics {
        Metrics {
            requests_received: LabelledCounter::new("kind", REQUEST_KINDS),
            requests_applied: LabelledCounter::new("outcome", REQUEST_OUTCOMES),
            replies_sent: Counter::new(),
            requests_unavailable: Counter::new(),
            status_requests: Counter::new(),
            slots_externalized: Counter::new(),
            slot_latency: Histogram::new(SLOT_LATENCY_BOUNDS),
            ballot_counter: Histogram::new(BALLOT_COUNTER_BOUNDS),
            nomination_timeouts: Counter::new(),
            ballot_timeouts: Counter::new(),
            datagrams_dropped: LabelledCounter::new("reason", DROP_REASONS),
            authentication_failures: Counter::new(),
            catchup_requests_sent: Counter::new(),
            catchup_slots_applied: Counter::new(),
            batch_fetches: Counter::new(),
            fsync_seconds: Histogram::new(FSYNC_BOUNDS),
            pool_size: Gauge::new(),
            ledger_slot: Gauge::new(),
            checkpoint_slot: Gauge::new(),
            peers_heard: Gauge::new(),
            quorum_available: Gauge::new(),
            started: Instant::now(),
        }
    }

    /// Counts a dropped datagram of `reason` (one of [`DROP_REASONS`]); an
    /// `authentication` drop also counts as an authentication failure.
    pub fn record_drop(&self, reason: &str) {
        self.datagrams_dropped.inc(reason);
        if reason == "authentication" {
            self.authentication_failures.inc();
        }
    }

    /// Counts one externalized slot with its ballot counter and latency.
    pub fn record_slot(&self, counter: u32, latency: Duration) {
        self.slots_externalized.inc();
        self.ballot_counter.observe(f64::from(counter));
        self.slot_latency.observe_duration(latency);
    }

    /// Whether the node hears a quorum (the `quorum_available` gauge is nonzero).
    pub fn health(&self) -> bool {
        self.quorum_available.get() != 0
    }

    /// Time since the registry was made.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Every metric in the Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = Exposition::default();
        self.render_requests(&mut out);
        self.render_consensus(&mut out);
        self.render_network(&mut out);
        self.render_state(&mut out);
        out.0
    }

    fn render_requests(&self, out: &mut Exposition) {
        out.labelled(
            "fba_requests_received_total",
            "Client requests received, by encoding.",
            &self.requests_received,
        );
        out.labelled(
            "fba_requests_applied_total",
            "Requests applied to the wallet, by outcome.",
            &self.requests_applied,
        );
        out.counter("fba_replies_sent_total", "Replies sent to clients.", &self.replies_sent);
        out.counter(
            "fba_requests_unavailable_total",
            "New requests answered unavailable because the node heard no quorum.",
            &self.requests_unavailable,
        );
        out.counter("fba_status_requests_total", "Status requests received.", &self.status_requests);
    }

    fn render_consensus(&self, out: &mut Exposition) {
        out.counter("fba_slots_externalized_total", "Slots externalized.", &self.slots_externalized);
        out.histogram(
            "fba_slot_latency_seconds",
            "Seconds from a slot's first nomination to its externalize.",
            &self.slot_latency,
        );
        out.histogram(
            "fba_ballot_counter",
            "Ballot counter at which each slot externalized.",
            &self.ballot_counter,
        );
        out.counter("fba_nomination_timeouts_total", "Nomination timer expiries.", &self.nomination_timeouts);
        out.counter("fba_ballot_timeouts_total", "Ballot timer expiries.", &self.ballot_timeouts);
    }

    fn render_network(&self, out: &mut Exposition) {
        out.labelled("fba_datagrams_dropped_total", "Datagrams dropped, by reason.", &self.datagrams_dropped);
        out.counter(
            "fba_authentication_failures_total",
            "Datagrams whose authenticator was missing or did not verify.",
            &self.authentication_failures,
        );
        out.counter(
            "fba_catchup_requests_sent_total",
            "Catch-up requests sent.",
            &self.catchup_requests_sent,
        );
        out.counter(
            "fba_catchup_slots_applied_total",
            "Slots applied from peers' ledgers by catch-up.",
            &self.catchup_slots_applied,
        );
        out.counter(
            "fba_batch_fetches_total",
            "Batches asked of a peer because its statement named one not held here.",
            &self.batch_fetches,
        );
    }

    fn render_state(&self, out: &mut Exposition) {
        out.histogram(
            "fba_fsync_seconds",
            "Seconds per fsync of the database or ledger.",
            &self.fsync_seconds,
        );
        out.gauge("fba_pool_size", "Requests waiting in the pool.", self.pool_size.get());
        out.gauge("fba_ledger_slot", "Last slot applied to the ledger.", self.ledger_slot.get());
        out.gauge(
            "fba_checkpoint_slot",
            "Slot of the newest checkpoint on disk (start-up replays the ledger after it).",
            self.checkpoint_slot.get(),
        );
        out.gauge("fba_peers_heard", "Peers heard from recently.", self.peers_heard.get());
        out.gauge(
            "fba_quorum_available",
            "1 while the node hears a quorum, else 0.",
            self.quorum_available.get(),
        );
        out.gauge("fba_uptime_seconds", "Seconds since the node started.", self.uptime().as_secs_f64());
    }
}

/// A rendering in progress (writing to a `String` cannot fail, so results are ignored).
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn counter(&mut self, name: &str, help: &str, counter: &Counter) {
        self.header(name, help, "counter");
        let _ = writeln!(self.0, "{name} {}", counter.get());
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl Display) {
        self.header(name, help, "gauge");
        let _ = writeln!(self.0, "{name} {value}");
    }

    fn labelled(&mut self, name: &str, help: &str, counter: &LabelledCounter) {
        self.header(name, help, "counter");
        for (value, count) in counter.snapshot() {
            let _ = writeln!(self.0, "{name}{{{}=\"{}\"}} {count}", counter.label, LabelValue(value));
        }
    }

    fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.header(name, help, "histogram");
        let snapshot = histogram.snapshot();
        for (bound, count) in &snapshot.buckets {
            let _ = writeln!(self.0, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(self.0, "{name}_bucket{{le=\"+Inf\"}} {}", snapshot.count);
        let _ = writeln!(self.0, "{name}_sum {}", snapshot.sum);
        let _ = writeln!(self.0, "{name}_count {}", snapshot.count);
    }
}

/// A label value escaped for the text format (backslash, double quote, newline).
struct LabelValue<'a>(&'a str);

impl Display for LabelValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// How long a client has to send its whole request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest request head accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How often the accept loop checks the stop flag when no client is waiting.
const ACCEPT_POLL: Duration = Duration::from_millis(25);

/// Limits on one request; the constants in production, shorter in tests.
#[derive(Clone, Copy, Debug)]
struct Limits {
    timeout: Duration,
    max_bytes: usize,
}

const LIMITS: Limits = Limits { timeout: REQUEST_TIMEOUT, max_bytes: MAX_REQUEST_BYTES };

/// Serves `GET /metrics` and `GET /health` on `addr` from a new thread until `stop` is set.
///
/// Returns the bound address (useful with port 0) and the thread's handle; the thread ends
/// within a poll interval of `stop` being set (plus any request being read, at most
/// [`REQUEST_TIMEOUT`]). Fails only if the address cannot be bound or the thread not started.
pub fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    serve_with(addr, metrics, stop, LIMITS)
}

fn serve_with(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    limits: Limits,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let handle = thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || accept_loop(&listener, &metrics, &stop, limits))?;
    Ok((local, handle))
}

fn accept_loop(listener: &TcpListener, metrics: &Metrics, stop: &AtomicBool, limits: Limits) {
    while !stop.load(Ordering::Acquire) {
        match listener.accept() {
            // A client that vanishes mid-answer is its own problem; nothing to report.
            Ok((stream, _)) => drop(handle_connection(stream, metrics, limits)),
            // Nobody waiting, or a transient failure (EMFILE, ECONNABORTED): try again soon.
            Err(_) => thread::sleep(ACCEPT_POLL),
        }
    }
}

/// Why a request head could not be read or understood.
#[derive(Debug)]
enum RequestError {
    /// The head did not end within the byte limit.
    TooLarge,
    /// The head did not arrive within the time limit.
    Timeout,
    /// Not an HTTP/1.x request head.
    Malformed(&'static str),
    /// The connection failed.
    Io(io::Error),
}

impl From<io::Error> for RequestError {
    fn from(e: io::Error) -> RequestError {
        RequestError::Io(e)
    }
}

/// The parts of a request head the server looks at.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    method: String,
    path: String,
}

/// An answer, always closing the connection.
#[derive(Debug)]
struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
    head_only: bool,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: &str) -> Response {
        let content_type = "text/plain; charset=utf-8";
        Response { status, reason, content_type, body: format!("{body}\n"), head_only: false }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            head.push_str("Allow: GET, HEAD\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

fn handle_connection(mut stream: TcpStream, metrics: &Metrics, limits: Limits) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(limits.timeout))?;
    let (response, unread) = match read_head(&mut stream, limits) {
        Ok(head) => (respond(&head, metrics), false),
        Err(RequestError::Io(e)) => return Err(e),
        Err(RequestError::TooLarge) => {
            (Response::text(431, "Request Header Fields Too Large", "too large"), true)
        }
        Err(RequestError::Timeout) => (Response::text(408, "Request Timeout", "timeout"), false),
        Err(RequestError::Malformed(why)) => (Response::text(400, "Bad Request", why), true),
    };
    stream.write_all(&response.to_bytes())?;
    stream.flush()?;
    stream.shutdown(Shutdown::Write)?;
    if unread {
        drain(&mut stream);
    }
    Ok(())
}

/// Reads (briefly, boundedly) what a client sent beyond the part we read, so that closing
/// the socket does not reset the connection before the client has read our answer.
fn drain(stream: &mut TcpStream) {
    let deadline = Instant::now() + Duration::from_millis(100);
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
            return;
        };
        if stream.set_read_timeout(Some(left)).is_err() || !matches!(stream.read(&mut sink), Ok(n) if n > 0) {
            return;
        }
    }
}

/// Reads a request head (through the blank line) within the limits.
fn read_head(stream: &mut TcpStream, limits: Limits) -> Result<Head, RequestError> {
    let deadline = Instant::now() + limits.timeout;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&buf) {
            return parse_head(&buf[..end]);
        }
        if buf.len() >= limits.max_bytes {
            return Err(RequestError::TooLarge);
        }
        let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero());
        stream.set_read_timeout(Some(left.ok_or(RequestError::Timeout)?))?;
        let want = (limits.max_bytes - buf.len()).min(chunk.len());
        match stream.read(&mut chunk[..want]) {
            Ok(0) => return Err(RequestError::Malformed("connection closed before the end of the request")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(RequestError::Timeout)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(RequestError::Io(e)),
        }
    }
}

/// Where the head ends (after the blank line), accepting bare `\n` line ends too.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parses a request head: request line, then `name: value` header lines.
fn parse_head(bytes: &[u8]) -> Result<Head, RequestError> {
    let text = std::str::from_utf8(bytes).map_err(|_| RequestError::Malformed("request is not UTF-8"))?;
    let mut lines = text.split('\n').map(|line| line.strip_suffix('\r').unwrap_or(line));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed("bad request line"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(RequestError::Malformed("bad method"));
    }
    if !version.starts_with("HTTP/1.") || version.len() != "HTTP/1.1".len() {
        return Err(RequestError::Malformed("not HTTP/1.x"));
    }
    if lines.filter(|line| !line.is_empty()).any(|line| !is_header_line(line)) {
        return Err(RequestError::Malformed("bad header line"));
    }
    Ok(Head { method: method.to_string(), path: request_path(target)?.to_string() })
}

fn is_header_line(line: &str) -> bool {
    matches!(line.split_once(':'), Some((name, _)) if !name.is_empty() && !name.contains([' ', '\t']))
}

/// The path of a request target (origin form `/p?q` or absolute form `http://h/p?q`).
fn request_path(target: &str) -> Result<&str, RequestError> {
    let origin = match target.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            rest.find('/').map_or("/", |i| &rest[i..])
        }
        _ => target,
    };
    if !origin.starts_with('/') {
        return Err(RequestError::Malformed("bad request target"));
    }
    Ok(origin.split(['?', '#']).next().unwrap_or(origin))
}

/// The answer to a well-formed request.
fn respond(head: &Head, metrics: &Metrics) -> Response {
    let head_only = head.method == "HEAD";
    if head.method != "GET" && !head_only {
        return Response::text(405, "Method Not Allowed", "method not allowed");
    }
    let mut response = match head.path.as_str() {
        "/metrics" => Response {
            status: 200,
            reason: "OK",
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics.render(),
            head_only: false,
        },
        "/health" if metrics.health() => Response::text(200, "OK", "ok"),
        "/health" => Response::text(503, "Service Unavailable", "no quorum"),
        _ => Response::text(404, "Not Found", "not found"),
    };
    response.head_only = head_only;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    /// One parsed sample line: name, labels, value.
    type Sample = (String, BTreeMap<String, String>, f64);

    /// Parses the exposition format back: HELP/TYPE per family, `name{labels} value` samples.
    fn parse(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
        let mut types = BTreeMap::new();
        let mut helps = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("help text");
                assert!(!help.is_empty());
                helps.insert(name.to_string(), help.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("type");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(helps.contains_key(name), "HELP before TYPE: {line}");
                types.insert(name.to_string(), kind.to_string());
            } else {
                samples.push(parse_sample(line));
            }
        }
        assert_eq!(helps.keys().collect::<Vec<_>>(), types.keys().collect::<Vec<_>>());
        (types, samples)
    }

    fn parse_sample(line: &str) -> Sample {
        let (series, value) = line.rsplit_once(' ').expect("sample value");
        let value: f64 = value.parse().expect("numeric value");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        assert!(
            name.starts_with("fba_") && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{line}"
        );
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').expect("label pair");
                let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).expect("quoted label");
                (k.to_string(), v.to_string())
            })
            .collect();
        (name.to_string(), labels, value)
    }

    fn family<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s).filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name)
    }

    fn busy_metrics() -> Metrics {
        let m = Metrics::new();
        m.requests_received.inc("json");
        m.requests_received.add("text", 2);
        m.requests_applied.inc("ok");
        m.record_drop("authentication");
        m.record_drop("bad request");
        m.record_drop("something new");
        for (counter, ms) in [(1, 3), (1, 4), (2, 40), (7, 1200), (250, 60_000)] {
            m.record_slot(counter, Duration::from_millis(ms));
        }
        m.fsync_seconds.observe_duration(Duration::from_micros(700));
        m.pool_size.set_count(12usize);
        m.quorum_available.set_bool(true);
        m
    }

    #[test]
    fn every_sample_belongs_to_a_declared_family() {
        let text = busy_metrics().render();
        let (types, samples) = parse(&text);
        assert!(types.len() >= 18, "{types:?}");
        for (name, _, _) in &samples {
            assert!(types.contains_key(family(name, &types)), "undeclared {name}");
        }
        for name in types.keys() {
            assert!(samples.iter().any(|(n, _, _)| family(n, &types) == name), "no sample for {name}");
            if types[name] == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
        }
    }

    #[test]
    fn labelled_counters_render_every_value_and_other() {
        let (_, samples) = parse(&busy_metrics().render());
        let value = |name: &str, label: &str, v: &str| {
            samples.iter().find(|(n, l, _)| n == name && l.get(label).is_some_and(|x| x == v)).map(|s| s.2)
        };
        assert_eq!(value("fba_requests_received_total", "kind", "text"), Some(2.0));
        assert_eq!(value("fba_datagrams_dropped_total", "reason", "bad request"), Some(1.0));
        assert_eq!(value("fba_datagrams_dropped_total", "reason", "other"), Some(1.0));
        assert_eq!(value("fba_datagrams_dropped_total", "reason", "busy"), Some(0.0));
        let auth = samples.iter().find(|(n, _, _)| n == "fba_authentication_failures_total").map(|s| s.2);
        assert_eq!(auth, Some(1.0));
    }

    #[test]
    fn histograms_are_cumulative_and_end_in_count() {
        let (types, samples) = parse(&busy_metrics().render());
        for (name, _) in types.iter().filter(|(_, t)| *t == "histogram") {
            let buckets: Vec<(String, f64)> = samples
                .iter()
                .filter(|(n, _, _)| *n == format!("{name}_bucket"))
                .map(|(_, l, v)| (l["le"].clone(), *v))
                .collect();
            assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{name} not cumulative");
            let bounds: Vec<f64> = buckets.iter().map(|(le, _)| le.parse().expect("bound")).collect();
            assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{name} bounds");
            let (last_le, last) = buckets.last().expect("buckets");
            assert_eq!(last_le, "+Inf");
            let count = samples.iter().find(|(n, _, _)| *n == format!("{name}_count")).expect("count").2;
            assert_eq!(*last, count, "{name}");
            assert!(samples.iter().any(|(n, _, _)| *n == format!("{name}_sum")));
        }
    }

    #[test]
    fn ballot_counter_buckets() {
        let m = busy_metrics();
        let s = m.ballot_counter.snapshot();
        let expected = vec![(1.0, 2), (2.0, 3), (3.0, 3), (5.0, 3), (10.0, 4), (100.0, 4)];
        assert_eq!(s.buckets, expected);
        assert_eq!(s.count, 5);
        assert_eq!(s.sum, 261.0);
        let latency = m.slot_latency.snapshot();
        assert!((latency.sum - 61.247).abs() < 1e-9, "{}", latency.sum);
        assert!(m.render().contains("fba_ballot_counter_bucket{le=\"+Inf\"} 5\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(LabelValue("a\"b\\c\nd").to_string(), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn health_follows_the_quorum_gauge() {
        let m = Metrics::new();
        assert!(!m.health());
        m.quorum_available.set_bool(true);
        assert!(m.health());
    }

    #[test]
    fn request_heads_parse() {
        let head = parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").expect("head");
        assert_eq!(head, Head { method: "GET".into(), path: "/metrics".into() });
        let head = parse_head(b"GET http://h:9/health HTTP/1.0\n\n").expect("absolute form");
        assert_eq!(head.path, "/health");
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"get / HTTP/1.1\r\n\r\n",
            b"GET / SPDY/3\r\n\r\n",
            b"\xff\r\n\r\n",
        ] {
            assert!(matches!(parse_head(bad), Err(RequestError::Malformed(_))), "{bad:?}");
        }
        assert!(parse_head(b"GET / HTTP/1.1\r\nno colon\r\n\r\n").is_err());
        assert!(parse_head(b"GET nope HTTP/1.1\r\n\r\n").is_err());
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
    }

    struct Server {
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        stop: Arc<AtomicBool>,
        handle: Option<JoinHandle<()>>,
    }

    impl Server {
        fn start(timeout: Duration) -> Server {
            let metrics = Arc::new(Metrics::new());
            let stop = Arc::new(AtomicBool::new(false));
            let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
            let limits = Limits { timeout, max_bytes: MAX_REQUEST_BYTES };
            let (addr, handle) = serve_with(any, metrics.clone(), stop.clone(), limits).expect("serve");
            Server { addr, metrics, stop, handle: Some(handle) }
        }

        /// Sends `request` and reads the whole answer: (status, headers+body text).
        fn exchange(&self, request: &[u8]) -> (u16, String) {
            let mut stream = TcpStream::connect(self.addr).expect("connect");
            stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            stream.write_all(request).expect("send");
            let mut answer = String::new();
            stream.read_to_string(&mut answer).expect("answer");
            let status = answer.get(9..12).and_then(|s| s.parse().ok()).expect("status line");
            (status, answer)
        }

        fn get(&self, path: &str) -> (u16, String) {
            self.exchange(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Release);
            if let Some(handle) = self.handle.take() {
                handle.join().expect("server thread");
            }
        }
    }

    fn body(answer: &str) -> &str {
        answer.split_once("\r\n\r\n").expect("blank line").1
    }

    #[test]
    fn http_serves_metrics_and_health() {
        let server = Server::start(REQUEST_TIMEOUT);
        server.metrics.slots_externalized.add(3);
        let (status, answer) = server.get("/metrics");
        assert_eq!(status, 200);
        assert!(answer.contains("Content-Type: text/plain; version=0.0.4"), "{answer}");
        assert!(answer.contains("Connection: close\r\n"));
        let length = format!("Content-Length: {}\r\n", body(&answer).len());
        assert!(answer.contains(&length), "{answer}");
        assert!(body(&answer).contains("fba_slots_externalized_total 3\n"));
        parse(body(&answer));

        let (status, answer) = server.get("/health");
        assert_eq!((status, body(&answer)), (503, "no quorum\n"));
        server.metrics.quorum_available.set_bool(true);
        let (status, answer) = server.get("/health");
        assert_eq!((status, body(&answer)), (200, "ok\n"));
        let (status, answer) = server.exchange(b"HEAD /health HTTP/1.1\r\n\r\n");
        assert_eq!((status, body(&answer)), (200, ""));
    }

    #[test]
    fn http_refuses_what_it_does_not_serve() {
        let server = Server::start(REQUEST_TIMEOUT);
        assert_eq!(server.get("/").0, 404);
        assert_eq!(server.get("/metricsx").0, 404);
        let (status, answer) = server.exchange(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(status, 405);
        assert!(answer.contains("Allow: GET, HEAD\r\n"));
        assert_eq!(server.exchange(b"\x16\x03\x01garbage\r\n\r\n").0, 400);
        assert_eq!(server.exchange(b"hello\n\n").0, 400);
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_REQUEST_BYTES + 100, b'a');
        assert_eq!(server.exchange(&huge).0, 431);
        // Still serving after all that.
        assert_eq!(server.get("/metrics").0, 200);
    }

    #[test]
    fn a_silent_client_delays_others_only_until_the_timeout() {
        let timeout = Duration::from_millis(300);
        let server = Server::start(timeout);
        let silent = TcpStream::connect(server.addr).expect("connect");
        thread::sleep(Duration::from_millis(50)); // let the server take the silent one first
        let started = Instant::now();
        assert_eq!(server.get("/health").0, 503);
        assert!(started.elapsed() < timeout * 5, "{:?}", started.elapsed());
        let mut silent = silent;
        let mut answer = String::new();
        silent.read_to_string(&mut answer).expect("answer to the silent client");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }

    #[test]
    fn shutdown_is_prompt() {
        let server = Server::start(REQUEST_TIMEOUT);
        let started = Instant::now();
        drop(server);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
