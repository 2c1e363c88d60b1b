//! Reading a token-service request (`RST.srf`/`RST2.srf`, spec §1.2).
//!
//! What we read, by local name whatever the prefixes and namespaces (clients and versions
//! differ): the root must be a SOAP 1.1 or 1.2 `Envelope` (its namespace picks the answer's
//! dialect); `…/UsernameToken/Username` and `…/UsernameToken/Password`; and in the body each
//! `RequestSecurityToken` (inside `RequestMultipleSecurityTokens`, or alone) with its `@Id`,
//! `AppliesTo/EndpointReference/Address` and `PolicyReference/@URI`. Everything else
//! (`AuthInfo`, `wsa:*`, `Timestamp`, `RequestType`, …) is skipped.
//!
//! Hostile input: the body is bounded by the caller; here a document type declaration is
//! refused outright (so no entity can be declared, let alone expanded), references other
//! than the five predefined entities and character references are refused, nesting is
//! capped at [`MAX_DEPTH`], and a request may name at most [`MAX_TOKENS`] tokens. Any of
//! these, and any XML error, makes the request invalid — never a panic.

use quick_xml::NsReader;
use quick_xml::XmlVersion;
use quick_xml::escape::resolve_xml_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

/// Deepest element nesting accepted; real requests go 7 deep.
pub(crate) const MAX_DEPTH: usize = 32;
/// Most tokens one request may ask for; WLM 2009 asks for 7.
pub(crate) const MAX_TOKENS: usize = 32;

const SOAP11_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SOAP12_ENV: &str = "http://www.w3.org/2003/05/soap-envelope";

/// The two dialects of the token service: `RST.srf` (WLM 8.x, SOAP 1.1, WS-Trust 2004/04)
/// and `RST2.srf` (WLM 2009, SOAP 1.2, WS-Trust 2005/02). Told apart by the envelope's
/// namespace, not by the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Rst,
    Rst2,
}

impl Dialect {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Dialect::Rst => "rst",
            Dialect::Rst2 => "rst2",
        }
    }
}

/// A well-formed request: who signs in, and the tokens asked for, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenRequest {
    pub(crate) dialect: Dialect,
    /// `Username` text, trimmed (not yet checked to be a sign-in name).
    pub(crate) username: String,
    /// `Password` text exactly as sent, XML-unescaped (not trimmed: it is a secret).
    pub(crate) password: String,
    pub(crate) tokens: Vec<RequestedToken>,
}

/// One `RequestSecurityToken`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestedToken {
    /// `@Id` (`RST0`, `RST1`, …), if any.
    pub(crate) id: Option<String>,
    /// `AppliesTo/EndpointReference/Address`, trimmed; echoed back as is.
    pub(crate) address: String,
    /// `PolicyReference/@URI` (`MBI_KEY_OLD`, `?id=507`, …): read, logged, not acted on
    /// (spec §0.2: clients differ; every service gets its token whatever the policy).
    pub(crate) policy: Option<String>,
}

/// Why a request is not one we can answer with tokens (the client gets the "Invalid
/// Request" fault; the reason goes to the log only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invalid {
    /// The dialect, when the envelope got far enough to tell it.
    pub(crate) dialect: Option<Dialect>,
    pub(crate) reason: &'static str,
}

/// What the text being collected belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Username,
    Password,
    Address,
}

/// Parse state; see [`parse`].
struct Parser {
    dialect: Option<Dialect>,
    /// Local names of the open elements, root first.
    open: Vec<String>,
    /// The field whose element is open, and the depth (`open.len()`) at which its own
    /// text arrives; text of elements nested inside it is ignored.
    capture: Option<(Field, usize)>,
    text: String,
    username: Option<String>,
    password: Option<String>,
    tokens: Vec<Draft>,
    /// `open.len()` of the `RequestSecurityToken` being read, if one is.
    in_token: Option<usize>,
    root_closed: bool,
}

/// A `RequestSecurityToken` being read.
struct Draft {
    id: Option<String>,
    address: Option<String>,
    policy: Option<String>,
}

/// Parse a request body. Only UTF-8 is accepted (every client sends it).
pub(crate) fn parse(body: &[u8]) -> Result<TokenRequest, Invalid> {
    let invalid = |reason| Invalid {
        dialect: None,
        reason,
    };
    let text = std::str::from_utf8(body).map_err(|_| invalid("not-utf8"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parser = Parser {
        dialect: None,
        open: Vec::new(),
        capture: None,
        text: String::new(),
        username: None,
        password: None,
        tokens: Vec::new(),
        in_token: None,
        root_closed: false,
    };
    parser.run(text).map_err(|reason| Invalid {
        dialect: parser.dialect,
        reason,
    })?;
    parser.finish()
}

impl Parser {
    fn run(&mut self, text: &str) -> Result<(), &'static str> {
        let mut reader = NsReader::from_str(text);
        loop {
            let (ns, event) = reader.read_resolved_event().map_err(|_| "malformed-xml")?;
            let element_ns = match ns {
                ResolveResult::Bound(ns) => Some(ns.into_inner()),
                _ => None,
            };
            match event {
                Event::Start(e) => {
                    self.open_element(&e, element_ns)?;
                    self.open.push(e.local_name().into_inner().to_owned());
                }
                Event::Empty(e) => {
                    self.open_element(&e, element_ns)?;
                    // An empty element opens and closes at once.
                    self.open.push(e.local_name().into_inner().to_owned());
                    self.close_element();
                }
                Event::End(_) => self.close_element(),
                Event::Text(t) => self.add_text(&t.xml10_content())?,
                Event::CData(t) => self.add_text(&t.xml10_content())?,
                Event::GeneralRef(r) => {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        Ok(None) => resolve_xml_entity(&r.into_inner())
                            .ok_or("unknown-entity")?
                            .to_owned(),
                        Err(_) => return Err("bad-char-ref"),
                    };
                    self.add_text(&resolved)?;
                }
                // No DTD: nothing can declare an entity.
                Event::DocType(_) => return Err("doctype"),
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
                Event::Eof => break,
            }
        }
        if !self.root_closed {
            return Err("unclosed-or-missing-root");
        }
        Ok(())
    }

    fn open_element(&mut self, e: &BytesStart<'_>, ns: Option<&str>) -> Result<(), &'static str> {
        if self.root_closed {
            return Err("content-after-root");
        }
        if self.open.len() >= MAX_DEPTH {
            return Err("too-deep");
        }
        let local = e.local_name().into_inner();
        if self.open.is_empty() {
            if local != "Envelope" {
                return Err("root-not-envelope");
            }
            self.dialect = Some(match ns {
                Some(SOAP11_ENV) => Dialect::Rst,
                Some(SOAP12_ENV) => Dialect::Rst2,
                _ => return Err("not-a-soap-envelope"),
            });
            return Ok(());
        }
        let parent = self.open.last().map(String::as_str);
        let depth = self.open.len() + 1;
        match local {
            "Username" | "Password" if parent == Some("UsernameToken") => {
                let field = if local == "Username" {
                    Field::Username
                } else {
                    Field::Password
                };
                self.start_capture(field, depth);
            }
            // In the body, not nested in another token request.
            "RequestSecurityToken"
                if self.in_token.is_none() && self.open.get(1).is_some_and(|b| b == "Body") =>
            {
                if self.tokens.len() >= MAX_TOKENS {
                    return Err("too-many-tokens");
                }
                self.tokens.push(Draft {
                    id: attribute(e, "Id")?,
                    address: None,
                    policy: None,
                });
                self.in_token = Some(depth);
            }
            "Address"
                if self.in_token.is_some()
                    && parent == Some("EndpointReference")
                    && self.open.len() >= 2
                    && self.open[self.open.len() - 2] == "AppliesTo" =>
            {
                self.start_capture(Field::Address, depth);
            }
            "PolicyReference" if self.in_token.is_some() => {
                let uri = attribute(e, "URI")?;
                if let Some(draft) = self.tokens.last_mut() {
                    draft.policy = draft.policy.take().or(uri);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn start_capture(&mut self, field: Field, depth: usize) {
        if self.capture.is_none() {
            self.capture = Some((field, depth));
            self.text.clear();
        }
    }

    /// Close the innermost open element (`open` still holds it).
    fn close_element(&mut self) {
        let depth = self.open.len();
        if let Some((field, at)) = self.capture
            && at == depth
        {
            self.capture = None;
            let text = std::mem::take(&mut self.text);
            // First occurrence wins.
            match field {
                Field::Username => {
                    self.username.get_or_insert_with(|| text.trim().to_owned());
                }
                Field::Password => {
                    self.password.get_or_insert(text);
                }
                Field::Address => {
                    if let Some(draft) = self.tokens.last_mut() {
                        draft.address.get_or_insert_with(|| text.trim().to_owned());
                    }
                }
            }
        }
        if self.in_token == Some(depth) {
            self.in_token = None;
        }
        self.open.pop();
        if self.open.is_empty() {
            self.root_closed = true;
        }
    }

    fn add_text(&mut self, text: &str) -> Result<(), &'static str> {
        if self.open.is_empty() {
            // Outside the root only blanks may appear.
            if !text.chars().all(|c| c.is_ascii_whitespace()) {
                return Err("text-outside-root");
            }
            return Ok(());
        }
        if let Some((_, at)) = self.capture
            && at == self.open.len()
        {
            self.text.push_str(text);
        }
        Ok(())
    }

    fn finish(self) -> Result<TokenRequest, Invalid> {
        // `run` succeeded, so the root was a SOAP envelope and the dialect is known.
        let dialect = self.dialect.ok_or(Invalid {
            dialect: None,
            reason: "no-envelope",
        })?;
        let invalid = |reason| Invalid {
            dialect: Some(dialect),
            reason,
        };
        let username = self
            .username
            .filter(|u| !u.is_empty())
            .ok_or(invalid("no-username"))?;
        let password = self
            .password
            .filter(|p| !p.is_empty())
            .ok_or(invalid("no-password"))?;
        if self.tokens.is_empty() {
            return Err(invalid("no-token-requested"));
        }
        let tokens = self
            .tokens
            .into_iter()
            .map(|draft| {
                Ok(RequestedToken {
                    id: draft.id,
                    address: draft
                        .address
                        .filter(|a| !a.is_empty())
                        .ok_or(invalid("token-without-address"))?,
                    policy: draft.policy,
                })
            })
            .collect::<Result<_, Invalid>>()?;
        Ok(TokenRequest {
            dialect,
            username,
            password,
            tokens,
        })
    }
}

/// The value of the attribute with this local name (any prefix), unescaped. All the
/// element's attributes are checked, so a duplicate or broken one makes the request invalid.
fn attribute(e: &BytesStart<'_>, local: &str) -> Result<Option<String>, &'static str> {
    let mut found = None;
    for attr in e.attributes() {
        let attr = attr.map_err(|_| "bad-attribute")?;
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|_| "bad-attribute")?;
        if found.is_none() && attr.key.local_name().into_inner() == local {
            found = Some(value.trim().to_owned());
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(ns: &str, header: &str, body: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="{ns}" xmlns:wsse="urn:x-wsse" xmlns:wst="urn:x-wst" xmlns:wsp="urn:x-wsp" xmlns:wsa="urn:x-wsa">
<s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>"#
        )
    }

    fn creds(user: &str, pass: &str) -> String {
        format!(
            "<wsse:Security><wsse:UsernameToken Id=\"user\"><wsse:Username>{user}</wsse:Username>\
             <wsse:Password>{pass}</wsse:Password></wsse:UsernameToken></wsse:Security>"
        )
    }

    fn token(id: &str, address: &str, policy: Option<&str>) -> String {
        let policy = policy
            .map(|p| format!("<wsse:PolicyReference URI=\"{p}\"></wsse:PolicyReference>"))
            .unwrap_or_default();
        format!(
            "<wst:RequestSecurityToken Id=\"{id}\"><wst:RequestType>x</wst:RequestType>\
             <wsp:AppliesTo><wsa:EndpointReference><wsa:Address>{address}</wsa:Address>\
             </wsa:EndpointReference></wsp:AppliesTo>{policy}</wst:RequestSecurityToken>"
        )
    }

    fn multiple(tokens: &[String]) -> String {
        format!(
            "<ps:RequestMultipleSecurityTokens xmlns:ps=\"urn:x-ps\" Id=\"RSTS\">{}\
             </ps:RequestMultipleSecurityTokens>",
            tokens.concat()
        )
    }

    #[test]
    fn reads_credentials_and_tokens_in_order() {
        let body = multiple(&[
            token("RST0", "http://Passport.NET/tb", None),
            token("RST1", " messengerclear.live.com\n", Some("MBI_KEY_OLD")),
            token("RST2", "messenger.msn.com", Some("?id=507&amp;x=1")),
        ]);
        let xml = envelope(
            SOAP12_ENV,
            &creds(" bob@example.com ", "a&lt;b&amp;c&#x20;"),
            &body,
        );
        let req = parse(xml.as_bytes()).unwrap();
        assert_eq!(req.dialect, Dialect::Rst2);
        assert_eq!(req.username, "bob@example.com");
        assert_eq!(req.password, "a<b&c ");
        let got: Vec<_> = req
            .tokens
            .iter()
            .map(|t| (t.id.as_deref(), t.address.as_str(), t.policy.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (Some("RST0"), "http://Passport.NET/tb", None),
                (Some("RST1"), "messengerclear.live.com", Some("MBI_KEY_OLD")),
                (Some("RST2"), "messenger.msn.com", Some("?id=507&x=1")),
            ]
        );
        let xml = envelope(SOAP11_ENV, &creds("bob@example.com", "x"), &body);
        assert_eq!(parse(xml.as_bytes()).unwrap().dialect, Dialect::Rst);
    }

    #[test]
    fn namespace_agnostic_single_token_and_cdata() {
        // Default namespaces instead of prefixes, a lone RequestSecurityToken, CDATA.
        let xml = format!(
            r#"<Envelope xmlns="{SOAP11_ENV}"><Header><Security><UsernameToken>
<Username>bob@example.com</Username><Password><![CDATA[p<w>]]></Password></UsernameToken>
</Security></Header><Body><RequestSecurityToken><AppliesTo><EndpointReference>
<Address>contacts.msn.com</Address></EndpointReference></AppliesTo>
<PolicyReference URI="MBI"/></RequestSecurityToken></Body></Envelope>"#
        );
        let req = parse(xml.as_bytes()).unwrap();
        assert_eq!((req.dialect, req.password.as_str()), (Dialect::Rst, "p<w>"));
        assert_eq!(
            req.tokens,
            [RequestedToken {
                id: None,
                address: "contacts.msn.com".into(),
                policy: Some("MBI".into())
            }]
        );
    }

    #[test]
    fn invalid_requests() {
        let ok_body = multiple(&[token("RST0", "contacts.msn.com", Some("MBI"))]);
        let ok_creds = creds("bob@example.com", "x");
        let rst2 = Some(Dialect::Rst2);
        let deep = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        let many = multiple(&vec![token("R", "a.com", None); MAX_TOKENS + 1]);
        let cases: Vec<(String, Option<Dialect>, &str)> = vec![
            ("".into(), None, "unclosed-or-missing-root"),
            ("not xml".into(), None, "text-outside-root"),
            (
                format!("<s:Envelope xmlns:s=\"{SOAP12_ENV}\"><b></s:Envelope>"),
                rst2,
                "malformed-xml",
            ),
            (
                format!("<Envelope xmlns=\"urn:nope\">{ok_creds}</Envelope>"),
                None,
                "not-a-soap-envelope",
            ),
            (
                format!("<s:Body xmlns:s=\"{SOAP12_ENV}\"/>"),
                None,
                "root-not-envelope",
            ),
            (
                format!("<x:Envelope xmlns:s=\"{SOAP12_ENV}\"/>"),
                None,
                "not-a-soap-envelope",
            ),
            (envelope(SOAP12_ENV, "", &ok_body), rst2, "no-username"),
            (
                envelope(SOAP12_ENV, &creds("bob@example.com", ""), &ok_body),
                rst2,
                "no-password",
            ),
            (
                envelope(SOAP12_ENV, &ok_creds, ""),
                rst2,
                "no-token-requested",
            ),
            (
                envelope(SOAP12_ENV, &ok_creds, &multiple(&[token("R", " ", None)])),
                rst2,
                "token-without-address",
            ),
            (envelope(SOAP12_ENV, &ok_creds, &deep), rst2, "too-deep"),
            (
                envelope(SOAP12_ENV, &ok_creds, &many),
                rst2,
                "too-many-tokens",
            ),
            (
                envelope(SOAP12_ENV, &creds("bob@example.com", "&x;"), &ok_body),
                rst2,
                "unknown-entity",
            ),
            (
                envelope(SOAP12_ENV, &creds("bob@example.com", "&#0;"), &ok_body),
                rst2,
                "bad-char-ref",
            ),
            (
                format!(
                    "<!DOCTYPE s:Envelope [<!ENTITY x \"hunter2\">]>{}",
                    envelope(SOAP12_ENV, &creds("bob@example.com", "&x;"), &ok_body)
                        .replace("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "")
                ),
                None,
                "doctype",
            ),
            (
                format!("{}<extra/>", envelope(SOAP12_ENV, &ok_creds, &ok_body)),
                rst2,
                "content-after-root",
            ),
            (
                format!("{}junk", envelope(SOAP12_ENV, &ok_creds, &ok_body)),
                rst2,
                "text-outside-root",
            ),
            (
                envelope(SOAP12_ENV, &ok_creds, &ok_body).replace("</s:Envelope>", ""),
                rst2,
                "unclosed-or-missing-root",
            ),
            (
                envelope(SOAP12_ENV, &ok_creds, &ok_body)
                    .replace("Id=\"RST0\"", "Id=\"a\" Id=\"b\""),
                rst2,
                "bad-attribute",
            ),
        ];
        for (xml, dialect, reason) in cases {
            assert_eq!(
                parse(xml.as_bytes()),
                Err(Invalid { dialect, reason }),
                "{xml}"
            );
        }
        assert_eq!(
            parse(b"\xff\xfe<"),
            Err(Invalid {
                dialect: None,
                reason: "not-utf8"
            })
        );
    }

    #[test]
    fn first_credentials_win_and_nested_text_is_ignored() {
        let header = format!(
            "{}{}",
            creds("bob@example.com", "one<i>ignored</i>"),
            creds("eve@example.com", "two")
        );
        let body = multiple(&[token("RST0", "contacts.msn.com", None)]);
        let req = parse(envelope(SOAP12_ENV, &header, &body).as_bytes()).unwrap();
        assert_eq!(
            (req.username.as_str(), req.password.as_str()),
            ("bob@example.com", "one")
        );
    }
}
