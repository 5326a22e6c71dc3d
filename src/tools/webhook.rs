//! `rollcall webhook join|leave|abort|finish`: posts a webhook signed the
//! way LiveKit signs it, to a running server.

use anyhow::Context;
use clap::{Args, Subcommand};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::json;

use crate::config::{DEV_LIVEKIT_KEY, DEV_LIVEKIT_SECRET};
use crate::livekit::sign_webhook;

/// A whole request, answer included; the server answers in milliseconds.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct WebhookArgs {
    #[command(subcommand)]
    pub event: SimEvent,
    /// The server's base URL, `http://` or `https://` (e.g. behind a TLS
    /// proxy; a private CA is trusted through SSL_CERT_FILE).
    #[arg(
        long,
        global = true,
        env = "ROLLCALL_URL",
        default_value = "http://127.0.0.1:6001"
    )]
    pub url: String,
    #[arg(long, global = true, env = "LIVEKIT_API_KEY", default_value = DEV_LIVEKIT_KEY)]
    pub key: String,
    #[arg(long, global = true, env = "LIVEKIT_API_SECRET", default_value = DEV_LIVEKIT_SECRET, hide_env_values = true)]
    pub secret: String,
    /// Print the body that was sent.
    #[arg(long, global = true)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum SimEvent {
    /// participant_joined
    Join(Who),
    /// participant_left
    Leave(Who),
    /// participant_connection_aborted
    Abort(Who),
    /// room_finished
    Finish {
        #[arg(long)]
        room: String,
        #[arg(long, default_value = "RM_simulated")]
        room_sid: String,
    },
}

#[derive(Debug, Args)]
pub struct Who {
    /// LiveKit room name, e.g. itqan-academy-quran-session-121.
    #[arg(long)]
    pub room: String,
    /// Participant identity, e.g. 1_Ameer_Maher.
    #[arg(long)]
    pub identity: String,
    /// Display name; defaults to the identity's name parts.
    #[arg(long)]
    pub name: Option<String>,
    /// Participant sid; by default `PA_<identity>_<connection>`, so a
    /// `leave` closes the cycle the matching `join` opened.
    #[arg(long)]
    pub sid: Option<String>,
    /// Which connection of this person: LiveKit gives every connection a
    /// new sid, so a re-join after a leave is `--connection 2`.
    #[arg(long, default_value_t = 1)]
    pub connection: u32,
    #[arg(long, default_value = "RM_simulated")]
    pub room_sid: String,
}

pub async fn run(args: WebhookArgs) -> anyhow::Result<()> {
    let now_ms = crate::domain::now_millis();
    let body = body_for(&args.event, now_ms);
    if args.verbose {
        println!("{body}");
    }
    let token = sign_webhook(&args.key, &args.secret, body.as_bytes(), now_ms / 1000, 300);
    let url = format!("{}/webhooks/livekit", args.url.trim_end_matches('/'));
    let client = crate::outbound::client(TIMEOUT).context("cannot make an HTTPS client")?;
    let response = client
        .post(&url)
        .header("Content-Type", "application/webhook+json")
        .header("Authorization", token)
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    println!("{} {}", status.as_u16(), text);
    anyhow::ensure!(status.is_success(), "the server refused the webhook");
    Ok(())
}

/// A webhook body in LiveKit's protojson shape (string int64s, zero
/// values omitted).
pub fn body_for(event: &SimEvent, now_ms: i64) -> String {
    let id = format!("EV_{}", Alphanumeric.sample_string(&mut rand::rng(), 12));
    let created = (now_ms / 1000).to_string();
    let value = match event {
        SimEvent::Finish { room, room_sid } => json!({
            "event": "room_finished",
            "room": {"sid": room_sid, "name": room},
            "id": id, "createdAt": created,
        }),
        SimEvent::Join(who) | SimEvent::Leave(who) | SimEvent::Abort(who) => {
            let name = who.name.clone().unwrap_or_else(|| {
                who.identity
                    .split('_')
                    .skip(1)
                    .collect::<Vec<_>>()
                    .join(" ")
            });
            let sid = who.sid.clone().unwrap_or_else(|| {
                let clean: String = who
                    .identity
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .collect();
                format!("PA_sim{clean}")
            });
            let (kind, state) = match event {
                SimEvent::Join(_) => ("participant_joined", "ACTIVE"),
                SimEvent::Leave(_) => ("participant_left", "DISCONNECTED"),
                _ => ("participant_connection_aborted", "DISCONNECTED"),
            };
            let mut participant = json!({"sid": sid, "identity": who.identity, "state": state});
            if !name.is_empty() {
                participant["name"] = json!(name);
            }
            if matches!(event, SimEvent::Join(_)) {
                participant["joinedAt"] = json!(created);
                participant["joinedAtMs"] = json!(now_ms.to_string());
            }
            json!({
                "event": kind,
                "room": {"sid": who.room_sid, "name": who.room},
                "participant": participant,
                "id": id, "createdAt": created,
            })
        }
    };
    value.to_string()
}
