//! The Redis bus of the distributed mode: one [`RedisBus`] per gateway process.
//!
//! # Layout
//!
//! Every key and channel starts with [`RedisBusConfig::prefix`] (`P` below), so several
//! clusters or test runs can share one Redis. A user's keys and channels carry the hash
//! tag `{user}`, so in a Redis Cluster they live in one slot and one script can check and
//! change them and publish in one atomic step.
//!
//! | name | kind | what |
//! |---|---|---|
//! | `P` `dir:{user}` | string `session:node` | the session directory: the user's newest session (fencing) |
//! | `P` `presence:{user}` | string, JSON | the presence record: `Presence` + owning session + node |
//! | `P` `pres:{user}` | channel | presence changes: JSON `{user, presence \| null, at}` (`at`: publish time, unix µs) |
//! | `P` `user:{user}` | channel | events addressed to the user: JSON `{user, event, at}` |
//! | `P` `seq:session` | counter | session ids (cluster-unique, increasing; see `scripts.rs`) |
//! | `P` `{nodes}:seq` | counter | node ids (never reused, also across a Redis restart) |
//! | `P` `{nodes}:live` | sorted set | node id → last heartbeat (server time, ms) |
//! | `P` `{nodes}:owner` | hash | node id → the owning process's random token |
//! | `P` `node:{id}:users` | set | users with a session on node `id` (what to reap if it dies) |
//! | `P` `reap:{id}` | string, TTL | who is cleaning up after dead node `id` |
//! | `P` `{sb}:shards`, `P` `{sb}:expiry` | hash, sorted set | the switchboard registry: shard id → record, → expiry ([`crate::registry`]) |
//!
//! # Delivery
//!
//! The gateway keeps one [`LocalFanout`] and exactly one subscriber connection (RESP3
//! push messages; `SUBSCRIBE`, or `SSUBSCRIBE` with [`RedisBusConfig::sharded`] or in a
//! Redis Cluster, where each channel is subscribed on the node owning its slot). It
//! subscribes `pres:{u}` while a local session watches `u` and `user:{u}` while `u` has a
//! local session; the fan-out's return values drive this, so each channel is subscribed
//! once however many local sessions need it. Every event, also one for a session on the
//! same gateway, travels through Redis: one path keeps one user's presence events in the
//! order the server applied them.
//!
//! `watch` and `attach` return once Redis has confirmed the subscriptions they need (or
//! after a bounded wait), so a presence read right after a `watch` cannot miss a change.
//!
//! # Fencing
//!
//! Session ids come from a Redis counter and increase across the cluster. The directory
//! entry names a user's newest session from its `attach` on; a publish or detach of an
//! older session is refused by the script (so, unlike the in-process bus, an older session
//! does not show again once a newer one attached: it is being told to close anyway).
//!
//! # Leases and restarts
//!
//! See `lease.rs`: every node heartbeats; the others reap a node whose heartbeat is
//! older than the lease. A Redis restart (no persistence: every key lost) is
//! detected two ways: the subscriber connection drops and reconnects, and the node's
//! heartbeat finds its registration gone. Either way the node registers again under a new
//! id and rebuilds what it owns from memory (directory entries, presence records, user
//! set), and raises the session counter to its highest live session.

pub(crate) mod conn;
mod lease;
pub(crate) mod scripts;
mod subscriber;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::RedisResult;
use async_trait::async_trait;
use butterfly_core::Email;
use butterfly_core::bus::{Bus, BusError, Event, SessionId, UserEvent};
use butterfly_core::inbox::InboxSender;
use butterfly_core::presence::Presence;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::fanout::{FanoutStats, LocalFanout};

use self::conn::{Conn, Target};
use self::scripts::Scripts;

/// Longest wait for one command (or pipeline) before it counts as failed. Redis answers in
/// well under a millisecond when it is up; this only bounds how long a caller can hang
/// while it is not.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for a TCP connection and the RESP3 handshake.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys per `MGET` when reading many presence records at once.
const READ_BATCH: usize = 1000;
/// Scripts in flight at once for bulk work (rebuild, reap, close).
const BULK_CONCURRENCY: usize = 256;

/// Where and how a gateway uses Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisBusConfig {
    /// `redis://[user:password@]host[:port][/db]`; with [`Self::cluster`], one or more
    /// seed nodes of the cluster, comma-separated.
    pub url: String,
    /// Prepended to every key and channel, so tests and clusters can share one Redis.
    /// Must not contain `{` or `}` (they would change the keys' Redis Cluster hash slot).
    pub prefix: String,
    /// Use Redis 7 sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`). Implied by [`Self::cluster`].
    pub sharded: bool,
    /// `url` names a Redis Cluster: commands go to the node owning their keys' slot, and
    /// each channel is subscribed on the node owning its slot (sharded pub/sub).
    pub cluster: bool,
    /// How long a node (or switchboard shard) stays registered without a heartbeat.
    /// Heartbeats go out every third of it; a killed gateway's users are reported offline
    /// within about `lease + lease / 3`.
    pub lease: Duration,
}

impl Default for RedisBusConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            prefix: "butterfly:".to_owned(),
            sharded: false,
            cluster: false,
            lease: Duration::from_secs(15),
        }
    }
}

impl RedisBusConfig {
    /// The defaults with `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), BusError> {
        if self.prefix.contains(['{', '}']) {
            return Err(BusError(format!(
                "Redis key prefix {:?} must not contain braces",
                self.prefix
            )));
        }
        if self.lease < Duration::from_millis(300) {
            return Err(BusError(format!(
                "Redis lease {:?} is too short (at least 300 ms)",
                self.lease
            )));
        }
        Ok(())
    }

    /// Whether channels are sharded (`SSUBSCRIBE`/`SPUBLISH`): asked for, or a cluster,
    /// where plain pub/sub would copy every message to every node.
    pub(crate) fn sharded_pubsub(&self) -> bool {
        self.sharded || self.cluster
    }

    /// How often a lease is refreshed.
    pub(crate) fn heartbeat_every(&self) -> Duration {
        self.lease / 3
    }
}

/// Key and channel names (see the module documentation).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    fn session_seq(&self) -> String {
        format!("{}seq:session", self.prefix)
    }

    fn dir(&self, user: &Email) -> String {
        format!("{}dir:{{{user}}}", self.prefix)
    }

    fn presence(&self, user: &Email) -> String {
        format!("{}presence:{{{user}}}", self.prefix)
    }

    fn endpoints(&self, user: &Email) -> String {
        format!("{}eps:{{{user}}}", self.prefix)
    }

    fn pres_channel(&self, user: &Email) -> String {
        format!("{}pres:{{{user}}}", self.prefix)
    }

    fn user_channel(&self, user: &Email) -> String {
        format!("{}user:{{{user}}}", self.prefix)
    }

    fn channel(&self, channel: &Channel) -> String {
        match channel {
            Channel::Pres(user) => self.pres_channel(user),
            Channel::User(user) => self.user_channel(user),
        }
    }

    /// Whether `channel` is one of our `pres:` channels. No allocation: it runs for
    /// every message received.
    fn is_pres_channel(&self, channel: &str) -> bool {
        channel
            .strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.starts_with("pres:"))
    }

    /// Whether `channel` is one of our `user:` channels.
    fn is_user_channel(&self, channel: &str) -> bool {
        channel
            .strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.starts_with("user:"))
    }

    fn nodes_seq(&self) -> String {
        format!("{}{{nodes}}:seq", self.prefix)
    }

    fn nodes_live(&self) -> String {
        format!("{}{{nodes}}:live", self.prefix)
    }

    fn nodes_owner(&self) -> String {
        format!("{}{{nodes}}:owner", self.prefix)
    }

    fn node_users(&self, node: u64) -> String {
        format!("{}node:{{{node}}}:users", self.prefix)
    }

    fn reap_lock(&self, node: u64) -> String {
        format!("{}reap:{{{node}}}", self.prefix)
    }

    pub(crate) fn shard_records(&self) -> String {
        format!("{}{{sb}}:shards", self.prefix)
    }

    /// The shard records' common prefix; a record is this + the shard id.
    pub(crate) fn shard_expiry(&self) -> String {
        format!("{}{{sb}}:expiry", self.prefix)
    }
}

/// A channel this gateway may subscribe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Channel {
    Pres(Email),
    User(Email),
}

/// `fut`, failing after [`COMMAND_TIMEOUT`].
pub(crate) async fn bounded<T>(
    what: &str,
    fut: impl Future<Output = RedisResult<T>>,
) -> Result<T, BusError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(BusError(format!("{what}: {e}"))),
        Err(_) => Err(BusError(format!(
            "{what}: no answer within {COMMAND_TIMEOUT:?}"
        ))),
    }
}

pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// What travels on `pres:{user}` (the presence script writes it, from [`presence_head`]).
#[derive(Deserialize)]
struct PresIn {
    user: Email,
    presence: Option<Presence>,
    at: u64,
}

/// What travels on `user:{user}`.
#[derive(Serialize)]
struct UserOut<'a> {
    user: &'a Email,
    event: &'a UserEvent,
    at: u64,
}

#[derive(Deserialize)]
struct UserIn {
    user: Email,
    event: UserEvent,
    at: u64,
}

/// The value of `presence:{user}` (the script writes it: `{"session","node","presence"}`).
#[derive(Deserialize)]
struct RecordIn {
    presence: Presence,
}

fn to_json(value: &impl Serialize) -> String {
    // Plain structs of strings and numbers: serialising cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// The `pres:{user}` message up to its presence value, which the presence script appends
/// (with the closing brace): the presence it decides to show, or `null`.
fn presence_head(user: &Email) -> String {
    #[derive(Serialize)]
    struct Head<'a> {
        user: &'a Email,
        at: u64,
    }
    let head = to_json(&Head {
        user,
        at: unix_micros(),
    });
    // `{"user":…,"at":…}` → `{"user":…,"at":…,"presence":`
    format!("{},\"presence\":", head.trim_end_matches('}'))
}

/// The message that tells `user`'s other sessions that `session` changed.
fn endpoints_changed(user: &Email, session: SessionId) -> String {
    to_json(&UserOut {
        user,
        event: &UserEvent::EndpointsChanged { session },
        at: unix_micros(),
    })
}

/// How a presence script call changes a user's entries (see [`scripts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Claim,
    Publish,
    Restore,
    Clear,
    Detach,
    Reap,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Claim => "claim",
            Mode::Publish => "publish",
            Mode::Restore => "restore",
            Mode::Clear => "clear",
            Mode::Detach => "detach",
            Mode::Reap => "reap",
        }
    }
}

/// One local session, as this gateway must be able to restore it in Redis.
#[derive(Debug)]
struct Local {
    user: Email,
    /// The presence it last published (`None`: none yet, or signed out).
    presence: Option<Arc<Presence>>,
}

#[derive(Debug, Default)]
struct State {
    fanout: LocalFanout,
    sessions: HashMap<SessionId, Local>,
    /// The channels the local sessions need.
    want: HashSet<Channel>,
    /// The channels the subscriber connection has confirmed.
    subscribed: HashSet<Channel>,
    /// Channels whose `want` changed since the subscriber task last looked.
    dirty: HashSet<Channel>,
    /// Bumped with every change to `dirty`; the subscriber acknowledges the generation it
    /// has applied.
    generation: u64,
}

impl State {
    fn want(&mut self, channel: Channel) {
        if self.want.insert(channel.clone()) {
            self.dirty.insert(channel);
            self.generation += 1;
        }
    }

    fn unwant(&mut self, channel: Channel) {
        if self.want.remove(&channel) {
            self.dirty.insert(channel);
            self.generation += 1;
        }
    }
}

/// Counts, so tests and metrics can check that nothing leaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisBusStats {
    pub fanout: FanoutStats,
    /// Local sessions that have published a presence (kept for rebuilding).
    pub presences: usize,
    /// Subscribed `pres:{user}` channels.
    pub pres_channels: usize,
    /// Subscribed `user:{user}` channels.
    pub user_channels: usize,
    /// Channels wanted but not subscribed yet, or subscribed but no longer wanted.
    pub pending_channels: usize,
    /// Times the subscriber connection was established (1 + reconnects).
    pub subscriber_connects: u64,
    /// Times this node registered again and rebuilt its entries (Redis lost its data).
    pub rebuilds: u64,
    /// This node's current id.
    pub node: u64,
}

/// Shared by the bus handle and its background tasks.
struct Inner {
    config: RedisBusConfig,
    keys: Keys,
    target: Target,
    conn: Conn,
    scripts: Scripts,
    /// Random; proves that a node id registered in Redis is this process's.
    token: String,
    node: AtomicU64,
    state: Mutex<State>,
    /// Wakes the subscriber task: `dirty` changed.
    resubscribe: Notify,
    /// The subscription generation the subscriber task has applied.
    acked: watch::Sender<u64>,
    /// Wakes the lease task for an immediate heartbeat (after the subscriber reconnected).
    heartbeat_now: Notify,
    /// Set when the subscriber reconnected: the next heartbeat writes back this node's
    /// entries even if its registration survived, since a Redis Cluster node may have
    /// lost the slots of some users and not the registry's.
    repair: AtomicBool,
    /// Redis is failing: log the first failure of an outage, not every one.
    down: AtomicBool,
    /// When a command last failed: the subscriber's presence re-read waits for a whole
    /// lease without failures, the time other gateways need to write back their entries.
    last_failure: Mutex<Option<tokio::time::Instant>>,
    /// Stops the background tasks (the `shutdown` token's child).
    stop: CancellationToken,
    closed: AtomicBool,
    /// The subscriber connection is up and holds every subscription this node needs.
    live: AtomicBool,
    subscriber_connects: AtomicU64,
    rebuilds: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("prefix", &self.config.prefix)
            .field("node", &self.node.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// [`Bus`] over Redis for one gateway process. See the module documentation.
///
/// Cancelling the `shutdown` token given to [`RedisBus::connect`] stops the background
/// tasks (subscriber, heartbeat, reaper) without cleaning up: what a crash leaves, so the
/// node's lease expires and other nodes reap its users. Commands keep working, so
/// sessions that drain afterwards still detach (publishing offline), but they receive no
/// more events. [`RedisBus::close`] is the graceful path: call it once the sessions have
/// drained (within a lease of the shutdown, or the node is reaped first, which is
/// harmless).
#[derive(Debug)]
pub struct RedisBus {
    inner: Arc<Inner>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl RedisBus {
    /// Connect, register this node and start the subscriber and lease tasks. Fails if
    /// Redis cannot be reached (within a few seconds) or the configuration is invalid.
    pub async fn connect(
        config: RedisBusConfig,
        shutdown: CancellationToken,
    ) -> Result<Arc<RedisBus>, BusError> {
        config.validate()?;
        let target = Target::new(&config.url, config.cluster)?;
        let conn = target.command_connection().await?;
        let subscriber = target.subscriber().await?;
        let stop = shutdown.child_token();
        let inner = Arc::new(Inner {
            keys: Keys::new(&config.prefix),
            config,
            target,
            conn,
            scripts: Scripts::new(),
            token: format!("{:016x}", rand::random::<u64>()),
            node: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            resubscribe: Notify::new(),
            acked: watch::Sender::new(0),
            heartbeat_now: Notify::new(),
            repair: AtomicBool::new(false),
            down: AtomicBool::new(false),
            last_failure: Mutex::new(None),
            stop: stop.clone(),
            closed: AtomicBool::new(false),
            live: AtomicBool::new(false),
            subscriber_connects: AtomicU64::new(0),
            rebuilds: AtomicU64::new(0),
        });
        let node = inner.register(0).await?;
        tracing::info!(node, prefix = %inner.config.prefix, "Redis bus connected");
        let tasks = TaskTracker::new();
        tasks.spawn(subscriber::run(inner.clone(), subscriber, stop.clone()));
        tasks.spawn(lease::run(inner.clone(), stop.clone()));
        tasks.close();
        Ok(Arc::new(RedisBus { inner, stop, tasks }))
    }

    /// Graceful stop: detach every local session (publishing offline where it owned the
    /// presence), remove this node's registration, stop the background tasks. Later
    /// `attach` calls fail.
    pub async fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let sessions: Vec<SessionId> = self.inner.state().sessions.keys().copied().collect();
        for chunk in sessions.chunks(BULK_CONCURRENCY) {
            futures::future::join_all(chunk.iter().map(|&s| self.inner.detach(s))).await;
        }
        self.inner.unregister().await;
        self.stop.cancel();
        let _ = tokio::time::timeout(COMMAND_TIMEOUT * 2, self.tasks.wait()).await;
        tracing::info!(sessions = sessions.len(), "Redis bus closed");
    }

    /// O(sessions); meant for tests and occasional metrics.
    /// Whether events reach this node: the subscriber is connected and subscribed.
    /// False during a Redis outage (readiness follows it).
    pub fn is_live(&self) -> bool {
        self.inner.live.load(Ordering::SeqCst)
    }

    pub fn stats(&self) -> RedisBusStats {
        let state = self.inner.state();
        RedisBusStats {
            fanout: state.fanout.stats(),
            presences: state
                .sessions
                .values()
                .filter(|l| l.presence.is_some())
                .count(),
            pres_channels: state
                .subscribed
                .iter()
                .filter(|c| matches!(c, Channel::Pres(_)))
                .count(),
            user_channels: state
                .subscribed
                .iter()
                .filter(|c| matches!(c, Channel::User(_)))
                .count(),
            pending_channels: state.want.symmetric_difference(&state.subscribed).count(),
            subscriber_connects: self.inner.subscriber_connects.load(Ordering::Relaxed),
            rebuilds: self.inner.rebuilds.load(Ordering::Relaxed),
            node: self.inner.node.load(Ordering::Relaxed),
        }
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section is a few map operations that cannot leave the maps
        // half-updated; a panic elsewhere should not take every session down with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn node(&self) -> u64 {
        self.node.load(Ordering::Relaxed)
    }

    fn publish_command(&self) -> &'static str {
        if self.config.sharded_pubsub() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// `fut`, bounded, with outage logging: the first failure of an outage is a warning,
    /// the rest are debug lines until a command succeeds again.
    async fn run<T>(
        &self,
        what: &str,
        fut: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, BusError> {
        match bounded(what, fut).await {
            Ok(v) => {
                if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis commands succeed again");
                }
                Ok(v)
            }
            Err(e) => {
                *self
                    .last_failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(tokio::time::Instant::now());
                if self.down.swap(true, Ordering::Relaxed) {
                    tracing::debug!(error = %e, "Redis command failed");
                } else {
                    tracing::warn!(error = %e, "Redis command failed; degrading until Redis answers again");
                }
                Err(e)
            }
        }
    }

    /// Run the presence script for `user` (`presence`: this session's, as JSON, or empty).
    /// Returns whether the change applied.
    async fn presence_script(
        &self,
        mode: Mode,
        user: &Email,
        session: SessionId,
        node: u64,
        presence: &str,
    ) -> Result<bool, BusError> {
        let mut invocation = self.scripts.presence.prepare_invoke();
        invocation
            .key(self.keys.dir(user))
            .key(self.keys.presence(user))
            .key(self.keys.pres_channel(user))
            .key(self.keys.endpoints(user))
            .key(self.keys.user_channel(user))
            .arg(mode.as_str())
            .arg(session)
            .arg(node)
            .arg(presence)
            .arg(presence_head(user))
            .arg(self.publish_command())
            .arg(endpoints_changed(user, session));
        let mut conn = self.conn.clone();
        let applied: i64 = self
            .run("presence script", invocation.invoke_async(&mut conn))
            .await?;
        Ok(applied == 1)
    }

    /// `SADD` or `SREM` `user` to or from node `node`'s user set.
    async fn node_users(&self, command: &str, node: u64, user: &Email) -> Result<i64, BusError> {
        let mut cmd = ::redis::cmd(command);
        cmd.arg(self.keys.node_users(node)).arg(user.as_str());
        let mut conn = self.conn.clone();
        self.run("node users", cmd.query_async(&mut conn)).await
    }

    /// A new cluster-unique session id, at least `floor + 1`.
    async fn next_session(&self, floor: u64) -> Result<SessionId, BusError> {
        let mut invocation = self.scripts.session_id.prepare_invoke();
        invocation.key(self.keys.session_seq()).arg(floor);
        let mut conn = self.conn.clone();
        self.run("session id", invocation.invoke_async(&mut conn))
            .await
    }

    /// Wait (bounded) until the subscriber has applied generation `generation`. Returns
    /// at once when the background tasks have stopped.
    async fn subscribed(&self, generation: u64) {
        let mut acked = self.acked.subscribe();
        if *acked.borrow_and_update() >= generation || self.stop.is_cancelled() {
            return;
        }
        self.resubscribe.notify_one();
        let waited = tokio::select! {
            () = self.stop.cancelled() => return,
            waited = tokio::time::timeout(
                COMMAND_TIMEOUT,
                acked.wait_for(|&applied| applied >= generation),
            ) => waited,
        };
        if !matches!(waited, Ok(Ok(_))) {
            tracing::debug!("Redis subscriptions not confirmed in time; events may arrive late");
        }
    }

    async fn attach(&self, user: &Email, inbox: InboxSender) -> Result<SessionId, BusError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BusError("the Redis bus is closed".to_owned()));
        }
        let session = self.next_session(0).await?;
        let node = self.node();
        let (claimed, added) = tokio::join!(
            self.presence_script(Mode::Claim, user, session, node, ""),
            self.node_users("SADD", node, user),
        );
        claimed?;
        added?;
        let generation = {
            let mut state = self.state();
            if state.fanout.attach(session, user.clone(), inbox) {
                state.want(Channel::User(user.clone()));
            }
            state.sessions.insert(
                session,
                Local {
                    user: user.clone(),
                    presence: None,
                },
            );
            state.generation
        };
        self.subscribed(generation).await;
        Ok(session)
    }

    async fn detach(&self, session: SessionId) {
        let (user, last_of_user, generation) = {
            let mut state = self.state();
            let Some(detached) = state.fanout.detach(session) else {
                return;
            };
            state.sessions.remove(&session);
            let before = state.generation;
            if detached.last_of_user {
                state.unwant(Channel::User(detached.user.clone()));
            }
            for user in detached.unwatched {
                state.unwant(Channel::Pres(user));
            }
            let changed = state.generation != before;
            (
                detached.user,
                detached.last_of_user,
                changed.then_some(state.generation),
            )
        };
        let node = self.node();
        let released = self.presence_script(Mode::Detach, &user, session, node, "");
        if last_of_user {
            let _ = tokio::join!(released, self.node_users("SREM", node, &user));
        } else {
            let _ = released.await;
        }
        if let Some(generation) = generation {
            self.subscribed(generation).await;
        }
    }

    async fn watch(&self, session: SessionId, users: &[Email]) {
        let generation = {
            let mut state = self.state();
            for user in state.fanout.watch(session, users) {
                state.want(Channel::Pres(user));
            }
            state.generation
        };
        self.subscribed(generation).await;
    }

    async fn unwatch(&self, session: SessionId, users: &[Email]) {
        let generation = {
            let mut state = self.state();
            let before = state.generation;
            for user in state.fanout.unwatch(session, users) {
                state.unwant(Channel::Pres(user));
            }
            (state.generation != before).then_some(state.generation)
        };
        if let Some(generation) = generation {
            self.subscribed(generation).await;
        }
    }

    async fn publish_presence(&self, session: SessionId, presence: Option<Presence>) {
        let presence = presence.map(Arc::new);
        let user = {
            let mut state = self.state();
            let Some(local) = state.sessions.get_mut(&session) else {
                return;
            };
            local.presence.clone_from(&presence);
            local.user.clone()
        };
        let node = self.node();
        let (mode, record) = match &presence {
            Some(p) => (Mode::Publish, to_json(p.as_ref())),
            None => (Mode::Clear, String::new()),
        };
        // The user set is written again with every publish: cheap, and it repairs an entry
        // lost to a race with a detach of another local session of the same user.
        let (applied, _) = tokio::join!(
            self.presence_script(mode, &user, session, node, &record),
            self.node_users("SADD", node, &user),
        );
        if let Err(e) = applied {
            tracing::debug!(session, error = %e, "Presence not written");
        }
    }

    async fn presence(&self, users: &[Email]) -> Vec<(Email, Arc<Presence>)> {
        let mut out = Vec::new();
        for chunk in users.chunks(READ_BATCH) {
            let keys: Vec<String> = chunk.iter().map(|u| self.keys.presence(u)).collect();
            let mut conn = self.conn.clone();
            let Ok(values) = self
                .run(
                    "presence read",
                    ::redis::cmd("MGET")
                        .arg(&keys)
                        .query_async::<Vec<Option<Vec<u8>>>>(&mut conn),
                )
                .await
            else {
                return out;
            };
            for (user, value) in chunk.iter().zip(values) {
                if let Some(presence) = value.as_deref().and_then(parse_record) {
                    out.push((user.clone(), Arc::new(presence)));
                }
            }
        }
        out
    }

    async fn endpoints(&self, user: &Email) -> Vec<Arc<Presence>> {
        let mut conn = self.conn.clone();
        let Ok(records) = self
            .run(
                "endpoints read",
                ::redis::cmd("HGETALL")
                    .arg(self.keys.endpoints(user))
                    .query_async::<Vec<(u64, Vec<u8>)>>(&mut conn),
            )
            .await
        else {
            return Vec::new();
        };
        let mut records = records;
        records.sort_unstable_by_key(|(session, _)| *session);
        records
            .iter()
            .filter_map(|(_, value)| {
                let bar = value.iter().position(|&b| b == b'|')?;
                match serde_json::from_slice::<Presence>(&value[bar + 1..]) {
                    Ok(p) => Some(Arc::new(p)),
                    Err(e) => {
                        tracing::warn!(error = %e, "Unreadable endpoint record in Redis; ignored");
                        None
                    }
                }
            })
            .collect()
    }

    async fn send(&self, user: &Email, event: UserEvent) -> usize {
        let message = to_json(&UserOut {
            user,
            event: &event,
            at: unix_micros(),
        });
        let mut conn = self.conn.clone();
        self.run(
            "send",
            ::redis::cmd(self.publish_command())
                .arg(self.keys.user_channel(user))
                .arg(message)
                .query_async::<usize>(&mut conn),
        )
        .await
        .unwrap_or(0)
    }
}

fn parse_record(bytes: &[u8]) -> Option<Presence> {
    match serde_json::from_slice::<RecordIn>(bytes) {
        Ok(record) => Some(record.presence),
        Err(e) => {
            tracing::warn!(error = %e, "Unreadable presence record in Redis; ignored");
            None
        }
    }
}

#[async_trait]
impl Bus for RedisBus {
    /// Fails when Redis does not answer (bounded); the session is then not registered.
    async fn attach(&self, user: &Email, inbox: InboxSender) -> Result<SessionId, BusError> {
        self.inner.attach(user, inbox).await
    }

    async fn detach(&self, session: SessionId) {
        self.inner.detach(session).await;
    }

    async fn watch(&self, session: SessionId, users: &[Email]) {
        self.inner.watch(session, users).await;
    }

    async fn unwatch(&self, session: SessionId, users: &[Email]) {
        self.inner.unwatch(session, users).await;
    }

    async fn publish_presence(&self, session: SessionId, presence: Option<Presence>) {
        self.inner.publish_presence(session, presence).await;
    }

    /// One `MGET` round trip (per thousand users).
    async fn presence(&self, users: &[Email]) -> Vec<(Email, Arc<Presence>)> {
        self.inner.presence(users).await
    }

    /// One `HGETALL`.
    async fn endpoints(&self, user: &Email) -> Vec<Arc<Presence>> {
        self.inner.endpoints(user).await
    }

    /// Returns the number of **gateways** subscribed to `user:{user}` (what `PUBLISH` /
    /// `SPUBLISH` reports), not of sessions: 0 means the user is online nowhere, which is
    /// what callers ask. Delivery to this gateway's own sessions also goes through Redis.
    /// With sharded pub/sub in a Redis Cluster the count covers the shard's node only.
    async fn send(&self, user: &Email, event: UserEvent) -> usize {
        self.inner.send(user, event).await
    }
}

/// Deliver a received message to the local sessions. Called by the subscriber task.
impl Inner {
    fn on_message(&self, channel: &str, payload: &[u8]) {
        let metrics = butterfly_core::metrics::global();
        let lag = |at: u64, kind: &'static str| {
            let lag = Duration::from_micros(unix_micros().saturating_sub(at));
            metrics.pubsub_lag_seconds.observe(kind, lag);
        };
        if self.keys.is_pres_channel(channel) {
            let Ok(message) = serde_json::from_slice::<PresIn>(payload) else {
                tracing::warn!(channel, "Unreadable presence message; dropped");
                return;
            };
            lag(message.at, "pres");
            let sinks = self.state().fanout.watcher_sinks(&message.user);
            crate::fanout::deliver(
                &sinks,
                Event::Presence {
                    user: message.user,
                    presence: message.presence.map(Arc::new),
                },
            );
        } else if self.keys.is_user_channel(channel) {
            let Ok(message) = serde_json::from_slice::<UserIn>(payload) else {
                tracing::warn!(channel, "Unreadable user message; dropped");
                return;
            };
            lag(message.at, "user");
            let mut sinks = self.state().fanout.user_sinks(&message.user);
            // The session an event is about does not need to hear it (the NS would ignore it).
            if let UserEvent::SignedInElsewhere { session, .. }
            | UserEvent::EndpointsChanged { session } = message.event
            {
                sinks.retain(|sink| sink.session() != session);
            }
            crate::fanout::deliver(&sinks, Event::User(message.event));
        } else {
            tracing::debug!(channel, "Message on an unknown channel; dropped");
        }
    }
}
