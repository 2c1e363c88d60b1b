//! Offline messages over SOAP (spec issue 4 §5.2–5.3; SOAP.md §3):
//!
//! - `POST /OimWS/oim.asmx` — `Store` (WLM 8.0) and `Store2` (8.1+), the same request: a
//!   sender leaves a text message for a contact. The sender proves it holds a ticket
//!   (`Ticket@passport`) and answers a lock-key challenge with the MSNP11 challenge
//!   algorithm and its product key (`Ticket@appid`, `Ticket@lockkey`); the first attempt
//!   of a session carries no lock key and is answered with the challenge.
//! - `POST /rsi/rsi.asmx` — `GetMetadata`, `GetMessage`, `DeleteMessages` (in `rsi.rs`):
//!   the recipient reads and deletes its messages with its web ticket.
//!
//! Faults are the ones clients look for: `q0:AuthenticationFailed` with a
//! `LockKeyChallenge` (and a `TweenerChallenge` only for a bad ticket), HTTP 500;
//! `q0:SystemUnavailable` when the recipient does not exist or does not let the sender
//! reach them (or has no room); `q0:InvalidContent` for an unreadable or oversized
//! message.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use butterfly_core::account::{Email, UserId};
use butterfly_core::bus::{Bus, UserEvent};
use butterfly_core::oim::{MAX_OIM_TEXT, OimNew, OimRefused};
use butterfly_core::store::Store;
use butterfly_core::tickets::{Service, Tickets};
use msnp::auth;
use uuid::Uuid;

use crate::handlers::{read_body, ticket_token};
use crate::soap::xml_response;
use crate::xml::{self, Element, XmlWriter};

/// The OIM store service, as routed (clients write `/OimWS/oim.asmx`).
pub const OIM_PATH: &str = "/oimws/oim.asmx";
/// The RSI service, as routed.
pub const RSI_PATH: &str = "/rsi/rsi.asmx";

/// The namespace of the OIM store service, for both actions (MSNPSharp reads
/// `StoreResponse` there; clients find the fault detail there).
const OIM_NS: &str = "http://messenger.msn.com/ws/2004/09/oim/";
use crate::soap::SOAP_ENV_NS;
const RM_NS: &str = "http://schemas.xmlsoap.org/ws/2003/03/rm";
const WSU_NS: &str = "http://schemas.xmlsoap.org/ws/2002/07/utility";

/// What the OIM services need.
#[derive(Clone)]
pub struct OimDeps {
    pub store: Arc<dyn Store>,
    pub tickets: Arc<dyn Tickets>,
    /// Tells the recipient's signed-in sessions about new and deleted messages. Embedded:
    /// the process's bus. Distributed: the addressbook role needs the cluster's bus here
    /// (until it has one, recipients learn of new messages at their next sign-in).
    pub bus: Arc<dyn Bus>,
    /// Check `Ticket@lockkey` (default on; off only to accept clients with an unknown
    /// product id, as Escargot does).
    pub verify_lock_key: bool,
}

/// The OIM store and RSI routes; the binary merges this next to [`crate::router`].
pub fn router(deps: OimDeps) -> Router {
    Router::new()
        .route(OIM_PATH, post(store_service))
        .route(RSI_PATH, post(crate::rsi::service))
        .with_state(Arc::new(deps))
}

/// A refusal of the store service.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OimFault {
    /// Ticket missing, forged, expired, or not the sender's.
    BadTicket,
    /// No lock key, or a wrong one: answer the challenge.
    LockKey(String),
    /// Recipient unknown, unreachable for the sender, or out of room.
    Unavailable,
    /// The message cannot be read or is too large.
    InvalidContent,
    /// The store failed.
    Server,
}

impl OimFault {
    fn into_response(self) -> Response {
        let (code, detail): (&str, Option<(&str, String)>) = match self {
            // The challenge text is what the client hashes; a TweenerChallenge goes only
            // with a bad ticket, because MSNPSharp hashes the whole detail text.
            OimFault::BadTicket => (
                "AuthenticationFailed",
                Some(("TweenerChallenge", "lc=1033,id=507,tw=40,fs=1,ru=http%3A%2F%2Fmessenger%2Emsn%2Ecom,ct=0,kpp=1,kv=9,ver=2.1.0173.1,rn=1lgjBfIL,tpf=b0735e3a873dfb5e75054465196398e0".to_owned())),
            ),
            OimFault::LockKey(challenge) => {
                ("AuthenticationFailed", Some(("LockKeyChallenge", challenge)))
            }
            OimFault::Unavailable => ("SystemUnavailable", None),
            OimFault::InvalidContent => ("InvalidContent", None),
            OimFault::Server => ("SystemUnavailable", None),
        };
        let mut w = XmlWriter::new();
        w.el_attrs("soap:Envelope", &[("xmlns:soap", SOAP_ENV_NS)], |w| {
            w.el("soap:Body", |w| {
                w.el("soap:Fault", |w| {
                    w.el_attrs("faultcode", &[("xmlns:q0", OIM_NS)], |w| {
                        w.text(format_args!("q0:{code}"));
                    });
                    w.leaf(
                        "faultstring",
                        "Exception of type 'System.Web.Services.Protocols.SoapException' was thrown.",
                    );
                    w.leaf("faultactor", "https://ows.messenger.msn.com/OimWS/oim.asmx");
                    match &detail {
                        Some((name, text)) => {
                            w.el("detail", |w| {
                                w.el_attrs(name, &[("xmlns", OIM_NS)], |w| w.text(text));
                            });
                        }
                        None => {
                            w.empty("detail");
                        }
                    }
                });
            });
        });
        xml_response(StatusCode::INTERNAL_SERVER_ERROR, w.finish())
    }
}

async fn store_service(
    State(deps): State<Arc<OimDeps>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body(&headers, body).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let Some(request) = Envelope::parse(&body) else {
        return OimFault::InvalidContent.into_response();
    };
    match store(&deps, &request).await {
        Ok(number) => stored(&number),
        Err(fault) => {
            tracing::debug!(?fault, "OIM refused");
            fault.into_response()
        }
    }
}

/// The UTC day number of now.
fn today() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

/// Whether `lockkey` answers the sender's challenge of today or yesterday (a client may
/// have fetched it just before midnight) for the product `appid`.
fn lock_key_ok(tickets: &dyn Tickets, user: UserId, appid: &str, lockkey: &str) -> bool {
    let Some(product) = auth::product(appid) else {
        return false;
    };
    let day = today();
    [day, day.saturating_sub(1)].into_iter().any(|d| {
        let challenge = tickets.oim_lock_challenge(user, d);
        auth::challenge_response_v11(&challenge, product.id, product.key)
            .eq_ignore_ascii_case(lockkey.trim())
    })
}

/// Check and keep one message; the `MessageNumber` to acknowledge.
async fn store(deps: &OimDeps, request: &Envelope) -> Result<String, OimFault> {
    let header = request.header.as_ref().ok_or(OimFault::BadTicket)?;
    let ticket = header.child("Ticket").ok_or(OimFault::BadTicket)?;
    let token = ticket_token(ticket.attr("passport").unwrap_or_default());
    let claims = deps
        .tickets
        .verify_service(token, &[Service::Oim, Service::Web, Service::Messenger])
        .map_err(|_| OimFault::BadTicket)?;
    let from = header
        .child("From")
        .and_then(|f| f.attr("memberName"))
        .and_then(|m| Email::parse(m).ok());
    if from.as_ref() != Some(&claims.sub) {
        return Err(OimFault::BadTicket);
    }
    let sender_id = UserId(claims.uid);
    if deps.verify_lock_key {
        let appid = ticket.attr("appid").unwrap_or_default();
        let lockkey = ticket.attr("lockkey").unwrap_or_default();
        if !lock_key_ok(deps.tickets.as_ref(), sender_id, appid, lockkey) {
            let challenge = deps.tickets.oim_lock_challenge(sender_id, today());
            return Err(OimFault::LockKey(challenge));
        }
    }

    let to = header
        .child("To")
        .and_then(|t| t.attr("memberName"))
        .and_then(|m| Email::parse(m).ok())
        .ok_or(OimFault::Unavailable)?;
    let store = deps.store.as_ref();
    let recipient = store
        .account_by_email(&to)
        .await
        .map_err(server)?
        .ok_or(OimFault::Unavailable)?;
    // The same rule as presence: the recipient's privacy must let the sender see them.
    let view = store
        .peer_view(recipient.id, sender_id)
        .await
        .map_err(server)?;
    if !view.lets_me_see() {
        return Err(OimFault::Unavailable);
    }

    let content = parse_content(request.body.child("Content").map(|c| c.text.as_str()))?;
    let sender_name = header
        .child("From")
        .and_then(|f| f.attr("friendlyName"))
        .map(msnp::oim::decode_encoded_words)
        .unwrap_or_default();
    let number = header
        .find(&["Sequence", "MessageNumber"])
        .map(|n| n.text.clone())
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| content.seq.to_string());
    let new = OimNew {
        recipient: recipient.id,
        sender: claims.sub,
        sender_name,
        run_id: content.run_id,
        seq: content.seq,
        text: content.text,
    };
    match store.oim_store(new).await.map_err(server)? {
        Ok(meta) => {
            tracing::debug!(id = %meta.id, recipient = recipient.id.0, "OIM stored");
            deps.bus
                .send(&recipient.email, UserEvent::OimArrived { oim: meta })
                .await;
            Ok(number)
        }
        Err(OimRefused::TooLarge) => Err(OimFault::InvalidContent),
        Err(OimRefused::NoRecipient | OimRefused::MailboxFull) => Err(OimFault::Unavailable),
    }
}

fn server(e: butterfly_core::store::StoreError) -> OimFault {
    tracing::error!(error = %e, "Store failed during an OIM request");
    OimFault::Server
}

/// What a `Content` element carries.
#[derive(Debug, PartialEq, Eq)]
struct Content {
    run_id: Uuid,
    seq: u32,
    text: String,
}

/// The MIME message of `Content`: headers, a blank line, and the text (base64 when
/// `Content-Transfer-Encoding` says so), which must be UTF-8 and at most
/// [`MAX_OIM_TEXT`] bytes.
fn parse_content(content: Option<&str>) -> Result<Content, OimFault> {
    let content = content.ok_or(OimFault::InvalidContent)?;
    let mut lines = content.split('\n').map(|l| l.trim_end_matches('\r'));
    let mut run_id = None;
    let mut seq = 1;
    let mut base64 = false;
    for line in lines.by_ref() {
        if line.trim().is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "x-oim-run-id" => {
                run_id = Uuid::try_parse(value.trim_start_matches('{').trim_end_matches('}')).ok()
            }
            "x-oim-sequence-num" => seq = value.parse().map_err(|_| OimFault::InvalidContent)?,
            "content-transfer-encoding" => base64 = value.eq_ignore_ascii_case("base64"),
            _ => {}
        }
    }
    let body: Vec<&str> = lines.collect();
    let bytes = if base64 {
        let packed: String = body.concat().split_whitespace().collect();
        // Base64 of the largest text, before decoding anything.
        if packed.len() > MAX_OIM_TEXT.div_ceil(3) * 4 {
            return Err(OimFault::InvalidContent);
        }
        STANDARD
            .decode(packed)
            .map_err(|_| OimFault::InvalidContent)?
    } else {
        body.join("\r\n").into_bytes()
    };
    if bytes.len() > MAX_OIM_TEXT {
        return Err(OimFault::InvalidContent);
    }
    let text = String::from_utf8(bytes).map_err(|_| OimFault::InvalidContent)?;
    Ok(Content {
        // A client that names no run gets one of its own.
        run_id: run_id.unwrap_or_else(Uuid::new_v4),
        seq,
        text,
    })
}

/// The success answer: the sequence acknowledgement MSNPSharp checks, and `StoreResponse`
/// in the 2004/09 namespace for both actions.
fn stored(number: &str) -> Response {
    let mut w = XmlWriter::new();
    w.el_attrs("soap:Envelope", &[("xmlns:soap", SOAP_ENV_NS)], |w| {
        w.el("soap:Header", |w| {
            w.el_attrs("SequenceAcknowledgment", &[("xmlns", RM_NS)], |w| {
                w.el_attrs("Identifier", &[("xmlns", WSU_NS)], |w| {
                    w.text("http://messenger.msn.com");
                });
                w.el_attrs(
                    "AcknowledgmentRange",
                    &[("Upper", number), ("Lower", number)],
                    |_| {},
                );
            });
        });
        w.el("soap:Body", |w| {
            w.el_attrs("StoreResponse", &[("xmlns", OIM_NS)], |w| {
                w.leaf("PointsConsumed", 0);
            });
        });
    });
    xml_response(StatusCode::OK, w.finish())
}

/// A SOAP request read whole: its header (if any) and its `Body` element. The OIM and RSI
/// requests are small and put several elements side by side in the body.
pub(crate) struct Envelope {
    pub(crate) header: Option<Element>,
    pub(crate) body: Element,
}

impl Envelope {
    pub(crate) fn parse(bytes: &[u8]) -> Option<Envelope> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let root = xml::parse(std::str::from_utf8(bytes).ok()?).ok()?;
        if root.name != "Envelope" {
            return None;
        }
        let mut header = None;
        let mut body = None;
        for child in root.children {
            match child.name.as_str() {
                "Header" if header.is_none() => header = Some(child),
                "Body" if body.is_none() => body = Some(child),
                _ => {}
            }
        }
        Some(Envelope {
            header,
            body: body?,
        })
    }

    /// The first element of the body: the action.
    pub(crate) fn action(&self) -> Option<&Element> {
        self.body.children.first()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_read_from_mime() {
        let c = parse_content(Some(
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\nX-OIM-Message-Type: OfflineMessage\r\nX-OIM-Run-Id: {3A3F9D0C-6B9B-4E4A-A0E5-6C7B3D1E2F40}\r\nX-OIM-Sequence-Num: 2\r\n\r\naGVsbG8g\r\nYm9i",
        ))
        .unwrap();
        assert_eq!(c.text, "hello bob");
        assert_eq!(c.seq, 2);
        assert_eq!(
            c.run_id,
            Uuid::parse_str("3a3f9d0c-6b9b-4e4a-a0e5-6c7b3d1e2f40").unwrap()
        );
        assert_eq!(parse_content(None), Err(OimFault::InvalidContent));
        let big = STANDARD.encode("x".repeat(MAX_OIM_TEXT + 1));
        let oversized = format!("Content-Transfer-Encoding: base64\n\n{big}");
        assert_eq!(
            parse_content(Some(&oversized)),
            Err(OimFault::InvalidContent)
        );
        let not_utf8 = format!(
            "Content-Transfer-Encoding: base64\n\n{}",
            STANDARD.encode([0xff])
        );
        assert_eq!(
            parse_content(Some(&not_utf8)),
            Err(OimFault::InvalidContent)
        );
    }
}
