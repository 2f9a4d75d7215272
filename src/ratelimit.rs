//! One token bucket for every rate limit of the node: per-peer ledger bytes and signature
//! verifications (reader and verifier threads, [`crate::net`]), and catch-up answers per peer.
//!
//! A bucket holds up to `burst` tokens and earns `rate` tokens a second; an event of cost
//! `c` is allowed when `c` tokens are there, and takes them. Time is passed in, so the
//! bucket is deterministic under test.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

/// A token bucket.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket earning `rate` tokens a second, holding at most `burst`.
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket { rate, burst, tokens: burst, at: now }
    }

    /// Whether an event costing `cost` tokens may happen at `now` (it takes them if so).
    pub fn allow(&mut self, cost: f64, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.at = now.max(self.at);
        if self.tokens < cost {
            return false;
        }
        self.tokens -= cost;
        true
    }
}

/// One [`TokenBucket`] per key (per peer), created full on first use.
#[derive(Clone, Debug)]
pub struct Buckets<K> {
    rate: f64,
    burst: f64,
    buckets: HashMap<K, TokenBucket>,
}

impl<K: Hash + Eq> Buckets<K> {
    /// Buckets earning `rate` tokens a second, holding at most `burst` each.
    pub fn new(rate: f64, burst: f64) -> Buckets<K> {
        Buckets { rate, burst, buckets: HashMap::new() }
    }

    /// Whether `key` may spend `cost` tokens at `now` (they are taken if so).
    pub fn allow(&mut self, key: K, cost: f64, now: Instant) -> bool {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.entry(key).or_insert_with(|| TokenBucket::new(rate, burst, now)).allow(cost, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0, t0);
        assert!((0..3).all(|_| b.allow(1.0, t0)));
        assert!(!b.allow(1.0, t0), "burst spent");
        assert!(b.allow(1.0, t0 + Duration::from_millis(100)), "one token earned in 100 ms");
        assert!(!b.allow(1.0, t0 + Duration::from_millis(100)));
        assert!(b.allow(3.0, t0 + Duration::from_secs(60)) && !b.allow(1.0, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn keys_have_their_own_buckets() {
        let t0 = Instant::now();
        let mut buckets = Buckets::new(1.0, 1.0);
        assert!(buckets.allow(1, 1.0, t0));
        assert!(!buckets.allow(1, 1.0, t0));
        assert!(buckets.allow(2, 1.0, t0));
    }
}
