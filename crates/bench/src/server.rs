//! The server under test: a real `butterfly serve` child process on 127.0.0.1 ports, a
//! throw-away data directory, and what `/proc` and `/metrics` say about it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tokio::sync::mpsc;

/// Reading `/proc`, shared with the load generator.
pub(crate) use butterfly_loadgen::procfs::{clk_tck, cpu_ticks, open_files_limit, rss_kib};

/// How long the server may take to print its four listening lines.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A fresh data directory under the system temp dir, removed when dropped.
pub(crate) struct DataDir {
    path: PathBuf,
    keep: bool,
}

impl DataDir {
    pub(crate) fn create(label: &str) -> anyhow::Result<DataDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "butterfly-bench-{label}-{}-{nanos:09}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("creating data directory {}", path.display()))?;
        Ok(DataDir { path, keep: false })
    }

    /// Leave the directory in place when dropped (and say where it is).
    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn db(&self) -> PathBuf {
        self.path.join("butterfly.db")
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A running `butterfly serve`. Dropping it kills the process and removes its data
/// directory, so an error or Ctrl-C anywhere leaves nothing behind.
pub(crate) struct Server {
    child: Option<Child>,
    pub(crate) pid: u32,
    pub(crate) ns: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) admin: SocketAddr,
    log: PathBuf,
    // Declared last: dropped after the process is gone.
    _dir: DataDir,
}

impl Server {
    /// Start `binary serve` on 127.0.0.1:0 ports with `dir` as its data directory, and
    /// wait for its `… listening on ADDR` lines. `log_filter` is its `BUTTERFLY_LOG`; its
    /// log goes to `server.log` in the data directory.
    pub(crate) async fn start(
        binary: &Path,
        dir: DataDir,
        log_filter: &str,
    ) -> anyhow::Result<Server> {
        if !binary.is_file() {
            bail!(
                "server binary {} not found: build it first with \
                 `cargo build --release -p butterfly -p butterfly-bench` (from the workspace \
                 root), or pass --server PATH",
                binary.display()
            );
        }
        let log = dir.path().join("server.log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(binary);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--ns-listen", "127.0.0.1:0"])
            .args(["--sb-listen", "127.0.0.1:0"])
            .args(["--http-listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--public-host", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        // Only the flags above configure the server, whatever this shell exports.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("BUTTERFLY_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("BUTTERFLY_LOG", log_filter);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().context("server stdout")?;

        // A thread reads stdout (the server prints only its four listening lines, but the
        // pipe must never fill) and forwards each `listening on` address.
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, SocketAddr)>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some((what, addr)) = line.split_once(" listening on ")
                    && let Ok(addr) = addr.trim().parse()
                {
                    let _ = tx.send((what.trim().to_owned(), addr));
                }
            }
        });

        // From here on, dropping `server` kills the child.
        let mut server = Server {
            child: Some(child),
            pid,
            ns: unspecified(),
            http: unspecified(),
            admin: unspecified(),
            log,
            _dir: dir,
        };
        let (mut ns, mut sb, mut http, mut admin) = (None, None, None, None);
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while ns.is_none() || sb.is_none() || http.is_none() || admin.is_none() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((what, addr))) => match what.as_str() {
                    "ns" => ns = Some(addr),
                    "sb" => sb = Some(addr),
                    "http" => http = Some(addr),
                    "admin" => admin = Some(addr),
                    _ => {}
                },
                Ok(None) => {
                    let status = server.wait_exit(Duration::from_secs(2));
                    bail!(
                        "the server exited before printing its listening lines ({status}); \
                         its log:\n{}",
                        server.log_tail(30)
                    );
                }
                Err(_) => bail!(
                    "the server did not print its listening lines within {} s; its log:\n{}",
                    START_TIMEOUT.as_secs(),
                    server.log_tail(30)
                ),
            }
        }
        let _ = sb;
        server.ns = ns.unwrap_or_else(unspecified);
        server.http = http.unwrap_or_else(unspecified);
        server.admin = admin.unwrap_or_else(unspecified);
        Ok(server)
    }

    /// The last `n` lines of the server's log.
    pub(crate) fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(n)..].join("\n");
        if tail.is_empty() {
            "(empty)".into()
        } else {
            tail
        }
    }

    /// Fail if the process has exited (crashed) meanwhile.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            bail!(
                "the server exited unexpectedly ({status}); its log:\n{}",
                self.log_tail(30)
            );
        }
        Ok(())
    }

    /// Resident memory (VmRSS) in KiB.
    pub(crate) fn rss_kib(&mut self) -> anyhow::Result<u64> {
        self.check_alive()?;
        rss_kib(self.pid)
    }

    /// CPU time (user, system) in clock ticks.
    pub(crate) fn cpu_ticks(&mut self) -> anyhow::Result<(u64, u64)> {
        self.check_alive()?;
        cpu_ticks(&format!("/proc/{}/stat", self.pid))
    }

    /// A counter or gauge from the admin `/metrics` page.
    pub(crate) async fn metric(&mut self, name: &str) -> anyhow::Result<u64> {
        self.check_alive()?;
        let resp = crate::http::get(self.admin, "/metrics", &[])
            .await
            .context("reading the server's /metrics")?;
        if resp.status != 200 {
            bail!("/metrics answered HTTP {}", resp.status);
        }
        let body = String::from_utf8_lossy(&resp.body);
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == name).then(|| v.trim().parse::<u64>().ok()).flatten()
            })
            .ok_or_else(|| anyhow!("/metrics has no {name}"))
    }

    /// Poll `butterfly_ns_connections_active` until it equals `want`.
    pub(crate) async fn wait_ns_active(
        &mut self,
        want: u64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let now = self.metric("butterfly_ns_connections_active").await?;
            if now == want {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "butterfly_ns_connections_active is {now}, expected {want} (waited {} s)",
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM (the server drains and exits), then SIGKILL if it takes too long.
    pub(crate) fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.wait_exit(STOP_TIMEOUT);
        // Drop kills whatever is left and removes the data directory.
    }

    /// Wait (polling) up to `timeout` for the process to exit; describe how it ended.
    fn wait_exit(&mut self, timeout: Duration) -> String {
        let Some(child) = &mut self.child else {
            return "already reaped".into();
        };
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return status.to_string();
                }
                Ok(None) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(None) => return "still running".into(),
                Err(e) => return format!("wait failed: {e}"),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// How many local ports outgoing connections can use (`ip_local_port_range`).
pub(crate) fn ephemeral_ports() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    Some(hi.saturating_sub(lo) + 1)
}

/// Check that `n` more sockets fit in the fd limit and the local port range.
pub(crate) fn check_socket_budget(n: u64) -> anyhow::Result<()> {
    // The bench and the server each hold `n` sockets, plus files of their own (SQLite,
    // listeners, the runtime).
    let need = n + 256;
    if let Some(limit) = open_files_limit()
        && limit < need
    {
        bail!(
            "{n} sockets (the measured connections plus the warm-up) need about {need} open \
             files in this process and in the server, but the soft limit (ulimit -n) is \
             {limit}; raise it in this shell first, e.g. `ulimit -n 65536` (at most the hard \
             limit, `ulimit -Hn`)"
        );
    }
    if let Some(ports) = ephemeral_ports()
        && ports < need
    {
        bail!(
            "{n} sockets from 127.0.0.1 need about {need} local ports, but \
             net.ipv4.ip_local_port_range allows {ports}"
        );
    }
    Ok(())
}

/// Busy CPU time of the whole machine, in clock ticks, from the first line of
/// `/proc/stat`: user, nice, system, irq, softirq and steal (not idle or iowait).
pub(crate) fn machine_busy_ticks() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = text
        .lines()
        .next()
        .filter(|l| l.starts_with("cpu "))
        .ok_or_else(|| anyhow!("unexpected format of /proc/stat"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal …
    Ok([0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum())
}
