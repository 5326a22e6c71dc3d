//! `rollcall webhook join|leave|abort|finish`: posts a webhook signed the
//! way LiveKit signs it, to a running server.
//!
//! Participant sids: LiveKit gives every connection a new sid, and a cycle
//! is one sid's stay (rule 3). So the default sid is derived from (room,
//! identity, `--connection`): a `leave` with the same `--connection` closes
//! the cycle its `join` opened, and `--connection 2` is a re-join (or a
//! second tab) with a sid of its own. `--sid` names one explicitly instead.

use anyhow::Context;
use clap::{Args, Subcommand};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::json;

use crate::config::{DEV_LIVEKIT_KEY, DEV_LIVEKIT_SECRET};
use crate::livekit::sign_webhook;
use crate::tools::at::parse_at;

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
    /// When the event happened: an RFC 3339 instant or relative to now
    /// (`-5m`, `30s ago`). Sets `createdAt` (and a join's `joinedAt`), so a
    /// join can be backdated; the signature is still made now.
    #[arg(long, global = true, allow_hyphen_values = true)]
    pub at: Option<String>,
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
    /// Participant sid; by default one derived from room, identity and
    /// `--connection`, so a `leave` closes the cycle the matching `join`
    /// opened.
    #[arg(long, conflicts_with = "connection")]
    pub sid: Option<String>,
    /// Which connection of this person (default 1): LiveKit gives every
    /// connection a new sid, so a re-join after a leave, or a second tab,
    /// is `--connection 2`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub connection: Option<u32>,
    #[arg(long, default_value = "RM_simulated")]
    pub room_sid: String,
}

pub async fn run(args: WebhookArgs) -> anyhow::Result<()> {
    let now_ms = crate::domain::now_millis();
    let at_ms = match &args.at {
        // Whole seconds, as a leave's `createdAt` is: a join at -10m and a
        // leave at -2m then make exactly 8 minutes, not 7:59.999.
        Some(at) => parse_at(at, now_ms)
            .map(|ms| ms - ms.rem_euclid(1000))
            .map_err(|e| anyhow::anyhow!("--at {e}"))?,
        None => now_ms,
    };
    let body = body_for(&args.event, at_ms);
    if args.verbose {
        println!("{body}");
    }
    let client = crate::outbound::client(TIMEOUT).context("cannot make an HTTPS client")?;
    let (status, text) = post(&client, &args.url, &args.key, &args.secret, body).await?;
    println!("{status} {text}");
    anyhow::ensure!(
        (200..300).contains(&status),
        "the server refused the webhook"
    );
    Ok(())
}

/// Posts `body` to `{base}/webhooks/livekit`, signed now with `key`/`secret`
/// as LiveKit signs it (the token's time is the sending time, whatever the
/// body's `createdAt` says); answers the status and the response body.
/// Shared with `rollcall simulate`.
pub async fn post(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    secret: &str,
    body: String,
) -> anyhow::Result<(u16, String)> {
    let now_s = crate::domain::now_millis() / 1000;
    let token = sign_webhook(key, secret, body.as_bytes(), now_s, 300);
    let url = format!("{}/webhooks/livekit", base.trim_end_matches('/'));
    let response = client
        .post(&url)
        .header("Content-Type", "application/webhook+json")
        .header("Authorization", token)
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.unwrap_or_default()))
}

/// The sid of `identity`'s `connection`-th connection to `room`: distinct
/// for every (room, identity, connection), the same every time it is asked
/// (so a later `leave` finds its `join`), and shaped like LiveKit's
/// (`PA_` + 12 alphanumerics).
pub fn connection_sid(room: &str, identity: &str, connection: u32) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(room.as_bytes())
        .chain_update([0])
        .chain_update(identity.as_bytes())
        .chain_update([0])
        .chain_update(connection.to_be_bytes())
        .finalize();
    format!("PA_{}", &hex::encode(digest)[..12])
}

/// The display name LiveKit would carry for an identity
/// `{user_id}_{first}_{last}`: its name parts.
pub fn name_of(identity: &str) -> String {
    identity.split('_').skip(1).collect::<Vec<_>>().join(" ")
}

/// A webhook body in LiveKit's protojson shape (string int64s, zero
/// values omitted), for an event that happened at `at_ms`.
pub fn body_for(event: &SimEvent, at_ms: i64) -> String {
    let id = format!("EV_{}", Alphanumeric.sample_string(&mut rand::rng(), 12));
    let created = at_ms.div_euclid(1000).to_string();
    let value = match event {
        SimEvent::Finish { room, room_sid } => json!({
            "event": "room_finished",
            "room": {"sid": room_sid, "name": room},
            "id": id, "createdAt": created,
        }),
        SimEvent::Join(who) | SimEvent::Leave(who) | SimEvent::Abort(who) => {
            let name = who.name.clone().unwrap_or_else(|| name_of(&who.identity));
            let sid = who.sid.clone().unwrap_or_else(|| {
                connection_sid(&who.room, &who.identity, who.connection.unwrap_or(1))
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
                participant["joinedAtMs"] = json!(at_ms.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::Value;

    /// `rollcall webhook …` as the command line would parse it.
    fn parse(argv: &[&str]) -> Result<WebhookArgs, clap::Error> {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: WebhookArgs,
        }
        let mut full = vec!["webhook"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full).map(|c| c.args)
    }

    fn body(argv: &[&str], at_ms: i64) -> Value {
        let args = parse(argv).unwrap();
        serde_json::from_str(&body_for(&args.event, at_ms)).unwrap()
    }

    const WHO: [&str; 4] = ["--room", "r-quran-session-1", "--identity", "1_Ameer_Maher"];

    #[test]
    fn a_connection_is_one_stable_sid_of_its_own() {
        let sid = |argv: &[&str]| body(argv, 0)["participant"]["sid"].clone();
        let first_join = sid(&[&["join"][..], &WHO].concat());
        assert_eq!(first_join, sid(&[&["leave"][..], &WHO].concat()));
        assert_eq!(
            first_join,
            sid(&[&["leave"][..], &WHO, &["--connection", "1"]].concat()),
            "connection 1 is the default"
        );
        let second = sid(&[&["join"][..], &WHO, &["--connection", "2"]].concat());
        assert_ne!(first_join, second, "a re-join is a new sid");
        assert_eq!(
            second,
            sid(&[&["leave"][..], &WHO, &["--connection", "2"]].concat())
        );
        let s = second.as_str().unwrap();
        assert!(s.starts_with("PA_") && s.len() == 15, "{s}");
        // Distinct across rooms and identities too.
        assert_ne!(connection_sid("a", "1_A", 1), connection_sid("b", "1_A", 1));
        assert_ne!(connection_sid("a", "1_A", 1), connection_sid("a", "2_A", 1));
        // An explicit sid wins, and cannot be mixed with --connection.
        assert_eq!(
            sid(&[&["join"][..], &WHO, &["--sid", "PA_x"]].concat()),
            "PA_x"
        );
        assert!(
            parse(&[&["join"][..], &WHO, &["--sid", "PA_x", "--connection", "2"]].concat())
                .is_err()
        );
        assert!(parse(&[&["join"][..], &WHO, &["--connection", "0"]].concat()).is_err());
    }

    #[test]
    fn the_instant_sets_created_at_and_a_join_s_time() {
        let at = 1_763_719_200_123;
        let join = body(&[&["join"][..], &WHO].concat(), at);
        assert_eq!(join["createdAt"], "1763719200");
        assert_eq!(join["participant"]["joinedAt"], "1763719200");
        assert_eq!(join["participant"]["joinedAtMs"], "1763719200123");
        assert_eq!(join["participant"]["name"], "Ameer Maher");
        let leave = body(&[&["leave"][..], &WHO].concat(), at);
        assert_eq!(leave["createdAt"], "1763719200");
        assert_eq!(leave["event"], "participant_left");
        let finish = body(&["finish", "--room", "r"], at);
        assert_eq!(finish["createdAt"], "1763719200");
        // `--at` is accepted before or after the event, hyphen and all.
        let args = parse(&[&["join"][..], &WHO, &["--at", "-5m"]].concat()).unwrap();
        assert_eq!(args.at.as_deref(), Some("-5m"));
        let args = parse(&[
            "--at",
            "30s ago",
            "leave",
            "--room",
            "r",
            "--identity",
            "1_A",
        ])
        .unwrap();
        assert_eq!(args.at.as_deref(), Some("30s ago"));
    }
}
