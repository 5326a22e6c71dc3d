//! A webhook body after its signature checked: `parse_webhook`, then
//! `ingest::observe` (what the engine sees) and `RoomState::apply`, for a
//! sequence of bodies as one room receives them; then the state is read the
//! way the server reads it (roster, `attendance.updated` payloads, the
//! snapshot, the sweeper's next due time) and round-tripped through the JSON
//! the Redis store keeps.
//!
//! Input: up to 8 bodies separated by NUL bytes (a JSON text holds none).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use rollcall::engine::view::{SessionHeader, snapshot_json};
use rollcall::engine::{RoomState, RoomView, VerdictRules};
use rollcall::ingest::observe;
use rollcall::livekit::parse_webhook;
use rollcall_fuzz::{NOW_MS, fixture_session, is_json, naming};

/// Bodies per input; more adds time per execution, not coverage.
const MAX_BODIES: usize = 8;

fuzz_target!(|data: &[u8]| {
    let mut state = RoomState::default();
    for body in data.split(|&b| b == 0).take(MAX_BODIES) {
        let event = match parse_webhook(body) {
            Ok(event) => event,
            Err(e) => {
                // Answered 400 `malformed_webhook` with this text.
                assert!(!e.code().is_empty());
                let _ = e.to_string();
                continue;
            }
        };
        assert!(!event.event.is_empty() && !event.id.is_empty());
        if let Some(observation) = observe(&event, naming()) {
            state.apply(&observation);
        }
    }
    let rules = VerdictRules::default();
    let view = RoomView {
        session: fixture_session(),
        state: &state,
        naming: naming(),
        rules: &rules,
    };
    let roster = view.roster(NOW_MS);
    for attendance in &roster {
        assert!(is_json(&attendance.updated_json(NOW_MS)));
    }
    let header = SessionHeader {
        schedule: state.effective_schedule(),
        is_final: state.finalization.is_final(),
        revision: state.finalization.revision,
    };
    assert!(is_json(&snapshot_json(
        fixture_session().room.as_str(),
        &roster,
        header,
        NOW_MS
    )));
    let heartbeats: BTreeMap<_, _> = state.people.keys().map(|u| (u.clone(), NOW_MS)).collect();
    let _ = state.next_due(&heartbeats, 60_000, 30_000);
    // The Redis store writes the state as JSON and reads it back: whatever a
    // webhook can put in a state must survive that.
    let json = serde_json::to_string(&state).expect("a room state serializes");
    let back: RoomState = serde_json::from_str(&json).expect("a stored room state reads back");
    assert_eq!(back, state);
});
