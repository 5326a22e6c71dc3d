//! How one [`ChannelEvent`] is queued: its event object exactly as Pusher's
//! webhooks carry it (stored as that JSON text, so the body is assembled
//! without re-serializing), and how it takes part in the hold.

use crate::channel_events::ChannelEvent;

/// An event's part in the hold (see `queue.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// Delivered as soon as a worker gets to it.
    None,
    /// `channel_vacated` / `member_removed`: due only after the hold, and
    /// dropped if its [`Hold::Cancels`] counterpart arrives first.
    Held(String),
    /// `channel_occupied` / `member_added`: if an event held under the same
    /// key is still waiting, both are dropped (a page reload); else it is
    /// queued like any other.
    Cancels(String),
}

/// One event ready for the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The event object of Pusher's webhook body, as JSON text.
    pub json: String,
    pub hold: Hold,
}

/// The hold key of a channel's occupancy (no channel name contains `\n`).
pub fn channel_key(channel: &str) -> String {
    format!("c\n{channel}")
}

/// The hold key of a user's membership of a channel. The channel comes
/// first and cannot contain `\n`, so any user id (even one with `\n`) gives
/// a distinct key.
pub fn member_key(channel: &str, user_id: &str) -> String {
    format!("m\n{channel}\n{user_id}")
}

/// A JSON object of string fields, in this order (Pusher's order; a
/// `serde_json::Map` would sort the keys unless a feature is on somewhere
/// in the build, so the text is written here, each value escaped by serde).
fn object(fields: &[(&str, &str)]) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
        out.push_str(&serde_json::Value::from(*value).to_string());
    }
    out.push('}');
    out
}

/// `{"name":"channel_vacated","channel":…}`; the Redis script that vacates
/// a dead node's channels writes the same text.
pub fn vacated_json(channel: &str) -> String {
    object(&[("name", "channel_vacated"), ("channel", channel)])
}

impl Queued {
    pub fn of(event: &ChannelEvent) -> Self {
        let (json, hold) = match event {
            ChannelEvent::Occupied { channel } => (
                object(&[("name", "channel_occupied"), ("channel", channel)]),
                Hold::Cancels(channel_key(channel)),
            ),
            ChannelEvent::Vacated { channel } => {
                (vacated_json(channel), Hold::Held(channel_key(channel)))
            }
            ChannelEvent::MemberAdded { channel, user_id } => (
                object(&[
                    ("name", "member_added"),
                    ("channel", channel),
                    ("user_id", user_id),
                ]),
                Hold::Cancels(member_key(channel, user_id)),
            ),
            ChannelEvent::MemberRemoved { channel, user_id } => (
                object(&[
                    ("name", "member_removed"),
                    ("channel", channel),
                    ("user_id", user_id),
                ]),
                Hold::Held(member_key(channel, user_id)),
            ),
            ChannelEvent::ClientEvent {
                channel,
                event,
                data,
                socket_id,
                user_id,
            } => {
                let mut fields = vec![
                    ("name", "client_event"),
                    ("channel", channel.as_str()),
                    ("event", event.as_str()),
                    ("data", data.as_str()),
                    ("socket_id", socket_id.as_str()),
                ];
                // Only on presence channels, as Pusher sends it.
                if let Some(user) = user_id {
                    fields.push(("user_id", user.as_str()));
                }
                (object(&fields), Hold::None)
            }
            ChannelEvent::CacheMiss { channel } => (
                object(&[("name", "cache_miss"), ("channel", channel)]),
                Hold::None,
            ),
        };
        Self { json, hold }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(e: ChannelEvent) -> String {
        Queued::of(&e).json
    }

    #[test]
    fn event_objects_are_pushers() {
        let c = || "presence-room.1".to_string();
        assert_eq!(
            text(ChannelEvent::Occupied { channel: c() }),
            r#"{"name":"channel_occupied","channel":"presence-room.1"}"#
        );
        assert_eq!(
            text(ChannelEvent::Vacated { channel: c() }),
            r#"{"name":"channel_vacated","channel":"presence-room.1"}"#
        );
        assert_eq!(
            text(ChannelEvent::MemberAdded {
                channel: c(),
                user_id: "7".into()
            }),
            r#"{"name":"member_added","channel":"presence-room.1","user_id":"7"}"#
        );
        assert_eq!(
            text(ChannelEvent::MemberRemoved {
                channel: c(),
                user_id: "7".into()
            }),
            r#"{"name":"member_removed","channel":"presence-room.1","user_id":"7"}"#
        );
        assert_eq!(
            text(ChannelEvent::CacheMiss { channel: c() }),
            r#"{"name":"cache_miss","channel":"presence-room.1"}"#
        );
        let client = |user_id: Option<&str>| ChannelEvent::ClientEvent {
            channel: "private-chat".into(),
            event: "client-typing".into(),
            data: r#"{"n":1}"#.into(),
            socket_id: "1.2".into(),
            user_id: user_id.map(str::to_string),
        };
        assert_eq!(
            text(client(None)),
            r#"{"name":"client_event","channel":"private-chat","event":"client-typing","data":"{\"n\":1}","socket_id":"1.2"}"#
        );
        assert_eq!(
            text(client(Some("u"))),
            r#"{"name":"client_event","channel":"private-chat","event":"client-typing","data":"{\"n\":1}","socket_id":"1.2","user_id":"u"}"#
        );
    }

    #[test]
    fn holds_pair_departures_with_returns() {
        let ch = |c: &str| c.to_string();
        let hold = |e| Queued::of(&e).hold;
        assert_eq!(
            hold(ChannelEvent::Vacated { channel: ch("a") }),
            Hold::Held(channel_key("a"))
        );
        assert_eq!(
            hold(ChannelEvent::Occupied { channel: ch("a") }),
            Hold::Cancels(channel_key("a"))
        );
        assert_eq!(
            hold(ChannelEvent::MemberRemoved {
                channel: ch("a"),
                user_id: ch("u")
            }),
            Hold::Held(member_key("a", "u"))
        );
        assert_eq!(
            hold(ChannelEvent::MemberAdded {
                channel: ch("a"),
                user_id: ch("u")
            }),
            Hold::Cancels(member_key("a", "u"))
        );
        assert_eq!(
            hold(ChannelEvent::CacheMiss { channel: ch("a") }),
            Hold::None
        );
        assert_ne!(member_key("a", "u"), channel_key("a\nu"));
    }
}
