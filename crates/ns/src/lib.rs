//! The Notification Server role: one task per MSNP client connection, over TCP ([`run`])
//! or through the HTTP polling gateway ([`gateway`]), which also carries switchboard
//! connections for clients that can only make HTTP requests.
//!
//! Architecture invariant: the NS holds no durable state. Everything a session knows —
//! the roster, the presence of contacts — is read from the [`Store`] and the [`Bus`] at
//! sign-in and kept fresh by events, so a session can be rebuilt anywhere.

pub mod gateway;
mod oim;
mod session;
mod sync;

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use butterfly_core::bus::Bus;
use butterfly_core::store::Store;
use butterfly_core::switchboards::Switchboards;
use butterfly_core::tickets::Tickets;
use msnp::codec::Limits;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// NS settings. Defaults suit a real deployment; tests shorten the timers.
#[derive(Debug, Clone)]
pub struct Config {
    /// Dialects offered in VER negotiation.
    pub dialects: RangeInclusive<u8>,
    pub limits: Limits,
    /// A connection must finish signing in within this time.
    pub login_timeout: Duration,
    /// A signed-in connection silent for this long is closed (clients PNG every ~50 s).
    pub idle_timeout: Duration,
    /// Seconds announced in QNG (MSNP9+): when the client should ping next.
    pub ping_interval: Duration,
    /// How often a signed-in MSNP6+ client is challenged (CHL) after the first one.
    pub challenge_interval: Duration,
    /// Close the connection on a wrong QRY answer (540).
    pub strict_challenges: bool,
    /// How long a write may block on a client that does not read before it is dropped.
    pub write_timeout: Duration,
    pub max_connections: usize,
    /// On shutdown, each signed-in session says `OUT SSD` at a random moment within this
    /// window, so its clients do not all reconnect elsewhere at once.
    pub drain_spread: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dialects: 2..=18,
            limits: Limits::NS,
            login_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(300),
            ping_interval: Duration::from_secs(50),
            challenge_interval: Duration::from_secs(15 * 60),
            strict_challenges: true,
            write_timeout: Duration::from_secs(30),
            max_connections: 100_000,
            drain_spread: Duration::ZERO,
        }
    }
}

/// The ports the NS needs.
#[derive(Clone)]
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub tickets: Arc<dyn Tickets>,
    /// Where `XFR SB` sends a caller.
    pub switchboards: Arc<dyn Switchboards>,
}

/// Serve MSNP clients on `listener` until `shutdown`; every connection is then sent
/// `OUT SSD` and closed, and this returns when all are gone.
pub async fn run(config: Config, deps: Deps, listener: TcpListener, shutdown: CancellationToken) {
    let config = Arc::new(config);
    let deps = Arc::new(deps);
    let max = config.max_connections;
    butterfly_core::net::serve(listener, max, shutdown, move |stream, peer, token| {
        session::run(config.clone(), deps.clone(), stream, peer, token)
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    async fn deps() -> Arc<crate::Deps> {
        let store = butterfly_store::SqliteStore::open_url("sqlite::memory:")
            .await
            .unwrap();
        Arc::new(crate::Deps {
            store: Arc::new(store),
            bus: Arc::new(butterfly_bus::MemoryBus::new()),
            tickets: Arc::new(butterfly_core::tickets::JwtTickets::new("k", &[7; 32])),
            switchboards: Arc::new(butterfly_core::switchboards::OneSwitchboard(
                "127.0.0.1:1864".into(),
            )),
        })
    }

    fn check_size(what: &str, size: usize) {
        eprintln!("NS session task over {what}: {size} bytes");
        assert!(size <= 2048, "the NS session future grew to {size} bytes");
    }

    /// Every signed-in user costs one session task; its size is most of the memory an idle
    /// connection costs (docs/BENCHMARKS.md). This guards it against silent growth, over
    /// TCP and over the HTTP gateway's pipe.
    #[tokio::test]
    async fn session_task_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let config = Arc::new(crate::Config::default());
        let task = crate::session::run(
            config.clone(),
            deps().await,
            stream,
            peer,
            Default::default(),
        );
        check_size("TCP", std::mem::size_of_val(&task));

        let (_ours, theirs) = tokio::io::duplex(1024);
        let task = crate::session::run(config, deps().await, theirs, peer, Default::default());
        check_size("the gateway", std::mem::size_of_val(&task));
    }
}
