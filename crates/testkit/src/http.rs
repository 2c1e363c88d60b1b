//! HTTP for tests: the load generator's minimal HTTP/1.1 client
//! (`butterfly_loadgen::http`), failing the test when there is no answer within
//! [`crate::TIMEOUT`].

use std::future::Future;
use std::net::SocketAddr;

pub use butterfly_loadgen::http::Response;

/// Send `GET path` with extra headers to `addr`, read the whole response.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    answer(butterfly_loadgen::http::get(addr, path, headers)).await
}

/// Send `POST path` with extra headers and `body` to `addr`, read the whole response.
pub async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    answer(butterfly_loadgen::http::post(addr, path, headers, body)).await
}

async fn answer<E: std::fmt::Debug>(
    exchange: impl Future<Output = Result<Response, E>>,
) -> Response {
    tokio::time::timeout(crate::TIMEOUT, exchange)
        .await
        .expect("HTTP response in time")
        .expect("an HTTP answer")
}
