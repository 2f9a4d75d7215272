//! # fba: a replicated wallet store agreeing through the Stellar Consensus Protocol
//!
//! The crate has a pure protocol core and a thin I/O shell:
//!
//! * [`scp`]: a sans-IO implementation of SCP (nomination and ballot protocol over many
//!   slots), driven by [`scp::Node::handle`] with the time passed in;
//! * [`quorum`]: quorum sets and the quorum math (slices, v-blocking sets, quorums);
//! * [`hash`] and [`rng`]: a portable SHA-256 and a seeded generator for simulations;
//! * [`wallet`]: the replicated state machine (balances in integer cents) and its requests;
//! * [`store`]: the PickleDB-compatible database file, written atomically;
//! * [`net`], [`timer`], [`server`], [`config`]: the node's I/O shell (UDP reader thread,
//!   timer thread, protocol thread) and its command line;
//! * [`client`]: the client side used by `fba_client`.
#![deny(missing_docs)]

pub mod auth;
pub mod checkpoint;
pub mod client;
pub mod config;
pub mod fsio;
pub mod hash;
pub mod journal;
pub mod keys;
pub mod ledger;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod quorum;
pub mod ratelimit;
pub mod rng;
pub mod scp;
pub mod server;
pub mod store;
pub mod tagged;
pub mod timer;
pub mod wallet;
