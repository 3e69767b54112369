//! Human-friendly durations such as `30m`, `1h`, `5s` or `1h30m`.

use std::time::Duration;

/// A duration string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    /// The text that was given.
    pub input: String,
    /// Why it was rejected, phrased so a user can act on it.
    pub reason: String,
}

/// The longest timeout, retry interval or delay anchor accepts: 3650 days (ten years), so
/// that every deadline computed from one fits PostgreSQL's and chrono's time ranges.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(3650 * 24 * 3600);

/// Parses a duration such as `30m`, `1h`, `5s`, `250ms` or `1h30m`.
///
/// Units follow humantime (`ms`, `s`, `m`, `h`, `d`, ...). A bare number without a unit is
/// rejected because `30` is ambiguous (seconds? minutes?), and so is a zero duration.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(anchor_core::parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
/// assert!(anchor_core::parse_duration("30").is_err());
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let text = input.trim();
    let fail = |reason: &str| DurationError {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    if text.is_empty() {
        return Err(fail(
            "it is empty; write a number with a unit, e.g. `30s`, `5m` or `1h`",
        ));
    }
    if text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(fail(&format!(
            "a unit is missing; write e.g. `{text}s` or `{text}m`"
        )));
    }
    let duration = humantime::parse_duration(text).map_err(|err| {
        fail(&format!(
            "{err}; write a number with a unit, e.g. `30s`, `5m`, `1h` or `1h30m`"
        ))
    })?;
    if duration.is_zero() {
        return Err(fail("it must be longer than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration(" 2m ").unwrap(), Duration::from_secs(120));
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in ["", "30", "abc", "5 parsecs", "0s", "-5m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
