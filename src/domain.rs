//! Typed values that cross module boundaries: parsed once at the edge, then
//! trusted. Instants are Unix milliseconds (`UnixMillis`) everywhere inside
//! rollcall; they become RFC 3339 text only when serialized.

use std::fmt;

use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant, in milliseconds since the Unix epoch (UTC).
pub type UnixMillis = i64;

/// The wall clock, in Unix milliseconds. The only place rollcall reads time
/// for attendance; the engine itself takes `now` as a parameter.
pub fn now_millis() -> UnixMillis {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// An instant that serializes as RFC 3339 with milliseconds and `Z`
/// (`2025-11-14T23:06:18.456Z`), the contract's timestamp format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub UnixMillis);

impl Timestamp {
    /// `0000-01-01T00:00:00.000Z`: the earliest instant RFC 3339 can write.
    pub const MIN_MILLIS: UnixMillis = -62_167_219_200_000;
    /// `9999-12-31T23:59:59.999Z`: the latest instant RFC 3339 can write.
    pub const MAX_MILLIS: UnixMillis = 253_402_300_799_999;

    /// Whether `millis` is an instant RFC 3339 can write. Every instant
    /// rollcall takes from outside is kept in this range, which also keeps
    /// the engine's instant arithmetic (a timeout added to a join time) far
    /// from overflowing `i64`.
    pub fn in_range(millis: UnixMillis) -> bool {
        (Self::MIN_MILLIS..=Self::MAX_MILLIS).contains(&millis)
    }

    pub fn to_rfc3339(self) -> String {
        match DateTime::from_timestamp_millis(self.0) {
            Some(dt) => dt.to_rfc3339_opts(SecondsFormat::Millis, true),
            // Only reachable for instants beyond year ±262143; keep a number.
            None => self.0.to_string(),
        }
    }

    /// Parses an RFC 3339 instant that is [`Timestamp::in_range`], i.e. one
    /// [`Timestamp::to_rfc3339`] writes back in a form this accepts. An
    /// offset can carry a four-digit local time out of it
    /// (`9999-12-31T23:59:59-23:59` is in year 10000 UTC,
    /// `0000-01-01T00:00:00+00:01` in year -1); such a schedule used to be
    /// accepted, then its stored JSON never read back (the `schedule` fuzz
    /// target found it), so it is refused here instead.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let millis = DateTime::parse_from_rfc3339(s).ok()?.timestamp_millis();
        Self::in_range(millis).then_some(Self(millis))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 instant: {s}")))
    }
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_newtype!(
    /// A LiveKit room name: the session (rule 1). Stable across room
    /// instances, unlike the room sid.
    RoomName
);
string_newtype!(
    /// A LiveKit room instance (`RM_…`); changes when a room is restarted.
    RoomSid
);
string_newtype!(
    /// One LiveKit connection (`PA_…`): the key of a cycle (rule 3).
    ParticipantSid
);
string_newtype!(
    /// A LiveKit participant identity, e.g. `1_Ameer_Maher`.
    Identity
);
string_newtype!(
    /// A LiveKit webhook event id (`EV_…`), the same across retries (rule 7).
    EventId
);
string_newtype!(
    /// The person: the identity pattern's `user_id` group (rule 2).
    UserId
);

impl UserId {
    /// The contract's `user_id` value: a JSON number when the id is all
    /// digits (and fits), else a string.
    pub fn to_json(&self) -> serde_json::Value {
        let digits = !self.0.is_empty() && self.0.bytes().all(|b| b.is_ascii_digit());
        match self.0.parse::<u64>() {
            Ok(n) if digits => serde_json::Value::from(n),
            _ => serde_json::Value::from(self.0.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_with_millis_and_z() {
        let t = Timestamp(1_763_719_201_456);
        assert_eq!(t.to_rfc3339(), "2025-11-21T10:00:01.456Z");
        assert_eq!(
            Timestamp::parse_rfc3339("2025-11-21T10:00:01.456Z"),
            Some(t)
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2025-11-21T12:00:01.456+02:00"),
            Some(t)
        );
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
    }

    /// Found by the `schedule` fuzz target: an offset carried these past
    /// year 9999 (or before year 0) UTC, `to_rfc3339` wrote them as
    /// `+10000-…`/`-0001-…`, and the stored schedule never parsed again.
    #[test]
    fn the_range_is_what_rfc3339_can_write() {
        let min = Timestamp(Timestamp::MIN_MILLIS);
        let max = Timestamp(Timestamp::MAX_MILLIS);
        assert_eq!(min.to_rfc3339(), "0000-01-01T00:00:00.000Z");
        assert_eq!(max.to_rfc3339(), "9999-12-31T23:59:59.999Z");
        assert!(Timestamp::in_range(min.0) && Timestamp::in_range(max.0));
        assert!(!Timestamp::in_range(min.0 - 1) && !Timestamp::in_range(max.0 + 1));
    }

    #[test]
    fn only_instants_that_write_back_as_rfc3339_are_accepted() {
        for s in ["9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00+00:01"] {
            assert_eq!(Timestamp::parse_rfc3339(s), None, "{s}");
        }
        for s in [
            "9999-12-31T23:59:59.999Z",
            "9999-12-31T23:59:59+23:59",
            "0000-01-01T00:00:00Z",
            "0000-01-01T00:00:00-23:59",
        ] {
            let t = Timestamp::parse_rfc3339(s).expect(s);
            assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t), "{s}");
        }
    }

    #[test]
    fn user_id_is_a_number_only_when_all_digits() {
        assert_eq!(UserId::new("1").to_json(), serde_json::json!(1));
        assert_eq!(UserId::new("007").to_json(), serde_json::json!(7));
        assert_eq!(UserId::new("u1").to_json(), serde_json::json!("u1"));
        assert_eq!(UserId::new("-1").to_json(), serde_json::json!("-1"));
        assert_eq!(
            UserId::new("99999999999999999999999").to_json(),
            serde_json::json!("99999999999999999999999")
        );
    }
}
