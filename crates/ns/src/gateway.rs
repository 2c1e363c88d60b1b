//! The HTTP polling gateway, `POST /gateway/gateway.dll`: MSNP carried in HTTP requests
//! for clients that can reach nothing but a web proxy (every dialect, MSNP2–18).
//!
//! A gateway session is one MSNP connection. `Action=open&Server=NS` starts a normal NS
//! session of this process over an in-memory pipe; `Action=open&Server=SB&IP=host` opens
//! a TCP connection to a switchboard shard of this deployment. Each request carries the
//! client's bytes in its body; each response carries what the upstream sent since the
//! last response, in whole commands, and the header
//! `X-MSN-Messenger: SessionID=…; GW-IP=…` (`; Session=close` once the upstream closed,
//! after which the session is forgotten). Clients poll (`Action=poll`) every few seconds.
//!
//! Architecture invariant: the gateway never connects to an address a client names. A
//! switchboard session goes only to a shard the [`Switchboards`] port lists, and only
//! once the cookie on the first `USR`/`ANS` line verifies for that very shard.
//!
//! [`Switchboards`]: butterfly_core::switchboards::Switchboards

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use butterfly_core::account::Email;
use bytes::BytesMut;
use futures::StreamExt;
use msnp::codec::{Decoded, Direction, Limits, MsnpCodec};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The path, in lower case like every route of the HTTP listener.
pub const PATH: &str = "/gateway/gateway.dll";

const CONTENT: &str = "application/x-msn-messenger";

/// Gateway settings. Defaults suit a real deployment; tests shorten the timers.
#[derive(Debug, Clone)]
pub struct Config {
    /// `GW-IP`: the host clients send their next requests to, on port 80.
    pub public_host: String,
    /// This process's own switchboard, when it runs one: the address it advertises and
    /// its listener, dialled directly rather than through the public address.
    pub local_switchboard: Option<(String, SocketAddr)>,
    pub max_sessions: usize,
    /// Clients behind one proxy share its address: generous, but bounded.
    pub max_sessions_per_ip: usize,
    /// Largest request body; larger ones are refused (413) and forward nothing.
    pub max_body_bytes: usize,
    /// A session without a request for this long is closed, as if its TCP connection had
    /// dropped.
    pub idle_timeout: Duration,
    /// After forwarding a body: the longest wait for the upstream's answer…
    pub response_wait: Duration,
    /// …which is complete once the upstream has been quiet this long.
    pub quiet: Duration,
    /// Output held for a client that does not poll; the upstream waits beyond it.
    pub max_queued_bytes: usize,
    pub connect_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            public_host: "127.0.0.1".into(),
            local_switchboard: None,
            max_sessions: 20_000,
            max_sessions_per_ip: 500,
            max_body_bytes: 64 * 1024,
            idle_timeout: Duration::from_secs(60),
            response_wait: Duration::from_secs(1),
            quiet: Duration::from_millis(50),
            max_queued_bytes: 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The gateway's routes, to merge into the HTTP listener's router. Its NS sessions use
/// `ns` and `deps` as the TCP listener's do, and say `OUT SSD` on `shutdown`.
pub fn router(
    config: Config,
    mut ns: crate::Config,
    deps: crate::Deps,
    shutdown: CancellationToken,
) -> Router {
    // Liveness over HTTP is the gateway's idle rule: clients poll instead of sending
    // PNG, so the NS's own silence limit must not close them.
    ns.idle_timeout = ns.idle_timeout.max(Duration::from_secs(24 * 3600));
    routes(Arc::new(Gateway {
        node: rand::random(),
        config,
        ns: Arc::new(ns),
        deps: Arc::new(deps),
        shutdown,
        sessions: Mutex::new(Sessions::default()),
    }))
}

fn routes(gateway: Arc<Gateway>) -> Router {
    Router::new().route(PATH, post(handle)).with_state(gateway)
}

struct Gateway {
    /// The first half of every SessionID this process hands out.
    node: u32,
    config: Config,
    ns: Arc<crate::Config>,
    deps: Arc<crate::Deps>,
    shutdown: CancellationToken,
    sessions: Mutex<Sessions>,
}

#[derive(Default)]
struct Sessions {
    by_id: HashMap<String, Arc<Upstream>>,
    per_ip: HashMap<IpAddr, usize>,
}

/// One gateway session: the way to its upstream connection and what it sent.
struct Upstream {
    ip: IpAddr,
    /// Request bodies, to the task that writes them upstream.
    input: mpsc::Sender<Bytes>,
    state: Mutex<Queue>,
    /// Counts frames queued (and the close), so a request can wait for new output.
    progress: watch::Sender<u64>,
    /// Signalled when the client takes the queue: the reader may go on.
    taken: Notify,
    in_flight: AtomicBool,
    /// Ends the session's task: the client was told `Session=close`.
    stop: CancellationToken,
}

struct Queue {
    out: BytesMut,
    closed: bool,
    last_seen: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ns,
    Sb,
}

impl Upstream {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, frame: &msnp::frame::Frame) {
        frame.encode_into(&mut self.lock().out);
        self.progress.send_modify(|n| *n += 1);
    }

    fn close(&self) {
        self.lock().closed = true;
        self.progress.send_modify(|n| *n += 1);
    }

    fn idle_until(&self, idle: Duration) -> Instant {
        self.lock().last_seen + idle
    }
}

/// Marks a session busy for the length of one request.
struct InFlight<'a>(&'a Upstream);

impl<'a> InFlight<'a> {
    fn take(up: &'a Upstream) -> Option<InFlight<'a>> {
        up.in_flight
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| InFlight(up))
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.store(false, Ordering::Release);
    }
}

/// The query of a gateway request. Names are matched in any case.
#[derive(Debug, Default, PartialEq, Eq)]
struct Params<'a> {
    action: Option<&'a str>,
    server: Option<&'a str>,
    ip: Option<&'a str>,
    session: Option<&'a str>,
}

fn params(query: &str) -> Params<'_> {
    let mut p = Params::default();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name.to_ascii_lowercase().as_str() {
            "action" => &mut p.action,
            "server" => &mut p.server,
            "ip" => &mut p.ip,
            "sessionid" => &mut p.session,
            _ => continue,
        };
        *slot = Some(value);
    }
    p
}

fn refuse(status: StatusCode) -> Response {
    status.into_response()
}

async fn handle(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    // Without connection info (a router served without it) every client is one address.
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let query = request.uri().query().unwrap_or_default().to_owned();
    // Refused before reading: a body announced too large is never buffered.
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > gw.config.max_body_bytes as u64) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let Ok(body) = axum::body::to_bytes(request.into_body(), gw.config.max_body_bytes).await else {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE);
    };
    let p = params(&query);
    let action = p.action.map(str::to_ascii_lowercase);
    match (action.as_deref(), p.session) {
        (Some("open"), _) => {
            let server = p.server.unwrap_or("NS");
            if server.eq_ignore_ascii_case("NS") {
                gw.open_ns(ip, body).await
            } else if server.eq_ignore_ascii_case("SB") {
                gw.open_sb(ip, p.ip.unwrap_or_default(), body).await
            } else {
                refuse(StatusCode::BAD_REQUEST)
            }
        }
        (Some("poll") | None, Some(id)) => {
            let up = gw.sessions().by_id.get(id).cloned();
            match up {
                Some(up) => gw.exchange(id, &up, body).await,
                None => refuse(StatusCode::BAD_REQUEST),
            }
        }
        _ => refuse(StatusCode::BAD_REQUEST),
    }
}

impl Gateway {
    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn has_room(&self, sessions: &Sessions, ip: IpAddr) -> bool {
        sessions.by_id.len() < self.config.max_sessions
            && sessions.per_ip.get(&ip).copied().unwrap_or(0) < self.config.max_sessions_per_ip
    }

    /// Register a session for `ip`, or None when a cap is reached.
    fn register(&self, ip: IpAddr) -> Option<(String, Arc<Upstream>, mpsc::Receiver<Bytes>)> {
        let (input, rx) = mpsc::channel(4);
        let up = Arc::new(Upstream {
            ip,
            input,
            state: Mutex::new(Queue {
                out: BytesMut::new(),
                closed: false,
                last_seen: Instant::now(),
            }),
            progress: watch::Sender::new(0),
            taken: Notify::new(),
            in_flight: AtomicBool::new(false),
            stop: CancellationToken::new(),
        });
        let mut sessions = self.sessions();
        if !self.has_room(&sessions, ip) {
            return None;
        }
        // The random half is what makes the id unguessable; the `.` is what clients need.
        let id = loop {
            let id = format!("{}.{}", self.node, rand::random::<u64>());
            if !sessions.by_id.contains_key(&id) {
                break id;
            }
        };
        sessions.by_id.insert(id.clone(), up.clone());
        *sessions.per_ip.entry(ip).or_default() += 1;
        Some((id, up, rx))
    }

    /// Drop `id` from the table, if it still names `up`.
    fn forget(&self, id: &str, up: &Arc<Upstream>) {
        let mut sessions = self.sessions();
        if !sessions.by_id.get(id).is_some_and(|u| Arc::ptr_eq(u, up)) {
            return;
        }
        sessions.by_id.remove(id);
        if let Some(n) = sessions.per_ip.get_mut(&up.ip) {
            *n -= 1;
            if *n == 0 {
                sessions.per_ip.remove(&up.ip);
            }
        }
    }

    async fn open_ns(self: &Arc<Self>, ip: IpAddr, body: Bytes) -> Response {
        let Some((id, up, rx)) = self.register(ip) else {
            debug!(%ip, "Gateway session refused: too many sessions");
            return refuse(StatusCode::SERVICE_UNAVAILABLE);
        };
        // Room for a whole request body each way, so neither side waits on the other.
        let (ours, theirs) = tokio::io::duplex(2 * self.config.max_body_bytes.max(16 * 1024));
        // Over HTTP there is no client port: the profile says 0.
        let peer = SocketAddr::new(ip, 0);
        tokio::spawn(crate::session::run(
            self.ns.clone(),
            self.deps.clone(),
            theirs,
            peer,
            self.shutdown.clone(),
        ));
        info!(%ip, session = %id, "Gateway session opened to the NS");
        tokio::spawn(
            self.clone()
                .pump(id.clone(), up.clone(), ours, rx, Kind::Ns),
        );
        self.exchange(&id, &up, body).await
    }

    async fn open_sb(self: &Arc<Self>, ip: IpAddr, host: &str, body: Bytes) -> Response {
        let Some((user, cookie)) = first_line_credentials(&body) else {
            return refuse(StatusCode::BAD_REQUEST);
        };
        if !self.has_room(&self.sessions(), ip) {
            return refuse(StatusCode::SERVICE_UNAVAILABLE);
        }
        // Only a shard of ours, and only the one this cookie was minted for.
        let shard = self
            .deps
            .switchboards
            .addresses()
            .into_iter()
            .filter(|a| names_shard(host, a))
            .find(|a| self.deps.tickets.verify_sb(&cookie, &user, a).is_ok());
        let Some(shard) = shard else {
            warn!(%ip, host, "Gateway switchboard session refused: no shard of ours takes this cookie there");
            return refuse(StatusCode::FORBIDDEN);
        };
        let dial = match &self.config.local_switchboard {
            Some((advertised, listener)) if *advertised == shard => {
                loopback_if_unspecified(*listener).to_string()
            }
            _ => shard.clone(),
        };
        let stream = match tokio::time::timeout(
            self.config.connect_timeout,
            TcpStream::connect(&dial),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                warn!(error = %e, shard, "Gateway cannot reach a switchboard shard");
                return refuse(StatusCode::BAD_GATEWAY);
            }
            Err(_) => {
                warn!(shard, "Gateway timed out reaching a switchboard shard");
                return refuse(StatusCode::BAD_GATEWAY);
            }
        };
        let _ = stream.set_nodelay(true);
        let Some((id, up, rx)) = self.register(ip) else {
            return refuse(StatusCode::SERVICE_UNAVAILABLE);
        };
        info!(%ip, session = %id, shard, "Gateway session opened to a switchboard");
        tokio::spawn(
            self.clone()
                .pump(id.clone(), up.clone(), stream, rx, Kind::Sb),
        );
        self.exchange(&id, &up, body).await
    }

    /// One request on a session: forward the body, collect the answer, respond.
    async fn exchange(&self, id: &str, up: &Arc<Upstream>, body: Bytes) -> Response {
        let Some(_busy) = InFlight::take(up) else {
            debug!(session = %id, "Gateway request while another is in flight");
            return refuse(StatusCode::BAD_REQUEST);
        };
        up.lock().last_seen = Instant::now();
        if !body.is_empty() {
            let mut progress = up.progress.subscribe();
            progress.borrow_and_update();
            match tokio::time::timeout(self.config.response_wait, up.input.send(body)).await {
                Ok(Ok(())) => self.await_answer(&mut progress).await,
                // The upstream is gone; the queue says so below.
                Ok(Err(_)) => {}
                Err(_) => {
                    warn!(session = %id, "Gateway upstream does not read; closing");
                    up.stop.cancel();
                    up.close();
                }
            }
        }
        let (out, closed) = {
            let mut q = up.lock();
            (q.out.split().freeze(), q.closed)
        };
        up.taken.notify_one();
        if closed {
            self.forget(id, up);
            up.stop.cancel();
            debug!(session = %id, "Gateway session closed");
        }
        let mut header = format!("SessionID={id}; GW-IP={}", self.config.public_host);
        if closed {
            header.push_str("; Session=close");
        }
        let Ok(header) = HeaderValue::try_from(header) else {
            return refuse(StatusCode::INTERNAL_SERVER_ERROR);
        };
        (
            StatusCode::OK,
            [
                ("x-msn-messenger", header),
                (CONTENT_TYPE.as_str(), HeaderValue::from_static(CONTENT)),
            ],
            out,
        )
            .into_response()
    }

    /// Wait for the upstream's first output (or its close), then until it has been quiet
    /// for a moment, all within `response_wait`.
    async fn await_answer(&self, progress: &mut watch::Receiver<u64>) {
        let deadline = Instant::now() + self.config.response_wait;
        let mut answered = false;
        loop {
            let until = if answered {
                deadline.min(Instant::now() + self.config.quiet)
            } else {
                deadline
            };
            match tokio::time::timeout_at(until, progress.changed()).await {
                Ok(Ok(())) => answered = true,
                Ok(Err(_)) | Err(_) => return,
            }
        }
    }

    /// The session's task: writes request bodies upstream, queues what comes back in
    /// whole frames, and ends the connection when the client stops asking.
    async fn pump<S: AsyncRead + AsyncWrite + Send + 'static>(
        self: Arc<Self>,
        id: String,
        up: Arc<Upstream>,
        stream: S,
        mut input: mpsc::Receiver<Bytes>,
        kind: Kind,
    ) {
        let (read, mut write) = tokio::io::split(stream);
        let writer = async {
            while let Some(bytes) = input.recv().await {
                if write.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        };
        // Decoded as a client would, so a response never ends inside a command.
        let mut frames = FramedRead::new(
            read,
            MsnpCodec::new(Direction::ServerToClient, Limits::CLIENT),
        );
        let reader = async {
            loop {
                while up.lock().out.len() >= self.config.max_queued_bytes {
                    up.taken.notified().await;
                }
                match frames.next().await {
                    Some(Ok(Decoded::Frame(f))) => {
                        // The payload table depends on the dialect VER settled.
                        if kind == Kind::Ns
                            && f.verb.as_str() == "VER"
                            && let Some(d) = f.args.get(1).and_then(|v| msnp::dialect::parse(v))
                        {
                            frames.decoder_mut().set_dialect(d);
                        }
                        up.push(&f);
                    }
                    Some(Ok(Decoded::Rejected(r))) => {
                        warn!(?r, "Gateway dropped an oversized frame from upstream");
                    }
                    None | Some(Err(_)) => return,
                }
            }
        };
        let idle = self.idle(&up);
        tokio::select! {
            () = writer => {}
            () = reader => {}
            () = up.stop.cancelled() => {}
            () = idle => {
                debug!(session = %id, "Gateway session idle; closing");
                // Forgotten before it is marked closed: nobody is asking any more.
                self.forget(&id, &up);
            }
        }
        // The upstream sees the connection end.
        drop((frames, write));
        up.close();
        // Keep the rest of the queue for the client's next request, or its absence.
        tokio::select! {
            () = self.idle(&up) => {}
            () = up.stop.cancelled() => {}
            () = self.shutdown.cancelled() => {}
        }
        self.forget(&id, &up);
    }

    /// Resolves once the session has gone `idle_timeout` without a request.
    async fn idle(&self, up: &Upstream) {
        loop {
            let at = up.idle_until(self.config.idle_timeout);
            tokio::time::sleep_until(at).await;
            if up.idle_until(self.config.idle_timeout) <= Instant::now() {
                return;
            }
        }
    }
}

/// The user and cookie of the first line a switchboard session opens with:
/// `USR tr email[;{guid}] cookie` or `ANS tr email[;{guid}] cookie sid`.
fn first_line_credentials(body: &[u8]) -> Option<(Email, String)> {
    let end = body.iter().position(|b| *b == b'\n')?;
    let line = std::str::from_utf8(&body[..end])
        .ok()?
        .trim_end_matches('\r');
    let mut words = line.split(' ').filter(|w| !w.is_empty());
    let verb = words.next()?;
    if verb != "USR" && verb != "ANS" {
        return None;
    }
    let _tr = words.next()?;
    let user = words.next()?;
    let cookie = words.next()?;
    // MSNP16+ names the endpoint after the address.
    let user = user.split(';').next().unwrap_or(user);
    Some((Email::parse(user).ok()?, cookie.to_owned()))
}

/// Whether the `IP` a client names is `shard` (`host:port`). Clients drop the port;
/// given one, it must be the shard's.
fn names_shard(ip: &str, shard: &str) -> bool {
    let ip = ip.trim();
    if ip.is_empty() {
        return false;
    }
    if ip.eq_ignore_ascii_case(shard) {
        return true;
    }
    let Some((host, _port)) = shard.rsplit_once(':') else {
        return false;
    };
    let unbracket = |h: &str| h.trim_start_matches('[').trim_end_matches(']').to_owned();
    unbracket(host).eq_ignore_ascii_case(&unbracket(ip))
}

fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    async fn gateway(config: Config) -> (Arc<Gateway>, SocketAddr) {
        let store = butterfly_store::SqliteStore::open_url("sqlite::memory:")
            .await
            .unwrap();
        let deps = crate::Deps {
            store: Arc::new(store),
            bus: Arc::new(butterfly_bus::MemoryBus::new()),
            tickets: Arc::new(butterfly_core::tickets::JwtTickets::new("k", &[7; 32])),
            switchboards: Arc::new(butterfly_core::switchboards::OneSwitchboard(
                "127.0.0.1:1864".into(),
            )),
        };
        let gw = Arc::new(Gateway {
            node: 7,
            config,
            ns: Arc::new(crate::Config::default()),
            deps: Arc::new(deps),
            shutdown: CancellationToken::new(),
            sessions: Mutex::new(Sessions::default()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = routes(gw.clone()).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (gw, addr)
    }

    /// One request; the status and the `X-MSN-Messenger` header.
    async fn post(addr: SocketAddr, query: &str, body: &str) -> (u16, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "POST {PATH}?{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        let status = raw[9..12].parse().unwrap();
        let header = raw
            .lines()
            .find_map(|l| l.strip_prefix("x-msn-messenger: "))
            .unwrap_or_default()
            .to_owned();
        (status, header)
    }

    fn session_id(header: &str) -> String {
        let field = header.split("; ").next().unwrap();
        field.strip_prefix("SessionID=").unwrap().to_owned()
    }

    const OPEN: &str = "Action=open&Server=NS";
    const VER: &str = "VER 1 MSNP12 CVR0\r\n";

    #[tokio::test]
    async fn sessions_are_capped_per_address_and_in_total() {
        let (_gw, addr) = gateway(Config {
            max_sessions_per_ip: 1,
            ..Config::default()
        })
        .await;
        let (status, header) = post(addr, OPEN, VER).await;
        assert_eq!(status, 200);
        assert!(header.starts_with("SessionID=7."), "{header}");
        assert_eq!(post(addr, OPEN, VER).await.0, 503);
        // A closed session makes room again.
        let id = session_id(&header);
        let (status, closed) = post(addr, &format!("SessionID={id}"), "OUT\r\n").await;
        assert_eq!(status, 200);
        if !closed.ends_with("; Session=close") {
            let (_, closed) = post(addr, &format!("Action=poll&SessionID={id}"), "").await;
            assert!(closed.ends_with("; Session=close"), "{closed}");
        }
        assert_eq!(post(addr, OPEN, VER).await.0, 200);

        let (_gw, addr) = gateway(Config {
            max_sessions: 1,
            ..Config::default()
        })
        .await;
        assert_eq!(post(addr, OPEN, VER).await.0, 200);
        assert_eq!(post(addr, OPEN, VER).await.0, 503);
    }

    #[tokio::test]
    async fn an_idle_session_is_closed_and_forgotten() {
        let (gw, addr) = gateway(Config {
            idle_timeout: Duration::from_millis(200),
            ..Config::default()
        })
        .await;
        let (status, header) = post(addr, OPEN, VER).await;
        assert_eq!(status, 200);
        let id = session_id(&header);
        let up = gw.sessions().by_id.get(&id).cloned().unwrap();
        // Nobody asks: the gateway ends the upstream on its own.
        up.progress
            .subscribe()
            .wait_for(|_| up.lock().closed)
            .await
            .unwrap();
        assert!(gw.sessions().by_id.is_empty());
        assert!(gw.sessions().per_ip.is_empty());
        assert_eq!(
            post(addr, &format!("Action=poll&SessionID={id}"), "")
                .await
                .0,
            400
        );
    }

    #[test]
    fn query_names_in_any_case() {
        assert_eq!(
            params("Action=open&Server=SB&IP=10.0.0.1"),
            Params {
                action: Some("open"),
                server: Some("SB"),
                ip: Some("10.0.0.1"),
                session: None
            }
        );
        assert_eq!(params("sessionid=1.2&action=poll").session, Some("1.2"));
        assert_eq!(params(""), Params::default());
    }

    #[test]
    fn a_client_names_a_shard_by_host_or_by_its_exact_address() {
        assert!(names_shard("sb1.example.com", "SB1.example.com:1864"));
        assert!(names_shard("10.0.0.1:1864", "10.0.0.1:1864"));
        assert!(names_shard("::1", "[::1]:1864"));
        assert!(!names_shard("10.0.0.1:22", "10.0.0.1:1864"));
        assert!(!names_shard("10.0.0.2", "10.0.0.1:1864"));
        assert!(!names_shard("", "10.0.0.1:1864"));
    }

    #[test]
    fn credentials_come_from_the_first_usr_or_ans_line() {
        let (user, cookie) =
            first_line_credentials(b"USR 1 a@b.com;{0a-1} 12.34.C.ff\r\nCAL 2 x@y.z\r\n").unwrap();
        assert_eq!((user.as_str(), cookie.as_str()), ("a@b.com", "12.34.C.ff"));
        let (user, _) = first_line_credentials(b"ANS 1 a@b.com 1.2.A.ff 77\r\n").unwrap();
        assert_eq!(user.as_str(), "a@b.com");
        for bad in [
            &b"USR 1 a@b.com cookie"[..],
            b"CAL 1 a@b.com cookie\r\n",
            b"USR 1 a@b.com\r\n",
            b"USR 1 not-an-address cookie\r\n",
        ] {
            assert!(first_line_credentials(bad).is_none(), "{bad:?}");
        }
    }
}
