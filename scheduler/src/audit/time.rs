//! Times as the audit log keeps them: microseconds since the Unix epoch,
//! written as RFC 3339 in UTC and parsed from it.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

use super::AuditError;

/// `2026-11-03T14:05:09.123456Z`.
pub fn format_us(us: i64) -> String {
    match DateTime::<Utc>::from_timestamp_micros(us) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Micros, true),
        None => format!("{us} µs"),
    }
}

/// RFC 3339 (`2026-11-03T14:00:00Z`, any offset), a date (`2026-11-03`,
/// its midnight UTC), or an integer of microseconds since the epoch.
pub fn parse_time_us(text: &str) -> Result<i64, AuditError> {
    let t = text.trim();
    if let Ok(us) = t.parse::<i64>() {
        return Ok(us);
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.timestamp_micros());
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if let Some(midnight) = d.and_hms_opt(0, 0, 0) {
            return Ok(midnight.and_utc().timestamp_micros());
        }
    }
    Err(AuditError::Time {
        text: text.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_parse_every_form() {
        let us = 1_793_714_709_123_456;
        assert_eq!(parse_time_us(&format_us(us)).unwrap(), us);
        assert_eq!(parse_time_us("1970-01-02").unwrap(), 86_400_000_000);
        assert_eq!(parse_time_us("1970-01-01T01:00:00+01:00").unwrap(), 0);
        assert_eq!(parse_time_us(" 42 ").unwrap(), 42);
        assert!(parse_time_us("yesterday").is_err());
    }
}
