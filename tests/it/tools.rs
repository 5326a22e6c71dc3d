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

/// Runs `rollcall <args>` against nothing but what `args` says (no
/// ROLLCALL_/LIVEKIT_ settings from the shell), bounded by GUARD.
async fn rollcall(args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollcall"));
    cmd.args(args).env("RUST_LOG", "warn").kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("ROLLCALL_") || key.starts_with("LIVEKIT_") {
            cmd.env_remove(key);
        }
    }
    tokio::time::timeout(GUARD, cmd.output())
        .await
        .expect("rollcall exits")
        .expect("rollcall runs")
}

async fn webhook(app: &TestApp, args: &[&str]) {
    let url = app.url("");
    let mut argv = vec!["webhook", "--url", &url];
    argv.extend_from_slice(args);
    let out = rollcall(&argv).await;
    assert!(
        out.status.success(),
        "{argv:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn person<'a>(roster: &'a Value, identity: &str) -> &'a Value {
    roster["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["identity"] == identity)
        .unwrap_or_else(|| panic!("{identity} in {roster}"))
}

#[tokio::test]
async fn webhook_at_backdates_and_a_connection_is_its_own_cycle() {
    let app = spawn_app().await;
    let who = ["--room", ROOM, "--identity", "1_Ameer_Maher"];
    webhook(&app, &[&["join", "--at", "-10m"][..], &who].concat()).await;
    let roster = app.get_attendance(ROOM).await;
    let ameer = person(&roster, "1_Ameer_Maher");
    let seconds = ameer["duration_seconds"].as_i64().unwrap();
    assert!((600..605).contains(&seconds), "joined 10 min ago: {ameer}");
    // Leave 4 minutes ago: the same (default) connection's cycle closes.
    webhook(&app, &[&["leave", "--at", "4m ago"][..], &who].concat()).await;
    // A re-join is connection 2: a second cycle with a new sid, open.
    webhook(
        &app,
        &[&["join", "--connection", "2", "--at", "-1m"][..], &who].concat(),
    )
    .await;
    let roster = app.get_attendance(ROOM).await;
    let ameer = person(&roster, "1_Ameer_Maher");
    let cycles = ameer["cycles"].as_array().unwrap();
    assert_eq!(cycles.len(), 2, "{ameer}");
    assert_ne!(cycles[0]["participant_sid"], cycles[1]["participant_sid"]);
    assert!(cycles[0]["left_at"].is_string() && cycles[1]["left_at"].is_null());
    assert_eq!(ameer["is_currently_in_meeting"], true);
    let seconds = ameer["duration_seconds"].as_i64().unwrap();
    // (The leave's createdAt is whole seconds, as LiveKit's is.)
    assert!((418..425).contains(&seconds), "6 min + 1 min: {ameer}");
    // Its leave closes that cycle, not a new one.
    webhook(&app, &[&["leave", "--connection", "2"][..], &who].concat()).await;
    let roster = app.get_attendance(ROOM).await;
    let ameer = person(&roster, "1_Ameer_Maher");
    assert_eq!(ameer["cycles"].as_array().unwrap().len(), 2);
    assert_eq!(ameer["is_currently_in_meeting"], false);
    assert_eq!(ameer["join_count"], 2);
    // A bad instant is refused before anything is sent.
    let url = app.url("");
    let out = rollcall(
        &[
            &["webhook", "--url", &url, "join", "--at", "5 parsecs"][..],
            &who,
        ]
        .concat(),
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--at"));
    app.shutdown().await;
}

/// A `rollcall watch` process whose stdout is read line by line.
struct Watcher {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Watcher {
    fn spawn(args: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .arg("watch")
            .args(args)
            .env("RUST_LOG", "warn")
            .env_remove("ROLLCALL_APP_KEY")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn rollcall watch");
        let stdout = child.stdout.take().unwrap();
        use tokio::io::AsyncBufReadExt;
        Self {
            child,
            lines: tokio::io::BufReader::new(stdout).lines(),
        }
    }

    /// The next stdout line that contains `needle` (earlier ones skipped).
    async fn line_with(&mut self, needle: &str, within: std::time::Duration) -> String {
        tokio::time::timeout(within, async {
            loop {
                let line = self.lines.next_line().await.unwrap();
                let line = line.unwrap_or_else(|| panic!("watch ended before {needle:?}"));
                if line.contains(needle) {
                    return line;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no line with {needle:?}"))
    }
}

#[tokio::test]
async fn watch_prints_a_readable_line_per_update_and_raw_frames_with_json() {
    let app = spawn_app().await;
    let ws = format!("ws://{}", app.addr);
    let mut readable = Watcher::spawn(&["--url", &ws, CHANNEL]);
    let mut raw = Watcher::spawn(&["--url", &ws, "--json", CHANNEL]);
    readable.line_with("subscribed to session.121", GUARD).await;
    raw.line_with("pusher_internal:subscription_succeeded session.121", GUARD)
        .await;
    let res = app
        .post_webhook(&joined(
            ROOM,
            "1_Ameer_Maher",
            "PA_w",
            rollcall::domain::now_millis() - 65_000,
            &event_id(),
        ))
        .await;
    assert_eq!(res.status(), 200);
    let line = readable.line_with("Ameer Maher", GUARD).await;
    let fields: Vec<&str> = line.split_whitespace().collect();
    // `HH:MM:SS  Ameer Maher  joined  0:01:05  no schedule`
    assert_eq!(fields[0].len(), 8, "{line}");
    assert_eq!(fields[1..4], ["Ameer", "Maher", "joined"], "{line}");
    assert!(fields[4].starts_with("0:01:0"), "{line}");
    assert!(line.ends_with("no schedule"), "{line}");
    let frame = raw.line_with("attendance.updated", GUARD).await;
    let json: Value = serde_json::from_str(frame.splitn(3, ' ').nth(2).unwrap()).unwrap();
    assert_eq!(json["attendance"]["identity"], "1_Ameer_Maher");
    // With a schedule, the verdict is "so far" until final.
    let starts = rollcall::domain::Timestamp(rollcall::domain::now_millis() - 60_000);
    let res = app
        .put_schedule(
            ROOM,
            &serde_json::json!({"starts_at": starts.to_rfc3339(), "duration_minutes": 60}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let line = readable.line_with("so far", GUARD).await;
    assert!(
        line.contains("in meeting, 1.") || line.contains("absent so far"),
        "{line}"
    );
    assert!(!line.contains("final"), "{line}");
    app.shutdown().await;
}

#[tokio::test]
async fn watch_reconnects_after_a_restart_closes_it_with_4200() {
    let port = crate::process::free_port();
    let server = crate::process::ServerProcess::spawn_on(port, &[]).await;
    let mut watcher = Watcher::spawn(&["--url", &format!("ws://127.0.0.1:{port}"), CHANNEL]);
    watcher.line_with("subscribed to session.121", GUARD).await;
    // A restart: SIGTERM closes every socket with 4200; the watcher
    // reconnects at once (refused while nothing listens, then backing
    // off from 1 s) and resubscribes to the new process.
    server.terminate().await;
    let server = crate::process::ServerProcess::spawn_on(port, &[]).await;
    watcher.line_with("subscribed to session.121", GUARD).await;
    let body = joined(
        ROOM,
        "2_Omar_Khaled",
        "PA_r",
        rollcall::domain::now_millis(),
        &event_id(),
    );
    let token = rollcall::livekit::sign_webhook(
        "devkey",
        "secret",
        body.as_bytes(),
        rollcall::domain::now_millis() / 1000,
        300,
    );
    let res = reqwest::Client::new()
        .post(server.url("/webhooks/livekit"))
        .header("Authorization", token)
        .header("Content-Type", "application/webhook+json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let line = watcher.line_with(" joined ", GUARD).await;
    assert!(line.contains("Ameer Maher"), "{line}");
    drop(server);
    let mut child = watcher.child;
    child.kill().await.unwrap();
    let stderr = child.wait_with_output().await.unwrap().stderr;
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(stderr.contains("closed by the server: 4200"), "{stderr}");
    assert!(stderr.contains("reconnecting now"), "{stderr}");
}

#[tokio::test]
async fn watch_stops_with_an_error_when_the_server_says_not_to_reconnect() {
    let app = spawn_app().await;
    let ws = format!("ws://{}", app.addr);
    let out = rollcall(&["watch", "--url", &ws, "--key", "no-such-key", CHANNEL]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("4001") && stderr.contains("not reconnecting"),
        "{stderr}"
    );
    app.shutdown().await;
}
