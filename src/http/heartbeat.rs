//! `POST /api/heartbeat`: the meeting page's "still here", authenticated by
//! the LiveKit access token it joined with (rule 12: heartbeats only end
//! time, never create it).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
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

/// CORS: the meeting page that heartbeats is the main app's, another
/// origin, and `Authorization` makes its POST non-simple, so the browser
/// first asks with a preflight `OPTIONS` and then only lets the page read
/// answers that allow its origin. Any origin is allowed: the bearer token
/// is the credential, not anything the browser attaches by itself (no
/// cookies; `Access-Control-Allow-Credentials` is never sent), so a page
/// gains nothing by calling from elsewhere that it could not do with curl.
/// `ROLLCALL_ALLOWED_ORIGINS` is about WebSockets, which carry no token.
pub async fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, "POST"),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "authorization, content-type",
            ),
            // Chromium caps this at 2 h; without it every beat costs two
            // requests.
            (header::ACCESS_CONTROL_MAX_AGE, "7200"),
        ],
    )
        .into_response()
}

/// Every answer of the heartbeat route, refusals included, is readable by
/// the page: it must see a 401 to stop, and `Retry-After` to wait.
pub async fn allow_any_origin(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("retry-after"),
    );
    response
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
