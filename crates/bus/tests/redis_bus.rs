//! The Redis bus and shard registry against a real Redis.
//!
//! Redis is `BUTTERFLY_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). Each test uses
//! its own random key prefix and deletes its keys at the end. When Redis is not reachable
//! the tests print why and pass, except with `CI=true`, where they fail (see
//! [`skip`]). The restart test starts its own `redis-server` on a free port.
//!
//! Two `RedisBus` instances in one process play two gateways. Delivery is asynchronous
//! (through Redis), so every wait is bounded, and "nothing arrived" is proven with a
//! barrier: a later event on the same subscriber connection arrives after anything that
//! was published before it. No fixed sleeps.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use butterfly_bus::{RedisBus, RedisBusConfig, RedisSwitchboards, ShardRegistration};
use butterfly_core::Email;
use butterfly_core::bus::{Bus, Event, SessionId, UserEvent};
use butterfly_core::inbox::{Inbox, Received, inbox};
use butterfly_core::presence::{Presence, Status};
use butterfly_core::switchboards::Switchboards;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// Bound for one expected event or condition.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Redis availability, the one skip rule
// ---------------------------------------------------------------------------------------

/// Skip the calling test: print why and return `None`, or fail under `CI=true`.
fn skip<T>(why: &str) -> Option<T> {
    let message = format!(
        "skipped: {why}; start it with `redis-server --save \"\" --appendonly no` \
         or set BUTTERFLY_TEST_REDIS_URL"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message} (CI=true: Redis is required)");
    }
    eprintln!("{message}");
    None
}

async fn ping(url: &str) -> anyhow::Result<String> {
    let client = redis::Client::open(url)?;
    let mut conn = timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await??;
    let info: String = timeout(
        Duration::from_secs(2),
        redis::cmd("INFO").arg("server").query_async(&mut conn),
    )
    .await??;
    Ok(info)
}

/// Logs for debugging a test: `RUST_LOG=butterfly_bus=debug cargo test … -- --nocapture`.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The shared test Redis, or `None` (skip).
async fn test_redis() -> Option<TestRedis> {
    init_logs();
    let url = std::env::var("BUTTERFLY_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.into());
    match ping(&url).await {
        Ok(info) => {
            let major = info
                .lines()
                .find_map(|l| l.strip_prefix("redis_version:"))
                .and_then(|v| v.split('.').next()?.trim().parse::<u32>().ok())
                .unwrap_or(0);
            Some(TestRedis {
                url,
                prefix: format!("bftest:{:016x}:", rand::random::<u64>()),
                major,
            })
        }
        Err(e) => skip(&format!("Redis not reachable at {url} ({e})")),
    }
}

struct TestRedis {
    url: String,
    prefix: String,
    major: u32,
}

impl TestRedis {
    fn config(&self, lease: Duration, sharded: bool) -> RedisBusConfig {
        RedisBusConfig {
            url: self.url.clone(),
            prefix: self.prefix.clone(),
            sharded,
            cluster: false,
            lease,
        }
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connection")
    }

    async fn keys(&self) -> Vec<String> {
        let mut conn = self.conn().await;
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .expect("scan");
            keys.extend(batch);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }

    /// Delete every key of this test.
    async fn cleanup(&self) {
        let keys = self.keys().await;
        if !keys.is_empty() {
            let mut conn = self.conn().await;
            let _: i64 = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .expect("del");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------

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

fn pres_event(user: &str, presence: Option<Presence>) -> Event {
    Event::Presence {
        user: email(user),
        presence: presence.map(Arc::new),
    }
}

struct Session {
    id: SessionId,
    rx: Inbox,
}

async fn attach(bus: &RedisBus, user: &str) -> Session {
    let (tx, rx) = inbox(64);
    let id = bus.attach(&email(user), tx).await.expect("attach");
    Session { id, rx }
}

impl Session {
    async fn next(&mut self) -> Event {
        match timeout(WAIT, self.rx.recv()).await {
            Ok(Received::Event(e)) => (*e).clone(),
            Ok(Received::Overflowed) => panic!("inbox overflowed"),
            Err(_) => panic!("no event within {WAIT:?}"),
        }
    }

    async fn expect(&mut self, event: Event) {
        assert_eq!(self.next().await, event);
    }

    /// The next event that is not `skip` (a presence the bus may send again, e.g. when a
    /// gateway rebuilds after a Redis restart).
    async fn next_except(&mut self, skip: &Event) -> Event {
        loop {
            let event = self.next().await;
            if &event != skip {
                return event;
            }
        }
    }

    fn assert_empty(&mut self) {
        assert_eq!(self.rx.try_recv(), None);
    }
}

/// Poll `check` until it holds, failing after [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn gateway(redis: &TestRedis, lease: Duration, sharded: bool) -> Arc<RedisBus> {
    RedisBus::connect(redis.config(lease, sharded), CancellationToken::new())
        .await
        .expect("connect")
}

const LEASE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// Fan-out between gateways
// ---------------------------------------------------------------------------------------

async fn fan_out_between_gateways(sharded: bool) {
    let Some(redis) = test_redis().await else {
        return;
    };
    let a = gateway(&redis, LEASE, sharded).await;
    let b = gateway(&redis, LEASE, sharded).await;

    let alice = attach(&a, "alice@x.com").await;
    let carol = attach(&a, "carol@x.com").await;
    let mut bob = attach(&b, "bob@x.com").await;
    b.watch(bob.id, &[email("alice@x.com"), email("carol@x.com")])
        .await;
    assert_eq!(b.stats().pres_channels, 2);
    assert_eq!(b.stats().user_channels, 1);
    assert_eq!(a.stats().user_channels, 2);

    // Presence published on A reaches the watcher on B, exactly.
    a.publish_presence(alice.id, Some(online("Alice"))).await;
    bob.expect(pres_event("alice@x.com", Some(online("Alice"))))
        .await;
    a.publish_presence(alice.id, Some(presence(Status::Away, "Alice")))
        .await;
    bob.expect(pres_event(
        "alice@x.com",
        Some(presence(Status::Away, "Alice")),
    ))
    .await;

    // A user event reaches the user's session on the other gateway.
    let ring = UserEvent::Ring {
        session_id: 7,
        sb_address: "127.0.0.1:1864".into(),
        inviter: email("alice@x.com"),
        inviter_friendly: "Alice".into(),
        inviter_endpoint: None,
    };
    assert_eq!(a.send(&email("bob@x.com"), ring.clone()).await, 1);
    bob.expect(Event::User(ring.clone())).await;
    // Nobody online: 0.
    assert_eq!(a.send(&email("nobody@x.com"), ring).await, 0);

    // Unwatch stops delivery; carol (still watched) is the barrier.
    b.unwatch(bob.id, &[email("alice@x.com")]).await;
    assert_eq!(b.stats().pres_channels, 1, "pres:alice unsubscribed");
    a.publish_presence(alice.id, Some(online("Alice again")))
        .await;
    a.publish_presence(carol.id, Some(online("Carol"))).await;
    bob.expect(pres_event("carol@x.com", Some(online("Carol"))))
        .await;
    bob.assert_empty();

    // Detaching publishes offline to watchers, and everything is unsubscribed.
    a.detach(carol.id).await;
    bob.expect(pres_event("carol@x.com", None)).await;
    b.detach(bob.id).await;
    let stats = b.stats();
    assert_eq!(
        (
            stats.pres_channels,
            stats.user_channels,
            stats.pending_channels
        ),
        (0, 0, 0)
    );
    assert_eq!(stats.fanout, Default::default());
    a.detach(alice.id).await;
    let stats = a.stats();
    assert_eq!((stats.user_channels, stats.presences), (0, 0));
    assert_eq!(stats.fanout, Default::default());

    a.close().await;
    b.close().await;
    redis.cleanup().await;
}

#[tokio::test]
async fn presence_and_user_events_cross_gateways() {
    fan_out_between_gateways(false).await;
}

#[tokio::test]
async fn sharded_pubsub_crosses_gateways_on_redis_7() {
    let Some(redis) = test_redis().await else {
        return;
    };
    if redis.major < 7 {
        eprintln!("skipped: Redis {} has no sharded pub/sub (7+)", redis.major);
        return;
    }
    fan_out_between_gateways(true).await;
}

#[tokio::test]
async fn signed_in_elsewhere_reaches_the_older_session_on_the_other_gateway() {
    let Some(redis) = test_redis().await else {
        return;
    };
    let a = gateway(&redis, LEASE, false).await;
    let b = gateway(&redis, LEASE, false).await;

    let mut old = attach(&a, "alice@x.com").await;
    let mut new = attach(&b, "alice@x.com").await;
    assert!(new.id > old.id, "session ids increase across gateways");
    // What the NS does right after attach.
    let event = UserEvent::SignedInElsewhere {
        session: new.id,
        endpoint: None,
    };
    assert_eq!(b.send(&email("alice@x.com"), event.clone()).await, 2);
    old.expect(Event::User(event.clone())).await;

    // The new session is not told about itself: a later event is the next it sees.
    let barrier = UserEvent::ReverseList {
        from: email("bob@x.com"),
        friendly_name: "Bob".into(),
        added: true,
    };
    b.send(&email("alice@x.com"), barrier.clone()).await;
    new.expect(Event::User(barrier.clone())).await;
    old.expect(Event::User(barrier)).await;

    a.close().await;
    b.close().await;
    redis.cleanup().await;
}

#[tokio::test]
async fn sessions_of_one_user_on_two_gateways_share_its_presence() {
    let Some(redis) = test_redis().await else {
        return;
    };
    let a = gateway(&redis, LEASE, false).await;
    let b = gateway(&redis, LEASE, false).await;
    let mut bob = attach(&b, "bob@x.com").await;
    b.watch(bob.id, &[email("alice@x.com")]).await;

    let mut old = attach(&a, "alice@x.com").await;
    a.publish_presence(old.id, Some(online("old"))).await;
    bob.expect(pres_event("alice@x.com", Some(online("old"))))
        .await;

    let mut new = attach(&b, "alice@x.com").await;
    b.publish_presence(new.id, Some(online("new"))).await;
    bob.expect(pres_event("alice@x.com", Some(online("new"))))
        .await;
    let changed = |session| Event::User(UserEvent::EndpointsChanged { session });
    old.expect(changed(new.id)).await;

    // Either machine may change the account's presence (MSNP16+ sign-ins on several).
    let away = presence(Status::Away, "old");
    a.publish_presence(old.id, Some(away.clone())).await;
    bob.expect(pres_event("alice@x.com", Some(away.clone())))
        .await;
    new.expect(changed(old.id)).await;
    assert_eq!(
        b.endpoints(&email("alice@x.com")).await,
        vec![Arc::new(away), Arc::new(online("new"))],
        "every machine's presence, oldest session first"
    );

    // The one that published last leaves: the other's shows again.
    a.detach(old.id).await;
    bob.expect(pres_event("alice@x.com", Some(online("new"))))
        .await;
    new.expect(changed(old.id)).await;
    assert_eq!(
        a.presence(&[email("alice@x.com")]).await,
        vec![(email("alice@x.com"), Arc::new(online("new")))]
    );
    assert_eq!(a.endpoints(&email("alice@x.com")).await.len(), 1);

    // A replaced sign-in that clears its presence and leaves changes nothing for watchers.
    let mut replaced = attach(&a, "alice@x.com").await;
    a.publish_presence(replaced.id, None).await;
    a.detach(replaced.id).await;
    new.expect(changed(replaced.id)).await;
    replaced.assert_empty();

    // The last one leaves: offline, and nothing is left behind.
    b.detach(new.id).await;
    bob.expect(pres_event("alice@x.com", None)).await;
    assert!(a.presence(&[email("alice@x.com")]).await.is_empty());
    assert!(a.endpoints(&email("alice@x.com")).await.is_empty());
    bob.assert_empty();
    let left: Vec<String> = redis
        .keys()
        .await
        .into_iter()
        .filter(|k| k.contains("alice"))
        .collect();
    assert!(left.is_empty(), "alice's keys removed: {left:?}");

    a.close().await;
    b.close().await;
    redis.cleanup().await;
}

#[tokio::test]
async fn presence_reads_the_online_users_in_one_batch() {
    let Some(redis) = test_redis().await else {
        return;
    };
    let a = gateway(&redis, LEASE, false).await;
    let b = gateway(&redis, LEASE, false).await;
    let alice = attach(&a, "alice@x.com").await;
    let carol = attach(&b, "carol@x.com").await;
    let _dave = attach(&b, "dave@x.com").await; // attached, never published
    a.publish_presence(alice.id, Some(online("Alice"))).await;
    b.publish_presence(carol.id, Some(presence(Status::Hidden, "Carol")))
        .await;

    let users = [
        email("alice@x.com"),
        email("bob@x.com"),
        email("carol@x.com"),
        email("dave@x.com"),
    ];
    let mut got = b.presence(&users).await;
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        got,
        vec![
            (email("alice@x.com"), Arc::new(online("Alice"))),
            (
                email("carol@x.com"),
                Arc::new(presence(Status::Hidden, "Carol"))
            ),
        ]
    );
    assert!(b.presence(&[]).await.is_empty());

    // Signing out (still attached) removes the record and tells watchers.
    a.publish_presence(alice.id, None).await;
    assert!(b.presence(&users[..1]).await.is_empty());

    a.close().await;
    b.close().await;
    redis.cleanup().await;
}

#[tokio::test]
async fn graceful_close_reports_offline_and_unregisters() {
    let Some(redis) = test_redis().await else {
        return;
    };
    let a = gateway(&redis, LEASE, false).await;
    let b = gateway(&redis, LEASE, false).await;
    let alice = attach(&a, "alice@x.com").await;
    a.publish_presence(alice.id, Some(online("Alice"))).await;
    let mut bob = attach(&b, "bob@x.com").await;
    b.watch(bob.id, &[email("alice@x.com")]).await;

    a.close().await;
    bob.expect(pres_event("alice@x.com", None)).await;
    assert!(a.attach(&email("eve@x.com"), inbox(1).0).await.is_err());
    let node = a.stats().node;
    let mut conn = redis.conn().await;
    let owner: Option<String> = redis::cmd("HGET")
        .arg(format!("{}{{nodes}}:owner", redis.prefix))
        .arg(node)
        .query_async(&mut conn)
        .await
        .expect("hget");
    assert_eq!(owner, None, "node unregistered");

    b.close().await;
    redis.cleanup().await;
}

// ---------------------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_crashed_gateways_users_go_offline_when_its_lease_expires() {
    let Some(redis) = test_redis().await else {
        return;
    };
    let lease = Duration::from_secs(1);
    let crash = CancellationToken::new();
    let a = RedisBus::connect(redis.config(lease, false), crash.clone())
        .await
        .expect("connect");
    let b = gateway(&redis, lease, false).await;
    let alice = attach(&a, "alice@x.com").await;
    a.publish_presence(alice.id, Some(online("Alice"))).await;
    let mut bob = attach(&b, "bob@x.com").await;
    b.watch(bob.id, &[email("alice@x.com")]).await;
    assert_eq!(b.presence(&[email("alice@x.com")]).await.len(), 1);

    // Crash: the background tasks stop, nothing is cleaned up.
    let crashed_at = Instant::now();
    crash.cancel();
    bob.expect(pres_event("alice@x.com", None)).await;
    let took = crashed_at.elapsed();
    assert!(
        took >= lease / 2,
        "offline only after the lease expired, not at once ({took:?})"
    );
    assert!(b.presence(&[email("alice@x.com")]).await.is_empty());
    // The dead node's registration is gone too.
    let mut conn = redis.conn().await;
    let users: i64 = redis::cmd("EXISTS")
        .arg(format!("{}node:{{{}}}:users", redis.prefix, a.stats().node))
        .query_async(&mut conn)
        .await
        .expect("exists");
    assert_eq!(users, 0);
    // The crashed bus can still be closed, without waiting on its stopped tasks.
    timeout(Duration::from_secs(5), a.close())
        .await
        .expect("close after the tasks stopped is quick");

    b.close().await;
    redis.cleanup().await;
}

// ---------------------------------------------------------------------------------------
// Redis restart
// ---------------------------------------------------------------------------------------

/// A private `redis-server` without persistence, killed on drop.
struct PrivateRedis {
    child: Child,
    binary: PathBuf,
    port: u16,
}

impl PrivateRedis {
    fn binary() -> Option<PathBuf> {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join("redis-server"))
            .find(|p| p.is_file())
    }

    fn spawn(binary: &PathBuf, port: u16) -> Child {
        Command::new(binary)
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server")
    }

    async fn start() -> Option<PrivateRedis> {
        init_logs();
        let Some(binary) = Self::binary() else {
            return skip("redis-server not found on PATH");
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Self::spawn(&binary, port);
        let redis = PrivateRedis {
            child,
            binary,
            port,
        };
        redis.ready().await;
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn ready(&self) {
        let url = self.url();
        eventually("private redis-server answers", || {
            let url = url.clone();
            async move { ping(&url).await.is_ok() }
        })
        .await;
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(&self.binary, self.port);
        self.ready().await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn gateways_resubscribe_and_rebuild_after_a_redis_restart() {
    let Some(mut server) = PrivateRedis::start().await else {
        return;
    };
    let redis = TestRedis {
        url: server.url(),
        prefix: "bfrestart:".into(),
        major: 0,
    };
    // A long lease: the re-read of watched presence (one lease after reconnecting) must
    // not be what delivers the event below; the resubscription must.
    let lease = Duration::from_secs(30);
    let a = gateway(&redis, lease, false).await;
    let b = gateway(&redis, lease, false).await;
    let alice = attach(&a, "alice@x.com").await;
    a.publish_presence(alice.id, Some(online("A1"))).await;
    let mut bob = attach(&b, "bob@x.com").await;
    b.watch(bob.id, &[email("alice@x.com")]).await;

    server.kill();
    // Redis down: attach fails fast instead of hanging.
    let started = Instant::now();
    let (tx, _rx) = inbox(4);
    let refused = timeout(WAIT, b.attach(&email("eve@x.com"), tx)).await;
    assert!(
        matches!(refused, Ok(Err(_))),
        "attach fails while Redis is down"
    );
    assert!(started.elapsed() < Duration::from_secs(6));

    server.restart().await;
    for (name, bus) in [("a", &a), ("b", &b)] {
        eventually(&format!("gateway {name} resubscribed"), || async {
            let s = bus.stats();
            s.subscriber_connects >= 2 && s.pending_channels == 0
        })
        .await;
    }
    // A rebuilt its entries: B reads Alice's presence from the new Redis.
    eventually("alice's presence rebuilt", || async {
        b.presence(&[email("alice@x.com")]).await
            == vec![(email("alice@x.com"), Arc::new(online("A1")))]
    })
    .await;
    assert!(a.stats().rebuilds >= 1);

    // A change published after the restart reaches the remote watcher (B resubscribed).
    // The rebuild may have published A1 again; skip that.
    a.publish_presence(alice.id, Some(online("A2"))).await;
    let a1 = pres_event("alice@x.com", Some(online("A1")));
    assert_eq!(
        bob.next_except(&a1).await,
        pres_event("alice@x.com", Some(online("A2")))
    );

    // Session ids stay above those issued before the restart, and the rebuilt records
    // work: a second sign-in shows, and when it leaves the first one's presence is back.
    let newer = attach(&b, "alice@x.com").await;
    assert!(newer.id > alice.id);
    b.publish_presence(newer.id, Some(online("B1"))).await;
    assert_eq!(
        bob.next_except(&a1).await,
        pres_event("alice@x.com", Some(online("B1")))
    );
    b.detach(newer.id).await;
    assert_eq!(
        bob.next_except(&a1).await,
        pres_event("alice@x.com", Some(online("A2")))
    );

    a.close().await;
    b.close().await;
}

/// A sign-out that happened while Redis was down (its offline publish failed) reaches the
/// watchers on another gateway through the re-read after reconnecting: the user has no
/// record after the rebuild, is looked at again a lease later, and only then reported
/// offline.
#[tokio::test]
async fn a_sign_out_missed_during_a_redis_outage_is_delivered_after_it() {
    let Some(mut server) = PrivateRedis::start().await else {
        return;
    };
    let redis = TestRedis {
        url: server.url(),
        prefix: "bfmissed:".into(),
        major: 0,
    };
    let lease = Duration::from_secs(1);
    let a = gateway(&redis, lease, false).await;
    let b = gateway(&redis, lease, false).await;
    let alice = attach(&a, "alice@x.com").await;
    a.publish_presence(alice.id, Some(online("Alice"))).await;
    let mut bob = attach(&b, "bob@x.com").await;
    b.watch(bob.id, &[email("alice@x.com")]).await;

    server.kill();
    // Alice signs out while Redis is down: her offline publish fails.
    a.detach(alice.id).await;
    server.restart().await;

    bob.expect(pres_event("alice@x.com", None)).await;
    bob.assert_empty();
    a.close().await;
    b.close().await;
}

// ---------------------------------------------------------------------------------------
// Switchboard shard registry
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn shard_registry_picks_live_shards_and_prefers_the_less_loaded() {
    let Some(redis) = test_redis().await else {
        return;
    };
    let config = redis.config(Duration::from_secs(1), false);
    let shutdown = CancellationToken::new();
    let switchboards = RedisSwitchboards::start(&config, shutdown.clone())
        .await
        .expect("registry");
    assert_eq!(switchboards.pick(), None, "no shard yet");

    let busy = Arc::new(AtomicUsize::new(10));
    let idle = Arc::new(AtomicUsize::new(1));
    let one = ShardRegistration::start(
        &config,
        "sb-1".into(),
        "10.0.0.1:1864".into(),
        busy.clone(),
        shutdown.clone(),
    )
    .await
    .expect("register sb-1");
    let two = ShardRegistration::start(
        &config,
        "sb-2".into(),
        "10.0.0.2:1864".into(),
        idle.clone(),
        shutdown.clone(),
    )
    .await
    .expect("register sb-2");

    eventually("both shards listed", || async {
        switchboards.live().len() == 2
    })
    .await;
    // Two live shards: both are sampled, the less loaded one wins every time.
    for _ in 0..20 {
        assert_eq!(switchboards.pick().as_deref(), Some("10.0.0.2:1864"));
    }
    // Load is refreshed with the lease.
    idle.store(50, std::sync::atomic::Ordering::Relaxed);
    eventually("the load change is seen", || async {
        switchboards.pick().as_deref() == Some("10.0.0.1:1864")
    })
    .await;

    // A shard that stops refreshing (crash) drops out once its lease expires.
    two.abandon();
    eventually("the abandoned shard expired", || async {
        switchboards
            .live()
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>()
            == ["sb-1"]
    })
    .await;
    assert_eq!(switchboards.pick().as_deref(), Some("10.0.0.1:1864"));

    // A graceful stop removes the record at once.
    one.stop().await;
    let mut conn = redis.conn().await;
    let (record, expiry): (i64, Option<f64>) = redis::pipe()
        .cmd("HEXISTS")
        .arg(format!("{}{{sb}}:shards", redis.prefix))
        .arg("sb-1")
        .cmd("ZSCORE")
        .arg(format!("{}{{sb}}:expiry", redis.prefix))
        .arg("sb-1")
        .query_async(&mut conn)
        .await
        .expect("registry read");
    assert_eq!((record, expiry), (0, None), "sb-1 left the registry");
    eventually("no shard left", || async { switchboards.pick().is_none() }).await;

    shutdown.cancel();
    redis.cleanup().await;
}

#[tokio::test]
async fn the_prefix_must_not_contain_braces() {
    let config = RedisBusConfig {
        prefix: "bad{prefix}".into(),
        ..RedisBusConfig::default()
    };
    assert!(
        RedisBus::connect(config, CancellationToken::new())
            .await
            .is_err()
    );
}
