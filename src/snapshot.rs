//! `attendance.snapshot`: what a socket is sent right after it subscribes
//! to a room's channel, so a page that loads or reconnects is current
//! without an HTTP call.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use dashmap::DashMap;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::engine::view::{SNAPSHOT_EVENT, SessionHeader, snapshot_json};
use crate::pusher::channel::ChannelName;
use crate::pusher::{SubscribeHook, frame};
use crate::rooms::Rooms;

pub struct Snapshots {
    rooms: Rooms,
    loads: SharedLoads<Option<Vec<Utf8Bytes>>>,
}

impl Snapshots {
    pub fn new(rooms: Rooms) -> Self {
        Self {
            rooms,
            loads: SharedLoads::default(),
        }
    }

    /// One snapshot frame per room whose updates go to `channel`. A store
    /// failure yields no frames (logged): the subscription still works and
    /// updates still arrive. Subscribers arriving together (a node restart
    /// reconnects them all) share loads (see [`SharedLoads`]).
    pub async fn frames(&self, channel: &str) -> Vec<Utf8Bytes> {
        self.loads
            .get(channel, || self.load(channel))
            .await
            .unwrap_or_default()
    }

    /// `None` when the store failed.
    async fn load(&self, channel: &str) -> Option<Vec<Utf8Bytes>> {
        let rooms = match self.rooms.store.rooms_of_channel(channel).await {
            Ok(rooms) => rooms,
            Err(e) => {
                tracing::warn!(channel, error = %e, "no snapshot: store unavailable");
                return None;
            }
        };
        let mut frames = Vec::with_capacity(rooms.len());
        for room in rooms {
            let Some(session) = self.rooms.session(room.as_str()) else {
                continue;
            };
            let state = match self.rooms.load(&room).await {
                Ok(Some(state)) => state,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(channel, error = %e, "no snapshot: store unavailable");
                    return None;
                }
            };
            let now = crate::domain::now_millis();
            let participants = self.rooms.view(&session, &state).roster(now);
            let header = SessionHeader {
                schedule: state.effective_schedule(),
                is_final: state.finalization.is_final(),
                revision: state.finalization.revision,
            };
            let data = snapshot_json(room.as_str(), &participants, header, now);
            frames.push(frame::event(SNAPSHOT_EVENT, Some(channel), &data));
        }
        Some(frames)
    }
}

/// One load at a time per key, shared by the callers that queued behind
/// it, without ever handing a caller a value older than its call.
///
/// Why the last part matters: a socket registers in the hub *before* it
/// asks for its snapshot, and every update published after that waits in
/// its queue behind the snapshot. So the snapshot must include everything
/// committed before the call; a load that *started* after the call does.
/// A caller therefore reuses the last value only if that load started after
/// the caller arrived, and otherwise loads itself. In a burst, the first
/// caller loads, everyone who arrived during that load waits; the first of
/// them loads once more, and the rest reuse it: two loads a burst, not one
/// per subscriber. A failed load (`None`) carries no data, so it may be
/// reused by anyone who arrived before it *finished*: with the store down,
/// a burst waits out one timeout, not one each.
pub struct SharedLoads<V> {
    clock: AtomicU64,
    keys: DashMap<String, Arc<tokio::sync::Mutex<Option<LastLoad<V>>>>>,
}

struct LastLoad<V> {
    started: u64,
    finished: u64,
    value: V,
}

impl<V> Default for SharedLoads<V> {
    fn default() -> Self {
        Self {
            clock: AtomicU64::new(0),
            keys: DashMap::new(),
        }
    }
}

impl<V: Clone> SharedLoads<Option<V>> {
    /// `load()`'s value, or a value another caller loaded after this call
    /// began.
    pub async fn get<F, Fut>(&self, key: &str, load: F) -> Option<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Option<V>>,
    {
        let arrived = self.tick();
        let slot = Arc::clone(self.keys.entry(key.to_owned()).or_default().value());
        let value = {
            let mut last = slot.lock().await;
            match &*last {
                Some(l) if l.value.is_some() && l.started > arrived => l.value.clone(),
                Some(l) if l.value.is_none() && l.finished > arrived => None,
                _ => {
                    let started = self.tick();
                    let value = load().await;
                    *last = Some(LastLoad {
                        started,
                        finished: self.tick(),
                        value: value.clone(),
                    });
                    value
                }
            }
        };
        drop(slot);
        // Forget the key (and its value) once nobody waits on it. A caller
        // that cloned the slot meanwhile keeps it alive; one that arrives
        // after the removal starts a fresh slot: fewer shared loads, never a
        // stale value.
        self.keys
            .remove_if(key, |_, slot| Arc::strong_count(slot) == 1);
        value
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst) + 1
    }
}

#[async_trait]
impl SubscribeHook for Snapshots {
    async fn after_subscribe(&self, channel: &ChannelName) -> Vec<Utf8Bytes> {
        self.frames(channel.as_str()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A burst of callers shares loads; every value handed out comes from
    /// a load that started after its caller arrived.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_shares_loads_and_never_gets_an_older_value() {
        let loads = Arc::new(SharedLoads::<Option<u64>>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        // The "store": a version that each load reads, after a delay.
        let version = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (loads, calls, version) = (loads.clone(), calls.clone(), version.clone());
            tasks.push(tokio::spawn(async move {
                // What the caller has "seen" before it asks (the invariant:
                // the value must be at least this new).
                let seen = version.fetch_add(1, Ordering::SeqCst) + 1;
                let got = loads
                    .get("c", || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let v = version.load(Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Some(v)
                    })
                    .await
                    .unwrap();
                assert!(
                    got >= seen,
                    "got {got}, but {seen} was seen before the call"
                );
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let calls = calls.load(Ordering::SeqCst);
        assert!(calls < 50, "{calls} loads for 50 callers: nothing shared");
        assert!(loads.keys.is_empty(), "an idle key is forgotten");
    }

    /// With the store down, a burst waits out one failed load, not one each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_load_is_shared_by_everyone_waiting_on_it() {
        let loads = Arc::new(SharedLoads::<Option<u64>>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let first = {
            let (loads, calls) = (loads.clone(), calls.clone());
            tokio::spawn(async move {
                loads
                    .get("c", || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        None
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut rest = Vec::new();
        for _ in 0..20 {
            let (loads, calls) = (loads.clone(), calls.clone());
            rest.push(tokio::spawn(async move {
                loads
                    .get("c", || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        None::<u64>
                    })
                    .await
            }));
        }
        assert_eq!(first.await.unwrap(), None);
        for t in rest {
            assert_eq!(t.await.unwrap(), None);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
