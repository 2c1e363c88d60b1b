//! The `<ml>` documents of `ADL`, `RML` and `FQY` (MSNP13+): contacts grouped by domain,
//! with list bits and a network type.
//!
//! ```text
//! <ml l="1"><d n="example.com"><c n="bob" l="3" t="1"/></d></ml>
//! ```
//!
//! `l="1"` on `ml` marks the initial load a client sends after sign-in; on `c`, `l` is the
//! list bits (FL 1, AL 2, BL 4; a client may not send RL or PL) and `t` the network (1 is
//! Messenger). Phone entries (`<t>…</t>`) are accepted and ignored. Refusals map to the
//! codes real servers send: 240 for a domain without contacts, 241 for anything
//! malformed, 204 for an unknown network (NS.md §2.4).

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::error::ErrorCode;

/// List bits a client may set with `ADL`/`RML`: FL, AL, BL.
const CLIENT_LISTS: u8 = 0b111;
/// Network types (`t`) a document may name: Messenger 1, OCS 2, phone 4, MNI 8, circle 9,
/// SMTP 16, Yahoo 32.
const NETWORKS: [u8; 7] = [1, 2, 4, 8, 9, 16, 32];
/// Elements deep: `ml` > `d` > `c` > `s`.
const MAX_DEPTH: usize = 4;

/// Which command the document belongs to: the rules differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlKind {
    /// `ADL`/`RML`: every contact carries list bits.
    Lists,
    /// `FQY`: exactly one contact, no list bits.
    Query,
}

/// One contact of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlContact {
    /// `local@domain`, as written (not yet validated as an address).
    pub email: String,
    /// List bits; 0 for `FQY`.
    pub lists: u8,
    /// The network type, if given.
    pub network: Option<u8>,
}

/// A parsed document.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ml {
    /// `<ml l="1">`: the initial load after sign-in.
    pub initial: bool,
    pub contacts: Vec<MlContact>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MlError {
    #[error("a domain element without contacts")]
    EmptyDomain,
    #[error("malformed contact document")]
    Malformed,
    #[error("unknown network type")]
    UnknownNetwork,
}

impl MlError {
    pub fn code(self) -> ErrorCode {
        match self {
            MlError::EmptyDomain => ErrorCode::AdlEmptyDomain,
            MlError::Malformed => ErrorCode::AdlInvalid,
            MlError::UnknownNetwork => ErrorCode::InvalidNetwork,
        }
    }
}

/// Parse an `ml` document. Anything but the grammar above is refused: a DOCTYPE (no entity
/// expansion), other elements, text, missing or repeated names, bad numbers.
pub fn parse(payload: &[u8], kind: MlKind) -> Result<Ml, MlError> {
    let mut reader = Reader::from_reader(payload);
    reader.config_mut().trim_text(true);
    let mut ml = Ml::default();
    let mut stack: Vec<Element> = Vec::new();
    let mut domains: Vec<String> = Vec::new();
    // The open `<d>`: its domain and whether it has a contact yet.
    let mut domain: Option<(String, bool)> = None;
    let mut seen_root = false;
    loop {
        let event = reader.read_event().map_err(|_| MlError::Malformed)?;
        let (start, empty) = match &event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                match stack.pop() {
                    Some(Element::Domain) => close_domain(&mut domain)?,
                    Some(_) => {}
                    None => return Err(MlError::Malformed),
                }
                continue;
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) => continue,
            // Text between elements (trimmed whitespace is dropped), CDATA, DOCTYPE, PIs.
            _ => return Err(MlError::Malformed),
        };
        if stack.len() >= MAX_DEPTH {
            return Err(MlError::Malformed);
        }
        let local = start.local_name();
        let element = match (stack.last(), local.into_inner()) {
            (None, "ml") if !seen_root => {
                seen_root = true;
                ml.initial = attr(start, "l")?.as_deref() == Some("1");
                Element::Root
            }
            (Some(Element::Root), "d") => {
                let name = attr(start, "n")?
                    .filter(|n| !n.is_empty() && !n.contains('@'))
                    .ok_or(MlError::Malformed)?
                    .to_ascii_lowercase();
                if domains.contains(&name) {
                    return Err(MlError::Malformed);
                }
                domains.push(name.clone());
                domain = Some((name, false));
                Element::Domain
            }
            (Some(Element::Root), "t") => Element::Phones,
            (Some(Element::Domain), "c") => {
                let Some((name, has_contact)) = domain.as_mut() else {
                    return Err(MlError::Malformed);
                };
                *has_contact = true;
                ml.contacts.push(contact(start, name, kind)?);
                Element::Contact
            }
            // Phone numbers and MSNP18's per-service children: accepted, not used.
            (Some(Element::Phones), "c") => Element::Ignored,
            (Some(Element::Contact | Element::Ignored), "s") => Element::Ignored,
            _ => return Err(MlError::Malformed),
        };
        if empty {
            if element == Element::Domain {
                close_domain(&mut domain)?;
            }
        } else {
            stack.push(element);
        }
    }
    if !seen_root || !stack.is_empty() {
        return Err(MlError::Malformed);
    }
    if kind == MlKind::Query && ml.contacts.len() != 1 {
        return Err(MlError::Malformed);
    }
    Ok(ml)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    Root,
    Domain,
    Phones,
    Contact,
    Ignored,
}

fn close_domain(domain: &mut Option<(String, bool)>) -> Result<(), MlError> {
    match domain.take() {
        Some((_, true)) => Ok(()),
        Some((_, false)) => Err(MlError::EmptyDomain),
        None => Err(MlError::Malformed),
    }
}

fn contact(start: &BytesStart<'_>, domain: &str, kind: MlKind) -> Result<MlContact, MlError> {
    let local = attr(start, "n")?
        .filter(|n| !n.is_empty() && !n.contains('@'))
        .ok_or(MlError::Malformed)?;
    let lists = match (kind, attr(start, "l")?) {
        (MlKind::Lists, Some(l)) => l
            .parse::<u8>()
            .ok()
            .filter(|&l| l != 0 && l & !CLIENT_LISTS == 0)
            .ok_or(MlError::Malformed)?,
        (MlKind::Lists, None) => return Err(MlError::Malformed),
        (MlKind::Query, _) => 0,
    };
    let network = match attr(start, "t")? {
        Some(t) => Some(
            t.parse::<u8>()
                .ok()
                .filter(|t| NETWORKS.contains(t))
                .ok_or(MlError::UnknownNetwork)?,
        ),
        None => None,
    };
    Ok(MlContact {
        email: format!("{local}@{domain}"),
        lists,
        network,
    })
}

/// The unescaped value of attribute `name`, if present.
fn attr(start: &BytesStart<'_>, name: &str) -> Result<Option<String>, MlError> {
    for a in start.attributes() {
        let a = a.map_err(|_| MlError::Malformed)?;
        if a.key.local_name().as_ref() == name {
            let v = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|_| MlError::Malformed)?;
            return Ok(Some(v.trim().to_owned()));
        }
    }
    Ok(None)
}

/// A contact in a server-built document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushContact<'a> {
    pub email: &'a str,
    pub lists: u8,
    pub network: u8,
    /// Friendly name, written URL-encoded in `f` (the "added you" push).
    pub friendly_name: Option<&'a str>,
}

/// A document for the server's `ADL 0`/`RML 0` pushes and `FQY` answers:
/// `<ml><d n="x.com"><c n="alice" t="1" l="8" f="Alice"/></d></ml>`. `lists` 0 leaves
/// `l` out (FQY).
pub fn build(contacts: &[PushContact<'_>]) -> Vec<u8> {
    let mut by_domain: Vec<(&str, Vec<&PushContact<'_>>)> = Vec::new();
    for c in contacts {
        let (_, domain) = c.email.split_once('@').unwrap_or((c.email, ""));
        match by_domain.iter_mut().find(|(d, _)| *d == domain) {
            Some((_, list)) => list.push(c),
            None => by_domain.push((domain, vec![c])),
        }
    }
    let mut out = String::from("<ml>");
    for (domain, list) in by_domain {
        out.push_str(&format!("<d n=\"{}\">", escape(domain)));
        for c in list {
            let (local, _) = c.email.split_once('@').unwrap_or((c.email, ""));
            out.push_str(&format!("<c n=\"{}\" t=\"{}\"", escape(local), c.network));
            if c.lists != 0 {
                out.push_str(&format!(" l=\"{}\"", c.lists));
            }
            if let Some(name) = c.friendly_name {
                out.push_str(&format!(" f=\"{}\"", escape(&crate::text::encode(name))));
            }
            out.push_str("/>");
        }
        out.push_str("</d>");
    }
    out.push_str("</ml>");
    out.into_bytes()
}

fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(email: &str, lists: u8, network: Option<u8>) -> MlContact {
        MlContact {
            email: email.into(),
            lists,
            network,
        }
    }

    #[test]
    fn parses_initial_and_later_documents() {
        let doc = br#"<ml l="1"><d n="Example.com"><c n="bob" l="3" t="1"/><c n="carol" l="5" t="1"/></d><d n="x.org"><c n="dave" l="1" t="1"></c></d></ml>"#;
        let ml = parse(doc, MlKind::Lists).unwrap();
        assert!(ml.initial);
        assert_eq!(
            ml.contacts,
            [
                c("bob@example.com", 3, Some(1)),
                c("carol@example.com", 5, Some(1)),
                c("dave@x.org", 1, Some(1)),
            ]
        );
        let empty = parse(br#"<ml l="1" />"#, MlKind::Lists).unwrap();
        assert!(empty.initial && empty.contacts.is_empty());
        let later = parse(
            b"<ml><d n=\"x.com\"><c n=\"alice\" l=\"2\" t=\"1\"/></d></ml>",
            MlKind::Lists,
        )
        .unwrap();
        assert!(!later.initial);
        // Phones and MSNP18 service children are accepted and ignored.
        let phones = br#"<ml><t><c n="tel:+15551234" l="1"/></t><d n="x.com"><c n="a" l="1" t="1"><s l="3" n="IM"/></c></d></ml>"#;
        assert_eq!(
            parse(phones, MlKind::Lists).unwrap().contacts,
            [c("a@x.com", 1, Some(1))]
        );
    }

    #[test]
    fn refusals_map_to_the_codes_servers_send() {
        let cases: &[(&[u8], MlError)] = &[
            (b"<ml><d n=\"x.com\"></d></ml>", MlError::EmptyDomain),
            (b"<ml><d n=\"x.com\"/></ml>", MlError::EmptyDomain),
            (b"<ml><d n=\"x.com\"><c n=\"a\" l=\"1\" t=\"77\"/></d></ml>", MlError::UnknownNetwork),
            (b"<ml><d n=\"x.com\"><c n=\"a\" l=\"8\" t=\"1\"/></d></ml>", MlError::Malformed),
            (b"<ml><d n=\"x.com\"><c n=\"a\" l=\"16\" t=\"1\"/></d></ml>", MlError::Malformed),
            (b"<ml><d n=\"x.com\"><c n=\"a\" l=\"x\" t=\"1\"/></d></ml>", MlError::Malformed),
            (b"<ml><d n=\"x.com\"><c n=\"a\" t=\"1\"/></d></ml>", MlError::Malformed),
            (b"<ml><d n=\"x.com\"><c l=\"1\" t=\"1\"/></d></ml>", MlError::Malformed),
            (b"<ml><d><c n=\"a\" l=\"1\"/></d></ml>", MlError::Malformed),
            (b"<ml><d n=\"x.com\"><c n=\"a\" l=\"1\"/></d><d n=\"X.com\"><c n=\"b\" l=\"1\"/></d></ml>", MlError::Malformed),
            (b"<ml><d n=\"x.com\"><c n=\"a\" l=\"1\"/>", MlError::Malformed),
            (b"<ml><q/></ml>", MlError::Malformed),
            (b"<xml/>", MlError::Malformed),
            (b"", MlError::Malformed),
            (b"not xml at all", MlError::Malformed),
            (b"<ml/><ml/>", MlError::Malformed),
            (b"<!DOCTYPE ml [<!ENTITY x \"y\">]><ml/>", MlError::Malformed),
            (b"<ml><d n=\"x.com\"><c n=\"a\" l=\"1\"><s><s><s/></s></s></c></d></ml>", MlError::Malformed),
        ];
        for (doc, want) in cases {
            assert_eq!(
                parse(doc, MlKind::Lists),
                Err(*want),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
    }

    #[test]
    fn a_query_names_exactly_one_contact() {
        let q = parse(b"<ml><d n=\"x.com\"><c n=\"bob\"/></d></ml>", MlKind::Query).unwrap();
        assert_eq!(q.contacts, [c("bob@x.com", 0, None)]);
        for doc in [
            &b"<ml><d n=\"x.com\"><c n=\"a\"/><c n=\"b\"/></d></ml>"[..],
            b"<ml/>",
        ] {
            assert_eq!(parse(doc, MlKind::Query), Err(MlError::Malformed));
        }
    }

    #[test]
    fn built_documents_group_by_domain_and_parse_back() {
        let doc = build(&[
            PushContact {
                email: "alice@x.com",
                lists: 8,
                network: 1,
                friendly_name: Some("Alice A & <co>"),
            },
            PushContact {
                email: "bob@y.org",
                lists: 8,
                network: 1,
                friendly_name: None,
            },
            PushContact {
                email: "carol@x.com",
                lists: 8,
                network: 1,
                friendly_name: None,
            },
        ]);
        assert_eq!(
            String::from_utf8(doc).unwrap(),
            "<ml><d n=\"x.com\"><c n=\"alice\" t=\"1\" l=\"8\" f=\"Alice%20A%20%26%20%3Cco%3E\"/><c n=\"carol\" t=\"1\" l=\"8\"/></d><d n=\"y.org\"><c n=\"bob\" t=\"1\" l=\"8\"/></d></ml>"
        );
        let fqy = build(&[PushContact {
            email: "bob@x.com",
            lists: 0,
            network: 1,
            friendly_name: None,
        }]);
        assert_eq!(
            parse(&fqy, MlKind::Query).unwrap().contacts,
            [c("bob@x.com", 0, Some(1))]
        );
    }
}
