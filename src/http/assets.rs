//! The dashboard and the meeting page's heartbeat client (`static/`),
//! compiled into the binary so that one file is the whole server, whatever
//! the working directory.

use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::error::AppError;

/// `(name, content type, bytes)` of every file in `static/`.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../static/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/app.js"),
    ),
    (
        "ticking.mjs",
        "text/javascript; charset=utf-8",
        include_str!("../../static/ticking.mjs"),
    ),
    (
        "i18n.mjs",
        "text/javascript; charset=utf-8",
        include_str!("../../static/i18n.mjs"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../static/style.css"),
    ),
    (
        HEARTBEAT_SCRIPT,
        "text/javascript; charset=utf-8",
        include_str!("../../static/rollcall-heartbeat.js"),
    ),
];

/// The one file other origins' pages include: the meeting page's heartbeat.
const HEARTBEAT_SCRIPT: &str = "rollcall-heartbeat.js";

pub async fn index() -> Response {
    serve("index.html")
}

pub async fn file(Path(name): Path<String>) -> Response {
    serve(&name)
}

fn serve(name: &str) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => {
            let mut response = (
                [
                    (header::CONTENT_TYPE, *content_type),
                    // Files change with the binary: revalidate, don't guess.
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                *body,
            )
                .into_response();
            if name == HEARTBEAT_SCRIPT {
                // A plain <script src> needs nothing, but `import`, a
                // `crossorigin` attribute, or a page that is
                // cross-origin isolated (COEP) does.
                let headers = response.headers_mut();
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
                headers.insert(
                    HeaderName::from_static("cross-origin-resource-policy"),
                    HeaderValue::from_static("cross-origin"),
                );
            }
            response
        }
        None => AppError::not_found("no such endpoint or file").into_response(),
    }
}
