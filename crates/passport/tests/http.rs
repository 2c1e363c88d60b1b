//! The Passport routes over real HTTP/1.1: a server on 127.0.0.1:0 and a hand-written client
//! on a TcpStream, so what is tested is what a client sees on the wire.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use butterfly_core::account::{Account, Email, LegacyMd5, NewAccount, PasswordCost, UserId};
use butterfly_core::lists::{EditOutcome, ListError, ListOp, PeerView, Roster};
use butterfly_core::store::{Store, StoreError};
use butterfly_core::tickets::{JwtTickets, Tickets};
use butterfly_passport::{Config, Deps, router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------- in-memory store

#[derive(Default)]
struct MemStore {
    accounts: Mutex<HashMap<Email, Account>>,
}

fn unused<T>() -> Result<T, StoreError> {
    Err(StoreError::Backend("unused".into()))
}

#[async_trait]
impl Store for MemStore {
    async fn create_account(&self, new: NewAccount) -> Result<Account, StoreError> {
        let mut map = self.accounts.lock().unwrap();
        if map.contains_key(&new.email) {
            return Err(StoreError::DuplicateAccount);
        }
        let account = Account {
            id: UserId(map.len() as i64 + 1),
            email: new.email.clone(),
            friendly_name: new.friendly_name,
            password_hash: new.password_hash,
            legacy_md5: new.legacy_md5,
        };
        map.insert(new.email, account.clone());
        Ok(account)
    }
    async fn account_by_email(&self, email: &Email) -> Result<Option<Account>, StoreError> {
        Ok(self.accounts.lock().unwrap().get(email).cloned())
    }
    async fn account_by_id(&self, id: UserId) -> Result<Option<Account>, StoreError> {
        Ok(self
            .accounts
            .lock()
            .unwrap()
            .values()
            .find(|a| a.id == id)
            .cloned())
    }
    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        unused()
    }
    async fn set_password(
        &self,
        _: &Email,
        _: String,
        _: Option<LegacyMd5>,
    ) -> Result<bool, StoreError> {
        unused()
    }
    async fn delete_account(&self, _: &Email) -> Result<bool, StoreError> {
        unused()
    }
    async fn roster(&self, _: UserId) -> Result<Roster, StoreError> {
        unused()
    }
    async fn peer_view(&self, _: UserId, _: UserId) -> Result<PeerView, StoreError> {
        unused()
    }
    async fn edit(
        &self,
        _: UserId,
        _: ListOp,
    ) -> Result<Result<EditOutcome, ListError>, StoreError> {
        unused()
    }
}

// ---------------------------------------------------------------- server

const PUBLIC_HOST: &str = "127.0.0.1:8080";
const CHEAP: PasswordCost = PasswordCost {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

struct Server {
    addr: SocketAddr,
    tickets: Arc<JwtTickets>,
    alice: Account,
    tricky: Account,
}

async fn start() -> Server {
    start_with(PUBLIC_HOST).await
}

async fn start_with(public_host: &str) -> Server {
    let store = Arc::new(MemStore::default());
    let add = async |email: &str, password: &str| {
        store
            .create_account(NewAccount {
                email: Email::parse(email).unwrap(),
                friendly_name: email.into(),
                password_hash: CHEAP.hash(password).unwrap(),
                legacy_md5: None,
            })
            .await
            .unwrap()
    };
    let alice = add("alice@example.com", "hunter2").await;
    let tricky = add("tricky+1@example.com", "p@ss,w%rd").await;
    let tickets = Arc::new(JwtTickets::new("k1", b"0123456789abcdef0123456789abcdef"));
    let app = router(
        Config {
            public_host: public_host.into(),
        },
        Deps {
            store,
            tickets: tickets.clone(),
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        addr,
        tickets,
        alice,
        tricky,
    }
}

// ---------------------------------------------------------------- minimal HTTP client

#[derive(Debug)]
struct Reply {
    status: u16,
    /// Lower-cased names, in order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection (`Connection: close`), read to EOF.
async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"));
    let status = parts.next().unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

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
