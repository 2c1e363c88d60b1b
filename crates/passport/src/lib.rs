//! The Passport role: where clients prove their password and get the signed tickets they
//! then present to the NS and the web services.
//!
//! * MSN Messenger 5–7.5 (MSNP8–12, `USR TWN` login): the nexus (`GET /rdr/pprdr.asp`),
//!   which tells a client where to sign in, and Passport 1.4 (`GET /login2.srf`), which
//!   checks the password and hands back the ticket for `USR TWN S`. Protocol: LOGIN.md
//!   §2.2, SOAP.md §4.
//! * Windows Live Messenger 8.x–2009 (MSNP13–18): the token service, `POST /RST.srf`
//!   (SOAP 1.1) and `POST /RST2.srf` (SOAP 1.2), which checks the password and answers one
//!   ticket per service asked for (NS sign-in with its binary secret for `USR SSO`,
//!   address book, storage, offline messages, …). Protocol: LOGIN.md §3, SOAP.md §1, issue
//!   4 spec §1; see the `rst` module.
//!
//! Architecture invariant: accounts come only through the [`Store`] port and tickets only
//! through the [`Tickets`] port, so this crate knows no database and no ticket format.
//! It does not terminate TLS either (clients insist on HTTPS; that is the listener's or the
//! deployment's job), and it never logs passwords — sign-in names at debug level only.

mod credentials;
mod handlers;
mod rst;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use butterfly_core::store::Store;
use butterfly_core::tickets::Tickets;

pub use handlers::MAX_AUTHORIZATION_LEN;
pub use rst::MAX_RST_BODY_LEN;

/// Canonical paths (lower case; any other case is accepted too, see [`router`]).
pub const NEXUS_PATH: &str = "/rdr/pprdr.asp";
pub const LOGIN_PATH: &str = "/login2.srf";
/// The token service, SOAP 1.1 (WLM 8.x). Either path answers either dialect.
pub const RST_PATH: &str = "/rst.srf";
/// The token service, SOAP 1.2 (WLM 2009).
pub const RST2_PATH: &str = "/rst2.srf";

/// Settings of the Passport role.
#[derive(Debug, Clone)]
pub struct Config {
    /// `host[:port]` clients reach this HTTP listener at (e.g. `127.0.0.1:8080`); written
    /// into the nexus answer as `DALogin=<public_host>/login2.srf`. Clients prepend
    /// `https://` themselves, so a scheme given here is dropped.
    pub public_host: String,
}

/// What the Passport role needs from the rest of the system.
#[derive(Clone)]
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub tickets: Arc<dyn Tickets>,
}

/// The Passport HTTP routes; the binary merges this into the HTTP listener's router.
///
/// Paths are case-insensitive (DESIGN.md): the canonical lower-case paths are ordinary
/// routes, and a fallback lower-cases any other path and serves ours, answering 404 for
/// the rest. Note that axum allows only one fallback per merged `Router`: a router merged
/// with this one must not set its own (axum panics at startup if it does). If several
/// roles need case-insensitive paths, lower-case the path once in front of the merged
/// router instead and drop this fallback.
pub fn router(config: Config, deps: Deps) -> Router {
    let state = Arc::new(handlers::Shared::new(&config, deps));
    Router::new()
        .route(NEXUS_PATH, get(handlers::nexus))
        .route(LOGIN_PATH, get(handlers::login).post(handlers::login))
        .route(RST_PATH, post(rst::rst))
        .route(RST2_PATH, post(rst::rst2))
        .fallback(handlers::any_case)
        .with_state(state)
}
