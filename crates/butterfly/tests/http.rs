//! The HTTP listener as `start` composes it: one address serves Passport and the
//! address-book SOAP services of the roles in the process, whatever the case of the path.
//! Real HTTP/1.1 over TCP, the real SQLite store.

use std::net::SocketAddr;

use butterfly::{Roles, Settings};
use butterfly_core::account::Email;
use butterfly_core::tickets::{JwtTickets, Service, Tickets};
use butterfly_testkit::{Services, TIMEOUT, TestCluster, delete_prefix, http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// POST a SOAP body; returns the status and the body.
async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: contacts.msn.com\r\nConnection: close\r\n\
         Content-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, body.to_owned())
}

/// A minimal request of `action` carrying `ticket`.
fn soap(ticket: &str, action: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Header>\
         <ABAuthHeader xmlns=\"http://www.msn.com/webservices/AddressBook\">\
         <TicketToken>t={ticket}&amp;p=</TicketToken></ABAuthHeader></soap:Header>\
         <soap:Body><{action} xmlns=\"http://www.msn.com/webservices/AddressBook\"/></soap:Body>\
         </soap:Envelope>"
    )
}

/// Passport and both SOAP services answer on `http`, in any path case; other paths 404.
async fn check_http(http: SocketAddr, ticket: &str) {
    for path in ["/rdr/pprdr.asp", "/RDR/PPRDR.ASP", "/Rdr/PpRdr.asp?x=Y"] {
        let r = http::get(http, path, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("passporturls").is_some(), "{path}");
    }
    let cases = [
        ("/abservice/SharingService.asmx", "FindMembership"),
        ("/ABService/SHARINGSERVICE.ASMX", "FindMembership"),
        ("/abservice/abservice.asmx", "ABFindAll"),
        ("/AbService/AbService.asmx", "ABFindContactsPaged"),
    ];
    for (path, action) in cases {
        let (status, body) = post(http, path, &soap(ticket, action)).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(
            body.contains(&format!("<{action}Response ")),
            "{path}: {body}"
        );
        assert!(body.contains("alice@example.com"), "{path}: {body}");
    }
    // Without a contacts ticket: refused, whatever the case.
    let (status, _) = post(http, "/ABSERVICE/abservice.asmx", &soap("x", "ABFindAll")).await;
    assert_eq!(status, 403);
    assert_eq!(http::get(http, "/nothing/Here", &[]).await.status, 404);
}

fn contacts_ticket(uid: i64, email: &str) -> String {
    let email = Email::parse(email).unwrap();
    JwtTickets::new("k1", SECRET.as_bytes()).issue_service(
        butterfly_core::account::UserId(uid),
        &email,
        Service::Contacts,
    )
}

#[tokio::test]
async fn the_embedded_server_serves_passport_and_the_address_book_on_one_address() {
    let cluster = TestCluster::start_with(|s| s.ticket_secret = Some(SECRET.into())).await;
    cluster.add_user("alice@example.com", "pw", "Alice").await;
    let alice = cluster
        .store()
        .account_by_email(&Email::parse("alice@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    check_http(
        cluster.http_addr(),
        &contacts_ticket(alice.id.0, "alice@example.com"),
    )
    .await;
    assert!(cluster.shutdown().await);
}

/// The composition `deploy/local/run-cluster.sh` uses: Passport and the address book in
/// one process (gRPC for the other roles, HTTP for clients, Redis to tell the gateways'
/// users about edits).
#[tokio::test]
async fn passport_and_addressbook_share_one_http_listener() {
    let Some(services) = Services::find("passport_and_addressbook_share_one_http_listener").await
    else {
        return;
    };
    let dir = std::env::temp_dir().join(format!(
        "butterfly-http-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let prefix = format!("bft{:08x}:", rand::random::<u32>());
    let mut settings = Settings::for_test(&dir);
    settings.target = "passport,addressbook".into();
    settings.roles = Roles::parse(&settings.target).unwrap();
    settings.ticket_secret = Some(SECRET.into());
    settings.redis_url = Some(services.redis_url.clone());
    settings.redis_prefix = prefix.clone();
    let running = butterfly::start(&settings).await.expect("start");
    assert!(running.ns.is_none() && running.sb.is_none());
    assert!(
        running.grpc.is_some(),
        "the other roles reach the book over gRPC"
    );
    let http = running.http.expect("one HTTP listener");
    let store = running
        .store()
        .expect("the address book opens the database");
    let alice = store
        .create_account(butterfly_testkit::test_account(
            "alice@example.com",
            "pw",
            "Alice",
        ))
        .await
        .unwrap();
    check_http(http, &contacts_ticket(alice.id.0, "alice@example.com")).await;
    assert!(running.shutdown(std::time::Duration::from_secs(5)).await);
    delete_prefix(&services.redis_url, &prefix).await;
    let _ = std::fs::remove_dir_all(&dir);
}
