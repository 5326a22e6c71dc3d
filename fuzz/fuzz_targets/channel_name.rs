//! Channel names and socket ids from outside (subscribe frames, the Pusher
//! HTTP API's `channels`/`channel`/path/`socket_id`): `ChannelName::parse`
//! must agree exactly with the engine's `is_valid_channel_name` (the check
//! a room's channel passes), and `SocketId::parse` with its documented
//! shape `^\d{1,10}\.\d{1,10}$`.
//!
//! Input: the string, tried as both.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall::engine::naming::is_valid_channel_name;
use rollcall::pusher::channel::MAX_CHANNEL_NAME_LEN;
use rollcall::pusher::{ChannelKind, ChannelName, SocketId};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ChannelName::parse(text) {
        Ok(channel) => {
            assert!(is_valid_channel_name(text));
            assert_eq!(channel.as_str(), text);
            assert!(!text.is_empty() && text.len() <= MAX_CHANNEL_NAME_LEN);
            let kind = channel.kind();
            assert_eq!(kind == ChannelKind::Private, text.starts_with("private-"));
            assert_eq!(kind == ChannelKind::Presence, text.starts_with("presence-"));
        }
        Err(e) => {
            assert!(!is_valid_channel_name(text), "{text:?} refused: {e}");
            let _ = e.to_string();
        }
    }
    let digits = |p: &str| (1..=10).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    let shaped = text
        .split_once('.')
        .is_some_and(|(a, b)| digits(a) && digits(b));
    match SocketId::parse(text) {
        Ok(id) => {
            assert!(shaped, "{text:?} accepted as a socket id");
            assert_eq!(id.as_str(), text);
        }
        Err(_) => assert!(!shaped, "{text:?} refused as a socket id"),
    }
});
