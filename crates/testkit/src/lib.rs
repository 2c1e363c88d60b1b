//! Test support for Butterfly: [`TestCluster`] runs the embedded server exactly as
//! `butterfly serve` composes it, on `127.0.0.1:0` with a throw-away data directory, and
//! [`Client`] is a typed MSNP client speaking real TCP to it.
//!
//! Waiting is always bounded ([`TIMEOUT`]); "nothing else arrived" is proven with a
//! PNG/QNG round trip ([`Client::barrier`]), never with a sleep.

mod client;
mod cluster;
pub mod http;

pub use client::{Client, line, line_of, passport_login};
pub use cluster::TestCluster;

/// How long any single expectation may wait before the test fails.
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
