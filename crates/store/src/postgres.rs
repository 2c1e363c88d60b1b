//! The Postgres implementation of the [`Store`] port, for the distributed mode; how it
//! keeps edits atomic across processes is on [`PgStore`].

mod bulk;
mod lists;
mod oims;
mod profiles;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use butterfly_core::account::{Account, Email, LegacyMd5, NewAccount, UserId};
use butterfly_core::lists::{
    ContactRef, EditOutcome, ListError, ListOp, Mutation, PeerView, Roster, Tombstone, now_ms,
};
use butterfly_core::oim::{Oim, OimMeta, OimNew, OimRefused};
use butterfly_core::profile::{Profile, ProfileEdit};
use butterfly_core::store::{Store, StoreError};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::codec::{self, backend};

/// The Postgres schema history, embedded at compile time from `migrations/postgres`.
/// Version numbers match [`MIGRATOR`](crate::MIGRATOR)'s (`migrations/README.md`).
pub static PG_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

/// How many times an edit or deletion is attempted before a conflict is reported.
const MAX_ATTEMPTS: u32 = 8;

/// Pool settings for [`PgStore::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// Connections this process keeps at most. Each Butterfly process has its own pool, so
    /// the sum over processes must stay below the server's `max_connections`.
    pub max_connections: u32,
    /// How long a call may wait for a connection — for a free one, or for a new one to be
    /// opened — before failing with [`StoreError::Backend`]. This bounds how long a call
    /// takes while the database is unreachable.
    pub acquire_timeout: Duration,
    /// Longest a statement may run on the server before Postgres cancels it (its
    /// `statement_timeout`), so a call stuck behind a lock or a slow plan fails with
    /// [`StoreError::Backend`] and frees its connection. `None`: no limit (migrations).
    pub statement_timeout: Option<Duration>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Some(Duration::from_secs(5)),
        }
    }
}

/// The shared store of the distributed mode: one Postgres database that many processes
/// use at once, so the serialisation SQLite gets from its single writer has to come from
/// row locks here.
///
/// It behaves exactly like [`SqliteStore`](crate::SqliteStore) — the same list versions,
/// RL bumps, refusals and cascades; `butterfly_store::conformance` runs one suite against
/// both. What differs is how an edit is kept atomic against other processes:
///
/// - Every edit is one transaction that first locks the owner's `users` row (`SELECT …
///   FOR NO KEY UPDATE`), then loads the roster, asks [`butterfly_core::lists::apply`] for
///   a plan and writes it. A transaction may write a user's lists only while holding that
///   user's row lock, so edits of one owner take turns and the roster an edit is decided on
///   is the one it writes over (no lost updates).
/// - An edit that changes someone else's RL must hold their lock too. It tries to take it
///   without waiting (`NOWAIT`); when that fails it rolls back and starts over, taking both
///   locks in id order. Nobody waits for a lock while holding one out of order, so edits
///   do not deadlock each other; should Postgres still report a deadlock or serialization
///   failure (say, against an account deletion), the edit is retried a few times.
/// - Commits are synchronous: every connection sets `synchronous_commit = on`, so a server
///   or role default of `off` cannot make an acknowledged edit vanish in a crash; a change
///   is on disk before `edit` returns.
/// - Other users' data an edit reads but does not write (their names, privacy and lists of
///   the owner, shown as peer views) is read at READ COMMITTED without their locks: it is
///   current when read, like a peer view fetched just before the edit, and never decides
///   what is written.
///
/// The pool connects lazily and every wait for a connection is bounded by
/// [`PgOptions::acquire_timeout`], so while Postgres is down each call fails with
/// [`StoreError::Backend`] after about that long instead of hanging — the NS turns that into
/// an MSNP error for the client.
///
/// Statements are `query!` macros checked against the schema at build time. The crate
/// builds without a database from the offline data in `crates/store/.sqlx`; after changing
/// a query or the schema regenerate it with `cargo sqlx prepare` against a migrated scratch
/// database (the commands are in `migrations/README.md`).
///
/// Cheap to clone; clones share the pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// A store for the database at `url` (`postgres://user:password@host:port/database`).
    ///
    /// Nothing is connected yet: only a malformed URL fails here. Connections are opened
    /// when calls need them, so a process can start while Postgres is down and serve as
    /// soon as it is back; until then calls fail after [`PgOptions::acquire_timeout`].
    /// Does not migrate: call [`migrate`](Self::migrate) (or `butterfly migrate`) once
    /// per deployment.
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self, StoreError> {
        let mut connect = PgConnectOptions::from_str(url)
            .map_err(backend)?
            .options([("synchronous_commit", "on")]);
        if let Some(limit) = options.statement_timeout {
            // Milliseconds, at least 1: 0 would mean no limit.
            let ms = limit.as_millis().max(1).to_string();
            connect = connect.options([("statement_timeout", ms.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect);
        Ok(PgStore { pool })
    }

    /// Apply any migrations the database lacks. Safe to run from several processes at
    /// once (sqlx serialises them with an advisory lock) and to repeat. Runs under this
    /// pool's statement timeout; [`PgStore::migrate_url`] runs without one.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        PG_MIGRATOR.run(&self.pool).await.map_err(backend)
    }

    /// Connect to `url`, bring its schema up to date, and disconnect: for `butterfly
    /// migrate` and deployment jobs that only migrate.
    pub async fn migrate_url(url: &str) -> Result<(), StoreError> {
        let options = PgOptions {
            statement_timeout: None,
            ..PgOptions::default()
        };
        let store = Self::connect(url, options).await?;
        let done = store.migrate().await;
        store.close().await;
        done
    }

    /// Close every connection, waiting for those in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// One attempt at [`Store::edit`], in one transaction.
    ///
    /// `lock` is who to lock (in id order, waiting) before reading: the owner, plus on a
    /// retry the users the previous attempt could not lock without waiting.
    async fn try_edit(
        &self,
        owner: UserId,
        op: &ListOp,
        lock: &[i64],
    ) -> Result<Result<EditOutcome, ListError>, Failure> {
        // Dropping `tx` on any early return (an error, or this future being cancelled)
        // rolls back; only the explicit commit below makes the edit visible.
        let mut tx = self.pool.begin().await?;
        let mut locked = lists::lock_users(&mut tx, lock).await?;
        if !locked.contains(&owner.0) {
            tx.rollback().await?;
            return Ok(Err(ListError::InvalidUser));
        }
        let Some(roster) = lists::load_roster(&mut tx, owner).await? else {
            tx.rollback().await?;
            return Ok(Err(ListError::InvalidUser));
        };
        // Only a name not yet on the owner's lists needs looking up; a GUID can only name
        // an existing contact.
        let target = match op {
            ListOp::Add {
                target: ContactRef::Email(email),
                ..
            } if roster.contact(email).is_none() => {
                lists::resolve_target(&mut tx, owner, email).await?
            }
            _ => None,
        };
        let plan = match butterfly_core::lists::apply(&roster, owner, op, target.as_ref()) {
            Ok(plan) => plan,
            Err(refused) => {
                tx.rollback().await?;
                return Ok(Err(refused));
            }
        };

        // The other users whose lists the plan writes (their RL) must be locked before
        // anything is written, or their own concurrent edit could overwrite the change.
        let mut others: Vec<i64> = plan
            .mutations
            .iter()
            .filter_map(|m| match m {
                Mutation::SetReverse { target, .. } => Some(target.0),
                _ => None,
            })
            .filter(|id| !locked.contains(id))
            .collect();
        if !others.is_empty() {
            others.sort_unstable();
            others.dedup();
            match lists::try_lock_users(&mut tx, &others).await {
                // Someone named by the plan was deleted since it was read.
                Ok(got) if got.len() < others.len() => return Err(Failure::Stale),
                Ok(got) => locked.extend(got),
                Err(Failure::Sql(e)) if sqlstate_in(&e, &[LOCK_NOT_AVAILABLE]) => {
                    locked.extend(others);
                    locked.sort_unstable();
                    return Err(Failure::Contended(locked));
                }
                Err(e) => return Err(e),
            }
        }

        let now = now_ms();
        let (version, stamp) = lists::bump(&mut tx, owner, now).await?;
        for m in &plan.mutations {
            lists::write(&mut tx, owner, stamp, now, m).await?;
        }
        tx.commit().await?;
        tracing::debug!(owner = owner.0, version, stamp, "list edit committed");
        Ok(Ok(EditOutcome {
            version,
            ..plan.outcome
        }
        .stamped(stamp)))
    }

    /// One attempt at [`Store::delete_account`].
    async fn try_delete_account(&self, email: &Email) -> Result<bool, Failure> {
        let mut tx = self.pool.begin().await?;
        let Some(id) = sqlx::query_scalar!("SELECT id FROM users WHERE email = $1", email.as_str())
            .fetch_optional(&mut *tx)
            .await?
        else {
            tx.rollback().await?;
            return Ok(false);
        };
        // The account and everyone whose lists lose it: their rows are written (deleted by
        // the cascade) and their versions bumped, so they are locked like an edit's owner,
        // in id order.
        let locked = sqlx::query_scalar!(
            "SELECT id FROM users \
             WHERE id = $1 OR id IN (SELECT owner FROM contacts WHERE contact = $1) \
             ORDER BY id FOR NO KEY UPDATE",
            id
        )
        .fetch_all(&mut *tx)
        .await?;
        if !locked.contains(&id) {
            // Deleted by someone else meanwhile.
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query!(
            "UPDATE users \
             SET list_version = list_version + 1, ab_stamp = GREATEST($2, ab_stamp + 1) \
             WHERE id IN (SELECT owner FROM contacts WHERE contact = $1 AND owner <> $1)",
            id,
            now_ms()
        )
        .execute(&mut *tx)
        .await?;
        // Each owner's tombstone carries that owner's new stamp.
        sqlx::query!(
            "INSERT INTO ab_tombstones (owner, kind, guid, email, deleted_at) \
             SELECT c.owner, 'contact', c.guid, $2::TEXT, u.ab_stamp \
             FROM contacts c JOIN users u ON u.id = c.owner \
             WHERE c.contact = $1 AND c.owner <> $1 \
             ON CONFLICT (owner, kind, guid) DO UPDATE \
             SET email = EXCLUDED.email, deleted_at = EXCLUDED.deleted_at",
            id,
            email.as_str()
        )
        .execute(&mut *tx)
        .await?;
        // Groups, contacts (both directions), memberships and properties cascade.
        sqlx::query!("DELETE FROM users WHERE id = $1", id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// An account row as `SELECT id, email, friendly_name, password_hash, md5_salt, md5_hash`
/// returns it.
struct AccountRow {
    id: i64,
    email: String,
    friendly_name: String,
    password_hash: String,
    md5_salt: Option<String>,
    md5_hash: Option<String>,
}

impl AccountRow {
    fn into_account(self) -> Result<Account, StoreError> {
        Ok(Account {
            id: UserId(self.id),
            email: codec::email("users.email", &self.email)?,
            friendly_name: self.friendly_name,
            password_hash: self.password_hash,
            // The schema keeps both or neither.
            legacy_md5: match (self.md5_salt, self.md5_hash) {
                (Some(salt), Some(hash)) => Some(LegacyMd5 { salt, hash }),
                _ => None,
            },
        })
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_account(&self, new: NewAccount) -> Result<Account, StoreError> {
        let (salt, hash) = match &new.legacy_md5 {
            Some(LegacyMd5 { salt, hash }) => (Some(salt.as_str()), Some(hash.as_str())),
            None => (None, None),
        };
        let id = sqlx::query_scalar!(
            "INSERT INTO users (email, friendly_name, password_hash, md5_salt, md5_hash) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            new.email.as_str(),
            new.friendly_name,
            new.password_hash,
            salt,
            hash
        )
        .fetch_one(&self.pool)
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
        sqlx::query_as!(
            AccountRow,
            "SELECT id, email, friendly_name, password_hash, md5_salt, md5_hash \
             FROM users WHERE email = $1",
            email.as_str()
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .map(AccountRow::into_account)
        .transpose()
    }

    async fn account_by_id(&self, id: UserId) -> Result<Option<Account>, StoreError> {
        sqlx::query_as!(
            AccountRow,
            "SELECT id, email, friendly_name, password_hash, md5_salt, md5_hash \
             FROM users WHERE id = $1",
            id.0
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .map(AccountRow::into_account)
        .transpose()
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        sqlx::query_as!(
            AccountRow,
            "SELECT id, email, friendly_name, password_hash, md5_salt, md5_hash \
             FROM users ORDER BY email"
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .into_iter()
        .map(AccountRow::into_account)
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
        let done = sqlx::query!(
            "UPDATE users SET password_hash = $1, md5_salt = $2, md5_hash = $3 WHERE email = $4",
            password_hash,
            salt,
            hash,
            email.as_str()
        )
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    /// Also bumps the list version and change stamp of everyone who had the account on a
    /// list, and leaves a contact tombstone in their lists: their lists lose an entry, and
    /// MSNP2–9 clients only refetch when the version moves, WLM ones when the stamp does.
    async fn delete_account(&self, email: &Email) -> Result<bool, StoreError> {
        retry("delete account", || self.try_delete_account(email)).await
    }

    /// An unknown owner (say, deleted meanwhile) has an empty roster with `owner: None`.
    ///
    /// One statement, so one snapshot (as a SQLite read transaction is): the roster never
    /// mixes before and after an edit.
    async fn roster(&self, owner: UserId) -> Result<Roster, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        let roster = lists::load_roster(&mut conn, owner)
            .await
            .map_err(Failure::into_store_error)?;
        Ok(roster.unwrap_or_default())
    }

    /// An unknown `owner` shows nothing to anyone (`BLP BL`, no lists): fails closed.
    async fn peer_view(&self, owner: UserId, viewer: UserId) -> Result<PeerView, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        lists::peer_view(&mut conn, owner, viewer)
            .await
            .map_err(Failure::into_store_error)
    }

    /// An unknown owner gets `ListError::InvalidUser`.
    async fn edit(
        &self,
        owner: UserId,
        op: ListOp,
    ) -> Result<Result<EditOutcome, ListError>, StoreError> {
        let mut lock = vec![owner.0];
        let mut attempt = 1;
        loop {
            match self.try_edit(owner, &op, &lock).await {
                Ok(done) => return Ok(done),
                Err(Failure::Contended(ids)) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(owner = owner.0, attempt, "edit waits for locks in order");
                    lock = ids;
                }
                Err(f) if f.is_transient() && attempt < MAX_ATTEMPTS => {
                    tracing::debug!(owner = owner.0, attempt, error = %f, "edit retried");
                }
                Err(f) => return Err(f.into_store_error()),
            }
            attempt += 1;
        }
    }

    async fn tombstones(&self, owner: UserId, since: i64) -> Result<Vec<Tombstone>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        lists::tombstones(&mut conn, owner, since)
            .await
            .map_err(Failure::into_store_error)
    }

    async fn oim_store(&self, new: OimNew) -> Result<Result<OimMeta, OimRefused>, StoreError> {
        let new = match new.validated() {
            Ok(new) => new,
            Err(refused) => return Ok(Err(refused)),
        };
        retry("store OIM", || oims::try_store(&self.pool, &new)).await
    }

    async fn oims(&self, recipient: UserId) -> Result<Vec<OimMeta>, StoreError> {
        oims::list(&self.pool, recipient)
            .await
            .map_err(Failure::into_store_error)
    }

    async fn oim_get(
        &self,
        recipient: UserId,
        id: uuid::Uuid,
        mark_read: bool,
    ) -> Result<Option<Oim>, StoreError> {
        oims::get_one(&self.pool, recipient, id, mark_read)
            .await
            .map_err(Failure::into_store_error)
    }

    async fn oim_delete(&self, recipient: UserId, ids: &[uuid::Uuid]) -> Result<u64, StoreError> {
        oims::delete(&self.pool, recipient, ids)
            .await
            .map_err(Failure::into_store_error)
    }

    async fn profile(&self, owner: UserId) -> Result<Profile, StoreError> {
        profiles::get(&self.pool, owner).await
    }

    async fn update_profile(&self, owner: UserId, edit: ProfileEdit) -> Result<(), StoreError> {
        profiles::update(&self.pool, owner, edit).await
    }
}

/// Run `attempt` until it succeeds, fails for good, or has been tried [`MAX_ATTEMPTS`]
/// times.
async fn retry<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut n = 1;
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(f) if f.is_transient() && n < MAX_ATTEMPTS => {
                tracing::debug!(what, attempt = n, error = %f, "retried");
            }
            Err(f) => return Err(f.into_store_error()),
        }
        n += 1;
    }
}

/// SQLSTATE of a `NOWAIT` lock that someone else holds.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// SQLSTATEs after which the same transaction, started afresh, can succeed: it lost a
/// deadlock or serialization conflict, could not take a lock without waiting, or a row it
/// pointed at was deleted meanwhile (the next attempt reads that and answers accordingly).
const TRANSIENT: [&str; 4] = ["40001", "40P01", LOCK_NOT_AVAILABLE, "23503"];

/// Whether `e` is a database error with one of these SQLSTATEs.
fn sqlstate_in(e: &sqlx::Error, codes: &[&str]) -> bool {
    match e {
        sqlx::Error::Database(d) => d.code().is_some_and(|c| codes.contains(&c.as_ref())),
        _ => false,
    }
}

/// Why one attempt at a transaction did not finish.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A statement failed.
    Sql(sqlx::Error),
    /// A value read back made no sense (see `codec`).
    Store(StoreError),
    /// Other users' rows were locked; start over, locking these (sorted) first.
    Contended(Vec<i64>),
    /// What the attempt was decided on changed under it; start over.
    Stale,
}

impl Failure {
    fn is_transient(&self) -> bool {
        match self {
            Failure::Sql(e) => sqlstate_in(e, &TRANSIENT),
            Failure::Store(_) => false,
            Failure::Contended(_) | Failure::Stale => true,
        }
    }

    fn into_store_error(self) -> StoreError {
        match self {
            Failure::Sql(e) => backend(e),
            Failure::Store(e) => e,
            Failure::Contended(_) => {
                StoreError::Backend("edit kept conflicting with concurrent edits".into())
            }
            Failure::Stale => StoreError::Backend("edit kept racing an account deletion".into()),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Sql(e) => e.fmt(f),
            Failure::Store(e) => e.fmt(f),
            Failure::Contended(ids) => write!(f, "users {ids:?} locked by another transaction"),
            Failure::Stale => f.write_str("a user the edit named was deleted meanwhile"),
        }
    }
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Failure::Sql(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}
