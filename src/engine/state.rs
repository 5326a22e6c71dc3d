//! A room's attendance state and how one observation changes it.
//!
//! Invariant (rule 6): the state is a set of facts merged with commutative,
//! associative, idempotent operations — the earliest join of a sid, the
//! earliest webhook leave, the earliest finish of a room instance, and
//! last-writer-wins labels ordered by `(createdAt, event id)`. Closures
//! such as "closed by room_finished" are derived when the state is read,
//! never written into the cycle. So applying the same events in any order,
//! any number of times, yields the same state.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::schedule::Schedule;
use crate::domain::{EventId, Identity, ParticipantSid, RoomSid, UnixMillis, UserId};

/// What one accepted webhook says about attendance, already filtered: only
/// attendees of a session room reach the engine (rules 1, 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub id: EventId,
    /// The event's `createdAt`, in milliseconds.
    pub created_at: UnixMillis,
    pub room_sid: RoomSid,
    /// A schedule found in the room's metadata (rule 21), if any.
    pub metadata_schedule: Option<Schedule>,
    pub fact: Fact,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// `participant_joined` (rule 4).
    Joined {
        participant: Participant,
        joined_at: UnixMillis,
    },
    /// `participant_left` (rule 5); `joined_at` from the leave payload lets
    /// a leave without its join still yield the whole cycle (rule 6).
    Left {
        participant: Participant,
        joined_at: Option<UnixMillis>,
    },
    /// `participant_connection_aborted` (rules 5, 8): closes the cycle; with
    /// no join it is a zero-length attempt.
    Aborted { participant: Participant },
    /// `room_finished` (rule 14).
    RoomFinished,
    /// `room_started`: no attendance, but its metadata may carry a schedule.
    RoomStarted,
    /// What a RoomService listing taken at `created_at` decided (rules
    /// 24–25, planned by `RoomState::plan_listing`): cycles LiveKit lists
    /// that no webhook opened, and open cycles it no longer lists, each with
    /// the instant to close it at. The closures are decisions about the
    /// state the listing met, so the log keeps them and replay applies them
    /// in log order (rule 27).
    Listing {
        opens: Vec<ListedJoin>,
        closes: Vec<ListedClose>,
    },
}

/// A participant a listing found in the room (state `JOINED`/`ACTIVE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedJoin {
    pub participant: Participant,
    pub joined_at: UnixMillis,
}

/// An open cycle a listing no longer found, and where to close it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedClose {
    pub user_id: UserId,
    pub sid: ParticipantSid,
    pub at: UnixMillis,
}

/// Who an observation is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub user_id: UserId,
    pub sid: ParticipantSid,
    pub identity: Identity,
    /// Display name; empty when LiveKit omitted it.
    pub name: String,
}

/// All attendance facts of one room (session), across room instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomState {
    /// Each person behind an `Arc`: copying a room to change it copies
    /// pointers, and only the person changed is cloned (`Arc::make_mut`).
    #[serde(default)]
    pub people: BTreeMap<UserId, Arc<Person>>,
    /// The earliest `room_finished` instant of each room instance.
    #[serde(default)]
    pub finished: BTreeMap<RoomSid, UnixMillis>,
    /// The schedule set through the API; wins over the metadata's (rule 21).
    /// Not a webhook fact: a replay of the log keeps it.
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// The latest schedule found in room metadata.
    #[serde(default)]
    pub metadata_schedule: Option<Stamped<Schedule>>,
    #[serde(default)]
    pub finalization: Finalization,
}

/// Rule 20's bookkeeping. Not a webhook fact: a replay of the log keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finalization {
    /// 0 until the session is first final; +1 at every re-finalization.
    pub revision: u64,
    /// The highest revision whose report the receiver accepted.
    #[serde(default)]
    pub reported_revision: u64,
}

impl Finalization {
    pub fn is_final(&self) -> bool {
        self.revision > 0
    }

    /// A report to (re)send: final, and the receiver lacks this revision.
    pub fn report_due(&self) -> bool {
        self.revision > self.reported_revision
    }
}

/// One person's facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub identity: Stamped<Identity>,
    /// The latest non-empty display name, if any event carried one.
    #[serde(default)]
    pub name: Option<Stamped<String>>,
    #[serde(default)]
    pub cycles: Cycles,
}

/// A person's cycles by participant sid, in sid order. A sorted `Vec`, not
/// a `BTreeMap`: a person has one cycle or a few, and a `BTreeMap`
/// allocates a node for eleven on the first insert — 1,232 bytes for one
/// cycle against 112 here (B4 measured 10 MiB more per 100k webhooks when
/// `Cycle` grew by 24 bytes). Serialized as the same JSON map, so stored
/// state reads back either way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cycles(Vec<(ParticipantSid, Cycle)>);

impl Cycles {
    fn find(&self, sid: &ParticipantSid) -> Result<usize, usize> {
        self.0.binary_search_by(|(s, _)| s.cmp(sid))
    }

    pub fn get(&self, sid: &ParticipantSid) -> Option<&Cycle> {
        self.find(sid).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, sid: &ParticipantSid) -> Option<&mut Cycle> {
        self.find(sid).ok().map(|i| &mut self.0[i].1)
    }

    /// The cycle of `sid`, made by `new` if there is none.
    pub fn get_or_insert_with(
        &mut self,
        sid: &ParticipantSid,
        new: impl FnOnce() -> Cycle,
    ) -> &mut Cycle {
        let i = match self.find(sid) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (sid.clone(), new()));
                i
            }
        };
        &mut self.0[i].1
    }

    pub fn contains_key(&self, sid: &ParticipantSid) -> bool {
        self.find(sid).is_ok()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ParticipantSid, &Cycle)> {
        self.0.iter().map(|(s, c)| (s, c))
    }

    pub fn values(&self) -> impl Iterator<Item = &Cycle> {
        self.0.iter().map(|(_, c)| c)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Cycles {
    type Item = (&'a ParticipantSid, &'a Cycle);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (ParticipantSid, Cycle)>,
        fn(&'a (ParticipantSid, Cycle)) -> (&'a ParticipantSid, &'a Cycle),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(s, c)| (s, c))
    }
}

impl std::ops::Index<&ParticipantSid> for Cycles {
    type Output = Cycle;

    fn index(&self, sid: &ParticipantSid) -> &Cycle {
        self.get(sid).expect("no cycle with this sid")
    }
}

impl FromIterator<(ParticipantSid, Cycle)> for Cycles {
    fn from_iter<I: IntoIterator<Item = (ParticipantSid, Cycle)>>(iter: I) -> Self {
        let map: BTreeMap<ParticipantSid, Cycle> = iter.into_iter().collect();
        Self(map.into_iter().collect())
    }
}

impl Serialize for Cycles {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Cycles {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<ParticipantSid, Cycle>::deserialize(d)?;
        Ok(Self(map.into_iter().collect()))
    }
}

/// A last-writer-wins register: the value of the event with the greatest
/// `(createdAt, event id)`, so the winner does not depend on arrival order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped<T> {
    pub value: T,
    pub at: UnixMillis,
    pub event: EventId,
}

impl<T: PartialEq> Stamped<T> {
    /// Keeps the later of the two; says whether the value changed.
    fn merge(&mut self, other: Stamped<T>) -> bool {
        if (other.at, &other.event) > (self.at, &self.event) {
            let changed = other.value != self.value;
            *self = other;
            changed
        } else {
            false
        }
    }
}

/// One participant sid's stay (rule 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cycle {
    /// The room instance the cycle belongs to (empty if LiveKit omitted it).
    pub room_sid: RoomSid,
    /// The best join instant known for this sid: the earliest among the
    /// most exact source that reported one (see `JoinSource`).
    pub joined_at: UnixMillis,
    /// Where `joined_at` came from. Absent in state written before
    /// reconciliation existed: those joins all came from webhooks.
    #[serde(default, skip_serializing_if = "JoinSource::is_webhook")]
    pub source: JoinSource,
    /// The earliest leave a webhook reported; always beats estimates (rule 15).
    #[serde(default)]
    pub left_at: Option<UnixMillis>,
    /// Where the sweeper closed the cycle for want of heartbeats (rule 13).
    /// Recorded, not derived: a heartbeat arriving later must not reopen it.
    #[serde(default)]
    pub timeout_at: Option<UnixMillis>,
    /// Where a listing closed the cycle because LiveKit no longer had the
    /// sid (rule 25). Recorded like `timeout_at`: a listing is a decision
    /// about the state it met. The earliest wins; a webhook leave beats it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled_at: Option<UnixMillis>,
}

/// Where a cycle's join instant came from. A cycle keeps the join of the
/// first source in this order (the earliest instant among equals), so
/// merging is a minimum over `(source, joined_at)`: commutative,
/// associative and idempotent (rule 6).
///
/// A listing ranks first because the two only meet when the listing came
/// first: `plan_listing` never proposes a join for a cycle a webhook
/// opened (rule 26). Both carry LiveKit's own `joinedAt` for the sid, so
/// the late webhook is the same fact again and adds nothing (rule 24) —
/// the cycle stays `opened_by: reconciliation`, which is what happened.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum JoinSource {
    /// A RoomService listing (rule 24).
    Listing,
    /// A webhook that carried the join: `participant_joined`, or a leave
    /// whose payload has `joinedAt`.
    #[default]
    Webhook,
    /// A leave or abort without a join time: the join is only known to be
    /// no later than the event, so anything exact replaces it.
    Inferred,
}

impl JoinSource {
    fn is_webhook(&self) -> bool {
        *self == Self::Webhook
    }

    /// The contract's `opened_by`.
    pub fn opened_by(self) -> OpenedBy {
        match self {
            Self::Listing => OpenedBy::Reconciliation,
            Self::Webhook | Self::Inferred => OpenedBy::Webhook,
        }
    }
}

/// Who opened a cycle; the contract's `opened_by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenedBy {
    Webhook,
    /// A join LiveKit never delivered, found by asking it (rule 24).
    Reconciliation,
}

/// Why a cycle ended; the contract's `closed_by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedBy {
    Webhook,
    HeartbeatTimeout,
    RoomFinished,
    SessionEnd,
    /// A listing no longer had the sid (rule 25).
    Reconciliation,
}

/// What a change touched, so only those people are broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    pub people: Vec<UserId>,
    /// Everyone's numbers changed (schedule, finalization): broadcast the
    /// whole roster, expected absentees included.
    pub everyone: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.people.is_empty() && !self.everyone
    }

    pub fn merge(&mut self, other: Changes) {
        self.everyone |= other.everyone;
        for user in other.people {
            if !self.people.contains(&user) {
                self.people.push(user);
            }
        }
    }
}

impl RoomState {
    /// Merges one observation into the state and says whose attendance it
    /// may have changed. Pure: no clock, no I/O.
    pub fn apply(&mut self, obs: &Observation) -> Changes {
        let schedule_before = self.effective_schedule().cloned();
        if let Some(schedule) = &obs.metadata_schedule {
            let stamped = Stamped {
                value: schedule.clone(),
                at: obs.created_at,
                event: obs.id.clone(),
            };
            match &mut self.metadata_schedule {
                Some(current) => {
                    current.merge(stamped);
                }
                None => self.metadata_schedule = Some(stamped),
            }
        }
        let mut changes = self.apply_fact(obs);
        if self.effective_schedule() != schedule_before.as_ref() {
            changes = self.everyone();
        }
        // Rule 20: a change after the verdict was final makes a new final
        // verdict, with a higher revision (and a new report).
        if self.finalization.is_final() && !changes.is_empty() {
            self.finalization.revision += 1;
        }
        changes
    }

    fn apply_fact(&mut self, obs: &Observation) -> Changes {
        match &obs.fact {
            Fact::Joined {
                participant,
                joined_at,
            } => self.merge_cycle(obs, participant, (JoinSource::Webhook, *joined_at), None),
            Fact::Left {
                participant,
                joined_at,
            } => {
                // A leave with no join in its payload still proves the sid
                // existed; its join is then no later than the leave.
                let joined = match joined_at {
                    Some(at) => (JoinSource::Webhook, *at),
                    None => (JoinSource::Inferred, obs.created_at),
                };
                self.merge_cycle(obs, participant, joined, Some(obs.created_at))
            }
            Fact::Aborted { participant } => {
                // Rule 8: without a join this is a zero-length attempt, so
                // the payload's joinedAt is deliberately not used.
                let joined = (JoinSource::Inferred, obs.created_at);
                self.merge_cycle(obs, participant, joined, Some(obs.created_at))
            }
            Fact::RoomFinished => self.merge_finish(obs),
            Fact::RoomStarted => Changes::default(),
            Fact::Listing { opens, closes } => self.merge_listing(obs, opens, closes),
        }
    }

    /// Rules 24–26: a listing opens the cycles it found that nothing opened,
    /// and closes the ones it decided were gone. A cycle that exists is
    /// never moved by a listing's join (a webhook's is more exact), and a
    /// closure only ever lands on a cycle that is still open.
    fn merge_listing(
        &mut self,
        obs: &Observation,
        opens: &[ListedJoin],
        closes: &[ListedClose],
    ) -> Changes {
        let mut changes = Changes::default();
        for join in opens {
            let joined = (JoinSource::Listing, join.joined_at);
            changes.merge(self.merge_cycle(obs, &join.participant, joined, None));
        }
        let mut closed = Vec::new();
        for close in closes {
            // The earliest closure wins, whatever the order (rule 6).
            let Some(cycle) = self
                .people
                .get_mut(&close.user_id)
                .and_then(|p| Arc::make_mut(p).cycles.get_mut(&close.sid))
            else {
                continue;
            };
            let at = min_some(cycle.reconciled_at, Some(close.at));
            if at != cycle.reconciled_at {
                cycle.reconciled_at = at;
                closed.push(close.user_id.clone());
            }
        }
        changes.merge(Changes {
            people: closed,
            everyone: false,
        });
        changes
    }

    /// Every person of the room, e.g. after the schedule changed (rule 21).
    pub fn everyone(&self) -> Changes {
        Changes {
            people: self.people.keys().cloned().collect(),
            everyone: true,
        }
    }

    /// The schedule in force: the API's, else the metadata's (rule 21).
    pub fn effective_schedule(&self) -> Option<&Schedule> {
        self.schedule
            .as_ref()
            .or(self.metadata_schedule.as_ref().map(|s| &s.value))
    }

    /// Sets (or clears) the API schedule; everyone's numbers change.
    pub fn set_schedule(&mut self, schedule: Option<Schedule>) -> Changes {
        if self.schedule == schedule {
            return Changes::default();
        }
        let before = self.effective_schedule().cloned();
        self.schedule = schedule;
        if self.effective_schedule() == before.as_ref() {
            return Changes::default();
        }
        if self.finalization.is_final() {
            self.finalization.revision += 1;
        }
        self.everyone()
    }

    /// Whether anyone has an open cycle.
    pub fn has_open_cycle(&self) -> bool {
        self.people
            .values()
            .any(|p| p.cycles.values().any(|c| self.closure(c).is_none()))
    }

    /// Whether `user` has an open cycle: what a heartbeat answers (rule 12).
    pub fn is_in_meeting(&self, user: &UserId) -> bool {
        self.people
            .get(user)
            .is_some_and(|p| p.cycles.values().any(|c| self.closure(c).is_none()))
    }

    /// Rule 13: open cycles of people who sent heartbeats, whose later of
    /// join and last heartbeat is older than `timeout_ms` at `now`, with the
    /// instant each is to be closed at.
    pub fn stale_cycles(
        &self,
        heartbeats: &BTreeMap<UserId, UnixMillis>,
        now: UnixMillis,
        timeout_ms: i64,
    ) -> Vec<(UserId, ParticipantSid, UnixMillis)> {
        let mut stale = Vec::new();
        for (user, last_beat) in heartbeats {
            let Some(person) = self.people.get(user) else {
                continue;
            };
            for (sid, cycle) in &person.cycles {
                let alive_at = cycle.joined_at.max(*last_beat);
                if self.closure(cycle).is_none() && now - alive_at > timeout_ms {
                    stale.push((user.clone(), sid.clone(), alive_at));
                }
            }
        }
        stale
    }

    /// Records heartbeat-timeout closures found by `stale_cycles`.
    pub fn close_stale(&mut self, stale: &[(UserId, ParticipantSid, UnixMillis)]) -> Changes {
        let mut people = Vec::new();
        for (user, sid, at) in stale {
            if let Some(cycle) = self
                .people
                .get_mut(user)
                .and_then(|p| Arc::make_mut(p).cycles.get_mut(sid))
            {
                cycle.timeout_at = Some(cycle.timeout_at.map_or(*at, |t| t.min(*at)));
                if people.last() != Some(user) {
                    people.push(user.clone());
                }
            }
        }
        if self.finalization.is_final() && !people.is_empty() {
            self.finalization.revision += 1;
        }
        Changes {
            people,
            everyone: false,
        }
    }

    /// Rule 20: the session is due to be final at window end + `delay`.
    pub fn finalize_due(&self, now: UnixMillis, delay_ms: i64) -> bool {
        !self.finalization.is_final()
            && self
                .effective_schedule()
                .is_some_and(|s| now >= s.ends_at() + delay_ms)
    }

    /// Makes the verdict final (revision 1); open cycles now read as closed
    /// at the window end (`session_end`).
    pub fn finalize(&mut self) -> Changes {
        self.finalization.revision = self.finalization.revision.max(1);
        self.everyone()
    }

    /// The earliest instant at which the sweeper has something to do for
    /// this room: a cycle going stale or the finalization falling due.
    pub fn next_due(
        &self,
        heartbeats: &BTreeMap<UserId, UnixMillis>,
        timeout_ms: i64,
        delay_ms: i64,
    ) -> Option<UnixMillis> {
        let stale = heartbeats.iter().flat_map(|(user, beat)| {
            self.people.get(user).into_iter().flat_map(move |p| {
                p.cycles
                    .values()
                    .filter(|c| self.closure(c).is_none())
                    .map(move |c| c.joined_at.max(*beat) + timeout_ms + 1)
            })
        });
        let finalize = (!self.finalization.is_final())
            .then(|| self.effective_schedule().map(|s| s.ends_at() + delay_ms))
            .flatten();
        stale.chain(finalize).min()
    }

    fn merge_cycle(
        &mut self,
        obs: &Observation,
        who: &Participant,
        (source, joined_at): (JoinSource, UnixMillis),
        left_at: Option<UnixMillis>,
    ) -> Changes {
        let identity = Stamped {
            value: who.identity.clone(),
            at: obs.created_at,
            event: obs.id.clone(),
        };
        // `changed` tracks what a reader could see change (values, not the
        // stamps that order them), without copying the person to compare.
        let mut changed = false;
        let person = self.people.entry(who.user_id.clone()).or_insert_with(|| {
            changed = true;
            Arc::new(Person {
                identity: identity.clone(),
                name: None,
                cycles: Cycles::default(),
            })
        });
        let person = Arc::make_mut(person);
        changed |= person.identity.merge(identity);
        if !who.name.is_empty() {
            let name = Stamped {
                value: who.name.clone(),
                at: obs.created_at,
                event: obs.id.clone(),
            };
            match &mut person.name {
                Some(current) => changed |= current.merge(name),
                None => {
                    person.name = Some(name);
                    changed = true;
                }
            }
        }
        let cycle = person.cycles.get_or_insert_with(&who.sid, || {
            changed = true;
            Cycle {
                room_sid: obs.room_sid.clone(),
                joined_at,
                source,
                left_at: None,
                timeout_at: None,
                reconciled_at: None,
            }
        });
        let (joined_before, source_before, left_before) =
            (cycle.joined_at, cycle.source, cycle.left_at);
        (cycle.source, cycle.joined_at) = (cycle.source, cycle.joined_at).min((source, joined_at));
        cycle.left_at = min_some(cycle.left_at, left_at);
        changed |= cycle.joined_at != joined_before
            || cycle.source.opened_by() != source_before.opened_by()
            || cycle.left_at != left_before;
        // Keep the room sid deterministic if events disagree on it.
        if !obs.room_sid.as_str().is_empty()
            && (cycle.room_sid.as_str().is_empty() || obs.room_sid < cycle.room_sid)
        {
            cycle.room_sid = obs.room_sid.clone();
            changed = true;
        }
        Changes {
            people: if changed {
                vec![who.user_id.clone()]
            } else {
                vec![]
            },
            everyone: false,
        }
    }

    fn merge_finish(&mut self, obs: &Observation) -> Changes {
        let open_before = self.open_cycles();
        let at = self
            .finished
            .entry(obs.room_sid.clone())
            .or_insert(obs.created_at);
        *at = (*at).min(obs.created_at);
        let open_after = self.open_cycles();
        let mut people: Vec<UserId> = open_before
            .into_iter()
            .filter(|key| !open_after.contains(key))
            .map(|(user, _)| user)
            .collect();
        people.dedup();
        Changes {
            people,
            everyone: false,
        }
    }

    fn open_cycles(&self) -> Vec<(UserId, ParticipantSid)> {
        self.people
            .iter()
            .flat_map(|(user, person)| {
                person
                    .cycles
                    .iter()
                    .filter(|(_, c)| self.closure(c).is_none())
                    .map(move |(sid, _)| (user.clone(), sid.clone()))
            })
            .collect()
    }

    /// How and when a cycle ended, or `None` while it is open. A webhook
    /// leave wins over every estimate (rule 15); among estimates the
    /// earliest wins (the person was gone by then).
    pub fn closure(&self, cycle: &Cycle) -> Option<(UnixMillis, ClosedBy)> {
        if let Some(left) = cycle.left_at {
            return Some((left, ClosedBy::Webhook));
        }
        let timeout = cycle.timeout_at.map(|at| (at, ClosedBy::HeartbeatTimeout));
        // Never before the join: a webhook may move a listing's join later.
        let reconciled = cycle
            .reconciled_at
            .map(|at| (at.max(cycle.joined_at), ClosedBy::Reconciliation));
        let finish = self.finish_of(cycle).map(|at| (at, ClosedBy::RoomFinished));
        let session_end = self
            .finalization
            .is_final()
            .then(|| self.effective_schedule())
            .flatten()
            .map(|s| (s.ends_at().max(cycle.joined_at), ClosedBy::SessionEnd));
        [timeout, reconciled, finish, session_end]
            .into_iter()
            .flatten()
            .min()
    }

    /// The `room_finished` that ends this cycle: its own room instance's;
    /// when either side lacks a room sid, the earliest finish not before
    /// the join.
    fn finish_of(&self, cycle: &Cycle) -> Option<UnixMillis> {
        if !cycle.room_sid.as_str().is_empty()
            && let Some(at) = self.finished.get(&cycle.room_sid)
        {
            return Some(*at);
        }
        self.finished
            .iter()
            .filter(|(sid, at)| {
                (sid.as_str().is_empty() || cycle.room_sid.as_str().is_empty())
                    && **at >= cycle.joined_at
            })
            .map(|(_, at)| *at)
            .min()
    }
}

fn min_some(a: Option<UnixMillis>, b: Option<UnixMillis>) -> Option<UnixMillis> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}
