//! `butterfly`: the one binary. See `butterfly --help`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use butterfly::Settings;
use butterfly::settings::{CommonArgs, ServeArgs};
use butterfly_core::account::{Email, LegacyMd5, NewAccount, PasswordCost};
use butterfly_core::store::{Store, StoreError};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "butterfly",
    version,
    about = "A server for MSN Messenger clients (MSNP2–MSNP12), embedded or as distributed roles."
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: by default every role in this process with SQLite and an in-process
    /// bus; with --target, --redis-url and --database-url, roles of a distributed network.
    Serve(Box<ServeArgs>),
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Apply database migrations and exit.
    Migrate,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account.
    Add {
        email: String,
        #[arg(long)]
        password: String,
        /// Friendly name (default: the sign-in name).
        #[arg(long)]
        name: Option<String>,
        /// Also allow MSNP2–7 (MSN 1.0–4.7) sign-in. The MD5 secret this stores is a
        /// password equivalent: use it only for accounts that need those clients.
        #[arg(long)]
        legacy_md5: bool,
    },
    /// Create COUNT accounts PREFIX0@DOMAIN … at once (one transaction; one password hash
    /// shared by all, so the cost is paid once), for load tests. Their contact lists stay
    /// empty: `butterfly-loadgen seed` also writes a contact graph.
    BulkAdd {
        /// Accounts are PREFIX0@DOMAIN, PREFIX1@DOMAIN, …
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value = "loadgen.example.com")]
        domain: String,
        /// Every account's password.
        #[arg(long)]
        password: String,
        /// Also allow MSNP2–7 sign-in (an MD5 secret per account; see `user add`).
        #[arg(long)]
        legacy_md5: bool,
    },
    /// List accounts.
    List,
    /// Change a password (and the legacy MD5 secret).
    Passwd {
        email: String,
        #[arg(long)]
        password: String,
        #[arg(long)]
        legacy_md5: bool,
    },
    /// Delete an account and every list entry naming it.
    Delete { email: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let service = match &cli.command {
        Command::Serve(serve) => match serve.target.as_deref() {
            Some(target) if target != "all" => format!("butterfly-{}", target.replace(',', "+")),
            _ => "butterfly".to_owned(),
        },
        _ => "butterfly-cli".to_owned(),
    };
    let telemetry = butterfly::telemetry::init(&service);
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
    let result = runtime.block_on(run(cli));
    drop(runtime);
    telemetry.shutdown();
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
        Command::Serve(serve) => {
            let settings = Settings::resolve(&cli.common, &serve)?;
            serve_until_signal(&settings).await
        }
        Command::Migrate => {
            let settings = Settings::resolve(&cli.common, &ServeArgs::default())?;
            // Opening a database brings its schema up to date.
            let db = butterfly::open_store(&settings).await?;
            db.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::User(UserCommand::BulkAdd {
            prefix,
            count,
            domain,
            password,
            legacy_md5,
        }) => {
            let settings = Settings::resolve(&cli.common, &ServeArgs::default())?;
            let db = butterfly::open_store(&settings).await?;
            let cost = settings.password_cost;
            let started = std::time::Instant::now();
            let password_hash = hash(cost, password.clone()).await?;
            let accounts = (0..count)
                .map(|i| {
                    Ok(NewAccount {
                        email: email(&format!("{prefix}{i}@{domain}"))?,
                        friendly_name: format!("{prefix}{i}"),
                        password_hash: password_hash.clone(),
                        legacy_md5: legacy_md5.then(|| LegacyMd5::new(&password)),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let added = match &db {
                butterfly::Database::Sqlite(s) => s.bulk_load(&accounts, &[]).await,
                butterfly::Database::Postgres(s) => s.bulk_load(&accounts, &[]).await,
            };
            db.close().await;
            let ids = added?;
            println!(
                "added {} accounts {prefix}0@{domain} … {prefix}{}@{domain} in {:.2} s; password \
                 hash argon2id m={} KiB, t={}, p={} (one hash, shared){}",
                ids.len(),
                count.saturating_sub(1),
                started.elapsed().as_secs_f64(),
                cost.memory_kib,
                cost.iterations,
                cost.parallelism,
                if legacy_md5 {
                    "; MD5 secrets for MSNP2–7"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Command::User(cmd) => {
            let settings = Settings::resolve(&cli.common, &ServeArgs::default())?;
            let db = butterfly::open_store(&settings).await?;
            let result = user(db.store().as_ref(), settings.password_cost, cmd).await;
            db.close().await;
            result
        }
    }
}

async fn serve_until_signal(settings: &Settings) -> anyhow::Result<()> {
    let running = butterfly::start(settings).await?;
    let listeners = [
        ("ns", running.ns),
        ("sb", running.sb),
        ("http", running.http),
        ("grpc", running.grpc),
        ("admin", Some(running.admin)),
    ];
    for (name, addr) in listeners {
        if let Some(addr) = addr {
            println!("{name} listening on {addr}");
        }
    }
    shutdown_signal().await;
    tracing::info!("Shutting down: telling clients OUT SSD");
    let clean = running
        .shutdown(Duration::from_secs(settings.drain_seconds))
        .await;
    tracing::info!(clean, "Stopped");
    Ok(())
}

/// SIGTERM (Kubernetes' stop) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

fn email(s: &str) -> anyhow::Result<Email> {
    Ok(Email::parse(s)?)
}

async fn hash(cost: PasswordCost, password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || cost.hash(&password))
        .await
        .context("hashing task")?
        .map_err(Into::into)
}

async fn user(store: &dyn Store, cost: PasswordCost, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add {
            email: e,
            password,
            name,
            legacy_md5,
        } => {
            let email = email(&e)?;
            let friendly_name = name.unwrap_or_else(|| email.to_string());
            if friendly_name.is_empty()
                || friendly_name.chars().count() > butterfly_core::account::MAX_FRIENDLY_LEN
            {
                bail!(
                    "--name must be 1 to {} characters",
                    butterfly_core::account::MAX_FRIENDLY_LEN
                );
            }
            let legacy = legacy_md5.then(|| LegacyMd5::new(&password));
            let password_hash = hash(cost, password).await?;
            match store
                .create_account(NewAccount {
                    email: email.clone(),
                    friendly_name,
                    password_hash,
                    legacy_md5: legacy,
                })
                .await
            {
                Ok(a) => println!("added {} (id {})", a.email, a.id.0),
                Err(StoreError::DuplicateAccount) => bail!("{email} already exists"),
                Err(e) => return Err(e.into()),
            }
        }
        UserCommand::BulkAdd { .. } => bail!("bulk-add is handled before opening the store"),
        UserCommand::List => {
            for a in store.accounts().await? {
                let md5 = if a.legacy_md5.is_some() {
                    "  legacy-md5"
                } else {
                    ""
                };
                println!("{}\t{}{md5}", a.email, a.friendly_name);
            }
        }
        UserCommand::Passwd {
            email: e,
            password,
            legacy_md5,
        } => {
            let email = email(&e)?;
            let legacy = legacy_md5.then(|| LegacyMd5::new(&password));
            let password_hash = hash(cost, password).await?;
            if !store.set_password(&email, password_hash, legacy).await? {
                bail!("no account {email}");
            }
            println!("password changed for {email}");
        }
        UserCommand::Delete { email: e } => {
            let email = email(&e)?;
            if !store.delete_account(&email).await? {
                bail!("no account {email}");
            }
            println!("deleted {email}");
        }
    }
    Ok(())
}
