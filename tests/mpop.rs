//! Multiple points of presence (MSNP16+) at the wire: one account signed in on two
//! machines at once. Each is shown both in the `UBX` about its own account
//! (`<EndpointData>` and `<PrivateEndpointData>`), a status set on one is shown to the
//! other (`NLN` about itself) and to contacts, a contact's invitation rings both and both
//! may join the chat (each gets every message, the contact sees the account once), one
//! machine signs the other out with `UUN … 4 goawyplzthxbye`, and a sign-in that is not
//! MPOP — an older dialect, or the same machine again — still replaces with `OUT OTH`.
//!
//! Expected lines per NS.md §5 and SB.md; the documents per `msnp::mpop`.

use butterfly_testkit::soap::{self, Service};
use butterfly_testkit::{Client, TestCluster, line_of};

const CAPS: &str = "2789003324:48";
const TEXT: &[u8] = b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nhello";

/// A machine GUID as the server writes it back: lower case, without braces.
fn guid(c: &Client) -> String {
    msnp::mpop::normalize_guid(&c.machine_guid)
}

/// One machine as its account's own machines are shown it.
struct Shown<'a> {
    guid: String,
    name: &'a str,
    state: &'a str,
}

/// The `UBX` document about my own account: no personal message, every machine.
fn own_document(machines: &[Shown<'_>]) -> String {
    let mut doc = String::from("<Data><PSM></PSM><CurrentMedia></CurrentMedia>");
    for m in machines {
        doc += &format!(
            "<EndpointData id=\"{{{}}}\"><Capabilities>{CAPS}</Capabilities></EndpointData>",
            m.guid
        );
    }
    for m in machines {
        doc += &format!(
            "<PrivateEndpointData id=\"{{{}}}\"><EpName>{}</EpName><Idle>false</Idle>\
             <ClientType>1</ClientType><State>{}</State></PrivateEndpointData>",
            m.guid, m.name, m.state
        );
    }
    doc + "</Data>"
}

async fn expect_own_ubx(c: &mut Client, machines: &[Shown<'_>]) {
    let ubx = c.expect("UBX").await;
    assert_eq!(ubx.args, ["1:alice@example.com"], "{}", c.email);
    assert_eq!(
        String::from_utf8_lossy(ubx.payload.as_deref().unwrap_or_default()),
        own_document(machines),
        "{}",
        c.email
    );
}

/// CHG and its echo; then the lines up to a barrier, answering a challenge on the way.
async fn chg(c: &mut Client, status: &str, caps: &str) -> Vec<String> {
    let tr = c.cmd("CHG", &format!("{status} {caps} 0")).await;
    assert_eq!(c.next_line().await, format!("CHG {tr} {status} {caps} 0"));
    answer_challenges(c).await
}

async fn answer_challenges(c: &mut Client) -> Vec<String> {
    c.barrier_answering().await.iter().map(line_of).collect()
}

async fn ml(c: &mut Client, verb: &str, doc: &str) {
    let tr = c.cmd_payload(verb, "", doc.as_bytes().to_vec()).await;
    assert_eq!(
        c.next_line().await,
        format!("{verb} {tr} OK"),
        "{}",
        c.email
    );
}

const BOB_ON_FL_AL: &str =
    "<ml l=\"1\"><d n=\"example.com\"><c n=\"bob\" l=\"3\" t=\"1\"/></d></ml>";

#[tokio::test]
async fn two_machines_of_one_account_are_signed_in_together() {
    let cluster = TestCluster::start().await;
    cluster.add_user("alice@example.com", "pw", "Alice").await;
    cluster.add_user("bob@example.com", "pw", "Bob").await;
    cluster.add_user("carol@example.com", "pw", "Carol").await;

    // Alice (WLM 2009, "home") and Bob (MSN 7.5) on each other's lists.
    let mut home = cluster.login(18, "alice@example.com", "pw").await;
    home.email = "alice@example.com (home)".into();
    ml(&mut home, "ADL", "<ml l=\"1\" />").await;
    chg(&mut home, "NLN", CAPS).await;
    let mut bob = cluster.login(12, "bob@example.com", "pw").await;
    chg(&mut bob, "NLN", "268435456").await;
    let tr = bob.cmd("ADC", "FL N=alice@example.com F=Alice").await;
    assert!(bob.next_line().await.starts_with(&format!("ADC {tr} FL")));
    home.expect("ADL").await; // Bob added her (reverse list)
    home.expect("NOT").await;
    ml(
        &mut home,
        "ADL",
        "<ml><d n=\"example.com\"><c n=\"bob\" l=\"3\" t=\"1\"/></d></ml>",
    )
    .await;
    answer_challenges(&mut home).await;
    answer_challenges(&mut bob).await;

    // A second machine signs in: the first stays (no OUT OTH), and is not told yet (the
    // new machine has no presence until its CHG).
    let mut laptop = cluster.login(18, "alice@example.com", "pw").await;
    laptop.email = "alice@example.com (laptop)".into();
    assert_ne!(guid(&home), guid(&laptop));
    assert!(home.barrier().await.is_empty());
    let name = "<PrivateEndpointData><EpName>Laptop</EpName><Idle>false</Idle>\
                <ClientType>1</ClientType><State>NLN</State></PrivateEndpointData>";
    let tr = laptop
        .cmd_payload("UUX", "", name.as_bytes().to_vec())
        .await;
    assert_eq!(laptop.next_line().await, format!("UUX {tr} 0"));
    ml(&mut laptop, "ADL", BOB_ON_FL_AL).await;

    // The laptop goes Busy: it is shown both machines; home is shown its account Busy and
    // both machines; Bob sees Alice Busy.
    let tr = laptop.cmd("CHG", &format!("BSY {CAPS} 0")).await;
    assert_eq!(laptop.next_line().await, format!("CHG {tr} BSY {CAPS} 0"));
    let both = [
        Shown {
            guid: guid(&home),
            name: "",
            state: "NLN",
        },
        Shown {
            guid: guid(&laptop),
            name: "Laptop",
            state: "BSY",
        },
    ];
    expect_own_ubx(&mut laptop, &both).await;
    let rest = answer_challenges(&mut laptop).await;
    assert!(
        rest.iter()
            .any(|l| l.ends_with("NLN 1:bob@example.com Bob 268435456:0 0")),
        "the laptop is shown Bob: {rest:?}"
    );
    assert_eq!(
        home.next_line().await,
        format!("NLN BSY 1:alice@example.com Alice {CAPS} 0")
    );
    expect_own_ubx(&mut home, &both).await;
    assert_eq!(
        bob.next_line().await,
        "NLN BSY alice@example.com Alice 2789003324 0"
    );

    // A contact added over SOAP on the laptop: both machines are told to fetch the
    // address book again (the one that made the edit cannot be told apart).
    let add = "<ABContactAdd xmlns=\"http://www.msn.com/webservices/AddressBook\"><abId>00000000-0000-0000-0000-000000000000</abId><contacts><Contact><contactInfo><contactType>LivePending</contactType><passportName>carol@example.com</passportName><isMessengerUser>true</isMessengerUser></contactInfo></Contact></contacts><options><EnableAllowListManagement>true</EnableAllowListManagement></options></ABContactAdd>";
    let ticket = laptop.token("contacts.msn.com").ticket.clone();
    let (status, body) = soap::call(cluster.http_addr(), Service::AddressBook, &ticket, add).await;
    assert_eq!(status, 200, "{body}");
    for c in [&mut home, &mut laptop] {
        let not = c.expect("NOT").await;
        let body = String::from_utf8_lossy(not.payload.as_deref().unwrap_or_default());
        assert!(body.contains("ABCHInternal"), "{body}");
        assert!(c.barrier().await.is_empty(), "{}", c.email);
    }

    // Bob invites Alice: both machines ring, both join; Bob sees Alice once.
    let tr = bob.cmd("XFR", "SB").await;
    let xfr = bob.expect("XFR").await;
    assert_eq!(xfr.tr_id(), Some(tr));
    let mut b_sb = Client::connect(cluster.sb_addr(), 12).await;
    b_sb.email = "bob@example.com (sb)".into();
    let tr = b_sb
        .cmd("USR", &format!("bob@example.com {}", xfr.args[4]))
        .await;
    assert_eq!(
        b_sb.next_line().await,
        format!("USR {tr} OK bob@example.com Bob")
    );
    let tr = b_sb.cmd("CAL", "alice@example.com").await;
    let ringing = b_sb.next_line().await;
    assert!(
        ringing.starts_with(&format!("CAL {tr} RINGING ")),
        "{ringing}"
    );
    let rng_home = home.expect("RNG").await;
    let rng_laptop = laptop.expect("RNG").await;
    let session = rng_home.args[0].clone();
    assert_eq!(rng_laptop.args[0], session);

    let mut h_sb = Client::connect(cluster.sb_addr(), 18).await;
    h_sb.email = "alice@example.com (home sb)".into();
    let me_home = format!("alice@example.com;{}", home.machine_guid);
    let tr = h_sb
        .cmd("ANS", &format!("{me_home} {} {session}", rng_home.args[3]))
        .await;
    assert_eq!(
        h_sb.next_line().await,
        format!("IRO {tr} 1 1 bob@example.com Bob 268435456:0")
    );
    assert_eq!(h_sb.next_line().await, format!("ANS {tr} OK"));
    assert_eq!(
        b_sb.next_line().await,
        "JOI alice@example.com Alice 2789003324"
    );

    let mut l_sb = Client::connect(cluster.sb_addr(), 18).await;
    l_sb.email = "alice@example.com (laptop sb)".into();
    let me_laptop = format!("alice@example.com;{}", laptop.machine_guid);
    let tr = l_sb
        .cmd(
            "ANS",
            &format!("{me_laptop} {} {session}", rng_laptop.args[3]),
        )
        .await;
    // The home machine joined with its own capabilities (the laptop published last).
    for (i, who) in [
        "bob@example.com Bob 268435456:0".to_owned(),
        format!("{me_home} Alice {CAPS}"),
        format!("alice@example.com Alice {CAPS}"),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(
            l_sb.next_line().await,
            format!("IRO {tr} {} 3 {who}", i + 1)
        );
    }
    assert_eq!(l_sb.next_line().await, format!("ANS {tr} OK"));
    assert_eq!(
        h_sb.next_line().await,
        format!("JOI {me_laptop} Alice {CAPS}")
    );
    // The same machine cannot answer twice.
    let mut again = Client::connect(cluster.sb_addr(), 18).await;
    let tr = again
        .cmd(
            "ANS",
            &format!("{me_laptop} {} {session}", rng_laptop.args[3]),
        )
        .await;
    assert_eq!(again.next_line().await, format!("911 {tr}"));

    // Bob's message reaches both machines; the laptop's reaches Bob and the home machine.
    let tr = b_sb.cmd_payload("MSG", "A", TEXT.to_vec()).await;
    for sb in [&mut h_sb, &mut l_sb] {
        let got = sb.expect("MSG").await;
        assert_eq!(
            line_of(&got),
            format!("MSG bob@example.com Bob {}", TEXT.len())
        );
        assert_eq!(got.payload.as_deref(), Some(TEXT));
    }
    assert_eq!(b_sb.next_line().await, format!("ACK {tr}"));
    let tr = l_sb.cmd_payload("MSG", "A", TEXT.to_vec()).await;
    for sb in [&mut b_sb, &mut h_sb] {
        let got = sb.expect("MSG").await;
        assert_eq!(
            line_of(&got),
            format!("MSG alice@example.com Alice {}", TEXT.len())
        );
    }
    assert_eq!(l_sb.next_line().await, format!("ACK {tr}"));

    // The laptop leaves the chat: the home machine sees that machine go, Bob nothing
    // (Alice is still there).
    l_sb.send(butterfly_testkit::line("OUT")).await;
    assert_eq!(h_sb.next_line().await, format!("BYE {me_laptop}"));
    // (A switchboard has no PNG: the next message is the barrier.)
    let tr = h_sb.cmd_payload("MSG", "A", TEXT.to_vec()).await;
    assert_eq!(
        b_sb.next_line().await,
        format!("MSG alice@example.com Alice {}", TEXT.len())
    );
    assert_eq!(h_sb.next_line().await, format!("ACK {tr}"));

    // Home signs the laptop out: the laptop is told by whom and closed; home is shown its
    // own Online again (the laptop's Busy went with it) and only itself; Bob sees Online.
    let tr = home
        .cmd_payload(
            "UUN",
            &format!("alice@example.com;{} 4", laptop.machine_guid),
            b"goawyplzthxbye".to_vec(),
        )
        .await;
    assert_eq!(home.next_line().await, format!("UUN {tr} OK"));
    let closed = laptop.expect_closed().await;
    let ubn = closed
        .iter()
        .find(|f| f.verb.as_str() == "UBN")
        .expect("the laptop is told");
    assert_eq!(
        line_of(ubn),
        format!("UBN alice@example.com;{{{}}} 4 14", guid(&home))
    );
    assert_eq!(ubn.payload.as_deref(), Some(&b"goawyplzthxbye"[..]));
    assert_eq!(
        closed.last().map(line_of).as_deref(),
        Some("OUT OTH"),
        "and closed"
    );
    assert_eq!(
        home.next_line().await,
        format!("NLN NLN 1:alice@example.com Alice {CAPS} 0")
    );
    let alone = [Shown {
        guid: guid(&home),
        name: "",
        state: "NLN",
    }];
    expect_own_ubx(&mut home, &alone).await;
    assert_eq!(
        bob.next_line().await,
        "NLN NLN alice@example.com Alice 2789003324 0"
    );

    // An older client signing in to the account replaces every machine.
    let _wlm85 = cluster.login(15, "alice@example.com", "pw").await;
    assert_eq!(home.closed_lines().await, ["OUT OTH"]);
}

/// The same machine signing in again replaces its old sign-in, and a WLM 2009 sign-in
/// replaces an older client's (neither can share the account).
#[tokio::test]
async fn the_same_machine_or_an_older_client_replaces() {
    let cluster = TestCluster::start().await;
    cluster.add_user("alice@example.com", "pw", "Alice").await;

    let mut first = cluster.login(18, "alice@example.com", "pw").await;
    let mut again = cluster.connect(18).await;
    again.machine_guid = first.machine_guid.to_ascii_lowercase();
    again
        .login(cluster.http_addr(), "alice@example.com", "pw")
        .await;
    assert_eq!(first.closed_lines().await, ["OUT OTH"]);

    let mut wlm85 = cluster.login(15, "alice@example.com", "pw").await;
    assert_eq!(again.closed_lines().await, ["OUT OTH"]);
    let _wlm2009 = cluster.login(18, "alice@example.com", "pw").await;
    assert_eq!(wlm85.closed_lines().await, ["OUT OTH"]);
}
