//! Offline messages over real HTTP/1.1: the OIM router on 127.0.0.1:0 with an in-memory
//! SQLite store and JWT tickets; a sender stores messages with `Store2` (answering the
//! lock-key challenge), the recipient reads and deletes them over RSI.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use butterfly_addressbook::oim::{OIM_PATH, OimDeps, RSI_PATH, router};
use butterfly_core::account::{Account, Email, NewAccount};
use butterfly_core::lists::{ContactRef, List, ListOp};
use butterfly_core::oim::MAX_OIM_TEXT;
use butterfly_core::store::Store;
use butterfly_core::tickets::{JwtTickets, Service, Tickets};
use butterfly_store::SqliteStore;
use msnp::auth::{challenge_response_v11, product};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const APPID: &str = "PROD0119GSJUC$18";
const STORE2: &str = "http://messenger.live.com/ws/2006/09/oim/Store2";

struct Server {
    addr: SocketAddr,
    store: Arc<SqliteStore>,
    tickets: Arc<JwtTickets>,
    alice: Account,
    bob: Account,
}

async fn start() -> Server {
    let store = Arc::new(SqliteStore::open_url("sqlite::memory:").await.unwrap());
    let tickets = Arc::new(JwtTickets::new("k1", b"0123456789abcdef0123456789abcdef"));
    let add = async |name: &str| {
        store
            .create_account(NewAccount {
                email: Email::parse(&format!("{name}@example.com")).unwrap(),
                friendly_name: name.into(),
                password_hash: "x".into(),
                legacy_md5: None,
            })
            .await
            .unwrap()
    };
    let alice = add("alice").await;
    let bob = add("bob").await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(OimDeps {
        store: store.clone(),
        tickets: tickets.clone(),
        bus: Arc::new(butterfly_bus::MemoryBus::new()),
        verify_lock_key: true,
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        addr,
        store,
        tickets,
        alice,
        bob,
    }
}

/// POST `body` and read the whole answer: (status, body).
async fn post(addr: SocketAddr, path: &str, action: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: text/xml; charset=utf-8\r\nSOAPAction: \"{action}\"\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "answers have a length"
    );
    (status, body.to_owned())
}

/// A Store2 request as WLM 8.5 writes it.
fn store2(from: &str, ticket: &str, lockkey: &str, to: &str, text: &str) -> String {
    let b64 = STANDARD.encode(text);
    let wrapped: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Header><From memberName="{from}" friendlyName="=?utf-8?B?QWxpY2U=?=" xml:lang="en-US" proxy="MSNMSGR" xmlns="http://messenger.msn.com/ws/2004/09/oim/" msnpVer="MSNP15" buildVer="8.5.1288"/><To memberName="{to}" xmlns="http://messenger.msn.com/ws/2004/09/oim/"/><Ticket passport="{}" appid="{APPID}" lockkey="{lockkey}" xmlns="http://messenger.msn.com/ws/2004/09/oim/"/><Sequence xmlns="http://schemas.xmlsoap.org/ws/2003/03/rm"><Identifier xmlns="http://schemas.xmlsoap.org/ws/2002/07/utility">http://messenger.msn.com</Identifier><MessageNumber>1</MessageNumber></Sequence></soap:Header><soap:Body><MessageType xmlns="http://messenger.msn.com/ws/2004/09/oim/">text</MessageType><Content xmlns="http://messenger.msn.com/ws/2004/09/oim/">MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: base64
X-OIM-Message-Type: OfflineMessage
X-OIM-Run-Id: {{3A3F9D0C-6B9B-4E4A-A0E5-6C7B3D1E2F40}}
X-OIM-Sequence-Num: 1

{}</Content></soap:Body></soap:Envelope>"#,
        ticket.replace('&', "&amp;"),
        wrapped.join("\r\n")
    )
}

fn rsi(ticket_t: &str, action_xml: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Header><PassportCookie xmlns="http://www.hotmail.msn.com/ws/2004/09/oim/rsi"><t>{ticket_t}</t><p></p></PassportCookie></soap:Header><soap:Body>{action_xml}</soap:Body></soap:Envelope>"#
    )
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = start + text[start..].find(close)?;
    Some(&text[start..end])
}

/// The lock-key challenge of a fault, checking its exact form.
fn challenge_of(status: u16, body: &str) -> String {
    assert_eq!(status, 500, "{body}");
    assert!(body.contains(
        r#"<faultcode xmlns:q0="http://messenger.msn.com/ws/2004/09/oim/">q0:AuthenticationFailed</faultcode>"#
    ), "{body}");
    assert!(!body.contains("TweenerChallenge"), "{body}");
    between(
        body,
        r#"<LockKeyChallenge xmlns="http://messenger.msn.com/ws/2004/09/oim/">"#,
        "</LockKeyChallenge>",
    )
    .expect("a lock-key challenge")
    .to_owned()
}

fn lockkey(challenge: &str) -> String {
    let p = product(APPID).unwrap();
    challenge_response_v11(challenge, p.id, p.key)
}

fn fault_code(status: u16, body: &str) -> String {
    assert_eq!(status, 500, "{body}");
    between(body, ">q0:", "</faultcode>").unwrap().to_owned()
}

impl Server {
    fn oim_ticket(&self, who: &Account) -> String {
        let t = self.tickets.issue_service(who.id, &who.email, Service::Oim);
        format!("t={t}&p=")
    }

    fn web_token(&self, who: &Account) -> String {
        self.tickets.issue_service(who.id, &who.email, Service::Web)
    }

    async fn send(&self, from: &Account, lockkey: &str, to: &str, text: &str) -> (u16, String) {
        let body = store2(
            from.email.as_str(),
            &self.oim_ticket(from),
            lockkey,
            to,
            text,
        );
        post(self.addr, OIM_PATH, STORE2, &body).await
    }

    /// Alice's current lock key, from the challenge of an attempt without one.
    async fn alice_lockkey(&self) -> String {
        let (status, body) = self.send(&self.alice, "", "bob@example.com", "x").await;
        lockkey(&challenge_of(status, &body))
    }

    async fn rsi(&self, who: &Account, action: &str, xml: &str) -> (u16, String) {
        let soap_action = format!("http://www.hotmail.msn.com/ws/2004/09/oim/rsi/{action}");
        post(
            self.addr,
            RSI_PATH,
            &soap_action,
            &rsi(&self.web_token(who), xml),
        )
        .await
    }
}

const GET_METADATA: &str =
    r#"<GetMetadata xmlns="http://www.hotmail.msn.com/ws/2004/09/oim/rsi"/>"#;

fn get_message(id: &str, mark: bool) -> String {
    format!(
        r#"<GetMessage xmlns="http://www.hotmail.msn.com/ws/2004/09/oim/rsi"><messageId>{id}</messageId><alsoMarkAsRead>{mark}</alsoMarkAsRead></GetMessage>"#
    )
}

fn delete_messages(ids: &[&str]) -> String {
    let ids: String = ids
        .iter()
        .map(|id| format!("<messageId>{id}</messageId>"))
        .collect();
    format!(
        r#"<DeleteMessages xmlns="http://www.hotmail.msn.com/ws/2004/09/oim/rsi"><messageIds>{ids}</messageIds></DeleteMessages>"#
    )
}

#[test]
fn the_documented_lock_key_is_what_clients_compute() {
    assert_eq!(lockkey("1850937852"), "844559b18ac25f3affb9281fd729203c");
}

#[tokio::test]
async fn store2_after_the_challenge_then_read_and_delete_over_rsi() {
    let s = start().await;
    // The first attempt carries no lock key: the challenge, nothing stored.
    let (status, body) = s.send(&s.alice, "", "bob@example.com", "hello bob").await;
    let challenge = challenge_of(status, &body);
    assert_eq!(challenge.len(), 10);
    assert!(s.store.oims(s.bob.id).await.unwrap().is_empty());

    let (status, body) = s
        .send(
            &s.alice,
            &lockkey(&challenge),
            "bob@example.com",
            "hello bob",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#"<AcknowledgmentRange Upper="1" Lower="1">"#),
        "{body}"
    );
    assert!(
        body.contains(r#"<StoreResponse xmlns="http://messenger.msn.com/ws/2004/09/oim/">"#),
        "{body}"
    );
    let waiting = s.store.oims(s.bob.id).await.unwrap();
    assert_eq!(waiting.len(), 1);
    let id = waiting[0].id.to_string();
    assert_eq!(waiting[0].sender_name, "Alice");

    let (status, md) = s.rsi(&s.bob, "GetMetadata", GET_METADATA).await;
    assert_eq!(status, 200, "{md}");
    let entry = between(&md, "<MD><M>", "</M></MD>").expect("one entry");
    assert!(
        entry.contains(&format!("<E>alice@example.com</E><I>{id}</I>")),
        "{entry}"
    );
    assert!(entry.contains("<RS>0</RS>") && entry.contains("<N>=?utf-8?B?QWxpY2U=?=</N>"));

    let (status, got) = s.rsi(&s.bob, "GetMessage", &get_message(&id, true)).await;
    assert_eq!(status, 200, "{got}");
    let text = between(&got, "<GetMessageResult>", "</GetMessageResult>").unwrap();
    let text = quick_xml::escape::unescape(text).unwrap();
    assert!(
        text.starts_with("From: =?utf-8?B?QWxpY2U=?= <alice@example.com>\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nTo: bob@example.com\r\n"));
    assert!(text.contains("X-OIM-Run-Id: {3A3F9D0C-6B9B-4E4A-A0E5-6C7B3D1E2F40}"));
    let (_, b64) = text.split_once("\r\n\r\n").unwrap();
    assert_eq!(STANDARD.decode(b64.trim()).unwrap(), b"hello bob");
    assert!(s.store.oims(s.bob.id).await.unwrap()[0].read);

    // Alice cannot read or delete Bob's message.
    let (status, _) = s
        .rsi(&s.alice, "GetMessage", &get_message(&id, false))
        .await;
    assert_eq!(status, 500);
    let (status, _) = s
        .rsi(&s.alice, "DeleteMessages", &delete_messages(&[&id]))
        .await;
    assert_eq!(status, 500);
    // One unknown id refuses the whole request.
    let unknown = uuid::Uuid::new_v4().to_string();
    let (status, body) = s
        .rsi(&s.bob, "DeleteMessages", &delete_messages(&[&id, &unknown]))
        .await;
    assert_eq!(status, 500);
    assert!(
        body.contains("<faultcode>soap:Client</faultcode>"),
        "{body}"
    );
    assert_eq!(s.store.oims(s.bob.id).await.unwrap().len(), 1);

    let (status, body) = s
        .rsi(&s.bob, "DeleteMessages", &delete_messages(&[&id]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("DeleteMessagesResponse"));
    assert!(s.store.oims(s.bob.id).await.unwrap().is_empty());
    let (_, md) = s.rsi(&s.bob, "GetMetadata", GET_METADATA).await;
    assert!(md.contains("<MD></MD>"), "{md}");
}

#[tokio::test]
async fn refusals() {
    let s = start().await;
    let key = s.alice_lockkey().await;

    // No ticket, a forged one, or someone else's: the ticket fault, nothing stored.
    let forged = store2(
        "alice@example.com",
        "t=forged.token.x&p=",
        &key,
        "bob@example.com",
        "hi",
    );
    let no_ticket = forged.replace(r#"passport="t=forged.token.x&amp;p=""#, "");
    let not_hers = store2(
        "alice@example.com",
        &s.oim_ticket(&s.bob),
        &key,
        "bob@example.com",
        "hi",
    );
    for body in [forged, no_ticket, not_hers] {
        let (status, answer) = post(s.addr, OIM_PATH, STORE2, &body).await;
        assert_eq!(fault_code(status, &answer), "AuthenticationFailed");
        assert!(answer.contains("TweenerChallenge"), "{answer}");
        assert!(!answer.contains("LockKeyChallenge"), "{answer}");
    }

    // A wrong lock key, twice: the challenge again each time.
    for _ in 0..2 {
        let (status, body) = s
            .send(
                &s.alice,
                "0123456789abcdef0123456789abcdef",
                "bob@example.com",
                "hi",
            )
            .await;
        challenge_of(status, &body);
    }

    // Too large; unknown recipient.
    let big = "x".repeat(MAX_OIM_TEXT + 1);
    let (status, body) = s.send(&s.alice, &key, "bob@example.com", &big).await;
    assert_eq!(fault_code(status, &body), "InvalidContent");
    let (status, body) = s.send(&s.alice, &key, "nobody@example.com", "hi").await;
    assert_eq!(fault_code(status, &body), "SystemUnavailable");

    // Blocked by the recipient.
    s.store
        .edit(
            s.bob.id,
            ListOp::Add {
                list: List::Block,
                target: ContactRef::Email(s.alice.email.clone()),
                group: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
    let (status, body) = s.send(&s.alice, &key, "bob@example.com", "hi").await;
    assert_eq!(fault_code(status, &body), "SystemUnavailable");
    assert!(s.store.oims(s.bob.id).await.unwrap().is_empty());

    // RSI without a good cookie, or for an unknown message.
    let (status, body) = post(s.addr, RSI_PATH, "x", &rsi("forged", GET_METADATA)).await;
    assert_eq!(status, 500);
    assert!(body.contains("Schema validation error"), "{body}");
    let oim_only = s
        .tickets
        .issue_service(s.bob.id, &s.bob.email, Service::Oim);
    let (status, _) = post(s.addr, RSI_PATH, "x", &rsi(&oim_only, GET_METADATA)).await;
    assert_eq!(status, 500, "an OIM-send ticket does not read mail");
    let unknown = uuid::Uuid::new_v4().to_string();
    let (status, _) = s
        .rsi(&s.bob, "GetMessage", &get_message(&unknown, false))
        .await;
    assert_eq!(status, 500);
}
