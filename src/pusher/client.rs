//! A minimal Pusher client: connect, subscribe to public channels, answer
//! pings, report every frame; and [`watch_reconnecting`], which reconnects
//! after a close the way pusher-js does. Used by `rollcall watch` and by
//! our tests.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message};

/// One frame received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEvent {
    /// The event name (`pusher:connection_established`, `attendance.updated`, …).
    pub event: String,
    /// The channel, for channel events.
    pub channel: Option<String>,
    /// `data` as sent: the JSON string's content for ordinary frames, the
    /// serialized object for `pusher:error`.
    pub data: String,
}

impl ServerEvent {
    /// Parses a server frame; `None` if it is not a Pusher frame.
    pub fn parse(text: &str) -> Option<Self> {
        let Value::Object(mut obj) = serde_json::from_str(text).ok()? else {
            return None;
        };
        let Value::String(event) = obj.remove("event")? else {
            return None;
        };
        let channel = obj
            .remove("channel")
            .and_then(|c| c.as_str().map(str::to_owned));
        let data = match obj.remove("data") {
            Some(Value::String(s)) => s,
            Some(v) => v.to_string(),
            None => String::new(),
        };
        Some(Self {
            event,
            channel,
            data,
        })
    }
}

/// Connects to `app_url` (`ws://host:port/app/{key}`), subscribes to
/// `channels` and calls `out` for every frame until the server closes the
/// connection; returns the close code and reason, if the server sent one.
pub async fn watch(
    app_url: &str,
    channels: &[String],
    mut out: impl FnMut(ServerEvent),
) -> Result<Option<(u16, String)>, tungstenite::Error> {
    let sep = if app_url.contains('?') { '&' } else { '?' };
    let url = format!("{app_url}{sep}protocol=7&client=rollcall&version=0.1");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    for channel in channels {
        let subscribe =
            serde_json::json!({"event": "pusher:subscribe", "data": {"channel": channel}});
        ws.send(Message::text(subscribe.to_string())).await?;
    }
    let mut closed = None;
    while let Some(msg) = ws.next().await {
        let msg = match msg {
            Ok(msg) => msg,
            // The server said why it closed; that the TCP connection then
            // went before our close reply is no news.
            Err(_) if closed.is_some() => break,
            Err(e) => return Err(e),
        };
        match msg {
            Message::Text(text) => {
                let Some(event) = ServerEvent::parse(&text) else {
                    tracing::warn!(frame = %text, "not a pusher frame");
                    continue;
                };
                if event.event == "pusher:ping" {
                    ws.send(Message::text(r#"{"event":"pusher:pong","data":{}}"#))
                        .await?;
                }
                out(event);
            }
            // Keep reading: tungstenite sends our close reply on the next
            // read, and the stream ends when the server drops the connection.
            Message::Close(frame) => {
                closed = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
            }
            _ => {}
        }
    }
    Ok(closed)
}

/// What a client does after a close (PROTOCOLS.md, "Connection"): the
/// close code's range decides, as it does for pusher-js.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterClose {
    /// 4200–4299: the server asks for it (a restart, a pong timeout).
    ReconnectNow,
    /// 4100–4199, any other code, no code, or a network error: wait, with
    /// a growing delay, then reconnect.
    BackOff,
    /// 4000–4099 and 4300–4399: reconnecting would be refused again (no
    /// such app, rate limited); give up.
    Stop,
}

impl AfterClose {
    /// `None`: the connection ended without a close frame (or never opened).
    pub fn of(code: Option<u16>) -> Self {
        match code {
            Some(4200..=4299) => Self::ReconnectNow,
            Some(4000..=4099 | 4300..=4399) => Self::Stop,
            _ => Self::BackOff,
        }
    }
}

/// Reconnection delays: 1 s, doubling, at most 30 s, each with jitter (a
/// random delay between half and all of it) so a restarted server is not
/// hit by every client in the same millisecond.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_secs(1);
    pub const MAX: Duration = Duration::from_secs(30);

    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The delay to wait now; the following one doubles.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(Self::MAX);
        base.mul_f64(rng.random_range(0.5..=1.0))
    }

    /// A connection worked: the next failure waits the first delay again.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`watch_reconnecting`] reports besides frames, so a caller can tell
/// its user what the connection is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Frame(ServerEvent),
    /// The connection ended: the close code and reason if the server sent
    /// them, or the network error.
    Closed {
        code: Option<u16>,
        reason: String,
    },
    /// Reconnecting after this delay (zero: at once).
    Retrying(Duration),
}

/// Why [`watch_reconnecting`] gave up: a close code that says not to
/// reconnect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server closed the connection with {code} ({reason}); not reconnecting")]
pub struct Refused {
    pub code: u16,
    pub reason: String,
}

/// As [`watch`], but reconnecting (and resubscribing) like a browser: at
/// once after 4200–4299, after a [`Backoff`] delay after other closes and
/// network errors, never after 4000–4099 or 4300–4399, which end it.
/// Never returns otherwise: the caller stops it by dropping the future.
pub async fn watch_reconnecting(
    app_url: &str,
    channels: &[String],
    mut out: impl FnMut(WatchEvent),
) -> Refused {
    let mut backoff = Backoff::new();
    loop {
        let mut established = false;
        let ended = watch(app_url, channels, |e| {
            if e.event == "pusher:connection_established" {
                established = true;
            }
            out(WatchEvent::Frame(e));
        })
        .await;
        if established {
            backoff.reset();
        }
        let (code, reason) = match ended {
            Ok(Some((code, reason))) => (Some(code), reason),
            Ok(None) => (None, "closed without a close frame".to_string()),
            Err(e) => (None, e.to_string()),
        };
        out(WatchEvent::Closed {
            code,
            reason: reason.clone(),
        });
        let delay = match AfterClose::of(code) {
            AfterClose::Stop => {
                return Refused {
                    code: code.unwrap_or_default(),
                    reason,
                };
            }
            // At once only after a connection that worked: a server that
            // is shutting down refuses new upgrades with 4200 too, and
            // retrying that at once would spin until it is gone.
            AfterClose::ReconnectNow if established => Duration::ZERO,
            _ => backoff.next_delay(&mut rand::rng()),
        };
        out(WatchEvent::Retrying(delay));
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn close_codes_decide_as_for_pusher_js() {
        for (code, after) in [
            (Some(4200), AfterClose::ReconnectNow),
            (Some(4201), AfterClose::ReconnectNow),
            (Some(4299), AfterClose::ReconnectNow),
            (Some(4000), AfterClose::Stop),
            (Some(4001), AfterClose::Stop),
            (Some(4099), AfterClose::Stop),
            (Some(4301), AfterClose::Stop),
            (Some(4399), AfterClose::Stop),
            (Some(4100), AfterClose::BackOff),
            (Some(1000), AfterClose::BackOff),
            (Some(1006), AfterClose::BackOff),
            (Some(4400), AfterClose::BackOff),
            (None, AfterClose::BackOff),
        ] {
            assert_eq!(AfterClose::of(code), after, "{code:?}");
        }
    }

    #[test]
    fn backoff_doubles_from_one_second_to_thirty_with_jitter() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut backoff = Backoff::new();
        let bases = [1, 2, 4, 8, 16, 30, 30, 30];
        for base in bases {
            let base = Duration::from_secs(base);
            let d = backoff.next_delay(&mut rng);
            assert!(d >= base / 2 && d <= base, "{d:?} for {base:?}");
        }
        backoff.reset();
        assert!(backoff.next_delay(&mut rng) <= Backoff::FIRST);
        // Jitter: not every client waits the same.
        let delays: std::collections::BTreeSet<_> = (0..10)
            .map(|_| Backoff::new().next_delay(&mut rng))
            .collect();
        assert!(delays.len() > 1);
    }
}
