//! The middleware that times every request for
//! `rollcall_http_request_duration_seconds` (see `http_metrics`).
//!
//! It sits outside `hardening::harden`, so it sees the status the client
//! gets. A WebSocket upgrade is timed until its 101 response: the socket's
//! life afterwards belongs to its own task, not to this request.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::http_metrics::UNMATCHED;
use crate::metrics::Metrics;

pub async fn observe(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    // The template the router matched, never the raw path: one series per
    // route whatever rooms or files are asked for.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let response = next.run(req).await;
    metrics.http.observe(
        route.as_ref().map_or(UNMATCHED, MatchedPath::as_str),
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
