//! What every response gets on its way out, whichever route (or the
//! framework itself) produced it:
//!
//! - **The contract's error body.** Our handlers answer errors with
//!   [`AppError`]; axum's own refusals (405 from a method router, a bad
//!   path encoding, a query that does not deserialize, ...) come as plain
//!   text or empty bodies.
//!   Any error response that is not already JSON is rewritten here into
//!   `{"error", "message"}` with the same status and headers, so a client
//!   can rely on the shape of every refusal.
//! - **Security headers.** `nosniff` and a strict referrer policy on every
//!   response; the dashboard's HTML also gets a Content-Security-Policy
//!   that allows only its own files (and its WebSocket back to this
//!   origin) and forbids framing.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::AppError;

/// Longest framework message passed on to the client: axum's rejection
/// texts are a sentence or two; anything longer is cut, not echoed whole.
const MAX_MESSAGE_CHARS: usize = 300;

/// Where the policy applies: the dashboard's own scripts and styles only,
/// the WebSocket and API on this origin, no plugins, no framing, no
/// `<base>` tricks. (`'self'` covers `ws:`/`wss:` to this host in CSP 3.)
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

/// The `map_response` function applied to the whole router.
pub async fn harden(response: Response) -> Response {
    let mut response = if needs_json_body(&response) {
        into_contract_error(response).await
    } else {
        response
    };
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    let is_html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        // For browsers that predate `frame-ancestors`.
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

/// An error status whose body is not already the contract's JSON.
fn needs_json_body(response: &Response) -> bool {
    let status = response.status();
    let is_error = status.is_client_error() || status.is_server_error();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    is_error && !is_json
}

/// Rebuilds a framework error as [`AppError`], keeping status and headers
/// (`Allow` on a 405, `Retry-After`, ...) and using its text as the message.
async fn into_contract_error(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    // Framework error bodies are short texts; read at most a little.
    let text = match axum::body::to_bytes(body, 4 * MAX_MESSAGE_CHARS).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let status = parts.status;
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string()
    } else {
        text.chars().take(MAX_MESSAGE_CHARS).collect()
    };
    let rebuilt = AppError::new(status, code_for(status), message).into_response();
    let (rebuilt_parts, rebuilt_body) = rebuilt.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &rebuilt_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, Body::new(rebuilt_body))
}

/// The machine code for a framework refusal with this status.
pub fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UPGRADE_REQUIRED => "upgrade_required",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal_error",
        _ => "request_refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    async fn body_json(response: Response) -> (StatusCode, HeaderMap, serde_json::Value) {
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).expect("a JSON body"),
        )
    }

    #[tokio::test]
    async fn a_plain_text_refusal_becomes_the_contracts_json_keeping_headers() {
        let plain = (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET,HEAD")],
            "",
        )
            .into_response();
        let (status, headers, body) = body_json(harden(plain).await).await;
        assert_eq!(status, 405);
        assert_eq!(headers[header::ALLOW], "GET,HEAD");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(body["error"], "method_not_allowed");
        assert_eq!(body["message"], "Method Not Allowed");
    }

    #[tokio::test]
    async fn framework_text_is_kept_as_the_message_but_cut() {
        let short = (StatusCode::BAD_REQUEST, "Invalid URL").into_response();
        let (_, _, body) = body_json(harden(short).await).await;
        assert_eq!(body["error"], "bad_request");
        assert_eq!(body["message"], "Invalid URL");

        let long = (StatusCode::BAD_REQUEST, "x".repeat(1_000)).into_response();
        let (_, _, body) = body_json(harden(long).await).await;
        assert_eq!(body["message"].as_str().unwrap().len(), MAX_MESSAGE_CHARS);

        // Far too long to be a framework message: not read, not echoed.
        let huge = (StatusCode::BAD_REQUEST, "x".repeat(100_000)).into_response();
        let (_, _, body) = body_json(harden(huge).await).await;
        assert_eq!(body["message"], "Bad Request");
    }

    #[tokio::test]
    async fn our_own_errors_and_successes_pass_unchanged() {
        let ours = AppError::bad_request("invalid_schedule", "no").into_response();
        let (_, _, body) = body_json(harden(ours).await).await;
        assert_eq!(body["error"], "invalid_schedule");

        let ok = (StatusCode::OK, "plain success").into_response();
        let out = harden(ok).await;
        assert_eq!(out.status(), 200);
        let bytes = axum::body::to_bytes(out.into_body(), 100).await.unwrap();
        assert_eq!(&bytes[..], b"plain success");
    }

    #[tokio::test]
    async fn html_gets_a_content_security_policy() {
        let page = (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<p>hi</p>",
        )
            .into_response();
        let out = harden(page).await;
        assert_eq!(
            out.headers()[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(out.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(out.headers()[header::REFERRER_POLICY], "no-referrer");
    }
}
