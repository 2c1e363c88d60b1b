//! Durable storage for Butterfly: the two implementations of the core [`Store`] port,
//! with their migrations — [`SqliteStore`] (one file, the embedded mode) and [`PgStore`]
//! (one Postgres database shared by every process of the distributed mode; its docs say
//! how it locks).
//!
//! The list rules are not here: [`edit`](Store::edit) loads the owner's roster, asks
//! [`butterfly_core::lists::apply`] for a plan and writes it, all in one write transaction,
//! so the two stores cannot disagree on what an edit means. With the `conformance` feature,
//! `conformance` is the behaviour suite both (and any other `Store`) must pass.
//!
//! SQLite durability and concurrency:
//! - WAL journal with `synchronous = FULL`: a commit is fsynced before `edit` returns, so a
//!   list change the client was told about survives a power cut, not only a crash.
//! - One writer connection, many readers. SQLite admits one writer at a time anyway;
//!   queueing writers on our own pool (in order) rather than in SQLite's sleep-and-retry
//!   busy handler means a burst of edits to one user cannot starve one of them into
//!   `SQLITE_BUSY`. Readers run beside the writer on WAL snapshots; they are lent by
//!   `readers.rs`, without the round trips sqlx's pool adds.
//! - Every multi-statement write starts with `BEGIN IMMEDIATE`, taking the write lock
//!   before reading, so the roster an edit is decided on is the one it writes over (no lost
//!   updates), and another process on the same file (a `butterfly` admin command) waits
//!   for the busy timeout instead of failing a read-then-write upgrade.
//!
//! Change stamps and tombstones (for the WLM address book's delta syncs; the model is in
//! [`butterfly_core::lists`]): each edit bumps its owner's `users.ab_stamp` to
//! `max(now, ab_stamp + 1)` in the same statement as the list version, and writes that
//! stamp into every row it writes (`contacts.changed_at`, `list_groups.changed_at`,
//! `users.settings_changed_at`); an RL change does the same with the other user's counter
//! for their row. Deleting a contact row or a group inserts into `ab_tombstones` in the same
//! transaction, and so does deleting an account, for every owner whose lists held it.
//! Retention: each deletion also purges up to 100 of that owner's tombstones older than
//! [`TOMBSTONE_RETENTION`](butterfly_core::lists::TOMBSTONE_RETENTION) plus a day (slack
//! for callers whose clock runs behind ours); nothing else removes them, except deleting
//! the owner's account.
//!
//! SQLite statements are runtime-checked (`sqlx::query`): the `query!` macros of a crate
//! are checked against one database kind, and that is Postgres here (its offline data in
//! `.sqlx/` lets the crate build without any database).

mod bulk;
mod codec;
#[cfg(feature = "conformance")]
pub mod conformance;
mod lists;
mod oims;
mod postgres;
mod profiles;
mod readers;

pub use bulk::BulkError;
pub use postgres::{PG_MIGRATOR, PgOptions, PgStore};

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use butterfly_core::account::{Account, Email, LegacyMd5, NewAccount, UserId};
use butterfly_core::lists::{
    ContactRef, EditOutcome, ListError, ListOp, PeerView, Roster, Tombstone, deltas_reach_back_to,
    now_ms,
};
use butterfly_core::oim::{Oim, OimMeta, OimNew, OimRefused};
use butterfly_core::profile::{Profile, ProfileEdit};
use butterfly_core::store::{Store, StoreError};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::codec::{ACCOUNT_COLUMNS, backend};
use crate::readers::Readers;

/// The SQLite schema history, embedded at compile time from `migrations/sqlite`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/sqlite");

/// How long a statement waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an edit may queue for the writer connection in this process.
const WRITE_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
/// Reader connections for a file database.
const READERS: u32 = 8;
/// How long a read may queue for a reader connection.
const READ_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Expired tombstones one deletion purges at most: bounded work per edit, yet more than
/// the one tombstone it adds, so an owner's backlog shrinks.
pub(crate) const PURGE_BATCH: i64 = 100;
/// Tombstones outlive [`TOMBSTONE_RETENTION`](butterfly_core::lists::TOMBSTONE_RETENTION)
/// by this much before they are purged, so a caller whose clock runs somewhat behind the
/// store's still finds every tombstone its horizon ([`deltas_reach_back_to`]) promises.
const PURGE_SLACK: Duration = Duration::from_secs(24 * 60 * 60);

/// Tombstones stamped before this (ms) may be purged at `now`.
pub(crate) fn purge_cutoff(now: i64) -> i64 {
    deltas_reach_back_to(now).saturating_sub(PURGE_SLACK.as_millis() as i64)
}

/// The embedded store: one SQLite file (or an in-memory database, for tests).
///
/// Cheap to clone; clones share the connections.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Connections for reads; each read that needs more than one statement runs in a
    /// transaction, i.e. on one WAL snapshot.
    read: Readers,
    /// At most one connection: every write goes through it.
    write: SqlitePool,
}

impl SqliteStore {
    /// Open (creating it and its directory if missing) the database file at `path` and
    /// bring its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(backend)?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::connect(options, false).await
    }

    /// Open a database named by URL — `sqlite://path/to/file.db` (created if missing) or
    /// `sqlite::memory:` (private to this store, gone when it closes) — and migrate it.
    pub async fn open_url(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(backend)?
            .create_if_missing(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        Self::connect(options, in_memory).await
    }

    async fn connect(options: SqliteConnectOptions, in_memory: bool) -> Result<Self, StoreError> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // 256 KiB of page cache per connection instead of SQLite's 2 MiB: lookups are
            // by index and the OS page cache holds the file anyway, while nine 2 MiB caches
            // would be 18 MiB of resident memory that grows with the number of accounts
            // read (it showed up as ~2 KiB per signed-in connection, docs/BENCHMARKS.md).
            .pragma("cache_size", "-256");
        // The writer stays open: it keeps an in-memory database alive, and saves
        // reconnecting (and re-reading the schema) on every edit.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(WRITE_QUEUE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(backend)?;
        MIGRATOR.run(&write).await.map_err(backend)?;
        let read = if in_memory {
            // Each connection to `:memory:` would be a database of its own (or need
            // shared-cache locking); one connection serves both roles.
            Readers::Writer(write.clone())
        } else {
            // Readers must never write: that would bypass the writer queue.
            Readers::new(
                options.pragma("query_only", "ON"),
                READERS,
                READ_QUEUE_TIMEOUT,
            )
        };
        Ok(SqliteStore { read, write })
    }

    /// Apply any migrations the database lacks (already done by `open`; for `butterfly
    /// migrate` and for callers that want to be explicit).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.write).await.map_err(backend)
    }

    /// Close every connection, waiting for those in use. The last one to close
    /// checkpoints the WAL into the main file.
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_account(&self, new: NewAccount) -> Result<Account, StoreError> {
        let (salt, hash) = match &new.legacy_md5 {
            Some(LegacyMd5 { salt, hash }) => (Some(salt.as_str()), Some(hash.as_str())),
            None => (None, None),
        };
        let id = sqlx::query_scalar::<_, i64>(
            "INSERT INTO users (email, friendly_name, password_hash, md5_salt, md5_hash) \
             VALUES (?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(new.email.as_str())
        .bind(&new.friendly_name)
        .bind(&new.password_hash)
        .bind(salt)
        .bind(hash)
        .fetch_one(&self.write)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::DuplicateAccount,
            e => backend(e),
        })?;
        Ok(Account {
            id: UserId(id),
            email: new.email,
            friendly_name: new.friendly_name,
            password_hash: new.password_hash,
            legacy_md5: new.legacy_md5,
        })
    }

    async fn account_by_email(&self, email: &Email) -> Result<Option<Account>, StoreError> {
        sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM users WHERE email = ?"
        ))
        .bind(email.as_str())
        .fetch_optional(&mut *self.read.get().await?)
        .await
        .map_err(backend)?
        .as_ref()
        .map(codec::account)
        .transpose()
    }

    async fn account_by_id(&self, id: UserId) -> Result<Option<Account>, StoreError> {
        sqlx::query(&format!("SELECT {ACCOUNT_COLUMNS} FROM users WHERE id = ?"))
            .bind(id.0)
            .fetch_optional(&mut *self.read.get().await?)
            .await
            .map_err(backend)?
            .as_ref()
            .map(codec::account)
            .transpose()
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM users ORDER BY email"
        ))
        .fetch_all(&mut *self.read.get().await?)
        .await
        .map_err(backend)?
        .iter()
        .map(codec::account)
        .collect()
    }

    async fn set_password(
        &self,
        email: &Email,
        password_hash: String,
        legacy_md5: Option<LegacyMd5>,
    ) -> Result<bool, StoreError> {
        let (salt, hash) = match legacy_md5 {
            Some(LegacyMd5 { salt, hash }) => (Some(salt), Some(hash)),
            None => (None, None),
        };
        let done = sqlx::query(
            "UPDATE users SET password_hash = ?, md5_salt = ?, md5_hash = ? WHERE email = ?",
        )
        .bind(password_hash)
        .bind(salt)
        .bind(hash)
        .bind(email.as_str())
        .execute(&self.write)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    /// Also bumps the list version and change stamp of everyone who had the account on a
    /// list, and leaves a contact tombstone in their lists: their lists lose an entry, and
    /// MSNP2–9 clients only refetch when the version moves, WLM ones when the stamp does.
    async fn delete_account(&self, email: &Email) -> Result<bool, StoreError> {
        let mut tx = self
            .write
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let Some(id) = sqlx::query_scalar::<_, i64>("SELECT id FROM users WHERE email = ?")
            .bind(email.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
        else {
            tx.rollback().await.map_err(backend)?;
            return Ok(false);
        };
        sqlx::query(
            "UPDATE users SET list_version = list_version + 1, ab_stamp = MAX(?2, ab_stamp + 1) \
             WHERE id IN (SELECT owner FROM contacts WHERE contact = ?1 AND owner <> ?1)",
        )
        .bind(id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        // Each owner's tombstone carries that owner's new stamp.
        sqlx::query(
            "INSERT INTO ab_tombstones (owner, kind, guid, email, deleted_at) \
             SELECT c.owner, 'contact', c.guid, ?2, u.ab_stamp \
             FROM contacts c JOIN users u ON u.id = c.owner \
             WHERE c.contact = ?1 AND c.owner <> ?1 \
             ON CONFLICT (owner, kind, guid) DO UPDATE \
             SET email = excluded.email, deleted_at = excluded.deleted_at",
        )
        .bind(id)
        .bind(email.as_str())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        // Groups, contacts (both directions), memberships and properties cascade.
        sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    /// An unknown owner (say, deleted meanwhile) has an empty roster with `owner: None`.
    /// One statement, so one snapshot: no transaction needed.
    async fn roster(&self, owner: UserId) -> Result<Roster, StoreError> {
        let mut conn = self.read.get().await?;
        let roster = lists::load_roster(&mut conn, owner).await?;
        Ok(roster.unwrap_or_default())
    }

    /// An unknown `owner` shows nothing to anyone (`BLP BL`, no lists): fails closed.
    async fn peer_view(&self, owner: UserId, viewer: UserId) -> Result<PeerView, StoreError> {
        let mut conn = self.read.get().await?;
        lists::peer_view(&mut conn, owner, viewer).await
    }

    /// An unknown owner gets `ListError::InvalidUser`.
    async fn edit(
        &self,
        owner: UserId,
        op: ListOp,
    ) -> Result<Result<EditOutcome, ListError>, StoreError> {
        // Dropping `tx` on any early return (an error, or this future being cancelled)
        // rolls back; only the explicit commit below makes the edit visible.
        let mut tx = self
            .write
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let Some(roster) = lists::load_roster(&mut tx, owner).await? else {
            tx.rollback().await.map_err(backend)?;
            return Ok(Err(ListError::InvalidUser));
        };
        // Only a name not yet on the owner's lists needs looking up; a GUID can only name
        // an existing contact.
        let target = match &op {
            ListOp::Add {
                target: ContactRef::Email(email),
                ..
            } if roster.contact(email).is_none() => {
                lists::resolve_target(&mut tx, owner, email).await?
            }
            _ => None,
        };
        let plan = match butterfly_core::lists::apply(&roster, owner, &op, target.as_ref()) {
            Ok(plan) => plan,
            Err(refused) => {
                tx.rollback().await.map_err(backend)?;
                return Ok(Err(refused));
            }
        };
        let now = now_ms();
        let (version, stamp) = lists::bump(&mut tx, owner, now).await?;
        for m in &plan.mutations {
            lists::write(&mut tx, owner, stamp, now, m).await?;
        }
        tx.commit().await.map_err(backend)?;
        tracing::debug!(owner = owner.0, version, stamp, "list edit committed");
        Ok(Ok(EditOutcome {
            version,
            ..plan.outcome
        }
        .stamped(stamp)))
    }

    async fn tombstones(&self, owner: UserId, since: i64) -> Result<Vec<Tombstone>, StoreError> {
        let mut conn = self.read.get().await?;
        lists::tombstones(&mut conn, owner, since).await
    }

    async fn oim_store(&self, new: OimNew) -> Result<Result<OimMeta, OimRefused>, StoreError> {
        oims::store(&self.write, new).await
    }

    async fn oims(&self, recipient: UserId) -> Result<Vec<OimMeta>, StoreError> {
        oims::list(&mut *self.read.get().await?, recipient).await
    }

    async fn oim_get(
        &self,
        recipient: UserId,
        id: uuid::Uuid,
        mark_read: bool,
    ) -> Result<Option<Oim>, StoreError> {
        oims::get_one(&self.read, &self.write, recipient, id, mark_read).await
    }

    async fn oim_delete(&self, recipient: UserId, ids: &[uuid::Uuid]) -> Result<u64, StoreError> {
        oims::delete(&self.write, recipient, ids).await
    }

    async fn profile(&self, owner: UserId) -> Result<Profile, StoreError> {
        profiles::get(&mut *self.read.get().await?, owner).await
    }

    async fn update_profile(&self, owner: UserId, edit: ProfileEdit) -> Result<(), StoreError> {
        profiles::update(&self.write, owner, edit).await
    }
}
