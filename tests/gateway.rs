//! The HTTP polling gateway (`POST /gateway/gateway.dll`) at the wire, against the
//! embedded server: the `X-MSN-Messenger` header and whole commands per response; sign-in
//! in every family (MD5, TWN through Passport, SSO through the token service); presence
//! and chats between gateway users and TCP users, with switchboard sessions opened
//! through the gateway (`Server=SB`); `Session=close`; polls returning what arrived in
//! between; and the refusals (unknown session, a switchboard address that is not ours,
//! a forged cookie, two requests at once, an oversized body).

use std::net::SocketAddr;

use butterfly_testkit::gateway::{self, POLL_EVERY, Reply};
use butterfly_testkit::{Client, TestCluster, line_of};
use msnp::codec::{Decoded, Direction, Limits, MsnpCodec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;

async fn cluster_with(users: &[(&str, &str)]) -> TestCluster {
    let cluster = TestCluster::start().await;
    for (email, name) in users {
        cluster.add_user(email, "pw", name).await;
    }
    cluster
}

/// The commands of a response body, which must hold whole commands only.
fn lines(dialect: u8, body: &[u8]) -> Vec<String> {
    let mut codec = MsnpCodec::new(Direction::ServerToClient, Limits::CLIENT);
    codec.set_dialect(dialect);
    let mut buf = bytes::BytesMut::from(body);
    let mut out = Vec::new();
    while let Some(d) = codec.decode(&mut buf).expect("well-formed output") {
        match d {
            Decoded::Frame(f) => out.push(line_of(&f)),
            Decoded::Rejected(r) => panic!("bad frame {r:?}"),
        }
    }
    assert!(
        buf.is_empty(),
        "a response ended inside a command: {body:?}"
    );
    out
}

/// A gateway session driven request by request, as a test wants to see it.
struct Raw {
    http: SocketAddr,
    id: String,
    dialect: u8,
}

impl Raw {
    /// `Action=open&Server=NS` with `VER`; checks the header.
    async fn open(http: SocketAddr, dialect: u8) -> Raw {
        let ver = format!("VER 1 MSNP{dialect} CVR0\r\n");
        let reply = gateway::request(
            http,
            "Action=open&Server=NS&IP=messenger.hotmail.com",
            ver.as_bytes(),
        )
        .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let id = reply.session_id.clone().expect("a SessionID");
        let (node, random) = id.split_once('.').expect("a dot in the SessionID");
        assert!(
            [node, random]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
            "{id}"
        );
        assert_eq!(reply.gw_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(
            reply.content_type.as_deref(),
            Some("application/x-msn-messenger")
        );
        assert!(!reply.closed);
        assert_eq!(lines(dialect, &reply.body), [ver.trim_end()]);
        Raw { http, id, dialect }
    }

    async fn request(&mut self, query: &str, body: &[u8]) -> Reply {
        let reply = gateway::request(self.http, query, body).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.gw_ip.as_deref(), Some("127.0.0.1"));
        self.id = reply
            .session_id
            .clone()
            .expect("every response names the session");
        reply
    }

    /// Send commands; returns the lines of the answer.
    async fn send(&mut self, text: &str) -> Vec<String> {
        let query = format!("SessionID={}", self.id);
        let reply = self.request(&query, text.as_bytes()).await;
        assert!(!reply.closed, "{reply:?}");
        lines(self.dialect, &reply.body)
    }

    async fn poll(&mut self) -> Reply {
        let query = format!("Action=poll&SessionID={}", self.id);
        self.request(&query, b"").await
    }

    /// Poll until a line matching `pred` arrives; returns the lines of that response.
    /// HTTP has no push: a client learns of events only by polling, on a timer.
    async fn poll_until(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let give_up = tokio::time::Instant::now() + butterfly_testkit::TIMEOUT;
        loop {
            let reply = self.poll().await;
            let got = lines(self.dialect, &reply.body);
            if got.iter().any(|l| pred(l)) {
                return got;
            }
            assert!(tokio::time::Instant::now() < give_up, "no {what} polled");
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// MD5 sign-in (MSNP2–7); returns the lines after `USR OK`.
    async fn md5_login(&mut self, email: &str, password: &str) -> Vec<String> {
        let salt = self.send(&format!("USR 2 MD5 I {email}\r\n")).await;
        let salt = salt[0]
            .strip_prefix("USR 2 MD5 S ")
            .unwrap_or_else(|| panic!("{salt:?}"))
            .to_owned();
        let hash = msnp::auth::md5_login_hash(&salt, password);
        let mut ok = self.send(&format!("USR 3 MD5 S {hash}\r\n")).await;
        assert!(ok[0].starts_with(&format!("USR 3 OK {email} ")), "{ok:?}");
        ok.remove(0);
        ok
    }
}

#[tokio::test]
async fn md5_sign_in_at_the_wire_and_out_closes_the_session() {
    let cluster = cluster_with(&[("alice@example.com", "Alice")]).await;
    for d in [2, 7] {
        let mut alice = Raw::open(cluster.http_addr(), d).await;
        assert_eq!(alice.send("INF 1\r\n").await, ["INF 1 MD5"]);
        let after = alice.md5_login("alice@example.com", "pw").await;
        if d >= 5 {
            // The profile comes in the same response as USR OK.
            assert_eq!(after.len(), 1, "{after:?}");
            assert!(after[0].starts_with("MSG Hotmail Hotmail "), "{after:?}");
        }
        // Two commands in one request, two answers in one response.
        assert_eq!(alice.send("PNG\r\nPNG\r\n").await, ["QNG", "QNG"]);
        // Nothing queued: a poll answers at once, empty.
        let poll = alice.poll().await;
        assert!(poll.body.is_empty() && !poll.closed, "{poll:?}");

        let query = format!("SessionID={}", alice.id);
        let mut reply = alice.request(&query, b"OUT\r\n").await;
        assert_eq!(lines(d, &reply.body), ["OUT"]);
        // The close follows the last output; a poll reports it if this response did not.
        while !reply.closed {
            reply = alice.poll().await;
            assert!(reply.body.is_empty(), "{reply:?}");
        }
        // Then the session is forgotten.
        let after = gateway::request(cluster.http_addr(), &query, b"PNG\r\n").await;
        assert_eq!(after.status, 400, "{after:?}");
    }
}

/// Through a proxy, the request line carries the absolute URL (libpurple writes it so
/// even without one).
#[tokio::test]
async fn a_request_with_an_absolute_url_is_served() {
    let cluster = cluster_with(&[]).await;
    let resp = butterfly_testkit::http::post(
        cluster.http_addr(),
        "http://gateway.messenger.hotmail.com/gateway/gateway.dll?Action=open&Server=NS&IP=messenger.hotmail.com",
        &[("Content-Type", "application/x-msn-messenger")],
        b"VER 1 MSNP8 CVR0\r\n",
    )
    .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(
        resp.header("X-MSN-Messenger")
            .is_some_and(|h| h.starts_with("SessionID=") && h.ends_with("; GW-IP=127.0.0.1")),
        "{resp:?}"
    );
    assert_eq!(resp.body, b"VER 1 MSNP8 CVR0\r\n");
}

/// MSNP12 through Passport over HTTP: the profile names the HTTP peer, port 0.
#[tokio::test]
async fn twn_sign_in_reports_the_http_peer_with_port_0() {
    let cluster = cluster_with(&[("alice@example.com", "Alice")]).await;
    let mut alice = Raw::open(cluster.http_addr(), 12).await;
    let cvr = alice
        .send("CVR 2 0x0409 winnt 5.1 i386 MSNMSGR 7.5.0324 msmsgs alice@example.com\r\n")
        .await;
    assert!(cvr[0].starts_with("CVR 2 "), "{cvr:?}");
    let policy = alice.send("USR 3 TWN I alice@example.com\r\n").await;
    let policy = policy[0]
        .strip_prefix("USR 3 TWN S ")
        .unwrap_or_else(|| panic!("{policy:?}"))
        .to_owned();
    let ticket =
        butterfly_testkit::passport_login(cluster.http_addr(), "alice@example.com", "pw", &policy)
            .await
            .expect("Passport login");
    let query = format!("SessionID={}", alice.id);
    let reply = alice
        .request(&query, format!("USR 4 TWN S {ticket}\r\n").as_bytes())
        .await;
    let got = lines(12, &reply.body);
    assert_eq!(got[..2], ["USR 4 OK alice@example.com 1 0", "SBS 0 null"]);
    assert!(got[2].starts_with("MSG Hotmail Hotmail "), "{got:?}");
    let text = reply.text();
    assert!(
        text.contains("ClientIP: 127.0.0.1\r\nClientPort: 0\r\n"),
        "{text}"
    );
}

/// WLM 8.5 (MSNP15) and WLM 2009 (MSNP18): the token service over HTTP, `USR SSO` with
/// the MBI proof through the gateway.
#[tokio::test]
async fn wlm_dialects_sign_in_over_the_gateway() {
    let cluster = cluster_with(&[("alice@example.com", "Alice")]).await;
    for d in [15, 18] {
        let mut alice = cluster.gateway_login(d, "alice@example.com", "pw").await;
        let tr = alice.cmd("CHG", "NLN 0").await;
        assert_eq!(alice.next_line().await, format!("CHG {tr} NLN 0"));
        alice.send(butterfly_testkit::line("OUT")).await;
        assert_eq!(
            alice
                .closed_lines()
                .await
                .into_iter()
                .filter(|l| !l.starts_with("CHL ") && !l.starts_with("MSG Hotmail"))
                .collect::<Vec<_>>(),
            ["OUT"],
            "MSNP{d}"
        );
    }
}

async fn add_to_fl(c: &mut Client, who: &str) {
    let tr = c.cmd("ADC", &format!("FL N={who} F={who}")).await;
    let reply = c.expect_where("ADC reply", |f| f.tr_id() == Some(tr)).await;
    assert_eq!(reply.verb.as_str(), "ADC", "{reply:?}");
}

/// `CHG` and its echo, skipping anything pushed before the echo.
async fn chg(c: &mut Client, status: &str) {
    let tr = c.cmd("CHG", &format!("{status} 0")).await;
    c.expect_where("CHG echo", |f| {
        f.tr_id() == Some(tr) && f.verb.as_str() == "CHG"
    })
    .await;
}

/// A frame whose line starts with `prefix`.
fn starts(prefix: &str) -> impl Fn(&msnp::frame::Frame) -> bool {
    let prefix = prefix.to_owned();
    move |f| line_of(f).starts_with(&prefix)
}

#[tokio::test]
async fn presence_between_a_gateway_user_and_a_tcp_user() {
    let cluster = cluster_with(&[("alice@example.com", "Alice"), ("bob@example.com", "Bob")]).await;
    let mut alice = cluster.gateway_login(12, "alice@example.com", "pw").await;
    add_to_fl(&mut alice, "bob@example.com").await;
    chg(&mut alice, "NLN").await;

    let mut bob = cluster.login(12, "bob@example.com", "pw").await;
    add_to_fl(&mut bob, "alice@example.com").await;
    // Bob's first CHG shows him Alice, who is online through the gateway.
    let tr = bob.cmd("CHG", "NLN 0").await;
    bob.expect_where("Alice's ILN", |f| {
        line_of(f).starts_with(&format!("ILN {tr} NLN alice@example.com Alice "))
    })
    .await;
    // Alice learns of Bob by polling.
    alice
        .expect_where("Bob's NLN", starts("NLN NLN bob@example.com "))
        .await;

    chg(&mut alice, "AWY").await;
    bob.expect_where("Alice away", starts("NLN AWY alice@example.com "))
        .await;
    bob.send(butterfly_testkit::line("OUT")).await;
    alice
        .expect_where("Bob's FLN", starts("FLN bob@example.com"))
        .await;

    // Alice signs out: the gateway says Session=close and her transport ends.
    alice.send(butterfly_testkit::line("OUT")).await;
    assert_eq!(
        alice.closed_lines().await.last().map(String::as_str),
        Some("OUT")
    );
}

#[tokio::test]
async fn polling_returns_what_arrived_between_polls() {
    let cluster = cluster_with(&[("alice@example.com", "Alice"), ("bob@example.com", "Bob")]).await;
    let mut alice = Raw::open(cluster.http_addr(), 7).await;
    alice.md5_login("alice@example.com", "pw").await;
    let added = alice.send("ADD 4 FL bob@example.com Bob\r\n").await;
    assert!(added[0].starts_with("ADD 4 FL "), "{added:?}");
    let online = alice.send("CHG 5 NLN\r\n").await;
    assert_eq!(online[0], "CHG 5 NLN");

    let mut bob = cluster.login(7, "bob@example.com", "pw").await;
    let tr = bob.cmd("CHG", "NLN").await;
    bob.expect_where("CHG echo", |f| f.tr_id() == Some(tr))
        .await;
    // Bob's NLN reached Alice's session while she was not asking; her next polls
    // return it, once.
    let got = alice
        .poll_until("Bob's NLN", |l| l == "NLN NLN bob@example.com Bob")
        .await;
    assert_eq!(
        got.iter().filter(|l| l.starts_with("NLN ")).count(),
        1,
        "{got:?}"
    );
    let tr = bob.cmd("CHG", "BSY").await;
    bob.expect_where("CHG echo", |f| f.tr_id() == Some(tr))
        .await;
    let got = alice
        .poll_until("Bob busy", |l| l == "NLN BSY bob@example.com Bob")
        .await;
    assert!(
        !got.contains(&"NLN NLN bob@example.com Bob".to_owned()),
        "{got:?}"
    );
}

/// `XFR SB` on the NS; returns (address, cookie).
async fn xfr(c: &mut Client) -> (String, String) {
    let tr = c.cmd("XFR", "SB").await;
    let x = c.expect_where("XFR", |f| f.tr_id() == Some(tr)).await;
    assert_eq!(x.verb.as_str(), "XFR", "{x:?}");
    (x.args[2].clone(), x.args[4].clone())
}

fn host(address: &str) -> &str {
    address.rsplit_once(':').map_or(address, |(h, _)| h)
}

#[tokio::test]
async fn a_chat_with_one_side_on_the_gateway() {
    let cluster = cluster_with(&[("alice@example.com", "Alice"), ("bob@example.com", "Bob")]).await;
    let http = cluster.http_addr();
    let mut alice = cluster.gateway_login(12, "alice@example.com", "pw").await;
    let mut bob = cluster.login(12, "bob@example.com", "pw").await;
    add_to_fl(&mut alice, "bob@example.com").await;
    add_to_fl(&mut bob, "alice@example.com").await;
    chg(&mut alice, "NLN").await;
    chg(&mut bob, "NLN").await;

    // Alice calls Bob: her switchboard session goes through the gateway too.
    let (address, cookie) = xfr(&mut alice).await;
    assert_eq!(address, cluster.sb_addr().to_string());
    let mut a_sb = gateway::connect_sb(http, host(&address), 12);
    a_sb.email = "alice (gateway sb)".into();
    let tr = a_sb
        .cmd("USR", &format!("alice@example.com {cookie}"))
        .await;
    assert_eq!(
        a_sb.next_line().await,
        format!("USR {tr} OK alice@example.com Alice")
    );
    let tr = a_sb.cmd("CAL", "bob@example.com").await;
    let ringing = a_sb.next_line().await;
    let session = ringing
        .strip_prefix(&format!("CAL {tr} RINGING "))
        .unwrap_or_else(|| panic!("{ringing}"))
        .to_owned();
    let rng = bob.expect_where("RNG", |f| f.verb.as_str() == "RNG").await;
    let mut b_sb = Client::connect(rng.args[1].parse().unwrap(), 12).await;
    b_sb.email = "bob (tcp sb)".into();
    let tr = b_sb
        .cmd("ANS", &format!("bob@example.com {} {session}", rng.args[3]))
        .await;
    assert!(
        b_sb.next_line()
            .await
            .starts_with(&format!("IRO {tr} 1 1 alice@example.com Alice"))
    );
    assert_eq!(b_sb.next_line().await, format!("ANS {tr} OK"));
    assert!(
        a_sb.next_line()
            .await
            .starts_with("JOI bob@example.com Bob")
    );

    let text =
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nhello over http";
    let tr = a_sb.cmd_payload("MSG", "A", text.to_vec()).await;
    let got = b_sb.expect("MSG").await;
    assert_eq!(
        line_of(&got),
        format!("MSG alice@example.com Alice {}", text.len())
    );
    assert_eq!(got.payload.as_deref(), Some(&text[..]));
    assert_eq!(a_sb.next_line().await, format!("ACK {tr}"));
    b_sb.cmd_payload("MSG", "N", b"MIME-Version: 1.0\r\n\r\nback".to_vec())
        .await;
    assert_eq!(
        a_sb.expect("MSG").await.payload.as_deref(),
        Some(&b"MIME-Version: 1.0\r\n\r\nback"[..])
    );
    // Alice leaves: her gateway session closes, Bob sees her go.
    a_sb.send(butterfly_testkit::line("OUT")).await;
    a_sb.expect_closed().await;
    assert_eq!(b_sb.next_line().await, "BYE alice@example.com");

    // Bob calls Alice: she answers the RNG through the gateway.
    let (address, cookie) = xfr(&mut bob).await;
    let mut b2 = Client::connect(address.parse().unwrap(), 12).await;
    let tr = b2.cmd("USR", &format!("bob@example.com {cookie}")).await;
    assert_eq!(
        b2.next_line().await,
        format!("USR {tr} OK bob@example.com Bob")
    );
    let tr = b2.cmd("CAL", "alice@example.com").await;
    assert!(
        b2.next_line()
            .await
            .starts_with(&format!("CAL {tr} RINGING "))
    );
    let rng = alice
        .expect_where("RNG", |f| f.verb.as_str() == "RNG")
        .await;
    let mut a2 = gateway::connect_sb(http, host(&rng.args[1]), 12);
    let tr = a2
        .cmd(
            "ANS",
            &format!("alice@example.com {} {}", rng.args[3], rng.args[0]),
        )
        .await;
    assert!(
        a2.next_line()
            .await
            .starts_with(&format!("IRO {tr} 1 1 bob@example.com Bob"))
    );
    assert_eq!(a2.next_line().await, format!("ANS {tr} OK"));
    assert!(
        b2.next_line()
            .await
            .starts_with("JOI alice@example.com Alice")
    );
    b2.cmd_payload("MSG", "U", text.to_vec()).await;
    assert_eq!(a2.expect("MSG").await.payload.as_deref(), Some(&text[..]));
}

/// A raw request with headers only: the body is announced, never sent.
async fn announce_body(http: SocketAddr, query: &str, length: usize) -> u16 {
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    let head = format!(
        "POST {}?{query} HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/x-msn-messenger\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n",
        gateway::PATH
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(butterfly_testkit::TIMEOUT, s.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .expect("read the answer");
    let text = String::from_utf8_lossy(&raw);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line")
}

#[tokio::test]
async fn refusals() {
    let cluster = cluster_with(&[("alice@example.com", "Alice"), ("bob@example.com", "Bob")]).await;
    let http = cluster.http_addr();

    // No such session, or no session named.
    for (query, body) in [
        ("SessionID=1.2", &b"PNG\r\n"[..]),
        ("Action=poll&SessionID=1.2", b""),
        ("", b"PNG\r\n"),
        ("Action=poll", b""),
        ("Action=open&Server=XY", b"VER 1 MSNP12 CVR0\r\n"),
    ] {
        let r = gateway::request(http, query, body).await;
        assert_eq!(r.status, 400, "{query}: {r:?}");
        assert!(r.session_id.is_none(), "{query}");
    }

    // Switchboard sessions: only to our shard, only with a cookie that verifies there.
    let mut alice = cluster.login(12, "alice@example.com", "pw").await;
    chg(&mut alice, "NLN").await;
    let (address, cookie) = xfr(&mut alice).await;
    let usr = format!("USR 1 alice@example.com {cookie}\r\n");
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let not_ours = elsewhere.local_addr().unwrap();
    for ip in [not_ours.to_string(), "192.0.2.1".into(), String::new()] {
        let r = gateway::request(
            http,
            &format!("Action=open&Server=SB&IP={ip}"),
            usr.as_bytes(),
        )
        .await;
        assert_eq!(r.status, 403, "{ip}: {r:?}");
    }
    // Refused before any connection: nothing ever knocked at that address.
    assert_eq!(
        elsewhere.accept().map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock)
    );
    let sb_open = format!("Action=open&Server=SB&IP={}", host(&address));
    let mac_end = if cookie.ends_with('0') { "1" } else { "0" };
    let forged = format!("{}{mac_end}", &cookie[..cookie.len() - 1]);
    for line in [
        format!("USR 1 alice@example.com {forged}\r\n"),
        // Someone else's cookie.
        format!("USR 1 bob@example.com {cookie}\r\n"),
        format!("ANS 1 alice@example.com {forged} 1\r\n"),
    ] {
        let r = gateway::request(http, &sb_open, line.as_bytes()).await;
        assert_eq!(r.status, 403, "{line}: {r:?}");
    }
    for bad in ["", "USR 1 alice@example.com", "CAL 1 bob@example.com\r\n"] {
        let r = gateway::request(http, &sb_open, bad.as_bytes()).await;
        assert_eq!(r.status, 400, "{bad:?}: {r:?}");
    }
    // The genuine cookie at the genuine shard opens the session.
    let r = gateway::request(http, &sb_open, usr.as_bytes()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(lines(12, &r.body), ["USR 1 OK alice@example.com Alice"]);

    // One request at a time per session. The first sends half a command, so the NS
    // answers nothing and the request waits out its time; another meanwhile is refused.
    let mut raw = Raw::open(http, 12).await;
    let send_query = format!("SessionID={}", raw.id);
    let slow = tokio::spawn({
        let query = send_query.clone();
        async move { gateway::request(http, &query, b"PNG").await }
    });
    let mut refused = false;
    while !slow.is_finished() {
        let r = gateway::request(http, &format!("Action=poll&SessionID={}", raw.id), b"").await;
        if r.status == 400 {
            refused = true;
            break;
        }
        assert_eq!(r.status, 200, "{r:?}");
    }
    let slow = slow.await.unwrap();
    // Whichever came second was refused, and forwarded nothing.
    assert!(refused || slow.status == 400, "{slow:?}");
    let rest = if slow.status == 200 {
        "\r\n"
    } else {
        "PNG\r\n"
    };
    assert_eq!(raw.send(rest).await, ["QNG 50"]);

    // A body over the limit is refused unread; the session is untouched.
    assert_eq!(announce_body(http, &send_query, 64 * 1024 + 1).await, 413);
    assert_eq!(raw.send("PNG\r\n").await, ["QNG 50"]);
}
