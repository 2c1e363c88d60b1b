//! Helpers shared by the test binaries: an address book on `127.0.0.1:0`.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use butterfly_core::store::Store;
use butterfly_rpc::{RemoteOptions, RemoteStore};
use butterfly_store::SqliteStore;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Upper bound for anything a test waits on, so a hang fails instead of stalling.
pub const BOUND: Duration = Duration::from_secs(30);

/// A running address-book server.
pub struct Server {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    pub async fn start(store: Arc<dyn Store>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(butterfly_rpc::serve(listener, store, shutdown.clone()));
        Server {
            addr,
            shutdown,
            task,
        }
    }

    /// A server over a fresh in-memory SQLite store.
    pub async fn sqlite() -> Server {
        let store = SqliteStore::open_url("sqlite::memory:").await.unwrap();
        Server::start(Arc::new(store)).await
    }

    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> RemoteStore {
        RemoteStore::connect_lazy(&self.uri(), RemoteOptions::default()).unwrap()
    }

    /// Shut down and wait (bounded) for `serve` to return.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(BOUND, self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// An address book over an empty in-memory store whose server records the `traceparent`
/// metadata of every call (`None` when absent). Returns a client, the record and the
/// server task (abort it to stop).
pub async fn traceparent_recorder() -> (
    RemoteStore,
    Arc<std::sync::Mutex<Vec<Option<String>>>>,
    JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = {
        let seen = seen.clone();
        move |request: tonic::Request<()>| {
            let header = request
                .metadata()
                .get("traceparent")
                .map(|v| v.to_str().unwrap().to_string());
            seen.lock().unwrap().push(header);
            Ok(request)
        }
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = Arc::new(SqliteStore::open_url("sqlite::memory:").await.unwrap());
    let service = tonic::service::interceptor::InterceptedService::new(
        butterfly_rpc::AddressBookService::new(store).into_server(),
        record,
    );
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let remote = RemoteStore::connect_lazy(&addr.to_string(), RemoteOptions::default()).unwrap();
    (remote, seen, server)
}
