//! Accounts: the sign-in name, credentials, and the password rules.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

/// Database id of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(pub i64);

/// A sign-in name (`alice@example.com`), normalised to lower case.
///
/// Parse, don't validate: every `Email` in the system has passed [`Email::parse`], so it
/// can be written into a command line as one token.
///
/// Shared, not copied: a session's roster, its watch list and the bus's fan-out maps all
/// hold the addresses of the same contacts, so a clone is a reference count (one heap
/// string per address read, not one per place it is kept).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(std::sync::Arc<str>);

/// Longest sign-in name we accept; Passport allowed 129 characters.
pub const MAX_EMAIL_LEN: usize = 129;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid sign-in name: {0:?}")]
pub struct InvalidEmail(pub String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, InvalidEmail> {
        let bad = || InvalidEmail(s.chars().take(MAX_EMAIL_LEN).collect());
        if s.is_empty() || s.len() > MAX_EMAIL_LEN {
            return Err(bad());
        }
        let (local, domain) = s.split_once('@').ok_or_else(bad)?;
        let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-+".contains(c);
        if local.is_empty()
            || domain.len() < 3
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || !local.chars().all(ok_char)
            || !domain.chars().all(ok_char)
        {
            return Err(bad());
        }
        Ok(Email(s.to_ascii_lowercase().into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Email {
    type Error = InvalidEmail;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Email::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0.to_string()
    }
}

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: UserId,
    pub email: Email,
    pub friendly_name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Only for accounts that opted in to MSNP2–7 sign-in (`--legacy-md5`).
    pub legacy_md5: Option<LegacyMd5>,
}

/// The MSNP2–7 secret: the server sends `salt` in `USR MD5 S` and the client answers with
/// `md5(salt || password)`. The salt is fixed per account, so this hash is a password
/// equivalent — weak by nature, which is why an account has to opt in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyMd5 {
    pub salt: String,
    pub hash: String,
}

impl LegacyMd5 {
    pub fn new(password: &str) -> Self {
        let salt = format!("{}.{}", rand::random::<u32>(), rand::random::<u32>());
        let hash = hex::encode(Md5::digest(format!("{salt}{password}").as_bytes()));
        LegacyMd5 { salt, hash }
    }

    pub fn verify(&self, answer: &str) -> bool {
        constant_time_eq(self.hash.as_bytes(), answer.to_ascii_lowercase().as_bytes())
    }
}

/// New-account input, checked.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub email: Email,
    pub friendly_name: String,
    pub password_hash: String,
    pub legacy_md5: Option<LegacyMd5>,
}

/// argon2id cost parameters (memory in KiB, iterations, lanes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordCost {
    /// OWASP's second argon2id recommendation: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        PasswordCost {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be 1 to 128 characters")]
    Length,
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
}

impl PasswordCost {
    fn argon2(&self) -> Result<argon2::Argon2<'static>, PasswordError> {
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| PasswordError::Params(e.to_string()))?;
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }

    /// Hash a password to a PHC string. CPU-heavy: call it off the async runtime.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        if password.is_empty() || password.chars().count() > 128 {
            return Err(PasswordError::Length);
        }
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        self.argon2()?
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Params(e.to_string()))
    }
}

/// Check a password against a stored PHC string (its own parameters are used).
/// CPU-heavy: call it off the async runtime.
///
/// argon2's working memory (19 MiB at the default cost) comes from a small pool instead
/// of a fresh allocation per check. Fresh allocations of that size, freed again, make
/// glibc raise its mmap threshold and then serve them from the heap, which fragments it:
/// a server that had verified a few thousand sign-ins held hundreds of megabytes it did
/// not use (docs/BENCHMARKS.md). With the pool, the memory is bounded by the number of
/// checks that run at once.
pub fn verify_password(phc: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        argon2::Algorithm::try_from(parsed.algorithm),
        argon2::Params::try_from(&parsed),
    ) else {
        return false;
    };
    let version = match parsed.version.map(argon2::Version::try_from) {
        None => argon2::Version::V0x13,
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let expected = expected.as_bytes();
    let mut out = vec![0u8; expected.len()];
    let blocks = params.block_count();
    let mut memory = memory_pool::take(blocks);
    let computed = argon2::Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..blocks])
        .is_ok();
    memory_pool::give_back(memory);
    computed && constant_time_eq(&out, expected)
}

/// Reusable argon2 working memory, at most one buffer per core kept.
mod memory_pool {
    use std::sync::{Mutex, PoisonError};

    use argon2::Block;

    static POOL: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

    pub(super) fn take(blocks: usize) -> Vec<Block> {
        let reused = {
            let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
            pool.iter()
                .position(|b| b.len() >= blocks)
                .map(|i| pool.swap_remove(i))
        };
        // Every block is written before it is read, so old contents do not matter.
        reused.unwrap_or_else(|| vec![Block::default(); blocks])
    }

    pub(super) fn give_back(buffer: Vec<Block>) {
        let keep = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < keep {
            pool.push(buffer);
        }
    }
}

/// Compare without an early exit, so timing does not reveal the matching prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Longest friendly name, in characters (what MSN allowed).
pub const MAX_FRIENDLY_LEN: usize = 387;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_parsing() {
        assert_eq!(
            Email::parse("Alice@Example.COM").unwrap().as_str(),
            "alice@example.com"
        );
        for bad in [
            "",
            "alice",
            "@x.com",
            "a@b",
            "a b@x.com",
            "a@x.com\r\n",
            "a@.com",
            "a@x.com.",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@x.com", "a".repeat(200))).is_err());
    }

    #[test]
    fn password_round_trip() {
        let cost = PasswordCost {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let phc = cost.hash("hunter2").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password(&phc, "hunter2"));
        assert!(!verify_password(&phc, "hunter3"));
        assert!(!verify_password("garbage", "hunter2"));
        assert!(cost.hash("").is_err());
    }

    #[test]
    fn pooled_memory_serves_any_cost_in_any_order() {
        let big = PasswordCost {
            memory_kib: 512,
            iterations: 1,
            parallelism: 1,
        };
        let small = PasswordCost {
            memory_kib: 64,
            iterations: 2,
            parallelism: 1,
        };
        let (b, s) = (big.hash("pw-big").unwrap(), small.hash("pw-small").unwrap());
        for _ in 0..3 {
            assert!(verify_password(&b, "pw-big"));
            assert!(verify_password(&s, "pw-small"));
            assert!(!verify_password(&b, "pw-small"));
            assert!(!verify_password(&s, "pw-big"));
        }
        // A hash made by another argon2 implementation's defaults (argon2id v19).
        let other = argon2::password_hash::PasswordHasher::hash_password(
            &argon2::Argon2::default(),
            b"x",
            &SaltString::encode_b64(b"0123456789abcdef").unwrap(),
        )
        .unwrap()
        .to_string();
        assert!(verify_password(&other, "x"));
    }

    #[test]
    fn legacy_md5_matches_client_hash() {
        let secret = LegacyMd5::new("password");
        let client = hex::encode(Md5::digest(format!("{}password", secret.salt).as_bytes()));
        assert!(secret.verify(&client));
        assert!(secret.verify(&client.to_uppercase()));
        assert!(!secret.verify("7f919fab309532df353c901430df36fa"));
    }
}
