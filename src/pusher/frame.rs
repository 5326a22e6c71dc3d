//! The Pusher wire format: server frames built (and serialized) once, client
//! frames parsed tolerantly.
//!
//! Server frames are [`Utf8Bytes`]: a broadcast is serialized a single time
//! and the same bytes are cloned (a reference-count increment) into every
//! subscriber's queue. Server frames carry `data` as a JSON *string*, except
//! `pusher:error`, whose `data` is an object (as Pusher sends it).

use serde::Serialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Pusher close and error codes rollcall uses. The range decides what
/// pusher-js does after a close: 4000–4099 never reconnect, 4100–4199 back
/// off then reconnect, 4200–4299 reconnect at once.
pub mod code {
    /// No app with this key.
    pub const UNKNOWN_APP: u16 = 4001;
    /// The app is over its connection quota: the client must not retry.
    pub const OVER_QUOTA: u16 = 4004;
    /// `protocol` is not a number.
    pub const INVALID_PROTOCOL_FORMAT: u16 = 4006;
    /// `protocol` is outside 5..=7.
    pub const UNSUPPORTED_PROTOCOL: u16 = 4007;
    /// No `protocol` query parameter.
    pub const NO_PROTOCOL: u16 = 4008;
    /// Bad channel signature (error only; the socket stays open).
    pub const UNAUTHORIZED: u16 = 4009;
    /// Over capacity: too many connections, a slow consumer, an oversized
    /// message. The client backs off, then reconnects.
    pub const OVER_CAPACITY: u16 = 4100;
    /// Generic "reconnect now": graceful shutdown and restarts.
    pub const RECONNECT: u16 = 4200;
    /// The client did not answer our `pusher:ping` in time.
    pub const PONG_TIMEOUT: u16 = 4201;
    /// The client sent requests faster than allowed (subscribe churn); it
    /// must not reconnect on its own.
    pub const RATE_LIMITED: u16 = 4301;
}

#[derive(Serialize)]
struct ServerFrame<'a, D: Serialize> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    data: D,
}

fn build<D: Serialize>(event: &str, channel: Option<&str>, data: D) -> Utf8Bytes {
    let frame = ServerFrame {
        event,
        channel,
        data,
    };
    // Serializing strings, integers and Options cannot fail.
    serde_json::to_string(&frame)
        .expect("server frame serializes")
        .into()
}

/// An event on a channel (or a connection-level event when `channel` is
/// `None`); `data` is sent as a JSON string.
pub fn event(event: &str, channel: Option<&str>, data: &str) -> Utf8Bytes {
    build(event, channel, data)
}

/// A client event as relayed on a presence channel: Pusher adds the
/// sender's `user_id` beside `data`.
pub fn client_event_from_user(event: &str, channel: &str, data: &str, user_id: &str) -> Utf8Bytes {
    #[derive(Serialize)]
    struct FromUser<'a> {
        event: &'a str,
        channel: &'a str,
        data: &'a str,
        user_id: &'a str,
    }
    serde_json::to_string(&FromUser {
        event,
        channel,
        data,
        user_id,
    })
    .expect("server frame serializes")
    .into()
}

/// The first frame on every connection.
pub fn connection_established(socket_id: &str, activity_timeout_secs: u64) -> Utf8Bytes {
    let data = serde_json::json!({
        "socket_id": socket_id,
        "activity_timeout": activity_timeout_secs,
    });
    build("pusher:connection_established", None, data.to_string())
}

/// Reply to a client's `pusher:ping`.
pub fn pong() -> Utf8Bytes {
    Utf8Bytes::from_static(r#"{"event":"pusher:pong","data":"{}"}"#)
}

/// The server's keepalive probe to an idle client.
pub fn ping() -> Utf8Bytes {
    Utf8Bytes::from_static(r#"{"event":"pusher:ping","data":"{}"}"#)
}

/// `pusher:error`; `data` is the object `{"message":…,"code":…|null}`.
pub fn error(code: Option<u16>, message: &str) -> Utf8Bytes {
    #[derive(Serialize)]
    struct ErrorData<'a> {
        message: &'a str,
        code: Option<u16>,
    }
    build("pusher:error", None, ErrorData { message, code })
}

/// `pusher_internal:subscription_succeeded` on `channel`; `data` is a JSON
/// string (`"{}"` for public and private channels).
pub fn subscription_succeeded(channel: &str, data: &str) -> Utf8Bytes {
    build(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        data,
    )
}

/// `pusher:cache_miss` on `channel`: a cache channel's new subscriber is
/// told no event is cached (Pusher sends it without `data`; pusher-js emits
/// it as the channel event `pusher:cache_miss`).
pub fn cache_miss(channel: &str) -> Utf8Bytes {
    #[derive(Serialize)]
    struct NoData<'a> {
        event: &'a str,
        channel: &'a str,
    }
    let frame = NoData {
        event: "pusher:cache_miss",
        channel,
    };
    serde_json::to_string(&frame)
        .expect("strings serialize")
        .into()
}

/// A frame received from a client.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFrame {
    /// `pusher:subscribe`, `pusher:ping`, `client-…`, …
    pub event: String,
    /// Present on channel events (`client-…`).
    pub channel: Option<String>,
    /// Client frames carry an object; a JSON string holding JSON (the server
    /// frame convention, which some clients also use) is decoded to its
    /// value. Any other string stays a string; missing data is `Null`.
    pub data: Value,
}

/// Why a client frame was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ClientFrameError {
    /// Not JSON at all.
    #[error("frame is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but not an object with a string `event`.
    #[error("frame must be a JSON object with a string \"event\"")]
    Shape,
}

impl ClientFrame {
    /// Parses one text message.
    pub fn parse(text: &str) -> Result<Self, ClientFrameError> {
        let Value::Object(mut obj) = serde_json::from_str::<Value>(text)? else {
            return Err(ClientFrameError::Shape);
        };
        let Some(Value::String(event)) = obj.remove("event") else {
            return Err(ClientFrameError::Shape);
        };
        let channel = match obj.remove("channel") {
            Some(Value::String(c)) => Some(c),
            _ => None,
        };
        let data = match obj.remove("data") {
            Some(Value::String(s)) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
            Some(v) => v,
            None => Value::Null,
        };
        Ok(Self {
            event,
            channel,
            data,
        })
    }

    /// `data[field]` when it is a string.
    pub fn data_str(&self, field: &str) -> Option<&str> {
        self.data.get(field).and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn value(b: &Utf8Bytes) -> Value {
        serde_json::from_str(b.as_str()).unwrap()
    }

    #[test]
    fn server_frames_have_the_wire_shape() {
        assert_eq!(
            value(&event(
                "attendance.updated",
                Some("session.121"),
                r#"{"a":1}"#
            )),
            json!({"event":"attendance.updated","channel":"session.121","data":"{\"a\":1}"})
        );
        assert_eq!(
            value(&event("x", None, "{}")),
            json!({"event":"x","data":"{}"})
        );
        let ce = value(&connection_established("123.456", 120));
        assert_eq!(ce["event"], "pusher:connection_established");
        let data: Value = serde_json::from_str(ce["data"].as_str().unwrap()).unwrap();
        assert_eq!(data, json!({"socket_id":"123.456","activity_timeout":120}));
        assert_eq!(value(&pong()), json!({"event":"pusher:pong","data":"{}"}));
        assert_eq!(value(&ping()), json!({"event":"pusher:ping","data":"{}"}));
        assert_eq!(
            value(&error(Some(4009), "no")),
            json!({"event":"pusher:error","data":{"message":"no","code":4009}})
        );
        assert_eq!(
            value(&error(None, "x")),
            json!({"event":"pusher:error","data":{"message":"x","code":null}})
        );
        assert_eq!(
            value(&subscription_succeeded("c", "{}")),
            json!({"event":"pusher_internal:subscription_succeeded","channel":"c","data":"{}"})
        );
    }

    #[test]
    fn client_frames_parse_tolerantly() {
        let f = ClientFrame::parse(
            r#"{"event":"pusher:subscribe","data":{"channel":"a","auth":"k:s"}}"#,
        )
        .unwrap();
        assert_eq!(f.event, "pusher:subscribe");
        assert_eq!(f.data_str("channel"), Some("a"));
        assert_eq!(f.data_str("auth"), Some("k:s"));

        // data as a JSON string is decoded.
        let f = ClientFrame::parse(r#"{"event":"pusher:subscribe","data":"{\"channel\":\"b\"}"}"#)
            .unwrap();
        assert_eq!(f.data_str("channel"), Some("b"));

        let f = ClientFrame::parse(r#"{"event":"client-x","channel":"private-a","data":"hi"}"#)
            .unwrap();
        assert_eq!(f.channel.as_deref(), Some("private-a"));
        assert_eq!(f.data, json!("hi"));

        let f = ClientFrame::parse(r#"{"event":"pusher:ping"}"#).unwrap();
        assert_eq!(f.data, Value::Null);
        assert_eq!(f.data_str("channel"), None);

        assert!(matches!(
            ClientFrame::parse("{nope"),
            Err(ClientFrameError::Json(_))
        ));
        assert!(matches!(
            ClientFrame::parse("[1]"),
            Err(ClientFrameError::Shape)
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"event":1}"#),
            Err(ClientFrameError::Shape)
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"data":{}}"#),
            Err(ClientFrameError::Shape)
        ));
    }
}
