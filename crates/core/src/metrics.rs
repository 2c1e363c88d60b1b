//! Process-wide counters, exposed as Prometheus text on the admin port.
//!
//! Plain atomics: the hot paths (a message relayed, a command handled) cost one relaxed
//! add. Each event has one function here so names never drift between call sites.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($($name:ident: $kind:literal, $help:literal;)*) => {
        #[derive(Default)]
        pub struct Metrics { $(pub $name: AtomicU64,)* }

        impl Metrics {
            /// The Prometheus text exposition of every counter.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    let _ = writeln!(out, "# HELP butterfly_{} {}", stringify!($name), $help);
                    let _ = writeln!(out, "# TYPE butterfly_{} {}", stringify!($name), $kind);
                    let _ = writeln!(out, "butterfly_{} {}", stringify!($name), self.$name.load(Relaxed));
                )*
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
}
