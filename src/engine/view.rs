//! The contract's `attendance` object: a person's facts read at an instant
//! through a counting window (rules 9–11).

use serde::Serialize;

use super::interval::{Interval, Window, union_length};
use super::naming::{Naming, Session};
use super::schedule::Schedule;
use super::state::{ClosedBy, OpenedBy, Person, RoomState};
use super::verdict::{self, VerdictRules};
use crate::domain::{Identity, ParticipantSid, Timestamp, UnixMillis, UserId};

/// A room read at an instant: the session it is, its facts, and the rules
/// that turn them into numbers.
#[derive(Debug, Clone, Copy)]
pub struct RoomView<'a> {
    pub session: &'a Session,
    pub state: &'a RoomState,
    pub naming: &'a Naming,
    pub rules: &'a VerdictRules,
}

impl RoomView<'_> {
    /// Rule 10: the schedule's window, unbounded without a schedule.
    pub fn window(&self) -> Window {
        self.state
            .effective_schedule()
            .map_or(Window::UNBOUNDED, |s| s.window())
    }

    pub fn attendance(&self, user: &UserId, now: UnixMillis) -> Option<Attendance> {
        let person = self.state.people.get(user)?;
        Some(self.read(user, person, now))
    }

    /// Everyone who joined, then every expected identity that never did
    /// (rule 19), each read at `now`.
    pub fn roster(&self, now: UnixMillis) -> Vec<Attendance> {
        let mut roster: Vec<Attendance> = self
            .state
            .people
            .iter()
            .map(|(user, person)| self.read(user, person, now))
            .collect();
        if let Some(schedule) = self.state.effective_schedule() {
            for identity in &schedule.expected {
                let user = self
                    .naming
                    .user_id(identity)
                    .unwrap_or_else(|| UserId::new(identity.as_str()));
                if !self.state.people.contains_key(&user) {
                    roster.push(self.absentee(user, identity));
                }
            }
        }
        roster
    }

    fn read(&self, user: &UserId, person: &Person, now: UnixMillis) -> Attendance {
        let mut a = Attendance::read(self.session, self.state, user, person, self.window(), now);
        if person
            .name
            .as_ref()
            .is_none_or(|n| n.value.trim().is_empty())
        {
            a.name = self.naming.display_name(&person.identity.value);
        }
        self.judge(&mut a);
        a
    }

    /// An expected person with no cycle at all.
    fn absentee(&self, user: UserId, identity: &Identity) -> Attendance {
        let mut a = Attendance {
            room: self.session.room.to_string(),
            session_id: self.session.session_id.clone(),
            session_type: self.session.session_type.clone(),
            identity: identity.to_string(),
            name: self.naming.display_name(identity),
            is_currently_in_meeting: false,
            status: LiveStatus::Left,
            duration_ms: 0,
            duration_seconds: 0,
            duration_minutes: 0,
            current_cycle_started_at: None,
            join_count: 0,
            leave_count: 0,
            first_join_time: None,
            last_leave_time: None,
            attendance_status: None,
            attendance_percentage: None,
            is_late: None,
            late_minutes: None,
            is_final: false,
            cycles: Vec::new(),
            counting_window: None,
            user_id: user,
        };
        self.judge(&mut a);
        a
    }

    /// Rules 16–18 and `is_final`, once a schedule is known.
    fn judge(&self, a: &mut Attendance) {
        a.is_final = self.state.finalization.is_final();
        let Some(schedule) = self.state.effective_schedule() else {
            return;
        };
        a.counting_window = Some(CountingWindow {
            starts_at: schedule.starts_at,
            ends_at: Timestamp(schedule.ends_at()),
        });
        let pct = verdict::percentage(a.duration_ms, schedule.duration_ms());
        let late = a
            .first_join_time
            .map(|t| verdict::is_late(t.0, schedule.starts_at.0, self.rules));
        a.attendance_percentage = Some(pct);
        a.is_late = late;
        a.late_minutes = a
            .first_join_time
            .map(|t| verdict::late_minutes(t.0, schedule.starts_at.0, self.rules));
        a.attendance_status = Some(verdict::status(pct, late.unwrap_or(false), self.rules));
    }
}

/// One person's attendance, exactly as PRODUCT.md's `attendance` object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attendance {
    pub room: String,
    pub session_id: Option<String>,
    pub session_type: Option<String>,
    pub identity: String,
    pub name: String,
    pub is_currently_in_meeting: bool,
    pub status: LiveStatus,
    pub duration_ms: i64,
    pub duration_seconds: i64,
    pub duration_minutes: i64,
    pub current_cycle_started_at: Option<Timestamp>,
    pub join_count: usize,
    pub leave_count: usize,
    pub first_join_time: Option<Timestamp>,
    pub last_leave_time: Option<Timestamp>,
    pub attendance_status: Option<Verdict>,
    pub attendance_percentage: Option<f64>,
    pub is_late: Option<bool>,
    /// Whole minutes from the start to the first join when late, 0 when on
    /// time; `None` without a schedule or before any join.
    pub late_minutes: Option<i64>,
    pub is_final: bool,
    pub cycles: Vec<CycleView>,
    /// The scheduled window the numbers count in (rule 10), so a page can
    /// tick exactly (rule 28); `None` without a schedule.
    pub counting_window: Option<CountingWindow>,
    /// Not part of the payload: the person key, for the envelope.
    #[serde(skip)]
    pub user_id: UserId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveStatus {
    Joined,
    Left,
}

/// The final verdict (rule 18); reported once a schedule is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Present,
    Late,
    Partial,
    Absent,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Present => "present",
            Self::Late => "late",
            Self::Partial => "partial",
            Self::Absent => "absent",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CycleView {
    pub participant_sid: ParticipantSid,
    pub joined_at: Timestamp,
    pub left_at: Option<Timestamp>,
    pub opened_by: OpenedBy,
    pub closed_by: Option<ClosedBy>,
}

/// The contract's `counting_window`: `[starts_at, ends_at]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CountingWindow {
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
}

impl Attendance {
    /// Reads `person` at `now`: closed cycles end at their closure, open
    /// ones at `now`, and only the part inside `window` counts, once
    /// however many cycles overlap.
    pub fn read(
        session: &Session,
        room: &RoomState,
        user_id: &UserId,
        person: &Person,
        window: Window,
        now: UnixMillis,
    ) -> Self {
        let mut cycles: Vec<CycleView> = Vec::with_capacity(person.cycles.len());
        let mut intervals = Vec::with_capacity(person.cycles.len());
        let mut open_started: Option<UnixMillis> = None;
        let mut last_leave: Option<UnixMillis> = None;
        for (sid, cycle) in &person.cycles {
            let closure = room.closure(cycle);
            let end = match closure {
                Some((at, _)) => {
                    last_leave = Some(last_leave.map_or(at, |l| l.max(at)));
                    at
                }
                None => {
                    // The "current" cycle is the most recent open one.
                    open_started =
                        Some(open_started.map_or(cycle.joined_at, |s| s.max(cycle.joined_at)));
                    now
                }
            };
            if let Some(iv) = window.clip(Interval::new(cycle.joined_at, end)) {
                intervals.push(iv);
            }
            cycles.push(CycleView {
                participant_sid: sid.clone(),
                joined_at: Timestamp(cycle.joined_at),
                left_at: closure.map(|(at, _)| Timestamp(at)),
                opened_by: cycle.source.opened_by(),
                closed_by: closure.map(|(_, by)| by),
            });
        }
        cycles.sort_by(|a, b| {
            (a.joined_at, &a.participant_sid).cmp(&(b.joined_at, &b.participant_sid))
        });
        let duration_ms = union_length(intervals);
        let in_meeting = open_started.is_some();
        let identity = person.identity.value.to_string();
        let name = person
            .name
            .as_ref()
            .map_or_else(|| identity.clone(), |n| n.value.clone());
        Self {
            room: session.room.to_string(),
            session_id: session.session_id.clone(),
            session_type: session.session_type.clone(),
            identity,
            name,
            is_currently_in_meeting: in_meeting,
            status: if in_meeting {
                LiveStatus::Joined
            } else {
                LiveStatus::Left
            },
            duration_ms,
            duration_seconds: duration_ms / 1000,
            duration_minutes: duration_ms / 60_000,
            current_cycle_started_at: open_started.map(Timestamp),
            join_count: cycles.len(),
            leave_count: cycles.iter().filter(|c| c.left_at.is_some()).count(),
            first_join_time: cycles.iter().map(|c| c.joined_at).min(),
            last_leave_time: last_leave.map(Timestamp),
            attendance_status: None,
            attendance_percentage: None,
            is_late: None,
            late_minutes: None,
            is_final: false,
            cycles,
            counting_window: None,
            user_id: user_id.clone(),
        }
    }

    /// Every person of the room, ordered by user id.
    pub fn roster(
        session: &Session,
        room: &RoomState,
        window: Window,
        now: UnixMillis,
    ) -> Vec<Self> {
        room.people
            .iter()
            .map(|(user, person)| Self::read(session, room, user, person, window, now))
            .collect()
    }
}

/// The `attendance.updated` payload.
#[derive(Debug, Serialize)]
pub struct UpdatedMessage<'a> {
    pub user_id: serde_json::Value,
    pub attendance: &'a Attendance,
    pub timestamp: Timestamp,
}

/// The `attendance.snapshot` payload.
#[derive(Debug, Serialize)]
pub struct SnapshotMessage<'a> {
    pub room: &'a str,
    pub participants: &'a [Attendance],
    pub timestamp: Timestamp,
    /// Beyond the contract's three fields, what a page's header shows
    /// before anyone joins: the schedule in force, and whether (and how
    /// often) the session was finalized.
    #[serde(flatten)]
    pub session: SessionHeader<'a>,
}

/// The session-wide facts a snapshot carries for a page's header.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SessionHeader<'a> {
    pub schedule: Option<&'a Schedule>,
    pub is_final: bool,
    pub revision: u64,
}

pub const UPDATED_EVENT: &str = "attendance.updated";
pub const SNAPSHOT_EVENT: &str = "attendance.snapshot";

impl Attendance {
    /// The JSON text of this person's `attendance.updated` at `now`.
    pub fn updated_json(&self, now: UnixMillis) -> String {
        serde_json::to_string(&UpdatedMessage {
            user_id: self.user_id.to_json(),
            attendance: self,
            timestamp: Timestamp(now),
        })
        .expect("attendance serializes")
    }
}

/// The JSON text of a room's `attendance.snapshot` at `now`.
pub fn snapshot_json(
    room: &str,
    participants: &[Attendance],
    session: SessionHeader<'_>,
    now: UnixMillis,
) -> String {
    serde_json::to_string(&SnapshotMessage {
        room,
        participants,
        session,
        timestamp: Timestamp(now),
    })
    .expect("snapshot serializes")
}
