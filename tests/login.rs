//! Sign-in at the wire, per authentication family.

use butterfly_testkit::{TestCluster, passport_login};

#[tokio::test]
async fn md5_login_msnp2_to_7() {
    let cluster = TestCluster::start().await;
    cluster
        .add_user("alice@example.com", "secret", "Alice A")
        .await;
    for d in 2..=7u8 {
        let mut c = cluster.login(d, "alice@example.com", "secret").await;
        let after = c.barrier().await;
        assert!(after.is_empty(), "MSNP{d}: {after:?}");
        c.close().await;
    }
}

#[tokio::test]
async fn usr_ok_line_per_dialect() {
    let cluster = TestCluster::start().await;
    cluster
        .add_user("alice@example.com", "secret", "Alice A")
        .await;
    // MSNP6–7: verified flag after the name.
    let mut c = cluster.connect(7).await;
    c.email = "alice@example.com".into();
    c.cmd("VER", "MSNP7 MSNP6 CVR0").await;
    assert_eq!(c.next_line().await, "VER 1 MSNP7 CVR0");
    c.cmd("INF", "").await;
    assert_eq!(c.next_line().await, "INF 2 MD5");
    c.cmd("USR", "MD5 I alice@example.com").await;
    let salt = c.expect("USR").await.args[3].clone();
    let hash = msnp::auth::md5_login_hash(&salt, "secret");
    c.cmd("USR", &format!("MD5 S {hash}")).await;
    assert_eq!(
        c.next_line().await,
        "USR 4 OK alice@example.com Alice%20A 1"
    );
}

#[tokio::test]
async fn twn_login_msnp8_to_12_through_passport() {
    let cluster = TestCluster::start().await;
    cluster
        .add_user("bob@example.com", "p@ss,w%rd", "Bob")
        .await;
    for d in 8..=12u8 {
        let mut c = cluster.login(d, "bob@example.com", "p@ss,w%rd").await;
        assert!(c.barrier().await.is_empty());
        c.close().await;
    }
}

#[tokio::test]
async fn wrong_password_is_911_and_close() {
    let cluster = TestCluster::start().await;
    cluster
        .add_user("alice@example.com", "secret", "Alice")
        .await;
    // MD5: a wrong hash.
    let mut c = cluster.connect(7).await;
    c.cmd("VER", "MSNP7").await;
    c.expect("VER").await;
    c.cmd("USR", "MD5 I alice@example.com").await;
    c.expect("USR").await;
    c.cmd("USR", "MD5 S 00000000000000000000000000000000").await;
    assert_eq!(c.closed_lines().await, ["911 3"]);
    // Unknown account: same answers as a wrong password.
    let mut c = cluster.connect(7).await;
    c.cmd("VER", "MSNP7").await;
    c.expect("VER").await;
    c.cmd("USR", "MD5 I nobody@example.com").await;
    c.expect("USR").await;
    c.cmd("USR", "MD5 S 00000000000000000000000000000000").await;
    assert_eq!(c.closed_lines().await, ["911 3"]);
    // Passport refuses the wrong password with 401.
    assert_eq!(
        passport_login(cluster.http_addr(), "alice@example.com", "nope", "ct=1").await,
        Err(401)
    );
    // A forged ticket is refused by the NS.
    let mut c = cluster.connect(9).await;
    c.cmd("VER", "MSNP9").await;
    c.expect("VER").await;
    c.cmd("USR", "TWN I alice@example.com").await;
    c.expect("USR").await;
    c.cmd("USR", "TWN S t=eyJhbGciOiJIUzI1NiJ9.e30.forged&p=")
        .await;
    assert_eq!(c.closed_lines().await, ["911 3"]);
}

#[tokio::test]
async fn ticket_for_another_user_is_refused() {
    let cluster = TestCluster::start().await;
    cluster.add_user("alice@example.com", "a", "Alice").await;
    cluster
        .add_user("mallory@example.com", "m", "Mallory")
        .await;
    let ticket = passport_login(cluster.http_addr(), "mallory@example.com", "m", "ct=1")
        .await
        .unwrap();
    let mut c = cluster.connect(12).await;
    c.cmd("VER", "MSNP12").await;
    c.expect("VER").await;
    c.cmd("USR", "TWN I alice@example.com").await;
    c.expect("USR").await;
    c.cmd("USR", &format!("TWN S {ticket}")).await;
    assert_eq!(c.closed_lines().await, ["911 3"]);
}

#[tokio::test]
async fn version_negotiation() {
    let cluster = TestCluster::start().await;
    // Dialects past MSNP18 (WLM 2011's MSNP19, MSNP21) are not spoken.
    let mut c = cluster.connect(12).await;
    c.cmd("VER", "MSNP21 MSNP19 CVR0").await;
    assert_eq!(c.closed_lines().await, ["VER 1 0"]);
    let mut c = cluster.connect(15).await;
    c.cmd("VER", "MSNP15 MSNP14 MSNP13 CVR0").await;
    assert_eq!(c.next_line().await, "VER 1 MSNP15 CVR0");
    let mut c = cluster.connect(18).await;
    c.cmd("VER", "MSNP18 MSNP17 MSNP16 CVR0").await;
    assert_eq!(c.next_line().await, "VER 1 MSNP18 CVR0");
}

#[tokio::test]
async fn second_sign_in_sends_out_oth_to_the_first() {
    let cluster = TestCluster::start().await;
    cluster
        .add_user("alice@example.com", "secret", "Alice")
        .await;
    let mut first = cluster.login(11, "alice@example.com", "secret").await;
    let mut second = cluster.login(11, "alice@example.com", "secret").await;
    assert_eq!(first.closed_lines().await, ["OUT OTH"]);
    assert!(second.barrier().await.is_empty());
}
