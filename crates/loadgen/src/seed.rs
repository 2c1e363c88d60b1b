//! Accounts and their contact lists written through the `Store` port (SQLite, Postgres, or
//! the store of an in-process test server), and the manifest a run reads back: the users'
//! ids (for pre-issued tickets) and what the graph was generated from.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use butterfly_core::account::{Email, LegacyMd5, NewAccount, PasswordCost, UserId};
use butterfly_core::lists::{ContactRef, List, ListOp};
use butterfly_core::store::Store;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::graph::{Degrees, Graph};

/// What a run needs to know about the seeded users.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub prefix: String,
    pub users: usize,
    pub degrees: Degrees,
    pub graph_seed: u64,
    /// The account id of user `i`, in order.
    pub ids: Vec<i64>,
    /// The password hash cost, as written into the results.
    pub password_cost: String,
}

impl Manifest {
    pub fn email(&self, user: usize) -> String {
        email(&self.prefix, user)
    }

    pub fn password(&self, user: usize) -> String {
        password(&self.prefix, user)
    }

    pub fn graph(&self) -> anyhow::Result<Graph> {
        Graph::generate(self.users, self.degrees, self.graph_seed)
    }

    pub fn read(path: &std::path::Path) -> anyhow::Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the manifest {}", path.display()))?;
        let m: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("parsing the manifest {}", path.display()))?;
        anyhow::ensure!(
            m.ids.len() == m.users,
            "manifest: {} ids for {} users",
            m.ids.len(),
            m.users
        );
        Ok(m)
    }
}

pub fn email(prefix: &str, user: usize) -> String {
    format!("{prefix}{user}@load.example.com")
}

pub fn password(prefix: &str, user: usize) -> String {
    format!("pw-{prefix}-{user}")
}

/// `argon2id m=… KiB, t=…, p=…`.
pub fn describe(cost: PasswordCost) -> String {
    format!(
        "argon2id m={} KiB, t={}, p={} (and the legacy MD5 secret)",
        cost.memory_kib, cost.iterations, cost.parallelism
    )
}

/// The accounts and mutual pairs of a seeding, for the stores' `bulk_load`.
pub async fn bulk_input(
    prefix: &str,
    users: usize,
    degrees: Degrees,
    graph_seed: u64,
    cost: PasswordCost,
) -> anyhow::Result<(Vec<NewAccount>, Vec<(u32, u32)>)> {
    let pairs = Graph::generate(users, degrees, graph_seed)?
        .edges()
        .collect();
    Ok((new_accounts(prefix, users, cost).await?, pairs))
}

/// The accounts of a seeding (hashed at `cost`, one hash per core at a time), in order.
pub async fn new_accounts(
    prefix: &str,
    users: usize,
    cost: PasswordCost,
) -> anyhow::Result<Vec<NewAccount>> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let progress = Progress::new("password hashes", users);
    let accounts = futures::stream::iter(0..users)
        .map(|i| {
            let progress = &progress;
            async move {
                let pw = password(prefix, i);
                let md5 = LegacyMd5::new(&pw);
                let hash = tokio::task::spawn_blocking(move || cost.hash(&pw))
                    .await
                    .context("hashing task")?
                    .context("hashing a password")?;
                progress.tick();
                anyhow::Ok(NewAccount {
                    email: Email::parse(&email(prefix, i))?,
                    friendly_name: format!("{prefix}{i}"),
                    password_hash: hash,
                    legacy_md5: Some(md5),
                })
            }
        })
        .buffered(cores)
        .try_collect()
        .await?;
    progress.done();
    Ok(accounts)
}

/// What a run needs to know of a seeding.
pub fn manifest(
    prefix: &str,
    degrees: Degrees,
    graph_seed: u64,
    ids: Vec<i64>,
    cost: PasswordCost,
) -> Manifest {
    Manifest {
        prefix: prefix.to_owned(),
        users: ids.len(),
        degrees,
        graph_seed,
        ids,
        password_cost: describe(cost),
    }
}

/// Create `users` accounts named `{prefix}{i}@load.example.com` (password
/// `pw-{prefix}-{i}`, argon2id at `cost` plus the MSNP2–7 MD5 secret) and make every pair
/// of the graph mutual contacts (each on the other's forward list). Progress on stderr.
pub async fn seed(
    store: &dyn Store,
    prefix: &str,
    users: usize,
    degrees: Degrees,
    graph_seed: u64,
    cost: PasswordCost,
) -> anyhow::Result<Manifest> {
    let graph = Graph::generate(users, degrees, graph_seed)?;
    let started = Instant::now();
    let accounts = new_accounts(prefix, users, cost).await?;
    let progress = Progress::new("accounts", users);
    // In order (`buffered`), so ids come back in user order.
    let ids: Vec<i64> = futures::stream::iter(accounts)
        .map(|account| {
            let progress = &progress;
            async move {
                let email = account.email.clone();
                let created = store
                    .create_account(account)
                    .await
                    .with_context(|| format!("creating {email}"))?;
                progress.tick();
                anyhow::Ok(created.id.0)
            }
        })
        .buffered(8)
        .try_collect()
        .await?;
    progress.done();
    eprintln!(
        "seed: {users} accounts ({}) in {:.1} s",
        describe(cost),
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let entries = graph.edge_count() * 2;
    let progress = Progress::new("forward-list entries", entries);
    // One owner's entries in sequence (each edit locks the owner), 8 owners at once.
    futures::stream::iter(0..users)
        .map(|owner| {
            let (graph, ids, progress) = (&graph, &ids, &progress);
            async move {
                for &c in graph.contacts(owner) {
                    let op = ListOp::Add {
                        list: List::Forward,
                        target: ContactRef::Email(Email::parse(&email(prefix, c as usize))?),
                        group: None,
                    };
                    store
                        .edit(UserId(ids[owner]), op)
                        .await
                        .with_context(|| format!("user {owner}: adding {c}"))?
                        .map_err(|e| anyhow::anyhow!("user {owner}: adding {c}: {e}"))?;
                    progress.tick();
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    progress.done();
    eprintln!(
        "seed: {entries} forward-list entries ({} mutual pairs, max {} contacts) in {:.1} s",
        graph.edge_count(),
        graph.max_degree(),
        started.elapsed().as_secs_f64()
    );
    Ok(manifest(prefix, degrees, graph_seed, ids, cost))
}

/// A count printed to stderr at most once a second.
struct Progress {
    what: &'static str,
    total: usize,
    done: std::sync::atomic::AtomicUsize,
    started: Instant,
    last: std::sync::Mutex<Instant>,
}

impl Progress {
    fn new(what: &'static str, total: usize) -> Self {
        let now = Instant::now();
        Progress {
            what,
            total,
            done: Default::default(),
            started: now,
            last: std::sync::Mutex::new(now),
        }
    }

    fn tick(&self) {
        let done = self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= Duration::from_secs(1) {
            *last = Instant::now();
            let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            eprint!(
                "\rseed: {done}/{} {} ({rate:.0}/s)   ",
                self.total, self.what
            );
            let _ = std::io::stderr().flush();
        }
    }

    fn done(&self) {
        eprint!("\r");
    }
}
