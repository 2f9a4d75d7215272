//! Quorum sets and the quorum math of Federated Byzantine Agreement.
//!
//! In FBA every node *i* chooses its own **quorum slices** (the paper's Q(i)): sets of
//! nodes whose agreement is enough to convince *i*. We describe them, as stellar-core and
//! the IETF draft do, with a recursive threshold structure: a [`QuorumSet`] of `threshold`
//! out of `validators` ∪ `inner_sets`; a set of nodes *S* satisfies it (contains a slice)
//! when at least `threshold` entries are satisfied, a validator by being in *S* and an inner
//! set recursively.
//!
//! From slices the paper derives the two sets federated voting is built on:
//!
//! * a **quorum** U is a non-empty set of nodes that contains a slice of each of its
//!   members ([`is_quorum`]). Given the latest statement of each peer (and so its quorum
//!   set) we find the largest quorum inside a set of nodes by a fixpoint: repeatedly drop
//!   every node whose own slices are not satisfied by the rest, then ask whether what is
//!   left satisfies the local node's slices;
//! * a set B is **v-blocking** for node *v* when it intersects every slice of *v*
//!   ([`QuorumSet::is_v_blocking`]); for a threshold `t` of `n` entries that means at least
//!   `n - t + 1` entries are blocked.
//!
//! Nothing here logs, allocates on the hot path beyond small vectors, or does I/O.

pub mod intersection;

use crate::hash::{Digest, Sha256};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A node's identity. In the wallet service this is the node's id on the command line
/// (by default its UDP port).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Deepest nesting of inner sets a sane quorum set may have (as in stellar-core).
pub const MAX_NESTING_DEPTH: usize = 4;
/// Most distinct nodes a sane quorum set may name (as in stellar-core).
pub const MAX_NODES: usize = 1000;

/// Q(v): a node's quorum slices as a threshold over validators and nested inner sets.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumSet {
    /// How many of the entries (validators and inner sets together) must be satisfied.
    pub threshold: u32,
    /// Nodes that are entries of this set.
    #[serde(default)]
    pub validators: Vec<NodeId>,
    /// Nested quorum sets that are entries of this set.
    #[serde(default)]
    pub inner_sets: Vec<QuorumSet>,
}

/// Why a quorum set is not sane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuorumSetError {
    /// The threshold is zero or larger than the number of entries.
    BadThreshold {
        /// The offending threshold.
        threshold: u32,
        /// The number of entries it counts over.
        entries: usize,
    },
    /// Inner sets are nested deeper than [`MAX_NESTING_DEPTH`].
    TooDeep,
    /// A node appears more than once.
    DuplicateNode(NodeId),
    /// More than [`MAX_NODES`] nodes.
    TooManyNodes,
}

impl fmt::Display for QuorumSetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuorumSetError::BadThreshold { threshold, entries } => {
                write!(f, "threshold {threshold} must be between 1 and the number of entries ({entries})")
            }
            QuorumSetError::TooDeep => {
                write!(f, "inner sets nested deeper than {MAX_NESTING_DEPTH} levels")
            }
            QuorumSetError::DuplicateNode(n) => write!(f, "node {n} appears more than once"),
            QuorumSetError::TooManyNodes => write!(f, "more than {MAX_NODES} nodes"),
        }
    }
}

impl std::error::Error for QuorumSetError {}

impl QuorumSet {
    /// A flat quorum set: `threshold` of `validators`.
    pub fn new(threshold: u32, validators: impl IntoIterator<Item = NodeId>) -> Self {
        QuorumSet { threshold, validators: validators.into_iter().collect(), inner_sets: vec![] }
    }

    /// The quorum set `{node}` with threshold 1, which stellar-core assigns to the sender
    /// of an EXTERNALIZE: such a node has finished and needs no one else.
    pub fn singleton(node: NodeId) -> Self {
        QuorumSet::new(1, [node])
    }

    /// Number of entries the threshold counts over.
    pub fn entries(&self) -> usize {
        self.validators.len() + self.inner_sets.len()
    }

    /// Checks threshold bounds, nesting depth, duplicates and size.
    pub fn check_sanity(&self) -> Result<(), QuorumSetError> {
        let mut seen = BTreeSet::new();
        self.check_level(0, &mut seen)?;
        if seen.is_empty() {
            // Unreachable when every level has 1 <= threshold <= entries, kept for clarity.
            return Err(QuorumSetError::BadThreshold { threshold: self.threshold, entries: 0 });
        }
        Ok(())
    }

    fn check_level(&self, depth: usize, seen: &mut BTreeSet<NodeId>) -> Result<(), QuorumSetError> {
        if depth > MAX_NESTING_DEPTH {
            return Err(QuorumSetError::TooDeep);
        }
        let entries = self.entries();
        if self.threshold == 0 || self.threshold as usize > entries {
            return Err(QuorumSetError::BadThreshold { threshold: self.threshold, entries });
        }
        for &v in &self.validators {
            if !seen.insert(v) {
                return Err(QuorumSetError::DuplicateNode(v));
            }
            if seen.len() > MAX_NODES {
                return Err(QuorumSetError::TooManyNodes);
            }
        }
        self.inner_sets.iter().try_for_each(|inner| inner.check_level(depth + 1, seen))
    }

    /// Every node named anywhere in the set.
    pub fn nodes(&self) -> BTreeSet<NodeId> {
        let mut out = BTreeSet::new();
        self.collect_nodes(&mut out);
        out
    }

    fn collect_nodes(&self, out: &mut BTreeSet<NodeId>) {
        out.extend(self.validators.iter().copied());
        self.inner_sets.iter().for_each(|i| i.collect_nodes(out));
    }

    /// Does the set of nodes described by `contains` include one of these slices?
    pub fn is_slice(&self, contains: &impl Fn(NodeId) -> bool) -> bool {
        self.threshold > 0
            && self.entries_satisfying(self.threshold as usize, contains, &|inner| inner.is_slice(contains))
    }

    /// Does the set described by `contains` intersect every slice (is it v-blocking)?
    /// With threshold t of n entries, n - t + 1 blocked entries leave fewer than t that
    /// could be satisfied.
    pub fn is_v_blocking(&self, contains: &impl Fn(NodeId) -> bool) -> bool {
        self.threshold > 0
            && self.entries_satisfying(self.entries() + 1 - self.threshold as usize, contains, &|inner| {
                inner.is_v_blocking(contains)
            })
    }

    /// Do at least `needed` entries qualify: validators in `contains`, inner sets by `inner`?
    fn entries_satisfying(
        &self,
        needed: usize,
        contains: &impl Fn(NodeId) -> bool,
        inner: &impl Fn(&QuorumSet) -> bool,
    ) -> bool {
        let validators = self.validators.iter().filter(|v| contains(**v)).count();
        validators >= needed
            || validators + self.inner_sets.iter().filter(|q| inner(q)).take(needed - validators).count()
                >= needed
    }

    /// The leader-selection weight of `node` (draft §3.3): the fraction of this node's
    /// slices that contain `node`, i.e. the product of `threshold / entries` along the path
    /// from the root to `node`, scaled to `u64::MAX`. Zero when `node` is absent.
    pub fn weight(&self, node: NodeId) -> u64 {
        self.weight_fraction(node).map(|(num, den)| ((u64::MAX as u128 * num) / den) as u64).unwrap_or(0)
    }

    fn weight_fraction(&self, node: NodeId) -> Option<(u128, u128)> {
        let (t, n) = (self.threshold as u128, self.entries() as u128);
        if self.validators.contains(&node) {
            return Some((t, n));
        }
        self.inner_sets.iter().find_map(|inner| {
            let (num, den) = inner.weight_fraction(node)?;
            // Keep the fraction small: reduce before the numbers grow past u128.
            let (num, den) = (num * t, den * n);
            let g = gcd(num, den);
            Some((num / g, den / g))
        })
    }

    /// A hash of the quorum set that is identical on every build and platform:
    /// SHA-256 over a canonical, length-prefixed encoding of the tree as given.
    pub fn stable_hash(&self) -> Digest {
        let mut h = Sha256::new();
        self.feed(&mut h);
        h.finish()
    }

    fn feed(&self, h: &mut Sha256) {
        h.update(&self.threshold.to_be_bytes());
        h.update(&(self.validators.len() as u32).to_be_bytes());
        for v in &self.validators {
            h.update(&v.0.to_be_bytes());
        }
        h.update(&(self.inner_sets.len() as u32).to_be_bytes());
        for inner in &self.inner_sets {
            inner.feed(h);
        }
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// Two disjoint quorums of `nodes` all using the flat quorum set `threshold` of `nodes`,
/// if there are any: any `threshold` of them is a quorum, so two can be disjoint exactly
/// when 2·threshold ≤ n. The first `threshold` nodes in order and the next `threshold`.
pub fn flat_split(threshold: u32, nodes: &BTreeSet<NodeId>) -> Option<(BTreeSet<NodeId>, BTreeSet<NodeId>)> {
    let t = threshold as usize;
    if 2 * t > nodes.len() {
        return None;
    }
    let a = nodes.iter().take(t).copied().collect();
    let b = nodes.iter().skip(t).take(t).copied().collect();
    Some((a, b))
}

/// Is there a quorum inside `members` that satisfies `local`?
///
/// `members` maps each candidate node to its own quorum set (taken from its latest
/// statement). The fixpoint removes every node whose slices are not satisfied by the
/// remaining nodes; what remains is the largest quorum inside `members` (quorums are closed
/// under union), and the answer is whether it contains a slice of the local node.
pub fn is_quorum(local: &QuorumSet, members: &BTreeMap<NodeId, &QuorumSet>) -> bool {
    let mut alive: BTreeSet<NodeId> = members.keys().copied().collect();
    loop {
        let before = alive.len();
        let snapshot = alive.clone();
        alive.retain(|n| members[n].is_slice(&|x| snapshot.contains(&x)));
        if alive.len() == before {
            break;
        }
    }
    local.is_slice(&|x| alive.contains(&x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn ids(v: &[u64]) -> Vec<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    /// A random sane quorum set over nodes drawn without repetition from `pool`.
    fn random_qset(rng: &mut Rng, pool: &mut Vec<NodeId>, depth: usize) -> QuorumSet {
        let mut q = QuorumSet { threshold: 0, validators: vec![], inner_sets: vec![] };
        let want = 1 + rng.below(4) as usize;
        for _ in 0..want {
            if depth < 2 && rng.below(3) == 0 && pool.len() >= 2 {
                q.inner_sets.push(random_qset(rng, pool, depth + 1));
            } else if let Some(n) = pool.pop() {
                q.validators.push(n);
            }
        }
        if q.entries() == 0 {
            q.validators.push(pool.pop().unwrap_or(NodeId(999)));
        }
        q.threshold = 1 + rng.below(q.entries() as u64) as u32;
        q
    }

    /// All minimal slices, by the definition: pick `threshold` entries and a slice of each.
    fn slices(q: &QuorumSet) -> Vec<BTreeSet<NodeId>> {
        let entries: Vec<Vec<BTreeSet<NodeId>>> = q
            .validators
            .iter()
            .map(|v| vec![BTreeSet::from([*v])])
            .chain(q.inner_sets.iter().map(slices))
            .collect();
        let mut out = vec![];
        for mask in 0u32..(1 << entries.len()) {
            if mask.count_ones() != q.threshold {
                continue;
            }
            let mut partial = vec![BTreeSet::new()];
            for (i, options) in entries.iter().enumerate() {
                if mask & (1 << i) == 0 {
                    continue;
                }
                partial = partial
                    .iter()
                    .flat_map(|p| options.iter().map(move |o| p.union(o).copied().collect()))
                    .collect();
            }
            out.extend(partial);
        }
        out
    }

    fn subsets(universe: &[NodeId]) -> impl Iterator<Item = BTreeSet<NodeId>> + '_ {
        (0u32..(1 << universe.len())).map(move |mask| {
            universe.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, n)| *n).collect()
        })
    }

    #[test]
    fn slices_and_blocking_sets_match_brute_force() {
        let mut rng = Rng::new(7);
        for _ in 0..300 {
            let mut pool = ids(&(1..=9).collect::<Vec<_>>());
            rng.shuffle(&mut pool);
            let q = random_qset(&mut rng, &mut pool, 0);
            q.check_sanity().expect("generator builds sane sets");
            let all: Vec<NodeId> = q.nodes().into_iter().collect();
            let minimal = slices(&q);
            for s in subsets(&all) {
                let brute_slice = minimal.iter().any(|m| m.is_subset(&s));
                assert_eq!(q.is_slice(&|n| s.contains(&n)), brute_slice, "{q:?} {s:?}");
                let brute_blocking = minimal.iter().all(|m| !m.is_disjoint(&s));
                assert_eq!(q.is_v_blocking(&|n| s.contains(&n)), brute_blocking, "{q:?} {s:?}");
            }
        }
    }

    #[test]
    fn quorum_fixpoint_matches_brute_force() {
        let mut rng = Rng::new(11);
        for _ in 0..300 {
            let universe = ids(&(1..=7).collect::<Vec<_>>());
            let qsets: BTreeMap<NodeId, QuorumSet> = universe
                .iter()
                .map(|&n| {
                    let mut pool = universe.clone();
                    rng.shuffle(&mut pool);
                    (n, random_qset(&mut rng, &mut pool, 0))
                })
                .collect();
            let local = &qsets[&NodeId(1)];
            for present in subsets(&universe) {
                let members: BTreeMap<NodeId, &QuorumSet> = present.iter().map(|n| (*n, &qsets[n])).collect();
                // Brute force: some subset U of present is a quorum (a slice of each member
                // inside U) and contains a slice of the local node.
                let brute = subsets(&present.iter().copied().collect::<Vec<_>>()).any(|u| {
                    !u.is_empty()
                        && u.iter().all(|m| qsets[m].is_slice(&|x| u.contains(&x)))
                        && local.is_slice(&|x| u.contains(&x))
                });
                assert_eq!(is_quorum(local, &members), brute, "{qsets:?} {present:?}");
            }
        }
    }

    #[test]
    fn sanity_rejects_each_fault_with_its_reason() {
        let ok = QuorumSet::new(3, ids(&[1, 2, 3, 4]));
        assert_eq!(ok.check_sanity(), Ok(()));
        assert_eq!(
            QuorumSet::new(5, ids(&[1, 2, 3, 4])).check_sanity(),
            Err(QuorumSetError::BadThreshold { threshold: 5, entries: 4 })
        );
        assert_eq!(
            QuorumSet::new(0, ids(&[1])).check_sanity(),
            Err(QuorumSetError::BadThreshold { threshold: 0, entries: 1 })
        );
        assert_eq!(
            QuorumSet::new(1, ids(&[1, 2, 1])).check_sanity(),
            Err(QuorumSetError::DuplicateNode(NodeId(1)))
        );
        let mut deep = QuorumSet::new(1, ids(&[100]));
        for i in 0..5 {
            deep = QuorumSet { threshold: 1, validators: ids(&[i]), inner_sets: vec![deep] };
        }
        assert_eq!(deep.check_sanity(), Err(QuorumSetError::TooDeep));
        let huge = QuorumSet::new(1, (0..1001).map(NodeId));
        assert_eq!(huge.check_sanity(), Err(QuorumSetError::TooManyNodes));
        let nested_dup = QuorumSet {
            threshold: 1,
            validators: ids(&[1]),
            inner_sets: vec![QuorumSet::new(1, ids(&[2, 1]))],
        };
        assert_eq!(nested_dup.check_sanity(), Err(QuorumSetError::DuplicateNode(NodeId(1))));
    }

    #[test]
    fn weights_follow_the_path_fractions() {
        let q = QuorumSet::new(3, ids(&[1, 2, 3, 4]));
        assert_eq!(q.weight(NodeId(1)), ((u64::MAX as u128 * 3) / 4) as u64);
        assert_eq!(q.weight(NodeId(9)), 0);
        let tiered = QuorumSet {
            threshold: 2,
            validators: vec![],
            inner_sets: vec![QuorumSet::new(2, ids(&[1, 2, 3])), QuorumSet::new(2, ids(&[4, 5, 6]))],
        };
        // 2/2 * 2/3
        assert_eq!(tiered.weight(NodeId(5)), ((u64::MAX as u128 * 2) / 3) as u64);
    }

    #[test]
    fn stable_hash_is_pinned() {
        // Pinned (computed independently with Python's hashlib over the documented
        // encoding) so a change of encoding, which would split a network, cannot go unnoticed.
        let q = QuorumSet::new(3, ids(&[3000, 3001, 3002, 3003]));
        assert_ne!(q.stable_hash(), QuorumSet::new(2, ids(&[3000, 3001, 3002, 3003])).stable_hash());
        assert_eq!(&crate::hash::hex(&q.stable_hash())[..16], PINNED_4_OF_3);
    }
    const PINNED_4_OF_3: &str = "0b580de3fc6a2fdd";
}
