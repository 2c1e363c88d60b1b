//! A worker process: its share of the simulated users (`user % workers == index`), each a
//! task with its own NS connection, driven by the plan's schedule. It reports progress
//! and its results as JSON lines on stdout, and reads the coordinator's answer (every
//! user's last presence change) on stdin to count what its users missed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use butterfly_core::account::{Email, UserId};
use butterfly_core::tickets::{JwtTickets, Service, Tickets};
use msnp::frame::Frame;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, oneshot};

use crate::conn::{self, Conn};
use crate::graph::{Graph, dialect_of};
use crate::plan::{Action, AuthMode, Plan, now_us, sleep_until_us};
use crate::seed::Manifest;
use crate::stats::{Stats, WireStats};

/// What a worker writes on stdout, one JSON object per line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Out {
    /// Cumulative counts, about once a second.
    Progress {
        online: usize,
        signins: u64,
        notifications: u64,
        messages: u64,
        errors: u64,
    },
    /// After the accounting window: the last presence change each of my users sent.
    Sent { finals: Vec<(u32, u32)> },
    /// At the end.
    Report {
        stats: WireStats,
        /// `(sender, seq, planned µs, last receipt µs)` for each change my users received.
        last_receipts: Vec<(u32, u32, u64, u64)>,
    },
}

/// What the coordinator sends a worker on stdin.
#[derive(Debug, Serialize, Deserialize)]
pub struct Finals {
    /// The last presence change every user sent, by user.
    pub finals: Vec<u32>,
}

/// What a simulated user is told to do.
enum Cmd {
    Change { seq: u32, at: u64 },
    Chat { partner: u32, chat: u32, at: u64 },
    Churn { at: u64 },
    SignOut,
}

#[derive(Default)]
struct Receipts {
    /// (receiver, sender) → the last change seen.
    seen: HashMap<(u32, u32), u32>,
    /// (sender, seq) → (planned, the latest receipt).
    last: HashMap<(u32, u32), (u64, u64)>,
}

/// What every user task of this worker shares.
struct Shared {
    plan: Plan,
    manifest: Manifest,
    graph: Graph,
    tickets: Option<JwtTickets>,
    sources: Vec<IpAddr>,
    next_source: AtomicUsize,
    stats: Mutex<Stats>,
    /// Presence receipts count until the accounting window closes.
    accounting: AtomicBool,
    /// What my users were shown, under one lock (taken once per notification).
    receipts: Mutex<Receipts>,
    /// The last change each of my users sent successfully.
    sent: Mutex<HashMap<u32, u32>>,
    online: AtomicUsize,
    /// My users connected through the whole accounting window (receivers that count).
    alive: Mutex<Vec<bool>>,
    /// Every user's planned churn sign-outs, in time order (all users: any may be a
    /// contact of mine).
    churns: HashMap<u32, Vec<u64>>,
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn error(&self, kind: impl Into<String>) {
        self.stats().error(kind);
    }

    fn source(&self) -> IpAddr {
        let i = self.next_source.fetch_add(1, Ordering::Relaxed);
        self.sources[i % self.sources.len()]
    }

    fn user_of(&self, email: &str) -> Option<u32> {
        let email = email.strip_prefix("1:").unwrap_or(email);
        let email = email.split(';').next()?;
        let local = email.strip_suffix("@load.example.com")?;
        let n: u32 = local.strip_prefix(&self.manifest.prefix)?.parse().ok()?;
        ((n as usize) < self.plan.users).then_some(n)
    }

    fn dialect(&self, user: u32) -> u8 {
        dialect_of(&self.plan.mix, user as usize)
    }

    /// Whether `receiver` is shown `sender`'s presence changes: a personal message
    /// (MSNP11+ senders) only to MSNP11+ receivers, a name to everyone.
    fn visible(&self, sender: u32, receiver: u32) -> bool {
        self.dialect(sender) < 11 || self.dialect(receiver) >= 11
    }

    fn receipt(&self, receiver: u32, sender: u32, seq: u32, planned: u64) {
        if !self.accounting.load(Ordering::Relaxed) || seq == 0 {
            return;
        }
        let now = now_us();
        let (dup, gap) = {
            let mut receipts = self.receipts.lock().unwrap_or_else(|e| e.into_inner());
            let e = receipts.last.entry((sender, seq)).or_insert((planned, now));
            e.1 = e.1.max(now);
            let last = receipts.seen.entry((receiver, sender)).or_insert(0);
            if seq <= *last {
                (1, 0)
            } else {
                let gap = seq - *last - 1;
                *last = seq;
                (0, gap)
            }
        };
        let mut stats = self.stats();
        stats.record("fanout", now.saturating_sub(planned));
        stats.add("notifications", 1);
        stats.add("duplicates", dup);
        stats.add("missed", u64::from(gap));
    }

    /// `FLN` about `sender` reached one of my users: the delay from the sign-out the plan
    /// had for it, or an unexpected sign-out when there was none. From the drain on, every
    /// user signs out: not counted.
    fn signed_out(&self, sender: u32) {
        let now = now_us();
        if now >= self.plan.drain_start() {
            return;
        }
        let planned = self
            .churns
            .get(&sender)
            .and_then(|times| times.iter().rev().find(|&&t| t <= now));
        let mut stats = self.stats();
        match planned {
            Some(&t) => stats.record("signout_fanout", now - t),
            None => stats.add("unexpected_signouts", 1),
        }
    }
}

/// Run worker `index` of the plan in `plan_path`.
pub async fn run(plan_path: &std::path::Path, index: usize) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(plan_path)
        .with_context(|| format!("reading the plan {}", plan_path.display()))?;
    let plan: Plan = serde_json::from_str(&text).context("parsing the plan")?;
    let manifest = Manifest::read(&plan.manifest)?;
    let graph = manifest.graph()?;
    let tickets = match &plan.auth {
        AuthMode::Ticket { secret } => Some(JwtTickets::new("k1", secret.as_bytes())),
        _ => None,
    };
    let sources = plan.sources_of(index);
    let mine: Vec<u32> = (0..plan.users as u32)
        .filter(|&u| plan.owner(u) == index)
        .collect();
    let actions = plan.actions(|u| graph.contacts(u as usize).len() as u32);
    let mut churns: HashMap<u32, Vec<u64>> = HashMap::new();
    for (at, action) in &actions {
        if let Action::Churn { user } = action {
            churns.entry(*user).or_default().push(*at);
        }
    }
    let shared = Arc::new(Shared {
        alive: Mutex::new(vec![false; plan.users]),
        churns,
        plan,
        manifest,
        graph,
        tickets,
        sources,
        next_source: AtomicUsize::new(index),
        stats: Mutex::new(Stats::default()),
        accounting: AtomicBool::new(true),
        receipts: Mutex::new(Receipts::default()),
        sent: Mutex::new(HashMap::new()),
        online: AtomicUsize::new(0),
    });

    // One task per user, fed by the schedule.
    let mut senders = HashMap::new();
    let mut tasks = Vec::new();
    for &u in &mine {
        let (tx, rx) = mpsc::channel(256);
        senders.insert(u, tx);
        tasks.push(tokio::spawn(user_task(shared.clone(), u, rx)));
    }
    let progress = tokio::spawn(progress(shared.clone()));

    // The schedule: only my users' actions.
    let schedule = {
        let shared = shared.clone();
        let senders = senders.clone();
        async move {
            for (at, action) in actions {
                let Some(tx) = senders.get(&action.user()) else {
                    continue;
                };
                sleep_until_us(at).await;
                let cmd = match action {
                    Action::Change { seq, .. } => Cmd::Change { seq, at },
                    Action::Chat {
                        user,
                        chat,
                        contact,
                    } => Cmd::Chat {
                        partner: shared.graph.contacts(user as usize)[contact as usize],
                        chat,
                        at,
                    },
                    Action::Churn { .. } => Cmd::Churn { at },
                };
                match tx.try_send(cmd) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        shared.error("generator: a user fell behind its schedule");
                    }
                    // Its sign-in failed (counted then) or its connection was lost.
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        shared.stats().add("skipped_actions", 1);
                    }
                }
            }
        }
    };
    let accounting = {
        let shared = shared.clone();
        async move {
            sleep_until_us(shared.plan.accounting_end()).await;
            shared.accounting.store(false, Ordering::SeqCst);
            let finals: Vec<(u32, u32)> = shared
                .sent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(u, s)| (*u, *s))
                .collect();
            emit(&Out::Sent { finals })?;
            // The coordinator answers with everyone's finals.
            let mut line = String::new();
            tokio::io::BufReader::new(tokio::io::stdin())
                .read_line(&mut line)
                .await
                .context("reading the finals")?;
            let finals: Finals = serde_json::from_str(&line).context("parsing the finals")?;
            check(&shared, &finals.finals);
            anyhow::Ok(())
        }
    };
    let (_, checked) = tokio::join!(schedule, accounting);
    checked?;

    sleep_until_us(shared.plan.drain_start()).await;
    for tx in senders.values() {
        let _ = tx.send(Cmd::SignOut).await;
    }
    drop(senders);
    let drained =
        tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(tasks)).await;
    if drained.is_err() {
        shared.error("generator: users still busy 30 s after the end");
    }
    progress.abort();
    let last_receipts = shared
        .receipts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .last
        .iter()
        .map(|(&(s, q), &(p, r))| (s, q, p, r))
        .collect();
    let stats = shared.stats().to_wire();
    emit(&Out::Report {
        stats,
        last_receipts,
    })?;
    Ok(())
}

/// Count, for each of my users that stayed connected, what it should have been shown and
/// was not: every change of each contact up to that contact's last one.
fn check(shared: &Shared, finals: &[u32]) {
    let alive = shared
        .alive
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let receipts = shared.receipts.lock().unwrap_or_else(|e| e.into_inner());
    let seen = &receipts.seen;
    let (mut expected, mut missed) = (0u64, 0u64);
    for (receiver, _) in alive.iter().enumerate().filter(|(_, a)| **a) {
        let receiver = receiver as u32;
        for &sender in shared.graph.contacts(receiver as usize) {
            if !shared.visible(sender, receiver) {
                continue;
            }
            let last = finals.get(sender as usize).copied().unwrap_or(0);
            expected += u64::from(last);
            let got = seen.get(&(receiver, sender)).copied().unwrap_or(0);
            missed += u64::from(last.saturating_sub(got));
        }
    }
    drop(receipts);
    let mut stats = shared.stats();
    stats.add("notifications_expected", expected);
    stats.add("missed", missed);
}

fn emit(out: &Out) -> anyhow::Result<()> {
    use std::io::Write;
    let line = serde_json::to_string(out)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}

async fn progress(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let out = {
            let s = shared.stats();
            Out::Progress {
                online: shared.online.load(Ordering::Relaxed),
                signins: s.count("signins"),
                notifications: s.count("notifications"),
                messages: s.count("messages_received"),
                errors: s.errors_total(),
            }
        };
        if emit(&out).is_err() {
            return;
        }
    }
}

/// The machine GUID of a user's MSNP16+ client: fixed per user.
fn machine_guid(user: u32) -> String {
    format!("{{5eed0000-0000-4000-8000-{user:012x}}}")
}

fn caps(d: u8) -> &'static str {
    match d {
        ..=12 => "268435456",
        13..=15 => "1985855524",
        _ => "2789003324:48",
    }
}

/// A user's whole life: sign in at the planned time, then follow commands and answer the
/// server until told to sign out.
async fn user_task(shared: Arc<Shared>, me: u32, mut rx: mpsc::Receiver<Cmd>) {
    let at = shared.plan.signin_at(me);
    sleep_until_us(at).await;
    let mut session = match sign_in(&shared, me, at, false).await {
        Ok(s) => s,
        Err(e) => {
            shared.error(kind_of(&e));
            return;
        }
    };
    shared.alive.lock().unwrap_or_else(|e| e.into_inner())[me as usize] = true;
    loop {
        match session.run(&shared, &mut rx).await {
            Next::SignOut => {
                let _ = session.conn.send(Frame::new(b"OUT")).await;
                shared.online.fetch_sub(1, Ordering::Relaxed);
                shared.stats().add("signouts", 1);
                return;
            }
            Next::Churn(at) => {
                let _ = session.conn.send(Frame::new(b"OUT")).await;
                shared.online.fetch_sub(1, Ordering::Relaxed);
                drop(session);
                shared.stats().add("churned", 1);
                session = match sign_in(&shared, me, at, true).await {
                    Ok(s) => s,
                    Err(e) => {
                        shared.error(format!("churn: {}", kind_of(&e)));
                        return;
                    }
                };
            }
            Next::Lost(e) => {
                if shared.accounting.load(Ordering::Relaxed) {
                    shared.alive.lock().unwrap_or_else(|e| e.into_inner())[me as usize] = false;
                }
                shared.online.fetch_sub(1, Ordering::Relaxed);
                shared.error(kind_of(&e));
                return;
            }
        }
    }
}

/// An error's kind for the report: its first line without numbers that vary.
fn kind_of(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let first = text.lines().next().unwrap_or_default();
    first
        .split_whitespace()
        .filter(|w| !w.chars().any(|c| c.is_ascii_digit()) || w.len() == 3)
        .collect::<Vec<_>>()
        .join(" ")
}

enum Next {
    SignOut,
    Churn(u64),
    Lost(anyhow::Error),
}

struct Session {
    me: u32,
    dialect: u8,
    conn: Conn,
    /// XFR requests of chats in flight, by TrID.
    pending_xfr: HashMap<u32, oneshot::Sender<Frame>>,
}

/// Sign `me` in; `at` is the planned start (latencies count from it).
fn passport_http(shared: &Shared) -> anyhow::Result<std::net::SocketAddr> {
    shared
        .plan
        .http
        .ok_or_else(|| anyhow!("auth: Passport sign-in needs --http"))
}

/// The token for `wanted` from the token service (RST for MSNP13–15, RST2 from MSNP16).
async fn rst_token(
    shared: &Shared,
    me: u32,
    dialect: u8,
    addresses: &[(&str, &str)],
    wanted: &str,
) -> anyhow::Result<crate::rst::Token> {
    let email = shared.manifest.email(me as usize);
    let password = shared.manifest.password(me as usize);
    let form = crate::rst::Form::of(dialect);
    let tokens = crate::rst::tokens(passport_http(shared)?, form, &email, &password, addresses)
        .await?
        .map_err(|(status, _)| anyhow!("auth: the token service answered HTTP {status}"))?;
    tokens
        .into_iter()
        .find(|t| t.address == wanted)
        .ok_or_else(|| anyhow!("auth: the token service issued no {wanted} token"))
}

async fn sign_in(shared: &Arc<Shared>, me: u32, at: u64, churn: bool) -> anyhow::Result<Session> {
    let d = shared.dialect(me);
    let email = shared.manifest.email(me as usize);
    let stream = conn::connect(shared.source(), shared.plan.ns_of(me)).await?;
    let t_connect = now_us();
    let mut c = Conn::new(stream, d);
    let ignore = |_f: Frame| {};

    let tr = c.cmd(b"VER", &[&format!("MSNP{d}"), "CVR0"]).await?;
    let ver = c.answer("VER", tr, ignore).await?;
    if ver.args.get(1).map(String::as_str) != Some(&format!("MSNP{d}")) {
        bail!("negotiation: the server offered {:?}", ver.args);
    }
    if d >= 8 {
        let cvr = format!("0x0409 winnt 6.1.0 i386 MSNMSGR 14.0.8117.0416 msmsgs {email}");
        let args: Vec<&str> = cvr.split(' ').collect();
        let tr = c.cmd(b"CVR", &args).await?;
        c.answer("CVR", tr, ignore).await?;
    }
    let t_negotiated = now_us();

    let auth = &shared.plan.auth;
    if d <= 7 {
        let tr = c.cmd(b"USR", &["MD5", "I", &email]).await?;
        let salt = c.answer("USR", tr, ignore).await?;
        let salt = salt
            .args
            .get(3)
            .ok_or_else(|| anyhow!("auth: no MD5 salt"))?;
        let hash = msnp::auth::md5_login_hash(salt, &shared.manifest.password(me as usize));
        let tr = c.cmd(b"USR", &["MD5", "S", &hash]).await?;
        c.answer("USR", tr, ignore).await?;
    } else if d <= 14 {
        let tr = c.cmd(b"USR", &["TWN", "I", &email]).await?;
        let policy = c.answer("USR", tr, ignore).await?;
        let ticket = match (auth, &shared.tickets) {
            (_, Some(t)) => {
                let id = UserId(shared.manifest.ids[me as usize]);
                t.issue_passport(id, &Email::parse(&email)?)
            }
            (AuthMode::Passport, None) if d <= 12 => {
                let policy = policy.args.get(3).cloned().unwrap_or_default();
                crate::http::passport_login(
                    passport_http(shared)?,
                    &email,
                    &shared.manifest.password(me as usize),
                    &policy,
                )
                .await?
            }
            (AuthMode::Passport, None) => {
                // WLM 8.x: the token service, for the tokens that client asks for.
                let policy = policy.args.get(3).cloned().unwrap_or_default();
                let addresses = [
                    ("http://Passport.NET/tb", ""),
                    ("messenger.msn.com", policy.as_str()),
                    ("contacts.msn.com", "MBI"),
                ];
                rst_token(shared, me, d, &addresses, "messenger.msn.com")
                    .await?
                    .ticket
            }
            _ => bail!("auth: MSNP{d} needs --auth ticket here"),
        };
        // A minted ticket is the bare token; the token service's is already `t=…&p=…`.
        let ticket = if d >= 13 && shared.tickets.is_some() {
            format!("t={ticket}&p=")
        } else {
            ticket
        };
        let tr = c.cmd(b"USR", &["TWN", "S", &ticket]).await?;
        c.answer("USR", tr, ignore).await?;
    } else {
        let tr = c.cmd(b"USR", &["SSO", "I", &email]).await?;
        let challenge = c.answer("USR", tr, ignore).await?;
        let nonce = challenge
            .args
            .get(4)
            .ok_or_else(|| anyhow!("auth: no SSO nonce"))?;
        let (ticket, secret) = match (auth, &shared.tickets) {
            (_, Some(tickets)) => {
                let id = UserId(shared.manifest.ids[me as usize]);
                let ticket = tickets.issue_service(id, &Email::parse(&email)?, Service::Messenger);
                let secret = tickets.binary_secret(&ticket).to_vec();
                (ticket, secret)
            }
            (AuthMode::Passport, None) => {
                // WLM 2009 (and 8.5): the tokens that client asks for; the Messenger one
                // comes with the binary secret that keys the proof.
                let addresses = [
                    ("http://Passport.NET/tb", ""),
                    ("messengerclear.live.com", "MBI_KEY_OLD"),
                    ("messenger.msn.com", "?id=507"),
                    ("contacts.msn.com", "MBI"),
                ];
                let token = rst_token(shared, me, d, &addresses, "messengerclear.live.com").await?;
                let secret = token.secret.ok_or_else(|| {
                    anyhow!("auth: the Messenger token came without its binary secret")
                })?;
                (token.ticket, secret)
            }
            _ => bail!("auth: MSNP{d} needs --auth ticket or passport here"),
        };
        let blob = msnp::auth::mbi_blob(&secret, nonce, rand::random());
        let guid = machine_guid(me);
        let mut args = vec!["SSO", "S", &ticket, &blob];
        if d >= 16 {
            args.push(&guid);
        }
        let tr = c.cmd(b"USR", &args).await?;
        c.answer("USR", tr, ignore).await?;
    }
    let t_auth = now_us();

    // Lists: SYN (answered up to a PNG barrier), or the initial ADL of MSNP13+.
    if d <= 12 {
        let syn = if d >= 8 { vec!["0", "0"] } else { vec!["0"] };
        c.cmd(b"SYN", &syn).await?;
        c.send(Frame::new(b"PNG")).await?;
        loop {
            let f = c.next("SYN").await?;
            if f.verb.as_str() == "QNG" {
                break;
            }
        }
    } else {
        let contacts = shared.graph.contacts(me as usize);
        let chunks: Vec<&[u32]> = if contacts.is_empty() {
            vec![&[]]
        } else {
            contacts.chunks(150).collect()
        };
        for chunk in chunks {
            let mut doc = String::from("<ml l=\"1\">");
            if !chunk.is_empty() {
                doc.push_str("<d n=\"load.example.com\">");
                for &u in chunk {
                    doc.push_str(&format!(
                        "<c n=\"{}{u}\" l=\"3\" t=\"1\"/>",
                        shared.manifest.prefix
                    ));
                }
                doc.push_str("</d>");
            }
            doc.push_str("</ml>");
            let tr = c.cmd_payload(b"ADL", &[], doc.into_bytes()).await?;
            c.answer("ADL", tr, ignore).await?;
        }
    }
    let t_lists = now_us();

    let mut chg = vec!["NLN"];
    if d >= 8 {
        chg.push(caps(d));
    }
    if d >= 9 {
        chg.push("0");
    }
    let tr = c.cmd(b"CHG", &chg).await?;
    let mut early = Vec::new();
    c.answer("CHG", tr, |f| early.push(f)).await?;
    let t_online = now_us();
    {
        let mut s = shared.stats();
        if churn {
            s.record("churn_signin", t_online.saturating_sub(at));
        } else {
            s.record("signin_connect", t_connect.saturating_sub(at));
            s.record("signin_negotiation", t_negotiated - t_connect);
            s.record("signin_auth", t_auth - t_negotiated);
            s.record("signin_lists", t_lists - t_auth);
            s.record("signin_total", t_online.saturating_sub(at));
            s.add("signins", 1);
            s.set_max("max_signin_done_us", t_online);
        }
    }
    shared.online.fetch_add(1, Ordering::Relaxed);
    let mut session = Session {
        me,
        dialect: d,
        conn: c,
        pending_xfr: HashMap::new(),
    };
    for f in early {
        session.inbound(shared, f).await?;
    }
    Ok(session)
}

impl Session {
    async fn run(&mut self, shared: &Arc<Shared>, rx: &mut mpsc::Receiver<Cmd>) -> Next {
        let mut keepalive = tokio::time::interval(Duration::from_secs(30));
        keepalive.tick().await;
        loop {
            let step = tokio::select! {
                cmd = rx.recv() => match cmd {
                    None | Some(Cmd::SignOut) => return Next::SignOut,
                    Some(Cmd::Churn { at }) => {
                        sleep_until_us(at).await;
                        return Next::Churn(at);
                    }
                    Some(Cmd::Change { seq, at }) => self.change(shared, seq, at).await,
                    Some(Cmd::Chat { partner, chat, at }) => self.chat(shared, partner, chat, at).await,
                },
                frame = self.conn.recv() => match frame {
                    Ok(Some(f)) => self.inbound(shared, f).await,
                    Ok(None) => Err(anyhow!("closed by the server")),
                    Err(e) => Err(e),
                },
                _ = keepalive.tick() => self.conn.send(Frame::new(b"PNG")).await,
            };
            if let Err(e) = step {
                return Next::Lost(e);
            }
        }
    }

    /// My `seq`-th presence change: the personal message (MSNP11+) or the friendly name,
    /// carrying the change's number and planned time for the watchers to check.
    async fn change(&mut self, shared: &Shared, seq: u32, at: u64) -> anyhow::Result<()> {
        sleep_until_us(at).await;
        // The run's epoch makes the tag this run's: a name stored by an earlier run
        // (MSNP2–10 names are durable) is not taken for one of this run's changes.
        let tag = format!("lg:{}:{seq}:{at}", shared.plan.epoch_us);
        let d = self.dialect;
        if d >= 11 {
            let doc = format!("<Data><PSM>{tag}</PSM><CurrentMedia></CurrentMedia></Data>");
            self.conn.cmd_payload(b"UUX", &[], doc.into_bytes()).await?;
        } else {
            let name = msnp::text::encode(&tag);
            if d >= 10 {
                self.conn.cmd(b"PRP", &["MFN", &name]).await?;
            } else {
                let email = shared.manifest.email(self.me as usize);
                self.conn.cmd(b"REA", &[&email, &name]).await?;
            }
        }
        shared
            .sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.me, seq);
        shared.stats().add("presence_changes", 1);
        Ok(())
    }

    /// Start a chat with `partner`: ask the NS for a switchboard; the rest runs on its own.
    async fn chat(
        &mut self,
        shared: &Arc<Shared>,
        partner: u32,
        chat: u32,
        at: u64,
    ) -> anyhow::Result<()> {
        sleep_until_us(at).await;
        shared.stats().add("chats", 1);
        let tr = self.conn.cmd(b"XFR", &["SB"]).await?;
        let (tx, rx) = oneshot::channel();
        self.pending_xfr.insert(tr, tx);
        let shared = shared.clone();
        let (me, d) = (self.me, self.dialect);
        tokio::spawn(async move {
            match call(&shared, me, d, partner, chat, at, rx).await {
                Ok(()) => shared.stats().add("chats_ok", 1),
                Err(e) => shared.error(format!("chat: {}", kind_of(&e))),
            }
        });
        Ok(())
    }

    async fn inbound(&mut self, shared: &Arc<Shared>, f: Frame) -> anyhow::Result<()> {
        match f.verb.as_str() {
            "CHL" => {
                let challenge = f.args.get(1).cloned().unwrap_or_default();
                let (id, answer) = conn::challenge_answer(self.dialect, &challenge)?;
                self.conn
                    .cmd_payload(b"QRY", &[id], answer.into_bytes())
                    .await?;
            }
            "UBX" => {
                let (Some(sender), Some(p)) =
                    (f.args.first().and_then(|e| shared.user_of(e)), &f.payload)
                else {
                    return Ok(());
                };
                let text = String::from_utf8_lossy(p);
                if let Some((seq, planned)) = text
                    .split_once("<PSM>lg:")
                    .and_then(|(_, rest)| rest.split_once("</PSM>"))
                    .and_then(|(tag, _)| parse_tag(shared.plan.epoch_us, tag))
                {
                    shared.receipt(self.me, sender, seq, planned);
                }
            }
            "NLN" => {
                // NLN status email [network] name …: the name follows the address (and the
                // network id, MSNP14–17).
                let Some(at) = f.args.iter().position(|a| a.contains('@')) else {
                    return Ok(());
                };
                let Some(sender) = shared.user_of(&f.args[at]) else {
                    return Ok(());
                };
                let name_at = if (14..=17).contains(&self.dialect) {
                    at + 2
                } else {
                    at + 1
                };
                if let Some(name) = f.args.get(name_at) {
                    let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
                    if let Some((seq, planned)) = name
                        .strip_prefix("lg:")
                        .and_then(|t| parse_tag(shared.plan.epoch_us, t))
                    {
                        shared.receipt(self.me, sender, seq, planned);
                    }
                }
            }
            "FLN" => {
                // FLN email …, FLN 1:email (MSNP13+), FLN 1:email;{machine} (MSNP16+).
                if let Some(sender) = f
                    .args
                    .iter()
                    .find(|a| a.contains('@'))
                    .and_then(|e| shared.user_of(e))
                {
                    shared.signed_out(sender);
                }
            }
            "XFR" => {
                if let Some(tx) = f.tr_id().and_then(|tr| self.pending_xfr.remove(&tr)) {
                    let _ = tx.send(f);
                }
            }
            "RNG" => {
                let shared = shared.clone();
                let (me, d) = (self.me, self.dialect);
                tokio::spawn(async move {
                    if let Err(e) = answer(&shared, me, d, f).await {
                        shared.error(format!("answer: {}", kind_of(&e)));
                    }
                });
            }
            "OUT" => bail!("signed out by the server: OUT {}", f.args.join(" ")),
            v if f.verb.is_error() => {
                // An error answer to an XFR fails that chat; any other is counted.
                if let Some(tx) = f.tr_id().and_then(|tr| self.pending_xfr.remove(&tr)) {
                    let _ = tx.send(f);
                } else {
                    shared.error(format!("server error {v}"));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// `run:seq:planned_us` of this run (`run` is the plan's epoch) → `(seq, planned_us)`.
fn parse_tag(run: u64, tag: &str) -> Option<(u32, u64)> {
    let mut parts = tag.splitn(3, ':');
    if parts.next()?.parse::<u64>().ok()? != run {
        return None;
    }
    let seq = parts.next()?.parse().ok()?;
    let planned = parts.next()?.trim().parse().ok()?;
    Some((seq, planned))
}

/// My name on a switchboard: `email;{guid}` for MSNP16+.
fn sb_name(shared: &Shared, me: u32, d: u8) -> String {
    let email = shared.manifest.email(me as usize);
    if d >= 16 {
        format!("{email};{}", machine_guid(me))
    } else {
        email
    }
}

const MSG_HEAD: &str = "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nX-MMS-IM-Format: FN=Segoe%20UI; EF=; CO=0; CS=0; PF=0\r\n\r\n";

/// The calling side of a chat: switchboard, invite, wait for the partner, send the
/// messages (each stamped with its send time), wait for every ACK, leave.
async fn call(
    shared: &Shared,
    me: u32,
    d: u8,
    partner: u32,
    chat: u32,
    at: u64,
    xfr: oneshot::Receiver<Frame>,
) -> anyhow::Result<()> {
    let xfr = tokio::time::timeout(conn::ANSWER_TIMEOUT, xfr)
        .await
        .map_err(|_| anyhow!("timeout: XFR"))?
        .map_err(|_| anyhow!("XFR: the session ended"))?;
    if xfr.verb.is_error() {
        bail!("XFR refused: {}", xfr.verb.as_str());
    }
    let (addr, cookie) = match (xfr.args.get(2), xfr.args.get(4)) {
        (Some(a), Some(c)) => (a.parse()?, c.clone()),
        _ => bail!("XFR without an address"),
    };
    let mut sb = Conn::new(conn::connect(shared.source(), addr).await?, d);
    let tr = sb.cmd(b"USR", &[&sb_name(shared, me, d), &cookie]).await?;
    sb.answer("USR", tr, |_| {}).await?;
    let partner_email = shared.manifest.email(partner as usize);
    let tr = sb.cmd(b"CAL", &[&partner_email]).await?;
    sb.answer("CAL", tr, |_| {}).await?;
    loop {
        let f = sb.next("JOI").await?;
        if f.verb.as_str() == "JOI"
            && f.args
                .first()
                .is_some_and(|w| w.starts_with(&partner_email))
        {
            break;
        }
    }
    shared
        .stats()
        .record("sb_setup", now_us().saturating_sub(at));
    let mut waiting = std::collections::HashSet::new();
    for m in 0..shared.plan.messages_per_chat {
        let body = format!("{MSG_HEAD}lg:{chat}:{m}:{}", now_us());
        let tr = sb.cmd_payload(b"MSG", &["A"], body.into_bytes()).await?;
        waiting.insert(tr);
        shared.stats().add("messages_sent", 1);
    }
    while !waiting.is_empty() {
        let f = sb.next("ACK").await?;
        match f.verb.as_str() {
            "ACK" if f.tr_id().is_some_and(|tr| waiting.remove(&tr)) => {
                shared.stats().add("messages_acked", 1);
            }
            "NAK" => bail!("NAK"),
            _ => {}
        }
    }
    sb.send(Frame::new(b"OUT")).await?;
    Ok(())
}

/// The invited side: answer, then read messages until the caller leaves.
async fn answer(shared: &Shared, me: u32, d: u8, rng: Frame) -> anyhow::Result<()> {
    let (sid, addr, cookie) = match (rng.args.first(), rng.args.get(1), rng.args.get(3)) {
        (Some(s), Some(a), Some(c)) => (s.clone(), a.parse()?, c.clone()),
        _ => bail!("RNG without an address"),
    };
    let mut sb = Conn::new(conn::connect(shared.source(), addr).await?, d);
    let tr = sb
        .cmd(b"ANS", &[&sb_name(shared, me, d), &cookie, &sid])
        .await?;
    sb.answer("ANS", tr, |_| {}).await?;
    loop {
        let f = match tokio::time::timeout(conn::ANSWER_TIMEOUT, sb.recv()).await {
            Err(_) => bail!("timeout: messages"),
            Ok(r) => match r? {
                Some(f) => f,
                None => return Ok(()),
            },
        };
        match f.verb.as_str() {
            "MSG" => {
                let now = now_us();
                let sent = f
                    .payload
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .and_then(|b| {
                        b.rsplit(':')
                            .next()
                            .and_then(|t| t.trim().parse::<u64>().ok())
                    });
                let mut s = shared.stats();
                s.add("messages_received", 1);
                if let Some(sent) = sent {
                    s.record("delivery", now.saturating_sub(sent));
                }
            }
            "BYE" => {
                let _ = sb.send(Frame::new(b"OUT")).await;
                return Ok(());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_tag;

    #[test]
    fn only_this_runs_tags_count() {
        assert_eq!(parse_tag(77, "77:3:123456"), Some((3, 123456)));
        assert_eq!(parse_tag(77, "76:3:123456"), None, "an earlier run's name");
        assert_eq!(parse_tag(77, "77:x:1"), None);
        assert_eq!(parse_tag(77, "77:3"), None);
    }
}
