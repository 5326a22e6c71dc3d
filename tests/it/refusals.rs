//! Every refusal is the contract's JSON (`{"error", "message"}`), the
//! framework's own included, and every response carries the security
//! headers; the dashboard gets its Content-Security-Policy.

use serde_json::Value;

use crate::helpers::*;

/// Asserts the contract's error shape and returns the error code.
async fn json_error(res: reqwest::Response, status: u16) -> String {
    assert_eq!(res.status(), status, "{}", res.url());
    let headers = res.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{headers:?}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let text = res.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body["error"].as_str().expect("an error code").to_string()
}

#[tokio::test]
async fn framework_refusals_are_the_contracts_json() {
    let app = spawn_app().await;
    let http = &app.http;

    // Unknown path.
    let res = http.get(app.url("/no/such/thing")).send().await.unwrap();
    assert_eq!(json_error(res, 404).await, "not_found");

    // Wrong method, with the Allow header kept.
    let res = http.get(app.url("/webhooks/livekit")).send().await.unwrap();
    assert!(res.headers().contains_key("allow"));
    assert_eq!(json_error(res, 405).await, "method_not_allowed");
    let res = http
        .delete(app.url(&format!("/api/sessions/{ROOM}/attendance")))
        .send()
        .await
        .unwrap();
    assert_eq!(json_error(res, 405).await, "method_not_allowed");

    // A path segment that does not decode to UTF-8.
    let res = http
        .get(app.url("/api/sessions/%FF%FE/attendance"))
        .bearer_auth(APP_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(json_error(res, 400).await, "bad_request");

    // A repeated query parameter.
    let res = http
        .get(app.url(&format!(
            "/api/sessions/{ROOM}/attendance?format=csv&format=json"
        )))
        .bearer_auth(APP_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(json_error(res, 400).await, "bad_request");

    // The WebSocket endpoint asked without upgrade headers.
    let res = http
        .get(app.url("/app/rollcall-key?protocol=7"))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    assert!((400..500).contains(&status), "{status}");
    json_error(res, status).await;

    // A schedule that is not JSON at all (our own handler's error).
    let res = http
        .put(app.url(&format!("/api/sessions/{ROOM}/schedule")))
        .bearer_auth(APP_SECRET)
        .body("{not json")
        .send()
        .await
        .unwrap();
    json_error(res, 400).await;
}

#[tokio::test]
async fn the_dashboard_forbids_framing_and_foreign_scripts() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");

    // Scripts and JSON get nosniff too, so neither is ever read as HTML.
    let res = app.http.get(app.url("/app.js")).send().await.unwrap();
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
}
