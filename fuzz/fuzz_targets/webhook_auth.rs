//! `POST /webhooks/livekit`'s signature check: `verify_webhook` with an
//! arbitrary `Authorization` header and body, as the handler calls it.
//!
//! Input: a mode byte, then NUL-separated fields.
//! - even mode: `<header bytes>\0<body>` — the header goes through
//!   `HeaderValue::to_str` like the handler's, so anything hyper would
//!   deliver is possible.
//! - odd mode: `<JWT header JSON>\0<claims JSON>\0<body>` — the target signs
//!   these exact bytes with a configured secret (bit 1 of the mode picks
//!   which), so the fuzzer reaches the claim parsing, time rules and body
//!   hash behind the signature. `$SHA` in the claims becomes the body's
//!   real hash, so a matching body is reachable too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall::livekit::{LEEWAY_SECS, body_sha256_b64, verify_webhook};
use rollcall_fuzz::{LIVEKIT_SECRETS, NOW_UNIX, fields, header_str, keyring, mint_jwt, replace};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (authorization, body) = if mode & 1 == 0 {
        let [header, body] = fields::<2>(rest);
        (header_str(header), body)
    } else {
        let [jwt_header, claims, body] = fields::<3>(rest);
        let claims = replace(claims, b"$SHA", body_sha256_b64(body).as_bytes());
        let secret = LIVEKIT_SECRETS[usize::from(mode >> 1) % LIVEKIT_SECRETS.len()];
        (Some(mint_jwt(secret, jwt_header, &claims)), body)
    };
    match verify_webhook(keyring(), authorization.as_deref(), body, NOW_UNIX) {
        Ok(claims) => {
            // What the handler trusts once this returns Ok.
            assert_eq!(claims.sha256, body_sha256_b64(body));
            assert!(keyring().secret_for(&claims.api_key).is_some());
            assert!(claims.expires_at >= NOW_UNIX - LEEWAY_SECS);
            assert!(
                claims
                    .not_before
                    .is_none_or(|t| t <= NOW_UNIX + LEEWAY_SECS)
            );
            assert!(claims.issued_at.is_none_or(|t| t <= NOW_UNIX + LEEWAY_SECS));
        }
        Err(e) => {
            // Every refusal is a 401 with a machine code.
            assert!(!e.code().is_empty());
            let _ = e.to_string();
        }
    }
});
