//! `fanout`: how long a presence change takes to reach watchers signed in on another
//! gateway of a distributed network.
//!
//! `publishers` users sign in on gateway A, `watchers` users on gateway B, every watcher
//! with every publisher on its forward list. Each publisher then changes its status
//! `rounds` times, one `CHG` every `interval` (the publishers staggered across the
//! interval). For every (change, watcher) pair the bench measures the time from just
//! before the `CHG` is written on A to the watcher's reading of the matching `NLN` on B.
//! Changes cycle through six statuses, so consecutive changes always differ and the n-th
//! `NLN` a watcher sees from a publisher is that publisher's n-th change (a watcher that
//! sees a later status first counts the changes in between as lost).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use butterfly_core::account::PasswordCost;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::Conn;
use crate::cluster::{self, Cluster, ClusterOptions, Scratch};
use crate::seed::{self, Account};
use crate::server::check_socket_budget;
use crate::stats::{CpuUse, CpuWatch};

/// The statuses the publishers cycle through; consecutive ones differ.
const STATUSES: [&str; 6] = ["AWY", "BSY", "BRB", "PHN", "LUN", "NLN"];
/// How long watchers wait for late deliveries after the last change was sent.
const DRAIN: Duration = Duration::from_secs(10);
/// Sign-ins in flight at once during the set-up.
const SIGN_IN_CONCURRENCY: usize = 16;
/// MSN 7.5's capabilities, as `go_online` sends them.
const CAPS: &str = "268435456 0";

fn status_of(change: usize) -> &'static str {
    STATUSES[change % STATUSES.len()]
}

pub(crate) struct Options {
    pub(crate) server: PathBuf,
    pub(crate) script: PathBuf,
    pub(crate) log_filter: String,
    pub(crate) postgres: String,
    pub(crate) redis: String,
    pub(crate) watchers: usize,
    pub(crate) publishers: usize,
    pub(crate) rounds: usize,
    pub(crate) interval: Duration,
    pub(crate) cost: PasswordCost,
    pub(crate) keep_logs: bool,
}

pub(crate) struct Outcome {
    /// Every (change, watcher) delay measured, sorted.
    pub(crate) latencies: Vec<Duration>,
    /// `CHG` → its answer on gateway A, sorted.
    pub(crate) chg_replies: Vec<Duration>,
    pub(crate) changes: usize,
    pub(crate) expected: usize,
    /// Changes a watcher never saw although it saw a later one.
    pub(crate) lost: usize,
    /// Changes a watcher had not seen when it stopped waiting.
    pub(crate) missing: usize,
    /// NLN lines from a publisher that matched no change.
    pub(crate) unexpected: usize,
    /// First CHG written → last CHG written.
    pub(crate) send_secs: f64,
    /// First CHG written → last NLN read.
    pub(crate) deliver_secs: f64,
    /// Gateway B's own measure of Redis publish → its receipt (`butterfly_pubsub_lag_seconds`,
    /// channel `pres`) during the run: messages and mean delay.
    pub(crate) pubsub_count: f64,
    pub(crate) pubsub_mean: Duration,
    pub(crate) cpu: CpuUse,
    pub(crate) watchers_with_all_iln: usize,
}

/// Per watcher: what it measured.
struct Seen {
    latencies: Vec<Duration>,
    lost: usize,
    missing: usize,
    unexpected: usize,
    last: Option<Instant>,
}

/// `sent[p][i]`: when publisher `p` wrote its change `i`.
type Sent = Arc<Vec<Vec<OnceLock<Instant>>>>;

pub(crate) async fn run(opts: &Options) -> anyhow::Result<Outcome> {
    if opts.watchers == 0 || opts.publishers == 0 || opts.rounds == 0 {
        bail!("--watchers, --publishers and --rounds must be at least 1");
    }
    check_socket_budget((opts.watchers + opts.publishers) as u64)?;
    let scratch = Scratch::prepare(&opts.server, &opts.script, &opts.postgres, &opts.redis).await?;

    let publishers = seed::accounts("pub", opts.publishers);
    let watchers = seed::accounts("watch", opts.watchers);
    let all: Vec<Account> = publishers.iter().chain(&watchers).cloned().collect();
    eprintln!("seeding {} users…", all.len());
    let store = seed::postgres(&scratch.url).await?;
    let ids = seed::seed_postgres(&store, &all, opts.cost).await?;
    let owners: Vec<_> = ids[publishers.len()..]
        .iter()
        .zip(&watchers)
        .map(|(id, a)| (*id, a.email.clone()))
        .collect();
    let publisher_emails: Vec<String> = publishers.iter().map(|a| a.email.clone()).collect();
    eprintln!(
        "putting {} publishers on the forward list of each of {} watchers…",
        publishers.len(),
        watchers.len()
    );
    seed::add_contacts(&store, &owners, &publisher_emails).await?;
    store.close().await;

    eprintln!(
        "starting the network: 2 gateways, 1 switchboard ({})…",
        opts.script.display()
    );
    let mut net = Cluster::start(
        &ClusterOptions {
            script: &opts.script,
            binary: &opts.server,
            log_filter: &opts.log_filter,
            gateways: 2,
            switchboards: 1,
            keep_logs: opts.keep_logs,
        },
        &scratch,
        &opts.redis,
    )
    .await?;
    let (gw_a, gw_b, http) = (
        net.gateways[0].addr,
        net.gateways[1].addr,
        net.passport.addr,
    );
    eprintln!("  gateway A {gw_a}, gateway B {gw_b}, passport {http}");

    eprintln!("signing in {} publishers on gateway A…", publishers.len());
    let pub_conns = sign_in_all(gw_a, http, &publishers).await?;
    eprintln!("signing in {} watchers on gateway B…", watchers.len());
    let online = sign_in_all(gw_b, http, &watchers).await?;
    let mut watcher_conns = Vec::with_capacity(online.len());
    let mut watchers_with_all_iln = 0;
    for (c, after) in online {
        let iln = after.iter().filter(|f| f.verb.as_str() == "ILN").count();
        if iln >= publishers.len() {
            watchers_with_all_iln += 1;
        }
        watcher_conns.push(c);
    }
    if watchers_with_all_iln < watchers.len() {
        eprintln!(
            "  note: {} of {} watchers saw every publisher's ILN before their PNG's QNG",
            watchers_with_all_iln,
            watchers.len()
        );
    }
    net.check_alive()?;

    // What to read CPU time of during the run.
    let mut procs = net.processes();
    if let Ok(Some(pid)) = cluster::redis_pid(&opts.redis).await {
        procs.push(("redis-server".to_owned(), pid));
    }
    let cpu = CpuWatch::new(procs);
    let b_admin = net.gateways[1].admin;
    let lag_sum = "butterfly_pubsub_lag_seconds_sum{channel=\"pres\"}";
    let lag_count = "butterfly_pubsub_lag_seconds_count{channel=\"pres\"}";
    let before = cluster::metrics_text(b_admin).await?;

    let (k, m) = (opts.publishers, opts.rounds);
    let sent: Sent = Arc::new(
        (0..k)
            .map(|_| (0..m).map(|_| OnceLock::new()).collect())
            .collect(),
    );
    let index: Arc<HashMap<String, usize>> = Arc::new(
        publisher_emails
            .iter()
            .enumerate()
            .map(|(i, e)| (e.clone(), i))
            .collect(),
    );
    let (done_tx, done_rx) = watch::channel(None::<Instant>);
    eprintln!(
        "{k} publishers × {m} changes (one every {} ms each) → {} watchers…",
        opts.interval.as_millis(),
        watcher_conns.len()
    );
    let cpu0 = cpu.sample()?;
    let t0 = Instant::now() + Duration::from_millis(200);

    let mut watcher_tasks = JoinSet::new();
    for c in watcher_conns {
        let (sent, index, done) = (sent.clone(), index.clone(), done_rx.clone());
        watcher_tasks.spawn(watch_changes(c, sent, index, done, m));
    }
    let mut publisher_tasks = JoinSet::new();
    for (p, c) in pub_conns.into_iter().map(|(c, _)| c).enumerate() {
        let offset = opts.interval.mul_f64(p as f64 / k as f64);
        publisher_tasks.spawn(publish_changes(
            c,
            p,
            sent.clone(),
            t0 + offset,
            opts.interval,
            m,
        ));
    }
    let mut chg_replies = Vec::with_capacity(k * m);
    let mut publisher_conns = Vec::new();
    while let Some(r) = publisher_tasks.join_next().await {
        let (c, replies) = r.context("publisher task")??;
        chg_replies.extend(replies);
        publisher_conns.push(c);
    }
    let last_sent = sent
        .iter()
        .flatten()
        .filter_map(|t| t.get().copied())
        .max()
        .unwrap_or(t0);
    let _ = done_tx.send(Some(last_sent));
    let mut seen = Vec::new();
    while let Some(r) = watcher_tasks.join_next().await {
        seen.push(r.context("watcher task")??);
    }
    let cpu1 = cpu.sample()?;
    let after = cluster::metrics_text(b_admin).await?;
    net.check_alive()?;

    let first_sent = sent
        .iter()
        .flatten()
        .filter_map(|t| t.get().copied())
        .min()
        .unwrap_or(t0);
    let last_read = seen
        .iter()
        .filter_map(|s| s.last)
        .max()
        .unwrap_or(first_sent);
    let mut latencies: Vec<Duration> = seen
        .iter()
        .flat_map(|s| s.latencies.iter().copied())
        .collect();
    latencies.sort();
    chg_replies.sort();
    let delta = |series: &str| {
        cluster::metric_value(&after, series).unwrap_or(0.0)
            - cluster::metric_value(&before, series).unwrap_or(0.0)
    };
    let pubsub_count = delta(lag_count);
    let pubsub_mean = if pubsub_count > 0.0 {
        Duration::from_secs_f64(delta(lag_sum) / pubsub_count)
    } else {
        Duration::ZERO
    };
    // The clients go first, so the network has nothing to drain when it stops.
    drop(publisher_conns);
    eprintln!("stopping the network, dropping the database…");
    drop(net);
    drop(scratch);
    Ok(Outcome {
        changes: k * m,
        expected: k * m * opts.watchers,
        lost: seen.iter().map(|s| s.lost).sum(),
        missing: seen.iter().map(|s| s.missing).sum(),
        unexpected: seen.iter().map(|s| s.unexpected).sum(),
        send_secs: last_sent.duration_since(first_sent).as_secs_f64(),
        deliver_secs: last_read.duration_since(first_sent).as_secs_f64(),
        latencies,
        chg_replies,
        pubsub_count,
        pubsub_mean,
        cpu: cpu.between(&cpu0, &cpu1),
        watchers_with_all_iln,
    })
}

/// Sign each account in on `ns` with MSNP12 and go online (SYN, CHG NLN, QRY); returns
/// the connections and what each saw after its CHG, in the order given.
async fn sign_in_all(
    ns: std::net::SocketAddr,
    http: std::net::SocketAddr,
    accounts: &[Account],
) -> anyhow::Result<Vec<(Conn, Vec<msnp::frame::Frame>)>> {
    futures::stream::iter(accounts.iter().cloned())
        .map(|a| async move {
            let mut c = Conn::connect(ns, 12).await?;
            c.sign_in(http, &a.email, &a.password).await?;
            let after = c.go_online().await?;
            anyhow::Ok((c, after))
        })
        .buffered(SIGN_IN_CONCURRENCY)
        .try_collect()
        .await
}

/// Publisher `p`: change `i` at `first + i × interval`, each `CHG` answered before the
/// next (a client waits for its answer). Returns the connection and the answer delays.
async fn publish_changes(
    mut c: Conn,
    p: usize,
    sent: Sent,
    first: Instant,
    interval: Duration,
    rounds: usize,
) -> anyhow::Result<(Conn, Vec<Duration>)> {
    let mut replies = Vec::with_capacity(rounds);
    for i in 0..rounds {
        tokio::time::sleep_until(first + interval * i as u32).await;
        let at = Instant::now();
        let _ = sent[p][i].set(at);
        let tr = c.cmd("CHG", &format!("{} {CAPS}", status_of(i))).await?;
        c.answer_skipping("CHG", tr).await?;
        replies.push(at.elapsed());
    }
    Ok((c, replies))
}

/// A watcher: read every `NLN` and match it with the change it shows.
async fn watch_changes(
    mut c: Conn,
    sent: Sent,
    index: Arc<HashMap<String, usize>>,
    mut done: watch::Receiver<Option<Instant>>,
    rounds: usize,
) -> anyhow::Result<Seen> {
    let k = sent.len();
    let mut next = vec![0usize; k];
    let mut seen = Seen {
        latencies: Vec::with_capacity(k * rounds),
        lost: 0,
        missing: 0,
        unexpected: 0,
        last: None,
    };
    let mut accounted = 0;
    while accounted < k * rounds {
        let stop_at = (*done.borrow_and_update()).map(|last| last + DRAIN);
        let wait_until = stop_at.unwrap_or_else(|| Instant::now() + Duration::from_millis(500));
        let frame = tokio::select! {
            f = c.next_until(wait_until) => f?,
            // The last change went out: from now on wait at most DRAIN.
            _ = done.changed(), if stop_at.is_none() => continue,
        };
        let Some(f) = frame else {
            if stop_at.is_some_and(|s| Instant::now() >= s) {
                break;
            }
            continue;
        };
        if f.verb.as_str() != "NLN" {
            continue;
        }
        let now = Instant::now();
        let (Some(status), Some(email)) = (f.args.first(), f.args.get(1)) else {
            seen.unexpected += 1;
            continue;
        };
        let Some(&p) = index.get(email.as_str()) else {
            seen.unexpected += 1;
            continue;
        };
        // The first change not yet seen that shows this status.
        let Some(j) =
            (next[p]..rounds).find(|&j| status_of(j) == status && sent[p][j].get().is_some())
        else {
            seen.unexpected += 1;
            continue;
        };
        let at = sent[p][j].get().copied().unwrap_or(now);
        seen.latencies.push(now.duration_since(at));
        seen.lost += j - next[p];
        accounted += j + 1 - next[p];
        next[p] = j + 1;
        seen.last = Some(now);
    }
    seen.missing = next.iter().map(|n| rounds - n).sum();
    Ok(seen)
}
