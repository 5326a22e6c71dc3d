//! A verified LiveKit webhook → an `Observation` → one `Rooms::update`.
//! Also the replay of a room's log (rule 22), which must read events
//! exactly as live ingestion does — hence both live here.

use crate::domain::{EventId, Identity, ParticipantSid, RoomSid, Timestamp, UnixMillis};
use crate::engine::{Fact, Naming, Observation, Participant, RoomState, Schedule};
use crate::livekit::{WebhookEvent, parse_webhook};
use crate::metrics::Metrics;
use crate::reconcile::ListingRecord;
use crate::rooms::{Rooms, UpdateError, Updated};
use crate::store::{LogKind, LoggedEvent};

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
            kind: LogKind::Webhook,
        };
        let updated = self
            .update(&session, Some(logged), |state| match &observation {
                Some(o) => state.apply(o),
                None => Default::default(),
            })
            .await?;
        let ack = match updated {
            Updated::Duplicate => Ack::Duplicate,
            _ if observation.is_none() => Ack::Ignored("participant"),
            _ => Ack::Applied,
        };
        if ack == Ack::Applied {
            let participant = event.participant.as_ref();
            tracing::info!(
                room = %room.name,
                event = %event.event,
                identity = participant.map_or("", |p| p.identity.as_str()),
                sid = participant.map_or("", |p| p.sid.as_str()),
                id = %event.id,
                "webhook applied"
            );
        }
        Ok(ack)
    }
}

/// Rebuilds a room from its log (rules 22, 27): the webhook facts come
/// from the log, in any order, and so do the RoomService listings that
/// changed the room (their closures were decisions about the state they
/// met, so the log keeps them and they are applied in log order); what
/// neither says — the API schedule, the finalization bookkeeping and the
/// heartbeat-timeout closures (the heartbeat record) — is carried over from
/// `current`.
pub fn replay(log: &[LoggedEvent], current: &RoomState, naming: &Naming) -> RoomState {
    let mut rebuilt = RoomState::default();
    for entry in log {
        if let Some(o) = observe_logged(entry, naming) {
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
                    .and_then(|p| std::sync::Arc::make_mut(p).cycles.get_mut(sid))
            {
                c.timeout_at = Some(at);
            }
        }
    }
    rebuilt
}

/// The observation a log entry stands for, read as it was live.
pub fn observe_logged(entry: &LoggedEvent, naming: &Naming) -> Option<Observation> {
    match entry.kind {
        LogKind::Webhook => {
            let event = parse_webhook(entry.body.as_bytes()).ok()?;
            observe(&event, naming)
        }
        LogKind::LivekitListing => {
            let record: ListingRecord = serde_json::from_str(&entry.body).ok()?;
            Some(record.observe(entry.id.clone(), naming))
        }
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
/// attendee (rule 2: bots, recorders, identities outside the pattern) and
/// carries no schedule.
pub fn observe(event: &WebhookEvent, naming: &Naming) -> Option<Observation> {
    // Instants from the body are kept where RFC 3339 can write them
    // (`Timestamp::in_range`): LiveKit sends nothing else, and a body that
    // did (`joinedAtMs` near i64::MAX) made the sweeper's `next_due`
    // overflow (found by the `webhook_body` fuzz target). A join time out of
    // range counts as not sent (`joined_at_millis`); `createdAt` is clamped.
    let created_at = event
        .created_at
        .saturating_mul(1000)
        .clamp(Timestamp::MIN_MILLIS, Timestamp::MAX_MILLIS);
    let joined_at = event
        .participant
        .as_ref()
        .and_then(|p| p.joined_at_millis());
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
            joined_at: joined_at.unwrap_or(created_at),
            participant,
        },
        ("participant_left", Some(participant)) => Fact::Left {
            joined_at,
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::domain::{Timestamp, UserId};

    const T0: i64 = 1_763_719_200; // seconds

    /// A webhook body as LiveKit would send it.
    fn body(kind: u8, user: u8, sid: u8, at: i64, back: i64, n: u32, meta: bool) -> String {
        let event = [
            "participant_joined",
            "participant_left",
            "participant_connection_aborted",
            "room_finished",
        ][kind as usize % 4];
        let metadata = if meta {
            r#", "metadata":"{\"starts_at\":\"2025-11-21T10:00:00Z\",\"duration_minutes\":30}""#
        } else {
            ""
        };
        let participant = if event == "room_finished" {
            String::new()
        } else {
            format!(
                r#", "participant":{{"sid":"PA_{sid}", "identity":"{user}_U", "name":"U{user}", "joinedAtMs":"{}"}}"#,
                (at - back) * 1000 + 123
            )
        };
        format!(
            r#"{{"event":"{event}", "room":{{"sid":"RM_a", "name":"x-quran-session-1"{metadata}}}{participant}, "id":"EV_{n}", "createdAt":"{at}"}}"#
        )
    }

    #[derive(Debug, Clone)]
    enum Step {
        Webhook(String),
        Schedule(u32),
        Sweep {
            beat_user: u8,
            beat_at: i64,
            now: i64,
        },
        Finalize,
        /// A RoomService listing with these (user, sid) pairs present,
        /// a heartbeat of user 1 and a sighting of `PA_0`.
        Listing {
            present: Vec<(u8, u8)>,
            taken: i64,
            beat: i64,
            seen: i64,
            meta: bool,
        },
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0u8..4, 1u8..4, 0u8..4, 0i64..3600, 0i64..600, 0u32..10_000, any::<bool>())
                .prop_map(|(k, u, s, at, back, n, meta)| Step::Webhook(body(k, u, s, T0 + at, back, n, meta))),
            1 => (1u32..120).prop_map(Step::Schedule),
            1 => (1u8..4, 0i64..3600, 0i64..7200).prop_map(|(u, b, now)| Step::Sweep {
                beat_user: u, beat_at: (T0 + b) * 1000, now: (T0 + now) * 1000,
            }),
            1 => Just(Step::Finalize),
            2 => (prop::collection::vec((1u8..4, 0u8..4), 0..4), 0i64..7200, 0i64..3600, 0i64..3600, any::<bool>())
                .prop_map(|(present, taken, beat, seen, meta)| Step::Listing {
                    present, taken: (T0 + taken) * 1000, beat: (T0 + beat) * 1000,
                    seen: (T0 + seen) * 1000, meta,
                }),
        ]
    }

    /// A RoomService answer as LiveKit's Twirp JSON spells it.
    fn raw_listing(present: &[(u8, u8)], taken: i64, meta: bool) -> crate::reconcile::RawListing {
        let metadata = if meta {
            r#"{"starts_at":"2025-11-21T10:00:00Z","duration_minutes":45}"#
        } else {
            ""
        };
        crate::reconcile::RawListing {
            room: Some(serde_json::json!({"sid": "RM_a", "name": "x-quran-session-1", "metadata": metadata})),
            participants: present
                .iter()
                .map(|(user, sid)| serde_json::json!({
                    "sid": format!("PA_{sid}"), "identity": format!("{user}_U"), "name": format!("U{user}"),
                    "state": "ACTIVE", "joined_at_ms": (taken - 600_000).to_string(),
                }))
                .collect(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Rules 22 and 27: rebuilding from the log — webhooks and the
        /// listings that changed the room — (and what neither says) gives
        /// exactly the state live processing reached.
        #[test]
        fn rule22_replay_equals_live(steps in prop::collection::vec(arb_step(), 0..40)) {
            let naming = Naming::default();
            let mut live = RoomState::default();
            let mut log = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for step in steps {
                match step {
                    Step::Webhook(b) => {
                        let event = parse_webhook(b.as_bytes()).unwrap();
                        if !seen.insert(event.id.clone()) {
                            continue; // a duplicate is neither applied nor logged
                        }
                        if let Some(o) = observe(&event, &naming) {
                            live.apply(&o);
                        }
                        log.push(LoggedEvent { id: EventId::new(event.id), received_at: 0, body: b, kind: LogKind::Webhook });
                    }
                    Step::Schedule(minutes) => {
                        let s = Schedule::new(Timestamp(T0 * 1000), minutes, vec![]).unwrap();
                        live.set_schedule(Some(s));
                    }
                    Step::Sweep { beat_user, beat_at, now } => {
                        let beats: BTreeMap<UserId, i64> =
                            [(UserId::new(beat_user.to_string()), beat_at)].into_iter().collect();
                        let stale = live.stale_cycles(&beats, now, 300_000);
                        live.close_stale(&stale);
                    }
                    Step::Finalize => {
                        live.finalize();
                    }
                    Step::Listing { present, taken, beat, seen, meta } => {
                        // As `Reconciler::reconcile` does: plan, apply, log.
                        let raw = raw_listing(&present, taken, meta);
                        let listing = raw.read(taken, &naming);
                        let beats = [(UserId::new("1"), beat)].into();
                        let seen = [(crate::domain::ParticipantSid::new("PA_0"), seen)].into();
                        let plan = live.plan_listing(&listing, &beats, &seen);
                        if plan.is_empty() {
                            continue; // nothing changes, nothing is logged
                        }
                        let id = EventId::new(format!("LL_{}", log.len()));
                        let record = crate::reconcile::ListingRecord::new(&raw, taken, &plan);
                        live.apply(&crate::reconcile::listing::live_observation(id.clone(), taken, &raw, plan));
                        log.push(LoggedEvent {
                            id,
                            received_at: 0,
                            body: serde_json::to_string(&record).unwrap(),
                            kind: LogKind::LivekitListing,
                        });
                    }
                }
            }
            prop_assert_eq!(replay(&log, &live, &naming), live);
        }
    }

    /// Found by the `webhook_body` fuzz target: a join time near i64::MAX
    /// made `next_due` overflow (a panic with overflow checks, a due time in
    /// the past without). Out-of-range instants now count as absent or are
    /// clamped, so the engine's arithmetic stays far from the limits.
    #[test]
    fn instants_out_of_rfc3339_range_are_absent_or_clamped() {
        let naming = Naming::default();
        let fixture = include_str!("../tests/fixtures/livekit/participant_joined.json");
        let huge = fixture
            .replace("1763719201456", &i64::MAX.to_string())
            .replace(
                r#""createdAt":"1763719202""#,
                r#""createdAt":"-9223372036854775808""#,
            );
        let o = observe(&parse_webhook(huge.as_bytes()).unwrap(), &naming).unwrap();
        assert_eq!(o.created_at, Timestamp::MIN_MILLIS, "createdAt is clamped");
        assert!(
            matches!(&o.fact, Fact::Joined { joined_at, .. } if *joined_at == 1_763_719_201_000),
            "joinedAtMs out of range is absent, so joinedAt counts: {:?}",
            o.fact
        );
        let both_huge = huge.replace(
            r#""joinedAt":"1763719201""#,
            r#""joinedAt":"9223372036854775""#,
        );
        let o = observe(&parse_webhook(both_huge.as_bytes()).unwrap(), &naming).unwrap();
        assert!(matches!(&o.fact, Fact::Joined { joined_at, .. }
            if *joined_at == Timestamp::MIN_MILLIS));
        let mut state = RoomState::default();
        state.apply(&o);
        let beats: BTreeMap<UserId, i64> = [(UserId::new("1"), 1_763_719_300_000)].into();
        assert_eq!(
            state.next_due(&beats, 60_000, 30_000),
            Some(1_763_719_360_001)
        );
    }

    #[test]
    fn the_fixtures_translate_into_the_rules_observations() {
        let naming = Naming::default();
        let joined = parse_webhook(include_bytes!(
            "../tests/fixtures/livekit/participant_joined.json"
        ))
        .unwrap();
        let o = observe(&joined, &naming).unwrap();
        assert_eq!(o.created_at, 1_763_719_202_000);
        assert!(matches!(&o.fact, Fact::Joined { joined_at, participant }
            if *joined_at == 1_763_719_201_456 && participant.user_id.as_str() == "1"));
        let egress = parse_webhook(include_bytes!(
            "../tests/fixtures/livekit/egress_participant_joined.json"
        ))
        .unwrap();
        assert_eq!(
            observe(&egress, &naming),
            None,
            "recorders are not attendees"
        );
        let finished = parse_webhook(include_bytes!(
            "../tests/fixtures/livekit/room_finished.json"
        ))
        .unwrap();
        assert!(matches!(
            observe(&finished, &naming).unwrap().fact,
            Fact::RoomFinished
        ));
    }
}
