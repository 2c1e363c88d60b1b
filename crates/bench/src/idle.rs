//! `idle-memory`: the server's resident memory per additional idle connection.
//!
//! Each scenario gets a fresh server. A warm-up round (as many clients as are ever in
//! flight) signs in and out first, so one-off costs — the runtime's worker and blocking
//! threads, the SQLite reader connections, allocator arenas, the buffers of `concurrency`
//! sign-ins in progress — are in the "before" reading. Then `connections` clients sign
//! in and stay; the RSS difference divided by their number is the cost of one.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use butterfly_core::account::PasswordCost;
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{Conn, TIMEOUT};
use crate::seed::{self, Account};
use crate::server::{DataDir, Server, check_socket_budget};

/// The cost the idle accounts are hashed with: the server's default, as deployed. (A
/// cheaper hash would be quicker to seed, but argon2's memory blocks below the allocator's
/// mmap threshold, 128 KiB, come from the heap and leave it fragmented, which would be
/// measured as per-connection memory that a default deployment does not have.) MSNP8+
/// sign-ins check it through Passport; at ~14 ms of CPU each, 5,000 took 40 s (docs/BENCHMARKS.md), well
/// inside the server's 300 s idle timeout.
pub(crate) const IDLE_COST: PasswordCost = PasswordCost {
    memory_kib: 19 * 1024,
    iterations: 2,
    parallelism: 1,
};

/// How long the server may take to show the expected connection count.
const COUNT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// Connect to the NS port and send nothing.
    Bare,
    /// A signed-in, online session of this dialect.
    SignedIn(u8),
}

impl Kind {
    pub(crate) fn label(self) -> String {
        match self {
            Kind::Bare => "bare TCP connect (no sign-in)".into(),
            Kind::SignedIn(d) if d >= 8 => format!("MSNP{d} signed in, NLN (TWN)"),
            Kind::SignedIn(d) => format!("MSNP{d} signed in, NLN (MD5)"),
        }
    }
}

pub(crate) struct Options {
    pub(crate) server: std::path::PathBuf,
    pub(crate) log_filter: String,
    pub(crate) connections: usize,
    pub(crate) concurrency: usize,
    pub(crate) settle: Duration,
}

pub(crate) struct Outcome {
    pub(crate) kind: Kind,
    pub(crate) connections: usize,
    pub(crate) connect_secs: f64,
    pub(crate) rss_start_kib: u64,
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_after_kib: u64,
    pub(crate) rss_closed_kib: u64,
}

impl Outcome {
    pub(crate) fn per_connection_bytes(&self) -> f64 {
        (self.rss_after_kib as f64 - self.rss_before_kib as f64) * 1024.0 / self.connections as f64
    }
}

/// Open one connection of `kind` and keep only its socket.
async fn open(
    kind: Kind,
    server: (std::net::SocketAddr, std::net::SocketAddr),
    account: Option<Account>,
) -> anyhow::Result<TcpStream> {
    let (ns, http) = server;
    match (kind, account) {
        (Kind::Bare, _) => TcpStream::connect(ns)
            .await
            .with_context(|| format!("connecting to the NS at {ns}")),
        (Kind::SignedIn(d), Some(a)) => {
            let mut c = Conn::connect(ns, d).await?;
            c.sign_in(http, &a.email, &a.password).await?;
            c.go_online().await?;
            Ok(c.into_socket())
        }
        (Kind::SignedIn(_), None) => bail!("no account for a signed-in connection"),
    }
}

/// Open one connection per slot with at most `concurrency` in flight.
async fn open_many(
    kind: Kind,
    server: &Server,
    accounts: Option<&[Account]>,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<TcpStream>> {
    let addrs = (server.ns, server.http);
    futures::stream::iter(0..count)
        .map(|i| {
            let account = accounts.and_then(|a| a.get(i).cloned());
            open(kind, addrs, account)
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

/// Say `OUT` on every socket and read until the server closes it. The server closing
/// first leaves the TIME_WAIT state on its side, not on our local ports (dropping 5,000
/// sockets here would tie up 5,000 local ports for a minute).
async fn close_all(sockets: Vec<TcpStream>) -> anyhow::Result<()> {
    futures::stream::iter(sockets)
        .map(|mut s| async move {
            s.write_all(b"OUT\r\n").await?;
            let mut sink = [0u8; 4096];
            tokio::time::timeout(TIMEOUT, async {
                while s.read(&mut sink).await? > 0 {}
                anyhow::Ok(())
            })
            .await
            .map_err(|_| anyhow::anyhow!("the server did not close a connection after OUT"))?
        })
        .buffer_unordered(256)
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
}

pub(crate) async fn run(opts: &Options, kind: Kind) -> anyhow::Result<Outcome> {
    let n = opts.connections;
    let c = opts.concurrency.max(1);
    check_socket_budget((n + c) as u64)?;
    eprintln!("{}: {n} connections, {c} in flight", kind.label());

    let dir = DataDir::create("idle")?;
    let (measured, warm) = match kind {
        Kind::Bare => (None, None),
        Kind::SignedIn(_) => {
            let measured = seed::accounts("idle", n);
            let warm = seed::accounts("warm", c);
            let all: Vec<Account> = measured.iter().chain(&warm).cloned().collect();
            seed::seed(&dir.db(), &all, IDLE_COST).await?;
            (Some(measured), Some(warm))
        }
    };

    let mut server = Server::start(&opts.server, dir, &opts.log_filter).await?;
    server.wait_ns_active(0, COUNT_TIMEOUT).await?;
    let rss_start_kib = server.rss_kib()?;

    // Warm-up: `c` clients at once, then all of them leave.
    let warmup = open_many(kind, &server, warm.as_deref(), c, c)
        .await
        .context("warm-up round")?;
    server.wait_ns_active(c as u64, COUNT_TIMEOUT).await?;
    close_all(warmup)
        .await
        .context("closing the warm-up connections")?;
    server.wait_ns_active(0, COUNT_TIMEOUT).await?;
    tokio::time::sleep(opts.settle).await;
    let rss_before_kib = server.rss_kib()?;

    let started = Instant::now();
    let held = open_many(kind, &server, measured.as_deref(), n, c)
        .await
        .context("opening the measured connections")?;
    let connect_secs = started.elapsed().as_secs_f64();
    server.wait_ns_active(n as u64, COUNT_TIMEOUT).await?;
    tokio::time::sleep(opts.settle).await;
    let rss_after_kib = server.rss_kib()?;
    // Still all there (none timed out while we measured)?
    server
        .wait_ns_active(n as u64, Duration::ZERO)
        .await
        .context("connections closed while measuring")?;

    close_all(held)
        .await
        .context("closing the measured connections")?;
    server.wait_ns_active(0, COUNT_TIMEOUT).await?;
    tokio::time::sleep(opts.settle).await;
    let rss_closed_kib = server.rss_kib()?;
    server.stop();

    let outcome = Outcome {
        kind,
        connections: n,
        connect_secs,
        rss_start_kib,
        rss_before_kib,
        rss_after_kib,
        rss_closed_kib,
    };
    eprintln!(
        "  opened in {connect_secs:.1} s; RSS {} → {} KiB: {:.0} bytes per connection",
        rss_before_kib,
        rss_after_kib,
        outcome.per_connection_bytes()
    );
    Ok(outcome)
}
