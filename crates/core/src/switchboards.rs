//! The switchboard-directory port: where `XFR SB` sends a caller.
//!
//! Embedded: the one switchboard of the process ([`OneSwitchboard`]). Distributed: the
//! shard registry in Redis, where each shard advertises its public address and load with
//! a time-to-live, and a gateway picks the less loaded of two random live shards.

/// Picks the switchboard shard for a new chat. Synchronous: implementations keep a
/// recent copy of the registry, so `XFR` never waits on the network.
pub trait Switchboards: Send + Sync + 'static {
    /// The `host:port` to write into `XFR SB`, or `None` when no shard is alive.
    fn pick(&self) -> Option<String>;
    /// The `host:port` of every live shard, as each advertises it: the only places the
    /// HTTP gateway may open a switchboard connection to.
    fn addresses(&self) -> Vec<String>;
}

/// The embedded mode's single switchboard.
#[derive(Debug, Clone)]
pub struct OneSwitchboard(pub String);

impl Switchboards for OneSwitchboard {
    fn pick(&self) -> Option<String> {
        Some(self.0.clone())
    }

    fn addresses(&self) -> Vec<String> {
        vec![self.0.clone()]
    }
}
