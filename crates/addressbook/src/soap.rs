//! SOAP 1.1 for the address-book services: reading a request envelope, writing a response
//! envelope with the `ServiceHeader` every success carries, faults, and the timestamp
//! format (spec §0.3, §0.4, §3.1).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::xml::{self, Element, XmlWriter};

/// The namespace of every body and header element of both services.
pub(crate) const AB_NS: &str = "http://www.msn.com/webservices/AddressBook";
pub(crate) const SOAP_ENV_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub(crate) const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
pub(crate) const XSD_NS: &str = "http://www.w3.org/2001/XMLSchema";

/// `ServiceHeader/Version` as the 2009-era service sent it.
const SERVICE_VERSION: &str = "15.01.1408.0000";
/// `ServiceHeader/CacheKey`: clients store it and send it back; nothing depends on its
/// value, so it is constant.
const CACHE_KEY: &str = "12r1:butterfly";
/// `faultstring`s and `machineName` name this server.
const MACHINE_NAME: &str = "butterfly";

/// "Never" / "unknown" in the address book's date fields (.NET `DateTime.MinValue`).
pub(crate) const ZERO_TIME: &str = "0001-01-01T00:00:00";

/// A request: the SOAP header (absent in some clients' requests) and the action element,
/// the first child of the body.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) header: Option<Element>,
    pub(crate) action: Element,
}

impl Request {
    /// Parse a request body: UTF-8 XML (a byte-order mark is allowed) whose root is a SOAP
    /// `Envelope` with a non-empty `Body`.
    pub(crate) fn parse(body: &[u8]) -> Result<Request, Fault> {
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        let text = std::str::from_utf8(body)
            .map_err(|_| Fault::client("The request is not UTF-8 text"))?;
        let root = xml::parse(text).map_err(|e| Fault::client(&e.to_string()))?;
        if root.name != "Envelope" {
            return Err(Fault::client("The root element must be a SOAP Envelope"));
        }
        let Element { children, .. } = root;
        let mut header = None;
        let mut action = None;
        for child in children {
            match child.name.as_str() {
                "Header" if header.is_none() => header = Some(child),
                "Body" if action.is_none() => action = child.children.into_iter().next(),
                _ => {}
            }
        }
        let action = action.ok_or_else(|| Fault::client("The SOAP Body names no action"))?;
        Ok(Request { header, action })
    }

    /// Text of an element of the header, e.g. `["ABAuthHeader", "TicketToken"]`.
    pub(crate) fn header_text(&self, path: &[&str]) -> Option<&str> {
        self.header.as_ref()?.text_at(path)
    }
}

/// `faultcode`: whose fault it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultCode {
    Client,
    Server,
}

/// A SOAP 1.1 fault, written in the shape of spec §3.1. HTTP 500 unless said otherwise.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    status: StatusCode,
    code: FaultCode,
    string: String,
    /// The action's SOAPAction URL, when the fault is about an action.
    actor: Option<String>,
    /// `detail/errorcode`, for faults clients act on.
    errorcode: Option<&'static str>,
}

impl Fault {
    /// A request that cannot be read.
    pub(crate) fn client(why: &str) -> Fault {
        Fault {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: FaultCode::Client,
            string: why.to_owned(),
            actor: None,
            errorcode: None,
        }
    }

    /// The store failed; nothing more is said to the client.
    pub(crate) fn server() -> Fault {
        Fault {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: FaultCode::Server,
            string: "The address book is unavailable".to_owned(),
            actor: None,
            errorcode: None,
        }
    }

    /// No ticket, or one that is forged, expired, or for another service: HTTP 403
    /// (spec §3.1).
    pub(crate) fn unauthorized() -> Fault {
        Fault {
            status: StatusCode::FORBIDDEN,
            code: FaultCode::Client,
            string: "The ticket is missing, invalid or expired".to_owned(),
            actor: None,
            errorcode: Some("Forbidden"),
        }
    }

    /// An action this endpoint does not serve (spec §3.1: errorcode `Forbidden`).
    pub(crate) fn unsupported(action: &str) -> Fault {
        Fault::forbidden(action, &format!("API {action} no longer supported"))
    }

    /// A request this server refuses to carry out, with errorcode `Forbidden`.
    pub(crate) fn forbidden(action: &str, why: &str) -> Fault {
        Fault {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: FaultCode::Client,
            string: why.to_owned(),
            actor: Some(action_url(action)),
            errorcode: Some("Forbidden"),
        }
    }

    /// An edit refused for a reason the client can act on, with the errorcode it reads.
    pub(crate) fn refused(action: &str, errorcode: &'static str, why: &str) -> Fault {
        Fault {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: FaultCode::Client,
            string: why.to_owned(),
            actor: Some(action_url(action)),
            errorcode: Some(errorcode),
        }
    }

    /// A delta request this server cannot answer: the client must download everything
    /// (spec §3.7). `client_time` is the client's `lastChange` as sent.
    pub(crate) fn full_sync_required(action: &str, client_time: &str) -> Fault {
        Fault {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: FaultCode::Client,
            string: format!(
                "Need to do full sync. Can't sync deltas Client Change Time : {client_time}"
            ),
            actor: Some(action_url(action)),
            errorcode: Some("FullSyncRequired"),
        }
    }
}

impl IntoResponse for Fault {
    fn into_response(self) -> Response {
        let mut w = XmlWriter::new();
        w.el_attrs("soap:Envelope", &[("xmlns:soap", SOAP_ENV_NS)], |w| {
            w.el("soap:Body", |w| {
                w.el("soap:Fault", |w| {
                    w.leaf(
                        "faultcode",
                        match self.code {
                            FaultCode::Client => "soap:Client",
                            FaultCode::Server => "soap:Server",
                        },
                    );
                    w.leaf("faultstring", &self.string);
                    if let Some(actor) = &self.actor {
                        w.leaf("faultactor", actor);
                    }
                    if let Some(code) = self.errorcode {
                        let ns = [("xmlns", AB_NS)];
                        w.el("detail", |w| {
                            w.el_attrs("errorcode", &ns, |w| w.text(code));
                            w.el_attrs("errorstring", &ns, |w| w.text(&self.string));
                            w.el_attrs("machineName", &ns, |w| w.text(MACHINE_NAME));
                        });
                    }
                });
            });
        });
        xml_response(self.status, w.finish())
    }
}

/// `http://www.msn.com/webservices/AddressBook/<action>`.
fn action_url(action: &str) -> String {
    format!("{AB_NS}/{action}")
}

pub(crate) fn xml_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/xml; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// The `ServiceHeader` of a success.
pub(crate) struct ServiceHeader {
    /// `PreferredHostName`: clients send later calls of the method to this host, so it is
    /// the host the client just reached us by (its `Host` header), or left out.
    pub(crate) host: Option<String>,
    /// `SessionId`: a fresh GUID per response.
    pub(crate) session_id: uuid::Uuid,
}

/// A success: the `ServiceHeader`, and the body element `<{action}Response>` whose
/// content `body` writes.
pub(crate) fn success(
    header: &ServiceHeader,
    action: &str,
    body: impl FnOnce(&mut XmlWriter),
) -> Response {
    let mut w = XmlWriter::new();
    let envelope_ns = [
        ("xmlns:soap", SOAP_ENV_NS),
        ("xmlns:xsi", XSI_NS),
        ("xmlns:xsd", XSD_NS),
    ];
    w.el_attrs("soap:Envelope", &envelope_ns, |w| {
        w.el("soap:Header", |w| {
            w.el_attrs("ServiceHeader", &[("xmlns", AB_NS)], |w| {
                w.leaf("Version", SERVICE_VERSION);
                w.leaf("CacheKey", CACHE_KEY);
                w.leaf("CacheKeyChanged", "true");
                if let Some(host) = &header.host {
                    w.leaf("PreferredHostName", host);
                }
                w.leaf("SessionId", header.session_id);
            });
        });
        w.el("soap:Body", |w| {
            w.el_attrs(&format!("{action}Response"), &[("xmlns", AB_NS)], body);
        });
    });
    xml_response(StatusCode::OK, w.finish())
}

/// An `xsd:boolean` as clients write it (`true`/`false`/`1`/`0`); anything else is false.
pub(crate) fn boolean(text: Option<&str>) -> bool {
    matches!(text.map(str::trim), Some("true" | "1"))
}

/// Whether a client's `lastChange` means "I have nothing cached": absent, empty, or the
/// zero time in any of its spellings (`0001-01-01T00:00:00.0000000-08:00`, …).
pub(crate) fn is_zero_time(text: Option<&str>) -> bool {
    match text.map(str::trim) {
        None | Some("") => true,
        Some(t) => t.starts_with("0001-01-01"),
    }
}

/// A change stamp (ms since the Unix epoch) in the `lastChange` form.
/// (UTC, milliseconds: `YYYY-MM-DDTHH:MM:SS.fffZ`, spec §0.3).
pub(crate) fn stamp_text(ms: i64) -> String {
    butterfly_core::clock::utc_millis_z(ms.max(0))
}

/// A client's `lastChange` (`YYYY-MM-DDTHH:MM:SS[.fraction][Z|±hh:mm]`, as we wrote it or
/// as the official service did) in ms since the Unix epoch; `None` if it is not one.
pub(crate) fn parse_stamp(text: &str) -> Option<i64> {
    let t = text.trim();
    let num = |s: &str| -> Option<i64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-');
    let (year, month, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if d.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // The zone: Z, ±hh:mm, or none (UTC).
    let (clock, offset_min) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, zone) = time.split_at(i);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, m) = zone[1..].split_once(':')?;
        (c, sign * (num(h)? * 60 + num(m)?))
    } else {
        (time, 0)
    };
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut c = hms.split(':');
    let (h, m, sec) = (num(c.next()?)?, num(c.next()?)?, num(c.next()?)?);
    if c.next().is_some() || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let millis = if fraction.is_empty() {
        0
    } else {
        num(fraction)?;
        let digits: String = fraction.chars().chain("000".chars()).take(3).collect();
        num(&digits)?
    };
    let days = butterfly_core::clock::days_from_civil(year, month as u32, day as u32);
    let secs = days * 86_400 + h * 3600 + m * 60 + sec - offset_min * 60;
    Some(secs * 1000 + millis)
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn client_stamps_parse_back() {
        for ms in [0, 1, 951_782_400_007, 1_714_557_600_123, 4_107_542_400_999] {
            assert_eq!(parse_stamp(&stamp_text(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            parse_stamp("2024-05-01T02:00:00.1230000-08:00"),
            parse_stamp("2024-05-01T10:00:00.123Z")
        );
        assert_eq!(parse_stamp("2024-05-01T10:00:00"), Some(1_714_557_600_000));
        for junk in [
            "",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-05-01",
            "2024-05-01T25:00:00Z",
            "2024-05-01T10:00:00.x1Z",
        ] {
            assert_eq!(parse_stamp(junk), None, "{junk}");
        }
    }

    #[test]
    fn stamps() {
        assert_eq!(stamp_text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(stamp_text(-5), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day of a century year), 2100-02-28/03-01.
        assert_eq!(stamp_text(951_786_061_007), "2000-02-29T01:01:01.007Z");
        assert_eq!(stamp_text(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(stamp_text(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn booleans_and_zero_times() {
        assert!(boolean(Some(" true ")) && boolean(Some("1")));
        assert!(!boolean(Some("false")) && !boolean(Some("yes")) && !boolean(None));
        assert!(is_zero_time(None) && is_zero_time(Some(" ")));
        assert!(is_zero_time(Some("0001-01-01T00:00:00.0000000-08:00")));
        assert!(!is_zero_time(Some("2024-05-01T10:00:00.123Z")));
    }

    #[test]
    fn envelopes() {
        let ok = Request::parse(
            b"\xEF\xBB\xBF<e:Envelope xmlns:e=\"x\"><e:Header><A><T>v</T></A></e:Header>\
              <e:Body><Act/><Other/></e:Body></e:Envelope>",
        )
        .unwrap();
        assert_eq!(ok.action.name, "Act");
        assert_eq!(ok.header_text(&["A", "T"]), Some("v"));
        for bad in [
            &b"<Body><Act/></Body>"[..],
            b"<Envelope><Body/></Envelope>",
            b"<Envelope><Body><Act></Body></Envelope>",
            b"\xFF<Envelope/>",
        ] {
            assert!(Request::parse(bad).is_err());
        }
    }
}
