//! A verified LiveKit webhook → an `Observation` → one `Rooms::update`.
//! Also the replay of a room's log (rule 22), which must read events
//! exactly as live ingestion does — hence both live here.

use crate::domain::{EventId, Identity, ParticipantSid, RoomSid, UnixMillis};
use crate::engine::{Fact, Naming, Observation, Participant, RoomState, Schedule};
use crate::livekit::{WebhookEvent, parse_webhook};
use crate::metrics::Metrics;
use crate::rooms::{Rooms, UpdateError, Updated};
use crate::store::LoggedEvent;

/// What became of an accepted webhook; all are answered 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    Applied,
    Duplicate,
    /// Not attendance: an event type, a room or a participant we skip.
    Ignored(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("malformed webhook body: {0}")]
    Malformed(String),
    #[error(transparent)]
    Update(#[from] UpdateError),
}

impl Rooms {
    /// Applies one verified webhook body. Returns only once the store has
    /// it (or knew it already), so the caller may acknowledge.
    pub async fn ingest_webhook(
        &self,
        body: &[u8],
        received_at: UnixMillis,
    ) -> Result<Ack, IngestError> {
        let event = parse_webhook(body).map_err(|e| IngestError::Malformed(e.to_string()))?;
        if !is_attendance_event(&event.event) {
            return Ok(Ack::Ignored("event type"));
        }
        if event.event.starts_with("participant_")
            && event.participant.as_ref().is_none_or(|p| p.sid.is_empty())
        {
            return Err(IngestError::Malformed(format!(
                "{} without a participant sid",
                event.event
            )));
        }
        let Some(room) = event.room.as_ref().filter(|r| !r.name.is_empty()) else {
            return Ok(Ack::Ignored("no room"));
        };
        let Some(session) = self.session(&room.name) else {
            Metrics::add(&self.metrics.rooms_unmatched, 1);
            tracing::debug!(room = %room.name, "room does not match ROLLCALL_ROOM_PATTERN; ignored");
            return Ok(Ack::Ignored("room"));
        };
        let observation = observe(&event, &self.naming);
        let logged = LoggedEvent {
            id: EventId::new(event.id.clone()),
            received_at,
            // parse_webhook accepted it as JSON, hence UTF-8.
            body: String::from_utf8_lossy(body).into_owned(),
        };
        let updated = self
            .update(&session, Some(logged), |state| match &observation {
                Some(o) => state.apply(o),
                None => Default::default(),
            })
            .await?;
        Ok(match updated {
            Updated::Duplicate => Ack::Duplicate,
            _ if observation.is_none() => Ack::Ignored("participant"),
            _ => Ack::Applied,
        })
    }
}

/// Rebuilds a room from its log (rule 22): the webhook facts come from the
/// log, in any order; what no webhook says — the API schedule, the
/// finalization bookkeeping and the heartbeat-timeout closures (the
/// heartbeat record) — is carried over from `current`.
pub fn replay(log: &[LoggedEvent], current: &RoomState, naming: &Naming) -> RoomState {
    let mut rebuilt = RoomState::default();
    for entry in log {
        let Ok(event) = parse_webhook(entry.body.as_bytes()) else {
            continue;
        };
        if let Some(o) = observe(&event, naming) {
            rebuilt.apply(&o);
        }
    }
    rebuilt.schedule = current.schedule.clone();
    rebuilt.finalization = current.finalization.clone();
    for (user, person) in &current.people {
        for (sid, cycle) in &person.cycles {
            if let Some(at) = cycle.timeout_at
                && let Some(c) = rebuilt
                    .people
                    .get_mut(user)
                    .and_then(|p| p.cycles.get_mut(sid))
            {
                c.timeout_at = Some(at);
            }
        }
    }
    rebuilt
}

/// The event types that carry attendance; everything else (tracks, egress,
/// agents, names a newer LiveKit invents) is acknowledged and skipped.
fn is_attendance_event(name: &str) -> bool {
    matches!(
        name,
        "participant_joined"
            | "participant_left"
            | "participant_connection_aborted"
            | "room_finished"
            | "room_started"
    )
}

/// The engine's view of a webhook, or `None` when it says nothing about an
/// attendee (rule 2: bots, recorders, identities outside the pattern) and
/// carries no schedule.
pub fn observe(event: &WebhookEvent, naming: &Naming) -> Option<Observation> {
    let created_at = event.created_at.saturating_mul(1000);
    let room = event.room.as_ref();
    let room_sid = RoomSid::new(room.map_or("", |r| r.sid.as_str()));
    let metadata_schedule = room.and_then(|r| Schedule::from_metadata(&r.metadata));
    let attendee = event.participant.as_ref().and_then(|p| {
        if !p.kind.is_attendee() || p.sid.is_empty() {
            return None;
        }
        let identity = Identity::new(p.identity.clone());
        Some(Participant {
            user_id: naming.user_id(&identity)?,
            sid: ParticipantSid::new(p.sid.clone()),
            identity,
            name: p.name.clone(),
        })
    });
    let fact = match (event.event.as_str(), attendee) {
        ("room_finished", _) => Fact::RoomFinished,
        ("participant_joined", Some(participant)) => Fact::Joined {
            // Rule 4: joinedAtMs, else joinedAt × 1000, else createdAt.
            joined_at: event
                .participant
                .as_ref()
                .and_then(|p| p.joined_at_millis())
                .unwrap_or(created_at),
            participant,
        },
        ("participant_left", Some(participant)) => Fact::Left {
            joined_at: event
                .participant
                .as_ref()
                .and_then(|p| p.joined_at_millis()),
            participant,
        },
        ("participant_connection_aborted", Some(participant)) => Fact::Aborted { participant },
        // A skipped participant's event or room_started may still carry a
        // schedule in the room metadata.
        _ if metadata_schedule.is_some() => Fact::RoomStarted,
        _ => return None,
    };
    Some(Observation {
        id: EventId::new(event.id.clone()),
        created_at,
        room_sid,
        metadata_schedule,
        fact,
    })
}
