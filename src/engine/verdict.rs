//! The verdict (rules 16–18): percentage, lateness, status.

use super::view::Verdict;
use crate::domain::UnixMillis;

/// The thresholds and grace of rules 17–18 (configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VerdictRules {
    /// Joining later than `starts_at + late_grace_ms` is late.
    pub late_grace_ms: i64,
    /// Below this percentage: `absent`.
    pub absent_below: f64,
    /// Below this (and not absent): `partial`.
    pub partial_below: f64,
    /// From this: `present`, on time or not. Between `partial_below` and
    /// this: `present` when on time, `late` when late.
    pub present_from: f64,
}

impl Default for VerdictRules {
    fn default() -> Self {
        Self {
            late_grace_ms: 15 * 60_000,
            absent_below: 10.0,
            partial_below: 50.0,
            present_from: 75.0,
        }
    }
}

/// Rule 16: attended / scheduled × 100, capped at 100, rounded half up to
/// one decimal. Integer arithmetic, so 2/3 is exactly 66.7 everywhere.
pub fn percentage(attended_ms: i64, scheduled_ms: i64) -> f64 {
    if scheduled_ms <= 0 {
        return 0.0;
    }
    let attended = attended_ms.clamp(0, scheduled_ms) as i128;
    let scheduled = scheduled_ms as i128;
    let tenths = (attended * 2000 + scheduled) / (2 * scheduled);
    tenths as f64 / 10.0
}

/// Rule 17: late when the first join is after `starts_at + grace`.
pub fn is_late(first_join: UnixMillis, starts_at: UnixMillis, rules: &VerdictRules) -> bool {
    first_join > starts_at + rules.late_grace_ms
}

/// The contract's `late_minutes`: whole minutes from `starts_at` to the
/// first join when late (rule 17), else 0.
pub fn late_minutes(first_join: UnixMillis, starts_at: UnixMillis, rules: &VerdictRules) -> i64 {
    if is_late(first_join, starts_at, rules) {
        (first_join - starts_at) / 60_000
    } else {
        0
    }
}

/// Rule 18 on the reported (rounded) percentage.
pub fn status(percentage: f64, late: bool, rules: &VerdictRules) -> Verdict {
    if percentage < rules.absent_below {
        Verdict::Absent
    } else if percentage < rules.partial_below {
        Verdict::Partial
    } else if percentage >= rules.present_from || !late {
        Verdict::Present
    } else {
        Verdict::Late
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn rule16_percentage_table() {
        let cases = [
            (0, HOUR, 0.0),
            (HOUR, HOUR, 100.0),
            (2 * HOUR, HOUR, 100.0), // capped
            (HOUR / 3, HOUR, 33.3),
            (2 * HOUR / 3, HOUR, 66.7),
            (HOUR / 2, HOUR, 50.0),
            (359_999, HOUR, 10.0), // 9.99997 rounds to 10.0
            (358_199, HOUR, 9.9),
            (-5, HOUR, 0.0),
        ];
        for (attended, scheduled, want) in cases {
            assert_eq!(
                percentage(attended, scheduled),
                want,
                "{attended}/{scheduled}"
            );
        }
    }

    #[test]
    fn rule17_late_only_after_the_grace() {
        let r = VerdictRules::default();
        assert!(
            !is_late(15 * 60_000, 0, &r),
            "exactly at the grace is on time"
        );
        assert!(is_late(15 * 60_000 + 1, 0, &r));
        assert!(!is_late(-60_000, 0, &r), "early is on time");
    }

    #[test]
    fn rule18_status_table() {
        let r = VerdictRules::default();
        let cases = [
            (0.0, false, Verdict::Absent),
            (9.9, false, Verdict::Absent),
            (10.0, false, Verdict::Partial),
            (49.9, true, Verdict::Partial),
            (50.0, false, Verdict::Present),
            (50.0, true, Verdict::Late),
            (74.9, true, Verdict::Late),
            (75.0, true, Verdict::Present),
            (100.0, true, Verdict::Present),
        ];
        for (pct, late, want) in cases {
            assert_eq!(status(pct, late, &r), want, "{pct} late={late}");
        }
        let strict = VerdictRules {
            present_from: 90.0,
            ..r
        };
        assert_eq!(
            status(80.0, true, &strict),
            Verdict::Late,
            "thresholds are configuration"
        );
    }
}
