//! The embedded store: everything in this process's memory. For trying
//! rollcall and for single-node development — state is lost on restart and
//! not shared between nodes (the server says so when it starts).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;

use super::{
    Broadcast, Broker, ChannelQuery, Commit, CommitOutcome, Jobs, LocalDelivery, LoggedEvent,
    RoomRecord, RoomStore, Signals, Store, StoreError, SubscriptionCounts,
};
use crate::domain::{EventId, ParticipantSid, RoomName, UnixMillis, UserId};
use crate::engine::RoomState;

pub struct MemoryStore {
    /// One lock per room: commits of different rooms never contend, and
    /// holding the room's lock while delivering keeps broadcasts in commit
    /// order. The lock is never held across an `.await`.
    rooms: DashMap<RoomName, Arc<Mutex<RoomSlot>>>,
    channels: DashMap<String, BTreeSet<RoomName>>,
    heartbeats: DashMap<RoomName, BTreeMap<UserId, UnixMillis>>,
    sightings: DashMap<RoomName, BTreeMap<ParticipantSid, UnixMillis>>,
    due: DashMap<RoomName, UnixMillis>,
    live: DashMap<RoomName, UnixMillis>,
    /// Room → its last commit instant (`recent_rooms`).
    written: DashMap<RoomName, UnixMillis>,
    leases: DashMap<String, (String, Instant)>,
    delivery: Arc<dyn LocalDelivery>,
}

#[derive(Default)]
struct RoomSlot {
    state: Arc<RoomState>,
    version: u64,
    applied: HashSet<EventId>,
    log: Vec<LoggedEvent>,
}

impl MemoryStore {
    pub fn new(delivery: Arc<dyn LocalDelivery>) -> Self {
        Self {
            rooms: DashMap::new(),
            channels: DashMap::new(),
            heartbeats: DashMap::new(),
            sightings: DashMap::new(),
            due: DashMap::new(),
            live: DashMap::new(),
            written: DashMap::new(),
            leases: DashMap::new(),
            delivery,
        }
    }

    fn slot(&self, room: &RoomName) -> Option<Arc<Mutex<RoomSlot>>> {
        self.rooms.get(room).map(|r| Arc::clone(r.value()))
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Corrupt("a room lock was poisoned by a panic".into())
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl RoomStore for MemoryStore {
    async fn load_room(&self, room: &RoomName) -> Result<Option<RoomRecord>, StoreError> {
        let Some(slot) = self.slot(room) else {
            return Ok(None);
        };
        let slot = slot.lock().map_err(poisoned)?;
        Ok((slot.version > 0).then(|| RoomRecord {
            state: Arc::clone(&slot.state),
            version: slot.version,
        }))
    }

    async fn is_applied(&self, room: &RoomName, id: &EventId) -> Result<bool, StoreError> {
        match self.slot(room) {
            Some(slot) => Ok(slot.lock().map_err(poisoned)?.applied.contains(id)),
            None => Ok(false),
        }
    }

    async fn commit(&self, room: &RoomName, commit: Commit) -> Result<CommitOutcome, StoreError> {
        if let Some(due) = commit.due {
            self.due_no_later_than(room, due).await?;
        }
        if let Some(until) = commit.live_until {
            self.live_until(room, until).await?;
        }
        if commit.state.is_some() {
            self.written
                .insert(room.clone(), crate::domain::now_millis());
        }
        let slot = Arc::clone(self.rooms.entry(room.clone()).or_default().value());
        let mut slot = slot.lock().map_err(poisoned)?;
        if let Some(event) = &commit.event
            && slot.applied.contains(&event.id)
        {
            return Ok(CommitOutcome::Duplicate);
        }
        if slot.version != commit.expected_version {
            return Ok(CommitOutcome::Conflict);
        }
        if let Some(event) = commit.event {
            slot.applied.insert(event.id.clone());
            slot.log.push(event);
        }
        if let Some(state) = commit.state {
            slot.state = state;
        }
        slot.version += 1;
        for b in commit.broadcasts {
            b.hand_to(&*self.delivery);
        }
        Ok(CommitOutcome::Committed {
            version: slot.version,
        })
    }

    async fn link_channel(&self, channel: &str, room: &RoomName) -> Result<(), StoreError> {
        self.channels
            .entry(channel.to_string())
            .or_default()
            .insert(room.clone());
        Ok(())
    }

    async fn rooms_of_channel(&self, channel: &str) -> Result<Vec<RoomName>, StoreError> {
        Ok(self
            .channels
            .get(channel)
            .map(|rooms| rooms.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn event_log(&self, room: &RoomName) -> Result<Vec<LoggedEvent>, StoreError> {
        match self.slot(room) {
            Some(slot) => Ok(slot.lock().map_err(poisoned)?.log.clone()),
            None => Ok(Vec::new()),
        }
    }

    async fn recent_rooms(&self, limit: usize) -> Result<Vec<(RoomName, UnixMillis)>, StoreError> {
        let mut rooms: Vec<(RoomName, UnixMillis)> = self
            .written
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect();
        rooms.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rooms.truncate(limit);
        Ok(rooms)
    }
}

#[async_trait]
impl Broker for MemoryStore {
    async fn publish(&self, broadcasts: Vec<Broadcast>) -> Result<(), StoreError> {
        for b in broadcasts {
            b.hand_to(&*self.delivery);
        }
        Ok(())
    }

    async fn channel_subscriptions(
        &self,
        query: &ChannelQuery,
    ) -> Result<SubscriptionCounts, StoreError> {
        Ok(self.delivery.subscriptions(query))
    }
}

#[async_trait]
impl Signals for MemoryStore {
    async fn record_heartbeat(
        &self,
        room: &RoomName,
        user: &UserId,
        at: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut beats = self.heartbeats.entry(room.clone()).or_default();
        let last = beats.entry(user.clone()).or_insert(at);
        *last = (*last).max(at);
        Ok(())
    }

    async fn heartbeats(
        &self,
        room: &RoomName,
    ) -> Result<BTreeMap<UserId, UnixMillis>, StoreError> {
        Ok(self
            .heartbeats
            .get(room)
            .map(|b| b.clone())
            .unwrap_or_default())
    }

    async fn record_sightings(
        &self,
        room: &RoomName,
        sightings: &[(ParticipantSid, UnixMillis)],
    ) -> Result<(), StoreError> {
        let mut seen = self.sightings.entry(room.clone()).or_default();
        for (sid, at) in sightings {
            let last = seen.entry(sid.clone()).or_insert(*at);
            *last = (*last).max(*at);
        }
        Ok(())
    }

    async fn sightings(
        &self,
        room: &RoomName,
    ) -> Result<BTreeMap<ParticipantSid, UnixMillis>, StoreError> {
        Ok(self
            .sightings
            .get(room)
            .map(|s| s.clone())
            .unwrap_or_default())
    }
}

#[async_trait]
impl Jobs for MemoryStore {
    async fn due_no_later_than(&self, room: &RoomName, at: UnixMillis) -> Result<(), StoreError> {
        let mut due = self.due.entry(room.clone()).or_insert(at);
        *due = (*due).min(at);
        Ok(())
    }

    async fn set_due(&self, room: &RoomName, at: Option<UnixMillis>) -> Result<(), StoreError> {
        match at {
            Some(at) => {
                self.due.insert(room.clone(), at);
            }
            None => {
                self.due.remove(room);
            }
        }
        Ok(())
    }

    async fn live_until(&self, room: &RoomName, until: UnixMillis) -> Result<(), StoreError> {
        let mut live = self.live.entry(room.clone()).or_insert(until);
        *live = (*live).max(until);
        Ok(())
    }

    async fn live_rooms(&self, now: UnixMillis, limit: usize) -> Result<Vec<RoomName>, StoreError> {
        self.live.retain(|_, until| *until >= now);
        Ok(self
            .live
            .iter()
            .take(limit)
            .map(|e| e.key().clone())
            .collect())
    }

    async fn due_rooms(&self, now: UnixMillis, limit: usize) -> Result<Vec<RoomName>, StoreError> {
        let mut due: Vec<(UnixMillis, RoomName)> = self
            .due
            .iter()
            .filter(|e| *e.value() <= now)
            .map(|e| (*e.value(), e.key().clone()))
            .collect();
        due.sort_unstable();
        Ok(due.into_iter().take(limit).map(|(_, room)| room).collect())
    }

    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut taken = false;
        self.leases
            .entry(name.to_string())
            .and_modify(|(h, until)| {
                if *until <= now {
                    *h = holder.to_string();
                    *until = now + ttl;
                    taken = true;
                }
            })
            .or_insert_with(|| {
                taken = true;
                (holder.to_string(), now + ttl)
            });
        Ok(taken)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.leases.remove_if(name, |_, (h, _)| h == holder);
        Ok(())
    }
}
