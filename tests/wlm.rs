//! Windows Live Messenger dialects (MSNP13, 15, 16, 18) at the wire, each with an MSN 7.5
//! (MSNP12) contact: sign-in through the token service (RST for WLM 8.x, RST2 for WLM
//! 2009) with `USR TWN` or `USR SSO` and the MBI proof; the initial `ADL`; `BLP` at every
//! sign-in; list edits with `ADL`/`RML` (idempotent, as clients mirror address-book
//! edits); the "added you" push; presence and personal messages both ways; `FQY`; the
//! SYN-era list commands refused; garbage documents closing the connection; and the
//! sign-in refusals (bad proof, someone else's ticket, a ticket for another service, no
//! machine GUID).
//!
//! Expected lines are written out per dialect from the protocol map (NS.md §1.3, §2.4).

use butterfly_testkit::rst::{self, Form};
use butterfly_testkit::soap::{self, Service};
use butterfly_testkit::{Client, TestCluster, line_of};

/// The capabilities a client of that dialect sends in CHG (WLM 2009 adds `:capsex`).
fn caps(d: u8) -> &'static str {
    match d {
        ..=12 => "268435456",
        13..=15 => "1985855524",
        _ => "2789003324:48",
    }
}

/// What a watcher of dialect `d` is shown when Bob (MSNP12, caps 268435456, no
/// MSNObject) has `status`.
fn bob_nln(d: u8, status: &str) -> String {
    match d {
        13 => format!("NLN {status} bob@example.com Bob 268435456 0"),
        14..=15 => format!("NLN {status} bob@example.com 1 Bob 268435456 0"),
        16..=17 => format!("NLN {status} bob@example.com 1 Bob 268435456:0 0"),
        _ => format!("NLN {status} 1:bob@example.com Bob 268435456:0 0"),
    }
}

/// What Bob (MSNP12) is shown when Alice (dialect `d`) has `status`: caps without the
/// MSNP16 extension.
fn alice_nln_for_bob(d: u8, status: &str) -> String {
    let caps = caps(d).split(':').next().unwrap_or_default();
    format!("NLN {status} alice@example.com Alice {caps} 0")
}

/// CHG, its echo, and whatever came before a barrier (answering a challenge).
async fn chg(c: &mut Client, status: &str) -> Vec<String> {
    let d = c.dialect;
    let tr = c.cmd("CHG", &format!("{status} {} 0", caps(d))).await;
    assert_eq!(
        c.next_line().await,
        format!("CHG {tr} {status} {} 0", caps(d))
    );
    c.barrier_answering().await.iter().map(line_of).collect()
}

/// The `NOT` "ABCHInternal" that follows an added-you push: it names the receiver (address,
/// CID, PUID halves) so its client fetches its memberships again. `user` is the receiver's
/// user id in the test's store (accounts are numbered in the order they were added).
async fn expect_abch(c: &mut Client, user: i64) {
    let not = c.expect("NOT").await;
    let body = String::from_utf8(not.payload.unwrap().to_vec()).unwrap();
    let id = butterfly_core::UserId(user);
    let puid = butterfly_core::ids::puid(id);
    for needle in [
        format!("name=\"{}\"", c.email),
        format!("pid=\"0x{:08x}:0x{:08x}\"", puid & 0xffff_ffff, puid >> 32),
        "&lt;Service&gt;ABCHInternal&lt;/Service&gt;".to_owned(),
        format!("&lt;CID&gt;{}&lt;/CID&gt;", butterfly_core::ids::cid(id)),
    ] {
        assert!(body.contains(&needle), "no {needle} in {body}");
    }
}

/// `ADL`/`RML` with a document; returns the reply line.
async fn ml(c: &mut Client, verb: &str, doc: &str) -> (u32, String) {
    let tr = c.cmd_payload(verb, "", doc.as_bytes().to_vec()).await;
    (tr, c.next_line().await)
}

async fn scenario(d: u8) {
    let cluster = TestCluster::start().await;
    cluster
        .add_user("alice@example.com", "alice-pw", "Alice")
        .await;
    cluster.add_user("bob@example.com", "bob-pw", "Bob").await;
    let mut alice = cluster.login(d, "alice@example.com", "alice-pw").await;

    // The initial load names what the address book holds: checked, not applied. An
    // empty list is sent as an empty document.
    let (tr, reply) = ml(&mut alice, "ADL", "<ml l=\"1\" />").await;
    assert_eq!(reply, format!("ADL {tr} OK"));
    // BLP comes at every sign-in: the setting in force is confirmed, not refused (218).
    for _ in 0..2 {
        let tr = alice.cmd("BLP", "AL").await;
        assert_eq!(alice.next_line().await, format!("BLP {tr} AL"));
    }
    // Lists are the address book's now: the SYN-era commands are gone.
    for (verb, rest) in [("SYN", "0 0"), ("ADC", "FL N=bob@example.com F=Bob")] {
        let tr = alice.cmd(verb, rest).await;
        assert_eq!(alice.next_line().await, format!("502 {tr}"), "{verb}");
    }
    // The first CHG: presence of online contacts (none), then the offline-message summary.
    assert_eq!(chg(&mut alice, "NLN").await, ["MSG Hotmail Hotmail 197"]);

    let mut bob = cluster.login(12, "bob@example.com", "bob-pw").await;
    assert_eq!(chg(&mut bob, "NLN").await, Vec::<String>::new());

    // Bob adds Alice: she is told with an ADL push naming him on her RL.
    let tr = bob.cmd("ADC", "FL N=alice@example.com F=Alice").await;
    let added = bob.next_line().await;
    assert!(
        added.starts_with(&format!("ADC {tr} FL N=alice@example.com F=Alice C=")),
        "{added}"
    );
    assert_eq!(bob.next_line().await, alice_nln_for_bob(d, "NLN"));
    let push = alice.expect("ADL").await;
    expect_abch(&mut alice, 1).await;
    assert_eq!(push.args, ["0"]);
    assert_eq!(
        push.payload.as_deref(),
        Some(&b"<ml><d n=\"example.com\"><c n=\"bob\" t=\"1\" l=\"8\" f=\"Bob\"/></d></ml>"[..])
    );

    // Alice adds Bob to FL and AL with a later ADL: applied, and his presence follows.
    let adl = "<ml><d n=\"example.com\"><c n=\"bob\" l=\"3\" t=\"1\"/></d></ml>";
    let (tr, reply) = ml(&mut alice, "ADL", adl).await;
    assert_eq!(reply, format!("ADL {tr} OK"));
    assert_eq!(alice.next_line().await, bob_nln(d, "NLN"));
    assert_eq!(
        bob.next_line().await,
        "ADC 0 RL N=alice@example.com F=Alice"
    );
    // The same ADL again (clients mirror every address-book edit): still OK, nothing else.
    let (tr, reply) = ml(&mut alice, "ADL", adl).await;
    assert_eq!(reply, format!("ADL {tr} OK"));
    assert!(alice.barrier().await.is_empty());
    assert!(bob.barrier().await.is_empty());

    // Presence both ways.
    chg(&mut bob, "AWY").await;
    assert_eq!(alice.next_line().await, bob_nln(d, "AWY"));
    chg(&mut alice, "BSY").await;
    assert_eq!(bob.next_line().await, alice_nln_for_bob(d, "BSY"));

    // A personal message reaches Bob; a machine's endpoint document is not one.
    let psm = "<Data><PSM>at work</PSM><CurrentMedia></CurrentMedia></Data>";
    let tr = alice.cmd_payload("UUX", "", psm.as_bytes().to_vec()).await;
    assert_eq!(alice.next_line().await, format!("UUX {tr} 0"));
    let ubx = bob.expect("UBX").await;
    assert_eq!(ubx.args[0], "alice@example.com");
    assert_eq!(ubx.payload.as_deref(), Some(psm.as_bytes()));
    let endpoint = "<EndpointData><Capabilities>2789003324:48</Capabilities></EndpointData>";
    let tr = alice
        .cmd_payload("UUX", "", endpoint.as_bytes().to_vec())
        .await;
    assert_eq!(alice.next_line().await, format!("UUX {tr} 0"));
    assert!(bob.barrier().await.is_empty());

    chat(&cluster, &mut alice, &mut bob).await;

    // FQY (MSNP14+): an account is on the Messenger network; a stranger is not.
    if d >= 14 {
        let tr = alice
            .cmd_payload(
                "FQY",
                "",
                b"<ml><d n=\"example.com\"><c n=\"bob\"/></d></ml>".to_vec(),
            )
            .await;
        let answer = alice.expect("FQY").await;
        assert_eq!(answer.tr_id(), Some(tr));
        assert_eq!(
            answer.payload.as_deref(),
            Some(&b"<ml><d n=\"example.com\"><c n=\"bob\" t=\"1\"/></d></ml>"[..])
        );
        let tr = alice
            .cmd_payload(
                "FQY",
                "",
                b"<ml><d n=\"example.com\"><c n=\"nobody\"/></d></ml>".to_vec(),
            )
            .await;
        assert_eq!(alice.next_line().await, format!("208 {tr}"));
    }

    address_book_as_the_client_loads_it(&cluster, &alice).await;
    if d >= 18 {
        circles_are_refused_politely(&mut alice).await;
        circle_ticket_from_the_address_book(&cluster, &mut alice).await;
    }

    // Adding a stranger: 208, and the connection stays.
    let (tr, reply) = ml(
        &mut alice,
        "ADL",
        "<ml><d n=\"example.com\"><c n=\"nobody\" l=\"1\" t=\"1\"/></d></ml>",
    )
    .await;
    assert_eq!(reply, format!("208 {tr}"));

    // RML takes Bob off FL: his changes no longer reach Alice. Twice is fine.
    for _ in 0..2 {
        let (tr, reply) = ml(
            &mut alice,
            "RML",
            "<ml><d n=\"example.com\"><c n=\"bob\" l=\"1\" t=\"1\"/></d></ml>",
        )
        .await;
        assert_eq!(reply, format!("RML {tr} OK"));
    }
    assert_eq!(bob.next_line().await, "REM 0 RL N=alice@example.com");
    chg(&mut bob, "NLN").await;
    assert!(alice.barrier().await.is_empty());

    // Garbage closes the connection with the code real servers send.
    let tr = alice
        .cmd_payload("ADL", "", b"<ml><d n=\"example.com\"></d></ml>".to_vec())
        .await;
    assert_eq!(alice.closed_lines().await, [format!("240 {tr}")]);
    assert_eq!(bob.next_line().await, "FLN alice@example.com");
}

/// What the client loads after signing in — memberships, then the address book
/// (ABFindAll for WLM 8.x, ABFindContactsPaged for WLM 2009) — shows the lists the NS
/// edits made: Bob allowed, on Alice's forward list and reverse list.
async fn address_book_as_the_client_loads_it(cluster: &TestCluster, alice: &Client) {
    let ticket = alice.token("contacts.msn.com").ticket.clone();
    let http = cluster.http_addr();
    let (status, members) =
        soap::call(http, Service::Sharing, &ticket, soap::FIND_MEMBERSHIP).await;
    assert_eq!(status, 200, "{members}");
    for role in ["Allow", "Reverse"] {
        let at = members
            .find(&format!("<MemberRole>{role}</MemberRole>"))
            .unwrap_or_else(|| panic!("no {role} membership in {members}"));
        let end = at + members[at..].find("</Membership>").expect("membership end");
        assert!(
            members[at..end].contains("<PassportName>bob@example.com</PassportName>"),
            "bob not in {role}: {}",
            &members[at..end]
        );
    }
    let action = if alice.dialect >= 16 {
        soap::AB_FIND_CONTACTS_PAGED
    } else {
        soap::AB_FIND_ALL
    };
    let (status, book) = soap::call(http, Service::AddressBook, &ticket, action).await;
    assert_eq!(status, 200, "{book}");
    assert!(book.contains("<contactType>Me</contactType>"), "{book}");
    assert!(
        book.contains("<passportName>alice@example.com</passportName>"),
        "{book}"
    );
    assert!(
        book.contains("<passportName>bob@example.com</passportName>"),
        "{book}"
    );
}

/// MSNP18: the circle ticket the address book hands out signs the user in to circles
/// (there are none yet).
async fn circle_ticket_from_the_address_book(cluster: &TestCluster, alice: &mut Client) {
    use base64::Engine as _;
    let ticket = alice.token("contacts.msn.com").ticket.clone();
    let (_, book) = soap::call(
        cluster.http_addr(),
        Service::AddressBook,
        &ticket,
        soap::AB_FIND_CONTACTS_PAGED,
    )
    .await;
    let signed = soap::text_of(&book, "CircleTicket").expect("a circle ticket");
    let arg = base64::engine::general_purpose::STANDARD.encode(signed);
    let tr = alice.cmd("USR", &format!("SHA A {arg}")).await;
    assert_eq!(
        alice.next_line().await,
        format!("USR {tr} OK alice@example.com 1 0")
    );
}

/// MSNP18 without circles: a forged circle ticket gets 911 (the connection stays), a
/// circle in ADL gets 933, a circle document is acknowledged.
async fn circles_are_refused_politely(alice: &mut Client) {
    use base64::Engine as _;
    let cid = butterfly_core::ids::cid(butterfly_core::UserId(1));
    let data = msnp::circle::ticket_data(cid);
    let forged = msnp::circle::signed_ticket(&data, "bm90IG91ciBzaWduYXR1cmU=");
    let arg = base64::engine::general_purpose::STANDARD.encode(forged);
    let tr = alice.cmd("USR", &format!("SHA A {arg}")).await;
    assert_eq!(alice.next_line().await, format!("911 {tr}"));
    let (tr, reply) = ml(
        alice,
        "ADL",
        "<ml><d n=\"live.com\"><c n=\"00000000-0000-0000-0009-000000000001\" l=\"1\" t=\"9\"/></d></ml>",
    )
    .await;
    assert_eq!(reply, format!("933 {tr}"));
    let tr = alice
        .cmd_payload("PUT", "", b"Routing: 1.0\r\n\r\n".to_vec())
        .await;
    assert_eq!(alice.next_line().await, format!("PUT {tr} OK 0"));
}

/// Alice (WLM) opens a switchboard session, invites Bob (MSNP12), and they talk.
async fn chat(cluster: &TestCluster, alice: &mut Client, bob: &mut Client) {
    let d = alice.dialect;
    let tr = alice.cmd("XFR", "SB").await;
    let xfr = alice.expect("XFR").await;
    let sb = cluster.sb_addr().to_string();
    let suffix: &[&str] = if d == 13 {
        &["U", "messenger.msn.com"]
    } else {
        &["U", "messenger.msn.com", "1"]
    };
    assert_eq!(
        xfr.args[..4],
        [tr.to_string(), "SB".into(), sb.clone(), "CKI".into()]
    );
    assert_eq!(xfr.args[5..], *suffix);
    // MSNP16+ names the machine too.
    let me = if d >= 16 {
        format!("alice@example.com;{}", alice.machine_guid)
    } else {
        "alice@example.com".to_owned()
    };
    let mut a_sb = Client::connect(cluster.sb_addr(), d).await;
    a_sb.email = "alice@example.com (sb)".into();
    let tr = a_sb.cmd("USR", &format!("{me} {}", xfr.args[4])).await;
    assert_eq!(a_sb.next_line().await, format!("USR {tr} OK {me} Alice"));
    let tr = a_sb.cmd("CAL", "bob@example.com").await;
    let ringing = a_sb.next_line().await;
    assert!(
        ringing.starts_with(&format!("CAL {tr} RINGING ")),
        "{ringing}"
    );
    let session = ringing.rsplit(' ').next().unwrap_or_default().to_owned();
    let rng = bob.expect("RNG").await;
    assert_eq!(rng.args[0], session);
    assert_eq!(&rng.args[4..], ["alice@example.com", "Alice"]);
    let mut b_sb = Client::connect(cluster.sb_addr(), 12).await;
    b_sb.email = "bob@example.com (sb)".into();
    let tr = b_sb
        .cmd("ANS", &format!("bob@example.com {} {session}", rng.args[3]))
        .await;
    let alice_caps = caps(d).split(':').next().unwrap_or_default();
    assert_eq!(
        b_sb.next_line().await,
        format!("IRO {tr} 1 1 alice@example.com Alice {alice_caps}")
    );
    assert_eq!(b_sb.next_line().await, format!("ANS {tr} OK"));
    let bob_caps = if d >= 16 { "268435456:0" } else { "268435456" };
    assert_eq!(
        a_sb.next_line().await,
        format!("JOI bob@example.com Bob {bob_caps}")
    );
    let text = b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nX-MMS-IM-Format: FN=Segoe%20UI; EF=; CO=0; CS=1; PF=0\r\n\r\nhi bob";
    let tr = a_sb.cmd_payload("MSG", "A", text.to_vec()).await;
    let got = b_sb.expect("MSG").await;
    assert_eq!(
        line_of(&got),
        format!("MSG alice@example.com Alice {}", text.len())
    );
    assert_eq!(got.payload.as_deref(), Some(&text[..]));
    assert_eq!(a_sb.next_line().await, format!("ACK {tr}"));
    let tr = b_sb.cmd_payload("MSG", "A", text.to_vec()).await;
    assert_eq!(
        line_of(&a_sb.expect("MSG").await),
        format!("MSG bob@example.com Bob {}", text.len())
    );
    assert_eq!(b_sb.next_line().await, format!("ACK {tr}"));
    b_sb.send(butterfly_testkit::line("OUT")).await;
    assert_eq!(a_sb.next_line().await, "BYE bob@example.com");
}

#[tokio::test]
async fn msnp13() {
    scenario(13).await;
}

#[tokio::test]
async fn msnp15() {
    scenario(15).await;
}

#[tokio::test]
async fn msnp16() {
    scenario(16).await;
}

#[tokio::test]
async fn msnp18() {
    scenario(18).await;
}

/// VER, CVR and `USR SSO I` for `email`; returns the nonce.
async fn sso_challenge(c: &mut Client, email: &str) -> String {
    let d = c.dialect;
    c.email = email.to_owned();
    let tr = c.cmd("VER", &format!("MSNP{d} CVR0")).await;
    assert_eq!(c.next_line().await, format!("VER {tr} MSNP{d} CVR0"));
    let tr = c.cmd("USR", &format!("SSO I {email}")).await;
    // The policies come first, then the challenge.
    let gcf = c.expect("GCF").await;
    assert_eq!(gcf.args[0], "0");
    let policies = String::from_utf8_lossy(gcf.payload.as_deref().unwrap_or_default());
    assert!(policies.starts_with("<Policies>"), "{policies}");
    let usr = c.expect("USR").await;
    assert_eq!(
        usr.args[..4],
        [
            tr.to_string(),
            "SSO".into(),
            "S".into(),
            "MBI_KEY_OLD".into()
        ]
    );
    assert_eq!(usr.args[4].len(), 64, "48 bytes of nonce, base64");
    usr.args[4].clone()
}

/// The `USR SSO S` proof is checked: each forgery gets 911 and the connection closes.
#[tokio::test]
async fn sso_sign_in_refuses_what_does_not_prove_the_binary_secret() {
    let cluster = TestCluster::start().await;
    cluster
        .add_user("alice@example.com", "alice-pw", "Alice")
        .await;
    cluster.add_user("eve@example.com", "eve-pw", "Eve").await;
    let http = cluster.http_addr();
    let addresses = [
        ("messengerclear.live.com", "MBI_KEY_OLD"),
        ("contacts.msn.com", "MBI"),
    ];
    let alice = rst::tokens(
        http,
        Form::Rst2,
        "alice@example.com",
        "alice-pw",
        &addresses,
    )
    .await
    .expect("tokens for alice");
    let eve = rst::tokens(http, Form::Rst2, "eve@example.com", "eve-pw", &addresses)
        .await
        .expect("tokens for eve");
    let guid = "{F52973B6-C926-4BAD-9BA8-7C1E840E4AB0}";
    let (msgr, contacts) = (&alice[0], &alice[1]);
    let secret = msgr.secret.clone().expect("a binary secret");

    type Forge<'a> = Box<dyn Fn(&str) -> String + 'a>;
    let forgeries: Vec<(&str, Forge<'_>)> = vec![
        (
            "a blob made with another key",
            Box::new(|nonce| {
                let blob = msnp::auth::mbi_blob(&[7u8; 24], nonce, [1; 8]);
                format!("{} {blob} {guid}", msgr.ticket)
            }),
        ),
        (
            "a blob for another nonce",
            Box::new(|_| {
                let blob = msnp::auth::mbi_blob(&secret, &"A".repeat(64), [1; 8]);
                format!("{} {blob} {guid}", msgr.ticket)
            }),
        ),
        ("no blob", Box::new(|_| format!("{} {guid}", msgr.ticket))),
        (
            "no machine GUID",
            Box::new(|nonce| {
                let blob = msnp::auth::mbi_blob(&secret, nonce, [1; 8]);
                format!("{} {blob}", msgr.ticket)
            }),
        ),
        (
            "someone else's ticket and secret",
            Box::new(|nonce| {
                let blob = msnp::auth::mbi_blob(eve[0].secret.as_deref().unwrap(), nonce, [1; 8]);
                format!("{} {blob} {guid}", eve[0].ticket)
            }),
        ),
        (
            "a ticket for the address book",
            Box::new(|nonce| {
                let blob = msnp::auth::mbi_blob(&secret, nonce, [1; 8]);
                format!("{} {blob} {guid}", contacts.ticket)
            }),
        ),
    ];
    for (what, forge) in forgeries {
        let mut c = cluster.connect(16).await;
        let nonce = sso_challenge(&mut c, "alice@example.com").await;
        let tr = c.cmd("USR", &format!("SSO S {}", forge(&nonce))).await;
        assert_eq!(c.closed_lines().await, [format!("911 {tr}")], "{what}");
    }

    // The genuine proof signs in.
    let mut c = cluster.connect(16).await;
    let nonce = sso_challenge(&mut c, "alice@example.com").await;
    let blob = msnp::auth::mbi_blob(&secret, &nonce, rand::random());
    let tr = c
        .cmd("USR", &format!("SSO S {} {blob} {guid}", msgr.ticket))
        .await;
    assert_eq!(
        c.next_line().await,
        format!("USR {tr} OK alice@example.com 1 0")
    );
}

/// `UUN` reaches the other user as `UBN` (with the sender's machine for MSNP16+); an
/// offline user, or one who blocks the sender, gets nothing and the sender 217.
#[tokio::test]
async fn uun_is_relayed_as_ubn_unless_blocked_or_offline() {
    let cluster = TestCluster::start().await;
    for (email, name) in [("alice", "Alice"), ("carol", "Carol"), ("dave", "Dave")] {
        cluster
            .add_user(&format!("{email}@example.com"), "pw", name)
            .await;
    }
    let mut alice = cluster.login(18, "alice@example.com", "pw").await;
    let mut carol = cluster.login(16, "carol@example.com", "pw").await;
    let payload = b"<State><Service type=\"Membership\" reason=\"0\"/></State>".to_vec();

    let tr = alice
        .cmd_payload("UUN", "carol@example.com 1", payload.clone())
        .await;
    assert_eq!(alice.next_line().await, format!("UUN {tr} OK"));
    let ubn = carol.expect("UBN").await;
    assert_eq!(
        ubn.args[..2],
        [
            format!(
                "alice@example.com;{}",
                alice.machine_guid.to_ascii_lowercase()
            ),
            "1".to_owned()
        ]
    );
    assert_eq!(ubn.payload.as_deref(), Some(&payload[..]));

    // Dave is not signed in.
    let tr = alice
        .cmd_payload("UUN", "dave@example.com 1", payload.clone())
        .await;
    assert_eq!(alice.next_line().await, format!("217 {tr}"));

    // Carol blocks Alice: nothing more reaches her.
    let (tr, reply) = ml(
        &mut carol,
        "ADL",
        "<ml><d n=\"example.com\"><c n=\"alice\" l=\"4\" t=\"1\"/></d></ml>",
    )
    .await;
    assert_eq!(reply, format!("ADL {tr} OK"));
    let (tr, reply) = ml(
        &mut alice,
        "ADL",
        "<ml><d n=\"example.com\"><c n=\"carol\" l=\"1\" t=\"1\"/></d></ml>",
    )
    .await;
    assert_eq!(reply, format!("ADL {tr} OK"));
    let tr = alice
        .cmd_payload("UUN", "carol@example.com 1", payload)
        .await;
    assert_eq!(alice.next_line().await, format!("217 {tr}"));
    assert!(
        carol
            .barrier()
            .await
            .iter()
            .all(|f| f.verb.as_str() != "UBN")
    );
}

/// A WLM 2009 conversation: the caller first calls itself (it rings and joins at once),
/// and 16+ receivers are told each participant by machine (`email;{guid}`) and by
/// address, in JOI, IRO and BYE.
#[tokio::test]
async fn wlm2009_chats_name_each_machine() {
    let cluster = TestCluster::start().await;
    cluster.add_user("alice@example.com", "pw", "Alice").await;
    cluster.add_user("carol@example.com", "pw", "Carol").await;
    let mut alice = cluster.login(18, "alice@example.com", "pw").await;
    let mut carol = cluster.login(16, "carol@example.com", "pw").await;
    chg(&mut alice, "NLN").await;
    chg(&mut carol, "NLN").await;
    let (a_guid, c_guid) = (alice.machine_guid.clone(), carol.machine_guid.clone());
    let caps = "2789003324:48";

    let tr = alice.cmd("XFR", "SB").await;
    let xfr = alice.expect("XFR").await;
    assert_eq!(xfr.tr_id(), Some(tr));
    let mut a_sb = Client::connect(cluster.sb_addr(), 18).await;
    a_sb.email = "alice@example.com (sb)".into();
    let tr = a_sb
        .cmd(
            "USR",
            &format!("alice@example.com;{a_guid} {}", xfr.args[4]),
        )
        .await;
    assert_eq!(
        a_sb.next_line().await,
        format!("USR {tr} OK alice@example.com;{a_guid} Alice")
    );
    let tr = a_sb.cmd("CAL", "alice@example.com").await;
    let ringing = a_sb.next_line().await;
    assert!(
        ringing.starts_with(&format!("CAL {tr} RINGING ")),
        "{ringing}"
    );
    assert_eq!(
        a_sb.next_line().await,
        format!("JOI alice@example.com Alice {caps}")
    );

    let tr = a_sb.cmd("CAL", "carol@example.com").await;
    let session = a_sb.next_line().await;
    assert!(
        session.starts_with(&format!("CAL {tr} RINGING ")),
        "{session}"
    );
    let rng = carol.expect("RNG").await;
    let mut c_sb = Client::connect(cluster.sb_addr(), 16).await;
    c_sb.email = "carol@example.com (sb)".into();
    let tr = c_sb
        .cmd(
            "ANS",
            &format!("carol@example.com;{c_guid} {} {}", rng.args[3], rng.args[0]),
        )
        .await;
    assert_eq!(
        c_sb.next_line().await,
        format!("IRO {tr} 1 2 alice@example.com;{a_guid} Alice {caps}")
    );
    assert_eq!(
        c_sb.next_line().await,
        format!("IRO {tr} 2 2 alice@example.com Alice {caps}")
    );
    assert_eq!(c_sb.next_line().await, format!("ANS {tr} OK"));
    assert_eq!(
        a_sb.next_line().await,
        format!("JOI carol@example.com;{c_guid} Carol {caps}")
    );
    assert_eq!(
        a_sb.next_line().await,
        format!("JOI carol@example.com Carol {caps}")
    );
    c_sb.send(butterfly_testkit::line("OUT")).await;
    assert_eq!(
        a_sb.next_line().await,
        format!("BYE carol@example.com;{c_guid}")
    );
    assert_eq!(a_sb.next_line().await, "BYE carol@example.com");
}

/// Contact management through the address book, as WLM 2009 does it: ABContactAdd puts
/// users on the list and they are told in their own dialect's form (MSNP12 `ADC 0 RL`,
/// MSNP18 `ADL 0` with the reverse-list bit), and the adder's session starts showing their
/// presence; AddMember Block hides the blocker from the
/// blocked user (FLN); a group made, filled, renamed and deleted shows so in
/// ABFindContactsPaged each time.
#[tokio::test]
async fn soap_edits_reach_the_users_they_concern() {
    let cluster = TestCluster::start().await;
    for (email, name) in [("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")] {
        cluster
            .add_user(&format!("{email}@example.com"), "pw", name)
            .await;
    }
    let mut alice = cluster.login(18, "alice@example.com", "pw").await;
    let mut bob = cluster.login(12, "bob@example.com", "pw").await;
    let mut carol = cluster.login(18, "carol@example.com", "pw").await;
    chg(&mut alice, "NLN").await;
    chg(&mut bob, "NLN").await;
    let ticket = alice.token("contacts.msn.com").ticket.clone();
    let http = cluster.http_addr();
    let mut contact_ids = Vec::new();
    for who in ["bob", "carol"] {
        let add = format!(
            "<ABContactAdd xmlns=\"http://www.msn.com/webservices/AddressBook\"><abId>00000000-0000-0000-0000-000000000000</abId><contacts><Contact><contactInfo><contactType>LivePending</contactType><passportName>{who}@example.com</passportName><isMessengerUser>true</isMessengerUser></contactInfo></Contact></contacts><options><EnableAllowListManagement>true</EnableAllowListManagement></options></ABContactAdd>"
        );
        let (status, body) = soap::call(http, Service::AddressBook, &ticket, &add).await;
        assert_eq!(status, 200, "{body}");
        contact_ids.push(soap::text_of(&body, "guid").expect(&body));
    }
    let carol_id = contact_ids[1].clone();
    // Alice's own session now watches them: Bob is online (Carol has not said her status).
    assert_eq!(alice.next_line().await, bob_nln(18, "NLN"));
    assert_eq!(
        bob.next_line().await,
        "ADC 0 RL N=alice@example.com F=Alice"
    );
    let push = carol.expect("ADL").await;
    expect_abch(&mut carol, 3).await;
    assert_eq!(
        push.payload.as_deref(),
        Some(
            &b"<ml><d n=\"example.com\"><c n=\"alice\" t=\"1\" l=\"8\" f=\"Alice\"/></d></ml>"[..]
        )
    );
    // WLM mirrors the edit with an ADL: already done, still OK.
    let (tr, reply) = ml(
        &mut alice,
        "ADL",
        "<ml><d n=\"example.com\"><c n=\"bob\" l=\"3\" t=\"1\"/></d></ml>",
    )
    .await;
    assert_eq!(reply, format!("ADL {tr} OK"));

    // Bob adds Alice back (MSNP12) and sees her; then Alice blocks him over SOAP.
    let tr = bob.cmd("ADC", "FL N=alice@example.com F=Alice").await;
    assert!(
        bob.next_line()
            .await
            .starts_with(&format!("ADC {tr} FL N=alice@example.com"))
    );
    assert_eq!(
        bob.next_line().await,
        format!(
            "NLN NLN alice@example.com Alice {} 0",
            caps(18).split(':').next().unwrap()
        )
    );
    let block = "<AddMember xmlns=\"http://www.msn.com/webservices/AddressBook\"><serviceHandle><Id>0</Id><Type>Messenger</Type><ForeignId></ForeignId></serviceHandle><memberships><Membership><MemberRole>Block</MemberRole><Members><Member xsi:type=\"PassportMember\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><Type>Passport</Type><State>Accepted</State><PassportName>bob@example.com</PassportName></Member></Members></Membership></memberships></AddMember>";
    let (status, body) = soap::call(http, Service::Sharing, &ticket, block).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(bob.next_line().await, "FLN alice@example.com");

    // A group: made, Carol put in it, renamed, deleted — each step in the address book
    // the client loads.
    let ab = async |action: String| {
        let (status, body) = soap::call(http, Service::AddressBook, &ticket, &action).await;
        assert_eq!(status, 200, "{body}");
        body
    };
    let book = async || ab(soap::AB_FIND_CONTACTS_PAGED.to_owned()).await;
    let ns = "xmlns=\"http://www.msn.com/webservices/AddressBook\"";
    let made = ab(format!("<ABGroupAdd {ns}><groupAddOptions><fRenameOnMsgrConflict>false</fRenameOnMsgrConflict></groupAddOptions><groupInfo><GroupInfo><name>Buddies</name><groupType>C8529CE2-6EAD-434d-881F-341E17DB3FF8</groupType><fMessenger>false</fMessenger><annotations><Annotation><Name>MSN.IM.Display</Name><Value>1</Value></Annotation></annotations></GroupInfo></groupInfo></ABGroupAdd>")).await;
    let group = soap::text_of(&made, "guid").expect(&made);
    let filter = format!("<groupFilter><groupIds><guid>{group}</guid></groupIds></groupFilter>");
    let added = ab(format!("<ABGroupContactAdd {ns}>{filter}<contacts><Contact><contactId>{carol_id}</contactId></Contact></contacts></ABGroupContactAdd>")).await;
    assert_eq!(soap::text_of(&added, "guid"), Some(carol_id.clone()));
    let b = book().await;
    let g = element_with(&b, "Group", &format!("<groupId>{group}</groupId>")).expect(&b);
    assert!(g.contains("<name>Buddies</name>"), "{g}");
    let c = element_with(&b, "Contact", &format!("<contactId>{carol_id}</contactId>")).expect(&b);
    assert!(
        c.contains(&format!("<groupIds><guid>{group}</guid></groupIds>")),
        "{c}"
    );
    ab(format!("<ABGroupUpdate {ns}><groups><Group><groupId>{group}</groupId><groupInfo><name>Old friends</name></groupInfo><propertiesChanged>GroupName</propertiesChanged></Group></groups></ABGroupUpdate>")).await;
    let b = book().await;
    let g = element_with(&b, "Group", &format!("<groupId>{group}</groupId>")).expect(&b);
    assert!(g.contains("<name>Old friends</name>"), "{g}");
    assert!(!b.contains("Buddies"), "{b}");
    ab(format!("<ABGroupDelete {ns}>{filter}</ABGroupDelete>")).await;
    let b = book().await;
    assert!(!b.contains(&group), "{b}");
    // Carol stays on the list, in no group.
    let c = element_with(&b, "Contact", &format!("<contactId>{carol_id}</contactId>")).expect(&b);
    assert!(!c.contains("<groupIds>"), "{c}");
}

/// The first `<tag>…</tag>` element of `xml` that contains `inner`.
fn element_with<'a>(xml: &'a str, tag: &str, inner: &str) -> Option<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let end = start + rest[start..].find(&close)? + close.len();
        if rest[start..end].contains(inner) {
            return Some(&rest[start..end]);
        }
        rest = &rest[end..];
    }
    None
}
