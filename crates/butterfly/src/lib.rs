//! Composition: builds the ports and starts the roles. `main.rs` parses the command
//! line into [`Settings`] and calls [`start`]; the test kit calls the same function, so
//! tests run exactly what `butterfly serve` runs.

pub mod settings;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use butterfly_bus::MemoryBus;
use butterfly_core::bus::Bus;
use butterfly_core::store::Store;
use butterfly_core::tickets::{JwtTickets, Tickets};
use butterfly_store::SqliteStore;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use settings::Settings;

/// Open the configured database (running migrations).
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<SqliteStore>> {
    let store = match &settings.database_url {
        Some(url) if url.starts_with("postgres") => {
            bail!(
                "Postgres arrives with the distributed mode; the embedded server uses SQLite (omit --database-url)"
            )
        }
        Some(url) => SqliteStore::open_url(url)
            .await
            .with_context(|| format!("opening database {url}"))?,
        None => {
            std::fs::create_dir_all(&settings.data_dir).with_context(|| {
                format!("creating data directory {}", settings.data_dir.display())
            })?;
            let path = settings.data_dir.join("butterfly.db");
            SqliteStore::open(&path)
                .await
                .with_context(|| format!("opening database {}", path.display()))?
        }
    };
    Ok(Arc::new(store))
}

/// The ticket signing key: from settings, or a random key kept in the data directory so
/// tickets survive a restart.
fn ticket_key(settings: &Settings) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &settings.ticket_secret {
        if secret.len() < 32 {
            bail!("--ticket-secret must be at least 32 characters");
        }
        return Ok(secret.as_bytes().to_vec());
    }
    std::fs::create_dir_all(&settings.data_dir)?;
    let path = settings.data_dir.join("ticket.key");
    read_or_create_key(&path)
}

fn read_or_create_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    if let Ok(k) = std::fs::read_to_string(path) {
        let k = k.trim().to_owned();
        if k.len() >= 32 {
            return Ok(k.into_bytes());
        }
    }
    let key: String = (0..4)
        .map(|_| format!("{:016x}", rand::random::<u64>()))
        .collect();
    std::fs::write(path, &key).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(key.into_bytes())
}

/// A running embedded server.
pub struct Running {
    pub ns: SocketAddr,
    pub sb: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub store: Arc<SqliteStore>,
    shutdown: CancellationToken,
    ready: Arc<AtomicBool>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Stop accepting, tell every client `OUT SSD`, and wait (at most `deadline`) for
    /// every connection to close. Returns whether everything finished in time.
    pub async fn shutdown(mut self, deadline: Duration) -> bool {
        self.ready.store(false, Ordering::SeqCst);
        self.shutdown.cancel();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        let in_time = tokio::time::timeout(deadline, all).await.is_ok();
        if !in_time {
            tracing::warn!(
                left = self.tasks.len(),
                "Shutdown deadline passed; aborting what is left"
            );
            self.tasks.abort_all();
        }
        self.store.close().await;
        in_time
    }

    /// A token that is cancelled when shutdown starts.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

async fn bind(addr: &str, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} listener to {addr}"))
}

/// Start every role in this process. Prints nothing; `main` reports the addresses.
pub async fn start(settings: &Settings) -> anyhow::Result<Running> {
    if settings.redis_url.is_some() {
        bail!(
            "--redis-url: the Redis bus arrives with the distributed mode; the embedded server uses its in-process bus"
        );
    }
    if !settings.targets_all() {
        bail!("--target: only 'all' is available until the distributed mode lands");
    }
    let store = open_store(settings).await?;
    let tickets: Arc<dyn Tickets> = Arc::new(JwtTickets::new("k1", &ticket_key(settings)?));
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());

    let ns_listener = bind(&settings.ns_listen, "notification server").await?;
    let sb_listener = bind(&settings.sb_listen, "switchboard").await?;
    let http_listener = bind(&settings.http_listen, "HTTP").await?;
    let admin_listener = bind(&settings.admin_listen, "admin").await?;
    let (ns, sb, http, admin) = (
        ns_listener.local_addr()?,
        sb_listener.local_addr()?,
        http_listener.local_addr()?,
        admin_listener.local_addr()?,
    );
    let public_host = settings.public_host.clone();

    let shutdown = CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    let dyn_store: Arc<dyn Store> = store.clone();

    let ns_config = butterfly_ns::Config {
        strict_challenges: settings.strict_challenges,
        limits: settings.ns_limits,
        ..butterfly_ns::Config::default()
    };
    let ns_deps = butterfly_ns::Deps {
        store: dyn_store.clone(),
        bus: bus.clone(),
        tickets: tickets.clone(),
        switchboards: Arc::new(butterfly_core::switchboards::OneSwitchboard(format!(
            "{public_host}:{}",
            sb.port()
        ))),
    };
    tasks.spawn(butterfly_ns::run(
        ns_config,
        ns_deps,
        ns_listener,
        shutdown.clone(),
    ));

    let sb_config = butterfly_switchboard::Config {
        public_address: format!("{public_host}:{}", sb.port()),
        limits: settings.sb_limits,
        ..butterfly_switchboard::Config::default()
    };
    let sb_deps = butterfly_switchboard::Deps {
        store: dyn_store.clone(),
        bus: bus.clone(),
        tickets: tickets.clone(),
    };
    tasks.spawn(butterfly_switchboard::run(
        sb_config,
        sb_deps,
        sb_listener,
        shutdown.clone(),
    ));

    let passport = butterfly_passport::router(
        // Clients reach login2.srf over HTTPS on port 443 (they prepend https:// to
        // DALogin), through the deployment's TLS terminator in front of this listener.
        butterfly_passport::Config {
            public_host: public_host.clone(),
        },
        butterfly_passport::Deps {
            store: dyn_store,
            tickets,
        },
    );
    let token = shutdown.clone();
    tasks.spawn(async move {
        let serve = axum::serve(http_listener, passport)
            .with_graceful_shutdown(async move { token.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP listener failed");
        }
    });

    let token = shutdown.clone();
    let admin_router = admin_router(ready.clone());
    tasks.spawn(async move {
        let serve = axum::serve(admin_listener, admin_router)
            .with_graceful_shutdown(async move { token.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "Admin listener failed");
        }
    });

    ready.store(true, Ordering::SeqCst);
    Ok(Running {
        ns,
        sb,
        http,
        admin,
        store,
        shutdown,
        ready,
        tasks,
    })
}

/// `/livez` (the process answers), `/readyz` (accepting work; false while draining),
/// `/metrics` (Prometheus text).
fn admin_router(ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::SeqCst);
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(|| async { butterfly_core::metrics::global().render() }),
        )
}
