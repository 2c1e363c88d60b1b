//! `butterfly-loadgen`: simulated MSN Messenger users speaking real MSNP to a Butterfly
//! server — sign-in, presence changes, switchboard chats, churn — with every expected
//! notification checked and every latency in an HDR histogram (docs/BENCHMARKS.md).
//!
//! - [`graph`]: the users and their contacts, generated from a seed.
//! - [`seed`]: accounts and lists written through the `Store` port, and the manifest.
//! - [`plan`]: the timeline and the open-loop schedules every process derives alike.
//! - [`worker`]: a process's share of the users, each a task with its own connection.
//! - [`coord`]: starts the workers, shows progress, merges and reports.
//! - [`conn`], [`http`]: MSNP and Passport from the client side; [`stats`], [`procfs`].

pub mod conn;
pub mod coord;
pub mod graph;
pub mod http;
pub mod plan;
pub mod procfs;
pub mod rst;
pub mod seed;
pub mod stats;
pub mod worker;
