//! One Pusher connection: the task that owns the WebSocket.
//!
//! A single task reads client frames, drains the socket's bounded outbound
//! queue, runs the keepalive timer and watches the socket's kill switch and
//! the global shutdown token. Being the only writer is what makes the
//! ordering guarantees below hold without locks.

use std::collections::HashSet;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite;

use super::auth::verify_channel_auth;
use super::channel::{ChannelKind, ChannelName, SocketId};
use super::frame::{self, ClientFrame, code};
use super::hub::{Outbound, SocketHandle};
use super::service::PusherState;

/// Upper bound on closing a socket politely (sending our close frame and
/// waiting for the client's reply), so shutdown ends in bounded time even
/// with clients that stopped reading.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Why the connection loop ended.
enum Stop {
    /// Close the socket with this Pusher code.
    Close(u16, &'static str),
    /// The client closed or the transport failed: nothing more to send.
    Gone,
}

/// Runs an accepted connection to its end.
pub(super) async fn serve(mut ws: WebSocket, state: PusherState) {
    let id = SocketId::random();
    let (handle, rx) = SocketHandle::new(id.clone(), state.config.outbound_queue);
    state.hub.register(handle.clone());
    tracing::debug!(socket_id = %id, "pusher socket connected");

    let mut conn = Connection {
        state,
        handle,
        channels: HashSet::new(),
    };
    let stop = conn.run(&mut ws, rx).await;

    // Leave the hub before the (possibly slow) close handshake so nothing
    // more is queued for a socket that is going away.
    conn.state.hub.remove_socket(&id, &conn.channels);
    if let Stop::Close(code, reason) = stop {
        tracing::debug!(socket_id = %id, code, reason, "closing pusher socket");
        close(ws, None, code, reason).await;
    } else {
        tracing::debug!(socket_id = %id, "pusher socket gone");
    }
}

/// Sends `error` (if any) and a close frame with `code`, then waits for the
/// client's close reply, all within [`CLOSE_GRACE`]. Waiting for the reply
/// lets the TCP connection end with FIN rather than a reset, which could
/// make the client lose the close frame and its code.
pub(super) async fn close(mut ws: WebSocket, error: Option<Utf8Bytes>, code: u16, reason: &str) {
    let polite = async {
        if let Some(error) = error {
            ws.send(Message::Text(error)).await?;
        }
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        ws.send(Message::Close(Some(frame))).await?;
        while let Some(Ok(_)) = ws.recv().await {}
        Ok::<(), axum::Error>(())
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, polite).await;
}

struct Connection {
    state: PusherState,
    /// Our entry in the hub (id, queue sender, kill switch).
    handle: SocketHandle,
    /// Channels this socket is subscribed to: what to remove from the hub on
    /// disconnect, and the per-socket subscription bound.
    channels: HashSet<ChannelName>,
}

impl Connection {
    async fn run(&mut self, ws: &mut WebSocket, mut rx: mpsc::Receiver<Outbound>) -> Stop {
        let config = self.state.config.clone();
        let established = frame::connection_established(
            self.handle.id.as_str(),
            config.activity_timeout.as_millis().div_ceil(1000).max(1) as u64,
        );
        if let Err(stop) = self.send(ws, established).await {
            return stop;
        }

        // Keepalive: the timer is not reset on every frame (that would be a
        // timer update per message); when it fires we look at the last
        // activity and re-arm it if the socket was not actually idle.
        let mut last_activity = Instant::now();
        let mut ping_sent_at: Option<Instant> = None;
        let keepalive = sleep_until(last_activity + config.activity_timeout);
        tokio::pin!(keepalive);

        let shutdown = self.state.shutdown.clone();
        let kill = self.handle.kill_token().clone();
        loop {
            let result = tokio::select! {
                biased;
                () = shutdown.cancelled() => Err(Stop::Close(code::RECONNECT, "server restarting")),
                () = kill.cancelled() => Err(slow_consumer()),
                incoming = ws.recv() => {
                    match incoming {
                        Some(Ok(msg)) => {
                            // Any frame counts as activity, WebSocket pongs included.
                            last_activity = Instant::now();
                            if ping_sent_at.take().is_some() {
                                // The timer is armed for the pong deadline;
                                // re-arm it for the next idle period.
                                keepalive.as_mut().reset(last_activity + config.activity_timeout);
                            }
                            self.on_message(ws, msg).await
                        }
                        Some(Err(err)) if is_too_large(&err) => {
                            let msg = format!(
                                "message exceeds the {} byte limit",
                                config.max_message_bytes
                            );
                            let _ = self.send(ws, frame::error(Some(code::OVER_CAPACITY), &msg)).await;
                            Err(Stop::Close(code::OVER_CAPACITY, "message too large"))
                        }
                        Some(Err(_)) | None => Err(Stop::Gone),
                    }
                }
                Some(Outbound::Frame(f)) = rx.recv() => self.send(ws, f).await,
                () = &mut keepalive => {
                    let now = Instant::now();
                    match ping_sent_at {
                        Some(at) if now >= at + config.pong_timeout => {
                            Err(Stop::Close(code::PONG_TIMEOUT, "pong reply not received"))
                        }
                        Some(at) => {
                            keepalive.as_mut().reset(at + config.pong_timeout);
                            Ok(())
                        }
                        None if now >= last_activity + config.activity_timeout => {
                            ping_sent_at = Some(now);
                            keepalive.as_mut().reset(now + config.pong_timeout);
                            self.send(ws, frame::ping()).await
                        }
                        None => {
                            keepalive.as_mut().reset(last_activity + config.activity_timeout);
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

    /// Writes one frame. The write is raced against the kill switch and
    /// shutdown so a client that stopped reading (full TCP buffers) cannot
    /// pin this task. Abandoning a write is safe: tungstenite buffers whole
    /// frames, so the close frame sent afterwards is still well-formed.
    async fn send(&self, ws: &mut WebSocket, text: Utf8Bytes) -> Result<(), Stop> {
        tokio::select! {
            biased;
            () = self.state.shutdown.cancelled() => Err(Stop::Close(code::RECONNECT, "server restarting")),
            () = self.handle.kill_token().cancelled() => Err(slow_consumer()),
            sent = ws.send(Message::Text(text)) => sent.map_err(|_| Stop::Gone),
        }
    }

    async fn on_message(&mut self, ws: &mut WebSocket, msg: Message) -> Result<(), Stop> {
        let text = match msg {
            Message::Text(text) => text,
            Message::Binary(_) => {
                let err = frame::error(None, "binary messages are not supported");
                return self.send(ws, err).await;
            }
            // tungstenite answers pings itself; a client's close is answered
            // on the next read, which then ends the stream.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return Ok(()),
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
            "pusher:subscribe" => self.subscribe(ws, &frame).await,
            "pusher:unsubscribe" => {
                if let Some(channel) = frame.data_str("channel")
                    && let Ok(channel) = ChannelName::parse(channel)
                    && self.channels.remove(&channel)
                {
                    self.state
                        .hub
                        .unsubscribe(channel.as_str(), &self.handle.id);
                }
                Ok(())
            }
            event if event.starts_with("client-") => {
                let err = frame::error(None, "client events are not enabled");
                self.send(ws, err).await
            }
            event => {
                tracing::debug!(socket_id = %self.handle.id, event, "ignoring unknown event");
                Ok(())
            }
        }
    }

    async fn subscribe(&mut self, ws: &mut WebSocket, frame: &ClientFrame) -> Result<(), Stop> {
        let Some(name) = frame.data_str("channel") else {
            let err = frame::error(None, "pusher:subscribe needs data.channel");
            return self.send(ws, err).await;
        };
        let channel = match ChannelName::parse(name) {
            Ok(channel) => channel,
            Err(e) => {
                let err = frame::error(None, &format!("invalid channel name: {e}"));
                return self.send(ws, err).await;
            }
        };
        match channel.kind() {
            ChannelKind::Public => {}
            ChannelKind::Private => {
                let config = &self.state.config;
                let authorised = verify_channel_auth(
                    &config.app_key,
                    &config.app_secret,
                    self.handle.id.as_str(),
                    channel.as_str(),
                    None,
                    frame.data_str("auth").unwrap_or_default(),
                );
                if !authorised {
                    let msg = format!("invalid signature for channel {channel}");
                    return self
                        .send(ws, frame::error(Some(code::UNAUTHORIZED), &msg))
                        .await;
                }
            }
            ChannelKind::Presence => {
                let err = frame::error(None, "presence channels are not supported yet");
                return self.send(ws, err).await;
            }
        }

        if !self.channels.contains(&channel) {
            if self.channels.len() >= self.state.config.max_channels_per_socket {
                let err = frame::error(None, "too many channels on this connection");
                return self.send(ws, err).await;
            }
            // Ordering invariant: register in the hub FIRST, then send
            // `subscription_succeeded` and the hook's frames (the snapshot).
            // Anything published from this point waits in our bounded queue,
            // and since this task is the only writer and does not drain the
            // queue until the hook's frames are written, the client sees:
            // succeeded, snapshot, then every later update, in order. An
            // update that raced the snapshot may arrive after a snapshot
            // that already includes it; updates carry full per-person state,
            // so replaying it converges to the same view.
            self.state.hub.subscribe(&channel, &self.handle);
            self.channels.insert(channel.clone());
        }
        // A repeated subscribe gets the same replies as the first one (a
        // fresh snapshot included) but no second registration.
        self.send(ws, frame::subscription_succeeded(channel.as_str(), "{}"))
            .await?;

        let frames = tokio::select! {
            biased;
            () = self.state.shutdown.cancelled() => return Err(Stop::Close(code::RECONNECT, "server restarting")),
            () = self.handle.kill_token().cancelled() => return Err(slow_consumer()),
            frames = self.state.hook.after_subscribe(&channel) => frames,
        };
        for f in frames {
            self.send(ws, f).await?;
        }
        Ok(())
    }
}

fn slow_consumer() -> Stop {
    Stop::Close(code::OVER_CAPACITY, "too slow: outbound queue overflowed")
}

/// Whether a read failed because the client's message exceeded
/// `max_message_bytes` (tungstenite's capacity limit).
fn is_too_large(err: &axum::Error) -> bool {
    std::error::Error::source(err)
        .and_then(|e| e.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}
