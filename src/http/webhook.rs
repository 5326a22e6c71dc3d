//! `POST /webhooks/livekit`: verify the signature over the raw bytes, then
//! hand the body to the ingest pipeline; answer only once it is stored.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use super::AppState;
use super::client_ip::ClientIp;
use super::error::AppError;
use crate::ingest::{Ack, IngestError};
use crate::livekit::verify_webhook;
use crate::metrics::WebhookOutcome;

/// LiveKit bodies are a few KiB; anything near this is not a webhook.
pub const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

pub async fn livekit(
    State(app): State<AppState>,
    client: ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AppError> {
    // Refused before any verification; counted as rate limited, not as a
    // webhook outcome. 429 is a 4xx, which LiveKit does not retry, but
    // the default limit is far above any real meeting's burst (README).
    app.limits.webhook(client.0)?;
    let result = handle(&app, &headers, body).await;
    let outcome = match &result {
        Ok(Ack::Applied) => WebhookOutcome::Applied,
        Ok(Ack::Duplicate) => WebhookOutcome::Duplicate,
        Ok(Ack::Ignored(_)) => WebhookOutcome::Ignored,
        Err(e) => match e.status {
            StatusCode::UNAUTHORIZED => WebhookOutcome::Unauthorized,
            StatusCode::PAYLOAD_TOO_LARGE => WebhookOutcome::TooLarge,
            StatusCode::SERVICE_UNAVAILABLE => WebhookOutcome::StoreUnavailable,
            _ => WebhookOutcome::Malformed,
        },
    };
    app.metrics.webhook(outcome);
    let ack = result?;
    let (status, reason) = match ack {
        Ack::Applied => ("applied", None),
        Ack::Duplicate => ("duplicate", None),
        Ack::Ignored(why) => ("ignored", Some(why)),
    };
    Ok(Json(match reason {
        Some(why) => json!({"status": status, "reason": why}),
        None => json!({"status": status}),
    }))
}

async fn handle(
    app: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Ack, AppError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::too_large(MAX_WEBHOOK_BYTES)
        } else {
            AppError::bad_request("unreadable_body", rejection.body_text())
        }
    })?;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let now = crate::domain::now_millis();
    verify_webhook(&app.keys, authorization, &body, now / 1000).map_err(|e| {
        tracing::info!(error = %e, "webhook rejected");
        AppError::unauthorized(e.code(), e.to_string())
    })?;
    app.rooms
        .ingest_webhook(&body, now)
        .await
        .map_err(|e| match e {
            IngestError::Malformed(why) => AppError::bad_request("malformed_webhook", why),
            IngestError::Update(e) => {
                tracing::error!(error = %e, "webhook not stored; answered 503 so LiveKit retries");
                AppError::store_unavailable()
            }
        })
}
