//! Reconciliation with LiveKit (rules 23–26): what a RoomService listing
//! of one room means for its state. Pure like the rest of the engine: the
//! caller took the listing and read the heartbeats and sightings; this
//! decides, and `RoomState::apply` merges the decision (`Fact::Listing`).

use std::collections::{BTreeMap, BTreeSet};

use super::schedule::Schedule;
use super::state::{Fact, JoinSource, ListedClose, ListedJoin, RoomState};
use crate::domain::{ParticipantSid, UnixMillis, UserId};

/// Rule 25: a cycle younger than this at the listing may simply not be
/// listed yet (LiveKit's webhook and its room state are not one atomic
/// view), so a listing never closes it.
pub const LISTING_GRACE_MS: i64 = 30_000;

/// One room as a RoomService listing saw it, already read through the
/// naming rules (rule 2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listing {
    /// When the listing was taken (asked), in milliseconds.
    pub taken_at: UnixMillis,
    /// Every sid LiveKit lists as `JOINED` or `ACTIVE`, attendee or not.
    /// Empty when LiveKit no longer has the room.
    pub present: BTreeSet<ParticipantSid>,
    /// The attendees among them, with LiveKit's join instants.
    pub joins: Vec<ListedJoin>,
    /// A schedule in the listed room's metadata (rule 21), if any.
    pub metadata_schedule: Option<Schedule>,
}

/// What a listing would do to a room; empty when nothing (rule 26).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListingPlan {
    pub fact: Option<Fact>,
    pub metadata_schedule: Option<Schedule>,
}

impl ListingPlan {
    pub fn is_empty(&self) -> bool {
        self.fact.is_none() && self.metadata_schedule.is_none()
    }
}

impl RoomState {
    /// Decides what `listing` changes (rules 24–26):
    /// - every listed attendee's join, for `apply` to merge: a sid with no
    ///   cycle gets one (`opened_by: reconciliation`); a cycle a webhook
    ///   opened is never moved, closed or reopened;
    /// - every open cycle whose sid is not listed and whose join is more
    ///   than `LISTING_GRACE_MS` before the listing, closed at the last
    ///   instant rollcall knew the person there: the latest of its join,
    ///   the last listing that had the sid (`sightings`) and the person's
    ///   last heartbeat (`heartbeats`).
    ///
    /// Joins that change nothing are left out, so an empty plan means the
    /// listing agrees with the state and nothing is written.
    pub fn plan_listing(
        &self,
        listing: &Listing,
        heartbeats: &BTreeMap<UserId, UnixMillis>,
        sightings: &BTreeMap<ParticipantSid, UnixMillis>,
    ) -> ListingPlan {
        let opens: Vec<ListedJoin> = listing
            .joins
            .iter()
            .filter(|join| self.listing_would_open(join))
            .cloned()
            .collect();
        let mut closes = Vec::new();
        for (user, person) in &self.people {
            for (sid, cycle) in &person.cycles {
                let gone = !listing.present.contains(sid)
                    && self.closure(cycle).is_none()
                    && cycle.joined_at < listing.taken_at - LISTING_GRACE_MS;
                if !gone {
                    continue;
                }
                let last_known = [sightings.get(sid), heartbeats.get(user)]
                    .into_iter()
                    .flatten()
                    .fold(cycle.joined_at, |a, b| a.max(*b));
                closes.push(ListedClose {
                    user_id: user.clone(),
                    sid: sid.clone(),
                    at: last_known,
                });
            }
        }
        let metadata_schedule = listing.metadata_schedule.clone().filter(|s| {
            self.metadata_schedule
                .as_ref()
                .is_none_or(|m| m.value != *s)
        });
        let fact =
            (!opens.is_empty() || !closes.is_empty()).then_some(Fact::Listing { opens, closes });
        ListingPlan {
            fact,
            metadata_schedule,
        }
    }

    /// Whether a listed join is news: there is no cycle for the sid yet, or
    /// its join was only inferred from a leave (a listing's is exact). A
    /// cycle that a webhook or an earlier listing opened is never touched
    /// (rule 26), whatever join instant this listing carries.
    fn listing_would_open(&self, join: &ListedJoin) -> bool {
        let cycle = self
            .people
            .get(&join.participant.user_id)
            .and_then(|p| p.cycles.get(&join.participant.sid));
        cycle.is_none_or(|c| c.source == JoinSource::Inferred)
    }
}
