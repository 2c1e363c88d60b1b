//! Butterfly's domain and ports.
//!
//! Pure rules (what a list change means, who may see whom) and the traits the roles are
//! written against. Architecture invariant: nothing here knows a transport or a database
//! (no sqlx, axum, tonic, redis); the embedded and distributed modes differ only in which
//! implementation of each port is passed in.

pub mod account;
pub mod bus;
pub mod clock;
pub mod ids;
pub mod inbox;
pub mod lists;
pub mod metrics;
pub mod net;
pub mod oim;
pub mod presence;
pub mod profile;
pub mod store;
pub mod switchboards;
pub mod tickets;

pub use account::{Account, Email, UserId};
