//! What the fuzz targets share: the fixed configuration they run against
//! (built once, in `OnceLock`s, so each execution pays only for the parser
//! under test), input splitting, and minting of signed tokens so a target
//! can reach the code behind a signature check.
//!
//! Every target is a thin driver of a real public entry point the server
//! uses; assertions in the targets are invariants the server relies on, so a
//! violated one is reported as a crash like a panic is.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rollcall::engine::{Naming, Session};
use rollcall::livekit::KeyRing;
use sha2::Sha256;

/// The LiveKit keys every target trusts: the ones LiveKit's SDK used to
/// mint `tests/fixtures/livekit/sdk_tokens.json`, so seeds made from those
/// tokens verify.
pub const LIVEKIT_KEYS: &str = "devkey: secret, otherkey: othersecret";

/// The secrets of [`LIVEKIT_KEYS`], in order; a minted input picks one.
pub const LIVEKIT_SECRETS: [&str; 2] = ["secret", "othersecret"];

/// The clock every target reads (Unix seconds): a minute after the
/// fixtures' tokens were minted, well inside their validity.
pub const NOW_UNIX: i64 = 1_795_266_392 + 60;

/// [`NOW_UNIX`] in milliseconds.
pub const NOW_MS: i64 = NOW_UNIX * 1000;

/// The Pusher app of PROTOCOLS.md's test vectors.
pub const PUSHER_APP_KEY: &str = "278d425bdf160c739803";
/// Its secret.
pub const PUSHER_APP_SECRET: &str = "7ad3773142a6692b25b8";
/// The socket id of the channel-auth test vector.
pub const PUSHER_SOCKET_ID: &str = "1234.1234";

/// The key ring the server would build from [`LIVEKIT_KEYS`].
pub fn keyring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| {
        KeyRing::new(KeyRing::parse_livekit_keys(LIVEKIT_KEYS).expect("fixed keys parse"))
    })
}

/// The default room pattern, identity pattern and channel template.
pub fn naming() -> &'static Naming {
    static NAMING: OnceLock<Naming> = OnceLock::new();
    NAMING.get_or_init(Naming::default)
}

/// The session of the fixtures' room, for reading a state through a view.
pub fn fixture_session() -> &'static Session {
    static SESSION: OnceLock<Session> = OnceLock::new();
    SESSION.get_or_init(|| {
        naming()
            .session("itqan-academy-quran-session-121")
            .expect("the fixtures' room matches the default pattern")
    })
}

/// Splits `data` at NUL bytes into exactly `N` fields: missing fields are
/// empty and the last one keeps the rest (NULs included). NUL is the
/// separator because no header, URI or UTF-8-checked text field the
/// targets feed can hold one, and seeds stay easy to write.
pub fn fields<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut out = [&data[..0]; N];
    let mut rest = data;
    for (i, slot) in out.iter_mut().enumerate() {
        if i + 1 == N {
            *slot = rest;
            break;
        }
        match rest.iter().position(|&b| b == 0) {
            Some(at) => {
                *slot = &rest[..at];
                rest = &rest[at + 1..];
            }
            None => {
                *slot = rest;
                rest = &rest[rest.len()..];
            }
        }
    }
    out
}

/// A header value as the handlers read it: `HeaderValue::to_str`, so `None`
/// for bytes hyper would refuse in a header or that are not visible ASCII.
pub fn header_str(bytes: &[u8]) -> Option<String> {
    let value = http::HeaderValue::from_bytes(bytes).ok()?;
    value.to_str().ok().map(str::to_owned)
}

/// A JWT over exactly these header and claims bytes, HS256-signed with
/// `secret`: lets a target put arbitrary claims behind a valid signature.
pub fn mint_jwt(secret: &str, header: &[u8], claims: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// `haystack` with every `needle` replaced by `with` (byte strings).
pub fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Whether `text` is one JSON value (every frame and payload the server
/// builds from hostile input must be).
pub fn is_json(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text).is_ok()
}

/// Split points for feeding `len` bytes in pieces, derived from `seed`
/// (bytes of the input): increasing cut positions strictly inside
/// `0..len`, each piece 1 to 256 bytes, so "whole" and "in pieces" can be
/// compared on the same bytes.
pub fn cuts(len: usize, seed: &[u8]) -> Vec<usize> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for &b in seed {
        state = (state ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
    }
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Mostly short pieces (byte-at-a-time clients), sometimes long.
        let step = if state & 0x300 == 0 {
            1 + (state >> 32) as usize % 256
        } else {
            1 + (state >> 32) as usize % 8
        };
        at += step;
        if at >= len {
            return out;
        }
        out.push(at);
    }
}
