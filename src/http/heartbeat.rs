//! `POST /api/heartbeat`: the meeting page's "still here", authenticated by
//! the LiveKit access token it joined with (rule 12: heartbeats only end
//! time, never create it).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use serde_json::{Value, json};

use super::AppState;
use super::api::store_error;
use super::error::AppError;
use crate::domain::Identity;
use crate::livekit::{AccessClaims, verify_access_token};

/// Heartbeats stay outside the failed-credentials gate on purpose: their
/// credential is a token signed with the LiveKit secret, which cannot be
/// guessed, and a whole school behind one NAT must not lose every
/// student's heartbeats — and so, after `ROLLCALL_HEARTBEAT_TIMEOUT`, their
/// open cycles — because one client there sends forged tokens. A forged
/// token costs one HMAC and gets 401; valid ones are limited per person.
pub async fn heartbeat(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    let now = crate::domain::now_millis();
    let claims = verify(&app, &headers, now)?;
    let room = match (claims.room_join, claims.room.as_deref()) {
        (true, Some(room)) if !room.is_empty() => room.to_string(),
        _ => {
            return Err(AppError::new(
                axum::http::StatusCode::FORBIDDEN,
                "no_room_join",
                "the token does not grant joining a room",
            ));
        }
    };
    app.limits
        .heartbeat(&(room.clone(), claims.identity.clone()))?;
    let session = app.rooms.session(&room).ok_or_else(|| {
        AppError::not_found(format!("{room} does not match ROLLCALL_ROOM_PATTERN"))
    })?;
    let Some(user) = app.rooms.naming.user_id(&Identity::new(claims.identity)) else {
        // Not a person we track (guest, bot): never in the meeting for us.
        return Ok(Json(json!({"in_meeting": false})));
    };
    let in_meeting = match app
        .rooms
        .load_for(&session.room, &user)
        .await
        .map_err(|e| store_error(e.into()))?
    {
        Some(state) => state.is_in_meeting(&user),
        None => false,
    };
    let counter = if in_meeting {
        &app.metrics.heartbeats_recorded
    } else {
        &app.metrics.heartbeats_ignored
    };
    crate::metrics::Metrics::add(counter, 1);
    if in_meeting {
        let store = &app.rooms.store;
        store
            .record_heartbeat(&session.room, &user, now)
            .await
            .map_err(|e| store_error(e.into()))?;
        // The first heartbeat gives the room a deadline the sweeper must see.
        let due = now + app.rooms.timing.heartbeat_timeout_ms() + 1;
        store
            .due_no_later_than(&session.room, due)
            .await
            .map_err(|e| store_error(e.into()))?;
    }
    Ok(Json(json!({"in_meeting": in_meeting})))
}

/// The token's claims, or the 401.
fn verify(app: &AppState, headers: &HeaderMap, now: i64) -> Result<AccessClaims, AppError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| {
            AppError::unauthorized(
                "missing_authorization",
                "Authorization: Bearer <LiveKit access token> is required",
            )
        })?;
    verify_access_token(&app.keys, token, now / 1000)
        .map_err(|e| AppError::unauthorized(e.code(), e.to_string()))
}
