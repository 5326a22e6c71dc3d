//! Verification (and, for tools and tests, minting) of LiveKit JWTs: webhook
//! `Authorization` tokens and participant access tokens.
//!
//! Mirrors LiveKit's Go verifier: the secret is chosen by the unverified
//! `iss`, only HS256 is accepted, `exp` is required, `exp`/`nbf`/`iat` get
//! 60 s of leeway, and a webhook's `sha256` claim must equal the hash of the
//! exact raw body. Time is a parameter so callers and tests control it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::keys::KeyRing;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, as in LiveKit.
pub const LEEWAY_SECS: i64 = 60;

/// What a verified webhook token asserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookClaims {
    /// The LiveKit API key that signed it (`iss`).
    pub api_key: String,
    /// The body hash claim (already checked against the body).
    pub sha256: String,
    /// `exp`, unix seconds.
    pub expires_at: i64,
    /// `nbf`, unix seconds, if present.
    pub not_before: Option<i64>,
    /// `iat`, unix seconds, if present (LiveKit's Python SDK omits it).
    pub issued_at: Option<i64>,
}

/// What a verified participant access token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    /// Participant identity (`sub`), never empty.
    pub identity: String,
    /// Display name (`name`), if non-empty.
    pub name: Option<String>,
    /// `video.room`, if non-empty.
    pub room: Option<String>,
    /// `video.roomJoin`; false when absent.
    pub room_join: bool,
}

/// Why a token was refused. The server answers every variant with 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No `Authorization` header, or an empty one.
    #[error("missing authorization token")]
    MissingAuthorization,
    /// Not a decodable JWT, an algorithm other than HS256, or a required or
    /// typed claim that is absent or of the wrong type.
    #[error("malformed token: {reason}")]
    MalformedToken {
        /// Fixed description; never contains token content.
        reason: &'static str,
    },
    /// `iss` is absent or not a configured API key.
    #[error("token issuer is not a configured LiveKit API key")]
    UnknownKey,
    /// HS256 signature does not match the key's secret.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` is more than the leeway in the past.
    #[error("token has expired")]
    Expired,
    /// `nbf` or `iat` is more than the leeway in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// A webhook token without a (non-empty) `sha256` claim.
    #[error("webhook token carries no body hash")]
    MissingBodyHash,
    /// The body is not the one the token was signed for.
    #[error("webhook body does not match the signed hash")]
    BodyHashMismatch,
    /// An access token without a (non-empty) `sub`.
    #[error("access token has no participant identity")]
    MissingIdentity,
}

impl VerifyError {
    /// Stable machine-readable code (snake_case) for responses and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingAuthorization => "missing_authorization",
            Self::MalformedToken { .. } => "malformed_token",
            Self::UnknownKey => "unknown_api_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired_token",
            Self::NotYetValid => "token_not_yet_valid",
            Self::MissingBodyHash => "missing_body_hash",
            Self::BodyHashMismatch => "body_hash_mismatch",
            Self::MissingIdentity => "missing_identity",
        }
    }
}

/// Standard, padded base64 of SHA-256 over `body` — LiveKit's `sha256` claim.
pub fn body_sha256_b64(body: &[u8]) -> String {
    STANDARD.encode(Sha256::digest(body))
}

/// Verifies a webhook's `Authorization` header against the raw body bytes.
///
/// `body` must be exactly the bytes received: LiveKit's JSON encoder inserts
/// random spaces, so any re-serialization breaks the hash.
pub fn verify_webhook(
    keys: &KeyRing,
    authorization: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<WebhookClaims, VerifyError> {
    let token = authorization.ok_or(VerifyError::MissingAuthorization)?;
    let (api_key, claims, times) = verify_token(keys, token, now_unix)?;
    let claimed = claims
        .sha256
        .filter(|s| !s.is_empty())
        .ok_or(VerifyError::MissingBodyHash)?;
    // Compare the encoded forms, like LiveKit; constant time so the hash of a
    // forged body cannot be probed byte by byte.
    let actual = body_sha256_b64(body);
    if !bool::from(claimed.as_bytes().ct_eq(actual.as_bytes())) {
        return Err(VerifyError::BodyHashMismatch);
    }
    Ok(WebhookClaims {
        api_key,
        sha256: claimed,
        expires_at: times.exp,
        not_before: times.nbf,
        issued_at: times.iat,
    })
}

/// Verifies a LiveKit participant access token (the meeting page's join
/// token). A `Bearer ` prefix is tolerated. Whether `room_join`/`room` allow
/// what the caller wants is the caller's decision.
pub fn verify_access_token(
    keys: &KeyRing,
    token: &str,
    now_unix: i64,
) -> Result<AccessClaims, VerifyError> {
    let (_, claims, _) = verify_token(keys, token, now_unix)?;
    let identity = claims
        .sub
        .filter(|s| !s.is_empty())
        .ok_or(VerifyError::MissingIdentity)?;
    let video = claims.video.unwrap_or_default();
    Ok(AccessClaims {
        identity,
        name: claims.name.filter(|s| !s.is_empty()),
        room: video.room.filter(|s| !s.is_empty()),
        room_join: video.room_join.unwrap_or(false),
    })
}

/// Mints a webhook token the way LiveKit does (`iss`, `nbf` = `iat` = now,
/// `exp` = now + ttl, `sha256` of `body`). For the simulator and tests.
pub fn sign_webhook(key: &str, secret: &str, body: &[u8], now_unix: i64, ttl_secs: i64) -> String {
    let claims = SignClaims {
        iss: key,
        sub: None,
        nbf: now_unix,
        iat: now_unix,
        exp: now_unix.saturating_add(ttl_secs),
        sha256: Some(body_sha256_b64(body)),
        video: None,
    };
    sign(secret, &claims)
}

/// Mints a participant access token: `sub` = identity, `video.roomJoin` =
/// true, `video.room` = room. For tests and tools.
pub fn sign_access_token(
    key: &str,
    secret: &str,
    identity: &str,
    room: &str,
    now_unix: i64,
    ttl_secs: i64,
) -> String {
    let claims = SignClaims {
        iss: key,
        sub: Some(identity),
        nbf: now_unix,
        iat: now_unix,
        exp: now_unix.saturating_add(ttl_secs),
        sha256: None,
        video: Some(SignVideo {
            room_join: true,
            room,
        }),
    };
    sign(secret, &claims)
}

#[derive(Serialize)]
struct SignClaims<'a> {
    iss: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    nbf: i64,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    video: Option<SignVideo<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SignVideo<'a> {
    room_join: bool,
    room: &'a str,
}

fn sign(secret: &str, claims: &SignClaims<'_>) -> String {
    // HS256 over a serializable struct cannot fail: any HMAC key length is valid.
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing of plain claims is infallible")
}

/// The only claim read before the signature is checked.
#[derive(Deserialize)]
struct UnverifiedClaims {
    #[serde(default)]
    iss: Option<String>,
}

/// Claims read after the signature is checked; unknown claims are ignored.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    video: Option<VideoGrant>,
    // RFC 7519 NumericDate may be fractional, hence Number rather than i64.
    #[serde(default)]
    exp: Option<serde_json::Number>,
    #[serde(default)]
    nbf: Option<serde_json::Number>,
    #[serde(default)]
    iat: Option<serde_json::Number>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct VideoGrant {
    #[serde(default)]
    room_join: Option<bool>,
    #[serde(default)]
    room: Option<String>,
}

struct Times {
    exp: i64,
    nbf: Option<i64>,
    iat: Option<i64>,
}

/// Shared path of both verifiers: key selection by `iss`, HS256 signature,
/// time checks. Returns the API key, the claims and the checked times.
fn verify_token(
    keys: &KeyRing,
    token: &str,
    now_unix: i64,
) -> Result<(String, Claims, Times), VerifyError> {
    let token = strip_bearer(token.trim_start()).trim_end();
    if token.is_empty() {
        return Err(VerifyError::MissingAuthorization);
    }
    let malformed = |reason| VerifyError::MalformedToken { reason };

    // An `alg` jsonwebtoken does not know (e.g. "none") fails here too.
    let header = jsonwebtoken::decode_header(token).map_err(|_| malformed("undecodable JWT"))?;
    if header.alg != Algorithm::HS256 {
        return Err(malformed("algorithm is not HS256"));
    }

    let unverified = jsonwebtoken::dangerous::insecure_decode::<UnverifiedClaims>(token)
        .map_err(|_| malformed("undecodable JWT claims"))?;
    let api_key = unverified
        .claims
        .iss
        .filter(|k| !k.is_empty())
        .ok_or(VerifyError::UnknownKey)?;
    let secret = keys.secret_for(&api_key).ok_or(VerifyError::UnknownKey)?;

    // jsonwebtoken checks the signature only; time rules are ours (below) so
    // they follow `now_unix` and LiveKit's semantics.
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => VerifyError::BadSignature,
        ErrorKind::InvalidAlgorithm => malformed("algorithm is not HS256"),
        _ => malformed("claims have an unexpected shape"),
    })?
    .claims;

    let times = Times {
        exp: numeric_date(claims.exp.as_ref())?.ok_or(malformed("no exp claim"))?,
        nbf: numeric_date(claims.nbf.as_ref())?,
        iat: numeric_date(claims.iat.as_ref())?,
    };
    check_times(&times, now_unix)?;
    Ok((api_key, claims, times))
}

/// Same rules as go-jose's `Claims.ValidateWithLeeway`, which LiveKit uses.
fn check_times(t: &Times, now: i64) -> Result<(), VerifyError> {
    if now.saturating_sub(LEEWAY_SECS) > t.exp {
        return Err(VerifyError::Expired);
    }
    let future = |ts: Option<i64>| ts.is_some_and(|ts| now.saturating_add(LEEWAY_SECS) < ts);
    if future(t.nbf) || future(t.iat) {
        return Err(VerifyError::NotYetValid);
    }
    Ok(())
}

/// NumericDate → whole seconds; fractions are truncated toward the past.
fn numeric_date(n: Option<&serde_json::Number>) -> Result<Option<i64>, VerifyError> {
    let Some(n) = n else { return Ok(None) };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(Some(f.floor() as i64)),
        _ => Err(VerifyError::MalformedToken {
            reason: "time claim out of range",
        }),
    }
}

/// LiveKit sends a bare JWT; an RFC 6750 `Bearer` scheme (any case) is
/// tolerated.
fn strip_bearer(s: &str) -> &str {
    match s.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => s[7..].trim_start(),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const ROOM_STARTED: &[u8] = include_bytes!("../../tests/fixtures/livekit/room_started.json");
    const JOINED: &[u8] = include_bytes!("../../tests/fixtures/livekit/participant_joined.json");
    const LEFT: &[u8] = include_bytes!("../../tests/fixtures/livekit/participant_left.json");
    const FINISHED: &[u8] = include_bytes!("../../tests/fixtures/livekit/room_finished.json");
    const SDK_TOKENS: &str = include_str!("../../tests/fixtures/livekit/sdk_tokens.json");

    const NOW: i64 = 1_763_719_202;

    fn ring() -> KeyRing {
        KeyRing::new([("devkey".to_string(), "secret".to_string())])
    }

    fn two_key_ring() -> KeyRing {
        KeyRing::new(KeyRing::parse_livekit_keys("devkey: secret, otherkey: othersecret").unwrap())
    }

    /// Signs arbitrary claims, for shapes `sign_webhook` cannot produce.
    fn mint(alg: Algorithm, secret: &str, claims: Value) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn webhook_claims(body: &[u8]) -> Value {
        json!({"iss": "devkey", "nbf": NOW, "iat": NOW, "exp": NOW + 300,
               "sha256": body_sha256_b64(body)})
    }

    fn b64url(v: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    struct Sdk(Value);

    impl Sdk {
        fn load() -> Self {
            Sdk(serde_json::from_str(SDK_TOKENS).unwrap())
        }
        fn token(&self, name: &str) -> &str {
            self.0[name]["token"].as_str().unwrap()
        }
        fn time(&self, name: &str, claim: &str) -> i64 {
            self.0[name][claim].as_i64().unwrap()
        }
    }

    #[test]
    fn protocols_test_vector() {
        assert_eq!(
            body_sha256_b64(ROOM_STARTED),
            "CoEQz1chqJ9bnZRcORddjplkvpjmPujmLTR42DbefYI="
        );
    }

    #[test]
    fn sdk_webhook_tokens_verify() {
        let sdk = Sdk::load();
        for (name, body) in [
            ("webhook_participant_joined", JOINED),
            ("webhook_participant_left", LEFT),
        ] {
            let now = sdk.time(name, "nbf");
            let c = verify_webhook(&ring(), Some(sdk.token(name)), body, now)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(c.api_key, "devkey");
            assert_eq!(c.sha256, body_sha256_b64(body));
            assert_eq!(c.expires_at, sdk.time(name, "exp"));
            assert_eq!(c.issued_at, None, "the Python SDK sets no iat");
        }
    }

    #[test]
    fn sdk_webhook_token_rejects_the_other_body() {
        let sdk = Sdk::load();
        let now = sdk.time("webhook_participant_joined", "nbf");
        let token = sdk.token("webhook_participant_joined");
        assert_eq!(
            verify_webhook(&ring(), Some(token), LEFT, now),
            Err(VerifyError::BodyHashMismatch)
        );
    }

    #[test]
    fn sdk_short_lived_token_expires_after_leeway() {
        let sdk = Sdk::load();
        let name = "webhook_expired";
        let (token, exp) = (sdk.token(name), sdk.time(name, "exp"));
        assert_eq!(exp - sdk.time(name, "nbf"), 300, "LiveKit's 5 min TTL");
        for now in [sdk.time(name, "nbf"), exp, exp + LEEWAY_SECS] {
            assert!(verify_webhook(&ring(), Some(token), JOINED, now).is_ok());
        }
        assert_eq!(
            verify_webhook(&ring(), Some(token), JOINED, exp + LEEWAY_SECS + 1),
            Err(VerifyError::Expired)
        );
        // Minted long before now: expired against the real clock too.
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        if wall > exp + LEEWAY_SECS {
            assert_eq!(
                verify_webhook(&ring(), Some(token), JOINED, wall),
                Err(VerifyError::Expired)
            );
        }
    }

    #[test]
    fn sdk_token_with_wrong_secret_is_bad_signature() {
        let sdk = Sdk::load();
        let name = "webhook_wrong_secret";
        assert_eq!(
            verify_webhook(
                &ring(),
                Some(sdk.token(name)),
                JOINED,
                sdk.time(name, "nbf")
            ),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn sdk_token_for_second_key_needs_that_key() {
        let sdk = Sdk::load();
        let name = "webhook_otherkey";
        let (token, now) = (sdk.token(name), sdk.time(name, "nbf"));
        let c = verify_webhook(&two_key_ring(), Some(token), FINISHED, now).unwrap();
        assert_eq!(c.api_key, "otherkey");
        assert_eq!(
            verify_webhook(&ring(), Some(token), FINISHED, now),
            Err(VerifyError::UnknownKey)
        );
    }

    #[test]
    fn sdk_access_tokens() {
        let sdk = Sdk::load();
        let now = sdk.time("access_room_join", "nbf");
        let c = verify_access_token(&ring(), sdk.token("access_room_join"), now).unwrap();
        assert_eq!(
            c,
            AccessClaims {
                identity: "1_Ameer_Maher".into(),
                name: Some("Ameer Maher".into()),
                room: Some("itqan-academy-quran-session-121".into()),
                room_join: true,
            }
        );
        let c = verify_access_token(&ring(), sdk.token("access_no_room_join"), now).unwrap();
        assert!(!c.room_join);
        assert_eq!(c.room.as_deref(), Some("itqan-academy-quran-session-121"));
    }

    #[test]
    fn sdk_tokens_are_not_interchangeable() {
        let sdk = Sdk::load();
        let now = sdk.time("access_room_join", "nbf");
        // An access token has no body hash; a webhook token has `sub: ""`.
        assert_eq!(
            verify_webhook(&ring(), Some(sdk.token("access_room_join")), JOINED, now),
            Err(VerifyError::MissingBodyHash)
        );
        assert_eq!(
            verify_access_token(&ring(), sdk.token("webhook_participant_joined"), now),
            Err(VerifyError::MissingIdentity)
        );
    }

    #[test]
    fn own_webhook_token_round_trip_and_claim_names() {
        let token = sign_webhook("devkey", "secret", JOINED, NOW, 300);
        let c = verify_webhook(&ring(), Some(&token), JOINED, NOW).unwrap();
        assert_eq!(
            c,
            WebhookClaims {
                api_key: "devkey".into(),
                sha256: body_sha256_b64(JOINED),
                expires_at: NOW + 300,
                not_before: Some(NOW),
                issued_at: Some(NOW),
            }
        );
        let raw: Value = jsonwebtoken::dangerous::insecure_decode(&token)
            .unwrap()
            .claims;
        assert_eq!(raw, webhook_claims(JOINED));
    }

    #[test]
    fn own_access_token_round_trip() {
        let token = sign_access_token("devkey", "secret", "u1", "room-a", NOW, 60);
        let c = verify_access_token(&ring(), &token, NOW).unwrap();
        assert_eq!(c.identity, "u1");
        assert_eq!(c.room.as_deref(), Some("room-a"));
        assert!(c.room_join);
        assert_eq!(c.name, None);
    }

    #[test]
    fn missing_authorization() {
        for auth in [None, Some(""), Some("   "), Some("Bearer "), Some("Bearer")] {
            let got = verify_webhook(&ring(), auth, JOINED, NOW);
            // "Bearer" without a space is just a garbage token.
            if auth == Some("Bearer") {
                assert!(matches!(got, Err(VerifyError::MalformedToken { .. })));
            } else {
                assert_eq!(got, Err(VerifyError::MissingAuthorization), "{auth:?}");
            }
        }
        assert_eq!(
            verify_access_token(&ring(), "", NOW),
            Err(VerifyError::MissingAuthorization)
        );
    }

    #[test]
    fn bearer_prefix_is_accepted() {
        let token = sign_webhook("devkey", "secret", JOINED, NOW, 300);
        for auth in [
            format!("Bearer {token}"),
            format!("bearer {token}"),
            format!(" {token} "),
        ] {
            assert!(
                verify_webhook(&ring(), Some(&auth), JOINED, NOW).is_ok(),
                "{auth}"
            );
        }
    }

    #[test]
    fn garbage_tokens_are_malformed() {
        for auth in [
            "not-a-jwt",
            "a.b.c",
            "a.b",
            "....",
            "eyJhbGciOiJIUzI1NiJ9.!!!.x",
        ] {
            let got = verify_webhook(&ring(), Some(auth), JOINED, NOW);
            assert!(
                matches!(got, Err(VerifyError::MalformedToken { .. })),
                "{auth}: {got:?}"
            );
        }
    }

    #[test]
    fn alg_none_is_rejected() {
        let header = b64url(&json!({"alg": "none", "typ": "JWT"}));
        let claims = b64url(&webhook_claims(JOINED));
        for sig in ["", "AAAA"] {
            let token = format!("{header}.{claims}.{sig}");
            let got = verify_webhook(&ring(), Some(&token), JOINED, NOW);
            assert!(
                matches!(got, Err(VerifyError::MalformedToken { .. })),
                "{got:?}"
            );
        }
    }

    #[test]
    fn other_algorithms_are_rejected_even_with_the_right_secret() {
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let token = mint(alg, "secret", webhook_claims(JOINED));
            let got = verify_webhook(&ring(), Some(&token), JOINED, NOW);
            assert_eq!(
                got,
                Err(VerifyError::MalformedToken {
                    reason: "algorithm is not HS256"
                }),
                "{alg:?}"
            );
        }
        // Algorithm confusion: an RS256 label over an HMAC signature.
        let header = b64url(&json!({"alg": "RS256", "typ": "JWT"}));
        let hs = mint(Algorithm::HS256, "secret", webhook_claims(JOINED));
        let rest = hs.split_once('.').unwrap().1;
        let got = verify_webhook(&ring(), Some(&format!("{header}.{rest}")), JOINED, NOW);
        assert!(matches!(got, Err(VerifyError::MalformedToken { .. })));
    }

    #[test]
    fn unknown_or_missing_issuer() {
        let token = sign_webhook("stranger", "secret", JOINED, NOW, 300);
        assert_eq!(
            verify_webhook(&ring(), Some(&token), JOINED, NOW),
            Err(VerifyError::UnknownKey)
        );
        let mut claims = webhook_claims(JOINED);
        claims.as_object_mut().unwrap().remove("iss");
        let token = mint(Algorithm::HS256, "secret", claims);
        assert_eq!(
            verify_webhook(&ring(), Some(&token), JOINED, NOW),
            Err(VerifyError::UnknownKey)
        );
        assert_eq!(
            verify_webhook(&KeyRing::default(), Some(&token), JOINED, NOW),
            Err(VerifyError::UnknownKey)
        );
    }

    #[test]
    fn wrong_secret_and_tampered_payload_are_bad_signature() {
        let token = sign_webhook("devkey", "not-secret", JOINED, NOW, 300);
        assert_eq!(
            verify_webhook(&ring(), Some(&token), JOINED, NOW),
            Err(VerifyError::BadSignature)
        );
        // Valid signature, but over another payload: swap in forged claims
        // that would match a forged body.
        let good = sign_webhook("devkey", "secret", JOINED, NOW, 300);
        let (header, rest) = good.split_once('.').unwrap();
        let sig = rest.split_once('.').unwrap().1;
        let forged = format!("{header}.{}.{sig}", b64url(&webhook_claims(b"forged")));
        assert_eq!(
            verify_webhook(&ring(), Some(&forged), b"forged", NOW),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn expiry_uses_sixty_second_leeway() {
        let token = sign_webhook("devkey", "secret", JOINED, NOW, 300);
        let exp = NOW + 300;
        assert!(verify_webhook(&ring(), Some(&token), JOINED, exp + 60).is_ok());
        assert_eq!(
            verify_webhook(&ring(), Some(&token), JOINED, exp + 61),
            Err(VerifyError::Expired)
        );
        let access = sign_access_token("devkey", "secret", "u", "r", NOW, 10);
        assert_eq!(
            verify_access_token(&ring(), &access, NOW + 71),
            Err(VerifyError::Expired)
        );
    }

    #[test]
    fn not_before_and_issued_at_use_sixty_second_leeway() {
        let token = sign_webhook("devkey", "secret", JOINED, NOW, 300);
        assert!(verify_webhook(&ring(), Some(&token), JOINED, NOW - 60).is_ok());
        assert_eq!(
            verify_webhook(&ring(), Some(&token), JOINED, NOW - 61),
            Err(VerifyError::NotYetValid)
        );
        // iat alone in the future (no nbf) is refused as well, like go-jose.
        let mut claims = webhook_claims(JOINED);
        claims.as_object_mut().unwrap().remove("nbf");
        claims["iat"] = json!(NOW + 61);
        let token = mint(Algorithm::HS256, "secret", claims);
        assert_eq!(
            verify_webhook(&ring(), Some(&token), JOINED, NOW),
            Err(VerifyError::NotYetValid)
        );
    }

    #[test]
    fn exp_is_required_and_must_be_numeric() {
        let mut claims = webhook_claims(JOINED);
        claims.as_object_mut().unwrap().remove("exp");
        let token = mint(Algorithm::HS256, "secret", claims.clone());
        assert_eq!(
            verify_webhook(&ring(), Some(&token), JOINED, NOW),
            Err(VerifyError::MalformedToken {
                reason: "no exp claim"
            })
        );
        claims["exp"] = json!("4102444800");
        let token = mint(Algorithm::HS256, "secret", claims.clone());
        assert!(matches!(
            verify_webhook(&ring(), Some(&token), JOINED, NOW),
            Err(VerifyError::MalformedToken { .. })
        ));
        // Fractional NumericDate (RFC 7519) is fine.
        claims["exp"] = json!(NOW as f64 + 0.5);
        let token = mint(Algorithm::HS256, "secret", claims);
        let c = verify_webhook(&ring(), Some(&token), JOINED, NOW).unwrap();
        assert_eq!(c.expires_at, NOW);
    }

    #[test]
    fn missing_or_empty_sha256_claim() {
        let mut claims = webhook_claims(JOINED);
        claims["sha256"] = json!("");
        let token = mint(Algorithm::HS256, "secret", claims.clone());
        assert_eq!(
            verify_webhook(&ring(), Some(&token), JOINED, NOW),
            Err(VerifyError::MissingBodyHash)
        );
        claims.as_object_mut().unwrap().remove("sha256");
        let token = mint(Algorithm::HS256, "secret", claims);
        assert_eq!(
            verify_webhook(&ring(), Some(&token), JOINED, NOW),
            Err(VerifyError::MissingBodyHash)
        );
    }

    #[test]
    fn body_changed_by_one_byte_is_a_mismatch() {
        let token = sign_webhook("devkey", "secret", JOINED, NOW, 300);
        let mut body = JOINED.to_vec();
        let i = body.iter().position(|&b| b == b'A').unwrap(); // in "Ameer"
        body[i] = b'B';
        assert_eq!(
            verify_webhook(&ring(), Some(&token), &body, NOW),
            Err(VerifyError::BodyHashMismatch)
        );
        let mut longer = JOINED.to_vec();
        longer.push(b'\n');
        assert_eq!(
            verify_webhook(&ring(), Some(&token), &longer, NOW),
            Err(VerifyError::BodyHashMismatch)
        );
    }

    #[test]
    fn reserialized_body_is_a_mismatch() {
        let sdk = Sdk::load();
        let name = "webhook_participant_joined";
        let parsed: Value = serde_json::from_slice(JOINED).unwrap();
        let compact = serde_json::to_vec(&parsed).unwrap();
        assert_ne!(compact, JOINED, "serde_json drops LiveKit's spaces");
        assert_eq!(serde_json::from_slice::<Value>(&compact).unwrap(), parsed);
        assert_eq!(
            verify_webhook(
                &ring(),
                Some(sdk.token(name)),
                &compact,
                sdk.time(name, "nbf")
            ),
            Err(VerifyError::BodyHashMismatch)
        );
    }

    #[test]
    fn unknown_claims_and_empty_sub_are_accepted_on_webhooks() {
        let mut claims = webhook_claims(JOINED);
        claims["sub"] = json!("");
        claims["video"] = json!({"roomJoin": true, "futureGrant": 1});
        claims["somethingNew"] = json!([1, 2, 3]);
        let token = mint(Algorithm::HS256, "secret", claims);
        assert!(verify_webhook(&ring(), Some(&token), JOINED, NOW).is_ok());
    }

    #[test]
    fn key_rotation_with_two_keys() {
        let keys = two_key_ring();
        for (key, secret) in [("devkey", "secret"), ("otherkey", "othersecret")] {
            let token = sign_webhook(key, secret, JOINED, NOW, 300);
            let c = verify_webhook(&keys, Some(&token), JOINED, NOW).unwrap();
            assert_eq!(c.api_key, key);
            let access = sign_access_token(key, secret, "u", "r", NOW, 300);
            assert!(verify_access_token(&keys, &access, NOW).is_ok());
        }
        // The secret must belong to the key named in `iss`.
        let crossed = sign_webhook("devkey", "othersecret", JOINED, NOW, 300);
        assert_eq!(
            verify_webhook(&keys, Some(&crossed), JOINED, NOW),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn access_token_identity_and_video_shapes() {
        let base = json!({"iss": "devkey", "exp": NOW + 60});
        let mut no_sub = base.clone();
        no_sub["video"] = json!({"roomJoin": true, "room": "r"});
        let token = mint(Algorithm::HS256, "secret", no_sub);
        assert_eq!(
            verify_access_token(&ring(), &token, NOW),
            Err(VerifyError::MissingIdentity)
        );
        let mut no_video = base;
        no_video["sub"] = json!("u");
        no_video["name"] = json!("");
        let token = mint(Algorithm::HS256, "secret", no_video);
        assert_eq!(
            verify_access_token(&ring(), &token, NOW),
            Ok(AccessClaims {
                identity: "u".into(),
                name: None,
                room: None,
                room_join: false,
            })
        );
        let bearer = format!(
            "Bearer {}",
            sign_access_token("devkey", "secret", "u", "r", NOW, 60)
        );
        assert!(verify_access_token(&ring(), &bearer, NOW).is_ok());
    }

    #[test]
    fn error_codes_are_stable_and_distinct() {
        let all = [
            VerifyError::MissingAuthorization,
            VerifyError::MalformedToken { reason: "x" },
            VerifyError::UnknownKey,
            VerifyError::BadSignature,
            VerifyError::Expired,
            VerifyError::NotYetValid,
            VerifyError::MissingBodyHash,
            VerifyError::BodyHashMismatch,
            VerifyError::MissingIdentity,
        ];
        let codes: std::collections::HashSet<_> = all.iter().map(VerifyError::code).collect();
        assert_eq!(codes.len(), all.len());
        for c in &codes {
            assert!(
                c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{c}"
            );
        }
        assert_eq!(VerifyError::Expired.code(), "expired_token");
        assert_eq!(VerifyError::BodyHashMismatch.code(), "body_hash_mismatch");
    }
}
