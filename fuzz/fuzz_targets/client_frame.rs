//! A WebSocket text message from a browser: `ClientFrame::parse`, then what
//! the socket task reads from it (`pusher/socket.rs` `on_message` and
//! `subscribe`): the event, `data.channel` through `ChannelName::parse`, and
//! for a private channel `data.auth` through `verify_channel_auth`. Every
//! frame the server would answer with is built and must be valid JSON.
//!
//! Input: the message text (tungstenite delivers only UTF-8 text).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall::pusher::auth::verify_channel_auth;
use rollcall::pusher::frame::{self, ClientFrame};
use rollcall::pusher::{ChannelKind, ChannelName};
use rollcall_fuzz::{PUSHER_APP_KEY, PUSHER_APP_SECRET, PUSHER_SOCKET_ID, is_json};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let client_frame = match ClientFrame::parse(text) {
        Ok(f) => f,
        Err(err) => {
            let reply = frame::error(None, &format!("malformed message: {err}"));
            assert!(is_json(reply.as_str()));
            return;
        }
    };
    // Echoing what a client sent inside a server frame stays valid JSON.
    let echoed = frame::event(
        &client_frame.event,
        client_frame.channel.as_deref(),
        &client_frame.data.to_string(),
    );
    assert!(is_json(echoed.as_str()));
    match client_frame.event.as_str() {
        "pusher:subscribe" | "pusher:unsubscribe" => {
            let Some(name) = client_frame.data_str("channel") else {
                return;
            };
            let channel = match ChannelName::parse(name) {
                Ok(channel) => channel,
                Err(e) => {
                    let reply = frame::error(None, &format!("invalid channel name: {e}"));
                    assert!(is_json(reply.as_str()));
                    return;
                }
            };
            if channel.kind() == ChannelKind::Private {
                let _ = verify_channel_auth(
                    PUSHER_APP_KEY,
                    PUSHER_APP_SECRET,
                    PUSHER_SOCKET_ID,
                    channel.as_str(),
                    None,
                    client_frame.data_str("auth").unwrap_or_default(),
                );
            }
            let reply = frame::subscription_succeeded(channel.as_str(), "{}");
            assert!(is_json(reply.as_str()));
        }
        _ => {}
    }
});
