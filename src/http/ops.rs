//! Operator endpoints: `/healthz` (the process answers), `/readyz` (the
//! store takes writes), `/metrics` (Prometheus text).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;
use crate::metrics::Gauges;

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    match app.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "store": app.store.kind()})),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "store_unavailable", "message": e.to_string()})),
        ),
    }
}

pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let gauges = Gauges {
        connections: app.hub.socket_count(),
        channels: app.hub.channel_count(),
    };
    let mut body = app.metrics.render(gauges);
    crate::build_info::render(&mut body);
    crate::process_metrics::render(&mut body);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
