//! A verified LiveKit webhook → one atomic store commit → broadcasts.
//!
//! The attendance rules stay in the engine; this module only translates
//! the webhook into an `Observation`, runs the optimistic
//! load → apply → commit loop, and renders the `attendance.updated` frames
//! that the store publishes with the commit (so they go out in commit order).

use std::sync::Arc;

use crate::domain::{EventId, Identity, ParticipantSid, RoomSid, UnixMillis};
use crate::engine::view::UPDATED_EVENT;
use crate::engine::{
    Attendance, Fact, Naming, Observation, Participant, RoomState, Session, Window,
};
use crate::livekit::{ParseError, WebhookEvent, parse_webhook};
use crate::metrics::Metrics;
use crate::pusher::frame;
use crate::store::{Broadcast, Commit, CommitOutcome, LoggedEvent, Store, StoreError};

/// How many times a commit is retried after losing a race to another
/// writer of the same room before the webhook is answered 503 (LiveKit
/// then retries it).
const MAX_COMMIT_ATTEMPTS: usize = 32;

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
    Store(#[from] StoreError),
    #[error("the room is being written too fast: gave up after {MAX_COMMIT_ATTEMPTS} attempts")]
    Contention,
}

/// The webhook pipeline, shared by every request.
#[derive(Clone)]
pub struct Ingest {
    pub store: Arc<dyn Store>,
    pub naming: Naming,
    pub metrics: Arc<Metrics>,
}

impl Ingest {
    /// Applies one verified webhook body. Returns only once the store has
    /// it (or knew it already), so the caller may acknowledge.
    pub async fn webhook(&self, body: &[u8], received_at: UnixMillis) -> Result<Ack, IngestError> {
        let event =
            parse_webhook(body).map_err(|e: ParseError| IngestError::Malformed(e.to_string()))?;
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
        let Some(session) = self.naming.session(&room.name) else {
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
        if self.store.is_applied(&session.room, &logged.id).await? {
            return Ok(Ack::Duplicate);
        }
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let (version, mut state) = match self.store.load_room(&session.room).await? {
                Some(record) => (record.version, record.state),
                None => {
                    // Before the first commit, so that a subscriber who
                    // sees this room's first update can also find it.
                    self.store
                        .link_channel(&session.channel, &session.room)
                        .await?;
                    (0, RoomState::default())
                }
            };
            let changes = observation
                .as_ref()
                .map(|o| state.apply(o))
                .unwrap_or_default();
            let now = crate::domain::now_millis();
            let broadcasts: Vec<Broadcast> = changes
                .people
                .iter()
                .filter_map(|user| {
                    let person = state.people.get(user)?;
                    let view =
                        Attendance::read(&session, &state, user, person, Window::UNBOUNDED, now);
                    Some(updated_broadcast(&session, &view, now))
                })
                .collect();
            let n = broadcasts.len() as u64;
            let commit = Commit {
                expected_version: version,
                event: logged.clone(),
                state: observation.is_some().then_some(state),
                broadcasts,
            };
            match self.store.commit(&session.room, commit).await? {
                CommitOutcome::Committed { .. } => {
                    Metrics::add(&self.metrics.attendance_updates, n);
                    return Ok(if observation.is_some() {
                        Ack::Applied
                    } else {
                        Ack::Ignored("participant")
                    });
                }
                CommitOutcome::Duplicate => return Ok(Ack::Duplicate),
                CommitOutcome::Conflict => Metrics::add(&self.metrics.commit_conflicts, 1),
            }
        }
        Err(IngestError::Contention)
    }
}

/// The `attendance.updated` frame for one person, serialized once.
pub fn updated_broadcast(session: &Session, view: &Attendance, now: UnixMillis) -> Broadcast {
    Broadcast {
        channel: session.channel.clone(),
        frame: frame::event(
            UPDATED_EVENT,
            Some(&session.channel),
            &view.updated_json(now),
        ),
    }
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
/// attendee (rule 2: bots, recorders, identities outside the pattern).
fn observe(event: &WebhookEvent, naming: &Naming) -> Option<Observation> {
    let created_at = event.created_at.saturating_mul(1000);
    let room_sid = RoomSid::new(event.room.as_ref().map_or("", |r| r.sid.as_str()));
    let fact = if event.event == "room_finished" {
        Fact::RoomFinished
    } else {
        let p = event.participant.as_ref()?;
        if !p.kind.is_attendee() || p.sid.is_empty() {
            return None;
        }
        let identity = Identity::new(p.identity.clone());
        let participant = Participant {
            user_id: naming.user_id(&identity)?,
            sid: ParticipantSid::new(p.sid.clone()),
            identity,
            name: p.name.clone(),
        };
        match event.event.as_str() {
            "participant_joined" => Fact::Joined {
                participant,
                // Rule 4: joinedAtMs, else joinedAt × 1000, else createdAt.
                joined_at: p.joined_at_millis().unwrap_or(created_at),
            },
            "participant_left" => Fact::Left {
                participant,
                joined_at: p.joined_at_millis(),
            },
            "participant_connection_aborted" => Fact::Aborted { participant },
            _ => return None,
        }
    };
    Some(Observation {
        id: EventId::new(event.id.clone()),
        created_at,
        room_sid,
        fact,
    })
}
