//! The nexus and login2.srf handlers, and the answers real clients parse.
//!
//! Client facts these formats rest on (MS-PASS §2.2; clients read with `strstr`/`split`):
//! * Nexus: clients take the text after `DALogin=` up to the next `,`, split host from path
//!   at the first `/`, and prepend `https://` — so no scheme, and some naive clients even
//!   take "the second item", hence `DARealm` first and `DALogin` second.
//! * Success: clients search `from-PP='` and take everything up to the next `'`; some look
//!   for `',` after it and for a `,` after `da-status=success`, so the value keeps the real
//!   Passport layout (`tname`s before, `ru` after from-PP). The ticket must therefore not
//!   contain `'` or `,` (a JWT is base64url and dots).
//! * Failure: processed only with status 401, in `WWW-Authenticate` (MS-PASS §2.2.2; real
//!   Passport and Escargot send nothing else). libpurple shows the URL-decoded text after
//!   `cbtxt=` up to the end of the line, so `cbtxt` comes last and is percent-encoded.
//!   `da-status=failed` (not `failed-noretry`) lets the client prompt again.

use std::sync::{Arc, OnceLock};

use axum::extract::{Request, State};
use axum::http::header::{ALLOW, AUTHORIZATION, CACHE_CONTROL, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use butterfly_core::account::{PasswordCost, verify_password};
use butterfly_core::tickets::Tickets;
use butterfly_core::{Account, UserId};
use tokio::sync::Semaphore;
use tracing::{Instrument, Span, debug, error, info, info_span};

use crate::credentials::{self, Credentials};
use crate::rst::{self, Dialect};
use crate::{Config, Deps, LOGIN_PATH, NEXUS_PATH, RST_PATH, RST2_PATH};

/// Longest `Authorization` header (all values together) we read; longer gets 400. A real
/// one is about 300 bytes (email ≤ 129, password ≤ 128 characters, the policy string).
pub const MAX_AUTHORIZATION_LEN: usize = 4096;

const PASSPORT_URLS: HeaderName = HeaderName::from_static("passporturls");
const AUTHENTICATION_INFO: HeaderName = HeaderName::from_static("authentication-info");

/// The failure challenge; `cburl` and `cbtxt` (percent-encoded, shown by some clients)
/// are appended when the public host is usable.
const FAILED_PREFIX: &str = "Passport1.4 da-status=failed,srealm=Passport.NET,ts=-3,prompt";
const FAILED_TEXT: &str = "The%20e-mail%20address%20or%20password%20is%20incorrect.";

pub(crate) struct Shared {
    deps: Deps,
    /// `PassportURLs` value, built once; `None` when `public_host` cannot go in a header.
    passport_urls: Option<HeaderValue>,
    failed: HeaderValue,
    /// argon2 is CPU- and memory-heavy: at most one verification per core at a time, so a
    /// burst of sign-ins queues here instead of filling the blocking pool (and RAM).
    hashing: Semaphore,
}

impl Shared {
    pub(crate) fn new(config: &Config, deps: Deps) -> Self {
        let host = public_host(&config.public_host);
        // Written into comma-separated header lists: no ',', no path, no blanks.
        let usable = !host.is_empty() && !host.contains([',', '/', ' ', '\'']);
        let passport_urls = usable
            .then(|| {
                HeaderValue::from_str(&format!(
                    "DARealm=Passport.Net,DALogin={host}{LOGIN_PATH},DAReg=http://{host}/reg.srf,\
                     Properties=https://{host}/editprof.srf,Privacy=http://{host}/privacy.htm,\
                     GeneralRedir=http://{host}/redir.asp,Help=http://{host}/help.htm,\
                     ConfigVersion=11"
                ))
                .ok()
            })
            .flatten();
        if passport_urls.is_none() {
            error!(public_host = %config.public_host, "Public host cannot be written into the nexus answer; nexus will answer 500");
        }
        let failed = usable
            .then(|| {
                HeaderValue::from_str(&format!(
                    "{FAILED_PREFIX},cburl=http://{host}/passport.gif,cbtxt={FAILED_TEXT}"
                ))
                .ok()
            })
            .flatten()
            .unwrap_or(HeaderValue::from_static(FAILED_PREFIX));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Shared {
            deps,
            passport_urls,
            failed,
            hashing: Semaphore::new(cores),
        }
    }

    fn refused(&self) -> Response {
        (
            StatusCode::UNAUTHORIZED,
            [(WWW_AUTHENTICATE, self.failed.clone()), no_store()],
        )
            .into_response()
    }

    pub(crate) fn tickets(&self) -> &dyn Tickets {
        self.deps.tickets.as_ref()
    }

    /// Look the account up and verify the password off the async runtime.
    pub(crate) async fn authenticate(
        &self,
        creds: Credentials,
    ) -> Result<Option<Account>, Unavailable> {
        let account = self
            .deps
            .store
            .account_by_email(&creds.sign_in)
            .await
            .map_err(|e| {
                error!(error = %e, "Account lookup failed");
                Unavailable
            })?;
        let phc = account.as_ref().map(|a| a.password_hash.clone());
        let _permit = self.hashing.acquire().await.map_err(|_| Unavailable)?;
        let span = Span::current();
        let ok = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            match phc {
                Some(phc) => creds.passwords.iter().any(|p| verify_password(&phc, p)),
                None => {
                    // Spend the same work for an unknown user, so timing does not tell
                    // which sign-in names exist.
                    if let Some(dummy) = dummy_hash() {
                        for p in &creds.passwords {
                            verify_password(dummy, p);
                        }
                    }
                    false
                }
            }
        })
        .await
        .map_err(|e| {
            error!(error = %e, "Password check task failed");
            Unavailable
        })?;
        Ok(account.filter(|_| ok))
    }
}

/// Something on our side failed (store, task); the client gets 500, not "wrong password".
pub(crate) struct Unavailable;

/// A password hash with the default cost, to verify against when the user is unknown.
fn dummy_hash() -> Option<&'static str> {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    DUMMY
        .get_or_init(|| PasswordCost::default().hash("butterfly-dummy").ok())
        .as_deref()
}

/// `https://host:1/` → `host:1`: clients add the scheme themselves.
fn public_host(configured: &str) -> &str {
    let host = configured.trim();
    let host = host
        .strip_prefix("https://")
        .or_else(|| host.strip_prefix("http://"))
        .unwrap_or(host);
    host.trim_end_matches('/')
}

pub(crate) fn no_store() -> (HeaderName, HeaderValue) {
    (CACHE_CONTROL, HeaderValue::from_static("no-store"))
}

/// `GET /rdr/pprdr.asp`: 200, empty body, `PassportURLs` header.
pub(crate) async fn nexus(State(st): State<Arc<Shared>>) -> Response {
    match &st.passport_urls {
        Some(urls) => (StatusCode::OK, [(PASSPORT_URLS, urls.clone())]).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `GET`/`POST /login2.srf`: Passport 1.4 sign-in.
pub(crate) async fn login(State(st): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let span = info_span!("passport_login", user_id = tracing::field::Empty);
    sign_in(&st, &headers).instrument(span).await
}

async fn sign_in(st: &Shared, headers: &HeaderMap) -> Response {
    let total: usize = headers.get_all(AUTHORIZATION).iter().map(|v| v.len()).sum();
    if total > MAX_AUTHORIZATION_LEN {
        info!(
            result = "too-large",
            len = total,
            "Passport sign-in refused"
        );
        return (StatusCode::BAD_REQUEST, [no_store()]).into_response();
    }
    let parsed = match headers.get(AUTHORIZATION) {
        Some(value) => credentials::parse(value.as_bytes()),
        None => Err(credentials::Malformed::NotPassport),
    };
    let creds = match parsed {
        Ok(creds) => creds,
        Err(why) => {
            info!(
                result = "malformed",
                reason = why.as_str(),
                "Passport sign-in refused"
            );
            return st.refused();
        }
    };
    let sign_in = creds.sign_in.clone();
    match st.authenticate(creds).await {
        Ok(Some(account)) => success(st, account),
        Ok(None) => {
            debug!(sign_in = %sign_in, "Wrong password or unknown sign-in name");
            info!(result = "failed", "Passport sign-in refused");
            st.refused()
        }
        Err(Unavailable) => {
            info!(result = "error", "Passport sign-in not possible");
            (StatusCode::INTERNAL_SERVER_ERROR, [no_store()]).into_response()
        }
    }
}

fn success(st: &Shared, account: Account) -> Response {
    let UserId(uid) = account.id;
    Span::current().record("user_id", uid);
    let ticket = st.deps.tickets.issue_passport(account.id, &account.email);
    let value = format!(
        "Passport1.4 da-status=success,tname=MSPAuth,tname=MSPProf,tname=MSPSec,\
         from-PP='t={ticket}&p=',ru=http://messenger.msn.com"
    );
    let value = match HeaderValue::from_str(&value) {
        Ok(v) if !ticket.contains(['\'', ',']) => v,
        _ => {
            error!("Ticket cannot be written into Authentication-Info");
            return (StatusCode::INTERNAL_SERVER_ERROR, [no_store()]).into_response();
        }
    };
    debug!(sign_in = %account.email, "Passport ticket issued");
    info!(result = "success", "Passport sign-in");
    (StatusCode::OK, [(AUTHENTICATION_INFO, value), no_store()]).into_response()
}

/// Fallback: serve our routes whatever the case of the path (`/RDR/PPRDR.ASP`).
pub(crate) async fn any_case(State(st): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_ascii_lowercase();
    let method = req.method().clone();
    let is_get = method == Method::GET || method == Method::HEAD;
    let is_post = method == Method::POST;
    match path.as_str() {
        NEXUS_PATH if is_get => nexus(State(st)).await,
        LOGIN_PATH if is_get || is_post => login(State(st), req.headers().clone()).await,
        RST_PATH if is_post => rst::serve(st, req, Dialect::Rst).await,
        RST2_PATH if is_post => rst::serve(st, req, Dialect::Rst2).await,
        NEXUS_PATH => not_allowed("GET,HEAD"),
        LOGIN_PATH => not_allowed("GET,HEAD,POST"),
        RST_PATH | RST2_PATH => not_allowed("POST"),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn not_allowed(allow: &'static str) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(ALLOW, HeaderValue::from_static(allow))],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::public_host;

    #[test]
    fn public_host_drops_scheme_and_slash() {
        assert_eq!(public_host("127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(public_host(" https://msn.example/ "), "msn.example");
        assert_eq!(public_host("http://msn.example:80"), "msn.example:80");
    }
}
