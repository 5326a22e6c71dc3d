//! Builders shared by the engine's tests: observations as the ingest
//! layer would make them, for one room (`RM_a`) of session 121.

use super::*;
use crate::domain::{EventId, Identity, ParticipantSid, RoomSid, UnixMillis, UserId};

pub const ROOM: &str = "itqan-academy-quran-session-121";
pub const T0: UnixMillis = 1_763_719_200_000; // 2025-11-21T10:00:00Z
pub const MIN: i64 = 60_000;

pub fn session() -> Session {
    Naming::default().session(ROOM).unwrap()
}

pub fn who(user: &str, sid: &str) -> Participant {
    Participant {
        user_id: UserId::new(user),
        sid: ParticipantSid::new(sid),
        identity: Identity::new(format!("{user}_Test_User")),
        name: format!("User {user}"),
    }
}

pub fn obs(id: &str, created_at: UnixMillis, fact: Fact) -> Observation {
    Observation {
        id: EventId::new(id),
        created_at,
        room_sid: RoomSid::new("RM_a"),
        metadata_schedule: None,
        fact,
    }
}

pub fn join(id: &str, user: &str, sid: &str, at: UnixMillis) -> Observation {
    obs(
        id,
        at,
        Fact::Joined {
            participant: who(user, sid),
            joined_at: at,
        },
    )
}

pub fn leave(
    id: &str,
    user: &str,
    sid: &str,
    joined: Option<UnixMillis>,
    at: UnixMillis,
) -> Observation {
    obs(
        id,
        at,
        Fact::Left {
            participant: who(user, sid),
            joined_at: joined,
        },
    )
}

pub fn abort(id: &str, user: &str, sid: &str, at: UnixMillis) -> Observation {
    obs(
        id,
        at,
        Fact::Aborted {
            participant: who(user, sid),
        },
    )
}

pub fn finish(id: &str, room_sid: &str, at: UnixMillis) -> Observation {
    Observation {
        id: EventId::new(id),
        created_at: at,
        room_sid: RoomSid::new(room_sid),
        metadata_schedule: None,
        fact: Fact::RoomFinished,
    }
}

pub fn run(events: &[Observation]) -> RoomState {
    let mut state = RoomState::default();
    for e in events {
        state.apply(e);
    }
    state
}
