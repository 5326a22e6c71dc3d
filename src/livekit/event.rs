//! Tolerant serde types for LiveKit's protojson `WebhookEvent` body, and for
//! the `Room` / `ParticipantInfo` messages its RoomService API returns
//! (`room_service.rs`).
//!
//! protojson omits zero values, writes 64-bit integers as strings and enums as
//! names, and a newer LiveKit may add fields or enum values at any time. So
//! every field has a default, integers accept strings and numbers, enums keep
//! unknown names in an `Other` variant, and unknown fields are ignored: a
//! LiveKit upgrade must never turn deliverable events into errors.
//!
//! Webhooks are camelCase (`joinedAtMs`). LiveKit's Twirp server marshals
//! with proto field names and emits zero values (`"joined_at_ms": "0"`,
//! `"kind": "STANDARD"`, `"version": null`), so the two shared messages
//! also accept the snake_case spelling of every multi-word field they keep.
//! One body uses one spelling; a body carrying both spellings of a field is
//! refused as a duplicate, as protojson itself refuses it.

use std::fmt;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::{Deserialize, Serialize};

use crate::domain::Timestamp;

/// One webhook delivery. Only the fields rollcall uses are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WebhookEvent {
    /// Event name, e.g. `participant_joined`; unknown names are legal.
    #[serde(deserialize_with = "de_string")]
    pub event: String,
    /// Absent on some events (e.g. track events).
    pub room: Option<Room>,
    /// Present on participant and track events.
    pub participant: Option<ParticipantInfo>,
    /// `EV_…`, unique per event and stable across retries: the dedup key.
    #[serde(deserialize_with = "de_string")]
    pub id: String,
    /// Unix seconds at which LiveKit created the event (0 if absent).
    #[serde(deserialize_with = "de_i64")]
    pub created_at: i64,
}

/// The room an event belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Room {
    /// `RM_…`, unique per room instance (a re-created room gets a new sid).
    #[serde(deserialize_with = "de_string")]
    pub sid: String,
    /// The room name chosen by the app.
    #[serde(deserialize_with = "de_string")]
    pub name: String,
    /// Free-form string; JSON by convention.
    #[serde(deserialize_with = "de_string")]
    pub metadata: String,
    /// Unix seconds (0 if absent).
    #[serde(alias = "creation_time", deserialize_with = "de_i64")]
    pub creation_time: i64,
}

/// A participant as described by LiveKit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ParticipantInfo {
    /// `PA_…`, unique per connection (a reconnect gets a new sid).
    #[serde(deserialize_with = "de_string")]
    pub sid: String,
    /// Identity from the access token's `sub`.
    #[serde(deserialize_with = "de_string")]
    pub identity: String,
    /// Display name.
    #[serde(deserialize_with = "de_string")]
    pub name: String,
    /// Connection state.
    pub state: ParticipantState,
    /// Unix seconds (0 if absent).
    #[serde(alias = "joined_at", deserialize_with = "de_i64")]
    pub joined_at: i64,
    /// Unix milliseconds (0 if absent; older servers only send `joinedAt`).
    #[serde(alias = "joined_at_ms", deserialize_with = "de_i64")]
    pub joined_at_ms: i64,
    /// Free-form string set by the app.
    #[serde(deserialize_with = "de_string")]
    pub metadata: String,
    /// What sort of participant this is; absent means `Standard`.
    pub kind: ParticipantKind,
    /// Why the participant left (`UnknownReason` if absent).
    #[serde(alias = "disconnect_reason")]
    pub disconnect_reason: DisconnectReason,
}

impl ParticipantInfo {
    /// Join time in unix milliseconds: `joinedAtMs` if set, else `joinedAt`
    /// scaled, else `None` (zero means "not sent" in protojson). A value
    /// outside `Timestamp::in_range` counts as not sent: LiveKit sends none,
    /// and the engine's instant arithmetic relies on the range (see
    /// `ingest::observe`).
    pub fn joined_at_millis(&self) -> Option<i64> {
        let sent = |t: i64| t != 0 && Timestamp::in_range(t);
        if sent(self.joined_at_ms) {
            Some(self.joined_at_ms)
        } else {
            Some(self.joined_at.saturating_mul(1000)).filter(|&t| sent(t))
        }
    }
}

/// Why a body could not be turned into a [`WebhookEvent`]. Such a body can
/// never succeed, so the server answers it with a 4xx (LiveKit won't retry).
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, or a known field has an impossible type.
    #[error("webhook body is not a valid WebhookEvent: {0}")]
    Json(#[from] serde_json::Error),
    /// A required field is absent or empty.
    #[error("webhook body has no `{field}`")]
    MissingField {
        /// The protojson field name (`event`).
        field: &'static str,
    },
}

impl ParseError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Json(_) => "invalid_body",
            Self::MissingField { .. } => "missing_event_name",
        }
    }
}

/// Parses a webhook body. `event` must be present and non-empty;
/// everything else is optional. A body without an `id` (older LiveKit
/// servers sent none) gets one derived from its bytes, `sha256:<base64>`:
/// a retry resends the same bytes, so it is still deduplicated (rule 7).
pub fn parse_webhook(body: &[u8]) -> Result<WebhookEvent, ParseError> {
    let mut ev: WebhookEvent = serde_json::from_slice(body)?;
    if ev.event.is_empty() {
        return Err(ParseError::MissingField { field: "event" });
    }
    if ev.id.is_empty() {
        ev.id = format!("sha256:{}", super::verify::body_sha256_b64(body));
    }
    Ok(ev)
}

/// Defines a protobuf enum that accepts names or numbers and keeps unknown
/// values in `Other` instead of failing.
macro_rules! proto_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $wire:literal / $num:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this build does not know: the name as sent, or the
            /// decimal number if LiveKit sent a number.
            Other(String),
        }

        impl $name {
            /// The protobuf name (or the unknown value as received).
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)+
                    Self::Other(s) => s,
                }
            }

            fn from_wire(w: EnumWire) -> Self {
                match w {
                    EnumWire::Name(s) => match s.as_str() {
                        $($wire => Self::$variant,)+
                        _ => Self::Other(s),
                    },
                    EnumWire::Number(n) => match n {
                        $($num => Self::$variant,)+
                        _ => Self::Other(n.to_string()),
                    },
                    EnumWire::Null => Self::default(),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                EnumWire::deserialize(d).map(Self::from_wire)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

proto_enum! {
    /// `ParticipantInfo.Kind`.
    ParticipantKind {
        /// A regular client (absent on the wire).
        #[default]
        Standard = "STANDARD" / 0,
        /// An ingress stream.
        Ingress = "INGRESS" / 1,
        /// A recorder / egress.
        Egress = "EGRESS" / 2,
        /// A phone participant: a real person.
        Sip = "SIP" / 3,
        /// An AI agent.
        Agent = "AGENT" / 4,
        /// A connector bot.
        Connector = "CONNECTOR" / 7,
        /// A bridge bot.
        Bridge = "BRIDGE" / 8,
    }
}

impl ParticipantKind {
    /// Whether this participant may be a person whose attendance counts.
    ///
    /// Only the known machine kinds are excluded: an unknown future kind is
    /// counted, because silently dropping real people is worse than counting
    /// a bot.
    pub fn is_attendee(&self) -> bool {
        !matches!(
            self,
            Self::Egress | Self::Ingress | Self::Agent | Self::Connector | Self::Bridge
        )
    }
}

proto_enum! {
    /// `ParticipantInfo.State`.
    ParticipantState {
        /// Absent on the wire.
        #[default]
        Joining = "JOINING" / 0,
        /// Signalling connected.
        Joined = "JOINED" / 1,
        /// Media connected.
        Active = "ACTIVE" / 2,
        /// Gone.
        Disconnected = "DISCONNECTED" / 3,
    }
}

proto_enum! {
    /// `DisconnectReason` (livekit_models.proto).
    DisconnectReason {
        /// Absent on the wire.
        #[default]
        UnknownReason = "UNKNOWN_REASON" / 0,
        /// The client left.
        ClientInitiated = "CLIENT_INITIATED" / 1,
        /// Another connection took the same identity.
        DuplicateIdentity = "DUPLICATE_IDENTITY" / 2,
        /// The server is shutting down.
        ServerShutdown = "SERVER_SHUTDOWN" / 3,
        /// Removed through the API.
        ParticipantRemoved = "PARTICIPANT_REMOVED" / 4,
        /// The room was deleted through the API.
        RoomDeleted = "ROOM_DELETED" / 5,
        /// Client and server disagree on state.
        StateMismatch = "STATE_MISMATCH" / 6,
        /// The join never completed.
        JoinFailure = "JOIN_FAILURE" / 7,
        /// Moved to another node.
        Migration = "MIGRATION" / 8,
        /// The signal connection closed.
        SignalClose = "SIGNAL_CLOSE" / 9,
        /// The room closed.
        RoomClosed = "ROOM_CLOSED" / 10,
        /// SIP callee unavailable.
        UserUnavailable = "USER_UNAVAILABLE" / 11,
        /// SIP callee rejected.
        UserRejected = "USER_REJECTED" / 12,
        /// SIP trunk failure.
        SipTrunkFailure = "SIP_TRUNK_FAILURE" / 13,
        /// The client stopped responding.
        ConnectionTimeout = "CONNECTION_TIMEOUT" / 14,
        /// Media could not be established.
        MediaFailure = "MEDIA_FAILURE" / 15,
        /// An agent failed.
        AgentError = "AGENT_ERROR" / 16,
    }
}

/// An enum value as it may appear in protojson: a name, a number, or null.
enum EnumWire {
    Name(String),
    Number(i64),
    Null,
}

impl<'de> Deserialize<'de> for EnumWire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EnumWire;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an enum name or number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EnumWire, E> {
                Ok(EnumWire::Name(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<EnumWire, E> {
                Ok(EnumWire::Name(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<EnumWire, E> {
                Ok(EnumWire::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<EnumWire, E> {
                i64::try_from(v)
                    .map(EnumWire::Number)
                    .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
            }
            fn visit_unit<E: de::Error>(self) -> Result<EnumWire, E> {
                Ok(EnumWire::Null)
            }
        }
        d.deserialize_any(V)
    }
}

/// protojson int64: a decimal string or a JSON number; null means 0.
fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = i64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a 64-bit integer as a number or a decimal string")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
            // protojson allows `1.0` or `1e3` for integers, but never a fraction.
            if v.fract() == 0.0 && v >= i64::MIN as f64 && v < i64::MAX as f64 {
                Ok(v as i64)
            } else {
                Err(E::invalid_value(Unexpected::Float(v), &self))
            }
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
            v.parse()
                .map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
        }
        fn visit_unit<E: de::Error>(self) -> Result<i64, E> {
            Ok(0)
        }
    }
    d.deserialize_any(V)
}

/// protojson string; null means "".
fn de_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Option::<String>::deserialize(d).map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM_STARTED: &[u8] = include_bytes!("../../tests/fixtures/livekit/room_started.json");
    const JOINED: &[u8] = include_bytes!("../../tests/fixtures/livekit/participant_joined.json");
    const LEFT: &[u8] = include_bytes!("../../tests/fixtures/livekit/participant_left.json");
    const EGRESS: &[u8] =
        include_bytes!("../../tests/fixtures/livekit/egress_participant_joined.json");
    const FINISHED: &[u8] = include_bytes!("../../tests/fixtures/livekit/room_finished.json");

    #[test]
    fn participant_joined_fixture() {
        let ev = parse_webhook(JOINED).unwrap();
        assert_eq!(ev.event, "participant_joined");
        assert_eq!(ev.id, "EV_3xYvq8ZkL2mN");
        assert_eq!(ev.created_at, 1_763_719_202);
        let room = ev.room.unwrap();
        assert_eq!(room.sid, "RM_hycBMAjmt6Ub");
        assert_eq!(room.name, "itqan-academy-quran-session-121");
        assert_eq!(room.creation_time, 1_763_719_200);
        assert_eq!(room.metadata, "");
        let p = ev.participant.unwrap();
        assert_eq!(p.sid, "PA_eU7nwP2s3FcN");
        assert_eq!(p.identity, "1_Ameer_Maher");
        assert_eq!(p.name, "Ameer Maher");
        assert_eq!(p.state, ParticipantState::Active);
        assert_eq!(p.kind, ParticipantKind::Standard, "absent kind is STANDARD");
        assert!(p.kind.is_attendee());
        assert_eq!(p.disconnect_reason, DisconnectReason::UnknownReason);
        assert_eq!(p.joined_at_millis(), Some(1_763_719_201_456));
    }

    #[test]
    fn participant_left_fixture() {
        let ev = parse_webhook(LEFT).unwrap();
        assert_eq!(ev.event, "participant_left");
        assert_eq!(ev.id, "EV_wL6Lh5MAFmDd");
        assert_eq!(ev.created_at, 1_763_719_260);
        let p = ev.participant.unwrap();
        assert_eq!(p.state, ParticipantState::Disconnected);
        assert_eq!(p.disconnect_reason, DisconnectReason::ClientInitiated);
        assert_eq!(p.joined_at_millis(), Some(1_763_719_201_456));
    }

    #[test]
    fn egress_fixture_is_not_an_attendee() {
        let ev = parse_webhook(EGRESS).unwrap();
        let p = ev.participant.unwrap();
        assert_eq!(p.kind, ParticipantKind::Egress);
        assert!(!p.kind.is_attendee());
        // Only `joinedAt` (seconds) is sent here.
        assert_eq!(p.joined_at_millis(), Some(1_763_719_205_000));
    }

    #[test]
    fn room_finished_fixture_has_no_participant() {
        let ev = parse_webhook(FINISHED).unwrap();
        assert_eq!(ev.event, "room_finished");
        assert_eq!(ev.id, "EV_Zr8Tq1Wv3Yb5");
        assert_eq!(ev.created_at, 1_763_722_800);
        assert!(ev.participant.is_none());
        assert_eq!(ev.room.unwrap().name, "itqan-academy-quran-session-121");
    }

    #[test]
    fn room_started_fixture_without_id_gets_a_content_id() {
        // The real LiveKit test body predates event ids: its id is derived
        // from its bytes, so a retry of the same bytes is still a duplicate.
        let ev = parse_webhook(ROOM_STARTED).unwrap();
        assert_eq!(ev.id, "sha256:CoEQz1chqJ9bnZRcORddjplkvpjmPujmLTR42DbefYI=");
        assert_eq!(ev.event, "room_started");
        assert_eq!(ev.created_at, 0);
        let room = ev.room.unwrap();
        assert_eq!(room.sid, "RM_TkVjUvAqgzKz");
        assert_eq!(room.creation_time, 1_628_545_903);
    }

    #[test]
    fn missing_or_empty_id_and_event_are_errors() {
        for (body, field) in [
            (r#"{"id":"EV_1"}"#, "event"),
            (r#"{"event":"","id":"EV_1"}"#, "event"),
        ] {
            match parse_webhook(body.as_bytes()) {
                Err(ParseError::MissingField { field: f }) => assert_eq!(f, field, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_json_is_an_error() {
        for body in [
            &b""[..],
            b"not json",
            br#"{"event":"x","id":"y""#,
            br#"{"event":"x","id":"y","room":"not an object"}"#,
            br#"{"event":"x","id":"y","createdAt":"12x"}"#,
        ] {
            let err = parse_webhook(body).unwrap_err();
            assert!(matches!(err, ParseError::Json(_)), "{err}");
            assert_eq!(err.code(), "invalid_body");
        }
    }

    #[test]
    fn unknown_enum_names_and_fields_are_tolerated() {
        let body = br#"{"event":"agent_job_started","id":"EV_x","brandNew":{"a":[1,2]},
            "participant":{"identity":"u","kind":"HOLOGRAM","state":"TELEPORTING",
            "disconnectReason":"SOLAR_FLARE","futureField":true}}"#;
        let ev = parse_webhook(body).unwrap();
        let p = ev.participant.unwrap();
        assert_eq!(p.kind, ParticipantKind::Other("HOLOGRAM".into()));
        assert!(p.kind.is_attendee(), "unknown kinds count as people");
        assert_eq!(p.state, ParticipantState::Other("TELEPORTING".into()));
        assert_eq!(
            p.disconnect_reason,
            DisconnectReason::Other("SOLAR_FLARE".into())
        );
        assert_eq!(p.kind.as_str(), "HOLOGRAM");
        assert!(ev.room.is_none());
    }

    #[test]
    fn enums_accept_numbers() {
        let body =
            br#"{"event":"e","id":"i","participant":{"kind":4,"state":3,"disconnectReason":14}}"#;
        let p = parse_webhook(body).unwrap().participant.unwrap();
        assert_eq!(p.kind, ParticipantKind::Agent);
        assert_eq!(p.state, ParticipantState::Disconnected);
        assert_eq!(p.disconnect_reason, DisconnectReason::ConnectionTimeout);
        let body = br#"{"event":"e","id":"i","participant":{"kind":99}}"#;
        let p = parse_webhook(body).unwrap().participant.unwrap();
        assert_eq!(p.kind, ParticipantKind::Other("99".into()));
    }

    #[test]
    fn int64_as_string_number_or_null() {
        let as_str = br#"{"event":"e","id":"i","createdAt":"1763719201","participant":{"joinedAt":"5","joinedAtMs":"5001"}}"#;
        let as_num = br#"{"event":"e","id":"i","createdAt":1763719201,"participant":{"joinedAt":5,"joinedAtMs":5001}}"#;
        let as_float = br#"{"event":"e","id":"i","createdAt":1.763719201e9,"participant":{"joinedAt":5.0,"joinedAtMs":5001}}"#;
        let a = parse_webhook(as_str).unwrap();
        assert_eq!(a.created_at, 1_763_719_201);
        assert_eq!(a, parse_webhook(as_num).unwrap());
        assert_eq!(a, parse_webhook(as_float).unwrap());
        let nulls = br#"{"event":"e","id":"i","createdAt":null,"room":null,"participant":{"name":null,"kind":null}}"#;
        let n = parse_webhook(nulls).unwrap();
        assert_eq!(n.created_at, 0);
        assert!(n.room.is_none());
        assert_eq!(n.participant.unwrap().kind, ParticipantKind::Standard);
        let fraction = br#"{"event":"e","id":"i","createdAt":1.5}"#;
        assert!(parse_webhook(fraction).is_err());
    }

    #[test]
    fn joined_at_millis_fallbacks() {
        let mut p = ParticipantInfo::default();
        assert_eq!(p.joined_at_millis(), None);
        p.joined_at = 7;
        assert_eq!(p.joined_at_millis(), Some(7_000));
        p.joined_at_ms = 7_123;
        assert_eq!(p.joined_at_millis(), Some(7_123));
    }

    /// LiveKit's Twirp answers: proto field names, zero values emitted
    /// (`null` for unset messages), int64 as strings.
    #[test]
    fn twirp_snake_case_with_zero_values() {
        let p: ParticipantInfo = serde_json::from_str(
            r#"{"sid":"PA_1","identity":"u","state":"ACTIVE","tracks":[],"metadata":"",
                "joined_at":"1763719201","joined_at_ms":"1763719201456","name":"U",
                "version":3,"permission":null,"region":"","is_publisher":false,
                "kind":"STANDARD","attributes":{},"disconnect_reason":"UNKNOWN_REASON",
                "kind_details":[]}"#,
        )
        .unwrap();
        assert_eq!(p.sid, "PA_1");
        assert_eq!(p.state, ParticipantState::Active);
        assert_eq!(p.joined_at, 1_763_719_201);
        assert_eq!(p.joined_at_millis(), Some(1_763_719_201_456));
        assert_eq!(p.disconnect_reason, DisconnectReason::UnknownReason);

        let zero: ParticipantInfo =
            serde_json::from_str(r#"{"joined_at":"0","joined_at_ms":"0","state":0,"kind":0}"#)
                .unwrap();
        assert_eq!(zero, ParticipantInfo::default());

        let room: Room = serde_json::from_str(
            r#"{"sid":"RM_1","name":"r","empty_timeout":300,"departure_timeout":20,
                "max_participants":0,"creation_time":"1763719200","creation_time_ms":"1763719200123",
                "turn_password":"","enabled_codecs":[{"mime":"audio/opus","fmtp_line":""}],
                "metadata":"{}","num_participants":2,"num_publishers":0,
                "active_recording":false,"version":null}"#,
        )
        .unwrap();
        assert_eq!(room.creation_time, 1_763_719_200);
        assert_eq!(room.metadata, "{}");
    }

    #[test]
    fn both_spellings_of_one_field_are_refused() {
        let twice = r#"{"joinedAt":"1","joined_at":"2"}"#;
        assert!(serde_json::from_str::<ParticipantInfo>(twice).is_err());
    }

    #[test]
    fn attendee_kinds() {
        use ParticipantKind::*;
        for k in [Standard, Sip, Other("NEW".into())] {
            assert!(k.is_attendee(), "{k}");
        }
        for k in [Egress, Ingress, Agent, Connector, Bridge] {
            assert!(!k.is_attendee(), "{k}");
        }
    }
}
