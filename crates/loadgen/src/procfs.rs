//! A process's memory and CPU time from `/proc`, and this process's open-files limit.

use std::process::Command;

use anyhow::{Context, anyhow};
use serde::Serialize;

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS line in {path}"))
}

/// (utime, stime) in clock ticks from a `/proc/…/stat` file.
pub fn cpu_ticks(path: &str) -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may contain spaces: count fields
    // after the last ')'. Field 3 (state) is then index 0; utime is field 14, stime 15.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("unexpected format of {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no field {n} in {path}"))
    };
    Ok((field(14)?, field(15)?))
}

/// Clock ticks per second (`getconf CLK_TCK`), and whether it had to be assumed (100).
pub fn clk_tck() -> (u64, bool) {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .map_or((100, true), |t| (t, false))
}

/// The soft limit on open files of this process (inherited by its children).
pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

/// One reading of a server process.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub rss_kib: u64,
    /// User + system CPU time, seconds.
    pub cpu_secs: f64,
}

pub fn sample(pid: u32) -> anyhow::Result<Sample> {
    let (user, system) = cpu_ticks(&format!("/proc/{pid}/stat"))?;
    let (tck, _) = clk_tck();
    Ok(Sample {
        rss_kib: rss_kib(pid)?,
        cpu_secs: (user + system) as f64 / tck as f64,
    })
}
