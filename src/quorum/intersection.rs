//! Quorum intersection: do every two quorums of a network share a node?
//!
//! # What is decided
//!
//! A network maps each known node *v* to its quorum set Q(v), which describes *v*'s
//! **slices** (see [`super`]). A **quorum** is a non-empty set U of known nodes that
//! contains a slice of each of its members. SCP guarantees safety only to networks that
//! *enjoy quorum intersection*: every two quorums share a node (once faulty nodes are
//! deleted, which is the caller's business). If two disjoint quorums exist, each can
//! externalize a different value without hearing from the other: the network can fork.
//! [`check`] decides this exactly. When it fails, it returns two disjoint **minimal
//! quorums** (quorums with no proper subset that is a quorum) as the counter-example; when
//! it holds, it counts the minimal quorums. Deciding it is coNP-complete (Lachowski 2019),
//! so no algorithm is polynomial in the worst case. The search below is Lachowski's
//! algorithm, as stellar-core implements it, with extra pruning and a symmetry reduction
//! that makes tiered (organisation-based) networks cheap.
//!
//! # Facts the search rests on
//!
//! 1. *Quorums are closed under union.* So every set S of nodes holds a largest quorum, its
//!    **maximal quorum**, possibly empty, and **contraction** finds it: repeatedly delete
//!    each node whose quorum set is not satisfied by the nodes left. A deleted node has no
//!    slice inside any subset of what was left, so it is in no quorum inside S; every node
//!    that survives has a slice among the survivors, so they form a quorum.
//! 2. *Intersection holds iff every two minimal quorums intersect*, because every quorum
//!    contains a minimal one.
//! 3. *A minimal quorum is strongly connected* in the "depends on" graph (an edge from *v* to
//!    each node named in Q(v)). Take a minimal quorum M and a sink component K of the graph
//!    restricted to M: each member of K has a slice inside M, and the part of that slice in M
//!    is in K (K is a sink), so K is a quorum, and K = M by minimality. Hence every minimal
//!    quorum lies inside one strongly connected component (SCC) of the whole graph.
//! 4. *A split needs only its smaller side.* If disjoint quorums exist, so do disjoint
//!    minimal quorums A and B with |A| ≤ |B|; B lies in the maximal quorum of the nodes
//!    outside A, which therefore has at least |A| nodes.
//!
//! # The algorithm
//!
//! **Stage 1: contraction and SCCs.** Contract the set of all known nodes (unknown nodes,
//! named in quorum sets but absent from the network, are simply never present). An empty
//! result means no quorum exists at all: [`Intersection::NoQuorum`]. Otherwise compute the
//! SCCs of the depends-on graph over that maximal quorum with Tarjan's algorithm and
//! contract each. By fact 3 every minimal quorum lies inside one of these; if two are
//! non-empty, their quorums are disjoint and the network splits. If only one is, call it
//! the **core**: it holds every minimal quorum, and the question is whether it holds two
//! disjoint ones.
//!
//! **Stage 2: minimal-quorum enumeration.** A depth-first search over states (C, R): C is
//! the set of nodes *committed* to the quorum being built, R the nodes *remaining* to
//! decide; each step picks a node of R and branches on committing it or dropping it. Every
//! minimal quorum M is reached exactly once, on the path that commits exactly the nodes of
//! M, unless a prune cuts that path. For a state (C, R):
//!
//! * if C contains a quorum, the branch ends: that quorum is the only minimal quorum
//!   reachable from here. Looking for a split, if the nodes outside C contract to a
//!   non-empty quorum, the two are disjoint: report them. Counting, count C if it is itself
//!   a minimal quorum;
//! * looking for a split, if the maximal quorum outside C has fewer nodes than C, no side
//!   of a split containing C can be the smaller one (fact 4): prune. (Lachowski's "|C| at
//!   most half the nodes" is the weak form of this.) This is the prune that makes a verdict
//!   cheaper than a census;
//! * if the maximal quorum of C ∪ R does not contain C, prune: every quorum inside C ∪ R lies
//!   inside that maximal quorum. Otherwise shrink R to its part inside it;
//! * if some committed node x is *idle*, prune: x is idle when, for every other candidate
//!   node (in C ∪ R) whose quorum set names x, adding or removing x can no longer change
//!   whether a set between C and C ∪ R satisfies that quorum set (the part of it holding x
//!   is already satisfied without x, or cannot be satisfied at all). A quorum M containing
//!   C would then remain one without x, so M is not minimal. This cuts the many states
//!   that commit a lone node of an organisation that is never completed.
//!
//! The node branched on is one that a committed node whose slices C does not yet contain
//! still *wants* (it appears in an unsatisfied part of its quorum set), the one most nodes
//! depend on (highest in-degree) first. Any choice is complete; this one heads straight for
//! quorums and never commits a node no one needs.
//!
//! **Symmetry.** Tiered networks have many *interchangeable* nodes: x and y are when
//! exchanging them throughout the network maps every node's quorum set onto the quorum set
//! of the exchanged node (the nodes of one organisation, typically). Such exchanges
//! compose, so interchangeability is an equivalence, and its classes can be permuted
//! freely without changing which sets are (minimal) quorums. Likewise two classes can be
//! interchangeable as wholes (two organisations of one tier), forming *families*. The
//! search only builds sets in a canonical form: within each class, a prefix of the class
//! (dropping a node drops the rest of its class with it), and within each family,
//! non-increasing counts from one class to the next. Every set has exactly one canonical
//! image under these symmetries, which is a minimal quorum, or one side of a split, if the
//! set is; so a split is found if one exists, and each canonical minimal quorum counts for
//! the size of its orbit: per class, binomial(|class|, |C ∩ class|), times per family the
//! number of ways to deal its counts out to its classes. For 7 organisations × 3 nodes
//! with a 5-of-7 top tier, 5,103 minimal quorums have a single canonical form.
//!
//! # Cost
//!
//! Contraction takes at most |S| passes, each linear in the total size of the quorum sets;
//! sets are dense bitsets over node indices. The search is exponential in the worst case.
//! Measured in the test profile: symmetric tiered networks of up to 48 nodes (16
//! organisations × 3, or 7 × 7) take a few milliseconds; asymmetric ones (each
//! organisation trusting its own selection) of 36-48 nodes take 10-500 ms, most of it
//! spent counting minimal quorums once the verdict is known.

use super::{NodeId, QuorumSet, QuorumSetError};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A network: each node's quorum set. Nodes named in quorum sets but absent from the map
/// are unknown and are never satisfied (they cannot be in any quorum).
pub type Network = BTreeMap<NodeId, QuorumSet>;

/// The verdict of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intersection {
    /// Every two quorums intersect.
    Holds {
        /// The number of minimal quorums of the network (e.g. 4 for 3 of 4), saturating at
        /// `usize::MAX`. Symmetric ones are counted, not visited one by one.
        minimal_quorums: usize,
    },
    /// Two disjoint quorums: the network can fork. Both are minimal quorums, and the first
    /// is the smaller in the order of [`BTreeSet`].
    Split(BTreeSet<NodeId>, BTreeSet<NodeId>),
    /// No quorum exists at all (the network can never decide).
    NoQuorum,
}

impl fmt::Display for Intersection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Intersection::Holds { minimal_quorums } => {
                write!(f, "quorum intersection holds ({minimal_quorums} minimal quorums)")
            }
            Intersection::Split(a, b) => write!(f, "disjoint quorums {} and {}", Nodes(a), Nodes(b)),
            Intersection::NoQuorum => write!(f, "no quorum exists"),
        }
    }
}

/// Displays a set of nodes as `{1, 2, 3}`, e.g. one side of a counter-example.
#[derive(Clone, Copy, Debug)]
pub struct Nodes<'a>(pub &'a BTreeSet<NodeId>);

impl fmt::Display for Nodes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{")?;
        for (i, n) in self.0.iter().enumerate() {
            write!(f, "{}{n}", if i == 0 { "" } else { ", " })?;
        }
        write!(f, "}}")
    }
}

/// Checks whether every two quorums of `network` intersect. Deterministic: the same
/// network always gives the same verdict and the same counter-example.
pub fn check(network: &Network) -> Intersection {
    let core = match core(network) {
        Ok(core) => core,
        Err(verdict) => return verdict,
    };
    let symmetry = Symmetry::find(&core);
    if let Err((a, b)) = Search::new(&core, &symmetry, Goal::Split).run() {
        return split(&core, &a, &b);
    }
    // Every minimal quorum lies in the core (fact 3, and no other SCC holds a quorum). A
    // census never reports a split.
    let minimal_quorums = Search::new(&core, &symmetry, Goal::Census).run().unwrap_or_default();
    Intersection::Holds { minimal_quorums }
}

/// Stage 1: the core (the one contracted SCC that holds quorums) compiled on its own, or
/// the verdict if there is no quorum or two SCCs hold quorums.
fn core(network: &Network) -> Result<Fbas, Intersection> {
    let all = Fbas::compile(network, network.keys().copied().collect());
    let maximal = all.contract(&Bits::full(all.len()));
    if maximal.is_empty() {
        return Err(Intersection::NoQuorum);
    }
    let mut quorate = strongly_connected(&all.edges(&maximal), &maximal)
        .into_iter()
        .map(|component| all.contract(&component))
        .filter(|quorum| !quorum.is_empty());
    // The maximal quorum holds a minimal quorum, inside one SCC (fact 3): never `None`.
    let core = quorate.next().ok_or(Intersection::NoQuorum)?;
    match quorate.next() {
        Some(other) => Err(split(&all, &core, &other)),
        None => Ok(Fbas::compile(network, all.ids_of(&core))),
    }
}

/// Is `set` a quorum of `network`: non-empty, all known, and holding a slice of each member?
pub fn is_quorum_in(network: &Network, set: &BTreeSet<NodeId>) -> bool {
    !set.is_empty() && set.iter().all(|n| network.get(n).is_some_and(|q| q.is_slice(&|x| set.contains(&x))))
}

/// The network a single node assumes at start-up: every node its quorum set names (and
/// `me`) uses that same quorum set.
pub fn symmetric(me: NodeId, qset: &QuorumSet) -> Network {
    qset.nodes().into_iter().chain([me]).map(|n| (n, qset.clone())).collect()
}

/// The verdict for two disjoint quorums of `fbas`: both shrunk to minimal quorums, the
/// smaller set first.
fn split(fbas: &Fbas, a: &Bits, b: &Bits) -> Intersection {
    let a = fbas.ids_of(&fbas.minimize(a.clone())).into_iter().collect::<BTreeSet<_>>();
    let b = fbas.ids_of(&fbas.minimize(b.clone())).into_iter().collect::<BTreeSet<_>>();
    if a <= b {
        Intersection::Split(a, b)
    } else {
        Intersection::Split(b, a)
    }
}

// ---------------------------------------------------------------------------------------
// Reading networks
// ---------------------------------------------------------------------------------------

/// Why a network file could not be read.
#[derive(Debug)]
pub enum NetworkFileError {
    /// Not JSON, or not shaped like a network.
    Json(serde_json::Error),
    /// The same node is listed twice (in one file or across merged files).
    DuplicateNode(NodeId),
    /// A node's quorum set fails [`QuorumSet::check_sanity`].
    InsaneQuorumSet {
        /// The node whose quorum set it is.
        node: NodeId,
        /// What is wrong with it.
        error: QuorumSetError,
    },
}

impl fmt::Display for NetworkFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkFileError::Json(e) => write!(f, "not a network description: {e}"),
            NetworkFileError::DuplicateNode(n) => write!(f, "node {n} is listed more than once"),
            NetworkFileError::InsaneQuorumSet { node, error } => {
                write!(f, "the quorum set of node {node} is not sane: {error}")
            }
        }
    }
}

impl std::error::Error for NetworkFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NetworkFileError::Json(e) => Some(e),
            NetworkFileError::InsaneQuorumSet { error, .. } => Some(error),
            NetworkFileError::DuplicateNode(_) => None,
        }
    }
}

/// One node of a network file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEntry {
    node: NodeId,
    #[serde(alias = "quorum_set")]
    qset: QuorumSet,
}

/// A whole network file, stellar-core style.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkFile {
    nodes: Vec<NodeEntry>,
}

/// Reads a network description for `check-quorum`. Two shapes are accepted:
///
/// * stellar-core-like: `{"nodes": [{"node": 1, "qset": {"threshold": 2, "validators":
///   [1, 2, 3]}}, ...]}`;
/// * a single node: `{"node": 1, "qset": {...}}`.
///
/// `quorum_set` may be written for `qset`; quorum sets use the fields of [`QuorumSet`]
/// (`threshold`, `validators`, `inner_sets`). A node listed twice, or with a quorum set that
/// is not sane, is an error.
pub fn parse_network(text: &str) -> Result<Network, NetworkFileError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(NetworkFileError::Json)?;
    let entries = if value.get("nodes").is_some() {
        serde_json::from_value::<NetworkFile>(value).map_err(NetworkFileError::Json)?.nodes
    } else {
        vec![serde_json::from_value::<NodeEntry>(value).map_err(NetworkFileError::Json)?]
    };
    let mut network = Network::new();
    for NodeEntry { node, qset } in entries {
        qset.check_sanity().map_err(|error| NetworkFileError::InsaneQuorumSet { node, error })?;
        if network.insert(node, qset).is_some() {
            return Err(NetworkFileError::DuplicateNode(node));
        }
    }
    Ok(network)
}

/// Combines several networks (e.g. one file per node) into one; a node present in two of
/// them is an error, even with the same quorum set.
pub fn merge(networks: impl IntoIterator<Item = Network>) -> Result<Network, NetworkFileError> {
    let mut merged = Network::new();
    for (node, qset) in networks.into_iter().flatten() {
        if merged.insert(node, qset).is_some() {
            return Err(NetworkFileError::DuplicateNode(node));
        }
    }
    Ok(merged)
}

// ---------------------------------------------------------------------------------------
// Dense bitsets over node indices
// ---------------------------------------------------------------------------------------

/// A set of node indices `0..n` as 64-bit words.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Bits(Vec<u64>);

impl Bits {
    fn empty(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }

    fn full(n: usize) -> Self {
        let mut bits = Bits::empty(n);
        (0..n).for_each(|i| bits.insert(i));
        bits
    }

    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn remove(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    fn with(&self, i: usize) -> Bits {
        let mut out = self.clone();
        out.insert(i);
        out
    }

    fn without(&self, i: usize) -> Bits {
        let mut out = self.clone();
        out.remove(i);
        out
    }

    fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    fn is_subset(&self, other: &Bits) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }

    fn zip_with(&self, other: &Bits, op: impl Fn(u64, u64) -> u64) -> Bits {
        Bits(self.0.iter().zip(&other.0).map(|(a, b)| op(*a, *b)).collect())
    }

    fn union(&self, other: &Bits) -> Bits {
        self.zip_with(other, |a, b| a | b)
    }

    fn intersection(&self, other: &Bits) -> Bits {
        self.zip_with(other, |a, b| a & b)
    }

    fn minus(&self, other: &Bits) -> Bits {
        self.zip_with(other, |a, b| a & !b)
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0
            .iter()
            .enumerate()
            .flat_map(|(w, &word)| (0..64).filter(move |b| word & (1 << b) != 0).map(move |b| w * 64 + b))
    }
}

// ---------------------------------------------------------------------------------------
// A network compiled to node indices
// ---------------------------------------------------------------------------------------

/// A quorum set over node indices. Unknown validators are left out (they are never
/// satisfied, so they only ever count against the threshold, which is kept as it was).
#[derive(Clone, Debug)]
struct Slices {
    /// Entries needed; `usize::MAX` for a zero threshold, which [`QuorumSet::is_slice`]
    /// never accepts.
    threshold: usize,
    validators: Vec<usize>,
    inner: Vec<Slices>,
}

impl Slices {
    fn compile(qset: &QuorumSet, index: &BTreeMap<NodeId, usize>) -> Slices {
        Slices {
            threshold: if qset.threshold == 0 { usize::MAX } else { qset.threshold as usize },
            validators: qset.validators.iter().filter_map(|v| index.get(v).copied()).collect(),
            inner: qset.inner_sets.iter().map(|q| Slices::compile(q, index)).collect(),
        }
    }

    /// Does `set` contain one of these slices?
    fn satisfied_by(&self, set: &Bits) -> bool {
        let validators = self.validators.iter().filter(|v| set.contains(**v)).count();
        validators >= self.threshold
            || validators + self.inner.iter().filter(|q| q.satisfied_by(set)).count() >= self.threshold
    }

    /// Adds to `out` the nodes outside `set` that could help satisfy these slices, if `set`
    /// does not yet.
    fn wanted(&self, set: &Bits, out: &mut Bits) {
        if self.satisfied_by(set) {
            return;
        }
        self.validators.iter().filter(|v| !set.contains(**v)).for_each(|v| out.insert(*v));
        self.inner.iter().for_each(|q| q.wanted(set, out));
    }

    /// Could `x` decide whether a set S with `low` ⊆ S ⊆ `high` satisfies these slices, with
    /// S and S without `x` on different sides? (An over-approximation.)
    fn hinges_on(&self, x: usize, low: &Bits, high: &Bits) -> bool {
        !self.satisfied_by(low)
            && self.satisfied_by(high)
            && (self.validators.contains(&x) || self.inner.iter().any(|q| q.hinges_on(x, low, high)))
    }

    fn for_each_node(&self, f: &mut impl FnMut(usize)) {
        self.validators.iter().for_each(|v| f(*v));
        self.inner.iter().for_each(|q| q.for_each_node(f));
    }
}

/// A network over node indices `0..ids.len()`.
struct Fbas {
    ids: Vec<NodeId>,
    qsets: Vec<Slices>,
}

impl Fbas {
    /// Compiles the part of `network` made of `ids` (in increasing order); every other
    /// node, and any of `ids` that `network` lacks, counts as unknown.
    fn compile(network: &Network, ids: Vec<NodeId>) -> Fbas {
        let index: BTreeMap<NodeId, usize> = ids.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let qsets = ids.iter().map(|n| network.get(n).map(|q| Slices::compile(q, &index)));
        let never = Slices { threshold: usize::MAX, validators: vec![], inner: vec![] };
        let qsets = qsets.map(|q| q.unwrap_or_else(|| never.clone())).collect();
        Fbas { ids, qsets }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn ids_of(&self, set: &Bits) -> Vec<NodeId> {
        set.iter().map(|i| self.ids[i]).collect()
    }

    /// The maximal quorum inside `set` (empty if none): delete unsatisfied nodes until
    /// every node left is satisfied by the rest.
    fn contract(&self, set: &Bits) -> Bits {
        let mut alive = set.clone();
        loop {
            let doomed: Vec<usize> = alive.iter().filter(|&i| !self.qsets[i].satisfied_by(&alive)).collect();
            if doomed.is_empty() {
                return alive;
            }
            doomed.into_iter().for_each(|i| alive.remove(i));
        }
    }

    /// The nodes outside `set` that members of `set` whose slices it lacks could use.
    fn wanted_by(&self, set: &Bits) -> Bits {
        let mut out = Bits::empty(self.len());
        set.iter().for_each(|i| self.qsets[i].wanted(set, &mut out));
        out
    }

    fn is_quorum(&self, set: &Bits) -> bool {
        !set.is_empty() && set.iter().all(|i| self.qsets[i].satisfied_by(set))
    }

    /// Is the quorum `set` minimal: does deleting any one node leave no quorum inside?
    fn is_minimal(&self, set: &Bits) -> bool {
        set.iter().all(|i| self.contract(&set.without(i)).is_empty())
    }

    /// A minimal quorum inside the quorum `quorum`: try deleting each node in turn, keeping
    /// the maximal quorum of the rest when there is one. One pass suffices, since a node
    /// that could not go from a larger set cannot go from a smaller one.
    fn minimize(&self, quorum: Bits) -> Bits {
        (0..self.len()).fold(quorum, |q, i| {
            if !q.contains(i) {
                return q;
            }
            let smaller = self.contract(&q.without(i));
            if smaller.is_empty() {
                q
            } else {
                smaller
            }
        })
    }

    /// For each node, the nodes whose quorum sets name it (increasing).
    fn dependents(&self) -> Vec<Vec<usize>> {
        let mut out = vec![vec![]; self.len()];
        for (z, named) in self.edges(&Bits::full(self.len())).iter().enumerate() {
            named.iter().for_each(|x| out[*x].push(z));
        }
        out
    }

    /// The depends-on graph restricted to `within`: for each node, the nodes (in `within`)
    /// its quorum set names, sorted and without repetition.
    fn edges(&self, within: &Bits) -> Vec<Vec<usize>> {
        self.qsets
            .iter()
            .map(|q| {
                let mut out = BTreeSet::new();
                q.for_each_node(&mut |n| {
                    if within.contains(n) {
                        out.insert(n);
                    }
                });
                out.into_iter().collect()
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Stage 1: strongly connected components (Tarjan, iterative)
// ---------------------------------------------------------------------------------------

const UNSEEN: usize = usize::MAX;

/// Tarjan's algorithm with an explicit call stack.
struct Tarjan<'a> {
    edges: &'a [Vec<usize>],
    index: Vec<usize>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    counter: usize,
    components: Vec<Bits>,
}

/// The SCCs of the graph `edges` among the nodes of `within`, ordered by their first node.
fn strongly_connected(edges: &[Vec<usize>], within: &Bits) -> Vec<Bits> {
    let n = edges.len();
    let mut tarjan = Tarjan {
        edges,
        index: vec![UNSEEN; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: vec![],
        counter: 0,
        components: vec![],
    };
    for root in within.iter() {
        if tarjan.index[root] == UNSEEN {
            tarjan.explore(root);
        }
    }
    let mut components = tarjan.components;
    components.sort_by_key(|c| c.iter().next());
    components
}

impl Tarjan<'_> {
    fn enter(&mut self, v: usize) {
        self.index[v] = self.counter;
        self.low[v] = self.counter;
        self.counter += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
    }

    fn explore(&mut self, root: usize) {
        self.enter(root);
        let mut calls = vec![(root, 0usize)];
        while let Some((v, next)) = calls.last_mut() {
            let v = *v;
            if let Some(&w) = self.edges[v].get(*next) {
                *next += 1;
                if self.index[w] == UNSEEN {
                    self.enter(w);
                    calls.push((w, 0));
                } else if self.on_stack[w] {
                    self.low[v] = self.low[v].min(self.index[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                self.low[parent] = self.low[parent].min(self.low[v]);
            }
            if self.low[v] == self.index[v] {
                self.pop_component(v);
            }
        }
    }

    fn pop_component(&mut self, root: usize) {
        let mut component = Bits::empty(self.edges.len());
        while let Some(w) = self.stack.pop() {
            self.on_stack[w] = false;
            component.insert(w);
            if w == root {
                break;
            }
        }
        self.components.push(component);
    }
}

// ---------------------------------------------------------------------------------------
// Symmetry: interchangeable nodes and interchangeable classes
// ---------------------------------------------------------------------------------------

/// A quorum set in a canonical form (entries sorted), so that equal forms mean equal sets.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Canon {
    threshold: usize,
    validators: Vec<usize>,
    inner: Vec<Canon>,
}

impl Canon {
    /// The canonical form of `slices` with every node `i` renamed `rename(i)`.
    fn of(slices: &Slices, rename: &impl Fn(usize) -> usize) -> Canon {
        let mut validators: Vec<usize> = slices.validators.iter().map(|v| rename(*v)).collect();
        validators.sort_unstable();
        let mut inner: Vec<Canon> = slices.inner.iter().map(|q| Canon::of(q, rename)).collect();
        inner.sort_unstable();
        Canon { threshold: slices.threshold, validators, inner }
    }
}

/// Tests whether renamings of the nodes are symmetries of a network.
struct Automorphisms<'a> {
    fbas: &'a Fbas,
    /// Each node's quorum set in canonical form.
    plain: Vec<Canon>,
    /// For each node, the nodes whose quorum sets name it.
    dependents: Vec<Vec<usize>>,
    /// For each node, what any symmetry preserves: how many nodes name it, and the shape
    /// of its quorum set with the names erased. Nodes with different signatures are not
    /// worth comparing further.
    signature: Vec<(usize, Canon)>,
}

impl<'a> Automorphisms<'a> {
    fn new(fbas: &'a Fbas) -> Automorphisms<'a> {
        let dependents = fbas.dependents();
        let plain = fbas.qsets.iter().map(|q| Canon::of(q, &|i| i)).collect();
        let shapes = fbas.qsets.iter().map(|q| Canon::of(q, &|_| 0));
        let signature = dependents.iter().map(Vec::len).zip(shapes).collect();
        Automorphisms { fbas, plain, dependents, signature }
    }

    /// Is exchanging `x` and `y` a symmetry?
    fn interchangeable(&self, x: usize, y: usize) -> bool {
        self.signature[x] == self.signature[y] && self.swap_is_symmetry([(x, y)].into_iter())
    }

    /// Is exchanging the classes `a` and `b` member by member a symmetry?
    fn interchangeable_classes(&self, a: &[usize], b: &[usize]) -> bool {
        a.len() == b.len()
            && self.signature[a[0]] == self.signature[b[0]]
            && self.swap_is_symmetry(a.iter().copied().zip(b.iter().copied()))
    }

    /// Is exchanging the two nodes of each pair (the pairs disjoint) a symmetry: does each
    /// quorum set, renamed, equal the quorum set of the renamed node? Only the swapped nodes
    /// and the nodes naming them can differ.
    fn swap_is_symmetry(&self, pairs: impl Iterator<Item = (usize, usize)>) -> bool {
        let swap: BTreeMap<usize, usize> = pairs.flat_map(|(a, b)| [(a, b), (b, a)]).collect();
        let rename = |i: usize| swap.get(&i).copied().unwrap_or(i);
        let mut affected: BTreeSet<usize> = swap.keys().copied().collect();
        swap.keys().for_each(|k| affected.extend(&self.dependents[*k]));
        affected.into_iter().all(|z| Canon::of(&self.fbas.qsets[z], &rename) == self.plain[rename(z)])
    }
}

/// Splits `items` into groups of equivalent items, comparing each with a group's first
/// (enough for an equivalence relation).
fn group(items: impl Iterator<Item = usize>, same: impl Fn(usize, usize) -> bool) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = vec![];
    for item in items {
        match groups.iter_mut().find(|g| same(g[0], item)) {
            Some(g) => g.push(item),
            None => groups.push(vec![item]),
        }
    }
    groups
}

/// The symmetries the search breaks.
///
/// Nodes x and y are *interchangeable* when exchanging them is a symmetry; exchanges
/// compose (if x↔y and y↔z are symmetries so is x↔z = (x↔y)(y↔z)(x↔y)), so this is an
/// equivalence whose classes can be permuted freely. Likewise two classes of one size are
/// interchangeable when exchanging them member by member is a symmetry (organisations of
/// a tiered network); such classes form *families*.
struct Symmetry {
    /// The classes, each in increasing node order, numbered by their first node.
    classes: Vec<Vec<usize>>,
    /// For each node, the mask of its whole class.
    class_mask: Vec<Bits>,
    /// Families of two or more interchangeable classes (class numbers, increasing).
    families: Vec<Vec<usize>>,
}

impl Symmetry {
    /// No symmetry at all: every node alone in its class.
    #[cfg(test)]
    fn none(fbas: &Fbas) -> Symmetry {
        Symmetry::from_parts(fbas.len(), (0..fbas.len()).map(|i| vec![i]).collect(), vec![])
    }

    /// The classes and families of `fbas`.
    fn find(fbas: &Fbas) -> Symmetry {
        let auto = Automorphisms::new(fbas);
        let classes = group(0..fbas.len(), |x, y| auto.interchangeable(x, y));
        // Singleton classes cannot be interchangeable: their nodes would be.
        let sizable = (0..classes.len()).filter(|k| classes[*k].len() > 1);
        let families = group(sizable, |k, l| auto.interchangeable_classes(&classes[k], &classes[l]));
        let families = families.into_iter().filter(|f| f.len() > 1).collect();
        Symmetry::from_parts(fbas.len(), classes, families)
    }

    fn from_parts(n: usize, classes: Vec<Vec<usize>>, families: Vec<Vec<usize>>) -> Symmetry {
        let mut class_mask = vec![Bits::empty(n); n];
        for class in &classes {
            let mut bits = Bits::empty(n);
            class.iter().for_each(|i| bits.insert(*i));
            class.iter().for_each(|i| class_mask[*i] = bits.clone());
        }
        Symmetry { classes, class_mask, families }
    }

    fn count_in(&self, class: usize, set: &Bits) -> usize {
        self.classes[class].iter().filter(|i| set.contains(**i)).count()
    }

    /// Can `committed`, extended by nodes of `remaining`, still end up in canonical form:
    /// in each family, the counts of members per class non-increasing? That needs each
    /// class's current count to be at most the smallest reachable count before it.
    fn allows(&self, committed: &Bits, remaining: &Bits) -> bool {
        self.families.iter().all(|family| {
            let mut ceiling = usize::MAX;
            family.iter().all(|&k| {
                let low = self.count_in(k, committed);
                let fits = low <= ceiling;
                ceiling = ceiling.min(low + self.count_in(k, remaining));
                fits
            })
        })
    }

    /// How many sets the canonical `set` stands for: per class, the ways to choose that
    /// many members; per family, the ways to deal its counts out to its classes
    /// (saturating).
    fn orbit_size(&self, set: &Bits) -> usize {
        let within = (0..self.classes.len())
            .map(|k| binomial(self.classes[k].len(), self.count_in(k, set)))
            .fold(1u128, u128::saturating_mul);
        let across = self.families.iter().map(|family| {
            let counts: Vec<usize> = family.iter().map(|k| self.count_in(*k, set)).collect();
            multinomial(&counts)
        });
        usize::try_from(across.fold(within, u128::saturating_mul)).unwrap_or(usize::MAX)
    }
}

/// n choose k, saturating at `u128::MAX`.
fn binomial(n: usize, k: usize) -> u128 {
    let k = k.min(n - k);
    (0..k)
        .try_fold(1u128, |acc, i| Some(acc.checked_mul((n - i) as u128)? / (i as u128 + 1)))
        .unwrap_or(u128::MAX)
}

/// The number of distinct orderings of `values` (sorted non-increasing), saturating.
fn multinomial(values: &[usize]) -> u128 {
    let mut left = values.len();
    let mut product = 1u128;
    for run in values.chunk_by(|a, b| a == b) {
        product = product.saturating_mul(binomial(left, run.len()));
        left -= run.len();
    }
    product
}

// ---------------------------------------------------------------------------------------
// Stage 2: minimal-quorum enumeration in the core
// ---------------------------------------------------------------------------------------

/// Two disjoint quorums, as found by the search.
type Disjoint = (Bits, Bits);

/// What a [`Search`] is after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Goal {
    /// Two disjoint quorums: prunes every state that cannot lead to the smaller side of one.
    Split,
    /// The number of minimal quorums: reaches every canonical one.
    Census,
}

/// Lachowski's enumeration of minimal quorums over (committed, remaining) states.
struct Search<'a> {
    fbas: &'a Fbas,
    symmetry: &'a Symmetry,
    goal: Goal,
    /// Nodes in branching order: most depended-on first, then by index (which keeps each
    /// class in its own order).
    order: Vec<usize>,
    /// Minimal quorums counted so far (with their symmetric images).
    found: usize,
    /// For each node, the nodes whose quorum sets name it.
    dependents: Vec<Vec<usize>>,
}

impl<'a> Search<'a> {
    fn new(fbas: &'a Fbas, symmetry: &'a Symmetry, goal: Goal) -> Search<'a> {
        let dependents = fbas.dependents();
        let mut order: Vec<usize> = (0..fbas.len()).collect();
        order.sort_by_key(|i| (std::cmp::Reverse(dependents[*i].len()), *i));
        Search { fbas, symmetry, goal, order, found: 0, dependents }
    }

    /// Two disjoint quorums if there are any ([`Goal::Split`]); the number of minimal
    /// quorums otherwise ([`Goal::Census`], or a split search that found none).
    fn run(mut self) -> Result<usize, Disjoint> {
        let n = self.fbas.len();
        match self.visit(&Bits::empty(n), Bits::full(n)) {
            Some(pair) => Err(pair),
            None => Ok(self.found),
        }
    }

    /// Searches the states below (`committed`, `remaining`).
    fn visit(&mut self, committed: &Bits, remaining: Bits) -> Option<Disjoint> {
        if !self.symmetry.allows(committed, &remaining) {
            return None;
        }
        if !self.fbas.contract(committed).is_empty() {
            return self.examine(committed);
        }
        if self.goal == Goal::Split && !self.may_split(committed) {
            return None;
        }
        let remaining = self.extensible(committed, remaining)?;
        if self.has_idle(committed, &remaining) {
            return None;
        }
        let pick = self.pick(committed, &remaining)?;
        if let Some(pair) = self.visit(&committed.with(pick), remaining.without(pick)) {
            return Some(pair);
        }
        self.visit(committed, remaining.minus(&self.symmetry.class_mask[pick]))
    }

    /// Could a split have a side that contains `committed` and is no larger than the
    /// other side? The other side lies in the maximal quorum of the rest of the nodes.
    fn may_split(&self, committed: &Bits) -> bool {
        self.rest(committed).len() >= committed.len()
    }

    /// The maximal quorum of the nodes outside `set`.
    fn rest(&self, set: &Bits) -> Bits {
        self.fbas.contract(&Bits::full(self.fbas.len()).minus(set))
    }

    /// `committed` contains a quorum. Looking for a split: report it with the maximal
    /// quorum of the other nodes, if there is one. Counting: count it if it is a minimal
    /// quorum in canonical form.
    fn examine(&mut self, committed: &Bits) -> Option<Disjoint> {
        match self.goal {
            Goal::Split => {
                let rest = self.rest(committed);
                (!rest.is_empty()).then(|| (self.fbas.contract(committed), rest))
            }
            Goal::Census => {
                // The branching order seldom reaches a set whose family counts are out of
                // order, but such a set's canonical image is counted elsewhere.
                let canonical = self.symmetry.allows(committed, &Bits::empty(self.fbas.len()));
                if canonical && self.fbas.is_quorum(committed) && self.fbas.is_minimal(committed) {
                    self.found = self.found.saturating_add(self.symmetry.orbit_size(committed));
                }
                None
            }
        }
    }

    /// Is some committed node idle: unable to decide any other candidate's satisfaction, so
    /// that a quorum containing `committed` would still be one without it (not minimal)?
    fn has_idle(&self, committed: &Bits, remaining: &Bits) -> bool {
        let high = committed.union(remaining);
        committed.iter().any(|x| {
            let low = committed.without(x);
            let others = self.dependents[x].iter().filter(|z| **z != x && high.contains(**z));
            others.map(|z| &self.fbas.qsets[*z]).all(|q| !q.hinges_on(x, &low, &high))
        })
    }

    /// The part of `remaining` that can join a quorum containing `committed` inside
    /// `committed` ∪ `remaining`, or `None` if there is no such quorum.
    fn extensible(&self, committed: &Bits, remaining: Bits) -> Option<Bits> {
        let extensions = self.fbas.contract(&committed.union(&remaining));
        committed.is_subset(&extensions).then(|| remaining.intersection(&extensions))
    }

    /// The node to branch on: the first in branching order among the remaining nodes that
    /// an unsatisfied committed node still wants (any remaining node at the start).
    fn pick(&self, committed: &Bits, remaining: &Bits) -> Option<usize> {
        let candidates = match committed.is_empty() {
            true => remaining.clone(),
            false => remaining.intersection(&self.fbas.wanted_by(committed)),
        };
        self.order.iter().copied().find(|i| candidates.contains(*i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn ids(v: &[u64]) -> Vec<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    fn set(v: &[u64]) -> BTreeSet<NodeId> {
        ids(v).into_iter().collect()
    }

    fn flat(t: u32, v: &[u64]) -> QuorumSet {
        QuorumSet::new(t, ids(v))
    }

    fn nested(t: u32, v: &[u64], inner: Vec<QuorumSet>) -> QuorumSet {
        QuorumSet { threshold: t, validators: ids(v), inner_sets: inner }
    }

    /// `orgs` organisations of `size` nodes (ids 1..), each a `size/2+1`-of-`size` inner
    /// set, under a top threshold of `top`; every node uses that quorum set.
    fn tiered(orgs: u64, size: u64, top: u32) -> Network {
        tiered_with(orgs, size, size as u32 / 2 + 1, top)
    }

    /// Like [`tiered`], with inner sets of threshold `inner`.
    fn tiered_with(orgs: u64, size: u64, inner: u32, top: u32) -> Network {
        let inner: Vec<QuorumSet> =
            (0..orgs).map(|o| QuorumSet::new(inner, (1..=size).map(|i| NodeId(o * size + i)))).collect();
        let qset = nested(top, &[], inner);
        (1..=orgs * size).map(|n| (NodeId(n), qset.clone())).collect()
    }

    /// `orgs` organisations of 3 nodes (2 of 3 inner sets); each organisation trusts
    /// itself and each other one with probability 0.85, with a threshold above two thirds.
    fn random_tiered(rng: &mut Rng, orgs: u64) -> Network {
        let mut network = Network::new();
        for o in 0..orgs {
            let trusted = (0..orgs).filter(|x| *x == o || rng.chance(0.85));
            let inner: Vec<QuorumSet> =
                trusted.map(|t| flat(2, &[t * 3 + 1, t * 3 + 2, t * 3 + 3])).collect();
            let qset = nested((2 * inner.len() / 3 + 1) as u32, &[], inner);
            network.extend((1..=3).map(|i| (NodeId(o * 3 + i), qset.clone())));
        }
        network
    }

    // -- brute force --------------------------------------------------------------------

    /// All quorums of `network` as bitmasks over its (at most 16) known nodes.
    fn all_quorums(network: &Network) -> (Vec<NodeId>, Vec<u32>) {
        let known: Vec<NodeId> = network.keys().copied().collect();
        let members = |mask: u32| -> BTreeSet<NodeId> {
            known.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, n)| *n).collect()
        };
        let quorums = (1u32..(1 << known.len())).filter(|m| is_quorum_in(network, &members(*m))).collect();
        (known, quorums)
    }

    fn mask_of(known: &[NodeId], s: &BTreeSet<NodeId>) -> u32 {
        known.iter().enumerate().filter(|(_, n)| s.contains(n)).map(|(i, _)| 1 << i).sum()
    }

    fn is_minimal_brute(quorums: &[u32], q: u32) -> bool {
        quorums.iter().all(|&o| o == q || o & !q != 0)
    }

    /// Checks `check` against brute force; returns the verdict's kind (0 holds, 1 split,
    /// 2 no quorum).
    fn agree_with_brute_force(network: &Network) -> usize {
        let verdict = check(network);
        assert_eq!(verdict, check(network), "deterministic");
        let (known, quorums) = all_quorums(network);
        let split_exists = quorums.iter().any(|a| quorums.iter().any(|b| a & b == 0));
        match &verdict {
            Intersection::NoQuorum => {
                assert!(quorums.is_empty(), "{network:?}");
                2
            }
            Intersection::Holds { minimal_quorums } => {
                assert!(!quorums.is_empty() && !split_exists, "{network:?}");
                let minimal = quorums.iter().filter(|q| is_minimal_brute(&quorums, **q)).count();
                assert_eq!(*minimal_quorums, minimal, "{network:?}");
                0
            }
            Intersection::Split(a, b) => {
                let (ma, mb) = (mask_of(&known, a), mask_of(&known, b));
                assert!(is_quorum_in(network, a) && is_quorum_in(network, b), "{network:?} {verdict}");
                assert!(a.is_disjoint(b) && a < b, "{network:?} {verdict}");
                assert!(is_minimal_brute(&quorums, ma) && is_minimal_brute(&quorums, mb), "{verdict}");
                1
            }
        }
    }

    // -- random networks ----------------------------------------------------------------

    /// A random quorum set drawing validators without repetition from `pool`.
    fn random_qset(rng: &mut Rng, pool: &mut Vec<NodeId>, depth: usize, low: bool) -> QuorumSet {
        let mut q = QuorumSet::new(0, []);
        for _ in 0..1 + rng.below(4) {
            if depth < 2 && rng.chance(0.3) && pool.len() >= 2 {
                q.inner_sets.push(random_qset(rng, pool, depth + 1, low));
            } else if let Some(n) = pool.pop() {
                q.validators.push(n);
            }
        }
        if q.entries() == 0 {
            q.validators.push(pool.pop().unwrap_or(NodeId(99)));
        }
        let entries = q.entries() as u64;
        // Low thresholds make splits likely; high ones make intersection likely.
        q.threshold = if low { 1 + rng.below(entries) } else { entries - rng.below(entries.min(2)) } as u32;
        q
    }

    /// A random network over nodes 1..=n of one of five kinds: 0, one shared flat quorum set;
    /// 1, one shared nested set; 2, each node its own flat set; 3, each its own nested set;
    /// 4, organisations. Quorum sets may name a few nodes left out of the network.
    fn random_network(rng: &mut Rng, kind: u64) -> Network {
        if kind == 4 {
            return random_organisations(rng);
        }
        let n = 2 + rng.below(9);
        let unknown = if rng.chance(0.3) { 1 + rng.below(2) } else { 0 };
        let universe: Vec<NodeId> = (1..=n + unknown).map(NodeId).collect();
        let low = rng.chance(0.5);
        let draw = |rng: &mut Rng, nest: bool| {
            let mut pool = universe.clone();
            rng.shuffle(&mut pool);
            pool.truncate(1 + rng.below(pool.len() as u64) as usize);
            if nest {
                random_qset(rng, &mut pool, 0, low)
            } else {
                let t = if low { 1 + rng.below(pool.len() as u64) } else { pool.len() as u64 / 2 + 1 };
                QuorumSet::new(t as u32, pool)
            }
        };
        let shared = draw(rng, kind == 1);
        (1..=n).map(|i| (NodeId(i), if kind < 2 { shared.clone() } else { draw(rng, kind == 3) })).collect()
    }

    /// Two to four organisations of one to three nodes with random inner thresholds (half
    /// of the time all alike); each organisation trusts itself and a random set of the
    /// others (all of them, half of the time).
    fn random_organisations(rng: &mut Rng) -> Network {
        let alike = rng.chance(0.5);
        let (size, threshold) = (1 + rng.below(3), rng.next_u64());
        let sizes: Vec<u64> =
            (0..2 + rng.below(3)).map(|_| if alike { size } else { 1 + rng.below(3) }).collect();
        let mut first = 1;
        let orgs: Vec<QuorumSet> = sizes
            .iter()
            .map(|size| {
                first += size;
                let t = 1 + if alike { threshold % size } else { rng.below(*size) };
                QuorumSet::new(t as u32, (first - size..first).map(NodeId))
            })
            .collect();
        let everyone = rng.chance(0.5);
        let mut network = Network::new();
        for (o, org) in orgs.iter().enumerate() {
            let trusted: Vec<QuorumSet> = (0..orgs.len())
                .filter(|t| everyone || *t == o || rng.chance(0.6))
                .map(|t| orgs[t].clone())
                .collect();
            let qset = nested(1 + rng.below(trusted.len() as u64) as u32, &[], trusted);
            network.extend(org.validators.iter().map(|n| (*n, qset.clone())));
        }
        if rng.chance(0.2) {
            network.remove(&NodeId(1 + rng.below(first - 1)));
        }
        network
    }

    #[test]
    fn agrees_with_brute_force_on_random_networks() {
        let mut rng = Rng::new(2024);
        let mut kinds = [0usize; 3];
        for round in 0..1000 {
            let network = random_network(&mut rng, round % 5);
            kinds[agree_with_brute_force(&network)] += 1;
        }
        assert!(kinds.iter().all(|k| *k >= 50), "too little variety: {kinds:?}");
    }

    /// A search over the whole network, not just its core.
    fn search(network: &Network, symmetric: bool, goal: Goal) -> Result<usize, Disjoint> {
        let fbas = Fbas::compile(network, network.keys().copied().collect());
        let symmetry = if symmetric { Symmetry::find(&fbas) } else { Symmetry::none(&fbas) };
        Search::new(&fbas, &symmetry, goal).run()
    }

    #[test]
    fn small_tiered_networks_agree_with_brute_force() {
        for (orgs, size) in [(2, 2), (2, 3), (2, 5), (3, 2), (3, 3), (4, 2), (5, 2), (10, 1)] {
            for inner in 1..=size as u32 {
                for top in 1..=orgs as u32 {
                    let mut network = tiered_with(orgs, size, inner, top);
                    agree_with_brute_force(&network);
                    network.remove(&NodeId(orgs * size));
                    agree_with_brute_force(&network);
                }
            }
        }
    }

    #[test]
    fn symmetry_changes_nothing_but_the_work() {
        let mut rng = Rng::new(99);
        for round in 0..500 {
            let network = random_network(&mut rng, round % 5);
            let plain = search(&network, false, Goal::Split).is_ok();
            assert_eq!(plain, search(&network, true, Goal::Split).is_ok(), "{network:?}");
            let count = search(&network, false, Goal::Census);
            assert_eq!(count, search(&network, true, Goal::Census), "{network:?}");
        }
    }

    // -- known cases --------------------------------------------------------------------

    #[test]
    fn three_of_four_holds() {
        let network = symmetric(NodeId(1), &flat(3, &[1, 2, 3, 4]));
        assert_eq!(check(&network), Intersection::Holds { minimal_quorums: 4 });
    }

    #[test]
    fn two_of_four_splits() {
        let network = symmetric(NodeId(1), &flat(2, &[1, 2, 3, 4]));
        assert_eq!(check(&network), Intersection::Split(set(&[1, 2]), set(&[3, 4])));
        assert_eq!(check(&network).to_string(), "disjoint quorums {1, 2} and {3, 4}");
    }

    #[test]
    fn two_separate_groups_split() {
        let mut network = symmetric(NodeId(1), &flat(2, &[1, 2]));
        network.extend(symmetric(NodeId(3), &flat(2, &[3, 4])));
        assert_eq!(check(&network), Intersection::Split(set(&[1, 2]), set(&[3, 4])));
    }

    #[test]
    fn tiered_two_of_three_holds() {
        // 3 organisations × 3 nodes: 3 ways to pick 2 orgs × 3 × 3 ways to pick their nodes.
        assert_eq!(check(&tiered(3, 3, 2)), Intersection::Holds { minimal_quorums: 27 });
    }

    #[test]
    fn seven_organisations_of_three() {
        // 5 of 7 organisations: C(7,5) × 3^5 = 5103 minimal quorums of 10 nodes each.
        assert_eq!(check(&tiered(7, 3, 5)), Intersection::Holds { minimal_quorums: 5103 });
        // 4 of 7: two quorums would need 8 organisations.
        assert!(matches!(check(&tiered(7, 3, 4)), Intersection::Holds { .. }));
        // 3 of 7 splits.
        let Intersection::Split(a, b) = check(&tiered(7, 3, 3)) else { panic!("3 of 7 must split") };
        assert_eq!((a.len(), b.len()), (6, 6));
    }

    #[test]
    fn unknown_nodes_and_no_quorum() {
        let mut network = symmetric(NodeId(1), &flat(3, &[1, 2, 3, 4]));
        network.remove(&NodeId(4));
        network.remove(&NodeId(3));
        assert_eq!(check(&network), Intersection::NoQuorum);
        assert_eq!(check(&Network::new()), Intersection::NoQuorum);
        assert_eq!(check(&Network::new()).to_string(), "no quorum exists");
    }

    #[test]
    fn a_quorum_outside_the_scc_of_the_others_splits() {
        // 1 and 2 trust only each other; 3 trusts 1 and 2 but is trusted by no one.
        let mut network = symmetric(NodeId(1), &flat(2, &[1, 2]));
        network.insert(NodeId(3), flat(1, &[1, 3]));
        // {3} alone is a quorum (it trusts itself), disjoint from {1, 2}.
        assert_eq!(check(&network), Intersection::Split(set(&[1, 2]), set(&[3])));
    }

    #[test]
    fn larger_networks_run() {
        // C(orgs, top) ways to pick organisations × ways to pick a majority of each.
        for (orgs, size, top, count) in [
            (10, 3, 7, 120 * 3usize.pow(7)),
            (13, 3, 9, 715 * 3usize.pow(9)),
            (7, 7, 5, 21 * 35usize.pow(5)),
            (16, 3, 11, 4368 * 3usize.pow(11)),
        ] {
            assert_eq!(check(&tiered(orgs, size, top)), Intersection::Holds { minimal_quorums: count });
        }
        let Intersection::Split(a, b) = check(&tiered(16, 3, 8)) else { panic!("8 of 16 must split") };
        assert_eq!((a.len(), b.len()), (16, 16));
        // Asymmetric: each organisation leaves out the next one and needs 8 of the other 12;
        // then any 9 organisations (and no 8) make a minimal quorum.
        let mut network = tiered(13, 3, 8);
        for (n, q) in network.iter_mut() {
            q.inner_sets.remove(((n.0 - 1) / 3 + 1) as usize % 13);
        }
        assert_eq!(check(&network), Intersection::Holds { minimal_quorums: 715 * 3usize.pow(9) });
        let mut rng = Rng::new(5);
        for _ in 0..3 {
            let network = random_tiered(&mut rng, 12);
            assert_eq!(check(&network), check(&network));
        }
    }

    // -- reading files ------------------------------------------------------------------

    #[test]
    fn parses_both_shapes() {
        let many = r#"{"nodes": [
            {"node": 1, "qset": {"threshold": 2, "validators": [1, 2, 3]}},
            {"node": 2, "quorum_set": {"threshold": 1, "validators": [2],
                "inner_sets": [{"threshold": 1, "validators": [3]}]}}
        ]}"#;
        let network = parse_network(many).expect("valid");
        assert_eq!(network[&NodeId(1)], flat(2, &[1, 2, 3]));
        assert_eq!(network[&NodeId(2)], nested(1, &[2], vec![flat(1, &[3])]));
        let one =
            parse_network(r#"{"node": 7, "qset": {"threshold": 1, "validators": [7]}}"#).expect("valid");
        assert_eq!(one, Network::from([(NodeId(7), flat(1, &[7]))]));
        assert_eq!(merge([network, one]).expect("disjoint").len(), 3);
    }

    #[test]
    fn rejects_bad_files() {
        let dup = r#"{"nodes": [{"node": 1, "qset": {"threshold": 1, "validators": [1]}},
                                {"node": 1, "qset": {"threshold": 1, "validators": [2]}}]}"#;
        assert!(matches!(parse_network(dup), Err(NetworkFileError::DuplicateNode(NodeId(1)))));
        let insane = r#"{"node": 4, "qset": {"threshold": 3, "validators": [1, 2]}}"#;
        let err = parse_network(insane).expect_err("insane");
        assert!(matches!(err, NetworkFileError::InsaneQuorumSet { node: NodeId(4), .. }));
        assert!(err.to_string().contains("node 4"), "{err}");
        for bad in
            ["", "{", "[1, 2]", r#"{"node": 1}"#, r#"{"node": 1, "qset": {}, "extra": 0}"#, "{\"nodes\": 3}"]
        {
            assert!(matches!(parse_network(bad), Err(NetworkFileError::Json(_))), "{bad}");
        }
        let a = parse_network(r#"{"node": 1, "qset": {"threshold": 1, "validators": [1]}}"#).expect("valid");
        assert!(matches!(merge([a.clone(), a]), Err(NetworkFileError::DuplicateNode(NodeId(1)))));
    }
}
