//! The replicated state machine: balances, their owners, and the client sessions.

use super::error::quote;
use super::image::Image;
use super::membership::Membership;
use super::session::{Session, SessionKey, Sessions};
use super::table::{Row, Table};
use super::{
    is_text_client, Amount, Batch, Key, Op, Outcome, Reply, Request, WalletError, DEFAULT_SESSION_LIMIT,
    MAX_SEQ_GAP,
};
use std::collections::BTreeSet;

/// What applying a request would do, decided without applying it (see
/// [`Wallet::admission`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Not applied yet: applying it will execute it. Pool it and propose it.
    New,
    /// Already applied (or a retransmitted register of a live session): this is its
    /// reply. Answer it; drop pooled copies.
    Cached(Reply),
    /// Never to be applied: the refusal applying it would give (`duplicate`, `bad_seq` or
    /// `session_expired`). Answer it; drop pooled copies.
    Refuse(Reply),
}

impl Admission {
    /// Whether the request is still to be applied.
    pub fn is_new(&self) -> bool {
        matches!(self, Admission::New)
    }

    /// The reply to give now, unless the request is new.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Admission::New => None,
            Admission::Cached(reply) | Admission::Refuse(reply) => Some(reply),
        }
    }
}

/// The replicated state: wallets in first-insertion order with their owners, and the
/// session table (see the [module docs](crate::wallet#exactly-once-sessions)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wallet {
    /// Wallets, in the order they were first created, found by name.
    table: Table,
    /// Registered sessions and plain-text clients.
    sessions: Sessions,
    /// How many requests have been applied (cached replays and refusals excluded).
    applied: u64,
    /// The cluster configuration the last applied reconfiguration set (`None`: none yet,
    /// each node keeps the one it was started with).
    membership: Option<Membership>,
    /// The client ids whose signed reconfigurations are obeyed (configuration, the same on
    /// every node of a cluster: from the key files).
    operators: BTreeSet<u64>,
}

impl Default for Wallet {
    fn default() -> Wallet {
        Wallet::new()
    }
}

impl Wallet {
    /// No wallets; holds up to [`DEFAULT_SESSION_LIMIT`] sessions.
    pub fn new() -> Wallet {
        Wallet::with_session_limit(DEFAULT_SESSION_LIMIT)
    }

    /// No wallets; holds up to `limit` sessions (at least one). Every replica of a cluster
    /// must use the same limit, for as long as its ledger lives.
    pub fn with_session_limit(limit: usize) -> Wallet {
        Wallet {
            table: Table::new(),
            sessions: Sessions::new(limit),
            applied: 0,
            membership: None,
            operators: BTreeSet::new(),
        }
    }

    /// Unowned wallets with these balances, in this order (e.g. loaded from the database
    /// file), and no sessions. Refuses a name given twice.
    pub fn from_entries(entries: impl IntoIterator<Item = (Key, Amount)>) -> Result<Wallet, WalletError> {
        let mut wallet = Wallet::new();
        for (key, amount) in entries {
            if wallet.table.find(key.as_str()).is_some() {
                return Err(WalletError::DuplicateKey { key: quote(key.as_str()) });
            }
            wallet.create(&key, amount, None);
        }
        Ok(wallet)
    }

    /// A frozen copy of the replicated state, for a checkpoint: it costs one pointer per
    /// [`super::table::CHUNK_ROWS`] wallets plus a copy of the session table.
    pub fn image(&self) -> Image {
        Image {
            applied: self.applied,
            membership: self.membership.clone(),
            sessions: self.sessions.export(),
            rows: self.table.snapshot(),
        }
    }

    /// The wallet `image` was taken from (operators unset: see
    /// [`Wallet::set_operators`]), or why no wallet could have produced it: a repeated
    /// name, a malformed session table, or a membership no reconfiguration would set.
    pub fn from_image(image: Image) -> Result<Wallet, WalletError> {
        let table = Table::from_snapshot(image.rows)
            .map_err(|key| WalletError::DuplicateKey { key: quote(key.as_str()) })?;
        let sessions = Sessions::import(image.sessions, image.applied)?;
        if let Some(membership) = &image.membership {
            if membership.check().as_ref() != Ok(membership) {
                return Err(WalletError::InvalidImage {
                    problem: "a membership no reconfiguration would set",
                });
            }
        }
        let operators = BTreeSet::new();
        Ok(Wallet { table, sessions, applied: image.applied, membership: image.membership, operators })
    }

    /// The balance of `key`, if the wallet exists.
    pub fn get(&self, key: &str) -> Option<Amount> {
        self.table.find(key).map(|i| self.table.row(i).balance)
    }

    /// The client id owning `key`, if the wallet exists and is owned.
    pub fn owner(&self, key: &str) -> Option<u64> {
        self.table.find(key).and_then(|i| self.table.row(i).owner)
    }

    /// All wallets and balances, in first-insertion order (the database file's content).
    pub fn entries(&self) -> impl Iterator<Item = (&Key, Amount)> + '_ {
        self.table.iter().map(|row| (&row.key, row.balance))
    }

    /// How many wallets exist.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no wallet exists.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// How many requests have been applied (cached replays and refusals not counted).
    pub fn applied_count(&self) -> u64 {
        self.applied
    }

    /// Obeys signed reconfigurations from these client ids from now on (set before the
    /// ledger is replayed; every node of a cluster must be given the same ids).
    pub fn set_operators(&mut self, operators: BTreeSet<u64>) {
        self.operators = operators;
    }

    /// The cluster configuration set by the last applied reconfiguration, if any.
    pub fn membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }

    /// How many sessions (registered ones and plain-text clients) the wallet holds.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The most sessions the wallet holds.
    pub fn session_limit(&self) -> usize {
        self.sessions.limit()
    }

    /// The last applied `seq` of `client`'s `session` (0 for a plain-text client's), if
    /// the wallet holds it.
    pub fn last_seq(&self, client: u64, session: u64) -> Option<u64> {
        self.sessions.get((client, session)).map(|s| s.seq)
    }

    /// What [`Wallet::apply`] would do with `request`, without doing it: the node asks
    /// before pooling a request (answering at once unless it is [`Admission::New`]) and
    /// after each slot (dropping pooled requests that are no longer new). Applying a
    /// request that is not new returns exactly the reply given here and changes nothing.
    pub fn admission(&self, request: &Request) -> Admission {
        let refuse = |outcome| Admission::Refuse(Reply::to(request, outcome));
        if let Op::Register { nonce } = request.op {
            return match self.sessions.registered(request.client, nonce) {
                Some(session) => Admission::Cached(Reply::to(request, Outcome::Registered { session })),
                None => Admission::New,
            };
        }
        let sessionless = request.session == 0;
        if sessionless && !is_text_client(request.client) {
            return refuse(Outcome::SessionExpired { session: 0 });
        }
        match self.sessions.get(session_key(request)) {
            Some(session) => admission_by_seq(request, session),
            None if sessionless && request.seq > self.sessions.text_floor() => Admission::New,
            None => refuse(Outcome::SessionExpired { session: request.session }),
        }
    }

    /// [`Wallet::admission`] as a node deciding whether to *pool* a request sees it: a
    /// session id this replica has not issued yet (ids are the register's position among
    /// applied requests, so it is above [`Wallet::applied`]) was issued by replicas that are
    /// ahead of this one, so the request is pooled rather than refused; the decision at
    /// apply time, identical everywhere, is still [`Wallet::admission`]'s.
    pub fn pool_admission(&self, request: &Request) -> Admission {
        match self.admission(request) {
            Admission::Refuse(reply) if matches!(reply.outcome, Outcome::SessionExpired { session } if session > self.applied) => {
                Admission::New
            }
            other => other,
        }
    }

    /// How many requests this replica has applied (session ids are drawn from it).
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Applies one request exactly once (see the
    /// [module docs](crate::wallet#exactly-once-sessions)). A request carrying a
    /// signature is trusted to have been verified (see [`Request::signer`]).
    pub fn apply(&mut self, request: &Request) -> Reply {
        match self.admission(request) {
            Admission::New => self.apply_new(request),
            Admission::Cached(reply) | Admission::Refuse(reply) => reply,
        }
    }

    /// Applies a slot's requests in order, returning one reply per request.
    pub fn apply_batch(&mut self, batch: &Batch) -> Vec<Reply> {
        batch.requests().iter().map(|request| self.apply(request)).collect()
    }

    /// Opens a session for `client` with `nonce` (applies an unsigned register, `seq` 0)
    /// and returns its id: a shortcut for tests and tools driving a wallet directly.
    pub fn register(&mut self, client: u64, nonce: u64) -> u64 {
        let reply = self.apply(&Request::new(client, 0, Op::Register { nonce }));
        reply.outcome.registered_session().unwrap_or(0)
    }

    /// Executes a new request and records it in its session.
    fn apply_new(&mut self, request: &Request) -> Reply {
        self.applied += 1;
        let tick = self.applied;
        let signer = request.signer();
        let outcome = match &request.op {
            Op::Register { nonce } => return self.open_session(request, *nonce, tick),
            op => self.execute(op, signer),
        };
        let reply = Reply::to(request, outcome);
        self.sessions.record(session_key(request), request.seq, reply.clone(), tick);
        reply
    }

    /// Executes an operation other than a register (which opens a session instead); a
    /// `many` runs its operations in order.
    fn execute(&mut self, op: &Op, signer: Option<u64>) -> Outcome {
        match op {
            Op::Set { key, amount } => self.set(key, *amount, signer),
            Op::Deposit { key, amount } => self.deposit(key, *amount, signer),
            Op::Withdraw { key, amount } => self.withdraw(key, *amount, signer),
            Op::Transfer { from, to, amount } => self.transfer(from, to, *amount, signer),
            Op::Get { key } => self.read(key),
            Op::Reconfigure(membership) => self.reconfigure(membership, signer),
            Op::Many { ops } => {
                Outcome::Many { outcomes: ops.as_slice().iter().map(|op| self.execute(op, signer)).collect() }
            }
            Op::Register { .. } => unreachable!("a register opens a session; Ops never lists one"),
        }
    }

    /// Opens session `session` (the register's own tick, so ids only grow).
    fn open_session(&mut self, request: &Request, nonce: u64, session: u64) -> Reply {
        let outcome = Outcome::Registered { session };
        let start = Reply { client: request.client, seq: 0, session, outcome: outcome.clone() };
        self.sessions.open((request.client, session), nonce, start, session);
        Reply::to(request, outcome)
    }

    fn set(&mut self, key: &Key, amount: Amount, signer: Option<u64>) -> Outcome {
        match self.find(key) {
            None => self.create(key, amount, signer),
            Some(i) if !self.may_debit(i, signer) => return Outcome::NotOwner { key: key.clone() },
            Some(i) => self.table.row_mut(i).balance = amount,
        }
        Outcome::Ok { key: key.clone(), balance: amount }
    }

    fn deposit(&mut self, key: &Key, amount: Amount, signer: Option<u64>) -> Outcome {
        let Some(i) = self.find(key) else {
            self.create(key, amount, signer);
            return Outcome::Ok { key: key.clone(), balance: amount };
        };
        let balance = self.table.row(i).balance;
        match balance.checked_add(amount) {
            Some(sum) => {
                self.table.row_mut(i).balance = sum;
                Outcome::Ok { key: key.clone(), balance: sum }
            }
            None => Outcome::Overflow { key: key.clone(), balance, amount },
        }
    }

    fn withdraw(&mut self, key: &Key, amount: Amount, signer: Option<u64>) -> Outcome {
        let Some(i) = self.find(key) else {
            return Outcome::NoSuchWallet { key: key.clone() };
        };
        if !self.may_debit(i, signer) {
            return Outcome::NotOwner { key: key.clone() };
        }
        let balance = self.table.row(i).balance;
        match balance.checked_sub(amount) {
            Some(rest) => {
                self.table.row_mut(i).balance = rest;
                Outcome::Ok { key: key.clone(), balance: rest }
            }
            None => Outcome::InsufficientFunds { key: key.clone(), balance, amount },
        }
    }

    /// Moves `amount` from `from` to `to`, both or neither.
    fn transfer(&mut self, from: &Key, to: &Key, amount: Amount, signer: Option<u64>) -> Outcome {
        if from == to {
            return Outcome::SameWallet { key: from.clone() };
        }
        let Some(f) = self.find(from) else { return Outcome::NoSuchWallet { key: from.clone() } };
        if !self.may_debit(f, signer) {
            return Outcome::NotOwner { key: from.clone() };
        }
        let Some(t) = self.find(to) else { return Outcome::NoSuchWallet { key: to.clone() } };
        let (from_balance, to_balance) = (self.table.row(f).balance, self.table.row(t).balance);
        let Some(rest) = from_balance.checked_sub(amount) else {
            return Outcome::InsufficientFunds { key: from.clone(), balance: from_balance, amount };
        };
        let Some(sum) = to_balance.checked_add(amount) else {
            return Outcome::Overflow { key: to.clone(), balance: to_balance, amount };
        };
        self.table.row_mut(f).balance = rest;
        self.table.row_mut(t).balance = sum;
        Outcome::Transferred { from: from.clone(), from_balance: rest, to: to.clone(), to_balance: sum }
    }

    /// Adopts `membership` if its sender may change it and it is safe and well formed
    /// ([`Membership::check`]). A signed reconfiguration must be signed by an operator
    /// (named in the key files by `fba_server keygen --operator`); an unsigned one can only
    /// reach a batch in development mode, where anyone on the host may send it.
    fn reconfigure(&mut self, membership: &Membership, signer: Option<u64>) -> Outcome {
        if let Some(client) = signer.filter(|client| !self.operators.contains(client)) {
            let reason = format!(
                "client {client} is not an operator of this cluster (operators are named by \
                 `fba_server keygen --operator CLIENT_ID`)"
            );
            return Outcome::ConfigurationRefused { reason };
        }
        match membership.check() {
            Ok(checked) => {
                let outcome = Outcome::Reconfigured { threshold: checked.threshold, members: checked.ids() };
                self.membership = Some(checked);
                outcome
            }
            Err(problem) => Outcome::ConfigurationRefused { reason: problem.to_string() },
        }
    }

    fn read(&self, key: &Key) -> Outcome {
        match self.get(key.as_str()) {
            Some(balance) => Outcome::Ok { key: key.clone(), balance },
            None => Outcome::NoSuchWallet { key: key.clone() },
        }
    }

    /// The row of `key` in the table.
    fn find(&self, key: &Key) -> Option<usize> {
        self.table.find(key.as_str())
    }

    /// Whether `signer` may set or debit wallet `i`: it is unowned, or `signer` owns it.
    fn may_debit(&self, i: usize, signer: Option<u64>) -> bool {
        self.table.row(i).owner.is_none_or(|owner| signer == Some(owner))
    }

    /// Appends a new wallet.
    fn create(&mut self, key: &Key, balance: Amount, owner: Option<u64>) {
        self.table.push(Row { key: key.clone(), balance, owner });
    }
}

/// Where the session table keeps `request`'s session.
fn session_key(request: &Request) -> SessionKey {
    (request.client, request.session)
}

/// The sequence-number rules inside a session the wallet holds.
fn admission_by_seq(request: &Request, session: &Session) -> Admission {
    let last_seq = session.seq;
    if request.seq == last_seq {
        return Admission::Cached(session.reply.clone());
    }
    let outcome = if request.seq < last_seq {
        Outcome::Duplicate { last_seq }
    } else if request.session != 0 && request.seq - last_seq > MAX_SEQ_GAP {
        Outcome::BadSeq { last_seq }
    } else {
        return Admission::New;
    };
    Admission::Refuse(Reply::to(request, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_behind_pools_requests_of_sessions_it_has_not_seen_yet() {
        let mut ahead = Wallet::new();
        let behind = ahead.clone();
        let session = ahead.register(7, 1);
        let request = Request::new(7, 1, Op::Get { key: Key::new("x").expect("key") }).with_session(session);
        assert!(matches!(behind.admission(&request), Admission::Refuse(_)), "apply-time rule unchanged");
        assert!(behind.pool_admission(&request).is_new(), "pooled by a replica that is behind");
        // An old session that this replica did issue and then forgot stays refused.
        let mut evicting = Wallet::with_session_limit(1);
        let old = evicting.register(1, 1);
        evicting.register(2, 1);
        let stale = Request::new(1, 1, Op::Get { key: Key::new("x").expect("key") }).with_session(old);
        assert!(matches!(evicting.pool_admission(&stale), Admission::Refuse(_)));
    }
    use crate::wallet::testing::*;
    use crate::wallet::{parse_text_list, Batch, ClientKey, Image};

    fn entries(wallet: &Wallet) -> Vec<(String, String)> {
        wallet.entries().map(|(k, a)| (k.as_str().to_owned(), a.to_string())).collect()
    }

    fn total(wallet: &Wallet) -> u64 {
        wallet.entries().map(|(_, a)| a.cents()).sum()
    }

    /// Through its JSON, an image rebuilds the very wallet it was taken from: balances,
    /// owners, sessions (a resend is still answered from its session, an evicted client
    /// still refused) and membership, and the two then evolve identically.
    #[test]
    fn an_image_rebuilds_the_wallet_it_was_taken_from() {
        let mut wallet = Wallet::with_session_limit(3);
        let mut owner = TestClient::signed(&mut wallet);
        owner.run(&mut wallet, set("owned", "5"));
        let mut plain = TestClient::unsigned(&mut wallet, 8);
        for n in 0..5000 {
            plain.run(&mut wallet, deposit(&format!("w{n}"), "1"));
        }
        wallet.apply(&request(text_client(4), 2, set("text", "3")));
        let resend = plain.at(plain.seq, deposit("w4999", "1"));
        let json = serde_json::to_string(&wallet.image()).unwrap();
        let mut restored = Wallet::from_image(serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(restored, wallet);
        assert_eq!(restored.owner("owned"), Some(owner.id));
        assert_eq!(restored.apply(&resend), wallet.apply(&resend), "answered from the session");
        let next = plain.next(transfer("w1", "w2", "1"));
        assert_eq!(restored.apply(&next), wallet.apply(&next));
        assert_eq!(restored, wallet);
    }

    /// An image no wallet could have produced is refused.
    #[test]
    fn a_forged_image_is_refused() {
        let mut wallet = Wallet::new();
        TestClient::unsigned(&mut wallet, 3).run(&mut wallet, set("a", "1"));
        let json = serde_json::to_string(&wallet.image()).unwrap();
        let refused = |json: &str| Wallet::from_image(serde_json::from_str(json).unwrap()).unwrap_err();
        let twice = json.replace(r#"[["a","$1",null]]"#, r#"[["a","$1",null],["a","$2",null]]"#);
        assert!(matches!(refused(&twice), WalletError::DuplicateKey { .. }), "{twice}");
        let future = json.replace(r#""applied":2"#, r#""applied":1"#);
        assert!(matches!(refused(&future), WalletError::InvalidImage { .. }), "{future}");
        let unknown = json.replace(r#""applied":2"#, r#""applied":2,"extra":1"#);
        assert!(serde_json::from_str::<Image>(&unknown).is_err());
    }

    /// A `many` request applies its operations in order, each with its outcome (a refused
    /// one changes nothing and the next still runs), once: a resend gets the same list.
    #[test]
    fn a_many_request_applies_its_operations_in_order_once() {
        let mut wallet = Wallet::new();
        let session = wallet.register(5, 1);
        let ops = parse_text_list("set a 10, withdraw a 25, deposit a 5, transfer a b 1, get a").unwrap();
        let many = Op::Many { ops: crate::wallet::Ops::try_from(ops).expect("plain operations") };
        let request = Request::new(5, 1, many).with_session(session);
        let reply = wallet.apply(&request);
        let Outcome::Many { outcomes } = &reply.outcome else { panic!("{reply:?}") };
        let statuses: Vec<String> = outcomes.iter().map(|o| o.to_string()).collect();
        assert_eq!(
            statuses,
            [
                "OK a=$10",
                "ERROR insufficient funds: a has $10, cannot withdraw $25",
                "OK a=$15",
                "ERROR no such wallet: b",
                "OK a=$15"
            ]
        );
        assert!(!reply.outcome.is_ok(), "not every operation succeeded");
        assert_eq!(entries(&wallet), [("a".to_owned(), "$15".to_owned())]);
        assert_eq!(wallet.apply(&request), reply, "a resend is answered from the session");
        assert_eq!(entries(&wallet), [("a".to_owned(), "$15".to_owned())], "and applied once");
    }

    /// A `many` list is 1 to MAX_MANY_OPS plain operations, also when decoded.
    #[test]
    fn a_many_request_lists_only_plain_operations() {
        use crate::wallet::{Ops, WalletError, MAX_MANY_OPS};
        let get = parse_text_list("get a").unwrap().remove(0);
        assert!(Ops::try_from(vec![get.clone(); MAX_MANY_OPS]).is_ok());
        for bad in [vec![], vec![get.clone(); MAX_MANY_OPS + 1], vec![get.clone(), Op::Register { nonce: 1 }]]
        {
            assert!(matches!(Ops::try_from(bad), Err(WalletError::InvalidMany { .. })));
        }
        let nested = r#"{"type":"many","ops":[{"type":"many","ops":[{"type":"get","key":"a"}]}]}"#;
        assert!(serde_json::from_str::<Op>(nested).is_err(), "no nested lists");
        let one = r#"{"type":"many","ops":[{"type":"get","key":"a"}]}"#;
        let op: Op = serde_json::from_str(one).expect("a list of one");
        assert_eq!(serde_json::to_string(&op).expect("encodes"), one, "one encoding");
    }

    #[test]
    fn the_assignment_ends_with_foo_30_and_bar_10_in_insertion_order() {
        let ops = parse_text_list("foo:$10, bar:$30, foo:$20, bar:$20, foo:$30, bar:$10").unwrap();
        let mut json = Wallet::new();
        let mut client = TestClient::unsigned(&mut json, 1);
        let mut text = Wallet::new();
        for (seq, op) in ops.into_iter().enumerate() {
            assert!(client.run(&mut json, op.clone()).is_ok());
            assert!(text.apply(&request(text_client(1), seq as u64 + 1, op)).outcome.is_ok());
        }
        let expected = [("foo".to_owned(), "$30".to_owned()), ("bar".to_owned(), "$10".to_owned())];
        assert_eq!(entries(&json), expected);
        assert_eq!(entries(&text), expected);
    }

    #[test]
    fn operations_change_balances_or_refuse() {
        let mut wallet = Wallet::new();
        let mut client = TestClient::unsigned(&mut wallet, 9);
        let mut run = |wallet: &mut Wallet, op: Op| client.run(wallet, op);
        assert_eq!(run(&mut wallet, get("foo")), Outcome::NoSuchWallet { key: key("foo") });
        assert_eq!(run(&mut wallet, withdraw("foo", "1")), Outcome::NoSuchWallet { key: key("foo") });
        assert!(wallet.is_empty(), "refusals create nothing");
        assert_eq!(
            run(&mut wallet, deposit("foo", "5")),
            Outcome::Ok { key: key("foo"), balance: dollars("5") }
        );
        let refused = run(&mut wallet, withdraw("foo", "10"));
        let expected =
            Outcome::InsufficientFunds { key: key("foo"), balance: dollars("5"), amount: dollars("10") };
        assert_eq!(refused, expected);
        assert_eq!(
            run(&mut wallet, withdraw("foo", "4.99")),
            Outcome::Ok { key: key("foo"), balance: dollars("0.01") }
        );
        assert!(run(&mut wallet, set("bar", "$1000000000000")).is_ok());
        let overflow = run(&mut wallet, deposit("bar", "0.01"));
        let expected = Outcome::Overflow { key: key("bar"), balance: Amount::MAX, amount: dollars("0.01") };
        assert_eq!(overflow, expected);
        assert_eq!(run(&mut wallet, get("bar")), Outcome::Ok { key: key("bar"), balance: Amount::MAX });
        assert_eq!(
            run(&mut wallet, withdraw("foo", "0.01")),
            Outcome::Ok { key: key("foo"), balance: Amount::ZERO }
        );
        assert_eq!(wallet.get("foo"), Some(Amount::ZERO), "an empty wallet still exists");
        assert_eq!(wallet.len(), 2);
        assert_eq!(wallet.owner("foo"), None, "unsigned requests create unowned wallets");
    }

    #[test]
    fn a_repeated_request_is_answered_from_the_cache_without_reapplying() {
        let mut wallet = Wallet::new();
        let client = TestClient::unsigned(&mut wallet, 1);
        let request = client.at(5, deposit("foo", "10"));
        let first = wallet.apply(&request);
        let again = wallet.apply(&request);
        assert_eq!(first, again);
        assert!(first.answers(&request));
        assert_eq!(wallet.get("foo"), Some(dollars("10")));
        assert_eq!(wallet.applied_count(), 2, "the register and the deposit");
        let stale = wallet.apply(&client.at(4, deposit("foo", "10")));
        assert_eq!(stale.outcome, Outcome::Duplicate { last_seq: 5 });
        assert_eq!(wallet.get("foo"), Some(dollars("10")));
        wallet.apply(&client.at(9, deposit("foo", "1")));
        assert_eq!(wallet.get("foo"), Some(dollars("11")), "gaps in seq are allowed");
        assert_eq!(wallet.last_seq(1, client.session), Some(9));
        let mut other = TestClient::unsigned(&mut wallet, 2);
        other.seq = 4;
        other.run(&mut wallet, deposit("foo", "1"));
        assert_eq!(wallet.get("foo"), Some(dollars("12")), "sequence numbers are per session");
    }

    #[test]
    fn refusals_are_cached_too() {
        let mut wallet = Wallet::new();
        let (mut three, mut four) =
            (TestClient::unsigned(&mut wallet, 3), TestClient::unsigned(&mut wallet, 4));
        let request = three.next(withdraw("foo", "1"));
        let refused = wallet.apply(&request);
        four.run(&mut wallet, set("foo", "100"));
        assert_eq!(wallet.apply(&request), refused);
        assert_eq!(wallet.get("foo"), Some(dollars("100")));
    }

    /// The issue: a client goes quiet, 1,030 other clients are served, and its old,
    /// acknowledged request comes again. It must not be applied again.
    #[test]
    fn an_evicted_sessions_retransmission_is_refused_never_applied_again() {
        let mut wallet = Wallet::with_session_limit(1024);
        let mut quiet = TestClient::unsigned(&mut wallet, 1);
        assert!(quiet.run(&mut wallet, set("x", "10")).is_ok());
        let acknowledged = quiet.next(deposit("x", "5"));
        assert!(wallet.apply(&acknowledged).outcome.is_ok());
        for id in 2..=1031 {
            let mut other = TestClient::unsigned(&mut wallet, id);
            other.run(&mut wallet, get("x"));
        }
        assert_eq!(wallet.session_count(), 1024);
        assert_eq!(wallet.last_seq(1, quiet.session), None, "evicted");
        let expired = Outcome::SessionExpired { session: quiet.session };
        assert_eq!(
            wallet.admission(&acknowledged),
            Admission::Refuse(Reply::to(&acknowledged, expired.clone()))
        );
        assert_eq!(wallet.apply(&acknowledged).outcome, expired);
        assert_eq!(wallet.get("x"), Some(dollars("15")));
        assert_eq!(quiet.run(&mut wallet, deposit("x", "5")), expired, "nor any later request of it");
        assert_eq!(wallet.get("x"), Some(dollars("15")));
        // A new session works, and its id is larger than every earlier one.
        let old = quiet.session;
        quiet = TestClient::unsigned(&mut wallet, 1);
        assert!(quiet.session > old && quiet.session == wallet.applied_count());
        assert_eq!(
            quiet.run(&mut wallet, deposit("x", "5")),
            Outcome::Ok { key: key("x"), balance: dollars("20") }
        );
    }

    fn membership(threshold: u32, ids: &[u64]) -> Membership {
        let members = ids
            .iter()
            .map(|id| crate::wallet::membership::Member { id: *id, address: format!("127.0.0.1:{id}") })
            .collect();
        Membership { threshold, members }
    }

    #[test]
    fn a_safe_reconfiguration_is_adopted_and_an_unsafe_or_signed_one_changes_nothing() {
        let mut wallet = Wallet::new();
        let mut admin = TestClient::unsigned(&mut wallet, 5);
        assert_eq!(wallet.membership(), None, "none until a reconfiguration is applied");
        let outcome = admin.run(&mut wallet, Op::Reconfigure(membership(4, &[3004, 3000, 3001, 3002, 3003])));
        assert_eq!(
            outcome,
            Outcome::Reconfigured { threshold: 4, members: vec![3000, 3001, 3002, 3003, 3004] }
        );
        assert!(outcome.is_ok());
        let adopted = wallet.membership().cloned().expect("adopted");
        assert_eq!(adopted.ids(), [3000, 3001, 3002, 3003, 3004], "kept sorted by id");

        let unsafe_one = admin.run(&mut wallet, Op::Reconfigure(membership(2, &[1, 2, 3, 4])));
        assert!(
            matches!(&unsafe_one, Outcome::ConfigurationRefused { reason } if reason.contains("disjoint")),
            "{unsafe_one:?}"
        );
        assert!(!unsafe_one.is_ok());
        assert_eq!(wallet.membership(), Some(&adopted), "a refusal changes nothing");

        let mut signed = TestClient::signed(&mut wallet);
        let refused = signed.run(&mut wallet, Op::Reconfigure(membership(1, &[1])));
        assert!(
            matches!(&refused, Outcome::ConfigurationRefused { reason } if reason.contains("not an operator")),
            "{refused:?}"
        );
        assert_eq!(wallet.membership(), Some(&adopted), "only operators' signed reconfigurations count");
        wallet.set_operators(BTreeSet::from([signed.id]));
        let obeyed = signed.run(&mut wallet, Op::Reconfigure(membership(1, &[1])));
        assert_eq!(obeyed, Outcome::Reconfigured { threshold: 1, members: vec![1] });
        wallet.set_operators(BTreeSet::new());
        let outcome = admin.run(&mut wallet, Op::Reconfigure(membership(4, &[3004, 3000, 3001, 3002, 3003])));
        assert!(outcome.is_ok());

        let mut replica = Wallet::new();
        let batch =
            Batch::new(vec![admin.at(1, Op::Reconfigure(membership(4, &[3004, 3000, 3001, 3002, 3003])))]);
        let _ = TestClient::unsigned(&mut replica, 5);
        replica.apply_batch(&batch);
        assert_eq!(replica.membership(), Some(&adopted), "every replica adopts the same configuration");
    }

    #[test]
    fn a_reconfiguration_is_spelled_in_json_and_plain_text() {
        let op = Op::Reconfigure(membership(3, &[1, 2, 3]));
        let json = serde_json::to_string(&op).expect("encodes");
        assert_eq!(
            json,
            r#"{"type":"reconfigure","threshold":3,"members":[{"id":1,"address":"127.0.0.1:1"},{"id":2,"address":"127.0.0.1:2"},{"id":3,"address":"127.0.0.1:3"}]}"#
        );
        assert_eq!(serde_json::from_str::<Op>(&json).expect("decodes"), op);
        assert_eq!(op.to_string(), "reconfigure 3 1@127.0.0.1:1 2@127.0.0.1:2 3@127.0.0.1:3");
        assert_eq!(parse_text(&op.to_string()), Ok(op));
        for bad in ["reconfigure", "reconfigure x 1@127.0.0.1:1", "reconfigure 1 localhost:1"] {
            assert!(matches!(parse_text(bad), Err(WalletError::Usage { .. })), "{bad}");
        }
    }

    #[test]
    fn the_session_applied_longest_ago_is_evicted() {
        let mut wallet = Wallet::with_session_limit(2);
        let mut ten = TestClient::unsigned(&mut wallet, 10);
        let mut twenty = TestClient::unsigned(&mut wallet, 20);
        ten.run(&mut wallet, deposit("a", "1"));
        twenty.run(&mut wallet, deposit("a", "1"));
        ten.run(&mut wallet, deposit("a", "1"));
        // A replay of a cached request does not refresh its session.
        wallet.apply(&twenty.at(1, deposit("a", "1")));
        let thirty = TestClient::unsigned(&mut wallet, 30);
        assert_eq!(wallet.last_seq(20, twenty.session), None, "20 was least recently applied");
        assert_eq!(wallet.last_seq(10, ten.session), Some(2));
        assert_eq!(wallet.last_seq(30, thirty.session), Some(0));
        assert_eq!(wallet.get("a"), Some(dollars("3")));
        assert_eq!(Wallet::with_session_limit(0).session_limit(), 1);
    }

    #[test]
    fn a_far_ahead_seq_is_refused_and_locks_nobody_out() {
        let mut wallet = Wallet::new();
        let mut client = TestClient::unsigned(&mut wallet, 1);
        client.run(&mut wallet, set("x", "1"));
        for seq in [1 + MAX_SEQ_GAP + 1, u64::MAX] {
            let forged = client.at(seq, set("x", "0"));
            assert_eq!(wallet.apply(&forged).outcome, Outcome::BadSeq { last_seq: 1 });
        }
        assert_eq!(wallet.last_seq(1, client.session), Some(1), "nothing recorded");
        assert_eq!(wallet.get("x"), Some(dollars("1")));
        assert!(client.run(&mut wallet, deposit("x", "1")).is_ok());
        let within = client.at(2 + MAX_SEQ_GAP, deposit("x", "1"));
        assert!(wallet.apply(&within).outcome.is_ok(), "exactly MAX_SEQ_GAP ahead is fine");
        assert_eq!(wallet.get("x"), Some(dollars("3")));
    }

    #[test]
    fn registering_again_with_the_same_nonce_returns_the_same_session() {
        let mut wallet = Wallet::with_session_limit(3);
        let register = request(7, 0, Op::Register { nonce: 42 });
        let first = wallet.apply(&register);
        let session = first.outcome.registered_session().unwrap();
        assert_eq!(wallet.admission(&register), Admission::Cached(first.clone()));
        assert_eq!(wallet.apply(&register.clone().with_session(session)).outcome, first.outcome);
        assert_eq!(wallet.applied_count(), 1, "a retransmitted register is not applied again");
        // Another nonce is another session; both stay usable (two processes, one key).
        let second = wallet.register(7, 43);
        assert!(second > session);
        for s in [session, second] {
            assert!(wallet.apply(&request(7, 1, deposit("a", "1")).with_session(s)).outcome.is_ok());
        }
        assert_eq!(wallet.get("a"), Some(dollars("2")));
        // Once evicted, the same nonce opens a fresh session, never the old one.
        wallet.register(8, 1);
        wallet.register(9, 1);
        assert_eq!(wallet.last_seq(7, session), None);
        let third = wallet.register(7, 42);
        assert!(third > second);
        let stale = request(7, 2, deposit("a", "1")).with_session(session);
        assert_eq!(wallet.apply(&stale).outcome, Outcome::SessionExpired { session });
    }

    #[test]
    fn json_requests_need_a_session_and_plain_text_ones_have_none() {
        let mut wallet = Wallet::with_session_limit(2);
        let sessionless = request(5, 1, set("x", "1"));
        assert_eq!(wallet.apply(&sessionless).outcome, Outcome::SessionExpired { session: 0 });
        assert_eq!(
            wallet.apply(&sessionless.clone().with_session(99)).outcome,
            Outcome::SessionExpired { session: 99 }
        );
        assert!(wallet.is_empty() && wallet.applied_count() == 0);
        // Plain text: each new seq is applied; a copy of an applied one is answered.
        let text = request(text_client(5), 1_000, deposit("x", "1"));
        let first = wallet.apply(&text);
        assert!(first.outcome.is_ok());
        assert_eq!(wallet.apply(&text), first);
        assert!(wallet.apply(&request(text_client(5), 2_000, deposit("x", "1"))).outcome.is_ok());
        assert_eq!(wallet.get("x"), Some(dollars("2")));
        // Evicted, its applied requests cannot be proven new: refused, not applied again.
        wallet.apply(&request(text_client(6), 3_000, get("x")));
        wallet.apply(&request(text_client(7), 4_000, get("x")));
        assert_eq!(wallet.last_seq(text_client(5), 0), None);
        assert_eq!(wallet.apply(&text).outcome, Outcome::SessionExpired { session: 0 });
        assert!(
            wallet.apply(&request(text_client(8), 1_500, get("x"))).outcome
                == Outcome::SessionExpired { session: 0 }
        );
        assert!(wallet.apply(&request(text_client(5), 5_000, deposit("x", "1"))).outcome.is_ok());
        assert_eq!(wallet.get("x"), Some(dollars("3")));
    }

    #[test]
    fn only_the_owner_may_set_debit_or_transfer_out_of_an_owned_wallet() {
        let mut wallet = Wallet::new();
        let mut alice = TestClient::signed(&mut wallet);
        let mut mallory = TestClient::signed(&mut wallet);
        let mut dev = TestClient::unsigned(&mut wallet, 1);
        assert!(alice.run(&mut wallet, set("a", "10")).is_ok());
        assert!(mallory.run(&mut wallet, deposit("m", "10")).is_ok());
        assert_eq!((wallet.owner("a"), wallet.owner("m")), (Some(alice.id), Some(mallory.id)));
        let not_owner = Outcome::NotOwner { key: key("a") };
        for op in [set("a", "0"), withdraw("a", "1"), transfer("a", "m", "1")] {
            assert_eq!(mallory.run(&mut wallet, op.clone()), not_owner, "{op}");
            assert_eq!(dev.run(&mut wallet, op.clone()), not_owner, "{op} unsigned");
        }
        assert_eq!(wallet.get("a"), Some(dollars("10")));
        assert_eq!(
            mallory.run(&mut wallet, deposit("a", "1")),
            Outcome::Ok { key: key("a"), balance: dollars("11") }
        );
        assert!(dev.run(&mut wallet, deposit("a", "1")).is_ok(), "anyone may deposit");
        assert!(mallory.run(&mut wallet, transfer("m", "a", "1")).is_ok(), "or transfer in");
        assert_eq!(mallory.run(&mut wallet, get("a")), Outcome::Ok { key: key("a"), balance: dollars("13") });
        assert!(alice.run(&mut wallet, withdraw("a", "3")).is_ok());
        assert!(alice.run(&mut wallet, transfer("a", "m", "5")).is_ok());
        assert!(alice.run(&mut wallet, set("a", "1")).is_ok());
        assert_eq!(wallet.owner("a"), Some(alice.id));
        // Unowned (development) wallets accept anyone, and stay unowned.
        assert!(dev.run(&mut wallet, set("d", "5")).is_ok());
        assert!(mallory.run(&mut wallet, withdraw("d", "1")).is_ok());
        assert!(alice.run(&mut wallet, set("d", "9")).is_ok());
        assert_eq!(wallet.owner("d"), None);
    }

    #[test]
    fn a_signature_speaks_only_for_its_own_client_id() {
        let mut wallet = Wallet::new();
        let mut alice = TestClient::signed(&mut wallet);
        alice.run(&mut wallet, set("a", "10"));
        // Mallory registers unsigned under alice's id and attaches her own signature.
        let session = wallet.register(alice.id, 7);
        let (mallory, _) = ClientKey::generate().unwrap();
        let mut forged = mallory.sign(request(0, 1, withdraw("a", "10")).with_session(session));
        forged.client = alice.id;
        assert_eq!(forged.signer(), None);
        assert_eq!(wallet.apply(&forged).outcome, Outcome::NotOwner { key: key("a") });
        assert_eq!(wallet.get("a"), Some(dollars("10")));
    }

    #[test]
    fn transfers_move_money_atomically_or_not_at_all() {
        let mut wallet = Wallet::new();
        let mut alice = TestClient::signed(&mut wallet);
        let mut bob = TestClient::signed(&mut wallet);
        alice.run(&mut wallet, set("alice", "10"));
        bob.run(&mut wallet, set("bob", "10"));
        bob.run(&mut wallet, set("full", "$1000000000000"));
        let done = alice.run(&mut wallet, transfer("alice", "bob", "5"));
        let expected = Outcome::Transferred {
            from: key("alice"),
            from_balance: dollars("5"),
            to: key("bob"),
            to_balance: dollars("15"),
        };
        assert_eq!(done, expected);
        assert_eq!(done.to_string(), "OK alice=$5 bob=$15");
        let refusals = [
            (transfer("alice", "alice", "1"), Outcome::SameWallet { key: key("alice") }),
            (transfer("nobody", "bob", "1"), Outcome::NoSuchWallet { key: key("nobody") }),
            (transfer("alice", "nobody", "1"), Outcome::NoSuchWallet { key: key("nobody") }),
            (transfer("bob", "alice", "1"), Outcome::NotOwner { key: key("bob") }),
            (
                transfer("alice", "bob", "5.01"),
                Outcome::InsufficientFunds {
                    key: key("alice"),
                    balance: dollars("5"),
                    amount: dollars("5.01"),
                },
            ),
            (
                transfer("alice", "full", "0.01"),
                Outcome::Overflow { key: key("full"), balance: Amount::MAX, amount: dollars("0.01") },
            ),
        ];
        for (op, refusal) in refusals {
            let before = entries(&wallet);
            assert_eq!(alice.run(&mut wallet, op.clone()), refusal, "{op}");
            assert!(!refusal.is_ok());
            assert_eq!(entries(&wallet), before, "{op} changed nothing");
        }
        assert_eq!(wallet.get("nobody"), None, "a transfer never creates its target");
        assert!(alice.run(&mut wallet, transfer("alice", "bob", "5")).is_ok());
        assert_eq!((wallet.get("alice"), wallet.get("bob")), (Some(Amount::ZERO), Some(dollars("20"))));
    }

    #[test]
    fn transfers_conserve_the_total() {
        let mut wallet = Wallet::new();
        let mut client = TestClient::unsigned(&mut wallet, 1);
        let names = ["a", "b", "c", "d"];
        for name in names {
            client.run(&mut wallet, set(name, "100"));
        }
        client.run(&mut wallet, set("max", "$1000000000000"));
        let start = total(&wallet);
        let mut rng = Lcg(3);
        let mut moved = 0;
        for _ in 0..2000 {
            let from = names[rng.below(4)];
            let to = if rng.below(10) == 0 { "max" } else { names[rng.below(4)] };
            let amount = Amount::from_cents(rng.next() % 20_000).unwrap();
            let op = Op::Transfer { from: key(from), to: key(to), amount };
            moved += usize::from(client.run(&mut wallet, op).is_ok());
            if to == "max" {
                client.run(&mut wallet, set("max", "$1000000000000"));
            }
            if to != "max" {
                assert_eq!(total(&wallet), start, "transfers conserve money");
            }
        }
        assert!(moved > 500, "{moved} transfers went through");
    }

    /// The session limit of the random runs: small, so that sessions are evicted.
    const LIMIT: usize = 6;

    /// Random requests of every kind, from signed, unsigned and plain-text clients, with
    /// sessions opened, used, evicted and expired along the way (a reference wallet tells
    /// which sessions exist, so that most requests name a real one).
    fn random_batches(seed: u64) -> Vec<Batch> {
        let keys: Vec<ClientKey> = (0..3).map(|_| ClientKey::generate().unwrap().0).collect();
        let mut rng = Lcg(seed);
        let mut reference = Wallet::with_session_limit(LIMIT);
        let mut known: Vec<(u64, u64)> = vec![];
        (0..80)
            .map(|_| {
                let requests =
                    (0..rng.below(8)).map(|_| random_request(&mut rng, &keys, &known, &reference)).collect();
                let batch = Batch::new(requests);
                for reply in reference.apply_batch(&batch) {
                    if let Some(session) = reply.outcome.registered_session() {
                        known.push((reply.client, session));
                    }
                }
                batch
            })
            .collect()
    }

    fn random_op(rng: &mut Lcg) -> Op {
        let names = ["foo", "bar", "baz"];
        let mut name = || key(names[rng.below(names.len())]);
        let (one, two) = (name(), name());
        let amount = Amount::from_cents(rng.next() % 5000).unwrap();
        match rng.below(12) {
            0 | 1 => Op::Set { key: one, amount },
            2 | 3 => Op::Deposit { key: one, amount },
            4 | 5 => Op::Withdraw { key: one, amount },
            6 | 7 => Op::Transfer { from: one, to: two, amount },
            8 => Op::Register { nonce: rng.next() % 3 },
            _ => Op::Get { key: one },
        }
    }

    fn random_request(rng: &mut Lcg, keys: &[ClientKey], known: &[(u64, u64)], wallet: &Wallet) -> Request {
        let op = random_op(rng);
        if rng.below(8) == 0 {
            return request(text_client(rng.next() % 3), rng.next() % 40, op);
        }
        let anyone = |rng: &mut Lcg| match rng.below(7) {
            n @ 0..=2 => keys[n].client_id(),
            n => n as u64,
        };
        let (client, session) = match known.len() {
            0 => (anyone(rng), 0),
            n if rng.below(8) > 0 => known[n - 1 - rng.below(n.min(LIMIT))],
            _ => (anyone(rng), rng.next() % 40),
        };
        let last = wallet.last_seq(client, session).unwrap_or(0);
        let seq = (last + rng.next() % 4).saturating_sub(1);
        let request = request(client, seq, op).with_session(session);
        match keys.iter().find(|k| k.client_id() == client) {
            Some(key) => key.sign(request),
            None if rng.below(8) == 0 => keys[rng.below(keys.len())].sign(request),
            None => request,
        }
    }

    #[test]
    fn replicas_applying_the_same_batches_agree_sessions_included() {
        let batches = random_batches(42);
        let mut one = Wallet::with_session_limit(LIMIT);
        let mut two = Wallet::with_session_limit(LIMIT);
        let replies_one: Vec<_> = batches.iter().flat_map(|b| one.apply_batch(b)).collect();
        let replies_two: Vec<_> = batches
            .iter()
            .map(|b| Batch::decode(b.encode()).unwrap())
            .flat_map(|b| two.apply_batch(&b))
            .collect();
        assert_eq!(replies_one, replies_two);
        assert_eq!(one, two);
        assert!(one.entries().all(|(_, a)| a <= Amount::MAX));
        let registered = replies_one.iter().filter(|r| r.outcome.registered_session().is_some()).count();
        let expired =
            replies_one.iter().filter(|r| matches!(r.outcome, Outcome::SessionExpired { .. })).count();
        let applied = replies_one
            .iter()
            .filter(|r| r.outcome.is_ok() && r.outcome.registered_session().is_none())
            .count();
        let not_owner = replies_one.iter().filter(|r| matches!(r.outcome, Outcome::NotOwner { .. })).count();
        let mix = [registered, expired, applied, not_owner];
        assert!(mix.iter().all(|&n| n > 10), "registered, expired, ok, not owner: {mix:?}");
        assert!(one.session_count() <= LIMIT);
    }

    #[test]
    fn admission_says_exactly_what_apply_will_do() {
        let mut wallet = Wallet::with_session_limit(LIMIT);
        let mut new = 0;
        for batch in random_batches(7) {
            for request in batch.requests() {
                let before = wallet.clone();
                let admission = wallet.admission(request);
                let reply = wallet.apply(request);
                match admission {
                    Admission::New => {
                        new += 1;
                        assert_eq!(wallet.applied_count(), before.applied_count() + 1);
                        assert!(!wallet.admission(request).is_new(), "applied: {request:?}");
                    }
                    other => {
                        assert_eq!(other.reply(), Some(&reply));
                        assert_eq!(wallet, before, "not new, so nothing changed");
                    }
                }
            }
        }
        assert!(new > 20, "{new}");
    }

    #[test]
    fn from_entries_keeps_order_and_refuses_duplicates() {
        let wallet = Wallet::from_entries([(key("b"), dollars("1")), (key("a"), dollars("2"))]).unwrap();
        let names: Vec<_> = wallet.entries().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(wallet.get("a"), Some(dollars("2")));
        assert_eq!(wallet.owner("a"), None);
        let twice = Wallet::from_entries([(key("a"), dollars("1")), (key("a"), dollars("2"))]);
        assert_eq!(twice, Err(WalletError::DuplicateKey { key: "a".into() }));
    }
}
