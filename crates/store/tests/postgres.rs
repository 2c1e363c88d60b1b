//! The Postgres store against a real server: the conformance suite
//! (`butterfly_store::conformance`), the rows the API cannot show, several pools on one
//! database standing in for several processes, migrations, and failing — not hanging —
//! while the database is unreachable.
//!
//! Each test creates its own database on `BUTTERFLY_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and drops it afterwards; without a
//! reachable server the tests say so and pass, unless `CI=true` (see
//! `conformance::TestPostgres::reachable`).

mod support;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use butterfly_core::account::{Account, Email, LegacyMd5, NewAccount, UserId};
use butterfly_core::lists::{
    ContactRef, EditOutcome, Gtc, List, ListError, ListOp, PeerView, Privacy, Roster, Tombstone,
    TombstoneKind, deltas_reach_back_to, now_ms,
};
use butterfly_core::store::{Store, StoreError};
use butterfly_store::conformance::{self, TestPostgres, with_postgres};
use butterfly_store::{MIGRATOR, PG_MIGRATOR, PgOptions, PgStore};
use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use support::{FL, ORPHANS, RL, add, email, lists, ok, remove, user};

async fn count(url: &str, sql: &str) -> i64 {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let n = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    n
}

/// The whole suite, each check on a database of its own; afterwards no database holds a
/// row that no list holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite() {
    with_postgres(|pg| async move {
        conformance::run_all(|| {
            let pg = pg.clone();
            async move { Arc::new(pg.store().await) as Arc<dyn Store> }
        })
        .await;
        for url in pg.database_urls() {
            assert_eq!(count(&url, ORPHANS).await, 0, "{url}");
        }
    })
    .await;
}

/// Checks whose end state empties tables, looked at row by row: removals and cascades
/// leave nothing behind.
#[tokio::test]
async fn checks_leave_no_rows_behind() {
    with_postgres(|pg| async move {
        let store = pg.store().await;
        conformance::forward_list_maintains_reverse_list_and_versions(Arc::new(store.clone()))
            .await;
        store.close().await;
        let url = pg.database_urls().pop().unwrap();
        assert_eq!(count(&url, "SELECT COUNT(*) FROM contacts").await, 0);

        let store = pg.store().await;
        conformance::groups_and_membership(Arc::new(store.clone())).await;
        store.close().await;
        let url = pg.database_urls().pop().unwrap();
        assert_eq!(count(&url, "SELECT COUNT(*) FROM contact_groups").await, 0);

        let store = pg.store().await;
        conformance::delete_account_cascades(Arc::new(store.clone())).await;
        store.close().await;
        let url = pg.database_urls().pop().unwrap();
        for table in ["contacts", "contact_groups", "properties"] {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            assert_eq!(count(&url, &sql).await, 0, "{table}");
        }
        assert_eq!(count(&url, "SELECT COUNT(*) FROM list_groups").await, 1);
    })
    .await;
}

/// Several stores on one database, each call going to the next: stands in for several
/// processes of the distributed mode sharing one Postgres, with no pool-level ordering
/// between them — only the row locks.
struct Processes {
    stores: Vec<PgStore>,
    next: AtomicUsize,
}

impl Processes {
    async fn new(pg: &TestPostgres, n: usize) -> Arc<Self> {
        let url = pg.create_database().await;
        PgStore::migrate_url(&url).await.unwrap();
        let mut stores = Vec::new();
        for _ in 0..n {
            stores.push(
                PgStore::connect(&url, TestPostgres::options())
                    .await
                    .unwrap(),
            );
        }
        Arc::new(Processes {
            stores,
            next: AtomicUsize::new(0),
        })
    }

    fn pick(&self) -> &PgStore {
        &self.stores[self.next.fetch_add(1, Ordering::Relaxed) % self.stores.len()]
    }
}

#[async_trait]
impl Store for Processes {
    async fn create_account(&self, new: NewAccount) -> Result<Account, StoreError> {
        self.pick().create_account(new).await
    }
    async fn account_by_email(&self, email: &Email) -> Result<Option<Account>, StoreError> {
        self.pick().account_by_email(email).await
    }
    async fn account_by_id(&self, id: UserId) -> Result<Option<Account>, StoreError> {
        self.pick().account_by_id(id).await
    }
    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.pick().accounts().await
    }
    async fn set_password(
        &self,
        email: &Email,
        password_hash: String,
        legacy_md5: Option<LegacyMd5>,
    ) -> Result<bool, StoreError> {
        self.pick()
            .set_password(email, password_hash, legacy_md5)
            .await
    }
    async fn delete_account(&self, email: &Email) -> Result<bool, StoreError> {
        self.pick().delete_account(email).await
    }
    async fn roster(&self, owner: UserId) -> Result<Roster, StoreError> {
        self.pick().roster(owner).await
    }
    async fn peer_view(&self, owner: UserId, viewer: UserId) -> Result<PeerView, StoreError> {
        self.pick().peer_view(owner, viewer).await
    }
    async fn edit(
        &self,
        owner: UserId,
        op: ListOp,
    ) -> Result<Result<EditOutcome, ListError>, StoreError> {
        self.pick().edit(owner, op).await
    }
    async fn tombstones(&self, owner: UserId, since: i64) -> Result<Vec<Tombstone>, StoreError> {
        self.pick().tombstones(owner, since).await
    }
}

/// Many tasks editing one owner, and many owners editing each other, through three pools:
/// versions stay gapless and exact, RL mirrors FL, nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_edits_from_several_processes() {
    with_postgres(|pg| async move {
        conformance::concurrent_edits_of_one_owner(Processes::new(&pg, 3).await).await;
        conformance::concurrent_edits_lose_nothing(Processes::new(&pg, 3).await).await;
    })
    .await;
}

/// Every owner adds every other user at once, half of them through each of two pools, so
/// pairs add each other simultaneously — each edit needs both users' locks. They must take
/// turns without deadlock errors, and every version must count exactly the changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_adds_take_turns() {
    const USERS: usize = 8;
    with_postgres(|pg| async move {
        let url = pg.create_database().await;
        PgStore::migrate_url(&url).await.unwrap();
        let first = PgStore::connect(&url, TestPostgres::options())
            .await
            .unwrap();
        let second = PgStore::connect(&url, TestPostgres::options())
            .await
            .unwrap();
        let mut users = Vec::new();
        for i in 0..USERS {
            users.push(user(&first, &format!("user{i:02}")).await);
        }
        let users = Arc::new(users);
        let barrier = Arc::new(tokio::sync::Barrier::new(USERS));
        let mut tasks = Vec::new();
        for owner in 0..USERS {
            let store = if owner % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let (users, barrier) = (users.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                // Owner i starts with i+1, so i and i+1 add each other first.
                for step in 1..USERS {
                    let t = (owner + step) % USERS;
                    let op = ListOp::Add {
                        list: List::Forward,
                        target: ContactRef::Email(users[t].email.clone()),
                        group: None,
                    };
                    ok(&store, &users[owner], op).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for u in users.iter() {
            let r = second.roster(u.id).await.unwrap();
            // USERS - 1 own edits and as many RL changes.
            assert_eq!(r.version, 2 * (USERS as u64 - 1), "{}", u.email);
            assert_eq!(r.contacts.len(), USERS - 1);
            assert!(r.contacts.iter().all(|c| c.lists.0 == FL | RL));
        }
        first.close().await;
        second.close().await;
    })
    .await;
}

/// Migrating twice, from several processes at once, or a database that is already up to
/// date does nothing and fails nothing; the data written before is still there through a
/// new pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_are_idempotent() {
    with_postgres(|pg| async move {
        let url = pg.create_database().await;
        PgStore::migrate_url(&url).await.unwrap();
        PgStore::migrate_url(&url).await.unwrap();
        let store = PgStore::connect(&url, TestPostgres::options())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let alice = user(&store, "alice").await;
        let _bob = user(&store, "bob").await;
        ok(&store, &alice, add(List::Forward, "bob")).await;
        ok(&store, &alice, ListOp::SetPrivacy(Privacy::BlockAll)).await;
        let roster = store.roster(alice.id).await.unwrap();
        store.close().await;
        // The change stamps are part of what must survive.
        assert!(roster.stamp > 0 && roster.settings_changed_at > 0);
        assert!(roster.contacts[0].changed_at > 0);

        // A fresh database migrated by several processes at once.
        let fresh = pg.create_database().await;
        let runs: Vec<_> = (0..4)
            .map(|_| {
                let url = fresh.clone();
                tokio::spawn(async move { PgStore::migrate_url(&url).await })
            })
            .collect();
        for run in runs {
            run.await.unwrap().unwrap();
        }

        let expected: Vec<i64> = PG_MIGRATOR.iter().map(|m| m.version).collect();
        for db in [&url, &fresh] {
            let mut conn = PgConnection::connect(db).await.unwrap();
            let applied: Vec<i64> =
                sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            assert_eq!(applied, expected, "{db}");
            conn.close().await.unwrap();
        }

        let store = PgStore::connect(&url, TestPostgres::options())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        assert_eq!(store.roster(alice.id).await.unwrap(), roster);
        let bob = store
            .account_by_email(&email("bob"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(lists(&store.roster(bob.id).await.unwrap(), "alice"), RL);
        store.close().await;
    })
    .await;
}

/// Both dialects have the same migrations, by version and name (`migrations/README.md`).
#[test]
fn dialects_have_the_same_migrations() {
    let versions = |m: &sqlx::migrate::Migrator| -> Vec<(i64, String)> {
        m.iter()
            .map(|m| (m.version, m.description.to_string()))
            .collect()
    };
    assert_eq!(versions(&PG_MIGRATOR), versions(&MIGRATOR));
}

/// A statement stuck behind a lock is cancelled by the server after the statement
/// timeout: the call fails with `StoreError::Backend` and its connection is free again,
/// instead of the caller (and the pool) waiting as long as the lock is held.
#[tokio::test]
async fn a_statement_stuck_behind_a_lock_is_cancelled() {
    with_postgres(|pg| async move {
        let url = pg.create_database().await;
        PgStore::migrate_url(&url).await.unwrap();
        let options = PgOptions {
            max_connections: 1,
            statement_timeout: Some(Duration::from_millis(300)),
            ..TestPostgres::options()
        };
        let store = PgStore::connect(&url, options).await.unwrap();
        let alice = user(&store, "alice").await;

        // Another client holds the users table locked until it rolls back.
        let mut locker = PgConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
        sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
            .execute(&mut locker)
            .await
            .unwrap();
        let stuck = tokio::time::timeout(Duration::from_secs(30), store.account_by_id(alice.id))
            .await
            .expect("the statement timeout ends the call, not the test's timeout");
        assert!(matches!(stuck, Err(StoreError::Backend(_))), "{stuck:?}");

        // The pool's only connection was released: once the lock is gone, calls work.
        sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
        let found = store.account_by_id(alice.id).await.unwrap();
        assert_eq!(found.map(|a| a.id), Some(alice.id));
        store.close().await;
    })
    .await;
}

/// With nothing listening, every call fails with `StoreError::Backend` after about the
/// acquire timeout — the NS answers sign-ins with an MSNP error while Postgres is down —
/// instead of hanging. Needs no server; the outer timeout only turns a hang into a failure.
#[tokio::test]
async fn unreachable_database_fails_instead_of_hanging() {
    const NOWHERE: &str = "postgres://postgres@127.0.0.1:1/x";
    let outcome = tokio::time::timeout(Duration::from_secs(120), async {
        let options = PgOptions {
            acquire_timeout: Duration::from_secs(1),
            ..PgOptions::default()
        };
        // Connecting is lazy: a server that is down at start-up is not an error yet.
        let store = PgStore::connect(NOWHERE, options).await.unwrap();
        let someone = UserId(1);
        let results: Vec<(&str, Result<(), StoreError>)> = vec![
            (
                "account_by_id",
                store.account_by_id(someone).await.map(drop),
            ),
            (
                "account_by_email",
                store.account_by_email(&email("alice")).await.map(drop),
            ),
            ("accounts", store.accounts().await.map(drop)),
            (
                "create_account",
                store
                    .create_account(NewAccount {
                        email: email("alice"),
                        friendly_name: "alice".into(),
                        password_hash: "x".into(),
                        legacy_md5: None,
                    })
                    .await
                    .map(drop),
            ),
            ("roster", store.roster(someone).await.map(drop)),
            (
                "peer_view",
                store.peer_view(someone, UserId(2)).await.map(drop),
            ),
            (
                "edit",
                store
                    .edit(someone, ListOp::SetGtc(Gtc::NoAsk))
                    .await
                    .map(drop),
            ),
            (
                "delete_account",
                store.delete_account(&email("alice")).await.map(drop),
            ),
            ("migrate", store.migrate().await),
            // With the default options (5 s).
            ("migrate_url", PgStore::migrate_url(NOWHERE).await),
        ];
        for (call, result) in results {
            assert!(
                matches!(result, Err(StoreError::Backend(_))),
                "{call}: {result:?}"
            );
        }
        store.close().await;
    })
    .await;
    assert!(outcome.is_ok(), "a call to an unreachable database hung");

    // A malformed URL is refused up front.
    let bad = PgStore::connect("postgres://[", PgOptions::default()).await;
    assert!(matches!(bad, Err(StoreError::Backend(_))), "{bad:?}");
}

/// A user's change stamp never goes back, even when the clock is behind it (stepped back,
/// or many edits within a millisecond ran it ahead): edits count on from the stored stamp,
/// one apart. An RL change stamps the target's row in the target's counter.
#[tokio::test]
async fn stamps_count_on_when_the_clock_is_behind() {
    with_postgres(|pg| async move {
        let store = pg.store().await;
        let url = pg.database_urls().pop().unwrap();
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        let ahead = now_ms() + 3_600_000;
        let mut conn = PgConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE users SET ab_stamp = $1 WHERE id = $2")
            .bind(ahead)
            .bind(bob.id.0)
            .execute(&mut conn)
            .await
            .unwrap();

        ok(&store, &alice, add(List::Forward, "bob")).await;
        let b = store.roster(bob.id).await.unwrap();
        assert_eq!(b.stamp, ahead + 1);
        assert_eq!(b.contact(&email("alice")).unwrap().changed_at, ahead + 1);
        assert!(store.roster(alice.id).await.unwrap().stamp < ahead);
        for n in 2..5 {
            ok(&store, &bob, ListOp::SetFriendlyName(format!("Bob {n}"))).await;
            let b = store.roster(bob.id).await.unwrap();
            assert_eq!((b.stamp, b.settings_changed_at), (ahead + n, ahead + n));
        }
        conn.close().await.unwrap();
        store.close().await;
    })
    .await;
}

/// Tombstones past the retention (and its slack) are purged when the owner next deletes
/// something, at most 100 per deletion; younger ones stay.
#[tokio::test]
async fn expired_tombstones_are_purged_on_the_next_deletion() {
    with_postgres(|pg| async move {
        let store = pg.store().await;
        let url = pg.database_urls().pop().unwrap();
        let alice = user(&store, "alice").await;
        let _bob = user(&store, "bob").await;
        let _carol = user(&store, "carol").await;
        ok(&store, &alice, add(List::Allow, "bob")).await;
        ok(&store, &alice, add(List::Allow, "carol")).await;

        let day = 24 * 60 * 60 * 1000;
        let horizon = deltas_reach_back_to(now_ms());
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let insert = |guid: Uuid, at: i64| {
            sqlx::query(
                "INSERT INTO ab_tombstones (owner, kind, guid, email, deleted_at) \
                 VALUES ($1, 'group', $2, NULL, $3)",
            )
            .bind(alice.id.0)
            .bind(guid)
            .bind(at)
        };
        insert(Uuid::new_v4(), horizon + day)
            .execute(&mut conn)
            .await
            .unwrap();
        for n in 0..120 {
            insert(Uuid::new_v4(), horizon - 2 * day - n)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
        let expired = format!(
            "SELECT COUNT(*) FROM ab_tombstones WHERE deleted_at < {}",
            horizon - day
        );

        ok(&store, &alice, remove(List::Allow, "bob")).await;
        assert_eq!(count(&url, &expired).await, 20, "100 purged");
        ok(&store, &alice, remove(List::Allow, "carol")).await;
        assert_eq!(count(&url, &expired).await, 0);
        let left: Vec<_> = store
            .tombstones(alice.id, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|t| (t.kind, t.email.map(|e| e.to_string())))
            .collect();
        assert_eq!(
            left,
            [
                (TombstoneKind::Group, None),
                (TombstoneKind::Contact, Some("bob@example.com".into())),
                (TombstoneKind::Contact, Some("carol@example.com".into())),
            ]
        );
        store.close().await;
    })
    .await;
}

/// Migration 2 on a database written at version 1: existing rows read with stamp 0, and
/// edits, stamps and tombstones work on them.
#[tokio::test]
async fn version_2_migrates_a_populated_database() {
    with_postgres(|pg| async move {
        let url = pg.create_database().await;
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let v1 = Migrator {
            migrations: Cow::Owned(
                PG_MIGRATOR
                    .iter()
                    .filter(|m| m.version == 1)
                    .cloned()
                    .collect(),
            ),
            ..Migrator::DEFAULT
        };
        v1.run_direct(&mut conn).await.unwrap();
        let (bob_row, group) = (Uuid::new_v4(), Uuid::new_v4());
        for (sql, guid) in [
            (
                "INSERT INTO users (id, email, friendly_name, password_hash) OVERRIDING SYSTEM VALUE \
                 VALUES (1, 'alice@example.com', 'alice', 'x'), (2, 'bob@example.com', 'bob', 'x')",
                None,
            ),
            (
                "INSERT INTO list_groups (owner, number, guid, name) VALUES (1, 1, $1, 'Friends')",
                Some(group),
            ),
            (
                "INSERT INTO contacts (owner, contact, guid, lists) VALUES (1, 2, $1, 1)",
                Some(bob_row),
            ),
            (
                "INSERT INTO contacts (owner, contact, guid, lists) VALUES (2, 1, $1, 8)",
                Some(Uuid::new_v4()),
            ),
            (
                "INSERT INTO contact_groups (owner, contact, number) VALUES (1, 2, 1)",
                None,
            ),
        ] {
            let q = sqlx::query(sql);
            let q = match guid {
                Some(g) => q.bind(g),
                None => q,
            };
            q.execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();

        PgStore::migrate_url(&url).await.unwrap();
        let store = PgStore::connect(&url, TestPostgres::options())
            .await
            .unwrap();
        let alice = store
            .account_by_email(&email("alice"))
            .await
            .unwrap()
            .unwrap();
        let a = store.roster(alice.id).await.unwrap();
        assert_eq!((a.stamp, a.settings_changed_at), (0, 0));
        assert_eq!((a.groups[0].guid, a.groups[0].changed_at), (group, 0));
        let bob = a.contact(&email("bob")).unwrap();
        assert_eq!((bob.guid, bob.lists.0, bob.changed_at), (bob_row, FL, 0));
        assert_eq!(bob.groups, vec![1]);

        ok(&store, &alice, remove(List::Forward, "bob")).await;
        let a = store.roster(alice.id).await.unwrap();
        assert!(a.stamp > 0);
        let gone = store.tombstones(alice.id, 0).await.unwrap();
        assert_eq!(
            gone.iter().map(|t| (t.guid, t.deleted_at)).collect::<Vec<_>>(),
            [(bob_row, a.stamp)]
        );
        store.close().await;
    })
    .await;
}

/// `bulk_load` leaves the lists the edits would have (conformance check), and refuses —
/// writing nothing — to load accounts that exist.
#[tokio::test]
async fn bulk_load_writes_mutual_lists() {
    with_postgres(|pg| async move {
        let store = pg.store().await;
        conformance::bulk_load(Arc::new(store.clone()), |accounts, pairs| {
            let store = store.clone();
            async move { store.bulk_load(&accounts, &pairs).await }
        })
        .await;
    })
    .await;
}
