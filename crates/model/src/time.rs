//! Times on the wire: stored as Unix epoch milliseconds, shown as RFC 3339 UTC.

/// RFC 3339 UTC for a Unix-millisecond time (`None` when out of range).
pub fn rfc3339(ms: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// A Unix-millisecond time from RFC 3339 (`None` when it is not one).
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_survive_the_round_trip() {
        let shown = rfc3339(1_764_000_000_123).unwrap();
        assert_eq!(shown, "2025-11-24T16:00:00.123Z");
        assert_eq!(parse_rfc3339(&shown), Some(1_764_000_000_123));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(rfc3339(1_500).as_deref(), Some("1970-01-01T00:00:01.5Z"));
    }
}
