//! `sb-throughput`: messages per second through one switchboard shard of a distributed
//! network.
//!
//! `pairs` pairs of users sign in on the one gateway; each pair opens its own chat session
//! on the one shard (`XFR SB` → `USR` → `CAL` → `RNG` → `ANS`, as MSN Messenger does).
//! Then, for `seconds`, every sender sends `MSG … A` as fast as its `ACK`s allow, with at
//! most `window` messages unacknowledged, and every receiver reads. Counted: messages
//! acknowledged and messages received within the window, each `ACK`'s delay, and the
//! shard's CPU time over the window.
//!
//! An `ACK` means the shard has queued the message for the other participants, not that
//! they have read it; a participant whose queue (256 messages) is full is dropped. So a
//! sender also waits while `max_unread` of its messages are not yet read by its receiver
//! (the bench's client would otherwise be measured falling behind the shard, and be cut
//! off); `--max-unread 0` leaves only the ACK window.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use butterfly_core::account::PasswordCost;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{Conn, line};
use crate::cluster::{self, Cluster, ClusterOptions, Scratch};
use crate::seed::{self, Account};
use crate::server::check_socket_budget;
use crate::stats::{CpuUse, CpuWatch};

/// How long to wait for the last ACKs and deliveries after the window.
const DRAIN: Duration = Duration::from_secs(10);
const SIGN_IN_CONCURRENCY: usize = 16;
/// Chat sessions being opened at once.
const CHAT_CONCURRENCY: usize = 8;
/// How long `XFR SB` may answer 601 (no shard known yet) before that is an error.
const XFR_PATIENCE: Duration = Duration::from_secs(10);

/// The message every sender sends: the headers MSN Messenger 7.5 writes and a line of
/// text.
pub(crate) const BODY: &str = "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\
X-MMS-IM-Format: FN=Segoe%20UI; EF=; CO=0; CS=1; PF=0\r\n\r\n\
this is a benchmark message of about a chat line";

pub(crate) struct Options {
    pub(crate) server: PathBuf,
    pub(crate) script: PathBuf,
    pub(crate) log_filter: String,
    pub(crate) postgres: String,
    pub(crate) redis: String,
    pub(crate) pairs: usize,
    pub(crate) seconds: u64,
    pub(crate) window: usize,
    /// Messages a sender may have written that its receiver has not read yet (0: no
    /// bound but the ACK window).
    pub(crate) max_unread: u64,
    pub(crate) cost: PasswordCost,
    pub(crate) keep_logs: bool,
}

pub(crate) struct Outcome {
    pub(crate) window_secs: f64,
    /// ACKs read within the window.
    pub(crate) acked: u64,
    /// Messages read by receivers within the window.
    pub(crate) delivered: u64,
    /// After the drain: every message sent, acknowledged, refused (NAK), received.
    pub(crate) sent_total: u64,
    pub(crate) acked_total: u64,
    pub(crate) naks: u64,
    pub(crate) delivered_total: u64,
    /// `butterfly_sb_messages_total` of the shard over the whole run.
    pub(crate) shard_counted: f64,
    /// Delay of every ACK read within the window, sorted.
    pub(crate) ack_latencies: Vec<Duration>,
    pub(crate) cpu: CpuUse,
    pub(crate) shard_label: String,
}

/// What a sender and its receiver share.
#[derive(Default)]
struct Pair {
    /// Messages the sender has written.
    sent: AtomicU64,
    /// Messages the receiver has read.
    received: AtomicU64,
    /// The sender has finished: `sent` is final.
    done: AtomicBool,
    /// Woken when the receiver reads a message.
    progress: Notify,
}

struct SenderOutcome {
    /// Kept open until every receiver is done: a sender leaving ends its session.
    conn: Conn,
    sent: u64,
    acked_in_window: u64,
    acked: u64,
    naks: u64,
    latencies: Vec<Duration>,
}

pub(crate) async fn run(opts: &Options) -> anyhow::Result<Outcome> {
    if opts.pairs == 0 || opts.seconds == 0 || opts.window == 0 {
        bail!("--pairs, --seconds and --window must be at least 1");
    }
    // Each user: one NS and one switchboard connection.
    check_socket_budget(opts.pairs as u64 * 4)?;
    let scratch = Scratch::prepare(&opts.server, &opts.script, &opts.postgres, &opts.redis).await?;
    let senders = seed::accounts("snd", opts.pairs);
    let receivers = seed::accounts("rcv", opts.pairs);
    let all: Vec<Account> = senders.iter().chain(&receivers).cloned().collect();
    eprintln!("seeding {} users…", all.len());
    let store = seed::postgres(&scratch.url).await?;
    seed::seed_postgres(&store, &all, opts.cost).await?;
    store.close().await;

    eprintln!(
        "starting the network: 1 gateway, 1 switchboard ({})…",
        opts.script.display()
    );
    let mut net = Cluster::start(
        &ClusterOptions {
            script: &opts.script,
            binary: &opts.server,
            log_filter: &opts.log_filter,
            gateways: 1,
            switchboards: 1,
            keep_logs: opts.keep_logs,
        },
        &scratch,
        &opts.redis,
    )
    .await?;
    let (ns, http, shard) = (
        net.gateways[0].addr,
        net.passport.addr,
        net.switchboards[0].addr,
    );
    eprintln!("  gateway {ns}, switchboard {shard}, passport {http}");

    eprintln!("signing in {} users…", all.len());
    let mut conns: Vec<Conn> = futures::stream::iter(all.iter().cloned())
        .map(|a| async move {
            let mut c = Conn::connect(ns, 12).await?;
            c.sign_in(http, &a.email, &a.password).await?;
            c.go_online().await?;
            anyhow::Ok(c)
        })
        .buffered(SIGN_IN_CONCURRENCY)
        .try_collect()
        .await?;
    let receiver_ns = conns.split_off(opts.pairs);
    let sender_ns = conns;

    eprintln!(
        "opening {} chat sessions (XFR, USR, CAL, RNG, ANS)…",
        opts.pairs
    );
    let sessions: Vec<(Conn, Conn, Conn, Conn)> =
        futures::stream::iter(sender_ns.into_iter().zip(receiver_ns))
            .map(|(a, b)| open_chat(a, b, shard))
            .buffer_unordered(CHAT_CONCURRENCY)
            .try_collect()
            .await?;
    net.check_alive()?;

    let shard_pid = net.switchboards[0].pid;
    let shard_label = "switchboard-0".to_owned();
    let mut procs = vec![
        (shard_label.clone(), shard_pid),
        ("ns-gateway-0".to_owned(), net.gateways[0].pid),
    ];
    if let Ok(Some(pid)) = cluster::redis_pid(&opts.redis).await {
        procs.push(("redis-server".to_owned(), pid));
    }
    let cpu = CpuWatch::new(procs);
    let shard_admin = net.switchboards[0].admin;
    let counted_before = cluster::metric_value(
        &cluster::metrics_text(shard_admin).await?,
        "butterfly_sb_messages_total",
    )
    .unwrap_or(0.0);

    eprintln!(
        "{} senders, up to {} unacknowledged and {} unread each, for {} s…",
        opts.pairs,
        opts.window,
        if opts.max_unread == 0 {
            "any number".to_owned()
        } else {
            opts.max_unread.to_string()
        },
        opts.seconds
    );
    let t0 = Instant::now() + Duration::from_millis(200);
    let end = t0 + Duration::from_secs(opts.seconds);
    let delivered_in_window = Arc::new(AtomicU64::new(0));
    let mut senders = JoinSet::new();
    let mut receivers = JoinSet::new();
    let mut ns_conns = Vec::new();
    for (a_ns, b_ns, a_sb, b_sb) in sessions {
        ns_conns.push(a_ns);
        ns_conns.push(b_ns);
        let pair = Arc::new(Pair::default());
        let limits = (opts.window, opts.max_unread);
        senders.spawn(send_messages(a_sb, t0, end, limits, pair.clone()));
        receivers.spawn(receive_messages(
            b_sb,
            end,
            pair,
            delivered_in_window.clone(),
        ));
    }
    tokio::time::sleep_until(t0).await;
    let cpu0 = cpu.sample()?;
    tokio::time::sleep_until(end).await;
    let cpu1 = cpu.sample()?;

    let mut outcome = Outcome {
        window_secs: cpu.between(&cpu0, &cpu1).wall_secs,
        acked: 0,
        delivered: 0,
        sent_total: 0,
        acked_total: 0,
        naks: 0,
        delivered_total: 0,
        shard_counted: 0.0,
        ack_latencies: Vec::new(),
        cpu: cpu.between(&cpu0, &cpu1),
        shard_label,
    };
    let mut sender_conns = Vec::new();
    while let Some(r) = senders.join_next().await {
        let s = r.context("sender task")??;
        sender_conns.push(s.conn);
        outcome.sent_total += s.sent;
        outcome.acked += s.acked_in_window;
        outcome.acked_total += s.acked;
        outcome.naks += s.naks;
        outcome.ack_latencies.extend(s.latencies);
    }
    while let Some(r) = receivers.join_next().await {
        outcome.delivered_total += r.context("receiver task")??;
    }
    outcome.delivered = delivered_in_window.load(Ordering::Relaxed);
    outcome.ack_latencies.sort();
    outcome.shard_counted = cluster::metric_value(
        &cluster::metrics_text(shard_admin).await?,
        "butterfly_sb_messages_total",
    )
    .unwrap_or(0.0)
        - counted_before;
    net.check_alive()?;
    drop(sender_conns);
    drop(ns_conns);
    eprintln!("stopping the network, dropping the database…");
    drop(net);
    drop(scratch);
    Ok(outcome)
}

/// A chat session of `caller` with `callee` on the shard the gateway names (which must
/// be `shard`): returns both NS connections and both switchboard connections.
async fn open_chat(
    mut caller: Conn,
    mut callee: Conn,
    shard: SocketAddr,
) -> anyhow::Result<(Conn, Conn, Conn, Conn)> {
    let (from, to) = (caller.email().to_owned(), callee.email().to_owned());
    // Right after the network is ready a gateway may not have read the shard registry
    // yet and answers 601 (no shard): ask again, for a bounded time.
    let asked = Instant::now();
    let xfr = loop {
        let tr = caller.cmd("XFR", "SB").await?;
        let f = loop {
            let f = caller.next().await?;
            if f.tr_id() == Some(tr) {
                break f;
            }
        };
        if f.verb.as_str() == "601" && asked.elapsed() < XFR_PATIENCE {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        if f.verb.as_str() != "XFR" {
            bail!("{from}: XFR SB answered {f:?}");
        }
        break f;
    };
    let (addr, cookie) = match xfr.args.get(1..5) {
        Some([sb, addr, cki, cookie]) if sb == "SB" && cki == "CKI" => (addr, cookie),
        _ => bail!("{from}: unexpected XFR answer {xfr:?}"),
    };
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("{from}: XFR named {addr:?}"))?;
    if addr != shard {
        bail!("{from}: XFR named {addr}, but the only shard is {shard}");
    }
    let mut a = Conn::connect_sb(addr, 12, &from).await?;
    let tr = a.cmd("USR", &format!("{from} {cookie}")).await?;
    let usr = a.answer("USR", tr).await?;
    if usr.args.get(1).map(String::as_str) != Some("OK") {
        bail!("{from}: switchboard USR refused: {usr:?}");
    }
    let tr = a.cmd("CAL", &to).await?;
    let cal = a.answer("CAL", tr).await?;
    if cal.args.get(1).map(String::as_str) != Some("RINGING") {
        bail!("{from}: CAL {to} answered {cal:?}");
    }
    let rng = callee.expect("RNG").await?;
    let (sid, rng_addr, rng_cookie) = match rng.args.get(0..4) {
        Some([sid, addr, cki, cookie]) if cki == "CKI" => (sid, addr, cookie),
        _ => bail!("{to}: unexpected RNG {rng:?}"),
    };
    let rng_addr: SocketAddr = rng_addr
        .parse()
        .with_context(|| format!("{to}: RNG named {rng_addr:?}"))?;
    let mut b = Conn::connect_sb(rng_addr, 12, &to).await?;
    let tr = b.cmd("ANS", &format!("{to} {rng_cookie} {sid}")).await?;
    // IRO lines (who is already there), then `ANS tr OK`.
    loop {
        let f = b.next().await?;
        match f.verb.as_str() {
            "IRO" => {}
            "ANS" if f.tr_id() == Some(tr) && f.args.get(1).map(String::as_str) == Some("OK") => {
                break;
            }
            _ => bail!("{to}: ANS answered {f:?}"),
        }
    }
    let joi = a.expect("JOI").await?;
    if joi.args.first() != Some(&to) {
        bail!("{from}: expected JOI {to}, got {joi:?}");
    }
    Ok((caller, callee, a, b))
}

/// A sender: from `t0` until `end` keep `window` messages unacknowledged (and at most
/// `max_unread` not yet read by the receiver), then read the remaining ACKs.
async fn send_messages(
    c: Conn,
    t0: Instant,
    end: Instant,
    (window, max_unread): (usize, u64),
    pair: Arc<Pair>,
) -> anyhow::Result<SenderOutcome> {
    let mut out = SenderOutcome {
        conn: c,
        sent: 0,
        acked_in_window: 0,
        acked: 0,
        naks: 0,
        latencies: Vec::new(),
    };
    let c = &mut out.conn;
    let (mut sent, mut acked, mut acked_in_window, mut naks) = (0u64, 0u64, 0u64, 0u64);
    let mut latencies = Vec::new();
    let result = async {
        tokio::time::sleep_until(t0).await;
        let mut in_flight: VecDeque<(u32, Instant)> = VecDeque::with_capacity(window);
        loop {
            if Instant::now() < end {
                let mut fed = false;
                while in_flight.len() < window
                    && (max_unread == 0
                        || sent - pair.received.load(Ordering::Acquire) < max_unread)
                {
                    let tr = c.take_tr();
                    c.feed(line(&format!("MSG {tr} A"))?.payload(BODY.as_bytes().to_vec()))
                        .await?;
                    in_flight.push_back((tr, Instant::now()));
                    sent += 1;
                    pair.sent.store(sent, Ordering::Release);
                    fed = true;
                }
                if fed {
                    c.flush().await?;
                }
                if in_flight.is_empty() {
                    // Everything is acknowledged, but the receiver is behind: wait for it.
                    tokio::select! {
                        _ = pair.progress.notified() => {}
                        _ = tokio::time::sleep_until(end) => {}
                    }
                    continue;
                }
            }
            if in_flight.is_empty() {
                return anyhow::Ok(());
            }
            let Some(f) = c.next_until(end + DRAIN).await? else {
                bail!(
                    "{}: {} messages still unacknowledged {} s after the window",
                    c.email(),
                    in_flight.len(),
                    DRAIN.as_secs()
                );
            };
            let now = Instant::now();
            let verb = f.verb.as_str();
            if verb != "ACK" && verb != "NAK" {
                continue;
            }
            // The switchboard answers in order.
            let Some((tr, at)) = in_flight.pop_front() else {
                bail!("{}: {verb} with nothing in flight: {f:?}", c.email());
            };
            if f.tr_id() != Some(tr) {
                bail!("{}: expected the answer to MSG {tr}, got {f:?}", c.email());
            }
            if verb == "NAK" {
                naks += 1;
                continue;
            }
            acked += 1;
            if now <= end {
                acked_in_window += 1;
                latencies.push(now.duration_since(at));
            }
        }
    }
    .await;
    pair.done.store(true, Ordering::Release);
    result?;
    out.sent = sent;
    out.acked = acked;
    out.acked_in_window = acked_in_window;
    out.naks = naks;
    out.latencies = latencies;
    Ok(out)
}

/// A receiver: count messages until it has read all its sender sent (or the drain time
/// is up). Returns how many it read.
async fn receive_messages(
    mut c: Conn,
    end: Instant,
    pair: Arc<Pair>,
    delivered_in_window: Arc<AtomicU64>,
) -> anyhow::Result<u64> {
    let mut received = 0u64;
    loop {
        if pair.done.load(Ordering::Acquire) && received >= pair.sent.load(Ordering::Acquire) {
            return Ok(received);
        }
        let now = Instant::now();
        if now > end + DRAIN {
            return Ok(received);
        }
        // Past the window, look at the sender's state every 50 ms.
        let wait = if now < end {
            end
        } else {
            (now + Duration::from_millis(50)).min(end + DRAIN)
        };
        let f = match c.next_until(wait).await {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(e) => {
                let sent = pair.sent.load(Ordering::Acquire);
                return Err(e.context(format!(
                    "after reading {received} of the {sent} messages its sender had written \
                     (the shard drops a participant whose queue of 256 is full)"
                )));
            }
        };
        if f.verb.as_str() != "MSG" {
            continue;
        }
        received += 1;
        pair.received.store(received, Ordering::Release);
        pair.progress.notify_one();
        if Instant::now() <= end {
            delivered_in_window.fetch_add(1, Ordering::Relaxed);
        }
    }
}
