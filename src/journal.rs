//! The SCP journal: the node's own statements, written before they are sent.
//!
//! SCP is only safe if a node never contradicts what it said: after a crash it must not
//! vote or accept anything its earlier statements rule out. And a restarted node must
//! carry on where it stopped and still answer laggards about the slots it decided. So
//! the protocol thread appends every statement it broadcasts to this journal before
//! sending it; on restart the latest statement of each kind (nomination, ballot) of each
//! slot is handed to [`crate::scp::Node::restore`]:
//!
//! * **PREPARE and CONFIRM bind the node** (they vote or accept to commit or abort
//!   ballots): a batch of statements holding one is synced (`fdatasync`) before anything
//!   of it is sent, one sync for everything one burst of input produced.
//! * **NOMINATE and EXTERNALIZE bind nothing new** (nomination statements never
//!   contradict each other, and an EXTERNALIZE repeats a decision the synced ledger
//!   already holds): they are written, not synced, and become durable with the next sync
//!   (usually the next PREPARE, a moment later). A killed process loses nothing written;
//!   a machine crash may lose the newest of them, which costs liveness only: the node
//!   cannot answer laggards about that one slot from SCP (ledger catch-up still can), or
//!   its next NOMINATE is ignored until it covers the lost one. So the journal adds no
//!   sync to a slot's critical path beyond the PREPARE/CONFIRM ones.
//!
//! **Values by hash.** A statement names its values by the digest of their content (see
//! [`crate::server`]'s values); the content of each value our statements name is written
//! to the journal once, on a line of its own (`{"content":"<base64>"}`) before the first
//! statement naming it, so a restarted node still holds what it voted for.
//!
//! File `assignment3_<port>.scp`: one JSON statement (or value content) per line. A torn last line (a crash
//! in mid-write) is ignored, and nothing after it can exist; a bad line elsewhere means the
//! file was damaged, and the node refuses to start rather than forget what it said. The
//! journal is rewritten (atomically) with only the statements still needed once it grows:
//! those of undecided slots and the EXTERNALIZE of the recently decided ones.

use crate::fsio::IoFailure;
use crate::scp::{Pledges, SlotIndex, Statement};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Rewrite the journal once it exceeds this many bytes, and four times what the last
/// rewrite kept (so that a large kept window is not rewritten on every slot).
const COMPACT_AT: u64 = 1 << 20;
/// The journal is rewritten once it has grown to this multiple of what was last kept.
const GROWTH: u64 = 4;

/// A journal line holding the content of a value our statements name.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ContentLine {
    /// The content, base64.
    content: String,
}

/// Appends the line of one value's content.
fn write_content(buf: &mut Vec<u8>, content: &[u8]) {
    let line = ContentLine { content: crate::hash::base64(content) };
    serde_json::to_writer(&mut *buf, &line).expect("content lines serialize");
    buf.push(b'\n');
}

/// The latest statement of each slot and kind: key (slot, whether it is a ballot
/// statement), so a slot has at most one NOMINATE and one PREPARE/CONFIRM/EXTERNALIZE.
pub type Latest = BTreeMap<(SlotIndex, bool), Statement>;

/// Where a statement goes in [`Latest`].
fn key(st: &Statement) -> (SlotIndex, bool) {
    (st.slot, st.pledges.is_ballot())
}

/// Does the statement bind the node (PREPARE, CONFIRM), so that it must be durable
/// before it is sent?
fn binds(st: &Statement) -> bool {
    matches!(st.pledges, Pledges::Prepare { .. } | Pledges::Confirm { .. })
}

/// Why the journal could not be read or written.
#[derive(Debug)]
pub enum JournalError {
    /// The operating system refused an operation.
    Io(IoFailure),
    /// A line other than the last is not a statement of this node.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
    },
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Io(e) => e.fmt(f),
            JournalError::Corrupt { path, line } => write!(
                f,
                "SCP journal {} is damaged at line {line}; the node cannot know what it said before",
                path.display()
            ),
        }
    }
}

impl std::error::Error for JournalError {}

/// The append-only journal of our own statements.
pub struct Journal {
    path: PathBuf,
    file: File,
    bytes: u64,
    /// Bytes the last rewrite kept.
    kept: u64,
    /// Value contents read at opening, until taken.
    contents: Vec<Vec<u8>>,
}

impl Journal {
    /// The journal's file name for a node on `port`.
    pub fn file_name(port: u16) -> String {
        format!("assignment3_{port}.scp")
    }

    /// Opens (or creates) the journal and returns the latest statement of each slot and
    /// kind.
    pub fn open(dir: &Path, port: u16) -> Result<(Journal, Latest), JournalError> {
        let path = dir.join(Self::file_name(port));
        let io_err =
            |operation, source| JournalError::Io(IoFailure { operation, path: path.clone(), source });
        let text = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err("read", e)),
        };
        let (latest, contents, torn) = parse(&path, &text)?;
        fs::create_dir_all(dir).map_err(|e| io_err("create the directory of", e))?;
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io_err("open", e))?;
        let mut journal = Journal { path, file, bytes: text.len() as u64, kept: 0, contents };
        crate::fsio::note_synced(&journal.path, journal.bytes);
        // Drop a torn tail now, so that the next append starts on a fresh line.
        if torn {
            let contents: Vec<Arc<[u8]>> = journal.contents.iter().map(|c| c.as_slice().into()).collect();
            journal.rewrite(latest.values(), &contents)?;
        }
        Ok((journal, latest))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value contents the journal held when it was opened (given once).
    pub fn take_contents(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.contents)
    }

    /// Appends the value `contents`, then `statements`, in one write; syncs them to disk
    /// (with everything written before) if one of the statements binds the node (PREPARE
    /// or CONFIRM, see the module doc). Returns whether it synced.
    pub fn record<'a>(
        &mut self,
        contents: &[Arc<[u8]>],
        statements: impl IntoIterator<Item = &'a Statement>,
    ) -> Result<bool, JournalError> {
        let mut buf = Vec::new();
        for content in contents {
            write_content(&mut buf, content);
        }
        let mut sync = false;
        for st in statements {
            serde_json::to_writer(&mut buf, st).expect("statements serialize");
            buf.push(b'\n');
            sync |= binds(st);
        }
        if buf.is_empty() {
            return Ok(false);
        }
        let io_err =
            |operation, source| JournalError::Io(IoFailure { operation, path: self.path.clone(), source });
        self.file.write_all(&buf).map_err(|e| io_err("append to", e))?;
        self.bytes += buf.len() as u64;
        if sync {
            self.file.sync_data().map_err(|e| io_err("sync", e))?;
            crate::fsio::note_synced(&self.path, self.bytes);
        }
        Ok(sync)
    }

    /// Has the journal grown enough to be worth compacting?
    pub fn is_large(&self) -> bool {
        self.bytes >= COMPACT_AT.max(GROWTH.saturating_mul(self.kept))
    }

    /// Once the journal is large, rewrites it with only `keep` (the statements of slots
    /// still undecided, and the EXTERNALIZE of the decided slots still answered) and the
    /// value `contents` they need. Returns whether it rewrote.
    pub fn compact_if_large<'a>(
        &mut self,
        keep: impl IntoIterator<Item = &'a Statement>,
        contents: &[Arc<[u8]>],
    ) -> Result<bool, JournalError> {
        if !self.is_large() {
            return Ok(false);
        }
        self.rewrite(keep, contents).map(|()| true)
    }

    /// Atomically replaces the journal with `contents` and `keep`: temp file, fsync,
    /// rename, fsync dir.
    fn rewrite<'a>(
        &mut self,
        keep: impl IntoIterator<Item = &'a Statement>,
        contents: &[Arc<[u8]>],
    ) -> Result<(), JournalError> {
        let io_err =
            |operation, source| JournalError::Io(IoFailure { operation, path: self.path.clone(), source });
        let mut buf = Vec::new();
        for content in contents {
            write_content(&mut buf, content);
        }
        for st in keep {
            serde_json::to_writer(&mut buf, st).expect("statements serialize");
            buf.push(b'\n');
        }
        let tmp = self.path.with_extension("scp.tmp");
        let mut f = File::create(&tmp).map_err(|e| io_err("create a temporary file for", e))?;
        f.write_all(&buf).and_then(|()| f.sync_all()).map_err(|e| io_err("write", e))?;
        fs::rename(&tmp, &self.path).map_err(|e| io_err("replace", e))?;
        if let Some(dir) = self.path.parent() {
            crate::fsio::sync_dir(dir).map_err(|e| io_err("sync the directory of", e))?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path).map_err(|e| io_err("reopen", e))?;
        self.bytes = buf.len() as u64;
        self.kept = self.bytes;
        crate::fsio::note_synced(&self.path, self.bytes);
        Ok(())
    }
}

/// The latest statement per slot and kind, the value contents, and whether a torn tail
/// was skipped; a bad line is tolerated only at the very end.
fn parse(path: &Path, text: &[u8]) -> Result<(Latest, Vec<Vec<u8>>, bool), JournalError> {
    let mut latest = Latest::new();
    let mut contents = Vec::new();
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    let complete = lines.len().saturating_sub(1); // the part after the last '\n' is unfinished
    for (i, line) in lines.iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        let content = || {
            let line = serde_json::from_slice::<ContentLine>(line).ok()?;
            crate::hash::unbase64(&line.content)
        };
        match serde_json::from_slice::<Statement>(line) {
            Ok(st) if i < complete => {
                latest.insert(key(&st), st);
            }
            Err(_) if i < complete && line.starts_with(b"{\"content\"") => match content() {
                Some(bytes) => contents.push(bytes),
                None if i + 1 >= complete => return Ok((latest, contents, true)),
                None => return Err(JournalError::Corrupt { path: path.to_path_buf(), line: i + 1 }),
            },
            _ if i + 1 >= complete => return Ok((latest, contents, true)), // torn: the last line or the unfinished tail
            _ => return Err(JournalError::Corrupt { path: path.to_path_buf(), line: i + 1 }),
        }
    }
    Ok((latest, contents, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::{NodeId, QuorumSet};
    use crate::scp::{Ballot, Pledges, Value};

    fn st(slot: SlotIndex, counter: u32) -> Statement {
        Statement {
            node: NodeId(1),
            slot,
            quorum_set: QuorumSet::new(1, [NodeId(1)]),
            pledges: Pledges::Prepare {
                ballot: Ballot::new(counter, Value::new(*b"v")),
                prepared: None,
                prepared_prime: None,
                n_c: 0,
                n_h: 0,
            },
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        crate::fsio::fresh_test_dir(&format!("journal-{tag}"))
    }

    #[test]
    fn latest_statement_per_slot_survives_reopening() {
        let dir = temp_dir("reopen");
        let (mut j, latest) = Journal::open(&dir, 7).expect("open");
        assert!(latest.is_empty());
        j.record(&[], &[st(1, 1), st(2, 1)]).expect("record");
        j.record(&[], &[st(1, 2)]).expect("record");
        drop(j);
        let (_, latest) = Journal::open(&dir, 7).expect("reopen");
        assert_eq!(latest.into_values().collect::<Vec<_>>(), vec![st(1, 2), st(2, 1)]);
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_torn_tail_is_dropped_and_damage_elsewhere_refused() {
        let dir = temp_dir("torn");
        let (mut j, _) = Journal::open(&dir, 7).expect("open");
        j.record(&[], &[st(1, 1), st(1, 2)]).expect("record");
        let path = j.path().to_path_buf();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"garbage\n{\"node\":1,\"slot\":1,\"quor").expect("write");
        drop(f);
        let (mut j, latest) = Journal::open(&dir, 7).expect("a torn tail is tolerated");
        assert_eq!(latest[&(1, true)], st(1, 2));
        j.record(&[], &[st(1, 3)]).expect("appends cleanly after the repair");
        drop(j);
        assert_eq!(Journal::open(&dir, 7).expect("reopen").1[&(1, true)], st(1, 3));
        let text = fs::read_to_string(&path).expect("read");
        fs::write(&path, format!("garbage\n{text}")).expect("write");
        assert!(matches!(Journal::open(&dir, 7), Err(JournalError::Corrupt { line: 1, .. })));
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn value_contents_are_kept_with_the_statements_and_a_torn_one_dropped() {
        let dir = temp_dir("contents");
        let (mut j, _) = Journal::open(&dir, 7).expect("open");
        let (a, b): (Arc<[u8]>, Arc<[u8]>) = (b"batch a".as_slice().into(), b"batch b".as_slice().into());
        j.record(std::slice::from_ref(&a), &[st(1, 1)]).expect("record");
        j.record(&[b], &[st(2, 1)]).expect("record");
        let path = j.path().to_path_buf();
        drop(j);
        let (mut j, latest) = Journal::open(&dir, 7).expect("reopen");
        assert_eq!(latest.len(), 2);
        assert_eq!(j.take_contents(), vec![b"batch a".to_vec(), b"batch b".to_vec()]);
        assert!(j.take_contents().is_empty(), "given once");
        j.bytes = COMPACT_AT;
        assert!(j.compact_if_large(&[st(1, 1)], &[a]).expect("compact"));
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"content\":\"YmF0Y2gg").expect("write");
        drop(f);
        let (mut j, latest) = Journal::open(&dir, 7).expect("a torn content line is a torn tail");
        assert_eq!(latest.into_values().collect::<Vec<_>>(), vec![st(1, 1)]);
        assert_eq!(j.take_contents(), vec![b"batch a".to_vec()]);
        fs::remove_dir_all(&dir).ok();
    }

    fn nominate(slot: SlotIndex, values: &[&[u8]]) -> Statement {
        let voted = values.iter().map(|v| Value::new(v.to_vec())).collect();
        Statement { pledges: Pledges::Nominate { voted, accepted: Default::default() }, ..st(slot, 1) }
    }

    fn externalize(slot: SlotIndex) -> Statement {
        let commit = Ballot::new(2, Value::new(*b"v"));
        Statement { pledges: Pledges::Externalize { commit, n_h: 3 }, ..st(slot, 1) }
    }

    #[test]
    fn each_slot_keeps_its_latest_nomination_and_ballot_statement() {
        let dir = temp_dir("kinds");
        let (mut j, _) = Journal::open(&dir, 7).expect("open");
        assert!(!j.record(&[], &[nominate(1, &[b"a"])]).expect("record"), "NOMINATE alone is not synced");
        assert!(j.record(&[], &[nominate(1, &[b"a", b"b"]), st(1, 1)]).expect("record"), "PREPARE is");
        assert!(!j.record(&[], &[externalize(1), nominate(2, &[b"c"])]).expect("record"));
        drop(j);
        let latest = Journal::open(&dir, 7).expect("reopen").1;
        let expected = [
            ((1, false), nominate(1, &[b"a", b"b"])),
            ((1, true), externalize(1)),
            ((2, false), nominate(2, &[b"c"])),
        ];
        assert_eq!(latest, expected.into_iter().collect());
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn compaction_waits_for_the_journal_to_outgrow_what_it_keeps() {
        let dir = temp_dir("growth");
        let (mut j, _) = Journal::open(&dir, 7).expect("open");
        j.bytes = COMPACT_AT;
        let keep: Vec<Statement> = (1..=64).map(externalize).collect();
        j.kept = COMPACT_AT; // as if the kept window itself were 1 MiB
        assert!(!j.is_large());
        j.bytes = GROWTH * COMPACT_AT;
        assert!(j.is_large());
        j.compact_if_large(&keep, &[]).expect("compact");
        assert_eq!(j.kept, j.bytes);
        assert!(!j.is_large());
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn compaction_keeps_only_what_is_asked() {
        let dir = temp_dir("compact");
        let (mut j, _) = Journal::open(&dir, 7).expect("open");
        j.bytes = COMPACT_AT;
        j.record(&[], &[st(1, 1), st(2, 1)]).expect("record");
        j.compact_if_large(&[st(2, 1)], &[]).expect("compact");
        drop(j);
        assert_eq!(
            Journal::open(&dir, 7).expect("reopen").1.into_values().collect::<Vec<_>>(),
            vec![st(2, 1)]
        );
        fs::remove_dir_all(&dir).ok();
    }
}
