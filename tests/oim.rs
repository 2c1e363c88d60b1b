//! Offline messages at the wire (spec issue 4 §5, §4.6): WLM 8.5 (MSNP15) stores a message
//! for an offline WLM 2009 (MSNP18) contact with `Store2` — after the lock-key challenge —
//! through the token service's `messengersecure.live.com` ticket; the recipient signs in,
//! finds it in the mail data, fetches it and deletes it over RSI with its web ticket, and
//! is told of the deletion. A signed-in recipient is told at once; WLM 2009's `UUM`
//! offline message is stored and delivered the same way; and the refusals.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use butterfly_core::account::Email;
use butterfly_core::lists::{ContactRef, List, ListOp};
use butterfly_core::oim::MAX_OIM_TEXT;
use butterfly_testkit::rst::{self, Form};
use butterfly_testkit::{Client, TestCluster, http, line_of};
use msnp::frame::Frame;

const APPID: &str = "PROD0119GSJUC$18";
const STORE2: &str = "\"http://messenger.live.com/ws/2006/09/oim/Store2\"";
const RSI_NS: &str = "http://www.hotmail.msn.com/ws/2004/09/oim/rsi";

/// The capabilities a client of that dialect sends in CHG.
fn caps(d: u8) -> &'static str {
    if d >= 16 {
        "2789003324:48"
    } else {
        "1985855524"
    }
}

/// The first CHG and the frames that follow it (challenge answered).
async fn first_chg(c: &mut Client) -> Vec<Frame> {
    let d = c.dialect;
    let tr = c.cmd("CHG", &format!("NLN {} 0", caps(d))).await;
    assert_eq!(c.next_line().await, format!("CHG {tr} NLN {} 0", caps(d)));
    c.barrier_answering().await
}

fn text(f: &Frame) -> String {
    String::from_utf8_lossy(f.payload.as_deref().unwrap_or_default()).into_owned()
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let end = start + s[start..].find(close)?;
    Some(&s[start..end])
}

/// The one `MSG Hotmail Hotmail` of `frames`, with that content type.
fn hotmail(frames: &[Frame], content_type: &str) -> String {
    let found: Vec<String> = frames
        .iter()
        .filter(|f| line_of(f).starts_with("MSG Hotmail Hotmail "))
        .map(text)
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains(&format!("Content-Type: {content_type}; charset=UTF-8")),
        "{}",
        found[0]
    );
    found[0].clone()
}

/// Someone's `messengersecure.live.com` ticket (what WLM 8.5 puts in `Ticket@passport`).
async fn oim_ticket(cluster: &TestCluster, email: &str, password: &str) -> String {
    let tokens = rst::tokens(
        cluster.http_addr(),
        Form::Rst,
        email,
        password,
        &[("messengersecure.live.com", "MBI_SSL")],
    )
    .await
    .expect("tokens");
    tokens
        .iter()
        .find(|t| t.address == "messengersecure.live.com")
        .expect("a messengersecure ticket")
        .ticket
        .clone()
}

fn store2_body(from: &str, ticket: &str, lockkey: &str, to: &str, message: &str) -> String {
    let b64 = STANDARD.encode(message);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Header>\
<From memberName=\"{from}\" friendlyName=\"=?utf-8?B?QWxpY2U=?=\" xml:lang=\"en-US\" proxy=\"MSNMSGR\" xmlns=\"http://messenger.msn.com/ws/2004/09/oim/\" msnpVer=\"MSNP15\" buildVer=\"8.5.1288\"/>\
<To memberName=\"{to}\" xmlns=\"http://messenger.msn.com/ws/2004/09/oim/\"/>\
<Ticket passport=\"{}\" appid=\"{APPID}\" lockkey=\"{lockkey}\" xmlns=\"http://messenger.msn.com/ws/2004/09/oim/\"/>\
<Sequence xmlns=\"http://schemas.xmlsoap.org/ws/2003/03/rm\"><Identifier xmlns=\"http://schemas.xmlsoap.org/ws/2002/07/utility\">http://messenger.msn.com</Identifier><MessageNumber>1</MessageNumber></Sequence>\
</soap:Header><soap:Body><MessageType xmlns=\"http://messenger.msn.com/ws/2004/09/oim/\">text</MessageType><Content xmlns=\"http://messenger.msn.com/ws/2004/09/oim/\">MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\nX-OIM-Message-Type: OfflineMessage\r\nX-OIM-Run-Id: {{3A3F9D0C-6B9B-4E4A-A0E5-6C7B3D1E2F40}}\r\nX-OIM-Sequence-Num: 1\r\n\r\n{}</Content></soap:Body></soap:Envelope>",
        ticket.replace('&', "&amp;"),
        lines.join("\r\n")
    )
}

/// WLM 8.5 sending: the client's own session state (ticket and lock key).
struct Sender {
    email: String,
    ticket: String,
    lockkey: String,
}

impl Sender {
    async fn post(&self, cluster: &TestCluster, to: &str, message: &str) -> (u16, String) {
        let body = store2_body(&self.email, &self.ticket, &self.lockkey, to, message);
        let r = http::post(
            cluster.http_addr(),
            // As the client writes it; paths are case-insensitive.
            "/OimWS/oim.asmx",
            &[
                ("Content-Type", "text/xml; charset=utf-8"),
                ("SOAPAction", STORE2),
            ],
            body.as_bytes(),
        )
        .await;
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    }

    /// Send as WLM does: on a lock-key challenge, compute the key and try once more.
    async fn send(&mut self, cluster: &TestCluster, to: &str, message: &str) -> (u16, String) {
        let (status, body) = self.post(cluster, to, message).await;
        match challenge(status, &body) {
            Some(c) => {
                self.lockkey = lockkey(&c);
                self.post(cluster, to, message).await
            }
            None => (status, body),
        }
    }
}

/// The `LockKeyChallenge` of an `AuthenticationFailed` fault, written as clients parse it.
fn challenge(status: u16, body: &str) -> Option<String> {
    let c = between(
        body,
        "<LockKeyChallenge xmlns=\"http://messenger.msn.com/ws/2004/09/oim/\">",
        "</LockKeyChallenge>",
    )?;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("<faultcode xmlns:q0=\"http://messenger.msn.com/ws/2004/09/oim/\">q0:AuthenticationFailed</faultcode>"),
        "{body}"
    );
    Some(c.to_owned())
}

fn lockkey(challenge: &str) -> String {
    let p = msnp::auth::product(APPID).unwrap();
    msnp::auth::challenge_response_v11(challenge, p.id, p.key)
}

fn fault(status: u16, body: &str) -> String {
    assert_eq!(status, 500, "{body}");
    between(body, ">q0:", "</faultcode>")
        .unwrap_or(body)
        .to_owned()
}

/// An RSI call with the client's web ticket (`t` and `p` split as MSNPSharp does).
async fn rsi(cluster: &TestCluster, c: &Client, action_xml: &str) -> (u16, String) {
    let ticket = &c.token("messenger.msn.com").ticket;
    let t = between(&format!("{ticket}$"), "t=", "&p=")
        .unwrap()
        .to_owned();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Header><PassportCookie xmlns=\"{RSI_NS}\"><t>{}</t><p></p></PassportCookie></soap:Header><soap:Body>{action_xml}</soap:Body></soap:Envelope>",
        t.replace('&', "&amp;")
    );
    let r = http::post(
        cluster.http_addr(),
        "/rsi/rsi.asmx",
        &[("Content-Type", "text/xml; charset=utf-8")],
        body.as_bytes(),
    )
    .await;
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

fn get_message(id: &str) -> String {
    format!(
        "<GetMessage xmlns=\"{RSI_NS}\"><messageId>{id}</messageId><alsoMarkAsRead>false</alsoMarkAsRead></GetMessage>"
    )
}

fn delete_messages(id: &str) -> String {
    format!(
        "<DeleteMessages xmlns=\"{RSI_NS}\"><messageIds><messageId>{id}</messageId></messageIds></DeleteMessages>"
    )
}

/// The message body of a `GetMessage` answer, decoded.
fn fetched_text(body: &str) -> String {
    let result = between(body, "<GetMessageResult>", "</GetMessageResult>").expect(body);
    let result = result
        .replace("&#13;", "\r")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let (_, b64) = result
        .split_once("\r\n\r\n")
        .expect("headers, then the text");
    let packed: String = b64.split_whitespace().collect();
    String::from_utf8(STANDARD.decode(packed).unwrap()).unwrap()
}

async fn cluster() -> TestCluster {
    let cluster = TestCluster::start().await;
    cluster
        .add_user("alice@example.com", "alice-pw", "Alice")
        .await;
    cluster.add_user("bob@example.com", "bob-pw", "Bob").await;
    cluster
}

async fn alice(cluster: &TestCluster) -> Sender {
    Sender {
        email: "alice@example.com".into(),
        ticket: oim_ticket(cluster, "alice@example.com", "alice-pw").await,
        lockkey: String::new(),
    }
}

#[tokio::test]
async fn wlm85_leaves_a_message_for_offline_wlm2009_who_reads_and_deletes_it() {
    let cluster = cluster().await;
    let mut alice_ns = cluster.login(15, "alice@example.com", "alice-pw").await;
    first_chg(&mut alice_ns).await;
    let mut alice = alice(&cluster).await;

    // No lock key yet: the challenge, and nothing stored.
    let (status, body) = alice.post(&cluster, "bob@example.com", "hello bob").await;
    let c = challenge(status, &body).expect("a lock-key challenge");
    assert!(!body.contains("TweenerChallenge"), "{body}");
    alice.lockkey = lockkey(&c);
    let (status, body) = alice.post(&cluster, "bob@example.com", "hello bob").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("<AcknowledgmentRange Upper=\"1\" Lower=\"1\">"),
        "{body}"
    );

    // Bob signs in (WLM 2009): the mail data lists it.
    let mut bob = cluster.login(18, "bob@example.com", "bob-pw").await;
    let after = first_chg(&mut bob).await;
    let mail = hotmail(&after, "text/x-msmsgsinitialmdatanotification");
    let entry = between(&mail, "<M>", "</M>").expect(&mail);
    assert!(entry.contains("<T>11</T><S>6</S>"), "{entry}");
    assert!(
        entry.contains("<RS>0</RS><SZ>9</SZ><E>alice@example.com</E>"),
        "{entry}"
    );
    assert!(entry.contains("<N>=?utf-8?B?QWxpY2U=?=</N>"), "{entry}");
    let id = between(entry, "<I>", "</I>").unwrap().to_owned();

    let (status, body) = rsi(&cluster, &bob, &get_message(&id)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fetched_text(&body), "hello bob");

    let (status, body) = rsi(&cluster, &bob, &delete_messages(&id)).await;
    assert_eq!(status, 200, "{body}");
    let told = bob.expect("MSG").await;
    assert_eq!(
        line_of(&told),
        format!("MSG Hotmail Hotmail {}", text(&told).len())
    );
    let told = text(&told);
    assert!(
        told.contains("Content-Type: text/x-msmsgsactivemailnotification"),
        "{told}"
    );
    assert!(
        told.ends_with("Src-Folder: .!!OIM\r\nDest-Folder: .!!trAsH\r\nMessage-Delta: 1\r\n\r\n"),
        "{told}"
    );

    // Gone: the next sign-in lists nothing.
    bob.close().await;
    let mut bob = cluster.login(18, "bob@example.com", "bob-pw").await;
    let after = first_chg(&mut bob).await;
    let mail = hotmail(&after, "text/x-msmsgsinitialmdatanotification");
    assert!(!mail.contains("<M>"), "{mail}");
}

#[tokio::test]
async fn a_signed_in_recipient_is_told_at_once() {
    let cluster = cluster().await;
    let mut bob = cluster.login(18, "bob@example.com", "bob-pw").await;
    first_chg(&mut bob).await;
    let mut alice = alice(&cluster).await;
    let (status, body) = alice
        .send(&cluster, "bob@example.com", "are you there?")
        .await;
    assert_eq!(status, 200, "{body}");
    let live = bob.expect("MSG").await;
    let live = text(&live);
    assert!(
        live.contains("Content-Type: text/x-msmsgsoimnotification; charset=UTF-8"),
        "{live}"
    );
    let md = between(&live, "Mail-Data: <MD><M>", "</M></MD>").expect(&live);
    assert!(
        md.contains("<E>alice@example.com</E>") && md.contains("<F>.!!OIM</F>"),
        "{md}"
    );
    let id = between(md, "<I>", "</I>").unwrap();
    let (_, body) = rsi(&cluster, &bob, &get_message(id)).await;
    assert_eq!(fetched_text(&body), "are you there?");
}

#[tokio::test]
async fn wlm2009_uum_to_an_offline_contact_is_an_offline_message() {
    let cluster = cluster().await;
    let mut alice = cluster.login(18, "alice@example.com", "alice-pw").await;
    first_chg(&mut alice).await;
    let msg = "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nX-MMS-IM-Format: FN=Segoe%20UI; EF=; CO=0; CS=1; PF=0\r\nDest-Agent: client\r\n\r\nhello";
    let tr = alice
        .cmd_payload("UUM", "bob@example.com 1 1", msg.as_bytes().to_vec())
        .await;
    assert_eq!(alice.next_line().await, format!("UUM {tr} OK"));
    // Typing notifications are not messages: no answer, nothing stored.
    let typing = "MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: alice@example.com\r\n\r\n\r\n";
    alice
        .cmd_payload("UUM", "bob@example.com 1 2", typing.as_bytes().to_vec())
        .await;
    assert!(alice.barrier().await.is_empty());

    let mut bob = cluster.login(18, "bob@example.com", "bob-pw").await;
    let after = first_chg(&mut bob).await;
    let mail = hotmail(&after, "text/x-msmsgsinitialmdatanotification");
    assert_eq!(mail.matches("<M>").count(), 1, "{mail}");
    assert!(mail.contains("<E>alice@example.com</E>"), "{mail}");
    let entry = between(&mail, "<M>", "</M>").unwrap();
    let id = between(entry, "<I>", "</I>").unwrap();
    let (_, body) = rsi(&cluster, &bob, &get_message(id)).await;
    assert_eq!(fetched_text(&body), "hello");

    // Signed in, Bob is told of the next one at once.
    let tr = alice
        .cmd_payload("UUM", "bob@example.com 1 1", msg.as_bytes().to_vec())
        .await;
    assert_eq!(alice.next_line().await, format!("UUM {tr} OK"));
    let live = text(&bob.expect("MSG").await);
    assert!(live.contains("text/x-msmsgsoimnotification"), "{live}");
}

#[tokio::test]
async fn refusals() {
    let cluster = cluster().await;
    let mut alice = alice(&cluster).await;
    let store = cluster.store();
    let bob_id = store
        .account_by_email(&Email::parse("bob@example.com").unwrap())
        .await
        .unwrap()
        .unwrap()
        .id;

    // No ticket, or a forged one: the ticket fault (with the Tweener challenge only).
    for ticket in ["", "t=forged.ticket.x&p="] {
        let forged = Sender {
            email: alice.email.clone(),
            ticket: ticket.into(),
            lockkey: String::new(),
        };
        let (status, body) = forged.post(&cluster, "bob@example.com", "hi").await;
        assert_eq!(fault(status, &body), "AuthenticationFailed");
        assert!(body.contains("TweenerChallenge") && !body.contains("LockKeyChallenge"));
    }
    // A wrong lock key, twice: challenged each time.
    alice.lockkey = "00000000000000000000000000000000".into();
    for _ in 0..2 {
        let (status, body) = alice.post(&cluster, "bob@example.com", "hi").await;
        assert!(challenge(status, &body).is_some(), "{body}");
    }
    // Too large.
    let (status, body) = alice
        .send(&cluster, "bob@example.com", &"x".repeat(MAX_OIM_TEXT + 1))
        .await;
    assert_eq!(fault(status, &body), "InvalidContent");
    // Blocked by the recipient (and an unknown one): unavailable.
    store
        .edit(
            bob_id,
            ListOp::Add {
                list: List::Block,
                target: ContactRef::Email(Email::parse("alice@example.com").unwrap()),
                group: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
    for to in ["bob@example.com", "nobody@example.com"] {
        let (status, body) = alice.send(&cluster, to, "hi").await;
        assert_eq!(fault(status, &body), "SystemUnavailable");
    }
    assert!(store.oims(bob_id).await.unwrap().is_empty());

    // WLM 2009's UUM to someone who blocks the sender: OK, and nothing stored.
    let mut alice_ns = cluster.login(18, "alice@example.com", "alice-pw").await;
    first_chg(&mut alice_ns).await;
    let msg = "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nDest-Agent: client\r\n\r\nhello";
    let tr = alice_ns
        .cmd_payload("UUM", "bob@example.com 1 1", msg.as_bytes().to_vec())
        .await;
    assert_eq!(alice_ns.next_line().await, format!("UUM {tr} OK"));
    assert!(store.oims(bob_id).await.unwrap().is_empty());
}
