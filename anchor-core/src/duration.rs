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

/// The execution timeout of a task whose definition sets none: one hour.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Formats a duration the way tasks.yaml writes them, in its largest whole unit: `1h`,
/// `90m` is `90m`, `30s`, `1500ms`; zero is `0s`. [`parse_duration`] reads every non-zero
/// result back to the same duration (sub-millisecond parts are dropped).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(anchor_core::format_duration(Duration::from_secs(3600)), "1h");
/// assert_eq!(anchor_core::format_duration(Duration::from_millis(1500)), "1500ms");
/// assert_eq!(anchor_core::format_duration(Duration::ZERO), "0s");
/// ```
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".to_string()
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

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
    // Each `<number><unit>` part is parsed on its own and the parts are added with a checked
    // sum: humantime adds them up itself without checking the last carry, and panics when
    // sub-second parts carry past `u64::MAX` seconds (`18446744073709551615s 1000ms`).
    let mut duration = Duration::ZERO;
    for (start, part) in parts(text) {
        let part = humantime::parse_duration(part).map_err(|err| {
            let err = match err {
                // Offsets into the whole text, not into the part.
                humantime::DurationError::InvalidCharacter(at) => {
                    humantime::DurationError::InvalidCharacter(start + at)
                }
                humantime::DurationError::NumberExpected(at) => {
                    humantime::DurationError::NumberExpected(start + at)
                }
                humantime::DurationError::NumberOverflow if !part.contains('.') => {
                    return fail(TOO_LONG);
                }
                other => other,
            };
            fail(&format!(
                "{err}; write a number with a unit, e.g. `30s`, `5m`, `1h` or `1h30m`"
            ))
        })?;
        duration = duration.checked_add(part).ok_or_else(|| fail(TOO_LONG))?;
    }
    if duration.is_zero() {
        return Err(fail("it must be longer than zero"));
    }
    Ok(duration)
}

/// The reason given for a number too large to represent at all.
const TOO_LONG: &str =
    "it is too long; the longest duration anchor accepts is 3650 days (`3650d`, ten years)";

/// The `<number><unit>` parts of a duration (`1h30m` → `1h`, `30m`), each with its byte
/// offset: a part ends where a digit follows a unit.
fn parts(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut starts = vec![0];
    let mut after_unit = false;
    for (at, c) in text.char_indices() {
        if c.is_ascii_digit() && after_unit {
            starts.push(at);
        }
        if !c.is_whitespace() {
            after_unit = c.is_alphabetic();
        }
    }
    let ends: Vec<usize> = starts.iter().skip(1).copied().chain([text.len()]).collect();
    starts
        .into_iter()
        .zip(ends)
        .map(move |(start, end)| (start, &text[start..end]))
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
    fn parts_split_where_a_number_follows_a_unit() {
        let split: Vec<(usize, &str)> = parts("1h30m 5 s2.5ms").collect();
        assert_eq!(split, [(0, "1h"), (2, "30m "), (6, "5 s"), (9, "2.5ms")]);
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("1s500ms").unwrap(),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn huge_numbers_are_errors_not_panics() {
        for huge in [
            "99999999999999999999h",
            "18446744073709551615s 1000000000ns",
            "18446744073709551615s 500ms 500ms",
        ] {
            let err = parse_duration(huge).unwrap_err();
            assert!(err.reason.contains("too long"), "{huge:?}: {err}");
        }
    }

    #[test]
    fn error_offsets_count_from_the_start_of_the_whole_text() {
        let err = parse_duration("1h 30m!").unwrap_err();
        assert!(err.reason.starts_with("invalid character at 6"), "{err}");
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in ["", "30", "abc", "5 parsecs", "0s", "-5m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formatted_durations_parse_back() {
        for ms in [
            1, 250, 1000, 1500, 59_000, 60_000, 90_000, 3_600_000, 5_400_000, 86_400_000,
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{ms} ms");
        }
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(MAX_DURATION), "87600h");
    }
}
