//! The two endpoints: read the envelope, check the ticket, pick the action, answer.
//! Every failure is a SOAP fault (`soap.rs`); nothing here panics on input.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{CONTENT_LENGTH, HOST};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use butterfly_core::account::{Account, UserId};
use butterfly_core::lists;
use butterfly_core::store::StoreError;
use butterfly_core::tickets::Service;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::abservice::{self, Form};
use crate::edits::{self, Edit};
use crate::soap::{self, Fault, Request, ServiceHeader};
use crate::xml::Element;
use crate::{Deps, MAX_BODY_BYTES, Snapshot, sharing};

pub(crate) struct Shared {
    pub(crate) deps: Deps,
}

/// Which service a request was posted to; each serves its own actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    AbService,
    SharingService,
}

/// The actions answered so far (the read side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    FindMembership,
    AbFindAll,
    AbFindContactsPaged,
}

impl Action {
    fn of(endpoint: Endpoint, name: &str) -> Option<Action> {
        match (endpoint, name) {
            (Endpoint::SharingService, "FindMembership") => Some(Action::FindMembership),
            (Endpoint::AbService, "ABFindAll") => Some(Action::AbFindAll),
            (Endpoint::AbService, "ABFindContactsPaged") => Some(Action::AbFindContactsPaged),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Action::FindMembership => "FindMembership",
            Action::AbFindAll => "ABFindAll",
            Action::AbFindContactsPaged => "ABFindContactsPaged",
        }
    }

    /// Check the request: only the user's own address book (not a circle's, spec §8).
    /// Returns the client's `lastChange` when it asks for a delta (`deltasOnly` true and a
    /// `lastChange` other than "never").
    fn check(self, body: &Element) -> Result<Option<String>, Fault> {
        let (deltas, since, ab_id) = match self {
            Action::FindMembership => (
                body.text_at(&["deltasOnly"]),
                body.text_at(&["lastChange"]),
                None,
            ),
            Action::AbFindAll => (
                body.text_at(&["deltasOnly"]),
                body.text_at(&["lastChange"]),
                body.text_at(&["abId"]),
            ),
            Action::AbFindContactsPaged => (
                body.text_at(&["filterOptions", "DeltasOnly"]),
                body.text_at(&["filterOptions", "LastChanged"]),
                body.text_at(&["abHandle", "ABId"]),
            ),
        };
        if let Some(id) = ab_id {
            let id = id.trim_start_matches('{').trim_end_matches('}');
            if Uuid::try_parse(id).map_or(true, |id| !id.is_nil()) {
                return Err(Fault::forbidden(
                    self.name(),
                    "Only the user's own address book is available",
                ));
            }
        }
        // A delta from "never" is everything: answered in full.
        Ok((soap::boolean(deltas) && !soap::is_zero_time(since))
            .then(|| since.unwrap_or_default().to_owned()))
    }
}

/// Where a delta answer starts (spec §3.7): the client's `lastChange` is one of our own
/// stamps. Equal to the owner's current stamp: nothing changed. Older, but within the
/// tombstone retention: a delta. Unreadable, newer than anything we issued, or older than
/// the retention (deletions may be forgotten): the client must sync in full.
fn delta_start(action: Action, client: &str, stamp: i64) -> Result<i64, Fault> {
    let full = || Fault::full_sync_required(action.name(), client);
    let since = soap::parse_stamp(client).ok_or_else(full)?;
    if since == stamp {
        return Ok(since);
    }
    if since > stamp || since < lists::deltas_reach_back_to(lists::now_ms()) {
        return Err(full());
    }
    Ok(since)
}

/// The edit actions each endpoint serves.
fn edit_of(endpoint: Endpoint, name: &str) -> Option<Edit> {
    Some(match (endpoint, name) {
        (Endpoint::SharingService, "AddMember") => Edit::AddMember,
        (Endpoint::SharingService, "DeleteMember") => Edit::DeleteMember,
        (Endpoint::AbService, "ABContactAdd") => Edit::ContactAdd,
        (Endpoint::AbService, "ABContactDelete") => Edit::ContactDelete,
        (Endpoint::AbService, "ABContactUpdate") => Edit::ContactUpdate,
        (Endpoint::AbService, "ABGroupAdd") => Edit::GroupAdd,
        (Endpoint::AbService, "ABGroupUpdate") => Edit::GroupUpdate,
        (Endpoint::AbService, "ABGroupDelete") => Edit::GroupDelete,
        (Endpoint::AbService, "ABGroupContactAdd") => Edit::GroupContactAdd,
        (Endpoint::AbService, "ABGroupContactDelete") => Edit::GroupContactDelete,
        _ => return None,
    })
}

pub(crate) async fn ab_service(
    State(st): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(&st, Endpoint::AbService, &headers, body).await
}

pub(crate) async fn sharing_service(
    State(st): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(&st, Endpoint::SharingService, &headers, body).await
}

/// The request body, at most [`MAX_BODY_BYTES`]. A larger declared length is refused
/// before anything is read; a body that grows past the limit (chunked) is refused when it
/// does. Either way the answer is 413 (so is a body the client stops sending: nobody is
/// left to read the answer).
pub(crate) async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    let too_large = || StatusCode::PAYLOAD_TOO_LARGE.into_response();
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| too_large())
}

async fn handle(st: &Shared, endpoint: Endpoint, headers: &HeaderMap, body: Body) -> Response {
    let body = match read_body(headers, body).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let request = match Request::parse(&body) {
        Ok(r) => r,
        Err(fault) => {
            tracing::debug!(?endpoint, "Unreadable SOAP request");
            return fault.into_response();
        }
    };
    let span = tracing::info_span!(
        "soap",
        action = %request.action.name,
        // Why the client asks (Initial, Timer, ContactSave, …): informational.
        scenario = request
            .header_text(&["ABApplicationHeader", "PartnerScenario"])
            .unwrap_or(""),
        user = tracing::field::Empty,
    );
    match serve(st, endpoint, headers, &request)
        .instrument(span)
        .await
    {
        Ok(response) => response,
        Err(fault) => fault.into_response(),
    }
}

async fn serve(
    st: &Shared,
    endpoint: Endpoint,
    headers: &HeaderMap,
    request: &Request,
) -> Result<Response, Fault> {
    let owner = authenticate(st, request).await?;
    tracing::Span::current().record("user", owner.id.0);
    let name = request.action.name.as_str();
    let header = ServiceHeader {
        host: preferred_host(headers),
        session_id: Uuid::new_v4(),
    };
    if let Some(edit) = edit_of(endpoint, name) {
        let answer = edits::apply(&st.deps, &owner, edit, &request.action).await?;
        return Ok(soap::success(&header, edit.name(), |w| {
            if let (edits::Answer::Guid(id), Some(result)) = (answer, edit.result_name()) {
                w.el(result, |w| {
                    w.leaf("guid", id);
                });
            }
        }));
    }
    let action = Action::of(endpoint, name).ok_or_else(|| {
        tracing::debug!("Unsupported action");
        Fault::unsupported(name)
    })?;
    let delta = action.check(&request.action)?;
    // The roster first, then the tombstones: a deletion between the two reads then shows
    // as a tombstone the client may already know, never as a row it misses.
    let roster = st.deps.store.roster(owner.id).await.map_err(storage)?;
    let since = match &delta {
        Some(client) => Some(delta_start(action, client, roster.stamp)?),
        None => None,
    };
    let mut deleted = Vec::new();
    if let Some(since) = since {
        for t in st
            .deps
            .store
            .tombstones(owner.id, since)
            .await
            .map_err(storage)?
        {
            // A deleted contact's membership id names its account, if it still exists.
            let user = match &t.email {
                Some(email) => st
                    .deps
                    .store
                    .account_by_email(email)
                    .await
                    .map_err(storage)?
                    .map(|a| a.id),
                None => None,
            };
            deleted.push((t, user));
        }
    }
    let ab = Snapshot {
        owner,
        stamp: soap::stamp_text(roster.stamp),
        roster,
        since,
        deleted,
    };
    let tickets = st.deps.tickets.as_ref();
    Ok(soap::success(&header, action.name(), |w| match action {
        Action::FindMembership => sharing::find_membership(w, &ab),
        Action::AbFindAll => abservice::find(w, &ab, Form::FindAll, tickets),
        Action::AbFindContactsPaged => abservice::find(w, &ab, Form::Paged, tickets),
    }))
}

/// The account the request's ticket names (spec §3.1): `ABAuthHeader/TicketToken` is
/// `t=<token>&p=…`; the token must be a contacts-service ticket of an existing account.
async fn authenticate(st: &Shared, request: &Request) -> Result<Account, Fault> {
    let Some(ticket) = request.header_text(&["ABAuthHeader", "TicketToken"]) else {
        tracing::debug!("No ticket");
        return Err(Fault::unauthorized());
    };
    let claims = st
        .deps
        .tickets
        .verify_service(ticket_token(ticket), &[Service::Contacts])
        .map_err(|e| {
            tracing::debug!(error = %e, "Ticket refused");
            Fault::unauthorized()
        })?;
    match st.deps.store.account_by_id(UserId(claims.uid)).await {
        Ok(Some(account)) if account.email == claims.sub => Ok(account),
        Ok(_) => {
            tracing::debug!(uid = claims.uid, "Ticket for an account that is gone");
            Err(Fault::unauthorized())
        }
        Err(e) => Err(storage(e)),
    }
}

/// The token of a `t=<token>&p=<profile>` ticket (a bare token is taken as it is).
pub(crate) fn ticket_token(ticket: &str) -> &str {
    let t = ticket.trim();
    let t = t.strip_prefix("t=").unwrap_or(t);
    // Tokens never contain '&' (JWTs are base64url and dots).
    t.split_once('&').map_or(t, |(token, _)| token)
}

fn storage(e: StoreError) -> Fault {
    tracing::error!(error = %e, "Store failed during a SOAP request");
    Fault::server()
}

/// The host the client reached us by, for `PreferredHostName`; clients send later calls
/// of the method there, so anything but a plain `host[:port]` is left out.
fn preferred_host(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(HOST)?.to_str().ok()?.trim();
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':');
    (!host.is_empty() && host.len() <= 260 && host.chars().all(plain))
        .then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_tokens() {
        assert_eq!(ticket_token("t=abc.def&p="), "abc.def");
        assert_eq!(ticket_token(" t=abc&p=xyz "), "abc");
        assert_eq!(ticket_token("abc"), "abc");
        assert_eq!(ticket_token("t="), "");
    }

    #[test]
    fn preferred_hosts() {
        let with = |h: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(HOST, h.parse().unwrap());
            preferred_host(&m)
        };
        assert_eq!(
            with("Contacts.MSN.com"),
            Some("contacts.msn.com".to_owned())
        );
        assert_eq!(with("127.0.0.1:8080"), Some("127.0.0.1:8080".to_owned()));
        assert_eq!(with("a b"), None);
        assert_eq!(with("x/y"), None);
        assert_eq!(preferred_host(&HeaderMap::new()), None);
    }
}
