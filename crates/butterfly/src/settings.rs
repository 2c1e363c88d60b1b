//! Settings for `butterfly serve`: built-in defaults, then the TOML file (`--config`),
//! then environment (`BUTTERFLY_*`), then flags — the later wins. clap handles the last
//! two; [`Settings::resolve`] lays them over the file and the defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use butterfly_core::account::PasswordCost;
use clap::Args;
use msnp::codec::Limits;
use serde::Deserialize;

use crate::roles::Roles;

/// Options shared by every command (`serve`, `user`, `migrate`); accepted before or after
/// the subcommand.
#[derive(Debug, Clone, Args, Default)]
pub struct CommonArgs {
    /// Where the SQLite database and the ticket key live.
    #[arg(long, env = "BUTTERFLY_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Database URL (default: SQLite in the data directory).
    #[arg(long, env = "BUTTERFLY_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// A TOML file with any of the settings (keys as the flags, with `_` for `-`).
    #[arg(long, env = "BUTTERFLY_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// argon2id memory cost in KiB for new password hashes.
    #[arg(long, env = "BUTTERFLY_ARGON2_MEMORY_KIB", global = true)]
    pub argon2_memory_kib: Option<u32>,
    /// argon2id iterations for new password hashes.
    #[arg(long, env = "BUTTERFLY_ARGON2_ITERATIONS", global = true)]
    pub argon2_iterations: Option<u32>,
}

/// Options of `butterfly serve`.
#[derive(Debug, Clone, Args, Default)]
pub struct ServeArgs {
    /// Notification server listen address.
    #[arg(long, env = "BUTTERFLY_NS_LISTEN")]
    pub ns_listen: Option<String>,
    /// Switchboard listen address.
    #[arg(long, env = "BUTTERFLY_SB_LISTEN")]
    pub sb_listen: Option<String>,
    /// HTTP listen address (Passport nexus and login, address-book SOAP services).
    #[arg(long, env = "BUTTERFLY_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// Admin listen address: /livez, /readyz, /metrics.
    #[arg(long, env = "BUTTERFLY_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Host name or address clients use to reach this server (written into XFR, RNG and
    /// the Passport URLs).
    #[arg(long, env = "BUTTERFLY_PUBLIC_HOST")]
    pub public_host: Option<String>,
    /// Redis URL: presence, session directory, shard registry and pub/sub of the
    /// distributed mode (default: the in-process bus of the embedded mode).
    #[arg(long, env = "BUTTERFLY_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel, so several networks can share a Redis.
    #[arg(long, env = "BUTTERFLY_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// Use sharded pub/sub (SSUBSCRIBE/SPUBLISH, Redis 7+) on a single Redis server.
    /// Implied by --redis-cluster.
    #[arg(long, env = "BUTTERFLY_REDIS_SHARDED")]
    pub redis_sharded: Option<bool>,
    /// --redis-url names a Redis Cluster (one or more seed nodes, comma-separated):
    /// commands go to the node owning each key, pub/sub is sharded.
    #[arg(long, env = "BUTTERFLY_REDIS_CLUSTER")]
    pub redis_cluster: Option<bool>,
    /// Roles to run, comma-separated: ns-gateway, switchboard, passport, addressbook,
    /// or all (default).
    #[arg(long, env = "BUTTERFLY_TARGET")]
    pub target: Option<String>,
    /// gRPC listen address of the address-book role (when it runs as its own process).
    #[arg(long, env = "BUTTERFLY_GRPC_LISTEN")]
    pub grpc_listen: Option<String>,
    /// Address-book gRPC URL (e.g. http://addressbook:50051) for gateways, switchboards
    /// and Passport that run without the address-book role.
    #[arg(long, env = "BUTTERFLY_ADDRESSBOOK_URL")]
    pub addressbook_url: Option<String>,
    /// This switchboard shard's stable id in the registry (default: a random id).
    #[arg(long, env = "BUTTERFLY_SHARD_ID")]
    pub shard_id: Option<String>,
    /// `host:port` clients use to reach this switchboard shard (default: the public
    /// host and the switchboard's listening port).
    #[arg(long, env = "BUTTERFLY_SB_ADVERTISE")]
    pub sb_advertise: Option<String>,
    /// Seconds after which a silent gateway's users are shown offline and a silent
    /// switchboard shard leaves the registry.
    #[arg(long, env = "BUTTERFLY_LEASE_SECONDS")]
    pub lease_seconds: Option<u64>,
    /// Secret (32+ characters) that signs tickets and switchboard cookies; by default a
    /// random key kept in the data directory.
    #[arg(long, env = "BUTTERFLY_TICKET_SECRET")]
    pub ticket_secret: Option<String>,
    /// Disconnect clients that answer a challenge (CHL/QRY) wrongly.
    #[arg(long, env = "BUTTERFLY_STRICT_CHALLENGES")]
    pub strict_challenges: Option<bool>,
    /// Seconds to wait for connections to close on shutdown.
    #[arg(long, env = "BUTTERFLY_DRAIN_SECONDS")]
    pub drain_seconds: Option<u64>,
    /// Longest accepted command line, in bytes (NS and switchboard).
    #[arg(long, env = "BUTTERFLY_MAX_LINE_BYTES")]
    pub max_line_bytes: Option<usize>,
    /// Largest notification-server payload (UUX, QRY, …), in bytes.
    #[arg(long, env = "BUTTERFLY_NS_MAX_PAYLOAD_BYTES")]
    pub ns_max_payload_bytes: Option<usize>,
    /// Largest switchboard message, in bytes (the official server allowed 1664).
    #[arg(long, env = "BUTTERFLY_SB_MAX_PAYLOAD_BYTES")]
    pub sb_max_payload_bytes: Option<usize>,
}

/// The same settings as a TOML file may give them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    argon2_memory_kib: Option<u32>,
    argon2_iterations: Option<u32>,
    ns_listen: Option<String>,
    sb_listen: Option<String>,
    http_listen: Option<String>,
    admin_listen: Option<String>,
    public_host: Option<String>,
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    redis_sharded: Option<bool>,
    redis_cluster: Option<bool>,
    target: Option<String>,
    grpc_listen: Option<String>,
    addressbook_url: Option<String>,
    shard_id: Option<String>,
    sb_advertise: Option<String>,
    lease_seconds: Option<u64>,
    ticket_secret: Option<String>,
    strict_challenges: Option<bool>,
    drain_seconds: Option<u64>,
    max_line_bytes: Option<usize>,
    ns_max_payload_bytes: Option<usize>,
    sb_max_payload_bytes: Option<usize>,
}

/// Fully resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub password_cost: PasswordCost,
    pub ns_listen: String,
    pub sb_listen: String,
    pub http_listen: String,
    pub admin_listen: String,
    pub public_host: String,
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    pub redis_sharded: bool,
    pub redis_cluster: bool,
    pub target: String,
    pub roles: Roles,
    pub grpc_listen: String,
    pub addressbook_url: Option<String>,
    pub shard_id: Option<String>,
    pub sb_advertise: Option<String>,
    pub lease: Duration,
    pub ticket_secret: Option<String>,
    pub strict_challenges: bool,
    pub drain_seconds: u64,
    pub ns_limits: Limits,
    pub sb_limits: Limits,
}

impl Settings {
    pub fn resolve(common: &CommonArgs, serve: &ServeArgs) -> anyhow::Result<Settings> {
        let file = match &common.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let defaults = PasswordCost::default();
        let max_line = serve.max_line_bytes.or(file.max_line_bytes);
        if max_line.is_some_and(|n| n < 512) {
            anyhow::bail!(
                "--max-line-bytes must be at least 512 (a Passport ticket line is ~400 bytes)"
            );
        }
        let target = serve
            .target
            .clone()
            .or(file.target)
            .unwrap_or_else(|| "all".into());
        let roles = Roles::parse(&target).map_err(anyhow::Error::msg)?;
        let lease = serve.lease_seconds.or(file.lease_seconds).unwrap_or(15);
        if lease == 0 {
            anyhow::bail!("--lease-seconds must be at least 1");
        }
        Ok(Settings {
            data_dir: common
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            database_url: common.database_url.clone().or(file.database_url),
            password_cost: PasswordCost {
                memory_kib: common
                    .argon2_memory_kib
                    .or(file.argon2_memory_kib)
                    .unwrap_or(defaults.memory_kib),
                iterations: common
                    .argon2_iterations
                    .or(file.argon2_iterations)
                    .unwrap_or(defaults.iterations),
                parallelism: defaults.parallelism,
            },
            ns_listen: serve
                .ns_listen
                .clone()
                .or(file.ns_listen)
                .unwrap_or_else(|| "0.0.0.0:1863".into()),
            sb_listen: serve
                .sb_listen
                .clone()
                .or(file.sb_listen)
                .unwrap_or_else(|| "0.0.0.0:1864".into()),
            http_listen: serve
                .http_listen
                .clone()
                .or(file.http_listen)
                .unwrap_or_else(|| "0.0.0.0:8080".into()),
            admin_listen: serve
                .admin_listen
                .clone()
                .or(file.admin_listen)
                .unwrap_or_else(|| "127.0.0.1:9090".into()),
            public_host: serve
                .public_host
                .clone()
                .or(file.public_host)
                .unwrap_or_else(|| "127.0.0.1".into()),
            redis_url: serve.redis_url.clone().or(file.redis_url),
            redis_prefix: serve
                .redis_prefix
                .clone()
                .or(file.redis_prefix)
                .unwrap_or_else(|| "bf:".into()),
            redis_sharded: serve.redis_sharded.or(file.redis_sharded).unwrap_or(false),
            redis_cluster: serve.redis_cluster.or(file.redis_cluster).unwrap_or(false),
            target,
            roles,
            grpc_listen: serve
                .grpc_listen
                .clone()
                .or(file.grpc_listen)
                .unwrap_or_else(|| "0.0.0.0:50051".into()),
            addressbook_url: serve.addressbook_url.clone().or(file.addressbook_url),
            shard_id: serve.shard_id.clone().or(file.shard_id),
            sb_advertise: serve.sb_advertise.clone().or(file.sb_advertise),
            lease: Duration::from_secs(lease),
            ticket_secret: serve.ticket_secret.clone().or(file.ticket_secret),
            strict_challenges: serve
                .strict_challenges
                .or(file.strict_challenges)
                .unwrap_or(true),
            drain_seconds: serve.drain_seconds.or(file.drain_seconds).unwrap_or(10),
            ns_limits: Limits {
                max_line: max_line.unwrap_or(Limits::NS.max_line),
                max_payload: serve
                    .ns_max_payload_bytes
                    .or(file.ns_max_payload_bytes)
                    .unwrap_or(Limits::NS.max_payload),
            },
            sb_limits: Limits {
                max_line: max_line.unwrap_or(Limits::SB.max_line),
                max_payload: serve
                    .sb_max_payload_bytes
                    .or(file.sb_max_payload_bytes)
                    .unwrap_or(Limits::SB.max_payload),
            },
        })
    }

    /// Settings for a test: everything on 127.0.0.1:0 under `data_dir`, cheap hashing.
    pub fn for_test(data_dir: &Path) -> Settings {
        Settings {
            data_dir: data_dir.to_path_buf(),
            database_url: None,
            password_cost: PasswordCost {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            ns_listen: "127.0.0.1:0".into(),
            sb_listen: "127.0.0.1:0".into(),
            http_listen: "127.0.0.1:0".into(),
            admin_listen: "127.0.0.1:0".into(),
            public_host: "127.0.0.1".into(),
            redis_url: None,
            redis_prefix: "bf:".into(),
            redis_sharded: false,
            redis_cluster: false,
            target: "all".into(),
            roles: Roles::parse("all").expect("all is a target"),
            grpc_listen: "127.0.0.1:0".into(),
            addressbook_url: None,
            shard_id: None,
            sb_advertise: None,
            lease: Duration::from_secs(15),
            ticket_secret: None,
            strict_challenges: true,
            drain_seconds: 5,
            ns_limits: Limits::NS,
            sb_limits: Limits::SB,
        }
    }

    /// The embedded composition: every role, no Redis, no Postgres-only roles split out.
    pub fn is_embedded(&self) -> bool {
        self.roles.is_all() && self.redis_url.is_none()
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_flags_over_file_over_defaults() {
        let dir = std::env::temp_dir().join(format!("butterfly-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("b.toml");
        std::fs::write(
            &file,
            "ns_listen = \"127.0.0.1:1\"\nsb_listen = \"127.0.0.1:2\"\n",
        )
        .unwrap();
        let common = CommonArgs {
            config: Some(file.clone()),
            ..Default::default()
        };
        let serve = ServeArgs {
            sb_listen: Some("127.0.0.1:3".into()),
            ..Default::default()
        };
        let s = Settings::resolve(&common, &serve).unwrap();
        assert_eq!(
            (
                s.ns_listen.as_str(),
                s.sb_listen.as_str(),
                s.http_listen.as_str()
            ),
            ("127.0.0.1:1", "127.0.0.1:3", "0.0.0.0:8080")
        );
        std::fs::write(&file, "nope = 1\n").unwrap();
        let err = Settings::resolve(&common, &ServeArgs::default()).unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
