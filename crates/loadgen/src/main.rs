//! `butterfly-loadgen`: the load generator's command line (docs/BENCHMARKS.md).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use butterfly_core::account::PasswordCost;
use butterfly_core::store::Store;
use butterfly_loadgen::coord::{self, Thresholds};
use butterfly_loadgen::graph::Degrees;
use butterfly_loadgen::plan::{AuthMode, Plan, now_us};
use butterfly_loadgen::seed::{self, Manifest};
use butterfly_store::{PgOptions, PgStore, SqliteStore};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Users one worker process takes by default (each holds a socket per user, under the
/// 20,000 open-files limit, with room for chats).
const USERS_PER_WORKER: usize = 15_000;
/// Users one source address takes by default. A socket bound to `(address, 0)` takes a
/// port of that address for itself whatever the destination, and with ~10,600 taken per
/// address binding had slowed the 100k cluster run's sign-ins from 300/s to 100/s.
const USERS_PER_SOURCE: usize = 4_000;

/// `127.0.1.1`, `127.0.1.2`, … (`n` of them).
fn local_sources(n: u8) -> Vec<IpAddr> {
    (1..=n).map(|i| IpAddr::from([127, 0, 1, i])).collect()
}

#[derive(Parser)]
#[command(
    name = "butterfly-loadgen",
    about = "Simulated MSN Messenger users speaking real MSNP to a Butterfly server, with \
             correctness checks and latency histograms."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the accounts and their contact graph in the server's database, and write
    /// the manifest a run reads.
    Seed(SeedArgs),
    /// Run the load: ramp, steady state, churn, drain; report at the end.
    Run(Box<RunArgs>),
    /// One worker process of a run (started by `run`).
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        plan: PathBuf,
        #[arg(long)]
        index: usize,
    },
}

#[derive(Args)]
struct SeedArgs {
    /// The embedded server's data directory (its SQLite file, butterfly.db); stop the
    /// server first or seed before it starts.
    #[arg(
        long,
        conflicts_with = "database_url",
        required_unless_present = "database_url"
    )]
    data_dir: Option<PathBuf>,
    /// A Postgres database (the distributed mode's).
    #[arg(long)]
    database_url: Option<String>,
    /// Accounts are `{prefix}{i}@load.example.com`, password `pw-{prefix}-{i}`.
    #[arg(long, default_value = "load")]
    prefix: String,
    #[arg(long)]
    users: usize,
    /// Contacts per user (mutual); even for a fixed degree, the mean with --heavy-tailed.
    #[arg(long, default_value_t = 20)]
    contacts: usize,
    /// A heavy-tailed number of contacts (preferential attachment) instead of a fixed one.
    #[arg(long)]
    heavy_tailed: bool,
    #[arg(long, default_value_t = 1)]
    graph_seed: u64,
    /// argon2id memory per password hash, KiB (the server's default is 19456). Low by
    /// default so seeding many accounts is quick; the results state it.
    #[arg(long, default_value_t = 64)]
    argon2_memory_kib: u32,
    #[arg(long, default_value_t = 1)]
    argon2_iterations: u32,
    /// Where to write the manifest.
    #[arg(long, default_value = "loadgen-manifest.json")]
    manifest: PathBuf,
    /// Write through `Store::edit`, one transaction per list entry (as the servers' own
    /// edits do), instead of the stores' bulk load (one transaction for everything).
    #[arg(long)]
    one_by_one: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum AuthArg {
    /// MSNP2–7 MD5 only.
    Md5,
    /// Each client's own way: MD5 for MSNP2–7, Passport 1.4 (login2.srf) for MSNP8–12,
    /// the token service (RST.srf, RST2.srf from MSNP16) for MSNP13+.
    Passport,
    /// Tickets minted with the server's ticket secret (the NS alone).
    Ticket,
}

#[derive(Args)]
struct RunArgs {
    /// The manifest `seed` wrote.
    #[arg(long, default_value = "loadgen-manifest.json")]
    manifest: PathBuf,
    /// The notification server; repeat (or separate with commas) for several gateways:
    /// user `i` signs in to the `i % count`-th.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:1863")]
    ns: Vec<SocketAddr>,
    /// The HTTP listener (Passport), for --auth passport.
    #[arg(long)]
    http: Option<SocketAddr>,
    #[arg(long, value_enum, default_value = "ticket")]
    auth: AuthArg,
    /// The server's ticket secret (--ticket-secret of `butterfly serve`), for --auth ticket.
    #[arg(long, env = "BUTTERFLY_TICKET_SECRET", hide_env_values = true)]
    ticket_secret: Option<String>,
    /// Or the key file the embedded server made (`DATA_DIR/ticket.key`).
    #[arg(long, conflicts_with = "ticket_secret")]
    ticket_key_file: Option<PathBuf>,
    /// Users taking part (default: all in the manifest).
    #[arg(long)]
    users: Option<usize>,
    /// Dialect mix, `dialect:percent,…` (percents sum to 100).
    #[arg(long, default_value = "12:50,18:50")]
    dialects: String,
    /// Worker processes (each holds its share of the connections: at most ~19k per
    /// process under a 20,000 open-files limit). Default: one per 15,000 users.
    #[arg(long)]
    workers: Option<usize>,
    /// Source addresses, comma-separated (connections are spread over them).
    #[arg(long, value_delimiter = ',')]
    sources: Vec<IpAddr>,
    /// Or this many source addresses 127.0.1.1, 127.0.1.2, … (Linux routes all of
    /// 127.0.0.0/8 to loopback). Default: one per 4,000 users.
    #[arg(long, conflicts_with = "sources")]
    source_count: Option<u8>,
    /// Sign-ins per second during the ramp.
    #[arg(long, default_value_t = 500.0)]
    ramp_rate: f64,
    /// Quiet seconds between the ramp and the steady phase.
    #[arg(long, default_value_t = 2.0)]
    settle_secs: f64,
    #[arg(long, default_value_t = 30.0)]
    steady_secs: f64,
    /// Presence changes per second (all users together).
    #[arg(long, default_value_t = 100.0)]
    presence_rate: f64,
    /// Switchboard chats started per second.
    #[arg(long, default_value_t = 10.0)]
    chat_rate: f64,
    #[arg(long, default_value_t = 5)]
    messages_per_chat: u32,
    /// Seconds after the steady phase in which notifications still count.
    #[arg(long, default_value_t = 5.0)]
    grace_secs: f64,
    #[arg(long, default_value_t = 0.0)]
    churn_secs: f64,
    /// Sign-out + sign-in cycles per second in the churn phase.
    #[arg(long, default_value_t = 0.0)]
    churn_rate: f64,
    /// Write every figure as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A server process to read memory and CPU time of (repeatable).
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Fail (exit 1) with more errors than this.
    #[arg(long)]
    max_errors: Option<u64>,
    /// Fail with more missed notifications than this.
    #[arg(long)]
    max_missed: Option<u64>,
    /// Fail with more duplicate notifications than this.
    #[arg(long)]
    max_duplicates: Option<u64>,
    #[arg(long)]
    max_fanout_p99_ms: Option<f64>,
    #[arg(long)]
    max_delivery_p99_ms: Option<f64>,
    /// Fail with fewer successful sign-ins than this.
    #[arg(long)]
    min_signins: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("butterfly-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Seed(args) => seed_cmd(args).await.map(|()| true),
            Command::Run(args) => run_cmd(*args).await,
            Command::Worker { plan, index } => butterfly_loadgen::worker::run(&plan, index)
                .await
                .map(|()| true),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("butterfly-loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn seed_cmd(a: SeedArgs) -> anyhow::Result<()> {
    let cost = PasswordCost {
        memory_kib: a.argon2_memory_kib,
        iterations: a.argon2_iterations,
        parallelism: 1,
    };
    let degrees = if a.heavy_tailed {
        Degrees::HeavyTailed(a.contacts)
    } else {
        Degrees::Fixed(a.contacts)
    };
    // One transaction for everything (the stores' bulk load), unless --one-by-one.
    let started = std::time::Instant::now();
    let (prefix, users, seed_no) = (a.prefix.as_str(), a.users, a.graph_seed);
    let ids = match (&a.data_dir, &a.database_url) {
        (Some(dir), _) => {
            let store = SqliteStore::open(&dir.join("butterfly.db"))
                .await
                .with_context(|| format!("opening the database in {}", dir.display()))?;
            store.migrate().await.context("migrating the database")?;
            let ids = if a.one_by_one {
                seed::seed(&store, prefix, users, degrees, seed_no, cost)
                    .await
                    .map(|m| m.ids)
            } else {
                let (accounts, pairs) =
                    seed::bulk_input(prefix, users, degrees, seed_no, cost).await?;
                store
                    .bulk_load(&accounts, &pairs)
                    .await
                    .map(|ids| ids.into_iter().map(|i| i.0).collect())
                    .map_err(anyhow::Error::from)
            };
            store.close().await;
            ids?
        }
        (None, Some(url)) => {
            let store = PgStore::connect(url, PgOptions::default())
                .await
                .context("connecting to Postgres")?;
            store.migrate().await.context("migrating the database")?;
            if a.one_by_one {
                seed::seed(&store as &dyn Store, prefix, users, degrees, seed_no, cost)
                    .await?
                    .ids
            } else {
                let (accounts, pairs) =
                    seed::bulk_input(prefix, users, degrees, seed_no, cost).await?;
                let ids = store.bulk_load(&accounts, &pairs).await?;
                ids.into_iter().map(|i| i.0).collect()
            }
        }
        (None, None) => bail!("give --data-dir or --database-url"),
    };
    if !a.one_by_one {
        eprintln!(
            "seed: {users} accounts ({}) and their mutual pairs in one transaction, {:.1} s",
            seed::describe(cost),
            started.elapsed().as_secs_f64()
        );
    }
    let manifest = seed::manifest(prefix, degrees, seed_no, ids, cost);
    write_manifest(&a.manifest, &manifest)
}

fn write_manifest(path: &std::path::Path, m: &Manifest) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_vec(m)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("seed: manifest written to {}", path.display());
    Ok(())
}

fn parse_mix(text: &str) -> anyhow::Result<Vec<(u8, u32)>> {
    let mix: Vec<(u8, u32)> = text
        .split(',')
        .map(|part| {
            let (d, p) = part
                .split_once(':')
                .ok_or_else(|| anyhow!("--dialects: {part:?} is not dialect:percent"))?;
            let d: u8 = d.trim().trim_start_matches("MSNP").parse()?;
            anyhow::ensure!(
                matches!(d, 2..=18),
                "--dialects: MSNP{d} is not a dialect (2–18)"
            );
            Ok((d, p.trim().parse()?))
        })
        .collect::<anyhow::Result<_>>()?;
    let total: u32 = mix.iter().map(|(_, p)| p).sum();
    anyhow::ensure!(total == 100, "--dialects: percents sum to {total}, not 100");
    Ok(mix)
}

async fn run_cmd(a: RunArgs) -> anyhow::Result<bool> {
    let manifest = Manifest::read(&a.manifest)?;
    let users = a.users.unwrap_or(manifest.users);
    anyhow::ensure!(
        (2..=manifest.users).contains(&users),
        "--users must be 2 to {} (the manifest's)",
        manifest.users
    );
    let mix = parse_mix(&a.dialects)?;
    let auth = match a.auth {
        AuthArg::Md5 => {
            anyhow::ensure!(
                mix.iter().all(|(d, _)| *d <= 7),
                "--auth md5 signs in MSNP2–7 only; use --auth ticket or passport for newer dialects"
            );
            AuthMode::Md5
        }
        AuthArg::Passport => {
            anyhow::ensure!(
                a.http.is_some(),
                "--auth passport needs --http (Passport's address)"
            );
            AuthMode::Passport
        }
        AuthArg::Ticket => {
            let secret = match (&a.ticket_secret, &a.ticket_key_file) {
                (Some(s), _) => s.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?
                    .trim()
                    .to_owned(),
                (None, None) => bail!(
                    "--auth ticket needs the server's --ticket-secret (or --ticket-key-file \
                     DATA_DIR/ticket.key for the embedded server)"
                ),
            };
            AuthMode::Ticket { secret }
        }
    };
    let workers = a.workers.unwrap_or(users.div_ceil(USERS_PER_WORKER).max(1));
    anyhow::ensure!(workers >= 1, "--workers must be at least 1");
    anyhow::ensure!(a.ramp_rate > 0.0, "--ramp-rate must be positive");
    let sources = match (a.sources.is_empty(), a.source_count) {
        (false, _) => a.sources.clone(),
        (true, Some(n)) => local_sources(n),
        (true, None) => {
            let n = users.div_ceil(USERS_PER_SOURCE).clamp(1, 250);
            local_sources(n as u8)
        }
    };
    if users > sources.len() * USERS_PER_SOURCE {
        eprintln!(
            "warning: {users} users over {} source addresses is more than {USERS_PER_SOURCE} \
             connections per address; binding a source port gets slow (docs/BENCHMARKS.md \
             §4.2): give more --source-count",
            sources.len()
        );
    }
    let plan = Plan {
        manifest: a.manifest.canonicalize().unwrap_or(a.manifest.clone()),
        users,
        ns: a.ns.clone(),
        http: a.http,
        auth,
        mix,
        workers,
        sources,
        // A moment for the workers to start and read the manifest.
        epoch_us: now_us() + 2_000_000,
        ramp_rate: a.ramp_rate,
        settle_secs: a.settle_secs,
        steady_secs: a.steady_secs,
        presence_rate: a.presence_rate,
        chat_rate: a.chat_rate,
        messages_per_chat: a.messages_per_chat,
        grace_secs: a.grace_secs,
        churn_secs: a.churn_secs,
        churn_rate: a.churn_rate,
    };
    let thresholds = Thresholds {
        max_errors: a.max_errors,
        max_missed: a.max_missed,
        max_duplicates: a.max_duplicates,
        max_fanout_p99_ms: a.max_fanout_p99_ms,
        max_delivery_p99_ms: a.max_delivery_p99_ms,
        min_signins: a.min_signins,
    };
    let exe = std::env::current_exe().context("finding this program")?;
    let report = coord::run(plan, exe, a.json, thresholds, a.server_pids).await?;
    Ok(report.failed_thresholds.is_empty())
}
