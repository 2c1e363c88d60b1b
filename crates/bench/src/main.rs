//! `butterfly-bench`: benchmarks against the real `butterfly serve` process.
//!
//! Build both binaries first (from the workspace root):
//! `cargo build --release -p butterfly -p butterfly-bench`, then run
//! `target/release/butterfly-bench idle-memory` or `… sign-ins`. See docs/BENCHMARKS.md.

mod client;
mod http;
mod idle;
mod seed;
mod server;
mod signins;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use butterfly_core::account::PasswordCost;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "butterfly-bench",
    about = "Benchmarks against a real `butterfly serve` child process on 127.0.0.1."
)]
struct Cli {
    /// The server binary to run.
    #[arg(long, global = true, default_value = "target/release/butterfly")]
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
            // Dropping `run` kills the server and removes its data directory.
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
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

async fn run(cli: Cli) -> anyhow::Result<()> {
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
    }
    Ok(())
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
