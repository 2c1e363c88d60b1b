//! A minimal HTTP/1.1 GET and POST over a real TCP connection, and the Passport 1.4
//! exchange an MSN 6–7.5 client performs with it (nexus, then `login2.srf`); the token
//! service's (WLM) is in `rst`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one HTTP exchange may take.
pub const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` with extra headers and `Connection: close`; reads the whole response.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Response> {
    request(addr, "GET", path, headers, None).await
}

/// `POST path` with `body`, as [`get`] otherwise.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<Response> {
    request(addr, "POST", path, headers, Some(body)).await
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> anyhow::Result<Response> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(k);
        req.push_str(": ");
        req.push_str(v);
        req.push_str("\r\n");
    }
    if let Some(body) = body {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut req = req.into_bytes();
    req.extend_from_slice(body.unwrap_or_default());
    let exchange = async {
        let mut s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to http://{addr}"))?;
        s.write_all(&req).await?;
        let mut raw = Vec::with_capacity(1024);
        s.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| {
            anyhow!("{method} http://{addr}{path}: no complete answer within {TIMEOUT:?}")
        })?
        .with_context(|| format!("{method} http://{addr}{path}"))?;
    parse(&raw).with_context(|| format!("{method} http://{addr}{path}: malformed response"))
}

fn parse(raw: &[u8]) -> anyhow::Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {} bytes", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// The Passport 1.4 exchange of MSN 6–7.5: the nexus, then `login2.srf` with the
/// credentials and the policy from `USR TWN S`. Returns the `from-PP` ticket.
pub async fn passport_login(
    http_addr: SocketAddr,
    email: &str,
    password: &str,
    policy: &str,
) -> anyhow::Result<String> {
    let nexus = get(http_addr, "/rdr/pprdr.asp", &[]).await?;
    if nexus.status != 200 {
        bail!("{email}: the nexus answered HTTP {}", nexus.status);
    }
    let da_login = nexus
        .header("PassportURLs")
        .and_then(|urls| urls.split(',').find_map(|kv| kv.strip_prefix("DALogin=")))
        .ok_or_else(|| anyhow!("{email}: the nexus gave no DALogin"))?;
    let path = da_login
        .find('/')
        .map(|i| da_login[i..].to_owned())
        .ok_or_else(|| anyhow!("{email}: DALogin {da_login:?} has no path"))?;
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let auth = format!(
        "Passport1.4 OrgVerb=GET,OrgURL=http%3A%2F%2Fmessenger%2Emsn%2Ecom,sign-in={},pwd={},{policy}",
        enc(email),
        enc(password)
    );
    let resp = get(http_addr, &path, &[("Authorization", &auth)]).await?;
    if resp.status != 200 {
        bail!("{email}: {path} answered HTTP {}", resp.status);
    }
    let info = resp
        .header("Authentication-Info")
        .ok_or_else(|| anyhow!("{email}: {path} sent no Authentication-Info"))?;
    let start = info
        .find("from-PP='")
        .map(|i| i + "from-PP='".len())
        .ok_or_else(|| anyhow!("{email}: no from-PP in {info:?}"))?;
    let len = info[start..]
        .find('\'')
        .ok_or_else(|| anyhow!("{email}: unterminated from-PP in {info:?}"))?;
    Ok(info[start..start + len].to_owned())
}
