//! Composition: builds the ports and starts the roles. `main.rs` parses the command
//! line into [`Settings`] and calls [`start`]; the test kit calls the same function, so
//! tests run exactly what `butterfly serve` runs.

pub mod roles;
pub mod settings;
pub mod telemetry;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::extract::Request;
use axum::http::{StatusCode, Uri};
use axum::routing::get;
use axum::{Router, ServiceExt};
use butterfly_bus::{MemoryBus, RedisBus, RedisBusConfig, RedisSwitchboards, ShardRegistration};
use butterfly_core::bus::Bus;
use butterfly_core::store::Store;
use butterfly_core::switchboards::{OneSwitchboard, Switchboards};
use butterfly_core::tickets::{JwtTickets, Tickets};
use butterfly_rpc::{RemoteOptions, RemoteStore};
use butterfly_store::{PgOptions, PgStore, SqliteStore};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;
use tower::ServiceExt as _;
use tower::util::MapRequest;

pub use roles::{Role, Roles};
pub use settings::Settings;

/// The database this process opened itself (rather than reaching it through the
/// address-book role).
#[derive(Clone)]
pub enum Database {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PgStore>),
}

impl Database {
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Database::Sqlite(s) => s.clone(),
            Database::Postgres(s) => s.clone(),
        }
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Database::Sqlite(s) => s.migrate().await?,
            Database::Postgres(s) => s.migrate().await?,
        }
        Ok(())
    }

    pub async fn close(&self) {
        match self {
            Database::Sqlite(s) => s.close().await,
            Database::Postgres(s) => s.close().await,
        }
    }
}

/// Open the configured database and bring its schema up to date: SQLite in the data
/// directory by default, or the `--database-url` (`sqlite:` or `postgres://`).
pub async fn open_store(settings: &Settings) -> anyhow::Result<Database> {
    let db = match &settings.database_url {
        Some(url) if url.starts_with("postgres:") || url.starts_with("postgresql:") => {
            // Idempotent, and serialised by sqlx's advisory lock when replicas start
            // together. On its own connection, without the statement timeout of the
            // serving pool: a migration may rewrite a large table.
            PgStore::migrate_url(url)
                .await
                .with_context(|| format!("migrating {}", redact(url)))?;
            let store = PgStore::connect(url, PgOptions::default())
                .await
                .with_context(|| format!("connecting to {}", redact(url)))?;
            Database::Postgres(Arc::new(store))
        }
        Some(url) => Database::Sqlite(Arc::new(
            SqliteStore::open_url(url)
                .await
                .with_context(|| format!("opening database {url}"))?,
        )),
        None => {
            std::fs::create_dir_all(&settings.data_dir).with_context(|| {
                format!("creating data directory {}", settings.data_dir.display())
            })?;
            let path = settings.data_dir.join("butterfly.db");
            Database::Sqlite(Arc::new(
                SqliteStore::open(&path)
                    .await
                    .with_context(|| format!("opening database {}", path.display()))?,
            ))
        }
    };
    Ok(db)
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
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

/// A running server: the roles of `--target`, each on its listener.
pub struct Running {
    /// MSNP notification server (ns-gateway role).
    pub ns: Option<SocketAddr>,
    /// Switchboard (switchboard role).
    pub sb: Option<SocketAddr>,
    /// HTTP: Passport nexus and login (passport role), the address-book SOAP services
    /// (addressbook role), the MSNP gateway (ns-gateway role).
    pub http: Option<SocketAddr>,
    /// Address-book gRPC (addressbook role, when it runs apart from the others).
    pub grpc: Option<SocketAddr>,
    pub admin: SocketAddr,
    /// The database, when this process opened one.
    pub database: Option<Database>,
    /// The Redis bus, when this process is part of a distributed network.
    redis: Option<Arc<RedisBus>>,
    /// This switchboard shard's entry in the Redis registry.
    registration: Option<ShardRegistration>,
    /// Stops the Redis background work (heartbeats, registry refresh). Cancelled only
    /// after the drain: a draining gateway keeps its lease so its users are not reaped.
    redis_token: CancellationToken,
    /// `grpc.health.v1` on the admin port: follows `ready`.
    health: HealthReporter,
    shutdown: CancellationToken,
    ready: Arc<AtomicBool>,
    tasks: JoinSet<()>,
}

impl Running {
    /// The storage port the roles of this process use (local database or the remote
    /// address book).
    pub fn store(&self) -> Option<Arc<dyn Store>> {
        self.database.as_ref().map(Database::store)
    }

    /// Stop accepting, tell every client `OUT SSD` (spread over most of the window), and
    /// wait (at most `deadline`) for every connection to close. Returns whether
    /// everything finished in time.
    pub async fn shutdown(mut self, deadline: Duration) -> bool {
        self.ready.store(false, Ordering::SeqCst);
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        // A draining shard takes no new chats: leave the registry first.
        if let Some(registration) = self.registration.take() {
            registration.stop().await;
        }
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
        if let Some(bus) = &self.redis {
            bus.close().await;
        }
        self.redis_token.cancel();
        if let Some(db) = &self.database {
            db.close().await;
        }
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

/// Check that the roles asked for can find each other, before binding anything.
fn check_composition(settings: &Settings) -> anyhow::Result<()> {
    let roles = settings.roles;
    let (ns, sb) = (roles.has(Role::NsGateway), roles.has(Role::Switchboard));
    if (ns || sb) && !(ns && sb) && settings.redis_url.is_none() {
        bail!(
            "--target {}: gateways and switchboards in separate processes meet through Redis; give --redis-url",
            settings.target
        );
    }
    // The address book tells signed-in users what its SOAP edits and offline messages mean
    // for them on the bus; only Redis carries that to a gateway in another process.
    let book = roles.has(Role::AddressBook);
    if book && !ns && settings.redis_url.is_none() {
        bail!(
            "--target {}: the address book tells the gateways' users about address-book edits and offline messages through Redis; give --redis-url (the one the gateways use)",
            settings.target
        );
    }
    if ns && !book && settings.addressbook_url.is_some() && settings.redis_url.is_none() {
        bail!(
            "--target {}: the address book at --addressbook-url tells this gateway's users about address-book edits and offline messages through Redis; give --redis-url (the one the address book uses)",
            settings.target
        );
    }
    if !roles.is_all() && settings.ticket_secret.is_none() {
        bail!(
            "--target {}: roles in separate processes verify each other's tickets; give every process the same --ticket-secret",
            settings.target
        );
    }
    if !roles.has(Role::AddressBook)
        && settings.addressbook_url.is_none()
        && settings.database_url.is_none()
    {
        bail!(
            "--target {}: without the addressbook role this process needs --addressbook-url (or a --database-url of its own)",
            settings.target
        );
    }
    Ok(())
}

/// Start the roles of `settings.roles` in this process. Prints nothing; `main` reports
/// the addresses. `all` without `--redis-url` is the embedded server: SQLite (or the
/// given database), the in-process bus, no gRPC.
pub async fn start(settings: &Settings) -> anyhow::Result<Running> {
    check_composition(settings)?;
    let roles = settings.roles;
    let shutdown = CancellationToken::new();
    let redis_token = CancellationToken::new();

    let tickets: Arc<dyn Tickets> = Arc::new(JwtTickets::new("k1", &ticket_key(settings)?));
    // The storage port: the database itself where this process runs the address book
    // (or was given only a database), else the address book over gRPC.
    // An explicit --addressbook-url wins over a --database-url (which a shared
    // environment may set for every process): gateways stay off the database.
    let (database, store): (Option<Database>, Arc<dyn Store>) =
        match (&settings.addressbook_url, roles.has(Role::AddressBook)) {
            (Some(url), false) => {
                let remote = RemoteStore::connect_lazy(url, RemoteOptions::default())
                    .with_context(|| format!("--addressbook-url {url}"))?;
                (None, Arc::new(remote))
            }
            _ => {
                let db = open_store(settings).await?;
                let store = db.store();
                (Some(db), store)
            }
        };
    // Gateways and switchboards use the bus; the address book publishes what its SOAP
    // edits mean for signed-in users ("added you", privacy changes) and offline messages
    // (on Redis unless a gateway shares its process: check_composition).
    let uses_bus =
        roles.has(Role::NsGateway) || roles.has(Role::Switchboard) || roles.has(Role::AddressBook);
    let redis_config = settings
        .redis_url
        .as_ref()
        .filter(|_| uses_bus)
        .map(|url| RedisBusConfig {
            url: url.clone(),
            prefix: settings.redis_prefix.clone(),
            sharded: settings.redis_sharded,
            cluster: settings.redis_cluster,
            lease: settings.lease,
        });
    let redis = match &redis_config {
        Some(config) => Some(
            RedisBus::connect(config.clone(), redis_token.clone())
                .await
                .with_context(|| format!("connecting to Redis at {}", config.url))?,
        ),
        None => None,
    };
    let bus: Arc<dyn Bus> = match &redis {
        Some(r) => r.clone(),
        None => Arc::new(MemoryBus::new()),
    };

    let ns_listener = match roles.has(Role::NsGateway) {
        true => Some(bind(&settings.ns_listen, "notification server").await?),
        false => None,
    };
    let sb_listener = match roles.has(Role::Switchboard) {
        true => Some(bind(&settings.sb_listen, "switchboard").await?),
        false => None,
    };
    // One HTTP listener serves the HTTP roles of this process: Passport, the address-book
    // SOAP services and the MSNP gateway.
    let http_listener = match roles.has(Role::Passport)
        || roles.has(Role::AddressBook)
        || roles.has(Role::NsGateway)
    {
        true => Some(bind(&settings.http_listen, "HTTP").await?),
        false => None,
    };
    let grpc_listener = match roles.has(Role::AddressBook) && !roles.is_all() {
        true => Some(bind(&settings.grpc_listen, "address-book gRPC").await?),
        false => None,
    };
    let admin_listener = bind(&settings.admin_listen, "admin").await?;
    let local = |l: &Option<TcpListener>| l.as_ref().map(TcpListener::local_addr).transpose();
    let (ns, sb, http, grpc) = (
        local(&ns_listener)?,
        local(&sb_listener)?,
        local(&http_listener)?,
        local(&grpc_listener)?,
    );
    let admin = admin_listener.local_addr()?;
    let public_host = settings.public_host.clone();

    let ready = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    let drain = Duration::from_secs(settings.drain_seconds);
    let mut registration = None;

    if let (Some(listener), Some(sb)) = (sb_listener, sb) {
        let public_address = settings
            .sb_advertise
            .clone()
            .unwrap_or_else(|| format!("{public_host}:{}", sb.port()));
        let load = Arc::new(AtomicUsize::new(0));
        if let Some(config) = &redis_config {
            let shard_id = settings
                .shard_id
                .clone()
                .unwrap_or_else(|| format!("sb-{:08x}", rand::random::<u32>()));
            registration = Some(
                ShardRegistration::start(
                    config,
                    shard_id,
                    public_address.clone(),
                    load.clone(),
                    redis_token.clone(),
                )
                .await
                .context("registering the switchboard shard in Redis")?,
            );
        }
        let config = butterfly_switchboard::Config {
            public_address,
            limits: settings.sb_limits,
            ..butterfly_switchboard::Config::default()
        };
        let deps = butterfly_switchboard::Deps {
            store: store.clone(),
            bus: bus.clone(),
            tickets: tickets.clone(),
            load,
        };
        tasks.spawn(butterfly_switchboard::run(
            config,
            deps,
            listener,
            shutdown.clone(),
        ));
    }

    let mut gateway = None;
    if let Some(listener) = ns_listener {
        // This process's own shard, as advertised, and its listener.
        let local_sb = sb.map(|sb| {
            let advertised = settings
                .sb_advertise
                .clone()
                .unwrap_or_else(|| format!("{public_host}:{}", sb.port()));
            (advertised, sb)
        });
        let switchboards: Arc<dyn Switchboards> = match (&redis_config, &local_sb) {
            (Some(config), _) => RedisSwitchboards::start(config, redis_token.clone())
                .await
                .context("reading the switchboard registry in Redis")?,
            (None, Some((advertised, _))) => Arc::new(OneSwitchboard(advertised.clone())),
            (None, None) => unreachable!("check_composition requires Redis or a local switchboard"),
        };
        let config = butterfly_ns::Config {
            strict_challenges: settings.strict_challenges,
            limits: settings.ns_limits,
            // Most of the drain window, leaving time for the last OUT SSD to flush.
            drain_spread: drain.mul_f64(0.8),
            ..butterfly_ns::Config::default()
        };
        let deps = butterfly_ns::Deps {
            store: store.clone(),
            bus: bus.clone(),
            tickets: tickets.clone(),
            switchboards,
        };
        gateway = Some(butterfly_ns::gateway::router(
            butterfly_ns::gateway::Config {
                public_host: public_host.clone(),
                local_switchboard: local_sb,
                ..butterfly_ns::gateway::Config::default()
            },
            config.clone(),
            deps.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(butterfly_ns::run(config, deps, listener, shutdown.clone()));
    }

    if let Some(listener) = http_listener {
        let mut router = Router::new();
        if roles.has(Role::Passport) {
            router = router.merge(butterfly_passport::router(
                // Clients reach login2.srf over HTTPS on port 443 (they prepend https://
                // to DALogin), through the deployment's TLS terminator in front of this
                // listener.
                butterfly_passport::Config {
                    public_host: public_host.clone(),
                },
                butterfly_passport::Deps {
                    store: store.clone(),
                    tickets: tickets.clone(),
                },
            ));
        }
        if roles.has(Role::AddressBook) {
            router = router.merge(butterfly_addressbook::router(butterfly_addressbook::Deps {
                store: store.clone(),
                tickets: tickets.clone(),
                bus: bus.clone(),
            }));
        }
        // Offline messages: the OIM store and RSI services, beside the address book.
        if roles.has(Role::AddressBook) {
            router = router.merge(butterfly_addressbook::oim::router(
                butterfly_addressbook::oim::OimDeps {
                    store: store.clone(),
                    tickets: tickets.clone(),
                    // Redis when given (the addressbook role uses it too), so arrivals
                    // reach the recipient's gateway.
                    bus: bus.clone(),
                    verify_lock_key: true,
                },
            ));
        }
        if let Some(gateway) = gateway {
            router = router.merge(gateway);
        }
        let app = case_insensitive(router);
        let token = shutdown.clone();
        tasks.spawn(async move {
            // The gateway counts sessions per client address.
            let app = ServiceExt::<Request>::into_make_service_with_connect_info::<SocketAddr>(app);
            let serve = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "HTTP listener failed");
            }
        });
    }

    if let Some(listener) = grpc_listener {
        let token = shutdown.clone();
        let store = store.clone();
        tasks.spawn(async move {
            if let Err(e) = butterfly_rpc::serve(listener, store, token).await {
                tracing::error!(error = %e, "Address-book gRPC listener failed");
            }
        });
    }

    let token = shutdown.clone();
    let (health, health_service) = tonic_health::server::health_reporter();
    let admin_router = admin_router(ready.clone(), redis.clone(), health_service);
    tasks.spawn(async move {
        let serve = axum::serve(admin_listener, admin_router)
            .with_graceful_shutdown(async move { token.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "Admin listener failed");
        }
    });

    ready.store(true, Ordering::SeqCst);
    health.set_service_status("", ServingStatus::Serving).await;
    Ok(Running {
        ns,
        sb,
        http,
        grpc,
        admin,
        database,
        redis,
        registration,
        redis_token,
        health,
        shutdown,
        ready,
        tasks,
    })
}

/// The HTTP routers of this process behind one layer that lower-cases every request path
/// (the query is kept): clients differ in the case of the paths they ask for
/// (`/abservice/SharingService.asmx`, `/RST.srf`, …), so every route is registered in
/// lower case. The layer wraps the merged router rather than being one of its layers,
/// because a router's own layers run after it has routed.
fn case_insensitive(router: Router) -> MapRequest<Router, fn(Request) -> Request> {
    router.map_request(lower_case_path as fn(Request) -> Request)
}

fn lower_case_path(mut request: Request) -> Request {
    let uri = request.uri();
    if !uri.path().bytes().any(|b| b.is_ascii_uppercase()) {
        return request;
    }
    let mut path_and_query = uri.path().to_ascii_lowercase();
    if let Some(query) = uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    let mut parts = uri.clone().into_parts();
    // A lower-cased valid path is still a valid path.
    parts.path_and_query = path_and_query.parse().ok();
    if let Ok(lowered) = Uri::from_parts(parts) {
        *request.uri_mut() = lowered;
    }
    request
}

/// `/livez` (the process answers; never depends on Redis or Postgres), `/readyz`
/// (accepting work: false while draining, and while the Redis bus, if any, cannot
/// deliver events), `/metrics` (Prometheus text).
///
/// The same port serves `grpc.health.v1.Health` (HTTP/2), SERVING while ready, so an
/// orchestrator can probe every role the same way.
fn admin_router(
    ready: Arc<AtomicBool>,
    redis: Option<Arc<RedisBus>>,
    health: HealthServer<impl Health>,
) -> Router {
    tonic::service::Routes::new(health)
        .into_axum_router()
        .route("/livez", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let draining = !ready.load(Ordering::SeqCst);
                let bus_down = redis.as_ref().is_some_and(|r| !r.is_live());
                async move {
                    if draining {
                        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                    } else if bus_down {
                        (StatusCode::SERVICE_UNAVAILABLE, "redis unavailable\n")
                    } else {
                        (StatusCode::OK, "ready\n")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(|| async { butterfly_core::metrics::global().render() }),
        )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    #[test]
    fn paths_are_lower_cased_and_queries_kept() {
        let lowered = |uri: &str| {
            let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
            lower_case_path(request).uri().to_string()
        };
        assert_eq!(
            lowered("/ABService/SharingService.asmx"),
            "/abservice/sharingservice.asmx"
        );
        assert_eq!(lowered("/Login2.SRF?Ret=X%2FY"), "/login2.srf?Ret=X%2FY");
        assert_eq!(lowered("/rdr/pprdr.asp"), "/rdr/pprdr.asp");
        assert_eq!(
            lowered("http://Host.Example/A?b=C"),
            "http://Host.Example/a?b=C"
        );
    }
}
