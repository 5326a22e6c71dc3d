//! The HTTP surface: routes, shared state, and the contract's error shape.
//! The WebSocket endpoint lives in `pusher`; it is merged in here.

pub mod assets;
pub mod error;
pub mod ops;
pub mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use error::AppError;

use crate::ingest::Ingest;
use crate::livekit::KeyRing;
use crate::metrics::Metrics;
use crate::pusher::hub::Hub;
use crate::store::Store;

/// What every handler may need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub ingest: Ingest,
    pub keys: Arc<KeyRing>,
    pub metrics: Arc<Metrics>,
    pub hub: Hub,
    pub store: Arc<dyn Store>,
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route(
            "/webhooks/livekit",
            post(webhook::livekit).layer(DefaultBodyLimit::max(webhook::MAX_WEBHOOK_BYTES)),
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
