//! Local fan-out: which local sessions get an event for a user.
//!
//! This part has no I/O and no locks, so both buses can use it. [`MemoryBus`](crate::MemoryBus)
//! keeps one for the whole process. The Redis bus keeps one per gateway and uses the
//! return values of [`LocalFanout::watch`], [`LocalFanout::unwatch`] and
//! [`LocalFanout::detach`] to (un)subscribe `pres:{user}` and `user:{user}`. The reference
//! count of a channel is the number of local sessions that need it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use butterfly_core::Email;
use butterfly_core::bus::{Event, SessionId};
use butterfly_core::inbox::{Delivery, InboxSender};

/// Where one session's events go: its bounded inbox.
///
/// Callers hand out `Arc<Sink>` so they can collect targets while holding a lock and
/// deliver after releasing it.
#[derive(Debug)]
pub struct Sink {
    session: SessionId,
    inbox: InboxSender,
    /// Warn once per session, not once per dropped event.
    overflow_logged: AtomicBool,
}

impl Sink {
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// Queue `event` without waiting. Returns whether it was queued.
    ///
    /// A full inbox means a slow consumer: the event is dropped and the inbox tells its
    /// session to close, so one slow reader never holds up a publisher or the other
    /// sessions. A closed inbox means the session is already going away.
    pub fn deliver(&self, event: Arc<Event>) -> bool {
        match self.inbox.deliver(event) {
            Delivery::Queued => true,
            Delivery::Overflowed => {
                if !self
                    .overflow_logged
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(
                        session = self.session,
                        "Session queue full; cutting off slow consumer"
                    );
                }
                false
            }
            Delivery::Closed => false,
        }
    }
}

/// Deliver `event` to every sink. Returns how many queued it. The event is allocated
/// once and shared: a fan-out to N watchers costs N reference counts, not N copies.
pub fn deliver(sinks: &[Arc<Sink>], event: Event) -> usize {
    let event = Arc::new(event);
    sinks
        .iter()
        .filter(|sink| sink.deliver(event.clone()))
        .count()
}

#[derive(Debug)]
struct LocalSession {
    user: Email,
    sink: Arc<Sink>,
    /// The reverse index of `LocalFanout::watchers`, so detaching costs O(this session's
    /// watches) and not O(all watched users).
    watching: HashSet<Email>,
}

/// What [`LocalFanout::detach`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detached {
    pub user: Email,
    /// This was `user`'s last local session. The Redis bus then unsubscribes `user:{user}`.
    pub last_of_user: bool,
    /// Users that no local session watches any more. The Redis bus then unsubscribes
    /// their `pres:{user}` channels.
    pub unwatched: Vec<Email>,
}

/// Counts, so tests and metrics can check that nothing leaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanoutStats {
    /// Attached sessions.
    pub sessions: usize,
    /// Users with at least one attached session.
    pub users: usize,
    /// Users with at least one watcher.
    pub watched_users: usize,
    /// (session, watched user) pairs.
    pub watches: usize,
}

/// The local sessions, grouped by their user and by the users they watch.
///
/// Invariants: every session in `by_user` or `watchers` is in `sessions`; a map entry
/// exists only if its set is not empty; `watchers[u]` contains `s` exactly when
/// `sessions[s].watching` contains `u`.
#[derive(Debug, Default)]
pub struct LocalFanout {
    sessions: HashMap<SessionId, LocalSession>,
    /// Each user's sessions in attach order, oldest first. A user rarely has more than a
    /// few, so a `Vec` is cheaper than a set and keeps the order.
    by_user: HashMap<Email, Vec<SessionId>>,
    /// Watched user → the local sessions that watch them.
    watchers: HashMap<Email, HashSet<SessionId>>,
}

impl LocalFanout {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `session` of `user`. Returns `true` if it is `user`'s first local session
    /// (the Redis bus then subscribes `user:{user}`).
    ///
    /// Session ids must be unique. If `session` is already registered, the old
    /// registration is replaced; that is a caller bug, so it is logged.
    pub fn attach(&mut self, session: SessionId, user: Email, inbox: InboxSender) -> bool {
        if self.sessions.contains_key(&session) {
            tracing::error!(
                session,
                "session id attached twice; replacing the old registration"
            );
            self.detach(session);
        }
        let sessions = self.by_user.entry(user.clone()).or_default();
        sessions.push(session);
        let first = sessions.len() == 1;
        let sink = Arc::new(Sink {
            session,
            inbox,
            overflow_logged: AtomicBool::new(false),
        });
        self.sessions.insert(
            session,
            LocalSession {
                user,
                sink,
                watching: HashSet::new(),
            },
        );
        first
    }

    /// Remove `session` and all its watches. Returns `None` if it was not attached.
    pub fn detach(&mut self, session: SessionId) -> Option<Detached> {
        let local = self.sessions.remove(&session)?;
        let mut unwatched = Vec::new();
        for user in local.watching {
            if remove_watcher(&mut self.watchers, &user, session) {
                unwatched.push(user);
            }
        }
        let mut last_of_user = false;
        if let Some(sessions) = self.by_user.get_mut(&local.user) {
            sessions.retain(|&s| s != session);
            if sessions.is_empty() {
                self.by_user.remove(&local.user);
                last_of_user = true;
            }
        }
        Some(Detached {
            user: local.user,
            last_of_user,
            unwatched,
        })
    }

    /// `session` now gets the presence events of `users`. Watching a user twice is the same
    /// as watching them once. Returns the users that had no local watcher before (the
    /// Redis bus then subscribes `pres:{user}`). A session that is not attached is ignored,
    /// so a call that races with `detach` cannot leave entries behind.
    pub fn watch(&mut self, session: SessionId, users: &[Email]) -> Vec<Email> {
        let Some(local) = self.sessions.get_mut(&session) else {
            return Vec::new();
        };
        let mut newly_watched = Vec::new();
        for user in users {
            if !local.watching.insert(user.clone()) {
                continue;
            }
            let watchers = self.watchers.entry(user.clone()).or_default();
            watchers.insert(session);
            if watchers.len() == 1 {
                newly_watched.push(user.clone());
            }
        }
        newly_watched
    }

    /// Stop delivering the presence of `users` to `session`. Returns the users that no
    /// local session watches any more (the Redis bus then unsubscribes `pres:{user}`).
    pub fn unwatch(&mut self, session: SessionId, users: &[Email]) -> Vec<Email> {
        let Some(local) = self.sessions.get_mut(&session) else {
            return Vec::new();
        };
        let mut unwatched = Vec::new();
        for user in users {
            if local.watching.remove(user) && remove_watcher(&mut self.watchers, user, session) {
                unwatched.push(user.clone());
            }
        }
        unwatched
    }

    /// The user `session` belongs to, if it is attached.
    pub fn user_of(&self, session: SessionId) -> Option<&Email> {
        self.sessions.get(&session).map(|local| &local.user)
    }

    /// `user`'s local sessions in attach order, oldest first.
    pub fn sessions_of(&self, user: &Email) -> &[SessionId] {
        self.by_user.get(user).map_or(&[], Vec::as_slice)
    }

    /// Whether any local session watches `user`.
    pub fn is_watched(&self, user: &Email) -> bool {
        self.watchers.contains_key(user)
    }

    /// Where `user`'s presence events go: the sinks of the sessions that watch them.
    pub fn watcher_sinks(&self, user: &Email) -> Vec<Arc<Sink>> {
        self.watchers
            .get(user)
            .map_or_else(Vec::new, |sessions| self.sinks(sessions.iter()))
    }

    /// Where events addressed to `user` go: the sinks of `user`'s own sessions.
    pub fn user_sinks(&self, user: &Email) -> Vec<Arc<Sink>> {
        self.sinks(self.sessions_of(user).iter())
    }

    fn sinks<'a>(&self, sessions: impl Iterator<Item = &'a SessionId>) -> Vec<Arc<Sink>> {
        sessions
            .filter_map(|s| self.sessions.get(s))
            .map(|local| Arc::clone(&local.sink))
            .collect()
    }

    /// O(sessions); meant for tests and occasional metrics.
    pub fn stats(&self) -> FanoutStats {
        FanoutStats {
            sessions: self.sessions.len(),
            users: self.by_user.len(),
            watched_users: self.watchers.len(),
            watches: self
                .sessions
                .values()
                .map(|local| local.watching.len())
                .sum(),
        }
    }
}

/// A free function so callers can borrow `watchers` while they hold a borrow of a session.
/// Returns whether `user` has no watcher left.
fn remove_watcher(
    watchers: &mut HashMap<Email, HashSet<SessionId>>,
    user: &Email,
    session: SessionId,
) -> bool {
    let Some(set) = watchers.get_mut(user) else {
        return false;
    };
    if !set.remove(&session) {
        return false;
    }
    if set.is_empty() {
        watchers.remove(user);
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(s: &str) -> Email {
        Email::parse(s).expect("valid email")
    }

    fn attach(
        f: &mut LocalFanout,
        session: SessionId,
        user: &str,
    ) -> (bool, butterfly_core::inbox::Inbox) {
        let (tx, rx) = butterfly_core::inbox::inbox(4);
        (f.attach(session, email(user), tx), rx)
    }

    #[test]
    fn reports_first_and_last_local_users_for_subscriptions() {
        let mut f = LocalFanout::new();
        let (alice, bob) = (email("alice@x.com"), email("bob@x.com"));
        let (first, _rx1) = attach(&mut f, 1, "carol@x.com");
        assert!(first);
        let (first, _rx2) = attach(&mut f, 2, "carol@x.com");
        assert!(!first);
        assert_eq!(f.sessions_of(&email("carol@x.com")), &[1, 2]);

        assert_eq!(
            f.watch(1, &[alice.clone(), bob.clone()]),
            vec![alice.clone(), bob.clone()]
        );
        assert_eq!(
            f.watch(1, std::slice::from_ref(&alice)),
            Vec::<Email>::new(),
            "idempotent"
        );
        assert_eq!(
            f.watch(2, std::slice::from_ref(&alice)),
            Vec::<Email>::new(),
            "already watched"
        );
        assert_eq!(f.stats().watches, 3);

        assert_eq!(
            f.unwatch(1, std::slice::from_ref(&alice)),
            Vec::<Email>::new(),
            "2 still watches"
        );
        assert_eq!(
            f.unwatch(1, std::slice::from_ref(&alice)),
            Vec::<Email>::new(),
            "not watching"
        );
        assert_eq!(
            f.unwatch(2, std::slice::from_ref(&alice)),
            vec![alice.clone()]
        );

        let d = f.detach(1).expect("attached");
        assert_eq!(
            d,
            Detached {
                user: email("carol@x.com"),
                last_of_user: false,
                unwatched: vec![bob]
            }
        );
        let d = f.detach(2).expect("attached");
        assert!(d.last_of_user);
        assert!(f.detach(2).is_none());
        assert_eq!(f.stats(), FanoutStats::default());
    }

    #[test]
    fn watch_of_a_detached_session_leaves_nothing() {
        let mut f = LocalFanout::new();
        assert!(f.watch(7, &[email("alice@x.com")]).is_empty());
        assert_eq!(f.stats(), FanoutStats::default());
    }
}
