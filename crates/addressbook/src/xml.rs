//! The little XML this crate needs: a request parsed into a tree of elements named by
//! their local name (namespace prefixes are dropped, so `soap:Body`, `s:Body` and a
//! default-namespaced `Body` are the same), and a writer for responses that escapes every
//! text and attribute value.
//!
//! The parser takes no risks with hostile input: a document type declaration (and so any
//! entity declaration) is refused, only the five predefined entities and character
//! references are resolved, and depth and element count are capped.

use std::fmt::{self, Write as _};

use quick_xml::Reader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};

/// Deepest nesting accepted. The deepest request element of the address-book services
/// sits at about 10.
const MAX_DEPTH: usize = 48;
/// Most elements accepted in one document.
const MAX_ELEMENTS: usize = 20_000;

/// One element: its local name, its own text (trimmed: clients indent values), and its
/// child elements in document order, and its attributes by local name (the OIM service
/// reads its header from attributes; namespace declarations are not kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Element {
    pub(crate) name: String,
    pub(crate) text: String,
    pub(crate) children: Vec<Element>,
    pub(crate) attrs: Vec<(String, String)>,
}

impl Element {
    /// The first child called `name`.
    pub(crate) fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The element reached by following `path` from this one, one child name per step.
    pub(crate) fn find(&self, path: &[&str]) -> Option<&Element> {
        path.iter().try_fold(self, |el, name| el.child(name))
    }

    /// The text of the element at `path`.
    pub(crate) fn text_at(&self, path: &[&str]) -> Option<&str> {
        self.find(path).map(|e| e.text.as_str())
    }

    /// The value of the attribute with local name `name`.
    pub(crate) fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum XmlError {
    /// Not well-formed (quick-xml's description).
    Syntax(String),
    /// A `<!DOCTYPE …>`: entity declarations are never processed.
    DocType,
    /// An entity other than the five XML predefines.
    UnknownEntity(String),
    /// Nested deeper than [`MAX_DEPTH`] or more than [`MAX_ELEMENTS`] elements.
    TooLarge,
    /// No root element, an unclosed one, or content after it.
    NotOneRoot,
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XmlError::Syntax(e) => write!(f, "malformed XML: {e}"),
            XmlError::DocType => f.write_str("document type declarations are not accepted"),
            XmlError::UnknownEntity(name) => write!(f, "unknown entity &{name};"),
            XmlError::TooLarge => f.write_str("document too deep or too large"),
            XmlError::NotOneRoot => f.write_str("the document must hold exactly one root element"),
        }
    }
}

fn syntax(e: impl fmt::Display) -> XmlError {
    XmlError::Syntax(e.to_string())
}

/// A new element for a start tag, with its attributes (which must be well-formed, and
/// may use only the predefined entities).
fn element(start: &BytesStart<'_>) -> Result<Element, XmlError> {
    let mut attrs = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(syntax)?;
        let key = attribute.key;
        if key.as_namespace_binding().is_some() {
            continue;
        }
        let value = attribute
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(syntax)?;
        attrs.push((key.local_name().as_ref().to_owned(), value.into_owned()));
    }
    Ok(Element {
        name: start.local_name().as_ref().to_owned(),
        attrs,
        ..Element::default()
    })
}

/// Parse a whole document into its root element.
pub(crate) fn parse(input: &str) -> Result<Element, XmlError> {
    let mut reader = Reader::from_str(input);
    reader.config_mut().enable_all_checks(true);
    // Open elements, innermost last.
    let mut open: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;

    // Attach a finished element to its parent, or make it the root.
    let close = |mut el: Element, open: &mut Vec<Element>, root: &mut Option<Element>| {
        let trimmed = el.text.trim();
        if trimmed.len() != el.text.len() {
            el.text = trimmed.to_owned();
        }
        match open.last_mut() {
            Some(parent) => parent.children.push(el),
            None => *root = Some(el),
        }
    };

    loop {
        let event = reader.read_event().map_err(syntax)?;
        // Text may appear only inside the root; whitespace around it is fine.
        let text_target = |open: &mut Vec<Element>, text: &str| -> Result<(), XmlError> {
            match open.last_mut() {
                Some(el) => {
                    el.text.push_str(text);
                    Ok(())
                }
                None if text.trim().is_empty() => Ok(()),
                None => Err(XmlError::NotOneRoot),
            }
        };
        match event {
            Event::Start(ref s) | Event::Empty(ref s) => {
                if root.is_some() && open.is_empty() {
                    return Err(XmlError::NotOneRoot);
                }
                count += 1;
                if count > MAX_ELEMENTS || open.len() >= MAX_DEPTH {
                    return Err(XmlError::TooLarge);
                }
                let el = element(s)?;
                if matches!(event, Event::Empty(_)) {
                    close(el, &mut open, &mut root);
                } else {
                    open.push(el);
                }
            }
            Event::End(_) => {
                // quick-xml has checked that the name matches the open element.
                let el = open.pop().ok_or(XmlError::NotOneRoot)?;
                close(el, &mut open, &mut root);
            }
            Event::Text(t) => text_target(&mut open, &t.xml10_content())?,
            Event::CData(t) => text_target(&mut open, &t.xml10_content())?,
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(syntax)? {
                    Some(c) => c.to_string(),
                    None => resolve_predefined_entity(&r)
                        .ok_or_else(|| XmlError::UnknownEntity(r.to_string()))?
                        .to_owned(),
                };
                text_target(&mut open, &resolved)?;
            }
            Event::DocType(_) => return Err(XmlError::DocType),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    match (root, open.is_empty()) {
        (Some(root), true) => Ok(root),
        _ => Err(XmlError::NotOneRoot),
    }
}

/// Escape `text` for element content or a double-quoted attribute value. Characters XML
/// 1.0 cannot carry at all (most controls, U+FFFE, U+FFFF) become U+FFFD.
pub(crate) fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// Writes a document element by element; nesting is by closure, so every element opened
/// is closed.
pub(crate) struct XmlWriter {
    out: String,
}

impl XmlWriter {
    /// A document starting with the UTF-8 XML declaration.
    pub(crate) fn new() -> Self {
        XmlWriter {
            out: String::from(r#"<?xml version="1.0" encoding="utf-8"?>"#),
        }
    }

    /// `<name attrs…>…</name>`, the content written by `body`.
    pub(crate) fn el_attrs(
        &mut self,
        name: &str,
        attrs: &[(&str, &str)],
        body: impl FnOnce(&mut Self),
    ) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        for (key, value) in attrs {
            self.out.push(' ');
            self.out.push_str(key);
            self.out.push_str("=\"");
            escape_into(&mut self.out, value);
            self.out.push('"');
        }
        self.out.push('>');
        body(self);
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    /// `<name>…</name>`, the content written by `body`.
    pub(crate) fn el(&mut self, name: &str, body: impl FnOnce(&mut Self)) -> &mut Self {
        self.el_attrs(name, &[], body)
    }

    /// `<name>text</name>`, the text escaped.
    pub(crate) fn leaf(&mut self, name: &str, text: impl fmt::Display) -> &mut Self {
        self.el(name, |w| w.text(text))
    }

    /// `<name/>`.
    pub(crate) fn empty(&mut self, name: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push_str("/>");
        self
    }

    /// Escaped text at the current position.
    pub(crate) fn text(&mut self, text: impl fmt::Display) {
        let mut plain = String::new();
        // Writing into a String cannot fail.
        let _ = write!(plain, "{text}");
        escape_into(&mut self.out, &plain);
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_by_local_name_and_trims_text() {
        let doc = r#"<?xml version="1.0"?>
            <s:Envelope xmlns:s="urn:x"><s:Body>
              <Find xmlns="urn:y"><deltasOnly>
                 true
              </deltasOnly><t>t=a&amp;p=&#x41;&lt;<![CDATA[<raw>]]></t><e/></Find>
            </s:Body></s:Envelope>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "Envelope");
        let find = root.find(&["Body", "Find"]).unwrap();
        assert_eq!(find.text_at(&["deltasOnly"]), Some("true"));
        assert_eq!(find.text_at(&["t"]), Some("t=a&p=A<<raw>"));
        assert_eq!(find.text_at(&["e"]), Some(""));
        assert_eq!(find.children.len(), 3);
    }

    #[test]
    fn refuses_what_it_should() {
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        let cases = [
            (
                r#"<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>"#,
                XmlError::DocType,
            ),
            ("<a>&x;</a>", XmlError::UnknownEntity("x".into())),
            ("", XmlError::NotOneRoot),
            ("<a>", XmlError::NotOneRoot),
            ("<a/><b/>", XmlError::NotOneRoot),
            ("<a/>text", XmlError::NotOneRoot),
            (deep.as_str(), XmlError::TooLarge),
        ];
        for (doc, expected) in cases {
            assert_eq!(parse(doc), Err(expected), "{doc:?}");
        }
        for bad in [
            "<a></b>",
            "<a b></a>",
            "<a b='1' b='2'/>",
            "<a>&amp</a>",
            "<a>&#0;</a>",
        ] {
            assert!(
                matches!(parse(bad), Err(XmlError::Syntax(_))),
                "{bad:?}: {:?}",
                parse(bad)
            );
        }
    }

    #[test]
    fn writes_escaped_and_balanced() {
        let mut w = XmlWriter::new();
        w.el_attrs("a", &[("k", "\"<&>'")], |w| {
            w.leaf("b", "x & y < z\u{1}");
            w.empty("c");
            w.leaf("n", -5i64);
        });
        assert_eq!(
            w.finish(),
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><a k=\"&quot;&lt;&amp;&gt;&apos;\">\
             <b>x &amp; y &lt; z\u{FFFD}</b><c/><n>-5</n></a>"
        );
    }
}
