//! The token-service exchange a Windows Live Messenger client performs (`POST /RST.srf`
//! for WLM 8.x, `/RST2.srf` for WLM 2009), written the way those clients write it, and
//! the parts of the answer a client uses: each service's ticket and, for the Messenger
//! sign-in token, the binary secret that keys the MBI proof.

use std::net::SocketAddr;

use base64::Engine as _;
use quick_xml::Reader;
use quick_xml::events::Event;

/// One token of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The `AppliesTo` address it was issued for.
    pub address: String,
    /// `t=…&p=…`, as the client puts it in `USR … S` (XML-unescaped).
    pub ticket: String,
    /// The decoded `BinarySecret`, where one came with the token.
    pub secret: Option<Vec<u8>>,
}

/// Which request form: WLM 8.x (`RST.srf`, SOAP 1.1) or WLM 2009 (`RST2.srf`, SOAP 1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Rst,
    Rst2,
}

impl Form {
    /// The form a client of `dialect` uses: WLM 2009 (MSNP16+) posts to `RST2.srf`.
    pub fn of(dialect: u8) -> Form {
        if dialect >= 16 { Form::Rst2 } else { Form::Rst }
    }

    pub fn path(self) -> &'static str {
        match self {
            Form::Rst => "/RST.srf",
            Form::Rst2 => "/RST2.srf",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Form::Rst => "text/xml; charset=utf-8",
            Form::Rst2 => "application/soap+xml",
        }
    }
}

fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// The request body for `addresses` (address, policy).
pub fn request(form: Form, email: &str, password: &str, addresses: &[(&str, &str)]) -> String {
    let (envelope, trust, wsse, policy_ns, addressing) = match form {
        Form::Rst => (
            "http://schemas.xmlsoap.org/soap/envelope/",
            "http://schemas.xmlsoap.org/ws/2004/04/trust",
            "http://schemas.xmlsoap.org/ws/2003/06/secext",
            "http://schemas.xmlsoap.org/ws/2002/12/policy",
            "http://schemas.xmlsoap.org/ws/2004/03/addressing",
        ),
        Form::Rst2 => (
            "http://www.w3.org/2003/05/soap-envelope",
            "http://schemas.xmlsoap.org/ws/2005/02/trust",
            "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
            "http://schemas.xmlsoap.org/ws/2004/09/policy",
            "http://www.w3.org/2005/08/addressing",
        ),
    };
    let mut tokens = String::new();
    for (i, (address, policy)) in addresses.iter().enumerate() {
        let reference = if policy.is_empty() {
            String::new()
        } else {
            format!(
                "<wsp:PolicyReference URI=\"{}\"></wsp:PolicyReference>",
                escape(policy)
            )
        };
        tokens.push_str(&format!(
            "<wst:RequestSecurityToken Id=\"RST{i}\"><wst:RequestType>{trust}/Issue</wst:RequestType><wsp:AppliesTo><wsa:EndpointReference><wsa:Address>{}</wsa:Address></wsa:EndpointReference></wsp:AppliesTo>{reference}</wst:RequestSecurityToken>",
            escape(address)
        ));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><s:Envelope xmlns:s=\"{envelope}\" xmlns:wsse=\"{wsse}\" xmlns:wsp=\"{policy_ns}\" xmlns:wsa=\"{addressing}\" xmlns:wst=\"{trust}\" xmlns:ps=\"http://schemas.microsoft.com/Passport/SoapServices/PPCRL\"><s:Header><ps:AuthInfo Id=\"PPAuthInfo\"><ps:HostingApp>{{7108E71A-9926-4FCB-BCC9-9A9D3F32E423}}</ps:HostingApp><ps:BinaryVersion>5</ps:BinaryVersion></ps:AuthInfo><wsse:Security><wsse:UsernameToken Id=\"user\"><wsse:Username>{}</wsse:Username><wsse:Password>{}</wsse:Password></wsse:UsernameToken></wsse:Security></s:Header><s:Body><ps:RequestMultipleSecurityTokens Id=\"RSTS\">{tokens}</ps:RequestMultipleSecurityTokens></s:Body></s:Envelope>",
        escape(email),
        escape(password)
    )
}

/// Ask the token service at `http` for `addresses`: `Ok(Err((status, body)))` when no token
/// came back (a fault), `Err` when there was no HTTP answer at all.
pub async fn tokens(
    http: SocketAddr,
    form: Form,
    email: &str,
    password: &str,
    addresses: &[(&str, &str)],
) -> anyhow::Result<Result<Vec<Token>, (u16, String)>> {
    let body = request(form, email, password, addresses);
    let resp = crate::http::post(
        http,
        form.path(),
        &[("Content-Type", form.content_type())],
        body.as_bytes(),
    )
    .await?;
    let text = String::from_utf8_lossy(&resp.body).into_owned();
    let tokens = parse(&text);
    if resp.status != 200 || tokens.is_empty() {
        return Ok(Err((resp.status, text)));
    }
    Ok(Ok(tokens))
}

/// The tokens of a `RequestSecurityTokenResponseCollection`, by local names.
pub fn parse(xml: &str) -> Vec<Token> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut out = Vec::new();
    let mut current: Option<Token> = None;
    let mut path: Vec<String> = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let name = e.local_name().as_ref().to_owned();
                if name == "RequestSecurityTokenResponse" {
                    current = Some(Token {
                        address: String::new(),
                        ticket: String::new(),
                        secret: None,
                    });
                }
                path.push(name);
            }
            Ok(Event::End(e)) => {
                path.pop();
                if e.local_name().as_ref() == "RequestSecurityTokenResponse"
                    && let Some(t) = current.take()
                {
                    out.push(t);
                }
            }
            Ok(Event::Text(t)) => {
                let (Some(token), Some(element)) = (current.as_mut(), path.last()) else {
                    continue;
                };
                // Entity references come as their own events: text arrives in pieces.
                let text: &str = &t;
                match element.as_str() {
                    "Address" => token.address.push_str(text),
                    "BinarySecurityToken" => token.ticket.push_str(text),
                    "BinarySecret" => {
                        token.secret = base64::engine::general_purpose::STANDARD
                            .decode(text.trim())
                            .ok();
                    }
                    _ => {}
                }
            }
            Ok(Event::GeneralRef(r)) => {
                // `&amp;` inside the ticket text arrives as its own event.
                if let (Some(token), Some(element)) = (current.as_mut(), path.last())
                    && element == "BinarySecurityToken"
                {
                    let name: &str = &r;
                    if let Ok(s) = quick_xml::escape::unescape(&format!("&{name};")) {
                        token.ticket.push_str(&s);
                    }
                }
            }
            Ok(Event::Eof) | Err(_) => return out,
            _ => {}
        }
    }
}
