//! The main app's API: `/api/sessions/{room}/…`, authenticated with
//! `Authorization: Bearer <app secret>`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::AppState;
use super::client_ip::ClientIp;
use super::error::AppError;
use crate::domain::{Identity, RoomName, Timestamp};
use crate::engine::{RoomState, Schedule, Session};
use crate::reconcile::ReconcileError;
use crate::report;
use crate::rooms::UpdateError;
use crate::viewer::{self, ViewerError};

/// Checks `Authorization: Bearer <app secret>` in constant time, unless
/// the client's address has no failed credential left (429); a wrong or
/// missing bearer spends one.
fn authorize(app: &AppState, client: ClientIp, headers: &HeaderMap) -> Result<(), AppError> {
    app.limits.credentials_allowed(client.0)?;
    check_bearer(app, headers).inspect_err(|_| app.limits.credential_failed(client.0))
}

/// What a read-only endpoint needs: the app secret, or a viewer link
/// ([`crate::viewer`]) for `room` (`None`: every room, as the session list
/// needs).
pub fn authorize_read(
    app: &AppState,
    client: ClientIp,
    headers: &HeaderMap,
    room: Option<&str>,
) -> Result<(), AppError> {
    let allowed = match reader_scope(app, client, headers)? {
        None => true,
        Some(scope) => match room {
            Some(room) => scope.allows_room(room),
            None => scope == viewer::Scope::All,
        },
    };
    if allowed {
        return Ok(());
    }
    Err(forbidden(match room {
        Some(room) => format!("this viewer link does not open {room}"),
        None => "this needs a viewer link for every room (\"room\": \"*\")".to_string(),
    }))
}

pub fn forbidden(message: impl Into<String>) -> AppError {
    AppError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// Who reads: `None` for the app secret (everything), else the viewer
/// link's scope. A failed credential is spent as in [`authorize`]; a valid
/// link for something else is the caller's 403 and spends nothing.
pub fn reader_scope(
    app: &AppState,
    client: ClientIp,
    headers: &HeaderMap,
) -> Result<Option<viewer::Scope>, AppError> {
    app.limits.credentials_allowed(client.0)?;
    let token = bearer(headers).inspect_err(|_| app.limits.credential_failed(client.0))?;
    if is_app_secret(app, token) {
        return Ok(None);
    }
    let now_secs = crate::domain::now_millis() / 1000;
    match viewer::verify(&app.app_secret, token, now_secs) {
        Ok(scope) => Ok(Some(scope)),
        Err(e) => {
            app.limits.credential_failed(client.0);
            let code = match e {
                ViewerError::Expired => "viewer_link_expired",
                ViewerError::Invalid | ViewerError::TooLong => "invalid_credentials",
            };
            Err(AppError::unauthorized(code, e.to_string()))
        }
    }
}

/// The token of `Authorization: Bearer <token>`, or the contract's 401.
fn bearer(headers: &HeaderMap) -> Result<&str, AppError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(AppError::unauthorized(
            "missing_authorization",
            "Authorization: Bearer <app secret or viewer link> is required",
        ));
    };
    Ok(value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .unwrap_or_default()
        .trim())
}

fn is_app_secret(app: &AppState, token: &str) -> bool {
    token.as_bytes().ct_eq(app.app_secret.as_bytes()).into()
}

fn check_bearer(app: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    if is_app_secret(app, bearer(headers)?) {
        Ok(())
    } else {
        Err(AppError::unauthorized(
            "invalid_credentials",
            "the bearer token is not the app secret",
        ))
    }
}

fn session_of(app: &AppState, room: &str) -> Result<Session, AppError> {
    app.rooms
        .session(room)
        .ok_or_else(|| AppError::not_found(format!("{room} does not match ROLLCALL_ROOM_PATTERN")))
}

/// The room's state, or 404 when rollcall knows nothing about it.
async fn state_of(app: &AppState, session: &Session) -> Result<Arc<RoomState>, AppError> {
    app.rooms
        .load(&session.room)
        .await
        .map_err(|e| store_error(e.into()))?
        .ok_or_else(|| AppError::not_found(format!("nothing is known about {}", session.room)))
}

pub fn store_error(e: UpdateError) -> AppError {
    tracing::error!(error = %e, "store operation failed");
    AppError::store_unavailable()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleBody {
    starts_at: String,
    duration_minutes: u32,
    #[serde(default)]
    expected: Vec<String>,
}

/// The body of `PUT /api/sessions/{room}/schedule`: a JSON object with
/// `starts_at` (RFC 3339), `duration_minutes` and optional `expected`.
/// Public so the fuzz target `schedule` drives the very parser the handler
/// uses; every refusal is a 400 `invalid_schedule`.
pub fn parse_schedule_body(body: &[u8]) -> Result<Schedule, AppError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| AppError::bad_request("invalid_schedule", e.to_string()))?;
    // serde would also build the struct from an array in field order.
    if !value.is_object() {
        return Err(AppError::bad_request(
            "invalid_schedule",
            "the body must be a JSON object",
        ));
    }
    let parsed: ScheduleBody = serde_json::from_value(value)
        .map_err(|e| AppError::bad_request("invalid_schedule", e.to_string()))?;
    let starts_at = Timestamp::parse_rfc3339(&parsed.starts_at).ok_or_else(|| {
        AppError::bad_request("invalid_schedule", "starts_at must be an RFC 3339 instant")
    })?;
    let expected = parsed.expected.into_iter().map(Identity::new).collect();
    Schedule::new(starts_at, parsed.duration_minutes, expected)
        .map_err(|e| AppError::bad_request("invalid_schedule", e.to_string()))
}

/// `PUT /api/sessions/{room}/schedule` (rule 21).
pub async fn put_schedule(
    State(app): State<AppState>,
    client: ClientIp,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AppError> {
    authorize(&app, client, &headers)?;
    let session = session_of(&app, &room)?;
    let body = body.map_err(super::body_error)?;
    let schedule = parse_schedule_body(&body)?;
    app.rooms
        .update(&session, None, |state| {
            state.set_schedule(Some(schedule.clone()))
        })
        .await
        .map_err(store_error)?;
    Ok(Json(json!({"room": session.room, "schedule": schedule})))
}

/// `GET /api/sessions/{room}/schedule`: the schedule in force (rule 21)
/// and where it came from, or 404 when none is known.
pub async fn get_schedule(
    State(app): State<AppState>,
    client: ClientIp,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    authorize_read(&app, client, &headers, Some(&room))?;
    let session = session_of(&app, &room)?;
    let state = state_of(&app, &session).await?;
    let Some(schedule) = state.effective_schedule() else {
        return Err(AppError::not_found(format!(
            "no schedule is known for {}",
            session.room
        )));
    };
    // The API's wins over the metadata's (rule 21).
    let source = if state.schedule.is_some() {
        "api"
    } else {
        "metadata"
    };
    Ok(Json(
        json!({"room": session.room, "schedule": schedule, "source": source}),
    ))
}

/// `?limit=` of `GET /api/sessions`.
#[derive(Debug, Default, Deserialize)]
pub struct SessionsQuery {
    limit: Option<String>,
}

/// Rooms listed by `GET /api/sessions` unless `?limit=` says otherwise,
/// and the most it may say (each is one state load).
const SESSIONS_DEFAULT: usize = 50;
const SESSIONS_MAX: usize = 500;

/// `GET /api/sessions`: the rooms rollcall knows, most recently changed
/// first, each with who is in it now and its schedule.
pub async fn sessions(
    State(app): State<AppState>,
    client: ClientIp,
    Query(query): Query<SessionsQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    authorize_read(&app, client, &headers, None)?;
    let limit = match query.limit.as_deref() {
        None => SESSIONS_DEFAULT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=SESSIONS_MAX).contains(&n) => n,
            _ => {
                return Err(AppError::bad_request(
                    "invalid_query",
                    format!("limit must be a number from 1 to {SESSIONS_MAX}, not {text:?}"),
                ));
            }
        },
    };
    let recent = app
        .rooms
        .store
        .recent_rooms(limit)
        .await
        .map_err(|e| store_error(e.into()))?;
    let now = crate::domain::now_millis();
    let mut sessions = Vec::with_capacity(recent.len());
    for (room, updated_at) in recent {
        // A room the pattern no longer matches, or whose data expired, is
        // not a session any more.
        let Some(session) = app.rooms.session(room.as_str()) else {
            continue;
        };
        let Some(state) = app
            .rooms
            .load(&session.room)
            .await
            .map_err(|e| store_error(e.into()))?
        else {
            continue;
        };
        let roster = app.rooms.view(&session, &state).roster(now);
        let here = roster.iter().filter(|a| a.is_currently_in_meeting).count();
        sessions.push(json!({
            "room": session.room,
            "session_id": session.session_id,
            "session_type": session.session_type,
            "channel": session.channel,
            "in_meeting": here > 0,
            "people_in_meeting": here,
            "participants": roster.len(),
            "schedule": state.effective_schedule(),
            "is_final": state.finalization.is_final(),
            "revision": state.finalization.revision,
            "updated_at": Timestamp(updated_at),
        }));
    }
    Ok(Json(json!({"sessions": sessions})))
}

#[derive(Debug, Deserialize)]
pub struct AttendanceQuery {
    format: Option<String>,
}

/// `GET /api/sessions/{room}/attendance` (`?format=csv`).
pub async fn attendance(
    State(app): State<AppState>,
    client: ClientIp,
    Path(room): Path<String>,
    Query(query): Query<AttendanceQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    authorize_read(&app, client, &headers, Some(&room))?;
    let session = session_of(&app, &room)?;
    let state = state_of(&app, &session).await?;
    let now = crate::domain::now_millis();
    match query.format.as_deref() {
        None | Some("json") => {
            Ok(Json(report::roster(&app.rooms, &session, &state, now)).into_response())
        }
        Some("csv") => {
            let csv = report::roster_csv(&app.rooms.view(&session, &state).roster(now));
            let filename = format!("attendance-{}.csv", sanitize(session.room.as_str()));
            Ok((
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{filename}\""),
                    ),
                ],
                csv,
            )
                .into_response())
        }
        Some(other) => Err(AppError::bad_request(
            "invalid_format",
            format!("unknown format {other:?}; use json or csv"),
        )),
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `GET /api/sessions/{room}/events`: the immutable log, oldest first,
/// each body exactly as LiveKit signed it.
pub async fn events(
    State(app): State<AppState>,
    client: ClientIp,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    authorize(&app, client, &headers)?;
    let session = session_of(&app, &room)?;
    let log = app
        .rooms
        .store
        .event_log(&session.room)
        .await
        .map_err(|e| store_error(e.into()))?;
    if log.is_empty() {
        state_of(&app, &session).await?;
    }
    let events: Vec<Value> = log
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "kind": e.kind.as_str(),
                "received_at": Timestamp(e.received_at),
                "body": e.body,
            })
        })
        .collect();
    Ok(Json(json!({"room": session.room, "events": events})))
}

/// `POST /api/sessions/{room}/recalculate` (rule 22).
pub async fn recalculate(
    State(app): State<AppState>,
    client: ClientIp,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    authorize(&app, client, &headers)?;
    let session = session_of(&app, &room)?;
    state_of(&app, &session).await?;
    let changed = app.rooms.recalculate(&session).await.map_err(store_error)?;
    let state = state_of(&app, &session).await?;
    Ok(Json(json!({
        "room": RoomName::new(session.room.as_str()),
        "changed": changed,
        "revision": state.finalization.revision,
    })))
}

/// `?dry_run=` of the reconcile endpoint: `true`/`1`/empty or
/// `false`/`0`.
#[derive(Debug, Default, Deserialize)]
pub struct ReconcileQuery {
    #[serde(default)]
    dry_run: Option<String>,
}

/// `POST /api/sessions/{room}/reconcile` (rules 23–27): asks LiveKit who is
/// in the room now and answers what changed, or with `?dry_run=true` what
/// would change without changing it.
pub async fn reconcile(
    State(app): State<AppState>,
    client: ClientIp,
    Path(room): Path<String>,
    Query(query): Query<ReconcileQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    authorize(&app, client, &headers)?;
    let session = session_of(&app, &room)?;
    let dry_run = match query.dry_run.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(other) => {
            return Err(AppError::bad_request(
                "invalid_query",
                format!("dry_run must be true or false, not {other:?}"),
            ));
        }
    };
    let Some(reconciler) = &app.reconciler else {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "reconciliation_disabled",
            "LIVEKIT_URL is not set: rollcall has no LiveKit to ask",
        ));
    };
    match reconciler.reconcile_now(&session, dry_run).await {
        Ok(outcome) => Ok(Json(
            serde_json::to_value(outcome).expect("an outcome serializes"),
        )),
        Err(ReconcileError::LiveKit(e)) => {
            tracing::warn!(room = %session.room, error = %e, "on-demand reconciliation failed");
            let (status, code) = match e.kind() {
                "timeout" => (StatusCode::GATEWAY_TIMEOUT, "livekit_timeout"),
                _ => (StatusCode::BAD_GATEWAY, "livekit_unavailable"),
            };
            Err(AppError::new(
                status,
                code,
                format!("LiveKit could not be asked; nothing changed: {e}"),
            ))
        }
        Err(ReconcileError::Update(e)) => Err(store_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `schedule` fuzz target (see `Timestamp::parse_rfc3339`):
    /// refused with the contract's 400 rather than stored unreadable.
    #[test]
    fn a_start_past_year_9999_utc_is_an_invalid_schedule() {
        let body = br#"{"starts_at":"9999-12-31T23:59:59-23:59","duration_minutes":30}"#;
        let err = parse_schedule_body(body).unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(err.code, "invalid_schedule");
    }
}
