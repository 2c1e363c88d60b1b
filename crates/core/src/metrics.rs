//! Process-wide counters, exposed as Prometheus text on the admin port.
//!
//! Plain atomics: the hot paths (a message relayed, a command handled) cost one relaxed
//! add. Each event has one function here so names never drift between call sites.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

macro_rules! counters {
    ($($name:ident: $kind:literal, $help:literal;)*) => {
        #[derive(Default)]
        pub struct Metrics {
            $(pub $name: AtomicU64,)*
            /// Client commands by role, verb and result (`ok` or the MSNP error code).
            pub commands: CommandCounts,
            /// gRPC calls made by this process, by method: latency.
            pub grpc_client_seconds: HistogramFamily,
            /// Time from a Redis publish to its delivery at this gateway, by channel kind.
            pub pubsub_lag_seconds: HistogramFamily,
        }

        impl Metrics {
            /// The Prometheus text exposition of every metric.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    let _ = writeln!(out, "# HELP butterfly_{} {}", stringify!($name), $help);
                    let _ = writeln!(out, "# TYPE butterfly_{} {}", stringify!($name), $kind);
                    let _ = writeln!(out, "butterfly_{} {}", stringify!($name), self.$name.load(Relaxed));
                )*
                self.commands.render(
                    &mut out,
                    "butterfly_commands_total",
                    "Client commands handled, by role, verb and result.",
                );
                self.grpc_client_seconds.render(
                    &mut out,
                    "butterfly_grpc_client_seconds",
                    "Latency of gRPC calls made by this process.",
                    "method",
                );
                self.pubsub_lag_seconds.render(
                    &mut out,
                    "butterfly_pubsub_lag_seconds",
                    "Delay from a Redis publish to its delivery at this process.",
                    "channel",
                );
                out
            }
        }
    };
}

counters! {
    ns_connections_active: "gauge", "Open notification-server connections.";
    ns_connections_total: "counter", "Notification-server connections accepted.";
    ns_logins_total: "counter", "Successful sign-ins.";
    ns_login_failures_total: "counter", "Refused sign-ins (wrong password or ticket).";
    ns_commands_total: "counter", "Client commands handled by the notification server.";
    ns_slow_consumers_total: "counter", "Connections dropped because they did not read.";
    sb_connections_active: "gauge", "Open switchboard connections.";
    sb_sessions_opened_total: "counter", "Switchboard sessions opened.";
    sb_messages_total: "counter", "Messages relayed by the switchboard.";
    sb_slow_consumers_total: "counter", "Switchboard participants dropped because they did not read.";
}

/// One series of `butterfly_commands_total`. Every part is static or a number, so
/// counting a command (the switchboard counts every MSG) allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct CommandKey {
    role: &'static str,
    verb: &'static str,
    /// The MSNP error code answered, or `None` for success.
    error: Option<u16>,
}

/// Client commands by role, verb and result. Verbs come from fixed lists in the roles,
/// so clients cannot create series. Series are created on first use and kept; a read
/// lock finds an existing one, so the hot path never waits on a write lock.
#[derive(Default)]
pub struct CommandCounts {
    series: RwLock<BTreeMap<CommandKey, Arc<AtomicU64>>>,
}

impl CommandCounts {
    /// Count one `verb` handled by `role`, answered with `error` (`None`: success).
    pub fn inc(&self, role: &'static str, verb: &'static str, error: Option<u16>) {
        let key = CommandKey { role, verb, error };
        let found = self
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        let counter = found.unwrap_or_else(|| {
            let mut series = self.series.write().unwrap_or_else(PoisonError::into_inner);
            series.entry(key).or_default().clone()
        });
        counter.fetch_add(1, Relaxed);
    }

    pub fn get(&self, role: &'static str, verb: &'static str, error: Option<u16>) -> u64 {
        let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
        series
            .get(&CommandKey { role, verb, error })
            .map_or(0, |c| c.load(Relaxed))
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
        for (key, c) in series.iter() {
            let result = key.error.map_or_else(|| "ok".to_owned(), |e| e.to_string());
            let _ = writeln!(
                out,
                "{name}{{role=\"{}\",verb=\"{}\",result=\"{result}\"}} {}",
                key.role,
                key.verb,
                c.load(Relaxed)
            );
        }
    }
}

/// Upper bounds (seconds) of the latency buckets: 100 µs to 10 s.
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A latency histogram with fixed buckets; one relaxed add per bucket hit.
#[derive(Default)]
pub struct Histogram {
    /// Non-cumulative counts; the last slot is +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, label: &str, value: &str) {
        let base = format!("{label}=\"{value}\"");
        let sep = ",";
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{base}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[BUCKETS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{base}{sep}le=\"+Inf\"}} {cumulative}");
        let braces = if base.is_empty() {
            String::new()
        } else {
            format!("{{{base}}}")
        };
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {}", self.count.load(Relaxed));
    }
}

/// Histograms that share a name and differ by the value of one label (a gRPC method,
/// a channel kind). Values are static strings, so an observation allocates nothing.
#[derive(Default)]
pub struct HistogramFamily {
    series: RwLock<BTreeMap<&'static str, Arc<Histogram>>>,
}

impl HistogramFamily {
    pub fn observe(&self, value: &'static str, d: Duration) {
        self.histogram(value).observe(d);
    }

    pub fn histogram(&self, value: &'static str) -> Arc<Histogram> {
        if let Some(h) = self
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(value)
        {
            return h.clone();
        }
        let mut series = self.series.write().unwrap_or_else(PoisonError::into_inner);
        series.entry(value).or_default().clone()
    }

    fn render(&self, out: &mut String, name: &str, help: &str, label: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
        for (value, h) in series.iter() {
            h.render(out, name, label, value);
        }
    }
}

/// The one registry of this process.
pub fn global() -> &'static Metrics {
    static M: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    M.get_or_init(Metrics::default)
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

pub fn dec(c: &AtomicU64) {
    c.fetch_sub(1, Relaxed);
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_prometheus_text() {
        let m = super::Metrics::default();
        super::inc(&m.ns_logins_total);
        let text = m.render();
        assert!(
            text.contains(
                "# TYPE butterfly_ns_logins_total counter\nbutterfly_ns_logins_total 1\n"
            )
        );
    }

    #[test]
    fn renders_labelled_counters_and_histograms() {
        let m = super::Metrics::default();
        m.commands.inc("ns", "CHG", None);
        m.commands.inc("ns", "CHG", None);
        m.commands.inc("ns", "ADC", Some(201));
        m.grpc_client_seconds
            .observe("Roster", std::time::Duration::from_millis(3));
        let text = m.render();
        assert!(
            text.contains("butterfly_commands_total{role=\"ns\",verb=\"CHG\",result=\"ok\"} 2\n")
        );
        assert!(
            text.contains("butterfly_commands_total{role=\"ns\",verb=\"ADC\",result=\"201\"} 1\n")
        );
        assert!(
            text.contains(
                "butterfly_grpc_client_seconds_bucket{method=\"Roster\",le=\"0.0025\"} 0\n"
            )
        );
        assert!(
            text.contains(
                "butterfly_grpc_client_seconds_bucket{method=\"Roster\",le=\"0.005\"} 1\n"
            )
        );
        assert!(text.contains("butterfly_grpc_client_seconds_count{method=\"Roster\"} 1\n"));
    }
}
