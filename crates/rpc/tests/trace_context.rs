//! Trace context crosses the wire: with an OpenTelemetry propagator and layer installed
//! (as the binary does when an exporter is configured), the client sends the caller's
//! context as `traceparent` and the server's request span continues the caller's trace.
//!
//! Its own test binary: it installs process-wide tracing state.

mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use butterfly_core::account::{Account, Email, LegacyMd5, NewAccount, UserId};
use butterfly_core::lists::{EditOutcome, ListError, ListOp, PeerView, Roster};
use butterfly_core::store::{Store, StoreError};
use butterfly_store::SqliteStore;
use common::{BOUND, Server};
use opentelemetry::trace::{TraceContextExt as _, TraceId, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;

/// The trace id of the current span, as OpenTelemetry sees it.
fn current_trace_id() -> TraceId {
    tracing::Span::current()
        .context()
        .span()
        .span_context()
        .trace_id()
}

/// A store that notes the trace its `roster` calls run in.
struct Recording {
    inner: SqliteStore,
    traces: Mutex<Vec<TraceId>>,
}

#[async_trait]
impl Store for Recording {
    async fn create_account(&self, new: NewAccount) -> Result<Account, StoreError> {
        self.inner.create_account(new).await
    }
    async fn account_by_email(&self, email: &Email) -> Result<Option<Account>, StoreError> {
        self.inner.account_by_email(email).await
    }
    async fn account_by_id(&self, id: UserId) -> Result<Option<Account>, StoreError> {
        self.inner.account_by_id(id).await
    }
    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.inner.accounts().await
    }
    async fn set_password(
        &self,
        email: &Email,
        password_hash: String,
        legacy_md5: Option<LegacyMd5>,
    ) -> Result<bool, StoreError> {
        self.inner
            .set_password(email, password_hash, legacy_md5)
            .await
    }
    async fn delete_account(&self, email: &Email) -> Result<bool, StoreError> {
        self.inner.delete_account(email).await
    }
    async fn roster(&self, owner: UserId) -> Result<Roster, StoreError> {
        self.traces.lock().unwrap().push(current_trace_id());
        self.inner.roster(owner).await
    }
    async fn peer_view(&self, owner: UserId, viewer: UserId) -> Result<PeerView, StoreError> {
        self.inner.peer_view(owner, viewer).await
    }
    async fn edit(
        &self,
        owner: UserId,
        op: ListOp,
    ) -> Result<Result<EditOutcome, ListError>, StoreError> {
        self.inner.edit(owner, op).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_continues_the_callers_trace() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // No exporter: spans get real ids and go nowhere.
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    // 1. The header arrives: a server-side interceptor records the metadata.
    let (remote, seen, raw_server) = common::traceparent_recorder().await;
    let caller = tracing::info_span!("caller");
    let trace = caller.context().span().span_context().trace_id();
    assert_ne!(trace, TraceId::INVALID);
    tokio::time::timeout(BOUND, remote.accounts().instrument(caller))
        .await
        .unwrap()
        .unwrap();
    let headers = std::mem::take(&mut *seen.lock().unwrap());
    let [Some(header)] = headers.as_slice() else {
        panic!("one call with a traceparent expected: {headers:?}");
    };
    assert!(
        header.starts_with(&format!("00-{trace}-")),
        "traceparent {header:?} is not in trace {trace}"
    );
    raw_server.abort();

    // 2. `serve` extracts it: the store runs inside the caller's trace.
    let recording = Arc::new(Recording {
        inner: SqliteStore::open_url("sqlite::memory:").await.unwrap(),
        traces: Mutex::new(Vec::new()),
    });
    let server = Server::start(recording.clone()).await;
    let remote = server.client();
    let caller = tracing::info_span!("caller");
    let trace = caller.context().span().span_context().trace_id();
    tokio::time::timeout(BOUND, remote.roster(UserId(1)).instrument(caller))
        .await
        .unwrap()
        .unwrap();
    // A call outside any span starts a trace of its own on the server.
    tokio::time::timeout(BOUND, remote.roster(UserId(1)))
        .await
        .unwrap()
        .unwrap();
    let traces = std::mem::take(&mut *recording.traces.lock().unwrap());
    assert_eq!(traces.len(), 2);
    assert_eq!(traces[0], trace, "the server span's parent is the caller's");
    assert_ne!(traces[1], trace);
    assert_ne!(traces[1], TraceId::INVALID);
    server.stop().await;
}
