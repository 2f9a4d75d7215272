//! # fba: a replicated wallet store agreeing through the Stellar Consensus Protocol
//!
//! The crate has a pure protocol core and a thin I/O shell:
//!
//! * [`scp`]: a sans-IO implementation of SCP (nomination and ballot protocol over many
//!   slots), driven by [`scp::Node::handle`] with the time passed in;
//! * [`quorum`]: quorum sets and the quorum math (slices, v-blocking sets, quorums);
//! * [`hash`] and [`rng`]: a portable SHA-256 and a seeded generator for simulations;
//! * [`wallet`]: the replicated state machine (balances in integer cents) and its requests;
//! * [`store`]: the PickleDB-compatible database file, written atomically.
#![deny(missing_docs)]

pub mod hash;
pub mod quorum;
pub mod rng;
pub mod scp;
pub mod store;
pub mod wallet;
