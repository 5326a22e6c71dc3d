//! The hub: which local sockets are subscribed to which channel, and fan-out
//! of already-serialized frames to them. No I/O and no `.await`: every method
//! is synchronous and only touches maps and bounded queues.
//!
//! Invariants:
//! - a channel entry exists only while it has at least one subscriber (the
//!   entry is removed, under its shard write lock, when the last one leaves),
//!   so the map cannot grow with channels nobody listens to;
//! - a socket is in a channel's map at most once (keyed by [`SocketId`]);
//! - the hub never blocks on a socket: delivery is a push into the
//!   socket's bounded [`Outbox`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll, Waker};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::channel::{ChannelName, SocketId};

/// Why a socket's task must stop, signalled through its [`Outbox`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// Its queue overflowed: close with 4100 (slow consumer).
    SlowConsumer,
    /// The server is shutting down: close with 4200.
    Shutdown,
    /// The app terminated the signed-in user's connections
    /// (`terminate_connections`): a 4009 error and close, which pusher-js
    /// does not reconnect after.
    Terminated,
}

impl Halt {
    /// Which halt decides the close code when two arrive: the app's
    /// termination over a shutdown (whose 4200 would reconnect the user at
    /// once), a shutdown over a slow consumer.
    fn rank(self) -> u8 {
        match self {
            Halt::SlowConsumer => 0,
            Halt::Shutdown => 1,
            Halt::Terminated => 2,
        }
    }
}

/// What [`Outbox::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued for the socket's task.
    Queued,
    /// The queue was full: the frame was dropped and the socket halted as a
    /// slow consumer (by this call).
    Full,
    /// The socket is halted or gone; the frame was dropped.
    Closed,
}

/// A socket's bounded outbound queue, its kill switch and its wake-up, under
/// one small lock.
///
/// Memory: an idle outbox holds no buffer at all (`VecDeque::new()` does not
/// allocate, and the task takes the whole queue at once, leaving a fresh
/// empty one), unlike a tokio `mpsc` channel, which allocates a 32-slot block
/// and several cache-padded fields up front. Throughput: a push is one
/// uncontended lock and at most one wake; the task takes every queued frame
/// in one lock and writes them with a single flush.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<OutboxState>,
}

#[derive(Debug)]
struct OutboxState {
    frames: VecDeque<Utf8Bytes>,
    /// Frames queued (not yet taken by the task) before it counts as slow.
    capacity: usize,
    halt: Option<Halt>,
    /// The task has finished: refuse everything.
    closed: bool,
    /// The socket task, to wake on a frame or a halt.
    waker: Option<Waker>,
}

impl Outbox {
    fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(OutboxState {
                frames: VecDeque::new(),
                capacity: capacity.max(1),
                halt: None,
                closed: false,
                waker: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        // Nothing panics under this lock; a poisoned state is still sound.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `frame`; a full queue halts the socket as a slow consumer.
    pub fn push(&self, frame: Utf8Bytes) -> Push {
        let (push, waker) = {
            let mut s = self.lock();
            if s.closed || s.halt.is_some() {
                return Push::Closed;
            }
            if s.frames.len() >= s.capacity {
                s.halt = Some(Halt::SlowConsumer);
                s.frames = VecDeque::new();
                (Push::Full, s.waker.take())
            } else {
                s.frames.push_back(frame);
                (Push::Queued, s.waker.take())
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        push
    }

    /// Tells the socket's task to stop (a higher-ranked halt overrides a
    /// pending one, as it decides the close code: see [`Halt::rank`]).
    pub fn halt(&self, why: Halt) {
        let waker = {
            let mut s = self.lock();
            if s.closed || s.halt.is_some_and(|h| h.rank() >= why.rank()) {
                return;
            }
            s.halt = Some(why);
            s.frames = VecDeque::new();
            s.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Marks the socket gone: queued frames are dropped, later pushes refused.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.frames = VecDeque::new();
        s.waker = None;
    }

    /// The socket task's receive: a halt first, else every queued frame at
    /// once (in order), else `Pending` with the task's waker registered.
    pub fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Result<VecDeque<Utf8Bytes>, Halt>> {
        let mut s = self.lock();
        if let Some(halt) = s.halt {
            return Poll::Ready(Err(halt));
        }
        if !s.frames.is_empty() {
            return Poll::Ready(Ok(std::mem::take(&mut s.frames)));
        }
        register(&mut s.waker, cx);
        Poll::Pending
    }

    /// Resolves when the socket is halted (raced against writes, so a
    /// client that stopped reading cannot pin the task).
    pub fn poll_halt(&self, cx: &mut Context<'_>) -> Poll<Halt> {
        let mut s = self.lock();
        match s.halt {
            Some(halt) => Poll::Ready(halt),
            None => {
                register(&mut s.waker, cx);
                Poll::Pending
            }
        }
    }

    /// Frames queued and not yet taken by the task.
    pub fn len(&self) -> usize {
        self.lock().frames.len()
    }

    /// Whether no frame is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// The hub's side of one connection: its id and its [`Outbox`]. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct SocketHandle {
    /// The connection's id (also the key in the hub's maps).
    pub id: SocketId,
    /// Bounded queue drained by the socket's task; also its kill switch.
    outbox: Arc<Outbox>,
}

impl SocketHandle {
    /// A handle whose queue holds up to `capacity` frames not yet taken by
    /// the socket's task.
    pub fn new(id: SocketId, capacity: usize) -> Self {
        Self {
            id,
            outbox: Arc::new(Outbox::new(capacity)),
        }
    }

    /// The socket's queue and kill switch.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }
}

/// Told when a channel gains its first local subscriber or loses its last
/// one. Called synchronously from `subscribe`/`unsubscribe` (after the
/// shard lock is released), so it must only record the channel and wake
/// someone: no I/O, no blocking. It is a hint, not a state: the watcher
/// reads [`Hub::subscription_count`] when it gets to the channel, so hints
/// that arrive late or coalesce still converge (level-triggered). Every
/// installed watcher is told (the bus's subscriptions, the app webhooks'
/// occupancy record).
pub trait OccupancyWatch: Send + Sync + 'static {
    fn changed(&self, channel: &str);
}

#[derive(Default)]
struct HubInner {
    /// channel → its local subscribers. Small maps: most channels have a few
    /// dozen viewers at most.
    channels: DashMap<String, Subscribers>,
    /// Every connected local socket, subscribed or not.
    sockets: DashMap<SocketId, SocketHandle>,
    /// Installed at startup (the Redis bus; app webhooks when on); with
    /// none, occupancy changes cost one uncontended read lock.
    watchers: RwLock<Vec<Arc<dyn OccupancyWatch>>>,
}

/// A channel's local subscribers, and how many frames were published to
/// them ([`Hub::publish_unless_published_since`]).
#[derive(Default)]
struct Subscribers {
    sockets: HashMap<SocketId, SocketHandle>,
    /// Bumped by every [`Hub::publish`], under the shard's read guard.
    published: std::sync::atomic::AtomicU64,
}

impl std::ops::Deref for Subscribers {
    type Target = HashMap<SocketId, SocketHandle>;

    fn deref(&self) -> &Self::Target {
        &self.sockets
    }
}

impl std::ops::DerefMut for Subscribers {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.sockets
    }
}

impl std::fmt::Debug for HubInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubInner")
            .field("channels", &self.channels.len())
            .field("sockets", &self.sockets.len())
            .finish_non_exhaustive()
    }
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

    /// Adds an occupancy watcher; it is told of every later first/last
    /// subscriber (install before sockets subscribe, or mark what exists).
    pub fn watch_occupancy(&self, watch: Arc<dyn OccupancyWatch>) {
        self.inner
            .watchers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(watch);
    }

    fn occupancy_changed(&self, channel: &str) {
        // Watchers only record and wake (no I/O, no hub calls), so the read
        // lock is held for a few operations.
        let watchers = self
            .inner
            .watchers
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        for watch in watchers.iter() {
            watch.changed(channel);
        }
    }

    /// Adds `socket` to `channel`; `false` if it was already subscribed.
    pub fn subscribe(&self, channel: &ChannelName, socket: &SocketHandle) -> bool {
        let first = {
            let mut subs = self
                .inner
                .channels
                .entry(channel.as_str().to_owned())
                .or_default();
            if subs.contains_key(&socket.id) {
                return false;
            }
            subs.insert(socket.id.clone(), socket.clone());
            subs.len() == 1
        };
        if first {
            self.occupancy_changed(channel.as_str());
        }
        true
    }

    /// Removes `socket` from `channel`, dropping the channel entry when it was
    /// the last subscriber; `false` if it was not subscribed.
    pub fn unsubscribe(&self, channel: &str, socket: &SocketId) -> bool {
        // The entry API holds the shard write lock across "remove, then drop
        // the channel if empty", so a concurrent subscribe cannot slip in
        // between and be lost with the entry.
        let (removed, last) = match self.inner.channels.entry(channel.to_owned()) {
            Entry::Occupied(mut e) => {
                let removed = e.get_mut().remove(socket).is_some();
                let last = e.get().is_empty();
                if last {
                    e.remove();
                }
                (removed, last)
            }
            Entry::Vacant(_) => (false, false),
        };
        if last {
            self.occupancy_changed(channel);
        }
        removed
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
    /// for and does not get the frame: it is halted ([`Halt::SlowConsumer`]), and its
    /// task closes it with code 4100 (pusher-js backs off, reconnects and,
    /// on resubscribing, receives a fresh `attendance.snapshot`, so nothing is
    /// silently lost). One slow browser can therefore never stall a publisher
    /// or the other subscribers, and its memory stays bounded by the queue.
    pub fn publish(&self, channel: &str, frame: Utf8Bytes, except: Option<&SocketId>) -> usize {
        // We iterate under the shard *read* guard rather than collecting the
        // senders first: a push never blocks or awaits (one uncontended lock), so the
        // guard is held for a few atomic operations per subscriber, read
        // guards do not exclude concurrent publishers, and we save an
        // allocation and a clone per subscriber on every broadcast. Only
        // (un)subscribes on the same shard wait, for that short moment.
        let Some(subs) = self.inner.channels.get(channel) else {
            return 0;
        };
        subs.published
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut queued = 0;
        for (id, socket) in subs.iter() {
            if except == Some(id) {
                continue;
            }
            match socket.outbox.push(frame.clone()) {
                Push::Queued => queued += 1,
                Push::Full => {
                    tracing::warn!(socket_id = %id, channel, "outbound queue full; closing slow consumer");
                }
                // Halted already, or the task has exited and is removing
                // itself.
                Push::Closed => {}
            }
        }
        queued
    }

    /// How many frames were published to `channel`'s local subscribers so
    /// far; `None` when it has none.
    pub fn published(&self, channel: &str) -> Option<u64> {
        self.inner
            .channels
            .get(channel)
            .map(|s| s.published.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Queues `frames` for every local subscriber of `channel`, unless a
    /// frame was published to it since [`Hub::published`] answered `since`:
    /// then nothing is queued and the answer is `false`. For a snapshot
    /// read after `since`: an update published meanwhile may be newer than
    /// it, and must not be followed by it. Decided and queued under the
    /// shard's write guard, which no `publish` holds at the same time.
    pub fn publish_unless_published_since(
        &self,
        channel: &str,
        frames: &[Utf8Bytes],
        since: u64,
    ) -> bool {
        let Some(subs) = self.inner.channels.get_mut(channel) else {
            return false;
        };
        if subs.published.load(std::sync::atomic::Ordering::Relaxed) != since {
            return false;
        }
        for socket in subs.values() {
            for frame in frames {
                if socket.outbox.push(frame.clone()) == Push::Full {
                    tracing::warn!(socket_id = %socket.id, channel, "outbound queue full; closing slow consumer");
                    break;
                }
            }
        }
        true
    }

    /// Halts every registered socket (their tasks close them with the code
    /// of `why`).
    pub fn halt_all(&self, why: Halt) {
        for socket in self.inner.sockets.iter() {
            socket.outbox.halt(why);
        }
    }

    /// Halts every local subscriber of `channel` (a user's
    /// `#server-to-user-<id>`: every socket signed in as that user).
    pub fn halt_channel(&self, channel: &str, why: Halt) {
        if let Some(subs) = self.inner.channels.get(channel) {
            for socket in subs.values() {
                socket.outbox.halt(why);
            }
        }
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

    fn socket(hub: &Hub, cap: usize) -> (SocketHandle, SocketHandle) {
        let h = SocketHandle::new(SocketId::random(), cap);
        hub.register(h.clone());
        (h.clone(), h)
    }

    /// What the socket's task would take now.
    fn take(h: &SocketHandle) -> Result<Vec<String>, Halt> {
        let mut cx = Context::from_waker(Waker::noop());
        match h.outbox().poll_take(&mut cx) {
            Poll::Ready(Ok(frames)) => Ok(frames.iter().map(|f| f.to_string()).collect()),
            Poll::Ready(Err(halt)) => Err(halt),
            Poll::Pending => Ok(Vec::new()),
        }
    }

    fn halted(h: &SocketHandle) -> Option<Halt> {
        let mut cx = Context::from_waker(Waker::noop());
        match h.outbox().poll_halt(&mut cx) {
            Poll::Ready(halt) => Some(halt),
            Poll::Pending => None,
        }
    }

    #[test]
    fn publish_reaches_each_subscriber_once_except_the_excluded() {
        let hub = Hub::new();
        let (a, ra) = socket(&hub, 8);
        let (b, rb) = socket(&hub, 8);
        let (_c, rc) = socket(&hub, 8);
        let ch = chan("session.1");
        assert!(hub.subscribe(&ch, &a));
        assert!(!hub.subscribe(&ch, &a), "second subscribe is a no-op");
        assert!(hub.subscribe(&ch, &b));
        assert_eq!(hub.subscription_count("session.1"), 2);

        assert_eq!(hub.publish("session.1", "f1".into(), None), 2);
        assert_eq!(hub.publish("session.1", "f2".into(), Some(&b.id)), 1);
        assert_eq!(hub.publish("nobody", "f3".into(), None), 0);

        assert_eq!(ra.outbox().len(), 2);
        assert_eq!(take(&ra), Ok(vec!["f1".to_owned(), "f2".to_owned()]));
        assert_eq!(take(&ra), Ok(vec![]), "taken at once, in order");
        assert_eq!(take(&rb), Ok(vec!["f1".to_owned()]));
        assert_eq!(take(&rc), Ok(vec![]));
    }

    #[test]
    fn a_state_read_before_a_publish_is_not_sent_after_it() {
        let hub = Hub::new();
        let (a, ra) = socket(&hub, 8);
        let ch = chan("session.1");
        assert_eq!(hub.published("session.1"), None, "no subscribers");
        hub.subscribe(&ch, &a);
        let since = hub.published("session.1").unwrap();
        // Nothing published since: the state goes out.
        assert!(hub.publish_unless_published_since("session.1", &["s1".into()], since));
        // An update lands after the state was read: the state stays back.
        let since = hub.published("session.1").unwrap();
        hub.publish("session.1", "u1".into(), None);
        assert!(!hub.publish_unless_published_since("session.1", &["s2".into()], since));
        assert_eq!(take(&ra), Ok(vec!["s1".to_owned(), "u1".to_owned()]));
        assert!(!hub.publish_unless_published_since("nobody", &["x".into()], 0));
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
        let (fast, rf) = socket(&hub, 8);
        let ch = chan("c");
        hub.subscribe(&ch, &slow);
        hub.subscribe(&ch, &fast);

        assert_eq!(hub.publish("c", "1".into(), None), 2);
        assert_eq!(halted(&slow), None);
        assert_eq!(hub.publish("c", "2".into(), None), 1);
        assert_eq!(halted(&slow), Some(Halt::SlowConsumer));
        assert_eq!(take(&slow), Err(Halt::SlowConsumer));
        assert!(slow.outbox().is_empty(), "a halted socket holds no frames");
        assert_eq!(hub.publish("c", "3".into(), None), 1);
        assert_eq!(halted(&fast), None);
        assert_eq!(take(&rf), Ok(vec!["1".into(), "2".into(), "3".into()]));
    }

    #[test]
    fn a_closed_queue_is_skipped_quietly() {
        let hub = Hub::new();
        let (gone, _) = socket(&hub, 4);
        gone.outbox().close();
        hub.subscribe(&chan("c"), &gone);
        assert_eq!(hub.publish("c", "x".into(), None), 0);
        assert_eq!(halted(&gone), None);
    }

    #[test]
    fn the_queue_bound_counts_frames_not_yet_taken() {
        let hub = Hub::new();
        let (s, _) = socket(&hub, 2);
        hub.subscribe(&chan("c"), &s);
        assert_eq!(hub.publish("c", "1".into(), None), 1);
        assert_eq!(hub.publish("c", "2".into(), None), 1);
        assert_eq!(take(&s), Ok(vec!["1".into(), "2".into()]));
        // Taking the batch frees the queue while it is being written.
        assert_eq!(hub.publish("c", "3".into(), None), 1);
        assert_eq!(hub.publish("c", "4".into(), None), 1);
        assert_eq!(halted(&s), None);
    }

    #[test]
    fn halt_all_halts_every_socket_and_shutdown_wins() {
        let hub = Hub::new();
        let (a, _) = socket(&hub, 1);
        let (b, _) = socket(&hub, 1);
        a.outbox().halt(Halt::SlowConsumer);
        hub.halt_all(Halt::Shutdown);
        assert_eq!(halted(&a), Some(Halt::Shutdown));
        assert_eq!(halted(&b), Some(Halt::Shutdown));
        b.outbox().halt(Halt::SlowConsumer);
        assert_eq!(halted(&b), Some(Halt::Shutdown));
        // The app's termination outranks a shutdown, which outranks nothing
        // of it later.
        b.outbox().halt(Halt::Terminated);
        assert_eq!(halted(&b), Some(Halt::Terminated));
        b.outbox().halt(Halt::Shutdown);
        assert_eq!(halted(&b), Some(Halt::Terminated));
    }

    #[test]
    fn halt_channel_halts_only_that_channels_subscribers() {
        let hub = Hub::new();
        let (a, _) = socket(&hub, 4);
        let (b, _) = socket(&hub, 4);
        let (c, _) = socket(&hub, 4);
        hub.subscribe(&chan("one"), &a);
        hub.subscribe(&chan("one"), &b);
        hub.subscribe(&chan("two"), &c);
        hub.halt_channel("one", Halt::Terminated);
        hub.halt_channel("nobody", Halt::Terminated);
        assert_eq!(halted(&a), Some(Halt::Terminated));
        assert_eq!(halted(&b), Some(Halt::Terminated));
        assert_eq!(halted(&c), None);
    }
}
