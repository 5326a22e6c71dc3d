//! Room names and identities from outside (webhooks, heartbeat tokens, API
//! paths) through the default room and identity patterns (rules 1–2): a
//! matched room always yields a valid Pusher channel, a matched identity a
//! non-empty user id.
//!
//! Input: `<room>\0<identity>`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall::domain::Identity;
use rollcall::pusher::ChannelName;
use rollcall_fuzz::{fields, naming};

fuzz_target!(|data: &[u8]| {
    let [room, identity] = fields::<2>(data);
    if let Ok(room) = std::str::from_utf8(room)
        && let Some(session) = naming().session(room)
    {
        assert_eq!(session.room.as_str(), room);
        assert!(ChannelName::parse(&session.channel).is_ok());
    }
    if let Ok(identity) = std::str::from_utf8(identity)
        && let Some(user) = naming().user_id(&Identity::new(identity))
    {
        assert!(!user.as_str().is_empty());
        let _ = user.to_json();
    }
});
