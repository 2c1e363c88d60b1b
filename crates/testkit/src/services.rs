//! The real Postgres and Redis that distributed tests run against, each test in its own
//! database and key prefix.
//!
//! Where a service is not reachable a test skips itself (printing the command that
//! enables it), so `cargo test` passes on a fresh machine; under `CI=true` it fails
//! instead, so CI can never pass by skipping.

use std::process::Stdio;
use std::time::Duration;

use sqlx::Connection;
use tokio::process::{Child, Command};

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Skip (return `None`) or, under `CI=true`, fail.
fn unavailable(test: &str, what: &str, how: &str) -> Option<Services> {
    let msg = format!("{test}: {what}; {how}");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg} (CI=true: distributed tests may not skip)");
    }
    eprintln!("skipped: {msg}");
    None
}

/// Where the test services are: `BUTTERFLY_TEST_DATABASE_URL` (a server URL whose
/// user may create databases) and `BUTTERFLY_TEST_REDIS_URL`.
#[derive(Debug, Clone)]
pub struct Services {
    pub database_admin_url: String,
    pub redis_url: String,
}

impl Services {
    /// Both services, or `None` after printing why the test is skipped.
    pub async fn find(test: &str) -> Option<Services> {
        let database_admin_url = env_or("BUTTERFLY_TEST_DATABASE_URL", DEFAULT_DATABASE_URL);
        let redis_url = env_or("BUTTERFLY_TEST_REDIS_URL", DEFAULT_REDIS_URL);
        let pg = tokio::time::timeout(
            Duration::from_secs(5),
            sqlx::PgConnection::connect(&database_admin_url),
        )
        .await;
        if !matches!(pg, Ok(Ok(_))) {
            return unavailable(
                test,
                &format!("Postgres not reachable at {database_admin_url}"),
                "start it (pg_ctlcluster --skip-systemctl-redirect 15 main start) or set BUTTERFLY_TEST_DATABASE_URL",
            );
        }
        if !redis_ping(&redis_url).await {
            return unavailable(
                test,
                &format!("Redis not reachable at {redis_url}"),
                "start it (redis-server --daemonize yes --port 6379 --save '') or set BUTTERFLY_TEST_REDIS_URL",
            );
        }
        Some(Services {
            database_admin_url,
            redis_url,
        })
    }

    /// Create an empty database for one test; returns its URL.
    pub async fn create_database(&self) -> (String, String) {
        let name = format!("bf_test_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::PgConnection::connect(&self.database_admin_url)
            .await
            .expect("connect to the test Postgres");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let url = database_url(&self.database_admin_url, &name);
        (name, url)
    }

    /// Drop a test database and delete a test key prefix. Blocking, so `Drop` can call it.
    pub fn clean_up(&self, database: &str, redis_prefix: &str) {
        let services = self.clone();
        let (database, prefix) = (database.to_owned(), redis_prefix.to_owned());
        let cleaner = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async {
                if let Ok(mut conn) =
                    sqlx::PgConnection::connect(&services.database_admin_url).await
                {
                    let drop = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
                    if let Err(e) = sqlx::query(&drop).execute(&mut conn).await {
                        eprintln!("cleanup: {drop}: {e}");
                    }
                }
                delete_prefix(&services.redis_url, &prefix).await;
            });
        });
        let _ = cleaner.join();
    }
}

/// `url` with its database name replaced by `name` (query parameters kept).
fn database_url(url: &str, name: &str) -> String {
    let (url, query) = url.split_at(url.find('?').unwrap_or(url.len()));
    let host_start = url.find("://").map_or(0, |i| i + 3);
    let base = match url[host_start..].find('/') {
        Some(i) => &url[..host_start + i],
        None => url,
    };
    format!("{base}/{name}{query}")
}

async fn redis_ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), ping).await,
        Ok(Some(_))
    )
}

/// Delete every key that starts with `prefix` (SCAN, not KEYS, so a shared Redis is not
/// blocked).
pub async fn delete_prefix(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let work = async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .ok()?;
            if !keys.is_empty() {
                let _: Result<u64, _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
            }
            if next == 0 {
                return Some(());
            }
            cursor = next;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), work).await;
}

/// A Redis server of this test alone, on a free loopback port, that the test may stop
/// and start again (the "Redis restarted" failure case). It keeps nothing on disk, so
/// a restart loses every key, as a restarted cache would.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// `None` (skipped, or failed under CI) when `redis-server` is not installed.
    pub async fn start(test: &str) -> Option<PrivateRedis> {
        let port = free_port();
        let mut r = PrivateRedis { port, child: None };
        if !r.spawn().await {
            let msg = format!(
                "{test}: cannot run redis-server (install Redis; it must be on PATH) for a private Redis"
            );
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{msg}");
            }
            eprintln!("skipped: {msg}");
            return None;
        }
        Some(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        let url = self.url();
        for _ in 0..100 {
            if redis_ping(&url).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Kill the server (all keys are lost) and start a new one on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        assert!(
            self.spawn().await,
            "redis-server restarts on port {}",
            self.port
        );
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A Redis Cluster of this test alone: `nodes` primaries without replicas on free
/// loopback ports, slots spread evenly by `redis-cli --cluster create`. Killed on drop;
/// its node files live in a temporary directory removed with it.
pub struct PrivateRedisCluster {
    pub ports: Vec<u16>,
    dir: std::path::PathBuf,
    children: Vec<Child>,
}

impl PrivateRedisCluster {
    /// `None` (skipped, or failed under CI) when `redis-server` or `redis-cli` is missing.
    pub async fn start(test: &str, nodes: usize) -> Option<PrivateRedisCluster> {
        let dir = std::env::temp_dir().join(format!(
            "butterfly-redis-cluster-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("create the cluster's directory");
        let mut cluster = PrivateRedisCluster {
            ports: Vec::new(),
            dir,
            children: Vec::new(),
        };
        if let Err(why) = cluster.form(nodes).await {
            let msg = format!(
                "{test}: cannot start a private Redis Cluster ({why}); \
                 install Redis 7 (redis-server and redis-cli on PATH)"
            );
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{msg}");
            }
            eprintln!("skipped: {msg}");
            return None;
        }
        Some(cluster)
    }

    fn spawn_node(&self, port: u16) -> Result<Child, String> {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--cluster-enabled",
                "yes",
            ])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("redis-server: {e}"))
    }

    async fn form(&mut self, nodes: usize) -> Result<(), String> {
        for _ in 0..nodes {
            let port = free_port();
            let child = self.spawn_node(port)?;
            self.children.push(child);
            self.ports.push(port);
        }
        for url in self.urls() {
            wait_for(|| redis_ping(&url), &format!("{url} answers PING")).await?;
        }
        let create = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(self.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|e| format!("redis-cli: {e}"))?;
        if !create.status.success() {
            return Err(format!(
                "redis-cli --cluster create: {}",
                String::from_utf8_lossy(&create.stderr).trim()
            ));
        }
        self.wait_ok().await
    }

    /// Wait until every node agrees that all slots are served.
    async fn wait_ok(&self) -> Result<(), String> {
        for url in self.urls() {
            wait_for(
                || async {
                    let Ok(client) = redis::Client::open(url.as_str()) else {
                        return false;
                    };
                    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                        return false;
                    };
                    redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async::<String>(&mut conn)
                        .await
                        .is_ok_and(|info| info.contains("cluster_state:ok"))
                },
                &format!("{url} reports cluster_state:ok"),
            )
            .await?;
        }
        Ok(())
    }

    /// Kill node `index` and start it again on the same port. It keeps its place in the
    /// cluster (its node file survives) but, without persistence, none of its keys.
    pub async fn restart(&mut self, index: usize) {
        let _ = self.children[index].kill().await;
        self.children[index] = self.spawn_node(self.ports[index]).expect("respawn a node");
        let url = self.urls()[index].clone();
        wait_for(|| redis_ping(&url), &format!("{url} answers PING again"))
            .await
            .expect("the node restarts");
        self.wait_ok().await.expect("the cluster recovers");
    }

    /// The index of the node serving `key`'s hash slot.
    pub async fn node_of(&self, key: &str) -> usize {
        let client = redis::Client::open(self.urls()[0].as_str()).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to a cluster node");
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("CLUSTER KEYSLOT");
        // CLUSTER SHARDS would be neater; CLUSTER SLOTS is there from Redis 3 on:
        // [[start, end, [host, port, id, …], …], …]
        let ranges: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await
            .expect("CLUSTER SLOTS");
        for range in ranges {
            let redis::Value::Array(fields) = range else {
                continue;
            };
            let (Some(start), Some(end), Some(redis::Value::Array(primary))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                continue;
            };
            let start: i64 = redis::from_redis_value(start.clone()).expect("slot range start");
            let end: i64 = redis::from_redis_value(end.clone()).expect("slot range end");
            let port: u16 = redis::from_redis_value(primary[1].clone()).expect("node port");
            if (start..=end).contains(&slot) {
                return self
                    .ports
                    .iter()
                    .position(|&p| p == port)
                    .expect("a node of this cluster");
            }
        }
        panic!("no node serves slot {slot}");
    }

    /// Each node's own URL, by index.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// Every node, comma-separated: the seed list for `--redis-url` with `--redis-cluster`.
    pub fn url(&self) -> String {
        self.urls().join(",")
    }
}

impl Drop for PrivateRedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Poll `check` every 50 ms for up to 10 s: for an external process that has nothing to
/// await.
async fn wait_for<F, Fut>(mut check: F, what: &str) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("timed out waiting until {what}"))
}
