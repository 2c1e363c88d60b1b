//! What the Passport test files share: an in-memory store, a server on 127.0.0.1:0 and a
//! hand-written HTTP/1.1 client on a TcpStream, so what is tested is what a client sees on
//! the wire.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use butterfly_core::account::{Account, Email, LegacyMd5, NewAccount, PasswordCost, UserId};
use butterfly_core::lists::{EditOutcome, ListError, ListOp, PeerView, Roster};
use butterfly_core::store::{Store, StoreError};
use butterfly_core::tickets::JwtTickets;
use butterfly_passport::{Config, Deps, router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------- in-memory store

#[derive(Default)]
pub(crate) struct MemStore {
    accounts: Mutex<HashMap<Email, Account>>,
    /// When set, account look-ups fail as if the database were down.
    pub(crate) broken: AtomicBool,
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
        if self.broken.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("down".into()));
        }
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

pub(crate) const PUBLIC_HOST: &str = "127.0.0.1:8080";
const CHEAP: PasswordCost = PasswordCost {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

/// The password of [`Server::xmlish`]: every character XML escapes.
pub(crate) const XMLISH_PASSWORD: &str = "a<b>&\"c'd";

pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) tickets: Arc<JwtTickets>,
    pub(crate) store: Arc<MemStore>,
    /// `alice@example.com`, password `hunter2`.
    pub(crate) alice: Account,
    /// `tricky+1@example.com`, password `p@ss,w%rd`.
    pub(crate) tricky: Account,
    /// `xmlish@example.com`, password [`XMLISH_PASSWORD`].
    pub(crate) xmlish: Account,
}

pub(crate) async fn start() -> Server {
    start_with(PUBLIC_HOST).await
}

pub(crate) async fn start_with(public_host: &str) -> Server {
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
    let xmlish = add("xmlish@example.com", XMLISH_PASSWORD).await;
    let tickets = Arc::new(JwtTickets::new("k1", b"0123456789abcdef0123456789abcdef"));
    let app = router(
        Config {
            public_host: public_host.into(),
        },
        Deps {
            store: store.clone(),
            tickets: tickets.clone(),
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        addr,
        tickets,
        store,
        alice,
        tricky,
        xmlish,
    }
}

// ---------------------------------------------------------------- minimal HTTP client

#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    /// Lower-cased names, in order.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }
}

/// One request on a fresh connection (`Connection: close`), read to EOF.
pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    request_with_body(addr, method, path, headers, b"").await
}

/// Like [`request`], with a body (and its `Content-Length`) for POST.
pub(crate) async fn request_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut raw = req.into_bytes();
    raw.extend_from_slice(body);
    send_raw(addr, &raw).await
}

/// Write `raw` on a fresh connection and read the answer to EOF.
pub(crate) async fn send_raw(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    parse_reply(&answer)
}

pub(crate) fn parse_reply(raw: &[u8]) -> Reply {
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
