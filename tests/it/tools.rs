//! The command-line tools a newcomer reaches for, run as the binary.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn rollcall_token_mints_what_a_heartbeat_accepts() {
    let app = spawn_app().await;
    let identity = "1_Ameer_Maher";
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args([
            "token",
            "--room",
            ROOM,
            "--identity",
            identity,
            "--ttl",
            "10m",
        ])
        .env_remove("LIVEKIT_API_KEY")
        .env_remove("LIVEKIT_API_SECRET")
        .env("RUST_LOG", "warn")
        .output();
    let output = tokio::time::timeout(GUARD, output).await.unwrap().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let token = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "the token alone: {stdout:?}");
    // Not in the meeting yet: 200, false; once LiveKit says they joined: true.
    let res = app.heartbeat(token).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["in_meeting"], false);
    let now = rollcall::domain::now_millis();
    let res = app
        .post_webhook(&joined(ROOM, identity, "PA_t", now, &event_id()))
        .await;
    assert_eq!(res.status(), 200);
    let res = app.heartbeat(token).await;
    assert_eq!(res.json::<Value>().await.unwrap()["in_meeting"], true);
    // Refused: an empty identity is an error exit, not a useless token.
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["token", "--room", ROOM, "--identity", ""])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    app.shutdown().await;
}
