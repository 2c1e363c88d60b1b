//! Trace-context propagation over gRPC metadata (W3C `traceparent`/`tracestate`).
//!
//! The client injects the OpenTelemetry context of the current `tracing` span; the server
//! extracts it and makes it the parent of the request span. Both go through the global
//! propagator ([`opentelemetry::global::get_text_map_propagator`]), which is a no-op
//! until the binary installs one (with an exporter), and through `tracing-opentelemetry`,
//! whose span extensions do nothing when no OpenTelemetry layer is in the subscriber. So
//! without an exporter configured, nothing is injected and nothing is extracted.

use opentelemetry::propagation::{Extractor, Injector};
use tonic::codegen::http;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Client interceptor: writes the current span's context into the request metadata.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct InjectTraceContext;

impl Interceptor for InjectTraceContext {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let context = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut MetadataInjector(request.metadata_mut()));
        });
        Ok(request)
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // A propagator only writes header-safe ASCII; anything else is skipped.
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The span of one incoming request, child of the caller's span when the request carries
/// a trace context.
pub(crate) fn server_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = path,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    // Fails only when no OpenTelemetry layer is installed: then there is nothing to link.
    let _ = span.set_parent(parent);
    span
}
