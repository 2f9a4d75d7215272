//! # Logging: one line per event, never fatal
//!
//! The protocol thread owns one [`Logger`] and is its only user, so the logger keeps its
//! state in `Cell`s and `RefCell`s rather than locks. Every line carries a UTC timestamp
//! with millisecond precision, a level and the node's id:
//!
//! ```text
//! 2026-11-21T22:46:44.123Z INFO [3000] slot 12 decided: 64 requests, ballot counter 1, 3.2 ms from first nomination
//! ```
//!
//! or, with [`LogFormat::Json`], one JSON object per line for machines, with the same
//! message and, for some events, structured fields:
//!
//! ```text
//! {"ts":"2026-11-21T22:46:44.123Z","level":"info","node":3000,"msg":"slot 12 decided: …","slot":12,"requests":64,"counter":1,"ms":3.2}
//! ```
//!
//! ## Levels and verbosity
//!
//! [`Level::Error`] and [`Level::Warn`] go to standard error, everything else to standard
//! output. [`Level::Info`] is for what an operator wants even from a quiet node: start and
//! stop, one summary per decided slot, quorum lost and regained, peers going silent and
//! coming back, catch-up progress. [`Level::Protocol`] is the assignment's trace (every SCP
//! message sent and received, each externalize and apply, the database entries), shown by
//! default. [`Level::Debug`] is for diagnostics. [`Verbosity::Quiet`] shows errors, warnings
//! and info; [`Verbosity::Normal`] adds the protocol trace; [`Verbosity::Verbose`] adds debug.
//!
//! ## A closed stdout is not fatal
//!
//! `println!` panics when the write fails, so `fba_server … | head -1` used to kill the node
//! with a broken pipe as soon as `head` exited. Rust ignores `SIGPIPE` in its binaries, so
//! the write returns `EPIPE` instead of killing the process; the logger writes each line,
//! newline included, with one `write_all` (so that lines of stdout and stderr sent to one
//! file never mix), and on a failed write to stdout remembers the failure, says so once on
//! stderr, and writes nothing more to stdout. Failed writes to stderr are counted and
//! otherwise ignored. No log call can panic or return an error.
//!
//! ## Dropped datagrams
//!
//! A node on a hostile network may receive a flood of junk. [`Logger::dropped`] logs at most
//! a few lines per kind of drop per second, then one `(k more … not shown)` line, and keeps a
//! running total per kind that every line shows; given a [`Metrics`] registry it also counts
//! the drop there by reason.
//!
//! The timestamp is computed here, without a date crate: the days since 1970-01-01 are
//! turned into a civil (proleptic Gregorian) date by the well-known era-based algorithm
//! ([`civil_from_days`], with its inverse [`days_from_civil`]).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub use crate::config::Verbosity;
use crate::metrics::Metrics;

/// How important a line is; decides where it goes and whether it is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Something failed; to stderr.
    Error,
    /// Something is wrong but the node carries on; to stderr.
    Warn,
    /// Operator-level events (slot summaries, quorum, peers, catch-up); always shown.
    Info,
    /// The protocol trace; shown unless quiet.
    Protocol,
    /// Diagnostics; shown only when verbose.
    Debug,
}

impl Level {
    /// The name in text lines: `ERROR`, `WARN`, `INFO`, `PROTOCOL`, `DEBUG`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Protocol => "PROTOCOL",
            Level::Debug => "DEBUG",
        }
    }

    /// The name in JSON lines: the text name in lower case.
    pub fn json_name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Protocol => "protocol",
            Level::Debug => "debug",
        }
    }

    /// Whether a line of this level is shown at `verbosity`.
    pub fn shown_at(self, verbosity: Verbosity) -> bool {
        match self {
            Level::Error | Level::Warn | Level::Info => true,
            Level::Protocol => verbosity >= Verbosity::Normal,
            Level::Debug => verbosity >= Verbosity::Verbose,
        }
    }

    /// Whether lines of this level go to stderr (else stdout).
    pub fn to_stderr(self) -> bool {
        matches!(self, Level::Error | Level::Warn)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-11-21T22:46:44.123Z INFO [3000] message`.
    #[default]
    Text,
    /// `{"ts":"2026-11-21T22:46:44.123Z","level":"info","node":3000,"msg":"message",…}`.
    Json,
}

/// Most dropped-datagram lines logged per kind per window.
pub const DROP_LINES_PER_SECOND: u32 = 5;

/// Field names every JSON line has; structured fields must not reuse them.
pub const RESERVED_FIELDS: [&str; 4] = ["ts", "level", "node", "msg"];

/// Rate-limiting state for one kind of dropped datagram.
#[derive(Debug)]
struct DropWindow {
    /// When the current window started.
    since: Instant,
    /// Drops of this kind in the current window.
    in_window: u32,
    /// Drops of this kind since start.
    total: u64,
}

/// Where a logger writes: stdout and stderr, or anything else (files, test buffers).
type Sink = RefCell<Box<dyn Write + Send>>;

/// The node's logger, owned by the protocol thread.
pub struct Logger {
    node: u64,
    verbosity: Verbosity,
    format: LogFormat,
    out: Sink,
    err: Sink,
    /// Set after a write to `out` failed; nothing more is written there.
    out_failed: Cell<bool>,
    /// Failed writes, to either sink.
    write_errors: Cell<u64>,
    metrics: Option<Arc<Metrics>>,
    drops: RefCell<BTreeMap<&'static str, DropWindow>>,
    drop_window: Duration,
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logger")
            .field("node", &self.node)
            .field("verbosity", &self.verbosity)
            .field("format", &self.format)
            .field("out_failed", &self.out_failed.get())
            .finish_non_exhaustive()
    }
}

impl Logger {
    /// A logger for node `node_id` writing to stdout and stderr.
    pub fn new(node_id: u64, verbosity: Verbosity, format: LogFormat) -> Logger {
        Logger {
            node: node_id,
            verbosity,
            format,
            out: RefCell::new(Box::new(io::stdout())),
            err: RefCell::new(Box::new(io::stderr())),
            out_failed: Cell::new(false),
            write_errors: Cell::new(0),
            metrics: None,
            drops: RefCell::new(BTreeMap::new()),
            drop_window: Duration::from_secs(1),
        }
    }

    /// The same logger writing info, protocol and debug lines to `out` and errors and
    /// warnings to `err` instead of stdout and stderr.
    pub fn with_writers(mut self, out: Box<dyn Write + Send>, err: Box<dyn Write + Send>) -> Logger {
        self.out = RefCell::new(out);
        self.err = RefCell::new(err);
        self.out_failed.set(false);
        self
    }

    /// The same logger, also counting dropped datagrams in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Logger {
        self.metrics = Some(metrics);
        self
    }

    /// The verbosity lines are filtered by.
    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    /// Whether a line at `level` would be shown (to skip building expensive lines).
    pub fn enabled(&self, level: Level) -> bool {
        let writable = level.to_stderr() || !self.out_failed.get();
        writable && level.shown_at(self.verbosity)
    }

    /// Whether a write to stdout has failed (after which stdout is no longer written).
    pub fn stdout_failed(&self) -> bool {
        self.out_failed.get()
    }

    /// How many writes have failed, to stdout or stderr.
    pub fn write_errors(&self) -> u64 {
        self.write_errors.get()
    }

    /// Logs `message` at `level`.
    pub fn log(&self, level: Level, message: fmt::Arguments) {
        self.log_with(level, message, &[]);
    }

    /// Logs `message` at `level` with structured `fields`, which JSON lines carry after
    /// `msg` and text lines omit (the message should say the same in words). Field names
    /// must not be one of [`RESERVED_FIELDS`].
    pub fn log_with(&self, level: Level, message: fmt::Arguments, fields: &[(&str, Value)]) {
        if !self.enabled(level) {
            return;
        }
        debug_assert!(fields.iter().all(|(k, _)| !RESERVED_FIELDS.contains(k)), "reserved field name");
        let mut line = self.format_line(SystemTime::now(), level, message, fields);
        // One write per line, so lines of stdout and stderr sharing a file never mix.
        line.push('\n');
        if level.to_stderr() {
            self.write_err(&line);
        } else {
            self.write_out(&line);
        }
    }

    /// Logs at [`Level::Error`].
    pub fn error(&self, message: fmt::Arguments) {
        self.log(Level::Error, message);
    }

    /// Logs at [`Level::Warn`].
    pub fn warn(&self, message: fmt::Arguments) {
        self.log(Level::Warn, message);
    }

    /// Logs at [`Level::Info`].
    pub fn info(&self, message: fmt::Arguments) {
        self.log(Level::Info, message);
    }

    /// Logs at [`Level::Protocol`].
    pub fn protocol(&self, message: fmt::Arguments) {
        self.log(Level::Protocol, message);
    }

    /// Logs at [`Level::Debug`].
    pub fn debug(&self, message: fmt::Arguments) {
        self.log(Level::Debug, message);
    }

    /// The summary line of a decided slot, at [`Level::Info`]: `slot 12 decided: 64
    /// requests, ballot counter 1, 3.2 ms from first nomination`.
    pub fn slot_summary(&self, slot: u64, requests: usize, counter: u32, elapsed: Duration) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        let fields = [
            ("slot", Value::from(slot)),
            ("requests", Value::from(requests)),
            ("counter", Value::from(counter)),
            ("ms", Value::from((ms * 1000.0).round() / 1000.0)),
        ];
        self.log_with(
            Level::Info,
            format_args!(
                "slot {slot} decided: {requests} requests, ballot counter {counter}, {ms:.1} ms from first nomination"
            ),
            &fields,
        );
    }

    /// Quorum lost ([`Level::Warn`]) or regained ([`Level::Info`]): `heard` lists the
    /// peers heard recently, out of `peers`; the node needs `needed` of them for a slice.
    pub fn quorum_changed(&self, available: bool, heard: &[u64], peers: usize, needed: usize) {
        let fields = [
            ("quorum", Value::from(available)),
            ("heard", Value::from(heard.to_vec())),
            ("peers", Value::from(peers)),
            ("needed", Value::from(needed)),
        ];
        let (n, list) = (heard.len(), IdList(heard));
        if available {
            let line = format_args!("quorum regained (hearing {n} of {peers} peers: {list})");
            self.log_with(Level::Info, line, &fields);
        } else {
            let line = format_args!("quorum lost (hearing {n} of {peers} peers: {list}; need {needed})");
            self.log_with(Level::Warn, line, &fields);
        }
    }

    /// Peers gone silent ([`Level::Warn`]) or heard again ([`Level::Info`]).
    pub fn peers_silent(&self, silent: bool, peers: &[u64]) {
        if peers.is_empty() {
            return;
        }
        let fields = [("silent", Value::from(silent)), ("peers", Value::from(peers.to_vec()))];
        let list = IdList(peers);
        if silent {
            self.log_with(Level::Warn, format_args!("peers silent: {list}"), &fields);
        } else {
            self.log_with(Level::Info, format_args!("peers back: {list}"), &fields);
        }
    }

    /// Catch-up progress at [`Level::Info`]: `done` of `total` slots applied (`0/N` when it
    /// starts, `N/N` when it finishes), from `peer`.
    pub fn catchup(&self, peer: u64, done: u64, total: u64) {
        let (what, end) = match done {
            0 => ("started", ""),
            d if d >= total => ("finished", ", caught up"),
            _ => ("progress", ""),
        };
        let fields =
            [("peer", Value::from(peer)), ("done", Value::from(done)), ("total", Value::from(total))];
        self.log_with(
            Level::Info,
            format_args!("catch-up {what} from {peer}: {done}/{total} slots{end}"),
            &fields,
        );
    }

    /// Logs a datagram from `from` dropped for `reason`, of kind `kind` (one of
    /// [`crate::metrics::DROP_REASONS`]), at [`Level::Warn`]: at most
    /// [`DROP_LINES_PER_SECOND`] lines per kind per second, then a line saying how many more
    /// were not shown. Also counts the drop in the metrics, if any.
    pub fn dropped(&self, kind: &'static str, from: SocketAddr, reason: fmt::Arguments) {
        if let Some(metrics) = &self.metrics {
            metrics.record_drop(kind);
        }
        let (total, hidden, show) = self.count_drop(kind);
        if hidden > 0 {
            let fields = [("kind", Value::from(kind)), ("hidden", Value::from(hidden))];
            self.log_with(
                Level::Warn,
                format_args!("({hidden} more dropped datagrams ({kind}) not shown)"),
                &fields,
            );
        }
        if show {
            let fields = [
                ("kind", Value::from(kind)),
                ("from", Value::from(from.to_string())),
                ("total", Value::from(total)),
            ];
            self.log_with(
                Level::Warn,
                format_args!("dropped datagram from {from} ({kind}, {total} so far): {reason}"),
                &fields,
            );
        }
    }

    /// Counts one drop of `kind`: (total so far, lines hidden in the window that just
    /// ended, whether to show this one).
    fn count_drop(&self, kind: &'static str) -> (u64, u32, bool) {
        let mut drops = self.drops.borrow_mut();
        let now = Instant::now();
        let window = drops.entry(kind).or_insert(DropWindow { since: now, in_window: 0, total: 0 });
        let mut hidden = 0;
        if now.duration_since(window.since) >= self.drop_window {
            hidden = window.in_window.saturating_sub(DROP_LINES_PER_SECOND);
            (window.since, window.in_window) = (now, 0);
        }
        window.in_window = window.in_window.saturating_add(1);
        window.total += 1;
        (window.total, hidden, window.in_window <= DROP_LINES_PER_SECOND)
    }

    /// One line, without its newline.
    fn format_line(
        &self,
        now: SystemTime,
        level: Level,
        message: fmt::Arguments,
        fields: &[(&str, Value)],
    ) -> String {
        let ts = utc_timestamp(now);
        match self.format {
            LogFormat::Text => format!("{ts} {} [{}] {message}", level.name(), self.node),
            LogFormat::Json => {
                let msg = Value::from(message.to_string());
                let mut line = format!(
                    r#"{{"ts":"{ts}","level":"{}","node":{},"msg":{msg}"#,
                    level.json_name(),
                    self.node
                );
                for (key, value) in fields {
                    // Writing to a String cannot fail.
                    let _ = write!(line, ",{}:{value}", Value::from(*key));
                }
                line.push('}');
                line
            }
        }
    }

    fn write_out(&self, line: &str) {
        if self.out_failed.get() {
            return;
        }
        let result = {
            let mut out = self.out.borrow_mut();
            out.write_all(line.as_bytes()).and_then(|()| out.flush())
        };
        if let Err(e) = result {
            self.out_failed.set(true);
            self.write_errors.set(self.write_errors.get() + 1);
            let why =
                format_args!("stdout is closed or failing ({e}); only warnings and errors are logged now");
            self.log(Level::Warn, why);
        }
    }

    fn write_err(&self, line: &str) {
        let result = {
            let mut err = self.err.borrow_mut();
            err.write_all(line.as_bytes()).and_then(|()| err.flush())
        };
        if result.is_err() {
            self.write_errors.set(self.write_errors.get() + 1);
        }
    }
}

/// Node ids written `3000, 3001` (or `none`).
struct IdList<'a>(&'a [u64]);

impl fmt::Display for IdList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{id}")?;
        }
        Ok(())
    }
}

/// `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, millisecond precision; times before 1970 too).
pub fn utc_timestamp(t: SystemTime) -> String {
    let millis: i128 = match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_millis()).unwrap_or(i128::MAX),
        Err(before) => -i128::try_from(before.duration().as_millis()).unwrap_or(i128::MAX),
    };
    const MS_PER_DAY: i128 = 86_400_000;
    let days = i64::try_from(millis.div_euclid(MS_PER_DAY)).unwrap_or(i64::MAX / 2);
    let ms_of_day = millis.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let (secs, ms) = (ms_of_day / 1000, ms_of_day % 1000);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

/// Days per 400-year era of the Gregorian calendar.
const DAYS_PER_ERA: i64 = 146_097;
/// Days from 0000-03-01 to 1970-01-01.
const EPOCH_SHIFT: i64 = 719_468;

/// The proleptic Gregorian date `(year, month 1–12, day 1–31)` that is `days` days after
/// 1970-01-01 (negative for earlier dates).
///
/// Years are counted from March, so that the leap day is the last day of the year; a
/// 400-year era has exactly 146 097 days, which reduces everything to a day of the
/// era, then a year of the era and a day of that year, then a month by a linear formula.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + EPOCH_SHIFT;
    let era = z.div_euclid(DAYS_PER_ERA);
    let doe = z.rem_euclid(DAYS_PER_ERA); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // month is in 1..=12 and day in 1..=31 by construction.
    (year, u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
}

/// Days from 1970-01-01 to the proleptic Gregorian date `year-month-day` (the inverse of
/// [`civil_from_days`] for valid dates).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * DAYS_PER_ERA + doe - EPOCH_SHIFT
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::process::{Command, Stdio};
    use std::sync::Mutex;

    /// A test sink whose contents stay readable after the logger took it.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().expect("buffer").clone();
            String::from_utf8(bytes).expect("utf-8").lines().map(str::to_string).collect()
        }
    }

    fn logger(verbosity: Verbosity, format: LogFormat) -> (Logger, Buffer, Buffer) {
        let (out, err) = (Buffer::default(), Buffer::default());
        let logger =
            Logger::new(3000, verbosity, format).with_writers(Box::new(out.clone()), Box::new(err.clone()));
        (logger, out, err)
    }

    /// Checks `YYYY-MM-DDTHH:MM:SS.mmmZ` digit by digit.
    fn is_timestamp(ts: &str) -> bool {
        let pattern = "dddd-dd-ddTdd:dd:dd.dddZ";
        ts.len() == pattern.len()
            && ts
                .bytes()
                .zip(pattern.bytes())
                .all(|(c, p)| if p == b'd' { c.is_ascii_digit() } else { c == p })
    }

    #[test]
    fn known_dates() {
        let known = [
            (0, (1970, 1, 1)),
            (-1, (1969, 12, 31)),
            (11_016, (2000, 2, 29)),
            (11_017, (2000, 3, 1)),
            (19_782, (2024, 2, 29)),
            (47_540, (2100, 2, 28)),
            (47_541, (2100, 3, 1)),
            (-25_508, (1900, 3, 1)),
            (20_778, (2026, 11, 21)),
            (-719_468, (0, 3, 1)),
        ];
        for (days, (y, m, d)) in known {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn civil_round_trip_over_centuries() {
        let mut previous = civil_from_days(-800_000);
        for days in -799_999..800_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            assert!((y, m, d) > previous, "{days}");
            previous = (y, m, d);
        }
    }

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_301_204_123);
        assert_eq!(utc_timestamp(t), "2026-11-21T22:46:44.123Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(11_016 * 86_400 + 86_399) + Duration::from_millis(999);
        assert_eq!(utc_timestamp(leap), "2000-02-29T23:59:59.999Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH - Duration::from_millis(1)), "1969-12-31T23:59:59.999Z");
        assert!(is_timestamp(&utc_timestamp(SystemTime::now())));
    }

    #[test]
    fn text_lines_have_timestamp_level_and_node() {
        let (log, out, err) = logger(Verbosity::Normal, LogFormat::Text);
        log.info(format_args!("hello {}", 1));
        log.protocol(format_args!("send NOMINATE slot=1"));
        log.warn(format_args!("careful"));
        log.error(format_args!("broken"));
        let out = out.lines();
        let (ts, rest) = out[0].split_once(' ').expect("space");
        assert!(is_timestamp(ts), "{ts}");
        assert_eq!(rest, "INFO [3000] hello 1");
        assert!(out[1].ends_with(" PROTOCOL [3000] send NOMINATE slot=1"), "{}", out[1]);
        let err = err.lines();
        assert!(
            err[0].ends_with(" WARN [3000] careful") && err[1].ends_with(" ERROR [3000] broken"),
            "{err:?}"
        );
        assert_eq!((out.len(), err.len()), (2, 2));
    }

    #[test]
    fn json_lines_parse() {
        let (log, out, err) = logger(Verbosity::Normal, LogFormat::Json);
        log.slot_summary(12, 64, 1, Duration::from_micros(3_240));
        log.warn(format_args!("a \"quoted\"\nline"));
        let line: Value = serde_json::from_str(&out.lines()[0]).expect("json");
        assert_eq!(line["level"], "info");
        assert_eq!(line["node"], 3000);
        assert!(is_timestamp(line["ts"].as_str().expect("ts")));
        assert_eq!(
            line["msg"],
            "slot 12 decided: 64 requests, ballot counter 1, 3.2 ms from first nomination"
        );
        assert_eq!(
            (line["slot"].as_u64(), line["requests"].as_u64(), line["counter"].as_u64()),
            (Some(12), Some(64), Some(1))
        );
        assert_eq!(line["ms"].as_f64(), Some(3.24));
        let warning: Value = serde_json::from_str(&err.lines()[0]).expect("json");
        assert_eq!(
            (warning["level"].as_str(), warning["msg"].as_str()),
            (Some("warn"), Some("a \"quoted\"\nline"))
        );
    }

    #[test]
    fn verbosity_filters_levels() {
        let expected = [(Verbosity::Quiet, 1), (Verbosity::Normal, 2), (Verbosity::Verbose, 3)];
        for (verbosity, lines) in expected {
            let (log, out, err) = logger(verbosity, LogFormat::Text);
            log.slot_summary(1, 1, 1, Duration::from_millis(2));
            log.protocol(format_args!("recv PREPARE"));
            log.debug(format_args!("rejected"));
            log.warn(format_args!("warning"));
            log.error(format_args!("error"));
            assert_eq!(out.lines().len(), lines, "{verbosity:?}");
            assert_eq!(err.lines().len(), 2, "{verbosity:?}");
            assert!(out.lines()[0].contains("INFO [3000] slot 1 decided"));
        }
    }

    #[test]
    fn event_lines() {
        let (log, out, err) = logger(Verbosity::Quiet, LogFormat::Text);
        log.quorum_changed(false, &[3001], 3, 2);
        log.quorum_changed(true, &[3001, 3002, 3003], 3, 2);
        log.peers_silent(true, &[3002, 3003]);
        log.peers_silent(false, &[3002]);
        log.peers_silent(false, &[]);
        for done in [0, 4, 10] {
            log.catchup(3001, done, 10);
        }
        let err = err.lines();
        assert!(err[0].ends_with("WARN [3000] quorum lost (hearing 1 of 3 peers: 3001; need 2)"), "{err:?}");
        assert!(err[1].ends_with("WARN [3000] peers silent: 3002, 3003"), "{err:?}");
        let out = out.lines();
        assert!(
            out[0].ends_with("INFO [3000] quorum regained (hearing 3 of 3 peers: 3001, 3002, 3003)"),
            "{out:?}"
        );
        assert!(out[1].ends_with("INFO [3000] peers back: 3002"), "{out:?}");
        assert!(out[2].ends_with("catch-up started from 3001: 0/10 slots"), "{out:?}");
        assert!(out[3].ends_with("catch-up progress from 3001: 4/10 slots"), "{out:?}");
        assert!(out[4].ends_with("catch-up finished from 3001: 10/10 slots, caught up"), "{out:?}");
        assert_eq!((err.len(), out.len()), (2, 5));
    }

    #[test]
    fn dropped_datagrams_are_rate_limited_and_counted() {
        let metrics = Arc::new(Metrics::new());
        let (mut log, _, err) = logger(Verbosity::Quiet, LogFormat::Text);
        log.drop_window = Duration::from_millis(200);
        let log = log.with_metrics(metrics.clone());
        let from = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
        for i in 0..12 {
            log.dropped("malformed", from, format_args!("junk {i}"));
        }
        log.dropped("authentication", from, format_args!("bad tag"));
        std::thread::sleep(Duration::from_millis(250));
        log.dropped("malformed", from, format_args!("junk again"));
        let lines = err.lines();
        let shown = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
        assert_eq!(shown("(malformed, "), 6, "{lines:#?}");
        assert!(
            lines[0].ends_with("dropped datagram from 127.0.0.1:9 (malformed, 1 so far): junk 0"),
            "{lines:#?}"
        );
        assert!(lines[4].contains("(malformed, 5 so far): junk 4"), "{lines:#?}");
        assert!(lines[5].contains("(authentication, 1 so far)"), "{lines:#?}");
        assert!(lines[6].ends_with("(7 more dropped datagrams (malformed) not shown)"), "{lines:#?}");
        assert!(lines[7].contains("(malformed, 13 so far): junk again"), "{lines:#?}");
        assert_eq!(metrics.datagrams_dropped.get("malformed"), 13);
        assert_eq!(metrics.authentication_failures.get(), 1);
    }

    /// A sink whose reader is gone: the stdin of a child that has already exited.
    fn closed_pipe() -> Box<dyn Write + Send> {
        let mut child = Command::new("sh")
            .args(["-c", "exit 0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn sh");
        let stdin = child.stdin.take().expect("piped stdin");
        child.wait().expect("child exits");
        Box::new(stdin)
    }

    /// Writing to a pipe nobody reads returns EPIPE (Rust ignores SIGPIPE, else this test
    /// process would die here); the logger notes it once on stderr and stops using stdout.
    #[test]
    fn a_closed_stdout_is_survived() {
        let err = Buffer::default();
        let log = Logger::new(3000, Verbosity::Normal, LogFormat::Text)
            .with_writers(closed_pipe(), Box::new(err.clone()));
        log.info(format_args!("first"));
        assert!(log.stdout_failed());
        assert!(!log.enabled(Level::Info) && log.enabled(Level::Warn));
        for i in 0..100 {
            log.protocol(format_args!("line {i}"));
        }
        log.slot_summary(1, 1, 1, Duration::from_millis(1));
        log.error(format_args!("still here"));
        assert_eq!(log.write_errors(), 1);
        let lines = err.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("WARN [3000] stdout is closed or failing"), "{lines:?}");
        assert!(lines[1].ends_with("ERROR [3000] still here"));
    }
}
