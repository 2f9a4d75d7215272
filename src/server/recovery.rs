//! Start-up: rebuild the wallet from the ledger, reconcile the database file with it,
//! and read back the SCP journal.
//!
//! The ledger is the durable record; the database file is its projection. Replaying the
//! ledger rebuilds the balances and the reply cache (so exactly-once survives restarts).
//! A database file one slot behind the ledger is the normal trace of a crash between the
//! two writes and is rolled forward. Any other difference (a damaged or edited file) is
//! set aside as `<name>.db.bad-<unix time>` and the file rewritten from the ledger: nothing
//! is lost and the node never starts empty over existing data. A missing database is
//! simply rebuilt. A database with entries but
//! no ledger cannot be checked, and the node refuses to start on it.

use super::ServerError;
use crate::checkpoint::{self, Checkpoint, CheckpointError};
use crate::fsio::IoFailure;
use crate::hash::{hex, sha256, Digest};
use crate::journal::Journal;
use crate::ledger::{Ledger, Recovery};
use crate::scp::{Pledges, Statement};
use crate::store::{Store, StoreError};
use crate::wallet::{Amount, Image, Key, Wallet};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What start-up recovered.
pub(super) struct Recovered {
    pub wallet: Wallet,
    pub store: Store,
    pub ledger: Ledger,
    pub journal: Journal,
    /// Our own last statements (NOMINATE and ballot) of the slots beyond the ledger, and
    /// our EXTERNALIZE of decided slots, in slot order.
    pub own: Vec<Statement>,
    /// The slot of the checkpoint the wallet was rebuilt from (0: none, the whole ledger
    /// was replayed).
    pub checkpointed: u64,
    /// How the wallet was rebuilt, for the start-up line.
    pub rebuilt: Rebuilt,
    /// Lines worth telling the operator.
    pub notes: Vec<String>,
}

/// The wallet rebuilt from the ledger (from a checkpoint, if one matched), with what
/// reconciling the database file needs.
struct Replayed {
    wallet: Wallet,
    /// The wallets before the last entry was applied, if it was replayed.
    before_last: Option<Image>,
    /// The slot and database digest of the checkpoint used.
    checkpoint: Option<(u64, Option<Digest>)>,
}

/// Rebuilds the wallet (obeying `operators`' reconfigurations): from `checkpoint` and the
/// entries after it if the checkpoint describes this ledger, else from the whole ledger.
fn replay(
    ledger: &Ledger,
    operators: &BTreeSet<u64>,
    checkpoint: Option<Checkpoint>,
    notes: &mut Vec<String>,
) -> Result<Replayed, ServerError> {
    let (mut wallet, mut used) = (Wallet::new(), None);
    if let Some(found) = checkpoint {
        match usable(ledger, found) {
            Ok((restored, slot, database)) => (wallet, used) = (restored, Some((slot, database))),
            Err(why) => notes.push(format!("checkpoint not used ({why}): replaying the whole ledger")),
        }
    }
    wallet.set_operators(operators.clone());
    let mut before_last = None;
    let last = ledger.len();
    let first = used.map_or(1, |(slot, _)| slot + 1);
    ledger
        .replay_from(first, |entry| {
            if entry.slot == last {
                before_last = Some(wallet.image());
            }
            wallet.apply_batch(&entry.batch);
        })
        .map_err(ServerError::Ledger)?;
    Ok(Replayed { wallet, before_last, checkpoint: used })
}

/// The wallet of `checkpoint` if it describes this ledger's history: the ledger holds its
/// slot with its hash, and its image is sound.
fn usable(ledger: &Ledger, checkpoint: Checkpoint) -> Result<(Wallet, u64, Option<Digest>), Unusable> {
    let slot = checkpoint.slot;
    if slot == 0 || slot > ledger.len() {
        return Err(Unusable::OutOfRange { slot, len: ledger.len() });
    }
    if ledger.hash_of(slot).map_err(Unusable::Ledger)? != checkpoint.ledger_hash {
        return Err(Unusable::Foreign { slot });
    }
    let wallet = Wallet::from_image(checkpoint.image).map_err(Unusable::Image)?;
    if wallet.session_limit() != Wallet::new().session_limit() {
        return Err(Unusable::SessionLimit);
    }
    Ok((wallet, slot, checkpoint.database_sha256))
}

/// Why a readable checkpoint is not used.
enum Unusable {
    /// Its slot is 0 or beyond the ledger's last.
    OutOfRange { slot: u64, len: u64 },
    /// The ledger has another hash at its slot: it is of another history.
    Foreign { slot: u64 },
    /// The ledger could not be read at its slot.
    Ledger(crate::ledger::LedgerError),
    /// Its image is not one a wallet could have produced.
    Image(crate::wallet::WalletError),
    /// Written with another session limit than this build's.
    SessionLimit,
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::OutOfRange { slot, len } => {
                write!(f, "it is of slot {slot}, the ledger ends at slot {len}")
            }
            Unusable::Foreign { slot } => write!(f, "its slot {slot} has another hash than the ledger's"),
            Unusable::Ledger(e) => write!(f, "{e}"),
            Unusable::Image(e) => write!(f, "{e}"),
            Unusable::SessionLimit => write!(f, "it was written with another session limit"),
        }
    }
}

/// The checkpoint of the node, if there is a readable one (a damaged one is a note).
fn load_checkpoint(
    dir: &Path,
    port: u16,
    notes: &mut Vec<String>,
) -> Result<Option<Checkpoint>, ServerError> {
    match checkpoint::load(dir, port) {
        Ok(found) => Ok(found),
        Err(e @ CheckpointError::Io(_)) => Err(ServerError::Checkpoint(e)),
        Err(e) => {
            notes.push(format!("{e}: replaying the whole ledger"));
            Ok(None)
        }
    }
}

/// How start-up rebuilt the wallet.
pub(super) struct Rebuilt {
    /// The slot of the checkpoint used, if any.
    pub checkpoint: Option<u64>,
    /// Ledger entries replayed (after the checkpoint, or all).
    pub replayed: u64,
    /// How long recovery took, reading and checking every file included.
    pub took: Duration,
}

impl std::fmt::Display for Rebuilt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let took = self.took.as_secs_f64();
        match self.checkpoint {
            Some(slot) => write!(
                f,
                "state rebuilt in {took:.2} s from the checkpoint of slot {slot} and the {} ledger entries after it",
                self.replayed
            ),
            None => write!(f, "state rebuilt in {took:.2} s from the whole ledger ({} entries)", self.replayed),
        }
    }
}

/// Opens everything under `dir` for the node on `port` and makes it consistent; the
/// wallet obeys `operators`' reconfigurations ([`Wallet::set_operators`]).
pub(super) fn recover(dir: &Path, port: u16, operators: &BTreeSet<u64>) -> Result<Recovered, ServerError> {
    let started = Instant::now();
    let mut notes = Vec::new();
    let checkpoint = load_checkpoint(dir, port, &mut notes)?;
    let covered = checkpoint.as_ref().map_or(0, |c| c.slot);
    let (ledger, recovery) = Ledger::open_covered(dir, port, covered).map_err(ServerError::Ledger)?;
    if let Recovery::DroppedTornTail { bytes, problem } = recovery {
        notes.push(format!("ledger: dropped a torn last entry ({bytes} bytes: {problem}), left by a crash"));
    }
    let replayed = replay(&ledger, operators, checkpoint, &mut notes)?;
    let store = Store::new(dir, port);
    reconcile(&store, &ledger, &replayed, &mut notes)?;
    let (journal, latest) = Journal::open(dir, port).map_err(ServerError::Journal)?;
    // Undecided slots resume from their statements; decided ones keep only an EXTERNALIZE
    // (to answer laggards); anything else of theirs is history.
    let decided = ledger.len();
    let own = latest
        .into_values()
        .filter(|st| st.slot > decided || matches!(st.pledges, Pledges::Externalize { .. }))
        .collect();
    let checkpointed = replayed.checkpoint.map_or(0, |(slot, _)| slot);
    let checkpoint = replayed.checkpoint.map(|(slot, _)| slot);
    let replayed_entries = ledger.len() - checkpointed;
    let rebuilt = Rebuilt { checkpoint, replayed: replayed_entries, took: started.elapsed() };
    Ok(Recovered { wallet: replayed.wallet, store, ledger, journal, own, checkpointed, rebuilt, notes })
}

/// Makes the database file the projection of the replayed wallet. It is compared byte
/// for byte first (the normal case costs one encoding and one read, no parse); a file
/// that differs is recognised as the projection of the slot before the last (a crash
/// between the ledger append and the file write), as the database written with the
/// checkpoint (a large database, written at a bounded pace), as the same wallets in
/// another JSON layout, or else set aside; then it is rewritten.
fn reconcile(
    store: &Store,
    ledger: &Ledger,
    replayed: &Replayed,
    notes: &mut Vec<String>,
) -> Result<(), ServerError> {
    let wallet = &replayed.wallet;
    let projection = crate::store::encode(wallet.entries());
    let on_disk = match std::fs::read(store.path()) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(ServerError::Store(StoreError::Io(IoFailure::of("read", store.path())(e)))),
    };
    let Some(bytes) = on_disk else {
        if !wallet.is_empty() {
            notes.push(format!("database {} was missing: rebuilt from the ledger", store.path().display()));
            store.save(wallet.entries()).map_err(ServerError::Store)?;
        }
        return Ok(());
    };
    if bytes == projection.as_bytes() {
        return Ok(());
    }
    // The normal traces of a crash, recognised without parsing the file.
    if replayed.checkpoint.is_some_and(|(_, db)| db == Some(sha256(&bytes))) {
        let (slot, _) = replayed.checkpoint.unwrap_or_default();
        notes.push(format!(
            "database was the one written with the checkpoint of slot {slot}: rolled forward to slot {}",
            ledger.len()
        ));
        return store.save_encoded(&projection).map_err(ServerError::Store);
    }
    if replayed.before_last.as_ref().is_some_and(|b| crate::store::encode(b.entries()).as_bytes() == bytes) {
        notes
            .push(format!("database was one slot behind the ledger (slot {}): rolled forward", ledger.len()));
        return store.save_encoded(&projection).map_err(ServerError::Store);
    }
    let found = crate::store::decode(&bytes)
        .map_err(|reason| StoreError::Corrupt { path: store.path().to_path_buf(), reason });
    match found {
        Ok(found) if same(&found, wallet.entries()) => return Ok(()),
        Ok(found) if ledger.is_empty() => {
            return Err(ServerError::DatabaseWithoutLedger {
                path: store.path().to_path_buf(),
                entries: found.len(),
            })
        }
        Err(e) if ledger.is_empty() => return Err(ServerError::Store(e)),
        Ok(_) => set_aside(
            store,
            "differed from the ledger (as after a power loss: a database of at most 1,000 wallets is \
             written unsynced after every slot)",
            notes,
        )?,
        Err(e) => set_aside(store, &e.to_string(), notes)?,
    }
    store.save_encoded(&projection).map_err(ServerError::Store)
}

/// Whether `entries` are `other`'s names and balances, in order.
fn same<'a>(entries: &[(Key, Amount)], other: impl Iterator<Item = (&'a Key, Amount)>) -> bool {
    entries.iter().map(|(k, a)| (k.as_str(), *a)).eq(other.map(|(k, a)| (k.as_str(), a)))
}

/// Keeps the old database file as `<name>.bad-<unix time>`.
fn set_aside(store: &Store, why: &str, notes: &mut Vec<String>) -> Result<(), ServerError> {
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut aside = store.path().as_os_str().to_owned();
    aside.push(format!(".bad-{stamp}"));
    if store.path().exists() {
        std::fs::rename(store.path(), &aside)
            .map_err(|e| ServerError::Store(StoreError::Io(IoFailure::of("set aside", store.path())(e))))?;
    }
    notes.push(format!(
        "database {} {why}: kept as {} and rewritten from the ledger",
        store.path().display(),
        Path::new(&aside).display()
    ));
    Ok(())
}

/// The outcome of `fba_server --verify`.
pub struct Verified {
    /// Slots in the ledger.
    pub slots: u64,
    /// The hash of the last entry.
    pub last_hash: Digest,
    /// Wallets in the projection.
    pub wallets: usize,
    /// What was found of the checkpoint.
    pub checkpoint: String,
}

impl std::fmt::Display for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ledger OK: {} slots, hash chain intact (last {}); database matches ({} wallets); {}",
            self.slots,
            &hex(&self.last_hash)[..16],
            self.wallets,
            self.checkpoint
        )
    }
}

/// Checks a node's ledger (hash chain, slot order, batches) and its database against each
/// other without changing either (beyond dropping a torn ledger tail, as start-up would).
/// A directory without this node's ledger is an error, and nothing is created in it.
pub fn verify(dir: &Path, port: u16) -> Result<Verified, ServerError> {
    let path = dir.join(Ledger::file_name(port));
    if let Err(source) = std::fs::metadata(&path) {
        let source = match source.kind() {
            std::io::ErrorKind::NotFound => std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("it does not exist (no node on port {port} has run in {})", dir.display()),
            ),
            _ => source,
        };
        let failure = IoFailure { operation: "verify", path, source };
        return Err(ServerError::Ledger(crate::ledger::LedgerError::Io(failure)));
    }
    let (ledger, _) = Ledger::open(dir, port).map_err(ServerError::Ledger)?;
    let mut notes = Vec::new();
    let checkpoint = load_checkpoint(dir, port, &mut notes)?;
    let at = checkpoint.as_ref().map_or(0, |c| c.slot);
    // Who may reconfigure does not change a balance: no operators needed here. The whole
    // ledger is replayed (no checkpoint trusted), and the wallet at the checkpoint's slot
    // kept to compare.
    let (mut wallet, mut at_checkpoint) = (Wallet::new(), None);
    ledger
        .replay(|entry| {
            wallet.apply_batch(&entry.batch);
            if entry.slot == at {
                at_checkpoint = Some(wallet.image());
            }
        })
        .map_err(ServerError::Ledger)?;
    let checkpoint = match (checkpoint, at_checkpoint) {
        (None, _) => notes.pop().unwrap_or_else(|| "no checkpoint".to_owned()),
        (Some(found), Some(replayed)) => check_checkpoint(dir, port, &ledger, found, replayed)?,
        (Some(found), None) => format!("checkpoint of slot {} is beyond the ledger: not used", found.slot),
    };
    let store = Store::new(dir, port);
    let found = store.load().map_err(ServerError::Store)?;
    if !found.iter().map(|(k, a)| (k, *a)).eq(wallet.entries()) {
        return Err(ServerError::Mismatch {
            db: store.path().to_path_buf(),
            ledger: ledger.path().to_path_buf(),
        });
    }
    Ok(Verified { slots: ledger.len(), last_hash: ledger.last_hash(), wallets: wallet.len(), checkpoint })
}

/// Compares a checkpoint with the wallet replayed up to its slot: a checkpoint of another
/// history is reported (start-up ignores it), one that differs from the replay is an error.
fn check_checkpoint(
    dir: &Path,
    port: u16,
    ledger: &Ledger,
    found: Checkpoint,
    replayed: Image,
) -> Result<String, ServerError> {
    let slot = found.slot;
    if ledger.hash_of(slot).map_err(ServerError::Ledger)? != found.ledger_hash {
        return Ok(format!("checkpoint of slot {slot} is of another history: not used"));
    }
    let theirs = Wallet::from_image(found.image).ok();
    if theirs.is_none() || theirs != Wallet::from_image(replayed).ok() {
        return Err(ServerError::CheckpointMismatch { path: dir.join(checkpoint::file_name(port)), slot });
    }
    Ok(format!("checkpoint of slot {slot} matches"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wallet::{Batch, Op, Request, TEXT_CLIENT_BIT};

    const PORT: u16 = 5301;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fba-recovery-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn deposit(slot: u64, key: &str) -> Batch {
        let op = Op::Deposit { key: Key::new(key).unwrap(), amount: "$1".parse().unwrap() };
        Batch::new(vec![Request::new(TEXT_CLIENT_BIT | 1, slot, op)])
    }

    /// A ledger of `slots` deposits of $1 into `x`; returns the wallet after `at` and the
    /// ledger's hash of entry `at`.
    fn ledger(dir: &Path, slots: u64, at: u64) -> (Wallet, Digest) {
        let (mut ledger, _) = Ledger::open(dir, PORT).unwrap();
        let (mut wallet, mut hash) = (Wallet::new(), [0; 32]);
        for slot in 1..=slots {
            let h = ledger.append(slot, &deposit(slot, "x")).unwrap();
            if slot <= at {
                wallet.apply_batch(&deposit(slot, "x"));
                hash = h;
            }
        }
        (wallet, hash)
    }

    /// The checkpoint of slot `slot` holding `wallet` plus a `marker` wallet no ledger
    /// entry creates, so a recovered wallet shows whether the checkpoint was used.
    fn marked(mut wallet: Wallet, slot: u64, ledger_hash: Digest) -> Checkpoint {
        let op = Op::Set { key: Key::new("marker").unwrap(), amount: "$7".parse().unwrap() };
        wallet.apply(&Request::new(TEXT_CLIENT_BIT | 2, 1, op));
        Checkpoint { slot, ledger_hash, database_sha256: None, image: wallet.image() }
    }

    fn balances(wallet: &Wallet) -> Vec<(String, String)> {
        wallet.entries().map(|(k, a)| (k.to_string(), a.to_string())).collect()
    }

    #[test]
    fn a_matching_checkpoint_is_used_and_only_the_ledger_after_it_replayed() {
        let dir = scratch("used");
        let (wallet, hash) = ledger(&dir, 5, 3);
        checkpoint::write(&dir, PORT, &marked(wallet, 3, hash)).unwrap();
        let recovered = recover(&dir, PORT, &BTreeSet::new()).unwrap();
        assert_eq!(balances(&recovered.wallet), [("x".into(), "$5".into()), ("marker".into(), "$7".into())]);
        assert_eq!((recovered.rebuilt.checkpoint, recovered.rebuilt.replayed), (Some(3), 2));
        assert_eq!(recovered.checkpointed, 3);
        assert!(recovered.notes.iter().all(|n| n.contains("missing")), "{:?}", recovered.notes);
        drop(recovered);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_foreign_ahead_or_damaged_checkpoint_costs_only_a_full_replay() {
        type Make = fn(Wallet, Digest) -> Option<Checkpoint>;
        let cases: [(&str, Make, &str); 3] = [
            ("foreign", |w, _| Some(marked(w, 3, [1; 32])), "another hash"),
            ("ahead", |w, h| Some(marked(w, 9, h)), "ledger ends at slot 5"),
            ("damaged", |_, _| None, "damaged"),
        ];
        for (name, make, why) in cases {
            let dir = scratch(name);
            let (wallet, hash) = ledger(&dir, 5, 3);
            match make(wallet.clone(), hash) {
                Some(checkpoint) => drop(checkpoint::write(&dir, PORT, &checkpoint).unwrap()),
                None => {
                    checkpoint::write(&dir, PORT, &marked(wallet, 3, hash)).unwrap();
                    let path = dir.join(checkpoint::file_name(PORT));
                    let bytes = std::fs::read(&path).unwrap();
                    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
                }
            }
            let recovered = recover(&dir, PORT, &BTreeSet::new()).unwrap();
            assert_eq!(balances(&recovered.wallet), [("x".into(), "$5".into())], "{name}");
            assert_eq!((recovered.rebuilt.checkpoint, recovered.rebuilt.replayed), (None, 5), "{name}");
            assert!(recovered.notes.iter().any(|n| n.contains(why)), "{name}: {:?}", recovered.notes);
            drop(recovered);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
