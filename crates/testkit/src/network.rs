//! The distributed mode, started for one test: every role a real `butterfly serve`
//! process (the binary under test), against the real Postgres and Redis, in a database
//! and key prefix of the test's own. Processes can be killed (SIGKILL) or stopped
//! (SIGTERM) one at a time, which is what the failure tests need.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use butterfly_core::store::Store;
use butterfly_store::{PgOptions, PgStore};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::client::Client;
use crate::services::Services;

/// One `butterfly serve` process.
pub struct Proc {
    pub role: &'static str,
    child: Child,
    /// `ns`, `sb`, `http`, `grpc`, `admin` → bound address, from its "X listening on" lines.
    listeners: HashMap<String, SocketAddr>,
    pub log: PathBuf,
}

impl Proc {
    pub fn addr(&self, listener: &str) -> SocketAddr {
        *self
            .listeners
            .get(listener)
            .unwrap_or_else(|| panic!("{} has no {listener} listener", self.role))
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("process is running")
    }

    /// SIGKILL: the process gets no chance to clean up (a crashed pod).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM: graceful drain.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {}", self.pid());
    }

    /// Wait at most `limit` for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// The end of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// How to build a [`Network`].
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    pub gateways: usize,
    pub switchboards: usize,
    pub lease_seconds: u64,
    pub drain_seconds: u64,
    /// Use this Redis instead of the shared one (a [`crate::PrivateRedis`]).
    pub redis_url: Option<String>,
    /// `redis_url` is a Redis Cluster (a [`crate::PrivateRedisCluster`]): every role
    /// runs with `--redis-cluster`.
    pub redis_cluster: bool,
    /// The address book reaches Postgres through this `host:port` (a
    /// [`crate::TcpProxy`]) instead of directly.
    pub postgres_via: Option<SocketAddr>,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        NetworkOptions {
            gateways: 2,
            switchboards: 2,
            lease_seconds: 3,
            drain_seconds: 2,
            redis_url: None,
            redis_cluster: false,
            postgres_via: None,
        }
    }
}

/// A distributed network of processes: one address book, one Passport, and gateways and
/// switchboard shards as asked.
pub struct Network {
    bin: PathBuf,
    dir: PathBuf,
    services: Services,
    database: String,
    database_url: String,
    redis_url: String,
    prefix: String,
    secret: String,
    options: NetworkOptions,
    pub addressbook: Proc,
    pub passport: Proc,
    pub gateways: Vec<Proc>,
    pub switchboards: Vec<Proc>,
    store: Arc<PgStore>,
}

impl Network {
    /// Start a network, or `None` when Postgres or Redis is missing (see
    /// [`Services::find`]). `bin` is the `butterfly` binary under test.
    pub async fn start(test: &str, bin: &Path, options: NetworkOptions) -> Option<Network> {
        let services = Services::find(test).await?;
        let (database, database_url) = services.create_database().await;
        let dir = std::env::temp_dir().join(format!(
            "butterfly-net-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("create the network's log directory");
        let redis_url = options
            .redis_url
            .clone()
            .unwrap_or_else(|| services.redis_url.clone());
        let prefix = format!("bft{:08x}:", rand::random::<u32>());
        let secret = format!("{:032x}", rand::random::<u128>());
        let addressbook_db = match options.postgres_via {
            Some(via) => via_address(&database_url, via),
            None => database_url.clone(),
        };
        let ctx = Spawner {
            bin,
            dir: &dir,
            redis_url: &redis_url,
            prefix: &prefix,
            secret: &secret,
            options: &options,
        };
        let addressbook = ctx
            .spawn(
                "addressbook",
                0,
                &[
                    "--database-url",
                    &addressbook_db,
                    "--grpc-listen",
                    "127.0.0.1:0",
                    // Its SOAP services; the Redis every process gets carries what
                    // their edits mean to the gateways' users.
                    "--http-listen",
                    "127.0.0.1:0",
                ],
            )
            .await;
        let book_url = format!("http://{}", addressbook.addr("grpc"));
        let passport = ctx
            .spawn(
                "passport",
                0,
                &[
                    "--addressbook-url",
                    &book_url,
                    "--http-listen",
                    "127.0.0.1:0",
                ],
            )
            .await;
        let store = PgStore::connect(&database_url, PgOptions::default())
            .await
            .expect("connect the test's own store");
        let mut net = Network {
            bin: bin.to_path_buf(),
            dir,
            services,
            database,
            database_url,
            redis_url,
            prefix,
            secret,
            options: options.clone(),
            addressbook,
            passport,
            gateways: Vec::new(),
            switchboards: Vec::new(),
            store: Arc::new(store),
        };
        for _ in 0..options.switchboards {
            net.add_switchboard().await;
        }
        for _ in 0..options.gateways {
            net.add_gateway().await;
        }
        Some(net)
    }

    fn spawner(&self) -> Spawner<'_> {
        Spawner {
            bin: &self.bin,
            dir: &self.dir,
            redis_url: &self.redis_url,
            prefix: &self.prefix,
            secret: &self.secret,
            options: &self.options,
        }
    }

    fn book_url(&self) -> String {
        format!("http://{}", self.addressbook.addr("grpc"))
    }

    /// Start one more gateway; returns its index.
    pub async fn add_gateway(&mut self) -> usize {
        let book = self.book_url();
        let i = self.gateways.len();
        let p = self
            .spawner()
            .spawn(
                "ns-gateway",
                i,
                &[
                    "--addressbook-url",
                    &book,
                    "--ns-listen",
                    "127.0.0.1:0",
                    "--http-listen",
                    "127.0.0.1:0",
                ],
            )
            .await;
        self.gateways.push(p);
        i
    }

    /// Start one more switchboard shard; returns its index.
    pub async fn add_switchboard(&mut self) -> usize {
        let book = self.book_url();
        let i = self.switchboards.len();
        let id = format!("sb-{i}");
        let p = self
            .spawner()
            .spawn(
                "switchboard",
                i,
                &[
                    "--addressbook-url",
                    &book,
                    "--sb-listen",
                    "127.0.0.1:0",
                    "--shard-id",
                    &id,
                ],
            )
            .await;
        self.switchboards.push(p);
        i
    }

    pub fn gateway(&self, i: usize) -> SocketAddr {
        self.gateways[i].addr("ns")
    }

    pub fn http(&self) -> SocketAddr {
        self.passport.addr("http")
    }

    /// Gateway `i`'s HTTP listener: the MSNP gateway (`/gateway/gateway.dll`).
    pub fn gateway_http(&self, i: usize) -> SocketAddr {
        self.gateways[i].addr("http")
    }

    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Create an account usable from every dialect, with cheap hashing.
    pub async fn add_user(&self, email: &str, password: &str, name: &str) {
        self.store
            .create_account(crate::test_account(email, password, name))
            .await
            .expect("create account");
    }

    /// Sign in through gateway `i` with the dialect's own method.
    pub async fn login(&self, gateway: usize, dialect: u8, email: &str, password: &str) -> Client {
        let mut c = Client::connect(self.gateway(gateway), dialect).await;
        c.login(self.http(), email, password).await;
        c
    }

    /// Every process's log tail, for a failure message.
    /// The prefix of this network's Redis keys and channels.
    pub fn redis_prefix(&self) -> &str {
        &self.prefix
    }

    pub fn logs(&self) -> String {
        let all = [&self.addressbook, &self.passport]
            .into_iter()
            .chain(&self.gateways)
            .chain(&self.switchboards);
        all.map(|p| format!("--- {} ({}):\n{}", p.role, p.log.display(), p.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Children are killed on drop (kill_on_drop); then the test's data goes.
        for p in [&mut self.addressbook, &mut self.passport]
            .into_iter()
            .chain(self.gateways.iter_mut())
            .chain(self.switchboards.iter_mut())
        {
            let _ = p.child.start_kill();
        }
        self.services.clean_up(&self.database, &self.prefix);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `url` with its host and port replaced by `via`.
fn via_address(url: &str, via: SocketAddr) -> String {
    let host_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[host_start..];
    let at = rest.find('@').map_or(0, |i| i + 1);
    let end = rest.find('/').unwrap_or(rest.len());
    format!("{}{}{via}{}", &url[..host_start], &rest[..at], &rest[end..])
}

struct Spawner<'a> {
    bin: &'a Path,
    dir: &'a Path,
    redis_url: &'a str,
    prefix: &'a str,
    secret: &'a str,
    options: &'a NetworkOptions,
}

impl Spawner<'_> {
    /// Start `butterfly serve --target role` and wait for its listener lines.
    async fn spawn(&self, role: &'static str, index: usize, args: &[&str]) -> Proc {
        let log = self.dir.join(format!("{role}-{index}.log"));
        let log_file = std::fs::File::create(&log).expect("create a process log");
        let mut child = Command::new(self.bin)
            .arg("serve")
            .args(["--target", role])
            .args(["--redis-url", self.redis_url])
            .args(["--redis-prefix", self.prefix])
            .args(["--redis-cluster", &self.options.redis_cluster.to_string()])
            .args(["--ticket-secret", self.secret])
            .args(["--public-host", "127.0.0.1"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--lease-seconds", &self.options.lease_seconds.to_string()])
            .args(["--drain-seconds", &self.options.drain_seconds.to_string()])
            .args(["--data-dir", &self.dir.display().to_string()])
            .args(["--argon2-memory-kib", "64", "--argon2-iterations", "1"])
            .args(args)
            .env("BUTTERFLY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut listeners = HashMap::new();
        let started = tokio::time::timeout(crate::TIMEOUT * 3, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some((name, addr)) = line.split_once(" listening on ") {
                    let addr: SocketAddr = addr.parse().expect("a socket address");
                    listeners.insert(name.to_owned(), addr);
                    // `admin` is always printed, and printed last.
                    if name == "admin" {
                        return true;
                    }
                }
            }
            false
        })
        .await;
        if started != Ok(true) {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("{role} {index} did not start; its log:\n{tail}");
        }
        // Nothing more is printed on stdout, but keep the pipe drained.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Proc {
            role,
            child,
            listeners,
            log,
        }
    }
}
