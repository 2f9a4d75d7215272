//! A wallet's whole replicated state, frozen: what a checkpoint stores.
//!
//! [`Wallet::image`](super::Wallet::image) takes one in time independent of the number of
//! wallets (the rows are shared with the live table, see [`super::table`]; the session
//! table, at most [`super::DEFAULT_SESSION_LIMIT`] entries, is copied), so the protocol
//! thread can hand it to a writer thread after any slot. [`Wallet::from_image`](super::Wallet::from_image)
//! rebuilds exactly the wallet it was taken from, checking what it is given: a damaged or
//! forged image is refused, never half applied.
//!
//! JSON (the body of a checkpoint file):
//! `{"applied":7,"membership":null,"sessions":{"limit":65536,"text_floor":0,"entries":[[9,0,{"nonce":0,"seq":3,"reply":{…},"tick":7}]]},"wallets":[["foo","$30",null],["bar","$10",4]]}`:
//! wallets in creation order as `[name, balance, owner]`.

use super::membership::Membership;
use super::session::SessionsImage;
use super::table::{Row, Snapshot};
use super::{Amount, Key};
use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A frozen copy of a wallet's replicated state (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct Image {
    /// How many requests had been applied.
    pub(super) applied: u64,
    /// The membership the last applied reconfiguration set.
    pub(super) membership: Option<Membership>,
    /// The session table.
    pub(super) sessions: SessionsImage,
    /// Every wallet, in creation order.
    pub(super) rows: Snapshot,
}

impl Image {
    /// How many wallets.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The wallets' names and balances, in creation order (the database file's entries).
    pub fn entries(&self) -> impl Iterator<Item = (&Key, Amount)> + '_ {
        self.rows.iter().map(|row| (&row.key, row.balance))
    }
}

/// The rows as a JSON array of `[name, balance, owner]`.
struct Rows<'a>(&'a Snapshot);

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for row in self.0.iter() {
            seq.serialize_element(&(&row.key, &row.balance, &row.owner))?;
        }
        seq.end()
    }
}

/// The JSON shape, borrowed for encoding.
#[derive(Serialize)]
struct Encoded<'a> {
    applied: u64,
    membership: &'a Option<Membership>,
    sessions: &'a SessionsImage,
    wallets: Rows<'a>,
}

/// The JSON shape, owned for decoding.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decoded {
    applied: u64,
    membership: Option<Membership>,
    sessions: SessionsImage,
    wallets: Chunked,
}

/// Rows decoded straight into a [`Snapshot`]'s chunks (no second copy of a large table).
struct Chunked(Snapshot);

impl<'de> Deserialize<'de> for Chunked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Chunked, D::Error> {
        deserializer.deserialize_seq(ChunkedVisitor)
    }
}

struct ChunkedVisitor;

impl<'de> Visitor<'de> for ChunkedVisitor {
    type Value = Chunked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of [name, balance, owner]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Chunked, A::Error> {
        let mut snapshot = Snapshot::default();
        while let Some((key, balance, owner)) = seq.next_element::<(Key, Amount, Option<u64>)>()? {
            snapshot.push(Row { key, balance, owner });
        }
        Ok(Chunked(snapshot))
    }
}

impl Serialize for Image {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let encoded = Encoded {
            applied: self.applied,
            membership: &self.membership,
            sessions: &self.sessions,
            wallets: Rows(&self.rows),
        };
        encoded.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Image {
    /// Decodes the shape only; [`Wallet::from_image`](super::Wallet::from_image) checks the content.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Image, D::Error> {
        let decoded = Decoded::deserialize(deserializer)?;
        Ok(Image {
            applied: decoded.applied,
            membership: decoded.membership,
            sessions: decoded.sessions,
            rows: decoded.wallets.0,
        })
    }
}
