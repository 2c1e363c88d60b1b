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
            /// Client commands by verb and result (`ok` or the MSNP error code).
            pub commands: Family,
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
                );
                self.pubsub_lag_seconds.render(
                    &mut out,
                    "butterfly_pubsub_lag_seconds",
                    "Delay from a Redis publish to its delivery at this process.",
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

/// Label pairs of one series, e.g. `[("verb", "CHG"), ("result", "ok")]`.
pub type Labels = Vec<(&'static str, String)>;

fn label_text(labels: &Labels) -> String {
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    inner.join(",")
}

/// Counters that share a name and differ by labels. The set of label values is small and
/// fixed by the code (verbs, results), so series are created on first use and kept; a
/// read lock finds an existing series, so the hot path never contends on a write lock.
#[derive(Default)]
pub struct Family {
    series: RwLock<BTreeMap<Labels, Arc<AtomicU64>>>,
}

impl Family {
    pub fn inc(&self, labels: Labels) {
        self.counter(labels).fetch_add(1, Relaxed);
    }

    pub fn get(&self, labels: &Labels) -> u64 {
        let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
        series.get(labels).map_or(0, |c| c.load(Relaxed))
    }

    fn counter(&self, labels: Labels) -> Arc<AtomicU64> {
        if let Some(c) = self
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&labels)
        {
            return c.clone();
        }
        let mut series = self.series.write().unwrap_or_else(PoisonError::into_inner);
        series.entry(labels).or_default().clone()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
        for (labels, c) in series.iter() {
            let _ = writeln!(out, "{name}{{{}}} {}", label_text(labels), c.load(Relaxed));
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

    fn render(&self, out: &mut String, name: &str, labels: &Labels) {
        let base = label_text(labels);
        let sep = if base.is_empty() { "" } else { "," };
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

/// Histograms that share a name and differ by labels.
#[derive(Default)]
pub struct HistogramFamily {
    series: RwLock<BTreeMap<Labels, Arc<Histogram>>>,
}

impl HistogramFamily {
    pub fn observe(&self, labels: Labels, d: Duration) {
        self.histogram(labels).observe(d);
    }

    pub fn histogram(&self, labels: Labels) -> Arc<Histogram> {
        if let Some(h) = self
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&labels)
        {
            return h.clone();
        }
        let mut series = self.series.write().unwrap_or_else(PoisonError::into_inner);
        series.entry(labels).or_default().clone()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
        for (labels, h) in series.iter() {
            h.render(out, name, labels);
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
        m.commands
            .inc(vec![("verb", "CHG".into()), ("result", "ok".into())]);
        m.commands
            .inc(vec![("verb", "CHG".into()), ("result", "ok".into())]);
        m.grpc_client_seconds.observe(
            vec![("method", "Roster".into())],
            std::time::Duration::from_millis(3),
        );
        let text = m.render();
        assert!(text.contains("butterfly_commands_total{verb=\"CHG\",result=\"ok\"} 2\n"));
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
