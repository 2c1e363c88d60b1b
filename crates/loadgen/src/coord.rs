//! The coordinator: writes the plan, starts the worker processes, shows progress, answers
//! the workers' presence check, merges their results, samples the server's memory and
//! CPU time at the phase boundaries, and reports (table, JSON, thresholds).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::plan::{Plan, now_us, sleep_until_us};
use crate::procfs::{self, Sample};
use crate::seed::Manifest;
use crate::stats::{LATENCIES, Stats, Summary, summary};
use crate::worker::{Finals, Out};

/// Limits that make the run fail (exit status 1), for CI smoke runs.
#[derive(Debug, Clone, Default)]
pub struct Thresholds {
    pub max_errors: Option<u64>,
    pub max_missed: Option<u64>,
    pub max_duplicates: Option<u64>,
    pub max_fanout_p99_ms: Option<f64>,
    pub max_delivery_p99_ms: Option<f64>,
    pub min_signins: Option<u64>,
}

/// The server's readings at the phase boundaries, per process.
#[derive(Debug, Clone, Serialize)]
pub struct ServerUse {
    pub pid: u32,
    pub before: Sample,
    pub after_ramp: Sample,
    pub after_steady: Sample,
    /// (RSS after the ramp − before) ÷ all users online after the ramp (with several
    /// gateways, each holds only its share: see [`Report::kib_per_user_all_servers`]).
    pub kib_per_connection: f64,
    /// CPU seconds in the ramp per 1,000 sign-ins.
    pub cpu_secs_per_1000_signins: f64,
    /// CPU seconds in the steady phase per 1,000 notifications and chat messages delivered.
    pub cpu_secs_per_1000_messages: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub plan: Plan,
    pub password_cost: String,
    pub latencies: Vec<(String, String, Summary)>,
    pub counters: HashMap<String, u64>,
    pub errors: HashMap<String, u64>,
    pub rates: Rates,
    pub server: Vec<ServerUse>,
    /// The RSS growth over the ramp of every `--server-pid` together ÷ users online: what
    /// a user costs the whole cluster.
    pub kib_per_user_all_servers: Option<f64>,
    /// What makes some figures less than they seem (printed, and kept here).
    pub warnings: Vec<String>,
    pub failed_thresholds: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Rates {
    pub signins_per_sec: f64,
    pub notifications_per_sec: f64,
    pub messages_per_sec: f64,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
}

/// Run `plan` with the worker binary `exe`; returns the report (already printed).
pub async fn run(
    plan: Plan,
    exe: PathBuf,
    json: Option<PathBuf>,
    thresholds: Thresholds,
    server_pids: Vec<u32>,
) -> anyhow::Result<Report> {
    let manifest = Manifest::read(&plan.manifest)?;
    let need = plan.users as u64 / plan.workers as u64 + 64;
    if let Some(limit) = procfs::open_files_limit()
        && limit < need
    {
        bail!(
            "each worker needs about {need} open files (one per user, plus switchboards) and \
             the limit is {limit}: raise it with `ulimit -n`, or use more --workers"
        );
    }
    let plan_path =
        std::env::temp_dir().join(format!("butterfly-loadgen-{}.json", std::process::id()));
    std::fs::write(&plan_path, serde_json::to_vec_pretty(&plan)?)
        .with_context(|| format!("writing {}", plan_path.display()))?;
    let result = drive(&plan, &plan_path, exe, &server_pids).await;
    let _ = std::fs::remove_file(&plan_path);
    let (stats, last_receipts, server) = result?;

    let mut stats = stats;
    for (planned, last) in last_receipts.values() {
        stats.record("fanout_last", last.saturating_sub(*planned));
    }
    let latencies = LATENCIES
        .iter()
        .map(|(name, what)| {
            let s = summary(&stats.hists[*name]);
            ((*name).to_owned(), (*what).to_owned(), s)
        })
        .collect::<Vec<_>>();
    // Sign-ins per second achieved: from the planned start to the last one completed.
    let ramp_secs = stats
        .count("max_signin_done_us")
        .saturating_sub(plan.epoch_us) as f64
        / 1e6;
    let rates = Rates {
        signins_per_sec: stats.count("signins") as f64 / ramp_secs.max(1e-9),
        notifications_per_sec: stats.count("notifications") as f64 / plan.steady_secs.max(1e-9),
        messages_per_sec: stats.count("messages_received") as f64 / plan.steady_secs.max(1e-9),
    };
    let mut failed = Vec::new();
    let mut over = |what: &str, value: f64, limit: Option<f64>| {
        if let Some(limit) = limit
            && value > limit
        {
            failed.push(format!("{what} {value} > {limit}"));
        }
    };
    over(
        "errors",
        stats.errors_total() as f64,
        thresholds.max_errors.map(|v| v as f64),
    );
    over(
        "missed",
        stats.count("missed") as f64,
        thresholds.max_missed.map(|v| v as f64),
    );
    over(
        "duplicates",
        stats.count("duplicates") as f64,
        thresholds.max_duplicates.map(|v| v as f64),
    );
    over(
        "fan-out p99 ms",
        summary(&stats.hists["fanout"]).p99_ms,
        thresholds.max_fanout_p99_ms,
    );
    over(
        "delivery p99 ms",
        summary(&stats.hists["delivery"]).p99_ms,
        thresholds.max_delivery_p99_ms,
    );
    if let Some(min) = thresholds.min_signins
        && stats.count("signins") < min
    {
        failed.push(format!("sign-ins {} < {min}", stats.count("signins")));
    }
    let kib_per_user_all_servers = (!server.is_empty()).then(|| {
        server
            .iter()
            .map(|s| s.after_ramp.rss_kib as f64 - s.before.rss_kib as f64)
            .sum::<f64>()
            / stats.count("signins").max(1) as f64
    });
    let mut warnings = Vec::new();
    let last_signin = stats.count("max_signin_done_us");
    if last_signin > plan.steady_start() {
        warnings.push(format!(
            "the ramp ended {:.1} s after the steady phase began (the server or the generator \
             fell behind the planned sign-in rate): changes and chats planned for users not \
             yet online waited or were refused; use a lower --ramp-rate or a longer \
             --settle-secs for clean steady-state figures",
            (last_signin - plan.steady_start()) as f64 / 1e6
        ));
    }
    let report = Report {
        warnings,
        kib_per_user_all_servers,
        password_cost: manifest.password_cost.clone(),
        plan,
        latencies,
        counters: stats.counters.clone().into_iter().collect(),
        errors: stats.errors.clone().into_iter().collect(),
        rates,
        server,
        failed_thresholds: failed,
    };
    print_table(&report);
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    Ok(report)
}

type Receipts = HashMap<(u32, u32), (u64, u64)>;

async fn drive(
    plan: &Plan,
    plan_path: &std::path::Path,
    exe: PathBuf,
    server_pids: &[u32],
) -> anyhow::Result<(Stats, Receipts, Vec<ServerUse>)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, anyhow::Result<Out>)>();
    let mut workers = Vec::new();
    for index in 0..plan.workers {
        let mut child = Command::new(&exe)
            .arg("worker")
            .arg("--plan")
            .arg(plan_path)
            .arg("--index")
            .arg(index.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting worker {index} ({})", exe.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("worker stdout"))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("worker stdin"))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        let out = serde_json::from_str::<Out>(&line)
                            .with_context(|| format!("worker {index} wrote {line:?}"));
                        if tx.send((index, out)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send((index, Err(anyhow!(e).context("reading a worker"))));
                        return;
                    }
                }
            }
        });
        workers.push(Worker { child, stdin });
    }
    drop(tx);

    // Server readings at the phase boundaries, taken on time by their own task.
    let sampler = {
        let pids = server_pids.to_vec();
        let (t1, t2) = (plan.steady_start(), plan.steady_end());
        tokio::spawn(async move {
            let take = |pids: &[u32]| -> Vec<Option<Sample>> {
                pids.iter().map(|p| procfs::sample(*p).ok()).collect()
            };
            let before = take(&pids);
            sleep_until_us(t1).await;
            let after_ramp = take(&pids);
            sleep_until_us(t2).await;
            let after_steady = take(&pids);
            (before, after_ramp, after_steady)
        })
    };

    let mut progress: HashMap<usize, (usize, u64, u64, u64, u64)> = HashMap::new();
    let mut finals = vec![0u32; plan.users];
    let mut sent = 0;
    let mut merged = Stats::default();
    let mut receipts: Receipts = HashMap::new();
    let mut reports = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_signins = 0u64;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut ticks = 0u64;
    while reports < plan.workers {
        tokio::select! {
            msg = rx.recv() => {
                let Some((index, out)) = msg else {
                    bail!("a worker stopped before reporting (see its messages above)");
                };
                match out? {
                    Out::Progress { online, signins, notifications, messages, errors } => {
                        progress.insert(index, (online, signins, notifications, messages, errors));
                    }
                    Out::Sent { finals: mine } => {
                        for (u, s) in mine {
                            if let Some(f) = finals.get_mut(u as usize) {
                                *f = s;
                            }
                        }
                        sent += 1;
                        if sent == plan.workers {
                            let line = serde_json::to_string(&Finals { finals: finals.clone() })? + "\n";
                            for w in &mut workers {
                                w.stdin.write_all(line.as_bytes()).await.context("answering a worker")?;
                                w.stdin.flush().await?;
                            }
                        }
                    }
                    Out::Report { stats, last_receipts } => {
                        merged.merge(&Stats::from_wire(&stats)?);
                        for (s, q, p, r) in last_receipts {
                            let e = receipts.entry((s, q)).or_insert((p, r));
                            e.1 = e.1.max(r);
                        }
                        reports += 1;
                    }
                }
            }
            _ = tick.tick() => {
                let sum = progress.values().fold((0, 0, 0, 0, 0), |a, p| (a.0 + p.0, a.1 + p.1, a.2 + p.2, a.3 + p.3, a.4 + p.4));
                let now = now_us();
                let phase = if now < plan.epoch_us { "starting" }
                    else if now < plan.steady_start() { "ramp" }
                    else if now < plan.steady_end() { "steady" }
                    else if now < plan.accounting_end() { "grace" }
                    else if now < plan.churn_end() { "churn" }
                    else if now < plan.drain_start() { "grace" }
                    else { "drain" };
                let t = now.saturating_sub(plan.epoch_us) as f64 / 1e6;
                let line = format!(
                    "[{t:6.1} s] {phase:8} online {:>7}  sign-ins {:>7} (+{:>5}/s)  notifications {:>9}  messages {:>8}  errors {:>5}",
                    sum.0, sum.1, sum.1.saturating_sub(last_signins), sum.2, sum.3, sum.4
                );
                // One line rewritten in place on a terminal; every 5 s a line of its own
                // in a log.
                if tty {
                    eprint!("\r{line}   ");
                    let _ = std::io::stderr().flush();
                } else if ticks.is_multiple_of(5) {
                    eprintln!("{line}");
                }
                ticks += 1;
                last_signins = sum.1;
            }
        }
    }
    if tty {
        eprintln!();
    }
    for mut w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w.child.wait()).await;
    }
    let (before, after_ramp, after_steady) = sampler.await?;
    let online_after_ramp = merged.count("signins").max(1) as f64;
    let delivered =
        (merged.count("notifications") + merged.count("messages_received")).max(1) as f64;
    let server = server_pids
        .iter()
        .enumerate()
        .filter_map(|(i, &pid)| {
            let (b, r, s) = (before[i]?, after_ramp[i]?, after_steady[i]?);
            Some(ServerUse {
                pid,
                before: b,
                after_ramp: r,
                after_steady: s,
                kib_per_connection: (r.rss_kib as f64 - b.rss_kib as f64) / online_after_ramp,
                cpu_secs_per_1000_signins: (r.cpu_secs - b.cpu_secs) / online_after_ramp * 1000.0,
                cpu_secs_per_1000_messages: (s.cpu_secs - r.cpu_secs) / delivered * 1000.0,
            })
        })
        .collect();
    Ok((merged, receipts, server))
}

fn print_table(r: &Report) {
    let c = |k: &str| r.counters.get(k).copied().unwrap_or(0);
    println!();
    println!(
        "butterfly-loadgen: {} users ({} workers, dialects {}), {} sign-in, password hash {}",
        r.plan.users,
        r.plan.workers,
        r.plan
            .mix
            .iter()
            .map(|(d, p)| format!("MSNP{d} {p}%"))
            .collect::<Vec<_>>()
            .join(", "),
        match r.plan.auth {
            crate::plan::AuthMode::Md5 => "MD5",
            crate::plan::AuthMode::Passport => "Passport",
            crate::plan::AuthMode::Ticket { .. } => "pre-issued ticket",
        },
        r.password_cost
    );
    println!();
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    for (name, _, s) in &r.latencies {
        if s.count == 0 {
            continue;
        }
        println!(
            "{:<22} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            name, s.count, s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.max_ms
        );
    }
    println!();
    println!(
        "sign-ins {} ({:.0}/s achieved, {:.0}/s planned)   presence changes {}   chats {} ok {}",
        c("signins"),
        r.rates.signins_per_sec,
        r.plan.ramp_rate,
        c("presence_changes"),
        c("chats"),
        c("chats_ok")
    );
    println!(
        "notifications {} of {} expected ({:.0}/s)   missed {}   duplicates {}",
        c("notifications"),
        c("notifications_expected"),
        r.rates.notifications_per_sec,
        c("missed"),
        c("duplicates")
    );
    println!(
        "messages sent {} acked {} delivered {} ({:.0}/s)   churned {}",
        c("messages_sent"),
        c("messages_acked"),
        c("messages_received"),
        r.rates.messages_per_sec,
        c("churned")
    );
    let errors: u64 = r.errors.values().sum();
    println!("errors {errors}");
    let mut kinds: Vec<_> = r.errors.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1));
    for (kind, n) in kinds.iter().take(10) {
        println!("  {n:>8}  {kind}");
    }
    for s in &r.server {
        println!(
            "server pid {}: RSS {} → {} → {} KiB, {:.2} KiB per connection; CPU {:.2} s per 1,000 sign-ins, {:.3} s per 1,000 messages",
            s.pid,
            s.before.rss_kib,
            s.after_ramp.rss_kib,
            s.after_steady.rss_kib,
            s.kib_per_connection,
            s.cpu_secs_per_1000_signins,
            s.cpu_secs_per_1000_messages
        );
    }
    if let (Some(kib), true) = (r.kib_per_user_all_servers, r.server.len() > 1) {
        println!("all server processes together: {kib:.2} KiB per signed-in user");
    }
    for w in &r.warnings {
        println!("WARNING: {w}");
    }
    for f in &r.failed_thresholds {
        println!("THRESHOLD FAILED: {f}");
    }
}
