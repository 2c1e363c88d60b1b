//! The WLM token service (`RST.srf`, `RST2.srf`) over real HTTP/1.1, with requests shaped
//! like those of WLM 8.5 (SOAP 1.1) and WLM 2009 (SOAP 1.2), and the answers read back
//! with an XML parser the way clients read them.

mod common;

use std::sync::atomic::Ordering;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use butterfly_core::account::Account;
use butterfly_core::ids;
use butterfly_core::tickets::{Service, Tickets};
use common::{
    Reply, Server, XMLISH_PASSWORD, parse_reply, request, request_with_body, send_raw, start,
};
use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------- namespaces

const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
const TRUST_2004: &str = "http://schemas.xmlsoap.org/ws/2004/04/trust";
const TRUST_2005: &str = "http://schemas.xmlsoap.org/ws/2005/02/trust";
const WSSE_2003: &str = "http://schemas.xmlsoap.org/ws/2003/06/secext";
const WSSE_OASIS: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
const WSU: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
const PSF: &str = "http://schemas.microsoft.com/Passport/SoapServices/SOAPFault";
const PPCRL: &str = "http://schemas.microsoft.com/Passport/SoapServices/PPCRL";

// ---------------------------------------------------------------- requests

/// What WLM 2009 asks RST2.srf for (spec §1.2), in its order.
const WLM2009_TOKENS: &[(&str, Option<&str>)] = &[
    ("http://Passport.NET/tb", None),
    ("messengerclear.live.com", Some("MBI_KEY_OLD")),
    ("messenger.msn.com", Some("?id=507")),
    ("messengersecure.live.com", Some("MBI_SSL")),
    ("contacts.msn.com", Some("MBI")),
    ("storage.msn.com", Some("MBI")),
    ("sup.live.com", Some("MBI")),
];

/// What WLM 8.5 asks RST.srf for (SOAP.md §1).
const WLM85_TOKENS: &[(&str, Option<&str>)] = &[
    ("http://Passport.NET/tb", None),
    ("messengerclear.live.com", Some("MBI_KEY_OLD")),
    ("messenger.msn.com", Some("?id=507")),
    ("contacts.msn.com", Some("MBI")),
    ("messengersecure.live.com", Some("MBI_SSL")),
    ("spaces.live.com", Some("MBI")),
    ("storage.msn.com", Some("MBI_SSL")),
];

/// A WLM 2009-style RST2 request (SOAP 1.2, WS-Trust 2005/02). `password` is inserted
/// as is, so the caller escapes it.
fn rst2_request(user: &str, password: &str, tokens: &[(&str, Option<&str>)]) -> String {
    let mut rsts = String::new();
    for (i, (address, policy)) in tokens.iter().enumerate() {
        let policy = policy
            .map(|p| format!("<wsp:PolicyReference URI=\"{p}\"></wsp:PolicyReference>"))
            .unwrap_or_default();
        rsts.push_str(&format!(
            "<wst:RequestSecurityToken Id=\"RST{i}\">\
             <wst:RequestType>http://schemas.xmlsoap.org/ws/2005/02/trust/Issue</wst:RequestType>\
             <wsp:AppliesTo><wsa:EndpointReference><wsa:Address>{address}</wsa:Address>\
             </wsa:EndpointReference></wsp:AppliesTo>{policy}</wst:RequestSecurityToken>\n"
        ));
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="{SOAP12}" xmlns:ps="{PPCRL}" xmlns:wsse="{WSSE_OASIS}"
 xmlns:saml="urn:oasis:names:tc:SAML:1.0:assertion" xmlns:wsp="http://schemas.xmlsoap.org/ws/2004/09/policy"
 xmlns:wsu="{WSU}" xmlns:wsa="http://www.w3.org/2005/08/addressing"
 xmlns:wssc="http://schemas.xmlsoap.org/ws/2005/02/sc" xmlns:wst="{TRUST_2005}">
<s:Header>
<wsa:Action s:mustUnderstand="1">http://schemas.xmlsoap.org/ws/2005/02/trust/RST/Issue</wsa:Action>
<wsa:To s:mustUnderstand="1">HTTPS://login.live.com:443//RST2.srf</wsa:To>
<wsa:MessageID>1266011541</wsa:MessageID>
<ps:AuthInfo xmlns:ps="{PPCRL}" Id="PPAuthInfo">
<ps:HostingApp>{{7108E71A-9926-4FCB-BCC9-9A9D3F32E423}}</ps:HostingApp>
<ps:BinaryVersion>5</ps:BinaryVersion><ps:UIVersion>1</ps:UIVersion><ps:Cookies></ps:Cookies>
<ps:RequestParams>AQAAAAIAAABsYwQAAAAxMDMz</ps:RequestParams></ps:AuthInfo>
<wsse:Security><wsse:UsernameToken wsu:Id="user">
<wsse:Username>{user}</wsse:Username><wsse:Password>{password}</wsse:Password></wsse:UsernameToken>
<wsu:Timestamp Id="Timestamp"><wsu:Created>2010-02-12T21:52:21Z</wsu:Created>
<wsu:Expires>2010-02-12T21:57:21Z</wsu:Expires></wsu:Timestamp></wsse:Security>
</s:Header>
<s:Body><ps:RequestMultipleSecurityTokens xmlns:ps="{PPCRL}" Id="RSTS">
{rsts}</ps:RequestMultipleSecurityTokens></s:Body></s:Envelope>"#
    )
}

/// A WLM 8.5-style RST request (SOAP 1.1 with a default namespace, WS-Trust 2004/04).
fn rst_request(user: &str, password: &str, tokens: &[(&str, Option<&str>)]) -> String {
    let mut rsts = String::new();
    for (i, (address, policy)) in tokens.iter().enumerate() {
        let policy = policy
            .map(|p| format!("<wsse:PolicyReference URI=\"{p}\"></wsse:PolicyReference>"))
            .unwrap_or_default();
        rsts.push_str(&format!(
            "<wst:RequestSecurityToken Id=\"RST{i}\">\
             <wst:RequestType>http://schemas.xmlsoap.org/ws/2004/04/security/trust/Issue</wst:RequestType>\
             <wsp:AppliesTo><wsa:EndpointReference><wsa:Address>{address}</wsa:Address>\
             </wsa:EndpointReference></wsp:AppliesTo>{policy}</wst:RequestSecurityToken>"
        ));
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="{SOAP11}" xmlns:wsse="{WSSE_2003}"
 xmlns:saml="urn:oasis:names:tc:SAML:1.0:assertion" xmlns:wsp="http://schemas.xmlsoap.org/ws/2002/12/policy"
 xmlns:wsu="{WSU}" xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/03/addressing"
 xmlns:wssc="http://schemas.xmlsoap.org/ws/2004/04/sc" xmlns:wst="{TRUST_2004}">
<Header><ps:AuthInfo xmlns:ps="{PPCRL}" Id="PPAuthInfo">
<ps:HostingApp>{{7108E71A-9926-4FCB-BCC9-9A9D3F32E423}}</ps:HostingApp>
<ps:BinaryVersion>4</ps:BinaryVersion><ps:UIVersion>1</ps:UIVersion><ps:Cookies></ps:Cookies>
<ps:RequestParams>AQAAAAIAAABsYwQAAAAzMDg0</ps:RequestParams></ps:AuthInfo>
<wsse:Security><wsse:UsernameToken Id="user"><wsse:Username>{user}</wsse:Username>
<wsse:Password>{password}</wsse:Password></wsse:UsernameToken></wsse:Security></Header>
<Body><ps:RequestMultipleSecurityTokens xmlns:ps="{PPCRL}" Id="RSTS">{rsts}
</ps:RequestMultipleSecurityTokens></Body></Envelope>"#
    )
}

async fn post(server: &Server, path: &str, body: &str) -> Reply {
    request_with_body(
        server.addr,
        "POST",
        path,
        &[("Content-Type", "application/soap+xml")],
        body.as_bytes(),
    )
    .await
}

// ---------------------------------------------------------------- reading the answers

/// An element of a parsed answer: namespace, local name, attributes by local name, text.
#[derive(Debug)]
struct Node {
    ns: String,
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    fn get(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The element at this path of local names; panics with the path if absent.
    fn at(&self, path: &[&str]) -> &Node {
        path.iter().fold(self, |node, name| {
            node.get(name)
                .unwrap_or_else(|| panic!("no {name} in {} (path {path:?})", node.name))
        })
    }

    fn find(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |node, name| node.get(name))
    }

    /// Every element with this local name, at any depth.
    fn descendants<'a>(&'a self, name: &str, out: &mut Vec<&'a Node>) {
        for c in &self.children {
            if c.name == name {
                out.push(c);
            }
            c.descendants(name, out);
        }
    }

    fn count(&self, name: &str) -> usize {
        let mut all = Vec::new();
        self.descendants(name, &mut all);
        all.len()
    }
}

/// Parse a whole answer into a tree (namespaces resolved, entities unescaped).
fn parse_xml(xml: &str) -> Node {
    let mut reader = NsReader::from_str(xml);
    let mut stack: Vec<Node> = Vec::new();
    loop {
        let (ns, event) = reader.read_resolved_event().expect("well-formed answer");
        let ns = match ns {
            ResolveResult::Bound(ns) => ns.into_inner().to_owned(),
            ResolveResult::Unbound => String::new(),
            ResolveResult::Unknown(p) => panic!("undeclared prefix {p} in {xml}"),
        };
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let node = Node {
                    ns,
                    name: e.local_name().into_inner().to_owned(),
                    attrs: e
                        .attributes()
                        .map(|a| {
                            let a = a.unwrap();
                            (
                                a.key.local_name().into_inner().to_owned(),
                                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                    .unwrap()
                                    .into_owned(),
                            )
                        })
                        .collect(),
                    text: String::new(),
                    children: Vec::new(),
                };
                stack.push(node);
                if matches!(event, Event::Empty(_)) {
                    close(&mut stack);
                }
            }
            Event::End(_) => {
                if let Some(root) = close(&mut stack) {
                    return root;
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                let text = match r.resolve_char_ref().unwrap() {
                    Some(c) => c.to_string(),
                    None => quick_xml::escape::resolve_xml_entity(&r.into_inner())
                        .expect("predefined entity")
                        .to_owned(),
                };
                stack.last_mut().expect("inside root").text.push_str(&text);
            }
            Event::Eof => panic!("unexpected end of {xml}"),
            _ => {}
        }
    }
}

/// Pop the top element into its parent; the root when it was the last one.
fn close(stack: &mut Vec<Node>) -> Option<Node> {
    let node = stack.pop().expect("open element");
    match stack.last_mut() {
        Some(parent) => {
            parent.children.push(node);
            None
        }
        None => Some(node),
    }
}

/// Checks common to every token-service answer, then the parsed envelope.
fn envelope(reply: &Reply, status: u16, soap_ns: &str) -> Node {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(
        reply.header("Content-Type"),
        Some("text/xml; charset=utf-8")
    );
    assert_eq!(reply.header("Cache-Control"), Some("no-store"));
    assert!(
        reply
            .text()
            .starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>"),
        "{}",
        reply.text()
    );
    let root = parse_xml(reply.text());
    assert_eq!(
        (root.ns.as_str(), root.name.as_str()),
        (soap_ns, "Envelope")
    );
    root
}

/// `YYYY-MM-DDTHH:MM:SSZ` → Unix time; panics on any other shape (MSNPSharp's rule).
fn unix_time(ts: &str) -> i64 {
    let b = ts.as_bytes();
    assert_eq!(ts.len(), 20, "{ts}");
    for (i, &c) in b.iter().enumerate() {
        let want = match i {
            4 | 7 => Some(b'-'),
            10 => Some(b'T'),
            13 | 16 => Some(b':'),
            19 => Some(b'Z'),
            _ => None,
        };
        match want {
            Some(w) => assert_eq!(c, w, "{ts}"),
            None => assert!(c.is_ascii_digit(), "{ts}"),
        }
    }
    let n = |r: std::ops::Range<usize>| ts[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (proleptic Gregorian), the inverse of what the server computes.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

/// One token response as a client reads it.
#[derive(Debug)]
struct Issued {
    token_type: String,
    address: String,
    created: i64,
    expires: i64,
    /// The `t=…&p=` text (compact tokens) or the cipher value (the legacy tb token).
    token: String,
    binary_secret: Option<Vec<u8>>,
}

/// The token responses of a success answer, checking the dialect's shape on the way.
fn issued(root: &Node, rst2: bool) -> Vec<Issued> {
    let collection = root.at(&["Body", "RequestSecurityTokenResponseCollection"]);
    let trust = if rst2 { TRUST_2005 } else { TRUST_2004 };
    assert_eq!(collection.ns, trust);
    assert_eq!(root.find(&["Body", "Fault"]).map(|n| &n.name), None);
    let lifetime = if rst2 { "Lifetime" } else { "LifeTime" };
    let other_lifetime = if rst2 { "LifeTime" } else { "Lifetime" };
    let mut out = Vec::new();
    for (n, rstr) in collection
        .children("RequestSecurityTokenResponse")
        .enumerate()
    {
        assert_eq!(rstr.ns, trust);
        assert!(rstr.get(other_lifetime).is_none(), "{rstr:?}");
        let token_type = rstr.at(&["TokenType"]).text.clone();
        let requested = rstr.at(&["RequestedSecurityToken"]);
        let token = if token_type == "urn:passport:legacy" {
            let data = requested.at(&["EncryptedData"]);
            assert_eq!(data.attr("Id"), Some(format!("BinaryDAToken{n}").as_str()));
            data.at(&["CipherData", "CipherValue"]).text.clone()
        } else {
            let bst = requested.at(&["BinarySecurityToken"]);
            assert_eq!(bst.ns, if rst2 { WSSE_OASIS } else { WSSE_2003 });
            assert_eq!(bst.attr("Id"), Some(format!("Compact{n}").as_str()));
            if rst2 {
                for r in ["RequestedAttachedReference", "RequestedUnattachedReference"] {
                    let uri = rstr
                        .at(&[r, "SecurityTokenReference", "Reference"])
                        .attr("URI");
                    assert_eq!(uri, Some(format!("#Compact{n}").as_str()));
                }
                assert!(rstr.get("RequestedTokenReference").is_none());
            } else {
                let reference = rstr.at(&["RequestedTokenReference"]);
                assert_eq!(
                    reference.at(&["KeyIdentifier"]).attr("ValueType"),
                    Some("urn:passport:compact")
                );
                assert_eq!(
                    reference.at(&["Reference"]).attr("URI"),
                    Some(format!("#Compact{n}").as_str())
                );
                assert!(rstr.get("RequestedAttachedReference").is_none());
            }
            bst.text.clone()
        };
        let life = rstr.at(&[lifetime]);
        assert_eq!(life.at(&["Created"]).ns, WSU);
        out.push(Issued {
            token_type,
            address: rstr
                .at(&["AppliesTo", "EndpointReference", "Address"])
                .text
                .clone(),
            created: unix_time(&life.at(&["Created"]).text),
            expires: unix_time(&life.at(&["Expires"]).text),
            token,
            binary_secret: rstr
                .find(&["RequestedProofToken", "BinarySecret"])
                .map(|s| BASE64.decode(&s.text).expect("base64 BinarySecret")),
        });
    }
    out
}

/// `t=<token>&p=` → `<token>`.
fn ticket(text: &str) -> &str {
    text.strip_prefix("t=")
        .and_then(|t| t.strip_suffix("&p="))
        .unwrap_or_else(|| panic!("not t=…&p=: {text}"))
}

/// The `psf:pp` header of a success answer names this account.
fn assert_passport_header(root: &Node, account: &Account) {
    let pp = root.at(&["Header", "pp"]);
    assert_eq!(pp.ns, PSF);
    assert_eq!(pp.at(&["PUID"]).text, ids::puid_hex(account.id));
    assert_eq!(pp.at(&["reqstatus"]).text, "0x0");
    let prop = |name: &str| {
        pp.at(&["credProperties"])
            .children("credProperty")
            .find(|p| p.attr("Name") == Some(name))
            .map(|p| p.text.clone())
    };
    assert_eq!(prop("CID"), Some(ids::cid_hex(account.id)));
    assert_eq!(
        prop("AuthMembername").as_deref(),
        Some(account.email.as_str())
    );
    assert_eq!(prop("MainBrandID").as_deref(), Some("MSFT"));
}

/// Every real service, for checking that a token is good for exactly one of them.
const SERVICES: [Service; 5] = [
    Service::Messenger,
    Service::Web,
    Service::Contacts,
    Service::Storage,
    Service::Oim,
];

/// Each compact token verifies for its own service and no other, names `account`, and
/// lives 24 hours; only messengerclear (and the legacy tb token) carries a binary secret,
/// and messengerclear's is the one the NS derives from its ticket.
fn assert_tokens(server: &Server, tokens: &[Issued], account: &Account) {
    for t in tokens {
        assert_eq!(t.expires - t.created, 24 * 3600, "{t:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((t.created - now).abs() <= 5, "{t:?}");
        if t.address == "http://Passport.NET/tb" {
            assert_eq!(t.token_type, "urn:passport:legacy");
            assert!(BASE64.decode(&t.token).is_ok(), "{t:?}");
            assert_eq!(t.binary_secret.as_ref().map(Vec::len), Some(24));
            continue;
        }
        assert_eq!(t.token_type, "urn:passport:compact");
        let token = ticket(&t.token);
        let own = Service::for_address(&t.address);
        for service in SERVICES {
            let verdict = server.tickets.verify_service(token, &[service]);
            if service == own {
                let claims = verdict.unwrap_or_else(|e| panic!("{}: {e}", t.address));
                assert_eq!(
                    (claims.sub, claims.uid),
                    (account.email.clone(), account.id.0)
                );
            } else {
                assert!(
                    verdict.is_err(),
                    "{} token accepted as {service:?}",
                    t.address
                );
            }
        }
        if own == Service::Messenger {
            let secret = t
                .binary_secret
                .as_ref()
                .expect("messengerclear BinarySecret");
            assert_eq!(secret.as_slice(), server.tickets.binary_secret(token));
        } else {
            assert_eq!(t.binary_secret, None, "{t:?}");
        }
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn wlm2009_rst2_gets_one_token_per_service() {
    let server = start().await;
    let reply = post(
        &server,
        "/RST2.srf",
        &rst2_request("alice@example.com", "hunter2", WLM2009_TOKENS),
    )
    .await;
    let root = envelope(&reply, 200, SOAP12);
    // RST2 header: WS-Addressing action, a message timestamp, then psf:pp.
    let header = root.at(&["Header"]);
    assert_eq!(
        header.at(&["Action"]).text,
        "http://schemas.xmlsoap.org/ws/2005/02/trust/RSTR/Issue"
    );
    let stamp = header.at(&["Security", "Timestamp"]);
    assert_eq!(header.at(&["Security"]).ns, WSSE_OASIS);
    let (created, expires) = (
        unix_time(&stamp.at(&["Created"]).text),
        unix_time(&stamp.at(&["Expires"]).text),
    );
    assert!(expires > created);
    assert_passport_header(&root, &server.alice);

    let tokens = issued(&root, true);
    let addresses: Vec<&str> = tokens.iter().map(|t| t.address.as_str()).collect();
    let asked: Vec<&str> = WLM2009_TOKENS.iter().map(|(a, _)| *a).collect();
    assert_eq!(addresses, asked);
    assert_tokens(&server, &tokens, &server.alice);

    // The sign-in proof of USR SSO S: the client builds the MBI blob with the
    // BinarySecret it got; the NS checks it with the secret it derives from the ticket.
    let clear = &tokens[1];
    let nonce = "8CLhG/xfgYZ7TyRQ/jIAWyDmd/w4R4GF2yKLS6tYrnjzi4cFag/Nr+hxsfg5zlCf";
    let client_secret = clear.binary_secret.as_ref().unwrap();
    let blob = msnp::auth::mbi_blob(client_secret, nonce, [7, 6, 5, 4, 3, 2, 1, 0]);
    let ns_secret = server.tickets.binary_secret(ticket(&clear.token));
    assert_eq!(
        msnp::auth::verify_mbi_blob(&ns_secret, nonce, &blob),
        Ok(())
    );
    // A blob keyed with another secret (the tb one) does not pass.
    let wrong = msnp::auth::mbi_blob(tokens[0].binary_secret.as_ref().unwrap(), nonce, [0; 8]);
    assert!(msnp::auth::verify_mbi_blob(&ns_secret, nonce, &wrong).is_err());
    // The NS takes the messengerclear ticket for USR SSO/TWN, the contacts one it refuses.
    assert!(server.tickets.verify_passport(ticket(&clear.token)).is_ok());
    let contacts = tokens
        .iter()
        .find(|t| t.address == "contacts.msn.com")
        .unwrap();
    assert!(
        server
            .tickets
            .verify_service(ticket(&contacts.token), &[Service::Messenger])
            .is_err()
    );
    assert!(
        server
            .tickets
            .verify_passport(ticket(&contacts.token))
            .is_err()
    );
}

#[tokio::test]
async fn wlm85_rst_gets_the_soap11_form() {
    let server = start().await;
    let reply = post(
        &server,
        "/RST.srf",
        &rst_request("Alice@Example.com", "hunter2", WLM85_TOKENS),
    )
    .await;
    let root = envelope(&reply, 200, SOAP11);
    // SOAP 1.1 answer: psf:pp is the only header.
    let header = root.at(&["Header"]);
    let names: Vec<&str> = header.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["pp"]);
    assert_passport_header(&root, &server.alice);
    let tokens = issued(&root, false);
    let addresses: Vec<&str> = tokens.iter().map(|t| t.address.as_str()).collect();
    let asked: Vec<&str> = WLM85_TOKENS.iter().map(|(a, _)| *a).collect();
    assert_eq!(addresses, asked);
    assert_tokens(&server, &tokens, &server.alice);
    assert_eq!(root.count("BinarySecret"), 2, "tb and messengerclear only");
}

#[tokio::test]
async fn the_envelope_not_the_path_picks_the_dialect() {
    let server = start().await;
    let tokens = &[("messengerclear.live.com", Some("MBI_KEY_OLD"))][..];
    let reply = post(
        &server,
        "/rst.srf",
        &rst2_request("alice@example.com", "hunter2", tokens),
    )
    .await;
    assert_eq!(issued(&envelope(&reply, 200, SOAP12), true).len(), 1);
    let reply = post(
        &server,
        "/rst2.srf",
        &rst_request("alice@example.com", "hunter2", tokens),
    )
    .await;
    assert_eq!(issued(&envelope(&reply, 200, SOAP11), false).len(), 1);
}

#[tokio::test]
async fn addresses_are_echoed_exactly_and_unknown_ones_get_a_token() {
    let server = start().await;
    let tokens = &[
        ("  MessengerClear.Live.com ", Some("MBI_KEY_OLD")),
        ("https://example.org/a?b=1&amp;c=<", None),
        ("contacts.msn.com", Some("?fs=1&amp;id=24000&amp;kv=9")),
    ][..];
    let reply = post(
        &server,
        "/RST2.srf",
        &rst2_request("alice@example.com", "hunter2", tokens),
    )
    .await;
    // An unescaped `<` is not XML: the request is refused as a whole.
    assert_eq!(reply.status, 400);
    let tokens = &[
        ("  MessengerClear.Live.com ", Some("MBI_KEY_OLD")),
        ("https://example.org/a?b=1&amp;c=&lt;", None),
        ("contacts.msn.com", Some("?fs=1&amp;id=24000&amp;kv=9")),
    ][..];
    let reply = post(
        &server,
        "/RST2.srf",
        &rst2_request("alice@example.com", "hunter2", tokens),
    )
    .await;
    let issued = issued(&envelope(&reply, 200, SOAP12), true);
    let addresses: Vec<&str> = issued.iter().map(|t| t.address.as_str()).collect();
    assert_eq!(
        addresses,
        [
            "MessengerClear.Live.com",
            "https://example.org/a?b=1&c=<",
            "contacts.msn.com"
        ]
    );
    assert_tokens(&server, &issued, &server.alice);
    let other = ticket(&issued[1].token);
    for service in SERVICES {
        assert!(server.tickets.verify_service(other, &[service]).is_err());
    }
    assert!(
        server
            .tickets
            .verify_service(other, &[Service::Other])
            .is_ok()
    );
}

#[tokio::test]
async fn password_is_xml_unescaped() {
    let server = start().await;
    let escaped = "a&lt;b&gt;&amp;&quot;c&apos;d";
    let reply = post(
        &server,
        "/RST2.srf",
        &rst2_request("xmlish@example.com", escaped, WLM2009_TOKENS),
    )
    .await;
    let tokens = issued(&envelope(&reply, 200, SOAP12), true);
    assert_tokens(&server, &tokens, &server.xmlish);
    // Character references and CDATA spell the same password.
    let cdata = format!("<![CDATA[{XMLISH_PASSWORD}]]>");
    for spelling in ["a&#60;b&#x3E;&#38;&#34;c&#39;d", cdata.as_str()] {
        let reply = post(
            &server,
            "/RST.srf",
            &rst_request("xmlish@example.com", spelling, WLM85_TOKENS),
        )
        .await;
        assert_eq!(issued(&envelope(&reply, 200, SOAP11), false).len(), 7);
    }
    // Other accounts' passwords with special characters work unescaped too.
    let reply = post(
        &server,
        "/RST2.srf",
        &rst2_request("tricky+1@example.com", "p@ss,w%rd", WLM2009_TOKENS),
    )
    .await;
    assert_tokens(
        &server,
        &issued(&envelope(&reply, 200, SOAP12), true),
        &server.tricky,
    );
}

/// The RST2 failed-authentication fault, as a client reads it.
fn assert_rst2_failed(reply: &Reply) {
    let root = envelope(reply, 200, SOAP12);
    let pp = root.at(&["Header", "pp"]);
    assert_eq!(pp.ns, PSF);
    assert_eq!(pp.at(&["reqstatus"]).text, "0x80048821");
    assert_eq!(pp.at(&["authstate"]).text, "0x80048800");
    let fault = root.at(&["Body", "Fault"]);
    assert_eq!(fault.ns, SOAP12);
    assert_eq!(fault.at(&["Code", "Value"]).text, "S:Sender");
    assert_eq!(
        fault.at(&["Code", "Subcode", "Value"]).text,
        "wst:FailedAuthentication"
    );
    assert_eq!(fault.at(&["Detail", "error", "value"]).text, "0x80048821");
    assert_eq!(root.count("BinarySecurityToken"), 0);
}

/// The RST failed-authentication fault.
fn assert_rst_failed(reply: &Reply) {
    let root = envelope(reply, 200, SOAP11);
    assert_eq!(root.at(&["Header", "pp", "reqstatus"]).text, "0x80048823");
    let fault = root.at(&["Body", "Fault"]);
    // The fault code is a QName in the wsse namespace, as clients match its suffix.
    assert_eq!(fault.at(&["faultcode"]).text, "wsse:FailedAuthentication");
    assert!(
        reply
            .text()
            .contains(&format!("xmlns:wsse=\"{WSSE_2003}\""))
    );
    assert_eq!(fault.at(&["faultstring"]).text, "Authentication Failure");
    assert_eq!(root.count("BinarySecurityToken"), 0);
}

#[tokio::test]
async fn wrong_password_gets_failed_authentication() {
    let server = start().await;
    for password in ["hunter3", "HUNTER2", "hunter2 x"] {
        let reply = post(
            &server,
            "/RST2.srf",
            &rst2_request("alice@example.com", password, WLM2009_TOKENS),
        )
        .await;
        assert_rst2_failed(&reply);
        let reply = post(
            &server,
            "/RST.srf",
            &rst_request("alice@example.com", password, WLM85_TOKENS),
        )
        .await;
        assert_rst_failed(&reply);
    }
}

#[tokio::test]
async fn unknown_user_gets_the_same_answer() {
    let server = start().await;
    for (path, unknown, wrong) in [
        (
            "/RST2.srf",
            rst2_request("nobody@example.com", "hunter2", WLM2009_TOKENS),
            rst2_request("alice@example.com", "nope", WLM2009_TOKENS),
        ),
        (
            "/RST.srf",
            rst_request("nobody@example.com", "hunter2", WLM85_TOKENS),
            rst_request("alice@example.com", "nope", WLM85_TOKENS),
        ),
    ] {
        let unknown = post(&server, path, &unknown).await;
        let wrong = post(&server, path, &wrong).await;
        let strip = |r: &Reply| {
            r.headers
                .iter()
                .filter(|(n, _)| n != "date")
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            (unknown.status, strip(&unknown)),
            (wrong.status, strip(&wrong))
        );
        assert_eq!(unknown.body, wrong.body);
    }
    // A sign-in name that cannot be an account is refused the same way.
    let reply = post(
        &server,
        "/RST2.srf",
        &rst2_request("not-an-email", "hunter2", WLM2009_TOKENS),
    )
    .await;
    assert_rst2_failed(&reply);
}

#[tokio::test]
async fn paths_are_case_insensitive() {
    let server = start().await;
    for path in [
        "/RST2.SRF",
        "/Rst2.Srf",
        "/rst2.srf",
        "/RST.srf",
        "/rst.SRF",
    ] {
        let reply = post(
            &server,
            path,
            &rst2_request("alice@example.com", "hunter2", WLM2009_TOKENS),
        )
        .await;
        let tokens = issued(&envelope(&reply, 200, SOAP12), true);
        assert_eq!(tokens.len(), WLM2009_TOKENS.len(), "{path}");
    }
}

#[tokio::test]
async fn get_is_not_allowed() {
    let server = start().await;
    for path in ["/rst.srf", "/rst2.srf", "/RST.srf", "/RST2.SRF"] {
        let reply = request(server.addr, "GET", path, &[]).await;
        assert_eq!(reply.status, 405, "{path}");
        assert_eq!(reply.header("Allow"), Some("POST"), "{path}");
    }
}

/// The RST2 invalid-request fault.
fn assert_rst2_invalid(reply: &Reply) {
    let root = envelope(reply, 400, SOAP12);
    let fault = root.at(&["Body", "Fault"]);
    assert_eq!(fault.at(&["Code", "Value"]).text, "S:Sender");
    assert_eq!(
        fault.at(&["Code", "Subcode", "Value"]).text,
        "wst:InvalidRequest"
    );
    assert_eq!(fault.at(&["Detail", "error", "value"]).text, "0x80048820");
    assert_eq!(
        fault.at(&["Detail", "error", "internalerror", "code"]).text,
        "0x80045c01"
    );
    assert_eq!(root.count("BinarySecurityToken"), 0);
}

/// The RST invalid-request fault.
fn assert_rst_invalid(reply: &Reply) {
    let root = envelope(reply, 500, SOAP11);
    let fault = root.at(&["Body", "Fault"]);
    assert_eq!(fault.at(&["faultcode"]).text, "S:Client");
    assert_eq!(fault.at(&["faultstring"]).text, "Invalid Request");
    assert_eq!(root.count("BinarySecurityToken"), 0);
}

#[tokio::test]
async fn invalid_requests_get_the_invalid_request_fault() {
    let server = start().await;
    let good2 = rst2_request("alice@example.com", "hunter2", WLM2009_TOKENS);
    let good1 = rst_request("alice@example.com", "hunter2", WLM85_TOKENS);
    let without_decl =
        |xml: &str| xml.replacen("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "", 1);
    // (body, path): faults in the envelope's dialect, or the path's when there is none.
    let rst2_cases: Vec<(String, &str)> = vec![
        ("".into(), "/RST2.srf"),
        ("this is not xml".into(), "/RST2.srf"),
        (good2[..good2.len() / 2].to_owned(), "/RST2.srf"),
        (good2.replace("</wsse:UsernameToken>", ""), "/RST2.srf"),
        (
            good2.replace("</s:Envelope>", "</s:Envelope><s:Envelope/>"),
            "/RST2.srf",
        ),
        // Wrong root: not SOAP, or not an envelope.
        (good2.replace(SOAP12, "urn:not-soap"), "/RST2.srf"),
        (good2.replace("s:Envelope", "s:Body"), "/RST2.srf"),
        (
            "<html><body>alice@example.com hunter2</body></html>".into(),
            "/RST2.srf",
        ),
        // Missing credentials or tokens.
        (
            good2.replace("<wsse:Password>hunter2</wsse:Password>", ""),
            "/RST2.srf",
        ),
        (
            good2.replace("<wsse:Password>hunter2</wsse:Password>", "<wsse:Password/>"),
            "/rst.srf",
        ),
        (
            good2.replace("<wsse:Username>alice@example.com</wsse:Username>", ""),
            "/rst.srf",
        ),
        (
            rst2_request("alice@example.com", "hunter2", &[]),
            "/RST2.srf",
        ),
        // No DTD, no entities beyond the predefined ones.
        (
            format!(
                "<!DOCTYPE s:Envelope [<!ENTITY pw \"hunter2\">]>{}",
                without_decl(&rst2_request("alice@example.com", "&pw;", WLM2009_TOKENS))
            ),
            "/RST2.srf",
        ),
        (
            rst2_request("alice@example.com", "&pw;", WLM2009_TOKENS),
            "/RST2.srf",
        ),
    ];
    for (body, path) in rst2_cases {
        let reply = request_with_body(server.addr, "POST", path, &[], body.as_bytes()).await;
        // A body that has a SOAP 1.2 envelope gets the RST2 fault even on /rst.srf;
        // a body that has none gets the fault of the path (all /RST2.srf here).
        assert_rst2_invalid(&reply);
    }
    // Not UTF-8 (a Latin-1 password).
    let latin1 = good2.replace("hunter2", "hunter\u{e9}").into_bytes();
    let latin1: Vec<u8> = latin1
        .windows(2)
        .position(|w| w == "\u{e9}".as_bytes())
        .map(|at| [&latin1[..at], &[0xe9], &latin1[at + 2..]].concat())
        .unwrap();
    let reply = request_with_body(server.addr, "POST", "/RST2.srf", &[], &latin1).await;
    assert_rst2_invalid(&reply);
    let rst1_cases: Vec<String> = vec![
        "".into(),
        good1.replace(SOAP11, "urn:not-soap"),
        good1.replace("<wsse:Password>hunter2</wsse:Password>", ""),
        format!(
            "<!DOCTYPE Envelope [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;\">]>{}",
            without_decl(&rst_request("alice@example.com", "&b;", WLM85_TOKENS))
        ),
        rst_request("alice@example.com", "hunter2", &[]),
    ];
    for body in rst1_cases {
        let reply = post(&server, "/RST.srf", &body).await;
        assert_rst_invalid(&reply);
    }
    // The server is still fine.
    let reply = post(&server, "/RST2.srf", &good2).await;
    assert_eq!(issued(&envelope(&reply, 200, SOAP12), true).len(), 7);
}

#[tokio::test]
async fn oversized_body_gets_413() {
    let server = start().await;
    let limit = butterfly_passport::MAX_RST_BODY_LEN;
    // A declared length over the limit is refused before the body is read.
    let head = format!(
        "POST /RST2.srf HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        limit + 1
    );
    let reply = send_raw(server.addr, head.as_bytes()).await;
    assert_eq!(reply.status, 413, "{reply:?}");
    // A chunked body is cut off as soon as it passes the limit (we stop sending there,
    // without the final chunk: the server must not wait for it).
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut raw = b"POST /rst2.srf HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                    Transfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    let chunk = vec![b' '; limit / 2 + 1];
    for _ in 0..2 {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(&chunk);
        raw.extend_from_slice(b"\r\n");
    }
    stream.write_all(&raw).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert_eq!(parse_reply(&answer).status, 413);
    // Just under the limit is read (and is not a request: an Invalid Request fault).
    let reply = request_with_body(server.addr, "POST", "/RST2.srf", &[], &vec![b' '; limit]).await;
    assert_rst2_invalid(&reply);
    // The server still answers.
    let reply = post(
        &server,
        "/RST2.srf",
        &rst2_request("alice@example.com", "hunter2", WLM2009_TOKENS),
    )
    .await;
    assert_eq!(issued(&envelope(&reply, 200, SOAP12), true).len(), 7);
}

#[tokio::test]
async fn store_failure_is_a_bare_500() {
    let server = start().await;
    server.store.broken.store(true, Ordering::SeqCst);
    for (path, body) in [
        (
            "/RST2.srf",
            rst2_request("alice@example.com", "hunter2", WLM2009_TOKENS),
        ),
        (
            "/RST.srf",
            rst_request("alice@example.com", "hunter2", WLM85_TOKENS),
        ),
    ] {
        let reply = post(&server, path, &body).await;
        assert_eq!(reply.status, 500, "{reply:?}");
        assert!(reply.body.is_empty(), "{reply:?}");
    }
}
