//! Signed tickets: the Passport ticket a client presents to the NS (`USR TWN S`), and the
//! switchboard cookie (`XFR SB`/`RNG` → `USR`/`ANS`). Both are JWTs (HS256, with a key id
//! for rotation), so a gateway or shard verifies them without a lookup.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::account::{Email, UserId};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    #[error("ticket is malformed or its signature does not verify")]
    Invalid,
    #[error("ticket has expired")]
    Expired,
}

/// What a Passport ticket proves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassportClaims {
    pub sub: Email,
    pub uid: i64,
    pub aud: String,
    pub exp: u64,
}

/// What a switchboard cookie proves: who may join which session, and how to talk to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SbClaims {
    pub sub: Email,
    /// Friendly name at the time of the XFR/RNG.
    pub name: String,
    pub caps: String,
    pub dialect: u8,
    /// The session: a new one the caller opens (XFR), or the one the invitee answers (RNG).
    pub sid: u32,
    /// true for an invitee's cookie (only good for ANS).
    pub answer: bool,
    pub aud: String,
    pub exp: u64,
}

/// The ticket port.
pub trait Tickets: Send + Sync + 'static {
    fn issue_passport(&self, user: UserId, email: &Email) -> String;
    fn verify_passport(&self, token: &str) -> Result<PassportClaims, TicketError>;
    /// `claims.exp` and `claims.aud` are filled in by the issuer.
    fn issue_sb(&self, claims: SbClaims) -> String;
    fn verify_sb(&self, token: &str) -> Result<SbClaims, TicketError>;
}

const AUD_PASSPORT: &str = "butterfly-passport";
const AUD_SB: &str = "butterfly-sb";

/// JWT tickets with one HMAC key.
pub struct JwtTickets {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    passport_ttl: Duration,
    sb_ttl: Duration,
}

impl JwtTickets {
    /// `secret` should be at least 32 random bytes; `kid` names it for rotation.
    pub fn new(kid: impl Into<String>, secret: &[u8]) -> Self {
        JwtTickets {
            kid: kid.into(),
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            passport_ttl: Duration::from_secs(24 * 3600),
            sb_ttl: Duration::from_secs(120),
        }
    }

    pub fn with_ttls(mut self, passport: Duration, sb: Duration) -> Self {
        self.passport_ttl = passport;
        self.sb_ttl = sb;
        self
    }

    fn encode<T: Serialize>(&self, claims: &T) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        // Encoding our own serialisable struct with an HMAC key cannot fail.
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .expect("HS256 encoding of plain claims")
    }

    fn decode<T: for<'de> Deserialize<'de>>(
        &self,
        token: &str,
        aud: &str,
    ) -> Result<T, TicketError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&[aud]);
        v.leeway = 0;
        jsonwebtoken::decode::<T>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TicketError::Expired,
                _ => TicketError::Invalid,
            })
    }
}

fn expiry(ttl: Duration) -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(ttl)
        .as_secs()
}

impl Tickets for JwtTickets {
    fn issue_passport(&self, user: UserId, email: &Email) -> String {
        self.encode(&PassportClaims {
            sub: email.clone(),
            uid: user.0,
            aud: AUD_PASSPORT.into(),
            exp: expiry(self.passport_ttl),
        })
    }

    fn verify_passport(&self, token: &str) -> Result<PassportClaims, TicketError> {
        self.decode(token, AUD_PASSPORT)
    }

    fn issue_sb(&self, mut claims: SbClaims) -> String {
        claims.aud = AUD_SB.into();
        claims.exp = expiry(self.sb_ttl);
        self.encode(&claims)
    }

    fn verify_sb(&self, token: &str) -> Result<SbClaims, TicketError> {
        self.decode(token, AUD_SB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passport_round_trip_and_tamper() {
        let t = JwtTickets::new("k1", b"0123456789abcdef0123456789abcdef");
        let email = Email::parse("a@b.com").unwrap();
        let tok = t.issue_passport(UserId(7), &email);
        let c = t.verify_passport(&tok).unwrap();
        assert_eq!((c.sub, c.uid), (email.clone(), 7));
        let other = JwtTickets::new("k2", b"another key another key another!");
        assert_eq!(other.verify_passport(&tok), Err(TicketError::Invalid));
        // A passport ticket is not a switchboard cookie.
        assert_eq!(t.verify_sb(&tok), Err(TicketError::Invalid));
        assert_eq!(t.verify_passport("garbage"), Err(TicketError::Invalid));
    }

    #[test]
    fn expired_ticket_is_refused() {
        let t = JwtTickets::new("k1", b"0123456789abcdef0123456789abcdef")
            .with_ttls(Duration::ZERO, Duration::ZERO);
        let mut claims: PassportClaims = PassportClaims {
            sub: Email::parse("a@b.com").unwrap(),
            uid: 1,
            aud: AUD_PASSPORT.into(),
            exp: 1,
        };
        let tok = t.encode(&claims);
        assert_eq!(t.verify_passport(&tok), Err(TicketError::Expired));
        claims.exp = u64::MAX / 2;
        assert!(t.verify_passport(&t.encode(&claims)).is_ok());
    }
}
