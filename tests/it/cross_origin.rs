//! The meeting page that heartbeats belongs to the main app, another origin
//! than rollcall's: its browser sends a CORS preflight before the POST (the
//! `Authorization` header makes it non-simple) and lets the page read only
//! answers that allow its origin. Without these headers no cross-origin
//! page could heartbeat at all, and the page would not see the 401 that
//! tells it to stop or the `Retry-After` that tells it to wait.

use std::time::Duration;

use reqwest::Method;
use rollcall::config::Rate;
use rollcall::domain::now_millis;
use rollcall::livekit::sign_access_token;

use crate::helpers::*;

const PAGE_ORIGIN: &str = "https://app.example.com";

fn token(identity: &str) -> String {
    sign_access_token("devkey", "secret", identity, ROOM, now_millis() / 1000, 600)
}

#[tokio::test]
async fn a_preflight_from_another_origin_allows_the_heartbeat_post() {
    let app = spawn_app().await;
    let res = app
        .http
        .request(Method::OPTIONS, app.url("/api/heartbeat"))
        .header("Origin", PAGE_ORIGIN)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .expect("server answers");
    assert_eq!(res.status(), 204);
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(h["access-control-allow-methods"], "POST");
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    assert!(
        allowed.split(", ").any(|n| n == "authorization"),
        "{allowed}"
    );
    assert!(h.contains_key("access-control-max-age"));
    // A token is the credential, never a cookie: credentials stay off.
    assert!(!h.contains_key("access-control-allow-credentials"));
    app.shutdown().await;
}

#[tokio::test]
async fn every_heartbeat_answer_is_readable_by_another_origin() {
    let app = spawn_app_with(|s| {
        s.limits.heartbeats = Some(Rate {
            count: 1,
            per: Duration::from_secs(60),
        })
    })
    .await;
    let post = |bearer: String| {
        app.http
            .post(app.url("/api/heartbeat"))
            .header("Origin", PAGE_ORIGIN)
            .bearer_auth(bearer)
            .send()
    };
    let ok = post(token("1_Ameer_Maher")).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["access-control-allow-origin"], "*");

    // The page must see a refusal to stop, and Retry-After to wait.
    let forged = post("not-a-token".into()).await.unwrap();
    assert_eq!(forged.status(), 401);
    assert_eq!(forged.headers()["access-control-allow-origin"], "*");

    let limited = post(token("1_Ameer_Maher")).await.unwrap();
    assert_eq!(limited.status(), 429);
    let h = limited.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(h["access-control-expose-headers"], "retry-after");
    assert!(h.contains_key("retry-after"));
    app.shutdown().await;
}

#[tokio::test]
async fn the_heartbeat_script_is_served_for_other_origins_to_include() {
    let app = spawn_app().await;
    let res = app
        .http
        .get(app.url("/rollcall-heartbeat.js"))
        .header("Origin", PAGE_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers();
    assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(h["cross-origin-resource-policy"], "cross-origin");
    let body = res.text().await.unwrap();
    assert!(body.contains("RollcallHeartbeat"), "the heartbeat client");

    // The dashboard's own files stay same-origin only.
    let app_js = app.http.get(app.url("/app.js")).send().await.unwrap();
    assert!(!app_js.headers().contains_key("access-control-allow-origin"));
    app.shutdown().await;
}
