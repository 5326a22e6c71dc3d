//! This node's side of cluster-wide occupancy: keeps the store's record
//! ("node N has subscribers of channel C") equal to the hub's local counts.
//!
//! The hub tells [`Dirty`] when a channel gains its first or loses its last
//! local socket (no I/O there). One task per node then, for each channel
//! marked, reads the hub's *current* count and makes the record match:
//! occupy when there are subscribers and the record does not have this node,
//! vacate when there are none and it does. Level-triggered: a channel that
//! flaps (subscribe, unsubscribe, subscribe) before the task gets to it is
//! marked once and synced once to where it ended; the task handles one
//! channel at a time, so its store calls for a channel never overtake each
//! other. A failed store call leaves the channel marked and is retried.
//!
//! The store decides the cluster-wide transitions (first node in, last node
//! out) and queues `channel_occupied` / `channel_vacated` itself, atomically.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::queue::Occupancy;
use crate::domain::now_millis;
use crate::pusher::hub::{Hub, OccupancyWatch};

/// Channels no app webhook speaks of: a user's own channel (`pusher:signin`)
/// is an implementation detail of "events to a user".
const EXCLUDED_PREFIX: &str = "#server-to-user-";

/// After a failed store call, wait this long before trying again.
const RETRY: Duration = Duration::from_secs(1);

/// Longest wait for the store while vacating at shutdown.
const SHUTDOWN_VACATE: Duration = Duration::from_secs(3);

/// Channels whose local occupancy may have changed, and the task's wake-up.
/// Bounded by the number of distinct channels (each is marked once).
#[derive(Default)]
pub struct Dirty {
    channels: Mutex<HashSet<String>>,
    wake: Notify,
}

impl Dirty {
    fn mark(&self, channel: &str) {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(channel.to_string());
        // A permit is stored if the task is busy: no mark is missed.
        self.wake.notify_one();
    }

    fn take(&self) -> HashSet<String> {
        std::mem::take(&mut *self.channels.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl OccupancyWatch for Dirty {
    fn changed(&self, channel: &str) {
        if !channel.starts_with(EXCLUDED_PREFIX) {
            self.mark(channel);
        }
    }
}

/// The per-node task. `recorded` is what this node has written to the store.
pub struct Tracker {
    pub hub: Hub,
    pub dirty: Arc<Dirty>,
    pub store: Arc<dyn Occupancy>,
    pub node: Arc<str>,
}

impl Tracker {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut recorded: HashSet<String> = HashSet::new();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = self.dirty.wake.notified() => {}
            }
            let mut failed = false;
            for channel in self.dirty.take() {
                if let Err(e) = self.sync(&channel, &mut recorded).await {
                    tracing::warn!(channel, error = %e, "channel occupancy not recorded; retrying");
                    self.dirty.mark(&channel);
                    failed = true;
                }
            }
            if failed {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
        }
        // This node's sockets are closing (4200) and reconnect elsewhere:
        // give up its channels now, so the last node out is seen and the
        // held vacated events are cancelled by their reconnections.
        for channel in recorded {
            let vacate = self.store.vacate(&channel, &self.node, now_millis());
            match tokio::time::timeout(SHUTDOWN_VACATE, vacate).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(channel, error = %e, "channel not vacated at shutdown")
                }
                Err(_) => {
                    tracing::warn!(channel, "channel not vacated at shutdown: store too slow")
                }
            }
        }
    }

    /// Makes the store's record of `channel` for this node match the hub.
    async fn sync(
        &self,
        channel: &str,
        recorded: &mut HashSet<String>,
    ) -> Result<(), crate::store::StoreError> {
        let local = self.hub.subscription_count(channel) > 0;
        let known = recorded.contains(channel);
        if local && !known {
            self.store.occupy(channel, &self.node, now_millis()).await?;
            recorded.insert(channel.to_string());
        } else if !local && known {
            self.store.vacate(channel, &self.node, now_millis()).await?;
            recorded.remove(channel);
        }
        Ok(())
    }
}

/// Starts tracking `hub`'s occupancy for `node`.
pub fn spawn(
    hub: &Hub,
    store: Arc<dyn Occupancy>,
    node: Arc<str>,
    tracker: &tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
) {
    let dirty = Arc::new(Dirty::default());
    hub.watch_occupancy(Arc::clone(&dirty) as Arc<dyn OccupancyWatch>);
    let task = Tracker {
        hub: hub.clone(),
        dirty,
        store,
        node,
    };
    tracker.spawn(task.run(shutdown));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app_webhooks::{MemoryWebhookStore, QueueOptions, WebhookQueue, WebhookStore};
    use crate::pusher::channel::{ChannelName, SocketId};
    use crate::pusher::hub::SocketHandle;

    fn setup() -> (
        Hub,
        WebhookStore,
        CancellationToken,
        tokio_util::task::TaskTracker,
    ) {
        let hub = Hub::new();
        let store = WebhookStore::of(MemoryWebhookStore::new(QueueOptions {
            hold: Duration::ZERO,
            max_len: 1000,
        }));
        let (shutdown, tracker) = (
            CancellationToken::new(),
            tokio_util::task::TaskTracker::new(),
        );
        spawn(
            &hub,
            Arc::clone(&store.occupancy),
            Arc::from("n1"),
            &tracker,
            shutdown.clone(),
        );
        (hub, store, shutdown, tracker)
    }

    /// Everything queued so far, in order (claimed and acknowledged).
    async fn drain(queue: &dyn WebhookQueue) -> Vec<String> {
        let now = now_millis() + 1;
        let claim = queue.claim(100, now, now + 60_000).await.unwrap();
        let ids: Vec<String> = claim.events.iter().map(|e| e.id.clone()).collect();
        queue.ack(&ids).await.unwrap();
        claim.events.into_iter().map(|e| e.json).collect()
    }

    /// Lets the tracker's task catch up (it only awaits the memory store).
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn flaps_converge_to_where_they_ended() {
        let (hub, store, shutdown, tracker) = setup();
        let channel = ChannelName::parse("chat.1").unwrap();
        let s = SocketHandle::new(SocketId::random(), 8);
        // Many flaps before the task runs: one sync, to "occupied".
        for _ in 0..10 {
            hub.subscribe(&channel, &s);
            hub.unsubscribe(channel.as_str(), &s.id);
        }
        hub.subscribe(&channel, &s);
        settle().await;
        assert_eq!(
            drain(&*store.queue).await,
            [r#"{"name":"channel_occupied","channel":"chat.1"}"#]
        );
        // A second local socket changes nothing; the last one leaving does.
        let t = SocketHandle::new(SocketId::random(), 8);
        hub.subscribe(&channel, &t);
        hub.unsubscribe(channel.as_str(), &s.id);
        settle().await;
        assert!(drain(&*store.queue).await.is_empty());
        hub.remove_socket(&t.id, [&channel]);
        settle().await;
        assert_eq!(
            drain(&*store.queue).await,
            [r#"{"name":"channel_vacated","channel":"chat.1"}"#]
        );
        // A user's own channel is never reported; at shutdown the node's
        // channels are given up.
        hub.subscribe(&ChannelName::user("7").unwrap(), &s);
        hub.subscribe(&channel, &s);
        settle().await;
        assert_eq!(drain(&*store.queue).await.len(), 1);
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
        assert_eq!(
            drain(&*store.queue).await,
            [r#"{"name":"channel_vacated","channel":"chat.1"}"#]
        );
    }
}
