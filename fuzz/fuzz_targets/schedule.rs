//! Schedules from outside: the body of `PUT /api/sessions/{room}/schedule`
//! (`http::api::parse_schedule_body`) and LiveKit room metadata
//! (`Schedule::from_metadata`, rule 21). An accepted schedule keeps its
//! invariants, yields a window, and survives the JSON round trip the
//! stores put it through.
//!
//! Input: a mode byte (even: API body, odd: room metadata), then the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall::engine::Schedule;
use rollcall::engine::schedule::MAX_DURATION_MINUTES;
use rollcall::http::api::parse_schedule_body;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let schedule = if mode & 1 == 0 {
        match parse_schedule_body(body) {
            Ok(schedule) => schedule,
            Err(e) => {
                assert_eq!(e.status, 400);
                assert_eq!(e.code, "invalid_schedule");
                return;
            }
        }
    } else {
        let Ok(metadata) = std::str::from_utf8(body) else {
            return;
        };
        match Schedule::from_metadata(metadata) {
            Some(schedule) => schedule,
            None => return,
        }
    };
    assert!((1..=MAX_DURATION_MINUTES).contains(&schedule.duration_minutes));
    assert!(schedule.expected.iter().all(|i| !i.as_str().is_empty()));
    assert!(schedule.ends_at() > schedule.starts_at.0);
    let _ = schedule.window();
    // Stored (Redis) and read back; also what the API answers with.
    let json = serde_json::to_string(&schedule).expect("a schedule serializes");
    let back: Schedule = serde_json::from_str(&json).expect("a stored schedule reads back");
    assert_eq!(back, schedule);
});
