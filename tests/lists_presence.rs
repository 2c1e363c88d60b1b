//! Lists, privacy and presence details at the wire: initial presence (ILN) per dialect,
//! appear-offline, BLP, GTC, group edits and their errors, phone properties, nicknames,
//! and multi-party switchboard sessions.

use butterfly_testkit::{Client, TestCluster, line, line_of};

async fn cluster_with(users: &[(&str, &str)]) -> TestCluster {
    let cluster = TestCluster::start().await;
    for (email, name) in users {
        cluster.add_user(email, "pw", name).await;
    }
    cluster
}

/// Sign in, CHG to `status` (with an MSNObject where the dialect has one), answer nothing.
async fn online(cluster: &TestCluster, d: u8, email: &str, status: &str) -> Client {
    let mut c = cluster.login(d, email, "pw").await;
    let rest = match d {
        ..=7 => String::new(),
        8 => " 1342177280".into(),
        _ => " 1342177280 %3Cmsnobj%20Creator%3D%22x%22%2F%3E".into(),
    };
    let tr = c.cmd("CHG", &format!("{status}{rest}")).await;
    assert_eq!(c.next_line().await, format!("CHG {tr} {status}{rest}"));
    c
}

async fn add(c: &mut Client, list: &str, who: &str) -> String {
    let tr = if c.dialect >= 10 {
        let f = if list == "FL" { " F=X" } else { "" };
        c.cmd("ADC", &format!("{list} N={who}{f}")).await
    } else {
        c.cmd("ADD", &format!("{list} {who} X")).await
    };
    let reply = c.expect_where("the reply", |f| f.tr_id() == Some(tr)).await;
    line_of(&reply)
}

#[tokio::test]
async fn initial_presence_per_dialect() {
    let cluster = cluster_with(&[
        ("watcher@example.com", "W"),
        ("bob@example.com", "Bob B"),
        ("hidden@example.com", "H"),
    ])
    .await;
    let _bob = online(&cluster, 12, "bob@example.com", "BRB").await;
    let _hidden = online(&cluster, 12, "hidden@example.com", "HDN").await;
    for (d, want) in [
        (2u8, "ILN {tr} BRB bob@example.com Bob%20B"),
        (7, "ILN {tr} BRB bob@example.com Bob%20B"),
        (8, "ILN {tr} BRB bob@example.com Bob%20B 1342177280"),
        (
            9,
            "ILN {tr} BRB bob@example.com Bob%20B 1342177280 %3Cmsnobj%20Creator%3D%22x%22%2F%3E",
        ),
        (
            12,
            "ILN {tr} BRB bob@example.com Bob%20B 1342177280 %3Cmsnobj%20Creator%3D%22x%22%2F%3E",
        ),
    ] {
        let mut w = cluster.login(d, "watcher@example.com", "pw").await;
        for who in ["bob@example.com", "hidden@example.com"] {
            if d >= 10 {
                let tr = w.cmd("ADC", &format!("FL N={who} F=X")).await;
                w.expect_where("ADC reply", |f| f.tr_id() == Some(tr)).await;
            } else {
                let tr = w.cmd("ADD", &format!("FL {who} X")).await;
                let r = w.expect_where("ADD reply", |f| f.tr_id() == Some(tr)).await;
                assert!(matches!(r.verb.as_str(), "ADD" | "215"), "{r:?}");
            }
        }
        // Nothing is shown before the first CHG.
        assert!(w.barrier().await.is_empty(), "MSNP{d}");
        let caps = match d {
            ..=7 => "",
            8 => " 0",
            _ => " 0 0",
        };
        let tr = w.cmd("CHG", &format!("NLN{caps}")).await;
        assert_eq!(w.next_line().await, format!("CHG {tr} NLN{caps}"));
        let after: Vec<String> = w
            .barrier()
            .await
            .iter()
            .map(line_of)
            .filter(|l| !l.starts_with("CHL"))
            .collect();
        // Bob once; the contact appearing offline not at all.
        assert_eq!(after, [want.replace("{tr}", &tr.to_string())], "MSNP{d}");
    }
}

#[tokio::test]
async fn appear_offline_and_back() {
    let cluster = cluster_with(&[("alice@example.com", "Alice"), ("bob@example.com", "Bob")]).await;
    let mut alice = online(&cluster, 11, "alice@example.com", "NLN").await;
    assert!(
        add(&mut alice, "FL", "bob@example.com")
            .await
            .starts_with("ADC")
    );
    let mut bob = online(&cluster, 11, "bob@example.com", "NLN").await;
    let seen = alice
        .expect_where("Bob online", |f| f.verb.as_str() == "NLN")
        .await;
    assert_eq!(seen.args[..2], ["NLN", "bob@example.com"]);
    bob.expect("CHL").await;
    let tr = bob.cmd("CHG", "HDN 0 0").await;
    assert_eq!(bob.next_line().await, format!("CHG {tr} HDN 0 0"));
    assert_eq!(alice.next_line().await, "FLN bob@example.com");
    let tr = bob.cmd("CHG", "IDL 0 0").await;
    assert_eq!(bob.next_line().await, format!("CHG {tr} IDL 0 0"));
    assert_eq!(alice.next_line().await, "NLN IDL bob@example.com Bob 0 0");
    // An invalid status is refused.
    let tr = bob.cmd("CHG", "FLN 0 0").await;
    assert_eq!(bob.next_line().await, format!("201 {tr}"));
}

#[tokio::test]
async fn blp_bl_shows_me_only_to_my_allow_list() {
    let cluster = cluster_with(&[
        ("alice@example.com", "Alice"),
        ("bob@example.com", "Bob"),
        ("carol@example.com", "Carol"),
    ])
    .await;
    let mut bob = online(&cluster, 9, "bob@example.com", "NLN").await;
    let mut carol = online(&cluster, 9, "carol@example.com", "NLN").await;
    add(&mut bob, "FL", "alice@example.com").await;
    add(&mut carol, "FL", "alice@example.com").await;
    let mut alice = online(&cluster, 9, "alice@example.com", "NLN").await;
    assert!(
        bob.expect_where("Alice online", |f| f.verb.as_str() == "NLN")
            .await
            .args[1]
            == "alice@example.com"
    );
    assert!(
        carol
            .expect_where("Alice online", |f| f.verb.as_str() == "NLN")
            .await
            .args[1]
            == "alice@example.com"
    );
    // Alice allows Bob explicitly and switches to "block everyone else".
    let reply = add(&mut alice, "AL", "bob@example.com").await;
    assert!(
        reply.starts_with("ADD ") && reply.ends_with(" AL 3 bob@example.com X"),
        "{reply}"
    );
    let tr = alice.cmd("BLP", "BL").await;
    assert_eq!(
        alice
            .expect_where("BLP reply", |f| f.tr_id() == Some(tr))
            .await
            .args,
        [tr.to_string(), "4".into(), "BL".into()]
    );
    assert_eq!(
        carol
            .expect_where("Alice gone", |f| f.verb.as_str() == "FLN")
            .await
            .args,
        ["alice@example.com"]
    );
    assert!(
        bob.barrier().await.iter().all(|f| f.verb.as_str() != "FLN"),
        "Bob is on Alice's AL"
    );
    // Back to allow-all: Carol sees her again.
    let tr = alice.cmd("BLP", "AL").await;
    alice
        .expect_where("BLP reply", |f| f.tr_id() == Some(tr))
        .await;
    assert_eq!(
        carol
            .expect_where("Alice back", |f| f.verb.as_str() == "NLN")
            .await
            .args[1],
        "alice@example.com"
    );
    // A bad setting is refused.
    let tr = alice.cmd("BLP", "XX").await;
    assert_eq!(alice.next_line().await, format!("201 {tr}"));
    // The setting in force already: 218.
    let tr = alice.cmd("BLP", "AL").await;
    assert_eq!(alice.next_line().await, format!("218 {tr}"));
}

#[tokio::test]
async fn gtc_phones_and_sync_msnp8() {
    let cluster = cluster_with(&[("alice@example.com", "Alice")]).await;
    let mut alice = cluster.login(8, "alice@example.com", "pw").await;
    let tr = alice.cmd("GTC", "N").await;
    assert_eq!(alice.next_line().await, format!("GTC {tr} 1 N"));
    let tr = alice.cmd("PRP", "PHH 555%201234").await;
    assert_eq!(
        alice.next_line().await,
        format!("PRP {tr} 2 PHH 555%201234")
    );
    let tr = alice.cmd("PRP", "XYZ 1").await;
    assert_eq!(alice.next_line().await, format!("201 {tr}"));
    // Clearing a number: no empty field in the echo, and nothing left to sync.
    let tr = alice.cmd("PRP", "PHW").await;
    assert_eq!(alice.next_line().await, format!("PRP {tr} 3 PHW"));
    let tr = alice.cmd("GTC", "N").await;
    assert_eq!(alice.next_line().await, format!("218 {tr}"));
    let tr = alice.cmd("SYN", "0").await;
    let lines: Vec<String> = alice.barrier().await.iter().map(line_of).collect();
    assert_eq!(
        lines,
        [
            format!("SYN {tr} 3 0 1"),
            "GTC N".into(),
            "BLP AL".into(),
            "PRP PHH 555%201234".into(),
            "LSG 0 Other%20Contacts 0".into()
        ]
    );
}

#[tokio::test]
async fn group_edits_and_errors_msnp9() {
    let cluster = cluster_with(&[("alice@example.com", "Alice"), ("bob@example.com", "Bob")]).await;
    let mut a = cluster.login(9, "alice@example.com", "pw").await;
    let tr = a.cmd("ADG", "Work 0").await;
    assert_eq!(a.next_line().await, format!("ADG {tr} 1 Work 1 0"));
    let tr = a.cmd("ADG", "Work 0").await;
    assert_eq!(a.next_line().await, format!("228 {tr}"));
    let long = "x".repeat(62);
    let tr = a.cmd("ADG", &format!("{long} 0")).await;
    assert_eq!(a.next_line().await, format!("229 {tr}"));
    let tr = a.cmd("REG", "1 Office 0").await;
    assert_eq!(a.next_line().await, format!("REG {tr} 2 1 Office 0"));
    let tr = a.cmd("REG", "7 Nope 0").await;
    assert_eq!(a.next_line().await, format!("224 {tr}"));
    let tr = a.cmd("RMG", "0").await;
    assert_eq!(a.next_line().await, format!("230 {tr}"));
    // Into the group and out of it again; Bob stays on FL.
    let tr = a.cmd("ADD", "FL bob@example.com Bob 1").await;
    assert_eq!(
        a.next_line().await,
        format!("ADD {tr} FL 3 bob@example.com Bob 1")
    );
    let tr = a.cmd("REM", "FL bob@example.com 1").await;
    assert_eq!(
        a.next_line().await,
        format!("REM {tr} FL 4 bob@example.com 1")
    );
    let tr = a.cmd("REM", "FL bob@example.com 1").await;
    assert_eq!(a.next_line().await, format!("225 {tr}"));
    let tr = a.cmd("RMG", "1").await;
    assert_eq!(a.next_line().await, format!("RMG {tr} 5 1"));
    let tr = a.cmd("REM", "RL bob@example.com").await;
    assert_eq!(a.next_line().await, format!("201 {tr}"));
    let tr = a.cmd("REM", "AL bob@example.com").await;
    assert_eq!(a.next_line().await, format!("216 {tr}"));
    let tr = a.cmd("SYN", "0").await;
    let lines: Vec<String> = a.barrier().await.iter().map(line_of).collect();
    assert_eq!(
        lines,
        [
            format!("SYN {tr} 5 1 1"),
            "GTC A".into(),
            "BLP AL".into(),
            "LSG 0 Other%20Contacts 0".into(),
            "LST bob@example.com Bob 1 0".into()
        ]
    );
}

#[tokio::test]
async fn nickname_and_group_guids_msnp10() {
    let cluster = cluster_with(&[("alice@example.com", "Alice"), ("bob@example.com", "Bob")]).await;
    let mut a = cluster.login(10, "alice@example.com", "pw").await;
    let reply = add(&mut a, "FL", "bob@example.com").await;
    let guid = reply.rsplit("C=").next().unwrap().to_owned();
    let tr = a.cmd("SBP", &format!("{guid} MFN Bobby%20B")).await;
    assert_eq!(
        a.next_line().await,
        format!("SBP {tr} {guid} MFN Bobby%20B")
    );
    let tr = a.cmd("ADG", "Pals 0").await;
    let adg = a.next_line().await;
    let gid = adg.split(' ').nth(3).unwrap().to_owned();
    assert_eq!(adg, format!("ADG {tr} Pals {gid} 0"));
    let tr = a.cmd("ADC", &format!("FL C={guid} {gid}")).await;
    assert_eq!(a.next_line().await, format!("ADC {tr} FL C={guid} {gid}"));
    let tr = a.cmd("SYN", "0 0").await;
    let lines: Vec<String> = a.barrier().await.iter().map(line_of).collect();
    assert_eq!(
        lines[1..],
        [
            "GTC A".to_string(),
            "BLP AL".into(),
            "PRP MFN Alice".into(),
            format!("LSG Pals {gid}"),
            format!("LST N=bob@example.com F=Bobby%20B C={guid} 1 {gid}")
        ]
    );
    assert!(lines[0].starts_with(&format!("SYN {tr} ")) && lines[0].ends_with(" 1 1"));
    // REM by GUID from the group, then from the list.
    let tr = a.cmd("REM", &format!("FL {guid} {gid}")).await;
    assert_eq!(a.next_line().await, format!("REM {tr} FL {guid} {gid}"));
    let tr = a.cmd("REM", &format!("FL {guid}")).await;
    assert_eq!(a.next_line().await, format!("REM {tr} FL {guid}"));
    let tr = a.cmd("REM", &format!("FL {guid}")).await;
    assert_eq!(a.next_line().await, format!("216 {tr}"));
}

#[tokio::test]
async fn three_people_in_one_switchboard_session() {
    let cluster = cluster_with(&[
        ("alice@example.com", "Alice"),
        ("bob@example.com", "Bob"),
        ("carol@example.com", "Carol"),
    ])
    .await;
    let mut ns = Vec::new();
    for (email, d) in [
        ("alice@example.com", 12u8),
        ("bob@example.com", 11),
        ("carol@example.com", 7),
    ] {
        ns.push(online(&cluster, d, email, "NLN").await);
    }
    let [alice, bob, carol] = &mut ns[..] else {
        unreachable!()
    };
    let tr = alice.cmd("XFR", "SB").await;
    let xfr = alice.expect_where("XFR", |f| f.tr_id() == Some(tr)).await;
    let mut a = Client::connect(cluster.sb_addr(), 12).await;
    a.cmd("USR", &format!("alice@example.com {}", xfr.args[4]))
        .await;
    a.expect("USR").await;
    // Unknown and offline users cannot be called.
    let tr = a.cmd("CAL", "not-an-address").await;
    assert_eq!(a.next_line().await, format!("208 {tr}"));
    let tr = a.cmd("CAL", "nobody@example.com").await;
    assert_eq!(a.next_line().await, format!("217 {tr}"));
    let mut sbs = Vec::new();
    for (ns_client, email, d, joi) in [
        (
            &mut *bob,
            "bob@example.com",
            11u8,
            "JOI bob@example.com Bob 1342177280",
        ),
        (
            &mut *carol,
            "carol@example.com",
            7,
            "JOI carol@example.com Carol 0",
        ),
    ] {
        let tr = a.cmd("CAL", email).await;
        let ringing = a.expect("CAL").await;
        assert_eq!(ringing.args[..2], [tr.to_string(), "RINGING".into()]);
        let rng = ns_client
            .expect_where("RNG", |f| f.verb.as_str() == "RNG")
            .await;
        let mut sb = Client::connect(cluster.sb_addr(), d).await;
        sb.cmd("ANS", &format!("{email} {} {}", rng.args[3], rng.args[0]))
            .await;
        let mut iro = Vec::new();
        loop {
            let l = sb.next_line().await;
            if l.starts_with("ANS") {
                break;
            }
            iro.push(l);
        }
        assert_eq!(a.next_line().await, joi);
        sbs.push((sb, iro));
    }
    // Bob (MSNP11) saw Alice without caps; Carol (MSNP7) saw Alice and Bob.
    assert_eq!(sbs[0].1, ["IRO 1 1 1 alice@example.com Alice"]);
    assert_eq!(
        sbs[1].1,
        [
            "IRO 1 1 2 alice@example.com Alice",
            "IRO 1 2 2 bob@example.com Bob"
        ]
    );
    assert_eq!(sbs[0].0.next_line().await, "JOI carol@example.com Carol");
    // Calling someone already there.
    let tr = a.cmd("CAL", "bob@example.com").await;
    assert_eq!(a.next_line().await, format!("215 {tr}"));
    // One message reaches both others.
    let text = b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhi all".to_vec();
    let tr = a.cmd_payload("MSG", "A", text.clone()).await;
    for (sb, _) in &mut sbs {
        let got = sb.expect("MSG").await;
        assert_eq!(
            line_of(&got),
            format!("MSG alice@example.com Alice {}", text.len())
        );
        assert_eq!(got.payload.as_deref(), Some(&text[..]));
    }
    assert_eq!(a.next_line().await, format!("ACK {tr}"));
    // Carol leaves: the other two are told.
    let (mut carol_sb, _) = sbs.pop().unwrap();
    carol_sb.send(line("OUT")).await;
    assert_eq!(a.next_line().await, "BYE carol@example.com");
    assert_eq!(sbs[0].0.next_line().await, "BYE carol@example.com");
}

#[tokio::test]
async fn a_personal_message_that_goes_away_is_cleared() {
    let cluster = cluster_with(&[("alice@example.com", "Alice"), ("bob@example.com", "Bob")]).await;
    let mut alice = online(&cluster, 11, "alice@example.com", "NLN").await;
    assert!(
        add(&mut alice, "FL", "bob@example.com")
            .await
            .starts_with("ADC")
    );
    let mut bob = online(&cluster, 12, "bob@example.com", "NLN").await;
    alice
        .expect_where("Bob online", |f| f.verb.as_str() == "NLN")
        .await;
    let doc = b"<Data><PSM>away soon</PSM><CurrentMedia></CurrentMedia></Data>".to_vec();
    let tr = bob.cmd_payload("UUX", "", doc.clone()).await;
    bob.expect_where("UUX reply", |f| f.tr_id() == Some(tr))
        .await;
    assert_eq!(alice.expect("UBX").await.payload.as_deref(), Some(&doc[..]));
    // Bob signs in again elsewhere, without a personal message this time. Depending on
    // whether his old session is gone before the new one's CHG, Alice sees him go offline
    // and come back (which drops the message) or an empty UBX; never the stale message.
    let _bob2 = online(&cluster, 12, "bob@example.com", "NLN").await;
    assert_eq!(
        bob.closed_lines().await.last().map(String::as_str),
        Some("OUT OTH")
    );
    let mut went_offline = false;
    loop {
        let f = alice.next().await;
        match f.verb.as_str() {
            "FLN" => went_offline = true,
            "NLN" if went_offline => break,
            "UBX" => {
                let empty = &b"<Data><PSM></PSM><CurrentMedia></CurrentMedia></Data>"[..];
                assert_eq!(
                    f.payload.as_deref(),
                    Some(empty),
                    "only an empty document may follow"
                );
                break;
            }
            _ => {}
        }
    }
    assert!(
        alice
            .barrier()
            .await
            .iter()
            .all(|f| f.payload.as_deref() != Some(&doc[..])),
        "the old message came back"
    );
}

/// The roster a session reads at sign-in answers its first SYN: a list change made by
/// someone else between the sign-in and that SYN must be in it, and a later SYN reads the
/// lists again.
#[tokio::test]
async fn first_syn_has_changes_made_after_sign_in_msnp9() {
    let cluster = cluster_with(&[
        ("alice@example.com", "Alice"),
        ("bob@example.com", "Bob"),
        ("carol@example.com", "Carol"),
    ])
    .await;
    let mut a = cluster.login(9, "alice@example.com", "pw").await;
    let mut b = cluster.login(9, "bob@example.com", "pw").await;
    add(&mut b, "FL", "alice@example.com").await;
    assert_eq!(a.next_line().await, "ADD 0 RL 1 bob@example.com Bob");

    let tr = a.cmd("SYN", "0").await;
    let lines: Vec<String> = a.barrier().await.iter().map(line_of).collect();
    assert_eq!(
        lines,
        [
            format!("SYN {tr} 1 1 1"),
            "GTC A".into(),
            "BLP AL".into(),
            "LSG 0 Other%20Contacts 0".into(),
            "LST bob@example.com Bob 8".into()
        ]
    );

    let mut c = cluster.login(9, "carol@example.com", "pw").await;
    add(&mut c, "FL", "alice@example.com").await;
    assert_eq!(a.next_line().await, "ADD 0 RL 2 carol@example.com Carol");
    let tr = a.cmd("SYN", "0").await;
    let lines: Vec<String> = a.barrier().await.iter().map(line_of).collect();
    assert_eq!(lines[0], format!("SYN {tr} 2 2 1"));
    assert_eq!(
        lines[4..],
        [
            "LST bob@example.com Bob 8".to_string(),
            "LST carol@example.com Carol 8".into()
        ]
    );
}
