//! UTC date-times as the protocols write them, from Unix time. One place for the calendar
//! arithmetic (proleptic Gregorian, by eras of 400 years: H. Hinnant's `civil_from_days`
//! and its inverse), so the token service, the address book and the NS agree.

/// Days since 1970-01-01 → (year, month, day). Negative days are before 1970.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of the era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of the era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the year from March 1
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// (year, month, day) → days since 1970-01-01.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time in seconds, without a zone suffix.
pub fn utc_seconds(secs: i64) -> String {
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_z(secs: i64) -> String {
    format!("{}Z", utc_seconds(secs))
}

/// `YYYY-MM-DDTHH:MM:SS.fffZ` of a Unix time in milliseconds.
pub fn utc_millis_z(ms: i64) -> String {
    format!(
        "{}.{:03}Z",
        utc_seconds(ms.div_euclid(1000)),
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_match_known_ones() {
        for days in [
            -719_468, -1, 0, 1, 10_956, 11_016, 19_844, 47_541, 2_932_896,
        ] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{days}");
        }
        assert_eq!(utc_z(0), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a century's leap day) and 2024-05-01.
        assert_eq!(utc_z(951_782_400 + 3661), "2000-02-29T01:01:01Z");
        assert_eq!(utc_millis_z(1_714_557_600_123), "2024-05-01T10:00:00.123Z");
    }
}
