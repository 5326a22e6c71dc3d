//! A RoomService listing as rollcall reads it, and as its room's log keeps
//! it (rule 27). Live reconciliation and replay read a listing through the
//! same functions here, as webhooks go through `ingest::observe`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::domain::{EventId, Identity, ParticipantSid, RoomSid, Timestamp, UnixMillis, UserId};
use crate::engine::{
    Fact, ListedClose, ListedJoin, Listing, ListingPlan, Naming, Observation, Participant, Schedule,
};
use crate::livekit::{ParticipantInfo, ParticipantState, Room};

/// One room as LiveKit's RoomService answered, kept as raw JSON so the log
/// holds exactly what LiveKit said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawListing {
    /// The room as `ListRooms` returned it; `None` when LiveKit does not
    /// have the room (not listed, or `ListParticipants` said `not_found`).
    pub room: Option<serde_json::Value>,
    /// The participants exactly as `ListParticipants` returned them.
    pub participants: Vec<serde_json::Value>,
}

impl RawListing {
    pub fn room(&self) -> Option<Room> {
        self.room
            .as_ref()
            .and_then(|r| serde_json::from_value(r.clone()).ok())
    }

    /// The participants that parse; one LiveKit sends in a shape this
    /// build cannot read is skipped (and so never closes nor opens).
    pub fn participants(&self) -> Vec<ParticipantInfo> {
        self.participants
            .iter()
            .filter_map(|p| serde_json::from_value(p.clone()).ok())
            .collect()
    }

    /// The engine's view of the listing (rules 2, 24): who is present,
    /// which of them are attendees and since when.
    pub fn read(&self, taken_at: UnixMillis, naming: &Naming) -> Listing {
        let mut present = BTreeSet::new();
        let mut joins = Vec::new();
        for p in self.participants() {
            let here = matches!(p.state, ParticipantState::Joined | ParticipantState::Active);
            if !here || p.sid.is_empty() {
                continue;
            }
            present.insert(ParticipantSid::new(p.sid.clone()));
            if !p.kind.is_attendee() {
                continue;
            }
            let identity = Identity::new(p.identity.clone());
            let Some(user_id) = naming.user_id(&identity) else {
                continue;
            };
            joins.push(ListedJoin {
                // Without a join time LiveKit still says the sid is here
                // now: the listing's instant bounds the join from above.
                joined_at: p.joined_at_millis().unwrap_or(taken_at),
                participant: Participant {
                    user_id,
                    sid: ParticipantSid::new(p.sid),
                    identity,
                    name: p.name,
                },
            });
        }
        Listing {
            taken_at,
            present,
            joins,
            metadata_schedule: self
                .room()
                .and_then(|r| Schedule::from_metadata(&r.metadata)),
        }
    }

    fn room_sid(&self) -> RoomSid {
        RoomSid::new(self.room().map(|r| r.sid).unwrap_or_default())
    }
}

/// Which listed participant a listing opened (or refined) a cycle of.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OpenedRef {
    pub user_id: UserId,
    pub sid: ParticipantSid,
}

/// A listing's log entry (`kind: livekit_listing`): what LiveKit said, when
/// it was asked, and what rollcall decided from it against the state it
/// met — the decisions are recorded because they depended on heartbeats
/// and earlier listings that no log holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListingRecord {
    pub taken_at: Timestamp,
    pub room: Option<serde_json::Value>,
    pub participants: Vec<serde_json::Value>,
    /// The listed participants whose joins changed the room (rule 24).
    pub opened: Vec<OpenedRef>,
    /// The open cycles the listing closed, and where (rule 25).
    pub closed: Vec<ListedClose>,
    /// Whether the listed room metadata's schedule was taken (rule 21).
    #[serde(default)]
    pub schedule_from_metadata: bool,
}

impl ListingRecord {
    pub fn new(raw: &RawListing, taken_at: UnixMillis, plan: &ListingPlan) -> Self {
        let (opened, closed) = match &plan.fact {
            Some(Fact::Listing { opens, closes }) => (
                opens
                    .iter()
                    .map(|j| OpenedRef {
                        user_id: j.participant.user_id.clone(),
                        sid: j.participant.sid.clone(),
                    })
                    .collect(),
                closes.clone(),
            ),
            _ => (Vec::new(), Vec::new()),
        };
        Self {
            taken_at: Timestamp(taken_at),
            room: raw.room.clone(),
            participants: raw.participants.clone(),
            opened,
            closed,
            schedule_from_metadata: plan.metadata_schedule.is_some(),
        }
    }

    pub fn raw(&self) -> RawListing {
        RawListing {
            room: self.room.clone(),
            participants: self.participants.clone(),
        }
    }

    /// The observation this entry stands for (rule 27): the joins it
    /// opened, read from LiveKit's answer as live reconciliation read them,
    /// and the closures it recorded.
    pub fn observe(&self, id: EventId, naming: &Naming) -> Observation {
        let raw = self.raw();
        let listing = raw.read(self.taken_at.0, naming);
        let opened: BTreeSet<&OpenedRef> = self.opened.iter().collect();
        let plan = ListingPlan {
            fact: Some(Fact::Listing {
                opens: listing
                    .joins
                    .into_iter()
                    .filter(|j| {
                        opened.contains(&OpenedRef {
                            user_id: j.participant.user_id.clone(),
                            sid: j.participant.sid.clone(),
                        })
                    })
                    .collect(),
                closes: self.closed.clone(),
            }),
            metadata_schedule: listing
                .metadata_schedule
                .filter(|_| self.schedule_from_metadata),
        };
        observation(id, self.taken_at.0, raw.room_sid(), plan)
    }
}

/// The observation a plan makes (`Fact::RoomStarted` carries a schedule
/// alone, as for a webhook with nothing else to say).
pub fn observation(
    id: EventId,
    taken_at: UnixMillis,
    room_sid: RoomSid,
    plan: ListingPlan,
) -> Observation {
    Observation {
        id,
        created_at: taken_at,
        room_sid,
        metadata_schedule: plan.metadata_schedule,
        fact: plan.fact.unwrap_or(Fact::RoomStarted),
    }
}

/// The observation a live plan makes for `raw`.
pub fn live_observation(
    id: EventId,
    taken_at: UnixMillis,
    raw: &RawListing,
    plan: ListingPlan,
) -> Observation {
    observation(id, taken_at, raw.room_sid(), plan)
}
