//! LiveKit integration: the configured API keys, verification of webhook and
//! access-token JWTs, tolerant types for protojson webhook bodies, and a
//! small client for LiveKit's RoomService API.
//!
//! Only `room_service` does I/O (outbound, to LiveKit); for the rest the HTTP
//! layer feeds raw header/body bytes in and maps every [`VerifyError`] to 401.

pub mod event;
pub mod keys;
pub mod room_service;
pub mod verify;

pub use event::{
    DisconnectReason, ParseError, ParticipantInfo, ParticipantKind, ParticipantState, Room,
    WebhookEvent, parse_webhook,
};
pub use keys::{KeyParseError, KeyRing};
pub use room_service::{
    RoomService, RoomServiceConfigError, RoomServiceError, decode_participants,
};
pub use verify::{
    AccessClaims, LEEWAY_SECS, VerifyError, WebhookClaims, body_sha256_b64, sign_access_token,
    sign_webhook, verify_access_token, verify_webhook,
};
