//! Test support for Butterfly: [`TestCluster`] runs the embedded server exactly as
//! `butterfly serve` composes it, on `127.0.0.1:0` with a throw-away data directory, and
//! [`Client`] is a typed MSNP client speaking real TCP to it. [`Network`] runs the
//! distributed mode as real processes against real Postgres and Redis ([`Services`]).
//!
//! Waiting is always bounded ([`TIMEOUT`]); "nothing else arrived" is proven with a
//! PNG/QNG round trip ([`Client::barrier`]), never with a sleep.

mod client;
mod cluster;
pub mod gateway;
pub mod http;
mod network;
mod proxy;
pub mod rst;
mod services;
pub mod soap;

pub use client::{Client, Transport, line, line_of, passport_login};
pub use cluster::TestCluster;
pub use network::{Network, NetworkOptions, Proc};
pub use proxy::TcpProxy;
pub use services::{PrivateRedis, PrivateRedisCluster, Services, delete_prefix, free_port};

/// How long any single expectation may wait before the test fails.
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// An account usable from every dialect (legacy MD5 on), hashed cheaply for tests.
pub fn test_account(
    email: &str,
    password: &str,
    name: &str,
) -> butterfly_core::account::NewAccount {
    use butterfly_core::account::{Email, LegacyMd5, NewAccount, PasswordCost};
    let cost = PasswordCost {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    NewAccount {
        email: Email::parse(email).expect("valid test email"),
        friendly_name: name.into(),
        password_hash: cost.hash(password).expect("hash"),
        legacy_md5: Some(LegacyMd5::new(password)),
    }
}
