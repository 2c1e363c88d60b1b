//! What a run measures: latency histograms (HDR, microseconds), counters, and errors by
//! kind — kept per worker, merged by the coordinator.

use std::collections::BTreeMap;

use anyhow::Context;
use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

/// The latencies, in the order the report lists them, with what each measures.
pub const LATENCIES: [(&str, &str); 11] = [
    (
        "signin_connect",
        "sign-in: TCP connect (from the planned start)",
    ),
    ("signin_negotiation", "sign-in: VER/CVR"),
    (
        "signin_auth",
        "sign-in: USR (Passport/RST or ticket, to USR OK)",
    ),
    (
        "signin_lists",
        "sign-in: lists ready (SYN, or the initial ADL)",
    ),
    (
        "signin_total",
        "sign-in: planned start to online (first CHG answered)",
    ),
    ("fanout", "presence fan-out: planned change to each watcher"),
    (
        "fanout_last",
        "presence fan-out: planned change to the last watcher",
    ),
    (
        "sb_setup",
        "switchboard: planned chat start to the invitee joined",
    ),
    ("delivery", "switchboard: planned message send to delivery"),
    ("churn_signin", "churn: planned start to online again"),
    (
        "signout_fanout",
        "churn: planned sign-out to each watcher's FLN",
    ),
];

/// Counters, in report order.
pub const COUNTERS: [&str; 15] = [
    "signins",
    "presence_changes",
    "notifications",
    "notifications_expected",
    "missed",
    "duplicates",
    "chats",
    "chats_ok",
    "messages_sent",
    "messages_acked",
    "messages_received",
    "churned",
    "signouts",
    // Scheduled actions of users that were not signed in (their failure is counted once).
    "skipped_actions",
    // FLN about a user with no sign-out planned by then, before the drain (a sign-out the
    // generator did not ask for: a lost connection, counted as an error where it happens).
    "unexpected_signouts",
];

#[derive(Debug, Clone)]
pub struct Stats {
    pub hists: BTreeMap<String, Histogram<u64>>,
    pub counters: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            hists: LATENCIES
                .iter()
                .map(|(name, _)| ((*name).to_owned(), new_histogram()))
                .collect(),
            counters: COUNTERS.iter().map(|c| ((*c).to_owned(), 0)).collect(),
            errors: BTreeMap::new(),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to an hour, 3 significant digits; values above are clamped, not lost.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

impl Stats {
    pub fn record(&mut self, name: &str, micros: u64) {
        if let Some(h) = self.hists.get_mut(name) {
            h.saturating_record(micros.max(1));
        }
    }

    pub fn add(&mut self, counter: &str, n: u64) {
        *self.counters.entry(counter.to_owned()).or_default() += n;
    }

    /// Keep the larger of the two (counters named `max_…` merge by maximum).
    pub fn set_max(&mut self, counter: &str, value: u64) {
        let e = self.counters.entry(counter.to_owned()).or_default();
        *e = (*e).max(value);
    }

    pub fn count(&self, counter: &str) -> u64 {
        self.counters.get(counter).copied().unwrap_or(0)
    }

    pub fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn merge(&mut self, other: &Stats) {
        for (name, h) in &other.hists {
            let mine = self.hists.entry(name.clone()).or_insert_with(new_histogram);
            // Same bounds on both sides: adding cannot fail.
            let _ = mine.add(h);
        }
        for (k, v) in &other.counters {
            if k.starts_with("max_") {
                self.set_max(k, *v);
            } else {
                *self.counters.entry(k.clone()).or_default() += v;
            }
        }
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
    }

    pub fn to_wire(&self) -> WireStats {
        let hists = self
            .hists
            .iter()
            .map(|(k, h)| {
                let mut buf = Vec::new();
                // Writing to a Vec cannot fail.
                let _ = V2Serializer::new().serialize(h, &mut buf);
                (
                    k.clone(),
                    base64::engine::general_purpose::STANDARD.encode(buf),
                )
            })
            .collect();
        WireStats {
            hists,
            counters: self.counters.clone(),
            errors: self.errors.clone(),
        }
    }

    pub fn from_wire(w: &WireStats) -> anyhow::Result<Stats> {
        let mut hists = BTreeMap::new();
        for (k, v) in &w.hists {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v)
                .context("histogram encoding")?;
            let h: Histogram<u64> = Deserializer::new()
                .deserialize(&mut &bytes[..])
                .map_err(|e| anyhow::anyhow!("histogram {k}: {e:?}"))?;
            hists.insert(k.clone(), h);
        }
        Ok(Stats {
            hists,
            counters: w.counters.clone(),
            errors: w.errors.clone(),
        })
    }
}

/// [`Stats`] as a worker sends it (histograms in the HDR V2 format, base64).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WireStats {
    pub hists: BTreeMap<String, String>,
    pub counters: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
}

/// One latency as the report and the JSON file give it, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

pub fn summary(h: &Histogram<u64>) -> Summary {
    let ms = |us: u64| us as f64 / 1000.0;
    Summary {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        mean_ms: h.mean() / 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_survive_the_wire_and_merge() {
        let mut a = Stats::default();
        a.record("fanout", 1500);
        a.record("fanout", 2500);
        a.add("signins", 2);
        a.error("connect refused");
        let mut b = Stats::from_wire(&a.to_wire()).unwrap();
        assert_eq!(b.hists["fanout"].len(), 2);
        b.merge(&a);
        assert_eq!(b.hists["fanout"].len(), 4);
        assert_eq!(b.count("signins"), 4);
        assert_eq!(b.errors_total(), 2);
        let s = summary(&b.hists["fanout"]);
        assert!((1.4..1.6).contains(&s.p50_ms), "{s:?}");
        assert!((2.4..2.6).contains(&s.max_ms), "{s:?}");
    }
}
