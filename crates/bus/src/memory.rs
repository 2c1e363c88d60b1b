//! The in-process bus of the embedded mode.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use butterfly_core::Email;
use butterfly_core::bus::{Bus, BusError, Event, SessionId, UserEvent};
use butterfly_core::inbox::InboxSender;
use butterfly_core::presence::Presence;

use crate::fanout::{FanoutStats, LocalFanout, Sink, deliver};

/// Number of presence-ordering locks (see [`MemoryBus`]). Two users that share a stripe
/// only wait for each other's fan-out, so a small fixed number is enough.
const ORDER_STRIPES: usize = 64;

/// [`Bus`] for one process: the maps that Redis keys and channels hold in the distributed
/// mode (`pres:{user}` is [`LocalFanout`]'s watcher map, `user:{user}` its sessions by user).
///
/// # Locking
///
/// All state sits behind one `std::sync::Mutex`. Every critical section is a few map
/// operations and never awaits, and a std mutex costs less than `tokio::sync::RwLock`.
/// A `MutexGuard` is not `Send`, so holding it across an `.await` would not compile.
/// A read-write lock would not help: most calls write (watch, publish, attach, detach).
/// Events are never sent under this lock. Callers collect the target [`Sink`]s under the
/// lock and call `try_send` after releasing it, so with thousands of sessions the lock is
/// held only for the map work.
///
/// Sending outside the lock can reorder the presence events of one user. For example,
/// an old session's detach (offline) could reach a watcher after the new session's
/// publish (online), and the watcher would show the user as offline. Presence events are
/// snapshots, so that one stale event would stay. To prevent this, every presence change
/// of a user (publish or detach) holds that user's ordering lock from computing the
/// change until it is delivered. Each user maps to one of [`ORDER_STRIPES`] async mutexes.
/// Changes of one user are delivered in order. Changes of different users rarely wait for
/// each other, and nobody else waits: `send`, `watch`, `attach` and `presence` never
/// take an ordering lock. Lock order: ordering lock, then state lock.
#[derive(Debug)]
pub struct MemoryBus {
    next_session: AtomicU64,
    state: Mutex<State>,
    order: Box<[tokio::sync::Mutex<()>]>,
    stripe_hasher: std::collections::hash_map::RandomState,
}

#[derive(Debug, Default)]
struct State {
    fanout: LocalFanout,
    /// The presence each session last published, with the publish's sequence number (the
    /// user's presence is the newest). A detached session has no entry.
    presences: HashMap<SessionId, (u64, Arc<Presence>)>,
    next_publish: u64,
}

/// Counts, so tests and metrics can check that nothing leaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    pub fanout: FanoutStats,
    /// Sessions that have published a presence.
    pub presences: usize,
}

/// A presence change to deliver after the state lock is released.
struct Fanout {
    sinks: Vec<Arc<Sink>>,
    event: Event,
}

impl State {
    /// The user's presence: the one published last by any of their live sessions (a user
    /// may be signed in on several machines, MSNP16+). When that session leaves, the most
    /// recent remaining one's shows; an old session closing cannot hide a newer one.
    fn effective(&self, user: &Email) -> Option<&Arc<Presence>> {
        self.fanout
            .sessions_of(user)
            .iter()
            .filter_map(|s| self.presences.get(s))
            .max_by_key(|(seq, _)| *seq)
            .map(|(_, p)| p)
    }

    /// Apply `change` to `session`'s state (its user is `user`). Returns the deliveries:
    /// the new presence to the watchers if the user's presence changed, and
    /// [`UserEvent::EndpointsChanged`] to the user's other sessions, if any.
    fn changing(
        &mut self,
        user: &Email,
        session: SessionId,
        change: impl FnOnce(&mut Self),
    ) -> [Option<Fanout>; 2] {
        let before = self.effective(user).cloned();
        change(self);
        let after = self.effective(user);
        let watchers = (before.as_ref() != after).then(|| Fanout {
            sinks: self.fanout.watcher_sinks(user),
            event: Event::Presence {
                user: user.clone(),
                presence: after.cloned(),
            },
        });
        // Most users have one session: no list of sinks to build for them.
        let siblings = self
            .fanout
            .sessions_of(user)
            .iter()
            .any(|s| *s != session)
            .then(|| {
                let mut sinks = self.fanout.user_sinks(user);
                sinks.retain(|sink| sink.session() != session);
                Fanout {
                    sinks,
                    event: Event::User(UserEvent::EndpointsChanged { session }),
                }
            });
        [watchers, siblings]
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBus {
    pub fn new() -> Self {
        Self {
            next_session: AtomicU64::new(1),
            state: Mutex::new(State::default()),
            order: (0..ORDER_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            stripe_hasher: Default::default(),
        }
    }

    /// O(sessions); meant for tests and occasional metrics.
    pub fn stats(&self) -> BusStats {
        let state = self.state();
        BusStats {
            fanout: state.fanout.stats(),
            presences: state.presences.len(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // No critical section can panic between two updates that must stay consistent.
        // A panic elsewhere (a bug) should not also take down every other session, so a
        // poisoned lock is still used.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Change the presence state of `session`'s user under the user's ordering lock and
    /// deliver the resulting event, if there is one, before releasing the lock. A session
    /// that is not attached (or detaches while this waits) is ignored.
    async fn presence_change(&self, session: SessionId, change: impl FnOnce(&mut State)) {
        let Some(user) = self.state().fanout.user_of(session).cloned() else {
            return;
        };
        // usize is at least 32 bits and the modulus is small, so truncating the hash
        // before `%` keeps the stripes uniform.
        let stripe = self.stripe_hasher.hash_one(&user) as usize % self.order.len();
        let _ordered = self.order[stripe].lock().await;
        let fanouts = {
            let mut state = self.state();
            // A session's user never changes, so this only checks that it is still attached.
            if state.fanout.user_of(session).is_none() {
                return;
            }
            state.changing(&user, session, change)
        };
        for Fanout { sinks, event } in fanouts.into_iter().flatten() {
            deliver(&sinks, event);
        }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn attach(&self, user: &Email, inbox: InboxSender) -> Result<SessionId, BusError> {
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        // The new session has no presence yet, so the effective presence does not change.
        self.state().fanout.attach(session, user.clone(), inbox);
        Ok(session)
    }

    async fn detach(&self, session: SessionId) {
        self.presence_change(session, |state| {
            state.presences.remove(&session);
            state.fanout.detach(session);
        })
        .await;
    }

    async fn watch(&self, session: SessionId, users: &[Email]) {
        self.state().fanout.watch(session, users);
    }

    async fn unwatch(&self, session: SessionId, users: &[Email]) {
        self.state().fanout.unwatch(session, users);
    }

    async fn publish_presence(&self, session: SessionId, presence: Option<Presence>) {
        self.presence_change(session, |state| match presence {
            Some(p) => {
                state.next_publish += 1;
                let seq = state.next_publish;
                state.presences.insert(session, (seq, Arc::new(p)));
            }
            None => {
                state.presences.remove(&session);
            }
        })
        .await;
    }

    async fn presence(&self, users: &[Email]) -> Vec<(Email, Arc<Presence>)> {
        let state = self.state();
        users
            .iter()
            .filter_map(|u| state.effective(u).map(|p| (u.clone(), p.clone())))
            .collect()
    }

    async fn endpoints(&self, user: &Email) -> Vec<Arc<Presence>> {
        let state = self.state();
        let mut sessions = state.fanout.sessions_of(user).to_vec();
        sessions.sort_unstable();
        sessions
            .iter()
            .filter_map(|s| state.presences.get(s).map(|(_, p)| p.clone()))
            .collect()
    }

    async fn send(&self, user: &Email, event: UserEvent) -> usize {
        let sinks = self.state().fanout.user_sinks(user);
        deliver(&sinks, Event::User(event))
    }
}
