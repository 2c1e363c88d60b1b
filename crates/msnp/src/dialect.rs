//! The MSNP dialects: which versions exist, which this server speaks, and version
//! negotiation. Per-dialect line shapes live next to each reply in [`crate::reply`].

/// Lowest and highest dialect known to the protocol crate.
pub const MIN: u8 = 2;
pub const MAX: u8 = 18;

/// Authentication family of a dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// `USR MD5` (MSNP2–7).
    Md5,
    /// `USR TWN`, Passport 1.4 or RST ticket (MSNP8–14).
    Twn,
    /// `USR SSO` with the MBI blob (MSNP15+).
    Sso,
}

pub fn auth_kind(d: u8) -> AuthKind {
    match d {
        ..=7 => AuthKind::Md5,
        8..=14 => AuthKind::Twn,
        _ => AuthKind::Sso,
    }
}

/// Parse `MSNP12` → 12.
pub fn parse(token: &str) -> Option<u8> {
    let n: u8 = token.strip_prefix("MSNP")?.parse().ok()?;
    (MIN..=MAX).contains(&n).then_some(n)
}

/// The highest dialect offered by the client that the server enables, if any.
pub fn negotiate<'a>(
    offered: impl IntoIterator<Item = &'a str>,
    enabled: std::ops::RangeInclusive<u8>,
) -> Option<u8> {
    offered
        .into_iter()
        .filter_map(parse)
        .filter(|d| enabled.contains(d))
        .max()
}

/// Whether CHL/QRY challenges exist in this dialect.
pub fn has_challenges(d: u8) -> bool {
    d >= 6
}

/// Whether QNG carries the seconds until the next expected PNG.
pub fn qng_has_seconds(d: u8) -> bool {
    d >= 9
}

/// MSNP10+: contact GUIDs, `ADC`, `PRP MFN`, `SYN` with two timestamps.
pub fn uses_guids(d: u8) -> bool {
    d >= 10
}

/// MSNP7+: contact groups.
pub fn has_groups(d: u8) -> bool {
    d >= 7
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_highest_common() {
        assert_eq!(negotiate(["MSNP12", "MSNP11", "CVR0"], 2..=12), Some(12));
        assert_eq!(
            negotiate(["MSNP15", "MSNP14", "MSNP13", "CVR0"], 2..=12),
            None
        );
        assert_eq!(negotiate(["MSNP9", "MSNP8", "CVR0"], 2..=12), Some(9));
        assert_eq!(negotiate(["MSNP99", "MSNPx", ""], 2..=12), None);
    }
}
