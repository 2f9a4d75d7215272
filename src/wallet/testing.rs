//! Helpers shared by the wallet module's unit tests.

#[allow(unused_imports)]
pub(crate) use super::*;

pub(crate) fn key(name: &str) -> Key {
    Key::new(name).unwrap()
}

pub(crate) fn dollars(text: &str) -> Amount {
    Amount::parse(text).unwrap()
}

/// An unsigned request with no session.
pub(crate) fn request(client: u64, seq: u64, op: Op) -> Request {
    Request::new(client, seq, op)
}

/// A plain-text client's id.
pub(crate) fn text_client(n: u64) -> u64 {
    TEXT_CLIENT_BIT | n
}

pub(crate) fn set(name: &str, amount: &str) -> Op {
    Op::Set { key: key(name), amount: dollars(amount) }
}

pub(crate) fn deposit(name: &str, amount: &str) -> Op {
    Op::Deposit { key: key(name), amount: dollars(amount) }
}

pub(crate) fn withdraw(name: &str, amount: &str) -> Op {
    Op::Withdraw { key: key(name), amount: dollars(amount) }
}

pub(crate) fn get(name: &str) -> Op {
    Op::Get { key: key(name) }
}

pub(crate) fn transfer(from: &str, to: &str, amount: &str) -> Op {
    Op::Transfer { from: key(from), to: key(to), amount: dollars(amount) }
}

pub(crate) fn amount_problem(text: &str) -> AmountProblem {
    match Amount::parse(text) {
        Err(WalletError::InvalidAmount { problem, .. }) => problem,
        other => panic!("{text:?} gave {other:?}"),
    }
}

pub(crate) fn key_problem_of(name: &str) -> KeyProblem {
    match Key::new(name) {
        Err(WalletError::InvalidKey { problem, .. }) => problem,
        other => panic!("{name:?} gave {other:?}"),
    }
}

/// A small deterministic generator for the no-panic tests.
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A JSON client of a wallet: registers, then numbers its requests; signs them if it has
/// a key.
pub(crate) struct TestClient {
    pub(crate) id: u64,
    pub(crate) session: u64,
    pub(crate) seq: u64,
    key: Option<ClientKey>,
}

impl TestClient {
    /// An unsigned client `id`, registered with `wallet`.
    pub(crate) fn unsigned(wallet: &mut Wallet, id: u64) -> TestClient {
        let session = wallet.register(id, id ^ 0x5eed);
        TestClient { id, session, seq: 0, key: None }
    }

    /// A client with a fresh key, registered (signed) with `wallet`.
    pub(crate) fn signed(wallet: &mut Wallet) -> TestClient {
        let (key, _) = ClientKey::generate().unwrap();
        let register = key.sign(Request::new(0, 0, Op::Register { nonce: 1 }));
        let session = wallet.apply(&register).outcome.registered_session().unwrap();
        TestClient { id: key.client_id(), session, seq: 0, key: Some(key) }
    }

    /// Its next request.
    pub(crate) fn next(&mut self, op: Op) -> Request {
        self.seq += 1;
        self.at(self.seq, op)
    }

    /// Its request `seq` (not advancing the counter).
    pub(crate) fn at(&self, seq: u64, op: Op) -> Request {
        let request = Request::new(self.id, seq, op).with_session(self.session);
        match &self.key {
            Some(key) => key.sign(request),
            None => request,
        }
    }

    /// Applies its next request; the outcome.
    pub(crate) fn run(&mut self, wallet: &mut Wallet, op: Op) -> Outcome {
        let request = self.next(op);
        wallet.apply(&request).outcome
    }
}
