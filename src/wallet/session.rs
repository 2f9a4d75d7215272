//! The bounded session table: per registered session (and per plain-text client), the last
//! applied `seq` and its reply; evicts the least recently applied entry, deterministically.

use super::{Reply, WalletError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a table entry is kept: `(client, session)`, session 0 for a plain-text client's
/// implicit entry.
pub(super) type SessionKey = (u64, u64);

/// What the wallet remembers about one session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Session {
    /// The nonce of the register that opened it (0 for plain-text clients).
    pub nonce: u64,
    /// The last applied sequence number (0 right after registering).
    pub seq: u64,
    /// The reply to it.
    pub reply: Reply,
    /// When it was last applied to (the wallet's applied-request count at the time).
    tick: u64,
}

/// Sessions by `(client, session)`, at most `limit` of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Sessions {
    table: BTreeMap<SessionKey, Session>,
    /// Entries by the tick of their last applied request (oldest first).
    by_tick: BTreeMap<u64, SessionKey>,
    /// The most entries `table` may hold (at least 1).
    limit: usize,
    /// The largest `seq` of an evicted plain-text entry: plain-text requests at or below it
    /// from clients the table does not hold can no longer be proven new.
    text_floor: u64,
}

impl Sessions {
    /// An empty table holding at most `limit` entries (at least one).
    pub fn new(limit: usize) -> Sessions {
        Sessions { table: BTreeMap::new(), by_tick: BTreeMap::new(), limit: limit.max(1), text_floor: 0 }
    }

    /// The most entries the table holds.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// The entry at `key`.
    pub fn get(&self, key: SessionKey) -> Option<&Session> {
        self.table.get(&key)
    }

    /// The live session `client` opened with `nonce`, if any.
    pub fn registered(&self, client: u64, nonce: u64) -> Option<u64> {
        let mut sessions = self.table.range((client, 1)..=(client, u64::MAX));
        sessions.find(|(_, s)| s.nonce == nonce).map(|((_, session), _)| *session)
    }

    /// The largest `seq` of any evicted plain-text entry.
    pub fn text_floor(&self) -> u64 {
        self.text_floor
    }

    /// Opens the session `key` (a fresh id) with the register's `nonce`, its start reply
    /// (for `seq` 0) and `tick`, larger than every earlier tick.
    pub fn open(&mut self, key: SessionKey, nonce: u64, reply: Reply, tick: u64) {
        self.put(key, Session { nonce, seq: 0, reply, tick });
    }

    /// Records a newly applied request of the entry `key` at `tick` (larger than every
    /// earlier tick), creating the entry if absent (a plain-text client's).
    pub fn record(&mut self, key: SessionKey, seq: u64, reply: Reply, tick: u64) {
        let nonce = self.table.get(&key).map_or(0, |s| s.nonce);
        self.put(key, Session { nonce, seq, reply, tick });
    }

    /// Every entry with its key, for a checkpoint ([`super::Image`]).
    pub fn export(&self) -> SessionsImage {
        let entries = self.table.iter().map(|(&(client, session), s)| (client, session, s.clone())).collect();
        SessionsImage { limit: self.limit, text_floor: self.text_floor, entries }
    }

    /// The table [`Sessions::export`] saved, checked: at most `limit` entries, one per
    /// key, every tick distinct and at most `applied` (the wallet's applied count).
    pub fn import(image: SessionsImage, applied: u64) -> Result<Sessions, WalletError> {
        let invalid = |problem| WalletError::InvalidImage { problem };
        let mut sessions = Sessions::new(image.limit);
        if image.entries.len() > sessions.limit {
            return Err(invalid("more sessions than the table holds"));
        }
        for (client, session, entry) in image.entries {
            if entry.tick > applied || sessions.by_tick.contains_key(&entry.tick) {
                return Err(invalid("a session tick repeated or beyond the applied count"));
            }
            if sessions.table.contains_key(&(client, session)) {
                return Err(invalid("a session listed twice"));
            }
            sessions.by_tick.insert(entry.tick, (client, session));
            sessions.table.insert((client, session), entry);
        }
        sessions.text_floor = image.text_floor;
        Ok(sessions)
    }

    /// Stores an entry; a new one evicts the least recently applied entry if the table is
    /// full.
    fn put(&mut self, key: SessionKey, session: Session) {
        match self.table.get(&key) {
            Some(old) => {
                self.by_tick.remove(&old.tick);
            }
            None if self.table.len() >= self.limit => self.evict_oldest(),
            None => {}
        }
        self.by_tick.insert(session.tick, key);
        self.table.insert(key, session);
    }

    /// Forgets the entry whose last applied request is oldest.
    fn evict_oldest(&mut self) {
        let Some((_, key)) = self.by_tick.pop_first() else { return };
        if let Some(evicted) = self.table.remove(&key) {
            if key.1 == 0 {
                self.text_floor = self.text_floor.max(evicted.seq);
            }
        }
    }
}

/// The session table as a checkpoint stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsImage {
    /// The most entries the table holds.
    limit: usize,
    /// See [`Sessions::text_floor`].
    text_floor: u64,
    /// `(client, session, entry)`, in key order.
    entries: Vec<(u64, u64, Session)>,
}
