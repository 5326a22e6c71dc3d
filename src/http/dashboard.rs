//! What the dashboard page needs besides the channel: its settings
//! (`GET /api/dashboard`) and, for private channels, a subscription
//! signature it can get with a viewer link (`POST /api/channel-auth`).
//! See `crate::viewer` for the viewer link itself.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::api::{forbidden, reader_scope};
use super::client_ip::ClientIp;
use super::error::AppError;
use crate::pusher::auth::sign_channel;
use crate::pusher::channel::{ChannelKind, ChannelName, SocketId};
use crate::viewer::Scope;

/// `GET /api/dashboard`: public settings the page computes with — the
/// Pusher app key (so links need not carry it) and the verdict rules, so
/// that the status it shows between updates is the one the server would
/// give (rule 28). Nothing here is secret: the key is public in Pusher,
/// and thresholds are visible in every verdict anyway.
pub async fn settings(State(app): State<AppState>) -> Json<Value> {
    let rules = &app.rooms.rules;
    Json(json!({
        "app_key": app.pusher_app_key,
        "absent_below": rules.absent_below,
        "partial_below": rules.partial_below,
        "present_from": rules.present_from,
        "late_grace_ms": rules.late_grace_ms,
        "finalize_delay_ms": app.rooms.timing.finalize_delay_ms(),
        "heartbeat_timeout_ms": app.rooms.timing.heartbeat_timeout_ms(),
    }))
}

#[derive(Debug, Deserialize)]
struct AuthRequest {
    socket_id: String,
    channel_name: String,
}

/// `POST /api/channel-auth` with `Authorization: Bearer <viewer link or
/// app secret>` and pusher-js's form body (`socket_id`, `channel_name`;
/// JSON is accepted too): `{"auth": "<key>:<signature>"}` for the private
/// channel of a room the link opens. Presence channels are not for
/// viewers (they would need a member identity), public ones need no auth.
pub async fn channel_auth(
    State(app): State<AppState>,
    client: ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AppError> {
    let body = body.map_err(super::body_error)?;
    let request = parse_auth_request(&headers, &body)?;
    let channel = ChannelName::parse(&request.channel_name)
        .map_err(|e| AppError::bad_request("invalid_channel", format!("channel_name: {e}")))?;
    let socket_id = SocketId::parse(&request.socket_id).map_err(|_| {
        AppError::bad_request("invalid_socket_id", "socket_id must look like 123.456")
    })?;
    match channel.kind() {
        ChannelKind::Private => {}
        ChannelKind::Public => {
            return Err(AppError::bad_request(
                "not_private",
                "a public channel needs no authorisation: subscribe without auth",
            ));
        }
        ChannelKind::Presence => {
            return Err(forbidden("viewer links do not open presence channels"));
        }
    }
    // Who asks, before any store read: a bad credential costs nothing.
    let scope = reader_scope(&app, client, &headers)?;
    // The rooms whose updates go to this channel: the link must open one.
    // (A channel no room has fed yet opens only to an every-room link.)
    let rooms = app
        .rooms
        .store
        .rooms_of_channel(channel.as_str())
        .await
        .map_err(|e| super::api::store_error(e.into()))?;
    let allowed = match &scope {
        None | Some(Scope::All) => true,
        Some(scope) => rooms.iter().any(|r| scope.allows_room(r.as_str())),
    };
    if !allowed {
        return Err(forbidden(format!(
            "this viewer link does not open {}",
            channel.as_str()
        )));
    }
    let signature = sign_channel(&app.app_secret, socket_id.as_str(), channel.as_str(), None);
    Ok(Json(
        json!({"auth": format!("{}:{signature}", app.pusher_app_key)}),
    ))
}

fn parse_auth_request(headers: &HeaderMap, body: &[u8]) -> Result<AuthRequest, AppError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let parsed = if is_json {
        serde_json::from_slice::<AuthRequest>(body).map_err(|e| e.to_string())
    } else {
        let mut socket_id = None;
        let mut channel_name = None;
        for (k, v) in form_urlencoded::parse(body) {
            match &*k {
                "socket_id" => socket_id = Some(v.into_owned()),
                "channel_name" => channel_name = Some(v.into_owned()),
                _ => {}
            }
        }
        match (socket_id, channel_name) {
            (Some(socket_id), Some(channel_name)) => Ok(AuthRequest {
                socket_id,
                channel_name,
            }),
            _ => Err("socket_id and channel_name are required".to_string()),
        }
    };
    parsed.map_err(|e| AppError::bad_request("invalid_body", e))
}
