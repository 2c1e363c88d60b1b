//! The embedded server, started for one test.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use butterfly::{Running, Settings};
use butterfly_core::store::Store;

use crate::client::Client;

pub struct TestCluster {
    running: Option<Running>,
    dir: PathBuf,
}

impl TestCluster {
    /// Start every role on 127.0.0.1:0 with a fresh data directory.
    pub async fn start() -> TestCluster {
        Self::start_with(|_| {}).await
    }

    /// Start with adjusted settings.
    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> TestCluster {
        let dir = std::env::temp_dir().join(format!(
            "butterfly-test-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("create test data dir");
        let mut settings = Settings::for_test(&dir);
        adjust(&mut settings);
        let running = butterfly::start(&settings)
            .await
            .expect("start embedded server");
        TestCluster {
            running: Some(running),
            dir,
        }
    }

    fn running(&self) -> &Running {
        self.running.as_ref().expect("cluster is running")
    }

    pub fn ns_addr(&self) -> std::net::SocketAddr {
        self.running().ns.expect("the notification server runs")
    }
    pub fn sb_addr(&self) -> std::net::SocketAddr {
        self.running().sb.expect("the switchboard runs")
    }
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.running().http.expect("Passport runs")
    }
    pub fn admin_addr(&self) -> std::net::SocketAddr {
        self.running().admin
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.running()
            .store()
            .expect("the embedded server has a database")
    }

    /// Create an account usable from every dialect (legacy MD5 on), with cheap hashing.
    pub async fn add_user(&self, email: &str, password: &str, name: &str) {
        self.store()
            .create_account(crate::test_account(email, password, name))
            .await
            .expect("create account");
    }

    /// A raw, not yet signed-in NS connection.
    pub async fn connect(&self, dialect: u8) -> Client {
        Client::connect(self.ns_addr(), dialect).await
    }

    /// Sign in with the dialect's own method (MD5, or TWN through our Passport over
    /// HTTP) and read the post-login lines.
    pub async fn login(&self, dialect: u8, email: &str, password: &str) -> Client {
        let mut c = self.connect(dialect).await;
        c.login(self.http_addr(), email, password).await;
        c
    }

    /// [`TestCluster::login`] through the HTTP gateway (`/gateway/gateway.dll` on the
    /// HTTP listener) instead of TCP.
    pub async fn gateway_login(&self, dialect: u8, email: &str, password: &str) -> Client {
        let mut c = crate::gateway::connect_ns(self.http_addr(), dialect);
        c.login(self.http_addr(), email, password).await;
        c
    }

    /// Stop the server as SIGTERM would.
    pub async fn shutdown(mut self) -> bool {
        let running = self.running.take().expect("running");
        running.shutdown(Duration::from_secs(10)).await
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.shutdown_token().cancel();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
