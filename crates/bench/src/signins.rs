//! `sign-ins`: full sign-ins per second against the real server, and the server CPU time
//! they cost.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use butterfly_core::account::PasswordCost;
use futures::{StreamExt, TryStreamExt};

use crate::client::Conn;
use crate::seed::{self, Account};
use crate::server::{DataDir, Server, check_socket_budget, clk_tck, cpu_ticks, machine_busy_ticks};

pub(crate) struct Options {
    pub(crate) server: PathBuf,
    pub(crate) log_filter: String,
    pub(crate) count: usize,
    pub(crate) concurrency: usize,
    pub(crate) dialect: u8,
    pub(crate) cost: PasswordCost,
}

pub(crate) struct Outcome {
    pub(crate) wall_secs: f64,
    pub(crate) server_user_secs: f64,
    pub(crate) server_system_secs: f64,
    pub(crate) bench_cpu_secs: f64,
    /// CPU time the rest of the machine (neither the server nor the bench) used
    /// during the run: contention from other work on the same cores.
    pub(crate) other_cpu_secs: f64,
    /// The same, in the second before the run, as a share of one core.
    pub(crate) other_load_before: f64,
    pub(crate) tck: u64,
    pub(crate) tck_assumed: bool,
    pub(crate) logins_counted: u64,
    /// Per sign-in latency, sorted.
    pub(crate) latencies: Vec<Duration>,
}

impl Outcome {
    pub(crate) fn server_cpu_secs(&self) -> f64 {
        self.server_user_secs + self.server_system_secs
    }

    pub(crate) fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)]
    }
}

/// The whole sign-in of one account, then `OUT`; returns how long it took.
async fn sign_in_out(
    dialect: u8,
    ns: std::net::SocketAddr,
    http: std::net::SocketAddr,
    a: Account,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut c = Conn::connect(ns, dialect).await?;
    c.sign_in(http, &a.email, &a.password).await?;
    c.sign_out().await?;
    Ok(started.elapsed())
}

async fn run_all(
    opts: &Options,
    server: &Server,
    accounts: &[Account],
) -> anyhow::Result<Vec<Duration>> {
    let (ns, http, d) = (server.ns, server.http, opts.dialect);
    futures::stream::iter(accounts.iter().cloned())
        .map(|a| sign_in_out(d, ns, http, a))
        .buffer_unordered(opts.concurrency.max(1))
        .try_collect()
        .await
}

pub(crate) async fn run(opts: &Options) -> anyhow::Result<Outcome> {
    if !(2..=12).contains(&opts.dialect) {
        bail!("--dialect must be 2 to 12 (the NS offers MSNP2–MSNP12)");
    }
    let c = opts.concurrency.max(1);
    check_socket_budget(c as u64 * 3)?;
    let (tck, tck_assumed) = clk_tck();

    let dir = DataDir::create("signins")?;
    let measured = seed::accounts("user", opts.count);
    let warm = seed::accounts("warm", c);
    let all: Vec<Account> = measured.iter().chain(&warm).cloned().collect();
    eprintln!(
        "seeding {} accounts with {} (this is the slow part of the set-up)…",
        all.len(),
        seed::describe(opts.cost)
    );
    seed::seed(&dir.db(), &all, opts.cost).await?;

    let mut server = Server::start(&opts.server, dir, &opts.log_filter).await?;
    // Warm-up: one round of `c` sign-ins (opens the SQLite readers, starts the runtime's
    // threads) that is not counted.
    run_all(opts, &server, &warm)
        .await
        .context("warm-up round")?;

    // How busy is the rest of the machine right now?
    let (m0, s0, b0) = (
        machine_busy_ticks()?,
        server.cpu_ticks()?,
        cpu_ticks("/proc/self/stat")?,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (m1, s1, b1) = (
        machine_busy_ticks()?,
        server.cpu_ticks()?,
        cpu_ticks("/proc/self/stat")?,
    );
    let other_before_ticks =
        (m1 - m0).saturating_sub((s1.0 + s1.1 + b1.0 + b1.1) - (s0.0 + s0.1 + b0.0 + b0.1));
    let other_load_before = other_before_ticks as f64 / tck as f64;
    if other_load_before > 0.2 {
        eprintln!(
            "warning: other processes are using {:.0} % of a core; the timings will show it",
            other_load_before * 100.0
        );
    }

    let logins_before = server.metric("butterfly_ns_logins_total").await?;
    let machine0 = machine_busy_ticks()?;
    let (su0, ss0) = server.cpu_ticks()?;
    let (bu0, bs0) = cpu_ticks("/proc/self/stat")?;
    eprintln!(
        "MSNP{}: {} sign-ins, {c} in flight…",
        opts.dialect, opts.count
    );
    let started = Instant::now();
    let mut latencies = run_all(opts, &server, &measured)
        .await
        .context("measured sign-ins")?;
    let wall_secs = started.elapsed().as_secs_f64();
    let (su1, ss1) = server.cpu_ticks()?;
    let (bu1, bs1) = cpu_ticks("/proc/self/stat")?;
    let machine1 = machine_busy_ticks()?;
    let logins_after = server.metric("butterfly_ns_logins_total").await?;
    server.stop();

    latencies.sort();
    let secs = |ticks: u64| ticks as f64 / tck as f64;
    Ok(Outcome {
        wall_secs,
        server_user_secs: secs(su1 - su0),
        server_system_secs: secs(ss1 - ss0),
        bench_cpu_secs: secs((bu1 + bs1) - (bu0 + bs0)),
        other_cpu_secs: secs(
            (machine1 - machine0)
                .saturating_sub((su1 + ss1) - (su0 + ss0) + (bu1 + bs1) - (bu0 + bs0)),
        ),
        other_load_before,
        tck,
        tck_assumed,
        logins_counted: logins_after - logins_before,
        latencies,
    })
}
