//! The SQLite store: the conformance suite (`butterfly_store::conformance`) on file and
//! in-memory databases, and what only SQLite has — file and in-memory URLs, reopening a
//! file, WAL, two stores on one file — plus the rows the API cannot show.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use butterfly_core::lists::{ContactRef, GroupRef, List, ListOp, Privacy};
use butterfly_core::store::Store;
use butterfly_store::{SqliteStore, conformance};
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use support::{FL, ORPHANS, RL, add, email, lists, ok, user};

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
