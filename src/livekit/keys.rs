//! The LiveKit API key → secret pairs rollcall trusts (`LIVEKIT_KEYS`).
//!
//! Several pairs may be configured at once so keys can be rotated without
//! dropping webhooks or heartbeats signed with the outgoing key.

use std::collections::HashMap;
use std::fmt;

/// Configured LiveKit API keys and their secrets, looked up by key id
/// (the JWT `iss` claim).
#[derive(Clone, Default)]
pub struct KeyRing {
    secrets: HashMap<String, String>,
}

/// Why a `LIVEKIT_KEYS` string could not be parsed.
///
/// Entries are identified by position, never by content, because a malformed
/// entry may well be a bare secret that must not end up in logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    /// An entry has no `:` between key and secret.
    #[error("LiveKit key entry #{index} has no ':' between key and secret")]
    MissingSeparator {
        /// 1-based position among the non-empty entries.
        index: usize,
    },
    /// An entry has nothing before the `:`.
    #[error("LiveKit key entry #{index} has an empty key")]
    EmptyKey {
        /// 1-based position among the non-empty entries.
        index: usize,
    },
    /// An entry has nothing after the `:`.
    #[error("LiveKit key entry #{index} (key {key:?}) has an empty secret")]
    EmptySecret {
        /// 1-based position among the non-empty entries.
        index: usize,
        /// The key id (not secret).
        key: String,
    },
    /// The same key id appears twice; which secret is meant is ambiguous.
    #[error("LiveKit key {key:?} is configured more than once")]
    DuplicateKey {
        /// The repeated key id.
        key: String,
    },
}

impl KeyRing {
    /// Builds a ring from `(key, secret)` pairs; a later pair with the same
    /// key replaces an earlier one.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            secrets: pairs.into_iter().collect(),
        }
    }

    /// Parses LiveKit's own `LIVEKIT_KEYS` format: `key1: secret1, key2: secret2`.
    ///
    /// Commas and newlines both separate entries; blank entries (trailing
    /// comma, empty lines) are skipped; whitespace around keys and secrets is
    /// trimmed. Each entry splits at its first `:`, so a secret may contain
    /// `:` itself. An empty input yields no pairs.
    pub fn parse_livekit_keys(s: &str) -> Result<Vec<(String, String)>, KeyParseError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let entries = s
            .split([',', '\n', '\r'])
            .map(str::trim)
            .filter(|e| !e.is_empty());
        for (i, entry) in entries.enumerate() {
            let index = i + 1;
            let (key, secret) = entry
                .split_once(':')
                .ok_or(KeyParseError::MissingSeparator { index })?;
            let (key, secret) = (key.trim(), secret.trim());
            if key.is_empty() {
                return Err(KeyParseError::EmptyKey { index });
            }
            if secret.is_empty() {
                return Err(KeyParseError::EmptySecret {
                    index,
                    key: key.to_owned(),
                });
            }
            if pairs.iter().any(|(k, _)| k == key) {
                return Err(KeyParseError::DuplicateKey {
                    key: key.to_owned(),
                });
            }
            pairs.push((key.to_owned(), secret.to_owned()));
        }
        Ok(pairs)
    }

    /// The secret configured for `key`, if any.
    pub fn secret_for(&self, key: &str) -> Option<&str> {
        self.secrets.get(key).map(String::as_str)
    }

    /// True when no key is configured (every token would be rejected).
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Number of configured keys.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// The configured key ids, sorted (for logs and diagnostics).
    pub fn key_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.secrets.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }
}

impl fmt::Debug for KeyRing {
    // Secrets must never reach logs: print key ids only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.key_ids())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, s)| (k.to_string(), s.to_string()))
            .collect()
    }

    #[test]
    fn parses_livekit_format_with_commas_and_spaces() {
        let got = KeyRing::parse_livekit_keys("key1: secret1, key2: secret2").unwrap();
        assert_eq!(got, pairs(&[("key1", "secret1"), ("key2", "secret2")]));
    }

    #[test]
    fn parses_newlines_blank_entries_and_no_spaces() {
        let got = KeyRing::parse_livekit_keys("\n  a:1 \r\n\n b :  2 ,\n").unwrap();
        assert_eq!(got, pairs(&[("a", "1"), ("b", "2")]));
    }

    #[test]
    fn secret_may_contain_colon_and_empty_input_is_empty() {
        let got = KeyRing::parse_livekit_keys("k: se:cret").unwrap();
        assert_eq!(got, pairs(&[("k", "se:cret")]));
        assert!(KeyRing::parse_livekit_keys("  ").unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_entries_by_position() {
        assert_eq!(
            KeyRing::parse_livekit_keys("a: 1, justasecret"),
            Err(KeyParseError::MissingSeparator { index: 2 })
        );
        assert_eq!(
            KeyRing::parse_livekit_keys(" : s"),
            Err(KeyParseError::EmptyKey { index: 1 })
        );
        assert_eq!(
            KeyRing::parse_livekit_keys("a: 1\nb:  "),
            Err(KeyParseError::EmptySecret {
                index: 2,
                key: "b".into()
            })
        );
        assert_eq!(
            KeyRing::parse_livekit_keys("a: 1, a: 2"),
            Err(KeyParseError::DuplicateKey { key: "a".into() })
        );
    }

    #[test]
    fn error_messages_do_not_echo_secret_like_entries() {
        let err = KeyRing::parse_livekit_keys("justasecretvalue").unwrap_err();
        assert!(!err.to_string().contains("justasecretvalue"));
    }

    #[test]
    fn lookup_and_emptiness() {
        let ring = KeyRing::new(KeyRing::parse_livekit_keys("devkey: secret").unwrap());
        assert_eq!(ring.secret_for("devkey"), Some("secret"));
        assert_eq!(ring.secret_for("other"), None);
        assert!(!ring.is_empty());
        assert_eq!(ring.len(), 1);
        assert!(KeyRing::default().is_empty());
    }

    #[test]
    fn debug_shows_keys_but_not_secrets() {
        let ring = KeyRing::new(pairs(&[("kb", "s3cr3t-b"), ("ka", "s3cr3t-a")]));
        let dbg = format!("{ring:?}");
        assert!(dbg.contains("ka") && dbg.contains("kb"), "{dbg}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
    }
}
