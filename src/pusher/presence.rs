//! Presence channels' wire formats, pure: reading a subscriber's
//! `channel_data`, the `subscription_succeeded` payload, `member_added`.
//!
//! Limits are Pusher's: a user id of at most 128 characters, `user_info`
//! of at most 1 KB (as JSON text).

use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::channel::MAX_USER_ID_LEN;
use super::frame;

/// Largest `user_info`, as JSON text.
pub const MAX_USER_INFO_BYTES: usize = 1024;

/// A presence subscriber as its signed `channel_data` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceMember {
    /// A string id, or a number's decimal text (Pusher keys members by the
    /// id's string form).
    pub user_id: String,
    /// `user_info` as JSON text; `null` when absent.
    pub user_info: String,
}

/// Why `channel_data` cannot make a member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    #[error("channel_data must be a JSON object with a user_id")]
    Malformed,
    #[error("user_id must be a non-empty string or a number")]
    BadUserId,
    #[error("user_id is longer than {MAX_USER_ID_LEN} characters")]
    UserIdTooLong,
    #[error("user_info is larger than {MAX_USER_INFO_BYTES} bytes")]
    UserInfoTooLarge,
}

impl MemberError {
    /// Size limits are Pusher's `LimitReached`; the rest is bad auth data.
    pub fn is_limit(&self) -> bool {
        matches!(self, Self::UserIdTooLong | Self::UserInfoTooLarge)
    }
}

impl PresenceMember {
    /// Reads `channel_data` (already verified as signed).
    pub fn parse(channel_data: &str) -> Result<Self, MemberError> {
        let Ok(Value::Object(mut data)) = serde_json::from_str::<Value>(channel_data) else {
            return Err(MemberError::Malformed);
        };
        let user_id = match data.remove("user_id") {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(Value::Number(n)) => n.to_string(),
            None => return Err(MemberError::Malformed),
            Some(_) => return Err(MemberError::BadUserId),
        };
        if user_id.chars().count() > MAX_USER_ID_LEN {
            return Err(MemberError::UserIdTooLong);
        }
        let user_info = data.remove("user_info").unwrap_or(Value::Null).to_string();
        if user_info.len() > MAX_USER_INFO_BYTES {
            return Err(MemberError::UserInfoTooLarge);
        }
        Ok(Self { user_id, user_info })
    }
}

/// `user_info` JSON text back to a value (stored text we wrote; anything
/// unreadable is `null` rather than a failed subscription).
fn info_value(info: &str) -> Value {
    serde_json::from_str(info).unwrap_or(Value::Null)
}

/// `subscription_succeeded`'s data for a presence channel:
/// `{"presence":{"ids":[…],"hash":{id: info},"count":n}}`.
pub fn subscription_data(members: &[(String, String)]) -> String {
    let ids: Vec<&str> = members.iter().map(|(id, _)| id.as_str()).collect();
    let hash: Map<String, Value> = members
        .iter()
        .map(|(id, info)| (id.clone(), info_value(info)))
        .collect();
    json!({ "presence": { "ids": ids, "hash": hash, "count": members.len() } }).to_string()
}

/// `pusher_internal:member_added` for `member` on `channel`.
pub fn member_added(channel: &str, member: &PresenceMember) -> Utf8Bytes {
    let data = json!({ "user_id": member.user_id, "user_info": info_value(&member.user_info) });
    frame::event(
        "pusher_internal:member_added",
        Some(channel),
        &data.to_string(),
    )
}

/// A refused presence subscription, as Pusher-compatible servers send it:
/// `pusher:subscription_error` on the channel with `{type, error, status}`.
pub fn subscription_error(channel: &str, kind: &str, error: &str, status: u16) -> Utf8Bytes {
    let data = json!({ "type": kind, "error": error, "status": status });
    frame::event(
        "pusher:subscription_error",
        Some(channel),
        &data.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_data_makes_a_member_within_pusher_limits() {
        let m = PresenceMember::parse(r#"{"user_id":"u1","user_info":{"name":"Ada"}}"#).unwrap();
        assert_eq!(m.user_id, "u1");
        assert_eq!(m.user_info, r#"{"name":"Ada"}"#);
        // Numbers are keyed by their text; no info is null.
        let m = PresenceMember::parse(r#"{"user_id":42}"#).unwrap();
        assert_eq!((m.user_id.as_str(), m.user_info.as_str()), ("42", "null"));
        assert_eq!(PresenceMember::parse("nope"), Err(MemberError::Malformed));
        assert_eq!(PresenceMember::parse("{}"), Err(MemberError::Malformed));
        assert_eq!(
            PresenceMember::parse(r#"{"user_id":""}"#),
            Err(MemberError::BadUserId)
        );
        assert_eq!(
            PresenceMember::parse(r#"{"user_id":[1]}"#),
            Err(MemberError::BadUserId)
        );
        let long = "x".repeat(129);
        let err = PresenceMember::parse(&format!(r#"{{"user_id":"{long}"}}"#)).unwrap_err();
        assert_eq!(err, MemberError::UserIdTooLong);
        assert!(err.is_limit());
        let ok = "x".repeat(128);
        assert!(PresenceMember::parse(&format!(r#"{{"user_id":"{ok}"}}"#)).is_ok());
        let big = "y".repeat(1100);
        let err = PresenceMember::parse(&format!(r#"{{"user_id":"a","user_info":"{big}"}}"#))
            .unwrap_err();
        assert_eq!(err, MemberError::UserInfoTooLarge);
    }

    #[test]
    fn subscription_data_lists_ids_hash_and_count() {
        let members = vec![
            ("1".to_string(), r#"{"name":"Ada"}"#.to_string()),
            ("2".to_string(), "null".to_string()),
        ];
        let data: Value = serde_json::from_str(&subscription_data(&members)).unwrap();
        assert_eq!(
            data,
            json!({"presence": {"ids": ["1", "2"], "hash": {"1": {"name": "Ada"}, "2": null}, "count": 2}})
        );
    }

    #[test]
    fn member_frames_carry_data_as_a_json_string() {
        let m = PresenceMember::parse(r#"{"user_id":"7","user_info":{"a":1}}"#).unwrap();
        let frame: Value = serde_json::from_str(member_added("presence-x", &m).as_str()).unwrap();
        assert_eq!(frame["event"], "pusher_internal:member_added");
        assert_eq!(frame["channel"], "presence-x");
        let data: Value = serde_json::from_str(frame["data"].as_str().unwrap()).unwrap();
        assert_eq!(data, json!({"user_id": "7", "user_info": {"a": 1}}));
        let removed: Value = serde_json::from_str(&crate::store::presence::member_removed_frame(
            "presence-x",
            "7",
        ))
        .unwrap();
        assert_eq!(removed["data"], r#"{"user_id":"7"}"#);
    }
}
