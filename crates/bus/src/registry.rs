//! The switchboard shard registry in Redis.
//!
//! A shard keeps its record (JSON: id, public address, load) in the hash `P{sb}:shards`
//! and its expiry, one lease ahead by the server's clock, in the sorted set
//! `P{sb}:expiry`, refreshed every third of a lease ([`ShardRegistration`]). Gateways
//! keep a copy of the live shards, refreshed about every second with one script call
//! (remove the expired records, return the rest), and pick from it without waiting
//! ([`RedisSwitchboards`]). A shard that dies drops out when its expiry passes. Both keys
//! share the tag `{sb}`, so in a Redis Cluster they live on one node and every script
//! declares the keys it touches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use butterfly_core::bus::BusError;
use butterfly_core::switchboards::Switchboards;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::redis::conn::{Conn, Target};
use crate::redis::scripts::Scripts;
use crate::redis::{Keys, RedisBusConfig, bounded};

/// Longest interval between two reads of the registry by a gateway.
const REFRESH_MAX: Duration = Duration::from_secs(1);

/// One live shard, as the registry advertises it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveShard {
    pub id: String,
    /// `host:port` for `XFR SB`.
    pub address: String,
    /// Chat sessions (or whatever the shard counts) at its last refresh.
    pub load: usize,
}

/// A switchboard shard's registration. Cancelling the `shutdown` token given to
/// [`ShardRegistration::start`] (or calling [`ShardRegistration::stop`]) removes the
/// record at once; a shard that dies leaves it to expire.
#[derive(Debug)]
pub struct ShardRegistration {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct Registrar {
    conn: Conn,
    keys: Keys,
    scripts: Scripts,
    shard: LiveShard,
    load: Arc<AtomicUsize>,
    lease: Duration,
}

impl Registrar {
    async fn refresh(&mut self) -> Result<(), BusError> {
        self.shard.load = self.load.load(Ordering::Relaxed);
        let record = serde_json::to_string(&self.shard).unwrap_or_default();
        let ttl = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
        let mut invocation = self.scripts.register_shard.prepare_invoke();
        invocation
            .key(self.keys.shard_records())
            .key(self.keys.shard_expiry())
            .arg(&self.shard.id)
            .arg(record)
            .arg(ttl);
        bounded(
            "shard registration",
            invocation.invoke_async::<i64>(&mut self.conn),
        )
        .await
        .map(drop)
    }

    async fn remove(&mut self) -> Result<(), BusError> {
        bounded(
            "shard unregistration",
            ::redis::pipe()
                .atomic()
                .cmd("HDEL")
                .arg(self.keys.shard_records())
                .arg(&self.shard.id)
                .ignore()
                .cmd("ZREM")
                .arg(self.keys.shard_expiry())
                .arg(&self.shard.id)
                .ignore()
                .query_async::<()>(&mut self.conn),
        )
        .await
    }
}

impl ShardRegistration {
    /// Register shard `shard_id` at `public_address` now (fails if Redis does not answer)
    /// and keep it registered, reading `load` at every refresh.
    pub async fn start(
        config: &RedisBusConfig,
        shard_id: String,
        public_address: String,
        load: Arc<AtomicUsize>,
        shutdown: CancellationToken,
    ) -> Result<ShardRegistration, BusError> {
        config.validate()?;
        let mut registrar = Registrar {
            conn: Target::new(&config.url, config.cluster)?
                .command_connection()
                .await?,
            keys: Keys::new(&config.prefix),
            scripts: Scripts::new(),
            shard: LiveShard {
                id: shard_id,
                address: public_address,
                load: 0,
            },
            load,
            lease: config.lease,
        };
        registrar.refresh().await?;
        tracing::info!(shard = %registrar.shard.id, address = %registrar.shard.address, "Switchboard shard registered");
        let stop = shutdown.child_token();
        let every = config.heartbeat_every();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut failing = false;
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(every) => {}
                    }
                    match registrar.refresh().await {
                        Ok(()) if failing => {
                            failing = false;
                            tracing::info!("Switchboard shard registration refreshed again");
                        }
                        Ok(()) => {}
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(error = %e, "Switchboard shard registration not refreshed; retrying");
                        }
                        Err(_) => {}
                    }
                }
                match registrar.remove().await {
                    Ok(()) => {
                        tracing::info!(shard = %registrar.shard.id, "Switchboard shard unregistered")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Switchboard shard not unregistered; it expires with its lease")
                    }
                }
            }
        });
        Ok(ShardRegistration { stop, task })
    }

    /// Unregister now and wait until the record is gone (or the attempt failed).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Stop refreshing without unregistering, as a crash would: the record expires after
    /// one lease. For tests.
    pub fn abandon(self) {
        self.task.abort();
    }
}

/// [`Switchboards`] from the registry: picks the less loaded of two random live shards.
#[derive(Debug)]
pub struct RedisSwitchboards {
    live: Mutex<Arc<[LiveShard]>>,
}

struct Reader {
    conn: Conn,
    keys: Keys,
    scripts: Scripts,
}

impl Reader {
    async fn read(&mut self) -> Result<Vec<LiveShard>, BusError> {
        let mut invocation = self.scripts.live_shards.prepare_invoke();
        invocation
            .key(self.keys.shard_records())
            .key(self.keys.shard_expiry());
        let records: Vec<String> = bounded(
            "shard registry read",
            invocation.invoke_async(&mut self.conn),
        )
        .await?;
        let mut live: Vec<LiveShard> = records
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect();
        live.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(live)
    }
}

impl RedisSwitchboards {
    /// Read the registry once (fails if Redis does not answer), then keep the copy fresh
    /// until `shutdown`.
    pub async fn start(
        config: &RedisBusConfig,
        shutdown: CancellationToken,
    ) -> Result<Arc<RedisSwitchboards>, BusError> {
        config.validate()?;
        let mut reader = Reader {
            conn: Target::new(&config.url, config.cluster)?
                .command_connection()
                .await?,
            keys: Keys::new(&config.prefix),
            scripts: Scripts::new(),
        };
        let this = Arc::new(RedisSwitchboards {
            live: Mutex::new(reader.read().await?.into()),
        });
        let every = config.heartbeat_every().min(REFRESH_MAX);
        tokio::spawn({
            let this = Arc::downgrade(&this);
            async move {
                let mut failing = false;
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(every) => {}
                    }
                    let result = reader.read().await;
                    let Some(this) = this.upgrade() else { return };
                    match result {
                        Ok(live) => {
                            failing = false;
                            *this.lock() = live.into();
                        }
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(error = %e, "Switchboard registry not refreshed; using the last copy");
                        }
                        Err(_) => {}
                    }
                }
            }
        });
        Ok(this)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<[LiveShard]>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live shards at the last refresh, by id.
    pub fn live(&self) -> Vec<LiveShard> {
        self.lock().to_vec()
    }
}

impl Switchboards for RedisSwitchboards {
    fn pick(&self) -> Option<String> {
        let live = self.lock().clone();
        match live.len() {
            0 => None,
            1 => Some(live[0].address.clone()),
            n => {
                let two = rand::seq::index::sample(&mut rand::thread_rng(), n, 2);
                let (a, b) = (&live[two.index(0)], &live[two.index(1)]);
                Some(if b.load < a.load { b } else { a }.address.clone())
            }
        }
    }

    fn addresses(&self) -> Vec<String> {
        self.lock().iter().map(|s| s.address.clone()).collect()
    }
}
