//! Butterfly's pub/sub and session directory.
//!
//! [`MemoryBus`] implements the core [`Bus`](butterfly_core::bus::Bus) port in process, for
//! the embedded mode. [`LocalFanout`] maps a user to the local sessions that receive their
//! events. It has no I/O and no locks, so the Redis bus can reuse it to deliver to the
//! sessions of one gateway.

mod fanout;
mod memory;

pub use fanout::{Detached, FanoutStats, LocalFanout, Sink, deliver};
pub use memory::{BusStats, MemoryBus};
