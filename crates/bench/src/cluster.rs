//! The distributed mode under test: a network of role processes started with
//! `deploy/local/run-cluster.sh`, against a Postgres database and a Redis key prefix that
//! exist for one run only.
//!
//! Everything is undone when the values are dropped — on success, on an error and on
//! Ctrl-C alike: the script (and with it every role process, all in one process group)
//! is stopped, the database dropped, the key prefix deleted.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use sqlx::Connection;
use tokio::sync::mpsc;

use crate::server::DataDir;

/// How long the script may take to print `ready`.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the network may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection to Postgres or Redis may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A random number (std's hasher keys are random per process and per `RandomState`).
pub(crate) fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(std::process::id())
}

/// Fail with a clear message unless Postgres (`admin_url`, a user that may create
/// databases) and Redis both answer.
pub(crate) async fn check_services(admin_url: &str, redis_url: &str) -> anyhow::Result<()> {
    match tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect(admin_url)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
        }
        Ok(Err(e)) => bail!(
            "Postgres is not reachable at {admin_url}: {e}. Start it (e.g. `pg_ctlcluster \
             --skip-systemctl-redirect 15 main start`) or pass --postgres URL (a user that may \
             create databases)"
        ),
        Err(_) => bail!(
            "Postgres at {admin_url} did not answer within {} s; start it or pass --postgres URL",
            CONNECT_TIMEOUT.as_secs()
        ),
    }
    redis_pid(redis_url).await.map_err(|e| {
        anyhow!(
            "Redis is not reachable at {redis_url}: {e:#}. Start it (e.g. `redis-server \
             --daemonize yes --port 6379 --save ''`) or pass --redis URL"
        )
    })?;
    Ok(())
}

/// The Redis server's process id (`INFO server`), if it runs on this machine, so its CPU
/// time can be read; `Ok(None)` when Redis answers but its process is not ours to see.
pub(crate) async fn redis_pid(redis_url: &str) -> anyhow::Result<Option<u32>> {
    let client = redis::Client::open(redis_url).context("parsing the Redis URL")?;
    let info = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("INFO")
            .arg("server")
            .query_async::<String>(&mut conn)
            .await
    };
    let info = tokio::time::timeout(CONNECT_TIMEOUT, info)
        .await
        .map_err(|_| anyhow!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))??;
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse::<u32>().ok());
    // Only if that process here is a Redis server (Redis may run elsewhere).
    Ok(pid.filter(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim().starts_with("redis"))
    }))
}

/// A Postgres database and a Redis key prefix of this run. Dropping it drops the database
/// (`WITH (FORCE)`) and deletes every key under the prefix.
pub(crate) struct Scratch {
    admin_url: String,
    redis_url: String,
    pub(crate) database: String,
    /// The database's URL, for the roles and for seeding.
    pub(crate) url: String,
    /// `BUTTERFLY_REDIS_PREFIX` of the network.
    pub(crate) prefix: String,
}

impl Scratch {
    /// Check the binary, the script and both services, then create a scratch database
    /// and Redis prefix, saying so on stderr.
    pub(crate) async fn prepare(
        binary: &Path,
        script: &Path,
        admin_url: &str,
        redis_url: &str,
    ) -> anyhow::Result<Scratch> {
        check_files(binary, script)?;
        check_services(admin_url, redis_url).await?;
        let scratch = Scratch::create(admin_url, redis_url).await?;
        eprintln!(
            "database {} and Redis key prefix {:?} created (both removed at the end)",
            scratch.database, scratch.prefix
        );
        Ok(scratch)
    }

    pub(crate) async fn create(admin_url: &str, redis_url: &str) -> anyhow::Result<Scratch> {
        let tag = format!("{:016x}", random_u64());
        let database = format!("bf_bench_{tag}");
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("connecting to Postgres at {admin_url}"))?;
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&mut conn)
            .await
            .with_context(|| format!("CREATE DATABASE {database}"))?;
        let _ = conn.close().await;
        Ok(Scratch {
            admin_url: admin_url.to_owned(),
            redis_url: redis_url.to_owned(),
            url: with_database(admin_url, &database),
            database,
            prefix: format!("bfbench{tag}:"),
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Drop may run inside the runtime (or while it unwinds): do the async work on a
        // thread with a runtime of its own.
        let (admin, redis_url) = (self.admin_url.clone(), self.redis_url.clone());
        let (database, prefix) = (self.database.clone(), self.prefix.clone());
        let cleaner = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                eprintln!("cleanup: no runtime; drop database {database} by hand");
                return;
            };
            rt.block_on(async {
                let drop = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
                let dropped = async {
                    let mut conn = sqlx::PgConnection::connect(&admin).await?;
                    sqlx::query(&drop).execute(&mut conn).await?;
                    let _ = conn.close().await;
                    anyhow::Ok(())
                };
                match tokio::time::timeout(Duration::from_secs(30), dropped).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => eprintln!("cleanup: {drop}: {e:#}"),
                    Err(_) => eprintln!("cleanup: {drop}: timed out"),
                }
                match tokio::time::timeout(
                    Duration::from_secs(30),
                    delete_prefix(&redis_url, &prefix),
                )
                .await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => eprintln!("cleanup: deleting Redis keys {prefix}*: {e:#}"),
                    Err(_) => eprintln!("cleanup: deleting Redis keys {prefix}*: timed out"),
                }
            });
        });
        let _ = cleaner.join();
    }
}

/// `url` with its database name replaced by `name` (query parameters kept).
fn with_database(url: &str, name: &str) -> String {
    let (url, query) = url.split_at(url.find('?').unwrap_or(url.len()));
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let base = match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    };
    format!("{base}/{name}{query}")
}

/// Delete every key starting with `prefix` (SCAN, so a shared Redis is never blocked);
/// returns how many were deleted.
async fn delete_prefix(url: &str, prefix: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            deleted += redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<u64>(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// Fail early, before anything is created, if the server binary or the script is
/// missing.
pub(crate) fn check_files(binary: &Path, script: &Path) -> anyhow::Result<()> {
    if !binary.is_file() {
        bail!(
            "server binary {} not found: build it first with \
             `cargo build --release -p butterfly -p butterfly-bench` (from the workspace \
             root), or pass --server PATH",
            binary.display()
        );
    }
    if !script.is_file() {
        bail!(
            "{} not found: run the bench from the workspace root or pass \
             --cluster-script PATH",
            script.display()
        );
    }
    Ok(())
}

/// One role process of the network.
#[derive(Debug, Clone)]
pub(crate) struct Role {
    /// The address it serves (NS, switchboard, HTTP or gRPC).
    pub(crate) addr: SocketAddr,
    pub(crate) pid: u32,
    /// Its admin listener (`/metrics`).
    pub(crate) admin: SocketAddr,
}

/// What to start.
pub(crate) struct ClusterOptions<'a> {
    pub(crate) script: &'a Path,
    pub(crate) binary: &'a Path,
    pub(crate) log_filter: &'a str,
    pub(crate) gateways: usize,
    pub(crate) switchboards: usize,
    /// Keep the log directory at the end.
    pub(crate) keep_logs: bool,
}

/// A running `run-cluster.sh` and its role processes, in a process group of their own.
/// Dropping it stops the network (SIGTERM to the script, which stops every role; SIGKILL
/// to the group after [`STOP_TIMEOUT`]) and removes the log directory.
pub(crate) struct Cluster {
    child: Option<Child>,
    /// The script's pid, which is also the process group id.
    pgid: u32,
    pub(crate) addressbook: Role,
    pub(crate) passport: Role,
    pub(crate) gateways: Vec<Role>,
    pub(crate) switchboards: Vec<Role>,
    script_log: PathBuf,
    // Declared last: removed after the processes are gone.
    logs: DataDir,
}

impl Cluster {
    /// Start the script with the network in `scratch` and wait for `ready`.
    pub(crate) async fn start(
        opts: &ClusterOptions<'_>,
        scratch: &Scratch,
        redis_url: &str,
    ) -> anyhow::Result<Cluster> {
        check_files(opts.binary, opts.script)?;
        let binary = std::fs::canonicalize(opts.binary)
            .with_context(|| format!("resolving {}", opts.binary.display()))?;
        let mut logs = DataDir::create("cluster")?;
        if opts.keep_logs {
            logs.keep();
        }
        let script_log = logs.path().join("run-cluster.log");
        let log_file = std::fs::File::create(&script_log)
            .with_context(|| format!("creating {}", script_log.display()))?;
        let ports = 2 * (2 + opts.gateways + opts.switchboards);
        let base = free_port_range(ports as u16)?;

        let mut cmd = Command::new("bash");
        cmd.arg(opts.script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        // Only what is set here configures the network, whatever this shell exports.
        for (k, _) in std::env::vars_os() {
            let k_text = k.to_string_lossy();
            if k_text.starts_with("BUTTERFLY_") || k_text.starts_with("CLUSTER_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("BUTTERFLY_DATABASE_URL", &scratch.url)
            .env("BUTTERFLY_REDIS_URL", redis_url)
            .env("BUTTERFLY_REDIS_PREFIX", &scratch.prefix)
            .env("BUTTERFLY_BIN", &binary)
            .env("BUTTERFLY_LOG", opts.log_filter)
            // Every client has gone when the network stops: nothing to wait for.
            .env("BUTTERFLY_DRAIN_SECONDS", "2")
            .env("CLUSTER_GATEWAYS", opts.gateways.to_string())
            .env("CLUSTER_SWITCHBOARDS", opts.switchboards.to_string())
            .env("CLUSTER_BASE_PORT", base.to_string())
            .env("CLUSTER_HOST", "127.0.0.1")
            .env("CLUSTER_LOG_DIR", logs.path());
        // A process group of its own: the roles are in it too, and a signal to the group
        // reaches all of them (and never this process).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", opts.script.display()))?;
        let pgid = child.id();
        let stdout = child.stdout.take().context("the script's stdout")?;
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        // From here on, dropping `cluster` stops the script and its children.
        let mut cluster = Cluster {
            child: Some(child),
            pgid,
            addressbook: placeholder(),
            passport: placeholder(),
            gateways: Vec::new(),
            switchboards: Vec::new(),
            script_log,
            logs,
        };
        let mut printed: Vec<(String, SocketAddr)> = Vec::new();
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(line)) if line == "ready" => break,
                Ok(Some(line)) => {
                    if let Some((role, addr)) = line.split_once(' ')
                        && let Ok(addr) = addr.trim().parse()
                    {
                        printed.push((role.to_owned(), addr));
                    }
                }
                Ok(None) => bail!(
                    "run-cluster.sh exited before it was ready; its output:\n{}",
                    cluster.script_tail(40)
                ),
                Err(_) => bail!(
                    "run-cluster.sh was not ready within {} s; its output:\n{}",
                    START_TIMEOUT.as_secs(),
                    cluster.script_tail(40)
                ),
            }
        }
        cluster.adopt(&printed)?;
        if cluster.gateways.len() != opts.gateways
            || cluster.switchboards.len() != opts.switchboards
        {
            bail!(
                "run-cluster.sh printed {} gateways and {} switchboards, expected {} and {}",
                cluster.gateways.len(),
                cluster.switchboards.len(),
                opts.gateways,
                opts.switchboards
            );
        }
        Ok(cluster)
    }

    /// Match the printed `ROLE ADDRESS` lines with the script's child processes (by the
    /// listen address in their command line), for their pids and admin addresses.
    fn adopt(&mut self, printed: &[(String, SocketAddr)]) -> anyhow::Result<()> {
        let children = role_processes(self.pgid)?;
        let find = |kind: &str, addr: SocketAddr| -> anyhow::Result<Role> {
            let flag = match kind {
                "addressbook" => "--grpc-listen",
                "passport" => "--http-listen",
                "switchboard" => "--sb-listen",
                _ => "--ns-listen",
            };
            children
                .iter()
                .find(|(_, args)| args.get(flag).and_then(|a| a.parse().ok()) == Some(addr))
                .and_then(|(pid, args)| {
                    let admin = args.get("--admin-listen")?.parse().ok()?;
                    Some(Role {
                        addr,
                        pid: *pid,
                        admin,
                    })
                })
                .ok_or_else(|| anyhow!("no {kind} process listening on {addr} under the script"))
        };
        for (kind, addr) in printed {
            match kind.as_str() {
                "addressbook" => self.addressbook = find(kind, *addr)?,
                "passport" => self.passport = find(kind, *addr)?,
                "switchboard" => self.switchboards.push(find(kind, *addr)?),
                "ns-gateway" => self.gateways.push(find(kind, *addr)?),
                _ => {} // "http": the passport's address again
            }
        }
        if self.passport.pid == 0 || self.addressbook.pid == 0 {
            bail!("run-cluster.sh did not print the passport and addressbook lines");
        }
        Ok(())
    }

    /// Every role process: `(label, pid)`.
    pub(crate) fn processes(&self) -> Vec<(String, u32)> {
        let mut all = vec![
            ("addressbook".to_owned(), self.addressbook.pid),
            ("passport".to_owned(), self.passport.pid),
        ];
        for (i, g) in self.gateways.iter().enumerate() {
            all.push((format!("ns-gateway-{i}"), g.pid));
        }
        for (i, s) in self.switchboards.iter().enumerate() {
            all.push((format!("switchboard-{i}"), s.pid));
        }
        all
    }

    /// Fail if the script has exited (it stops everything when one role dies).
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            self.child = None;
            bail!(
                "the network stopped ({status}); run-cluster.sh said:\n{}",
                self.script_tail(40)
            );
        }
        Ok(())
    }

    /// The last `n` lines the script wrote to stderr (it copies a dead role's log there),
    /// and the logs of the roles.
    fn script_tail(&self, n: usize) -> String {
        let mut out = tail(&self.script_log, n);
        if let Ok(dir) = std::fs::read_dir(self.logs.path()) {
            let mut logs: Vec<PathBuf> = dir
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "log") && *p != self.script_log)
                .collect();
            logs.sort();
            for log in logs {
                let text = tail(&log, 5);
                if text != "(empty)" {
                    out.push_str(&format!("\n--- {} (end)\n{text}", log.display()));
                }
            }
        }
        out
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            self.kill_stragglers();
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &self.pgid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        let exited = loop {
            match child.try_wait() {
                Ok(Some(_)) => break true,
                Ok(None) if start.elapsed() < STOP_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => break false,
            }
        };
        if !exited {
            eprintln!(
                "the network did not stop within {} s of SIGTERM; killing it",
                STOP_TIMEOUT.as_secs()
            );
            kill_group(self.pgid);
            let _ = child.kill();
            let _ = child.wait();
        }
        self.kill_stragglers();
    }

    /// SIGKILL the group if any of our role processes is still in it.
    fn kill_stragglers(&self) {
        let alive = self
            .processes()
            .iter()
            .any(|(_, pid)| *pid != 0 && process_group_of(*pid) == Some(self.pgid));
        if alive {
            kill_group(self.pgid);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn placeholder() -> Role {
    let none = SocketAddr::from(([0, 0, 0, 0], 0));
    Role {
        addr: none,
        pid: 0,
        admin: none,
    }
}

fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(n)..].join("\n");
    if tail.is_empty() {
        "(empty)".into()
    } else {
        tail
    }
}

/// `(ppid, pgrp)` of a process, from `/proc/PID/stat`.
fn parent_and_group(pid: u32) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    // Field 3 is the state, 4 the parent, 5 the process group.
    let _state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((ppid, pgrp))
}

fn process_group_of(pid: u32) -> Option<u32> {
    parent_and_group(pid).map(|(_, g)| g)
}

/// The `butterfly serve` children of `parent`: pid → their `--flag value` pairs.
fn role_processes(parent: u32) -> anyhow::Result<Vec<(u32, HashMap<String, String>)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if parent_and_group(pid).map(|(p, _)| p) != Some(parent) {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.iter().any(|a| a == "serve") {
            continue;
        }
        let flags = args
            .windows(2)
            .filter(|w| w[0].starts_with("--"))
            .map(|w| (w[0].clone(), w[1].clone()))
            .collect();
        found.push((pid, flags));
    }
    Ok(found)
}

/// The first port of `n` consecutive loopback ports that are free now, below the
/// ephemeral range (so the bench's own outgoing connections cannot take them).
fn free_port_range(n: u16) -> anyhow::Result<u16> {
    let low = 20000u16;
    let high = ephemeral_port_start()
        .unwrap_or(32768)
        .saturating_sub(n)
        .max(low + 1);
    for attempt in 0..200u64 {
        let base = low + ((random_u64().wrapping_add(attempt) % u64::from(high - low)) as u16);
        let free = (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return Ok(base);
        }
    }
    bail!("no {n} consecutive free loopback ports between {low} and {high}")
}

/// The first port of `ip_local_port_range`.
fn ephemeral_port_start() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Prometheus text from a role's admin `/metrics`.
pub(crate) async fn metrics_text(admin: SocketAddr) -> anyhow::Result<String> {
    let resp = crate::http::get(admin, "/metrics", &[])
        .await
        .with_context(|| format!("reading http://{admin}/metrics"))?;
    if resp.status != 200 {
        bail!("http://{admin}/metrics answered HTTP {}", resp.status);
    }
    Ok(String::from_utf8_lossy(&resp.body).into_owned())
}

/// The value of the series named exactly `series` (with its labels, as printed).
pub(crate) fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == series).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced_and_parameters_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "bf_bench_1"),
            "postgres://postgres@127.0.0.1:5432/bf_bench_1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
    }

    #[test]
    fn metric_series_are_found_with_their_labels() {
        let text = "# HELP x y\n\
                    butterfly_sb_messages_total 42\n\
                    butterfly_pubsub_lag_seconds_sum{channel=\"pres\"} 0.5\n\
                    butterfly_pubsub_lag_seconds_count{channel=\"pres\"} 10\n";
        assert_eq!(
            metric_value(text, "butterfly_sb_messages_total"),
            Some(42.0)
        );
        assert_eq!(
            metric_value(text, "butterfly_pubsub_lag_seconds_sum{channel=\"pres\"}"),
            Some(0.5)
        );
        assert_eq!(metric_value(text, "butterfly_pubsub_lag_seconds_sum"), None);
    }
}
