//! A linearizability checker for histories of wallet operations.
//!
//! A history is a set of operations, each with the time it was invoked, the time its
//! response came (or none: its outcome is unknown, e.g. the client gave up) and what the
//! response said. It is *linearizable* if the operations can be put in one sequence that
//! respects real time (an operation that returned before another was invoked comes first)
//! in which each operation with a known response gets exactly that response from a
//! sequential wallet. An operation whose outcome is unknown may take effect at any point
//! after its invocation, or never.
//!
//! The search is Wing & Gong's, with Lowe's just-in-time linearization and memoization
//! (as in Porcupine): walk the calls and returns in time order; linearize a call when the
//! model gives its observed output, backtrack when a return is reached whose call is not
//! linearized yet, and never explore the same (set of linearized operations, state) twice.
//! A return at "never" (unknown outcome) is reached only once every operation with a known
//! response has been linearized: the rest may simply not have happened.
//!
//! Operations on disjoint sets of wallets commute, so the history is split into the
//! connected components of wallets touched together (a transfer joins its two wallets)
//! and each component is checked on its own.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// An operation on the wallets (amounts in cents).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalletOp {
    Set(String, u64),
    Deposit(String, u64),
    Withdraw(String, u64),
    Get(String),
    Transfer(String, String, u64),
}

impl WalletOp {
    /// The wallets it touches.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            WalletOp::Set(k, _) | WalletOp::Deposit(k, _) | WalletOp::Withdraw(k, _) | WalletOp::Get(k) => {
                vec![k]
            }
            WalletOp::Transfer(from, to, _) => vec![from, to],
        }
    }
}

/// What a sequential wallet answers (balances in cents).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// The wallet's balance after the operation (set, deposit, withdraw, get).
    Ok(u64),
    /// Both balances after a transfer.
    Transferred(u64, u64),
    /// A withdrawal or transfer beyond the balance, which is given; nothing changed.
    Insufficient(u64),
    /// The wallet named does not exist.
    NoSuchWallet(String),
    /// A transfer from a wallet to itself.
    SameWallet,
}

/// One operation of a history: times in any unit, all from one clock.
#[derive(Clone, Debug)]
pub struct Event {
    pub op: WalletOp,
    pub invoked: u64,
    /// When the response came, with what it said; `None` if the outcome is unknown.
    pub response: Option<(u64, Output)>,
}

/// The model: each wallet's balance, `None` while it does not exist.
type State = Vec<Option<u64>>;

/// What the sequential wallet does with `op` in `state`: the new state and its answer.
/// `slot` maps a wallet name to its index in the state.
fn step(state: &State, op: &WalletOp, slot: &impl Fn(&str) -> usize) -> (State, Output) {
    let mut next = state.clone();
    let output = match op {
        WalletOp::Set(k, a) => {
            next[slot(k)] = Some(*a);
            Output::Ok(*a)
        }
        WalletOp::Deposit(k, a) => {
            let balance = state[slot(k)].unwrap_or(0) + a;
            next[slot(k)] = Some(balance);
            Output::Ok(balance)
        }
        WalletOp::Withdraw(k, a) => match state[slot(k)] {
            None => Output::NoSuchWallet(k.clone()),
            Some(b) if b < *a => Output::Insufficient(b),
            Some(b) => {
                next[slot(k)] = Some(b - a);
                Output::Ok(b - a)
            }
        },
        WalletOp::Get(k) => match state[slot(k)] {
            None => Output::NoSuchWallet(k.clone()),
            Some(b) => Output::Ok(b),
        },
        WalletOp::Transfer(from, to, a) => match (state[slot(from)], state[slot(to)]) {
            _ if from == to => Output::SameWallet,
            (None, _) => Output::NoSuchWallet(from.clone()),
            (_, None) => Output::NoSuchWallet(to.clone()),
            (Some(f), Some(_)) if f < *a => Output::Insufficient(f),
            (Some(f), Some(t)) => {
                next[slot(from)] = Some(f - a);
                next[slot(to)] = Some(t + a);
                Output::Transferred(f - a, t + a)
            }
        },
    };
    (next, output)
}

/// Why a history is not linearizable.
#[derive(Debug)]
pub struct Violation {
    /// The wallets of the component that fails.
    pub wallets: Vec<String>,
    /// The most operations any attempt linearized, of how many.
    pub best: usize,
    pub total: usize,
    /// The operations that could not be placed after the best attempt.
    pub stuck: Vec<Event>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not linearizable (wallets {:?}): at best {} of {} operations linearized; then none of {:?}",
            self.wallets, self.best, self.total, self.stuck
        )
    }
}

/// Checks a whole history, one component of wallets at a time.
pub fn check(history: &[Event]) -> Result<(), Violation> {
    for (wallets, events) in components(history) {
        check_component(&wallets, &events)?;
    }
    Ok(())
}

/// Splits the history into the connected components of wallets touched together.
pub fn components(history: &[Event]) -> Vec<(Vec<String>, Vec<Event>)> {
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for e in history {
        for k in e.op.keys() {
            let n = names.len();
            names.entry(k).or_insert(n);
        }
    }
    let mut parent: Vec<usize> = (0..names.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for e in history {
        let keys = e.op.keys();
        for pair in keys.windows(2) {
            let (a, b) = (root(&mut parent, names[pair[0]]), root(&mut parent, names[pair[1]]));
            parent[a] = b;
        }
    }
    let mut groups: BTreeMap<usize, (Vec<String>, Vec<Event>)> = BTreeMap::new();
    for (name, &i) in &names {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().0.push(name.to_string());
    }
    for e in history {
        let r = root(&mut parent, names[e.op.keys()[0]]);
        groups.get_mut(&r).expect("every key has a group").1.push(e.clone());
    }
    groups.into_values().collect()
}

/// A set of operation indices.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn flip(&mut self, i: usize) {
        self.0[i / 64] ^= 1 << (i % 64);
    }
    fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// A call or return of operation `op`, in the time-ordered list.
#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    call: bool,
    prev: usize,
    next: usize,
}

/// The doubly linked list of calls and returns in time order; index 0 is the head.
struct Timeline {
    entries: Vec<Entry>,
    /// The index of each operation's return entry.
    returns: Vec<usize>,
}

/// A response time standing for "never".
const NEVER: u64 = u64::MAX;

impl Timeline {
    fn new(events: &[Event]) -> Timeline {
        // Calls before returns at equal times: such operations count as concurrent.
        let mut points: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * events.len());
        for (i, e) in events.iter().enumerate() {
            points.push((e.invoked, false, i));
            points.push((e.response.as_ref().map_or(NEVER, |r| r.0), true, i));
        }
        points.sort();
        let n = points.len();
        let mut entries = vec![Entry { op: usize::MAX, call: false, prev: 0, next: 1 }];
        let mut returns = vec![0; events.len()];
        for (k, &(_, is_return, op)) in points.iter().enumerate() {
            let at = k + 1;
            entries.push(Entry {
                op,
                call: !is_return,
                prev: at - 1,
                next: if at == n { 0 } else { at + 1 },
            });
            if is_return {
                returns[op] = at;
            }
        }
        if n == 0 {
            entries[0].next = 0;
        }
        Timeline { entries, returns }
    }

    fn first(&self) -> usize {
        self.entries[0].next
    }

    fn unlink(&mut self, at: usize) {
        let Entry { prev, next, .. } = self.entries[at];
        self.entries[prev].next = next;
        if next != 0 {
            self.entries[next].prev = prev;
        }
    }

    fn relink(&mut self, at: usize) {
        let Entry { prev, next, .. } = self.entries[at];
        self.entries[prev].next = at;
        if next != 0 {
            self.entries[next].prev = at;
        }
    }

    /// Removes a call and its return (the operation is linearized).
    fn lift(&mut self, call: usize) {
        let ret = self.returns[self.entries[call].op];
        self.unlink(call);
        self.unlink(ret);
    }

    /// Undoes [`Timeline::lift`] (in reverse order).
    fn unlift(&mut self, call: usize) {
        let ret = self.returns[self.entries[call].op];
        self.relink(ret);
        self.relink(call);
    }
}

/// Checks one component (its wallets are `wallets`).
fn check_component(wallets: &[String], events: &[Event]) -> Result<(), Violation> {
    let index: BTreeMap<&str, usize> = wallets.iter().enumerate().map(|(i, k)| (k.as_str(), i)).collect();
    let slot = |k: &str| index[k];
    let mut timeline = Timeline::new(events);
    let mut state: State = vec![None; wallets.len()];
    let mut linearized = Bits::new(events.len());
    let mut seen: HashSet<(Bits, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let (mut best, mut stuck) = (0, Vec::new());
    let mut at = timeline.first();
    loop {
        if at == 0 {
            return Ok(()); // every operation is linearized
        }
        let entry = timeline.entries[at];
        let event = &events[entry.op];
        if entry.call {
            let (next, output) = step(&state, &event.op, &slot);
            let fits = event.response.as_ref().is_none_or(|(_, observed)| *observed == output);
            if fits {
                let mut with = linearized.clone();
                with.flip(entry.op);
                if seen.insert((with.clone(), next.clone())) {
                    stack.push((at, std::mem::replace(&mut state, next)));
                    linearized = with;
                    timeline.lift(at);
                    at = timeline.first();
                    continue;
                }
            }
            at = entry.next;
        } else if event.response.is_none() {
            // Only unknown outcomes are left: they may never have happened.
            return Ok(());
        } else {
            if linearized.count() >= best {
                best = linearized.count();
                stuck = pending_calls(&timeline, events, at);
            }
            let Some((call, previous)) = stack.pop() else {
                return Err(Violation { wallets: wallets.to_vec(), best, total: events.len(), stuck });
            };
            state = previous;
            linearized.flip(timeline.entries[call].op);
            timeline.unlift(call);
            at = timeline.entries[call].next;
        }
    }
}

/// The calls still in the list up to `until` (for the report).
fn pending_calls(timeline: &Timeline, events: &[Event], until: usize) -> Vec<Event> {
    let mut out = Vec::new();
    let mut at = timeline.first();
    while at != 0 && at != until {
        let e = timeline.entries[at];
        if e.call {
            out.push(events[e.op].clone());
        }
        at = e.next;
    }
    out.push(events[timeline.entries[until].op].clone());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(op: WalletOp, invoked: u64, returned: u64, output: Output) -> Event {
        Event { op, invoked, response: Some((returned, output)) }
    }

    fn unknown(op: WalletOp, invoked: u64) -> Event {
        Event { op, invoked, response: None }
    }

    fn set(k: &str, a: u64) -> WalletOp {
        WalletOp::Set(k.into(), a)
    }
    fn deposit(k: &str, a: u64) -> WalletOp {
        WalletOp::Deposit(k.into(), a)
    }
    fn withdraw(k: &str, a: u64) -> WalletOp {
        WalletOp::Withdraw(k.into(), a)
    }
    fn get(k: &str) -> WalletOp {
        WalletOp::Get(k.into())
    }
    fn transfer(f: &str, t: &str, a: u64) -> WalletOp {
        WalletOp::Transfer(f.into(), t.into(), a)
    }

    #[test]
    fn sequential_and_concurrent_linearizable_histories_pass() {
        let history = vec![
            op(set("a", 10), 0, 1, Output::Ok(10)),
            // Two concurrent deposits: the one that answered 15 went first.
            op(deposit("a", 7), 2, 6, Output::Ok(22)),
            op(deposit("a", 5), 3, 5, Output::Ok(15)),
            // A read concurrent with a withdrawal may see either side of it.
            op(withdraw("a", 2), 7, 10, Output::Ok(20)),
            op(get("a"), 8, 9, Output::Ok(22)),
            op(get("b"), 8, 9, Output::NoSuchWallet("b".into())),
            op(set("b", 1), 11, 12, Output::Ok(1)),
            op(transfer("a", "b", 20), 13, 14, Output::Transferred(0, 21)),
            op(transfer("a", "b", 1), 15, 16, Output::Insufficient(0)),
            op(transfer("b", "b", 1), 15, 16, Output::SameWallet),
        ];
        check(&history).unwrap();
    }

    #[test]
    fn a_stale_read_is_caught() {
        let history = vec![
            op(set("a", 10), 0, 1, Output::Ok(10)),
            op(set("a", 20), 2, 3, Output::Ok(20)),
            op(get("a"), 4, 5, Output::Ok(10)),
        ];
        let violation = check(&history).unwrap_err();
        assert_eq!((violation.best, violation.total), (2, 3), "{violation}");
        // The same read concurrent with the second set is fine.
        let concurrent = vec![history[0].clone(), history[1].clone(), op(get("a"), 2, 5, Output::Ok(10))];
        check(&concurrent).unwrap();
    }

    #[test]
    fn a_lost_write_is_caught() {
        // Both deposits acknowledged, but the later read sees only one of them.
        let history = vec![
            op(set("a", 10), 0, 1, Output::Ok(10)),
            op(deposit("a", 5), 2, 4, Output::Ok(15)),
            op(deposit("a", 3), 2, 4, Output::Ok(18)),
            op(get("a"), 5, 6, Output::Ok(15)),
        ];
        assert!(check(&history).is_err());
        // Two deposits both claiming to have seen the initial balance: one was lost.
        let both_first = vec![
            op(set("a", 10), 0, 1, Output::Ok(10)),
            op(deposit("a", 5), 2, 4, Output::Ok(15)),
            op(deposit("a", 3), 2, 4, Output::Ok(13)),
        ];
        assert!(check(&both_first).is_err());
    }

    #[test]
    fn a_double_applied_deposit_is_caught() {
        let history = vec![
            op(set("a", 10), 0, 1, Output::Ok(10)),
            op(deposit("a", 5), 2, 3, Output::Ok(15)),
            op(get("a"), 4, 5, Output::Ok(20)),
        ];
        assert!(check(&history).is_err());
        // Also when the deposit's outcome is unknown: it may apply once, not twice.
        let unknown_twice = vec![
            op(set("a", 10), 0, 1, Output::Ok(10)),
            unknown(deposit("a", 5), 2),
            op(get("a"), 4, 5, Output::Ok(15)),
            op(get("a"), 6, 7, Output::Ok(20)),
        ];
        assert!(check(&unknown_twice).is_err());
    }

    #[test]
    fn a_half_applied_transfer_is_caught() {
        let setup = || vec![op(set("a", 10), 0, 1, Output::Ok(10)), op(set("b", 10), 0, 1, Output::Ok(10))];
        let mut history = setup();
        history.push(op(transfer("a", "b", 5), 2, 3, Output::Transferred(5, 15)));
        history.push(op(get("a"), 4, 5, Output::Ok(5)));
        history.push(op(get("b"), 4, 5, Output::Ok(10)));
        assert!(check(&history).is_err(), "the credit was lost");
        // A transfer whose outcome is unknown: both reads must agree on whether it happened.
        let mut history = setup();
        history.push(unknown(transfer("a", "b", 5), 2));
        history.push(op(get("a"), 4, 5, Output::Ok(5)));
        history.push(op(get("b"), 6, 7, Output::Ok(10)));
        assert!(check(&history).is_err(), "debited but never credited");
        let mut history = setup();
        history.push(unknown(transfer("a", "b", 5), 2));
        history.push(op(get("a"), 4, 5, Output::Ok(5)));
        history.push(op(get("b"), 6, 7, Output::Ok(15)));
        check(&history).unwrap();
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_take_effect_but_not_undo() {
        let base = || vec![op(set("a", 10), 0, 1, Output::Ok(10)), unknown(deposit("a", 5), 2)];
        let mut took_effect_late = base();
        took_effect_late.push(op(get("a"), 3, 4, Output::Ok(10)));
        took_effect_late.push(op(get("a"), 5, 6, Output::Ok(15)));
        check(&took_effect_late).unwrap();
        let mut never = base();
        never.push(op(get("a"), 3, 4, Output::Ok(10)));
        check(&never).unwrap();
        let mut undone = base();
        undone.push(op(get("a"), 3, 4, Output::Ok(15)));
        undone.push(op(get("a"), 5, 6, Output::Ok(10)));
        assert!(check(&undone).is_err());
        // Not before its invocation.
        let early = vec![
            op(set("a", 10), 0, 1, Output::Ok(10)),
            op(get("a"), 2, 3, Output::Ok(15)),
            unknown(deposit("a", 5), 4),
        ];
        assert!(check(&early).is_err());
    }

    #[test]
    fn independent_wallets_are_checked_apart_and_transfers_join_them() {
        let history = vec![
            op(set("a", 1), 0, 1, Output::Ok(1)),
            op(set("b", 2), 0, 1, Output::Ok(2)),
            op(set("c", 3), 0, 1, Output::Ok(3)),
            op(transfer("a", "b", 1), 2, 3, Output::Transferred(0, 3)),
        ];
        let groups = components(&history);
        let wallets: Vec<Vec<String>> = groups.iter().map(|(w, _)| w.clone()).collect();
        assert_eq!(wallets, vec![vec!["a".to_string(), "b".to_string()], vec!["c".to_string()]]);
        assert_eq!(groups[0].1.len(), 3);
        check(&history).unwrap();
    }

    #[test]
    fn a_long_history_of_many_concurrent_clients_checks_quickly() {
        // Eight clients, each depositing 1 into "a" in overlapping windows of eight, with
        // balances consistent with the deposits' invocation order; then a few reads.
        let mut history = vec![op(set("a", 0), 0, 1, Output::Ok(0))];
        for k in 0..400u64 {
            history.push(op(deposit("a", 1), 10 + 10 * k, 10 + 10 * k + 75, Output::Ok(k + 1)));
        }
        history.push(op(get("a"), 10_000, 10_001, Output::Ok(400)));
        let started = std::time::Instant::now();
        check(&history).unwrap();
        eprintln!("402 operations, up to 8 concurrent, checked in {:?}", started.elapsed());
        history.push(op(get("a"), 10_002, 10_003, Output::Ok(399)));
        assert!(check(&history).is_err());
    }
}
