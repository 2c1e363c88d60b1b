//! The distributed mode at the wire: every role a real `butterfly serve` process, real
//! Postgres and Redis, users signed in through different gateways.
//!
//! The scenarios run twice, against the embedded server and against the network, and
//! assert the same exact lines: what two users can do on the embedded server they can do
//! through different gateways. Then the failure cases: a gateway or shard killed, Redis
//! restarted, Postgres unreachable, SIGTERM.
//!
//! Needs Postgres and Redis (see `butterfly_testkit::Services`): without them these
//! tests skip, except under `CI=true`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use butterfly_testkit::{
    Client, Network, NetworkOptions, PrivateRedis, PrivateRedisCluster, Services, TIMEOUT,
    TcpProxy, TestCluster, line_of,
};
use msnp::frame::Frame;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const BIN: &str = env!("CARGO_BIN_EXE_butterfly");

async fn network(test: &str, options: NetworkOptions) -> Option<Network> {
    Network::start(test, Path::new(BIN), options).await
}

/// Where users sign in: the embedded server (one address) or a network (a gateway each).
trait Topology {
    async fn add(&self, email: &str, name: &str);
    /// Sign in through gateway `gw` (ignored by the embedded server).
    async fn login(&self, gw: usize, dialect: u8, email: &str) -> Client;
}

impl Topology for TestCluster {
    async fn add(&self, email: &str, name: &str) {
        self.add_user(email, "pw", name).await;
    }
    async fn login(&self, _gw: usize, dialect: u8, email: &str) -> Client {
        TestCluster::login(self, dialect, email, "pw").await
    }
}

impl Topology for Network {
    async fn add(&self, email: &str, name: &str) {
        self.add_user(email, "pw", name).await;
    }
    async fn login(&self, gw: usize, dialect: u8, email: &str) -> Client {
        Network::login(self, gw, dialect, email, "pw").await
    }
}

/// Sign in with MSNP12 and go online.
async fn online(t: &impl Topology, gw: usize, email: &str) -> Client {
    let mut c = t.login(gw, 12, email).await;
    go_online(&mut c).await;
    c
}

/// The first `CHG NLN` of a signed-in MSNP12 client.
async fn go_online(c: &mut Client) {
    let tr = c.cmd("CHG", "NLN 0").await;
    assert_eq!(c.next_line().await, format!("CHG {tr} NLN 0"));
    // The initial presence (ILN) and the first challenge follow the first CHG; answer
    // the challenge as MSN 7.5 would.
    let chl = c
        .expect_where("CHL", |f| {
            assert!(
                f.verb.as_str() == "CHL" || f.verb.as_str() == "ILN",
                "{f:?}"
            );
            f.verb.as_str() == "CHL"
        })
        .await;
    let product = "PROD0090YUAUV{2B";
    let answer = msnp::auth::challenge_response_v11(&chl.args[1], product, "YMM8C_H7KCQ2S_KL");
    let tr = c.cmd_payload("QRY", product, answer.into_bytes()).await;
    assert_eq!(c.next_line().await, format!("QRY {tr}"));
}

/// The next line, which must be the reply to the command with transaction id `tr`.
async fn reply(c: &mut Client, tr: u32) -> String {
    let f = c.next().await;
    assert_eq!(f.tr_id(), Some(tr), "expected the reply to {tr}, got {f:?}");
    line_of(&f)
}

/// Everything a pair of users does on one server, with the exact lines each sees.
async fn presence_lists_and_privacy(t: &impl Topology) {
    t.add("alice@example.com", "Alice").await;
    t.add("bob@example.com", "Bob").await;
    let mut alice = online(t, 0, "alice@example.com").await;
    let mut bob = online(t, 1, "bob@example.com").await;

    // "Added you": bob hears of it on his own gateway.
    let tr = alice.cmd("ADC", "FL N=bob@example.com F=Bob").await;
    let added = reply(&mut alice, tr).await;
    assert!(
        added.starts_with(&format!("ADC {tr} FL N=bob@example.com F=Bob C=")),
        "{added}"
    );
    // Bob is online and allows everyone by default: alice sees him at once.
    assert_eq!(
        line_of(&alice.expect("NLN").await),
        "NLN NLN bob@example.com Bob 0 0"
    );
    let tr = alice.cmd("ADC", "AL N=bob@example.com").await;
    assert_eq!(
        reply(&mut alice, tr).await,
        format!("ADC {tr} AL N=bob@example.com")
    );
    assert_eq!(
        line_of(&bob.expect("ADC").await),
        "ADC 0 RL N=alice@example.com F=Alice"
    );
    let tr = bob.cmd("ADC", "FL N=alice@example.com F=Alice").await;
    reply(&mut bob, tr).await;
    assert_eq!(
        line_of(&bob.expect("NLN").await),
        "NLN NLN alice@example.com Alice 0 0"
    );
    assert_eq!(
        line_of(&alice.expect("ADC").await),
        "ADC 0 RL N=bob@example.com F=Bob"
    );

    // Presence both ways.
    let tr = bob.cmd("CHG", "AWY 0").await;
    assert_eq!(bob.next_line().await, format!("CHG {tr} AWY 0"));
    assert_eq!(
        line_of(&alice.expect("NLN").await),
        "NLN AWY bob@example.com Bob 0 0"
    );
    let tr = alice.cmd("CHG", "BSY 0").await;
    assert_eq!(alice.next_line().await, format!("CHG {tr} BSY 0"));
    assert_eq!(
        line_of(&bob.expect("NLN").await),
        "NLN BSY alice@example.com Alice 0 0"
    );

    // A personal message.
    let psm = "<Data><PSM>hello from gw1</PSM><CurrentMedia></CurrentMedia></Data>";
    let tr = bob.cmd_payload("UUX", "", psm.as_bytes().to_vec()).await;
    assert_eq!(bob.next_line().await, format!("UUX {tr} 0"));
    let ubx = alice.expect("UBX").await;
    assert_eq!(ubx.args, ["bob@example.com"]);
    assert_eq!(ubx.payload.as_deref(), Some(psm.as_bytes()));

    // Privacy: bob blocks alice, who then sees him offline; unblocking shows him again.
    let tr = bob.cmd("REM", "AL alice@example.com").await;
    assert_eq!(
        reply(&mut bob, tr).await,
        format!("216 {tr}"),
        "alice was never on AL"
    );
    let tr = bob.cmd("ADC", "BL N=alice@example.com").await;
    assert_eq!(
        reply(&mut bob, tr).await,
        format!("ADC {tr} BL N=alice@example.com")
    );
    assert_eq!(line_of(&alice.expect("FLN").await), "FLN bob@example.com");
    let tr = bob.cmd("CHG", "NLN 0").await;
    assert_eq!(bob.next_line().await, format!("CHG {tr} NLN 0"));
    let tr = bob.cmd("REM", "BL alice@example.com").await;
    reply(&mut bob, tr).await;
    let tr = bob.cmd("ADC", "AL N=alice@example.com").await;
    reply(&mut bob, tr).await;
    assert_eq!(
        line_of(&alice.expect("NLN").await),
        "NLN NLN bob@example.com Bob 0 0"
    );
    let ubx = alice.expect("UBX").await;
    assert_eq!(
        ubx.payload.as_deref(),
        Some(psm.as_bytes()),
        "the message is shown again"
    );

    // Signing out.
    bob.cmd("OUT", "").await;
    assert_eq!(line_of(&alice.expect("FLN").await), "FLN bob@example.com");
}

/// Open a switchboard session from `caller` (signed in on the NS as `from`) and bring
/// `callee` in; returns both switchboard connections.
async fn chat(
    caller: &mut Client,
    from: &str,
    callee: &mut Client,
    to: &str,
) -> (Client, Client, SocketAddr) {
    let xfr = xfr_sb(caller).await;
    chat_at(&xfr, from, callee, to).await
}

/// `XFR SB`: the reply names a shard and carries the caller's cookie.
async fn xfr_sb(caller: &mut Client) -> Frame {
    let tr = caller.cmd("XFR", "SB").await;
    let xfr = caller.expect_where("XFR", |f| f.tr_id() == Some(tr)).await;
    assert_eq!((xfr.args[1].as_str(), xfr.args[3].as_str()), ("SB", "CKI"));
    xfr
}

/// [`chat`] at the shard an earlier `XFR` named.
async fn chat_at(
    xfr: &Frame,
    from: &str,
    callee: &mut Client,
    to: &str,
) -> (Client, Client, SocketAddr) {
    let sb_addr: SocketAddr = xfr.args[2].parse().expect("XFR names host:port");
    let mut a = Client::connect(sb_addr, 12).await;
    let tr = a.cmd("USR", &format!("{from} {}", xfr.args[4])).await;
    assert_eq!(
        a.next_line().await,
        format!("USR {tr} OK {from} {}", friendly(from))
    );
    let tr = a.cmd("CAL", to).await;
    let ringing = a.expect("CAL").await;
    assert_eq!(ringing.args[..2], [tr.to_string(), "RINGING".into()]);
    let rng = callee.expect("RNG").await;
    assert_eq!(
        rng.args[1],
        sb_addr.to_string(),
        "RNG names the caller's shard"
    );
    assert_eq!(rng.args[4..6], [from.to_owned(), friendly(from)]);
    let mut b = Client::connect(sb_addr, 12).await;
    let tr = b
        .cmd("ANS", &format!("{to} {} {}", rng.args[3], rng.args[0]))
        .await;
    let iro = b.next_line().await;
    assert!(iro.starts_with(&format!("IRO {tr} 1 1 {from} ")), "{iro}");
    assert_eq!(b.next_line().await, format!("ANS {tr} OK"));
    let joi = a.next_line().await;
    assert!(joi.starts_with(&format!("JOI {to} ")), "{joi}");
    (a, b, sb_addr)
}

fn friendly(email: &str) -> String {
    let user = email.split('@').next().unwrap_or(email);
    let mut c = user.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// One MSG each way, acknowledged.
async fn talk(a: &mut Client, from_a: &str, b: &mut Client, from_b: &str) {
    say(a, from_a, b).await;
    say(b, from_b, a).await;
}

async fn say(sender: &mut Client, sender_email: &str, receiver: &mut Client) {
    let body =
        format!("MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhi from {sender_email}");
    let tr = sender
        .cmd_payload("MSG", "A", body.clone().into_bytes())
        .await;
    let msg = receiver.expect("MSG").await;
    assert_eq!(
        msg.args[..2],
        [sender_email.to_owned(), friendly(sender_email)]
    );
    assert_eq!(msg.payload.as_deref(), Some(body.as_bytes()));
    assert_eq!(sender.next_line().await, format!("ACK {tr}"));
}

/// `me` adds `them` (online, visible) to the forward list: my reply and their NLN, and
/// their "added you".
async fn add_online_contact(me: &mut Client, them: &mut Client, their_email: &str) {
    let name = friendly(their_email);
    let tr = me.cmd("ADC", &format!("FL N={their_email} F={name}")).await;
    let added = reply(me, tr).await;
    assert!(
        added.starts_with(&format!("ADC {tr} FL N={their_email} F={name} C=")),
        "{added}"
    );
    assert_eq!(
        line_of(&me.expect("NLN").await),
        format!("NLN NLN {their_email} {name} 0 0")
    );
    let my_email = me.email.clone();
    assert_eq!(
        line_of(&them.expect("ADC").await),
        format!("ADC 0 RL N={my_email} F={}", friendly(&my_email))
    );
}

async fn chat_between(t: &impl Topology) {
    t.add("carol@example.com", "Carol").await;
    t.add("dave@example.com", "Dave").await;
    let mut carol = online(t, 0, "carol@example.com").await;
    let mut dave = online(t, 1, "dave@example.com").await;
    add_online_contact(&mut carol, &mut dave, "dave@example.com").await;
    add_online_contact(&mut dave, &mut carol, "carol@example.com").await;
    let (mut a, mut b, _) = chat(
        &mut carol,
        "carol@example.com",
        &mut dave,
        "dave@example.com",
    )
    .await;
    talk(&mut a, "carol@example.com", &mut b, "dave@example.com").await;
    b.cmd("OUT", "").await;
    assert_eq!(a.next_line().await, "BYE dave@example.com");
}

/// A second sign-in anywhere closes the first with OUT OTH.
async fn second_sign_in(t: &impl Topology) {
    t.add("erin@example.com", "Erin").await;
    let mut first = online(t, 0, "erin@example.com").await;
    let _second = online(t, 1, "erin@example.com").await;
    assert_eq!(first.closed_lines().await, ["OUT OTH"]);
}

#[tokio::test]
async fn embedded_reference_scenarios() {
    let cluster = TestCluster::start().await;
    presence_lists_and_privacy(&cluster).await;
    chat_between(&cluster).await;
    second_sign_in(&cluster).await;
}

#[tokio::test]
async fn users_on_different_gateways_do_what_they_do_on_one_server() {
    let Some(net) = network("cross-gateway scenarios", NetworkOptions::default()).await else {
        return;
    };
    presence_lists_and_privacy(&net).await;
    chat_between(&net).await;
    second_sign_in(&net).await;

    // What the gateways did shows on their /metrics: commands by verb and result, the
    // address book reached over gRPC (not the database), presence through Redis.
    let metrics =
        butterfly_testkit::http::get(net.gateways[0].addr("admin"), "/metrics", &[]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    for series in [
        "butterfly_commands_total{role=\"ns\",verb=\"ADC\",result=\"ok\"}",
        "butterfly_grpc_client_seconds_count{method=\"Roster\"}",
        "butterfly_pubsub_lag_seconds_count{channel=\"pres\"}",
    ] {
        assert!(text.contains(series), "no {series} in\n{text}");
    }
}

/// The same scenarios on a Redis Cluster of three primaries: users' keys and channels
/// spread over the nodes by slot, pub/sub sharded, the registries on their own slots. A
/// killed gateway is reaped across slots too. A role pointed at a cluster node without
/// `--redis-cluster` refuses to start, saying so.
#[tokio::test]
async fn on_a_redis_cluster_users_on_different_gateways_do_what_they_do_on_one_server() {
    let test = "Redis Cluster scenarios";
    let Some(redis) = PrivateRedisCluster::start(test, 3).await else {
        return;
    };
    let options = NetworkOptions {
        redis_url: Some(redis.url()),
        redis_cluster: true,
        ..NetworkOptions::default()
    };
    let Some(mut net) = network(test, options).await else {
        return;
    };
    presence_lists_and_privacy(&net).await;
    chat_between(&net).await;
    second_sign_in(&net).await;

    net.add_user("gina@example.com", "pw", "Gina").await;
    net.add_user("hank@example.com", "pw", "Hank").await;
    let mut gina = online(&net, 0, "gina@example.com").await;
    let mut hank = online(&net, 1, "hank@example.com").await;
    add_online_contact(&mut hank, &mut gina, "gina@example.com").await;
    net.gateways[0].kill().await;
    gina.expect_closed().await;
    hank.timeout = TIMEOUT * 2;
    assert_eq!(line_of(&hank.expect("FLN").await), "FLN gina@example.com");

    let wrong = tokio::process::Command::new(BIN)
        .args(["serve", "--target", "ns-gateway"])
        .args(["--ticket-secret", &"s".repeat(32)])
        .args(["--addressbook-url", "http://127.0.0.1:9"])
        .args([
            "--redis-url",
            &format!("redis://127.0.0.1:{}", redis.ports[0]),
        ])
        .args([
            "--ns-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .output();
    let wrong = tokio::time::timeout(TIMEOUT, wrong)
        .await
        .expect("a misconfigured gateway exits")
        .expect("run butterfly");
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        !wrong.status.success(),
        "started on a cluster node without --redis-cluster"
    );
    assert!(
        stderr.contains("Redis Cluster node: start with --redis-cluster"),
        "unclear error: {stderr}"
    );
}

/// One node of a Redis Cluster restarts and loses its keys, but not the registry's: the
/// gateways reconnect, resubscribe, and write back the presence records that were on it,
/// so a user who did nothing in the meantime still shows online to a new watcher, and
/// watchers that were subscribed before keep receiving changes.
#[tokio::test]
async fn a_redis_cluster_node_restart_loses_no_presence() {
    let test = "Redis Cluster node restart";
    let Some(mut redis) = PrivateRedisCluster::start(test, 3).await else {
        return;
    };
    let options = NetworkOptions {
        redis_url: Some(redis.url()),
        redis_cluster: true,
        ..NetworkOptions::default()
    };
    let Some(net) = network(test, options).await else {
        return;
    };
    // A user whose slot is on another node than the gateway registry's, so the restart
    // loses the user's records while every gateway's registration survives.
    let prefix = net.redis_prefix().to_owned();
    let registry = redis.node_of(&format!("{prefix}{{nodes}}:live")).await;
    let mut alice = None;
    for i in 0..64 {
        let email = format!("user{i}@example.com");
        let node = redis
            .node_of(&format!("{prefix}presence:{{{email}}}"))
            .await;
        if node != registry {
            alice = Some((email, node));
            break;
        }
    }
    let (alice_email, alice_node) = alice.expect("some user's slot is off the registry's node");
    let alice_name = friendly(&alice_email);
    net.add_user(&alice_email, "pw", &alice_name).await;
    net.add_user("bob@example.com", "pw", "Bob").await;
    net.add_user("carol@example.com", "pw", "Carol").await;
    let mut alice = online(&net, 0, &alice_email).await;
    let mut bob = online(&net, 1, "bob@example.com").await;
    add_online_contact(&mut bob, &mut alice, &alice_email).await;

    redis.restart(alice_node).await;

    // Bounded wait for the gateway to write the record back (it reconnects within about
    // a heartbeat, a third of the 3 s lease); nothing is sent that a client could await.
    let key = format!("{prefix}presence:{{{alice_email}}}");
    let node = redis::Client::open(redis.urls()[alice_node].as_str()).expect("url");
    let restored = tokio::time::timeout(TIMEOUT * 2, async {
        loop {
            if let Ok(mut conn) = node.get_multiplexed_async_connection().await {
                let exists: Result<i64, _> =
                    redis::cmd("EXISTS").arg(&key).query_async(&mut conn).await;
                if exists == Ok(1) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        restored.is_ok(),
        "presence record not written back:\n{}",
        net.logs()
    );

    // A new watcher sees Alice online; Bob, subscribed before, sees her next change.
    let mut carol = online(&net, 1, "carol@example.com").await;
    add_online_contact(&mut carol, &mut alice, &alice_email).await;
    let tr = alice.cmd("CHG", "AWY 0").await;
    reply(&mut alice, tr).await;
    bob.timeout = TIMEOUT * 2;
    let next = line_of(&bob.next().await);
    assert_eq!(
        next,
        format!("NLN AWY {alice_email} {alice_name} 0 0"),
        "{}",
        net.logs()
    );
}

/// Windows Live Messenger users on different gateways: sign-in through the token
/// service (Passport's process) and `USR SSO`, lists edited with `ADL` and read back from
/// the address book's SOAP service (its own process), the "added you" push, presence and
/// `UUN` across gateways, and a block over SOAP reaching the blocked user's gateway
/// (through Redis) as `FLN`.
#[tokio::test]
async fn wlm_users_on_different_gateways() {
    let Some(net) = network("WLM across gateways", NetworkOptions::default()).await else {
        return;
    };
    net.add_user("alice@example.com", "pw", "Alice").await;
    net.add_user("bob@example.com", "pw", "Bob").await;
    let mut alice = net.login(0, 18, "alice@example.com", "pw").await;
    let mut bob = net.login(1, 15, "bob@example.com", "pw").await;

    let adl =
        |who: &str| format!("<ml><d n=\"example.com\"><c n=\"{who}\" l=\"3\" t=\"1\"/></d></ml>");
    let tr = alice.cmd_payload("ADL", "", adl("bob").into_bytes()).await;
    assert_eq!(alice.next_line().await, format!("ADL {tr} OK"));
    let push = bob.expect("ADL").await;
    // Then "your memberships changed" (NOT ABCHInternal).
    bob.expect("NOT").await;
    assert_eq!(
        push.payload.as_deref(),
        Some(
            &b"<ml><d n=\"example.com\"><c n=\"alice\" t=\"1\" l=\"8\" f=\"Alice\"/></d></ml>"[..]
        )
    );
    let tr = bob.cmd_payload("ADL", "", adl("alice").into_bytes()).await;
    assert_eq!(bob.next_line().await, format!("ADL {tr} OK"));
    alice.expect("ADL").await;
    alice.expect("NOT").await;

    // Presence both ways, each in its dialect's form.
    let tr = alice.cmd("CHG", "NLN 2789003324:48 0").await;
    assert_eq!(
        alice.next_line().await,
        format!("CHG {tr} NLN 2789003324:48 0")
    );
    let tr = bob.cmd("CHG", "BSY 1985855524 0").await;
    assert_eq!(bob.next_line().await, format!("CHG {tr} BSY 1985855524 0"));
    // Bob's first CHG: Alice, already online, comes as ILN with its TrID.
    expect_line(&mut bob, "Alice online", TIMEOUT, |l| {
        l == format!("ILN {tr} NLN alice@example.com 1 Alice 2789003324 0")
    })
    .await;
    expect_line(&mut alice, "Bob busy", TIMEOUT, |l| {
        l == "NLN BSY 1:bob@example.com Bob 1985855524:0 0"
    })
    .await;

    // The address book (its own process) shows what the NS edits stored.
    let ticket = alice.token("contacts.msn.com").ticket.clone();
    let (status, members) = butterfly_testkit::soap::call(
        net.addressbook.addr("http"),
        butterfly_testkit::soap::Service::Sharing,
        &ticket,
        butterfly_testkit::soap::FIND_MEMBERSHIP,
    )
    .await;
    assert_eq!(status, 200, "{members}");
    assert!(
        members.contains("<PassportName>bob@example.com</PassportName>"),
        "{members}"
    );

    // A user notification crosses gateways as UBN.
    let tr = alice
        .cmd_payload("UUN", "bob@example.com 1", b"<x/>".to_vec())
        .await;
    assert_eq!(alice.next_line().await, format!("UUN {tr} OK"));
    // (Bob's mail data and a challenge may come first.)
    let ubn = bob.expect_where("UBN", |f| f.verb.as_str() == "UBN").await;
    assert_eq!(ubn.payload.as_deref(), Some(&b"<x/>"[..]));
    assert_eq!(
        ubn.args[..2],
        ["alice@example.com".to_owned(), "1".to_owned()]
    );

    // Alice blocks Bob through the address book's process: his gateway hears it.
    let block = "<AddMember xmlns=\"http://www.msn.com/webservices/AddressBook\"><serviceHandle><Id>0</Id><Type>Messenger</Type><ForeignId></ForeignId></serviceHandle><memberships><Membership><MemberRole>Block</MemberRole><Members><Member xsi:type=\"PassportMember\"><Type>Passport</Type><State>Accepted</State><PassportName>bob@example.com</PassportName></Member></Members></Membership></memberships></AddMember>";
    let (status, body) = butterfly_testkit::soap::call(
        net.addressbook.addr("http"),
        butterfly_testkit::soap::Service::Sharing,
        &ticket,
        block,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    expect_line(&mut bob, "Alice offline", TIMEOUT, |l| {
        l == "FLN alice@example.com 1 0"
    })
    .await;
}

/// Multiple points of presence across gateways: two MSNP18 machines of one account on
/// different gateways stay signed in together; each is shown the other's machine in the
/// UBX about its own account (read from Redis), a status set on one reaches the other as
/// NLN about itself, and when one leaves the other is shown alone with its own status.
#[tokio::test]
async fn one_account_on_two_gateways() {
    let Some(net) = network("MPOP across gateways", NetworkOptions::default()).await else {
        return;
    };
    net.add_user("alice@example.com", "pw", "Alice").await;
    let mut home = net.login(0, 18, "alice@example.com", "pw").await;
    let mut laptop = net.login(1, 18, "alice@example.com", "pw").await;
    let machine = |c: &Client| msnp::mpop::normalize_guid(&c.machine_guid);
    let (h, l) = (machine(&home), machine(&laptop));
    let shows = |doc: &[u8], guid: &str, state: &str| {
        String::from_utf8_lossy(doc).contains(&format!(
            "<PrivateEndpointData id=\"{{{guid}}}\"><EpName></EpName><Idle>false</Idle>\
             <ClientType>1</ClientType><State>{state}</State></PrivateEndpointData>"
        ))
    };

    let tr = home.cmd("CHG", "NLN 2789003324:48 0").await;
    assert_eq!(
        home.next_line().await,
        format!("CHG {tr} NLN 2789003324:48 0")
    );
    let tr = laptop.cmd("CHG", "BSY 2789003324:48 0").await;
    assert_eq!(
        laptop.next_line().await,
        format!("CHG {tr} BSY 2789003324:48 0")
    );
    let own = laptop.expect("UBX").await;
    let doc = own.payload.clone().unwrap_or_default();
    assert!(
        shows(&doc, &h, "NLN") && shows(&doc, &l, "BSY"),
        "{}",
        String::from_utf8_lossy(&doc)
    );
    expect_line(&mut home, "its account busy", TIMEOUT, |line| {
        line == "NLN BSY 1:alice@example.com Alice 2789003324:48 0"
    })
    .await;
    let own = home.expect("UBX").await;
    assert_eq!(
        own.payload.as_deref(),
        Some(&doc[..]),
        "the same list on both"
    );

    // The laptop signs out: home is shown its own status again, and only itself.
    laptop.send(butterfly_testkit::line("OUT")).await;
    expect_line(&mut home, "its account online", TIMEOUT, |line| {
        line == "NLN NLN 1:alice@example.com Alice 2789003324:48 0"
    })
    .await;
    let own = home.expect("UBX").await;
    let doc = own.payload.unwrap_or_default();
    assert!(shows(&doc, &h, "NLN") && !shows(&doc, &l, "BSY"));
}

/// Wait, bounded, for `pred` on a line from `c`; lines before it are skipped.
async fn expect_line(c: &mut Client, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(limit, async {
        loop {
            let l = c.next_line().await;
            if pred(&l) {
                return;
            }
            seen.push(l);
        }
    })
    .await;
    assert!(found.is_ok(), "no {what} within {limit:?}; got {seen:?}");
}

#[tokio::test]
async fn a_killed_gateway_s_users_go_offline_and_can_sign_in_elsewhere() {
    let Some(mut net) = network("killed gateway", NetworkOptions::default()).await else {
        return;
    };
    net.add_user("alice@example.com", "pw", "Alice").await;
    net.add_user("bob@example.com", "pw", "Bob").await;
    let mut alice = online(&net, 0, "alice@example.com").await;
    let mut bob = online(&net, 1, "bob@example.com").await;
    let tr = bob.cmd("ADC", "FL N=alice@example.com F=Alice").await;
    reply(&mut bob, tr).await;
    assert_eq!(
        line_of(&bob.expect("NLN").await),
        "NLN NLN alice@example.com Alice 0 0"
    );

    net.gateways[0].kill().await;
    alice.expect_closed().await;
    // The lease is 3 s and is checked every second: FLN within a few seconds.
    bob.timeout = TIMEOUT * 2;
    assert_eq!(line_of(&bob.expect("FLN").await), "FLN alice@example.com");

    let _alice = online(&net, 1, "alice@example.com").await;
    assert_eq!(
        line_of(&bob.expect("NLN").await),
        "NLN NLN alice@example.com Alice 0 0"
    );
}

#[tokio::test]
async fn a_killed_shard_drops_its_chats_and_new_chats_go_to_live_shards() {
    let Some(mut net) = network("killed shard", NetworkOptions::default()).await else {
        return;
    };
    net.add_user("carol@example.com", "pw", "Carol").await;
    net.add_user("dave@example.com", "pw", "Dave").await;
    let mut carol = online(&net, 0, "carol@example.com").await;
    let mut dave = online(&net, 1, "dave@example.com").await;
    add_online_contact(&mut dave, &mut carol, "carol@example.com").await;
    let (mut a, mut b, shard) = chat(
        &mut carol,
        "carol@example.com",
        &mut dave,
        "dave@example.com",
    )
    .await;
    let dead = net
        .switchboards
        .iter()
        .position(|p| p.addr("sb") == shard)
        .expect("the chat is on one of our shards");
    net.switchboards[dead].kill().await;
    a.expect_closed().await;
    b.expect_closed().await;

    // Within the lease the dead shard leaves the registry; until then XFR may still
    // name it. Ask until a live shard is named (bounded), then chat there.
    let live = net.switchboards[1 - dead].addr("sb");
    let named = tokio::time::timeout(TIMEOUT * 2, async {
        loop {
            let xfr = xfr_sb(&mut carol).await;
            if xfr.args[2] == live.to_string() {
                return xfr;
            }
            // The registry is refreshed about every second; ask again after it.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    let Ok(xfr) = named else {
        panic!("XFR kept naming the dead shard:\n{}", net.logs());
    };
    let (mut a, mut b, shard) =
        chat_at(&xfr, "carol@example.com", &mut dave, "dave@example.com").await;
    assert_eq!(shard, live);
    talk(&mut a, "carol@example.com", &mut b, "dave@example.com").await;
}

/// A user on the HTTP gateway of one gateway process chats with a user on another:
/// the gateway finds the shard `XFR` named among the registered ones (all on one host
/// here) by the cookie, and carries the switchboard session to that process.
#[tokio::test]
async fn a_user_on_the_http_gateway_chats_through_a_shard_in_another_process() {
    let Some(net) = network("HTTP gateway", NetworkOptions::default()).await else {
        return;
    };
    net.add_user("alice@example.com", "pw", "Alice").await;
    net.add_user("bob@example.com", "pw", "Bob").await;
    let http = net.gateway_http(0);
    let mut alice = butterfly_testkit::gateway::connect_ns(http, 12);
    alice.login(net.http(), "alice@example.com", "pw").await;
    go_online(&mut alice).await;
    let mut bob = online(&net, 1, "bob@example.com").await;
    add_online_contact(&mut alice, &mut bob, "bob@example.com").await;
    add_online_contact(&mut bob, &mut alice, "alice@example.com").await;

    let xfr = xfr_sb(&mut alice).await;
    let (host, _) = xfr.args[2].rsplit_once(':').expect("host:port");
    let mut a = butterfly_testkit::gateway::connect_sb(http, host, 12);
    let tr = a
        .cmd("USR", &format!("alice@example.com {}", xfr.args[4]))
        .await;
    assert_eq!(
        a.next_line().await,
        format!("USR {tr} OK alice@example.com Alice")
    );
    a.cmd("CAL", "bob@example.com").await;
    a.expect("CAL").await;
    let rng = bob.expect("RNG").await;
    assert_eq!(rng.args[1], xfr.args[2], "RNG names the caller's shard");
    let mut b = Client::connect(rng.args[1].parse().expect("host:port"), 12).await;
    let tr = b
        .cmd(
            "ANS",
            &format!("bob@example.com {} {}", rng.args[3], rng.args[0]),
        )
        .await;
    b.expect_where("ANS OK", |f| {
        f.verb.as_str() == "ANS" && f.tr_id() == Some(tr)
    })
    .await;
    a.expect("JOI").await;
    talk(&mut a, "alice@example.com", &mut b, "bob@example.com").await;
}

/// A switchboard cookie is good only at the shard `XFR` named.
#[tokio::test]
async fn a_cookie_is_refused_by_another_shard() {
    let Some(net) = network("cookie per shard", NetworkOptions::default()).await else {
        return;
    };
    net.add_user("alice@example.com", "pw", "Alice").await;
    let mut alice = online(&net, 0, "alice@example.com").await;
    let tr = alice.cmd("XFR", "SB").await;
    let xfr = alice.expect_where("XFR", |f| f.tr_id() == Some(tr)).await;
    let named: SocketAddr = xfr.args[2].parse().expect("host:port");
    let other = net
        .switchboards
        .iter()
        .map(|p| p.addr("sb"))
        .find(|a| *a != named)
        .expect("two shards");
    let mut sb = Client::connect(other, 12).await;
    let tr = sb
        .cmd("USR", &format!("alice@example.com {}", xfr.args[4]))
        .await;
    assert_eq!(sb.closed_lines().await, [format!("911 {tr}")]);
    let mut sb = Client::connect(named, 12).await;
    let tr = sb
        .cmd("USR", &format!("alice@example.com {}", xfr.args[4]))
        .await;
    assert_eq!(
        sb.next_line().await,
        format!("USR {tr} OK alice@example.com Alice")
    );
}

#[tokio::test]
async fn after_a_redis_restart_presence_is_rebuilt_without_restarting_any_role() {
    let Some(mut redis) = PrivateRedis::start("redis restart").await else {
        return;
    };
    let options = NetworkOptions {
        redis_url: Some(redis.url()),
        ..NetworkOptions::default()
    };
    let Some(net) = network("redis restart", options).await else {
        return;
    };
    net.add_user("alice@example.com", "pw", "Alice").await;
    net.add_user("bob@example.com", "pw", "Bob").await;
    net.add_user("carol@example.com", "pw", "Carol").await;
    let mut alice = online(&net, 0, "alice@example.com").await;
    let mut bob = online(&net, 1, "bob@example.com").await;
    add_online_contact(&mut bob, &mut alice, "alice@example.com").await;
    let mut carol = online(&net, 1, "carol@example.com").await;
    add_online_contact(&mut carol, &mut alice, "alice@example.com").await;
    carol.cmd("OUT", "").await;

    // While Redis is down the gateways say they are not ready (and stay alive).
    let admin = net.gateways[0].addr("admin");
    redis.stop().await;
    let not_ready = readyz_becomes(admin, 503).await;
    assert!(not_ready, "/readyz stayed 200 with Redis down");
    assert_eq!(
        butterfly_testkit::http::get(admin, "/livez", &[])
            .await
            .status,
        200
    );
    redis.restart().await;

    // Alice's gateway rebuilds her presence record: carol, signing in afterwards on
    // the other gateway, is told she is online. The rebuild takes up to a heartbeat
    // (lease / 3) after the gateways notice; try until then (bounded).
    let rebuilt = tokio::time::timeout(TIMEOUT * 2, async {
        loop {
            if let Ok(seen) = tokio::spawn(carol_sees_alice(net.gateway(1), net.http())).await {
                return seen;
            }
            // A sign-in refused while the gateway reconnects (601): try again.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        rebuilt.is_ok(),
        "alice's presence was not rebuilt:\n{}",
        net.logs()
    );
    let ready_again = readyz_becomes(admin, 200).await;
    assert!(ready_again, "/readyz did not come back after Redis did");

    // And the gateways resubscribed: bob hears alice's next change.
    let tr = alice.cmd("CHG", "AWY 0").await;
    assert_eq!(alice.next_line().await, format!("CHG {tr} AWY 0"));
    bob.timeout = TIMEOUT * 2;
    expect_line(&mut bob, "alice's NLN AWY", TIMEOUT * 2, |l| {
        l == "NLN AWY alice@example.com Alice 0 0"
    })
    .await;
}

/// Whether `/readyz` at `admin` answers `status` within a bounded time (polled: the
/// change follows a reconnect in another process, which sends nothing to wait on).
async fn readyz_becomes(admin: SocketAddr, status: u16) -> bool {
    tokio::time::timeout(TIMEOUT * 2, async {
        while butterfly_testkit::http::get(admin, "/readyz", &[])
            .await
            .status
            != status
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .is_ok()
}

/// Carol signs in (her forward list holds alice) and goes online; returns once her
/// initial presence shows alice online. Panics (so the caller retries) otherwise.
async fn carol_sees_alice(gateway: SocketAddr, http: SocketAddr) {
    let mut carol = Client::connect(gateway, 12).await;
    carol.login(http, "carol@example.com", "pw").await;
    let tr = carol.cmd("CHG", "NLN 0").await;
    assert_eq!(carol.next_line().await, format!("CHG {tr} NLN 0"));
    assert_eq!(
        carol.next_line().await,
        format!("ILN {tr} NLN alice@example.com Alice 0 0")
    );
}

#[tokio::test]
async fn with_postgres_unreachable_sign_in_fails_with_an_error_and_chats_go_on() {
    let Some(services) = Services::find("postgres unreachable").await else {
        return;
    };
    let pg: SocketAddr = "127.0.0.1:5432".parse().expect("address");
    let pg = url_host(&services.database_admin_url).unwrap_or(pg);
    let proxy = TcpProxy::start(pg).await;
    let options = NetworkOptions {
        postgres_via: Some(proxy.addr()),
        ..NetworkOptions::default()
    };
    let Some(net) = network("postgres unreachable", options).await else {
        return;
    };
    for (e, n) in [
        ("carol@example.com", "Carol"),
        ("dave@example.com", "Dave"),
        ("erin@example.com", "Erin"),
        ("frank@example.com", "Frank"),
    ] {
        net.add_user(e, "pw", n).await;
    }
    let mut carol = online(&net, 0, "carol@example.com").await;
    let mut dave = online(&net, 1, "dave@example.com").await;
    let _frank = online(&net, 1, "frank@example.com").await;
    add_online_contact(&mut dave, &mut carol, "carol@example.com").await;
    let (mut a, mut b, _) = chat(
        &mut carol,
        "carol@example.com",
        &mut dave,
        "dave@example.com",
    )
    .await;

    proxy.cut();

    // MSNP7 signs in against the account's MD5 secret, read through the address book.
    let mut erin = Client::connect(net.gateway(0), 7).await;
    erin.timeout = TIMEOUT * 2;
    let tr = erin.cmd("VER", "MSNP7 CVR0").await;
    assert_eq!(erin.next_line().await, format!("VER {tr} MSNP7 CVR0"));
    let tr = erin.cmd("USR", "MD5 I erin@example.com").await;
    assert_eq!(erin.closed_lines().await, [format!("501 {tr}")]);
    // Passport answers 500 rather than "wrong password".
    let policy = "lc=1033,id=507,tw=40,fs=1,ru=http%3A%2F%2Fmessenger%2Emsn%2Ecom,ct=1,kpp=1,kv=5,ver=2.1.0173.1,tpf=0";
    let login = tokio::time::timeout(
        TIMEOUT * 2,
        butterfly_testkit::passport_login(net.http(), "erin@example.com", "pw", policy),
    )
    .await
    .expect("Passport answers while Postgres is down");
    assert_eq!(login, Err(500));
    // Inviting someone who is online needs the store (their privacy): the caller is told
    // the server failed (501), not that they are offline (217).
    a.timeout = TIMEOUT * 2;
    let tr = a.cmd("CAL", "frank@example.com").await;
    assert_eq!(a.next_line().await, format!("501 {tr}"));
    // The chat is in the shard's memory: it goes on.
    talk(&mut a, "carol@example.com", &mut b, "dave@example.com").await;

    proxy.restore();
}

fn url_host(url: &str) -> Option<SocketAddr> {
    let rest = &url[url.find("://")? + 3..];
    let rest = &rest[rest.find('@').map_or(0, |i| i + 1)..];
    let host = &rest[..rest.find('/').unwrap_or(rest.len())];
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    host.replace("localhost", "127.0.0.1").parse().ok()
}

/// `grpc.health.v1.Health/Check` for the whole server ("").
async fn grpc_health(addr: SocketAddr) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut client = HealthClient::new(channel);
    let reply = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(reply.into_inner().status).ok()
}

#[tokio::test]
async fn sigterm_drains_a_gateway() {
    let options = NetworkOptions {
        gateways: 1,
        switchboards: 1,
        drain_seconds: 2,
        ..NetworkOptions::default()
    };
    let Some(mut net) = network("sigterm drain", options).await else {
        return;
    };
    net.add_user("alice@example.com", "pw", "Alice").await;
    net.add_user("bob@example.com", "pw", "Bob").await;
    let mut alice = online(&net, 0, "alice@example.com").await;
    let mut bob = online(&net, 0, "bob@example.com").await;
    let admin = net.gateways[0].addr("admin");
    assert_eq!(
        butterfly_testkit::http::get(admin, "/readyz", &[])
            .await
            .status,
        200
    );
    // Every role answers gRPC health checks too (the gateway on its admin port).
    assert_eq!(grpc_health(admin).await, Some(ServingStatus::Serving));
    assert_eq!(
        grpc_health(net.addressbook.addr("grpc")).await,
        Some(ServingStatus::Serving)
    );

    net.gateways[0].terminate();
    // Readiness goes off at once while the sessions are told OUT SSD over the window.
    let ready = tokio::time::timeout(TIMEOUT, async {
        loop {
            // A refused or cut request means the admin listener is gone: not ready either.
            let status = tokio::spawn(butterfly_testkit::http::get(admin, "/readyz", &[]))
                .await
                .ok()
                .map(|r| r.status);
            if status != Some(200) {
                return status;
            }
        }
    })
    .await;
    assert!(
        matches!(ready, Ok(Some(503) | None)),
        "/readyz stayed ready while draining: {ready:?}"
    );
    assert_eq!(alice.closed_lines().await, ["OUT SSD"]);
    assert_eq!(bob.closed_lines().await, ["OUT SSD"]);
    let status = net.gateways[0].wait_exit(TIMEOUT).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the gateway did not exit cleanly: {status:?}\n{}",
        net.gateways[0].log_tail()
    );
}

/// A base port below the ephemeral range (32768+, where the other tests' listeners live)
/// such that it and the next `count - 1` ports are free now: the machine's own services
/// listen in that range too (RabbitMQ on 25672).
fn free_port_range(count: u16) -> u16 {
    for _ in 0..100 {
        let base = 20_000 + (rand::random::<u32>() % 10_000) as u16;
        let free =
            (base..base + count).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no {count} free ports in a row between 20000 and 30016");
}

/// The local cluster script, driven as an operator (or an outside probe) would: its
/// output lines, users added with `butterfly user add --database-url`, two users on
/// the two gateways, and a clean stop on SIGTERM.
#[tokio::test]
async fn the_local_cluster_script_starts_a_network_that_works() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let Some(services) = Services::find("run-cluster.sh").await else {
        return;
    };
    let (database, database_url) = services.create_database().await;
    let prefix = format!("bft{:08x}:", rand::random::<u32>());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/run-cluster.sh");
    let base = free_port_range(16);
    let mut child = tokio::process::Command::new("bash")
        .arg(&script)
        .env("BUTTERFLY_BIN", BIN)
        .env("BUTTERFLY_DATABASE_URL", &database_url)
        .env("BUTTERFLY_REDIS_URL", &services.redis_url)
        .env("BUTTERFLY_REDIS_PREFIX", &prefix)
        .env("CLUSTER_BASE_PORT", base.to_string())
        .env("BUTTERFLY_LOG", "warn")
        .env("BUTTERFLY_DRAIN_SECONDS", "2")
        .stdout(std::process::Stdio::piped())
        // Its own process group, so a failing test can stop the script's children too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("run the script");
    let _group = KillGroup(child.id().expect("script running"));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    let ready = tokio::time::timeout(TIMEOUT * 6, async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l == "ready" {
                return true;
            }
            printed.push(l);
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "the script did not get ready: {printed:?}");
    let roles: Vec<&str> = printed
        .iter()
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(
        roles,
        [
            "addressbook",
            "passport",
            "switchboard",
            "switchboard",
            "ns-gateway",
            "ns-gateway",
            "http"
        ]
    );
    let addr = |i: usize| -> SocketAddr {
        printed[i]
            .split(' ')
            .nth(1)
            .and_then(|a| a.parse().ok())
            .expect("ROLE ADDRESS")
    };
    let (gw0, gw1, http) = (addr(4), addr(5), addr(6));
    assert_eq!(addr(1), http, "Passport is at the one HTTP address");
    // The address-book SOAP services are there too (in any path case): without a
    // ticket they refuse (403) rather than being missing (404).
    assert_eq!(
        post_status(
            http,
            "/ABService/SharingService.asmx",
            "<Envelope><Body><FindMembership/></Body></Envelope>"
        )
        .await,
        403
    );

    for (email, name) in [("alice@example.com", "Alice"), ("bob@example.com", "Bob")] {
        let out = std::process::Command::new(BIN)
            .args(["user", "add", email, "--password", "pw", "--name", name])
            .args(["--database-url", &database_url])
            .args(["--argon2-memory-kib", "64", "--argon2-iterations", "1"])
            .output()
            .expect("run butterfly user add");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let at = |gateway: SocketAddr| ScriptNetwork { gateway, http };
    let mut alice = online(&at(gw0), 0, "alice@example.com").await;
    let mut bob = online(&at(gw1), 0, "bob@example.com").await;
    add_online_contact(&mut alice, &mut bob, "bob@example.com").await;

    let pid = child.id().expect("script running");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    // Bob's gateway may drain first, and alice then sees him leave.
    let lines = alice.closed_lines().await;
    assert!(
        lines == ["OUT SSD"] || lines == ["FLN bob@example.com", "OUT SSD"],
        "{lines:?}"
    );
    let status = tokio::time::timeout(TIMEOUT * 2, child.wait()).await;
    assert!(
        matches!(status, Ok(Ok(s)) if s.success()),
        "the script did not stop cleanly: {status:?}"
    );
    services.clean_up(&database, &prefix);
}

/// POST `body` to `path` over HTTP/1.1; the response status.
async fn post_status(addr: SocketAddr, path: &str, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status line")
}

/// Kills a process group when dropped (a test that fails part-way leaves nothing behind).
struct KillGroup(u32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// One gateway of the script's network, as a [`Topology`].
struct ScriptNetwork {
    gateway: SocketAddr,
    http: SocketAddr,
}

impl Topology for ScriptNetwork {
    async fn add(&self, _email: &str, _name: &str) {
        unreachable!("the script test adds users with `butterfly user add`")
    }
    async fn login(&self, _gw: usize, dialect: u8, email: &str) -> Client {
        let mut c = Client::connect(self.gateway, dialect).await;
        c.login(self.http, email, "pw").await;
        c
    }
}
