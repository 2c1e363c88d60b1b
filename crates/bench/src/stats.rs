//! Small helpers shared by the distributed benches: percentiles and CPU time of a set of
//! processes read from `/proc`.

use std::time::{Duration, Instant};

use crate::server::{cpu_ticks, machine_busy_ticks};

/// The `p` quantile (0–1) of sorted durations, nearest rank; zero when empty.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Milliseconds with two decimals.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Processes whose CPU time a bench reports: `(label, pid)`; the bench itself is added.
pub(crate) struct CpuWatch {
    procs: Vec<(String, u32)>,
    tck: u64,
}

/// CPU time (user + system, clock ticks) of each watched process, of this process and of
/// the whole machine, at one moment.
pub(crate) struct CpuSample {
    at: Instant,
    procs: Vec<u64>,
    bench: u64,
    machine: u64,
    softirq: u64,
}

/// CPU seconds used between two samples.
pub(crate) struct CpuUse {
    pub(crate) wall_secs: f64,
    /// `(label, seconds)` per watched process.
    pub(crate) procs: Vec<(String, f64)>,
    pub(crate) bench_secs: f64,
    /// The machine's busy time (all CPUs; not idle or I/O wait). `/proc/stat` samples it
    /// at each timer tick (the processes' times above are exact), so it undercounts work
    /// that comes in bursts shorter than a tick between idle periods.
    pub(crate) machine_secs: f64,
    /// Of that, softirq: on loopback most of the TCP receive path. With tick-based
    /// accounting (no `IRQ_TIME_ACCOUNTING`, as here) it is also charged to whichever
    /// process was running, so it is part of the rows above, not in addition.
    pub(crate) softirq_secs: f64,
    /// The machine's busy time minus the watched processes and the bench: Postgres,
    /// kernel threads, anything else running. `None` when the sampled machine time is
    /// below the processes' exact times (bursty load, see `machine_secs`).
    pub(crate) rest_secs: Option<f64>,
}

impl CpuWatch {
    pub(crate) fn new(procs: Vec<(String, u32)>) -> CpuWatch {
        let (tck, _) = crate::server::clk_tck();
        CpuWatch { procs, tck }
    }

    pub(crate) fn sample(&self) -> anyhow::Result<CpuSample> {
        let mut procs = Vec::with_capacity(self.procs.len());
        for (_, pid) in &self.procs {
            let (u, s) = cpu_ticks(&format!("/proc/{pid}/stat"))?;
            procs.push(u + s);
        }
        let (u, s) = cpu_ticks("/proc/self/stat")?;
        Ok(CpuSample {
            at: Instant::now(),
            procs,
            bench: u + s,
            machine: machine_busy_ticks()?,
            softirq: softirq_ticks()?,
        })
    }

    pub(crate) fn between(&self, a: &CpuSample, b: &CpuSample) -> CpuUse {
        let secs = |t: u64| t as f64 / self.tck as f64;
        let procs: Vec<(String, f64)> = self
            .procs
            .iter()
            .zip(a.procs.iter().zip(&b.procs))
            .map(|((label, _), (x, y))| (label.clone(), secs(y.saturating_sub(*x))))
            .collect();
        let ours: u64 = a
            .procs
            .iter()
            .zip(&b.procs)
            .map(|(x, y)| y.saturating_sub(*x))
            .sum::<u64>()
            + b.bench.saturating_sub(a.bench);
        let machine = b.machine.saturating_sub(a.machine);
        CpuUse {
            wall_secs: b.at.duration_since(a.at).as_secs_f64(),
            procs,
            bench_secs: secs(b.bench.saturating_sub(a.bench)),
            machine_secs: secs(machine),
            softirq_secs: secs(b.softirq.saturating_sub(a.softirq)),
            rest_secs: machine.checked_sub(ours).map(secs),
        }
    }
}

impl CpuUse {
    /// Markdown rows: `| label | CPU s | % of one core |`.
    pub(crate) fn rows(&self) -> Vec<String> {
        let pct = |s: f64| s / self.wall_secs.max(1e-9) * 100.0;
        let mut rows: Vec<String> = self
            .procs
            .iter()
            .map(|(l, s)| format!("| {l} | {s:.2} | {:.0} % |", pct(*s)))
            .collect();
        rows.push(format!(
            "| butterfly-bench (the clients) | {:.2} | {:.0} % |",
            self.bench_secs,
            pct(self.bench_secs)
        ));
        rows.push(match self.rest_secs {
            Some(rest) => format!(
                "| rest of the machine (Postgres, kernel threads, other) | {rest:.2} | {:.0} % |",
                pct(rest)
            ),
            None => "| rest of the machine (Postgres, kernel threads, other) | n/a: the \
                     tick-sampled machine total is below the processes' exact times | |"
                .to_owned(),
        });
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        rows.push(format!(
            "| whole machine busy, tick-sampled /proc/stat ({cores} cores: {:.0} % of all) | {:.2} | {:.0} % |",
            pct(self.machine_secs) / cores as f64,
            self.machine_secs,
            pct(self.machine_secs)
        ));
        rows.push(format!(
            "| of it softirq (loopback TCP; already inside the rows above) | {:.2} | {:.0} % |",
            self.softirq_secs,
            pct(self.softirq_secs)
        ));
        rows
    }
}

/// The machine's softirq time in clock ticks (`/proc/stat`, first line, 7th value).
fn softirq_ticks() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/stat")?;
    text.lines()
        .next()
        .filter(|l| l.starts_with("cpu "))
        .and_then(|l| l.split_whitespace().nth(7))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("unexpected format of /proc/stat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(ms(Duration::from_micros(1234)), "1.23");
    }
}
