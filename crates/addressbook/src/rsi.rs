//! RSI, the recipient's side of offline messages (spec issue 4 §5.3): `GetMetadata`,
//! `GetMessage`, `DeleteMessages` at `POST /rsi/rsi.asmx`, authenticated by the
//! `PassportCookie` header (`t`, `p` of the web ticket). Every refusal is the
//! "Schema validation error" client fault (HTTP 500), as the service gave.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use butterfly_core::account::{Account, UserId};
use butterfly_core::bus::UserEvent;
use butterfly_core::oim::{Oim, OimMeta};
use butterfly_core::tickets::Service;
use msnp::oim::{MailEntry, encoded_word, mail_data_entries, mail_date};
use uuid::Uuid;

use crate::handlers::{read_body, ticket_token};
use crate::oim::{Envelope, OimDeps};
use crate::soap::xml_response;
use crate::xml::escape_into;

const RSI_NS: &str = "http://www.hotmail.msn.com/ws/2004/09/oim/rsi";
use crate::soap::SOAP_ENV_NS;

/// Why a request was refused; all are answered alike, the kind is for the log.
#[derive(Debug)]
enum Refused {
    Unreadable,
    BadTicket,
    UnknownAction,
    UnknownMessage,
    Store,
}

fn fault() -> Response {
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP_ENV_NS}"><soap:Body><soap:Fault><faultcode>soap:Client</faultcode><faultstring>Schema validation error</faultstring></soap:Fault></soap:Body></soap:Envelope>"#
    );
    xml_response(StatusCode::INTERNAL_SERVER_ERROR, body)
}

/// A success: `<{action}Response>` holding `inner` (already XML).
fn answer(action: &str, inner: &str) -> Response {
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP_ENV_NS}"><soap:Body><{action}Response xmlns="{RSI_NS}">{inner}</{action}Response></soap:Body></soap:Envelope>"#
    );
    xml_response(StatusCode::OK, body)
}

pub(crate) async fn service(
    State(deps): State<Arc<OimDeps>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body(&headers, body).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    match serve(&deps, &body).await {
        Ok(response) => response,
        Err(why) => {
            tracing::debug!(?why, "RSI request refused");
            fault()
        }
    }
}

async fn serve(deps: &OimDeps, body: &[u8]) -> Result<Response, Refused> {
    let request = Envelope::parse(body).ok_or(Refused::Unreadable)?;
    let owner = authenticate(deps, &request).await?;
    let action = request.action().ok_or(Refused::Unreadable)?;
    let store = deps.store.as_ref();
    match action.name.as_str() {
        "GetMetadata" => {
            let oims = store.oims(owner.id).await.map_err(storage)?;
            Ok(answer("GetMetadata", &metadata(&oims)))
        }
        "GetMessage" => {
            let id = action
                .text_at(&["messageId"])
                .and_then(parse_id)
                .ok_or(Refused::UnknownMessage)?;
            let mark = matches!(action.text_at(&["alsoMarkAsRead"]), Some("true" | "1"));
            let oim = store
                .oim_get(owner.id, id, mark)
                .await
                .map_err(storage)?
                .ok_or(Refused::UnknownMessage)?;
            let mut result = String::from("<GetMessageResult>");
            escape_into(&mut result, &message_text(&oim, &owner));
            result.push_str("</GetMessageResult>");
            Ok(answer("GetMessage", &result))
        }
        "DeleteMessages" => {
            let ids = action
                .child("messageIds")
                .map(|ids| {
                    ids.children
                        .iter()
                        .filter(|c| c.name == "messageId")
                        .map(|c| parse_id(&c.text).ok_or(Refused::UnknownMessage))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?
                .unwrap_or_default();
            // Any unknown id refuses the whole request, deleting nothing.
            let waiting = store.oims(owner.id).await.map_err(storage)?;
            if !ids.iter().all(|id| waiting.iter().any(|m| m.id == *id)) {
                return Err(Refused::UnknownMessage);
            }
            let deleted = store.oim_delete(owner.id, &ids).await.map_err(storage)?;
            tracing::debug!(deleted, "OIMs deleted");
            if deleted > 0 {
                let event = UserEvent::OimsDeleted { count: deleted };
                deps.bus.send(&owner.email, event).await;
            }
            Ok(answer("DeleteMessages", ""))
        }
        _ => Err(Refused::UnknownAction),
    }
}

/// The account of the `PassportCookie`'s ticket (web, or the messenger one).
async fn authenticate(deps: &OimDeps, request: &Envelope) -> Result<Account, Refused> {
    let t = request
        .header
        .as_ref()
        .and_then(|h| h.text_at(&["PassportCookie", "t"]))
        .ok_or(Refused::BadTicket)?;
    let claims = deps
        .tickets
        .verify_service(ticket_token(t), &[Service::Web, Service::Messenger])
        .map_err(|_| Refused::BadTicket)?;
    match deps.store.account_by_id(UserId(claims.uid)).await {
        Ok(Some(account)) if account.email == claims.sub => Ok(account),
        Ok(_) => Err(Refused::BadTicket),
        Err(e) => Err(storage(e)),
    }
}

fn storage(e: butterfly_core::store::StoreError) -> Refused {
    tracing::error!(error = %e, "Store failed during an RSI request");
    Refused::Store
}

fn parse_id(text: &str) -> Option<Uuid> {
    Uuid::try_parse(text.trim().trim_start_matches('{').trim_end_matches('}')).ok()
}

/// The `<MD>` document of `GetMetadata`: every waiting message.
fn metadata(oims: &[OimMeta]) -> String {
    let ids: Vec<String> = oims.iter().map(|m| m.id.to_string()).collect();
    let entries: Vec<MailEntry<'_>> = oims
        .iter()
        .zip(&ids)
        .map(|(m, id)| MailEntry {
            received_ms: m.received_at,
            read: m.read,
            size: m.size,
            sender: m.sender.as_str(),
            id,
            sender_name: &m.sender_name,
        })
        .collect();
    format!("<MD>{}</MD>", mail_data_entries(&entries))
}

/// A message as `GetMessage` returns it: RFC 822 headers and the text in base64, CRLF line
/// ends (the headers libpurple reads: `From`, `Date`, the content type and encoding).
fn message_text(oim: &Oim, owner: &Account) -> String {
    let m = &oim.meta;
    let encoded = STANDARD.encode(&oim.text);
    let mut body = String::new();
    for (i, c) in encoded.chars().enumerate() {
        if i > 0 && i % 76 == 0 {
            body.push_str("\r\n");
        }
        body.push(c);
    }
    format!(
        "From: {} <{}>\r\nTo: {}\r\nSubject: \r\nX-OIMProxy: MSNMSGR\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\
         X-OIM-Message-Type: OfflineMessage\r\nX-OIM-Run-Id: {{{}}}\r\nX-OIM-Sequence-Num: {}\r\n\
         Message-ID: <OIM-{}@butterfly>\r\nDate: {}\r\nReturn-Path: ndr@oim.messenger.msn.com\r\n\r\n{}",
        encoded_word(&m.sender_name),
        m.sender.as_str(),
        owner.email.as_str(),
        oim.run_id.hyphenated().to_string().to_ascii_uppercase(),
        oim.seq,
        m.id,
        mail_date(m.received_at),
        body
    )
}
