//! The HTTP surface: routes, shared state, and the contract's error shape.
//! The WebSocket endpoint lives in `pusher`; it is merged in here.

pub mod error;
pub mod ops;
pub mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};

use error::AppError;
use tower_http::services::ServeDir;

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

/// The dashboard's files, compiled into the binary's location at build time
/// so `make run` serves them from any working directory.
pub const STATIC_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/static");

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route(
            "/webhooks/livekit",
            post(webhook::livekit).layer(DefaultBodyLimit::max(webhook::MAX_WEBHOOK_BYTES)),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback_service(ServeDir::new(STATIC_DIR).not_found_service(get(not_found)))
        .with_state(state)
}

async fn not_found() -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint or file",
    )
}
