//! The Pusher HTTP API (`POST /apps/{id}/events`, `batch_events`, the
//! channel queries): the request URI as hyper parses it, its query as
//! `http/pusher_api.rs` `authenticate` decodes it, `verify_http_api_request`
//! (key, version, timestamp window, `body_md5`, HMAC signature), then the
//! body through the handlers' own `parse_event` / `parse_batch`.
//!
//! Input: a mode byte, then `<path>\0<query>\0<body>`; bits 1–2 of the
//! mode pick the method.
//! - even mode: the request target is `<path>?<query>` as sent.
//! - odd mode: the query's pairs are completed with whichever of
//!   `auth_key`, `auth_timestamp`, `auth_version` and `body_md5` they lack
//!   and signed here, so the fuzzer reaches the body parsers; such a request
//!   must then authenticate unless the fuzzer supplied an auth pair itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall::http::error::AppError;
use rollcall::http::pusher_api::{parse_batch, parse_event};
use rollcall::pusher::auth::{body_md5_hex, sign_http_api, verify_http_api_request};
use rollcall_fuzz::{NOW_UNIX, PUSHER_APP_KEY, PUSHER_APP_SECRET, fields};

const METHODS: [&str; 4] = ["POST", "GET", "post", "DELETE"];
const AUTH_PARAMS: [&str; 5] = [
    "auth_key",
    "auth_timestamp",
    "auth_version",
    "body_md5",
    "auth_signature",
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(mode >> 1) % METHODS.len()];
    let [path, query, body] = fields::<3>(rest);
    let (target, must_pass) = if mode & 1 == 0 {
        let mut target = path.to_vec();
        if !query.is_empty() {
            target.push(b'?');
            target.extend_from_slice(query);
        }
        (target, false)
    } else {
        match signed_target(method, path, query, body) {
            Some(signed) => signed,
            None => return,
        }
    };
    // hyper refuses a request target that is not a URI before routing.
    let Ok(uri) = http::Uri::try_from(target) else {
        return;
    };
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (&**k, &**v)).collect();
    let verdict = verify_http_api_request(
        PUSHER_APP_KEY,
        PUSHER_APP_SECRET,
        method,
        uri.path(),
        &borrowed,
        body,
        NOW_UNIX,
    );
    match verdict {
        Ok(()) => {}
        Err(e) => {
            assert!(!must_pass, "a request signed here was refused: {e}");
            assert!(!e.code().is_empty());
            return;
        }
    }
    let parsed = if uri.path().ends_with("/batch_events") {
        parse_batch(body).map(|events| assert!(events.len() <= 10))
    } else {
        parse_event(body).map(drop)
    };
    if let Err(AppError { status, code, .. }) = parsed {
        assert!(status == 400 || status == 413, "{status} {code}");
        assert!(!code.is_empty());
    }
});

/// The request target a Pusher library would send for `path` and the
/// fuzzer's query pairs, signed with the app's secret; `None` when `path`
/// is not an origin-form path. The flag says whether it must authenticate.
fn signed_target(method: &str, path: &[u8], query: &[u8], body: &[u8]) -> Option<(Vec<u8>, bool)> {
    let path_uri = http::Uri::try_from(path).ok()?;
    if path_uri.query().is_some() || path_uri.scheme().is_some() || !path.starts_with(b"/") {
        return None;
    }
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query).into_owned().collect();
    let supplied = |name: &str| pairs.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let must_pass = !AUTH_PARAMS.iter().any(|p| supplied(p));
    let mut add = |name: &str, value: String| {
        if !pairs.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
            pairs.push((name.to_owned(), value));
        }
    };
    add("auth_key", PUSHER_APP_KEY.to_owned());
    add("auth_timestamp", NOW_UNIX.to_string());
    add("auth_version", "1.0".to_owned());
    if !body.is_empty() {
        add("body_md5", body_md5_hex(body));
    }
    let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (&**k, &**v)).collect();
    let signature = sign_http_api(PUSHER_APP_SECRET, method, path_uri.path(), &borrowed);
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &pairs {
        query.append_pair(k, v);
    }
    query.append_pair("auth_signature", &signature);
    let mut target = path_uri.path().as_bytes().to_vec();
    target.push(b'?');
    target.extend_from_slice(query.finish().as_bytes());
    Some((target, must_pass))
}
