//! One Pusher connection: the task that owns the WebSocket.
//!
//! A single task reads client frames, drains the socket's bounded outbound
//! queue (its [`Outbox`](super::hub::Outbox), which also carries the halt
//! for a slow consumer or a shutdown) and runs the keepalive timer. Being the
//! only writer is what makes the ordering guarantees below hold without
//! locks.
//!
//! Whatever the client does, the task ends in bounded time: every write is
//! raced against the halt, a stall deadline (`write_timeout` without
//! progress) and the keepalive's give-up time, so a client that stopped
//! reading is decided on even while a write is pending; the pong tungstenite
//! owes for a client's ping is flushed before reading on (so pongs cannot
//! pile up); subscribe/unsubscribe requests spend a per-socket budget.
//!
//! The task's future is what every idle socket costs besides its buffers, so
//! rare paths (client messages, the close handshake) are boxed and only the
//! receive loop stays inline.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, StreamExt};
use governor::clock::MonotonicClock;

use crate::channel_events::ChannelEvent;
use crate::config::Rate;
use crate::limits::quota;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use crate::metrics::WsClose;

use super::auth::{verify_channel_auth, verify_user_auth};
use super::channel::{ChannelKind, ChannelName, SocketId, USER_CHANNEL_PREFIX};
use super::frame::{self, ClientFrame, code};
use super::hub::{Halt, SocketHandle};
use super::presence::{self as presence_wire, PresenceMember};
use super::service::JoinRefusal;
use super::service::{FRAGMENT_BYTES, PusherConfig, PusherState, Ws};

/// Upper bound on closing a socket politely (sending our close frame and
/// waiting for the client's reply), so shutdown ends in bounded time even
/// with clients that stopped reading.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A repeated subscribe to a channel the socket is already subscribed to
/// gets its snapshot again at most this often (it is kept up to date by the
/// updates meanwhile, so the repeat only costs bytes; without this a 71-byte
/// request bought a whole roster).
const SNAPSHOT_REPEAT_INTERVAL: Duration = Duration::from_secs(5);

/// Why a terminated user's sockets close (`terminate_connections`).
const TERMINATED: &str = "connection terminated by the app";

/// Why a socket that did not sign in in time closes (Pusher's wording).
const SIGNIN_TIMED_OUT: &str = "Connection not authorized within timeout";

/// Client events one connection may send: Pusher's limit, 10 a second.
const CLIENT_EVENTS_PER_SECOND: u32 = 10;

/// Per-socket subscribe/unsubscribe budget (`governor`, std clock).
type SubscribeLimiter = governor::RateLimiter<
    NotKeyed,
    InMemoryState,
    MonotonicClock,
    NoOpMiddleware<std::time::Instant>,
>;

/// Why the connection loop ended.
enum Stop {
    /// Close the socket with this Pusher code; the reason is counted in
    /// `rollcall_ws_closed_total` when it is one of the bounds.
    Close(u16, &'static str, Option<WsClose>),
    /// Send a `pusher:error` with this code and message, then close with
    /// them: for stops decided outside the task (a halt), which could not
    /// queue the error ahead of themselves.
    Refuse(u16, &'static str),
    /// The client closed or the transport failed: nothing more to send.
    Gone,
}

impl From<Halt> for Stop {
    fn from(halt: Halt) -> Self {
        match halt {
            Halt::SlowConsumer => Stop::Close(
                code::OVER_CAPACITY,
                "too slow: outbound queue overflowed",
                Some(WsClose::SlowConsumer),
            ),
            Halt::Shutdown => Stop::Close(code::RECONNECT, "server restarting", None),
            Halt::Terminated => Stop::Refuse(code::UNAUTHORIZED, TERMINATED),
        }
    }
}

/// Registers an accepted connection and returns its task: the connection
/// run to its end, then `keep` dropped (the connection slot and the
/// tracker's token).
///
/// Not an `async fn`: an `async fn` stores its by-value arguments twice in
/// its future (as arguments and as the locals they are moved into,
/// rust-lang/rust#62958), and this future is what every idle socket costs
/// besides its buffers. The `async move` block below uses its captures in
/// place.
pub(super) fn serve(
    ws: Ws,
    state: PusherState,
    keep: impl Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let handle = SocketHandle::new(SocketId::random(), state.config.outbound_queue);
    state.hub.register(handle.clone());
    // Shutdown halts every registered socket (`Hub::halt_all`); one that
    // registered after that sweep sees the cancelled token here.
    if state.shutdown.is_cancelled() {
        handle.outbox().halt(Halt::Shutdown);
    }
    tracing::debug!(socket_id = %handle.id, "pusher socket connected");
    let mut conn = Connection {
        state,
        handle,
        channels: HashMap::new(),
        keepalive: Keepalive {
            last_activity: Instant::now(),
            ping_sent_at: None,
            signin_by: None,
        },
        subscribes: None,
        subscribed_once: false,
        client_events: None,
    };
    let mut ws = ws;
    async move {
        let stop = conn.run(&mut ws).await;

        // Leave the hub before the (possibly slow) close handshake so
        // nothing more is queued for a socket that is going away.
        conn.handle.outbox().close();
        conn.state
            .hub
            .remove_socket(&conn.handle.id, conn.channels.keys());
        let memberships: Vec<ChannelName> = conn
            .channels
            .iter()
            .filter(|(_, s)| s.user_id.is_some())
            .map(|(c, _)| c.clone())
            .collect();
        if !memberships.is_empty() {
            // Its own tracked task (shutdown waits for it): the leaves do not
            // hold up the close handshake, nor grow this future.
            let presence = Arc::clone(&conn.state.services.presence);
            let socket = conn.handle.id.clone();
            conn.state.tracker.spawn(async move {
                for channel in memberships {
                    presence.leave(&channel, &socket).await;
                }
            });
        }
        match stop {
            Stop::Close(code, reason, bound) => {
                tracing::debug!(socket_id = %conn.handle.id, code, reason, "closing pusher socket");
                if let Some(bound) = bound {
                    conn.state.metrics.ws.closed(bound);
                }
                close_boxed(ws, None, code, reason.into()).await;
            }
            Stop::Refuse(code, reason) => {
                tracing::debug!(socket_id = %conn.handle.id, code, reason, "refusing pusher socket");
                let error = frame::error(Some(code), reason);
                close_boxed(ws, Some(error), code, reason.into()).await;
            }
            Stop::Gone => tracing::debug!(socket_id = %conn.handle.id, "pusher socket gone"),
        }
        drop(keep);
    }
}

/// [`close`] in its own allocation (built outside any `async fn`, so its
/// state never counts in the caller's future): closing is rare, and the
/// handshake's state would otherwise be part of every idle socket's task.
pub(super) fn close_boxed(
    ws: Ws,
    error: Option<Utf8Bytes>,
    code: u16,
    reason: String,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move { close(ws, error, code, &reason).await })
}

/// Sends `error` (if any) and a close frame with `code`, then waits for the
/// client's close reply, all within [`CLOSE_GRACE`]. Waiting for the reply
/// lets the TCP connection end with FIN rather than a reset, which could
/// make the client lose the close frame and its code.
async fn close(mut ws: Ws, error: Option<Utf8Bytes>, code: u16, reason: &str) {
    let polite = async {
        if let Some(error) = error {
            // Pusher errors are a few hundred bytes: one frame.
            ws.send(Message::Text(error)).await?;
        }
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        ws.send(Message::Close(Some(frame))).await?;
        while let Some(Ok(_)) = ws.next().await {}
        Ok::<(), tungstenite::Error>(())
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, polite).await;
}

struct Connection {
    state: PusherState,
    /// Our entry in the hub (id, outbox: queue and kill switch).
    handle: SocketHandle,
    /// Channels this socket is subscribed to (what to remove from the hub on
    /// disconnect, and the per-socket subscription bound).
    channels: HashMap<ChannelName, Subscribed>,
    keepalive: Keepalive,
    /// Subscribe/unsubscribe budget. Most sockets make one such request,
    /// which always fits (the burst is at least 1), so the limiter is only
    /// made on the second, with the first's cell taken (boxed: one pointer
    /// in every idle socket's task; measured +55 B per subscribed socket
    /// when it was made on the first).
    subscribes: Option<Box<SubscribeLimiter>>,
    /// Whether a subscribe/unsubscribe was already let through.
    subscribed_once: bool,
    /// Client-event budget, made on the first client event (most sockets
    /// never send one).
    client_events: Option<Box<SubscribeLimiter>>,
}

/// One of the socket's subscriptions.
struct Subscribed {
    /// When its snapshot was last sent here (see [`SNAPSHOT_REPEAT_INTERVAL`]).
    snapshot_at: Instant,
    /// On a presence channel, the user this socket joined as (what it
    /// leaves on unsubscribe or disconnect; `user_id` of its client events).
    user_id: Option<Box<str>>,
}

impl Subscribed {
    fn new(user_id: Option<Box<str>>) -> Self {
        Self {
            snapshot_at: Instant::now(),
            user_id,
        }
    }
}

/// The keepalive state: the timer is not reset on every frame (that would
/// be a timer update per message); when it fires we look at the last
/// activity and re-arm it if the socket was not actually idle.
struct Keepalive {
    /// When the client last sent anything (WebSocket pings and pongs too).
    last_activity: Instant,
    /// When our `pusher:ping` went out, while its answer is awaited.
    ping_sent_at: Option<Instant>,
    /// When an unsigned socket is closed with 4009
    /// (`PusherConfig::signin_timeout`); `None` once signed in or with no
    /// timeout. The keepalive timer never sleeps past it, so the timeout
    /// costs no timer of its own.
    signin_by: Option<Instant>,
}

impl Keepalive {
    /// When a silent client is given up on (4201): `pong_timeout` after our
    /// ping, or, if the ping was never sent (a write was blocked when it was
    /// due), `pong_timeout` after it was due. Checked by the loop's timer
    /// and by every blocked write.
    fn give_up_at(&self, config: &PusherConfig) -> Instant {
        match self.ping_sent_at {
            Some(at) => at + config.pong_timeout,
            None => self.last_activity + config.activity_timeout + config.pong_timeout,
        }
    }

    /// `at`, or the sign-in deadline if that comes first: what the
    /// keepalive timer is armed for.
    fn wake_at(&self, at: Instant) -> Instant {
        self.signin_by.map_or(at, |by| by.min(at))
    }
}

impl Connection {
    async fn run(&mut self, ws: &mut Ws) -> Stop {
        let config = self.state.config.clone();
        let established = frame::connection_established(
            self.handle.id.as_str(),
            config.activity_timeout.as_millis().div_ceil(1000).max(1) as u64,
        );
        // Rare writes are boxed (`send_boxed`) so only the hot path's state
        // (`write` of queued frames) is inline in this loop's future.
        if let Err(stop) = self.send_boxed(ws, established).await {
            return stop;
        }

        // See `Keepalive`.
        self.keepalive.last_activity = Instant::now();
        self.keepalive.signin_by = config
            .signin_timeout
            .map(|t| self.keepalive.last_activity + t);
        let keepalive = sleep_until(
            self.keepalive
                .wake_at(self.keepalive.last_activity + config.activity_timeout),
        );
        tokio::pin!(keepalive);

        loop {
            let result = tokio::select! {
                biased;
                // A halt (slow consumer, shutdown) first, then every queued
                // frame at once.
                taken = poll_fn(|cx| self.handle.outbox().poll_take(cx)) => match taken {
                    Ok(frames) => self.write(ws, frames.into_iter(), WsClose::WriteTimeout).await,
                    Err(halt) => Err(halt.into()),
                },
                incoming = ws.next() => {
                    match incoming {
                        Some(Ok(msg)) if too_large(&msg, config.max_message_bytes) => {
                            Box::pin(self.refuse_too_large(ws)).await
                        }
                        Some(Err(err)) if is_too_large(&err) => {
                            Box::pin(self.refuse_too_large(ws)).await
                        }
                        Some(Ok(msg)) => {
                            // Any frame counts as activity, WebSocket pongs included.
                            let now = Instant::now();
                            self.keepalive.last_activity = now;
                            if self.keepalive.ping_sent_at.take().is_some() {
                                // The timer is armed for the pong deadline;
                                // re-arm it for the next idle period.
                                keepalive
                                    .as_mut()
                                    .reset(self.keepalive.wake_at(now + config.activity_timeout));
                            }
                            // Boxed: client messages are rare, and their
                            // handling (subscribe, auth, the hook) would
                            // otherwise grow every idle socket's task.
                            Box::pin(self.on_message(ws, msg)).await
                        }
                        Some(Err(_)) | None => Err(Stop::Gone),
                    }
                }
                () = &mut keepalive => {
                    let now = Instant::now();
                    let last_activity = self.keepalive.last_activity;
                    // (No locals beyond these two: whatever lives across
                    // the ping's write is part of every idle socket.)
                    match self.keepalive.ping_sent_at {
                        _ if self.keepalive.signin_by.is_some_and(|by| now >= by) => {
                            Err(Stop::Refuse(code::UNAUTHORIZED, SIGNIN_TIMED_OUT))
                        }
                        Some(at) if now >= at + config.pong_timeout => Err(pong_timeout()),
                        Some(at) => {
                            keepalive
                                .as_mut()
                                .reset(self.keepalive.wake_at(at + config.pong_timeout));
                            Ok(())
                        }
                        None if now >= last_activity + config.activity_timeout => {
                            self.keepalive.ping_sent_at = Some(now);
                            keepalive
                                .as_mut()
                                .reset(self.keepalive.wake_at(now + config.pong_timeout));
                            self.send_boxed(ws, frame::ping()).await
                        }
                        None => {
                            keepalive
                                .as_mut()
                                .reset(self.keepalive.wake_at(last_activity + config.activity_timeout));
                            Ok(())
                        }
                    }
                }
            };
            if let Err(stop) = result {
                return stop;
            }
        }
    }

    /// Writes `frames` in order and flushes once, raced against a halt
    /// (slow consumer, shutdown) and two deadlines, so a client that stopped
    /// reading (full TCP buffers) cannot pin this task: no progress (no
    /// frame accepted) for `write_timeout` ends the socket as `stalled`, and
    /// the keepalive's give-up time ([`Keepalive::give_up_at`]) ends it with
    /// 4201 as it would if no write were pending. tungstenite gathers the
    /// frames in its write buffer (up to `write_buffer_size`, see
    /// `service.rs`), so a burst costs one syscall, not one per frame. A
    /// message longer than `FRAGMENT_BYTES` goes out as a fragmented
    /// message ([`Outgoing`]), so tungstenite's buffer never holds more than
    /// about two fragments (it keeps the capacity of the largest frame it
    /// formatted, for the socket's life). Abandoning a write is safe:
    /// tungstenite buffers whole frames, and a close frame may come between
    /// the fragments of a message (RFC 6455 §5.4), so the close frame sent
    /// afterwards is still well-formed; nothing else is written after a
    /// failed write.
    ///
    /// Written with `poll_fn` rather than `SinkExt::feed`/`flush` futures:
    /// this state is part of every socket's task, and this way it is a few
    /// words; the timer is only allocated once the write has to wait.
    async fn write(
        &self,
        ws: &mut Ws,
        mut frames: impl Iterator<Item = Utf8Bytes>,
        stalled: WsClose,
    ) -> Result<(), Stop> {
        let mut pending = frames.next().map(Outgoing::new);
        let mut timer: Option<Pin<Box<Sleep>>> = None;
        let mut progressed = false;
        poll_fn(|cx| {
            if let Poll::Ready(halt) = self.handle.outbox().poll_halt(cx) {
                return Poll::Ready(Err(halt.into()));
            }
            let written = poll_write_all(
                Pin::new(&mut *ws),
                &mut pending,
                &mut frames,
                &mut progressed,
                cx,
            );
            if written.is_ready() {
                return written;
            }
            // Waiting on the client: (re)arm the deadline, from now on the
            // first wait and after any progress since the last one.
            let config = &self.state.config;
            let deadline =
                (Instant::now() + config.write_timeout).min(self.keepalive.give_up_at(config));
            match &mut timer {
                Some(timer) if progressed => timer.as_mut().reset(deadline),
                Some(_) => {}
                None => timer = Some(Box::pin(sleep_until(deadline))),
            }
            progressed = false;
            let Some(timer) = &mut timer else {
                unreachable!("armed above")
            };
            ready!(timer.as_mut().poll(cx));
            Poll::Ready(Err(
                if Instant::now() >= self.keepalive.give_up_at(config) {
                    pong_timeout()
                } else {
                    Stop::Close(code::OVER_CAPACITY, "write timed out", Some(stalled))
                },
            ))
        })
        .await
    }

    /// Flushes what tungstenite holds (the pong it owes for a client's ping),
    /// bounded like any write: a client that sends pings but does not read
    /// their pongs is closed after `write_timeout` instead of being read
    /// from (and its pongs buffered) forever.
    async fn flush(&self, ws: &mut Ws) -> Result<(), Stop> {
        self.write(ws, std::iter::empty(), WsClose::PingFlood).await
    }

    /// Answers a client message over `max_message_bytes`: a `pusher:error`,
    /// then a 4100 close.
    async fn refuse_too_large(&self, ws: &mut Ws) -> Result<(), Stop> {
        let msg = format!(
            "message exceeds the {} byte limit",
            self.state.config.max_message_bytes
        );
        let _ = self
            .send(ws, frame::error(Some(code::OVER_CAPACITY), &msg))
            .await;
        Err(Stop::Close(
            code::OVER_CAPACITY,
            "message too large",
            Some(WsClose::TooLarge),
        ))
    }

    /// Takes one subscribe/unsubscribe from the socket's budget
    /// (`PusherConfig::subscribe_rate`); over it, a `pusher:error` and a
    /// 4301 close (pusher-js does not reconnect after 43xx, so a looping
    /// client stops instead of coming straight back).
    async fn spend_subscribe(&mut self, ws: &mut Ws) -> Result<(), Stop> {
        let Some(rate) = self.state.config.subscribe_rate else {
            return Ok(());
        };
        if !std::mem::replace(&mut self.subscribed_once, true) {
            return Ok(());
        }
        let limiter = self.subscribes.get_or_insert_with(|| {
            let limiter = governor::RateLimiter::direct_with_clock(quota(rate), MonotonicClock);
            // The first request's cell (a full bucket always has it).
            let _ = limiter.check();
            Box::new(limiter)
        });
        if limiter.check().is_ok() {
            return Ok(());
        }
        self.state
            .metrics
            .rate_limited(crate::metrics::RateLimit::Subscribes);
        let err = frame::error(
            Some(code::RATE_LIMITED),
            "too many subscribe requests on this connection",
        );
        let _ = self.send(ws, err).await;
        Err(Stop::Close(
            code::RATE_LIMITED,
            "subscribe rate exceeded",
            Some(WsClose::SubscribeRate),
        ))
    }

    /// [`Self::send`] in its own allocation, for writes off the hot path.
    async fn send_boxed(&self, ws: &mut Ws, text: Utf8Bytes) -> Result<(), Stop> {
        Box::pin(self.send(ws, text)).await
    }

    /// Writes one frame.
    async fn send(&self, ws: &mut Ws, text: Utf8Bytes) -> Result<(), Stop> {
        self.write(ws, std::iter::once(text), WsClose::WriteTimeout)
            .await
    }

    async fn on_message(&mut self, ws: &mut Ws, msg: Message) -> Result<(), Stop> {
        let text = match msg {
            Message::Text(text) => text,
            Message::Binary(_) => {
                let err = frame::error(None, "binary messages are not supported");
                return self.send(ws, err).await;
            }
            // tungstenite queues the pong itself; we write it out before
            // reading on, so pongs never pile up behind a client that does
            // not read (see `flush`).
            Message::Ping(_) => return self.flush(ws).await,
            // A client's close is answered on the next read, which then ends
            // the stream.
            // (tungstenite never reads a `Frame`.)
            Message::Pong(_) | Message::Close(_) | Message::Frame(_) => return Ok(()),
        };
        let frame = match ClientFrame::parse(&text) {
            Ok(frame) => frame,
            Err(err) => {
                let err = frame::error(None, &format!("malformed message: {err}"));
                return self.send(ws, err).await;
            }
        };
        match frame.event.as_str() {
            "pusher:ping" => self.send(ws, frame::pong()).await,
            "pusher:pong" => Ok(()),
            "pusher:subscribe" => {
                self.spend_subscribe(ws).await?;
                self.subscribe(ws, &frame).await
            }
            "pusher:unsubscribe" => {
                self.spend_subscribe(ws).await?;
                if let Some(channel) = frame.data_str("channel")
                    && let Ok(channel) = ChannelName::parse(channel)
                    && let Some(subscribed) = self.channels.remove(&channel)
                {
                    self.state
                        .hub
                        .unsubscribe(channel.as_str(), &self.handle.id);
                    if subscribed.user_id.is_some() {
                        self.state
                            .services
                            .presence
                            .leave(&channel, &self.handle.id)
                            .await;
                    }
                }
                Ok(())
            }
            "pusher:signin" => self.signin(ws, &frame).await,
            event if event.starts_with("client-") => self.client_event(ws, &frame).await,
            event => {
                tracing::debug!(socket_id = %self.handle.id, event, "ignoring unknown event");
                Ok(())
            }
        }
    }

    /// `pusher:signin` (Pusher's user authentication): `data.auth` must sign
    /// `"<socket_id>::user::<user_data>"` and `user_data` carry a string
    /// `id`. Always answered: `pusher:signin_success` with the user data,
    /// and the socket joins its user's `#server-to-user-<id>` channel (so
    /// `sendToUser` reaches it on any node); otherwise a `pusher:error`
    /// 4009 and a 4009 close, as Pusher does.
    async fn signin(&mut self, ws: &mut Ws, frame: &ClientFrame) -> Result<(), Stop> {
        // `ClientFrame` decodes a JSON-string `data`; `user_data` is itself
        // JSON text and must be checked exactly as it was signed.
        let user_data = frame.data_str("user_data").unwrap_or_default();
        let auth = frame.data_str("auth").unwrap_or_default();
        let config = &self.state.config;
        let signed = verify_user_auth(
            &config.app_key,
            &config.app_secret,
            self.handle.id.as_str(),
            user_data,
            auth,
        );
        let user_channel = serde_json::from_str::<serde_json::Value>(user_data)
            .ok()
            .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned))
            .and_then(|id| ChannelName::user(&id));
        let Some(user_channel) = user_channel.filter(|_| signed) else {
            let why = if signed {
                "user_data must be JSON with a string \"id\" of at most 128 channel characters"
            } else {
                "invalid signature for pusher:signin"
            };
            let _ = self
                .send(ws, frame::error(Some(code::UNAUTHORIZED), why))
                .await;
            return Err(Stop::Close(code::UNAUTHORIZED, "signin refused", None));
        };
        // Signing in again (a token refresh, another user) moves the socket.
        let previous: Vec<ChannelName> = self
            .channels
            .keys()
            .filter(|c| c.as_str().starts_with(USER_CHANNEL_PREFIX))
            .cloned()
            .collect();
        for old in previous {
            self.channels.remove(&old);
            self.state.hub.unsubscribe(old.as_str(), &self.handle.id);
        }
        if self.state.hub.subscribe(&user_channel, &self.handle) {
            // Confirmed before `signin_success`: an event the app sends the
            // user once it learns of the sign-in reaches this socket.
            self.state.services.feed.ready(user_channel.as_str()).await;
        }
        self.channels.insert(user_channel, Subscribed::new(None));
        // Signed in: the sign-in timeout no longer applies (the timer, if
        // armed for it, finds nothing due and re-arms for the keepalive).
        self.keepalive.signin_by = None;
        let data = serde_json::json!({ "user_data": user_data }).to_string();
        self.send(ws, frame::event("pusher:signin_success", None, &data))
            .await
    }

    /// A `client-*` event (`ROLLCALL_CLIENT_EVENTS=on`): from a subscriber
    /// of a private channel, relayed to the channel's other subscribers on
    /// every node, never back to the sender; more than
    /// [`CLIENT_EVENTS_PER_SECOND`] closes the socket with 4301. Its size is
    /// bounded by the message limit (10 KiB, Pusher's).
    async fn client_event(&mut self, ws: &mut Ws, frame: &ClientFrame) -> Result<(), Stop> {
        if !self.state.config.client_events {
            let err = frame::error(None, "client events are not enabled on this server");
            return self.send(ws, err).await;
        }
        let limiter = self.client_events.get_or_insert_with(|| {
            let rate = Rate {
                count: CLIENT_EVENTS_PER_SECOND,
                per: Duration::from_secs(1),
            };
            Box::new(governor::RateLimiter::direct_with_clock(
                quota(rate),
                MonotonicClock,
            ))
        });
        if limiter.check().is_err() {
            let err = frame::error(
                Some(code::RATE_LIMITED),
                "Client event rejected due to rate limit",
            );
            let _ = self.send(ws, err).await;
            return Err(Stop::Close(
                code::RATE_LIMITED,
                "client event rate exceeded",
                Some(WsClose::ClientEventRate),
            ));
        }
        let channel = frame
            .channel
            .as_deref()
            .and_then(|c| ChannelName::parse(c).ok());
        let refusal = match &channel {
            None => Some("a client event needs a valid channel".to_string()),
            Some(c) if c.kind() == ChannelKind::Public => Some(format!(
                "client events are only for private and presence channels, not {c}"
            )),
            // As on Pusher: the server cannot check (or encrypt) what a
            // client would send on an end-to-end encrypted channel.
            Some(c) if c.is_encrypted() => Some(format!(
                "client events are not supported on encrypted channels ({c})"
            )),
            Some(c) if !self.channels.contains_key(c) => {
                Some(format!("not subscribed to {c}: subscribe before sending"))
            }
            Some(_) => None,
        };
        if let Some(message) = refusal {
            return self.send(ws, frame::error(None, &message)).await;
        }
        let channel = channel.expect("checked above");
        // Relayed as it came: a string stays the string, anything else its JSON.
        let data = match &frame.data {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let user_id = self
            .channels
            .get(&channel)
            .and_then(|s| s.user_id.as_deref())
            .map(str::to_owned);
        let out = match user_id.as_deref() {
            Some(user_id) => {
                frame::client_event_from_user(&frame.event, channel.as_str(), &data, user_id)
            }
            None => frame::event(&frame.event, Some(channel.as_str()), &data),
        };
        if !self
            .state
            .services
            .client_events
            .relay(&channel, out, &self.handle.id)
            .await
        {
            let err = frame::error(None, "client event not delivered: try again");
            return self.send(ws, err).await;
        }
        // Only what was relayed is reported (`client_event` webhook); the
        // sink returns once it is stored, and costs nothing without a URL.
        let event = ChannelEvent::ClientEvent {
            channel: channel.as_str().to_owned(),
            event: frame.event.clone(),
            data,
            socket_id: self.handle.id.as_str().to_owned(),
            user_id,
        };
        self.state.services.channel_events.emit(vec![event]).await;
        Ok(())
    }

    /// pusher-js subscribes to `#server-to-user-<id>` itself after
    /// `signin_success`; signing in already put the socket there, so its own
    /// user's channel is simply confirmed. Anyone else's is refused (4009,
    /// the socket stays): only signing in joins a user's channel.
    async fn subscribe_user_channel(&mut self, ws: &mut Ws, name: &str) -> Result<(), Stop> {
        let own = self.channels.keys().any(|c| c.as_str() == name);
        if own {
            return self
                .send(ws, frame::subscription_succeeded(name, "{}"))
                .await;
        }
        let err = frame::error(
            Some(code::UNAUTHORIZED),
            "a user's channel is joined by signing in as that user (pusher:signin)",
        );
        self.send(ws, err).await
    }

    async fn subscribe(&mut self, ws: &mut Ws, frame: &ClientFrame) -> Result<(), Stop> {
        let Some(name) = frame.data_str("channel") else {
            let err = frame::error(None, "pusher:subscribe needs data.channel");
            return self.send(ws, err).await;
        };
        if name.starts_with(USER_CHANNEL_PREFIX) {
            return self.subscribe_user_channel(ws, name).await;
        }
        let channel = match ChannelName::parse(name) {
            Ok(channel) => channel,
            Err(e) => {
                let err = frame::error(None, &format!("invalid channel name: {e}"));
                return self.send(ws, err).await;
            }
        };
        let mut member = None;
        match channel.kind() {
            ChannelKind::Public => {}
            ChannelKind::Private | ChannelKind::Presence => {
                let presence = channel.kind() == ChannelKind::Presence;
                let channel_data =
                    presence.then(|| frame.data_str("channel_data").unwrap_or_default());
                let config = &self.state.config;
                let authorised = verify_channel_auth(
                    &config.app_key,
                    &config.app_secret,
                    self.handle.id.as_str(),
                    channel.as_str(),
                    channel_data,
                    frame.data_str("auth").unwrap_or_default(),
                );
                if !authorised {
                    let msg = format!("invalid signature for channel {channel}");
                    return self
                        .send(ws, frame::error(Some(code::UNAUTHORIZED), &msg))
                        .await;
                }
                if let Some(channel_data) = channel_data {
                    match PresenceMember::parse(channel_data) {
                        Ok(m) => member = Some(m),
                        Err(e) if e.is_limit() => {
                            let err = presence_wire::subscription_error(
                                channel.as_str(),
                                "LimitReached",
                                &e.to_string(),
                                code::RATE_LIMITED,
                            );
                            return self.send(ws, err).await;
                        }
                        Err(e) => {
                            let msg = format!("invalid channel_data for {channel}: {e}");
                            return self
                                .send(ws, frame::error(Some(code::UNAUTHORIZED), &msg))
                                .await;
                        }
                    }
                }
            }
        }

        let now = Instant::now();
        let (snapshot, joining) = match self.channels.get_mut(&channel) {
            None => {
                if self.channels.len() >= self.state.config.max_channels_per_socket {
                    let err = frame::error(None, "too many channels on this connection");
                    return self.send(ws, err).await;
                }
                // Ordering invariant: register in the hub FIRST, then send
                // `subscription_succeeded` and the hook's frames (the
                // snapshot). Anything published from this point waits in our
                // bounded queue, and since this task is the only writer and
                // does not drain the queue until the hook's frames are
                // written, the client sees: succeeded, snapshot, then every
                // later update, in order. An update that raced the snapshot
                // may arrive after a snapshot that already includes it;
                // updates carry full per-person state, so replaying it
                // converges to the same view. Presence: the member list is
                // read after the hub registration, so a member change is
                // either in the list or queued after it.
                self.state.hub.subscribe(&channel, &self.handle);
                (true, true)
            }
            // A repeated subscribe gets `subscription_succeeded` again but no
            // second registration, and a fresh snapshot only if the last one
            // is older than `SNAPSHOT_REPEAT_INTERVAL` (the socket has had
            // every update since, so skipping it loses nothing).
            Some(sent) if now.duration_since(sent.snapshot_at) >= SNAPSHOT_REPEAT_INTERVAL => {
                sent.snapshot_at = now;
                (true, false)
            }
            Some(_) => (false, false),
        };
        if joining {
            // This node must hear the channel's broadcasts before anything
            // of its state is read (presence members below, the snapshot in
            // the hook): an update committed after that read is then either
            // in it or delivered to the queue after it. Concurrent
            // subscribers of a channel share one confirmation.
            self.state.services.feed.ready(channel.as_str()).await;
        }
        let mut data = String::from("{}");
        if let Some(member) = &member {
            // A repeat joins again (a no-op in the store) for the current list.
            match self
                .state
                .services
                .presence
                .join(&channel, &self.handle.id, member)
                .await
            {
                Ok(members) => data = presence_wire::subscription_data(&members),
                Err(refusal) => {
                    if joining {
                        self.state
                            .hub
                            .unsubscribe(channel.as_str(), &self.handle.id);
                        // A join that failed may still have been recorded
                        // (the reply was lost): leave, so it never lingers.
                        if refusal == JoinRefusal::Unavailable {
                            self.state
                                .services
                                .presence
                                .leave(&channel, &self.handle.id)
                                .await;
                        }
                    }
                    let err = match refusal {
                        JoinRefusal::Full { max_members } => presence_wire::subscription_error(
                            channel.as_str(),
                            "LimitReached",
                            &format!(
                                "The maximum members per presence channel ({max_members}) was reached"
                            ),
                            code::OVER_CAPACITY,
                        ),
                        JoinRefusal::Unavailable => presence_wire::subscription_error(
                            channel.as_str(),
                            "ServiceUnavailable",
                            "presence is unavailable right now; subscribe again later",
                            503,
                        ),
                    };
                    return self.send(ws, err).await;
                }
            }
        }
        if joining {
            let user_id = member.map(|m| m.user_id.into_boxed_str());
            self.channels
                .insert(channel.clone(), Subscribed::new(user_id));
        }
        self.send(ws, frame::subscription_succeeded(channel.as_str(), &data))
            .await?;
        if !snapshot {
            return Ok(());
        }

        let frames = tokio::select! {
            biased;
            halt = poll_fn(|cx| self.handle.outbox().poll_halt(cx)) => return Err(halt.into()),
            frames = self.state.hook.after_subscribe(&channel) => frames,
        };
        for f in frames {
            self.send(ws, f).await?;
        }
        Ok(())
    }
}

/// The 4201 decision: a pinged client showed no sign of life in time.
fn pong_timeout() -> Stop {
    Stop::Close(
        code::PONG_TIMEOUT,
        "pong reply not received",
        Some(WsClose::PongTimeout),
    )
}

/// A text message being written, one frame at a time: what is left of it,
/// and whether its first frame went out.
struct Outgoing {
    rest: Bytes,
    started: bool,
}

impl Outgoing {
    fn new(text: Utf8Bytes) -> Self {
        Self {
            rest: text.into(),
            started: false,
        }
    }

    /// The message's next frame: the whole message as one Text frame if it
    /// fits in `max` bytes; otherwise a fragment of at most `max` bytes (RFC
    /// 6455 §5.4: Text with FIN=0 first, then Continuation frames, the last
    /// with FIN=1). Fragments end on character boundaries, so each is valid
    /// UTF-8 on its own (clients need not rely on that). Slices, never
    /// copies, the shared frame.
    fn next_frame(&mut self, max: usize) -> Frame {
        let len = fragment_len(&self.rest, max);
        let payload = self.rest.split_to(len);
        let opcode = if std::mem::replace(&mut self.started, true) {
            Data::Continue
        } else {
            Data::Text
        };
        Frame::message(payload, OpCode::Data(opcode), self.rest.is_empty())
    }

    fn is_done(&self) -> bool {
        self.started && self.rest.is_empty()
    }
}

/// How much of `rest` (UTF-8, starting on a character boundary) the next
/// fragment takes: all of it if it fits in `max`, else at most `max` bytes
/// ending on a character boundary.
fn fragment_len(rest: &[u8], max: usize) -> usize {
    if rest.len() <= max {
        return rest.len();
    }
    // `rest[len]` starts the next fragment: not a continuation byte.
    let mut len = max;
    while len > 0 && rest[len] & 0xC0 == 0x80 {
        len -= 1;
    }
    if len == 0 { max } else { len }
}

/// Feeds `pending` and then the rest of `frames` to the socket, a frame (or
/// fragment) at a time, and flushes; `progressed` is set whenever a frame is
/// accepted.
fn poll_write_all(
    mut ws: Pin<&mut Ws>,
    pending: &mut Option<Outgoing>,
    frames: &mut impl Iterator<Item = Utf8Bytes>,
    progressed: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Stop>> {
    while let Some(message) = pending {
        ready!(ws.as_mut().poll_ready(cx)).map_err(write_failed)?;
        let frame = message.next_frame(FRAGMENT_BYTES);
        let done = message.is_done();
        ws.as_mut()
            .start_send(Message::Frame(frame))
            .map_err(write_failed)?;
        *progressed = true;
        if done {
            *pending = frames.next().map(Outgoing::new);
        }
    }
    ws.as_mut().poll_flush(cx).map_err(write_failed)
}

/// A failed write ends the socket. Only a frame larger than the write
/// buffer's cap (`MAX_WRITE_BUFFER_BYTES` in `service.rs`) would be our
/// doing, so that one is logged.
#[cold]
fn write_failed(err: tungstenite::Error) -> Stop {
    if let tungstenite::Error::WriteBufferFull(_) = err {
        tracing::warn!("a frame exceeds the socket's write buffer cap; closing the socket");
    }
    Stop::Gone
}

/// Whether a client data message is over `limit` bytes. tungstenite's own
/// limit is twice that (`service.rs`): a message up to there is read whole,
/// so the stream stays in step and the close handshake is clean (closing a
/// TCP socket with unread input sends a reset, and the client could lose
/// the error and the close code).
fn too_large(msg: &Message, limit: usize) -> bool {
    match msg {
        Message::Text(t) => t.len() > limit,
        Message::Binary(b) => b.len() > limit,
        _ => false,
    }
}

/// Whether a read failed on tungstenite's capacity limit (a message over
/// twice `max_message_bytes`, refused before it is buffered whole).
fn is_too_large(err: &tungstenite::Error) -> bool {
    matches!(err, tungstenite::Error::Capacity(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output_size<A, B, F>(_: impl FnOnce(A, B, ()) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_rate_allows_its_count_at_once_then_refills_evenly() {
        let quota = quota(crate::config::Rate {
            count: 3,
            per: Duration::from_secs(30),
        });
        assert_eq!(quota.burst_size().get(), 3);
        assert_eq!(quota.replenish_interval(), Duration::from_secs(10));
        let limiter = governor::RateLimiter::direct_with_clock(quota, MonotonicClock);
        assert!((0..3).all(|_| limiter.check().is_ok()));
        assert!(limiter.check().is_err(), "the fourth in a burst is refused");
    }

    /// Every frame `Outgoing` makes for `text`: (FIN, continuation, payload).
    fn frames_of(text: &str, max: usize) -> Vec<(bool, bool, String)> {
        let mut message = Outgoing::new(Utf8Bytes::from(text));
        let mut frames = Vec::new();
        while !message.is_done() {
            let frame = message.next_frame(max);
            let continued = match frame.header().opcode {
                OpCode::Data(Data::Text) => false,
                OpCode::Data(Data::Continue) => true,
                other => panic!("unexpected opcode {other:?}"),
            };
            let payload = String::from_utf8(frame.payload().to_vec()).expect("whole characters");
            frames.push((frame.header().is_final, continued, payload));
        }
        frames
    }

    #[test]
    fn large_messages_are_fragmented_on_character_boundaries() {
        // Up to one fragment: one Text frame, as a plain message.
        assert_eq!(frames_of("", 4), [(true, false, String::new())]);
        assert_eq!(frames_of("abcd", 4), [(true, false, "abcd".into())]);
        // Longer: Text FIN=0, Continuation frames, the last FIN=1.
        assert_eq!(
            frames_of("abcdefghij", 4),
            [
                (false, false, "abcd".into()),
                (false, true, "efgh".into()),
                (true, true, "ij".into()),
            ]
        );
        // A fragment never ends inside a character ("é" is 2 bytes, "€" 3).
        assert_eq!(
            frames_of("abcé€xyz", 4),
            [
                (false, false, "abc".into()),
                (false, true, "é".into()),
                (false, true, "€x".into()),
                (true, true, "yz".into()),
            ]
        );
        let text: String = "ünïcödé ".repeat(3_000);
        let frames = frames_of(&text, FRAGMENT_BYTES);
        assert!(frames.iter().all(|(_, _, p)| p.len() <= FRAGMENT_BYTES));
        assert_eq!(
            frames
                .iter()
                .map(|(_, _, p)| p.as_str())
                .collect::<String>(),
            text
        );
    }

    /// Every idle socket holds its task's future; rare paths are boxed and
    /// arguments are not stored twice to keep it small (1,000 bytes when
    /// this was written, of which 368 are the `WebSocket` itself; it was
    /// 2,192 before; 1,048 with the write-stall deadline and the subscribe
    /// limiter, both boxed and made only when needed; still 1,048 with
    /// tokio-tungstenite's stream in place of axum's `WebSocket` and the
    /// fragmenting write; 1,088 with the sign-in deadline kept beside the
    /// keepalive's, which spares it a timer of its own; 1,104 with presence
    /// (a subscription remembers its member's user id) and the protocol's
    /// cluster services behind one pointer in `PusherState`).
    #[test]
    fn the_socket_task_stays_small() {
        let size = output_size(serve);
        assert!(size <= 1_120, "socket task future grew to {size} bytes");
    }
}
