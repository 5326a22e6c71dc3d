//! LiveKit integration: the configured API keys, verification of webhook and
//! access-token JWTs, and tolerant types for protojson webhook bodies.
//!
//! Nothing here does I/O; the HTTP layer feeds raw header/body bytes in and
//! maps every [`VerifyError`] to 401.

pub mod event;
pub mod keys;
pub mod verify;

pub use event::{
    DisconnectReason, ParseError, ParticipantInfo, ParticipantKind, ParticipantState, Room,
    WebhookEvent, parse_webhook,
};
pub use keys::{KeyParseError, KeyRing};
pub use verify::{
    AccessClaims, LEEWAY_SECS, VerifyError, WebhookClaims, body_sha256_b64, sign_access_token,
    sign_webhook, verify_access_token, verify_webhook,
};
