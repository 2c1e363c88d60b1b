//! The SQLite store's reader connections, lent without sqlx's pool.
//!
//! sqlx runs each SQLite connection on a thread of its own and reaches it through a
//! channel, so every statement is a round trip between threads. Its pool adds two more
//! per use: it pings a connection when it lends it and again when it takes it back (and
//! spawns a task for the return). For reads that are one statement — a sign-in's account
//! and roster — that tripled the thread hand-offs, which were most of the server's
//! sign-in time (docs/BENCHMARKS.md §4.3). A file database's connection cannot drop
//! out from under us the way a network connection can, so these are lent as they are.
//!
//! Connections open lazily, up to the limit, and stay open until [`Readers::close`]. An
//! in-memory database has one connection, the writer's (each connection to `:memory:`
//! would be a database of its own): there the readers borrow it from the writer's pool.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use butterfly_core::store::StoreError;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqliteConnection, SqlitePool};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::codec::backend;

#[derive(Debug, Clone)]
pub(crate) enum Readers {
    Own(Arc<Inner>),
    /// The writer's pool (an in-memory database).
    Writer(SqlitePool),
}

#[derive(Debug)]
pub(crate) struct Inner {
    options: SqliteConnectOptions,
    /// One permit per connection that may be lent at once.
    permits: Arc<Semaphore>,
    limit: u32,
    idle: Mutex<Vec<SqliteConnection>>,
    wait: Duration,
}

impl Readers {
    /// At most `limit` connections opened with `options`; a caller waits at most `wait`
    /// for one before failing with [`StoreError::Backend`].
    pub(crate) fn new(options: SqliteConnectOptions, limit: u32, wait: Duration) -> Self {
        Readers::Own(Arc::new(Inner {
            options,
            permits: Arc::new(Semaphore::new(limit as usize)),
            limit,
            idle: Mutex::new(Vec::new()),
            wait,
        }))
    }

    /// A connection for one read: an idle one, or a new one while fewer than the limit
    /// are open.
    pub(crate) async fn get(&self) -> Result<Reader, StoreError> {
        let inner = match self {
            Readers::Own(inner) => inner,
            Readers::Writer(pool) => {
                let conn = pool.acquire().await.map_err(backend)?;
                return Ok(Reader(Lent::Writer(conn)));
            }
        };
        let permits = inner.permits.clone();
        let permit = match tokio::time::timeout(inner.wait, permits.acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(StoreError::Backend("the store is closed".into())),
            Err(_) => {
                return Err(StoreError::Backend(format!(
                    "no database reader free within {:?}",
                    inner.wait
                )));
            }
        };
        let idle = inner.idle().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => inner.options.connect().await.map_err(backend)?,
        };
        Ok(Reader(Lent::Own {
            conn: Some(conn),
            home: inner.clone(),
            _permit: permit,
        }))
    }

    /// Wait until every lent connection is back, refuse further reads, and close all.
    pub(crate) async fn close(&self) {
        let inner = match self {
            Readers::Own(inner) => inner,
            Readers::Writer(pool) => return pool.close().await,
        };
        // Taking every permit waits out the lent connections; closing the semaphore
        // fails the waiting and later `get`s.
        let all = inner.permits.acquire_many(inner.limit).await;
        inner.permits.close();
        drop(all);
        let conns = std::mem::take(&mut *inner.idle());
        for conn in conns {
            let _ = conn.close().await;
        }
    }
}

impl Inner {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<SqliteConnection>> {
        // The vector holds no invariant a panic could break.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A lent connection; back to the idle list when dropped.
pub(crate) struct Reader(Lent);

enum Lent {
    Own {
        conn: Option<SqliteConnection>,
        home: Arc<Inner>,
        // Released after `drop` has put the connection back.
        _permit: OwnedSemaphorePermit,
    },
    Writer(PoolConnection<Sqlite>),
}

impl Deref for Reader {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        match &self.0 {
            Lent::Own { conn, .. } => conn.as_ref().expect("present until dropped"),
            Lent::Writer(conn) => conn,
        }
    }
}

impl DerefMut for Reader {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match &mut self.0 {
            Lent::Own { conn, .. } => conn.as_mut().expect("present until dropped"),
            Lent::Writer(conn) => conn,
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Lent::Own { conn, home, .. } = &mut self.0
            && let Some(conn) = conn.take()
        {
            home.idle().push(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_waits_for_a_reader_at_most_its_time_and_gets_none_after_close() {
        let dir = std::env::temp_dir().join(format!("bf-readers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.join("r.db"))
            .create_if_missing(true);
        let readers = Readers::new(options, 1, Duration::from_millis(50));

        let mut first = readers.get().await.unwrap();
        let busy = readers.get().await.err().unwrap();
        assert!(
            busy.to_string().contains("no database reader free"),
            "{busy}"
        );
        sqlx::query("SELECT 1").execute(&mut *first).await.unwrap();
        drop(first);
        // Back in the idle list: lent again, and usable.
        let mut again = readers.get().await.unwrap();
        sqlx::query("SELECT 1").execute(&mut *again).await.unwrap();

        // Close waits for the lent connection to come back.
        let closing = tokio::spawn({
            let readers = readers.clone();
            async move { readers.close().await }
        });
        tokio::task::yield_now().await;
        assert!(!closing.is_finished());
        drop(again);
        closing.await.unwrap();
        let closed = readers.get().await.err().unwrap();
        assert!(closed.to_string().contains("closed"), "{closed}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
