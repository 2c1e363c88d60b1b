//! Two users, one dialect family at a time, end to end at the wire: sign-in, list sync,
//! adding each other, groups, presence both ways, personal messages, privacy, a
//! switchboard chat with acknowledgements, and sign-out.
//!
//! Expected lines are written out per dialect from the protocol map (NS.md, SB.md).

use butterfly_testkit::{Client, TestCluster, line_of};

fn caps(d: u8) -> &'static str {
    // What a client of that era would send in CHG (with no MSNObject).
    match d {
        ..=7 => "",
        8 => " 268435456",
        _ => " 268435456 0",
    }
}

/// The NLN line a watcher of dialect `d` gets for `email` (status, friendly name).
fn nln(d: u8, status: &str, email: &str, name: &str) -> String {
    match d {
        ..=7 => format!("NLN {status} {email} {name}"),
        8 => format!("NLN {status} {email} {name} 268435456"),
        _ => format!("NLN {status} {email} {name} 268435456 0"),
    }
}

async fn chg(c: &mut Client, status: &str) -> Vec<String> {
    let d = c.dialect;
    let tr = c.cmd("CHG", &format!("{status}{}", caps(d))).await;
    let mut lines = Vec::new();
    // The echo, then the initial presence (ILN) and possibly a challenge.
    assert_eq!(c.next_line().await, format!("CHG {tr} {status}{}", caps(d)));
    for f in c.barrier().await {
        lines.push(line_of(&f));
    }
    lines
}

/// Answer a pending CHL if one is in `lines`; returns the other lines.
async fn answer_challenges(c: &mut Client, lines: Vec<String>) -> Vec<String> {
    let mut rest = Vec::new();
    for l in lines {
        if let Some(chl) = l.strip_prefix("CHL 0 ") {
            let d = c.dialect;
            let (id, answer) = if d >= 11 {
                (
                    "PROD0090YUAUV{2B",
                    msnp::auth::challenge_response_v11(chl, "PROD0090YUAUV{2B", "YMM8C_H7KCQ2S_KL"),
                )
            } else {
                (
                    "msmsgs@msnmsgr.com",
                    msnp::auth::challenge_response_md5(chl, "Q1P7W2E4J9R8U3S5"),
                )
            };
            let tr = c.cmd_payload("QRY", id, answer.into_bytes()).await;
            assert_eq!(c.next_line().await, format!("QRY {tr}"));
        } else {
            rest.push(l);
        }
    }
    rest
}

async fn go_online(c: &mut Client, status: &str) -> Vec<String> {
    let lines = chg(c, status).await;
    answer_challenges(c, lines).await
}

/// Add `who` to the forward list; returns the new contact GUID for MSNP10+.
async fn add_fl(c: &mut Client, who: &str, name: &str, version: u64) -> Option<String> {
    if c.dialect < 10 {
        let tr = c.cmd("ADD", &format!("FL {who} {name}")).await;
        assert_eq!(
            c.next_line().await,
            format!("ADD {tr} FL {version} {who} {name}")
        );
        None
    } else {
        let tr = c.cmd("ADC", &format!("FL N={who} F={name}")).await;
        let reply = c.next_line().await;
        let prefix = format!("ADC {tr} FL N={who} F={name} C=");
        assert!(reply.starts_with(&prefix), "{reply}");
        Some(reply[prefix.len()..].to_owned())
    }
}

fn rl_notice(d: u8, who: &str, name: &str, version: u64) -> String {
    if d < 10 {
        format!("ADD 0 RL {version} {who} {name}")
    } else {
        format!("ADC 0 RL N={who} F={name}")
    }
}

async fn scenario(d: u8) {
    let cluster = TestCluster::start().await;
    cluster
        .add_user("alice@example.com", "alice-pw", "Alice")
        .await;
    cluster.add_user("bob@example.com", "bob-pw", "Bob").await;
    let mut alice = cluster.login(d, "alice@example.com", "alice-pw").await;
    let mut bob = cluster.login(d, "bob@example.com", "bob-pw").await;

    // An empty list sync.
    let tr = alice.cmd("SYN", if d >= 10 { "0 0" } else { "0" }).await;
    let empty: Vec<String> = match d {
        ..=6 => vec![
            format!("SYN {tr} 0"),
            format!("LST {tr} FL 0 0 0"),
            format!("LST {tr} AL 0 0 0"),
            format!("LST {tr} BL 0 0 0"),
            format!("LST {tr} RL 0 0 0"),
            format!("GTC {tr} 0 A"),
            format!("BLP {tr} 0 AL"),
        ],
        7 => vec![
            format!("SYN {tr} 0"),
            format!("LSG {tr} 0 1 1 0 Other%20Contacts 0"),
            format!("LST {tr} FL 0 0 0"),
            format!("LST {tr} AL 0 0 0"),
            format!("LST {tr} BL 0 0 0"),
            format!("LST {tr} RL 0 0 0"),
            format!("GTC {tr} 0 A"),
            format!("BLP {tr} 0 AL"),
        ],
        8..=9 => vec![
            format!("SYN {tr} 0 0 1"),
            "GTC A".into(),
            "BLP AL".into(),
            "LSG 0 Other%20Contacts 0".into(),
        ],
        _ => vec![
            format!(
                "SYN {tr} 2000-01-01T00:00:00.0000000-00:00 2000-01-01T00:00:00.0000000-00:00 0 0"
            ),
            "GTC A".into(),
            "BLP AL".into(),
            "PRP MFN Alice".into(),
        ],
    };
    for want in &empty {
        assert_eq!(&alice.next_line().await, want, "MSNP{d} SYN");
    }

    // Both online; nobody on anyone's list yet, so no ILN.
    assert!(go_online(&mut alice, "NLN").await.is_empty());
    assert!(go_online(&mut bob, "NLN").await.is_empty());

    // Alice adds Bob: Bob hears of it (RL) and Alice sees Bob online at once.
    let bob_guid = add_fl(&mut alice, "bob@example.com", "Bob", 1).await;
    assert_eq!(
        alice.next_line().await,
        nln(d, "NLN", "bob@example.com", "Bob")
    );
    assert_eq!(
        bob.next_line().await,
        rl_notice(d, "alice@example.com", "Alice", 1)
    );
    // Bob adds Alice back (his version: 1 from the RL change, now 2).
    add_fl(&mut bob, "alice@example.com", "Alice", 2).await;
    assert_eq!(
        bob.next_line().await,
        nln(d, "NLN", "alice@example.com", "Alice")
    );
    assert_eq!(
        alice.next_line().await,
        rl_notice(d, "bob@example.com", "Bob", 2)
    );

    // Adding twice is refused.
    if d < 10 {
        let tr = alice.cmd("ADD", "FL bob@example.com Bob").await;
        assert_eq!(alice.next_line().await, format!("215 {tr}"));
        let tr = alice.cmd("ADD", "FL nobody@example.com Nobody").await;
        assert_eq!(alice.next_line().await, format!("205 {tr}"));
    } else {
        let tr = alice.cmd("ADC", "FL N=bob@example.com F=Bob").await;
        assert_eq!(alice.next_line().await, format!("215 {tr}"));
        let tr = alice.cmd("ADC", "FL N=nobody@example.com F=Nobody").await;
        assert_eq!(alice.next_line().await, format!("208 {tr}"));
    }

    // Presence both ways.
    let tr = bob.cmd("CHG", &format!("AWY{}", caps(d))).await;
    assert_eq!(bob.next_line().await, format!("CHG {tr} AWY{}", caps(d)));
    assert_eq!(
        alice.next_line().await,
        nln(d, "AWY", "bob@example.com", "Bob")
    );
    let tr = alice.cmd("CHG", &format!("BSY{}", caps(d))).await;
    assert_eq!(alice.next_line().await, format!("CHG {tr} BSY{}", caps(d)));
    assert_eq!(
        bob.next_line().await,
        nln(d, "BSY", "alice@example.com", "Alice")
    );

    // Renaming myself shows on the watcher's side.
    if d < 10 {
        let tr = alice.cmd("REA", "alice@example.com Alice%20Two").await;
        assert_eq!(
            alice.next_line().await,
            format!("REA {tr} 3 alice@example.com Alice%20Two")
        );
    } else {
        let tr = alice.cmd("PRP", "MFN Alice%20Two").await;
        assert_eq!(alice.next_line().await, format!("PRP {tr} MFN Alice%20Two"));
    }
    assert_eq!(
        bob.next_line().await,
        nln(d, "BSY", "alice@example.com", "Alice%20Two")
    );

    // Personal message (MSNP11+).
    if d >= 11 {
        let psm = b"<Data><PSM>hello there</PSM><CurrentMedia></CurrentMedia></Data>".to_vec();
        let n = psm.len();
        let tr = alice.cmd_payload("UUX", "", psm.clone()).await;
        assert_eq!(alice.next_line().await, format!("UUX {tr} 0"));
        let ubx = bob.expect("UBX").await;
        assert_eq!(line_of(&ubx), format!("UBX alice@example.com {n}"));
        assert_eq!(ubx.payload.as_deref(), Some(&psm[..]));
    }

    // Privacy: Bob blocks Alice; she sees him go offline and cannot invite him.
    if d < 10 {
        let tr = bob.cmd("ADD", "BL alice@example.com Alice").await;
        assert_eq!(
            bob.next_line().await,
            format!("ADD {tr} BL 3 alice@example.com Alice")
        );
    } else {
        let tr = bob.cmd("ADC", "BL N=alice@example.com").await;
        assert_eq!(
            bob.next_line().await,
            format!("ADC {tr} BL N=alice@example.com")
        );
    }
    assert_eq!(alice.next_line().await, "FLN bob@example.com");
    let mut sb = xfr_and_usr(&cluster, &mut alice, "Alice%20Two").await;
    let tr = sb.cmd("CAL", "bob@example.com").await;
    assert_eq!(sb.next_line().await, format!("217 {tr}"));
    drop(sb);
    // Unblock: she sees him again.
    let tr = bob.cmd("REM", "BL alice@example.com").await;
    let want = if d < 10 {
        format!("REM {tr} BL 4 alice@example.com")
    } else {
        format!("REM {tr} BL alice@example.com")
    };
    assert_eq!(bob.next_line().await, want);
    assert_eq!(
        alice.next_line().await,
        nln(d, "AWY", "bob@example.com", "Bob")
    );

    // Groups (MSNP7+).
    if d >= 7 {
        let tr = alice.cmd("ADG", "Friends%20Of%20Mine 0").await;
        let reply = alice.next_line().await;
        if d < 10 {
            assert_eq!(reply, format!("ADG {tr} 4 Friends%20Of%20Mine 1 0"));
            let tr = alice.cmd("ADD", "FL bob@example.com Bob 1").await;
            assert_eq!(
                alice.next_line().await,
                format!("ADD {tr} FL 5 bob@example.com Bob 1")
            );
        } else {
            // `ADG tr name guid 0`
            let prefix = format!("ADG {tr} Friends%20Of%20Mine ");
            assert!(
                reply.starts_with(&prefix) && reply.ends_with(" 0"),
                "{reply}"
            );
            let gid = reply[prefix.len()..reply.len() - 2].to_owned();
            let c = bob_guid.clone().unwrap();
            let tr = alice.cmd("ADC", &format!("FL C={c} {gid}")).await;
            assert_eq!(alice.next_line().await, format!("ADC {tr} FL C={c} {gid}"));
            let tr = alice.cmd("REG", &format!("{gid} Best%20Friends 0")).await;
            assert_eq!(
                alice.next_line().await,
                format!("REG {tr} 1 Best%20Friends {gid} 0")
            );
            // MSN 7.0 names the group instead of giving its GUID.
            let tr = alice.cmd("RMG", "Best%20Friends").await;
            assert_eq!(alice.next_line().await, format!("RMG {tr} 1 {gid}"));
        }
    }

    // A switchboard chat, Alice calling Bob.
    let mut a_sb = xfr_and_usr(&cluster, &mut alice, "Alice%20Two").await;
    let tr = a_sb.cmd("CAL", "bob@example.com").await;
    let ringing = a_sb.next_line().await;
    let prefix = format!("CAL {tr} RINGING ");
    assert!(ringing.starts_with(&prefix), "{ringing}");
    let session = ringing[prefix.len()..].to_owned();
    let rng = bob.expect("RNG").await;
    assert_eq!(rng.args[0], session);
    assert_eq!(rng.args[1], cluster.sb_addr().to_string());
    assert_eq!(rng.args[2], "CKI");
    assert_eq!(&rng.args[4..], ["alice@example.com", "Alice%20Two"]);
    let mut b_sb = Client::connect(cluster.sb_addr(), d).await;
    b_sb.email = "bob@example.com (sb)".into();
    let tr = b_sb
        .cmd("ANS", &format!("bob@example.com {} {session}", rng.args[3]))
        .await;
    let caps_sb = if d >= 12 { " 268435456" } else { "" };
    assert_eq!(
        b_sb.next_line().await,
        format!("IRO {tr} 1 1 alice@example.com Alice%20Two{caps_sb}")
    );
    assert_eq!(b_sb.next_line().await, format!("ANS {tr} OK"));
    assert_eq!(
        a_sb.next_line().await,
        format!("JOI bob@example.com Bob{caps_sb}")
    );

    let text = b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nX-MMS-IM-Format: FN=Arial; EF=; CO=0; CS=0; PF=22\r\n\r\nhi bob";
    let tr = a_sb.cmd_payload("MSG", "A", text.to_vec()).await;
    let got = b_sb.expect("MSG").await;
    assert_eq!(
        line_of(&got),
        format!("MSG alice@example.com Alice%20Two {}", text.len())
    );
    assert_eq!(got.payload.as_deref(), Some(&text[..]));
    assert_eq!(a_sb.next_line().await, format!("ACK {tr}"));
    // Typing notification, unacknowledged; then N mode: no reply on success.
    let typing = b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: bob@example.com\r\n\r\n\r\n";
    b_sb.cmd_payload("MSG", "U", typing.to_vec()).await;
    assert_eq!(
        a_sb.expect("MSG").await.payload.as_deref(),
        Some(&typing[..])
    );
    b_sb.cmd_payload("MSG", "N", text.to_vec()).await;
    assert_eq!(a_sb.expect("MSG").await.payload.as_deref(), Some(&text[..]));
    // P2P data relays byte for byte, with D acknowledgement.
    if d >= 9 {
        let mut p2p = b"MIME-Version: 1.0\r\nContent-Type: application/x-msnmsgrp2p\r\nP2P-Dest: bob@example.com\r\n\r\n".to_vec();
        p2p.extend((0..=255u8).chain(0..52));
        let tr = a_sb.cmd_payload("MSG", "D", p2p.clone()).await;
        assert_eq!(b_sb.expect("MSG").await.payload.as_deref(), Some(&p2p[..]));
        assert_eq!(a_sb.next_line().await, format!("ACK {tr}"));
    }
    // Bob leaves; Alice's message now has nobody to go to.
    b_sb.send(butterfly_testkit::line("OUT")).await;
    assert_eq!(a_sb.next_line().await, "BYE bob@example.com");
    let tr = a_sb.cmd_payload("MSG", "A", text.to_vec()).await;
    assert_eq!(a_sb.next_line().await, format!("NAK {tr}"));

    // The lists as stored, as Alice's client syncs them.
    let tr = alice.cmd("SYN", if d >= 10 { "0 0" } else { "0" }).await;
    let synced: Vec<String> = alice
        .barrier()
        .await
        .iter()
        .map(line_of)
        .filter(|l| l.starts_with("LST") || l.starts_with("SYN"))
        .collect();
    assert!(synced[0].starts_with(&format!("SYN {tr} ")), "{synced:?}");
    let bob_line = synced
        .iter()
        .find(|l| l.contains("bob@example.com"))
        .expect("Bob listed");
    match d {
        ..=6 => assert!(
            synced.contains(&format!("LST {tr} FL 3 1 1 bob@example.com Bob")),
            "{synced:?}"
        ),
        7 => assert!(
            synced.contains(&format!("LST {tr} FL 5 1 1 bob@example.com Bob 1")),
            "{synced:?}"
        ),
        8..=9 => assert_eq!(bob_line, "LST bob@example.com Bob 9 1"),
        10..=11 => assert_eq!(
            bob_line,
            &format!("LST N=bob@example.com F=Bob C={} 9", bob_guid.unwrap())
        ),
        _ => assert_eq!(
            bob_line,
            &format!("LST N=bob@example.com F=Bob C={} 9 1", bob_guid.unwrap())
        ),
    }

    // Sign-out: Bob sees Alice go offline.
    alice.send(butterfly_testkit::line("OUT")).await;
    assert_eq!(alice.closed_lines().await, ["OUT"]);
    assert_eq!(bob.next_line().await, "FLN alice@example.com");
}

/// XFR SB on the NS, then USR on the switchboard.
async fn xfr_and_usr(cluster: &TestCluster, ns: &mut Client, name: &str) -> Client {
    let d = ns.dialect;
    let tr = ns.cmd("XFR", "SB").await;
    let xfr = ns.expect("XFR").await;
    assert_eq!(
        xfr.args[..3],
        [tr.to_string(), "SB".into(), cluster.sb_addr().to_string()]
    );
    assert_eq!(xfr.args[3], "CKI");
    assert_eq!(xfr.args.len(), 5, "MSNP2–12 XFR has no trailing fields");
    let mut sb = Client::connect(cluster.sb_addr(), d).await;
    sb.email = format!("{} (sb)", ns.email);
    let tr = sb
        .cmd("USR", &format!("{} {}", ns.email, xfr.args[4]))
        .await;
    assert_eq!(
        sb.next_line().await,
        format!("USR {tr} OK {} {name}", ns.email)
    );
    sb
}

#[tokio::test]
async fn msnp2() {
    scenario(2).await;
}
#[tokio::test]
async fn msnp5() {
    scenario(5).await;
}
#[tokio::test]
async fn msnp7() {
    scenario(7).await;
}
#[tokio::test]
async fn msnp8() {
    scenario(8).await;
}
#[tokio::test]
async fn msnp9() {
    scenario(9).await;
}
#[tokio::test]
async fn msnp10() {
    scenario(10).await;
}
#[tokio::test]
async fn msnp11() {
    scenario(11).await;
}
#[tokio::test]
async fn msnp12() {
    scenario(12).await;
}
