//! Bad input, one case per test: each gets an MSNP error or a clean close, and a second
//! user's session is unaffected (proven by a PNG/QNG round trip and a presence change
//! reaching it afterwards).

use butterfly_testkit::{Client, TestCluster, line, line_of};

/// A cluster with Bob signed in (MSNP12), watching Alice.
async fn with_bystander() -> (TestCluster, Client) {
    let cluster = TestCluster::start().await;
    cluster
        .add_user("alice@example.com", "alice-pw", "Alice")
        .await;
    cluster.add_user("bob@example.com", "bob-pw", "Bob").await;
    let mut bob = cluster.login(12, "bob@example.com", "bob-pw").await;
    let tr = bob.cmd("ADC", "FL N=alice@example.com F=Alice").await;
    assert!(bob.next_line().await.starts_with(&format!("ADC {tr} FL")));
    bob.cmd("CHG", "NLN 0 0").await;
    bob.expect("CHG").await;
    bob.expect("CHL").await;
    (cluster, bob)
}

/// Bob still works: his session answers, and Alice signing in reaches him.
async fn bystander_fine(cluster: &TestCluster, bob: &mut Client) {
    assert!(bob.barrier().await.is_empty());
    let mut alice = cluster.login(12, "alice@example.com", "alice-pw").await;
    alice.cmd("CHG", "NLN 0 0").await;
    alice.expect("CHG").await;
    assert_eq!(bob.next_line().await, "NLN NLN alice@example.com Alice 0 0");
}

async fn fresh(cluster: &TestCluster) -> Client {
    let mut c = cluster.connect(12).await;
    c.email = "attacker".into();
    c
}

fn lines(frames: &[msnp::frame::Frame]) -> Vec<String> {
    frames.iter().map(line_of).collect()
}

#[tokio::test]
async fn unknown_verb_is_a_syntax_error_and_the_session_goes_on() {
    let (cluster, mut bob) = with_bystander().await;
    let mut c = fresh(&cluster).await;
    c.send_raw(b"ZZZ 1 what\r\n").await;
    assert_eq!(c.next_line().await, "200 1");
    c.send_raw(b"VER 2 MSNP12\r\n").await;
    assert_eq!(c.next_line().await, "VER 2 MSNP12");
    let tr = bob.cmd("ZZZ", "x").await;
    assert_eq!(bob.next_line().await, format!("200 {tr}"));
    bystander_fine(&cluster, &mut bob).await;
}

#[tokio::test]
async fn overlong_line_without_newline_is_refused_and_closed() {
    let (cluster, mut bob) = with_bystander().await;
    let mut c = fresh(&cluster).await;
    // Far past the 2 KiB line cap, and never a newline.
    c.send_raw(&vec![b'A'; 64 * 1024]).await;
    assert_eq!(c.closed_lines().await, ["200 0"]);
    bystander_fine(&cluster, &mut bob).await;
}

#[tokio::test]
async fn payload_over_the_cap_is_refused_and_skipped() {
    let (cluster, mut bob) = with_bystander().await;
    // 20 KiB UUX against the 16 KiB NS cap: an error, the bytes skipped, the session goes on.
    let big = vec![b'x'; 20 * 1024];
    let tr = bob.cmd_payload("UUX", "", big).await;
    assert_eq!(bob.next_line().await, format!("200 {tr}"));
    bystander_fine(&cluster, &mut bob).await;
}

#[tokio::test]
async fn switchboard_message_over_1664_bytes_closes_the_connection() {
    let (cluster, mut bob) = with_bystander().await;
    let tr = bob.cmd("XFR", "SB").await;
    let xfr = bob.expect("XFR").await;
    assert_eq!(xfr.tr_id(), Some(tr));
    let mut sb = Client::connect(cluster.sb_addr(), 12).await;
    let tr = sb
        .cmd("USR", &format!("bob@example.com {}", xfr.args[4]))
        .await;
    assert_eq!(
        sb.next_line().await,
        format!("USR {tr} OK bob@example.com Bob")
    );
    sb.cmd_payload("MSG", "A", vec![b'x'; 1665]).await;
    assert_eq!(sb.closed_lines().await, ["200 2"]);
    bystander_fine(&cluster, &mut bob).await;
}

#[tokio::test]
async fn non_numeric_payload_count_closes_the_connection() {
    let (cluster, mut bob) = with_bystander().await;
    let mut c = fresh(&cluster).await;
    c.send_raw(b"VER 1 MSNP12\r\nUUX 2 lots\r\nabc").await;
    assert_eq!(c.next_line().await, "VER 1 MSNP12");
    assert_eq!(c.closed_lines().await, ["200 2"]);
    bystander_fine(&cluster, &mut bob).await;
}

#[tokio::test]
async fn non_utf8_line_is_a_syntax_error() {
    let (cluster, mut bob) = with_bystander().await;
    let mut c = fresh(&cluster).await;
    c.send_raw(b"VER 1 MSNP12\r\nCHG 2 \xff\xfe\xfd\r\n").await;
    assert_eq!(c.next_line().await, "VER 1 MSNP12");
    assert_eq!(c.next_line().await, "200 2");
    assert!(
        c.barrier().await.is_empty(),
        "the connection is still usable"
    );
    bystander_fine(&cluster, &mut bob).await;
}

#[tokio::test]
async fn commands_before_login_are_not_expected() {
    let (cluster, mut bob) = with_bystander().await;
    let mut c = fresh(&cluster).await;
    // Before VER, and after VER but before USR.
    c.send(line("SYN 1 0")).await;
    assert_eq!(c.next_line().await, "715 1");
    c.send(line("VER 2 MSNP12")).await;
    c.expect("VER").await;
    c.send(line("CHG 3 NLN 0")).await;
    assert_eq!(c.next_line().await, "715 3");
    c.send(line("XFR 4 SB")).await;
    assert_eq!(c.next_line().await, "715 4");
    c.send(line("ADC 5 FL N=bob@example.com F=Bob")).await;
    assert_eq!(c.next_line().await, "715 5");
    // Nothing happened to Bob's lists.
    let tr = bob.cmd("SYN", "0 0").await;
    let synced = lines(&bob.barrier().await);
    assert!(
        synced[0].starts_with(&format!("SYN {tr} ")) && synced[0].ends_with(" 1 0"),
        "{synced:?}"
    );
    bystander_fine(&cluster, &mut bob).await;
}

#[tokio::test]
async fn a_flood_of_garbage_before_login_is_cut_off() {
    let (cluster, mut bob) = with_bystander().await;
    let mut c = fresh(&cluster).await;
    let mut flood = Vec::new();
    for i in 0..100 {
        flood.extend_from_slice(format!("ZZZ {i}\r\n").as_bytes());
    }
    c.send_raw(&flood).await;
    let answered = c.expect_closed().await;
    assert!(
        answered.len() <= 21,
        "answered {} lines before closing",
        answered.len()
    );
    bystander_fine(&cluster, &mut bob).await;
}

#[tokio::test]
async fn message_on_a_switchboard_before_usr_is_refused() {
    let (cluster, mut bob) = with_bystander().await;
    let mut sb = Client::connect(cluster.sb_addr(), 12).await;
    sb.cmd_payload("MSG", "A", b"MIME-Version: 1.0\r\n\r\nhi".to_vec())
        .await;
    assert_eq!(sb.next_line().await, "715 1");
    sb.cmd("CAL", "bob@example.com").await;
    assert_eq!(sb.next_line().await, "715 2");
    // A forged cookie is refused and closed.
    sb.cmd("USR", "bob@example.com not-a-cookie").await;
    assert_eq!(sb.closed_lines().await, ["911 3"]);
    bystander_fine(&cluster, &mut bob).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_without_harming_others() {
    let (cluster, mut bob) = with_bystander().await;
    // Alice watches Bob and then stops reading her socket.
    let mut alice = cluster.login(12, "alice@example.com", "alice-pw").await;
    let tr = alice.cmd("ADC", "FL N=bob@example.com F=Bob").await;
    assert!(alice.next_line().await.starts_with(&format!("ADC {tr}")));
    assert_eq!(
        bob.next_line().await,
        "ADC 0 RL N=alice@example.com F=Alice"
    );
    alice.cmd("CHG", "NLN 0 0").await;
    assert_eq!(bob.next_line().await, "NLN NLN alice@example.com Alice 0 0");
    // Bob publishes large personal messages; each becomes a UBX for Alice. Her socket
    // buffers fill, then her queue, and the server drops her — Bob keeps going.
    let mut dropped = false;
    for i in 0..4000 {
        let doc = format!("<Data><PSM>{i}{}</PSM></Data>", "x".repeat(15_000));
        let tr = bob.cmd_payload("UUX", "", doc.into_bytes()).await;
        let reply = bob.next_line().await;
        if reply == "FLN alice@example.com" {
            dropped = true;
            assert_eq!(bob.next_line().await, format!("UUX {tr} 0"));
            break;
        }
        assert_eq!(reply, format!("UUX {tr} 0"));
    }
    assert!(
        dropped,
        "the server never dropped the client that stopped reading"
    );
    assert!(bob.barrier().await.is_empty());
    drop(alice);
}

/// A chat participant that stops reading is dropped (logged and counted), never waited
/// for: the sender's messages get NAK once nobody is left to take them, and the sender's
/// own connection is unaffected.
#[tokio::test]
async fn a_switchboard_participant_that_stops_reading_is_dropped() {
    let cluster = TestCluster::start().await;
    cluster.add_user("carol@example.com", "pw", "Carol").await;
    cluster.add_user("dave@example.com", "pw", "Dave").await;
    // MSNP5: no challenges to answer.
    let mut carol = cluster.login(5, "carol@example.com", "pw").await;
    let mut dave = cluster.login(5, "dave@example.com", "pw").await;
    for c in [&mut carol, &mut dave] {
        let tr = c.cmd("CHG", "NLN").await;
        assert_eq!(c.next_line().await, format!("CHG {tr} NLN"));
    }
    let tr = carol.cmd("XFR", "SB").await;
    let xfr = carol.expect_where("XFR", |f| f.tr_id() == Some(tr)).await;
    let mut a = Client::connect(cluster.sb_addr(), 5).await;
    a.cmd("USR", &format!("carol@example.com {}", xfr.args[4]))
        .await;
    a.expect("USR").await;
    a.cmd("CAL", "dave@example.com").await;
    a.expect("CAL").await;
    let rng = dave.expect("RNG").await;
    let mut b = Client::connect(cluster.sb_addr(), 5).await;
    b.cmd(
        "ANS",
        &format!("dave@example.com {} {}", rng.args[3], rng.args[0]),
    )
    .await;
    assert!(b.next_line().await.starts_with("IRO"));
    b.expect("ANS").await;
    a.expect("JOI").await;

    // Dave never reads again. Carol sends without waiting (U) until his socket, his
    // queue and then his place in the session are gone; an acknowledged message then
    // gets NAK. Bounded: 20,000 messages of 1.4 KB is far more than the buffers hold.
    let body = format!(
        "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n{}",
        "x".repeat(1400)
    );
    let mut nak = false;
    for i in 0..20_000 {
        a.cmd_payload("MSG", "U", body.clone().into_bytes()).await;
        if i % 500 == 499 {
            let tr = a.cmd_payload("MSG", "A", body.clone().into_bytes()).await;
            let reply = a
                .expect_where("ACK or NAK", |f| f.tr_id() == Some(tr))
                .await;
            if reply.verb.as_str() == "NAK" {
                nak = true;
                break;
            }
        }
    }
    assert!(nak, "the slow participant was never dropped");
    let metrics = butterfly_testkit::http::get(cluster.admin_addr(), "/metrics", &[]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.lines()
            .any(|l| l.starts_with("butterfly_sb_slow_consumers_total ")
                && l != "butterfly_sb_slow_consumers_total 0"),
        "{text}"
    );
    drop(b);
    // Carol's connection still works: her next message is answered (NAK: she is alone).
    let tr = a.cmd_payload("MSG", "A", body.into_bytes()).await;
    let reply = a.expect_where("the reply", |f| f.tr_id() == Some(tr)).await;
    assert_eq!(line_of(&reply), format!("NAK {tr}"));
}
