//! The HTTP surface: routes, shared state, and the contract's error shape.
//! The WebSocket endpoint lives in `pusher`; it is merged in here.

pub mod api;
pub mod assets;
pub mod client_ip;
pub mod dashboard;
pub mod error;
pub mod hardening;
pub mod heartbeat;
pub mod observe;
pub mod ops;
pub mod pusher_api;
pub mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};

use error::AppError;

use crate::limits::Limits;
use crate::livekit::KeyRing;
use crate::metrics::Metrics;
use crate::pusher::hub::Hub;
use crate::rooms::Rooms;
use crate::store::Store;

/// What every handler may need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub rooms: Rooms,
    pub keys: Arc<KeyRing>,
    pub metrics: Arc<Metrics>,
    pub hub: Hub,
    pub store: Arc<dyn Store>,
    /// Presence channels' members, cluster-wide (the Pusher HTTP API's
    /// `users` and `user_count`).
    pub presence: Arc<dyn crate::store::presence::PresenceStore>,
    /// The Pusher app secret, which is also the API's bearer token.
    pub app_secret: Arc<str>,
    /// The Pusher app id: the only `{app_id}` of the Pusher HTTP API.
    pub pusher_app_id: Arc<str>,
    /// The Pusher app key: the `auth_key` of Pusher HTTP API requests.
    pub pusher_app_key: Arc<str>,
    /// Rate and connection limits, and who the client is (issue 9).
    pub limits: Arc<Limits>,
    /// Asks LiveKit's RoomService (rules 23–27); `None` without `LIVEKIT_URL`.
    pub reconciler: Option<crate::reconcile::Reconciler>,
    /// Cache channels' last events (`cache_channels.rs`).
    pub event_cache: Arc<dyn crate::store::EventCache>,
}

/// `ClientIp` reads the trusted proxies from here.
impl axum::extract::FromRef<AppState> for Arc<client_ip::TrustedProxies> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.limits.trusted_proxies)
    }
}

/// The API's body limit: schedules with long expected lists fit easily.
pub const MAX_API_BODY_BYTES: usize = 256 * 1024;

/// Maps a body rejection to the contract's error (413 or 400).
pub fn body_error(rejection: axum::extract::rejection::BytesRejection) -> AppError {
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        AppError::too_large(MAX_API_BODY_BYTES)
    } else {
        AppError::bad_request("unreadable_body", rejection.body_text())
    }
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route(
            "/webhooks/livekit",
            post(webhook::livekit).layer(DefaultBodyLimit::max(webhook::MAX_WEBHOOK_BYTES)),
        )
        .route(
            "/api/heartbeat",
            post(heartbeat::heartbeat)
                .options(heartbeat::preflight)
                .layer(axum::middleware::map_response(heartbeat::allow_any_origin)),
        )
        .route(
            "/api/sessions/{room}/schedule",
            put(api::put_schedule)
                .get(api::get_schedule)
                .layer(DefaultBodyLimit::max(MAX_API_BODY_BYTES)),
        )
        .route("/api/sessions", get(api::sessions))
        .route("/api/dashboard", get(dashboard::settings))
        .route(
            "/api/channel-auth",
            post(dashboard::channel_auth).layer(DefaultBodyLimit::max(MAX_API_BODY_BYTES)),
        )
        .route("/api/sessions/{room}/attendance", get(api::attendance))
        .route("/api/sessions/{room}/events", get(api::events))
        .route("/api/sessions/{room}/recalculate", post(api::recalculate))
        .route("/api/sessions/{room}/reconcile", post(api::reconcile))
        .route(
            "/apps/{app_id}/events",
            post(pusher_api::events).layer(DefaultBodyLimit::max(pusher_api::MAX_BODY_BYTES)),
        )
        .route(
            "/apps/{app_id}/batch_events",
            post(pusher_api::batch_events).layer(DefaultBodyLimit::max(pusher_api::MAX_BODY_BYTES)),
        )
        .route("/apps/{app_id}/channels", get(pusher_api::channels))
        .route("/apps/{app_id}/channels/{name}", get(pusher_api::channel))
        .route(
            "/apps/{app_id}/channels/{name}/users",
            get(pusher_api::users),
        )
        .route(
            "/apps/{app_id}/users/{user_id}/terminate_connections",
            post(pusher_api::terminate_connections)
                .layer(DefaultBodyLimit::max(pusher_api::MAX_BODY_BYTES)),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/", get(assets::index))
        .route("/{file}", get(assets::file))
        .fallback(not_found)
        .with_state(state)
}

pub async fn not_found() -> AppError {
    AppError::not_found("no such endpoint or file")
}
