//! Offline-message (OIM) text formats shared by the NS and the SOAP services (spec issue 4
//! §5): the `<M>` entries of `Mail-Data`, RFC 2047 encoded words for sender names, and
//! the two date forms clients parse.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// More waiting messages than this and the sign-in mail data says `too-large` instead of
/// listing them; the client then asks RSI `GetMetadata` (Escargot's threshold).
pub const MAX_MAIL_DATA_ENTRIES: usize = 25;

/// The folder GUID of offline messages in the sign-in mail data and `GetMetadata`.
pub const OIM_FOLDER: &str = "00000000-0000-0000-0000-000000000009";

/// One waiting message as `Mail-Data` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailEntry<'a> {
    /// Arrival, ms since the Unix epoch.
    pub received_ms: i64,
    pub read: bool,
    pub size: u32,
    pub sender: &'a str,
    /// The message id (GUID), as GetMessage / DeleteMessages name it.
    pub id: &'a str,
    pub sender_name: &'a str,
}

/// The `<M>…</M>` element of each entry, for the sign-in mail data and `GetMetadata`.
pub fn mail_data_entries(entries: &[MailEntry<'_>]) -> String {
    let mut out = String::new();
    for e in entries {
        out.push_str(&format!(
            "<M><T>11</T><S>6</S><RT>{}</RT><RS>{}</RS><SZ>{}</SZ><E>{}</E><I>{}</I><F>{OIM_FOLDER}</F><N>{}</N></M>",
            utc_timestamp(e.received_ms),
            u8::from(e.read),
            e.size,
            xml_text(e.sender),
            xml_text(e.id),
            encoded_word(e.sender_name),
        ));
    }
    out
}

/// The live-arrival `<MD>` document (no totals, folder `.!!OIM`, empty subject).
pub fn arrival_mail_data(e: &MailEntry<'_>) -> String {
    format!(
        "<MD><M><T>11</T><S>6</S><RS>0</RS><SZ>{}</SZ><E>{}</E><I>{}</I><F>.!!OIM</F><N>{}</N><SU> </SU></M></MD>",
        e.size,
        xml_text(e.sender),
        xml_text(e.id),
        encoded_word(e.sender_name)
    )
}

/// Element text: sign-in names and GUIDs need no escaping, but nothing here trusts that.
fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `=?utf-8?B?…?=`: a sender name in `Mail-Data` and the `From` header.
pub fn encoded_word(text: &str) -> String {
    format!("=?utf-8?B?{}?=", STANDARD.encode(text))
}

/// A friendly name as clients send it: one or more RFC 2047 encoded words (`B` or `Q`,
/// UTF-8 or Latin-1 taken as UTF-8), or plain text, which is returned as it is.
pub fn decode_encoded_words(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text.trim();
    while let Some(start) = rest.find("=?") {
        let Some((decoded, used)) = decode_one(&rest[start..]) else {
            break;
        };
        // Whitespace between adjacent encoded words is dropped (RFC 2047 §6.2).
        let before = &rest[..start];
        let between_words = before.trim().is_empty() && !out.is_empty();
        if !between_words {
            out.push_str(before);
        }
        out.push_str(&decoded);
        rest = &rest[start + used..];
    }
    out.push_str(rest);
    out
}

/// One `=?charset?enc?text?=` at the start of `s`: the text and the bytes it took.
fn decode_one(s: &str) -> Option<(String, usize)> {
    let body = s.strip_prefix("=?")?;
    let (_charset, body) = body.split_once('?')?;
    let (encoding, body) = body.split_once('?')?;
    let end = body.find("?=")?;
    let payload = &body[..end];
    let bytes = match encoding {
        "B" | "b" => STANDARD.decode(payload).ok()?,
        "Q" | "q" => decode_q(payload)?,
        _ => return None,
    };
    let used = s.len() - body.len() + end + 2;
    Some((String::from_utf8_lossy(&bytes).into_owned(), used))
}

fn decode_q(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

/// Civil date (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day, hour, minute, second) of a ms timestamp, UTC.
fn parts(ms: i64) -> (i64, u32, u32, i64, i64, i64) {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    (y, m, d, s / 3600, s % 3600 / 60, s % 60)
}

/// `YYYY-MM-DDTHH:MM:SSZ` (the `RT` of `Mail-Data`).
pub fn utc_timestamp(ms: i64) -> String {
    let (y, mo, d, h, mi, s) = parts(ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `D Mon YYYY HH:MM:SS +0000` (the `Date` header of a fetched message, as libpurple parses
/// it).
pub fn mail_date(ms: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s) = parts(ms);
    let month = MONTHS[(mo as usize).saturating_sub(1).min(11)];
    format!("{d} {month} {y} {h:02}:{mi:02}:{s:02} +0000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        // 2024-05-01T10:00:00Z
        let ms = 1_714_557_600_000;
        assert_eq!(utc_timestamp(ms), "2024-05-01T10:00:00Z");
        assert_eq!(mail_date(ms), "1 May 2024 10:00:00 +0000");
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn encoded_words_round_trip() {
        assert_eq!(encoded_word("Alice"), "=?utf-8?B?QWxpY2U=?=");
        assert_eq!(decode_encoded_words("=?utf-8?B?QWxpY2U=?="), "Alice");
        assert_eq!(decode_encoded_words("plain name"), "plain name");
        assert_eq!(decode_encoded_words("=?utf-8?Q?A_b=C3=A9?="), "A bé");
        assert_eq!(
            decode_encoded_words("=?utf-8?B?QWxp?= =?utf-8?B?Y2U=?="),
            "Alice"
        );
        assert_eq!(decode_encoded_words("=?broken"), "=?broken");
    }

    #[test]
    fn mail_data_matches_the_documented_example() {
        let e = MailEntry {
            received_ms: 1_714_557_600_000,
            read: false,
            size: 950,
            sender: "alice@example.com",
            id: "0f2d8a9c-1b7e-4c55-9a1d-2b7f3c4d5e6f",
            sender_name: "Alice",
        };
        assert_eq!(
            mail_data_entries(&[e]),
            "<M><T>11</T><S>6</S><RT>2024-05-01T10:00:00Z</RT><RS>0</RS><SZ>950</SZ><E>alice@example.com</E><I>0f2d8a9c-1b7e-4c55-9a1d-2b7f3c4d5e6f</I><F>00000000-0000-0000-0000-000000000009</F><N>=?utf-8?B?QWxpY2U=?=</N></M>"
        );
        let live = format!(
            "MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsoimnotification; charset=UTF-8\r\n\r\nMail-Data: {}\r\n\r\n",
            arrival_mail_data(&e)
        );
        assert_eq!(live.len(), 267);
    }
}
