//! `ROLLCALL_ROOM_PATTERN`, `ROLLCALL_IDENTITY_PATTERN` and
//! `ROLLCALL_CHANNEL_TEMPLATE` as config compiles them (`Naming::new`),
//! then arbitrary room names and identities through the result: a bad
//! pattern or template is an error, never a panic, and whatever compiles
//! keeps the guarantees of `naming` (valid channels, non-empty user ids).
//!
//! Input: `<room pattern>\0<identity pattern>\0<template>\0<room>\0<identity>`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall::domain::Identity;
use rollcall::engine::Naming;
use rollcall::pusher::ChannelName;
use rollcall_fuzz::fields;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let [room_pattern, identity_pattern, template, room, identity] =
        fields::<5>(text.as_bytes()).map(|f| std::str::from_utf8(f).expect("split at ASCII NUL"));
    let naming = match Naming::new(room_pattern, identity_pattern, template) {
        Ok(naming) => naming,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    if let Some(session) = naming.session(room) {
        assert_eq!(session.room.as_str(), room);
        assert!(ChannelName::parse(&session.channel).is_ok());
    }
    if let Some(user) = naming.user_id(&Identity::new(identity)) {
        assert!(!user.as_str().is_empty());
    }
});
