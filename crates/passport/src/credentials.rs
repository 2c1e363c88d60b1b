//! Reading the credentials out of a Passport 1.4 sign-in request.
//!
//! The client sends one header (LOGIN.md §2.2, MS-PASS §2.2.7):
//!
//! ```text
//! Authorization: Passport1.4 OrgVerb=GET,OrgURL=http%3A%2F%2Fmessenger%2Emsn%2Ecom,sign-in=alice%40example.com,pwd=p%40ss,<policy string from USR TWN S>
//! ```
//!
//! Parameters are separated by `,` and the order differs between clients (MS-PASS puts
//! `sign-in` first), so the header is read as a bag of `key=value` items: split on `,`,
//! cut each item at its first `=`, compare keys case-insensitively, first occurrence wins.
//! Everything except `sign-in` and `pwd` (OrgVerb, OrgURL, the NS policy string,
//! elapsed-time, …) is ignored.
//!
//! Encoding: clients percent-encode both values (a `,` in a password arrives as `%2C`).
//! We percent-decode; `+` stays `+` (it is not form encoding). A client that sends a value
//! unencoded still works, because decoding leaves text without `%XX` sequences unchanged,
//! and for a password that does contain `%XX` the raw text is tried as a second candidate.
//! A raw `,` cannot be told apart from the parameter separator: it ends the value, so such
//! a password simply fails to verify (real clients encode it, as MS-PASS requires).

use butterfly_core::Email;
use butterfly_core::account::InvalidEmail;
use percent_encoding::percent_decode_str;

/// The authentication scheme name, compared case-insensitively.
const SCHEME: &str = "Passport1.4";

/// Longest password accepted (what `PasswordCost::hash` allows), in characters.
pub(crate) const MAX_PASSWORD_CHARS: usize = 128;

/// What a sign-in request claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) sign_in: Email,
    /// One or two spellings of the password to verify, most likely first: the
    /// percent-decoded value, then the raw value when that differs (see module docs).
    pub(crate) passwords: Vec<String>,
}

/// Why a header was not a usable sign-in request (for logs only; the client gets the
/// same 401 whatever the reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    NotUtf8,
    NotPassport,
    NoSignIn,
    NoPassword,
    BadSignIn,
    BadPassword,
}

impl Malformed {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Malformed::NotUtf8 => "not-utf8",
            Malformed::NotPassport => "not-passport1.4",
            Malformed::NoSignIn => "no-sign-in",
            Malformed::NoPassword => "no-pwd",
            Malformed::BadSignIn => "bad-sign-in",
            Malformed::BadPassword => "bad-pwd",
        }
    }
}

/// Parse an `Authorization` header value. The caller bounds its length.
pub(crate) fn parse(value: &[u8]) -> Result<Credentials, Malformed> {
    let value = std::str::from_utf8(value).map_err(|_| Malformed::NotUtf8)?;
    let params = strip_scheme(value.trim()).ok_or(Malformed::NotPassport)?;

    let mut sign_in = None;
    let mut pwd = None;
    for item in params.split(',') {
        let Some((key, val)) = item.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.eq_ignore_ascii_case("sign-in") {
            sign_in.get_or_insert(val);
        } else if key.eq_ignore_ascii_case("pwd") {
            pwd.get_or_insert(val);
        }
    }

    let sign_in = sign_in.ok_or(Malformed::NoSignIn)?;
    let pwd = pwd.ok_or(Malformed::NoPassword)?;
    let sign_in = decode_email(sign_in).map_err(|_| Malformed::BadSignIn)?;
    let passwords = password_candidates(pwd);
    if passwords.is_empty() {
        return Err(Malformed::BadPassword);
    }
    Ok(Credentials { sign_in, passwords })
}

/// `Passport1.4 rest` → `rest`. The scheme must be a whole token.
fn strip_scheme(value: &str) -> Option<&str> {
    let head = value.get(..SCHEME.len())?;
    if !head.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let rest = &value[SCHEME.len()..];
    match rest.chars().next() {
        None => Some(rest),
        Some(c) if c.is_ascii_whitespace() || c == ',' => Some(rest.trim_start()),
        Some(_) => None,
    }
}

fn decode_email(raw: &str) -> Result<Email, InvalidEmail> {
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| InvalidEmail(String::new()))?;
    Email::parse(&decoded)
}

/// The spellings of the password worth verifying, each 1..=128 characters.
fn password_candidates(raw: &str) -> Vec<String> {
    let usable = |p: &str| !p.is_empty() && p.chars().count() <= MAX_PASSWORD_CHARS;
    let mut out = Vec::with_capacity(2);
    // Not UTF-8 after decoding (e.g. `%E9` from a Latin-1 client): only the raw text.
    if let Ok(decoded) = percent_decode_str(raw).decode_utf8()
        && usable(&decoded)
    {
        out.push(decoded.into_owned());
    }
    if usable(raw) && out.first().is_none_or(|d| d != raw) {
        out.push(raw.to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(header: &str) -> Result<(String, Vec<String>), Malformed> {
        parse(header.as_bytes()).map(|c| (c.sign_in.as_str().to_owned(), c.passwords))
    }

    #[test]
    fn msn_client_header() {
        let h = "Passport1.4 OrgVerb=GET,OrgURL=http%3A%2F%2Fmessenger%2Emsn%2Ecom,\
                 sign-in=Alice%40Example.com,pwd=p%40ss%2Cw%25rd,lc=1033,id=507,tw=40,fs=1,\
                 ru=http%3A%2F%2Fmessenger%2Emsn%2Ecom,ct=1062764229,kpp=1,kv=5,ver=2.1.0173.1,\
                 tpf=43f8a4c8ed940c04e3740be46c4d1619";
        assert_eq!(
            creds(h),
            Ok((
                "alice@example.com".into(),
                vec!["p@ss,w%rd".into(), "p%40ss%2Cw%25rd".into()]
            ))
        );
    }

    #[test]
    fn ms_pass_order_spaces_and_case() {
        let h =
            "passport1.4   Sign-In=bob%40x.com, PWD=hunter2, elapsed-time=0, OrgVerb=GET,param1";
        assert_eq!(creds(h), Ok(("bob@x.com".into(), vec!["hunter2".into()])));
    }

    #[test]
    fn unencoded_values() {
        let h = "Passport1.4 OrgVerb=GET,sign-in=bob@x.com,pwd=a@b%zz+c,ct=1";
        // `%zz` is not an escape and `+` is not a space: decoding is the identity.
        assert_eq!(creds(h), Ok(("bob@x.com".into(), vec!["a@b%zz+c".into()])));
    }

    #[test]
    fn raw_comma_ends_the_password() {
        let h = "Passport1.4 sign-in=bob@x.com,pwd=ab,cd,ct=1";
        assert_eq!(creds(h), Ok(("bob@x.com".into(), vec!["ab".into()])));
    }

    #[test]
    fn value_keeps_later_equals_signs() {
        let h = "Passport1.4 sign-in=bob@x.com,pwd=a=b==";
        assert_eq!(creds(h), Ok(("bob@x.com".into(), vec!["a=b==".into()])));
    }

    #[test]
    fn first_occurrence_wins() {
        let h = "Passport1.4 sign-in=a@x.com,pwd=one,sign-in=b@x.com,pwd=two";
        assert_eq!(creds(h), Ok(("a@x.com".into(), vec!["one".into()])));
    }

    #[test]
    fn non_utf8_decoded_password_falls_back_to_raw() {
        let h = "Passport1.4 sign-in=a@x.com,pwd=caf%E9";
        assert_eq!(creds(h), Ok(("a@x.com".into(), vec!["caf%E9".into()])));
    }

    #[test]
    fn garbage() {
        let cases: &[(&[u8], Malformed)] = &[
            (b"", Malformed::NotPassport),
            (b"Basic YWxhZGRpbjpvcGVuc2VzYW1l", Malformed::NotPassport),
            (
                b"Passport1.40 sign-in=a@x.com,pwd=x",
                Malformed::NotPassport,
            ),
            (b"Passport1.4", Malformed::NoSignIn),
            (b"Passport1.4 ,,,===,", Malformed::NoSignIn),
            (b"Passport1.4 sign-in=a@x.com", Malformed::NoPassword),
            (b"Passport1.4 sign-in=a@x.com,pwd=", Malformed::BadPassword),
            (
                b"Passport1.4 sign-in=not-an-email,pwd=x",
                Malformed::BadSignIn,
            ),
            (
                b"Passport1.4 sign-in=a%40x.com%0D%0A,pwd=x",
                Malformed::BadSignIn,
            ),
            (
                b"Passport1.4 sign-in=%FF%40x.com,pwd=x",
                Malformed::BadSignIn,
            ),
            (b"Passport1.4 sign-in=a@x.com,pwd=\xff", Malformed::NotUtf8),
        ];
        for (h, want) in cases {
            assert_eq!(
                parse(h).map(|_| ()),
                Err(*want),
                "{}",
                String::from_utf8_lossy(h)
            );
        }
        let long = format!("Passport1.4 sign-in=a@x.com,pwd={}", "x".repeat(129));
        assert_eq!(creds(&long), Err(Malformed::BadPassword));
    }
}
