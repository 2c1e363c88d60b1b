//! Butterfly's pub/sub and session directory.
//!
//! [`MemoryBus`] implements the core [`Bus`](butterfly_core::bus::Bus) port in process, for
//! the embedded mode; [`RedisBus`] implements it over Redis, one per gateway, for the
//! distributed mode. [`LocalFanout`] maps a user to the local sessions that receive their
//! events. It has no I/O and no locks, so both buses use it to deliver to the sessions of
//! one process. [`ShardRegistration`] and [`RedisSwitchboards`] are the switchboard shard
//! registry over Redis.

mod fanout;
mod memory;
mod redis;
mod registry;

pub use fanout::{Detached, FanoutStats, LocalFanout, Sink, deliver};
pub use memory::{BusStats, MemoryBus};
pub use redis::{RedisBus, RedisBusConfig, RedisBusStats};
pub use registry::{LiveShard, RedisSwitchboards, ShardRegistration};
