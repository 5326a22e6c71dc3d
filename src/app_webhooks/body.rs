//! The webhook request as Pusher sends it: the body
//! `{"time_ms":<ms>,"events":[…]}` and its signature, `X-Pusher-Signature`
//! = hex HMAC-SHA256 of the raw body with the app secret, beside
//! `X-Pusher-Key`.

use super::queue::Claimed;
use crate::domain::UnixMillis;

pub const KEY_HEADER: &str = "X-Pusher-Key";
pub const SIGNATURE_HEADER: &str = "X-Pusher-Signature";

/// One request's worth of claimed events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub ids: Vec<String>,
    pub body: Vec<u8>,
}

/// The body for `events` (event objects as JSON text, in order).
pub fn body<'a>(time_ms: UnixMillis, events: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    let mut out = format!(r#"{{"time_ms":{time_ms},"events":["#).into_bytes();
    for (i, e) in events.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e.as_bytes());
    }
    out.extend_from_slice(b"]}");
    out
}

/// `X-Pusher-Signature` of `body`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    crate::pusher::auth::hmac_sha256_hex(secret, body)
}

/// Splits `events` (in order) into bodies of at most `max_bytes` each; an
/// event too large for any body goes alone (events are bounded where they
/// are emitted, far below the cap, so this does not happen in practice).
pub fn batches(events: &[Claimed], time_ms: UnixMillis, max_bytes: usize) -> Vec<Batch> {
    let overhead = body(time_ms, []).len();
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = overhead;
    for (i, e) in events.iter().enumerate() {
        let add = e.json.len() + usize::from(i > start);
        if i > start && size + add > max_bytes {
            out.push(batch(&events[start..i], time_ms));
            start = i;
            size = overhead + e.json.len();
        } else {
            size += add;
        }
    }
    if start < events.len() {
        out.push(batch(&events[start..], time_ms));
    }
    out
}

fn batch(events: &[Claimed], time_ms: UnixMillis) -> Batch {
    Batch {
        ids: events.iter().map(|e| e.id.clone()).collect(),
        body: body(time_ms, events.iter().map(|e| e.json.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(id: &str, json: &str) -> Claimed {
        Claimed {
            id: id.into(),
            json: json.into(),
            queued_at: 0,
            tries: 0,
        }
    }

    #[test]
    fn the_body_is_pushers_and_parses() {
        let events = [
            r#"{"name":"channel_occupied","channel":"a"}"#,
            r#"{"name":"member_added","channel":"presence-a","user_id":"7"}"#,
        ];
        let b = body(1_700_000_000_123, events);
        assert_eq!(
            String::from_utf8(b.clone()).unwrap(),
            r#"{"time_ms":1700000000123,"events":[{"name":"channel_occupied","channel":"a"},{"name":"member_added","channel":"presence-a","user_id":"7"}]}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["events"][1]["user_id"], "7");
        assert_eq!(body(5, []), br#"{"time_ms":5,"events":[]}"#);
    }

    #[test]
    fn the_signature_is_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Pusher's documented example secret, over a whole body, checked
        // with `openssl dgst -sha256 -hmac 7ad3773142a6692b25b8`.
        let b = body(1, [r#"{"name":"channel_occupied","channel":"c"}"#]);
        assert_eq!(
            sign("7ad3773142a6692b25b8", &b),
            "8dd10e9c52d8c65f52eeb6bca120706a0a336d73aab884b0c0b7ba1d1faa7ab1"
        );
    }

    #[test]
    fn batches_stay_under_the_cap_in_order() {
        let e: Vec<Claimed> = (0..5)
            .map(|i| {
                claimed(
                    &i.to_string(),
                    &format!(r#"{{"n":"{}"}}"#, "x".repeat(10 * i)),
                )
            })
            .collect();
        let all = batches(&e, 1, 1 << 20);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].ids, ["0", "1", "2", "3", "4"]);
        let cap = body(1, [e[3].json.as_str(), e[4].json.as_str()]).len();
        let split = batches(&e, 1, cap);
        assert!(split.iter().all(|b| b.body.len() <= cap));
        let ids: Vec<&str> = split
            .iter()
            .flat_map(|b| b.ids.iter().map(String::as_str))
            .collect();
        assert_eq!(ids, ["0", "1", "2", "3", "4"]);
        assert_eq!(split.last().unwrap().ids, ["3", "4"]);
        // An event over the cap goes alone rather than being lost.
        let alone = batches(&e, 1, 10);
        assert_eq!(alone.len(), 5);
    }
}
