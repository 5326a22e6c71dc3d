//! Pusher signatures: channel authorisation (`private-`/`presence-`
//! subscriptions) and HTTP API request signing.
//!
//! Pure functions, no clock: the caller passes the current time. Every
//! comparison of a received signature goes through `Mac::verify_slice`, which
//! is constant-time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// HTTP API requests whose `auth_timestamp` is further than this from now are
/// rejected (replay window).
pub const HTTP_API_MAX_CLOCK_SKEW_SECS: i64 = 600;

fn mac(secret: &str) -> HmacSha256 {
    HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length")
}

/// Hex HMAC-SHA256 of `message` with `secret`: every signature rollcall
/// makes (channel auth, HTTP API, final reports) is this.
pub fn hmac_sha256_hex(secret: &str, message: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(message);
    hex::encode(m.finalize().into_bytes())
}

fn channel_string_to_sign(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    }
}

/// Hex HMAC-SHA256 of `"<socket_id>:<channel>[:<channel_data>]"`: what the
/// app's auth endpoint puts after `"<key>:"` in a subscription's `auth`.
pub fn sign_channel(
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    hmac_sha256_hex(
        secret,
        channel_string_to_sign(socket_id, channel, channel_data).as_bytes(),
    )
}

/// Checks a subscription's `auth` field, `"<app_key>:<hex signature>"`.
pub fn verify_channel_auth(
    app_key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
    auth: &str,
) -> bool {
    verify_signed(
        app_key,
        secret,
        &channel_string_to_sign(socket_id, channel, channel_data),
        auth,
    )
}

/// The string a `pusher:signin`'s `auth` signs: `"<socket_id>::user::<user_data>"`.
fn user_string_to_sign(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

/// Hex HMAC-SHA256 of a user sign-in: what the app's user-auth endpoint
/// puts after `"<key>:"` (Pusher's `authenticateUser`).
pub fn sign_user(secret: &str, socket_id: &str, user_data: &str) -> String {
    hmac_sha256_hex(secret, user_string_to_sign(socket_id, user_data).as_bytes())
}

/// Checks a `pusher:signin`'s `auth`, `"<app_key>:<hex signature>"`.
pub fn verify_user_auth(
    app_key: &str,
    secret: &str,
    socket_id: &str,
    user_data: &str,
    auth: &str,
) -> bool {
    verify_signed(
        app_key,
        secret,
        &user_string_to_sign(socket_id, user_data),
        auth,
    )
}

/// `auth` is `"<app_key>:<hex HMAC-SHA256 of message>"`, compared in
/// constant time.
fn verify_signed(app_key: &str, secret: &str, message: &str, auth: &str) -> bool {
    let Some((key, sig)) = auth.split_once(':') else {
        return false;
    };
    // The key is public; only the signature needs a constant-time compare.
    if key != app_key {
        return false;
    }
    let Ok(sig) = hex::decode(sig) else {
        return false;
    };
    let mut m = mac(secret);
    m.update(message.as_bytes());
    m.verify_slice(&sig).is_ok()
}

/// The string an HTTP API request signature covers:
/// `"<METHOD>\n<path>\n<k=v&…>"` with keys lower-cased, pairs sorted, values
/// not URL-escaped and `auth_signature` itself left out.
pub fn http_api_string_to_sign(method: &str, path: &str, query_pairs: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, &str)> = query_pairs
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), *v))
        .filter(|(k, _)| k != "auth_signature")
        .collect();
    pairs.sort();
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!("{}\n{path}\n{query}", method.to_ascii_uppercase())
}

/// Hex HMAC-SHA256 of [`http_api_string_to_sign`] (what a client sends as
/// `auth_signature`).
pub fn sign_http_api(
    secret: &str,
    method: &str,
    path: &str,
    query_pairs: &[(&str, &str)],
) -> String {
    hmac_sha256_hex(
        secret,
        http_api_string_to_sign(method, path, query_pairs).as_bytes(),
    )
}

/// Checks `signature` (hex, the request's `auth_signature`) against the other
/// query pairs. The `auth_key`, `auth_timestamp` ([`http_api_timestamp_ok`])
/// and `body_md5` checks are the caller's.
pub fn verify_http_api_signature(
    secret: &str,
    method: &str,
    path: &str,
    query_pairs: &[(&str, &str)],
    signature: &str,
) -> bool {
    let Ok(sig) = hex::decode(signature) else {
        return false;
    };
    let mut m = mac(secret);
    m.update(http_api_string_to_sign(method, path, query_pairs).as_bytes());
    m.verify_slice(&sig).is_ok()
}

/// Whether `auth_timestamp` (Unix seconds) is within
/// ±[`HTTP_API_MAX_CLOCK_SKEW_SECS`] of `now_unix`.
pub fn http_api_timestamp_ok(auth_timestamp: &str, now_unix: i64) -> bool {
    auth_timestamp
        .parse::<i64>()
        .is_ok_and(|ts| ts.abs_diff(now_unix) <= HTTP_API_MAX_CLOCK_SKEW_SECS as u64)
}

/// Why an HTTP API request is not authenticated (all answered 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpApiAuthError {
    #[error("the query parameter {0} is required")]
    Missing(&'static str),
    #[error("auth_key is not this app's key")]
    WrongKey,
    #[error("auth_version must be 1.0")]
    WrongVersion,
    #[error(
        "auth_timestamp is more than {HTTP_API_MAX_CLOCK_SKEW_SECS} s away from the server's clock (or not a number)"
    )]
    StaleTimestamp,
    #[error("body_md5 is not the MD5 of the body")]
    BodyMd5Mismatch,
    #[error("auth_signature does not match the request")]
    InvalidSignature,
}

impl HttpApiAuthError {
    /// The machine code of the contract's error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing(_) => "missing_auth_params",
            Self::WrongKey => "invalid_key",
            Self::WrongVersion => "invalid_auth_version",
            Self::StaleTimestamp => "stale_timestamp",
            Self::BodyMd5Mismatch => "invalid_body_md5",
            Self::InvalidSignature => "invalid_signature",
        }
    }
}

/// Hex MD5 of `body`: the HTTP API's `body_md5`.
pub fn body_md5_hex(body: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(body))
}

/// Authenticates a whole HTTP API request as Pusher does: `auth_key` is
/// `app_key`, `auth_version` is `1.0`, `auth_timestamp` is within the
/// window around `now_unix`, `body_md5` matches a non-empty body (and any
/// body it is given for), and `auth_signature` covers method, path and
/// every other query pair (URL-decoded), compared in constant time.
pub fn verify_http_api_request(
    app_key: &str,
    secret: &str,
    method: &str,
    path: &str,
    query_pairs: &[(&str, &str)],
    body: &[u8],
    now_unix: i64,
) -> Result<(), HttpApiAuthError> {
    let param = |name: &str| {
        query_pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    let key = param("auth_key").ok_or(HttpApiAuthError::Missing("auth_key"))?;
    let timestamp = param("auth_timestamp").ok_or(HttpApiAuthError::Missing("auth_timestamp"))?;
    let version = param("auth_version").ok_or(HttpApiAuthError::Missing("auth_version"))?;
    let signature = param("auth_signature").ok_or(HttpApiAuthError::Missing("auth_signature"))?;
    if key != app_key {
        return Err(HttpApiAuthError::WrongKey);
    }
    if version != "1.0" {
        return Err(HttpApiAuthError::WrongVersion);
    }
    if !http_api_timestamp_ok(timestamp, now_unix) {
        return Err(HttpApiAuthError::StaleTimestamp);
    }
    match param("body_md5") {
        None if body.is_empty() => {}
        None => return Err(HttpApiAuthError::Missing("body_md5")),
        Some(md5) => {
            if !md5.eq_ignore_ascii_case(&body_md5_hex(body)) {
                return Err(HttpApiAuthError::BodyMd5Mismatch);
            }
        }
    }
    if verify_http_api_signature(secret, method, path, query_pairs, signature) {
        Ok(())
    } else {
        Err(HttpApiAuthError::InvalidSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_sign_in_signatures_cover_the_socket_and_the_user_data() {
        let data = r#"{"id":"12","user_info":{"name":"Sara"}}"#;
        let auth = format!("key:{}", sign_user("s3cret", "1.2", data));
        assert!(verify_user_auth("key", "s3cret", "1.2", data, &auth));
        assert!(!verify_user_auth("key", "s3cret", "1.3", data, &auth));
        assert!(!verify_user_auth(
            "key",
            "s3cret",
            "1.2",
            r#"{"id":"13"}"#,
            &auth
        ));
        assert!(!verify_user_auth("other", "s3cret", "1.2", data, &auth));
        assert!(!verify_user_auth("key", "s3cret", "1.2", data, "key:zz"));
        // Not a channel signature of the same socket.
        let channel = format!("key:{}", sign_channel("s3cret", "1.2", data, None));
        assert!(!verify_user_auth("key", "s3cret", "1.2", data, &channel));
    }

    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";

    #[test]
    fn channel_signature_matches_protocol_vector() {
        let sig = sign_channel(SECRET, "1234.1234", "private-foobar", None);
        assert_eq!(
            sig,
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        let auth = format!("{KEY}:{sig}");
        assert!(verify_channel_auth(
            KEY,
            SECRET,
            "1234.1234",
            "private-foobar",
            None,
            &auth
        ));
    }

    #[test]
    fn channel_auth_rejects_anything_else() {
        let sig = sign_channel(SECRET, "1234.1234", "private-foobar", None);
        let ok = |key: &str, socket: &str, channel: &str, data: Option<&str>, auth: &str| {
            verify_channel_auth(key, SECRET, socket, channel, data, auth)
        };
        let auth = format!("{KEY}:{sig}");
        assert!(!ok(KEY, "1234.1235", "private-foobar", None, &auth));
        assert!(!ok(KEY, "1234.1234", "private-foobaz", None, &auth));
        assert!(!ok(KEY, "1234.1234", "private-foobar", Some("{}"), &auth));
        assert!(!ok("otherkey", "1234.1234", "private-foobar", None, &auth));
        assert!(!ok(KEY, "1234.1234", "private-foobar", None, &sig));
        assert!(!ok(
            KEY,
            "1234.1234",
            "private-foobar",
            None,
            &format!("{KEY}:zz")
        ));
        assert!(!ok(
            KEY,
            "1234.1234",
            "private-foobar",
            None,
            &format!("{KEY}:{}", &sig[2..])
        ));
        assert!(!ok(KEY, "1234.1234", "private-foobar", None, ""));
        // Presence: channel_data is covered by the signature.
        let data = r#"{"user_id":"1"}"#;
        let sig = sign_channel(SECRET, "1.2", "presence-x", Some(data));
        assert!(ok(
            KEY,
            "1.2",
            "presence-x",
            Some(data),
            &format!("{KEY}:{sig}")
        ));
        assert!(!ok(
            KEY,
            "1.2",
            "presence-x",
            Some(r#"{"user_id":"2"}"#),
            &format!("{KEY}:{sig}")
        ));
    }

    #[test]
    fn http_api_signature_matches_protocol_vector() {
        // Given out of order and with the signature present: both must not matter.
        let pairs = [
            ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
            ("auth_signature", "ignored"),
            ("auth_version", "1.0"),
            ("AUTH_KEY", KEY),
            ("auth_timestamp", "1353088179"),
        ];
        assert_eq!(
            http_api_string_to_sign("POST", "/apps/3/events", &pairs),
            "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179\
             &auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
        );
        let expected = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c";
        assert_eq!(
            sign_http_api(SECRET, "POST", "/apps/3/events", &pairs),
            expected
        );
        assert!(verify_http_api_signature(
            SECRET,
            "POST",
            "/apps/3/events",
            &pairs,
            expected
        ));
        assert!(!verify_http_api_signature(
            SECRET,
            "POST",
            "/apps/4/events",
            &pairs,
            expected
        ));
        assert!(!verify_http_api_signature(
            "other",
            "POST",
            "/apps/3/events",
            &pairs,
            expected
        ));
        assert!(!verify_http_api_signature(
            SECRET,
            "POST",
            "/apps/3/events",
            &pairs,
            "nothex"
        ));
    }

    #[test]
    fn http_api_request_matches_protocol_vector_and_names_each_failure() {
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        assert_eq!(body_md5_hex(body), "ec365a775a4cd0599faeb73354201b6f");
        let sig = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c";
        let pairs = |drop: &str, replace: (&str, &str)| -> Vec<(&'static str, String)> {
            [
                ("auth_key", KEY.to_string()),
                ("auth_timestamp", "1353088179".to_string()),
                ("auth_version", "1.0".to_string()),
                ("body_md5", "ec365a775a4cd0599faeb73354201b6f".to_string()),
                ("auth_signature", sig.to_string()),
            ]
            .into_iter()
            .filter(|(k, _)| *k != drop)
            .map(|(k, v)| {
                if k == replace.0 {
                    (k, replace.1.to_string())
                } else {
                    (k, v)
                }
            })
            .collect()
        };
        let check = |pairs: Vec<(&str, String)>, body: &[u8], now: i64| {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            verify_http_api_request(KEY, SECRET, "POST", "/apps/3/events", &pairs, body, now)
        };
        let now = 1353088179 + 30;
        assert_eq!(check(pairs("", ("", "")), body, now), Ok(()));
        use HttpApiAuthError::*;
        for name in [
            "auth_key",
            "auth_timestamp",
            "auth_version",
            "auth_signature",
            "body_md5",
        ] {
            assert_eq!(check(pairs(name, ("", "")), body, now), Err(Missing(name)));
        }
        assert_eq!(
            check(pairs("", ("auth_key", "other")), body, now),
            Err(WrongKey)
        );
        assert_eq!(
            check(pairs("", ("auth_version", "2.0")), body, now),
            Err(WrongVersion)
        );
        assert_eq!(
            check(pairs("", ("", "")), body, now + 600),
            Err(StaleTimestamp)
        );
        assert_eq!(check(pairs("", ("", "")), b"{}", now), Err(BodyMd5Mismatch));
        assert_eq!(
            check(
                pairs("", ("auth_signature", &sig.replace('d', "e"))),
                body,
                now
            ),
            Err(InvalidSignature)
        );
    }

    #[test]
    fn http_api_timestamp_window() {
        assert!(http_api_timestamp_ok("1000", 1000));
        assert!(http_api_timestamp_ok("400", 1000));
        assert!(http_api_timestamp_ok("1600", 1000));
        assert!(!http_api_timestamp_ok("399", 1000));
        assert!(!http_api_timestamp_ok("1601", 1000));
        assert!(!http_api_timestamp_ok("soon", 1000));
    }
}
