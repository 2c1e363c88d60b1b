//! Server lines whose shape depends on the dialect, each built in one place.
//!
//! Callers pass raw values (names not yet encoded); these functions encode names and pick
//! the per-dialect form documented in the protocol map (NS.md, SB.md, LOGIN.md).

use crate::command::TrId;
use crate::frame::Frame;
use crate::text;

/// What a watcher is shown of an online contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceLine<'a> {
    pub status: &'a str,
    pub email: &'a str,
    pub friendly_name: &'a str,
    /// `caps` or `caps:capsex` as the contact's client wrote it.
    pub caps: &'a str,
    /// Raw MSNObject XML.
    pub msnobj: Option<&'a str>,
}

/// Split `caps:capsex` into the form a dialect understands.
fn caps_for(dialect: u8, caps: &str) -> String {
    let (c, cx) = caps.split_once(':').unwrap_or((caps, "0"));
    let c = if c.is_empty() { "0" } else { c };
    if dialect >= 16 {
        format!("{c}:{cx}")
    } else {
        c.to_owned()
    }
}

/// `ILN tr …` (initial, on the first CHG) or `NLN …` (a change), per dialect.
pub fn presence(dialect: u8, initial: Option<TrId>, p: &PresenceLine<'_>) -> Frame {
    let mut f = match initial {
        Some(tr) if dialect < 18 => Frame::new(b"ILN").arg(tr),
        _ => Frame::new(b"NLN"),
    };
    f = f.arg(p.status);
    f = if dialect >= 18 {
        f.arg(format!("1:{}", p.email))
    } else {
        f.arg(p.email)
    };
    if (14..18).contains(&dialect) {
        f = f.arg(1);
    }
    f = f.arg(text::encode(p.friendly_name));
    if dialect >= 8 {
        f = f.arg(caps_for(dialect, p.caps));
    }
    if dialect >= 9 {
        f = f.arg(p.msnobj.map(text::encode).unwrap_or_else(|| "0".into()));
    }
    f
}

/// `FLN email`, per dialect.
pub fn offline(dialect: u8, email: &str) -> Frame {
    match dialect {
        ..=13 => Frame::new(b"FLN").arg(email),
        14..=15 => Frame::new(b"FLN").arg(email).arg(1).arg(0),
        16..=17 => Frame::new(b"FLN").arg(email).arg(1).arg("0:0"),
        _ => Frame::new(b"FLN").arg(format!("1:{email}")).arg("0:0"),
    }
}

/// `UBX email …` with the contact's UUX document (MSNP11+).
pub fn ubx(dialect: u8, email: &str, document: bytes::Bytes) -> Frame {
    let f = match dialect {
        ..=13 => Frame::new(b"UBX").arg(email),
        14..=17 => Frame::new(b"UBX").arg(email).arg(1),
        _ => Frame::new(b"UBX").arg(format!("1:{email}")),
    };
    f.payload(document)
}

/// `USR tr OK …` after a successful sign-in.
pub fn usr_ok(dialect: u8, tr: TrId, email: &str, friendly_name: &str) -> Frame {
    let f = Frame::new(b"USR").arg(tr).arg("OK").arg(email);
    match dialect {
        ..=5 => f.arg(text::encode(friendly_name)),
        6..=7 => f.arg(text::encode(friendly_name)).arg(1),
        8..=9 => f.arg(text::encode(friendly_name)).arg(1).arg(0),
        _ => f.arg(1).arg(0),
    }
}

/// `XFR tr SB host:port CKI cookie …`.
pub fn xfr_sb(dialect: u8, tr: TrId, address: &str, cookie: &str) -> Frame {
    let f = Frame::new(b"XFR")
        .arg(tr)
        .arg("SB")
        .arg(address)
        .arg("CKI")
        .arg(cookie);
    match dialect {
        ..=12 => f,
        13 => f.arg("U").arg("messenger.msn.com"),
        _ => f.arg("U").arg("messenger.msn.com").arg(1),
    }
}

/// `RNG session host:port CKI cookie inviter friendly …`.
pub fn rng(
    dialect: u8,
    session: u32,
    address: &str,
    cookie: &str,
    inviter: &str,
    inviter_friendly: &str,
) -> Frame {
    let f = Frame::new(b"RNG")
        .arg(session)
        .arg(address)
        .arg("CKI")
        .arg(cookie)
        .arg(inviter)
        .arg(text::encode(inviter_friendly));
    match dialect {
        ..=12 => f,
        13 => f.arg("U").arg("messenger.hotmail.com"),
        _ => f.arg("U").arg("messenger.hotmail.com").arg(1),
    }
}

/// `JOI email friendly [caps]` to the other participants of a switchboard session.
pub fn joi(dialect: u8, email: &str, friendly_name: &str, caps: &str) -> Frame {
    let f = Frame::new(b"JOI")
        .arg(email)
        .arg(text::encode(friendly_name));
    if dialect >= 12 {
        f.arg(caps_for(dialect, caps))
    } else {
        f
    }
}

/// `IRO tr index total email friendly [caps]`: one line per participant already present.
pub fn iro(
    dialect: u8,
    tr: TrId,
    index: usize,
    total: usize,
    email: &str,
    friendly_name: &str,
    caps: &str,
) -> Frame {
    let f = Frame::new(b"IRO")
        .arg(tr)
        .arg(index)
        .arg(total)
        .arg(email)
        .arg(text::encode(friendly_name));
    if dialect >= 12 {
        f.arg(caps_for(dialect, caps))
    } else {
        f
    }
}

/// `QNG [seconds]`.
pub fn qng(dialect: u8, seconds: u64) -> Frame {
    if crate::dialect::qng_has_seconds(dialect) {
        Frame::new(b"QNG").arg(seconds)
    } else {
        Frame::new(b"QNG")
    }
}

/// One contact in a SYN answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LstEntry<'a> {
    pub email: &'a str,
    pub friendly_name: &'a str,
    pub guid: &'a str,
    /// List bit mask (FL=1, AL=2, BL=4, RL=8, PL=16).
    pub lists: u8,
    /// Group ids as the dialect names them (numbers below MSNP10, GUIDs after).
    pub groups: Vec<String>,
}

/// `LST` for MSNP8+: one line per contact, untagged.
pub fn lst(dialect: u8, e: &LstEntry<'_>) -> Frame {
    if dialect < 10 {
        let f = Frame::new(b"LST")
            .arg(e.email)
            .arg(text::encode(e.friendly_name))
            .arg(e.lists);
        // FL members always carry a group field; "0" means Other Contacts.
        if e.lists & 1 != 0 {
            let groups = if e.groups.is_empty() {
                "0".to_owned()
            } else {
                e.groups.join(",")
            };
            f.arg(groups)
        } else {
            f
        }
    } else {
        let mut f = Frame::new(b"LST")
            .arg(format!("N={}", e.email))
            .arg(format!("F={}", text::encode(e.friendly_name)));
        if e.lists & 1 != 0 {
            f = f.arg(format!("C={}", e.guid));
        }
        f = f.arg(e.lists);
        if dialect >= 12 {
            f = f.arg(1);
        }
        if e.lists & 1 != 0 && !e.groups.is_empty() {
            f = f.arg(e.groups.join(","));
        }
        f
    }
}

/// The `text/x-msmsgsprofile` message sent right after sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile<'a> {
    pub login_time: u64,
    /// The account's PUID, written as its high and low 32-bit halves.
    pub puid: u64,
    pub ticket: &'a str,
    pub client_ip: &'a str,
    pub client_port: u16,
}

pub fn profile(dialect: u8, p: &Profile<'_>) -> Frame {
    let mut body = format!(
        "MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsprofile; charset=UTF-8\r\nLoginTime: {}\r\nEmailEnabled: 0\r\nMemberIdHigh: {}\r\nMemberIdLow: {}\r\nlang_preference: 1033\r\npreferredEmail: \r\ncountry: \r\nPostalCode: \r\nGender: \r\nKid: 0\r\nAge: \r\nBDayPre: \r\nBirthday: \r\nWallet: \r\nFlags: 536872513\r\nsid: 507\r\n",
        p.login_time,
        p.puid >> 32,
        p.puid & 0xffff_ffff
    );
    if dialect >= 8 {
        // MSNP13+ clients expect the cookie form of the ticket, as RST hands it out.
        let ticket = if dialect >= 13 {
            format!("t={}&p=", p.ticket)
        } else {
            p.ticket.to_owned()
        };
        body.push_str(&format!(
            "MSPAuth: {ticket}\r\nClientIP: {}\r\nClientPort: {}\r\n",
            p.client_ip, p.client_port
        ));
    }
    if dialect >= 10 {
        body.push_str("ABCHMigrated: 1\r\n");
    }
    if dialect >= 16 {
        // Several machines may be signed in at once (NS.md §5).
        body.push_str("MPOPEnabled: 1\r\n");
    }
    body.push_str("\r\n");
    Frame::new(b"MSG")
        .arg("Hotmail")
        .arg("Hotmail")
        .payload(body.into_bytes())
}

/// `GCF 0` (MSNP13+): the policies pushed before `USR … S` — an empty shields policy, the
/// address-book timers (how often the client polls for changes), and P2P defaults.
pub fn gcf_policies() -> Frame {
    let body = "<Policies><Policy type=\"SHIELDS\"><config><shield><cli maj=\"7\" min=\"0\" minbld=\"0\" maxbld=\"9999\" deny=\" \" /></shield><block></block></config></Policy><Policy type=\"ABCH\"><policy><set id=\"push\" service=\"ABCH\" priority=\"200\"><r id=\"pushstorage\" threshold=\"180000\" /></set><set id=\"delaysup\" service=\"ABCH\" priority=\"150\"><r id=\"whatsnew\" threshold=\"1800000\" /><r id=\"whatsnew_storage_ABCH_delay\" timer=\"1800000\" /><r id=\"whatsnewt_link\" threshold=\"900000\" trigger=\"QueryActivities\" /></set><c id=\"PROFILE_Rampup\">100</c></policy></Policy><Policy type=\"P2P\"><ObjStr SndDly=\"1\" /></Policy></Policies>";
    Frame::new(b"GCF").arg(0).payload(body.as_bytes().to_vec())
}

/// `ADL 0` / `RML 0` (MSNP13+): the server telling a client that someone put it on (or
/// took it off) their contact list; `document` is an [`crate::ml::build`] document.
pub fn ml_push(verb: &[u8; 3], document: Vec<u8>) -> Frame {
    Frame::new(verb).arg(0).payload(document)
}

/// The mail-data message MSNP13+ clients get after their first `CHG`: the offline-message
/// summary (`<MD>`), here with no messages waiting. `entries` are the `<M>…</M>` elements of
/// the waiting messages, already formatted.
pub fn initial_mail_data(entries: &str) -> Frame {
    let body = format!(
        "MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsinitialmdatanotification; charset=UTF-8\r\n\r\nMail-Data: <MD><E><I>0</I><IU>0</IU><O>0</O><OU>0</OU></E><Q><QTM>409600</QTM><QNM>204800</QNM></Q>{entries}</MD>\r\n\r\n"
    );
    Frame::new(b"MSG")
        .arg("Hotmail")
        .arg("Hotmail")
        .payload(body.into_bytes())
}

/// The sign-in mail data when too many offline messages wait to list: the client asks
/// RSI `GetMetadata` instead.
pub fn initial_mail_data_too_large() -> Frame {
    hotmail(
        "text/x-msmsgsinitialmdatanotification",
        "Mail-Data: too-large\r\n\r\n",
    )
}

/// A new offline message for a signed-in MSNP13+ user (`Mail-Data: <MD>` from
/// [`crate::oim::arrival_mail_data`]).
pub fn oim_notification(mail_data: &str) -> Frame {
    hotmail(
        "text/x-msmsgsoimnotification",
        &format!("Mail-Data: {mail_data}\r\n\r\n"),
    )
}

/// `count` offline messages were deleted (moved to the trash): other signed-in machines
/// drop their copies.
pub fn active_mail_notification(count: u64) -> Frame {
    hotmail(
        "text/x-msmsgsactivemailnotification",
        &format!("Src-Folder: .!!OIM\r\nDest-Folder: .!!trAsH\r\nMessage-Delta: {count}\r\n\r\n"),
    )
}

/// `MSG Hotmail Hotmail len` with a `content_type` message.
fn hotmail(content_type: &str, body: &str) -> Frame {
    let payload =
        format!("MIME-Version: 1.0\r\nContent-Type: {content_type}; charset=UTF-8\r\n\r\n{body}");
    Frame::new(b"MSG")
        .arg("Hotmail")
        .arg("Hotmail")
        .payload(payload.into_bytes())
}

/// `UBN from type len` + payload (MSNP13+): a user notification relayed to its recipient.
/// `from` carries `;{guid}` when the sender named its machine and the receiver is 16+.
pub fn ubn(
    dialect: u8,
    from: &str,
    from_endpoint: Option<&str>,
    kind: u32,
    payload: Vec<u8>,
) -> Frame {
    let from = match from_endpoint {
        Some(guid) if dialect >= 16 => format!("{from};{guid}"),
        _ => from.to_owned(),
    };
    Frame::new(b"UBN").arg(from).arg(kind).payload(payload)
}

/// `NOT` "ABCHInternal" (MSNP13+): the user's address book or memberships changed, so the
/// client fetches them again (as a delta). Clients act on it only when it names them: their
/// address and CID, and their PUID halves in `pid`. `modified`: `YYYY-MM-DDTHH:MM:SSZ`.
pub fn not_abch(email: &str, puid: u64, cid: i64, modified: &str) -> Frame {
    let body = format!(
        "<NOTIFICATION id=\"0\" siteid=\"45705\" siteurl=\"http://contacts.msn.com\"><TO pid=\"0x{:08x}:0x{:08x}\" name=\"{email}\"><VIA agent=\"messenger\"/></TO><MSG id=\"0\"><SUBSCR url=\"s.htm\"/><ACTION url=\"a.htm\"/><BODY>&lt;NotificationData xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"&gt;&lt;Service&gt;ABCHInternal&lt;/Service&gt;&lt;CID&gt;{cid}&lt;/CID&gt;&lt;LastModifiedDate&gt;{modified}&lt;/LastModifiedDate&gt;&lt;HasNewItem&gt;false&lt;/HasNewItem&gt;&lt;/NotificationData&gt;</BODY></MSG></NOTIFICATION>",
        puid & 0xffff_ffff,
        puid >> 32
    );
    Frame::new(b"NOT").payload(body.into_bytes())
}

/// `GCF tr Shields.xml` answer (MSNP11–12): an empty shields policy.
pub fn shields(tr: TrId, file: &str) -> Frame {
    let body = "<?xml version= \"1.0\" encoding=\"utf-8\" ?><config><shield><cli maj=\"7\" min=\"0\" minbld=\"0\" maxbld=\"9999\" deny=\" \" /></shield><block></block></config>";
    Frame::new(b"GCF")
        .arg(tr)
        .arg(file)
        .payload(body.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(f: &Frame) -> String {
        String::from_utf8(f.to_bytes().to_vec()).unwrap()
    }

    #[test]
    fn presence_shapes_by_dialect() {
        let p = PresenceLine {
            status: "NLN",
            email: "a@x.com",
            friendly_name: "A B",
            caps: "1342177312:48",
            msnobj: Some("<o/>"),
        };
        assert_eq!(line(&presence(7, None, &p)), "NLN NLN a@x.com A%20B\r\n");
        assert_eq!(
            line(&presence(8, Some(9), &p)),
            "ILN 9 NLN a@x.com A%20B 1342177312\r\n"
        );
        assert_eq!(
            line(&presence(12, None, &p)),
            "NLN NLN a@x.com A%20B 1342177312 %3Co%2F%3E\r\n"
        );
        assert_eq!(
            line(&presence(18, Some(3), &p)),
            "NLN NLN 1:a@x.com A%20B 1342177312:48 %3Co%2F%3E\r\n"
        );
        assert_eq!(line(&offline(12, "a@x.com")), "FLN a@x.com\r\n");
    }

    #[test]
    fn abch_notification_matches_the_documented_example() {
        // The example in the spec: 587 bytes for bob@example.com.
        let f = not_abch(
            "bob@example.com",
            (3 << 32) | 0x0012_d687,
            -2351581371273912302,
            "2024-05-01T10:00:00Z",
        );
        let text = String::from_utf8(f.to_bytes().to_vec()).unwrap();
        assert!(
            text.starts_with("NOT 587\r\n<NOTIFICATION id=\"0\" siteid=\"45705\""),
            "{text}"
        );
        assert!(text.contains("<TO pid=\"0x0012d687:0x00000003\" name=\"bob@example.com\">"));
    }

    #[test]
    fn mail_data_without_messages_matches_the_documented_bytes() {
        let f = initial_mail_data("");
        assert_eq!(f.payload.as_ref().map(|p| p.len()), Some(197));
    }

    #[test]
    fn oim_notifications_match_the_documented_bytes() {
        assert_eq!(
            active_mail_notification(1)
                .payload
                .as_ref()
                .map(|p| p.len()),
            Some(150)
        );
        let md = "<MD><M><T>11</T><S>6</S><RS>0</RS><SZ>950</SZ><E>alice@example.com</E><I>0f2d8a9c-1b7e-4c55-9a1d-2b7f3c4d5e6f</I><F>.!!OIM</F><N>=?utf-8?B?QWxpY2U=?=</N><SU> </SU></M></MD>";
        assert_eq!(
            oim_notification(md).payload.as_ref().map(|p| p.len()),
            Some(267)
        );
        let big = initial_mail_data_too_large();
        let text = String::from_utf8(big.payload.unwrap().to_vec()).unwrap();
        assert!(
            text.ends_with("\r\n\r\nMail-Data: too-large\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn usr_ok_by_dialect() {
        assert_eq!(
            line(&usr_ok(5, 4, "a@x.com", "A")),
            "USR 4 OK a@x.com A\r\n"
        );
        assert_eq!(
            line(&usr_ok(7, 4, "a@x.com", "A")),
            "USR 4 OK a@x.com A 1\r\n"
        );
        assert_eq!(
            line(&usr_ok(9, 4, "a@x.com", "A")),
            "USR 4 OK a@x.com A 1 0\r\n"
        );
        assert_eq!(
            line(&usr_ok(11, 4, "a@x.com", "A")),
            "USR 4 OK a@x.com 1 0\r\n"
        );
    }

    #[test]
    fn lst_by_dialect() {
        let e = LstEntry {
            email: "b@x.com",
            friendly_name: "Bob",
            guid: "g-1",
            lists: 11,
            groups: vec![],
        };
        assert_eq!(line(&lst(9, &e)), "LST b@x.com Bob 11 0\r\n");
        assert_eq!(line(&lst(11, &e)), "LST N=b@x.com F=Bob C=g-1 11\r\n");
        let rl_only = LstEntry {
            lists: 8,
            ..e.clone()
        };
        assert_eq!(line(&lst(12, &rl_only)), "LST N=b@x.com F=Bob 8 1\r\n");
    }
}
