//! `butterfly-bench`: benchmarks against the real `butterfly serve` process.
//!
//! Build both binaries first (from the workspace root):
//! `cargo build --release -p butterfly -p butterfly-bench`, then run
//! `target/release/butterfly-bench idle-memory` or `… sign-ins`; for the distributed
//! mode (Postgres and Redis running) `… fanout` or `… sb-throughput`. See
//! docs/BENCHMARKS.md.

mod client;
/// HTTP GET and Passport 1.4, shared with the load generator.
use butterfly_loadgen::http;
mod cluster;
mod fanout;
mod idle;
mod sbthroughput;
mod seed;
mod server;
mod signins;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use butterfly_core::account::PasswordCost;
use clap::{Args, Parser, Subcommand};

/// Where `--server` points unless given.
const DEFAULT_SERVER: &str = "target/release/butterfly";
/// Where `--cluster-script` points unless given.
const DEFAULT_SCRIPT: &str = "deploy/local/run-cluster.sh";

#[derive(Parser)]
#[command(
    name = "butterfly-bench",
    about = "Benchmarks against a real `butterfly serve` child process on 127.0.0.1."
)]
struct Cli {
    /// The server binary to run (default: target/release/butterfly, else `butterfly`
    /// next to this binary).
    #[arg(long, visible_alias = "bin", global = true, default_value = DEFAULT_SERVER)]
    server: PathBuf,
    /// The server's log filter (BUTTERFLY_LOG); its log goes to a file in its data dir.
    #[arg(long, global = true, default_value = "info")]
    server_log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Server memory (VmRSS) per additional idle connection: bare TCP, then signed-in
    /// online sessions of each dialect; a fresh server for each.
    IdleMemory {
        /// Connections held open per scenario.
        #[arg(long, default_value_t = 5000)]
        connections: usize,
        /// Connections being opened at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Dialects to measure signed-in sessions for, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "7,12")]
        dialects: Vec<u8>,
        /// Skip the bare-TCP baseline.
        #[arg(long)]
        no_bare: bool,
        /// Seconds to wait after the connection count settles before reading RSS.
        #[arg(long, default_value_t = 2)]
        settle_secs: u64,
    },
    /// Sign-ins per second and the server's CPU time per 1,000 sign-ins.
    SignIns {
        /// Sign-ins (one distinct account each).
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Sign-ins in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// MSNP dialect: 8–12 sign in with TWN (Passport over HTTP, argon2id), 2–7 with MD5.
        #[arg(long, default_value_t = 12)]
        dialect: u8,
        /// argon2id memory in KiB for the accounts (default: the server's default cost).
        #[arg(long)]
        argon2_memory_kib: Option<u32>,
        /// argon2id iterations for the accounts (default: the server's default cost).
        #[arg(long)]
        argon2_iterations: Option<u32>,
    },
    /// Distributed mode: delay of presence changes from publishers on gateway A to
    /// watchers on gateway B (run-cluster.sh network, own database and Redis prefix).
    Fanout {
        #[command(flatten)]
        dist: DistArgs,
        /// Watchers signed in on gateway B, each with every publisher on its forward list.
        #[arg(long, default_value_t = 200)]
        watchers: usize,
        /// Publishers signed in on gateway A.
        #[arg(long, default_value_t = 5)]
        publishers: usize,
        /// Status changes per publisher.
        #[arg(long, default_value_t = 50)]
        rounds: usize,
        /// Milliseconds between two changes of one publisher (publishers are staggered).
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
    },
    /// Distributed mode: messages per second through one switchboard shard, and the
    /// shard's CPU time.
    SbThroughput {
        #[command(flatten)]
        dist: DistArgs,
        /// Pairs of users, each pair in a chat session of its own.
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        /// Length of the measured window.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Unacknowledged messages a sender keeps in flight at most.
        #[arg(long, default_value_t = 8)]
        window: usize,
        /// Messages a sender may have written that its receiver has not read yet (an ACK
        /// only means "queued", and the shard drops a participant whose queue of 256 is
        /// full); 0: no bound but the ACK window.
        #[arg(long, default_value_t = 64)]
        max_unread: u64,
    },
}

/// Options of the distributed benches.
#[derive(Args)]
struct DistArgs {
    /// Postgres URL of a user that may create databases; the bench creates a database
    /// `bf_bench_…` there and drops it at the end.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
    /// Redis URL; the network uses a key prefix of its own, deleted at the end.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// The script that starts the network (default: deploy/local/run-cluster.sh, else
    /// the one of the workspace this binary was built in, two levels above it).
    #[arg(long, default_value = DEFAULT_SCRIPT)]
    cluster_script: PathBuf,
    /// argon2id memory in KiB of the accounts' hashes (cheap: sign-ins are set-up here).
    #[arg(long, default_value_t = 64)]
    argon2_memory_kib: u32,
    /// argon2id iterations of the accounts' hashes.
    #[arg(long, default_value_t = 1)]
    argon2_iterations: u32,
    /// Keep the network's log directory (its path is printed at the end).
    #[arg(long)]
    keep_logs: bool,
}

impl DistArgs {
    /// `--cluster-script` as given; for the default path, if it is missing here, the
    /// script of the workspace whose `target/release` holds this binary.
    fn script(&self) -> PathBuf {
        let given = &self.cluster_script;
        if given.is_file() || given != std::path::Path::new(DEFAULT_SCRIPT) {
            return given.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join(DEFAULT_SCRIPT)))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| given.clone())
    }

    fn cost(&self) -> PasswordCost {
        PasswordCost {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: 1,
        }
    }
}

/// `--server` as given; for the default path, if it is missing, `butterfly` next to this
/// binary.
fn resolve_server(given: PathBuf) -> PathBuf {
    if given.is_file() || given != std::path::Path::new(DEFAULT_SERVER) {
        return given;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("butterfly")))
        .filter(|p| p.is_file())
        .unwrap_or(given)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            r = run(cli) => r,
            // Dropping `run` kills the server (or stops the network, which runs in a
            // process group of its own) and removes what the run created.
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            _ = terminated() => Err(anyhow::anyhow!("terminated (SIGTERM)")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM; never resolves if it cannot be watched.
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut sig) => {
            sig.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

async fn run(mut cli: Cli) -> anyhow::Result<()> {
    cli.server = resolve_server(cli.server);
    match cli.command {
        Command::IdleMemory {
            connections,
            concurrency,
            dialects,
            no_bare,
            settle_secs,
        } => {
            if connections == 0 {
                anyhow::bail!("--connections must be at least 1");
            }
            if let Some(d) = dialects.iter().find(|d| !(2..=12).contains(*d)) {
                anyhow::bail!("--dialects: MSNP{d} is not offered (2 to 12)");
            }
            let opts = idle::Options {
                server: cli.server,
                log_filter: cli.server_log,
                connections,
                concurrency,
                settle: Duration::from_secs(settle_secs),
            };
            let mut kinds = Vec::new();
            if !no_bare {
                kinds.push(idle::Kind::Bare);
            }
            kinds.extend(dialects.into_iter().map(idle::Kind::SignedIn));
            let mut outcomes = Vec::new();
            for kind in kinds {
                outcomes.push(idle::run(&opts, kind).await?);
            }
            print_idle(&opts, &outcomes);
        }
        Command::SignIns {
            count,
            concurrency,
            dialect,
            argon2_memory_kib,
            argon2_iterations,
        } => {
            if count == 0 {
                anyhow::bail!("--count must be at least 1");
            }
            let default = PasswordCost::default();
            let cost = PasswordCost {
                memory_kib: argon2_memory_kib.unwrap_or(default.memory_kib),
                iterations: argon2_iterations.unwrap_or(default.iterations),
                parallelism: default.parallelism,
            };
            let opts = signins::Options {
                server: cli.server,
                log_filter: cli.server_log,
                count,
                concurrency,
                dialect,
                cost,
            };
            let outcome = signins::run(&opts).await?;
            print_sign_ins(&opts, &outcome);
        }
        Command::Fanout {
            dist,
            watchers,
            publishers,
            rounds,
            interval_ms,
        } => {
            let opts = fanout::Options {
                server: cli.server,
                script: dist.script(),
                log_filter: cli.server_log,
                postgres: dist.postgres.clone(),
                redis: dist.redis.clone(),
                watchers,
                publishers,
                rounds,
                interval: Duration::from_millis(interval_ms),
                cost: dist.cost(),
                keep_logs: dist.keep_logs,
            };
            let outcome = fanout::run(&opts).await?;
            print_fanout(&opts, &outcome);
        }
        Command::SbThroughput {
            dist,
            pairs,
            seconds,
            window,
            max_unread,
        } => {
            let opts = sbthroughput::Options {
                server: cli.server,
                script: dist.script(),
                log_filter: cli.server_log,
                postgres: dist.postgres.clone(),
                redis: dist.redis.clone(),
                pairs,
                seconds,
                window,
                max_unread,
                cost: dist.cost(),
                keep_logs: dist.keep_logs,
            };
            let outcome = sbthroughput::run(&opts).await?;
            print_sb_throughput(&opts, &outcome);
        }
    }
    Ok(())
}

fn print_fanout(opts: &fanout::Options, o: &fanout::Outcome) {
    use stats::{ms, percentile};
    let l = &o.latencies;
    println!();
    println!(
        "Presence fan-out across gateways: {} publishers on gateway A each change status {} \
         times, one CHG every {} ms (publishers staggered); {} watchers on gateway B have all \
         {} on their forward list. Delay = CHG written on A → matching NLN read on B, per \
         (change, watcher). MSNP12 clients; 2 gateways, 1 switchboard, address book, \
         Passport (run-cluster.sh), Postgres and Redis on this machine.",
        opts.publishers,
        opts.rounds,
        opts.interval.as_millis(),
        opts.watchers,
        opts.publishers
    );
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| changes sent (CHG) | {} |", o.changes);
    println!(
        "| deliveries measured (NLN read) | {} of {} expected |",
        l.len(),
        o.expected
    );
    println!(
        "| lost / missing / unmatched NLN | {} / {} / {} |",
        o.lost, o.missing, o.unexpected
    );
    println!(
        "| delay p50 / p90 / p99 / max | {} / {} / {} / {} ms |",
        ms(percentile(l, 0.5)),
        ms(percentile(l, 0.9)),
        ms(percentile(l, 0.99)),
        ms(percentile(l, 1.0))
    );
    let mean = if l.is_empty() {
        Duration::ZERO
    } else {
        l.iter().sum::<Duration>() / l.len() as u32
    };
    println!("| delay mean | {} ms |", ms(mean));
    println!(
        "| first CHG → last CHG written | {:.2} s ({:.0} changes/s) |",
        o.send_secs,
        o.changes as f64 / o.send_secs.max(1e-9)
    );
    println!(
        "| first CHG → last NLN read | {:.2} s ({:.0} deliveries/s) |",
        o.deliver_secs,
        l.len() as f64 / o.deliver_secs.max(1e-9)
    );
    println!(
        "| CHG → its answer on gateway A, p50 / p99 / max | {} / {} / {} ms |",
        ms(percentile(&o.chg_replies, 0.5)),
        ms(percentile(&o.chg_replies, 0.99)),
        ms(percentile(&o.chg_replies, 1.0))
    );
    println!(
        "| gateway B: Redis publish → receipt (butterfly_pubsub_lag_seconds, pres), messages / mean | {:.0} / {} ms |",
        o.pubsub_count,
        ms(o.pubsub_mean)
    );
    println!(
        "| watchers that saw all ILN at sign-in | {} of {} |",
        o.watchers_with_all_iln, opts.watchers
    );
    println!();
    println!(
        "CPU time during the run ({:.2} s, from 0.2 s before the first change to the last delivery):",
        o.cpu.wall_secs
    );
    println!();
    println!("| process | CPU s | share of one core |");
    println!("|---|---:|---:|");
    for row in o.cpu.rows() {
        println!("{row}");
    }
}

fn print_sb_throughput(opts: &sbthroughput::Options, o: &sbthroughput::Outcome) {
    use stats::{ms, percentile};
    let shard_cpu = o
        .cpu
        .procs
        .iter()
        .find(|(l, _)| *l == o.shard_label)
        .map_or(0.0, |(_, s)| *s);
    println!();
    println!(
        "Switchboard throughput: {} chat sessions on one shard (1 gateway, 1 switchboard, \
         run-cluster.sh), each with one sender sending `MSG A` ({} bytes of payload) with up \
         to {} unacknowledged and {} not yet read by the receiver, and one receiver; {} s \
         window. MSNP12 clients on this machine.",
        opts.pairs,
        sbthroughput::BODY.len(),
        opts.window,
        if opts.max_unread == 0 {
            "any number".to_owned()
        } else {
            format!("at most {}", opts.max_unread)
        },
        opts.seconds
    );
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| window | {:.2} s |", o.window_secs);
    println!(
        "| messages acknowledged in the window | {} ({:.0} /s) |",
        o.acked,
        o.acked as f64 / o.window_secs
    );
    println!(
        "| messages delivered in the window | {} ({:.0} /s) |",
        o.delivered,
        o.delivered as f64 / o.window_secs
    );
    println!(
        "| ACK delay p50 / p99 / max | {} / {} / {} ms |",
        ms(percentile(&o.ack_latencies, 0.5)),
        ms(percentile(&o.ack_latencies, 0.99)),
        ms(percentile(&o.ack_latencies, 1.0))
    );
    println!(
        "| after the drain: sent / ACK / NAK / delivered | {} / {} / {} / {} |",
        o.sent_total, o.acked_total, o.naks, o.delivered_total
    );
    println!(
        "| shard's butterfly_sb_messages_total (whole run) | {:.0} |",
        o.shard_counted
    );
    println!(
        "| shard CPU in the window | {shard_cpu:.2} s ({:.0} % of one core; {:.1} µs per delivered message) |",
        shard_cpu / o.window_secs * 100.0,
        shard_cpu * 1e6 / (o.delivered.max(1) as f64)
    );
    println!();
    println!("CPU time in the window:");
    println!();
    println!("| process | CPU s | share of one core |");
    println!("|---|---:|---:|");
    for row in o.cpu.rows() {
        println!("{row}");
    }
}

fn print_idle(opts: &idle::Options, outcomes: &[idle::Outcome]) {
    println!();
    println!(
        "Server memory per idle connection: VmRSS of the butterfly process, {} connections \
         per scenario ({} opened at a time), a fresh server per scenario; signed-in accounts \
         hashed with {} and holding empty contact lists.",
        opts.connections,
        opts.concurrency,
        seed::describe(idle::IDLE_COST)
    );
    println!();
    println!(
        "| scenario | opened in | RSS at start | RSS before (after warm-up) | RSS with all open | RSS after all closed | per connection |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for o in outcomes {
        println!(
            "| {} | {:.1} s | {} KiB | {} KiB | {} KiB | {} KiB | {:.0} B ({:.2} KiB) |",
            o.kind.label(),
            o.connect_secs,
            o.rss_start_kib,
            o.rss_before_kib,
            o.rss_after_kib,
            o.rss_closed_kib,
            o.per_connection_bytes(),
            o.per_connection_bytes() / 1024.0
        );
    }
    if let Some(bare) = outcomes.iter().find(|o| matches!(o.kind, idle::Kind::Bare)) {
        for o in outcomes
            .iter()
            .filter(|o| matches!(o.kind, idle::Kind::SignedIn(_)))
        {
            println!();
            print!(
                "{}: {:.0} B per connection above a bare connection",
                o.kind.label(),
                o.per_connection_bytes() - bare.per_connection_bytes()
            );
        }
        println!();
    }
}

fn print_sign_ins(opts: &signins::Options, o: &signins::Outcome) {
    let method = if opts.dialect >= 8 {
        "TWN: nexus + login2.srf over HTTP, then USR TWN S"
    } else {
        "MD5: USR MD5 I/S, no argon2 on the way"
    };
    let per_1000 = o.server_cpu_secs() * 1000.0 / opts.count as f64;
    println!();
    println!(
        "Sign-ins: MSNP{} ({method}), {} distinct accounts, {} in flight; accounts hashed \
         with {}{}; each sign-in is connect, VER{}, USR… OK, then OUT.",
        opts.dialect,
        opts.count,
        opts.concurrency,
        seed::describe(opts.cost),
        if opts.cost == PasswordCost::default() {
            " (PasswordCost::default(), the server's default)"
        } else {
            ""
        },
        if opts.dialect >= 8 { ", CVR" } else { "" }
    );
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| wall time | {:.2} s |", o.wall_secs);
    println!(
        "| sign-ins per second | {:.1} |",
        opts.count as f64 / o.wall_secs
    );
    println!(
        "| server CPU (user + system) | {:.2} s ({:.2} + {:.2}) |",
        o.server_cpu_secs(),
        o.server_user_secs,
        o.server_system_secs
    );
    println!("| server CPU-seconds per 1,000 sign-ins | {per_1000:.2} |");
    println!(
        "| server CPU use during the run | {:.0} % of one core |",
        o.server_cpu_secs() / o.wall_secs * 100.0
    );
    println!(
        "| latency p50 / p90 / p99 / max | {} / {} / {} / {} ms |",
        o.percentile(0.5).as_millis(),
        o.percentile(0.9).as_millis(),
        o.percentile(0.99).as_millis(),
        o.percentile(1.0).as_millis()
    );
    println!(
        "| bench client CPU (same machine) | {:.2} s |",
        o.bench_cpu_secs
    );
    println!(
        "| other processes' CPU during the run (contention) | {:.2} s ({:.0} % of one core; {:.0} % in the second before) |",
        o.other_cpu_secs,
        o.other_cpu_secs / o.wall_secs * 100.0,
        o.other_load_before * 100.0
    );
    println!(
        "| sign-ins counted by the server (butterfly_ns_logins_total) | {} |",
        o.logins_counted
    );
    println!(
        "| CLK_TCK | {}{} |",
        o.tck,
        if o.tck_assumed {
            " (assumed: getconf CLK_TCK failed)"
        } else {
            " (getconf CLK_TCK)"
        }
    );
}
