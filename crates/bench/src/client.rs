//! The client side of a sign-in, as a real client of the dialect performs it, with every
//! wait bounded and every failure an error (not a panic).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures::{SinkExt, StreamExt};
use msnp::codec::{Decoded, Direction, Limits, MsnpCodec};
use msnp::frame::Frame;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::http;

/// How long any one answer from the server may take.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(60);

/// The most frames read while looking for one answer.
const MAX_FRAMES: usize = 100_000;

pub(crate) struct Conn {
    framed: Framed<TcpStream, MsnpCodec>,
    next_tr: u32,
    dialect: u8,
    email: String,
    /// What the connection is to, for messages: "the NS" or "the switchboard".
    peer: &'static str,
}

/// Build a frame from `VERB arg arg…`.
pub(crate) fn line(text: &str) -> anyhow::Result<Frame> {
    let mut it = text.split(' ');
    let verb = it.next().unwrap_or_default().as_bytes();
    let verb: [u8; 3] = verb
        .try_into()
        .map_err(|_| anyhow!("bad verb in {text:?}"))?;
    Ok(Frame::new(&verb).args(it))
}

impl Conn {
    pub(crate) async fn connect(addr: SocketAddr, dialect: u8) -> anyhow::Result<Conn> {
        Conn::connect_to(addr, dialect, "the NS").await
    }

    /// A switchboard connection of `email` (who signed in on the NS with `dialect`).
    pub(crate) async fn connect_sb(
        addr: SocketAddr,
        dialect: u8,
        email: &str,
    ) -> anyhow::Result<Conn> {
        let mut c = Conn::connect_to(addr, dialect, "the switchboard").await?;
        c.email = email.to_owned();
        Ok(c)
    }

    async fn connect_to(addr: SocketAddr, dialect: u8, peer: &'static str) -> anyhow::Result<Conn> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connecting to {peer} at {addr}: timed out"))?
            .with_context(|| format!("connecting to {peer} at {addr}"))?;
        let mut codec = MsnpCodec::new(Direction::ServerToClient, Limits::CLIENT);
        codec.set_dialect(dialect);
        Ok(Conn {
            framed: Framed::new(stream, codec),
            next_tr: 1,
            dialect,
            email: String::new(),
            peer,
        })
    }

    pub(crate) fn email(&self) -> &str {
        &self.email
    }

    async fn send(&mut self, frame: Frame) -> anyhow::Result<()> {
        self.framed
            .send(frame)
            .await
            .with_context(|| format!("{}: sending to {}", self.email, self.peer))
    }

    /// Queue a frame without flushing (see [`Conn::flush`]).
    pub(crate) async fn feed(&mut self, frame: Frame) -> anyhow::Result<()> {
        self.framed
            .feed(frame)
            .await
            .with_context(|| format!("{}: sending to {}", self.email, self.peer))
    }

    pub(crate) async fn flush(&mut self) -> anyhow::Result<()> {
        SinkExt::<Frame>::flush(&mut self.framed)
            .await
            .with_context(|| format!("{}: sending to {}", self.email, self.peer))
    }

    /// The next TrID, taken.
    pub(crate) fn take_tr(&mut self) -> u32 {
        let tr = self.next_tr;
        self.next_tr += 1;
        tr
    }

    /// Send `VERB tr rest…`; returns the TrID.
    pub(crate) async fn cmd(&mut self, verb: &str, rest: &str) -> anyhow::Result<u32> {
        let tr = self.next_tr;
        self.next_tr += 1;
        let text = if rest.is_empty() {
            format!("{verb} {tr}")
        } else {
            format!("{verb} {tr} {rest}")
        };
        self.send(line(&text)?).await?;
        Ok(tr)
    }

    /// The next frame; the connection closing or a bad frame is an error.
    pub(crate) async fn next(&mut self) -> anyhow::Result<Frame> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        match self.next_until(deadline).await? {
            Some(f) => Ok(f),
            None => bail!(
                "{}: no answer from {} within {TIMEOUT:?}",
                self.email,
                self.peer
            ),
        }
    }

    /// The next frame, or `None` if none arrives before `deadline`; the connection
    /// closing or a bad frame is an error.
    pub(crate) async fn next_until(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<Option<Frame>> {
        let (who, peer) = (&self.email, self.peer);
        match tokio::time::timeout_at(deadline, self.framed.next()).await {
            Err(_) => Ok(None),
            Ok(None) => bail!("{who}: {peer} closed the connection"),
            Ok(Some(Err(e))) => bail!("{who}: reading from {peer}: {e}"),
            Ok(Some(Ok(Decoded::Rejected(r)))) => bail!("{who}: {peer} sent a bad frame: {r:?}"),
            Ok(Some(Ok(Decoded::Frame(f)))) => Ok(Some(f)),
        }
    }

    /// The answer to transaction `tr`: must be `verb` (an error code fails).
    pub(crate) async fn answer(&mut self, verb: &str, tr: u32) -> anyhow::Result<Frame> {
        let f = self.next().await?;
        if f.verb.is_error() {
            bail!(
                "{}: {} answered {verb} with error {f:?}",
                self.email,
                self.peer
            );
        }
        if f.verb.as_str() != verb || f.tr_id() != Some(tr) {
            bail!("{}: expected {verb} {tr}, got {f:?}", self.email);
        }
        Ok(f)
    }

    /// The answer to transaction `tr`, which must be `verb`; frames of other
    /// transactions (and asynchronous ones, TrID 0 or none) before it are skipped.
    pub(crate) async fn answer_skipping(&mut self, verb: &str, tr: u32) -> anyhow::Result<Frame> {
        for _ in 0..MAX_FRAMES {
            let f = self.next().await?;
            if f.tr_id() != Some(tr) {
                continue;
            }
            if f.verb.as_str() != verb {
                bail!(
                    "{}: expected {verb} {tr} from {}, got {f:?}",
                    self.email,
                    self.peer
                );
            }
            return Ok(f);
        }
        bail!(
            "{}: no {verb} {tr} from {} in {MAX_FRAMES} frames",
            self.email,
            self.peer
        )
    }

    /// The next frame with verb `verb`; others before it are skipped.
    pub(crate) async fn expect(&mut self, verb: &str) -> anyhow::Result<Frame> {
        for _ in 0..MAX_FRAMES {
            let f = self.next().await?;
            if f.verb.as_str() == verb {
                return Ok(f);
            }
        }
        bail!(
            "{}: no {verb} from {} in {MAX_FRAMES} frames",
            self.email,
            self.peer
        )
    }

    /// Send PNG and collect every frame that arrives before its QNG.
    async fn barrier(&mut self) -> anyhow::Result<Vec<Frame>> {
        self.send(Frame::new(b"PNG")).await?;
        let mut before = Vec::new();
        loop {
            let f = self.next().await?;
            if f.verb.as_str() == "QNG" {
                return Ok(before);
            }
            if f.verb.is_error() {
                bail!("{}: {} answered with error {f:?}", self.email, self.peer);
            }
            before.push(f);
            // A SYN lists every contact (and everyone who has you on their list): a
            // bound well above the benches' lists, not a protocol limit.
            if before.len() > MAX_FRAMES {
                bail!("{}: no QNG after {MAX_FRAMES} frames", self.email);
            }
        }
    }

    /// VER (+ CVR), then USR in the dialect's method (MD5 for MSNP2–7; TWN with the
    /// Passport nexus and `login2.srf` over HTTP for MSNP8+), up to `USR … OK`.
    pub(crate) async fn sign_in(
        &mut self,
        http_addr: SocketAddr,
        email: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        self.email = email.to_owned();
        let d = self.dialect;
        let tr = self.cmd("VER", &format!("MSNP{d} CVR0")).await?;
        let ver = self.answer("VER", tr).await?;
        if !ver.args.iter().any(|a| *a == format!("MSNP{d}")) {
            bail!("{email}: the NS did not accept MSNP{d}: {ver:?}");
        }
        let ok = if d >= 8 {
            let tr = self
                .cmd(
                    "CVR",
                    &format!("0x0409 winnt 5.1 i386 MSNMSGR 7.5.0324 msmsgs {email}"),
                )
                .await?;
            self.answer("CVR", tr).await?;
            let tr = self.cmd("USR", &format!("TWN I {email}")).await?;
            let policy = self.answer("USR", tr).await?;
            let policy = match policy.args.get(1..4) {
                Some([twn, s, policy]) if twn == "TWN" && s == "S" => policy.clone(),
                _ => bail!("{email}: expected USR {tr} TWN S <policy>, got {policy:?}"),
            };
            let ticket = http::passport_login(http_addr, email, password, &policy).await?;
            let tr = self.cmd("USR", &format!("TWN S {ticket}")).await?;
            self.answer("USR", tr).await?
        } else {
            let tr = self.cmd("USR", &format!("MD5 I {email}")).await?;
            let salt = self.answer("USR", tr).await?;
            let salt = match salt.args.get(1..4) {
                Some([md5, s, salt]) if md5 == "MD5" && s == "S" => salt.clone(),
                _ => bail!("{email}: expected USR {tr} MD5 S <salt>, got {salt:?}"),
            };
            let hash = msnp::auth::md5_login_hash(&salt, password);
            let tr = self.cmd("USR", &format!("MD5 S {hash}")).await?;
            self.answer("USR", tr).await?
        };
        if ok.args.get(1).map(String::as_str) != Some("OK") {
            bail!("{email}: sign-in refused: {ok:?}");
        }
        Ok(())
    }

    /// What a client does right after `USR OK` to be online: `SYN` (list sync), then
    /// `CHG NLN`, answering the challenge (`CHL` → `QRY`) the server sends after the first
    /// `CHG`. The post-login lines (SBS, the profile MSG) are read on the way. Returns
    /// what arrived after the `CHG` (its answer, the `ILN`s of online contacts, `CHL`…).
    pub(crate) async fn go_online(&mut self) -> anyhow::Result<Vec<Frame>> {
        let d = self.dialect;
        let tr = self.cmd("SYN", if d >= 10 { "0 0" } else { "0" }).await?;
        let synced = self.barrier().await?;
        if !synced
            .iter()
            .any(|f| f.verb.as_str() == "SYN" && f.tr_id() == Some(tr))
        {
            bail!("{}: no SYN {tr} answer: {synced:?}", self.email);
        }
        let caps = match d {
            ..=7 => "",
            8 => " 268435456",
            _ => " 268435456 0",
        };
        let tr = self.cmd("CHG", &format!("NLN{caps}")).await?;
        let after = self.barrier().await?;
        if !after
            .iter()
            .any(|f| f.verb.as_str() == "CHG" && f.tr_id() == Some(tr))
        {
            bail!("{}: no CHG {tr} answer: {after:?}", self.email);
        }
        for f in &after {
            if f.verb.as_str() == "CHL"
                && let Some(chl) = f.args.get(1)
            {
                let (id, answer) = butterfly_loadgen::conn::challenge_answer(d, chl)?;
                let tr = self.next_tr;
                self.next_tr += 1;
                self.send(line(&format!("QRY {tr} {id}"))?.payload(answer.into_bytes()))
                    .await?;
                self.answer("QRY", tr).await?;
            }
        }
        Ok(after)
    }

    /// `OUT`, then read until the server closes the connection.
    pub(crate) async fn sign_out(mut self) -> anyhow::Result<()> {
        self.send(Frame::new(b"OUT")).await?;
        let drain = async {
            while let Some(item) = self.framed.next().await {
                if item.is_err() {
                    break;
                }
            }
        };
        tokio::time::timeout(TIMEOUT, drain)
            .await
            .map_err(|_| anyhow!("{}: the NS did not close after OUT", self.email))
    }

    /// Keep only the socket: an idle client reads nothing more (the kernel buffers the
    /// little the server may still send), so the bench holds one fd per connection.
    pub(crate) fn into_socket(self) -> TcpStream {
        self.framed.into_inner()
    }
}
