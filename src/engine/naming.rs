//! Who and where (rules 1 and 2): which rooms are sessions, which
//! identities are people, and which channel a session's updates go to.

use std::collections::BTreeMap;
use std::sync::Arc;

use regex::Regex;

use crate::domain::{Identity, RoomName, UserId};

pub const DEFAULT_ROOM_PATTERN: &str = r"^(?:.+-)?(?P<type>[a-z]+)-session-(?P<id>[0-9]+)$";
pub const DEFAULT_IDENTITY_PATTERN: &str = r"^(?P<user_id>[0-9]+)(?:_.*)?$";
pub const DEFAULT_CHANNEL_TEMPLATE: &str = "session.{id}";

#[derive(Debug, thiserror::Error)]
pub enum NamingError {
    #[error("invalid {what} pattern: {source}")]
    Regex {
        what: &'static str,
        #[source]
        source: regex::Error,
    },
    #[error("the identity pattern has no named group `user_id`")]
    NoUserIdGroup,
    #[error("the channel template uses {{{0}}}, which the room pattern does not capture")]
    UnknownTemplateField(String),
    #[error("the channel template has an unclosed `{{`")]
    UnclosedField,
}

/// What a room name tells: its session fields and its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub room: RoomName,
    pub session_id: Option<String>,
    pub session_type: Option<String>,
    pub channel: String,
}

/// The compiled room pattern, identity pattern and channel template.
/// Clones share the compiled regexes: a cloned `Regex` would start with
/// cold caches of its own, and handlers clone their state per request.
#[derive(Debug, Clone)]
pub struct Naming {
    room: Arc<Regex>,
    identity: Arc<Regex>,
    template: Arc<[TemplatePart]>,
}

#[derive(Debug, Clone)]
enum TemplatePart {
    Text(String),
    Field(String),
}

impl Naming {
    /// Whether every channel the template makes is private or presence
    /// (subscribers need the app's signature): the template starts with
    /// one of those prefixes as literal text.
    pub fn channels_are_private(&self) -> bool {
        match self.template.first() {
            Some(TemplatePart::Text(t)) => t.starts_with("private-") || t.starts_with("presence-"),
            _ => false,
        }
    }
}

impl Default for Naming {
    fn default() -> Self {
        Self::new(
            DEFAULT_ROOM_PATTERN,
            DEFAULT_IDENTITY_PATTERN,
            DEFAULT_CHANNEL_TEMPLATE,
        )
        .expect("the default patterns are valid")
    }
}

impl Naming {
    /// Compiles and cross-checks the three settings, so that a typo fails at
    /// startup rather than silently ignoring every room.
    pub fn new(
        room_pattern: &str,
        identity_pattern: &str,
        channel_template: &str,
    ) -> Result<Self, NamingError> {
        let room = compile(room_pattern).map_err(|source| NamingError::Regex {
            what: "room",
            source,
        })?;
        let identity = compile(identity_pattern).map_err(|source| NamingError::Regex {
            what: "identity",
            source,
        })?;
        if !identity.capture_names().flatten().any(|n| n == "user_id") {
            return Err(NamingError::NoUserIdGroup);
        }
        let template = parse_template(channel_template)?;
        for part in &template {
            if let TemplatePart::Field(name) = part {
                let known = name == "room" || room.capture_names().flatten().any(|n| n == name);
                if !known {
                    return Err(NamingError::UnknownTemplateField(name.clone()));
                }
            }
        }
        Ok(Self {
            room: Arc::new(room),
            identity: Arc::new(identity),
            template: template.into(),
        })
    }

    /// The session a room name stands for, or `None` when the room is not
    /// one of ours (rule 1) or its channel would not be a valid Pusher
    /// channel name.
    pub fn session(&self, room: &str) -> Option<Session> {
        let caps = self.room.captures(room)?;
        let fields: BTreeMap<&str, &str> = self
            .room
            .capture_names()
            .flatten()
            .filter_map(|name| caps.name(name).map(|m| (name, m.as_str())))
            .collect();
        let mut channel = String::new();
        for part in self.template.iter() {
            match part {
                TemplatePart::Text(t) => channel.push_str(t),
                TemplatePart::Field(f) if f == "room" => channel.push_str(room),
                TemplatePart::Field(f) => channel.push_str(fields.get(f.as_str()).copied()?),
            }
        }
        if !is_valid_channel_name(&channel) {
            return None;
        }
        Some(Session {
            room: RoomName::new(room),
            session_id: fields.get("id").map(|s| s.to_string()),
            session_type: fields.get("type").map(|s| s.to_string()),
            channel,
        })
    }

    /// The person an identity stands for (rule 2), or `None` to ignore it.
    pub fn user_id(&self, identity: &Identity) -> Option<UserId> {
        let caps = self.identity.captures(identity.as_str())?;
        let id = caps.name("user_id")?.as_str();
        (!id.is_empty()).then(|| UserId::new(id))
    }

    /// A name to show for an identity when LiveKit gave none (an expected
    /// person who never came, a participant without a name): the identity
    /// without its `user_id`, underscores as spaces — `1_Ameer_Maher` is
    /// "Ameer Maher". An identity with nothing besides its id (or one the
    /// pattern does not match) is shown as it is.
    pub fn display_name(&self, identity: &Identity) -> String {
        let text = identity.as_str();
        let rest = self
            .identity
            .captures(text)
            .and_then(|caps| caps.name("user_id"))
            .map(|id| format!("{} {}", &text[..id.start()], &text[id.end()..]));
        let name = rest
            .as_deref()
            .unwrap_or_default()
            .split(['_', ' '])
            .map(|w| w.trim_matches(['-', '.']))
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if name.is_empty() {
            text.to_string()
        } else {
            name
        }
    }
}

/// A configured pattern's compiled size limit. Real room and identity
/// patterns compile to a few KiB; one that needs more than this (say
/// `\w{1000}`) is a mistake, refused at startup in milliseconds rather
/// than compiled for seconds (regex's own default allows 10 MiB).
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
}

/// Pusher's channel-name rule: `[A-Za-z0-9_\-=@,.;]`, at most 200 chars.
pub fn is_valid_channel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-=@,.;".contains(&b))
}

fn parse_template(t: &str) -> Result<Vec<TemplatePart>, NamingError> {
    let mut parts = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(TemplatePart::Text(rest[..open].to_string()));
        }
        let close = rest[open..].find('}').ok_or(NamingError::UnclosedField)? + open;
        parts.push(TemplatePart::Field(rest[open + 1..close].to_string()));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Text(rest.to_string()));
    }
    Ok(parts)
}

#[cfg(test)]
mod privacy_tests {
    use super::*;

    #[test]
    fn only_a_private_or_presence_prefix_makes_channels_private() {
        let with = |template: &str| {
            Naming::new(DEFAULT_ROOM_PATTERN, DEFAULT_IDENTITY_PATTERN, template).unwrap()
        };
        assert!(!with("session.{id}").channels_are_private());
        assert!(!with("{type}-private-{id}").channels_are_private());
        assert!(with("private-session.{id}").channels_are_private());
        assert!(with("private-encrypted-session.{id}").channels_are_private());
        assert!(with("presence-session.{type}.{id}").channels_are_private());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_pattern_is_refused() {
        let err = Naming::new(
            r"\w{1000}",
            DEFAULT_IDENTITY_PATTERN,
            DEFAULT_CHANNEL_TEMPLATE,
        )
        .unwrap_err();
        assert!(
            matches!(err, NamingError::Regex { what: "room", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("size limit"), "{err}");
    }

    #[test]
    fn display_names_come_from_the_identity_without_its_id() {
        let n = Naming::default();
        for (identity, name) in [
            ("1_Ameer_Maher", "Ameer Maher"),
            ("42_Fatima_Al_Zahra", "Fatima Al Zahra"),
            ("7", "7"),
            ("7_", "7_"),
            ("teacher-7", "teacher-7"),
            ("", ""),
        ] {
            assert_eq!(n.display_name(&Identity::new(identity)), name, "{identity}");
        }
        // The id need not come first.
        let n = Naming::new(
            DEFAULT_ROOM_PATTERN,
            "^(?:[A-Za-z]+_)*(?P<user_id>[0-9]+)$",
            DEFAULT_CHANNEL_TEMPLATE,
        )
        .unwrap();
        assert_eq!(n.display_name(&Identity::new("Sara_Ali_12")), "Sara Ali");
    }

    #[test]
    fn default_room_pattern_table() {
        let n = Naming::default();
        type Case<'a> = (&'a str, Option<(&'a str, &'a str, &'a str)>);
        let cases: &[Case] = &[
            (
                "itqan-academy-quran-session-121",
                Some(("121", "quran", "session.121")),
            ),
            ("quran-session-7", Some(("7", "quran", "session.7"))),
            (
                "a-b-c-academic-session-99",
                Some(("99", "academic", "session.99")),
            ),
            ("mytestroom", None),
            ("quran-session-", None),
            ("Quran-session-1", None),
            ("quran-session-12x", None),
        ];
        for (room, want) in cases {
            let got = n.session(room).map(|s| {
                (
                    s.session_id.unwrap(),
                    s.session_type.unwrap(),
                    s.channel.clone(),
                )
            });
            let want = want.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()));
            assert_eq!(got, want, "room {room}");
        }
    }

    #[test]
    fn identity_pattern_table() {
        let n = Naming::default();
        let cases: &[(&str, Option<&str>)] = &[
            ("1_Ameer_Maher", Some("1")),
            ("42", Some("42")),
            ("42_", Some("42")),
            ("EG_recorder", None),
            ("x1_Ameer", None),
            ("", None),
        ];
        for (identity, want) in cases {
            let got = n.user_id(&Identity::new(*identity));
            assert_eq!(got, want.map(UserId::new), "identity {identity}");
        }
    }

    #[test]
    fn template_fields_come_from_named_groups() {
        let n = Naming::new(
            r"^(?P<tenant>[a-z]+)-(?P<type>[a-z]+)-(?P<id>\d+)$",
            DEFAULT_IDENTITY_PATTERN,
            "private-{tenant}.{type}.{id}",
        )
        .unwrap();
        assert_eq!(
            n.session("acme-math-5").unwrap().channel,
            "private-acme.math.5"
        );
        // Text after the last field, and fields back to back, are kept.
        let n = Naming::new(
            r"^(?P<type>[a-z]+)-(?P<id>\d+)$",
            DEFAULT_IDENTITY_PATTERN,
            "{type}{id}.attendance",
        )
        .unwrap();
        assert_eq!(n.session("math-5").unwrap().channel, "math5.attendance");
        let whole = Naming::new(r"^.+$", DEFAULT_IDENTITY_PATTERN, "room.{room}").unwrap();
        assert_eq!(whole.session("abc").unwrap().channel, "room.abc");
        assert_eq!(
            whole.session("a b").map(|s| s.channel),
            None,
            "space is not a channel char"
        );
    }

    #[test]
    fn bad_settings_fail_at_startup() {
        assert!(matches!(
            Naming::new("(", DEFAULT_IDENTITY_PATTERN, "x"),
            Err(NamingError::Regex { what: "room", .. })
        ));
        assert!(matches!(
            Naming::new(DEFAULT_ROOM_PATTERN, r"^\d+$", "x"),
            Err(NamingError::NoUserIdGroup)
        ));
        assert!(matches!(
            Naming::new(DEFAULT_ROOM_PATTERN, DEFAULT_IDENTITY_PATTERN, "s.{nope}"),
            Err(NamingError::UnknownTemplateField(f)) if f == "nope"
        ));
        assert!(matches!(
            Naming::new(DEFAULT_ROOM_PATTERN, DEFAULT_IDENTITY_PATTERN, "s.{id"),
            Err(NamingError::UnclosedField)
        ));
    }
}
