//! Node leases: a gateway killed without cleaning up must not leave its users online.
//!
//! Each node registers an id (`{nodes}:seq`), an owner token (`{nodes}:owner`) and a
//! heartbeat (`{nodes}:live`, scored by the server's clock in ms), and keeps the set of
//! users with a local session (`node:{id}:users`). Every third of the lease the lease task
//!
//! 1. refreshes the heartbeat, if the registration is still this process's. If it is
//!    gone, Redis lost its data (a restart without persistence) or the other nodes declared
//!    this one dead and removed its entries: the node registers again under a new id and
//!    rebuilds its directory entries, presence records and user set from memory, and
//!    raises the session counter to its highest live session;
//!
//!    After the subscriber reconnected, the node also writes its entries back when its
//!    registration survived (`restore` mode: only records that are missing or differ are
//!    written and published). In a Redis Cluster one node can restart and lose the slots
//!    of some users while the registry's slot lives elsewhere;
//! 2. looks for nodes whose heartbeat is older than the lease. For each, one node claims
//!    the clean-up (`SET reap:{id} NX PX lease`), runs the presence script in `reap` mode
//!    for each of the dead node's users (only entries that still name that node are
//!    removed, and watchers are told the user went offline), then removes the node's
//!    registration. A reaper that dies half-way leaves the node registered; another one
//!    takes over once the claim expires.
//!
//! So watchers see a killed gateway's users go offline within about `lease + lease / 3`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use butterfly_core::Email;
use butterfly_core::bus::{BusError, SessionId};
use butterfly_core::presence::Presence;
use tokio_util::sync::CancellationToken;

use super::{BULK_CONCURRENCY, Inner, Mode, to_json};

/// Wait before retrying a heartbeat that failed (capped by the heartbeat interval).
const RETRY: Duration = Duration::from_millis(500);

pub(super) async fn run(inner: Arc<Inner>, stop: CancellationToken) {
    let every = inner.config.heartbeat_every();
    let mut wait = every;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = inner.heartbeat_now.notified() => {}
        }
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        wait = if inner.tick().await {
            every
        } else {
            every.min(RETRY)
        };
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A user's local sessions, oldest first, with the presence each last published.
type Sessions = Vec<(SessionId, Option<Arc<Presence>>)>;
type UserSessions = (Email, Sessions);

impl Inner {
    /// Register this node under a new id above `floor`; returns the id.
    pub(super) async fn register(&self, floor: u64) -> Result<u64, BusError> {
        let mut invocation = self.scripts.register_node.prepare_invoke();
        invocation
            .key(self.keys.nodes_live())
            .key(self.keys.nodes_owner())
            .key(self.keys.nodes_seq())
            .arg(&self.token)
            .arg(floor);
        let mut conn = self.conn.clone();
        let node: u64 = self
            .run("node registration", invocation.invoke_async(&mut conn))
            .await?;
        self.node.store(node, Ordering::Relaxed);
        Ok(node)
    }

    async fn node_users_clear(&self, node: u64) -> Result<i64, BusError> {
        let mut conn = self.conn.clone();
        self.run(
            "node users",
            ::redis::cmd("DEL")
                .arg(self.keys.node_users(node))
                .query_async(&mut conn),
        )
        .await
    }

    /// Remove this node's registration (graceful close; its sessions are detached).
    pub(super) async fn unregister(&self) {
        let node = self.node();
        let _ = self.node_users_clear(node).await;
        let _ = self.remove_node(node, "node unregistration").await;
    }

    /// Remove node `node` from the registry (`{nodes}`: one slot, one pipeline). Its
    /// user set lives in its own slot and is deleted separately, first: a registration
    /// left by a failure in between is reaped again, with nothing left to release.
    async fn remove_node(&self, node: u64, what: &str) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        self.run(
            what,
            ::redis::pipe()
                .cmd("ZREM")
                .arg(self.keys.nodes_live())
                .arg(node)
                .ignore()
                .cmd("HDEL")
                .arg(self.keys.nodes_owner())
                .arg(node)
                .ignore()
                .query_async::<()>(&mut conn),
        )
        .await
    }

    /// One heartbeat and one look for dead nodes. Returns whether both worked.
    async fn tick(&self) -> bool {
        match self.heartbeat().await {
            Ok(true) => {
                if self.repair.swap(false, Ordering::SeqCst)
                    && let Err(e) = self.rebuild(self.node()).await
                {
                    tracing::warn!(error = %e, "Writing back this node's entries failed; retrying");
                    self.repair.store(true, Ordering::SeqCst);
                    return false;
                }
            }
            Ok(false) => {
                self.repair.store(false, Ordering::SeqCst);
                if self.recover().await.is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
        self.reap_dead().await.is_ok()
    }

    /// Refresh the heartbeat. `Ok(false)`: the registration is gone.
    async fn heartbeat(&self) -> Result<bool, BusError> {
        let mut invocation = self.scripts.heartbeat.prepare_invoke();
        invocation
            .key(self.keys.nodes_live())
            .key(self.keys.nodes_owner())
            .arg(self.node())
            .arg(&self.token);
        let mut conn = self.conn.clone();
        let alive: i64 = self
            .run("heartbeat", invocation.invoke_async(&mut conn))
            .await?;
        Ok(alive == 1)
    }

    /// The registration is gone: register again and put back what this node owns.
    async fn recover(&self) -> Result<(), BusError> {
        let old = self.node();
        let node = self.register(old).await?;
        self.rebuilds.fetch_add(1, Ordering::Relaxed);
        // Sessions may have added users under the old id since Redis restarted; that id is
        // not registered, so nobody would ever reap (or delete) its set.
        let _ = self.node_users_clear(old).await;
        tracing::warn!(
            old,
            node,
            "This node's registration was gone from Redis (restart without persistence, \
             or declared dead); registered again, rebuilding its entries"
        );
        let rebuilt = self.rebuild(node).await;
        if rebuilt.is_err() {
            // Registered but incomplete: make the next heartbeat start over.
            let mut conn = self.conn.clone();
            let _ = self
                .run(
                    "node unregistration",
                    ::redis::cmd("HDEL")
                        .arg(self.keys.nodes_owner())
                        .arg(node)
                        .query_async::<i64>(&mut conn),
                )
                .await;
        }
        rebuilt
    }

    /// Write this node's local sessions back: user set, directory entries, presence
    /// records (published again where they were missing or differed, so watchers that
    /// resubscribed see them).
    async fn rebuild(&self, node: u64) -> Result<(), BusError> {
        let (highest, users) = {
            let state = self.state();
            let highest = state.sessions.keys().max().copied();
            let mut by_user: BTreeMap<&Email, Sessions> = BTreeMap::new();
            for (&session, local) in &state.sessions {
                by_user
                    .entry(&local.user)
                    .or_default()
                    .push((session, local.presence.clone()));
            }
            let users: Vec<UserSessions> = by_user
                .into_iter()
                .map(|(user, mut sessions)| {
                    sessions.sort_unstable_by_key(|(s, _)| *s);
                    (user.clone(), sessions)
                })
                .collect();
            (highest, users)
        };
        if let Some(highest) = highest {
            self.next_session(highest).await?;
        }
        let mut failed = None;
        for chunk in users.chunks(BULK_CONCURRENCY) {
            let results = futures::future::join_all(
                chunk
                    .iter()
                    .map(|(user, sessions)| self.rebuild_user(node, user, sessions)),
            )
            .await;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                failed = Some(e);
            }
        }
        match failed {
            Some(e) => Err(e),
            None => {
                tracing::info!(node, users = users.len(), "Rebuilt this node's entries");
                Ok(())
            }
        }
    }

    async fn rebuild_user(
        &self,
        node: u64,
        user: &Email,
        sessions: &[(SessionId, Option<Arc<Presence>>)],
    ) -> Result<(), BusError> {
        self.node_users("SADD", node, user).await?;
        // Oldest first, as they attached; a user's presence already in place stays.
        for (session, presence) in sessions {
            let record = presence.as_ref().map(|p| to_json(p.as_ref()));
            let mode = if record.is_some() {
                Mode::Restore
            } else {
                Mode::Claim
            };
            self.presence_script(mode, user, *session, node, record.as_deref().unwrap_or(""))
                .await?;
        }
        // A session that detached while this ran must not stay registered.
        let gone: Vec<SessionId> = {
            let state = self.state();
            sessions
                .iter()
                .map(|(s, _)| *s)
                .filter(|s| !state.sessions.contains_key(s))
                .collect()
        };
        for session in gone {
            self.presence_script(Mode::Detach, user, session, node, "")
                .await?;
        }
        Ok(())
    }

    /// Find nodes whose lease expired and clean up after them.
    async fn reap_dead(&self) -> Result<(), BusError> {
        let lease_ms = millis(self.config.lease);
        let mut invocation = self.scripts.dead_nodes.prepare_invoke();
        invocation.key(self.keys.nodes_live()).arg(lease_ms);
        let mut conn = self.conn.clone();
        let dead: Vec<u64> = self
            .run("dead nodes", invocation.invoke_async(&mut conn))
            .await?;
        let me = self.node();
        for node in dead.into_iter().filter(|&n| n != me) {
            let claimed: Option<String> = self
                .run(
                    "reap claim",
                    ::redis::cmd("SET")
                        .arg(self.keys.reap_lock(node))
                        .arg(&self.token)
                        .arg("NX")
                        .arg("PX")
                        .arg(lease_ms)
                        .query_async(&mut conn),
                )
                .await?;
            if claimed.is_some() {
                self.reap(node).await?;
            }
        }
        Ok(())
    }

    /// Report the users of dead node `node` offline and remove its registration.
    async fn reap(&self, node: u64) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        let users: Vec<String> = self
            .run(
                "dead node users",
                ::redis::cmd("SMEMBERS")
                    .arg(self.keys.node_users(node))
                    .query_async(&mut conn),
            )
            .await?;
        let users: Vec<Email> = users.iter().filter_map(|u| Email::parse(u).ok()).collect();
        let mut released = 0usize;
        for chunk in users.chunks(BULK_CONCURRENCY) {
            let results = futures::future::join_all(
                chunk
                    .iter()
                    .map(|user| self.presence_script(Mode::Reap, user, 0, node, "")),
            )
            .await;
            for result in results {
                // Not removing the registration after a failure: another reaper retries.
                released += usize::from(result?);
            }
        }
        self.node_users_clear(node).await?;
        self.remove_node(node, "dead node removal").await?;
        tracing::info!(
            node,
            users = users.len(),
            released,
            "Reaped a node whose lease expired"
        );
        Ok(())
    }
}
