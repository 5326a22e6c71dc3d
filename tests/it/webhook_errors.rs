//! Bad webhooks get the contract's status and error body, and the server
//! keeps serving after each.

use serde_json::Value;

use crate::helpers::*;

async fn assert_error(res: reqwest::Response, status: u16, code: &str) {
    assert_eq!(res.status(), status);
    let body: Value = res.json().await.expect("JSON error body");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

async fn still_serving(app: &TestApp) {
    let body = joined(
        ROOM,
        "1_Ameer_Maher",
        "PA_ok",
        rollcall::domain::now_millis(),
        &event_id(),
    );
    assert_eq!(app.post_webhook(&body).await.status(), 200);
}

#[tokio::test]
async fn signature_failures_are_401() {
    let app = spawn_app().await;
    let body = joined(
        ROOM,
        "1_Ameer_Maher",
        "PA_a",
        1_763_719_201_456,
        &event_id(),
    );
    let now = rollcall::domain::now_millis() / 1000;

    assert_error(
        app.post_webhook_with(&body, None).await,
        401,
        "missing_authorization",
    )
    .await;
    still_serving(&app).await;

    let wrong_secret =
        rollcall::livekit::sign_webhook("devkey", "not-the-secret", body.as_bytes(), now, 300);
    let res = app.post_webhook_with(&body, Some(&wrong_secret)).await;
    assert_eq!(res.status(), 401);
    still_serving(&app).await;

    let unknown_key = rollcall::livekit::sign_webhook("nokey", "secret", body.as_bytes(), now, 300);
    let res = app.post_webhook_with(&body, Some(&unknown_key)).await;
    assert_eq!(res.status(), 401);

    // Expired beyond LiveKit's 60 s leeway.
    let expired =
        rollcall::livekit::sign_webhook("devkey", "secret", body.as_bytes(), now - 400, 300);
    let res = app.post_webhook_with(&body, Some(&expired)).await;
    assert_eq!(res.status(), 401);

    // Signed for other bytes: one byte changed.
    let token = rollcall::livekit::sign_webhook("devkey", "secret", body.as_bytes(), now, 300);
    let tampered = body.replace("PA_a", "PA_b");
    let res = app.post_webhook_with(&tampered, Some(&token)).await;
    assert_eq!(res.status(), 401);

    // The `Bearer ` prefix is tolerated.
    let res = app
        .post_webhook_with(&body, Some(&format!("Bearer {token}")))
        .await;
    assert_eq!(res.status(), 200);

    assert_error(
        app.post_webhook_with(&body, Some("not.a.jwt")).await,
        401,
        "malformed_token",
    )
    .await;
    still_serving(&app).await;
}

#[tokio::test]
async fn malformed_and_oversized_bodies() {
    let app = spawn_app().await;
    for body in ["{not json", "[]", r#"{"event":"participant_joined"}"#, ""] {
        assert_error(app.post_webhook(body).await, 400, "malformed_webhook").await;
    }
    still_serving(&app).await;

    let big = format!(
        r#"{{"event":"room_started","id":"EV_x","pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    assert_error(app.post_webhook(&big).await, 413, "payload_too_large").await;
    still_serving(&app).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"rollcall_webhooks_total{outcome="too_large"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_token_minted_by_the_livekit_sdk_is_accepted() {
    // Minted by the Python LiveKit SDK (tests/fixtures/livekit/mint_sdk_tokens.py)
    // with a long TTL over the exact fixture bytes.
    let tokens: Value = serde_json::from_str(&fixture("sdk_tokens.json")).unwrap();
    let token = tokens["webhook_participant_joined"]["token"]
        .as_str()
        .unwrap();
    let app = spawn_app().await;
    let res = app
        .post_webhook_with(&fixture("participant_joined.json"), Some(token))
        .await;
    assert_eq!(res.status(), 200);
}
