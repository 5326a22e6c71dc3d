//! Viewer links: how a page that holds no app secret reads one session.
//!
//! The main app, which has the app secret, signs a short-lived JWT
//! (HS256 with the app secret):
//!
//! ```json
//! {"aud": "rollcall-viewer", "room": "<LiveKit room name>" | "*", "exp": <unix seconds>}
//! ```
//!
//! and gives the teacher `https://rollcall.example/?room=<room>&viewer=<jwt>`.
//! The dashboard sends it as `Authorization: Bearer <jwt>` to the read-only
//! API (a room's attendance, its CSV and its schedule; the session list
//! for `"*"`) and to `POST /api/channel-auth` to subscribe to the room's
//! private channel. It never grants writing (schedules, recalculation,
//! reconciliation, the event log stay app-secret only).
//!
//! Invariants: the audience must be `rollcall-viewer`, so no other JWT
//! signed with the same secret is ever read as a viewer link; `exp` is
//! required and at most [`MAX_TTL_SECS`] ahead, so a leaked link stops
//! working by itself. Pure: the caller passes the clock.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub const AUDIENCE: &str = "rollcall-viewer";

/// The longest a viewer link may be valid for: a week covers a wall
/// display for a school week; anything longer is refused, not clipped.
pub const MAX_TTL_SECS: i64 = 7 * 24 * 3600;

/// Tolerated clock difference between the main app and rollcall.
const LEEWAY_SECS: i64 = 30;

/// Which rooms a viewer link opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One room, by its LiveKit name.
    Room(String),
    /// Every room, and the session list (`"room": "*"`): for admins.
    All,
}

impl Scope {
    pub fn allows_room(&self, room: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Room(r) => r == room,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    aud: String,
    room: String,
    exp: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ViewerError {
    #[error("not a viewer link signed with this app secret")]
    Invalid,
    #[error("the viewer link has expired; ask for a new one")]
    Expired,
    #[error("the viewer link is valid for longer than 7 days; sign a shorter one")]
    TooLong,
}

/// Mints a viewer link token valid for `ttl_secs` from `now_secs`.
pub fn sign(secret: &str, scope: &Scope, now_secs: i64, ttl_secs: i64) -> String {
    let room = match scope {
        Scope::All => "*".to_string(),
        Scope::Room(r) => r.clone(),
    };
    let claims = Claims {
        aud: AUDIENCE.to_string(),
        room,
        exp: now_secs + ttl_secs,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

/// Checks a viewer token's signature, audience and lifetime at `now_secs`.
pub fn verify(secret: &str, token: &str, now_secs: i64) -> Result<Scope, ViewerError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "aud"]);
    // Time is checked below against the caller's clock.
    validation.validate_exp = false;
    let claims = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|_| ViewerError::Invalid)?
    .claims;
    if claims.exp + LEEWAY_SECS <= now_secs {
        return Err(ViewerError::Expired);
    }
    if claims.exp - now_secs > MAX_TTL_SECS + LEEWAY_SECS {
        return Err(ViewerError::TooLong);
    }
    match claims.room.as_str() {
        "" => Err(ViewerError::Invalid),
        "*" => Ok(Scope::All),
        room => Ok(Scope::Room(room.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "app-secret";
    const NOW: i64 = 1_800_000_000;

    fn room(r: &str) -> Scope {
        Scope::Room(r.to_string())
    }

    #[test]
    fn a_signed_link_opens_its_room_and_only_it() {
        let token = sign(SECRET, &room("quran-session-121"), NOW, 3600);
        let scope = verify(SECRET, &token, NOW + 10).unwrap();
        assert_eq!(scope, room("quran-session-121"));
        assert!(scope.allows_room("quran-session-121"));
        assert!(!scope.allows_room("academic-session-121"));
        let all = verify(SECRET, &sign(SECRET, &Scope::All, NOW, 60), NOW).unwrap();
        assert!(all.allows_room("anything"));
    }

    #[test]
    fn another_secret_or_a_tampered_token_is_invalid() {
        let token = sign("other", &room("r"), NOW, 3600);
        assert_eq!(verify(SECRET, &token, NOW), Err(ViewerError::Invalid));
        let mut token = sign(SECRET, &room("r"), NOW, 3600);
        token.push('x');
        assert_eq!(verify(SECRET, &token, NOW), Err(ViewerError::Invalid));
        assert_eq!(verify(SECRET, "", NOW), Err(ViewerError::Invalid));
        assert_eq!(verify(SECRET, SECRET, NOW), Err(ViewerError::Invalid));
    }

    #[test]
    fn a_token_for_another_audience_is_not_a_viewer_link() {
        #[derive(Serialize)]
        struct Other<'a> {
            aud: &'a str,
            room: &'a str,
            exp: i64,
        }
        for aud in ["livekit", ""] {
            let token = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &Other {
                    aud,
                    room: "r",
                    exp: NOW + 60,
                },
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap();
            assert_eq!(verify(SECRET, &token, NOW), Err(ViewerError::Invalid));
        }
    }

    #[test]
    fn expiry_and_lifetime_are_enforced_with_a_little_leeway() {
        let token = sign(SECRET, &room("r"), NOW, 60);
        assert!(verify(SECRET, &token, NOW + 60 + LEEWAY_SECS - 1).is_ok());
        assert_eq!(
            verify(SECRET, &token, NOW + 60 + LEEWAY_SECS),
            Err(ViewerError::Expired)
        );
        let week = sign(SECRET, &room("r"), NOW, MAX_TTL_SECS);
        assert!(verify(SECRET, &week, NOW).is_ok());
        let longer = sign(SECRET, &room("r"), NOW, MAX_TTL_SECS + 3600);
        assert_eq!(verify(SECRET, &longer, NOW), Err(ViewerError::TooLong));
    }

    #[test]
    fn an_empty_room_claim_is_invalid() {
        let token = sign(SECRET, &room(""), NOW, 60);
        assert_eq!(verify(SECRET, &token, NOW), Err(ViewerError::Invalid));
    }
}
