//! The hub: which local sockets are subscribed to which channel, and fan-out
//! of already-serialized frames to them. No I/O and no `.await`: every method
//! is synchronous and only touches maps and bounded queues.
//!
//! Invariants:
//! - a channel entry exists only while it has at least one subscriber (the
//!   entry is removed, under its shard write lock, when the last one leaves),
//!   so the map cannot grow with channels nobody listens to;
//! - a socket is in a channel's map at most once (keyed by [`SocketId`]);
//! - the hub never blocks on a socket: delivery is `try_send` into the
//!   socket's bounded queue.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use super::channel::{ChannelName, SocketId};

/// What the hub hands to a socket's task, in order.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A serialized server frame, written to the socket as-is.
    Frame(Utf8Bytes),
}

/// The hub's side of one connection: where to put its frames and how to stop
/// it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SocketHandle {
    /// The connection's id (also the key in the hub's maps).
    pub id: SocketId,
    /// Bounded queue drained by the socket's task.
    tx: mpsc::Sender<Outbound>,
    /// Cancelled when the socket must be closed for falling behind (4100).
    kill: CancellationToken,
}

impl SocketHandle {
    /// A handle with a queue of `capacity` frames, and the receiving end that
    /// the socket's task drains.
    pub fn new(id: SocketId, capacity: usize) -> (Self, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let kill = CancellationToken::new();
        (Self { id, tx, kill }, rx)
    }

    /// The kill switch the socket's task watches.
    pub fn kill_token(&self) -> &CancellationToken {
        &self.kill
    }
}

#[derive(Debug, Default)]
struct HubInner {
    /// channel → its local subscribers. Small maps: most channels have a few
    /// dozen viewers at most.
    channels: DashMap<String, HashMap<SocketId, SocketHandle>>,
    /// Every connected local socket, subscribed or not.
    sockets: DashMap<SocketId, SocketHandle>,
}

/// Local channel registry and fan-out. A cheap `Clone` handle.
#[derive(Debug, Clone, Default)]
pub struct Hub {
    inner: Arc<HubInner>,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a connected socket (counted by [`Hub::socket_count`]).
    pub fn register(&self, socket: SocketHandle) {
        self.inner.sockets.insert(socket.id.clone(), socket);
    }

    /// Adds `socket` to `channel`; `false` if it was already subscribed.
    pub fn subscribe(&self, channel: &ChannelName, socket: &SocketHandle) -> bool {
        let mut subs = self
            .inner
            .channels
            .entry(channel.as_str().to_owned())
            .or_default();
        if subs.contains_key(&socket.id) {
            return false;
        }
        subs.insert(socket.id.clone(), socket.clone());
        true
    }

    /// Removes `socket` from `channel`, dropping the channel entry when it was
    /// the last subscriber; `false` if it was not subscribed.
    pub fn unsubscribe(&self, channel: &str, socket: &SocketId) -> bool {
        // The entry API holds the shard write lock across "remove, then drop
        // the channel if empty", so a concurrent subscribe cannot slip in
        // between and be lost with the entry.
        match self.inner.channels.entry(channel.to_owned()) {
            Entry::Occupied(mut e) => {
                let removed = e.get_mut().remove(socket).is_some();
                if e.get().is_empty() {
                    e.remove();
                }
                removed
            }
            Entry::Vacant(_) => false,
        }
    }

    /// Forgets a disconnected socket: unregisters it and removes it from each
    /// of `channels` (the socket's task knows what it subscribed to, so the
    /// hub needs no reverse index).
    pub fn remove_socket<'a>(
        &self,
        socket: &SocketId,
        channels: impl IntoIterator<Item = &'a ChannelName>,
    ) {
        for channel in channels {
            self.unsubscribe(channel.as_str(), socket);
        }
        self.inner.sockets.remove(socket);
    }

    /// Queues `frame` for every local subscriber of `channel` except
    /// `except`; returns how many sockets it was queued for.
    ///
    /// **Slow-consumer policy:** a socket whose queue is full is not waited
    /// for and does not get the frame: its kill token is cancelled, and its
    /// task closes it with code 4100 (pusher-js backs off, reconnects and,
    /// on resubscribing, receives a fresh `attendance.snapshot`, so nothing is
    /// silently lost). One slow browser can therefore never stall a publisher
    /// or the other subscribers, and its memory stays bounded by the queue.
    pub fn publish(&self, channel: &str, frame: Utf8Bytes, except: Option<&SocketId>) -> usize {
        // We iterate under the shard *read* guard rather than collecting the
        // senders first: `try_send` and `cancel` never block or await, so the
        // guard is held for a few atomic operations per subscriber, read
        // guards do not exclude concurrent publishers, and we save an
        // allocation and a clone per subscriber on every broadcast. Only
        // (un)subscribes on the same shard wait, for that short moment.
        let Some(subs) = self.inner.channels.get(channel) else {
            return 0;
        };
        let mut queued = 0;
        for (id, socket) in subs.iter() {
            if except == Some(id) {
                continue;
            }
            match socket.tx.try_send(Outbound::Frame(frame.clone())) {
                Ok(()) => queued += 1,
                Err(TrySendError::Full(_)) => {
                    if !socket.kill.is_cancelled() {
                        tracing::warn!(socket_id = %id, channel, "outbound queue full; closing slow consumer");
                        socket.kill.cancel();
                    }
                }
                // The socket's task has exited and is removing itself.
                Err(TrySendError::Closed(_)) => {}
            }
        }
        queued
    }

    /// Local subscribers of `channel`.
    pub fn subscription_count(&self, channel: &str) -> usize {
        self.inner.channels.get(channel).map_or(0, |s| s.len())
    }

    /// `(channel, local subscribers)` for every occupied channel whose name
    /// satisfies `keep` (a copy: no shard lock outlives the call).
    pub fn subscription_counts(&self, keep: impl Fn(&str) -> bool) -> Vec<(String, usize)> {
        self.inner
            .channels
            .iter()
            .filter(|e| keep(e.key()))
            .map(|e| (e.key().clone(), e.value().len()))
            .collect()
    }

    /// Channels with at least one local subscriber.
    pub fn channel_count(&self) -> usize {
        self.inner.channels.len()
    }

    /// Connected local sockets.
    pub fn socket_count(&self) -> usize {
        self.inner.sockets.len()
    }

    /// The names of channels with at least one local subscriber (a copy:
    /// no shard lock outlives the call).
    pub fn channel_names(&self) -> Vec<String> {
        self.inner
            .channels
            .iter()
            .map(|e| e.key().clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chan(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap()
    }

    fn socket(hub: &Hub, cap: usize) -> (SocketHandle, mpsc::Receiver<Outbound>) {
        let (h, rx) = SocketHandle::new(SocketId::random(), cap);
        hub.register(h.clone());
        (h, rx)
    }

    fn text(o: Outbound) -> String {
        let Outbound::Frame(f) = o;
        f.to_string()
    }

    #[test]
    fn publish_reaches_each_subscriber_once_except_the_excluded() {
        let hub = Hub::new();
        let (a, mut ra) = socket(&hub, 8);
        let (b, mut rb) = socket(&hub, 8);
        let (_c, mut rc) = socket(&hub, 8);
        let ch = chan("session.1");
        assert!(hub.subscribe(&ch, &a));
        assert!(!hub.subscribe(&ch, &a), "second subscribe is a no-op");
        assert!(hub.subscribe(&ch, &b));
        assert_eq!(hub.subscription_count("session.1"), 2);

        assert_eq!(hub.publish("session.1", "f1".into(), None), 2);
        assert_eq!(hub.publish("session.1", "f2".into(), Some(&b.id)), 1);
        assert_eq!(hub.publish("nobody", "f3".into(), None), 0);

        assert_eq!(text(ra.try_recv().unwrap()), "f1");
        assert_eq!(text(ra.try_recv().unwrap()), "f2");
        assert!(ra.try_recv().is_err());
        assert_eq!(text(rb.try_recv().unwrap()), "f1");
        assert!(rb.try_recv().is_err());
        assert!(rc.try_recv().is_err());
    }

    #[test]
    fn channel_entries_go_away_with_their_last_subscriber() {
        let hub = Hub::new();
        let (a, _ra) = socket(&hub, 8);
        let (b, _rb) = socket(&hub, 8);
        let (one, two) = (chan("one"), chan("two"));
        hub.subscribe(&one, &a);
        hub.subscribe(&two, &a);
        hub.subscribe(&two, &b);
        assert_eq!((hub.channel_count(), hub.socket_count()), (2, 2));

        assert!(hub.unsubscribe("one", &a.id));
        assert!(!hub.unsubscribe("one", &a.id));
        assert_eq!(hub.channel_count(), 1);

        hub.remove_socket(&a.id, [&one, &two]);
        assert_eq!(hub.subscription_count("two"), 1);
        hub.remove_socket(&b.id, [&two]);
        assert_eq!((hub.channel_count(), hub.socket_count()), (0, 0));
        // Unsubscribing from a channel that no longer exists creates nothing.
        assert!(!hub.unsubscribe("two", &b.id));
        assert_eq!(hub.channel_count(), 0);
    }

    #[test]
    fn a_full_queue_kills_only_that_socket() {
        let hub = Hub::new();
        let (slow, _rs) = socket(&hub, 1);
        let (fast, mut rf) = socket(&hub, 8);
        let ch = chan("c");
        hub.subscribe(&ch, &slow);
        hub.subscribe(&ch, &fast);

        assert_eq!(hub.publish("c", "1".into(), None), 2);
        assert!(!slow.kill_token().is_cancelled());
        assert_eq!(hub.publish("c", "2".into(), None), 1);
        assert!(slow.kill_token().is_cancelled());
        assert!(!fast.kill_token().is_cancelled());
        assert_eq!(text(rf.try_recv().unwrap()), "1");
        assert_eq!(text(rf.try_recv().unwrap()), "2");
    }

    #[test]
    fn a_closed_queue_is_skipped_quietly() {
        let hub = Hub::new();
        let (gone, rx) = socket(&hub, 4);
        drop(rx);
        hub.subscribe(&chan("c"), &gone);
        assert_eq!(hub.publish("c", "x".into(), None), 0);
        assert!(!gone.kill_token().is_cancelled());
    }
}
