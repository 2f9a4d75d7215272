//! Batches: the value of one SCP slot.

use super::{BatchProblem, Request, SignatureError, WalletError, MAX_BATCH_BYTES, MAX_BATCH_REQUESTS};
use crate::hash::Digest;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// The requests decided in one SCP slot: sorted by [`Request::id`] (`(client, session,
/// seq)`), unique per id, at most [`MAX_BATCH_REQUESTS`] requests and [`MAX_BATCH_BYTES`]
/// encoded bytes. The fields are private so that these rules always hold.
///
/// A batch is encoded once, when it is made (each request serialized once, the batch's
/// bytes joined from them): its digest, its `value` message, its ledger line and its
/// size checks all read those bytes.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "RawBatch")]
pub struct Batch {
    requests: Vec<Request>,
    /// The canonical encoding ([`Batch::encode`]).
    encoded: Arc<[u8]>,
}

impl PartialEq for Batch {
    fn eq(&self, other: &Batch) -> bool {
        self.requests == other.requests
    }
}

impl Eq for Batch {}

impl std::hash::Hash for Batch {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.requests.hash(state);
    }
}

impl Default for Batch {
    fn default() -> Batch {
        Batch::new(Vec::new())
    }
}

impl Serialize for Batch {
    /// As `{"requests":[...]}`, the canonical encoding.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shape<'a> {
            requests: &'a [Request],
        }
        Shape { requests: &self.requests }.serialize(s)
    }
}

/// The JSON shape of a batch, for decoding.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    requests: Vec<Request>,
}

impl TryFrom<RawBatch> for Batch {
    type Error = WalletError;

    /// Accepts only a batch already in normal form (as [`Batch::new`] makes it), so that a
    /// batch deserialized inside another message is exactly the one that was decided.
    fn try_from(raw: RawBatch) -> Result<Batch, WalletError> {
        let normal = Batch::new(raw.requests.clone());
        if normal.requests != raw.requests {
            return Err(WalletError::InvalidBatch { problem: BatchProblem::NotCanonical });
        }
        Ok(normal)
    }
}

/// Bytes of `{"requests":[]}`.
pub(crate) const BATCH_OVERHEAD: usize = 15;

impl Batch {
    /// The empty batch.
    pub fn empty() -> Batch {
        Batch::default()
    }

    /// A batch of `requests`, normalized: sorted by [`Request::id`] (then by operation and
    /// signature), one request kept per id (the smallest, so the choice does not depend on
    /// input order), then cut to the longest prefix within the caps. Requests cut off are
    /// simply not in the batch; their senders' nodes propose them again later. Cutting a
    /// prefix never keeps a session's request while dropping one of its smaller `seq`s.
    pub fn new(mut requests: Vec<Request>) -> Batch {
        requests.sort();
        requests.dedup_by(|later, earlier| later.id() == earlier.id());
        let encoded: Vec<Vec<u8>> = requests.iter().map(encode_request).collect();
        let fitting = fitting_prefix(encoded.iter().map(Vec::len));
        requests.truncate(fitting);
        let mut bytes = Vec::with_capacity(
            BATCH_OVERHEAD + encoded[..fitting].iter().map(|e| e.len() + 1).sum::<usize>(),
        );
        bytes.extend_from_slice(b"{\"requests\":[");
        for (i, request) in encoded[..fitting].iter().enumerate() {
            if i > 0 {
                bytes.push(b',');
            }
            bytes.extend_from_slice(request);
        }
        bytes.extend_from_slice(b"]}");
        Batch { requests, encoded: bytes.into() }
    }

    /// SCP's combine step over the confirmed candidates: their union when it fits; when
    /// it does not, a **fair share per candidate**, not the smallest ids (which a member
    /// could mint to crowd out everyone else). Candidates take turns, in the order of the
    /// hash of their encoding, each adding its next request not yet taken; taking a
    /// request takes its session's smaller pending `seq`s first, so a session's requests
    /// are never decided out of order. The result depends only on the set of candidates.
    pub fn combine<'a>(batches: impl IntoIterator<Item = &'a Batch>) -> Batch {
        let mut candidates: Vec<&Batch> = batches.into_iter().collect();
        if let [only] = candidates[..] {
            return only.clone(); // already normal: nothing to combine
        }
        let union = Batch::new(candidates.iter().flat_map(|b| b.requests.iter().cloned()).collect());
        let total: usize = candidates.iter().map(|b| b.len()).sum();
        if candidates.len() <= 1
            || (union.len() < MAX_BATCH_REQUESTS && union.len() == dedup_len(&candidates, total))
        {
            return union;
        }
        candidates.sort_by_cached_key(|b| crate::hash::sha256(b.encode()));
        candidates.dedup();
        Batch::new(FairCut::new(&candidates).run())
    }

    /// The requests, in application order.
    pub fn requests(&self) -> &[Request] {
        &self.requests
    }

    /// How many requests.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether there are no requests.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Whether the batch holds a request with this [`Request::id`].
    pub fn contains(&self, id: (u64, u64, u64)) -> bool {
        self.requests.binary_search_by(|r| r.id().cmp(&id)).is_ok()
    }

    /// Checks the signatures (see [`Request::verify`]): every request that carries one
    /// must verify, and with `require` (nodes with peer keys) every request must carry
    /// one. Plain-text requests are unsigned, so a node that requires signatures refuses
    /// them when they arrive and a batch holding one is invalid there. The first failure
    /// is returned; the batch is valid only if there is none.
    pub fn verify_signatures(&self, require: bool) -> Result<(), BatchSignatureError> {
        self.verify_signatures_skipping(require, |_| false)
    }

    /// [`Batch::verify_signatures`], trusting the signed requests whose [`Request::digest`]
    /// `verified` recognises (a node remembers the digests of the requests it verified
    /// when they arrived, and skips the costly check for them here).
    pub fn verify_signatures_skipping(
        &self,
        require: bool,
        verified: impl Fn(&Digest) -> bool,
    ) -> Result<(), BatchSignatureError> {
        for request in &self.requests {
            let checked = match request.auth {
                None if !require => Ok(()),
                Some(_) if verified(&request.digest()) => Ok(()),
                _ => request.verify(),
            };
            checked.map_err(|error| BatchSignatureError { id: request.id(), error })?;
        }
        Ok(())
    }

    /// The canonical encoding: compact JSON, `{"requests":[...]}`.
    pub fn encode(&self) -> &[u8] {
        &self.encoded
    }

    /// The canonical encoding, shared.
    pub fn encoded(&self) -> &Arc<[u8]> {
        &self.encoded
    }

    /// Decodes bytes written by [`Batch::encode`], checking every rule: size, JSON shape,
    /// valid keys and amounts, count, order, and that the bytes are exactly the canonical
    /// encoding. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Batch, WalletError> {
        if bytes.len() > MAX_BATCH_BYTES {
            return Err(batch_error(BatchProblem::TooLarge { bytes: bytes.len() }));
        }
        let raw: RawBatch =
            serde_json::from_slice(bytes).map_err(|e| WalletError::Decode { reason: e.to_string() })?;
        check_rules(&raw.requests)?;
        let batch = Batch::new(raw.requests);
        if batch.encode() != bytes {
            return Err(batch_error(BatchProblem::NotCanonical));
        }
        Ok(batch)
    }
}

/// The count and order rules of a decoded batch's requests.
fn check_rules(requests: &[Request]) -> Result<(), WalletError> {
    if requests.len() > MAX_BATCH_REQUESTS {
        return Err(batch_error(BatchProblem::TooManyRequests { count: requests.len() }));
    }
    let sorted = requests.windows(2).all(|w| w[0].id() < w[1].id());
    if !sorted {
        return Err(batch_error(BatchProblem::NotSorted));
    }
    Ok(())
}

impl Batch {}

/// A request of a batch whose signature is refused (see [`Batch::verify_signatures`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSignatureError {
    /// The request's [`Request::id`]: `(client, session, seq)`.
    pub id: (u64, u64, u64),
    /// Why its signature is refused.
    pub error: SignatureError,
}

impl fmt::Display for BatchSignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (client, session, seq) = self.id;
        write!(f, "request of client {client} (session {session}, seq {seq}): {}", self.error)
    }
}

impl std::error::Error for BatchSignatureError {}

pub(crate) fn batch_error(problem: BatchProblem) -> WalletError {
    WalletError::InvalidBatch { problem }
}

/// How many distinct requests the candidates hold in all.
fn dedup_len(candidates: &[&Batch], total: usize) -> usize {
    let mut ids: Vec<(u64, u64, u64)> = Vec::with_capacity(total);
    ids.extend(candidates.iter().flat_map(|b| b.requests.iter().map(Request::id)));
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

/// The fair selection of [`Batch::combine`]: round-robin over candidates within the caps.
struct FairCut<'a> {
    candidates: &'a [&'a Batch],
    /// Every distinct request, by id, for the session-order rule.
    all: std::collections::BTreeMap<(u64, u64, u64), &'a Request>,
    taken: std::collections::BTreeMap<(u64, u64, u64), &'a Request>,
    bytes: usize,
}

impl<'a> FairCut<'a> {
    fn new(candidates: &'a [&'a Batch]) -> FairCut<'a> {
        let mut all = std::collections::BTreeMap::new();
        for request in candidates.iter().flat_map(|b| b.requests.iter()) {
            all.entry(request.id()).or_insert(request);
        }
        FairCut { candidates, all, taken: Default::default(), bytes: BATCH_OVERHEAD }
    }

    /// Turns until no candidate can add anything more.
    fn run(mut self) -> Vec<Request> {
        let mut cursors = vec![0usize; self.candidates.len()];
        let mut progressed = true;
        while progressed {
            progressed = false;
            for (c, cursor) in cursors.iter_mut().enumerate() {
                progressed |= self.turn(c, cursor);
            }
        }
        self.taken.into_values().cloned().collect()
    }

    /// Candidate `c` adds its next request not yet taken, if it fits. True if the
    /// candidate still had requests to offer.
    fn turn(&mut self, c: usize, cursor: &mut usize) -> bool {
        let requests = &self.candidates[c].requests;
        while let Some(request) = requests.get(*cursor) {
            *cursor += 1;
            if !self.taken.contains_key(&request.id()) {
                self.take_in_order(request);
                return true;
            }
        }
        false
    }

    /// Takes `request` and, first, its session's smaller seqs; all or nothing.
    fn take_in_order(&mut self, request: &'a Request) {
        let (client, session, seq) = request.id();
        let needed: Vec<&'a Request> = self
            .all
            .range((client, session, 0)..=(client, session, seq))
            .map(|(_, r)| *r)
            .filter(|r| !self.taken.contains_key(&r.id()))
            .collect();
        let bytes: usize = needed.iter().map(|r| 1 + encoded_len(r)).sum();
        if self.taken.len() + needed.len() > MAX_BATCH_REQUESTS || self.bytes + bytes > MAX_BATCH_BYTES {
            return;
        }
        self.bytes += bytes;
        for r in needed {
            self.taken.insert(r.id(), r);
        }
    }
}

/// How many of the leading requests, of these encoded lengths, fit in one batch.
fn fitting_prefix(lengths: impl ExactSizeIterator<Item = usize>) -> usize {
    let total = lengths.len();
    let mut bytes = BATCH_OVERHEAD;
    for (count, length) in lengths.enumerate() {
        let separator = usize::from(count > 0);
        bytes += separator + length;
        if count == MAX_BATCH_REQUESTS || bytes > MAX_BATCH_BYTES {
            return count;
        }
    }
    total
}

/// A request's compact JSON.
fn encode_request(request: &Request) -> Vec<u8> {
    serde_json::to_vec(request).expect("requests hold only strings and integers, which always serialize")
}

/// The length of a request's compact JSON.
fn encoded_len(request: &Request) -> usize {
    encode_request(request).len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wallet::testing::*;

    /// A full candidate of small ids (a member's junk) cannot crowd out another candidate
    /// of larger ids: each gets about half of the combined batch.
    #[test]
    fn combining_full_candidates_gives_each_a_fair_share() {
        let op = || crate::wallet::parse_text("get x").expect("op");
        let full = MAX_BATCH_REQUESTS as u64 + 50;
        let junk = Batch::new((1..=full).map(|c| Request::new(c, 1, op()).with_session(1)).collect());
        let real =
            Batch::new((10_000..10_000 + full).map(|c| Request::new(c, 1, op()).with_session(1)).collect());
        assert_eq!(junk.len(), MAX_BATCH_REQUESTS);
        let combined = Batch::combine([&junk, &real]);
        let reals = combined.requests().iter().filter(|r| r.client >= 10_000).count();
        assert_eq!(combined.len(), MAX_BATCH_REQUESTS);
        assert!(reals >= MAX_BATCH_REQUESTS / 2 - 1, "only {reals} real requests");
        assert_eq!(combined, Batch::combine([&real, &junk]), "order of candidates does not matter");
        // A session's smaller seqs come along with a larger one, never after it.
        let a = Batch::new(vec![Request::new(5, 2, op()).with_session(1)]);
        let b = Batch::new(
            (100..100 + MAX_BATCH_REQUESTS as u64)
                .map(|c| Request::new(c, 1, op()).with_session(1))
                .chain([Request::new(5, 1, op()).with_session(1)])
                .collect(),
        );
        let both = Batch::combine([&a, &b]);
        assert!(!both.contains((5, 1, 2)) || both.contains((5, 1, 1)));
        // When everything fits, the union.
        let small = Batch::new(vec![Request::new(1, 1, op()).with_session(1)]);
        assert_eq!(Batch::combine([&small, &a]).len(), 2);
    }
    use crate::wallet::{ClientKey, Op, MAX_KEY_CHARS, TEXT_CLIENT_BIT};

    #[test]
    fn batches_are_sorted_deduplicated_and_order_independent() {
        let batch = Batch::new(vec![
            request(2, 1, get("x")),
            request(1, 2, set("x", "2")),
            request(1, 1, set("x", "9")),
            request(1, 1, set("x", "1")),
        ]);
        let keys: Vec<_> = batch.requests().iter().map(|r| (r.client, r.seq)).collect();
        assert_eq!(keys, [(1, 1), (1, 2), (2, 1)]);
        assert_eq!(batch.requests()[0].op, set("x", "1"), "the smallest op wins an id clash");
        assert!(batch.contains((1, 0, 2)) && !batch.contains((2, 0, 2)) && !batch.contains((1, 5, 2)));
        let a = Batch::new(vec![request(1, 1, set("x", "9")), request(3, 1, get("y"))]);
        let b = Batch::new(vec![
            request(1, 1, set("x", "1")),
            request(2, 1, get("x")),
            request(1, 2, set("x", "2")),
        ]);
        let ab = Batch::combine([&a, &b]);
        assert_eq!(ab, Batch::combine([&b, &a]));
        assert_eq!(ab.len(), 4);
        assert_eq!(Batch::combine([]), Batch::empty());
    }

    #[test]
    fn batches_are_capped_by_count_and_size_as_a_prefix() {
        let many: Vec<_> = (0..1000).map(|i| request(i % 7, i, get("k"))).collect();
        let batch = Batch::new(many);
        assert_eq!(batch.len(), MAX_BATCH_REQUESTS);
        assert!(batch.encode().len() <= MAX_BATCH_BYTES);
        let big_key = "\u{10FFFF}".repeat(MAX_KEY_CHARS);
        let big: Vec<_> = (0..MAX_BATCH_REQUESTS as u64).map(|i| request(i, 1, set(&big_key, "1"))).collect();
        let batch = Batch::new(big);
        let encoded = batch.encode();
        assert!(batch.len() < MAX_BATCH_REQUESTS, "the size cap binds first");
        assert!(encoded.len() <= MAX_BATCH_BYTES);
        let one_more = Batch::new(vec![request(batch.len() as u64, 1, set(&big_key, "1"))]);
        assert!(
            encoded.len() + 1 + one_more.encode().len() - BATCH_OVERHEAD > MAX_BATCH_BYTES,
            "the cap is tight"
        );
        assert_eq!(Batch::decode(encoded), Ok(batch));
    }

    #[test]
    fn a_client_never_loses_a_smaller_seq_to_the_cap() {
        let n = MAX_BATCH_REQUESTS as u64 + 100;
        let requests: Vec<_> = (0..n).map(|i| request(5, n - i, deposit("k", "1"))).collect();
        let batch = Batch::new(requests);
        let seqs: Vec<_> = batch.requests().iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=MAX_BATCH_REQUESTS as u64).collect::<Vec<_>>());
    }

    #[test]
    fn batch_encoding_is_canonical_json() {
        let batch = Batch::new(vec![request(7, 3, deposit("foo", "5")), request(1, 1, get("bar"))]);
        let text = String::from_utf8(batch.encode().to_vec()).unwrap();
        // The bytes made once with the batch are exactly what serializing it gives.
        assert_eq!(batch.encode(), serde_json::to_vec(&batch).unwrap());
        assert_eq!(Batch::empty().encode(), serde_json::to_vec(&Batch::empty()).unwrap());
        assert_eq!(
            text,
            r#"{"requests":[{"client":1,"seq":1,"op":{"type":"get","key":"bar"}},{"client":7,"seq":3,"op":{"type":"deposit","key":"foo","amount":"$5"}}]}"#
        );
        assert_eq!(Batch::decode(text.as_bytes()), Ok(batch));
        assert_eq!(Batch::empty().encode(), br#"{"requests":[]}"#);
        assert_eq!(Batch::empty().encode().len(), BATCH_OVERHEAD);
    }

    #[test]
    fn decode_rejects_anything_but_canonical_valid_batches() {
        let not_canonical = [
            r#"{"requests": []}"#,
            r#"{"requests":[]} "#,
            r#"{"requests":[{"client":1,"seq":1,"op":{"type":"set","key":"a","amount":"10"}}]}"#,
            r#"{"requests":[{"seq":1,"client":1,"op":{"type":"get","key":"a"}}]}"#,
        ];
        for text in not_canonical {
            assert_eq!(
                Batch::decode(text.as_bytes()),
                Err(batch_error(BatchProblem::NotCanonical)),
                "{text}"
            );
        }
        let unsorted = r#"{"requests":[{"client":2,"seq":1,"op":{"type":"get","key":"a"}},{"client":1,"seq":1,"op":{"type":"get","key":"a"}}]}"#;
        assert_eq!(Batch::decode(unsorted.as_bytes()), Err(batch_error(BatchProblem::NotSorted)));
        let repeated = r#"{"requests":[{"client":1,"seq":1,"op":{"type":"get","key":"a"}},{"client":1,"seq":1,"op":{"type":"get","key":"b"}}]}"#;
        assert_eq!(Batch::decode(repeated.as_bytes()), Err(batch_error(BatchProblem::NotSorted)));
        let undecodable = [
            "",
            "garbage",
            "[]",
            r#"{"requests":[],"extra":1}"#,
            r#"{"requests":[{"client":1,"seq":1,"op":{"type":"get","key":"a:b"}}]}"#,
            r#"{"requests":[{"client":1,"seq":1,"op":{"type":"set","key":"a","amount":"-1"}}]}"#,
            r#"{"requests":[{"client":1,"seq":1,"op":{"type":"burn","key":"a"}}]}"#,
            r#"{"requests":[{"client":-1,"seq":1,"op":{"type":"get","key":"a"}}]}"#,
        ];
        for text in undecodable {
            assert!(matches!(Batch::decode(text.as_bytes()), Err(WalletError::Decode { .. })), "{text}");
        }
        let huge = vec![b' '; MAX_BATCH_BYTES + 1];
        assert_eq!(
            Batch::decode(&huge),
            Err(batch_error(BatchProblem::TooLarge { bytes: MAX_BATCH_BYTES + 1 }))
        );
        let too_many: Vec<String> = (0..=MAX_BATCH_REQUESTS)
            .map(|i| format!(r#"{{"client":{i},"seq":0,"op":{{"type":"get","key":"a"}}}}"#))
            .collect();
        let text = format!(r#"{{"requests":[{}]}}"#, too_many.join(","));
        let count = MAX_BATCH_REQUESTS + 1;
        assert_eq!(Batch::decode(text.as_bytes()), Err(batch_error(BatchProblem::TooManyRequests { count })));
    }

    #[test]
    fn decode_never_panics_on_mangled_input() {
        let valid =
            Batch::new(vec![request(1, 1, set("é😀", "10.5")), request(2, 7, withdraw("b\\\"", "1"))])
                .encode()
                .to_vec();
        let mut rng = Lcg(7);
        for _ in 0..5000 {
            let mut bytes = valid.clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(bytes.len() + 1);
                match rng.below(3) {
                    0 => bytes.insert(at, rng.next() as u8),
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.truncate(at),
                }
            }
            if let Ok(batch) = Batch::decode(&bytes) {
                assert_eq!(batch.encode(), bytes);
            }
        }
    }

    /// Two signed requests in sessions, and a plain-text one.
    fn signed_batch() -> (Batch, ClientKey) {
        let (key, _) = ClientKey::generate().unwrap();
        let requests = vec![
            key.sign(Request::new(0, 2, deposit("foo", "5")).with_session(12)),
            key.sign(Request::new(0, 1, Op::Register { nonce: 99 })),
            request(TEXT_CLIENT_BIT | 3, 1, get("foo")),
        ];
        (Batch::new(requests), key)
    }

    #[test]
    fn signed_requests_in_sessions_round_trip_canonically() {
        let (batch, key) = signed_batch();
        let ids: Vec<_> = batch.requests().iter().map(Request::id).collect();
        let me = key.client_id();
        assert_eq!(ids, [(me, 0, 1), (me, 12, 2), (TEXT_CLIENT_BIT | 3, 0, 1)]);
        let bytes = batch.encode();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let auth = batch.requests()[1].auth.unwrap();
        let expected = format!(
            r#"{{"client":{me},"seq":2,"session":12,"op":{{"type":"deposit","key":"foo","amount":"$5"}},"auth":{{"key":"{}","sig":"{}"}}}}"#,
            auth.key,
            String::from(auth.sig)
        );
        assert!(text.contains(&expected), "{text}");
        assert_eq!(Batch::decode(bytes), Ok(batch.clone()));
        let sig = String::from(auth.sig);
        let swapped = text.replace(
            &format!(r#""auth":{{"key":"{}","sig":"{sig}"}}"#, auth.key),
            &format!(r#""auth":{{"sig":"{sig}","key":"{}"}}"#, auth.key),
        );
        let not_canonical = [
            text.replacen(r#""seq":1,"op""#, r#""seq":1,"session":0,"op""#, 1),
            text.replace(
                r#""op":{"type":"get","key":"foo"}"#,
                r#""op":{"type":"get","key":"foo"},"auth":null"#,
            ),
            swapped,
        ];
        for variant in not_canonical {
            assert_ne!(variant, text);
            assert_eq!(
                Batch::decode(variant.as_bytes()),
                Err(batch_error(BatchProblem::NotCanonical)),
                "{variant}"
            );
        }
        let mut padded = auth.key.to_string().into_bytes();
        padded[42] ^= 1; // the last digit before the pad: its low bits are padding bits
        let padded = String::from_utf8(padded).unwrap();
        let undecodable = [
            text.replace(&auth.key.to_string(), &padded),
            text.replace(&sig, &sig[4..]),
            text.replace(r#""sig":"#, r#""extra":1,"sig":"#),
        ];
        for variant in undecodable {
            assert!(
                matches!(Batch::decode(variant.as_bytes()), Err(WalletError::Decode { .. })),
                "{variant}"
            );
        }
    }

    #[test]
    fn a_batch_is_refused_for_any_forged_or_missing_signature() {
        let (batch, _) = signed_batch();
        assert_eq!(batch.verify_signatures(false), Ok(()));
        let text_id = batch.requests()[2].id();
        let unsigned = BatchSignatureError { id: text_id, error: SignatureError::Unsigned };
        assert_eq!(batch.verify_signatures(true), Err(unsigned));
        assert!(unsigned.to_string().contains("is not signed"));
        let signed_only = Batch::new(batch.requests()[..2].to_vec());
        assert_eq!(signed_only.verify_signatures(true), Ok(()));
        let mut forged = signed_only.requests().to_vec();
        forged[1].op = deposit("foo", "500");
        let forged = Batch::new(forged);
        let refused =
            BatchSignatureError { id: forged.requests()[1].id(), error: SignatureError::BadSignature };
        assert_eq!(forged.verify_signatures(false), Err(refused));
        assert_eq!(forged.verify_signatures(true), Err(refused));
        // Requests already verified (by digest) are not checked again.
        let known = [forged.requests()[0].digest()];
        let checked = std::cell::Cell::new(0);
        let verified = |d: &crate::hash::Digest| {
            checked.set(checked.get() + 1);
            known.contains(d)
        };
        assert_eq!(forged.verify_signatures_skipping(true, verified), Err(refused));
        assert_eq!(checked.get(), 2);
        let trusted = [forged.requests()[0].digest(), forged.requests()[1].digest()];
        assert_eq!(forged.verify_signatures_skipping(true, |d| trusted.contains(d)), Ok(()));
        assert_eq!(Batch::empty().verify_signatures(true), Ok(()));
    }
}
