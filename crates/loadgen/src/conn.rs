//! One MSNP connection from a simulated user: bound to a chosen source address, framed
//! with the protocol crate's codec in the client direction, every wait bounded.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures::{SinkExt, StreamExt};
use msnp::codec::{Decoded, Direction, Limits, MsnpCodec};
use msnp::frame::Frame;
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::codec::Framed;

/// How long one answer from the server may take before the step counts as failed.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Conn {
    framed: Framed<TcpStream, MsnpCodec>,
    next_tr: u32,
}

/// A TCP connection to `to` from `from` (port chosen by the kernel).
pub async fn connect(from: IpAddr, to: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = match to {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .context("socket")?;
    socket
        .bind(SocketAddr::new(from, 0))
        .with_context(|| format!("bind {from}"))?;
    let stream = tokio::time::timeout(ANSWER_TIMEOUT, socket.connect(to))
        .await
        .map_err(|_| anyhow!("connect {to}: timed out"))?
        .with_context(|| format!("connect {to}"))?;
    stream.set_nodelay(true).ok();
    Ok(stream)
}

impl Conn {
    pub fn new(stream: TcpStream, dialect: u8) -> Conn {
        let mut codec = MsnpCodec::new(Direction::ServerToClient, Limits::CLIENT);
        codec.set_dialect(dialect);
        Conn {
            framed: Framed::new(stream, codec),
            next_tr: 1,
        }
    }

    pub fn tr(&mut self) -> u32 {
        let tr = self.next_tr;
        self.next_tr += 1;
        tr
    }

    pub async fn send(&mut self, frame: Frame) -> anyhow::Result<()> {
        tokio::time::timeout(ANSWER_TIMEOUT, self.framed.send(&frame))
            .await
            .map_err(|_| anyhow!("write timed out"))?
            .context("write")
    }

    /// `VERB tr args…`; returns the TrID.
    pub async fn cmd(&mut self, verb: &[u8; 3], args: &[&str]) -> anyhow::Result<u32> {
        let tr = self.tr();
        self.send(Frame::new(verb).arg(tr).args(args.iter()))
            .await?;
        Ok(tr)
    }

    /// `VERB tr args… len` with a payload; returns the TrID.
    pub async fn cmd_payload(
        &mut self,
        verb: &[u8; 3],
        args: &[&str],
        payload: impl Into<bytes::Bytes>,
    ) -> anyhow::Result<u32> {
        let tr = self.tr();
        let frame = Frame::new(verb).arg(tr).args(args.iter()).payload(payload);
        self.send(frame).await?;
        Ok(tr)
    }

    /// The next frame, `None` when the server closed. A frame the codec refused is an
    /// error (the server sent something no client could read).
    pub async fn recv(&mut self) -> anyhow::Result<Option<Frame>> {
        match self.framed.next().await {
            None => Ok(None),
            Some(Ok(Decoded::Frame(f))) => Ok(Some(f)),
            Some(Ok(Decoded::Rejected(r))) => bail!("unreadable frame from the server: {r:?}"),
            Some(Err(e)) => Err(anyhow::Error::new(e).context("read")),
        }
    }

    /// The next frame within [`ANSWER_TIMEOUT`]; the server closing is an error.
    pub async fn next(&mut self, waiting_for: &str) -> anyhow::Result<Frame> {
        match tokio::time::timeout(ANSWER_TIMEOUT, self.recv()).await {
            Err(_) => bail!("timeout: {waiting_for}"),
            Ok(Ok(Some(f))) => Ok(f),
            Ok(Ok(None)) => bail!("closed by the server: {waiting_for}"),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Read until a frame with `verb` and TrID `tr` (or an error reply to `tr`), handing
    /// every other frame to `other`.
    pub async fn answer(
        &mut self,
        verb: &str,
        tr: u32,
        mut other: impl FnMut(Frame),
    ) -> anyhow::Result<Frame> {
        loop {
            let f = self.next(verb).await?;
            if f.tr_id() == Some(tr) {
                if f.verb.is_error() {
                    bail!("server error {}", f.verb.as_str());
                }
                if f.verb.as_str() == verb {
                    return Ok(f);
                }
            }
            other(f);
        }
    }
}

/// The challenge answer (`QRY`) for a `CHL` in dialect `d`: the product id and the answer,
/// with a product of the protocol crate's table that clients of `d` use.
pub fn challenge_answer(d: u8, challenge: &str) -> anyhow::Result<(&'static str, String)> {
    let product = msnp::auth::client_product(d)
        .ok_or_else(|| anyhow!("a challenge in MSNP{d}, which has none"))?;
    let answer = msnp::auth::expected_qry(d, challenge, product.id)
        .ok_or_else(|| anyhow!("no challenge answer for MSNP{d}"))?;
    Ok((product.id, answer))
}
