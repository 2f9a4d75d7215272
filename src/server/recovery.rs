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
use crate::fsio::IoFailure;
use crate::hash::{hex, Digest};
use crate::journal::Journal;
use crate::ledger::{Ledger, Recovery};
use crate::scp::{Pledges, Statement};
use crate::store::{Store, StoreError};
use crate::wallet::{Amount, Key, Wallet};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// What start-up recovered.
pub(super) struct Recovered {
    pub wallet: Wallet,
    pub store: Store,
    pub ledger: Ledger,
    pub journal: Journal,
    /// Our own last statements (NOMINATE and ballot) of the slots beyond the ledger, and
    /// our EXTERNALIZE of decided slots, in slot order.
    pub own: Vec<Statement>,
    /// Lines worth telling the operator.
    pub notes: Vec<String>,
}

type Entries = Vec<(Key, Amount)>;

fn entries(wallet: &Wallet) -> Entries {
    wallet.entries().map(|(k, v)| (k.clone(), v)).collect()
}

/// Replays the ledger: the wallet (obeying `operators`' reconfigurations) after every
/// entry, and the balances before the last.
fn replay(ledger: &Ledger, operators: &BTreeSet<u64>) -> Result<(Wallet, Option<Entries>), ServerError> {
    let mut wallet = Wallet::new();
    wallet.set_operators(operators.clone());
    let mut before_last = None;
    let last = ledger.len();
    ledger
        .replay(|entry| {
            if entry.slot == last {
                before_last = Some(entries(&wallet));
            }
            wallet.apply_batch(&entry.batch);
        })
        .map_err(ServerError::Ledger)?;
    Ok((wallet, before_last))
}

/// Opens everything under `dir` for the node on `port` and makes it consistent; the
/// wallet obeys `operators`' reconfigurations ([`Wallet::set_operators`]).
pub(super) fn recover(dir: &Path, port: u16, operators: &BTreeSet<u64>) -> Result<Recovered, ServerError> {
    let mut notes = Vec::new();
    let (ledger, recovery) = Ledger::open(dir, port).map_err(ServerError::Ledger)?;
    if let Recovery::DroppedTornTail { bytes, problem } = recovery {
        notes.push(format!("ledger: dropped a torn last entry ({bytes} bytes: {problem}), left by a crash"));
    }
    let (wallet, before_last) = replay(&ledger, operators)?;
    let store = Store::new(dir, port);
    reconcile(&store, &ledger, &wallet, before_last, &mut notes)?;
    let (journal, latest) = Journal::open(dir, port).map_err(ServerError::Journal)?;
    // Undecided slots resume from their statements; decided ones keep only an EXTERNALIZE
    // (to answer laggards); anything else of theirs is history.
    let decided = ledger.len();
    let own = latest
        .into_values()
        .filter(|st| st.slot > decided || matches!(st.pledges, Pledges::Externalize { .. }))
        .collect();
    Ok(Recovered { wallet, store, ledger, journal, own, notes })
}

fn reconcile(
    store: &Store,
    ledger: &Ledger,
    wallet: &Wallet,
    before_last: Option<Entries>,
    notes: &mut Vec<String>,
) -> Result<(), ServerError> {
    let projection = entries(wallet);
    let on_disk = store.load();
    match on_disk {
        Ok(found) if found == projection => return Ok(()),
        Ok(found) if ledger.is_empty() => {
            return Err(ServerError::DatabaseWithoutLedger {
                path: store.path().to_path_buf(),
                entries: found.len(),
            })
        }
        Err(e @ StoreError::Io(_)) => return Err(ServerError::Store(e)),
        Err(e) if ledger.is_empty() => return Err(ServerError::Store(e)),
        Ok(found) if Some(&found) == before_last.as_ref() => {
            notes.push(format!(
                "database was one slot behind the ledger (slot {}): rolled forward",
                ledger.len()
            ));
        }
        Ok(_) if !store.path().exists() => {
            notes.push(format!("database {} was missing: rebuilt from the ledger", store.path().display()));
        }
        Ok(_) => set_aside(
            store,
            "differed from the ledger (as after a power loss, or a crash between two writes of a large \
             database: it is written unsynced, and beyond 1,000 wallets at most every 200 ms)",
            notes,
        )?,
        Err(e) => set_aside(store, &e.to_string(), notes)?,
    }
    store.save(wallet.entries()).map_err(ServerError::Store)
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
}

impl std::fmt::Display for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ledger OK: {} slots, hash chain intact (last {}); database matches ({} wallets)",
            self.slots,
            &hex(&self.last_hash)[..16],
            self.wallets
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
    // Who may reconfigure does not change a balance: no operators needed here.
    let (wallet, _) = replay(&ledger, &BTreeSet::new())?;
    let store = Store::new(dir, port);
    let found = store.load().map_err(ServerError::Store)?;
    if found != entries(&wallet) {
        return Err(ServerError::Mismatch {
            db: store.path().to_path_buf(),
            ledger: ledger.path().to_path_buf(),
        });
    }
    Ok(Verified { slots: ledger.len(), last_hash: ledger.last_hash(), wallets: wallet.len() })
}
