//! URL-encoding of free-text arguments (friendly names, group names, MSNObjects).
//!
//! Command lines are split on spaces, so every free-text argument travels
//! percent-encoded. Clients differ in how much they encode; we decode anything and
//! encode what must not appear raw (controls, space, `%`, and non-ASCII as UTF-8 bytes).

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// Characters we escape in names: controls, space, `%`, and what old clients escaped too.
const NAME: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'#')
    .add(b'&')
    .add(b'+')
    .add(b'=')
    .add(b'?')
    .add(b'\'')
    .add(b'/')
    .add(b',');

/// Encode a friendly or group name for a command line.
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, NAME).to_string()
}

/// Decode a percent-encoded argument. Invalid UTF-8 after decoding is replaced with
/// U+FFFD rather than refused: a name is shown, never trusted.
pub fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for s in [
            "Alice",
            "Bob Smith",
            "100% ünïcødé 😀",
            "a+b=c&d",
            "tab\there",
        ] {
            let e = encode(s);
            assert!(!e.contains(' ') && !e.contains('\t'), "{e}");
            assert_eq!(decode(&e), s);
        }
        assert_eq!(encode("Alice Friendly"), "Alice%20Friendly");
        assert_eq!(decode("%E4%BD%A0%FF"), "你\u{fffd}");
    }
}
