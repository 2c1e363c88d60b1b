//! Multiple points of presence (MSNP16+): one account signed in on several machines.
//!
//! A machine describes itself with a `UUX` document of its own,
//!
//! ```text
//! <PrivateEndpointData><EpName>Laptop</EpName><Idle>false</Idle>
//!   <ClientType>1</ClientType><State>NLN</State></PrivateEndpointData>
//! ```
//!
//! and each machine is shown all of them in the `UBX` about its own account: the personal
//! message document, extended with one `<EndpointData id="{guid}">` (capabilities) and one
//! `<PrivateEndpointData id="{guid}">` per signed-in machine (NS.md §5).

use quick_xml::Reader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;

/// A machine GUID as it is kept and compared: lower case, without braces (clients write
/// `{…}` in either case).
pub fn normalize_guid(guid: &str) -> String {
    guid.trim_matches(|c| c == '{' || c == '}')
        .to_ascii_lowercase()
}

/// Elements deep: `PrivateEndpointData` > `EpName`.
const MAX_DEPTH: usize = 2;
/// The most characters kept of a value (WLM limits machine names far below this).
const MAX_TEXT: usize = 256;

/// What a machine said about itself in `<PrivateEndpointData>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrivateEndpoint {
    pub name: Option<String>,
    pub idle: Option<bool>,
    pub client_type: Option<String>,
}

/// A machine document that is not well-formed, or not of the expected shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed machine document")]
pub struct Malformed;

/// Whether `payload` is a `<PrivateEndpointData>` document, and if so what it says.
pub fn parse_private(payload: &[u8]) -> Result<Option<PrivateEndpoint>, Malformed> {
    // Not trimming: text around an entity reference arrives in pieces, spaces included.
    let mut reader = Reader::from_reader(payload);
    let mut out = PrivateEndpoint::default();
    let mut depth = 0usize;
    // The child element being read and its text so far (entity references arrive as
    // events of their own, between pieces of text).
    let mut child: Option<(String, String)> = None;
    loop {
        match reader.read_event().map_err(|_| Malformed)? {
            Event::Decl(_) | Event::Comment(_) => {}
            Event::Start(e) => {
                let name = e.local_name().into_inner().to_owned();
                if depth == 0 && name != "PrivateEndpointData" {
                    return Ok(None);
                }
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Malformed);
                }
                if depth == 2 {
                    child = Some((name, String::new()));
                }
            }
            Event::Empty(e) => {
                if depth == 0 {
                    return Ok((e.local_name().into_inner() == "PrivateEndpointData")
                        .then(PrivateEndpoint::default));
                }
            }
            Event::Text(t) => push_text(&mut child, &t.xml10_content())?,
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(|_| Malformed)? {
                    Some(c) => c.to_string(),
                    None => resolve_predefined_entity(&r).ok_or(Malformed)?.to_owned(),
                };
                push_text(&mut child, &resolved)?;
            }
            Event::End(_) => {
                depth = depth.checked_sub(1).ok_or(Malformed)?;
                if let Some((name, text)) = child.take() {
                    match name.as_str() {
                        "EpName" => out.name = Some(text),
                        "Idle" => out.idle = Some(text.trim().eq_ignore_ascii_case("true")),
                        "ClientType" => out.client_type = Some(text),
                        _ => {}
                    }
                }
                if depth == 0 {
                    return Ok(Some(out));
                }
            }
            Event::Eof => return if depth == 0 { Ok(None) } else { Err(Malformed) },
            _ => return Err(Malformed),
        }
    }
}

/// Add `text` to the open child element's value (text elsewhere is refused), keeping at
/// most [`MAX_TEXT`] characters.
fn push_text(child: &mut Option<(String, String)>, text: &str) -> Result<(), Malformed> {
    let Some((_, value)) = child else {
        return if text.trim().is_empty() {
            Ok(())
        } else {
            Err(Malformed)
        };
    };
    let room = MAX_TEXT.saturating_sub(value.chars().count());
    value.extend(text.chars().take(room));
    Ok(())
}

/// One machine as the account's own machines are shown it.
#[derive(Debug, Clone, Copy)]
pub struct Machine<'a> {
    /// The GUID, without braces.
    pub guid: &'a str,
    /// Capabilities as the machine wrote them in `CHG` (`caps:capsex`).
    pub caps: &'a str,
    pub name: &'a str,
    pub idle: bool,
    pub client_type: &'a str,
    /// The machine's own status (`NLN`, `BSY`, …).
    pub state: &'a str,
}

/// The `UBX` document about my own account: my personal message document (`personal`, as
/// my client sent it, or an empty one) with every machine appended inside `<Data>`.
pub fn own_document(personal: Option<&[u8]>, machines: &[Machine<'_>]) -> Vec<u8> {
    const EMPTY: &[u8] = b"<Data><PSM></PSM><CurrentMedia></CurrentMedia></Data>";
    let doc = personal
        .filter(|d| find_close(d).is_some())
        .unwrap_or(EMPTY);
    let close = find_close(doc).unwrap_or(doc.len());
    let mut out = Vec::with_capacity(doc.len() + 200 * machines.len());
    out.extend_from_slice(&doc[..close]);
    for m in machines {
        out.extend_from_slice(
            format!(
                "<EndpointData id=\"{{{}}}\"><Capabilities>{}</Capabilities></EndpointData>",
                escape(m.guid),
                escape(m.caps)
            )
            .as_bytes(),
        );
    }
    for m in machines {
        out.extend_from_slice(
            format!(
                "<PrivateEndpointData id=\"{{{}}}\"><EpName>{}</EpName><Idle>{}</Idle>\
                 <ClientType>{}</ClientType><State>{}</State></PrivateEndpointData>",
                escape(m.guid),
                escape(m.name),
                m.idle,
                escape(m.client_type),
                escape(m.state)
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(&doc[close..]);
    out
}

/// Where the closing `</Data>` of a `<Data>` document starts.
fn find_close(doc: &[u8]) -> Option<usize> {
    const CLOSE: &[u8] = b"</Data>";
    doc.windows(CLOSE.len()).rposition(|w| w == CLOSE)
}

/// Text as MSNP16+ writes it inside these documents (NS.md §2.3: `&`, `<`, `>`, `=`, `\`
/// and quotes as character references).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&#x26;"),
            '<' => out.push_str("&#x3C;"),
            '>' => out.push_str("&#x3E;"),
            '=' => out.push_str("&#x3D;"),
            '\\' => out.push_str("&#x5C;"),
            '"' => out.push_str("&#x22;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_wlm_2009_sends() {
        let doc = b"<PrivateEndpointData><EpName>Study PC</EpName><Idle>false</Idle>\
            <ClientType>1</ClientType><State>NLN</State></PrivateEndpointData>";
        assert_eq!(
            parse_private(doc),
            Ok(Some(PrivateEndpoint {
                name: Some("Study PC".into()),
                idle: Some(false),
                client_type: Some("1".into()),
            }))
        );
        let escaped = b"<PrivateEndpointData><EpName>A &amp; B</EpName><Idle>true</Idle></PrivateEndpointData>";
        let p = parse_private(escaped).unwrap().unwrap();
        assert_eq!(p.name.as_deref(), Some("A & B"));
        assert_eq!(p.idle, Some(true));
    }

    #[test]
    fn other_documents_are_not_endpoint_data() {
        assert_eq!(parse_private(b"<Data><PSM>hi</PSM></Data>"), Ok(None));
        assert_eq!(
            parse_private(b"<EndpointData><Capabilities>1:2</Capabilities></EndpointData>"),
            Ok(None)
        );
        assert_eq!(parse_private(b""), Ok(None));
    }

    #[test]
    fn refuses_malformed_and_deep_documents() {
        assert_eq!(
            parse_private(b"<PrivateEndpointData><EpName>x"),
            Err(Malformed)
        );
        assert_eq!(
            parse_private(b"<PrivateEndpointData><a><b>x</b></a></PrivateEndpointData>"),
            Err(Malformed)
        );
        assert_eq!(
            parse_private(b"<!DOCTYPE x [<!ENTITY e \"y\">]><PrivateEndpointData/>"),
            Err(Malformed)
        );
    }

    #[test]
    fn own_document_lists_every_machine_inside_data() {
        let machines = [
            Machine {
                guid: "aa",
                caps: "1:2",
                name: "Home",
                idle: false,
                client_type: "1",
                state: "NLN",
            },
            Machine {
                guid: "bb",
                caps: "3:4",
                name: "A<B",
                idle: true,
                client_type: "1",
                state: "AWY",
            },
        ];
        let doc = own_document(
            Some(b"<Data><PSM>hi</PSM><CurrentMedia></CurrentMedia></Data>"),
            &machines,
        );
        assert_eq!(
            String::from_utf8(doc).unwrap(),
            "<Data><PSM>hi</PSM><CurrentMedia></CurrentMedia>\
             <EndpointData id=\"{aa}\"><Capabilities>1:2</Capabilities></EndpointData>\
             <EndpointData id=\"{bb}\"><Capabilities>3:4</Capabilities></EndpointData>\
             <PrivateEndpointData id=\"{aa}\"><EpName>Home</EpName><Idle>false</Idle><ClientType>1</ClientType><State>NLN</State></PrivateEndpointData>\
             <PrivateEndpointData id=\"{bb}\"><EpName>A&#x3C;B</EpName><Idle>true</Idle><ClientType>1</ClientType><State>AWY</State></PrivateEndpointData>\
             </Data>"
        );
        // No personal message yet (or an unusable one): an empty one carries the machines.
        let doc = String::from_utf8(own_document(Some(b"<Data/>"), &machines[..1])).unwrap();
        assert!(doc.starts_with(
            "<Data><PSM></PSM><CurrentMedia></CurrentMedia><EndpointData id=\"{aa}\">"
        ));
        assert!(doc.ends_with("</PrivateEndpointData></Data>"));
    }
}
