//! `make demo`'s script (scripts/demo.sh) run whole with a 1-minute
//! meeting: the simulated session ends final with the verdicts the
//! simulation was written to produce, and Ctrl-C leaves no server behind.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use crate::helpers::APP_SECRET;
use crate::process::free_port;

/// 5 s of preparation, a 1-minute session, room_finished ~2 s after its
/// end, final 5 s later (+ a 2 s sweep): about 75 s; the rest is slack for
/// a loaded machine.
const WHOLE_RUN: Duration = Duration::from_secs(150);

#[tokio::test]
async fn make_demo_plays_a_meeting_to_its_final_roster_and_stops_on_ctrl_c() {
    let port = free_port();
    let room = "itqan-academy-quran-session-424242";
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("ROLLCALL_BIN", env!("CARGO_BIN_EXE_rollcall"))
        .env("DEMO_PORT", port.to_string())
        .env("DEMO_MINUTES", "1")
        .env("DEMO_PREP", "5s")
        .env("DEMO_FINALIZE_DELAY", "5s")
        .env("DEMO_SEED", "11")
        .env("DEMO_ROOM", room)
        .env(
            "DEMO_LOG",
            std::env::temp_dir().join(format!("rollcall-demo-{port}.log")),
        )
        .stdout(std::process::Stdio::piped())
        // Its own process group, like a shell job: Ctrl-C is SIGINT to it.
        .process_group(0);
    for (key, _) in std::env::vars() {
        if key.starts_with("ROLLCALL_") || key.starts_with("LIVEKIT_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    let mut demo = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .expect("run scripts/demo.sh");
    let pgid = libc::pid_t::try_from(demo.id().unwrap()).unwrap();
    // Whatever happens to this test (a failed assertion included), the
    // script's group, server and all, is gone when it ends: kill_on_drop
    // alone would SIGKILL bash only, whose trap could then not stop the
    // server.
    let _group = KillGroupOnDrop(pgid);
    let mut lines = tokio::io::BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let waited = tokio::time::timeout(WHOLE_RUN, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.contains("keeps running");
            seen.push(line);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    if !matches!(waited, Ok(true)) {
        panic!("the demo did not reach its end:\n{}", seen.join("\n"));
    }
    let output = seen.join("\n");
    assert!(
        output.contains(&format!(
            "http://127.0.0.1:{port}/?channel=session.424242&room={room}"
        )),
        "the dashboard URL:\n{output}"
    );
    for step in [
        "schedule:",
        "heartbeats",
        "re-joins",
        "a second tab",
        "connection drops",
        "room_finished",
        "final (revision",
    ] {
        assert!(output.contains(step), "{step}:\n{output}");
    }

    // The server is still up: the roster is final, with every verdict.
    let roster: Value = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{port}/api/sessions/{room}/attendance"
        ))
        .bearer_auth(APP_SECRET)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(roster["is_final"], true, "{roster}");
    let people = roster["participants"].as_array().unwrap();
    assert_eq!(people.len(), 9, "{roster}");
    let mut verdicts = BTreeMap::new();
    for p in people {
        assert_eq!(p["is_final"], true);
        *verdicts
            .entry(p["attendance_status"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    let expected: BTreeMap<String, i32> =
        [("present", 5), ("late", 1), ("partial", 2), ("absent", 1)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
    assert_eq!(verdicts, expected, "{roster}");
    let closed_by: Vec<&str> = people
        .iter()
        .flat_map(|p| p["cycles"].as_array().unwrap())
        .filter_map(|c| c["closed_by"].as_str())
        .collect();
    for how in ["webhook", "heartbeat_timeout"] {
        assert!(closed_by.contains(&how), "{how}: {closed_by:?}");
    }
    // The one still there when the room finished: room_finished closed the
    // cycle after the end, so once final the earlier estimate, the
    // session's end, is what the roster says (ATTENDANCE_RULES.md 14, 20).
    assert!(closed_by.contains(&"session_end"), "{closed_by:?}");
    let two_cycles = people
        .iter()
        .filter(|p| p["cycles"].as_array().unwrap().len() == 2)
        .count();
    assert_eq!(two_cycles, 2, "the reconnect and the two tabs");

    // Ctrl-C: the script stops the server and exits; nothing listens after.
    // SAFETY: kill(2) on the process group we created.
    unsafe { libc::kill(-pgid, libc::SIGINT) };
    let status = tokio::time::timeout(Duration::from_secs(20), demo.wait())
        .await
        .expect("the demo exits on Ctrl-C")
        .unwrap();
    assert!(!status.success(), "interrupted: {status:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server is gone"
    );
}

/// SIGKILLs a process group when dropped.
struct KillGroupOnDrop(libc::pid_t);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group the test created; after a
        // clean run it is already gone (ESRCH, ignored).
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }
}
