//! Writing the token service's answers (spec §1.3, §1.5): the token collection and the two
//! faults, in the RST (SOAP 1.1) or RST2 (SOAP 1.2) dialect.
//!
//! The documents are written as text: they are small, fixed in shape, and clients read
//! only a few fields (token type, address, lifetime, token, binary secret, `psf:pp`
//! status). Every value that comes from the request or the account goes through
//! [`escape`]; the rest is constant.

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use butterfly_core::account::Account;
use butterfly_core::ids;
use butterfly_core::tickets::{Service, Tickets};
use quick_xml::escape::escape;

use super::request::{Dialect, RequestedToken};

/// How long the tokens are said to live (the `Tickets` port's default ticket lifetime).
pub(crate) const TOKEN_LIFETIME_SECS: u64 = 24 * 3600;
/// How long the RST2 message timestamp is said to be fresh.
const MESSAGE_LIFETIME_SECS: u64 = 5 * 60;

/// The address of the legacy Passport base token: answered with an opaque `EncryptedData`
/// instead of a compact ticket (nothing ever presents it back to us).
const TB_ADDRESS: &str = "http://Passport.NET/tb";

const WSU: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
const PSF: &str = "http://schemas.microsoft.com/Passport/SoapServices/SOAPFault";

/// `psf:reqstatus`/`psf:value` codes clients act on.
const STATUS_BAD_PASSWORD_RST: &str = "0x80048823";
const STATUS_BAD_PASSWORD_RST2: &str = "0x80048821";
const STATUS_INVALID_REQUEST: &str = "0x80048820";
/// `psf:authstate` of a failed request.
const AUTHSTATE_FAILED: &str = "0x80048800";

/// The namespaces of one dialect (spec §1.1).
struct Ns {
    soap: &'static str,
    trust: &'static str,
    wsse: &'static str,
    wsp: &'static str,
    wsa: &'static str,
}

const RST_NS: Ns = Ns {
    soap: "http://schemas.xmlsoap.org/soap/envelope/",
    trust: "http://schemas.xmlsoap.org/ws/2004/04/trust",
    wsse: "http://schemas.xmlsoap.org/ws/2003/06/secext",
    wsp: "http://schemas.xmlsoap.org/ws/2002/12/policy",
    wsa: "http://schemas.xmlsoap.org/ws/2004/03/addressing",
};

const RST2_NS: Ns = Ns {
    soap: "http://www.w3.org/2003/05/soap-envelope",
    trust: "http://schemas.xmlsoap.org/ws/2005/02/trust",
    wsse: "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    wsp: "http://schemas.xmlsoap.org/ws/2004/09/policy",
    wsa: "http://www.w3.org/2005/08/addressing",
};

fn namespaces(dialect: Dialect) -> &'static Ns {
    match dialect {
        Dialect::Rst => &RST_NS,
        Dialect::Rst2 => &RST2_NS,
    }
}

/// The opening of every answer: XML declaration and the envelope with all prefixes used.
fn envelope_start(dialect: Dialect) -> String {
    let ns = namespaces(dialect);
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <S:Envelope xmlns:S=\"{}\" xmlns:wst=\"{}\" xmlns:wsse=\"{}\" xmlns:wsu=\"{WSU}\" \
         xmlns:wsp=\"{}\" xmlns:wsa=\"{}\" xmlns:psf=\"{PSF}\">",
        ns.soap, ns.trust, ns.wsse, ns.wsp, ns.wsa
    )
}

/// Who signed in and from where, for the `psf:pp` header.
pub(crate) struct Subject<'a> {
    pub(crate) account: &'a Account,
    /// The client's address, when the listener knows it.
    pub(crate) peer: Option<IpAddr>,
}

/// The successful answer: one `RequestSecurityTokenResponse` per requested token, in
/// request order, each echoing its address. `now` is the Unix time of issue.
pub(crate) fn success(
    dialect: Dialect,
    subject: &Subject<'_>,
    requested: &[RequestedToken],
    tickets: &dyn Tickets,
    now: u64,
) -> String {
    let account = subject.account;
    let created = timestamp(now);
    let expires = timestamp(now.saturating_add(TOKEN_LIFETIME_SECS));
    let mut out = envelope_start(dialect);
    out.push_str("<S:Header>");
    if dialect == Dialect::Rst2 {
        out.push_str(&format!(
            "<wsa:Action S:mustUnderstand=\"1\">http://schemas.xmlsoap.org/ws/2005/02/trust/RSTR/Issue</wsa:Action>\
             <wsa:To S:mustUnderstand=\"1\">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To>\
             <wsse:Security S:mustUnderstand=\"1\"><wsu:Timestamp wsu:Id=\"TS\"><wsu:Created>{created}</wsu:Created>\
             <wsu:Expires>{}</wsu:Expires></wsu:Timestamp></wsse:Security>",
            timestamp(now.saturating_add(MESSAGE_LIFETIME_SECS))
        ));
    }
    out.push_str(&passport_header(subject, &created));
    out.push_str("</S:Header><S:Body><wst:RequestSecurityTokenResponseCollection>");
    // RST writes `LifeTime`, RST2 `Lifetime` (papyon reads the former, MSNPSharp the latter).
    let lifetime = match dialect {
        Dialect::Rst => "LifeTime",
        Dialect::Rst2 => "Lifetime",
    };
    for (n, token) in requested.iter().enumerate() {
        let address = escape(token.address.as_str());
        let legacy = token.address.eq_ignore_ascii_case(TB_ADDRESS);
        let token_type = if legacy { "legacy" } else { "compact" };
        out.push_str(&format!(
            "<wst:RequestSecurityTokenResponse><wst:TokenType>urn:passport:{token_type}</wst:TokenType>\
             <wsp:AppliesTo><wsa:EndpointReference><wsa:Address>{address}</wsa:Address>\
             </wsa:EndpointReference></wsp:AppliesTo>\
             <wst:{lifetime}><wsu:Created>{created}</wsu:Created><wsu:Expires>{expires}</wsu:Expires></wst:{lifetime}>"
        ));
        if legacy {
            legacy_token(&mut out, dialect, n, account, tickets);
        } else {
            compact_token(&mut out, dialect, n, account, &token.address, tickets);
        }
        out.push_str("</wst:RequestSecurityTokenResponse>");
    }
    out.push_str("</wst:RequestSecurityTokenResponseCollection></S:Body></S:Envelope>");
    out
}

/// A compact ticket `t=<token>&p=` for the service the address names; the
/// `messengerclear.live.com` one also carries the binary secret that keys the `USR SSO`
/// proof (LOGIN.md §3), derived from the token so the NS can recompute it.
fn compact_token(
    out: &mut String,
    dialect: Dialect,
    n: usize,
    account: &Account,
    address: &str,
    tickets: &dyn Tickets,
) {
    let service = Service::for_address(address);
    let token = tickets.issue_service(account.id, &account.email, service);
    // A JWT is base64url and dots; escaping keeps the document well-formed regardless.
    out.push_str(&format!(
        "<wst:RequestedSecurityToken><wsse:BinarySecurityToken Id=\"Compact{n}\">t={}&amp;p=\
         </wsse:BinarySecurityToken></wst:RequestedSecurityToken>",
        escape(token.as_str())
    ));
    match dialect {
        Dialect::Rst => out.push_str(&format!(
            "<wst:RequestedTokenReference><wsse:KeyIdentifier ValueType=\"urn:passport:compact\"/>\
             <wsse:Reference URI=\"#Compact{n}\"/></wst:RequestedTokenReference>"
        )),
        Dialect::Rst2 => out.push_str(&format!(
            "<wst:RequestedAttachedReference><wsse:SecurityTokenReference><wsse:Reference URI=\"#Compact{n}\"/>\
             </wsse:SecurityTokenReference></wst:RequestedAttachedReference>\
             <wst:RequestedUnattachedReference><wsse:SecurityTokenReference><wsse:Reference URI=\"#Compact{n}\"/>\
             </wsse:SecurityTokenReference></wst:RequestedUnattachedReference>"
        )),
    }
    if service == Service::Messenger {
        proof_token(out, &tickets.binary_secret(&token));
    }
}

/// The Passport base token. Clients keep it but we never see it again, so it is opaque:
/// an `Other` ticket (good for nothing) as the cipher value, with the binary secret that
/// token derives, in the encrypted-data shape clients expect.
fn legacy_token(
    out: &mut String,
    dialect: Dialect,
    n: usize,
    account: &Account,
    tickets: &dyn Tickets,
) {
    let token = tickets.issue_service(account.id, &account.email, Service::Other);
    out.push_str(&format!(
        "<wst:RequestedSecurityToken><EncryptedData xmlns=\"http://www.w3.org/2001/04/xmlenc#\" \
         Id=\"BinaryDAToken{n}\" Type=\"http://www.w3.org/2001/04/xmlenc#Element\">\
         <EncryptionMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#tripledes-cbc\"/>\
         <ds:KeyInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:KeyName>http://Passport.NET/STS</ds:KeyName></ds:KeyInfo>\
         <CipherData><CipherValue>{}</CipherValue></CipherData></EncryptedData></wst:RequestedSecurityToken>",
        BASE64.encode(token.as_bytes())
    ));
    if dialect == Dialect::Rst {
        out.push_str(&format!(
            "<wst:RequestedTokenReference><wsse:KeyIdentifier ValueType=\"urn:passport\"/>\
             <wsse:Reference URI=\"#BinaryDAToken{n}\"/></wst:RequestedTokenReference>"
        ));
    }
    proof_token(out, &tickets.binary_secret(&token));
}

fn proof_token(out: &mut String, secret: &[u8]) {
    out.push_str(&format!(
        "<wst:RequestedProofToken><wst:BinarySecret>{}</wst:BinarySecret></wst:RequestedProofToken>",
        BASE64.encode(secret)
    ));
}

/// `psf:pp` of a successful answer: the account's PUID and CID (spec §0.3), its sign-in
/// name, and constant brand/locale properties (clients read `MainBrandID`).
fn passport_header(subject: &Subject<'_>, now: &str) -> String {
    let account = subject.account;
    let cid = ids::cid_hex(account.id);
    let ip = subject
        .peer
        .map(|ip| format!("<psf:credProperty Name=\"IP\">{ip}</psf:credProperty>"))
        .unwrap_or_default();
    format!(
        "<psf:pp><psf:serverVersion>1</psf:serverVersion><psf:PUID>{puid}</psf:PUID>\
         <psf:authstate>0x48803</psf:authstate><psf:reqstatus>0x0</psf:reqstatus>\
         <psf:serverInfo Path=\"Live1\" RollingUpgradeState=\"ExclusiveNew\" LocVersion=\"0\" \
         ServerTime=\"{now}\">butterfly</psf:serverInfo><psf:cookies/>\
         <psf:credProperties><psf:credProperty Name=\"MainBrandID\">MSFT</psf:credProperty>\
         <psf:credProperty Name=\"BrandIDList\"></psf:credProperty>\
         <psf:credProperty Name=\"IsWinLiveUser\">true</psf:credProperty>\
         <psf:credProperty Name=\"CID\">{cid}</psf:credProperty>\
         <psf:credProperty Name=\"AuthMembername\">{email}</psf:credProperty>\
         <psf:credProperty Name=\"Country\">US</psf:credProperty>\
         <psf:credProperty Name=\"Language\">1033</psf:credProperty>\
         <psf:credProperty Name=\"FirstName\"></psf:credProperty>\
         <psf:credProperty Name=\"LastName\"></psf:credProperty>\
         <psf:credProperty Name=\"ChildFlags\">00000001</psf:credProperty>\
         <psf:credProperty Name=\"Flags\">40100643</psf:credProperty>{ip}\
         </psf:credProperties><psf:extProperties><psf:extProperty Name=\"CID\">{cid}</psf:extProperty>\
         </psf:extProperties><psf:response/></psf:pp>",
        puid = ids::puid_hex(account.id),
        email = escape(account.email.as_str()),
    )
}

/// `psf:pp` of a failed request.
fn failure_header(reqstatus: &str) -> String {
    format!(
        "<S:Header><psf:pp><psf:serverVersion>1</psf:serverVersion>\
         <psf:authstate>{AUTHSTATE_FAILED}</psf:authstate><psf:reqstatus>{reqstatus}</psf:reqstatus>\
         </psf:pp></S:Header>"
    )
}

/// Wrong password or unknown sign-in name: the fault clients show as "incorrect
/// password" (spec §1.5; not `0x800488ee`, which means "federated, go elsewhere").
pub(crate) fn failed_authentication(dialect: Dialect) -> String {
    let mut out = envelope_start(dialect);
    match dialect {
        Dialect::Rst => {
            out.push_str(&failure_header(STATUS_BAD_PASSWORD_RST));
            out.push_str(
                "<S:Body><S:Fault><faultcode>wsse:FailedAuthentication</faultcode>\
                 <faultstring>Authentication Failure</faultstring></S:Fault></S:Body>",
            );
        }
        Dialect::Rst2 => {
            out.push_str(&failure_header(STATUS_BAD_PASSWORD_RST2));
            out.push_str(&soap12_fault(
                "wst:FailedAuthentication",
                "Authentication Failure",
                STATUS_BAD_PASSWORD_RST2,
                "0x80041012",
                "The entered and stored passwords do not match.",
            ));
        }
    }
    out.push_str("</S:Envelope>");
    out
}

/// A request we cannot make sense of (spec §1.5).
pub(crate) fn invalid_request(dialect: Dialect) -> String {
    let mut out = envelope_start(dialect);
    out.push_str(&failure_header(STATUS_INVALID_REQUEST));
    match dialect {
        Dialect::Rst => out.push_str(
            "<S:Body><S:Fault><faultcode>S:Client</faultcode>\
             <faultstring>Invalid Request</faultstring></S:Fault></S:Body>",
        ),
        Dialect::Rst2 => out.push_str(&soap12_fault(
            "wst:InvalidRequest",
            "Invalid Request",
            STATUS_INVALID_REQUEST,
            "0x80045c01",
            "The request is not a well-formed token request.",
        )),
    }
    out.push_str("</S:Envelope>");
    out
}

/// A SOAP 1.2 `Sender` fault with Passport's error detail.
fn soap12_fault(subcode: &str, reason: &str, value: &str, code: &str, text: &str) -> String {
    format!(
        "<S:Body><S:Fault><S:Code><S:Value>S:Sender</S:Value><S:Subcode><S:Value>{subcode}</S:Value>\
         </S:Subcode></S:Code><S:Reason><S:Text xml:lang=\"en-US\">{reason}</S:Text></S:Reason>\
         <S:Detail><psf:error><psf:value>{value}</psf:value><psf:internalerror><psf:code>{code}</psf:code>\
         <psf:text>{text}</psf:text></psf:internalerror></psf:error></S:Detail></S:Fault></S:Body>"
    )
}

/// Unix time as `YYYY-MM-DDTHH:MM:SSZ` (UTC), the only form MSNPSharp parses.
pub(crate) fn timestamp(unix: u64) -> String {
    butterfly_core::clock::utc_z(i64::try_from(unix).unwrap_or(i64::MAX / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(timestamp(1_714_557_600), "2024-05-01T10:00:00Z");
        assert_eq!(
            timestamp(1_714_557_600 + TOKEN_LIFETIME_SECS),
            "2024-05-02T10:00:00Z"
        );
        assert_eq!(timestamp(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(timestamp(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(timestamp(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn faults_are_well_formed_and_carry_the_status() {
        for dialect in [Dialect::Rst, Dialect::Rst2] {
            for (xml, status) in [
                (
                    failed_authentication(dialect),
                    match dialect {
                        Dialect::Rst => STATUS_BAD_PASSWORD_RST,
                        Dialect::Rst2 => STATUS_BAD_PASSWORD_RST2,
                    },
                ),
                (invalid_request(dialect), STATUS_INVALID_REQUEST),
            ] {
                let mut reader = quick_xml::Reader::from_str(&xml);
                loop {
                    match reader.read_event() {
                        Ok(quick_xml::events::Event::Eof) => break,
                        Ok(_) => {}
                        Err(e) => panic!("{e}: {xml}"),
                    }
                }
                assert!(xml.contains(&format!("<psf:reqstatus>{status}</psf:reqstatus>")));
                assert!(xml.contains(namespaces(dialect).soap));
            }
        }
    }
}
