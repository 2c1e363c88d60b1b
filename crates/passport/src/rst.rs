//! The WLM token service: `POST /RST.srf` (WLM 8.x, SOAP 1.1) and `POST /RST2.srf`
//! (WLM 2009, SOAP 1.2). The client sends its sign-in name and password with a list of
//! services it wants tokens for; we check the password like `login2.srf` does and answer
//! one token per service (spec §1; LOGIN.md §3, SOAP.md §1).
//!
//! * Dialect: taken from the request's envelope namespace, so either path answers either
//!   dialect; the path only picks the dialect of the fault when the request is too broken
//!   to tell.
//! * Tokens: `t=<ticket>&p=` with one ticket audience per service ([`Service::for_address`]);
//!   the `messengerclear.live.com` one comes with the binary secret derived from its ticket
//!   ([`Tickets::binary_secret`]), which the NS recomputes to check the `USR SSO S` proof.
//! * Statuses: a wrong password or unknown user gets the `FailedAuthentication` fault with
//!   HTTP **200**, in both dialects — that is what Escargot answers and real WLM 8.5/2009
//!   clients are known to show as "wrong password" (spec §11.1: whether 500 works is
//!   unverified). An invalid request gets the "Invalid Request" fault with the SOAP
//!   binding's status (SOAP 1.1: 500; SOAP 1.2 `Sender`: 400): no real client sends one.
//!   A store failure gets a bare 500, so the client reports a service error rather than a
//!   wrong password (as `login2.srf`). A body over [`MAX_RST_BODY_LEN`] gets 413.
//!
//! [`Service::for_address`]: butterfly_core::tickets::Service::for_address
//! [`Tickets::binary_secret`]: butterfly_core::tickets::Tickets::binary_secret

mod request;
mod response;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use butterfly_core::{Email, UserId};
use futures::StreamExt;
use tracing::{Instrument, Span, debug, info, info_span};

use crate::credentials::{Credentials, MAX_PASSWORD_CHARS};
use crate::handlers::{Shared, Unavailable, no_store};
pub(crate) use request::Dialect;
use request::TokenRequest;

/// Largest request body read, in bytes; larger gets 413. A real request is 3–6 KiB.
pub const MAX_RST_BODY_LEN: usize = 64 * 1024;

const TEXT_XML: HeaderValue = HeaderValue::from_static("text/xml; charset=utf-8");

/// `POST /RST.srf`.
pub(crate) async fn rst(State(st): State<Arc<Shared>>, req: Request) -> Response {
    serve(st, req, Dialect::Rst).await
}

/// `POST /RST2.srf`.
pub(crate) async fn rst2(State(st): State<Arc<Shared>>, req: Request) -> Response {
    serve(st, req, Dialect::Rst2).await
}

/// Answer a token request; `by_path` is the dialect the path suggests (used only for the
/// fault of a request whose envelope cannot be read).
pub(crate) async fn serve(st: Arc<Shared>, req: Request, by_path: Dialect) -> Response {
    let span = info_span!(
        "passport_rst",
        dialect = tracing::field::Empty,
        user_id = tracing::field::Empty
    );
    token_request(&st, req, by_path).instrument(span).await
}

async fn token_request(st: &Shared, req: Request, by_path: Dialect) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_RST_BODY_LEN as u64) {
        info!(result = "too-large", "Token request refused");
        return (StatusCode::PAYLOAD_TOO_LARGE, [no_store()]).into_response();
    }
    let body = match read_body(req.into_body()).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            info!(result = "too-large", "Token request refused");
            return (StatusCode::PAYLOAD_TOO_LARGE, [no_store()]).into_response();
        }
        Err(BodyError::Broken) => {
            info!(result = "broken-body", "Token request refused");
            return (StatusCode::BAD_REQUEST, [no_store()]).into_response();
        }
    };
    let request = match request::parse(&body) {
        Ok(request) => request,
        Err(invalid) => {
            let dialect = invalid.dialect.unwrap_or(by_path);
            Span::current().record("dialect", dialect.as_str());
            info!(
                result = "malformed",
                reason = invalid.reason,
                "Token request refused"
            );
            return invalid_request(dialect);
        }
    };
    let dialect = request.dialect;
    Span::current().record("dialect", dialect.as_str());
    for token in &request.tokens {
        debug!(
            id = token.id.as_deref().unwrap_or(""),
            address = %token.address,
            policy = token.policy.as_deref().unwrap_or(""),
            "Token requested"
        );
    }
    let Some(creds) = credentials(&request) else {
        // Not a possible account or password: refused without spending a hash, like
        // login2.srf (this tells nothing about which accounts exist).
        info!(result = "failed", "Token request refused");
        return xml(StatusCode::OK, response::failed_authentication(dialect));
    };
    let sign_in = creds.sign_in.clone();
    match st.authenticate(creds).await {
        Ok(Some(account)) => {
            let UserId(uid) = account.id;
            Span::current().record("user_id", uid);
            let subject = response::Subject {
                account: &account,
                peer,
            };
            let body =
                response::success(dialect, &subject, &request.tokens, st.tickets(), unix_now());
            debug!(sign_in = %account.email, "Tokens issued");
            info!(
                result = "success",
                tokens = request.tokens.len(),
                "Token request"
            );
            xml(StatusCode::OK, body)
        }
        Ok(None) => {
            debug!(sign_in = %sign_in, "Wrong password or unknown sign-in name");
            info!(result = "failed", "Token request refused");
            xml(StatusCode::OK, response::failed_authentication(dialect))
        }
        Err(Unavailable) => {
            info!(result = "error", "Token request not possible");
            (StatusCode::INTERNAL_SERVER_ERROR, [no_store()]).into_response()
        }
    }
}

/// The sign-in name and the password spellings worth verifying: the password exactly as
/// sent, then trimmed if that differs (a client that pretty-prints its request). `None`
/// when the name cannot be an account or no spelling can be a password.
fn credentials(request: &TokenRequest) -> Option<Credentials> {
    let sign_in = Email::parse(&request.username).ok()?;
    let usable = |p: &str| !p.is_empty() && p.chars().count() <= MAX_PASSWORD_CHARS;
    let exact = request.password.as_str();
    let trimmed = exact.trim();
    let passwords: Vec<String> = [exact, trimmed]
        .into_iter()
        .enumerate()
        .filter(|&(i, p)| usable(p) && (i == 0 || p != exact))
        .map(|(_, p)| p.to_owned())
        .collect();
    (!passwords.is_empty()).then_some(Credentials { sign_in, passwords })
}

fn invalid_request(dialect: Dialect) -> Response {
    let status = match dialect {
        Dialect::Rst => StatusCode::INTERNAL_SERVER_ERROR,
        Dialect::Rst2 => StatusCode::BAD_REQUEST,
    };
    xml(status, response::invalid_request(dialect))
}

fn xml(status: StatusCode, body: String) -> Response {
    (status, [(CONTENT_TYPE, TEXT_XML), no_store()], body).into_response()
}

enum BodyError {
    TooLarge,
    /// The client went away or sent a broken chunked body.
    Broken,
}

/// Read the body, stopping as soon as it grows past [`MAX_RST_BODY_LEN`] (a chunked body
/// declares no length).
async fn read_body(body: Body) -> Result<Vec<u8>, BodyError> {
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes = chunk.map_err(|_| BodyError::Broken)?;
        if out.len() + chunk.len() > MAX_RST_BODY_LEN {
            return Err(BodyError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use request::RequestedToken;

    fn req(username: &str, password: &str) -> TokenRequest {
        TokenRequest {
            dialect: Dialect::Rst2,
            username: username.into(),
            password: password.into(),
            tokens: vec![RequestedToken {
                id: None,
                address: "contacts.msn.com".into(),
                policy: None,
            }],
        }
    }

    #[test]
    fn password_spellings() {
        let c = credentials(&req("Bob@Example.com", " pw ")).unwrap();
        assert_eq!(c.sign_in.as_str(), "bob@example.com");
        assert_eq!(c.passwords, [" pw ", "pw"]);
        let c = credentials(&req("bob@example.com", "pw")).unwrap();
        assert_eq!(c.passwords, ["pw"]);
        assert_eq!(credentials(&req("bob", "pw")), None);
        // Blanks only: the exact spelling is still worth a try.
        let c = credentials(&req("bob@example.com", "   ")).unwrap();
        assert_eq!(c.passwords, ["   "]);
        let long = "x".repeat(MAX_PASSWORD_CHARS + 1);
        assert_eq!(credentials(&req("bob@example.com", &long)), None);
    }
}
