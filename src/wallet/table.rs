//! The wallet table: wallets in first-insertion order, found by name, with snapshots that
//! cost almost nothing to take.
//!
//! A node with a million wallets must be able to write them all to disk (its checkpoint
//! and database file, see [`crate::checkpoint`]) without stopping consensus while it does.
//! So the table stores its rows in fixed-size **chunks**, each behind an [`Arc`]:
//!
//! * [`Table::snapshot`] clones only the chunk pointers (one per [`CHUNK_ROWS`] rows), so
//!   the protocol thread hands a frozen, consistent copy of every wallet to the writer
//!   thread in microseconds;
//! * a write to a row whose chunk a snapshot still shares copies that one chunk first
//!   (copy on write, [`Arc::make_mut`]), so the snapshot never changes and the live table
//!   pays one chunk copy per chunk it touches while a snapshot is being written.
//!
//! Rows are never removed (no operation deletes a wallet). The name index is an open
//! addressing table of row numbers: each bucket holds the row plus one and 32 bits of the
//! name's hash (`0` marks an empty bucket), probed linearly and kept at most half full.
//! It stores no second copy of the names (a `HashMap<Key, usize>` would, doubling the
//! memory of a large table) and grows without hashing a name again. Names are hashed
//! with std's randomly keyed SipHash, so a client cannot choose names that collide.

use super::{Amount, Key};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;

/// Rows per chunk: the unit of sharing and of copy on write (about 200 KiB).
pub const CHUNK_ROWS: usize = 4096;

/// Buckets of an empty table's index (a power of two).
const MIN_BUCKETS: usize = 16;

/// One wallet: its name, balance and owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The name.
    pub key: Key,
    /// The balance.
    pub balance: Amount,
    /// The client id of the key that created it; `None` if created unsigned.
    pub owner: Option<u64>,
}

/// A frozen copy of every row of a [`Table`], in insertion order.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    chunks: Vec<Arc<Vec<Row>>>,
    len: usize,
}

impl Snapshot {
    /// How many rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The rows, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &Row> + '_ {
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }

    /// Appends a row (copying the last chunk first if a snapshot shares it).
    pub fn push(&mut self, row: Row) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK_ROWS => Arc::make_mut(chunk).push(row),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK_ROWS);
                chunk.push(row);
                self.chunks.push(Arc::new(chunk));
            }
        }
        self.len += 1;
    }
}

/// Wallet rows in insertion order, found by name (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct Table {
    rows: Snapshot,
    /// Buckets: `(row + 1, hash bits)`, `(0, _)` when empty; a power of two in length.
    buckets: Vec<(u32, u32)>,
    hasher: RandomState,
}

impl Default for Table {
    fn default() -> Table {
        Table::new()
    }
}

impl PartialEq for Table {
    /// Equal when the rows are (the index is derived from them).
    fn eq(&self, other: &Table) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Table {}

impl Table {
    /// No rows.
    pub fn new() -> Table {
        Table { rows: Snapshot::default(), buckets: vec![(0, 0); MIN_BUCKETS], hasher: RandomState::new() }
    }

    /// A table of the rows of `snapshot` (sharing them), or the first name it repeats.
    pub fn from_snapshot(snapshot: Snapshot) -> Result<Table, Key> {
        let mut table = Table::new();
        let buckets = (snapshot.len * 2).next_power_of_two().max(MIN_BUCKETS);
        table.buckets = vec![(0, 0); buckets];
        table.rows.chunks = snapshot.chunks;
        for (i, chunk) in table.rows.chunks.iter().enumerate() {
            debug_assert!(chunk.len() == CHUNK_ROWS || i + 1 == snapshot.len.div_ceil(CHUNK_ROWS));
        }
        for i in 0..snapshot.len {
            let key = table.row(i).key.as_str();
            if table.find(key).is_some() {
                return Err(table.row(i).key.clone());
            }
            let number = u32::try_from(i + 1).map_err(|_| table.row(i).key.clone())?;
            table.place(number, table.hash(key));
            table.rows.len = i + 1;
        }
        Ok(table)
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.rows.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.len == 0
    }

    /// The rows, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &Row> + '_ {
        self.rows.iter()
    }

    /// A frozen copy of the rows, sharing their chunks with the table.
    pub fn snapshot(&self) -> Snapshot {
        self.rows.clone()
    }

    /// Row `i` (`i < len()`).
    pub fn row(&self, i: usize) -> &Row {
        &self.rows.chunks[i / CHUNK_ROWS][i % CHUNK_ROWS]
    }

    /// Row `i` for writing, its chunk copied first if a snapshot shares it.
    pub fn row_mut(&mut self, i: usize) -> &mut Row {
        debug_assert!(i < self.len(), "row {i} of {}", self.len());
        &mut Arc::make_mut(&mut self.rows.chunks[i / CHUNK_ROWS])[i % CHUNK_ROWS]
    }

    /// The row number of `key`, if present.
    pub fn find(&self, key: &str) -> Option<usize> {
        let bits = self.hash(key);
        let mask = self.buckets.len() - 1;
        let mut at = bits as usize & mask;
        loop {
            match self.buckets[at] {
                (0, _) => return None,
                (row, b) if b == bits && self.row(row as usize - 1).key.as_str() == key => {
                    return Some(row as usize - 1)
                }
                _ => at = (at + 1) & mask,
            }
        }
    }

    /// Appends `row`, whose name must not be present yet, and returns its row number.
    pub fn push(&mut self, row: Row) -> usize {
        debug_assert!(self.find(row.key.as_str()).is_none(), "{} added twice", row.key);
        let i = self.len();
        let number = u32::try_from(i + 1).expect("fewer than 2^32 wallets");
        if (i + 1) * 2 > self.buckets.len() {
            self.grow();
        }
        let bits = self.hash(row.key.as_str());
        self.place(number, bits);
        self.rows.push(row);
        i
    }

    /// Puts a row number in the first free bucket of its probe sequence.
    fn place(&mut self, number: u32, bits: u32) {
        let mask = self.buckets.len() - 1;
        let mut at = bits as usize & mask;
        while self.buckets[at].0 != 0 {
            at = (at + 1) & mask;
        }
        self.buckets[at] = (number, bits);
    }

    /// Doubles the index, re-placing every row by its stored hash bits.
    fn grow(&mut self) {
        let doubled = vec![(0, 0); self.buckets.len() * 2];
        let old = std::mem::replace(&mut self.buckets, doubled);
        for (number, bits) in old.into_iter().filter(|(number, _)| *number != 0) {
            self.place(number, bits);
        }
    }

    /// The 32 hash bits of `key` the index uses.
    fn hash(&self, key: &str) -> u32 {
        self.hasher.hash_one(key) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: usize) -> Row {
        Row {
            key: Key::new(format!("w{n}")).unwrap(),
            balance: Amount::from_cents(n as u64).unwrap(),
            owner: None,
        }
    }

    fn filled(n: usize) -> Table {
        let mut table = Table::new();
        for i in 0..n {
            assert_eq!(table.push(row(i)), i);
        }
        table
    }

    #[test]
    fn rows_are_found_by_name_and_kept_in_insertion_order() {
        let n = 3 * CHUNK_ROWS + 17;
        let table = filled(n);
        assert_eq!(table.len(), n);
        for i in (0..n).step_by(97) {
            assert_eq!(table.find(&format!("w{i}")), Some(i));
            assert_eq!(table.row(i), &row(i));
        }
        assert_eq!(table.find("w-absent"), None);
        assert!(table.iter().cloned().eq((0..n).map(row)));
        assert!(table.buckets.len() >= 2 * n, "the index stays at most half full");
    }

    #[test]
    fn a_snapshot_never_changes_and_the_table_copies_only_the_chunks_it_writes() {
        let mut table = filled(2 * CHUNK_ROWS + 5);
        let snapshot = table.snapshot();
        table.row_mut(3).balance = Amount::from_cents(999_999).unwrap();
        table.push(row(1_000_000));
        assert_eq!(snapshot.len(), 2 * CHUNK_ROWS + 5);
        assert_eq!(snapshot.iter().nth(3), Some(&row(3)), "the snapshot kept the old balance");
        assert_eq!(table.row(3).balance, Amount::from_cents(999_999).unwrap());
        assert!(!Arc::ptr_eq(&table.rows.chunks[0], &snapshot.chunks[0]), "the written chunk was copied");
        assert!(Arc::ptr_eq(&table.rows.chunks[1], &snapshot.chunks[1]), "an untouched chunk is shared");
        assert!(!Arc::ptr_eq(&table.rows.chunks[2], &snapshot.chunks[2]), "the chunk appended to was copied");
        assert_eq!(table.len(), snapshot.len() + 1);
    }

    #[test]
    fn a_table_rebuilt_from_a_snapshot_finds_every_row_and_refuses_a_repeated_name() {
        let n = CHUNK_ROWS + 3;
        let mut snapshot = Snapshot::default();
        (0..n).for_each(|i| snapshot.push(row(i)));
        let table = Table::from_snapshot(snapshot.clone()).unwrap();
        assert_eq!(table, filled(n));
        assert_eq!(table.find(&format!("w{}", n - 1)), Some(n - 1));
        let mut repeated = snapshot.clone();
        repeated.push(row(5));
        assert_eq!(Table::from_snapshot(repeated), Err(row(5).key));
    }

    #[test]
    fn tables_with_the_same_rows_are_equal_whatever_their_hash_keys() {
        let (a, mut b) = (filled(100), filled(100));
        assert_eq!(a, b);
        b.row_mut(7).owner = Some(1);
        assert_ne!(a, b);
    }
}
