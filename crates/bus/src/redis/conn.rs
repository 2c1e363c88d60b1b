//! Where Redis is — one server, or a Redis Cluster — behind one command connection type,
//! so the bus, the lease task and the shard registry issue the same commands either way.
//!
//! In a cluster every command, script and pipeline must stay within one hash slot
//! (`MGET` excepted: the cluster client splits it by slot and joins the answers). The key
//! layout (see the module documentation of [`super`]) is built for that: a user's keys
//! share the tag `{user}`, the node registry `{nodes}`, the shard registry `{sb}`.

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline,
    ProtocolVersion, PushInfo, RedisFuture, Value,
};
use butterfly_core::bus::BusError;
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::{COMMAND_TIMEOUT, CONNECT_TIMEOUT, bounded};

/// The Redis deployment named by the configuration.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// One server (or a proxy in front of several).
    Single(Client),
    /// A Redis Cluster, found through these seed nodes (any live one is enough).
    Cluster(Vec<ConnectionInfo>),
}

impl Target {
    /// `urls`: one `redis://` URL, or for a cluster a comma-separated list of seed nodes.
    pub(crate) fn new(urls: &str, cluster: bool) -> Result<Target, BusError> {
        let infos = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                u.into_connection_info()
                    .map(resp3)
                    .map_err(|e| BusError(format!("invalid Redis URL {u:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        match (cluster, infos.as_slice()) {
            (_, []) => Err(BusError("no Redis URL given".to_owned())),
            (false, [one]) => Client::open(one.clone())
                .map(Target::Single)
                .map_err(|e| BusError(format!("invalid Redis URL: {e}"))),
            (false, _) => Err(BusError(
                "several Redis URLs are only meaningful for a Redis Cluster (--redis-cluster)"
                    .to_owned(),
            )),
            (true, _) => Ok(Target::Cluster(infos)),
        }
    }

    fn cluster_client(
        seeds: &[ConnectionInfo],
        push: Option<tokio::sync::mpsc::UnboundedSender<PushInfo>>,
    ) -> Result<ClusterClient, BusError> {
        let mut builder = ClusterClientBuilder::new(seeds.to_vec())
            .use_protocol(ProtocolVersion::RESP3)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(COMMAND_TIMEOUT)
            .retries(1);
        if let Some(push) = push {
            builder = builder.push_sender(push);
        }
        builder
            .build()
            .map_err(|e| BusError(format!("invalid Redis Cluster configuration: {e}")))
    }

    /// The command connection: multiplexed (concurrent callers share one pipelined TCP
    /// connection per server), reconnecting in the background, every request bounded.
    ///
    /// Refuses a mismatch between the configuration and the server: a single-server
    /// configuration pointed at a cluster node would fail later with `MOVED` errors on
    /// most keys, so it fails here with a message saying what to change.
    pub(crate) async fn command_connection(&self) -> Result<Conn, BusError> {
        match self {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                let mut conn = match tokio::time::timeout(
                    CONNECT_TIMEOUT * 2,
                    client.get_connection_manager_with_config(config),
                )
                .await
                {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => return Err(BusError(format!("cannot connect to Redis: {e}"))),
                    Err(_) => {
                        return Err(BusError("cannot connect to Redis: timed out".to_owned()));
                    }
                };
                let info: String = bounded(
                    "INFO cluster",
                    ::redis::cmd("INFO").arg("cluster").query_async(&mut conn),
                )
                .await?;
                if info.lines().any(|l| l.trim() == "cluster_enabled:1") {
                    return Err(BusError(
                        "this Redis is a Redis Cluster node: start with --redis-cluster \
                         (BUTTERFLY_REDIS_CLUSTER=true)"
                            .to_owned(),
                    ));
                }
                Ok(Conn::Single(conn))
            }
            Target::Cluster(seeds) => {
                let client = Self::cluster_client(seeds, None)?;
                cluster_connection(&client).await.map(Conn::Cluster)
            }
        }
    }

    /// A connection for subscribing: RESP3, push messages (and disconnects) to the
    /// returned receiver.
    pub(crate) async fn subscriber(&self) -> Result<(Conn, UnboundedReceiver<PushInfo>), BusError> {
        let (tx, rx) = unbounded_channel();
        let conn = match self {
            Target::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT))
                    .set_push_sender(tx);
                match tokio::time::timeout(
                    CONNECT_TIMEOUT * 2,
                    client.get_multiplexed_async_connection_with_config(&config),
                )
                .await
                {
                    Ok(Ok(conn)) => Conn::Subscriber(conn),
                    Ok(Err(e)) => {
                        return Err(BusError(format!("Redis subscriber connection: {e}")));
                    }
                    Err(_) => {
                        return Err(BusError(
                            "Redis subscriber connection: timed out".to_owned(),
                        ));
                    }
                }
            }
            Target::Cluster(seeds) => {
                let client = Self::cluster_client(seeds, Some(tx))?;
                Conn::Cluster(cluster_connection(&client).await?)
            }
        };
        Ok((conn, rx))
    }
}

fn resp3(info: ConnectionInfo) -> ConnectionInfo {
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    info.set_redis_settings(settings)
}

async fn cluster_connection(client: &ClusterClient) -> Result<ClusterConnection, BusError> {
    match tokio::time::timeout(CONNECT_TIMEOUT * 2, client.get_async_connection()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(BusError(format!(
            "cannot connect to the Redis Cluster: {e} (is --redis-url a cluster node?)"
        ))),
        Err(_) => Err(BusError(
            "cannot connect to the Redis Cluster: timed out".to_owned(),
        )),
    }
}

/// A connection to a single server (reconnecting or plain) or to a cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    /// The subscriber's connection to a single server: it must not reconnect by itself,
    /// because a new connection has none of the old one's subscriptions.
    Subscriber(::redis::aio::MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Apply subscription changes: `(channel, subscribe?)`, each confirmed before this
    /// returns. One pipeline on a single server; per channel on a cluster, where each
    /// channel lives on the node that owns its slot.
    pub(crate) async fn apply_subscriptions(
        &mut self,
        changes: &[(String, bool)],
        sharded: bool,
    ) -> Result<(), BusError> {
        let (subscribe, unsubscribe) = if sharded {
            ("SSUBSCRIBE", "SUNSUBSCRIBE")
        } else {
            ("SUBSCRIBE", "UNSUBSCRIBE")
        };
        match self {
            Conn::Cluster(conn) => {
                let calls = changes.iter().map(|(channel, want)| {
                    let mut conn = conn.clone();
                    async move {
                        match (*want, sharded) {
                            (true, true) => conn.ssubscribe(channel).await,
                            (false, true) => conn.sunsubscribe(channel).await,
                            (true, false) => conn.subscribe(channel).await,
                            (false, false) => conn.unsubscribe(channel).await,
                        }
                    }
                });
                bounded("subscribe", futures::future::try_join_all(calls))
                    .await
                    .map(drop)
            }
            conn => {
                let mut pipe = ::redis::pipe();
                for (channel, want) in changes {
                    pipe.cmd(if *want { subscribe } else { unsubscribe })
                        .arg(channel)
                        .ignore();
                }
                bounded("subscribe", pipe.query_async::<()>(conn)).await
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Subscriber(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Subscriber(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Subscriber(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
