//! A RoomService `ListParticipants` answer (LiveKit's, or whatever answers
//! at `LIVEKIT_URL`) through reconciliation (rules 23–27): decoded as the
//! client decodes it (`livekit::decode_participants`), read through the
//! naming rules (`RawListing::read`), planned against a room that already
//! has cycles (`RoomState::plan_listing`), applied, and logged.
//!
//! Invariants: a listing applied leaves nothing for the same listing to
//! do (rule 26); every closure lands on a cycle that was open, not before
//! its join; its log entry survives the JSON round trip and replays to the
//! very state live reconciliation reached (rule 27).
//!
//! Input: `<ListParticipants body>` (a JSON object).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use rollcall::domain::{EventId, Identity, ParticipantSid, RoomSid, UserId};
use rollcall::engine::{Fact, Observation, Participant, RoomState};
use rollcall::livekit::decode_participants;
use rollcall::reconcile::listing::live_observation;
use rollcall::reconcile::{ListingRecord, RawListing};
use rollcall_fuzz::{NOW_MS, naming};

/// A room that had webhooks: people 1 and 2 joined ten minutes before the
/// listing, person 1 twice (one of the sids a listing may well mention).
fn base() -> RoomState {
    let mut state = RoomState::default();
    for (n, (user, sid)) in [("1", "PA_a"), ("2", "PA_b"), ("1", "PA_c")]
        .into_iter()
        .enumerate()
    {
        state.apply(&Observation {
            id: EventId::new(format!("EV_{n}")),
            created_at: NOW_MS - 600_000,
            room_sid: RoomSid::new("RM_f"),
            metadata_schedule: None,
            fact: Fact::Joined {
                participant: Participant {
                    user_id: UserId::new(user),
                    sid: ParticipantSid::new(sid),
                    identity: Identity::new(format!("{user}_Fuzz")),
                    name: String::new(),
                },
                joined_at: NOW_MS - 600_000,
            },
        });
    }
    state
}

fuzz_target!(|data: &[u8]| {
    let Ok(participants) = decode_participants(data) else {
        return;
    };
    let raw = RawListing {
        room: Some(serde_json::json!({"sid": "RM_f", "name": "x-quran-session-1"})),
        participants,
    };
    let listing = raw.read(NOW_MS, naming());
    let before = base();
    let beats = BTreeMap::from([(UserId::new("2"), NOW_MS - 100_000)]);
    let seen = BTreeMap::from([(ParticipantSid::new("PA_a"), NOW_MS - 200_000)]);
    let plan = before.plan_listing(&listing, &beats, &seen);
    if plan.is_empty() {
        return;
    }
    if let Some(Fact::Listing { closes, .. }) = &plan.fact {
        for close in closes {
            let cycle = &before.people[&close.user_id].cycles[&close.sid];
            assert!(before.closure(cycle).is_none(), "closes only open cycles");
            assert!(close.at >= cycle.joined_at, "never before the join");
            assert!(!listing.present.contains(&close.sid), "never a listed sid");
        }
    }
    let id = EventId::new("LL_fuzz");
    let record = ListingRecord::new(&raw, NOW_MS, &plan);
    let mut live = before.clone();
    live.apply(&live_observation(id.clone(), NOW_MS, &raw, plan));
    assert!(
        live.plan_listing(&listing, &beats, &seen).is_empty(),
        "a listing applied leaves nothing to do"
    );
    let logged: ListingRecord =
        serde_json::from_str(&serde_json::to_string(&record).expect("serializes"))
            .expect("the log entry reads back");
    let mut replayed = before;
    replayed.apply(&logged.observe(id, naming()));
    assert_eq!(replayed, live, "replay reaches the live state");
});
