//! Behaviour of the in-process bus through the `Bus` port.
//!
//! Delivery happens inside the publishing call, so after an `.await` on the bus
//! the event is already queued. `next` still waits with a bound so that a bug fails the
//! test instead of hanging it. `assert_quiet` uses `try_recv`, never a sleep.

use std::sync::Arc;
use std::time::Duration;

use butterfly_bus::{BusStats, MemoryBus};
use butterfly_core::Email;
use butterfly_core::bus::{Bus, Event, SessionId, UserEvent};
use butterfly_core::inbox::{Inbox, Received, inbox};
use butterfly_core::presence::{Presence, Status};
use tokio::time::timeout;

fn email(s: &str) -> Email {
    Email::parse(s).expect("valid email")
}

fn presence(status: Status, name: &str) -> Presence {
    Presence {
        status,
        friendly_name: name.to_owned(),
        caps: "0".to_owned(),
        msnobj: None,
        personal: None,
        dialect: 12,
        endpoint: None,
    }
}

fn online(name: &str) -> Presence {
    presence(Status::Online, name)
}

struct Client {
    id: SessionId,
    rx: Inbox,
}

async fn attach_with(bus: &MemoryBus, user: &str, capacity: usize) -> Client {
    let (tx, rx) = inbox(capacity);
    let id = bus
        .attach(&email(user), tx)
        .await
        .expect("in-process attach");
    Client { id, rx }
}

fn event_of(r: Received) -> Event {
    match r {
        Received::Event(e) => (*e).clone(),
        Received::Overflowed => panic!("inbox overflowed"),
    }
}

impl Client {
    fn overflowed(&mut self) -> bool {
        matches!(self.rx.try_recv(), Some(Received::Overflowed))
    }
}

async fn attach(bus: &MemoryBus, user: &str) -> Client {
    attach_with(bus, user, 16).await
}

impl Client {
    async fn next(&mut self) -> Event {
        event_of(
            timeout(Duration::from_secs(5), self.rx.recv())
                .await
                .expect("an event within the bound"),
        )
    }

    async fn expect_presence(&mut self, user: &str, presence: Option<Presence>) {
        assert_eq!(
            self.next().await,
            Event::Presence {
                user: email(user),
                presence: presence.map(Arc::new)
            }
        );
    }

    fn assert_quiet(&mut self) {
        assert_eq!(self.rx.try_recv(), None);
    }
}

#[tokio::test]
async fn watchers_receive_presence_changes_and_others_do_not() {
    let bus = MemoryBus::new();
    let alice = attach(&bus, "alice@x.com").await;
    let dave = attach(&bus, "dave@x.com").await;
    let mut bob = attach(&bus, "bob@x.com").await;
    let mut carol = attach(&bus, "carol@x.com").await;
    bus.watch(bob.id, &[email("alice@x.com")]).await;
    bus.watch(carol.id, &[email("dave@x.com")]).await;

    bus.publish_presence(alice.id, Some(online("Alice"))).await;
    bob.expect_presence("alice@x.com", Some(online("Alice")))
        .await;
    carol.assert_quiet();

    bus.publish_presence(dave.id, Some(online("Dave"))).await;
    carol
        .expect_presence("dave@x.com", Some(online("Dave")))
        .await;
    bob.assert_quiet();

    // A change to another status (here HDN) is delivered as is: the caller decides what
    // HDN looks like.
    bus.publish_presence(alice.id, Some(presence(Status::Hidden, "Alice")))
        .await;
    bob.expect_presence("alice@x.com", Some(presence(Status::Hidden, "Alice")))
        .await;
}

#[tokio::test]
async fn unwatch_stops_delivery_and_watch_is_idempotent() {
    let bus = MemoryBus::new();
    let alice = attach(&bus, "alice@x.com").await;
    let mut bob = attach(&bus, "bob@x.com").await;
    let alice_email = [email("alice@x.com")];

    bus.watch(bob.id, &alice_email).await;
    bus.watch(bob.id, &alice_email).await;
    assert_eq!(bus.stats().fanout.watches, 1);
    bus.publish_presence(alice.id, Some(online("A1"))).await;
    bob.expect_presence("alice@x.com", Some(online("A1"))).await;
    bob.assert_quiet(); // one event, not one per watch call

    // Watched twice, unwatched once: no longer watching.
    bus.unwatch(bob.id, &alice_email).await;
    bus.publish_presence(alice.id, Some(online("A2"))).await;
    bob.assert_quiet();
    assert_eq!(bus.stats().fanout.watched_users, 0);
}

#[tokio::test]
async fn detach_publishes_offline_to_watchers() {
    let bus = MemoryBus::new();
    let alice = attach(&bus, "alice@x.com").await;
    let mut bob = attach(&bus, "bob@x.com").await;
    bus.watch(bob.id, &[email("alice@x.com")]).await;
    bus.publish_presence(alice.id, Some(online("Alice"))).await;
    bob.expect_presence("alice@x.com", Some(online("Alice")))
        .await;

    bus.detach(alice.id).await;
    bob.expect_presence("alice@x.com", None).await;
    assert!(bus.presence(&[email("alice@x.com")]).await.is_empty());

    // A session that never published detaches without telling anyone.
    let quiet = attach(&bus, "alice@x.com").await;
    bus.detach(quiet.id).await;
    bob.assert_quiet();
}

#[tokio::test]
async fn the_presence_published_last_shows_and_falls_back_when_its_session_leaves() {
    let bus = MemoryBus::new();
    let mut bob = attach(&bus, "bob@x.com").await;
    bus.watch(bob.id, &[email("alice@x.com")]).await;
    let mut old = attach(&bus, "alice@x.com").await;
    bus.publish_presence(old.id, Some(online("old"))).await;
    bob.expect_presence("alice@x.com", Some(online("old")))
        .await;

    let mut new = attach(&bus, "alice@x.com").await;
    bus.publish_presence(new.id, Some(online("new"))).await;
    bob.expect_presence("alice@x.com", Some(online("new")))
        .await;
    let changed = |session| Event::User(UserEvent::EndpointsChanged { session });
    assert_eq!(old.next().await, changed(new.id));

    // Either machine may change the account's presence (MSNP16+ sign-ins on several).
    let away = presence(Status::Away, "old");
    bus.publish_presence(old.id, Some(away.clone())).await;
    bob.expect_presence("alice@x.com", Some(away.clone())).await;
    assert_eq!(new.next().await, changed(old.id));
    assert_eq!(
        bus.endpoints(&email("alice@x.com")).await,
        vec![Arc::new(away), Arc::new(online("new"))],
        "every machine's presence, oldest session first"
    );

    // The one that published last leaves: the other's shows again.
    bus.detach(old.id).await;
    bob.expect_presence("alice@x.com", Some(online("new")))
        .await;
    assert_eq!(new.next().await, changed(old.id));
    assert_eq!(
        bus.presence(&[email("alice@x.com")]).await,
        vec![(email("alice@x.com"), Arc::new(online("new")))]
    );

    // Alone now: nobody to tell about its own changes.
    bus.publish_presence(new.id, Some(online("new again")))
        .await;
    bob.expect_presence("alice@x.com", Some(online("new again")))
        .await;
    bus.detach(new.id).await;
    bob.expect_presence("alice@x.com", None).await;
    new.assert_quiet();
    old.assert_quiet();
}

#[tokio::test]
async fn an_older_session_closing_does_not_hide_a_newer_one() {
    let bus = MemoryBus::new();
    let mut bob = attach(&bus, "bob@x.com").await;
    bus.watch(bob.id, &[email("alice@x.com")]).await;
    let old = attach(&bus, "alice@x.com").await;
    bus.publish_presence(old.id, Some(online("old"))).await;
    bob.expect_presence("alice@x.com", Some(online("old")))
        .await;
    let new = attach(&bus, "alice@x.com").await;
    bus.publish_presence(new.id, Some(online("new"))).await;
    bob.expect_presence("alice@x.com", Some(online("new")))
        .await;

    // The replaced sign-in signs out and goes away: watchers see nothing new.
    bus.publish_presence(old.id, None).await;
    bus.detach(old.id).await;
    bob.assert_quiet();
    assert!(bus.endpoints(&email("alice@x.com")).await.len() == 1);
    bus.detach(new.id).await;
    bob.expect_presence("alice@x.com", None).await;
}

#[tokio::test]
async fn identical_presence_is_not_sent_twice() {
    let bus = MemoryBus::new();
    let alice = attach(&bus, "alice@x.com").await;
    let mut bob = attach(&bus, "bob@x.com").await;
    bus.watch(bob.id, &[email("alice@x.com")]).await;

    bus.publish_presence(alice.id, Some(online("Alice"))).await;
    bob.expect_presence("alice@x.com", Some(online("Alice")))
        .await;
    bus.publish_presence(alice.id, Some(online("Alice"))).await;
    bob.assert_quiet();

    bus.publish_presence(alice.id, None).await;
    bob.expect_presence("alice@x.com", None).await;
    bus.publish_presence(alice.id, None).await;
    bob.assert_quiet();
}

#[tokio::test]
async fn presence_returns_effective_presence_of_signed_in_users() {
    let bus = MemoryBus::new();
    let alice = attach(&bus, "alice@x.com").await;
    let carol = attach(&bus, "carol@x.com").await;
    let _silent = attach(&bus, "dave@x.com").await;
    bus.publish_presence(alice.id, Some(online("Alice"))).await;
    bus.publish_presence(carol.id, Some(presence(Status::Hidden, "Carol")))
        .await;

    let users = [
        email("alice@x.com"),
        email("carol@x.com"),
        email("dave@x.com"),
        email("nobody@x.com"),
    ];
    assert_eq!(
        bus.presence(&users).await,
        vec![
            (email("alice@x.com"), Arc::new(online("Alice"))),
            (
                email("carol@x.com"),
                Arc::new(presence(Status::Hidden, "Carol"))
            ),
        ]
    );
}

#[tokio::test]
async fn send_reaches_every_session_of_the_user() {
    let bus = MemoryBus::new();
    let mut a1 = attach(&bus, "alice@x.com").await;
    let mut a2 = attach(&bus, "alice@x.com").await;
    let mut bob = attach(&bus, "bob@x.com").await;
    let event = UserEvent::SignedInElsewhere {
        session: a2.id,
        endpoint: None,
    };

    assert_eq!(bus.send(&email("alice@x.com"), event.clone()).await, 2);
    assert_eq!(a1.next().await, Event::User(event.clone()));
    assert_eq!(a2.next().await, Event::User(event.clone()));
    bob.assert_quiet();

    assert_eq!(bus.send(&email("nobody@x.com"), event.clone()).await, 0);

    // A session whose inbox is gone is not counted.
    drop(a1);
    assert_eq!(bus.send(&email("alice@x.com"), event).await, 1);
}

#[tokio::test]
async fn a_full_queue_cuts_off_only_that_session() {
    let bus = MemoryBus::new();
    let alice = attach(&bus, "alice@x.com").await;
    let mut slow = attach_with(&bus, "bob@x.com", 1).await;
    let mut fast = attach(&bus, "carol@x.com").await;
    let watched = [email("alice@x.com")];
    bus.watch(slow.id, &watched).await;
    bus.watch(fast.id, &watched).await;

    // The slow session never reads. Publishing must neither block nor skip the fast one.
    let publishes = async {
        for name in ["A1", "A2", "A3"] {
            bus.publish_presence(alice.id, Some(online(name))).await;
        }
    };
    timeout(Duration::from_secs(5), publishes)
        .await
        .expect("publishing does not block");

    assert!(slow.overflowed());
    for name in ["A1", "A2", "A3"] {
        fast.expect_presence("alice@x.com", Some(online(name)))
            .await;
    }
    // The slow session is told it overflowed (and keeps being told) instead of getting
    // a partial history.
    assert!(slow.overflowed());
}

#[tokio::test]
async fn detaching_everyone_leaves_nothing_behind() {
    let bus = MemoryBus::new();
    let users: Vec<String> = (0..20).map(|i| format!("user{i}@x.com")).collect();
    let emails: Vec<Email> = users.iter().map(|u| email(u)).collect();
    let mut clients = Vec::new();
    for user in &users {
        // Two sessions per user, each watching everyone (including themselves).
        for _ in 0..2 {
            let client = attach(&bus, user).await;
            bus.watch(client.id, &emails).await;
            bus.publish_presence(client.id, Some(online(user))).await;
            clients.push(client);
        }
    }
    let stats = bus.stats();
    assert_eq!(stats.fanout.sessions, 40);
    assert_eq!(stats.fanout.users, 20);
    assert_eq!(stats.fanout.watched_users, 20);
    assert_eq!(stats.fanout.watches, 40 * 20);
    assert_eq!(stats.presences, 40);

    for client in &clients {
        bus.detach(client.id).await;
    }
    assert_eq!(bus.stats(), BusStats::default());

    // Calls for sessions that are gone change nothing.
    let gone = clients[0].id;
    bus.watch(gone, &emails).await;
    bus.publish_presence(gone, Some(online("ghost"))).await;
    bus.detach(gone).await;
    assert_eq!(bus.stats(), BusStats::default());
}

/// One user's presence events reach a watcher in the order the changes were made. Here the
/// old session detaches while the new one publishes. Whatever the interleaving, the last
/// event each watcher sees must match the final state, which is "online as new". Many
/// watchers make each fan-out long enough for the two to overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_of_one_user_arrive_in_order() {
    const ROUNDS: usize = 100;
    const WATCHERS: usize = 300;
    let alice = [email("alice@x.com")];
    let final_event = Event::Presence {
        user: email("alice@x.com"),
        presence: Some(Arc::new(online("new"))),
    };
    for _ in 0..ROUNDS {
        let bus = Arc::new(MemoryBus::new());
        let mut watchers = Vec::new();
        for i in 0..WATCHERS {
            let watcher = attach_with(&bus, &format!("w{i}@x.com"), 8).await;
            bus.watch(watcher.id, &alice).await;
            watchers.push(watcher);
        }
        let old = attach(&bus, "alice@x.com").await;
        bus.publish_presence(old.id, Some(online("old"))).await;
        let new = attach(&bus, "alice@x.com").await;

        let detach = tokio::spawn({
            let bus = Arc::clone(&bus);
            async move { bus.detach(old.id).await }
        });
        let publish = tokio::spawn({
            let bus = Arc::clone(&bus);
            async move { bus.publish_presence(new.id, Some(online("new"))).await }
        });
        timeout(Duration::from_secs(5), async {
            detach.await.expect("detach task");
            publish.await.expect("publish task");
        })
        .await
        .expect("both changes finish");

        for watcher in &mut watchers {
            let mut last = None;
            while let Some(r) = watcher.rx.try_recv() {
                last = Some(event_of(r));
            }
            assert_eq!(last.as_ref(), Some(&final_event));
        }
    }
}
