//! Schedules (rules 10, 19, 21): when a session runs and who is expected.

use serde::{Deserialize, Serialize};

use super::interval::Window;
use crate::domain::{Identity, Timestamp, UnixMillis};

/// A session's schedule. Invariant: `duration_minutes >= 1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub starts_at: Timestamp,
    pub duration_minutes: u32,
    /// Identities expected to attend; one who never joins is `absent`.
    #[serde(default)]
    pub expected: Vec<Identity>,
}

/// Longest schedule accepted: a day. A bound, not a rule: it keeps the
/// window arithmetic far from overflow and catches unit mistakes.
pub const MAX_DURATION_MINUTES: u32 = 24 * 60;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("duration_minutes must be between 1 and {MAX_DURATION_MINUTES}")]
    Duration,
    #[error("expected lists an empty identity")]
    EmptyIdentity,
}

impl Schedule {
    pub fn new(
        starts_at: Timestamp,
        duration_minutes: u32,
        expected: Vec<Identity>,
    ) -> Result<Self, ScheduleError> {
        if !(1..=MAX_DURATION_MINUTES).contains(&duration_minutes) {
            return Err(ScheduleError::Duration);
        }
        if expected.iter().any(|i| i.as_str().is_empty()) {
            return Err(ScheduleError::EmptyIdentity);
        }
        Ok(Self {
            starts_at,
            duration_minutes,
            expected,
        })
    }

    pub fn duration_ms(&self) -> i64 {
        i64::from(self.duration_minutes) * 60_000
    }

    pub fn ends_at(&self) -> UnixMillis {
        self.starts_at.0 + self.duration_ms()
    }

    /// The counting window `[starts_at, starts_at + duration]`.
    pub fn window(&self) -> Window {
        Window::between(self.starts_at.0, self.ends_at())
    }

    /// A schedule from LiveKit room metadata, when it is a JSON object
    /// with `starts_at` (RFC 3339) and `duration_minutes` (rule 21);
    /// anything else is not a schedule.
    pub fn from_metadata(metadata: &str) -> Option<Self> {
        #[derive(Deserialize)]
        struct Meta {
            starts_at: String,
            duration_minutes: serde_json::Value,
            #[serde(default)]
            expected: Vec<Identity>,
        }
        let meta: Meta = serde_json::from_str(metadata).ok()?;
        let starts_at = Timestamp::parse_rfc3339(&meta.starts_at)?;
        // Metadata is free text written by other programs: accept 60 and "60".
        let minutes = match &meta.duration_minutes {
            serde_json::Value::Number(n) => n.as_u64()?,
            serde_json::Value::String(s) => s.trim().parse().ok()?,
            _ => return None,
        };
        Self::new(starts_at, u32::try_from(minutes).ok()?, meta.expected).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_schedules_table() {
        let t = Timestamp::parse_rfc3339("2025-11-21T10:00:00Z").unwrap();
        let cases: &[(&str, Option<u32>)] = &[
            (
                r#"{"starts_at":"2025-11-21T10:00:00Z","duration_minutes":60}"#,
                Some(60),
            ),
            (
                r#"{"starts_at":"2025-11-21T12:00:00+02:00","duration_minutes":"45"}"#,
                Some(45),
            ),
            (
                r#"{"starts_at":"2025-11-21T10:00:00Z","duration_minutes":60,"teacher":"x"}"#,
                Some(60),
            ),
            (
                r#"{"starts_at":"2025-11-21T10:00:00Z","duration_minutes":0}"#,
                None,
            ),
            (
                r#"{"starts_at":"2025-11-21T10:00:00Z","duration_minutes":-5}"#,
                None,
            ),
            (r#"{"starts_at":"tomorrow","duration_minutes":60}"#, None),
            (r#"{"duration_minutes":60}"#, None),
            ("not json", None),
            ("", None),
        ];
        for (meta, want) in cases {
            let got = Schedule::from_metadata(meta);
            assert_eq!(got.as_ref().map(|s| s.duration_minutes), *want, "{meta}");
            if let Some(s) = got {
                assert_eq!(s.starts_at, t, "{meta}");
            }
        }
    }

    #[test]
    fn window_spans_the_scheduled_duration() {
        let s = Schedule::new(Timestamp(1_000), 2, vec![]).unwrap();
        assert_eq!(s.window(), Window::between(1_000, 121_000));
        assert_eq!(
            Schedule::new(Timestamp(0), 0, vec![]),
            Err(ScheduleError::Duration)
        );
        assert_eq!(
            Schedule::new(Timestamp(0), 10, vec![Identity::new("")]),
            Err(ScheduleError::EmptyIdentity)
        );
    }

    /// Found by the `schedule` fuzz target: a start whose offset carries it
    /// past year 9999 UTC was accepted, then the stored schedule (Redis keeps
    /// it as JSON) could not be read back, poisoning the room's state.
    #[test]
    fn an_accepted_schedule_reads_back_from_its_stored_json() {
        let past_9999 = r#"{"starts_at":"9999-12-31T23:59:59-23:59","duration_minutes":1}"#;
        assert_eq!(Schedule::from_metadata(past_9999), None);
        let last = r#"{"starts_at":"9999-12-31T23:59:59+23:59","duration_minutes":1440}"#;
        let schedule = Schedule::from_metadata(last).unwrap();
        let json = serde_json::to_string(&schedule).unwrap();
        assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), schedule);
    }
}
