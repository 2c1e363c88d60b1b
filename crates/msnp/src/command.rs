//! Typed client commands, parsed from frames. One variant per verb; arguments checked for
//! count and form here, meaning (does this user exist?) is the server's business.
//!
//! A frame that fails to parse yields a [`ParseError`] carrying the TrID and the error
//! code to answer with, so the server answers every bad command the same way.

use bytes::Bytes;

use crate::error::ErrorCode;
use crate::frame::Frame;
use crate::text;

/// A client transaction id.
pub type TrId = u32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{verb} {tr_id:?}: {code}")]
pub struct ParseError {
    pub verb: String,
    pub tr_id: Option<TrId>,
    pub code: ErrorCode,
}

/// The USR forms, by authentication family and step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsrAuth {
    /// `USR tr MD5 I email` (MSNP2–7).
    Md5Initial { email: String },
    /// `USR tr MD5 S hash`.
    Md5Response { hash: String },
    /// `USR tr TWN I email` (MSNP8+).
    TwnInitial { email: String },
    /// `USR tr TWN S ticket`.
    TwnResponse { ticket: String },
    /// `USR tr SSO I email` (MSNP15+).
    SsoInitial { email: String },
    /// `USR tr SSO S ticket blob [machine-guid]`.
    SsoResponse {
        ticket: String,
        blob: Option<String>,
        machine_guid: Option<String>,
    },
    /// `USR tr SHA A <base64 signed ticket>` (MSNP18, after sign-in): the circle ticket.
    ShaA { ticket: String },
    /// Any other package (CTP): refused by the server.
    Other { package: String },
}

/// Notification-server commands from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsCommand {
    Ver {
        tr: TrId,
        versions: Vec<String>,
    },
    Cvr {
        tr: TrId,
        args: Vec<String>,
    },
    Inf {
        tr: TrId,
    },
    Usr {
        tr: TrId,
        auth: UsrAuth,
    },
    /// `SYN tr ver` (MSNP2–9) or `SYN tr ts1 ts2` (MSNP10+).
    Syn {
        tr: TrId,
        versions: Vec<String>,
    },
    /// `CHG tr STATUS [caps [msnobj]]`; msnobj decoded.
    Chg {
        tr: TrId,
        status: String,
        caps: Option<String>,
        msnobj: Option<String>,
    },
    /// `ADD tr LIST email friendly [group]` (MSNP2–9).
    Add {
        tr: TrId,
        list: String,
        email: String,
        friendly: Option<String>,
        group: Option<u32>,
    },
    /// `ADC tr LIST N=email [F=name]` or `ADC tr FL C=guid group-guid` (MSNP10+).
    Adc {
        tr: TrId,
        list: String,
        email: Option<String>,
        friendly: Option<String>,
        contact: Option<String>,
        group: Option<String>,
    },
    /// `REM tr LIST id [group]` — id is an email, or a contact GUID for FL in MSNP10+.
    Rem {
        tr: TrId,
        list: String,
        target: String,
        group: Option<String>,
    },
    Adg {
        tr: TrId,
        name: String,
    },
    Rmg {
        tr: TrId,
        group: String,
    },
    Reg {
        tr: TrId,
        group: String,
        name: String,
    },
    /// `REA tr email name` (MSNP2–9): rename myself.
    Rea {
        tr: TrId,
        email: String,
        name: String,
    },
    /// `PRP tr KEY [value]` (MFN or a phone number).
    Prp {
        tr: TrId,
        key: String,
        value: Option<String>,
    },
    /// `SBP tr guid KEY value` (MSNP10+): my name for a contact.
    Sbp {
        tr: TrId,
        contact: String,
        key: String,
        value: String,
    },
    Blp {
        tr: TrId,
        setting: String,
    },
    Gtc {
        tr: TrId,
        setting: String,
    },
    Qry {
        tr: TrId,
        product_id: String,
        answer: Bytes,
    },
    Png,
    Out,
    Xfr {
        tr: TrId,
        target: String,
    },
    Uux {
        tr: TrId,
        payload: Bytes,
    },
    Gcf {
        tr: TrId,
        file: String,
    },
    /// `ADL tr len` + `<ml>` document (MSNP13+): add contacts to lists.
    Adl {
        tr: TrId,
        payload: Bytes,
    },
    /// `RML tr len` + `<ml>` document (MSNP13+): remove contacts from lists.
    Rml {
        tr: TrId,
        payload: Bytes,
    },
    /// `UUN tr email[;{guid}] type len` + payload (MSNP13+): a notification for another
    /// user (or another of my own machines), relayed as `UBN`.
    Uun {
        tr: TrId,
        target: String,
        kind: u32,
        payload: Bytes,
    },
    /// `UUM tr email network type len` + MIME message (MSNP14+): a message for a user by
    /// network (MSNP18 sends offline messages this way, network 1, type 1).
    Uum {
        tr: TrId,
        target: String,
        network: u32,
        kind: u32,
        payload: Bytes,
    },
    /// `PUT tr len` + document (MSNP18): circle roster and presence documents.
    Put {
        tr: TrId,
        payload: Bytes,
    },
    /// `SDG tr len` + message (MSNP18): a message to a circle.
    Sdg {
        tr: TrId,
        payload: Bytes,
    },
    /// `FQY tr len` + `<ml>` document (MSNP14+): which network is this address on?
    Fqy {
        tr: TrId,
        payload: Bytes,
    },
    Url {
        tr: TrId,
        kind: String,
    },
    Ims {
        tr: TrId,
        on: bool,
    },
    /// A known verb that this server does not offer (SND, FND, SDC, …): answered 502.
    Disabled {
        tr: TrId,
        verb: String,
    },
    /// Anything else: answered 200 (syntax) without closing.
    Unknown {
        tr: Option<TrId>,
        verb: String,
    },
}

/// Switchboard commands from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SbCommand {
    /// `USR tr email cookie` (caller).
    Usr {
        tr: TrId,
        email: String,
        cookie: String,
    },
    /// `ANS tr email cookie session-id` (invitee).
    Ans {
        tr: TrId,
        email: String,
        cookie: String,
        session: String,
    },
    Cal {
        tr: TrId,
        email: String,
    },
    /// `MSG tr ackmode len` + payload.
    Msg {
        tr: TrId,
        ack: AckMode,
        payload: Bytes,
    },
    Out,
    Unknown {
        tr: Option<TrId>,
        verb: String,
    },
}

/// MSG acknowledgement modes (SB.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// No reply at all.
    Unacknowledged,
    /// NAK on failure only.
    NakOnly,
    /// ACK on success, NAK on failure.
    Acknowledged,
    /// Like A, for P2P data (MSNP9+).
    Data,
}

impl AckMode {
    pub fn parse(s: &str) -> Option<AckMode> {
        match s {
            "U" => Some(AckMode::Unacknowledged),
            "N" => Some(AckMode::NakOnly),
            "A" => Some(AckMode::Acknowledged),
            "D" => Some(AckMode::Data),
            _ => None,
        }
    }
}

struct Args<'a> {
    frame: &'a Frame,
    pos: usize,
}

impl<'a> Args<'a> {
    fn new(frame: &'a Frame) -> Self {
        Args { frame, pos: 0 }
    }

    fn err(&self, code: ErrorCode) -> ParseError {
        ParseError {
            verb: self.frame.verb.to_string(),
            tr_id: self.frame.tr_id(),
            code,
        }
    }

    fn next(&mut self) -> Option<&'a str> {
        let a = self.frame.args.get(self.pos)?;
        self.pos += 1;
        Some(a.as_str())
    }

    fn req(&mut self) -> Result<&'a str, ParseError> {
        self.next().ok_or_else(|| self.err(ErrorCode::Syntax))
    }

    fn tr(&mut self) -> Result<TrId, ParseError> {
        self.req()?.parse().map_err(|_| self.err(ErrorCode::Syntax))
    }

    fn rest(&mut self) -> Vec<String> {
        let r = self.frame.args[self.pos.min(self.frame.args.len())..].to_vec();
        self.pos = self.frame.args.len();
        r
    }

    fn payload(&self) -> Result<Bytes, ParseError> {
        self.frame
            .payload
            .clone()
            .ok_or_else(|| self.err(ErrorCode::Syntax))
    }
}

fn opt(s: Option<&str>) -> Option<String> {
    s.map(str::to_owned)
}

/// `{8-4-4-4-12}` hex, with or without braces: a machine GUID (MSNP16+).
pub fn is_guid(s: &str) -> bool {
    let inner = s
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .unwrap_or(s);
    let groups: Vec<&str> = inner.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl NsCommand {
    pub fn parse(frame: &Frame) -> Result<NsCommand, ParseError> {
        let mut a = Args::new(frame);
        let cmd = match &frame.verb.0 {
            b"PNG" => NsCommand::Png,
            b"OUT" => NsCommand::Out,
            b"VER" => NsCommand::Ver {
                tr: a.tr()?,
                versions: a.rest(),
            },
            b"CVR" => NsCommand::Cvr {
                tr: a.tr()?,
                args: a.rest(),
            },
            b"INF" => NsCommand::Inf { tr: a.tr()? },
            b"USR" => {
                let tr = a.tr()?;
                let package = a.req()?;
                let stage = a.req()?;
                let auth = match (package, stage) {
                    ("MD5", "I") => UsrAuth::Md5Initial {
                        email: a.req()?.to_owned(),
                    },
                    ("MD5", "S") => UsrAuth::Md5Response {
                        hash: a.req()?.to_owned(),
                    },
                    ("TWN", "I") => UsrAuth::TwnInitial {
                        email: a.req()?.to_owned(),
                    },
                    ("TWN", "S") => UsrAuth::TwnResponse {
                        ticket: a.req()?.to_owned(),
                    },
                    ("SSO", "I") => UsrAuth::SsoInitial {
                        email: a.req()?.to_owned(),
                    },
                    ("SSO", "S") => {
                        // `ticket [blob] [guid]`: clients patched to skip the key service
                        // send no blob, so the GUID is told apart by its shape, not place.
                        let ticket = a.req()?.to_owned();
                        let (mut blob, mut machine_guid) = (None, None);
                        for arg in a.rest() {
                            if is_guid(&arg) && machine_guid.is_none() {
                                machine_guid = Some(arg);
                            } else if blob.is_none() && machine_guid.is_none() {
                                blob = Some(arg);
                            } else {
                                return Err(a.err(ErrorCode::Syntax));
                            }
                        }
                        UsrAuth::SsoResponse {
                            ticket,
                            blob,
                            machine_guid,
                        }
                    }
                    ("SHA", "A") => UsrAuth::ShaA {
                        ticket: a.req()?.to_owned(),
                    },
                    (p, "I" | "S") => UsrAuth::Other {
                        package: p.to_owned(),
                    },
                    _ => return Err(a.err(ErrorCode::Syntax)),
                };
                NsCommand::Usr { tr, auth }
            }
            b"SYN" => {
                let tr = a.tr()?;
                let versions = a.rest();
                if versions.is_empty() {
                    return Err(a.err(ErrorCode::Syntax));
                }
                NsCommand::Syn { tr, versions }
            }
            b"CHG" => NsCommand::Chg {
                tr: a.tr()?,
                status: a.req()?.to_owned(),
                caps: opt(a.next()),
                msnobj: a.next().filter(|m| *m != "0").map(text::decode),
            },
            b"ADD" => {
                let tr = a.tr()?;
                let list = a.req()?.to_owned();
                let email = a.req()?.to_owned();
                let friendly = a.next().map(text::decode);
                let group = match a.next() {
                    Some(g) => Some(g.parse().map_err(|_| a.err(ErrorCode::InvalidGroup))?),
                    None => None,
                };
                NsCommand::Add {
                    tr,
                    list,
                    email,
                    friendly,
                    group,
                }
            }
            b"ADC" => {
                let tr = a.tr()?;
                let list = a.req()?.to_owned();
                let (mut email, mut friendly, mut contact, mut group) = (None, None, None, None);
                for arg in a.rest() {
                    if let Some(v) = arg.strip_prefix("N=") {
                        email = Some(v.to_owned());
                    } else if let Some(v) = arg.strip_prefix("F=") {
                        friendly = Some(text::decode(v));
                    } else if let Some(v) = arg.strip_prefix("C=") {
                        contact = Some(v.to_owned());
                    } else {
                        group = Some(arg);
                    }
                }
                if email.is_none() && contact.is_none() {
                    return Err(a.err(ErrorCode::Syntax));
                }
                NsCommand::Adc {
                    tr,
                    list,
                    email,
                    friendly,
                    contact,
                    group,
                }
            }
            b"REM" => NsCommand::Rem {
                tr: a.tr()?,
                list: a.req()?.to_owned(),
                target: a.req()?.to_owned(),
                group: opt(a.next()),
            },
            b"ADG" => NsCommand::Adg {
                tr: a.tr()?,
                name: text::decode(a.req()?),
            },
            b"RMG" => NsCommand::Rmg {
                tr: a.tr()?,
                group: a.req()?.to_owned(),
            },
            b"REG" => NsCommand::Reg {
                tr: a.tr()?,
                group: a.req()?.to_owned(),
                name: text::decode(a.req()?),
            },
            b"REA" => NsCommand::Rea {
                tr: a.tr()?,
                email: a.req()?.to_owned(),
                name: text::decode(a.req()?),
            },
            b"PRP" => NsCommand::Prp {
                tr: a.tr()?,
                key: a.req()?.to_owned(),
                value: a.next().map(text::decode),
            },
            b"SBP" => NsCommand::Sbp {
                tr: a.tr()?,
                contact: a.req()?.to_owned(),
                key: a.req()?.to_owned(),
                value: text::decode(a.req()?),
            },
            b"BLP" => NsCommand::Blp {
                tr: a.tr()?,
                setting: a.req()?.to_owned(),
            },
            b"GTC" => NsCommand::Gtc {
                tr: a.tr()?,
                setting: a.req()?.to_owned(),
            },
            b"QRY" => NsCommand::Qry {
                tr: a.tr()?,
                product_id: a.req()?.to_owned(),
                answer: a.payload()?,
            },
            b"XFR" => NsCommand::Xfr {
                tr: a.tr()?,
                target: a.req()?.to_owned(),
            },
            b"UUX" => NsCommand::Uux {
                tr: a.tr()?,
                payload: a.payload()?,
            },
            b"GCF" => NsCommand::Gcf {
                tr: a.tr()?,
                file: a.req()?.to_owned(),
            },
            b"URL" => NsCommand::Url {
                tr: a.tr()?,
                kind: a.req()?.to_owned(),
            },
            b"IMS" => {
                let tr = a.tr()?;
                let on = match a.req()? {
                    "ON" => true,
                    "OFF" => false,
                    _ => return Err(a.err(ErrorCode::InvalidParameter)),
                };
                NsCommand::Ims { tr, on }
            }
            b"ADL" => NsCommand::Adl {
                tr: a.tr()?,
                payload: a.payload()?,
            },
            b"RML" => NsCommand::Rml {
                tr: a.tr()?,
                payload: a.payload()?,
            },
            b"FQY" => NsCommand::Fqy {
                tr: a.tr()?,
                payload: a.payload()?,
            },
            b"PUT" => NsCommand::Put {
                tr: a.tr()?,
                payload: a.payload()?,
            },
            b"SDG" => NsCommand::Sdg {
                tr: a.tr()?,
                payload: a.payload()?,
            },
            b"UUN" => NsCommand::Uun {
                tr: a.tr()?,
                target: a.req()?.to_owned(),
                kind: a
                    .req()?
                    .parse()
                    .map_err(|_| a.err(ErrorCode::InvalidParameter))?,
                payload: a.payload()?,
            },
            // Without its payload (before MSNP14) UUM is not the message command.
            b"UUM" if frame.payload.is_some() => NsCommand::Uum {
                tr: a.tr()?,
                target: a.req()?.to_owned(),
                network: a
                    .req()?
                    .parse()
                    .map_err(|_| a.err(ErrorCode::InvalidParameter))?,
                kind: a
                    .req()?
                    .parse()
                    .map_err(|_| a.err(ErrorCode::InvalidParameter))?,
                payload: a.payload()?,
            },
            b"SND" | b"FND" | b"SDC" | b"PAG" | b"UUM" => NsCommand::Disabled {
                tr: a.tr()?,
                verb: frame.verb.to_string(),
            },
            _ => NsCommand::Unknown {
                tr: frame.tr_id(),
                verb: frame.verb.to_string(),
            },
        };
        Ok(cmd)
    }
}

impl SbCommand {
    pub fn parse(frame: &Frame) -> Result<SbCommand, ParseError> {
        let mut a = Args::new(frame);
        let cmd = match &frame.verb.0 {
            b"OUT" => SbCommand::Out,
            b"USR" => SbCommand::Usr {
                tr: a.tr()?,
                email: a.req()?.to_owned(),
                cookie: a.req()?.to_owned(),
            },
            b"ANS" => SbCommand::Ans {
                tr: a.tr()?,
                email: a.req()?.to_owned(),
                cookie: a.req()?.to_owned(),
                session: a.req()?.to_owned(),
            },
            b"CAL" => SbCommand::Cal {
                tr: a.tr()?,
                email: a.req()?.to_owned(),
            },
            b"MSG" => {
                let tr = a.tr()?;
                let ack = AckMode::parse(a.req()?).ok_or_else(|| a.err(ErrorCode::Syntax))?;
                SbCommand::Msg {
                    tr,
                    ack,
                    payload: a.payload()?,
                }
            }
            _ => SbCommand::Unknown {
                tr: frame.tr_id(),
                verb: frame.verb.to_string(),
            },
        };
        Ok(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(line: &str) -> Frame {
        let mut it = line.split(' ');
        let v = it.next().unwrap().as_bytes();
        Frame::new(&[v[0], v[1], v[2]]).args(it)
    }

    #[test]
    fn sso_response_tells_the_machine_guid_by_its_shape() {
        let sso = |line: &str| match NsCommand::parse(&f(line)) {
            Ok(NsCommand::Usr {
                auth:
                    UsrAuth::SsoResponse {
                        ticket,
                        blob,
                        machine_guid,
                    },
                ..
            }) => Ok((ticket, blob, machine_guid)),
            other => Err(format!("{other:?}")),
        };
        let guid = "{F52973B6-C926-4BAD-9BA8-7C1E840E4AB0}";
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            sso("USR 4 SSO S t=x&p= HAAAblob"),
            Ok(("t=x&p=".into(), s("HAAAblob"), None))
        );
        assert_eq!(
            sso(&format!("USR 4 SSO S t=x&p= HAAAblob {guid}")),
            Ok(("t=x&p=".into(), s("HAAAblob"), s(guid)))
        );
        // No blob (patched clients), with or without braces.
        assert_eq!(
            sso(&format!("USR 4 SSO S t=x&p= {guid}")),
            Ok(("t=x&p=".into(), None, s(guid)))
        );
        assert_eq!(
            sso("USR 4 SSO S t=x f52973b6-c926-4bad-9ba8-7c1e840e4ab0"),
            Ok((
                "t=x".into(),
                None,
                s("f52973b6-c926-4bad-9ba8-7c1e840e4ab0")
            ))
        );
        assert_eq!(sso("USR 4 SSO S t=x"), Ok(("t=x".into(), None, None)));
        // A blob after the GUID, or two blobs: not a form any client sends.
        assert!(sso(&format!("USR 4 SSO S t=x {guid} blob")).is_err());
        assert!(sso("USR 4 SSO S t=x blob1 blob2").is_err());
        assert!(!is_guid("{F52973B6-C926-4BAD-9BA8-7C1E840E4AB}"));
        assert!(!is_guid("F52973B6C9264BAD9BA87C1E840E4AB0"));
    }

    #[test]
    fn parses_typical_lines() {
        assert_eq!(
            NsCommand::parse(&f("USR 3 TWN I alice@x.com")).unwrap(),
            NsCommand::Usr {
                tr: 3,
                auth: UsrAuth::TwnInitial {
                    email: "alice@x.com".into()
                }
            }
        );
        assert_eq!(
            NsCommand::parse(&f("ADC 7 FL N=bob@x.com F=Bob%20B")).unwrap(),
            NsCommand::Adc {
                tr: 7,
                list: "FL".into(),
                email: Some("bob@x.com".into()),
                friendly: Some("Bob B".into()),
                contact: None,
                group: None
            }
        );
        assert_eq!(
            NsCommand::parse(&f("CHG 9 NLN 1342177312 %3Cmsnobj%2F%3E")).unwrap(),
            NsCommand::Chg {
                tr: 9,
                status: "NLN".into(),
                caps: Some("1342177312".into()),
                msnobj: Some("<msnobj/>".into())
            }
        );
        assert!(matches!(
            NsCommand::parse(&f("ZZZ 4")).unwrap(),
            NsCommand::Unknown { tr: Some(4), .. }
        ));
    }

    #[test]
    fn missing_arguments_are_syntax_errors() {
        let e = NsCommand::parse(&f("USR 3 TWN")).unwrap_err();
        assert_eq!((e.tr_id, e.code), (Some(3), ErrorCode::Syntax));
        assert_eq!(NsCommand::parse(&f("USR x")).unwrap_err().tr_id, None);
        assert!(SbCommand::parse(&f("MSG 1 Q")).is_err());
    }
}
