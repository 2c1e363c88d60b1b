//! The HTTP gateway (`POST /gateway/gateway.dll`) as a client behind a proxy uses it:
//! [`request`] makes one exchange and reads the `X-MSN-Messenger` header; [`connect_ns`]
//! and [`connect_sb`] give a [`Client`] whose bytes travel through the gateway, with a
//! transport that sends what the client writes and polls while it is quiet, as MSN
//! Messenger's HTTP mode does.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::client::Client;

pub const PATH: &str = "/gateway/gateway.dll";

/// How long the transport waits for client bytes before it polls. Real clients poll
/// every 2 s; tests poll often so they do not wait on the interval.
pub const POLL_EVERY: Duration = Duration::from_millis(40);

/// One gateway response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// From `X-MSN-Messenger`.
    pub session_id: Option<String>,
    pub gw_ip: Option<String>,
    /// `Session=close`: the MSNP connection is over.
    pub closed: bool,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `POST /gateway/gateway.dll?{query}` with `body`.
pub async fn request(http: SocketAddr, query: &str, body: &[u8]) -> Reply {
    let resp = crate::http::post(
        http,
        &format!("{PATH}?{query}"),
        &[("Content-Type", "application/x-msn-messenger")],
        body,
    )
    .await;
    let mut reply = Reply {
        status: resp.status,
        session_id: None,
        gw_ip: None,
        closed: false,
        content_type: resp.header("Content-Type").map(str::to_owned),
        body: resp.body.clone(),
    };
    if let Some(header) = resp.header("X-MSN-Messenger") {
        for field in header.split(';').map(str::trim) {
            match field.split_once('=') {
                Some(("SessionID", v)) => reply.session_id = Some(v.to_owned()),
                Some(("GW-IP", v)) => reply.gw_ip = Some(v.to_owned()),
                Some(("Session", "close")) => reply.closed = true,
                _ => {}
            }
        }
    }
    reply
}

/// A client of `dialect` on the notification server, through the gateway at `http`.
pub fn connect_ns(http: SocketAddr, dialect: u8) -> Client {
    connect(
        http,
        "Action=open&Server=NS&IP=messenger.hotmail.com".into(),
        dialect,
    )
}

/// A client on a switchboard, through the gateway: `host` is the host of the `XFR`/`RNG`
/// address (clients drop the port). The first command must be `USR` or `ANS`.
pub fn connect_sb(http: SocketAddr, host: &str, dialect: u8) -> Client {
    connect(http, format!("Action=open&Server=SB&IP={host}"), dialect)
}

fn connect(http: SocketAddr, open: String, dialect: u8) -> Client {
    let (client_end, transport_end) = tokio::io::duplex(256 * 1024);
    tokio::spawn(transport(http, open, transport_end));
    Client::over(Box::new(client_end), dialect)
}

/// Carry the client's bytes in requests and the responses back; end (closing the
/// client's stream) on `Session=close`, a refusal, or the client closing.
async fn transport(http: SocketAddr, open: String, mut pipe: DuplexStream) {
    let mut session: Option<String> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let body = match session {
            // A session opens with the client's first command.
            None => match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf[..n].to_vec(),
            },
            // The gateway cannot push: with nothing to send, the client polls on a timer.
            Some(_) => tokio::select! {
                r = pipe.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf[..n].to_vec(),
                },
                () = tokio::time::sleep(POLL_EVERY) => Vec::new(),
            },
        };
        let query = match (&session, body.is_empty()) {
            (None, _) => open.clone(),
            (Some(id), true) => format!("Action=poll&SessionID={id}"),
            (Some(id), false) => format!("SessionID={id}"),
        };
        let reply = request(http, &query, &body).await;
        if reply.status != 200 {
            return;
        }
        // Clients follow the latest SessionID.
        session = reply.session_id.or(session);
        if session.is_none() || pipe.write_all(&reply.body).await.is_err() || reply.closed {
            return;
        }
    }
}
