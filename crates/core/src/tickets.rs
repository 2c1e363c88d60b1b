//! Signed tickets: the Passport ticket a client presents to the NS (`USR TWN S`), and the
//! switchboard cookie (`XFR SB`/`RNG` → `USR`/`ANS`). Both are signed with one key — the
//! ticket as a JWT (HS256, with a key id for rotation), the cookie as a compact HMAC
//! token — so a gateway or shard verifies them without a lookup.

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

/// What a switchboard cookie grants its user: a session, as caller or invitee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SbGrant {
    /// The session: a new one the caller opens (XFR), or the one the invitee answers (RNG).
    pub sid: u32,
    /// true for an invitee's cookie (only good for ANS).
    pub answer: bool,
}

/// What a Passport token is good for: the services WLM-era clients ask the token service
/// (`RST.srf`) for, by the address they name. Each kind is its own JWT audience, so a token
/// issued for the storage service does not sign anyone in to the NS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// `messengerclear.live.com`: the NS sign-in ticket of `USR SSO`, with a binary secret.
    Messenger,
    /// `messenger.msn.com` and Passport 1.4 (`login2.srf`): `USR TWN`, RSI, the profile's
    /// `MSPAuth`.
    Web,
    /// `contacts.msn.com`: ABService and SharingService.
    Contacts,
    /// `storage.msn.com`: the storage service and display pictures.
    Storage,
    /// `messengersecure.live.com`: sending offline messages.
    Oim,
    /// Anything else a client asks for (`spaces.live.com`, `sup.live.com`, …): issued so
    /// the client is content, accepted by nothing.
    Other,
}

impl Service {
    /// The service a token-service request names by its `AppliesTo` address.
    pub fn for_address(address: &str) -> Service {
        match address.trim().to_ascii_lowercase().as_str() {
            "messengerclear.live.com" => Service::Messenger,
            "messenger.msn.com" => Service::Web,
            "contacts.msn.com" => Service::Contacts,
            "storage.msn.com" => Service::Storage,
            "messengersecure.live.com" => Service::Oim,
            _ => Service::Other,
        }
    }

    /// The JWT audience. `Web` keeps the audience Passport 1.4 tickets always had.
    fn audience(self) -> &'static str {
        match self {
            Service::Messenger => "butterfly-msgr",
            Service::Web => AUD_PASSPORT,
            Service::Contacts => "butterfly-ab",
            Service::Storage => "butterfly-storage",
            Service::Oim => "butterfly-oim",
            Service::Other => "butterfly-other",
        }
    }
}

/// The ticket port.
pub trait Tickets: Send + Sync + 'static {
    /// A Passport 1.4 ticket (`login2.srf`): [`Service::Web`].
    fn issue_passport(&self, user: UserId, email: &Email) -> String {
        self.issue_service(user, email, Service::Web)
    }
    /// Check a ticket presented to the NS: [`Service::Web`] or [`Service::Messenger`]
    /// (WLM 8 sends either in `USR TWN S`).
    fn verify_passport(&self, token: &str) -> Result<PassportClaims, TicketError> {
        self.verify_service(token, &[Service::Web, Service::Messenger])
    }
    /// A token for one service, as the token service issues them.
    fn issue_service(&self, user: UserId, email: &Email, service: Service) -> String;
    /// Check a token issued for one of `accepted`.
    fn verify_service(
        &self,
        token: &str,
        accepted: &[Service],
    ) -> Result<PassportClaims, TicketError>;
    /// The binary secret (24 bytes) that goes with `token`: the key of the `USR SSO` MBI
    /// proof. Derived from the token with the server's key, so Passport hands it out and
    /// the NS recomputes it without sharing any state.
    fn binary_secret(&self, token: &str) -> [u8; 24];
    /// The signature of a circle ticket's `data` (MSNP18, `USR SHA A`), base64.
    fn circle_signature(&self, data: &str) -> String;
    /// The OIM lock-key challenge of `user` on `day` (days since the Unix epoch, UTC): ten
    /// decimal digits derived with the server's key, so every addressbook process asks
    /// the same without shared state (spec §5.2).
    fn oim_lock_challenge(&self, user: UserId, day: u64) -> String;
    /// A short-lived switchboard cookie for `user`, good only at the shard that advertises
    /// `shard` (its `host:port`).
    fn issue_sb(&self, user: &Email, grant: SbGrant, shard: &str) -> String;
    /// Check a cookie presented by `user` (the name on the USR/ANS line) to `shard`.
    fn verify_sb(&self, cookie: &str, user: &Email, shard: &str) -> Result<SbGrant, TicketError>;
}

const AUD_PASSPORT: &str = "butterfly-passport";
const AUD_SB: &str = "butterfly-sb";

/// Passport tickets as JWTs, switchboard cookies as compact HMAC tokens, one key.
///
/// Switchboard cookies stay short (`sid.expiry.role.mac`, ~45 characters) like the
/// official `17262740.1050826919.32308`: MSN 1.x–4.x clients date from before tokens of
/// hundreds of characters, and the switchboard reads the user's name and capabilities
/// from the bus rather than from the cookie.
pub struct JwtTickets {
    kid: String,
    mac_key: Vec<u8>,
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
            mac_key: secret.to_vec(),
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

    /// 96 bits of HMAC-SHA256 over the cookie's fields, the user and the shard, as hex.
    /// The shard is in the MAC, not in the cookie: the shard checking it knows its own
    /// address, and the cookie stays short.
    fn sb_mac(&self, user: &Email, sid: u32, exp: u64, role: char, shard: &str) -> String {
        let text = format!("{AUD_SB}\n{user}\n{sid}\n{exp}\n{role}\n{shard}");
        hex::encode(&self.mac(&[text.as_bytes()])[..12])
    }

    /// HMAC-SHA256 with the ticket key over `parts`. Each use starts its parts with its
    /// own label, so one use's MAC is never valid as another's.
    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.mac_key)
            .expect("HMAC takes any key length");
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
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
        audiences: &[&str],
    ) -> Result<T, TicketError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(audiences);
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
    fn issue_service(&self, user: UserId, email: &Email, service: Service) -> String {
        self.encode(&PassportClaims {
            sub: email.clone(),
            uid: user.0,
            aud: service.audience().into(),
            exp: expiry(self.passport_ttl),
        })
    }

    fn verify_service(
        &self,
        token: &str,
        accepted: &[Service],
    ) -> Result<PassportClaims, TicketError> {
        if accepted.is_empty() {
            return Err(TicketError::Invalid);
        }
        let audiences: Vec<&str> = accepted.iter().map(|s| s.audience()).collect();
        self.decode(token, &audiences)
    }

    fn binary_secret(&self, token: &str) -> [u8; 24] {
        let mut secret = [0u8; 24];
        secret.copy_from_slice(&self.mac(&[b"mbi\0", token.as_bytes()])[..24]);
        secret
    }

    fn circle_signature(&self, data: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(self.mac(&[b"circle\0", data.as_bytes()]))
    }

    fn oim_lock_challenge(&self, user: UserId, day: u64) -> String {
        let digest = self.mac(&[b"oim-lock\0", &user.0.to_be_bytes(), &day.to_be_bytes()]);
        let mut n = [0u8; 8];
        n.copy_from_slice(&digest[..8]);
        // Ten digits, never with a leading zero (clients hash the text).
        format!("{}", 1_000_000_000 + u64::from_be_bytes(n) % 9_000_000_000)
    }

    fn issue_sb(&self, user: &Email, grant: SbGrant, shard: &str) -> String {
        let exp = expiry(self.sb_ttl);
        let role = if grant.answer { 'A' } else { 'C' };
        let mac = self.sb_mac(user, grant.sid, exp, role, shard);
        format!("{}.{exp}.{role}.{mac}", grant.sid)
    }

    fn verify_sb(&self, cookie: &str, user: &Email, shard: &str) -> Result<SbGrant, TicketError> {
        let mut parts = cookie.split('.');
        let (Some(sid), Some(exp), Some(role), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TicketError::Invalid);
        };
        let (Ok(sid), Ok(exp)) = (sid.parse::<u32>(), exp.parse::<u64>()) else {
            return Err(TicketError::Invalid);
        };
        let (answer, role) = match role {
            "A" => (true, 'A'),
            "C" => (false, 'C'),
            _ => return Err(TicketError::Invalid),
        };
        let expected = self.sb_mac(user, sid, exp, role, shard);
        if !crate::account::constant_time_eq(expected.as_bytes(), mac.as_bytes()) {
            return Err(TicketError::Invalid);
        }
        if exp < expiry(Duration::ZERO) {
            return Err(TicketError::Expired);
        }
        Ok(SbGrant { sid, answer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARD: &str = "sb1.example.com:1864";

    #[test]
    fn switchboard_cookies_are_short_and_bound_to_user_session_and_role() {
        let t = JwtTickets::new("k1", b"0123456789abcdef0123456789abcdef");
        let alice = Email::parse("alice@example.com").unwrap();
        let bob = Email::parse("bob@example.com").unwrap();
        let grant = SbGrant {
            sid: 11752013,
            answer: true,
        };
        let cookie = t.issue_sb(&alice, grant, SHARD);
        assert!(cookie.len() <= 48 && !cookie.contains(' '), "{cookie}");
        assert_eq!(t.verify_sb(&cookie, &alice, SHARD), Ok(grant));
        assert_eq!(t.verify_sb(&cookie, &bob, SHARD), Err(TicketError::Invalid));
        // A cookie is good only at the shard it was minted for.
        assert_eq!(
            t.verify_sb(&cookie, &alice, "sb2.example.com:1864"),
            Err(TicketError::Invalid)
        );
        // Changing the session or the role breaks the MAC.
        let forged_sid = cookie.replacen("11752013", "11752014", 1);
        assert_eq!(
            t.verify_sb(&forged_sid, &alice, SHARD),
            Err(TicketError::Invalid)
        );
        let forged_role = cookie.replace(".A.", ".C.");
        assert_eq!(
            t.verify_sb(&forged_role, &alice, SHARD),
            Err(TicketError::Invalid)
        );
        let other_key = JwtTickets::new("k2", b"another key another key another!");
        assert_eq!(
            other_key.verify_sb(&cookie, &alice, SHARD),
            Err(TicketError::Invalid)
        );
        for junk in ["", "1.2.3", "a.b.C.d", "1.2.X.00", "1.2.C.00.extra"] {
            assert_eq!(
                t.verify_sb(junk, &alice, SHARD),
                Err(TicketError::Invalid),
                "{junk}"
            );
        }
        let expired = JwtTickets::new("k1", b"0123456789abcdef0123456789abcdef")
            .with_ttls(Duration::ZERO, Duration::ZERO);
        let old = expired.issue_sb(&alice, grant, SHARD);
        // Issued with a zero lifetime: valid through the current second only.
        let parts: Vec<&str> = old.split('.').collect();
        let past = format!(
            "{}.{}.{}.{}",
            parts[0],
            1,
            parts[2],
            expired.sb_mac(&alice, grant.sid, 1, 'A', SHARD)
        );
        assert_eq!(
            expired.verify_sb(&past, &alice, SHARD),
            Err(TicketError::Expired)
        );
    }

    #[test]
    fn service_tokens_are_good_only_for_their_services() {
        let t = JwtTickets::new("k1", b"0123456789abcdef0123456789abcdef");
        let email = Email::parse("a@b.com").unwrap();
        let msgr = t.issue_service(UserId(7), &email, Service::Messenger);
        let ab = t.issue_service(UserId(7), &email, Service::Contacts);
        // The NS takes the messenger and the web ticket, nothing else.
        assert_eq!(t.verify_passport(&msgr).unwrap().uid, 7);
        assert_eq!(t.verify_passport(&ab), Err(TicketError::Invalid));
        assert_eq!(
            t.verify_service(&ab, &[Service::Contacts]).unwrap().sub,
            email
        );
        assert_eq!(
            t.verify_service(&msgr, &[Service::Contacts, Service::Storage]),
            Err(TicketError::Invalid)
        );
        assert_eq!(t.verify_service(&ab, &[]), Err(TicketError::Invalid));
        let other = t.issue_service(UserId(7), &email, Service::Other);
        for s in [
            Service::Messenger,
            Service::Web,
            Service::Contacts,
            Service::Storage,
            Service::Oim,
        ] {
            assert_eq!(t.verify_service(&other, &[s]), Err(TicketError::Invalid));
        }
        assert_eq!(
            Service::for_address(" MessengerClear.Live.com"),
            Service::Messenger
        );
        assert_eq!(
            Service::for_address("http://Passport.NET/tb"),
            Service::Other
        );
    }

    #[test]
    fn oim_lock_challenges_are_ten_digits_per_user_and_day() {
        let t = JwtTickets::new("k", b"secret");
        let c = t.oim_lock_challenge(UserId(1), 20_000);
        assert_eq!(c.len(), 10);
        assert!(c.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(c, t.oim_lock_challenge(UserId(1), 20_000));
        assert_ne!(c, t.oim_lock_challenge(UserId(2), 20_000));
        assert_ne!(c, t.oim_lock_challenge(UserId(1), 20_001));
    }

    #[test]
    fn the_binary_secret_follows_the_token_and_the_key() {
        let t = JwtTickets::new("k1", b"0123456789abcdef0123456789abcdef");
        let email = Email::parse("a@b.com").unwrap();
        let one = t.issue_service(UserId(7), &email, Service::Messenger);
        let two = t.issue_service(UserId(8), &email, Service::Messenger);
        assert_eq!(t.binary_secret(&one), t.binary_secret(&one));
        assert_ne!(t.binary_secret(&one), t.binary_secret(&two));
        let other = JwtTickets::new("k1", b"another key another key another!");
        assert_ne!(t.binary_secret(&one), other.binary_secret(&one));
    }

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
        assert_eq!(t.verify_sb(&tok, &email, SHARD), Err(TicketError::Invalid));
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
