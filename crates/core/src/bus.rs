//! The pub/sub and session-directory port: presence fan-out and events directed at one user.
//!
//! Embedded: in-process maps (`butterfly-bus`). Distributed: Redis keys and channels
//! (`pres:{user}`, `user:{user}`). A session attaches once, watches the users on its
//! forward list, and reads every event from one bounded [`crate::inbox`]. A session that
//! does not drain it is cut off (the inbox reports overflow) rather than allowed to grow
//! memory or slow the publisher.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::account::Email;
use crate::inbox::InboxSender;
use crate::lists::PeerView;
use crate::oim::OimMeta;
use crate::presence::Presence;

/// One NS connection, unique for the life of the process (distributed: of the cluster).
pub type SessionId = u64;

/// Everything a session can be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A watched user's presence; `None` when they signed out. Shared: every watcher
    /// (and the bus's own record) holds the same snapshot, not a copy.
    Presence {
        user: Email,
        presence: Option<Arc<Presence>>,
    },
    /// Something addressed to this session's user.
    User(UserEvent),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEvent {
    /// The account signed in again on session `session`. Every other session closes with
    /// `OUT OTH`, except where both are MSNP16+ machines with different GUIDs (multiple
    /// points of presence): `endpoint` is the new session's machine GUID, if it has one.
    SignedInElsewhere {
        session: SessionId,
        endpoint: Option<String>,
    },
    /// Session `session` of my user published or dropped its presence, or left (0: a
    /// dead gateway's sessions were removed): MSNP16+ sessions show their user's machines
    /// again (`Bus::endpoints`). Sent by the bus to the user's other sessions, only while
    /// the user has more than one.
    EndpointsChanged { session: SessionId },
    /// `from` added me to (or removed me from) their forward list, so my reverse list
    /// changed (the receiver reads its new list version from the store).
    ReverseList {
        from: Email,
        friendly_name: String,
        added: bool,
    },
    /// `peer` changed how they treat me (AL/BL/BLP); re-decide whether I see them.
    PeerViewChanged { peer: Email, view: PeerView },
    /// My own lists or settings were edited by another service (the address book's SOAP
    /// edits): read them again, and watch whoever is on my forward list now.
    ListsChanged,
    /// An invitation to a switchboard session.
    Ring {
        session_id: u32,
        sb_address: String,
        inviter: Email,
        inviter_friendly: String,
        /// The inviting machine (MSNP16+), so that a call to my own account (bringing my
        /// other machines into a chat) does not ring the machine that made it.
        #[serde(default)]
        inviter_endpoint: Option<String>,
    },
    /// A user notification (`UUN`, MSNP13+) for me: relayed as `UBN`. `to_endpoint`
    /// limits it to one of my machines (MSNP16+); `from_endpoint` names the sender's.
    Notification {
        from: Email,
        from_endpoint: Option<String>,
        to_endpoint: Option<String>,
        kind: u32,
        payload: Vec<u8>,
    },
    /// An offline message for me was stored (MSNP13+ sessions are told at once).
    OimArrived { oim: OimMeta },
    /// `count` of my offline messages were deleted; my other machines drop theirs.
    OimsDeleted { count: u64 },
}

/// How many events may wait for one session before it is cut off as a slow consumer.
pub const SESSION_QUEUE: usize = 1024;

/// The bus could not register a session (distributed: Redis is unreachable). Sign-in
/// fails with an MSNP error; every other call degrades (logged) instead of failing,
/// because a session that is already signed in should keep working where it can.
#[derive(Debug, thiserror::Error)]
#[error("bus unavailable: {0}")]
pub struct BusError(pub String);

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Register a session of `user`. Its events arrive in its inbox (each published
    /// event is allocated once and shared by every recipient); when the inbox is full the
    /// event is dropped and the inbox reports overflow, so the session closes.
    async fn attach(&self, user: &Email, inbox: InboxSender) -> Result<SessionId, BusError>;
    /// Forget a session: its watches, its presence (the user's presence falls back to
    /// another session's, or offline when none is left), and its queue.
    async fn detach(&self, session: SessionId);
    /// Deliver presence changes of `users` to `session`.
    async fn watch(&self, session: SessionId, users: &[Email]);
    async fn unwatch(&self, session: SessionId, users: &[Email]);
    /// Set the presence of `session` and tell the watchers. The user's presence is the one
    /// published last by any of its live sessions; when that session leaves (or clears
    /// it), the most recent remaining one's, or offline when none has one. `None` = this
    /// session shows nothing (signed out, still attached).
    async fn publish_presence(&self, session: SessionId, presence: Option<Presence>);
    /// Current presence of each of `users` that is signed in (including HDN): the one its
    /// sessions published last (a user may have several, MSNP16+).
    async fn presence(&self, users: &[Email]) -> Vec<(Email, Arc<Presence>)>;
    /// The presence of each session of `user` that has published one, oldest session
    /// first: the user's machines, as its own MSNP16+ sessions list them.
    async fn endpoints(&self, user: &Email) -> Vec<Arc<Presence>>;
    /// Send an event to every session of `user`; returns how many sessions got it.
    async fn send(&self, user: &Email, event: UserEvent) -> usize;
}

/// Tell the users an edit by `me` concerns, after `Store::edit` applied it: the user whose
/// reverse list changed, and each peer whose view of me changed (their sessions then show
/// or hide me). `roster` is my roster after the edit. The NS and the address book both
/// call this, so an edit tells the same people whichever service made it.
pub async fn announce_edit(
    bus: &dyn Bus,
    me: &Email,
    roster: &crate::lists::Roster,
    outcome: &crate::lists::EditOutcome,
) {
    if let Some((target, added)) = &outcome.reverse {
        let event = UserEvent::ReverseList {
            from: me.clone(),
            friendly_name: roster.friendly_name.clone(),
            added: *added,
        };
        bus.send(target, event).await;
    }
    for peer in &outcome.privacy_changed {
        let lists = roster.contact(peer).map(|c| c.lists).unwrap_or_default();
        let view = crate::lists::PeerView {
            privacy: roster.privacy,
            lists_of_me: lists,
        };
        let event = UserEvent::PeerViewChanged {
            peer: me.clone(),
            view,
        };
        bus.send(peer, event).await;
    }
}
