//! The token-service exchange of Windows Live Messenger, as the load generator's clients
//! perform it (`butterfly_loadgen::rst`: the request as the clients write it, and the
//! answer's tokens), with a `tokens` that panics on a failed connection, as tests want.

use std::net::SocketAddr;

pub use butterfly_loadgen::rst::{Form, Token, parse, request};

/// Ask the token service at `http` for `addresses`. `Err` carries the HTTP status and
/// body when no token came back (a fault).
pub async fn tokens(
    http: SocketAddr,
    form: Form,
    email: &str,
    password: &str,
    addresses: &[(&str, &str)],
) -> Result<Vec<Token>, (u16, String)> {
    butterfly_loadgen::rst::tokens(http, form, email, password, addresses)
        .await
        .expect("an HTTP answer from the token service")
}
