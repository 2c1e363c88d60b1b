//! Accounts written straight into the server's SQLite file before it starts.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use butterfly_core::account::{Email, LegacyMd5, NewAccount, PasswordCost};
use butterfly_core::store::Store;
use butterfly_store::SqliteStore;
use futures::{StreamExt, TryStreamExt};

/// One benchmark account.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub(crate) email: String,
    pub(crate) password: String,
}

/// `count` accounts named `{prefix}{i}@bench.example.com` with distinct passwords.
pub(crate) fn accounts(prefix: &str, count: usize) -> Vec<Account> {
    (0..count)
        .map(|i| Account {
            email: format!("{prefix}{i}@bench.example.com"),
            password: format!("pw-{prefix}-{i}"),
        })
        .collect()
}

/// `argon2id m=… KiB, t=…, p=…`.
pub(crate) fn describe(cost: PasswordCost) -> String {
    format!(
        "argon2id m={} KiB, t={}, p={}",
        cost.memory_kib, cost.iterations, cost.parallelism
    )
}

/// Create every account in the database at `db` (created and migrated if missing): an
/// argon2id hash at `cost` (each account hashed on its own, one hash per core at a
/// time) and the MSNP2–7 MD5 secret.
pub(crate) async fn seed(
    db: &Path,
    accounts: &[Account],
    cost: PasswordCost,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let store = SqliteStore::open(db)
        .await
        .with_context(|| format!("opening {}", db.display()))?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let result = futures::stream::iter(accounts.iter().cloned())
        .map(|a| {
            let store = &store;
            async move {
                let password = a.password.clone();
                let password_hash = tokio::task::spawn_blocking(move || cost.hash(&password))
                    .await
                    .context("hashing task")?
                    .context("hashing a password")?;
                store
                    .create_account(NewAccount {
                        email: Email::parse(&a.email)?,
                        friendly_name: a.email.split('@').next().unwrap_or("bench").to_owned(),
                        password_hash,
                        legacy_md5: Some(LegacyMd5::new(&a.password)),
                    })
                    .await
                    .with_context(|| format!("creating {}", a.email))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(cores * 2)
        .try_collect::<Vec<()>>()
        .await;
    store.close().await;
    result?;
    eprintln!(
        "  seeded {} accounts ({}) in {:.1} s",
        accounts.len(),
        describe(cost),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
