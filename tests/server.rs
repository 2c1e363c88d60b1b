//! Server-level behaviour: shutdown, admin endpoints, timeouts, challenges, keep-alive.

use butterfly_testkit::{Client, TestCluster, http, line};

#[tokio::test]
async fn shutdown_sends_out_ssd_to_every_client() {
    let cluster = TestCluster::start().await;
    cluster.add_user("alice@example.com", "a", "Alice").await;
    cluster.add_user("bob@example.com", "b", "Bob").await;
    let mut alice = cluster.login(7, "alice@example.com", "a").await;
    let mut bob = cluster.login(12, "bob@example.com", "b").await;
    let mut waiting = cluster.connect(12).await; // connected, not signed in
    waiting.cmd("VER", "MSNP12").await;
    waiting.expect("VER").await;
    assert!(
        cluster.shutdown().await,
        "every connection closed before the deadline"
    );
    assert_eq!(alice.closed_lines().await, ["OUT SSD"]);
    assert_eq!(bob.closed_lines().await, ["OUT SSD"]);
    assert_eq!(waiting.closed_lines().await, ["OUT SSD"]);
}

#[tokio::test]
async fn admin_endpoints() {
    let cluster = TestCluster::start().await;
    cluster.add_user("alice@example.com", "a", "Alice").await;
    let _alice = cluster.login(12, "alice@example.com", "a").await;
    let live = http::get(cluster.admin_addr(), "/livez", &[]).await;
    assert_eq!(live.status, 200);
    let ready = http::get(cluster.admin_addr(), "/readyz", &[]).await;
    assert_eq!(
        (ready.status, ready.body.as_slice()),
        (200, &b"ready\n"[..])
    );
    let metrics = http::get(cluster.admin_addr(), "/metrics", &[]).await;
    let text = String::from_utf8(metrics.body).unwrap();
    let logins: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("butterfly_ns_logins_total "))
        .and_then(|v| v.parse().ok())
        .expect("logins counter");
    assert!(logins >= 1, "{text}");
    assert!(text.contains("# TYPE butterfly_ns_connections_active gauge"));
}

#[tokio::test]
async fn png_gets_qng_with_seconds_from_msnp9() {
    let cluster = TestCluster::start().await;
    for (d, want) in [(8u8, "QNG"), (9, "QNG 50"), (12, "QNG 50")] {
        let mut c = cluster.connect(d).await;
        c.cmd("VER", &format!("MSNP{d}")).await;
        c.expect("VER").await;
        c.send(line("PNG")).await;
        assert_eq!(c.next_line().await, want, "MSNP{d}");
    }
}

#[tokio::test]
async fn unauthenticated_connection_times_out() {
    let cluster = TestCluster::start().await;
    let mut c = cluster.connect(12).await;
    c.cmd("VER", "MSNP12").await;
    c.expect("VER").await;
    // Virtual time: the 60-second login timeout passes without waiting for it.
    tokio::time::pause();
    c.timeout = std::time::Duration::from_secs(61);
    assert!(c.expect_closed().await.is_empty());
}

#[tokio::test]
async fn idle_connection_and_unanswered_challenge_both_close() {
    let cluster = TestCluster::start().await;
    cluster.add_user("alice@example.com", "a", "Alice").await;
    cluster.add_user("bob@example.com", "b", "Bob").await;
    let mut alice = cluster.login(9, "alice@example.com", "a").await;
    let tr = alice.cmd("ADD", "FL bob@example.com Bob").await;
    assert_eq!(
        alice.next_line().await,
        format!("ADD {tr} FL 1 bob@example.com Bob")
    );
    let mut bob = cluster.login(9, "bob@example.com", "b").await;
    let tr = bob.cmd("CHG", "NLN 0 0").await;
    assert_eq!(bob.next_line().await, format!("CHG {tr} NLN 0 0"));
    bob.expect("CHL").await;
    tokio::time::pause();
    alice.timeout = std::time::Duration::from_secs(301);
    bob.timeout = std::time::Duration::from_secs(15 * 60 + 1);
    // Alice sends nothing for 300 virtual seconds: closed; Bob's CHL goes unanswered
    // past the next challenge too, which also closes him.
    assert!(alice.expect_closed().await.is_empty());
    let closed = bob.expect_closed().await;
    assert!(
        closed.iter().all(|f| f.verb.as_str() != "OUT"),
        "{closed:?}"
    );
}

#[tokio::test]
async fn wrong_challenge_answer_is_540_and_close() {
    let cluster = TestCluster::start().await;
    cluster.add_user("alice@example.com", "a", "Alice").await;
    let mut alice = cluster.login(11, "alice@example.com", "a").await;
    alice.cmd("CHG", "NLN 0 0").await;
    alice.expect("CHG").await;
    let chl = alice.expect("CHL").await;
    // The MSNP6–10 answer under MSNP11 is wrong.
    let wrong = msnp::auth::challenge_response_md5(&chl.args[1], "Q1P7W2E4J9R8U3S5");
    let tr = alice
        .cmd_payload("QRY", "PROD0090YUAUV{2B", wrong.into_bytes())
        .await;
    assert_eq!(alice.closed_lines().await, [format!("540 {tr}")]);
}

#[tokio::test]
async fn right_challenge_answers_per_dialect() {
    let cluster = TestCluster::start().await;
    cluster.add_user("alice@example.com", "a", "Alice").await;
    for d in [6u8, 8, 10, 11, 12] {
        let mut c = cluster.login(d, "alice@example.com", "a").await;
        let caps = if d >= 9 {
            " 0 0"
        } else if d == 8 {
            " 0"
        } else {
            ""
        };
        c.cmd("CHG", &format!("NLN{caps}")).await;
        c.expect("CHG").await;
        let chl = c.expect("CHL").await;
        assert_eq!(chl.args[0], "0");
        let (id, answer) = if d >= 11 {
            (
                "PROD0101{0RM?UBW",
                msnp::auth::challenge_response_v11(
                    &chl.args[1],
                    "PROD0101{0RM?UBW",
                    "CFHUR$52U_{VIX5T",
                ),
            )
        } else {
            (
                "PROD0038W!61ZTF9",
                msnp::auth::challenge_response_md5(&chl.args[1], "VT6PX?UQTM4WM%YR"),
            )
        };
        let id = if d < 8 { "msmsgs@msnmsgr.com" } else { id };
        let answer = if d < 8 {
            msnp::auth::challenge_response_md5(&chl.args[1], "Q1P7W2E4J9R8U3S5")
        } else {
            answer
        };
        let tr = c.cmd_payload("QRY", id, answer.into_bytes()).await;
        assert_eq!(c.next_line().await, format!("QRY {tr}"), "MSNP{d}");
        // Alice signing in again replaces this session.
        drop(c);
    }
}

#[tokio::test]
async fn switchboard_cookie_is_bound_to_its_user_and_session() {
    let cluster = TestCluster::start().await;
    cluster.add_user("alice@example.com", "a", "Alice").await;
    cluster.add_user("bob@example.com", "b", "Bob").await;
    let mut alice = cluster.login(12, "alice@example.com", "a").await;
    alice.cmd("CHG", "NLN 0 0").await;
    alice.expect("CHG").await;
    alice.expect("CHL").await;
    let tr = alice.cmd("XFR", "SB").await;
    let xfr = alice.expect("XFR").await;
    assert_eq!(xfr.tr_id(), Some(tr));
    let cookie = xfr.args[4].clone();
    // Bob cannot use Alice's cookie.
    let mut sb = Client::connect(cluster.sb_addr(), 12).await;
    sb.cmd("USR", &format!("bob@example.com {cookie}")).await;
    assert_eq!(sb.closed_lines().await, ["911 1"]);
    // Alice can, once; a second session with the same cookie is refused.
    let mut sb = Client::connect(cluster.sb_addr(), 12).await;
    sb.cmd("USR", &format!("alice@example.com {cookie}")).await;
    assert_eq!(sb.next_line().await, "USR 1 OK alice@example.com Alice");
    let mut again = Client::connect(cluster.sb_addr(), 12).await;
    again
        .cmd("USR", &format!("alice@example.com {cookie}"))
        .await;
    assert_eq!(again.closed_lines().await, ["911 1"]);
    // Calling someone who is offline.
    sb.cmd("CAL", "bob@example.com").await;
    assert_eq!(sb.next_line().await, "217 2");
    // XFR while appearing offline is refused.
    let tr = alice.cmd("CHG", "HDN 0 0").await;
    assert_eq!(alice.next_line().await, format!("CHG {tr} HDN 0 0"));
    let tr = alice.cmd("XFR", "SB").await;
    assert_eq!(alice.next_line().await, format!("913 {tr}"));
}

#[tokio::test]
async fn payload_limits_are_configurable() {
    let cluster = TestCluster::start_with(|s| {
        s.ns_limits.max_payload = 100;
        s.sb_limits.max_payload = 64;
    })
    .await;
    cluster.add_user("alice@example.com", "a", "Alice").await;
    let mut alice = cluster.login(12, "alice@example.com", "a").await;
    let tr = alice.cmd_payload("UUX", "", vec![b'x'; 101]).await;
    assert_eq!(alice.next_line().await, format!("200 {tr}"));
    let tr = alice
        .cmd_payload("UUX", "", b"<Data><PSM>fits</PSM></Data>".to_vec())
        .await;
    assert_eq!(alice.next_line().await, format!("UUX {tr} 0"));
    alice.cmd("CHG", "NLN 0 0").await;
    alice.expect("CHG").await;
    alice.expect("CHL").await;
    let tr = alice.cmd("XFR", "SB").await;
    let xfr = alice.expect_where("XFR", |f| f.tr_id() == Some(tr)).await;
    let mut sb = Client::connect(cluster.sb_addr(), 12).await;
    sb.cmd("USR", &format!("alice@example.com {}", xfr.args[4]))
        .await;
    sb.expect("USR").await;
    sb.cmd_payload("MSG", "A", vec![b'x'; 65]).await;
    assert_eq!(sb.closed_lines().await, ["200 2"]);
}
