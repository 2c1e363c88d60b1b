//! A typed MSNP client for tests: real TCP (or the HTTP gateway, see [`crate::gateway`]),
//! the protocol crate's own codec in the client direction, and bounded waits.

use std::net::SocketAddr;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use msnp::codec::{Decoded, Direction, Limits, MsnpCodec};
use msnp::frame::Frame;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::TIMEOUT;

/// What a client's bytes travel over: TCP, or the pipe to a gateway transport.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

pub struct Client {
    framed: Framed<Box<dyn Transport>, MsnpCodec>,
    next_tr: u32,
    pub dialect: u8,
    pub email: String,
    /// How long one read may wait (tests on virtual time raise it).
    pub timeout: std::time::Duration,
    /// MSNP13+: the tokens the token service issued at sign-in (for the SOAP services).
    pub tokens: Vec<crate::rst::Token>,
    /// MSNP16+: the machine GUID sent at sign-in.
    pub machine_guid: String,
}

/// Build a frame from a line like `"ADD {tr} FL bob@x.com Bob"` (no payload).
pub fn line(text: &str) -> Frame {
    let mut it = text.split(' ');
    let verb = it.next().unwrap_or_default().as_bytes();
    assert_eq!(verb.len(), 3, "verb of {text:?}");
    Frame::new(&[verb[0], verb[1], verb[2]]).args(it)
}

impl Client {
    pub async fn connect(addr: SocketAddr, dialect: u8) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Client::over(Box::new(stream), dialect)
    }

    /// A client speaking over `stream`.
    pub fn over(stream: Box<dyn Transport>, dialect: u8) -> Client {
        let mut codec = MsnpCodec::new(Direction::ServerToClient, Limits::CLIENT);
        codec.set_dialect(dialect);
        Client {
            framed: Framed::new(stream, codec),
            next_tr: 1,
            dialect,
            email: String::new(),
            timeout: TIMEOUT,
            tokens: Vec::new(),
            machine_guid: format!(
                "{{{:08X}-{:04X}-{:04X}-{:04X}-{:012X}}}",
                rand::random::<u32>(),
                rand::random::<u16>(),
                rand::random::<u16>(),
                rand::random::<u16>(),
                rand::random::<u64>() & 0xffff_ffff_ffff
            ),
        }
    }

    /// The next transaction id.
    pub fn tr(&mut self) -> u32 {
        let t = self.next_tr;
        self.next_tr += 1;
        t
    }

    pub async fn send(&mut self, frame: Frame) {
        self.framed.send(frame).await.expect("send frame");
    }

    /// Send `VERB tr rest…` with a fresh TrID; returns the TrID.
    pub async fn cmd(&mut self, verb: &str, rest: &str) -> u32 {
        let tr = self.tr();
        let text = if rest.is_empty() {
            format!("{verb} {tr}")
        } else {
            format!("{verb} {tr} {rest}")
        };
        self.send(line(&text)).await;
        tr
    }

    /// Send `VERB tr rest… len` + payload.
    pub async fn cmd_payload(&mut self, verb: &str, rest: &str, payload: impl Into<Bytes>) -> u32 {
        let tr = self.tr();
        let text = if rest.is_empty() {
            format!("{verb} {tr}")
        } else {
            format!("{verb} {tr} {rest}")
        };
        self.send(line(&text).payload(payload)).await;
        tr
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let s = self.framed.get_mut();
        s.write_all(bytes).await.expect("write raw");
        s.flush().await.expect("flush raw");
    }

    /// The next frame from the server, or None when it closed the connection.
    pub async fn recv(&mut self) -> Option<Frame> {
        match tokio::time::timeout(self.timeout, self.framed.next()).await {
            Err(_) => panic!(
                "{}: nothing from the server within {:?}",
                self.email, self.timeout
            ),
            Ok(None) | Ok(Some(Err(_))) => None,
            Ok(Some(Ok(Decoded::Frame(f)))) => Some(f),
            Ok(Some(Ok(Decoded::Rejected(r)))) => panic!("server sent a bad frame: {r:?}"),
        }
    }

    /// The next frame, which must exist.
    pub async fn next(&mut self) -> Frame {
        match self.recv().await {
            Some(f) => f,
            None => panic!(
                "{}: connection closed while a frame was expected",
                self.email
            ),
        }
    }

    /// The next frame as its command line (and payload length), for exact comparisons.
    pub async fn next_line(&mut self) -> String {
        line_of(&self.next().await)
    }

    /// The next frame must have `verb`.
    pub async fn expect(&mut self, verb: &str) -> Frame {
        let f = self.next().await;
        assert_eq!(
            f.verb.as_str(),
            verb,
            "{}: expected {verb}, got {f:?}",
            self.email
        );
        f
    }

    /// Skip frames until one matches (bounded by the timeout on each read).
    pub async fn expect_where(&mut self, what: &str, pred: impl Fn(&Frame) -> bool) -> Frame {
        for _ in 0..1000 {
            let f = self.next().await;
            if pred(&f) {
                return f;
            }
        }
        panic!("{}: no frame matching {what}", self.email);
    }

    /// The server must close the connection (possibly after sending some frames, which
    /// are returned).
    pub async fn expect_closed(&mut self) -> Vec<Frame> {
        let mut seen = Vec::new();
        while let Some(f) = self.recv().await {
            seen.push(f);
            assert!(seen.len() < 1000, "server keeps talking instead of closing");
        }
        seen
    }

    /// [`Client::expect_closed`], as the lines that came before the close.
    pub async fn closed_lines(&mut self) -> Vec<String> {
        self.expect_closed().await.iter().map(line_of).collect()
    }

    /// Round-trip a PNG: every frame the server queued before it arrives first and is
    /// returned, so a test can assert that nothing (or exactly something) was sent.
    pub async fn barrier(&mut self) -> Vec<Frame> {
        self.send(line("PNG")).await;
        let mut before = Vec::new();
        loop {
            let f = self.next().await;
            if f.verb.as_str() == "QNG" {
                return before;
            }
            before.push(f);
        }
    }

    /// [`Client::barrier`], answering any challenge on the way (`CHL` → `QRY` with a
    /// product clients of this dialect use, `msnp::auth::client_product`): the other
    /// frames that came before the barrier.
    pub async fn barrier_answering(&mut self) -> Vec<Frame> {
        let mut rest = Vec::new();
        for f in self.barrier().await {
            if f.verb.as_str() != "CHL" {
                rest.push(f);
                continue;
            }
            let d = self.dialect;
            let product = msnp::auth::client_product(d).expect("a dialect with challenges");
            let answer = msnp::auth::expected_qry(d, &f.args[1], product.id)
                .expect("the product is in range");
            let tr = self
                .cmd_payload("QRY", product.id, answer.into_bytes())
                .await;
            assert_eq!(
                self.next_line().await,
                format!("QRY {tr}"),
                "{}",
                self.email
            );
        }
        rest
    }

    /// VER (+ CVR), USR in the dialect's method, and the post-login lines.
    pub async fn login(&mut self, http: SocketAddr, email: &str, password: &str) {
        self.email = email.to_owned();
        let d = self.dialect;
        if d >= 13 {
            return self.wlm_login(http, email, password).await;
        }
        let tr = self.cmd("VER", &format!("MSNP{d} CVR0")).await;
        assert_eq!(self.next_line().await, format!("VER {tr} MSNP{d} CVR0"));
        if d >= 8 {
            let tr = self
                .cmd(
                    "CVR",
                    &format!("0x0409 winnt 5.1 i386 MSNMSGR 7.5.0324 msmsgs {email}"),
                )
                .await;
            self.expect("CVR")
                .await
                .tr_id()
                .filter(|t| *t == tr)
                .expect("CVR echo");
            let tr = self.cmd("USR", &format!("TWN I {email}")).await;
            let policy = self.expect("USR").await;
            assert_eq!(policy.args[..3], [tr.to_string(), "TWN".into(), "S".into()]);
            let ticket = passport_login(http, email, password, &policy.args[3])
                .await
                .expect("Passport login succeeds");
            let tr = self.cmd("USR", &format!("TWN S {ticket}")).await;
            let ok = self.expect("USR").await;
            assert_eq!(
                ok.args[..3],
                [tr.to_string(), "OK".into(), email.to_owned()],
                "{ok:?}"
            );
        } else {
            let tr = self.cmd("USR", &format!("MD5 I {email}")).await;
            let salt = self.expect("USR").await;
            assert_eq!(salt.args[..3], [tr.to_string(), "MD5".into(), "S".into()]);
            let hash = msnp::auth::md5_login_hash(&salt.args[3], password);
            let tr = self.cmd("USR", &format!("MD5 S {hash}")).await;
            let ok = self.expect("USR").await;
            assert_eq!(
                ok.args[..3],
                [tr.to_string(), "OK".into(), email.to_owned()],
                "{ok:?}"
            );
        }
        if d >= 11 {
            assert_eq!(self.next_line().await, "SBS 0 null");
        }
        if d >= 5 {
            let profile = self.expect("MSG").await;
            let body = String::from_utf8_lossy(profile.payload.as_deref().unwrap_or_default())
                .into_owned();
            assert!(body.contains("text/x-msmsgsprofile"), "{body}");
        }
    }

    /// Windows Live Messenger's sign-in: tokens from the token service (RST for WLM 8.x,
    /// RST2 for WLM 2009), then `USR TWN` (MSNP13–14) or `USR SSO` with the MBI proof
    /// (MSNP15+, plus the machine GUID from MSNP16), then the post-login lines.
    pub async fn wlm_login(&mut self, http: SocketAddr, email: &str, password: &str) {
        use crate::rst::{self, Form};
        let d = self.dialect;
        let tr = self.cmd("VER", &format!("MSNP{d} CVR0")).await;
        assert_eq!(self.next_line().await, format!("VER {tr} MSNP{d} CVR0"));
        let tr = self
            .cmd(
                "CVR",
                &format!("0x0409 winnt 6.1.0 i386 MSNMSGR 14.0.8117.0416 msmsgs {email}"),
            )
            .await;
        assert_eq!(self.expect("CVR").await.tr_id(), Some(tr));
        let form = if d >= 16 { Form::Rst2 } else { Form::Rst };
        let ticket = if d <= 14 {
            let tr = self.cmd("USR", &format!("TWN I {email}")).await;
            self.expect("GCF").await;
            let policy = self.expect("USR").await;
            assert_eq!(policy.args[..3], [tr.to_string(), "TWN".into(), "S".into()]);
            self.tokens = rst::tokens(
                http,
                form,
                email,
                password,
                &[
                    ("http://Passport.NET/tb", ""),
                    ("messenger.msn.com", &policy.args[3]),
                    ("contacts.msn.com", "MBI"),
                ],
            )
            .await
            .expect("the token service issues tokens");
            self.token("messenger.msn.com").ticket.clone()
        } else {
            let tr = self.cmd("USR", &format!("SSO I {email}")).await;
            self.expect("GCF").await;
            let challenge = self.expect("USR").await;
            assert_eq!(
                challenge.args[..4],
                [
                    tr.to_string(),
                    "SSO".into(),
                    "S".into(),
                    "MBI_KEY_OLD".into()
                ]
            );
            let nonce = challenge.args[4].clone();
            self.tokens = rst::tokens(
                http,
                form,
                email,
                password,
                &[
                    ("http://Passport.NET/tb", ""),
                    ("messengerclear.live.com", "MBI_KEY_OLD"),
                    ("messenger.msn.com", "?id=507"),
                    ("contacts.msn.com", "MBI"),
                ],
            )
            .await
            .expect("the token service issues tokens");
            let token = self.token("messengerclear.live.com").clone();
            let secret = token
                .secret
                .expect("a binary secret with the Messenger token");
            let blob = msnp::auth::mbi_blob(&secret, &nonce, rand::random());
            let mut line = format!("{} {blob}", token.ticket);
            if d >= 16 {
                line = format!("{line} {}", self.machine_guid);
            }
            line
        };
        let method = if d <= 14 { "TWN" } else { "SSO" };
        let tr = self.cmd("USR", &format!("{method} S {ticket}")).await;
        assert_eq!(self.next_line().await, format!("USR {tr} OK {email} 1 0"));
        assert_eq!(self.next_line().await, "SBS 0 null");
        let profile = self.expect("MSG").await;
        let body =
            String::from_utf8_lossy(profile.payload.as_deref().unwrap_or_default()).into_owned();
        assert!(body.contains("text/x-msmsgsprofile"), "{body}");
        // Several machines may sign in at once from MSNP16 (NS.md §5).
        assert_eq!(body.contains("MPOPEnabled: 1\r\n"), d >= 16, "{body}");
        if d >= 16 {
            let own = self.expect("UBX").await;
            assert_eq!(own.payload.as_deref(), Some(&b""[..]), "{own:?}");
        }
    }

    /// The token issued for `address` at sign-in.
    pub fn token(&self, address: &str) -> &crate::rst::Token {
        self.tokens
            .iter()
            .find(|t| t.address == address)
            .unwrap_or_else(|| panic!("no token for {address} in {:?}", self.tokens))
    }

    /// Close our side.
    pub async fn close(mut self) {
        let _ = self.framed.get_mut().shutdown().await;
    }
}

/// `verb args… [len]` as it was on the wire, without the line end.
pub fn line_of(f: &Frame) -> String {
    let mut s = f.verb.to_string();
    for a in &f.args {
        s.push(' ');
        s.push_str(a);
    }
    if let Some(p) = &f.payload {
        s.push(' ');
        s.push_str(&p.len().to_string());
    }
    s
}

/// The Passport 1.4 exchange a MSN 6–7.5 client performs: nexus, then login2.srf.
/// Returns the `from-PP` ticket, or the HTTP status on failure.
pub async fn passport_login(
    http: SocketAddr,
    email: &str,
    password: &str,
    policy: &str,
) -> Result<String, u16> {
    let nexus = crate::http::get(http, "/rdr/pprdr.asp", &[]).await;
    let urls = nexus.header("PassportURLs").expect("PassportURLs header");
    let da_login = urls
        .split(',')
        .find_map(|kv| kv.strip_prefix("DALogin="))
        .expect("DALogin");
    let path = &da_login[da_login.find('/').expect("DALogin path")..];
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let auth = format!(
        "Passport1.4 OrgVerb=GET,OrgURL=http%3A%2F%2Fmessenger%2Emsn%2Ecom,sign-in={},pwd={},{policy}",
        enc(email),
        enc(password)
    );
    let resp = crate::http::get(http, path, &[("Authorization", &auth)]).await;
    if resp.status != 200 {
        return Err(resp.status);
    }
    let info = resp
        .header("Authentication-Info")
        .expect("Authentication-Info header");
    let start = info.find("from-PP='").expect("from-PP") + "from-PP='".len();
    let end = start + info[start..].find('\'').expect("closing quote");
    Ok(info[start..end].to_owned())
}
