//! `POST /api/heartbeat`: the LiveKit access token (`verify_access_token`)
//! and what the handler then reads from it: the room through the room
//! pattern and the identity through the identity pattern.
//!
//! Input: a mode byte, then NUL-separated fields.
//! - even mode: the raw `Authorization` header bytes (through
//!   `HeaderValue::to_str`, as the handler reads them).
//! - odd mode: `<JWT header JSON>\0<claims JSON>`, signed here with a
//!   configured secret (bit 1 of the mode picks which), to reach the claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall::domain::Identity;
use rollcall::livekit::verify_access_token;
use rollcall::pusher::ChannelName;
use rollcall_fuzz::{LIVEKIT_SECRETS, NOW_UNIX, fields, header_str, keyring, mint_jwt, naming};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode & 1 == 0 {
        header_str(rest)
    } else {
        let [jwt_header, claims] = fields::<2>(rest);
        let secret = LIVEKIT_SECRETS[usize::from(mode >> 1) % LIVEKIT_SECRETS.len()];
        Some(mint_jwt(secret, jwt_header, claims))
    };
    // The handler refuses a missing or blank header before verifying.
    let Some(token) = token.filter(|t| !t.trim().is_empty()) else {
        return;
    };
    let claims = match verify_access_token(keyring(), &token, NOW_UNIX) {
        Ok(claims) => claims,
        Err(e) => {
            assert!(!e.code().is_empty());
            return;
        }
    };
    assert!(!claims.identity.is_empty());
    assert!(claims.name.as_deref().is_none_or(|n| !n.is_empty()));
    let Some(room) = claims.room.as_deref().filter(|_| claims.room_join) else {
        return;
    };
    assert!(!room.is_empty());
    if let Some(session) = naming().session(room) {
        // A session's channel is always one a browser may subscribe to.
        assert!(ChannelName::parse(&session.channel).is_ok());
        assert_eq!(session.room.as_str(), room);
    }
    if let Some(user) = naming().user_id(&Identity::new(claims.identity.clone())) {
        assert!(!user.as_str().is_empty());
    }
});
