//! `LIVEKIT_KEYS` (`KeyRing::parse_livekit_keys`), as config parses it at
//! startup: every accepted pair is trimmed, non-empty, unique and found in
//! the ring built from it; no refusal message quotes a secret.
//!
//! Input: the variable's value (env values are UTF-8 to clap).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall::livekit::{KeyParseError, KeyRing};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match KeyRing::parse_livekit_keys(text) {
        Ok(pairs) => {
            let ring = KeyRing::new(pairs.clone());
            assert_eq!(ring.len(), pairs.len());
            for (key, secret) in &pairs {
                assert!(!key.is_empty() && !secret.is_empty());
                assert_eq!(key.trim(), key);
                assert_eq!(secret.trim(), secret);
                assert!(!key.contains([',', '\n', '\r', ':']));
                assert!(!secret.contains([',', '\n', '\r']));
                assert_eq!(ring.secret_for(key), Some(secret.as_str()));
            }
            // Debug is what reaches logs: key ids only.
            let _ = format!("{ring:?}");
        }
        Err(e) => {
            let message = e.to_string();
            // Entries are named by position; only a key id may be quoted,
            // and only when the entry had a `:` (so it is not a bare secret).
            if let KeyParseError::MissingSeparator { .. } | KeyParseError::EmptyKey { .. } = e {
                assert!(!message.contains('"'));
            }
        }
    }
});
