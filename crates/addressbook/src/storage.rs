//! The storage service (`POST /storageservice/SchematizedStore.asmx`, spec §6): the
//! roaming profile WLM 8.1+ reads at every sign-in (`GetProfile`) and writes when the user
//! changes their name, personal message or display picture; and the picture itself at
//! `GET /storage/usertile/{cid}/static` (and `/small`), which other clients fetch too.
//!
//! The display name is the account's friendly name (a list edit); the message and the
//! picture are the store's roaming profile (`butterfly_core::profile`). Resource ids are
//! the owner's CID in hex with the fixed suffixes clients know: `!106` profile, `!118`
//! expression profile, `!205` photo.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, HOST, HeaderValue};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use butterfly_core::account::{Account, UserId};
use butterfly_core::ids;
use butterfly_core::lists::ListOp;
use butterfly_core::profile::{Profile, ProfileEdit};
use butterfly_core::tickets::Service;

use crate::handlers::{Shared, read_body, ticket_token};
use crate::soap::{self, Fault, Request, XSD_NS, XSI_NS};
use crate::xml::{Element, XmlWriter};

/// The namespace WLM 8.5 and 2009 use (2011's `w10` is not served).
const STORAGE_NS: &str = "http://www.msn.com/webservices/storage/2008";

pub(crate) async fn service(
    State(st): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body(&headers, body).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let request = match Request::parse(&body) {
        Ok(r) => r,
        Err(fault) => return fault.into_response(),
    };
    match serve(&st, &headers, &request).await {
        Ok(response) => response,
        Err(fault) => fault.into_response(),
    }
}

async fn serve(st: &Shared, headers: &HeaderMap, request: &Request) -> Result<Response, Fault> {
    let owner = authenticate(st, request).await?;
    let action = request.action.name.as_str();
    let base = tile_base(headers, owner.id);
    let store = &st.deps.store;
    let storage = |e| {
        tracing::error!(error = %e, "Store failed during a storage request");
        Fault::server()
    };
    let cid = ids::cid_hex(owner.id);
    match action {
        "GetProfile" => {
            let profile = store.profile(owner.id).await.map_err(storage)?;
            let roster = store.roster(owner.id).await.map_err(storage)?;
            Ok(respond(action, |w| {
                get_profile(w, &cid, &roster.friendly_name, &profile, &base)
            }))
        }
        "UpdateProfile" => {
            let expression = request.action.find(&["profile", "ExpressionProfile"]);
            let clear = request
                .action
                .find(&["profileAttributesToDelete", "ExpressionProfileAttributes"]);
            let cleared = |name: &str| soap::boolean(clear.and_then(|c| c.text_at(&[name])));
            let psm = if cleared("PersonalStatus") {
                Some(String::new())
            } else {
                expression
                    .and_then(|e| e.text_at(&["PersonalStatus"]))
                    .map(str::to_owned)
            };
            if let Some(psm) = psm {
                let edit = ProfileEdit::Psm(psm)
                    .validated()
                    .map_err(|_| Fault::server())?;
                store
                    .update_profile(owner.id, edit)
                    .await
                    .map_err(storage)?;
            }
            if let Some(name) = expression
                .and_then(|e| e.text_at(&["DisplayName"]))
                .filter(|n| !n.is_empty() && !cleared("DisplayName"))
            {
                match store
                    .edit(owner.id, ListOp::SetFriendlyName(name.to_owned()))
                    .await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => {
                        return Err(Fault::refused(
                            action,
                            "BadArgument",
                            "Invalid display name",
                        ));
                    }
                    Err(e) => return Err(storage(e)),
                }
            }
            Ok(respond(action, |_| {}))
        }
        "CreateDocument" | "UpdateDocument" => {
            let data = picture(&request.action)
                .ok_or_else(|| Fault::client("No picture in the document"))?;
            let edit = ProfileEdit::Tile(Some(("image/png".to_owned(), data)))
                .validated()
                .map_err(|e| Fault::refused(action, "BadArgument", &e.to_string()))?;
            store
                .update_profile(owner.id, edit)
                .await
                .map_err(storage)?;
            Ok(respond(action, |w| {
                if action == "CreateDocument" {
                    w.leaf("CreateDocumentResult", format!("{cid}!205"));
                }
            }))
        }
        "DeleteRelationships" => {
            store
                .update_profile(owner.id, ProfileEdit::Tile(None))
                .await
                .map_err(storage)?;
            Ok(respond(action, |_| {}))
        }
        "FindDocuments" => {
            let profile = store.profile(owner.id).await.map_err(storage)?;
            Ok(respond(action, |w| {
                w.el("FindDocumentsResult", |w| {
                    if profile.tile.is_some() {
                        w.el_attrs("Document", &[("xsi:type", "Photo")], |w| {
                            w.leaf("ResourceID", format!("{cid}!205"));
                            w.leaf("Name", "Messenger User Tile");
                        });
                    }
                });
            }))
        }
        "CreateProfile" => Ok(respond(action, |w| {
            w.leaf("CreateProfileResult", format!("{cid}!106"));
        })),
        // The relationships and sharing of our fixed documents need nothing stored.
        "CreateRelationships" | "ShareItem" => Ok(respond(action, |_| {})),
        other => Err(Fault::unsupported(other)),
    }
}

/// The owner the `StorageUserHeader/TicketToken` (a storage ticket) names.
async fn authenticate(st: &Shared, request: &Request) -> Result<Account, Fault> {
    let ticket = request
        .header_text(&["StorageUserHeader", "TicketToken"])
        .ok_or_else(Fault::unauthorized)?;
    let claims = st
        .deps
        .tickets
        .verify_service(ticket_token(ticket), &[Service::Storage])
        .map_err(|_| Fault::unauthorized())?;
    match st.deps.store.account_by_id(UserId(claims.uid)).await {
        Ok(Some(a)) if a.email == claims.sub => Ok(a),
        Ok(_) => Err(Fault::unauthorized()),
        Err(_) => Err(Fault::server()),
    }
}

/// The first picture stream's data in a document: base64.
fn picture(action: &Element) -> Option<Vec<u8>> {
    let streams = action.find(&["document", "DocumentStreams"])?;
    streams
        .children
        .iter()
        .filter_map(|s| s.text_at(&["Data"]))
        .find_map(|data| {
            let clean: String = data.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD.decode(clean).ok()
        })
}

/// Where the owner's picture is served, as the client reached us.
fn tile_base(headers: &HeaderMap, owner: UserId) -> String {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
        })
        .unwrap_or("storage.msn.com");
    format!("http://{host}/storage/usertile/{}", ids::cid_hex(owner))
}

fn get_profile(w: &mut XmlWriter, cid: &str, name: &str, profile: &Profile, base: &str) {
    let modified = soap::stamp_text(
        profile
            .psm_changed_at
            .max(profile.tile.as_ref().map_or(0, |t| t.changed_at)),
    );
    w.el("GetProfileResult", |w| {
        w.leaf("ResourceID", format!("{cid}!106"));
        w.leaf("DateModified", &modified);
        w.el("ExpressionProfile", |w| {
            w.leaf("ResourceID", format!("{cid}!118"));
            w.leaf("DateModified", &modified);
            w.leaf("Version", 205);
            w.leaf("Flags", 0);
            // The photo document exists even without a picture: its id is fixed.
            w.el("Photo", |w| {
                w.leaf("ResourceID", format!("{cid}!205"));
                w.leaf("Name", "Messenger User Tile");
                if let Some(tile) = &profile.tile {
                    w.leaf("DateModified", soap::stamp_text(tile.changed_at));
                    w.el("DocumentStreams", |w| {
                        w.el("DocumentStream", |w| {
                            w.leaf("DocumentStreamName", "UserTileStatic");
                            w.leaf("MimeType", &tile.mime);
                            w.leaf("DataSize", tile.bytes.len());
                            w.leaf("PreAuthURL", format!("{base}/static"));
                            w.leaf("WriteMode", "Overwrite");
                            w.leaf("StreamVersion", 0);
                            w.leaf("DocumentStreamType", "UserTileStatic");
                        });
                    });
                }
            });
            w.leaf("PersonalStatus", &profile.psm);
            w.leaf(
                "PersonalStatusLastModified",
                soap::stamp_text(profile.psm_changed_at),
            );
            w.leaf("DisplayName", name);
            w.leaf("DisplayNameLastModified", &modified);
            if profile.tile.is_some() {
                w.leaf("StaticUserTilePublicURL", format!("{base}/static"));
            }
        });
    });
}

/// A storage-service answer: `AffinityCacheHeader` and `<{action}Response>`.
fn respond(action: &str, body: impl FnOnce(&mut XmlWriter)) -> Response {
    let mut w = XmlWriter::new();
    let envelope = [
        ("xmlns:soap", soap::SOAP_ENV_NS),
        ("xmlns:xsi", XSI_NS),
        ("xmlns:xsd", XSD_NS),
    ];
    w.el_attrs("soap:Envelope", &envelope, |w| {
        w.el("soap:Header", |w| {
            w.el_attrs("AffinityCacheHeader", &[("xmlns", STORAGE_NS)], |w| {
                w.leaf("CacheKey", "butterfly");
            });
        });
        w.el("soap:Body", |w| {
            w.el_attrs(&format!("{action}Response"), &[("xmlns", STORAGE_NS)], body);
        });
    });
    soap::xml_response(StatusCode::OK, w.finish())
}

/// `GET /storage/usertile/{cid}/{static|small}`: the picture, public like the official
/// service's (contacts' clients fetch it too).
pub(crate) async fn usertile(
    State(st): State<Arc<Shared>>,
    Path((cid, _size)): Path<(String, String)>,
) -> Response {
    let Some(owner) = ids::user_of_cid_hex(&cid.to_ascii_lowercase()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match st.deps.store.profile(owner).await {
        Ok(Profile {
            tile: Some(tile), ..
        }) => {
            let mime = HeaderValue::from_str(&tile.mime)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            ([(CONTENT_TYPE, mime)], tile.bytes).into_response()
        }
        Ok(_) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
