//! Accounts written straight into the server's database before it starts: its SQLite
//! file (the embedded server), or the Postgres database of a distributed network.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use butterfly_core::account::{Email, LegacyMd5, NewAccount, PasswordCost, UserId};
use butterfly_core::lists::{ContactRef, List, ListOp};
use butterfly_core::store::Store;
use butterfly_store::{PgOptions, PgStore, SqliteStore};
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

/// The Postgres store of a distributed network at `url`, migrated.
pub(crate) async fn postgres(url: &str) -> anyhow::Result<PgStore> {
    let store = PgStore::connect(url, PgOptions::default())
        .await
        .context("connecting to the bench database")?;
    store
        .migrate()
        .await
        .context("migrating the bench database")?;
    Ok(store)
}

/// Create every account in `store` with an argon2id hash at `cost` (no MD5 secret: the
/// distributed benches sign in with MSNP12); returns their ids in the order given.
pub(crate) async fn seed_postgres(
    store: &PgStore,
    accounts: &[Account],
    cost: PasswordCost,
) -> anyhow::Result<Vec<UserId>> {
    let started = Instant::now();
    let ids = futures::stream::iter(accounts.iter().cloned())
        .map(|a| async move {
            let password = a.password.clone();
            let password_hash = tokio::task::spawn_blocking(move || cost.hash(&password))
                .await
                .context("hashing task")?
                .context("hashing a password")?;
            let account = store
                .create_account(NewAccount {
                    email: Email::parse(&a.email)?,
                    friendly_name: a.email.split('@').next().unwrap_or("bench").to_owned(),
                    password_hash,
                    legacy_md5: None,
                })
                .await
                .with_context(|| format!("creating {}", a.email))?;
            anyhow::Ok(account.id)
        })
        .buffered(16)
        .try_collect::<Vec<UserId>>()
        .await?;
    eprintln!(
        "  seeded {} accounts ({}) in {:.1} s",
        accounts.len(),
        describe(cost),
        started.elapsed().as_secs_f64()
    );
    Ok(ids)
}

/// Put `contacts` on the forward list of each of `owners` through [`Store::edit`], as
/// `ADC FL` would (the contacts' reverse lists follow); `owners` are edited 8 at a time.
pub(crate) async fn add_contacts(
    store: &PgStore,
    owners: &[(UserId, String)],
    contacts: &[String],
) -> anyhow::Result<()> {
    let started = Instant::now();
    let contacts: Vec<Email> = contacts
        .iter()
        .map(|c| Email::parse(c))
        .collect::<Result<_, _>>()?;
    futures::stream::iter(owners.iter().enumerate())
        .map(|(n, (owner, email))| {
            let contacts = &contacts;
            async move {
                // Each owner starts at another contact, so concurrent edits seldom wait
                // for the same contact's lock.
                for i in 0..contacts.len() {
                    let contact = &contacts[(n + i) % contacts.len()];
                    let op = ListOp::Add {
                        list: List::Forward,
                        target: ContactRef::Email(contact.clone()),
                        group: None,
                    };
                    store
                        .edit(*owner, op)
                        .await
                        .with_context(|| format!("{email}: adding {contact}"))?
                        .map_err(|e| anyhow::anyhow!("{email}: adding {contact}: {e}"))?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    eprintln!(
        "  {} forward-list entries written in {:.1} s",
        owners.len() * contacts.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
