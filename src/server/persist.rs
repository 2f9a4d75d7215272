//! The database file and the checkpoint, written off the protocol thread.
//!
//! After every applied slot the protocol thread calls [`Persister::after_slot`]:
//!
//! * while the database holds at most [`DB_SMALL`] wallets (the assignment's case), it
//!   rewrites the database file at once (temp file and rename, no sync: a projection of
//!   the synced ledger), so the file always shows the last slot;
//! * beyond that the file is left to the **writer thread**, which receives a frozen
//!   [`Image`] of the wallet (taken in time independent of the number of wallets, see
//!   [`crate::wallet::table`]) and writes the database file (synced) and then the
//!   checkpoint ([`crate::checkpoint`], synced) of that slot, so a slot's cost on the
//!   protocol thread does not grow with the data;
//! * small or large, the writer thread also writes a checkpoint, so start-up replays only
//!   the ledger after it.
//!
//! The pace is bounded: a job starts only when the previous one is done and the writer
//! has rested for [`REST_SMALL`] (small database) or [`REST_LARGE`] and at least
//! [`REST_FACTOR`] times the previous job's duration (large database), so the writer uses
//! at most about a seventeenth of a core and of the disk however large the data grows. At a clean
//! stop, [`Persister::finish`] waits for the writer and writes both files of the last slot.
//! A job that fails (full or read-only disk) stops the node with the reason, like a
//! failed ledger append.

use super::ServerError;
use crate::checkpoint::{self, Checkpoint};
use crate::hash::{sha256, Digest};
use crate::store::Store;
use crate::wallet::{Image, Wallet};
use crossbeam_channel::{Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// While the database holds at most this many wallets, its file is written after every
/// slot by the protocol thread.
pub(super) const DB_SMALL: usize = 1_000;
/// Rest of the writer between two checkpoints of a small database.
const REST_SMALL: Duration = Duration::from_secs(1);
/// Least rest of the writer between two jobs for a large database.
const REST_LARGE: Duration = Duration::from_millis(200);
/// The writer rests at least this many times as long as its last job took.
const REST_FACTOR: u32 = 16;

/// A checkpoint (and for a large database, the database file) to write.
struct Job {
    slot: u64,
    ledger_hash: Digest,
    image: Image,
    database: bool,
}

/// What the writer thread reports about a job.
pub(super) struct Done {
    slot: u64,
    /// Whether it wrote the database file too.
    database: bool,
    took: Duration,
    result: Result<(), ServerError>,
}

/// The protocol thread's side of the database file and the checkpoint (see the
/// [module docs](self)).
pub(super) struct Persister {
    store: Store,
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
    /// The last applied slot and its ledger hash.
    latest: (u64, Digest),
    /// The slot of the newest checkpoint written or being written.
    checkpointed: u64,
    /// The slot of the newest checkpoint written.
    written: u64,
    /// The last job that ended: whether it wrote the database file, and how long it took.
    last: Option<(bool, Duration)>,
    /// The database file is behind the wallet and the writer is to write it.
    db_stale: bool,
    /// When the running job started.
    busy: Option<Instant>,
    /// No job starts before this.
    rest_until: Instant,
}

impl Persister {
    /// Starts the writer thread for `store` (and the checkpoint beside it, of the node on
    /// `port`); `latest` is the ledger's last slot and hash, `checkpointed` the slot of the
    /// checkpoint start-up found (0: none usable).
    pub fn start(
        store: Store,
        port: u16,
        latest: (u64, Digest),
        checkpointed: u64,
    ) -> Result<Persister, ServerError> {
        let (jobs, inbox) = crossbeam_channel::bounded::<Job>(1);
        let (report, done) = crossbeam_channel::unbounded();
        let (writer_store, dir) = (store.clone(), store.dir().to_path_buf());
        let thread = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || write_jobs(&writer_store, &dir, port, &inbox, &report))
            .map_err(ServerError::Spawn)?;
        Ok(Persister {
            store,
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            latest,
            checkpointed,
            written: checkpointed,
            last: None,
            db_stale: false,
            busy: None,
            rest_until: Instant::now(),
        })
    }

    /// The database file.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The slot of the newest checkpoint on disk.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The last job that ended: whether it wrote the database file, and how long it took.
    pub fn last(&self) -> Option<(bool, Duration)> {
        self.last
    }

    /// Slot `slot` (ledger hash `hash`) was applied to `wallet`: writes a small database
    /// file now, and starts a job if one is due.
    pub fn after_slot(&mut self, wallet: &Wallet, slot: u64, hash: Digest) -> Result<(), ServerError> {
        self.latest = (slot, hash);
        match wallet.len() <= DB_SMALL {
            true => self.store.save_projection(wallet.entries())?,
            false => self.db_stale = true,
        }
        self.start_if_due(wallet);
        Ok(())
    }

    /// Starts a job for the latest slot if the writer is idle, has rested, and the
    /// checkpoint is behind.
    pub fn start_if_due(&mut self, wallet: &Wallet) {
        if self.due().is_some_and(|wait| wait.is_zero()) {
            self.start_job(wallet);
        }
    }

    /// How long until a job is due (`None`: nothing to write, or a job is running).
    pub fn due(&self) -> Option<Duration> {
        let behind = self.latest.0 > self.checkpointed || self.db_stale;
        (behind && self.busy.is_none()).then(|| self.rest_until.saturating_duration_since(Instant::now()))
    }

    /// The writer's reports, for the protocol loop to wait on.
    pub fn done(&self) -> &Receiver<Done> {
        &self.done
    }

    /// A job ended: the writer rests in proportion to what it took; a failure stops the
    /// node.
    pub fn on_done(&mut self, done: Done) -> Result<(), ServerError> {
        self.busy = None;
        self.last = Some((done.database, done.took));
        let rest = match done.database {
            true => REST_LARGE.max(done.took * REST_FACTOR),
            false => REST_SMALL,
        };
        self.rest_until = Instant::now() + rest;
        done.result?;
        self.written = done.slot;
        Ok(())
    }

    /// Waits for the running job, then writes the database file and the checkpoint of the
    /// last slot (the clean stop), and stops the writer.
    pub fn finish(&mut self, wallet: &Wallet) -> Result<(), ServerError> {
        if self.busy.is_some() {
            let done = self.done.recv().map_err(|_| writer_gone())?;
            self.on_done(done)?;
        }
        if self.latest.0 > self.checkpointed || self.db_stale {
            self.start_job(wallet);
            let done = self.done.recv().map_err(|_| writer_gone())?;
            self.on_done(done)?;
        }
        self.stop();
        Ok(())
    }

    fn start_job(&mut self, wallet: &Wallet) {
        let (slot, ledger_hash) = self.latest;
        let database = std::mem::take(&mut self.db_stale);
        let job = Job { slot, ledger_hash, image: wallet.image(), database };
        if let Some(jobs) = &self.jobs {
            if jobs.send(job).is_ok() {
                self.busy = Some(Instant::now());
                self.checkpointed = slot;
            }
        }
    }

    fn stop(&mut self) {
        self.jobs = None; // the writer's loop ends when the channel closes
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Persister {
    fn drop(&mut self) {
        self.stop();
    }
}

fn writer_gone() -> ServerError {
    ServerError::Spawn(std::io::Error::other("the checkpoint writer thread stopped"))
}

/// The writer thread: one job at a time until the protocol thread hangs up.
fn write_jobs(store: &Store, dir: &std::path::Path, port: u16, inbox: &Receiver<Job>, report: &Sender<Done>) {
    for job in inbox {
        let started = Instant::now();
        let (slot, database) = (job.slot, job.database);
        let result = write_job(store, dir, port, job);
        if report.send(Done { slot, database, took: started.elapsed(), result }).is_err() {
            return;
        }
    }
}

/// The database file (if asked, synced) and then the checkpoint that names its digest.
fn write_job(store: &Store, dir: &std::path::Path, port: u16, job: Job) -> Result<(), ServerError> {
    let database_sha256 = match job.database {
        true => {
            let content = crate::store::encode(job.image.entries());
            store.save_encoded(&content)?;
            Some(sha256(content.as_bytes()))
        }
        false => None,
    };
    let checkpoint =
        Checkpoint { slot: job.slot, ledger_hash: job.ledger_hash, database_sha256, image: job.image };
    checkpoint::write(dir, port, &checkpoint).map_err(ServerError::Checkpoint)?;
    Ok(())
}
