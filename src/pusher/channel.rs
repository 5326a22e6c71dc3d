//! Typed identifiers of the Pusher protocol: channel names and socket ids.
//!
//! Both are parsed once at the edge (a client frame, an HTTP API request) and
//! trusted afterwards; their fields are private so an invalid value cannot be
//! built anywhere else.

use std::fmt;
use std::sync::Arc;

/// Longest channel name Pusher accepts.
pub const MAX_CHANNEL_NAME_LEN: usize = 200;

/// Why a string is not a valid channel name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    /// The name is empty.
    #[error("channel name is empty")]
    Empty,
    /// The name is longer than [`MAX_CHANNEL_NAME_LEN`].
    #[error("channel name is longer than {MAX_CHANNEL_NAME_LEN} characters")]
    TooLong,
    /// The name contains a character outside `[A-Za-z0-9_\-=@,.;]`.
    #[error("channel name contains an invalid character {0:?}")]
    InvalidChar(char),
}

/// What a channel's prefix says about how it is authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// Anyone may subscribe.
    Public,
    /// `private-…`: subscription needs a signature from the app's auth endpoint.
    Private,
    /// `presence-…`: like private, plus member tracking.
    Presence,
}

/// The channel of a signed-in user's server events.
pub const USER_CHANNEL_PREFIX: &str = "#server-to-user-";

/// Pusher's limit on a user id.
pub const MAX_USER_ID_LEN: usize = 128;

/// A valid Pusher channel name: `[A-Za-z0-9_\-=@,.;]+`, at most 200 chars.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(String);

impl ChannelName {
    /// Validates `name`.
    pub fn parse(name: &str) -> Result<Self, ChannelNameError> {
        if name.is_empty() {
            return Err(ChannelNameError::Empty);
        }
        // All valid characters are ASCII, so the byte length is the char count
        // once the characters are known to be valid; check characters first.
        if let Some(c) = name.chars().find(|&c| !is_channel_char(c)) {
            return Err(ChannelNameError::InvalidChar(c));
        }
        if name.len() > MAX_CHANNEL_NAME_LEN {
            return Err(ChannelNameError::TooLong);
        }
        Ok(Self(name.to_owned()))
    }

    /// `#server-to-user-<id>`: where Pusher's server libraries send events
    /// to one signed-in user (`sendToUser`). Not a name a client can
    /// subscribe to (`#` is not a channel character): the server
    /// subscribes a socket to it when it signs in. `None` for an empty id
    /// or one with characters a channel may not hold, or over 128 chars.
    pub fn user(id: &str) -> Option<Self> {
        let ok = !id.is_empty() && id.len() <= MAX_USER_ID_LEN && id.chars().all(is_channel_char);
        ok.then(|| Self(format!("{USER_CHANNEL_PREFIX}{id}")))
    }

    /// A channel name as the HTTP API may address it: a valid channel, or
    /// a user's `#server-to-user-<id>`.
    pub fn parse_for_publish(name: &str) -> Result<Self, ChannelNameError> {
        match name.strip_prefix(USER_CHANNEL_PREFIX) {
            Some(id) => Self::user(id).ok_or(ChannelNameError::Empty),
            None => Self::parse(name),
        }
    }

    /// The kind of channel, from its prefix.
    pub fn kind(&self) -> ChannelKind {
        if self.0.starts_with("private-") {
            ChannelKind::Private
        } else if self.0.starts_with("presence-") {
            ChannelKind::Presence
        } else {
            ChannelKind::Public
        }
    }

    /// The name as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `private-encrypted-…`: the payloads are end-to-end encrypted by the
    /// app and the subscribers (the server relays them as they are and
    /// never holds the key). Subscribed to with private auth (the kind is
    /// [`ChannelKind::Private`]); client events on them are refused.
    pub fn is_encrypted(&self) -> bool {
        self.0.starts_with(ENCRYPTED_PREFIX)
    }

    /// A cache channel (`cache-`, `private-cache-`,
    /// `private-encrypted-cache-`, `presence-cache-`): its last event is
    /// kept and replayed to each new subscriber, or `pusher:cache_miss`.
    /// The prefix after the kind's own is what counts, so the kind (and the
    /// auth it needs) is unchanged.
    pub fn is_cache(&self) -> bool {
        ["", "private-", ENCRYPTED_PREFIX, "presence-"]
            .iter()
            .any(|kind| {
                self.0
                    .strip_prefix(kind)
                    .is_some_and(|rest| rest.starts_with("cache-"))
            })
    }
}

/// The prefix of end-to-end encrypted channels.
const ENCRYPTED_PREFIX: &str = "private-encrypted-";

fn is_channel_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=' | '@' | ',' | '.' | ';')
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ChannelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Why a string is not a valid socket id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("socket id must look like \"123.456\"")]
pub struct SocketIdError;

/// A connection's id, `"<digits>.<digits>"` as pusher-js expects; it is part
/// of the string a private-channel signature covers and the HTTP API's
/// `socket_id` (exclude the sender) refers to it.
///
/// Shared (`Arc<str>`): the hub keys a socket by its id in two maps and the
/// socket's task keeps one, so clones cost a count, not an allocation each
/// per socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(Arc<str>);

impl SocketId {
    /// A fresh random id. Two random `u32` halves make collisions on one node
    /// negligible (2^-64 per pair).
    pub fn random() -> Self {
        let (a, b): (u32, u32) = rand::random();
        Self(format!("{a}.{b}").into())
    }

    /// Parses an id received from a client (`^\d+\.\d+$`, at most 10 digits
    /// per half).
    pub fn parse(s: &str) -> Result<Self, SocketIdError> {
        let (a, b) = s.split_once('.').ok_or(SocketIdError)?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 10 && p.bytes().all(|c| c.is_ascii_digit());
        if digits(a) && digits(b) {
            Ok(Self(s.into()))
        } else {
            Err(SocketIdError)
        }
    }

    /// The id as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names_and_classifies_them() {
        let cases = [
            ("session.121", ChannelKind::Public),
            ("private-foobar", ChannelKind::Private),
            ("presence-room_1", ChannelKind::Presence),
            ("a-b_c=d@e,f.g;h", ChannelKind::Public),
            ("privatefoo", ChannelKind::Public),
        ];
        for (name, kind) in cases {
            let c = ChannelName::parse(name).unwrap();
            assert_eq!(c.as_str(), name);
            assert_eq!(c.kind(), kind, "{name}");
        }
        assert!(ChannelName::parse(&"a".repeat(200)).is_ok());
    }

    #[test]
    fn cache_and_encrypted_channels_keep_the_kind_of_their_prefix() {
        let cases = [
            // (name, kind, cache, encrypted)
            ("cache-location", ChannelKind::Public, true, false),
            ("private-cache-x", ChannelKind::Private, true, false),
            ("private-encrypted-x", ChannelKind::Private, false, true),
            (
                "private-encrypted-cache-x",
                ChannelKind::Private,
                true,
                true,
            ),
            ("presence-cache-x", ChannelKind::Presence, true, false),
            ("presence-x", ChannelKind::Presence, false, false),
            // `cache-` only counts right after the kind's prefix.
            ("session.cache-1", ChannelKind::Public, false, false),
            ("private-x-cache-1", ChannelKind::Private, false, false),
            ("cache", ChannelKind::Public, false, false),
            ("presence-encrypted-x", ChannelKind::Presence, false, false),
        ];
        for (name, kind, cache, encrypted) in cases {
            let c = ChannelName::parse(name).unwrap();
            assert_eq!(
                (c.kind(), c.is_cache(), c.is_encrypted()),
                (kind, cache, encrypted),
                "{name}"
            );
        }
        assert!(!ChannelName::user("12").unwrap().is_cache());
    }

    #[test]
    fn rejects_invalid_names() {
        assert_eq!(ChannelName::parse(""), Err(ChannelNameError::Empty));
        assert_eq!(
            ChannelName::parse(&"a".repeat(201)),
            Err(ChannelNameError::TooLong)
        );
        for bad in ["a b", "a/b", "a#b", "é", "a:b", "a*"] {
            assert!(
                matches!(
                    ChannelName::parse(bad),
                    Err(ChannelNameError::InvalidChar(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn socket_ids_are_digit_pairs_and_parse_back() {
        for _ in 0..100 {
            let id = SocketId::random();
            let (a, b) = id.as_str().split_once('.').unwrap();
            assert!(a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok());
            assert_eq!(SocketId::parse(id.as_str()).unwrap(), id);
        }
        assert_ne!(SocketId::random(), SocketId::random());
        for bad in ["", "1", "1.", ".1", "1.2.3", "a.1", "1.-2", "12345678901.1"] {
            assert!(SocketId::parse(bad).is_err(), "{bad}");
        }
    }
}
