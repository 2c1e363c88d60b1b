//! The switchboard role: chat sessions held in memory.
//!
//! A caller gets a signed cookie from the NS (`XFR SB`), opens a session here with `USR`,
//! and invites people with `CAL`; each invitee hears of it through its NS (`RNG`, sent via
//! the bus) and joins with `ANS`. Messages are relayed byte for byte to every other
//! participant's queue. Architecture invariant: every participant of a session is
//! connected to this process, so relaying never leaves it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use butterfly_core::account::Email;
use butterfly_core::bus::{Bus, UserEvent};
use butterfly_core::metrics;
use butterfly_core::presence::Status;
use butterfly_core::store::Store;
use butterfly_core::tickets::Tickets;
use bytes::Bytes;
use msnp::codec::{DecodeError, Decoded, Direction, Limits, MsnpCodec, RejectReason};
use msnp::command::{AckMode, SbCommand, TrId};
use msnp::error::ErrorCode;
use msnp::frame::Frame;
use msnp::{reply, text};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port` clients are told to connect to (written into RNG).
    pub public_address: String,
    pub limits: Limits,
    /// USR/ANS must arrive within this time.
    pub login_timeout: Duration,
    /// A participant silent for this long is dropped.
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    /// Most people in one session.
    pub max_participants: usize,
    pub max_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            public_address: "127.0.0.1:1864".into(),
            limits: Limits::SB,
            login_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30 * 60),
            write_timeout: Duration::from_secs(30),
            max_participants: 20,
            max_connections: 100_000,
        }
    }
}

#[derive(Clone)]
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub tickets: Arc<dyn Tickets>,
    /// Open connections, the load this shard advertises in the registry.
    pub load: Arc<AtomicUsize>,
}

/// Frames waiting for one participant before it is dropped as a slow reader.
const PARTICIPANT_QUEUE: usize = 256;

/// One person in a session, as the others need to know them.
struct Participant {
    conn: u64,
    email: Email,
    /// The machine an MSNP16+ client named (`email;{guid}`), as it wrote it.
    endpoint: Option<String>,
    name: String,
    caps: String,
    tx: mpsc::Sender<Outbound>,
    kill: CancellationToken,
}

enum Outbound {
    /// Already-encoded bytes, the same for every receiver (MSG).
    Bytes(Bytes),
    /// Someone joined; formatted for the receiver's dialect. `first`: no other machine of
    /// the same account is in the session.
    Joined {
        email: Email,
        endpoint: Option<String>,
        name: String,
        caps: String,
        first: bool,
    },
    /// `last`: no other machine of the same account is left in the session.
    Left {
        email: Email,
        endpoint: Option<String>,
        last: bool,
    },
}

/// The names an MSNP16+ receiver is told a participant by: `email;{guid}` first, then the
/// plain address (what WLM 2009 lists in its window) — the plain one only for the
/// account's first machine in the session (`plain`); older receivers only the plain one.
fn names_for(dialect: u8, email: &Email, endpoint: Option<&str>, plain: bool) -> Vec<String> {
    match endpoint {
        Some(guid) if dialect >= 16 => {
            let mut names = vec![format!("{email};{guid}")];
            if plain {
                names.push(email.to_string());
            }
            names
        }
        _ if plain => vec![email.to_string()],
        _ => Vec::new(),
    }
}

#[derive(Default)]
struct ChatSession {
    participants: Vec<Participant>,
    /// People invited with CAL who have not answered yet.
    invited: HashSet<Email>,
}

impl ChatSession {
    /// May this machine of `email` answer (`ANS`)? Its account was invited (the first
    /// machine to answer takes the invitation), or another machine of its account is in
    /// the session already and this one (MSNP16+, `endpoint`) is not: every machine of
    /// an MSNP16+ user is rung, and each may join.
    fn admits_answer(&mut self, email: &Email, endpoint: Option<&str>) -> bool {
        if self.invited.remove(email) {
            return true;
        }
        let Some(endpoint) = endpoint else {
            return false;
        };
        let mine = |p: &&Participant| p.email == *email;
        self.participants.iter().any(|p| mine(&p))
            && !self.participants.iter().filter(mine).any(|p| {
                p.endpoint
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(endpoint))
            })
    }
}

#[derive(Default)]
struct Shard {
    sessions: Mutex<HashMap<u32, ChatSession>>,
    next_conn: AtomicU64,
}

impl Shard {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<u32, ChatSession>) -> R) -> R {
        // Plain data under a short lock: recover from a poisoned lock rather than fail.
        let mut guard = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }
}

/// Serve switchboard clients until `shutdown`.
pub async fn run(config: Config, deps: Deps, listener: TcpListener, shutdown: CancellationToken) {
    let config = Arc::new(config);
    let shard = Arc::new(Shard::default());
    let max = config.max_connections;
    butterfly_core::net::serve(listener, max, shutdown, move |stream, peer, token| {
        let conn = shard.next_conn.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("sb", %peer, conn);
        connection(
            config.clone(),
            deps.clone(),
            shard.clone(),
            stream,
            peer,
            conn,
            token,
        )
        .instrument(span)
    })
    .await;
}

/// Someone a USR or ANS lets in.
struct Entrant {
    sid: u32,
    email: Email,
    endpoint: Option<String>,
    name: String,
    caps: String,
    dialect: u8,
}

struct Joined {
    sid: u32,
    email: Email,
    endpoint: Option<String>,
    name: String,
    /// The name as every relayed MSG header carries it, encoded once.
    name_encoded: String,
    dialect: u8,
}

async fn connection(
    config: Arc<Config>,
    deps: Deps,
    shard: Arc<Shard>,
    stream: TcpStream,
    _peer: SocketAddr,
    conn: u64,
    shutdown: CancellationToken,
) {
    let mut c = Conn {
        // No buffers up front: an idle connection holds none (see `net::next_frame`).
        framed: Framed::with_capacity(
            stream,
            MsnpCodec::new(Direction::ClientToServer, config.limits),
            0,
        ),
        config,
        deps,
        shard,
        conn,
        joined: None,
        kill: CancellationToken::new(),
        rx: None,
        last_error: None,
    };
    let m = metrics::global();
    metrics::inc(&m.sb_connections_active);
    c.deps.load.fetch_add(1, Ordering::Relaxed);
    c.run(shutdown).await;
    c.deps.load.fetch_sub(1, Ordering::Relaxed);
    metrics::dec(&m.sb_connections_active);
    c.leave();
    let _ = tokio::time::timeout(Duration::from_secs(1), c.framed.get_mut().shutdown()).await;
}

struct Conn {
    config: Arc<Config>,
    deps: Deps,
    shard: Arc<Shard>,
    framed: Framed<TcpStream, MsnpCodec>,
    conn: u64,
    joined: Option<Joined>,
    kill: CancellationToken,
    rx: Option<mpsc::Receiver<Outbound>>,
    /// The error the command being handled answered with, for the commands metric.
    last_error: Option<ErrorCode>,
}

/// `Err` ends the connection.
type Flow = Result<(), ()>;

impl Conn {
    async fn run(&mut self, shutdown: CancellationToken) {
        let login_deadline = Instant::now() + self.config.login_timeout;
        let mut last_activity = Instant::now();
        loop {
            let deadline = if self.joined.is_some() {
                last_activity + self.config.idle_timeout
            } else {
                login_deadline
            };
            let step: Flow = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Err(()),
                _ = self.kill.cancelled() => Err(()),
                _ = tokio::time::sleep_until(deadline) => Err(()),
                Some(out) = recv_opt(&mut self.rx) => {
                    self.deliver(out);
                    Ok(())
                }
                item = butterfly_core::net::next_frame(&mut self.framed) => match item {
                    None | Some(Err(DecodeError::Io(_))) => Err(()),
                    Some(Err(DecodeError::BadLength { tr_id, .. })) => {
                        self.error(ErrorCode::Syntax, tr_id);
                        let _ = self.flush().await;
                        Err(())
                    }
                    Some(Ok(Decoded::Rejected(r))) => match r.reason {
                        RejectReason::Empty => Ok(()),
                        // An oversized message or line: the official server closed the
                        // connection, and so do we.
                        _ => {
                            self.error(ErrorCode::Syntax, r.tr_id);
                            let _ = self.flush().await;
                            Err(())
                        }
                    },
                    Some(Ok(Decoded::Frame(f))) => {
                        last_activity = Instant::now();
                        let span = tracing::debug_span!("cmd", verb = %f.verb, tr = f.tr_id());
                        Box::pin(self.on_frame(f).instrument(span)).await
                    }
                },
            };
            // Flush first: a refusal's error line goes out before the close.
            if self.flush().await.is_err() || step.is_err() {
                return;
            }
        }
    }

    fn send(&mut self, frame: Frame) {
        frame.encode_into(self.framed.write_buffer_mut());
    }

    fn error(&mut self, code: ErrorCode, tr: Option<TrId>) {
        self.last_error = Some(code);
        self.send(Frame::error(code, tr.unwrap_or(0)));
    }

    async fn flush(&mut self) -> Flow {
        if self.framed.write_buffer().is_empty() {
            return Ok(());
        }
        match tokio::time::timeout(
            self.config.write_timeout,
            futures::SinkExt::<&Frame>::flush(&mut self.framed),
        )
        .await
        {
            Ok(Ok(())) => {
                butterfly_core::net::release_write_buffer(&mut self.framed);
                Ok(())
            }
            _ => Err(()),
        }
    }

    fn deliver(&mut self, out: Outbound) {
        let dialect = self
            .joined
            .as_ref()
            .map_or(msnp::dialect::MIN, |j| j.dialect);
        match out {
            Outbound::Bytes(b) => self.framed.write_buffer_mut().extend_from_slice(&b),
            Outbound::Joined {
                email,
                endpoint,
                name,
                caps,
                first,
            } => {
                for who in names_for(dialect, &email, endpoint.as_deref(), first) {
                    self.send(reply::joi(dialect, &who, &name, &caps));
                }
            }
            Outbound::Left {
                email,
                endpoint,
                last,
            } => {
                for who in names_for(dialect, &email, endpoint.as_deref(), last) {
                    self.send(Frame::new(b"BYE").arg(who));
                }
            }
        }
    }

    /// Handle one command and count it by verb and result.
    async fn on_frame(&mut self, frame: Frame) -> Flow {
        let verb = match &frame.verb.0 {
            b"ANS" => "ANS",
            b"BYE" => "BYE",
            b"CAL" => "CAL",
            b"MSG" => "MSG",
            b"OUT" => "OUT",
            b"USR" => "USR",
            _ => "other",
        };
        self.last_error = None;
        let flow = self.dispatch(frame).await;
        metrics::global()
            .commands
            .inc("switchboard", verb, self.last_error.map(ErrorCode::code));
        flow
    }

    async fn dispatch(&mut self, frame: Frame) -> Flow {
        let cmd = match SbCommand::parse(&frame) {
            Ok(c) => c,
            Err(e) => {
                self.error(e.code, e.tr_id);
                return Ok(());
            }
        };
        match cmd {
            SbCommand::Out => Err(()),
            SbCommand::Usr { tr, email, cookie } => {
                if self.joined.is_some() {
                    self.error(ErrorCode::AlreadyLoggedIn, Some(tr));
                    return Ok(());
                }
                let Some(claims) = self.admit(&email, &cookie, false).await else {
                    return self.auth_failed(tr);
                };
                // The cookie names a fresh session; refuse a replay onto an existing one.
                let created = self.shard.with(|s| match s.entry(claims.sid) {
                    std::collections::hash_map::Entry::Occupied(_) => false,
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(ChatSession::default());
                        true
                    }
                });
                if !created {
                    return self.auth_failed(tr);
                }
                self.join(&claims);
                // Echo the name as sent: MSNP16+ clients add `;{machine-guid}`.
                self.send(
                    Frame::new(b"USR")
                        .arg(tr)
                        .arg("OK")
                        .arg(&email)
                        .arg(text::encode(&claims.name)),
                );
                info!(sid = claims.sid, "Session opened");
                metrics::inc(&metrics::global().sb_sessions_opened_total);
                Ok(())
            }
            SbCommand::Ans {
                tr,
                email,
                cookie,
                session,
            } => {
                if self.joined.is_some() {
                    self.error(ErrorCode::AlreadyLoggedIn, Some(tr));
                    return Ok(());
                }
                let claims = match self.admit(&email, &cookie, true).await {
                    Some(c) if session.parse() == Ok(c.sid) => c,
                    _ => return self.auth_failed(tr),
                };
                let invited = self.shard.with(|s| {
                    s.get_mut(&claims.sid).is_some_and(|cs| {
                        cs.admits_answer(&claims.email, claims.endpoint.as_deref())
                    })
                });
                if !invited {
                    return self.auth_failed(tr);
                }
                let others = self.join(&claims);
                // One line per name the receiver knows each participant by.
                let mut seen = HashSet::new();
                let lines: Vec<(String, &String, &String)> = others
                    .iter()
                    .flat_map(|(email, endpoint, name, caps)| {
                        let plain = seen.insert(email.clone());
                        names_for(claims.dialect, email, endpoint.as_deref(), plain)
                            .into_iter()
                            .map(move |who| (who, name, caps))
                    })
                    .collect();
                let total = lines.len();
                for (i, (who, name, caps)) in lines.iter().enumerate() {
                    self.send(reply::iro(
                        claims.dialect,
                        tr,
                        i + 1,
                        total,
                        who,
                        name,
                        caps,
                    ));
                }
                self.send(Frame::new(b"ANS").arg(tr).arg("OK"));
                Ok(())
            }
            SbCommand::Cal { tr, email } => self.cal(tr, &email).await,
            SbCommand::Msg { tr, ack, payload } => {
                let Some(me) = &self.joined else {
                    self.error(ErrorCode::NotExpected, Some(tr));
                    return Ok(());
                };
                metrics::inc(&metrics::global().sb_messages_total);
                let relay = Frame::new(b"MSG")
                    .arg(&me.email)
                    .arg(&me.name_encoded)
                    .payload(payload)
                    .to_bytes();
                let (sid, conn) = (me.sid, self.conn);
                let delivered = self.shard.with(|s| {
                    let Some(cs) = s.get(&sid) else { return false };
                    let mut others = cs.participants.iter().filter(|p| p.conn != conn).peekable();
                    if others.peek().is_none() {
                        return false;
                    }
                    let mut all = true;
                    for p in others {
                        if p.tx.try_send(Outbound::Bytes(relay.clone())).is_err() {
                            // A participant that cannot keep up is dropped, not waited for.
                            if !p.kill.is_cancelled() {
                                warn!(sid, participant = %p.email, "Participant not reading; dropping it");
                                metrics::inc(&metrics::global().sb_slow_consumers_total);
                            }
                            p.kill.cancel();
                            all = false;
                        }
                    }
                    all
                });
                match (ack, delivered) {
                    (AckMode::Acknowledged | AckMode::Data, true) => {
                        self.send(Frame::new(b"ACK").arg(tr))
                    }
                    (AckMode::Unacknowledged, _) | (AckMode::NakOnly, true) => {}
                    (_, false) => self.send(Frame::new(b"NAK").arg(tr)),
                }
                Ok(())
            }
            SbCommand::Unknown { tr, verb } => {
                debug!(%verb, "Unknown command");
                self.error(ErrorCode::Syntax, tr);
                Ok(())
            }
        }
    }

    fn auth_failed(&mut self, tr: TrId) -> Flow {
        self.error(ErrorCode::AuthFailed, Some(tr));
        Err(())
    }

    /// Enter the session named by the cookie; returns who was already there.
    /// Check a USR/ANS: the cookie must be this user's, for this role, and the user
    /// signed in (their name, capabilities and dialect come from their presence).
    async fn admit(&self, email: &str, cookie: &str, answer: bool) -> Option<Entrant> {
        // MSNP16+ adds ;{machine-guid}; the account is what the cookie is bound to.
        let (address, endpoint) = match email.split_once(';') {
            Some((a, g)) => (a, Some(g.to_owned())),
            None => (email, None),
        };
        let email = Email::parse(address).ok()?;
        let grant = self
            .deps
            .tickets
            .verify_sb(cookie, &email, &self.config.public_address)
            .ok()
            .filter(|g| g.answer == answer)?;
        let (_, mut p) = self
            .deps
            .bus
            .presence(std::slice::from_ref(&email))
            .await
            .into_iter()
            .next()?;
        // A machine of a user signed in on several (MSNP16+) joins as itself: its own
        // capabilities and dialect, not those of the machine that published last.
        if let Some(guid) = endpoint.as_deref().map(msnp::mpop::normalize_guid) {
            let mine = self
                .deps
                .bus
                .endpoints(&email)
                .await
                .into_iter()
                .find(|m| m.endpoint.as_ref().is_some_and(|e| e.guid == guid));
            if let Some(mine) = mine {
                p = mine;
            }
        }
        Some(Entrant {
            sid: grant.sid,
            name: p.friendly_name.clone(),
            caps: p.caps.clone(),
            dialect: p.dialect,
            email,
            endpoint,
        })
    }

    /// Enter the session; returns who was already there (email, machine, name, caps).
    fn join(&mut self, claims: &Entrant) -> Vec<(Email, Option<String>, String, String)> {
        let (tx, rx) = mpsc::channel(PARTICIPANT_QUEUE);
        self.rx = Some(rx);
        let me = Participant {
            conn: self.conn,
            email: claims.email.clone(),
            endpoint: claims.endpoint.clone(),
            name: claims.name.clone(),
            caps: claims.caps.clone(),
            tx,
            kill: self.kill.clone(),
        };
        let others = self.shard.with(|s| {
            let cs = s.entry(claims.sid).or_default();
            let others: Vec<_> = cs
                .participants
                .iter()
                .map(|p| {
                    (
                        p.email.clone(),
                        p.endpoint.clone(),
                        p.name.clone(),
                        p.caps.clone(),
                    )
                })
                .collect();
            let first = !cs.participants.iter().any(|p| p.email == me.email);
            for p in &cs.participants {
                let joined = Outbound::Joined {
                    email: me.email.clone(),
                    endpoint: me.endpoint.clone(),
                    name: me.name.clone(),
                    caps: me.caps.clone(),
                    first,
                };
                if p.tx.try_send(joined).is_err() {
                    p.kill.cancel();
                }
            }
            cs.participants.push(me);
            others
        });
        self.joined = Some(Joined {
            sid: claims.sid,
            email: claims.email.clone(),
            endpoint: claims.endpoint.clone(),
            name: claims.name.clone(),
            name_encoded: text::encode(&claims.name),
            dialect: claims.dialect,
        });
        others
    }

    /// Leave the session (if joined): the others get BYE; an empty session is removed.
    fn leave(&mut self) {
        let Some(me) = self.joined.take() else { return };
        let conn = self.conn;
        self.shard.with(|s| {
            let Some(cs) = s.get_mut(&me.sid) else { return };
            cs.participants.retain(|p| p.conn != conn);
            let last = !cs.participants.iter().any(|p| p.email == me.email);
            for p in &cs.participants {
                if p.tx
                    .try_send(Outbound::Left {
                        email: me.email.clone(),
                        endpoint: me.endpoint.clone(),
                        last,
                    })
                    .is_err()
                {
                    p.kill.cancel();
                }
            }
            if cs.participants.is_empty() {
                s.remove(&me.sid);
            }
        });
    }

    async fn cal(&mut self, tr: TrId, invitee: &str) -> Flow {
        let Some(me) = &self.joined else {
            self.error(ErrorCode::NotExpected, Some(tr));
            return Ok(());
        };
        let (sid, my_email, my_name) = (me.sid, me.email.clone(), me.name.clone());
        let Ok(invitee) = Email::parse(invitee) else {
            self.error(ErrorCode::InvalidUsername, Some(tr));
            return Ok(());
        };
        // WLM 2009 opens every conversation by calling itself, to bring in its other
        // signed-in machines: they are rung (not the calling one), and the call "joins" at
        // once, which is what the client waits for, whether or not there are others.
        if invitee == my_email && me.dialect >= 16 {
            let (dialect, caps) = (me.dialect, self.my_caps(sid));
            let ring = UserEvent::Ring {
                session_id: sid,
                sb_address: self.config.public_address.clone(),
                inviter: my_email.clone(),
                inviter_friendly: my_name.clone(),
                inviter_endpoint: me.endpoint.as_deref().map(msnp::mpop::normalize_guid),
            };
            self.deps.bus.send(&my_email, ring).await;
            self.send(Frame::new(b"CAL").arg(tr).arg("RINGING").arg(sid));
            self.send(reply::joi(dialect, my_email.as_str(), &my_name, &caps));
            return Ok(());
        }
        let (present, count) = self.shard.with(|s| {
            s.get(&sid).map_or((false, 0), |cs| {
                (
                    cs.participants.iter().any(|p| p.email == invitee),
                    cs.participants.len() + cs.invited.len(),
                )
            })
        });
        if present {
            self.error(ErrorCode::AlreadyOnList, Some(tr));
            return Ok(());
        }
        if count >= self.config.max_participants {
            self.error(ErrorCode::TooRapid, Some(tr));
            return Ok(());
        }
        match self.reachable(&my_email, &invitee).await {
            Ok(true) => {}
            Ok(false) => {
                self.error(ErrorCode::NotOnline, Some(tr));
                return Ok(());
            }
            // The store could not answer: say so, rather than that the invitee is offline.
            Err(e) => {
                warn!(error = %e, "Invitee lookup failed");
                self.error(ErrorCode::DatabaseError, Some(tr));
                return Ok(());
            }
        }
        self.shard.with(|s| {
            if let Some(cs) = s.get_mut(&sid) {
                cs.invited.insert(invitee.clone());
            }
        });
        let ring = UserEvent::Ring {
            session_id: sid,
            sb_address: self.config.public_address.clone(),
            inviter: my_email,
            inviter_friendly: my_name,
            inviter_endpoint: None,
        };
        if self.deps.bus.send(&invitee, ring).await == 0 {
            self.shard.with(|s| {
                if let Some(cs) = s.get_mut(&sid) {
                    cs.invited.remove(&invitee);
                }
            });
            self.error(ErrorCode::NotOnline, Some(tr));
            return Ok(());
        }
        self.send(Frame::new(b"CAL").arg(tr).arg("RINGING").arg(sid));
        Ok(())
    }

    /// My capabilities as the session knows them.
    fn my_caps(&self, sid: u32) -> String {
        let conn = self.conn;
        self.shard.with(|s| {
            s.get(&sid)
                .and_then(|cs| cs.participants.iter().find(|p| p.conn == conn))
                .map(|p| p.caps.clone())
                .unwrap_or_default()
        })
    }

    /// The invitee is signed in, not appearing offline, and does not block me; `Err` when
    /// the store could not say (the caller is told 501, not that the invitee is offline).
    async fn reachable(
        &self,
        me: &Email,
        invitee: &Email,
    ) -> Result<bool, butterfly_core::store::StoreError> {
        let online = self
            .deps
            .bus
            .presence(std::slice::from_ref(invitee))
            .await
            .into_iter()
            .any(|(_, p)| p.status != Status::Hidden);
        if !online {
            return Ok(false);
        }
        let store = &self.deps.store;
        let (them, me) = (
            store.account_by_email(invitee).await?,
            store.account_by_email(me).await?,
        );
        let (Some(them), Some(me)) = (them, me) else {
            return Ok(false);
        };
        Ok(store.peer_view(them.id, me.id).await?.lets_me_see())
    }
}

async fn recv_opt(rx: &mut Option<mpsc::Receiver<Outbound>>) -> Option<Outbound> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
