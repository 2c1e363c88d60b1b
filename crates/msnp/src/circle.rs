//! The circle ticket of MSNP18 (WLM 2009 "groups"): the address book hands it out in
//! `ABFindContactsPaged`'s `CircleResult`, and the client shows it to the NS with
//! `USR tr SHA A <base64>`. It lists the circles the user belongs to; Butterfly has no
//! circles yet, so it lists none, but the exchange has to work for WLM 2009 to sign in
//! cleanly.
//!
//! ```text
//! SignedTicket = <SignedTicket ver="1" keyVer="1"><Data>b64(Ticket)</Data><Sig>b64(sig)</Sig></SignedTicket>
//! Ticket       = <Ticket><TS>0000-01-01T00:00:00</TS><CID>decimal</CID></Ticket>
//! ```
//!
//! The signature is the server's (an HMAC over `Data`, from the ticket port); clients do
//! not check it, the NS does.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

const XMLNS: &str = "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\"";

/// The ticket for the user with `cid`, member of no circle, base64-encoded: the `Data`
/// to sign.
pub fn ticket_data(cid: i64) -> String {
    let ticket = format!(
        "<?xml version=\"1.0\" encoding=\"utf-16\"?><Ticket {XMLNS}><TS>0000-01-01T00:00:00</TS><CID>{cid}</CID></Ticket>"
    );
    STANDARD.encode(ticket)
}

/// The `SignedTicket` document (the `CircleTicket` text, before XML escaping).
pub fn signed_ticket(data: &str, signature: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-16\"?><SignedTicket {XMLNS} ver=\"1\" keyVer=\"1\"><Data>{data}</Data><Sig>{signature}</Sig></SignedTicket>"
    )
}

/// What `USR SHA A` carries, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTicket {
    /// `Data` as sent (base64), which the signature covers.
    pub data: String,
    pub signature: String,
    /// The CID the ticket names.
    pub cid: i64,
}

/// Parse the base64 argument of `USR SHA A`. `None` for anything malformed.
pub fn parse(argument: &str) -> Option<SignedTicket> {
    let document = String::from_utf8(STANDARD.decode(argument.trim()).ok()?).ok()?;
    let data = element(&document, "Data")?.trim().to_owned();
    let signature = element(&document, "Sig")?.trim().to_owned();
    let ticket = String::from_utf8(STANDARD.decode(&data).ok()?).ok()?;
    let cid = element(&ticket, "CID")?.trim().parse().ok()?;
    Some(SignedTicket {
        data,
        signature,
        cid,
    })
}

/// The text of the one `<name>…</name>` element (no attributes, no nesting: both
/// documents are ours).
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    (xml[end + close.len()..].find(&open).is_none()).then_some(&xml[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_ticket_round_trips_through_usr_sha_a() {
        let data = ticket_data(-2351581371273912302);
        let doc = signed_ticket(&data, "c2ln");
        let arg = STANDARD.encode(&doc);
        assert_eq!(
            parse(&arg),
            Some(SignedTicket {
                data,
                signature: "c2ln".into(),
                cid: -2351581371273912302
            })
        );
        for junk in [
            "",
            "%%%",
            &STANDARD.encode("<SignedTicket/>"),
            &STANDARD.encode("<SignedTicket><Data>bm90IHhtbA==</Data><Sig>x</Sig></SignedTicket>"),
        ] {
            assert_eq!(parse(junk), None, "{junk}");
        }
    }
}
