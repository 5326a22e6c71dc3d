//! A minimal Pusher client: connect, subscribe to public channels, answer
//! pings, report every frame. Used by `rollcall watch` and by our tests.

use futures_util::{SinkExt, StreamExt};
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
        match msg? {
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
