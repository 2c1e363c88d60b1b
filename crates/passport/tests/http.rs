//! The Passport routes over real HTTP/1.1: a server on 127.0.0.1:0 and a hand-written client
//! on a TcpStream, so what is tested is what a client sees on the wire.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use butterfly_core::account::Account;
use butterfly_core::tickets::Tickets;
use common::{Reply, Server, parse_reply, request, start, start_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------- helpers

/// What MSN Messenger 6 sends: OrgVerb, OrgURL, sign-in, pwd, then the USR TWN S policy.
fn msn_auth(sign_in: &str, pwd: &str) -> String {
    format!(
        "Passport1.4 OrgVerb=GET,OrgURL=http%3A%2F%2Fmessenger%2Emsn%2Ecom,sign-in={sign_in},\
         pwd={pwd},lc=1033,id=507,tw=40,fs=1,ru=http%3A%2F%2Fmessenger%2Emsn%2Ecom,\
         ct=1062764229,kpp=1,kv=5,ver=2.1.0173.1,tpf=43f8a4c8ed940c04e3740be46c4d1619"
    )
}

async fn login(addr: SocketAddr, auth: &str) -> Reply {
    request(addr, "GET", "/login2.srf", &[("Authorization", auth)]).await
}

/// The ticket exactly as a client extracts it: after `from-PP='`, up to the next `'`.
fn from_pp(reply: &Reply) -> &str {
    let info = reply
        .header("Authentication-Info")
        .expect("Authentication-Info");
    let start = info.find("from-PP='").expect("from-PP") + "from-PP='".len();
    let len = info[start..].find('\'').expect("closing quote");
    &info[start..start + len]
}

fn assert_ticket_for(server: &Server, reply: &Reply, account: &Account) {
    assert_eq!(reply.status, 200, "{reply:?}");
    let info = reply.header("Authentication-Info").unwrap();
    assert!(
        info.starts_with(
            "Passport1.4 da-status=success,tname=MSPAuth,tname=MSPProf,tname=MSPSec,from-PP='t="
        ),
        "{info}"
    );
    assert!(info.ends_with("&p=',ru=http://messenger.msn.com"), "{info}");
    let pp = from_pp(reply);
    let token = pp
        .strip_prefix("t=")
        .and_then(|t| t.strip_suffix("&p="))
        .unwrap();
    let claims = server.tickets.verify_passport(token).unwrap();
    assert_eq!(claims.sub, account.email);
    assert_eq!(claims.uid, account.id.0);
    assert!(reply.header("WWW-Authenticate").is_none());
}

fn assert_refused(reply: &Reply) {
    assert_eq!(reply.status, 401, "{reply:?}");
    let www = reply.header("WWW-Authenticate").expect("WWW-Authenticate");
    assert_eq!(
        www,
        "Passport1.4 da-status=failed,srealm=Passport.NET,ts=-3,prompt,\
         cburl=http://127.0.0.1:8080/passport.gif,\
         cbtxt=The%20e-mail%20address%20or%20password%20is%20incorrect."
    );
    assert!(reply.header("Authentication-Info").is_none());
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn nexus_points_at_login2() {
    let server = start().await;
    let reply = request(server.addr, "GET", "/rdr/pprdr.asp", &[]).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());
    let urls = reply.header("PassportURLs").unwrap();
    assert!(urls.starts_with("DARealm=Passport.Net,DALogin=127.0.0.1:8080/login2.srf,"));
    assert!(urls.ends_with(",ConfigVersion=11"));
    for key in [
        "DAReg=",
        "Properties=",
        "Privacy=",
        "GeneralRedir=",
        "Help=",
    ] {
        assert!(urls.contains(key), "{key} missing in {urls}");
    }
    // How clients read it: after DALogin= up to the next ','.
    let da = urls.split(',').find_map(|i| i.strip_prefix("DALogin="));
    assert_eq!(da, Some("127.0.0.1:8080/login2.srf"));
}

#[tokio::test]
async fn paths_are_case_insensitive() {
    let server = start().await;
    for path in ["/RDR/PPRDR.ASP", "/Rdr/PpRdr.asp"] {
        let reply = request(server.addr, "GET", path, &[]).await;
        assert_eq!(reply.status, 200, "{path}");
        assert!(reply.header("PassportURLs").is_some(), "{path}");
    }
    let auth = msn_auth("alice%40example.com", "hunter2");
    for (method, path) in [
        ("GET", "/LOGIN2.SRF"),
        ("POST", "/Login2.srf"),
        ("POST", "/login2.srf"),
    ] {
        let reply = request(server.addr, method, path, &[("Authorization", &auth)]).await;
        assert_ticket_for(&server, &reply, &server.alice);
    }
    assert_eq!(request(server.addr, "GET", "/nope", &[]).await.status, 404);
    assert_eq!(
        request(server.addr, "GET", "/LOGIN3.SRF", &[]).await.status,
        404
    );
    let wrong = request(server.addr, "DELETE", "/RDR/PPRDR.ASP", &[]).await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("Allow"), Some("GET,HEAD"));
}

#[tokio::test]
async fn right_password_gets_a_ticket() {
    let server = start().await;
    let reply = login(server.addr, &msn_auth("alice%40example.com", "hunter2")).await;
    assert_ticket_for(&server, &reply, &server.alice);
    // Sign-in names are case-insensitive (stored lower case).
    let reply = login(server.addr, &msn_auth("Alice%40EXAMPLE.com", "hunter2")).await;
    assert_ticket_for(&server, &reply, &server.alice);
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let server = start().await;
    assert_refused(&login(server.addr, &msn_auth("alice%40example.com", "hunter3")).await);
    assert_refused(&login(server.addr, &msn_auth("alice%40example.com", "HUNTER2")).await);
}

#[tokio::test]
async fn unknown_user_gets_the_same_answer() {
    let server = start().await;
    let unknown = login(server.addr, &msn_auth("nobody%40example.com", "hunter2")).await;
    let wrong = login(server.addr, &msn_auth("alice%40example.com", "nope")).await;
    assert_refused(&unknown);
    assert_refused(&wrong);
    let strip = |r: &Reply| {
        r.headers
            .iter()
            .filter(|(n, _)| n != "date")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&unknown), strip(&wrong));
    assert_eq!(unknown.body, wrong.body);
}

#[tokio::test]
async fn missing_or_garbage_authorization_is_refused() {
    let server = start().await;
    assert_refused(&request(server.addr, "GET", "/login2.srf", &[]).await);
    for auth in [
        "",
        "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
        "Passport1.4",
        "Passport1.4 ,,,,====,,,",
        "Passport1.4 sign-in=alice%40example.com",
        "Passport1.4 pwd=hunter2",
        "Passport1.4 sign-in=alice,pwd=hunter2",
        "Passport1.4 sign-in=alice%40example.com,pwd=",
        "Passport1.4 sign-in=%ZZ%40example.com,pwd=hunter2",
        "Passport1.4sign-in=alice%40example.com,pwd=hunter2",
    ] {
        let reply = login(server.addr, auth).await;
        assert_refused(&reply);
    }
}

#[tokio::test]
async fn non_utf8_authorization_is_refused() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"GET /login2.srf HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
              Authorization: Passport1.4 sign-in=alice%40example.com,pwd=hunter\xff2\r\n\r\n",
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    assert_refused(&parse_reply(&raw));
}

#[tokio::test]
async fn percent_encoded_and_raw_credentials() {
    let server = start().await;
    // What a real client sends: both values percent-encoded, ',' as %2C, '%' as %25.
    let reply = login(
        server.addr,
        &msn_auth("tricky%2B1%40example.com", "p%40ss%2Cw%25rd"),
    )
    .await;
    assert_ticket_for(&server, &reply, &server.tricky);
    // Lower-case escapes are fine too.
    let reply = login(
        server.addr,
        &msn_auth("tricky%2b1%40example.com", "p%40ss%2cw%25rd"),
    )
    .await;
    assert_ticket_for(&server, &reply, &server.tricky);
    // Unencoded sign-in name and password (no ',' in it) also work.
    let reply = login(server.addr, &msn_auth("alice@example.com", "hunter2")).await;
    assert_ticket_for(&server, &reply, &server.alice);
    // A raw ',' splits the password (the rest looks like another parameter): refused.
    assert_refused(&login(server.addr, &msn_auth("tricky+1@example.com", "p@ss,w%rd")).await);
    // MS-PASS order and spacing: sign-in first, blanks after commas, other key case.
    let reply = login(
        server.addr,
        "Passport1.4 Sign-In=tricky%2B1%40example.com, PWD=p%40ss%2Cw%25rd, elapsed-time=0, \
         OrgVerb=GET,OrgUrl=http://messenger.msn.com,ct=1,rver=1,wp=FS_40SEC_0_COMPACT,lc=1,id=1",
    )
    .await;
    assert_ticket_for(&server, &reply, &server.tricky);
}

#[tokio::test]
async fn oversized_authorization_is_rejected_and_server_carries_on() {
    let server = start().await;
    let pad = "x".repeat(8 * 1024);
    let huge = msn_auth("alice%40example.com", &format!("hunter2{pad}"));
    let reply = login(server.addr, &huge).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    // Padding after a valid sign-in does not slip through either.
    let huge = format!("{},x={pad}", msn_auth("alice%40example.com", "hunter2"));
    assert_eq!(login(server.addr, &huge).await.status, 400);
    // Several Authorization headers count together.
    let half = format!(
        "{},x={}",
        msn_auth("alice%40example.com", "hunter2"),
        "y".repeat(3000)
    );
    let reply = request(
        server.addr,
        "GET",
        "/login2.srf",
        &[("Authorization", &half), ("Authorization", &half)],
    )
    .await;
    assert_eq!(reply.status, 400);
    // A header block beyond hyper's own limit gets 431 (or the connection is closed).
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut req = String::from("GET /login2.srf HTTP/1.1\r\nHost: x\r\n");
    req.push_str(&format!("X-Junk: {}\r\n\r\n", "z".repeat(1024 * 1024)));
    let _ = stream.write_all(req.as_bytes()).await; // the server may close before we finish
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    if !raw.is_empty() {
        assert!(
            raw.starts_with(b"HTTP/1.1 431"),
            "{:?}",
            String::from_utf8_lossy(&raw)
        );
    }
    // The server still answers.
    let reply = login(server.addr, &msn_auth("alice%40example.com", "hunter2")).await;
    assert_ticket_for(&server, &reply, &server.alice);
}

#[tokio::test]
async fn concurrent_logins() {
    let server = Arc::new(start().await);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let pwd = if i % 2 == 0 { "hunter2" } else { "wrong" };
            let reply = login(server.addr, &msn_auth("alice%40example.com", pwd)).await;
            (i, reply)
        }));
    }
    for task in tasks {
        let (i, reply) = task.await.unwrap();
        if i % 2 == 0 {
            assert_ticket_for(&server, &reply, &server.alice);
        } else {
            assert_refused(&reply);
        }
    }
}

#[tokio::test]
async fn public_host_with_scheme_or_garbage() {
    let server = start_with("https://msn.example/").await;
    let reply = request(server.addr, "GET", "/rdr/pprdr.asp", &[]).await;
    let urls = reply.header("PassportURLs").unwrap();
    assert!(urls.starts_with("DARealm=Passport.Net,DALogin=msn.example/login2.srf,"));

    // A host that cannot go into the comma-separated list: nexus fails loudly, login
    // still answers (without the co-branding URL).
    let server = start_with("a,b").await;
    let reply = request(server.addr, "GET", "/rdr/pprdr.asp", &[]).await;
    assert_eq!(reply.status, 500);
    let reply = login(server.addr, &msn_auth("alice%40example.com", "nope")).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header("WWW-Authenticate"),
        Some("Passport1.4 da-status=failed,srealm=Passport.NET,ts=-3,prompt")
    );
    let reply = login(server.addr, &msn_auth("alice%40example.com", "hunter2")).await;
    assert_ticket_for(&server, &reply, &server.alice);
}
