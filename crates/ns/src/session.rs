//! One client connection: the state machine from VER to OUT.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use butterfly_core::account::{Account, Email, UserId};
use butterfly_core::bus::{Event, SESSION_QUEUE, SessionId, UserEvent};
use butterfly_core::inbox::{Inbox, InboxSender, Received, inbox};
use butterfly_core::lists::{
    ContactRef, EditOutcome, GroupRef, Gtc, List, ListError, ListOp, PeerView, Privacy, Roster,
};
use butterfly_core::metrics;
use butterfly_core::net::Readiness;
use butterfly_core::presence::{Presence, Status};
use butterfly_core::store::StoreError;
use butterfly_core::tickets::SbGrant;
use bytes::Bytes;
use msnp::codec::{DecodeError, Decoded, Direction, MsnpCodec, RejectReason, Rejection};
use msnp::command::{NsCommand, TrId, UsrAuth};
use msnp::dialect::{self, AuthKind};
use msnp::error::ErrorCode;
use msnp::frame::Frame;
use msnp::ml::{self, MlKind};
use msnp::{reply, text};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};
use uuid::Uuid;

use crate::{Config, Deps, sync};

/// The UBX document that clears a contact's personal message.
const EMPTY_PERSONAL: &[u8] = b"<Data><PSM></PSM><CurrentMedia></CurrentMedia></Data>";

/// Errors before sign-in after which we stop answering and close.
const MAX_ERRORS_BEFORE_LOGIN: u32 = 20;
/// Most bytes we hold for a client that is not reading.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

/// Commands a client may send the NS. Anything else is counted as `other`, so a client
/// cannot create metric series at will.
const NS_VERBS: &[&str] = &[
    "ADC", "ADD", "ADG", "ADL", "BLP", "CHG", "CVR", "FQY", "GCF", "GTC", "IMS", "INF", "OUT",
    "PNG", "PRP", "PUT", "QRY", "REA", "REG", "REM", "RML", "RMG", "SBP", "SDG", "SYN", "URL",
    "USR", "UUN", "UUX", "VER", "XFR",
];

fn verb_label(verb: &[u8]) -> &'static str {
    NS_VERBS
        .iter()
        .find(|v| v.as_bytes() == verb)
        .copied()
        .unwrap_or("other")
}

/// What a session runs over: a TCP connection, or the HTTP gateway's in-memory pipe.
pub(crate) trait Stream:
    AsyncRead + AsyncWrite + Readiness + Unpin + Send + 'static
{
}
impl<S: AsyncRead + AsyncWrite + Readiness + Unpin + Send + 'static> Stream for S {}

/// The connection's task. A plain function returning the future (not an `async fn`
/// awaiting an inner one) so the arguments are not stored twice in every task.
///
/// `peer` is the client's address as the profile reports it (`ClientIP`/`ClientPort`):
/// the TCP peer, or the HTTP peer with port 0 for a gateway session.
pub(crate) fn run<S: Stream>(
    config: Arc<Config>,
    deps: Arc<Deps>,
    stream: S,
    peer: SocketAddr,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send {
    let span = tracing::info_span!("ns", %peer, user = tracing::field::Empty);
    async move {
        let codec = MsnpCodec::new(Direction::ClientToServer, config.limits);
        let (tx, rx) = inbox(SESSION_QUEUE);
        let mut s = Session {
            now_online: None,
            // No buffers up front: an idle connection holds none (see `net::next_frame`).
            framed: Framed::with_capacity(stream, codec, 0),
            peer,
            config,
            deps,
            dialect: None,
            auth: Auth::Start,
            inbox_tx: tx,
            inbox: rx,
            errors: 0,
            last_error: None,
        };
        let m = metrics::global();
        metrics::inc(&m.ns_connections_total);
        metrics::inc(&m.ns_connections_active);
        let reason = s.run(shutdown).await;
        metrics::dec(&m.ns_connections_active);
        if matches!(reason, Close::SlowConsumer) {
            metrics::inc(&m.ns_slow_consumers_total);
        }
        debug!(?reason, "Connection closed");
        s.close().await;
    }
    .instrument(span)
}

#[derive(Debug)]
enum Close {
    ClientGone,
    ClientOut,
    Shutdown,
    Timeout,
    SlowConsumer,
    Replaced,
    Refused,
    Io,
}

/// What handling one command leads to.
type Flow = Result<(), Close>;

enum Auth {
    Start,
    /// `USR MD5 I` answered with a salt; `account` is None for unknown names (we still
    /// answer with a salt so names cannot be probed).
    Md5 {
        account: Option<Box<Account>>,
    },
    /// `USR TWN I` answered; the ticket must name this user.
    Twn {
        email: Email,
    },
    /// `USR SSO I` answered with `nonce`; the MBI blob must encrypt it with the ticket's
    /// binary secret.
    Sso {
        email: Email,
        nonce: String,
    },
}

/// A contact I watch, and what I have been shown of them.
struct Watched {
    view: PeerView,
    /// Their current presence and the one I was last shown: shared snapshots, so a
    /// contact online for a hundred watchers is one allocation, not two hundred.
    presence: Option<Arc<Presence>>,
    shown: Option<Arc<Presence>>,
}

struct Online {
    id: UserId,
    email: Email,
    /// The machine GUID (MSNP16+), lower case without braces.
    endpoint: Option<String>,
    /// What this machine said about itself (`<PrivateEndpointData>`, MSNP16+), boxed: most
    /// sessions never have it.
    machine: Option<Box<msnp::mpop::PrivateEndpoint>>,
    /// The status my own client was last shown for my account (CHG, or NLN about myself
    /// when another of my machines changed it; MSNP16+).
    shown_self: Option<Status>,
    /// Another of my machines has a presence (MSNP16+): read at sign-in, and again on
    /// every `EndpointsChanged`, so a machine alone does not read the bus on each change.
    company: bool,
    session: SessionId,
    roster: Roster,
    /// `roster` is current — read at sign-in, and every change since reloaded — and no
    /// `SYN` has been answered yet: the first `SYN` (which MSNP2–12 clients send right
    /// after signing in) sends it as it is instead of reading it again. A reload that
    /// fails clears it.
    roster_unsent: bool,
    /// My presence, set by CHG; None until the first CHG.
    presence: Option<Presence>,
    /// My latest UUX document (also carried by `presence` once there is one).
    personal: Option<Bytes>,
    watched: HashMap<Email, Watched>,
    challenge: Option<String>,
    next_challenge: Option<Instant>,
    last_activity: Instant,
}

struct Session<S> {
    config: Arc<Config>,
    /// Shared by every session: one pointer here, not three.
    deps: Arc<Deps>,
    framed: Framed<S, MsnpCodec>,
    peer: SocketAddr,
    dialect: Option<u8>,
    auth: Auth,
    now_online: Option<Online>,
    inbox_tx: InboxSender,
    inbox: Inbox,
    errors: u32,
    /// The error the command being handled answered with, for the commands metric.
    last_error: Option<ErrorCode>,
}

impl Online {
    /// This machine as my other machines are shown it (MSNP16+ sessions only).
    fn machine_endpoint(&self) -> Option<butterfly_core::presence::Endpoint> {
        let guid = self.endpoint.clone()?;
        let said = self.machine.as_deref().cloned().unwrap_or_default();
        Some(butterfly_core::presence::Endpoint {
            guid,
            name: said.name.unwrap_or_default(),
            idle: said.idle.unwrap_or(false),
            client_type: said.client_type.unwrap_or_else(|| "1".to_owned()),
        })
    }
}

impl<S: Stream> Session<S> {
    async fn run(&mut self, shutdown: CancellationToken) -> Close {
        let login_deadline = Instant::now() + self.config.login_timeout;
        // Set when shutdown starts: this session's moment to say OUT SSD. Spreading the
        // moments over the drain window keeps every client of a draining gateway from
        // reconnecting to the others in the same instant.
        let mut leave_at: Option<Instant> = None;
        loop {
            // One timer for whatever is due first: leaving, the idle (or sign-in)
            // deadline, or the next challenge.
            let (deadline, challenge_at) = match &self.now_online {
                Some(o) => (o.last_activity + self.config.idle_timeout, o.next_challenge),
                None => (login_deadline, None),
            };
            let mut next_timer = challenge_at.map_or(deadline, |c| c.min(deadline));
            if let Some(at) = leave_at {
                next_timer = next_timer.min(at);
            }
            let step: Flow = tokio::select! {
                biased;
                _ = shutdown.cancelled(), if leave_at.is_none() => {
                    // Not signed in yet: nothing to hand over, leave at once.
                    let spread = if self.now_online.is_some() {
                        self.config.drain_spread
                    } else {
                        Duration::ZERO
                    };
                    let at = Instant::now() + spread.mul_f64(rand::random::<f64>());
                    leave_at = Some(at);
                    Ok(())
                }
                _ = tokio::time::sleep_until(next_timer) => {
                    if leave_at.is_some_and(|at| at <= Instant::now()) {
                        self.send(Frame::new(b"OUT").arg("SSD"));
                        let _ = self.flush().await;
                        Err(Close::Shutdown)
                    } else if challenge_at.is_some_and(|c| c <= next_timer) {
                        self.challenge()
                    } else {
                        Err(Close::Timeout)
                    }
                }
                // Handling futures are boxed: they exist only while a command or event is being
                // handled, so an idle session's task stays small.
                r = self.inbox.recv() => match r {
                    Received::Event(ev) => Box::pin(self.on_event(ev)).await,
                    Received::Overflowed => Err(Close::SlowConsumer),
                },
                item = butterfly_core::net::next_frame(&mut self.framed) => match item {
                    None => Err(Close::ClientGone),
                    Some(Err(DecodeError::BadLength { tr_id, .. })) => {
                        self.error(ErrorCode::Syntax, tr_id);
                        let _ = self.flush().await;
                        Err(Close::Refused)
                    }
                    Some(Err(DecodeError::Io(_))) => Err(Close::Io),
                    Some(Ok(Decoded::Rejected(r))) => self.on_rejected(r),
                    Some(Ok(Decoded::Frame(f))) => {
                        if let Some(o) = &mut self.now_online {
                            o.last_activity = Instant::now();
                        }
                        let span = tracing::debug_span!("cmd", verb = %f.verb, tr = f.tr_id());
                        Box::pin(self.on_frame(f).instrument(span)).await
                    }
                },
            };
            if let Err(close) = step {
                let _ = self.flush().await;
                return close;
            }
            if let Err(close) = self.flush().await {
                return close;
            }
        }
    }

    async fn close(&mut self) {
        if let Some(o) = &self.now_online {
            self.deps.bus.detach(o.session).await;
        }
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.framed.get_mut().shutdown()).await;
    }

    fn dialect(&self) -> u8 {
        self.dialect.unwrap_or(dialect::MIN)
    }

    fn send(&mut self, frame: Frame) {
        frame.encode_into(self.framed.write_buffer_mut());
    }

    fn error(&mut self, code: ErrorCode, tr: Option<TrId>) {
        self.last_error = Some(code);
        self.send(Frame::error(code, tr.unwrap_or(0)));
    }

    /// Write out what is buffered; a client that does not read in time is dropped.
    async fn flush(&mut self) -> Flow {
        if self.framed.write_buffer().is_empty() {
            return Ok(());
        }
        if self.framed.write_buffer().len() > MAX_WRITE_BUFFER {
            return Err(Close::SlowConsumer);
        }
        // A client that does not read blocks this flush; its inbox then overflows, which
        // ends the wait before the write timeout.
        let flush = tokio::time::timeout(
            self.config.write_timeout,
            futures::SinkExt::<&Frame>::flush(&mut self.framed),
        );
        tokio::select! {
            r = flush => match r {
                Ok(Ok(())) => {
                    butterfly_core::net::release_write_buffer(&mut self.framed);
                    Ok(())
                }
                Ok(Err(_)) => Err(Close::Io),
                Err(_) => Err(Close::SlowConsumer),
            },
            _ = self.inbox.overflowed() => Err(Close::SlowConsumer),
        }
    }

    fn on_rejected(&mut self, r: Rejection) -> Flow {
        debug!(?r, "Rejected frame");
        match r.reason {
            RejectReason::Empty => Ok(()),
            RejectReason::LineTooLong => {
                self.error(ErrorCode::Syntax, r.tr_id);
                Err(Close::Refused)
            }
            RejectReason::PayloadTooLarge(_) | RejectReason::NotUtf8 | RejectReason::BadVerb => {
                self.error(ErrorCode::Syntax, r.tr_id);
                self.count_error()
            }
        }
    }

    fn count_error(&mut self) -> Flow {
        if self.now_online.is_none() {
            self.errors += 1;
            if self.errors > MAX_ERRORS_BEFORE_LOGIN {
                return Err(Close::Refused);
            }
        }
        Ok(())
    }

    /// Handle one command and count it by verb and result.
    async fn on_frame(&mut self, frame: Frame) -> Flow {
        let verb = verb_label(&frame.verb.0);
        self.last_error = None;
        let flow = self.dispatch(frame).await;
        metrics::global()
            .commands
            .inc("ns", verb, self.last_error.map(ErrorCode::code));
        flow
    }

    async fn dispatch(&mut self, frame: Frame) -> Flow {
        metrics::inc(&metrics::global().ns_commands_total);
        let cmd = match NsCommand::parse(&frame) {
            Ok(c) => c,
            Err(e) => {
                self.error(e.code, e.tr_id);
                return self.count_error();
            }
        };
        let online = self.now_online.is_some();
        match cmd {
            NsCommand::Unknown { tr, verb } => {
                debug!(%verb, "Unknown command");
                self.error(ErrorCode::Syntax, tr);
                self.count_error()
            }
            NsCommand::Ver { tr, versions } => self.ver(tr, versions),
            NsCommand::Png => {
                let secs = self.config.ping_interval.as_secs();
                self.send(reply::qng(self.dialect(), secs));
                Ok(())
            }
            NsCommand::Out => {
                self.send(Frame::new(b"OUT"));
                Err(Close::ClientOut)
            }
            _ if self.dialect.is_none() => self.not_expected(frame.tr_id()),
            NsCommand::Cvr { tr, args } => {
                // Recommend the version the client already has: we have no downloads.
                let v = args.get(5).cloned().unwrap_or_else(|| "1.0.0000".into());
                self.send(
                    Frame::new(b"CVR")
                        .arg(tr)
                        .arg(&v)
                        .arg(&v)
                        .arg(&v)
                        .arg("http://messenger.msn.com")
                        .arg("http://messenger.msn.com"),
                );
                Ok(())
            }
            NsCommand::Inf { tr } => {
                if self.dialect() <= 7 {
                    self.send(Frame::new(b"INF").arg(tr).arg("MD5"));
                } else {
                    self.error(ErrorCode::CommandDisabled, Some(tr));
                }
                Ok(())
            }
            NsCommand::Usr {
                tr,
                auth: UsrAuth::ShaA { ticket },
            } => {
                if !online || self.dialect() < 18 {
                    return self.not_expected(Some(tr));
                }
                self.circle_ticket(tr, &ticket);
                Ok(())
            }
            NsCommand::Usr { tr, auth } => {
                if online {
                    self.error(ErrorCode::AlreadyLoggedIn, Some(tr));
                    return Ok(());
                }
                self.usr(tr, auth).await
            }
            _ if !online => self.not_expected(frame.tr_id()),
            // MSNP13+ keeps lists in the address-book service: the SYN-era list commands
            // are gone (WLM never sends them).
            NsCommand::Syn { tr, .. }
            | NsCommand::Add { tr, .. }
            | NsCommand::Adc { tr, .. }
            | NsCommand::Rem { tr, .. }
            | NsCommand::Adg { tr, .. }
            | NsCommand::Rmg { tr, .. }
            | NsCommand::Reg { tr, .. }
            | NsCommand::Rea { tr, .. }
            | NsCommand::Sbp { tr, .. }
            | NsCommand::Gtc { tr, .. }
                if self.dialect() >= 13 =>
            {
                self.error(ErrorCode::CommandDisabled, Some(tr));
                Ok(())
            }
            NsCommand::Adl { tr, payload } => self.ml_edit(tr, &payload, true).await,
            NsCommand::Rml { tr, payload } => self.ml_edit(tr, &payload, false).await,
            NsCommand::Fqy { tr, payload } => self.fqy(tr, &payload).await,
            NsCommand::Uun {
                tr,
                target,
                kind,
                payload,
            } => self.uun(tr, &target, kind, payload).await,
            NsCommand::Uum {
                tr,
                target,
                network,
                kind,
                payload,
            } => {
                let me = self.me();
                let sender = crate::oim::Sender {
                    id: me.id,
                    email: &me.email,
                    friendly_name: &me.roster.friendly_name,
                };
                let (store, bus) = (self.deps.store.as_ref(), self.deps.bus.as_ref());
                match crate::oim::uum(store, bus, sender, &target, network, kind, &payload).await {
                    Some(Ok(())) => self.send(Frame::new(b"UUM").arg(tr).arg("OK")),
                    Some(Err(code)) => self.error(code, Some(tr)),
                    None => {}
                }
                Ok(())
            }
            // Circle documents and messages (MSNP18): there are no circles yet, so a
            // roster or presence document is acknowledged and a circle message dropped.
            NsCommand::Put { tr, .. } => {
                self.send(Frame::new(b"PUT").arg(tr).arg("OK").arg(0));
                Ok(())
            }
            NsCommand::Sdg { .. } => Ok(()),
            NsCommand::Syn { tr, .. } => {
                let me = self.me_mut();
                let roster = if std::mem::take(&mut me.roster_unsent) {
                    Ok(std::mem::take(&mut me.roster))
                } else {
                    let id = me.id;
                    self.deps.store.roster(id).await
                };
                match roster {
                    Ok(r) => {
                        for f in sync::syn(self.dialect(), tr, &r) {
                            self.send(f);
                        }
                        self.me_mut().roster = r;
                    }
                    Err(e) => {
                        warn!(error = %e, "Roster load failed");
                        self.error(ErrorCode::DatabaseError, Some(tr));
                    }
                }
                Ok(())
            }
            NsCommand::Chg {
                tr,
                status,
                caps,
                msnobj,
            } => self.chg(tr, &status, caps, msnobj, &frame).await,
            NsCommand::Add {
                tr,
                list,
                email,
                friendly,
                group,
            } => self.add(tr, &list, &email, friendly, group).await,
            NsCommand::Adc {
                tr,
                list,
                email,
                friendly,
                contact,
                group,
            } => self.adc(tr, &list, email, friendly, contact, group).await,
            NsCommand::Rem {
                tr,
                list,
                target,
                group,
            } => self.rem(tr, &list, &target, group).await,
            NsCommand::Adg { tr, name } => {
                if !dialect::has_groups(self.dialect()) {
                    return self.not_expected(Some(tr));
                }
                let Some(out) = self
                    .edit(tr, ListOp::AddGroup { name: name.clone() })
                    .await?
                else {
                    return Ok(());
                };
                let g = out.group.as_ref().expect("AddGroup returns its group");
                // MSNP10+: `ADG tr name guid 0`, as Escargot answers MSN 6.2–7.5.
                let f = if dialect::uses_guids(self.dialect()) {
                    Frame::new(b"ADG")
                        .arg(tr)
                        .arg(text::encode(&name))
                        .arg(g.guid)
                        .arg(0)
                } else {
                    Frame::new(b"ADG")
                        .arg(tr)
                        .arg(out.version)
                        .arg(text::encode(&name))
                        .arg(g.number)
                        .arg(0)
                };
                self.send(f);
                Ok(())
            }
            NsCommand::Rmg { tr, group } => {
                let Some(gref) = self.group_ref(&group) else {
                    self.error(ErrorCode::InvalidGroup, Some(tr));
                    return Ok(());
                };
                let Some(out) = self.edit(tr, ListOp::RemoveGroup { group: gref }).await? else {
                    return Ok(());
                };
                // MSNP10+ has no list versions; Escargot (tested with those clients) puts 1.
                let id = match gref {
                    GroupRef::Guid(g) => g.to_string(),
                    GroupRef::Number(n) => n.to_string(),
                };
                let f = self.versioned(b"RMG", tr, out.version);
                let f = if dialect::uses_guids(self.dialect()) {
                    f.arg(1)
                } else {
                    f
                };
                self.send(f.arg(id));
                Ok(())
            }
            NsCommand::Reg { tr, group, name } => {
                let Some(gref) = self.group_ref(&group) else {
                    self.error(ErrorCode::InvalidGroup, Some(tr));
                    return Ok(());
                };
                let Some(out) = self
                    .edit(
                        tr,
                        ListOp::RenameGroup {
                            group: gref,
                            name: name.clone(),
                        },
                    )
                    .await?
                else {
                    return Ok(());
                };
                // MSNP7–9: `REG tr ver gid name 0`; MSNP10+: `REG tr 1 name guid 0`, the
                // order Escargot answers MSN 6.2–7.5 with.
                let f = if dialect::uses_guids(self.dialect()) {
                    Frame::new(b"REG")
                        .arg(tr)
                        .arg(1)
                        .arg(text::encode(&name))
                        .arg(group)
                        .arg(0)
                } else {
                    Frame::new(b"REG")
                        .arg(tr)
                        .arg(out.version)
                        .arg(group)
                        .arg(text::encode(&name))
                        .arg(0)
                };
                self.send(f);
                Ok(())
            }
            NsCommand::Rea { tr, email, name } => {
                if Email::parse(&email).ok().as_ref() != Some(&self.me().email) {
                    self.error(ErrorCode::InvalidParameter, Some(tr));
                    return Ok(());
                }
                let Some(out) = self.rename(tr, &name).await? else {
                    return Ok(());
                };
                self.send(
                    Frame::new(b"REA")
                        .arg(tr)
                        .arg(out.version)
                        .arg(email)
                        .arg(text::encode(&name)),
                );
                Ok(())
            }
            NsCommand::Prp { tr, key, value } => {
                let value = value.unwrap_or_default();
                let out = if key == "MFN" {
                    self.rename(tr, &value).await?
                } else {
                    self.edit(
                        tr,
                        ListOp::SetProperty {
                            key: key.clone(),
                            value: value.clone(),
                        },
                    )
                    .await?
                };
                let Some(out) = out else { return Ok(()) };
                let f = self.versioned(b"PRP", tr, out.version).arg(key);
                // A cleared value is left out, not sent as an empty field.
                let f = if value.is_empty() {
                    f
                } else {
                    f.arg(text::encode(&value))
                };
                self.send(f);
                Ok(())
            }
            NsCommand::Sbp {
                tr,
                contact,
                key,
                value,
            } => {
                let Ok(guid) = Uuid::parse_str(&contact) else {
                    self.error(ErrorCode::InvalidUsername, Some(tr));
                    return Ok(());
                };
                if key != "MFN" {
                    // Contact phone numbers are the contact's own business; accept and ignore.
                    self.send(
                        Frame::new(b"SBP")
                            .arg(tr)
                            .arg(contact)
                            .arg(key)
                            .arg(text::encode(&value)),
                    );
                    return Ok(());
                }
                let Some(_) = self
                    .edit(
                        tr,
                        ListOp::SetNickname {
                            contact: guid,
                            name: value.clone(),
                        },
                    )
                    .await?
                else {
                    return Ok(());
                };
                self.send(
                    Frame::new(b"SBP")
                        .arg(tr)
                        .arg(contact)
                        .arg(key)
                        .arg(text::encode(&value)),
                );
                Ok(())
            }
            NsCommand::Blp { tr, setting } => {
                let p = Privacy::parse(&setting);
                let unchanged = p == Some(self.me().roster.privacy);
                // MSNP13+ clients send BLP at every sign-in: the setting in force is
                // simply confirmed.
                if unchanged && self.dialect() >= 13 {
                    self.send(Frame::new(b"BLP").arg(tr).arg(&setting));
                    return Ok(());
                }
                self.setting(tr, b"BLP", &setting, p.map(ListOp::SetPrivacy), unchanged)
                    .await
            }
            NsCommand::Gtc { tr, setting } => {
                let g = Gtc::parse(&setting);
                let unchanged = g == Some(self.me().roster.gtc);
                self.setting(tr, b"GTC", &setting, g.map(ListOp::SetGtc), unchanged)
                    .await
            }
            NsCommand::Qry {
                tr,
                product_id,
                answer,
            } => self.qry(tr, &product_id, &answer),
            NsCommand::Xfr { tr, target } => self.xfr(tr, &target),
            NsCommand::Uux { tr, payload } => {
                if self.dialect() < 11 {
                    return self.not_expected(Some(tr));
                }
                // MSNP16+ also sends `<EndpointData>` (this machine's capabilities, which
                // CHG carries too) and `<PrivateEndpointData>` (its name, for my other
                // machines) documents: not the personal message.
                if !is_data_document(&payload) {
                    return self.uux_machine(tr, &payload).await;
                }
                let me = self.me_mut();
                me.personal = Some(payload.clone());
                let republish = me.presence.as_mut().map(|p| {
                    p.personal = Some(payload);
                    p.clone()
                });
                if let Some(p) = republish {
                    let session = self.me().session;
                    self.deps.bus.publish_presence(session, Some(p)).await;
                }
                self.send(Frame::new(b"UUX").arg(tr).arg(0));
                self.show_my_machines(false).await;
                Ok(())
            }
            NsCommand::Gcf { tr, file } => {
                if self.dialect() < 11 {
                    return self.not_expected(Some(tr));
                }
                self.send(reply::shields(tr, &file));
                Ok(())
            }
            NsCommand::Url { tr, .. } => {
                self.send(
                    Frame::new(b"URL")
                        .arg(tr)
                        .arg("/unused1")
                        .arg("/unused2")
                        .arg(1),
                );
                Ok(())
            }
            NsCommand::Ims { tr, on } => {
                self.send(
                    Frame::new(b"IMS")
                        .arg(tr)
                        .arg(0)
                        .arg(if on { "ON" } else { "OFF" }),
                );
                Ok(())
            }
            NsCommand::Disabled { tr, .. } => {
                self.error(ErrorCode::CommandDisabled, Some(tr));
                Ok(())
            }
        }
    }

    /// `VERB tr [version]`: list-changing replies carry the list version before MSNP10.
    fn versioned(&self, verb: &[u8; 3], tr: TrId, version: u64) -> Frame {
        let f = Frame::new(verb).arg(tr);
        if dialect::uses_guids(self.dialect()) {
            f
        } else {
            f.arg(version)
        }
    }

    /// BLP/GTC: store the setting, echo it (`None` = not a valid value: 201; the value
    /// already in force: 218, as the official servers answered).
    async fn setting(
        &mut self,
        tr: TrId,
        verb: &[u8; 3],
        value: &str,
        op: Option<ListOp>,
        unchanged: bool,
    ) -> Flow {
        let Some(op) = op else {
            self.error(ErrorCode::InvalidParameter, Some(tr));
            return Ok(());
        };
        if unchanged {
            self.error(ErrorCode::AlreadyInMode, Some(tr));
            return Ok(());
        }
        if let Some(out) = self.edit(tr, op).await? {
            let f = self.versioned(verb, tr, out.version).arg(value);
            self.send(f);
        }
        Ok(())
    }

    fn not_expected(&mut self, tr: Option<TrId>) -> Flow {
        self.error(ErrorCode::NotExpected, tr);
        self.count_error()
    }

    fn me(&self) -> &Online {
        self.now_online
            .as_ref()
            .expect("only called once signed in")
    }

    fn me_mut(&mut self) -> &mut Online {
        self.now_online
            .as_mut()
            .expect("only called once signed in")
    }

    fn ver(&mut self, tr: TrId, versions: Vec<String>) -> Flow {
        if self.dialect.is_some() {
            return self.not_expected(Some(tr));
        }
        match dialect::negotiate(
            versions.iter().map(String::as_str),
            self.config.dialects.clone(),
        ) {
            Some(d) => {
                self.dialect = Some(d);
                self.framed.codec_mut().set_dialect(d);
                let mut f = Frame::new(b"VER").arg(tr).arg(format!("MSNP{d}"));
                if versions.iter().any(|v| v == "CVR0") {
                    f = f.arg("CVR0");
                }
                self.send(f);
                Ok(())
            }
            None => {
                self.send(Frame::new(b"VER").arg(tr).arg(0));
                Err(Close::Refused)
            }
        }
    }

    async fn usr(&mut self, tr: TrId, auth: UsrAuth) -> Flow {
        let kind = dialect::auth_kind(self.dialect());
        match (kind, auth, std::mem::replace(&mut self.auth, Auth::Start)) {
            (AuthKind::Md5, UsrAuth::Md5Initial { email }, _) => {
                let account = match Email::parse(&email) {
                    Ok(e) => match self.deps.store.account_by_email(&e).await {
                        Ok(a) => a.map(Box::new),
                        Err(e) => return self.storage_down(tr, e),
                    },
                    Err(_) => None,
                };
                let salt = match account.as_ref().and_then(|a| a.legacy_md5.as_ref()) {
                    Some(secret) => secret.salt.clone(),
                    None => format!("{}.{}", rand::random::<u32>(), rand::random::<u32>()),
                };
                self.send(Frame::new(b"USR").arg(tr).arg("MD5").arg("S").arg(&salt));
                self.auth = Auth::Md5 { account };
                Ok(())
            }
            (AuthKind::Md5, UsrAuth::Md5Response { hash }, Auth::Md5 { account, .. }) => {
                match account.filter(|a| a.legacy_md5.as_ref().is_some_and(|s| s.verify(&hash))) {
                    Some(a) => self.signed_in(tr, *a, None).await,
                    None => self.auth_failed(tr),
                }
            }
            (AuthKind::Twn, UsrAuth::TwnInitial { email }, _) => {
                let Ok(email) = Email::parse(&email) else {
                    return self.auth_failed(tr);
                };
                let ct = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let policy = format!(
                    "lc=1033,id=507,tw=40,fs=1,ru=http%3A%2F%2Fmessenger%2Emsn%2Ecom,ct={ct},kpp=1,kv=5,ver=2.1.0173.1,tpf={:032x}",
                    rand::random::<u128>()
                );
                if self.dialect() >= 13 {
                    self.send(reply::gcf_policies());
                }
                self.send(Frame::new(b"USR").arg(tr).arg("TWN").arg("S").arg(policy));
                self.auth = Auth::Twn { email };
                Ok(())
            }
            (AuthKind::Sso, UsrAuth::SsoInitial { email }, _) => {
                let Ok(email) = Email::parse(&email) else {
                    return self.auth_failed(tr);
                };
                let nonce = msnp::auth::new_sso_nonce();
                self.send(reply::gcf_policies());
                self.send(
                    Frame::new(b"USR")
                        .arg(tr)
                        .arg("SSO")
                        .arg("S")
                        .arg(msnp::auth::SSO_POLICY)
                        .arg(&nonce),
                );
                self.auth = Auth::Sso { email, nonce };
                Ok(())
            }
            (
                AuthKind::Sso,
                UsrAuth::SsoResponse {
                    ticket,
                    blob,
                    machine_guid,
                },
                Auth::Sso { email, nonce },
            ) => {
                let token = passport_token(&ticket);
                let claims = match self.deps.tickets.verify_passport(token) {
                    Ok(c) if c.sub == email => c,
                    _ => return self.auth_failed(tr),
                };
                // The blob proves the client holds the binary secret Passport handed out
                // with this ticket, so a ticket alone (seen on the wire) is not enough.
                let secret = self.deps.tickets.binary_secret(token);
                let proven = blob
                    .as_deref()
                    .is_some_and(|b| msnp::auth::verify_mbi_blob(&secret, &nonce, b).is_ok());
                // MSNP16+ names the machine (several may be signed in at once).
                if !proven || (self.dialect() >= 16 && machine_guid.is_none()) {
                    return self.auth_failed(tr);
                }
                let endpoint = machine_guid.as_deref().map(msnp::mpop::normalize_guid);
                match self.deps.store.account_by_id(UserId(claims.uid)).await {
                    Ok(Some(a)) if a.email == email => self.signed_in(tr, a, endpoint).await,
                    Ok(_) => self.auth_failed(tr),
                    Err(e) => self.storage_down(tr, e),
                }
            }
            (AuthKind::Twn, UsrAuth::TwnResponse { ticket }, Auth::Twn { email }) => {
                let token = passport_token(&ticket);
                let claims = match self.deps.tickets.verify_passport(token) {
                    Ok(c) if c.sub == email => c,
                    _ => return self.auth_failed(tr),
                };
                match self.deps.store.account_by_id(UserId(claims.uid)).await {
                    Ok(Some(a)) if a.email == email => self.signed_in(tr, a, None).await,
                    Ok(_) => self.auth_failed(tr),
                    Err(e) => self.storage_down(tr, e),
                }
            }
            (_, UsrAuth::Other { .. }, _) => {
                self.error(ErrorCode::CommandDisabled, Some(tr));
                Ok(())
            }
            _ => self.auth_failed(tr),
        }
    }

    fn auth_failed(&mut self, tr: TrId) -> Flow {
        info!("Sign-in refused");
        metrics::inc(&metrics::global().ns_login_failures_total);
        self.error(ErrorCode::AuthFailed, Some(tr));
        Err(Close::Refused)
    }

    /// The accounts cannot be read (the database or the address book is down): say so
    /// (501) rather than blame the password, and close; the client retries later.
    fn storage_down(&mut self, tr: TrId, e: StoreError) -> Flow {
        warn!(error = %e, "Account lookup failed at sign-in");
        self.error(ErrorCode::DatabaseError, Some(tr));
        Err(Close::Refused)
    }

    /// `endpoint`: the machine GUID an MSNP16+ client signed in with (normalised).
    async fn signed_in(&mut self, tr: TrId, account: Account, endpoint: Option<String>) -> Flow {
        tracing::Span::current().record("user", account.email.as_str());
        let bus = self.deps.bus.clone();
        let session = match bus.attach(&account.email, self.inbox_tx.clone()).await {
            Ok(session) => session,
            Err(e) => {
                warn!(error = %e, "Session registration failed at sign-in");
                self.error(ErrorCode::ServerUnavailable, Some(tr));
                return Err(Close::Refused);
            }
        };
        // Read after joining the bus: a list change from now on reaches the inbox as an
        // event (which reads the roster again), so this copy misses nothing and the first
        // SYN can answer from it.
        let roster = match self.deps.store.roster(account.id).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "Roster load failed at sign-in");
                bus.detach(session).await;
                self.error(ErrorCode::DatabaseError, Some(tr));
                return Err(Close::Refused);
            }
        };
        let elsewhere = UserEvent::SignedInElsewhere {
            session,
            endpoint: endpoint.clone(),
        };
        bus.send(&account.email, elsewhere).await;
        // The others that are online already (a machine signing in later tells us).
        let company = endpoint.is_some() && !bus.endpoints(&account.email).await.is_empty();
        let watch: Vec<Email> = roster
            .on_list(List::Forward)
            .map(|c| c.email.clone())
            .collect();
        bus.watch(session, &watch).await;
        let watched = roster
            .on_list(List::Forward)
            .map(|c| {
                (
                    c.email.clone(),
                    Watched {
                        view: c.peer,
                        presence: None,
                        shown: None,
                    },
                )
            })
            .collect();
        let ticket = self.deps.tickets.issue_passport(account.id, &account.email);
        let d = self.dialect();
        self.send(reply::usr_ok(
            d,
            tr,
            account.email.as_str(),
            &roster.friendly_name,
        ));
        if d >= 11 {
            self.send(Frame::new(b"SBS").arg(0).arg("null"));
        }
        if d >= 5 {
            let login_time = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let ip = self.peer.ip().to_string();
            self.send(reply::profile(
                d,
                &reply::Profile {
                    login_time,
                    puid: butterfly_core::ids::puid(account.id),
                    ticket: &ticket,
                    client_ip: &ip,
                    client_port: self.peer.port(),
                },
            ));
        }
        if d >= 16 {
            // The own-UBX WLM 2009 waits for: no personal message yet.
            self.send(reply::ubx(d, account.email.as_str(), Bytes::new()));
        }
        info!(dialect = d, "Signed in");
        metrics::inc(&metrics::global().ns_logins_total);
        self.now_online = Some(Online {
            id: account.id,
            email: account.email,
            endpoint,
            machine: None,
            shown_self: None,
            company,
            session,
            roster,
            roster_unsent: true,
            presence: None,
            personal: None,
            watched,
            challenge: None,
            next_challenge: None,
            last_activity: Instant::now(),
        });
        Ok(())
    }

    async fn chg(
        &mut self,
        tr: TrId,
        status: &str,
        caps: Option<String>,
        msnobj: Option<String>,
        frame: &Frame,
    ) -> Flow {
        let Some(status) = Status::parse(status) else {
            self.error(ErrorCode::InvalidParameter, Some(tr));
            return Ok(());
        };
        let d = self.dialect();
        let me = self.me_mut();
        let first = me.presence.is_none();
        let presence = Presence {
            status,
            friendly_name: me.roster.friendly_name.clone(),
            caps: caps.unwrap_or_else(|| "0".into()),
            msnobj,
            // `personal` holds the latest UUX document, sent before or after this CHG.
            personal: me.personal.clone(),
            dialect: d,
            endpoint: me.machine_endpoint(),
        };
        me.presence = Some(presence.clone());
        me.shown_self = Some(status);
        let session = me.session;
        self.deps
            .bus
            .publish_presence(session, Some(presence))
            .await;
        // Echo exactly what the client sent.
        self.send(Frame {
            verb: frame.verb,
            args: frame.args.clone(),
            payload: None,
        });
        self.show_my_machines(false).await;
        if first {
            self.initial_presence(tr).await;
            if d >= 13 {
                let me = self.me().id;
                let mail = crate::oim::initial_mail_data(self.deps.store.as_ref(), me).await;
                self.send(mail);
            }
            if dialect::has_challenges(d) {
                return self.challenge();
            }
        }
        Ok(())
    }

    /// `UUX` with a machine document (MSNP16+): `<PrivateEndpointData>` names this machine
    /// for my other machines (republished with my presence); `<EndpointData>` and anything
    /// else is acknowledged and not kept (CHG carries the capabilities).
    async fn uux_machine(&mut self, tr: TrId, payload: &[u8]) -> Flow {
        let said = match msnp::mpop::parse_private(payload) {
            Ok(said) => said,
            Err(msnp::mpop::Malformed) => {
                self.error(ErrorCode::InvalidParameter, Some(tr));
                return Ok(());
            }
        };
        let d = self.dialect();
        let me = self.me_mut();
        let republish = match said {
            Some(said) if d >= 16 && me.endpoint.is_some() => {
                let kept = me.machine.get_or_insert_with(Default::default);
                if said.name.is_some() {
                    kept.name = said.name;
                }
                if said.idle.is_some() {
                    kept.idle = said.idle;
                }
                if said.client_type.is_some() {
                    kept.client_type = said.client_type;
                }
                let endpoint = me.machine_endpoint();
                me.presence.as_mut().map(|p| {
                    p.endpoint = endpoint;
                    p.clone()
                })
            }
            _ => None,
        };
        if let Some(p) = republish {
            let session = self.me().session;
            self.deps.bus.publish_presence(session, Some(p)).await;
        }
        self.send(Frame::new(b"UUX").arg(tr).arg(0));
        self.show_my_machines(false).await;
        Ok(())
    }

    /// Show my client my machines (MSNP16+, signed in with a machine GUID): the `UBX`
    /// about my own account with each machine's `<EndpointData>` and
    /// `<PrivateEndpointData>` in my account's personal message document, and — when
    /// another machine changed my account's status — `NLN` about myself first. `changed_elsewhere`: another machine published or left
    /// (always shown); else this one changed, shown only if it has company.
    async fn show_my_machines(&mut self, changed_elsewhere: bool) {
        let d = self.dialect();
        let me = self.me();
        if d < 16 || me.endpoint.is_none() || (!changed_elsewhere && !me.company) {
            return;
        }
        let email = me.email.clone();
        let machines = self.deps.bus.endpoints(&email).await;
        let mine = me.endpoint.clone();
        let company = machines
            .iter()
            .any(|p| p.endpoint.as_ref().map(|e| &e.guid) != mine.as_ref());
        let me = self.me_mut();
        me.company = company;
        // Nothing is shown before my first CHG (but whether I have company is kept).
        if me.presence.is_none() || (!company && !changed_elsewhere) {
            return;
        }
        // My account as my contacts see it: the presence one of my machines published last.
        let current = self.deps.bus.presence(std::slice::from_ref(&email)).await;
        let current = current.into_iter().next().map(|(_, p)| p);
        if changed_elsewhere
            && let Some(p) = &current
            && self.me().shown_self != Some(p.status)
        {
            self.me_mut().shown_self = Some(p.status);
            let line = reply::PresenceLine {
                status: p.status.code(),
                email: email.as_str(),
                friendly_name: &p.friendly_name,
                caps: &p.caps,
                msnobj: p.msnobj.as_deref(),
            };
            self.send(reply::presence(d, None, &line));
        }
        let listed: Vec<msnp::mpop::Machine<'_>> = machines
            .iter()
            .filter_map(|p| {
                let e = p.endpoint.as_ref()?;
                Some(msnp::mpop::Machine {
                    guid: &e.guid,
                    caps: &p.caps,
                    name: &e.name,
                    idle: e.idle,
                    client_type: &e.client_type,
                    state: p.status.code(),
                })
            })
            .collect();
        let personal = match &current {
            Some(p) => p.personal.clone(),
            None => self.me().personal.clone(),
        };
        let doc = msnp::mpop::own_document(personal.as_deref(), &listed);
        self.send(reply::ubx(d, email.as_str(), Bytes::from(doc)));
    }

    /// After the first CHG: ILN for every contact I may see who is online.
    async fn initial_presence(&mut self, tr: TrId) {
        let emails: Vec<Email> = self.me().watched.keys().cloned().collect();
        let current = self.deps.bus.presence(&emails).await;
        let me = self.me_mut();
        for (email, p) in current {
            if let Some(w) = me.watched.get_mut(&email) {
                w.presence = Some(p);
            }
        }
        let mut emails = emails;
        emails.sort();
        for email in emails {
            self.refresh(&email, Some(tr));
        }
    }

    /// Send whatever makes the client's view of `email` match what it should see.
    fn refresh(&mut self, email: &Email, initial: Option<TrId>) {
        let d = self.dialect();
        let me = self.me_mut();
        if me.presence.is_none() {
            return; // nothing is shown before the first CHG
        }
        let Some(w) = me.watched.get_mut(email) else {
            return;
        };
        let should = w
            .presence
            .clone()
            .filter(|p| p.is_visible() && w.view.lets_me_see());
        let mut out = Vec::new();
        match (&w.shown, &should) {
            (Some(_), None) => out.push(reply::offline(d, email.as_str())),
            (old, Some(new)) => {
                let changed = old.as_ref().is_none_or(|o| {
                    o.status != new.status
                        || o.friendly_name != new.friendly_name
                        || o.caps != new.caps
                        || o.msnobj != new.msnobj
                });
                if changed {
                    let line = reply::PresenceLine {
                        status: new.status.code(),
                        email: email.as_str(),
                        friendly_name: &new.friendly_name,
                        caps: &new.caps,
                        msnobj: new.msnobj.as_deref(),
                    };
                    out.push(reply::presence(
                        d,
                        if old.is_none() { initial } else { None },
                        &line,
                    ));
                }
                let old_personal = old.as_ref().and_then(|o| o.personal.clone());
                if d >= 11 && new.personal != old_personal {
                    // A message that went away is cleared with an empty document, or the
                    // watcher would keep showing the old one.
                    let doc = new
                        .personal
                        .clone()
                        .unwrap_or_else(|| Bytes::from_static(EMPTY_PERSONAL));
                    if new.personal.is_some() || old_personal.is_some() {
                        out.push(reply::ubx(d, email.as_str(), doc));
                    }
                }
            }
            (None, None) => {}
        }
        w.shown = should;
        for f in out {
            self.send(f);
        }
    }

    async fn on_event(&mut self, ev: Arc<Event>) -> Flow {
        let Some(me) = self.now_online.as_mut() else {
            return Ok(());
        };
        match &*ev {
            Event::Presence { user, presence } => {
                if let Some(w) = me.watched.get_mut(user) {
                    w.presence = presence.clone();
                    self.refresh(user, None);
                }
            }
            Event::User(UserEvent::SignedInElsewhere { session, endpoint }) => {
                // Several MSNP16+ machines may be signed in at once (multiple points of
                // presence); the same machine again, or any older client, replaces.
                let both_machines =
                    me.endpoint.is_some() && endpoint.is_some() && *endpoint != me.endpoint;
                if *session != me.session && !both_machines {
                    self.send(Frame::new(b"OUT").arg("OTH"));
                    return Err(Close::Replaced);
                }
            }
            Event::User(UserEvent::EndpointsChanged { session }) => {
                if *session != me.session {
                    self.show_my_machines(true).await;
                }
            }
            Event::User(UserEvent::PeerViewChanged { peer, view }) => {
                if let Some(w) = me.watched.get_mut(peer) {
                    w.view = *view;
                    self.refresh(peer, None);
                }
            }
            Event::User(UserEvent::ListsChanged) => self.lists_changed().await,
            Event::User(UserEvent::ReverseList {
                from,
                friendly_name,
                added,
                ..
            }) => {
                let owner = me.id;
                if let Ok(r) = self.deps.store.roster(owner).await {
                    let version = r.version;
                    self.me_mut().roster = r;
                    let d = self.dialect();
                    if d >= 13 {
                        let doc = ml::build(&[ml::PushContact {
                            email: from.as_str(),
                            lists: List::Reverse.bit(),
                            network: 1,
                            friendly_name: added.then_some(friendly_name.as_str()),
                        }]);
                        let verb = if *added { b"ADL" } else { b"RML" };
                        self.send(reply::ml_push(verb, doc));
                        // And "your memberships changed": the client fetches them (a
                        // delta) and asks about the new reverse-list entry.
                        let not = self.address_book_changed();
                        self.send(not);
                        return Ok(());
                    }
                    let f = match (*added, dialect::uses_guids(d)) {
                        (true, false) => Frame::new(b"ADD")
                            .arg(0)
                            .arg("RL")
                            .arg(version)
                            .arg(from)
                            .arg(text::encode(friendly_name)),
                        (true, true) => Frame::new(b"ADC")
                            .arg(0)
                            .arg("RL")
                            .arg(format!("N={from}"))
                            .arg(format!("F={}", text::encode(friendly_name))),
                        (false, false) => {
                            Frame::new(b"REM").arg(0).arg("RL").arg(version).arg(from)
                        }
                        (false, true) => {
                            Frame::new(b"REM").arg(0).arg("RL").arg(format!("N={from}"))
                        }
                    };
                    self.send(f);
                } else {
                    // The held roster is behind the change: no SYN may answer from it.
                    self.me_mut().roster_unsent = false;
                }
            }
            Event::User(UserEvent::Notification {
                from,
                from_endpoint,
                to_endpoint,
                kind,
                payload,
            }) => {
                let me = self.me();
                let for_me = to_endpoint.is_none() || *to_endpoint == me.endpoint;
                // A machine does not get back what it sent to its own account.
                let mine = *from == me.email && *from_endpoint == me.endpoint;
                let d = self.dialect();
                // UBN exists from MSNP13; an older client could not even frame it.
                if for_me && !mine && d >= 13 {
                    let sign_out = *from == me.email && is_sign_out(*kind, payload);
                    let braced = from_endpoint.as_ref().map(|g| format!("{{{g}}}"));
                    self.send(reply::ubn(
                        d,
                        from.as_str(),
                        braced.as_deref(),
                        *kind,
                        payload.clone(),
                    ));
                    // Another of my machines signs this one out. The client would leave by
                    // itself; closing here makes sure it does.
                    if sign_out {
                        self.send(Frame::new(b"OUT").arg("OTH"));
                        return Err(Close::Replaced);
                    }
                }
            }
            // Offline messages are for MSNP13+ (older clients cannot read them).
            Event::User(UserEvent::OimArrived { oim }) => {
                if self.dialect() >= 13 {
                    self.send(crate::oim::arrival(oim));
                }
            }
            Event::User(UserEvent::OimsDeleted { count }) => {
                if self.dialect() >= 13 {
                    self.send(reply::active_mail_notification(*count));
                }
            }
            Event::User(UserEvent::Ring {
                session_id,
                sb_address,
                inviter,
                inviter_friendly,
                inviter_endpoint,
            }) => {
                // My own call bringing my other machines into a chat: not this one.
                if *inviter == me.email && *inviter_endpoint == me.endpoint {
                    return Ok(());
                }
                let d = self.dialect();
                let cookie = self.sb_cookie(*session_id, true, sb_address);
                self.send(reply::rng(
                    d,
                    *session_id,
                    sb_address,
                    &cookie,
                    inviter.as_str(),
                    inviter_friendly,
                ));
            }
        }
        Ok(())
    }

    /// A cookie for `shard` only, so a cookie cannot open sessions on another shard.
    fn sb_cookie(&self, sid: u32, answer: bool, shard: &str) -> String {
        self.deps
            .tickets
            .issue_sb(&self.me().email, SbGrant { sid, answer }, shard)
    }

    fn xfr(&mut self, tr: TrId, target: &str) -> Flow {
        if target != "SB" {
            self.error(ErrorCode::InvalidParameter, Some(tr));
            return Ok(());
        }
        // Hidden users may chat from MSNP13 on; before, as offline, they may not.
        let d = self.dialect();
        if self
            .me()
            .presence
            .as_ref()
            .is_none_or(|p| p.status == Status::Hidden && d < 13)
        {
            self.error(ErrorCode::NotAllowedWhenOffline, Some(tr));
            return Ok(());
        }
        let Some(addr) = self.deps.switchboards.pick() else {
            warn!("XFR SB with no live switchboard shard");
            self.error(ErrorCode::ServerUnavailable, Some(tr));
            return Ok(());
        };
        let sid = rand::random::<u32>() & 0x7fff_ffff;
        let cookie = self.sb_cookie(sid, false, &addr);
        self.send(reply::xfr_sb(self.dialect(), tr, &addr, &cookie));
        Ok(())
    }

    fn challenge(&mut self) -> Flow {
        let strict = self.config.strict_challenges;
        let interval = self.config.challenge_interval;
        let me = self.me_mut();
        if me.challenge.is_some() && strict {
            // The previous challenge was never answered.
            return Err(Close::Refused);
        }
        let chl = msnp::auth::new_challenge();
        me.challenge = Some(chl.clone());
        me.next_challenge = Some(Instant::now() + interval);
        self.send(Frame::new(b"CHL").arg(0).arg(chl));
        Ok(())
    }

    fn qry(&mut self, tr: TrId, product_id: &str, answer: &[u8]) -> Flow {
        let d = self.dialect();
        let strict = self.config.strict_challenges;
        let Some(chl) = self.me_mut().challenge.take() else {
            return self.not_expected(Some(tr));
        };
        let answer = String::from_utf8_lossy(answer);
        if msnp::auth::verify_qry(d, &chl, product_id, answer.trim()) {
            self.send(Frame::new(b"QRY").arg(tr));
            Ok(())
        } else {
            info!(product_id, "Challenge answer wrong");
            self.error(ErrorCode::ChallengeFailed, Some(tr));
            if strict { Err(Close::Refused) } else { Ok(()) }
        }
    }

    fn group_ref(&self, s: &str) -> Option<GroupRef> {
        if dialect::uses_guids(self.dialect()) {
            Uuid::parse_str(s).ok().map(GroupRef::Guid).or_else(|| {
                // MSN 7.0 sends the group's name instead of its GUID in RMG.
                let name = text::decode(s);
                let roster = &self.me().roster;
                roster
                    .groups
                    .iter()
                    .find(|g| g.name == name)
                    .map(|g| GroupRef::Guid(g.guid))
            })
        } else {
            s.parse().ok().map(GroupRef::Number)
        }
    }

    async fn rename(&mut self, tr: TrId, name: &str) -> Result<Option<EditOutcome>, Close> {
        let out = self
            .edit(tr, ListOp::SetFriendlyName(name.to_owned()))
            .await?;
        if out.is_some() {
            let me = self.me_mut();
            me.roster.friendly_name = name.to_owned();
            let republish = me.presence.as_mut().map(|p| {
                p.friendly_name = name.to_owned();
                p.clone()
            });
            if let Some(p) = republish {
                let session = self.me().session;
                self.deps.bus.publish_presence(session, Some(p)).await;
            }
        }
        Ok(out)
    }

    /// Apply a list edit; on refusal the error reply is sent and `None` returned. The
    /// edit is durable before anyone (client or contact) is told.
    async fn edit(&mut self, tr: TrId, op: ListOp) -> Result<Option<EditOutcome>, Close> {
        match self.apply_edit(op).await {
            Ok(Ok(out)) => Ok(Some(out)),
            Ok(Err(e)) => {
                let code = list_error_code(e, self.dialect());
                self.error(code, Some(tr));
                Ok(None)
            }
            Err(e) => {
                warn!(error = %e, "List edit failed");
                self.error(ErrorCode::DatabaseError, Some(tr));
                Ok(None)
            }
        }
    }

    /// Apply a list edit and tell whoever it concerns; the refusal, if any, is the
    /// caller's to answer.
    async fn apply_edit(
        &mut self,
        op: ListOp,
    ) -> Result<Result<EditOutcome, ListError>, StoreError> {
        let owner = self.me().id;
        let out = match self.deps.store.edit(owner, op).await? {
            Ok(out) => out,
            Err(e) => return Ok(Err(e)),
        };
        match self.deps.store.roster(owner).await {
            Ok(r) => self.me_mut().roster = r,
            // The held roster is behind the edit: no SYN may answer from it.
            Err(_) => self.me_mut().roster_unsent = false,
        }
        let me = self.me();
        butterfly_core::bus::announce_edit(self.deps.bus.as_ref(), &me.email, &me.roster, &out)
            .await;
        Ok(Ok(out))
    }

    /// `ADL`/`RML` (MSNP13+). The initial load after sign-in only names what the address
    /// book already holds, so it is checked, not applied. A later one applies each list
    /// bit, idempotently: clients mirror every address-book edit with an ADL or RML, so
    /// "already done" is success. Garbage closes the connection (240/241/204).
    async fn ml_edit(&mut self, tr: TrId, payload: &[u8], add: bool) -> Flow {
        let verb: &[u8; 3] = if add { b"ADL" } else { b"RML" };
        let doc = match ml::parse(payload, MlKind::Lists) {
            Ok(doc) => doc,
            Err(e) => {
                debug!(error = %e, "Refused a contact document");
                self.error(e.code(), Some(tr));
                return Err(Close::Refused);
            }
        };
        // Contacts added to FL: shown (if visible) once the reply is out.
        let mut watch = Vec::new();
        if !(add && doc.initial) {
            for c in &doc.contacts {
                let target = match (c.network.unwrap_or(1), Email::parse(&c.email)) {
                    (1, Ok(target)) => target,
                    // Circles (MSNP18): the user is a member of none.
                    (9, _) => {
                        self.error(ErrorCode::InvalidCircle, Some(tr));
                        return Ok(());
                    }
                    // Other networks (Yahoo, phones) are not served here.
                    _ => {
                        self.error(ErrorCode::InvalidUsername, Some(tr));
                        return Ok(());
                    }
                };
                for list in [List::Forward, List::Allow, List::Block] {
                    if c.lists & list.bit() == 0 {
                        continue;
                    }
                    if let Err(code) = self.ml_apply(list, &target, add).await {
                        self.error(code, Some(tr));
                        return Ok(());
                    }
                    if add && list == List::Forward {
                        watch.push(target.clone());
                    }
                }
            }
        }
        self.send(Frame::new(verb).arg(tr).arg("OK"));
        for target in watch {
            self.watch_contact(&target).await;
        }
        Ok(())
    }

    /// One list bit of an ADL/RML.
    async fn ml_apply(&mut self, list: List, target: &Email, add: bool) -> Result<(), ErrorCode> {
        let contact = ContactRef::Email(target.clone());
        let op = if add {
            ListOp::Add {
                list,
                target: contact.clone(),
                group: None,
            }
        } else {
            ListOp::Remove {
                list,
                target: contact.clone(),
                group: None,
            }
        };
        let result = match self.apply_edit(op).await {
            // Allowing someone who is blocked (or the reverse) moves them.
            Ok(Err(ListError::InOppositeList)) if add => {
                let opposite = if list == List::Allow {
                    List::Block
                } else {
                    List::Allow
                };
                let remove = ListOp::Remove {
                    list: opposite,
                    target: contact.clone(),
                    group: None,
                };
                match self.apply_edit(remove).await {
                    Ok(Ok(_)) => {
                        self.apply_edit(ListOp::Add {
                            list,
                            target: contact,
                            group: None,
                        })
                        .await
                    }
                    other => other,
                }
            }
            other => other,
        };
        match result {
            Ok(Ok(_)) | Ok(Err(ListError::AlreadyOnList | ListError::NotOnList)) => {}
            Ok(Err(e)) => return Err(list_error_code(e, self.dialect())),
            Err(e) => {
                warn!(error = %e, "List edit failed");
                return Err(ErrorCode::DatabaseError);
            }
        }
        if list == List::Forward && !add {
            self.unwatch_contact(target).await;
        }
        Ok(())
    }

    /// `UUN` (MSNP13+): relay a notification to `target` (`email[;{guid}]`), as `UBN`, if
    /// it is signed in and does not block me; else 217.
    async fn uun(&mut self, tr: TrId, target: &str, kind: u32, payload: Bytes) -> Flow {
        let (email, endpoint) = match target.split_once(';') {
            Some((e, g)) => (e, Some(msnp::mpop::normalize_guid(g))),
            None => (target, None),
        };
        let Ok(email) = Email::parse(email) else {
            self.error(ErrorCode::InvalidUsername, Some(tr));
            return Ok(());
        };
        let me = self.me();
        let blocked = email != me.email
            && me
                .roster
                .contact(&email)
                .is_some_and(|c| !c.peer.lets_me_see());
        let delivered = if blocked {
            0
        } else {
            let event = UserEvent::Notification {
                from: me.email.clone(),
                from_endpoint: me.endpoint.clone(),
                to_endpoint: endpoint,
                kind,
                payload: payload.to_vec(),
            };
            self.deps.bus.send(&email, event).await
        };
        if delivered == 0 {
            self.error(ErrorCode::NotOnline, Some(tr));
        } else {
            self.send(Frame::new(b"UUN").arg(tr).arg("OK"));
        }
        Ok(())
    }

    /// `USR SHA A` (MSNP18): the circle ticket from the address book, signed by us for
    /// this user. 911 (the connection stays) when it is not.
    fn circle_ticket(&mut self, tr: TrId, argument: &str) {
        let me = self.me();
        let cid = butterfly_core::ids::cid(me.id);
        let genuine = msnp::circle::parse(argument).is_some_and(|t| {
            t.cid == cid
                && butterfly_core::account::constant_time_eq(
                    self.deps.tickets.circle_signature(&t.data).as_bytes(),
                    t.signature.as_bytes(),
                )
        });
        if genuine {
            let email = me.email.clone();
            self.send(reply::usr_ok(self.dialect(), tr, email.as_str(), ""));
        } else {
            self.error(ErrorCode::AuthFailed, Some(tr));
        }
    }

    /// `FQY` (MSNP14+): is this address on the Messenger network? Here: is it an account.
    async fn fqy(&mut self, tr: TrId, payload: &[u8]) -> Flow {
        let doc = match ml::parse(payload, MlKind::Query) {
            Ok(doc) => doc,
            Err(e) => {
                self.error(e.code(), Some(tr));
                return Err(Close::Refused);
            }
        };
        let asked = &doc.contacts[0].email;
        let exists = match Email::parse(asked) {
            Ok(email) => match self.deps.store.account_by_email(&email).await {
                Ok(a) => a.is_some(),
                Err(e) => {
                    warn!(error = %e, "Account lookup failed");
                    self.error(ErrorCode::DatabaseError, Some(tr));
                    return Ok(());
                }
            },
            Err(_) => false,
        };
        if !exists {
            self.error(ErrorCode::InvalidUsername, Some(tr));
            return Ok(());
        }
        let answer = ml::build(&[ml::PushContact {
            email: asked,
            lists: 0,
            network: 1,
            friendly_name: None,
        }]);
        self.send(Frame::new(b"FQY").arg(tr).payload(answer));
        Ok(())
    }

    /// After an FL add: start watching and show the contact if visible.
    async fn watch_contact(&mut self, email: &Email) {
        let Some(c) = self.me().roster.contact(email).cloned() else {
            return;
        };
        let session = self.me().session;
        if !self.me().watched.contains_key(email) {
            self.deps
                .bus
                .watch(session, std::slice::from_ref(email))
                .await;
            let presence = self
                .deps
                .bus
                .presence(std::slice::from_ref(email))
                .await
                .into_iter()
                .next()
                .map(|(_, p)| p);
            self.me_mut().watched.insert(
                email.clone(),
                Watched {
                    view: c.peer,
                    presence,
                    shown: None,
                },
            );
        }
        self.refresh(email, None);
    }

    /// My lists were edited over SOAP (`UserEvent::ListsChanged`): read them again, and
    /// watch whoever came onto my forward list, stop watching whoever left it — what my
    /// own list command would have done.
    async fn lists_changed(&mut self) {
        let Ok(roster) = self.deps.store.roster(self.me().id).await else {
            // The held roster is behind the change: no SYN may answer from it.
            self.me_mut().roster_unsent = false;
            return;
        };
        self.me_mut().roster = roster;
        let me = self.me();
        let forward: HashSet<Email> = me
            .roster
            .on_list(List::Forward)
            .map(|c| c.email.clone())
            .collect();
        let left: Vec<Email> = me
            .watched
            .keys()
            .filter(|e| !forward.contains(e))
            .cloned()
            .collect();
        for email in &left {
            self.unwatch_contact(email).await;
        }
        for email in &forward {
            if !self.me().watched.contains_key(email) {
                self.watch_contact(email).await;
            }
        }
        // With several machines signed in (MSNP16+), the edit may have come from another
        // one: "your address book changed" makes this one fetch it (a delta).
        if self.dialect() >= 16 && self.me().company {
            let not = self.address_book_changed();
            self.send(not);
        }
    }

    /// `NOT` "ABCHInternal" (MSNP13+): my address book changed, fetch it again.
    fn address_book_changed(&self) -> Frame {
        let me = self.me();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        reply::not_abch(
            me.email.as_str(),
            butterfly_core::ids::puid(me.id),
            butterfly_core::ids::cid(me.id),
            &butterfly_core::clock::utc_z(now),
        )
    }

    async fn unwatch_contact(&mut self, email: &Email) {
        let session = self.me().session;
        if self.me_mut().watched.remove(email).is_some() {
            self.deps
                .bus
                .unwatch(session, std::slice::from_ref(email))
                .await;
        }
    }

    async fn add(
        &mut self,
        tr: TrId,
        list: &str,
        email: &str,
        friendly: Option<String>,
        group: Option<u32>,
    ) -> Flow {
        if dialect::uses_guids(self.dialect()) {
            return self.not_expected(Some(tr));
        }
        let (Some(l), Ok(target)) = (List::parse(list), Email::parse(email)) else {
            let code = if List::parse(list).is_none() {
                ErrorCode::InvalidParameter
            } else {
                ErrorCode::InvalidUser
            };
            self.error(code, Some(tr));
            return Ok(());
        };
        let op = ListOp::Add {
            list: l,
            target: ContactRef::Email(target.clone()),
            group: group.map(GroupRef::Number),
        };
        let Some(out) = self.edit(tr, op).await? else {
            return Ok(());
        };
        let name = friendly.unwrap_or_else(|| target.to_string());
        let mut f = Frame::new(b"ADD")
            .arg(tr)
            .arg(list)
            .arg(out.version)
            .arg(&target)
            .arg(text::encode(&name));
        if let Some(g) = group {
            f = f.arg(g);
        }
        self.send(f);
        if l == List::Forward {
            self.watch_contact(&target).await;
        }
        Ok(())
    }

    async fn adc(
        &mut self,
        tr: TrId,
        list: &str,
        email: Option<String>,
        friendly: Option<String>,
        contact: Option<String>,
        group: Option<String>,
    ) -> Flow {
        if !dialect::uses_guids(self.dialect()) {
            return self.not_expected(Some(tr));
        }
        let Some(l) = List::parse(list) else {
            self.error(ErrorCode::InvalidParameter, Some(tr));
            return Ok(());
        };
        let target = match (&email, &contact) {
            (Some(e), _) => match Email::parse(e) {
                Ok(e) => ContactRef::Email(e),
                Err(_) => {
                    self.error(ErrorCode::InvalidUsername, Some(tr));
                    return Ok(());
                }
            },
            (None, Some(c)) => match Uuid::parse_str(c) {
                Ok(g) => ContactRef::Guid(g),
                Err(_) => {
                    self.error(ErrorCode::InvalidUsername, Some(tr));
                    return Ok(());
                }
            },
            (None, None) => unreachable!("parser requires N= or C="),
        };
        let gref = match &group {
            Some(g) => match Uuid::parse_str(g) {
                Ok(u) => Some(GroupRef::Guid(u)),
                Err(_) => {
                    self.error(ErrorCode::InvalidGroup, Some(tr));
                    return Ok(());
                }
            },
            None => None,
        };
        let Some(out) = self
            .edit(
                tr,
                ListOp::Add {
                    list: l,
                    target,
                    group: gref,
                },
            )
            .await?
        else {
            return Ok(());
        };
        let Some(c) = out.contact else { return Ok(()) };
        let mut f = Frame::new(b"ADC").arg(tr).arg(list);
        if let Some(g) = group {
            f = f.arg(format!("C={}", c.guid)).arg(g);
        } else if l == List::Forward {
            let name = friendly.unwrap_or_else(|| c.email.to_string());
            f = f
                .arg(format!("N={}", c.email))
                .arg(format!("F={}", text::encode(&name)))
                .arg(format!("C={}", c.guid));
        } else {
            f = f.arg(format!("N={}", c.email));
        }
        self.send(f);
        if l == List::Forward {
            self.watch_contact(&c.email).await;
        }
        Ok(())
    }

    async fn rem(&mut self, tr: TrId, list: &str, target: &str, group: Option<String>) -> Flow {
        let Some(l) = List::parse(list) else {
            self.error(ErrorCode::InvalidParameter, Some(tr));
            return Ok(());
        };
        let guids = dialect::uses_guids(self.dialect());
        let tref = if guids && l == List::Forward {
            Uuid::parse_str(target).ok().map(ContactRef::Guid)
        } else {
            Email::parse(target.strip_prefix("N=").unwrap_or(target))
                .ok()
                .map(ContactRef::Email)
        };
        let Some(tref) = tref else {
            self.error(
                if guids {
                    ErrorCode::InvalidUsername
                } else {
                    ErrorCode::InvalidUser
                },
                Some(tr),
            );
            return Ok(());
        };
        let gref = match &group {
            Some(g) => match self.group_ref(g) {
                Some(r) => Some(r),
                None => {
                    self.error(ErrorCode::InvalidGroup, Some(tr));
                    return Ok(());
                }
            },
            None => None,
        };
        let Some(out) = self
            .edit(
                tr,
                ListOp::Remove {
                    list: l,
                    target: tref,
                    group: gref,
                },
            )
            .await?
        else {
            return Ok(());
        };
        let mut f = Frame::new(b"REM").arg(tr).arg(list);
        if !guids {
            f = f.arg(out.version);
        }
        f = f.arg(target);
        if let Some(g) = group {
            f = f.arg(g);
        }
        self.send(f);
        if l == List::Forward
            && gref.is_none()
            && let Some(c) = &out.contact
        {
            self.unwatch_contact(&c.email.clone()).await;
        }
        Ok(())
    }
}

/// Whether a relayed `UUN` from my own account signs this machine out (MSNP16+: type 4
/// `goawyplzthxbye`, with suffixes some clients add, or `gtfo`; type 8 in later clients).
fn is_sign_out(kind: u32, payload: &[u8]) -> bool {
    matches!(kind, 4 | 8) && (payload.starts_with(b"goawyplzthxbye") || payload == b"gtfo")
}

/// Whether a UUX document is the `<Data>` one (personal message, media), as opposed to
/// MSNP16+'s per-machine `<EndpointData>`/`<PrivateEndpointData>`.
fn is_data_document(payload: &[u8]) -> bool {
    let start = payload
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(payload.len());
    let rest = &payload[start..];
    rest.strip_prefix(b"<Data")
        .is_some_and(|r| matches!(r.first(), Some(b'>' | b'/' | b' ' | b'\t' | b'\r' | b'\n')))
}

/// `t=…&p=…` → the `t` value (our JWT); a bare token is accepted as is.
fn passport_token(ticket: &str) -> &str {
    ticket
        .split('&')
        .find_map(|kv| kv.strip_prefix("t="))
        .unwrap_or(ticket)
}

/// The one place list refusals become MSNP error codes.
fn list_error_code(e: ListError, dialect: u8) -> ErrorCode {
    match e {
        ListError::InvalidUser if dialect >= 10 => ErrorCode::InvalidUsername,
        ListError::InvalidUser => ErrorCode::InvalidUser,
        ListError::AlreadyOnList => ErrorCode::AlreadyOnList,
        ListError::NotOnList => ErrorCode::NotOnList,
        ListError::InOppositeList => ErrorCode::InOppositeList,
        ListError::ListFull => ErrorCode::ListFull,
        ListError::ServerList | ListError::SelfContact | ListError::InvalidProperty => {
            ErrorCode::InvalidParameter
        }
        ListError::InvalidGroup => ErrorCode::InvalidGroup,
        ListError::NotInGroup => ErrorCode::NotInGroup,
        ListError::TooManyGroups => ErrorCode::TooManyGroups,
        ListError::GroupExists => ErrorCode::GroupNameExists,
        ListError::GroupNameInvalid => ErrorCode::GroupNameTooLong,
        ListError::GroupZero => ErrorCode::GroupZero,
        ListError::InvalidName => ErrorCode::InvalidFriendlyName,
    }
}
