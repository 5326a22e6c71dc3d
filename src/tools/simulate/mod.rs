//! `rollcall simulate`: plays a realistic meeting against a running server,
//! in real time: a schedule a little after now, people who join during
//! preparation, on time and late, a reconnect, two tabs, a lost leave
//! (closed by the server's heartbeat timeout), an expected person who
//! never comes, heartbeats from every open page, and `room_finished`.
//! What happens when is decided up front by [`plan::Plan`]; this module
//! sends it, as LiveKit and the meeting pages would.

pub mod plan;

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::config::{DEV_APP_SECRET, DEV_LIVEKIT_KEY, DEV_LIVEKIT_SECRET};
use crate::domain::{Timestamp, now_millis};
use crate::livekit::sign_access_token;
use crate::tools::roster_line;
use crate::tools::webhook::{SimEvent, Who, body_for, connection_sid, post};
use plan::{Act, Plan, Shape};

/// One request; the server answers in milliseconds.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The server's base URL.
    #[arg(long, env = "ROLLCALL_URL", default_value = "http://127.0.0.1:6001")]
    pub url: String,
    /// LiveKit room name; by default a fresh
    /// `itqan-academy-quran-session-<random id>`, so runs never mix.
    #[arg(long)]
    pub room: Option<String>,
    /// The channel shown in the dashboard URL; by default the default
    /// template's `session.{id}` (pass it if ROLLCALL_CHANNEL_TEMPLATE
    /// differs).
    #[arg(long)]
    pub channel: Option<String>,
    /// How many people are expected (the first nine each play a different
    /// case; more come on time).
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub people: u16,
    /// The session's length in whole minutes (the schedule's
    /// `duration_minutes`); every event scales with it.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1440))]
    pub minutes: u32,
    /// Preparation time before the session starts.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub prep: Duration,
    /// How often an open meeting page heartbeats; by default a twelfth of
    /// the session, between 5 s (under the server's per-person rate
    /// limit) and 60 s (what a real page does).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub heartbeat_every: Option<Duration>,
    /// Fixes every choice (names, times, jitter); random by default.
    #[arg(long)]
    pub seed: Option<u64>,
    /// After `room_finished`, wait up to this long for the session to be
    /// final (`ROLLCALL_FINALIZE_DELAY` after the end) and print the final
    /// roster.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub wait_final: Option<Duration>,
    /// Wait up to this long for the server's `/readyz` before starting.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub wait_ready: Duration,
    #[arg(long, env = "LIVEKIT_API_KEY", default_value = DEV_LIVEKIT_KEY)]
    pub key: String,
    #[arg(long, env = "LIVEKIT_API_SECRET", default_value = DEV_LIVEKIT_SECRET, hide_env_values = true)]
    pub secret: String,
    /// The session API's bearer token (for the schedule).
    #[arg(long, env = "ROLLCALL_APP_SECRET", default_value = DEV_APP_SECRET, hide_env_values = true)]
    pub app_secret: String,
}

/// The session id in a room name of the default pattern (`…-session-<id>`).
fn session_id(room: &str) -> Option<&str> {
    let id = room.rsplit_once("-session-")?.1;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some(id)
}

/// The default heartbeat interval for a session of `minutes`.
fn heartbeat_every(minutes: u32) -> Duration {
    (Duration::from_secs(u64::from(minutes) * 60) / 12)
        .clamp(Duration::from_secs(5), Duration::from_secs(60))
}

struct Sim {
    http: reqwest::Client,
    base: String,
    room: String,
    args: SimulateArgs,
    plan: Plan,
    /// The instant the plan's offsets count from.
    t0: tokio::time::Instant,
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let room = args.room.clone().unwrap_or_else(|| {
        // Not from the seed: a repeated seed must not land in a room that
        // already holds the last run's people.
        format!(
            "itqan-academy-quran-session-{}",
            rand::random_range(100_000..1_000_000u32)
        )
    });
    let channel = match (&args.channel, session_id(&room)) {
        (Some(c), _) => c.clone(),
        (None, Some(id)) => format!("session.{id}"),
        (None, None) => bail!("room {room} has no session id (…-session-<digits>): pass --channel"),
    };
    let base = args.url.trim_end_matches('/').to_string();
    let plan = Plan::new(Shape {
        people: usize::from(args.people),
        prep: args.prep,
        minutes: args.minutes,
        heartbeat_every: args
            .heartbeat_every
            .unwrap_or_else(|| heartbeat_every(args.minutes)),
        seed,
    });
    let http = crate::outbound::client(TIMEOUT).context("cannot make an HTTPS client")?;
    wait_ready(&http, &base, args.wait_ready).await?;
    println!("dashboard: {base}/?channel={channel}&room={room}");
    println!(
        "simulating {} people in {room} (seed {seed}): {} s of preparation, then {} min",
        plan.people.len(),
        args.prep.as_secs(),
        plan.minutes
    );
    let sim = Sim {
        http,
        base,
        room,
        args,
        plan,
        t0: tokio::time::Instant::now(),
    };
    sim.put_schedule().await?;
    let steps = sim.plan.steps.clone();
    for step in steps {
        tokio::time::sleep_until(sim.t0 + step.at).await;
        sim.act(&step.act).await?;
    }
    if let Some(limit) = sim.args.wait_final {
        sim.wait_final(limit).await?;
    }
    Ok(())
}

/// Polls `/readyz` until it answers 200, for at most `limit`.
async fn wait_ready(http: &reqwest::Client, base: &str, limit: Duration) -> anyhow::Result<()> {
    if limit.is_zero() {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{base}/readyz did not answer 200 within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Sim {
    /// `+m:ss` since the start, then the local time: what a line starts with.
    fn say(&self, what: &str) {
        let offset = self.t0.elapsed().as_secs();
        println!(
            "{}  +{}:{:02}  {what}",
            chrono::Local::now().format("%H:%M:%S"),
            offset / 60,
            offset % 60
        );
    }

    async fn put_schedule(&self) -> anyhow::Result<()> {
        let starts_at = now_millis() + i64::try_from(self.plan.starts_after.as_millis())?;
        let expected: Vec<&str> = self
            .plan
            .people
            .iter()
            .map(|p| p.identity.as_str())
            .collect();
        let body = json!({
            "starts_at": Timestamp(starts_at).to_rfc3339(),
            "duration_minutes": self.plan.minutes,
            "expected": expected,
        });
        let url = format!("{}/api/sessions/{}/schedule", self.base, self.room);
        let res = self
            .http
            .put(&url)
            .bearer_auth(&self.args.app_secret)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        refused_unless_ok("PUT schedule", status, &text)?;
        self.say(&format!(
            "schedule: starts {} for {} min, {} expected",
            body["starts_at"].as_str().unwrap_or_default(),
            self.plan.minutes,
            expected.len()
        ));
        Ok(())
    }

    async fn act(&self, act: &Act) -> anyhow::Result<()> {
        match act {
            Act::Join {
                person,
                connection,
                why,
            } => {
                let (body, sid) = self.participant_event(*person, *connection, true);
                self.webhook(body).await?;
                let name = &self.plan.people[*person].name;
                self.say(&format!(
                    "{name} joins ({why}; connection {connection}, {sid})"
                ));
            }
            Act::Leave {
                person,
                connection,
                why,
            } => {
                let (body, sid) = self.participant_event(*person, *connection, false);
                self.webhook(body).await?;
                let name = &self.plan.people[*person].name;
                self.say(&format!(
                    "{name} leaves ({why}; connection {connection}, {sid})"
                ));
            }
            Act::GoesSilent { person } => {
                let name = &self.plan.people[*person].name;
                self.say(&format!(
                    "{name}'s connection drops: no leave webhook, no more heartbeats \
                     (the server's heartbeat timeout will close it)"
                ));
            }
            Act::Heartbeats { people } => {
                for &p in people {
                    self.heartbeat(p).await?;
                }
                let names: Vec<&str> = people
                    .iter()
                    .map(|&p| self.plan.people[p].name.as_str())
                    .collect();
                self.say(&format!(
                    "heartbeats ({}): {}",
                    names.len(),
                    names.join(", ")
                ));
            }
            Act::RoomFinished => {
                let body = body_for(
                    &SimEvent::Finish {
                        room: self.room.clone(),
                        room_sid: self.room_sid(),
                    },
                    now_millis(),
                );
                self.webhook(body).await?;
                self.say("room_finished");
            }
        }
        Ok(())
    }

    /// A join or leave body for `person`'s `connection`, and its sid.
    fn participant_event(&self, person: usize, connection: u32, join: bool) -> (String, String) {
        let identity = self.plan.people[person].identity.clone();
        let sid = connection_sid(&self.room, &identity, connection);
        let who = Who {
            room: self.room.clone(),
            name: Some(self.plan.people[person].name.clone()),
            identity,
            sid: Some(sid.clone()),
            connection: None,
            room_sid: self.room_sid(),
        };
        let event = if join {
            SimEvent::Join(who)
        } else {
            SimEvent::Leave(who)
        };
        (body_for(&event, now_millis()), sid)
    }

    /// The room's sid, stable for the room as LiveKit's is for one meeting.
    fn room_sid(&self) -> String {
        format!("RM_{}", &connection_sid(&self.room, "", 0)[3..])
    }

    async fn webhook(&self, body: String) -> anyhow::Result<()> {
        let (status, text) = post(
            &self.http,
            &self.base,
            &self.args.key,
            &self.args.secret,
            body,
        )
        .await?;
        refused_unless_ok("webhook", status, &text)
    }

    async fn heartbeat(&self, person: usize) -> anyhow::Result<()> {
        let identity = &self.plan.people[person].identity;
        let token = sign_access_token(
            &self.args.key,
            &self.args.secret,
            identity,
            &self.room,
            now_millis() / 1000,
            3600,
        );
        let url = format!("{}/api/heartbeat", self.base);
        let res = self
            .http
            .post(&url)
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        refused_unless_ok(&format!("heartbeat of {identity}"), status, &text)
    }

    /// Polls the roster until it is final, then prints it.
    async fn wait_final(&self, limit: Duration) -> anyhow::Result<()> {
        self.say("waiting for the final verdict (ROLLCALL_FINALIZE_DELAY after the end)");
        let deadline = tokio::time::Instant::now() + limit;
        let url = format!("{}/api/sessions/{}/attendance", self.base, self.room);
        loop {
            let res = self
                .http
                .get(&url)
                .bearer_auth(&self.args.app_secret)
                .send()
                .await
                .with_context(|| format!("cannot reach {url}"))?;
            let status = res.status().as_u16();
            let text = res.text().await.unwrap_or_default();
            refused_unless_ok("GET attendance", status, &text)?;
            let roster: Value = serde_json::from_str(&text).context("the roster is not JSON")?;
            if roster["is_final"].as_bool() == Some(true) {
                self.say(&format!(
                    "final (revision {}):",
                    roster["revision"].as_u64().unwrap_or(0)
                ));
                for person in roster["participants"].as_array().into_iter().flatten() {
                    println!(
                        "{}",
                        roster_line::person(person, roster["generated_at"].as_str())
                    );
                }
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the session was not final within {limit:?} of room_finished");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// An error naming what was refused, with the server's answer.
fn refused_unless_ok(what: &str, status: u16, body: &str) -> anyhow::Result<()> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    bail!("the server refused the {what}: {status} {}", body.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_channel_comes_from_the_session_id() {
        assert_eq!(session_id("itqan-academy-quran-session-121"), Some("121"));
        assert_eq!(session_id("quran-session-x1"), None);
        assert_eq!(session_id("lobby"), None);
    }

    #[test]
    fn heartbeats_scale_with_the_session_within_limits() {
        assert_eq!(heartbeat_every(1), Duration::from_secs(5));
        assert_eq!(heartbeat_every(3), Duration::from_secs(15));
        assert_eq!(heartbeat_every(60), Duration::from_secs(60));
        assert_eq!(heartbeat_every(600), Duration::from_secs(60));
    }

    #[test]
    fn refusals_name_the_action_and_the_answer() {
        assert!(refused_unless_ok("webhook", 200, "").is_ok());
        let err = refused_unless_ok("webhook", 401, "{\"error\":\"unauthorized\"}\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the server refused the webhook: 401 {\"error\":\"unauthorized\"}"
        );
    }
}
