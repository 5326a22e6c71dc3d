//! The embedded store: everything in this process's memory. For trying
//! rollcall and for single-node development — state is lost on restart and
//! not shared between nodes (the server says so when it starts).

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dashmap::DashMap;

use super::{
    Broadcast, Commit, CommitOutcome, LocalDelivery, LoggedEvent, RoomRecord, Store, StoreError,
};
use crate::domain::{EventId, RoomName};
use crate::engine::RoomState;

pub struct MemoryStore {
    /// One lock per room: commits of different rooms never contend, and
    /// holding the room's lock while delivering keeps broadcasts in commit
    /// order. The lock is never held across an `.await`.
    rooms: DashMap<RoomName, Arc<Mutex<RoomSlot>>>,
    channels: DashMap<String, BTreeSet<RoomName>>,
    delivery: Arc<dyn LocalDelivery>,
}

#[derive(Default)]
struct RoomSlot {
    state: RoomState,
    version: u64,
    applied: HashSet<EventId>,
    log: Vec<LoggedEvent>,
}

impl MemoryStore {
    pub fn new(delivery: Arc<dyn LocalDelivery>) -> Self {
        Self {
            rooms: DashMap::new(),
            channels: DashMap::new(),
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

    async fn load_room(&self, room: &RoomName) -> Result<Option<RoomRecord>, StoreError> {
        let Some(slot) = self.slot(room) else {
            return Ok(None);
        };
        let slot = slot.lock().map_err(poisoned)?;
        Ok((slot.version > 0).then(|| RoomRecord {
            state: slot.state.clone(),
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
        let slot = Arc::clone(self.rooms.entry(room.clone()).or_default().value());
        let mut slot = slot.lock().map_err(poisoned)?;
        if slot.applied.contains(&commit.event.id) {
            return Ok(CommitOutcome::Duplicate);
        }
        if slot.version != commit.expected_version {
            return Ok(CommitOutcome::Conflict);
        }
        slot.applied.insert(commit.event.id.clone());
        slot.log.push(commit.event);
        if let Some(state) = commit.state {
            slot.state = state;
        }
        slot.version += 1;
        for b in commit.broadcasts {
            self.delivery.deliver(&b.channel, b.frame);
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

    async fn publish(&self, broadcasts: Vec<Broadcast>) -> Result<(), StoreError> {
        for b in broadcasts {
            self.delivery.deliver(&b.channel, b.frame);
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
