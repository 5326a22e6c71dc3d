//! `--at` values of the tools: an RFC 3339 instant, or an instant relative
//! to now (`-5m`, `+30s`, `30s ago`, `now`). Relative forms exist because a
//! backdated event is nearly always "a few minutes ago", and typing today's
//! date by hand is where mistakes come from.

use crate::domain::{Timestamp, UnixMillis};

/// Reads `text` as an instant, with `now` for the relative forms. The
/// answer is always one RFC 3339 can write (`Timestamp::in_range`), since
/// the server clamps anything else.
pub fn parse_at(text: &str, now: UnixMillis) -> Result<UnixMillis, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    let relative = if let Some(rest) = text.strip_suffix("ago") {
        Some((-1, rest.trim()))
    } else if let Some(rest) = text.strip_prefix('-') {
        Some((-1, rest))
    } else {
        text.strip_prefix('+').map(|rest| (1, rest))
    };
    let millis = match relative {
        Some((sign, span)) => {
            let span = humantime::parse_duration(span.trim())
                .map_err(|e| format!("'{text}': {e} (expected e.g. -5m, 30s ago, +1h)"))?;
            let span = i64::try_from(span.as_millis()).unwrap_or(i64::MAX);
            now.saturating_add(sign * span)
        }
        None => {
            Timestamp::parse_rfc3339(text)
                .ok_or_else(|| {
                    format!(
                        "'{text}' is neither an RFC 3339 instant (2025-11-21T10:00:00Z) \
                         nor relative to now (-5m, 30s ago, +1h)"
                    )
                })?
                .0
        }
    };
    if !Timestamp::in_range(millis) {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = 1_763_719_200_000; // 2025-11-21T10:00:00Z

    #[test]
    fn relative_forms_count_from_now() {
        assert_eq!(parse_at("now", NOW), Ok(NOW));
        assert_eq!(parse_at("-5m", NOW), Ok(NOW - 300_000));
        assert_eq!(parse_at("30s ago", NOW), Ok(NOW - 30_000));
        assert_eq!(parse_at(" 1h 30m ago ", NOW), Ok(NOW - 5_400_000));
        assert_eq!(parse_at("+10s", NOW), Ok(NOW + 10_000));
    }

    #[test]
    fn rfc3339_instants_are_taken_as_they_are() {
        assert_eq!(parse_at("2025-11-21T10:00:00Z", 0), Ok(NOW));
        assert_eq!(parse_at("2025-11-21T12:00:00.250+02:00", 0), Ok(NOW + 250));
    }

    #[test]
    fn anything_else_is_refused_with_the_forms_it_takes() {
        for bad in ["", "5m", "yesterday", "-5 parsecs", "2025-11-21"] {
            let err = parse_at(bad, NOW).unwrap_err();
            assert!(err.contains("-5m"), "{bad}: {err}");
        }
        assert!(parse_at("-300000000y", NOW).is_err(), "out of range");
    }
}
