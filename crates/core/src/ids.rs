//! The numeric identities WLM-era clients see for an account, derived from its user id so
//! that nothing needs storing: the CID (address book, storage, `NOT` payloads), the PUID
//! (the token service, the profile message's `MemberIdHigh`/`MemberIdLow`) and the
//! membership ids of the sharing service.
//!
//! Both derivations multiply by an odd constant modulo 2^64, which is a bijection: ids
//! never collide, and are never 0 for a real account (user ids start at 1).

use crate::account::UserId;

/// Odd multipliers (from the golden ratio and from SplitMix64), so consecutive accounts get
/// unrelated-looking numbers. Not secret: changing them would change every client's view.
const K_CID: u64 = 0x9E37_79B9_7F4A_7C15;
const K_PUID: u64 = 0xBF58_476D_1CE4_E5B9;

/// The account's CID: a signed 64-bit number, written in decimal in SOAP and as 16
/// lower-case hex digits (two's complement) in storage resource ids.
pub fn cid(user: UserId) -> i64 {
    (user.0 as u64).wrapping_mul(K_CID) as i64
}

/// The CID as storage resource ids and the token service write it: 16 lower-case hex digits.
pub fn cid_hex(user: UserId) -> String {
    format!("{:016x}", cid(user) as u64)
}

/// The account's PUID (Passport unique id).
pub fn puid(user: UserId) -> u64 {
    (user.0 as u64).wrapping_mul(K_PUID)
}

/// The user a CID names (the inverse of [`cid`]: multiplication by the inverse of the odd
/// constant modulo 2^64). `None` for a CID no real account has.
pub fn user_of_cid(cid: i64) -> Option<UserId> {
    // Newton's iteration doubles the correct low bits each round: 5 rounds reach 64.
    let mut inverse = K_CID;
    for _ in 0..5 {
        inverse = inverse.wrapping_mul(2u64.wrapping_sub(K_CID.wrapping_mul(inverse)));
    }
    let id = (cid as u64).wrapping_mul(inverse) as i64;
    (id > 0).then_some(UserId(id))
}

/// A CID from its 16 hex digits (storage resource ids, picture URLs).
pub fn user_of_cid_hex(hex: &str) -> Option<UserId> {
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
        .and_then(|c| user_of_cid(c as i64))
}

/// The PUID as the token service writes it: 16 upper-case hex digits.
pub fn puid_hex(user: UserId) -> String {
    format!("{:016X}", puid(user))
}

/// The PUID's high and low 32 bits (`MemberIdHigh`, `MemberIdLow`).
pub fn puid_halves(user: UserId) -> (u32, u32) {
    let p = puid(user);
    ((p >> 32) as u32, p as u32)
}

/// A membership's role in the sharing service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Allow = 1,
    Block = 2,
    Reverse = 3,
    Pending = 4,
}

/// A membership id: clients parse it as a decimal `Int32` (MSNPSharp `int.Parse`), so it
/// packs the member's user id and the role into 31 bits. `None` past about 268 million
/// accounts.
pub fn membership_id(member: UserId, role: Role) -> Option<i32> {
    let id = member.0.checked_mul(8)?.checked_add(role as i64)?;
    i32::try_from(id).ok()
}

/// The member and role a [`membership_id`] names.
pub fn parse_membership_id(id: &str) -> Option<(UserId, Role)> {
    let n: i64 = id.trim().parse().ok()?;
    if n <= 0 {
        return None;
    }
    let role = match n % 8 {
        1 => Role::Allow,
        2 => Role::Block,
        3 => Role::Reverse,
        4 => Role::Pending,
        _ => return None,
    };
    Some((UserId(n / 8), role))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_stable_and_nonzero() {
        let mut seen = std::collections::HashSet::new();
        for id in 1..10_000 {
            let u = UserId(id);
            assert_ne!(cid(u), 0);
            assert!(seen.insert(cid(u)), "CID collision at {id}");
            assert_eq!(cid_hex(u).len(), 16);
            assert_eq!(puid_hex(u).len(), 16);
            let (hi, lo) = puid_halves(u);
            assert_eq!((u64::from(hi) << 32) | u64::from(lo), puid(u));
        }
        assert_eq!(cid(UserId(1)), K_CID as i64);
        for id in [1, 2, 77, 1 << 40] {
            assert_eq!(user_of_cid(cid(UserId(id))), Some(UserId(id)));
            assert_eq!(user_of_cid_hex(&cid_hex(UserId(id))), Some(UserId(id)));
        }
        assert_eq!(user_of_cid_hex("xyz"), None);
    }

    #[test]
    fn membership_ids_round_trip() {
        for role in [Role::Allow, Role::Block, Role::Reverse, Role::Pending] {
            let id = membership_id(UserId(12345), role).unwrap();
            assert_eq!(
                parse_membership_id(&id.to_string()),
                Some((UserId(12345), role))
            );
        }
        assert_eq!(
            membership_id(UserId(i64::from(i32::MAX)), Role::Allow),
            None
        );
        for junk in ["", "0", "-9", "16", "x", "8"] {
            assert_eq!(parse_membership_id(junk), None, "{junk}");
        }
    }
}
