//! The Redis store's per-node cache of parsed room states.
//!
//! An entry says "the room's state hash, at write tag `tag` and version
//! `version`, holds exactly `state`". Every commit writes a fresh random
//! tag, so a `(tag, version)` pair names one write forever: an entry can
//! become old, never wrong — not when another node commits, not when the
//! keys expire or are deleted and the room starts again at version 1, not
//! when Redis loses its last second of writes and the same version is
//! written again. The commit script checks the tag along with the version,
//! so a commit based on an old entry conflicts and the caller reloads.
//!
//! Bounded: two generations of at most `capacity / 2` rooms each; a lookup
//! in the old generation promotes the room, and when the young one is full
//! it becomes the old one (the previous old one is dropped). That is an
//! approximate LRU with O(1) work and no background task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::domain::RoomName;
use crate::engine::RoomState;

#[derive(Debug, Clone)]
pub(crate) struct Cached {
    /// The write tag the hash held with this state. `None` for a state read
    /// from a hash without one (written by an older rollcall): usable for
    /// nothing but knowing the version, so never handed out or diffed against.
    pub tag: Option<String>,
    pub version: u64,
    pub state: Arc<RoomState>,
}

pub(crate) struct StateCache {
    half: usize,
    inner: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    young: HashMap<RoomName, Cached>,
    old: HashMap<RoomName, Cached>,
}

impl StateCache {
    /// Holds at most `capacity` rooms; `0` disables the cache.
    pub fn new(capacity: usize) -> Self {
        Self {
            half: capacity / 2,
            inner: Mutex::new(Generations::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // The lock only guards map operations that cannot leave the maps
        // inconsistent; a panic elsewhere while holding it changes nothing.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, room: &RoomName) -> Option<Cached> {
        if self.half == 0 {
            return None;
        }
        let mut g = self.lock();
        if let Some(c) = g.young.get(room) {
            return Some(c.clone());
        }
        let c = g.old.remove(room)?;
        g.insert(self.half, room.clone(), c.clone());
        Some(c)
    }

    /// Remembers what the room's hash holds. The last caller wins: when
    /// two race, an older entry only costs a conflict and a reload.
    pub fn put(&self, room: &RoomName, cached: Cached) {
        if self.half == 0 {
            return;
        }
        let mut g = self.lock();
        g.old.remove(room);
        g.insert(self.half, room.clone(), cached);
    }

    pub fn remove(&self, room: &RoomName) {
        let mut g = self.lock();
        g.young.remove(room);
        g.old.remove(room);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let g = self.lock();
        g.young.len() + g.old.len()
    }
}

impl Generations {
    fn insert(&mut self, half: usize, room: RoomName, cached: Cached) {
        self.young.insert(room, cached);
        if self.young.len() >= half {
            self.old = std::mem::take(&mut self.young);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: u64) -> Cached {
        Cached {
            tag: Some(format!("t{version}")),
            version,
            state: Arc::new(RoomState::default()),
        }
    }

    #[test]
    fn stays_bounded_and_keeps_recently_used_rooms() {
        let cache = StateCache::new(10);
        cache.put(&RoomName::new("hot"), entry(1));
        for i in 0..1000 {
            cache.put(&RoomName::new(format!("r{i}")), entry(i));
            assert!(cache.get(&RoomName::new("hot")).is_some(), "at {i}");
            assert!(cache.len() <= 10);
        }
        assert!(cache.get(&RoomName::new("r0")).is_none());
        assert_eq!(cache.get(&RoomName::new("r999")).unwrap().version, 999);
        cache.remove(&RoomName::new("hot"));
        assert!(cache.get(&RoomName::new("hot")).is_none());
    }

    #[test]
    fn a_zero_capacity_caches_nothing() {
        let cache = StateCache::new(0);
        cache.put(&RoomName::new("r"), entry(1));
        assert!(cache.get(&RoomName::new("r")).is_none());
    }
}
