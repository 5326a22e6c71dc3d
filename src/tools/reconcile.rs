//! `rollcall reconcile <room> [--dry-run]`: asks a running server to check
//! a room against LiveKit's RoomService now (`POST
//! /api/sessions/{room}/reconcile`) and prints what changed, one line per
//! cycle — what the old system's `attendance:verify-livekit` was for.

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use crate::config::DEV_APP_SECRET;

/// LiveKit calls time out on the server (`ROLLCALL_LIVEKIT_TIMEOUT`); this
/// only bounds a server that does not answer at all.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// LiveKit room name, e.g. itqan-academy-quran-session-121.
    pub room: String,
    /// Only say what would change.
    #[arg(long)]
    pub dry_run: bool,
    /// The server's base URL.
    #[arg(long, env = "ROLLCALL_URL", default_value = "http://127.0.0.1:6001")]
    pub url: String,
    /// The session API's bearer token.
    #[arg(long, env = "ROLLCALL_APP_SECRET", default_value = DEV_APP_SECRET, hide_env_values = true)]
    pub app_secret: String,
    /// Print the server's JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: ReconcileArgs) -> anyhow::Result<()> {
    let url = format!(
        "{}/api/sessions/{}/reconcile{}",
        args.url.trim_end_matches('/'),
        args.room,
        if args.dry_run { "?dry_run=true" } else { "" }
    );
    let client = crate::outbound::client(TIMEOUT).context("cannot make an HTTPS client")?;
    let response = client
        .post(&url)
        .bearer_auth(&args.app_secret)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("{url} answered {status} without JSON"))?;
    if !status.is_success() {
        anyhow::bail!(
            "{} {}: {}",
            status.as_u16(),
            body["error"].as_str().unwrap_or("error"),
            body["message"].as_str().unwrap_or_default()
        );
    }
    if args.json {
        println!("{body}");
    } else {
        print!("{}", summary(&body));
    }
    Ok(())
}

/// The answer as an operator reads it.
pub fn summary(outcome: &Value) -> String {
    let would = if outcome["dry_run"] == true {
        "would be "
    } else {
        ""
    };
    let mut out = format!(
        "{room} at {at}: LiveKit {has} the room, {listed} in it\n",
        room = outcome["room"].as_str().unwrap_or_default(),
        at = outcome["taken_at"].as_str().unwrap_or_default(),
        has = if outcome["room_exists"] == true {
            "has"
        } else {
            "does not have"
        },
        listed = outcome["listed"],
    );
    for c in outcome["opened"].as_array().into_iter().flatten() {
        out += &format!(
            "  {would}opened  {} {} joined {}\n",
            c["identity"].as_str().unwrap_or_default(),
            c["participant_sid"].as_str().unwrap_or_default(),
            c["joined_at"].as_str().unwrap_or_default(),
        );
    }
    for c in outcome["closed"].as_array().into_iter().flatten() {
        out += &format!(
            "  {would}closed  user {} {} left {}\n",
            c["user_id"],
            c["participant_sid"].as_str().unwrap_or_default(),
            c["left_at"].as_str().unwrap_or_default(),
        );
    }
    if outcome["schedule_from_metadata"] == true {
        out += &format!("  {would}scheduled from the room metadata\n");
    }
    if outcome["changed"] != true {
        out += "  nothing to change\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_summary_says_what_changed_or_would() {
        let outcome = json!({
            "room": "x-quran-session-1", "dry_run": true, "taken_at": "2026-12-01T10:00:00.000Z",
            "room_exists": true, "listed": 2,
            "opened": [{"user_id": 1, "identity": "1_A", "participant_sid": "PA_a", "joined_at": "2026-12-01T09:58:00.000Z"}],
            "closed": [{"user_id": 2, "participant_sid": "PA_b", "left_at": "2026-12-01T09:50:00.000Z"}],
            "schedule_from_metadata": false, "changed": true,
        });
        assert_eq!(
            summary(&outcome),
            "x-quran-session-1 at 2026-12-01T10:00:00.000Z: LiveKit has the room, 2 in it\n  \
             would be opened  1_A PA_a joined 2026-12-01T09:58:00.000Z\n  \
             would be closed  user 2 PA_b left 2026-12-01T09:50:00.000Z\n"
        );
        let nothing = json!({"room": "r", "dry_run": false, "taken_at": "t", "room_exists": false,
            "listed": 0, "opened": [], "closed": [], "changed": false});
        assert!(summary(&nothing).contains("does not have the room, 0 in it\n  nothing to change"));
    }
}
