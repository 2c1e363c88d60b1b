//! The SQLite store: the conformance suite (`butterfly_store::conformance`) on file and
//! in-memory databases, and what only SQLite has — file and in-memory URLs, reopening a
//! file, WAL, two stores on one file — plus the rows the API cannot show.

mod support;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use butterfly_core::lists::{
    ContactRef, GroupRef, List, ListOp, Privacy, TombstoneKind, deltas_reach_back_to, now_ms,
};
use butterfly_core::store::Store;
use butterfly_store::{MIGRATOR, SqliteStore, conformance};
use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use uuid::Uuid;

use support::{FL, ORPHANS, RL, add, email, lists, ok, remove, user};

/// A directory under the system temp dir, removed on drop (also when a test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "butterfly-store-{name}-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("butterfly.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A raw connection, for checking what the API cannot show (leftover rows).
async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path))
        .await
        .unwrap()
}

async fn count(conn: &mut SqliteConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
}

/// The whole suite, each check on a database file of its own; afterwards no database holds
/// a row that no list holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_on_files() {
    let dir = TempDir::new("conformance");
    let seq = AtomicU64::new(0);
    conformance::run_all(|| {
        let path = dir
            .0
            .join(format!("check-{}.db", seq.fetch_add(1, Ordering::Relaxed)));
        async move { Arc::new(SqliteStore::open(&path).await.unwrap()) as Arc<dyn Store> }
    })
    .await;
    for n in 0..seq.load(Ordering::Relaxed) {
        let path = dir.0.join(format!("check-{n}.db"));
        assert_eq!(
            count(&mut raw(&path).await, ORPHANS).await,
            0,
            "{}",
            path.display()
        );
    }
}

/// The whole suite on `sqlite::memory:`, where one connection is both reader and writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_in_memory() {
    conformance::run_all(|| async {
        Arc::new(SqliteStore::open_url("sqlite::memory:").await.unwrap()) as Arc<dyn Store>
    })
    .await;
}

/// Checks whose end state empties tables, looked at row by row: removals and cascades
/// leave nothing behind.
#[tokio::test]
async fn checks_leave_no_rows_behind() {
    let dir = TempDir::new("rows");

    // Opened by URL, the form the configuration uses.
    let path = dir.0.join("reverse.db");
    let store = SqliteStore::open_url(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    conformance::forward_list_maintains_reverse_list_and_versions(Arc::new(store.clone())).await;
    store.close().await;
    assert_eq!(
        count(&mut raw(&path).await, "SELECT COUNT(*) FROM contacts").await,
        0
    );

    let path = dir.0.join("groups.db");
    let store = SqliteStore::open(&path).await.unwrap();
    conformance::groups_and_membership(Arc::new(store.clone())).await;
    store.close().await;
    assert_eq!(
        count(&mut raw(&path).await, "SELECT COUNT(*) FROM contact_groups").await,
        0
    );

    let path = dir.0.join("delete.db");
    let store = SqliteStore::open(&path).await.unwrap();
    conformance::delete_account_cascades(Arc::new(store.clone())).await;
    store.close().await;
    let mut conn = raw(&path).await;
    for table in ["contacts", "contact_groups", "properties"] {
        assert_eq!(
            count(&mut conn, &format!("SELECT COUNT(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
    assert_eq!(
        count(&mut conn, "SELECT COUNT(*) FROM list_groups").await,
        1
    );
}

#[tokio::test]
async fn in_memory_store_works() {
    let store = SqliteStore::open_url("sqlite::memory:").await.unwrap();
    let alice = user(&store, "alice").await;
    let _bob = user(&store, "bob").await;
    ok(&store, &alice, add(List::Forward, "bob")).await;
    assert_eq!(lists(&store.roster(alice.id).await.unwrap(), "bob"), FL);
    store.migrate().await.unwrap();

    // Two in-memory stores are separate databases.
    let other = SqliteStore::open_url("sqlite::memory:").await.unwrap();
    assert!(other.accounts().await.unwrap().is_empty());
}

#[tokio::test]
async fn data_survives_reopen() {
    let dir = TempDir::new("reopen");
    let path = dir.0.join("nested").join("butterfly.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let alice = user(&store, "alice").await;
    let _bob = user(&store, "bob").await;
    ok(
        &store,
        &alice,
        ListOp::AddGroup {
            name: "Friends".into(),
        },
    )
    .await;
    ok(
        &store,
        &alice,
        ListOp::Add {
            list: List::Forward,
            target: ContactRef::Email(email("bob")),
            group: Some(GroupRef::Number(1)),
        },
    )
    .await;
    ok(&store, &alice, ListOp::SetPrivacy(Privacy::BlockAll)).await;
    let roster = store.roster(alice.id).await.unwrap();
    let accounts = store.accounts().await.unwrap();
    store.close().await;
    // The change stamps are part of what must survive.
    assert!(roster.stamp > 0 && roster.settings_changed_at > 0);
    assert!(roster.contacts[0].changed_at > 0 && roster.groups[0].changed_at > 0);

    let store = SqliteStore::open(&path).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.roster(alice.id).await.unwrap(), roster);
    assert_eq!(store.accounts().await.unwrap(), accounts);
    let bob = store
        .account_by_email(&email("bob"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lists(&store.roster(bob.id).await.unwrap(), "alice"), RL);
    store.close().await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut raw(&path).await)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

/// Two stores on one file stand in for two processes (the server and a `butterfly` admin
/// command): BEGIN IMMEDIATE plus the busy timeout make them take turns, without errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_take_turns() {
    const USERS: usize = 8;
    let dir = TempDir::new("two-stores");
    let first = Arc::new(SqliteStore::open(&dir.db()).await.unwrap());
    let second = Arc::new(SqliteStore::open(&dir.db()).await.unwrap());
    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(user(&*first, &format!("user{i:02}")).await);
    }
    let users = Arc::new(users);

    // Every owner adds every other user to FL, half the owners through each store.
    let mut tasks = Vec::new();
    for owner in 0..USERS {
        let store = if owner % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let users = users.clone();
        tasks.push(tokio::spawn(async move {
            for t in (0..USERS).filter(|t| *t != owner) {
                let op = ListOp::Add {
                    list: List::Forward,
                    target: ContactRef::Email(users[t].email.clone()),
                    group: None,
                };
                store.edit(users[owner].id, op).await.unwrap().unwrap();
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
}

/// A user's change stamp never goes back, even when the clock is behind it (stepped back,
/// or many edits within a millisecond ran it ahead): edits count on from the stored stamp,
/// one apart. An RL change stamps the target's row in the target's counter.
#[tokio::test]
async fn stamps_count_on_when_the_clock_is_behind() {
    let dir = TempDir::new("stamps");
    let store = SqliteStore::open(&dir.db()).await.unwrap();
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let ahead = now_ms() + 3_600_000;
    sqlx::query("UPDATE users SET ab_stamp = ? WHERE id = ?")
        .bind(ahead)
        .bind(bob.id.0)
        .execute(&mut raw(&dir.db()).await)
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
    store.close().await;
}

/// Tombstones past the retention (and its slack) are purged when the owner next deletes
/// something, at most 100 per deletion; younger ones stay.
#[tokio::test]
async fn expired_tombstones_are_purged_on_the_next_deletion() {
    let dir = TempDir::new("purge");
    let store = SqliteStore::open(&dir.db()).await.unwrap();
    let alice = user(&store, "alice").await;
    let _bob = user(&store, "bob").await;
    let _carol = user(&store, "carol").await;
    ok(&store, &alice, add(List::Allow, "bob")).await;
    ok(&store, &alice, add(List::Allow, "carol")).await;

    let day = 24 * 60 * 60 * 1000;
    let horizon = deltas_reach_back_to(now_ms());
    let mut conn = raw(&dir.db()).await;
    let young = Uuid::new_v4();
    let insert = |guid: Uuid, at: i64| {
        sqlx::query(
            "INSERT INTO ab_tombstones (owner, kind, guid, email, deleted_at) \
             VALUES (?, 'group', ?, NULL, ?)",
        )
        .bind(alice.id.0)
        .bind(guid.hyphenated().to_string())
        .bind(at)
    };
    insert(young, horizon + day)
        .execute(&mut conn)
        .await
        .unwrap();
    for n in 0..120 {
        insert(Uuid::new_v4(), horizon - 2 * day - n)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let expired = format!(
        "SELECT COUNT(*) FROM ab_tombstones WHERE deleted_at < {}",
        horizon - day
    );

    ok(&store, &alice, remove(List::Allow, "bob")).await;
    assert_eq!(count(&mut conn, &expired).await, 20, "100 purged");
    ok(&store, &alice, remove(List::Allow, "carol")).await;
    assert_eq!(count(&mut conn, &expired).await, 0);
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
}

/// Migration 2 on a database written at version 1: existing rows read with stamp 0, and
/// edits, stamps and tombstones work on them.
#[tokio::test]
async fn version_2_migrates_a_populated_database() {
    let dir = TempDir::new("populated");
    let path = dir.db();
    let mut conn = SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    let v1 = Migrator {
        migrations: Cow::Owned(
            MIGRATOR
                .iter()
                .filter(|m| m.version == 1)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    v1.run(&mut conn).await.unwrap();
    let (bob_row, group) = (Uuid::new_v4(), Uuid::new_v4());
    for (sql, guid) in [
        (
            "INSERT INTO users (id, email, friendly_name, password_hash) VALUES \
             (1, 'alice@example.com', 'alice', 'x'), (2, 'bob@example.com', 'bob', 'x')",
            None,
        ),
        (
            "INSERT INTO list_groups (owner, number, guid, name) VALUES (1, 1, ?, 'Friends')",
            Some(group),
        ),
        (
            "INSERT INTO contacts (owner, contact, guid, lists) VALUES (1, 2, ?, 1)",
            Some(bob_row),
        ),
        (
            "INSERT INTO contacts (owner, contact, guid, lists) VALUES (2, 1, ?, 8)",
            Some(Uuid::new_v4()),
        ),
        (
            "INSERT INTO contact_groups (owner, contact, number) VALUES (1, 2, 1)",
            None,
        ),
    ] {
        let q = sqlx::query(sql);
        let q = match guid {
            Some(g) => q.bind(g.hyphenated().to_string()),
            None => q,
        };
        q.execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();

    let store = SqliteStore::open(&path).await.unwrap();
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
        gone.iter()
            .map(|t| (t.guid, t.deleted_at))
            .collect::<Vec<_>>(),
        [(bob_row, a.stamp)]
    );
    store.close().await;
}

/// An offline message is on disk when `oim_store` returns, read flag and all.
#[tokio::test]
async fn offline_messages_survive_reopen() {
    let dir = TempDir::new("oims");
    let path = dir.db();
    let store = SqliteStore::open(&path).await.unwrap();
    let bob = user(&store, "bob").await;
    let kept = store
        .oim_store(conformance::oim("alice", &bob, "while you were out"))
        .await
        .unwrap()
        .unwrap();
    store.oim_get(bob.id, kept.id, true).await.unwrap().unwrap();
    store.close().await;

    let store = SqliteStore::open(&path).await.unwrap();
    let got = store
        .oim_get(bob.id, kept.id, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.text, "while you were out");
    assert!(got.meta.read);
    assert_eq!(store.oims(bob.id).await.unwrap(), vec![got.meta]);
    store.close().await;
}

/// `bulk_load` leaves the lists the edits would have (conformance check), and refuses —
/// writing nothing — to load accounts that exist.
#[tokio::test]
async fn bulk_load_writes_mutual_lists() {
    let store = SqliteStore::open_url("sqlite::memory:").await.unwrap();
    conformance::bulk_load(Arc::new(store.clone()), |accounts, pairs| {
        let store = store.clone();
        async move { store.bulk_load(&accounts, &pairs).await }
    })
    .await;
}
