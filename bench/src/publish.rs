//! What the bench publishes: for rollcall, LiveKit webhooks signed the way
//! LiveKit signs them (each attendance-changing one yields one
//! `attendance.updated`); for the bare and Socket.IO servers, an HTTP
//! `POST /publish {room, event, data}` with a payload of similar size.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rollcall::livekit::sign_webhook;
use rollcall::pusher::auth::{body_md5_hex, sign_http_api};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::servers::Target;
use crate::stats::Latencies;
use crate::track::Tracker;

pub const KEY: &str = "devkey";
pub const SECRET: &str = "secret";

/// Which room and person a sequence number stands for. Rooms are
/// `bench-quran-session-{id}` (channel `session.{id}`), people
/// `{uid}_Bench_User`. Round-robin over rooms; within a room each person
/// joins with a fresh sid, then (a whole round later) leaves it, so the
/// state per room stays bounded and every event changes someone.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub rooms: u64,
    pub people_per_room: u64,
    /// Distinguishes runs against a long-lived server (event ids stay unique).
    pub nonce: u32,
}

pub struct Event {
    pub room: u64,
    pub uid: u64,
    pub leave: bool,
    pub connection: u64,
}

impl Plan {
    pub fn room_id(&self, r: u64) -> u64 {
        1000 + r
    }

    pub fn room_name(&self, r: u64) -> String {
        format!("bench-quran-session-{}", self.room_id(r))
    }

    pub fn channel(&self, r: u64) -> String {
        format!("session.{}", self.room_id(r))
    }

    pub fn event(&self, seq: u64) -> Event {
        let room = seq % self.rooms;
        let k = seq / self.rooms;
        let person = k % self.people_per_room;
        Event {
            room,
            uid: room * self.people_per_room + person + 1,
            leave: (k / self.people_per_room) % 2 == 1,
            connection: k / (2 * self.people_per_room),
        }
    }

    /// The webhook body for `seq`, in LiveKit's protojson shape. Event ids
    /// sort by seq, so the latest display name (which carries the marker)
    /// always wins in rollcall's state.
    pub fn webhook_body(&self, seq: u64, now_ms: i64) -> String {
        let e = self.event(seq);
        let created = (now_ms / 1000).to_string();
        let mut participant = json!({
            "sid": format!("PA_b{}x{}", e.uid, e.connection),
            "identity": format!("{}_Bench_User", e.uid),
            "name": format!("Bench ~S{seq}~"),
            "state": if e.leave { "DISCONNECTED" } else { "ACTIVE" },
        });
        if !e.leave {
            participant["joinedAt"] = json!(created);
            participant["joinedAtMs"] = json!(now_ms.to_string());
        }
        json!({
            "event": if e.leave { "participant_left" } else { "participant_joined" },
            "room": {"sid": format!("RM_bench{}", self.room_id(e.room)), "name": self.room_name(e.room)},
            "participant": participant,
            "id": format!("EV_{:05}{:012}", self.nonce, seq),
            "createdAt": created,
        })
        .to_string()
    }

    /// The `data` string of a plain publish: about as large as rollcall's
    /// `attendance.updated` data for one person with a few cycles.
    fn publish_data(&self, seq: u64, pad: usize) -> (String, String) {
        let e = self.event(seq);
        let data = json!({
            "user_id": e.uid,
            "attendance": {"name": format!("Bench ~S{seq}~"), "pad": "x".repeat(pad)},
        })
        .to_string();
        (self.channel(e.room), data)
    }

    /// `POST /publish` body for the peers.
    pub fn publish_body(&self, seq: u64, pad: usize) -> String {
        let (channel, data) = self.publish_data(seq, pad);
        json!({"room": channel, "event": "attendance.updated", "data": data}).to_string()
    }

    /// Pusher HTTP API `POST /apps/{id}/events` body for rollcall: the
    /// same event, channel and data as [`Self::publish_body`].
    pub fn pusher_api_body(&self, seq: u64, pad: usize) -> String {
        let (channel, data) = self.publish_data(seq, pad);
        json!({"name": "attendance.updated", "channel": channel, "data": data}).to_string()
    }
}

/// How rollcall is driven: a signed LiveKit webhook (the attendance path:
/// verify, engine, store, then broadcast) or a Pusher HTTP API publish
/// (the same job as the peers' `POST /publish`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    Webhook,
    Api,
}

/// rollcall's dev Pusher app (the server's defaults).
const APP_ID: &str = "rollcall";
const APP_KEY: &str = "rollcall-key";
const APP_SECRET: &str = "rollcall-secret";

/// A ready-to-send request.
pub struct Request {
    pub body: bytes::Bytes,
    pub authorization: Option<String>,
    /// A signed query string (Pusher HTTP API).
    pub query: Option<String>,
}

/// Sends to one server, the way its target is driven.
#[derive(Clone)]
pub struct Publisher {
    http: reqwest::Client,
    url: String,
    target: Target,
    via: Via,
    pub plan: Plan,
    pub pad: usize,
}

impl Publisher {
    /// rollcall driven by webhooks, the peers by `POST /publish`.
    pub fn new(base: &str, target: Target, plan: Plan, pad: usize) -> Self {
        Self::via(base, target, Via::Webhook, plan, pad)
    }

    /// As [`Self::new`], with rollcall driven `via` webhooks or its API.
    pub fn via(base: &str, target: Target, via: Via, plan: Plan, pad: usize) -> Self {
        let path = match (target, via) {
            (Target::Rollcall, Via::Webhook) => "/webhooks/livekit".to_string(),
            (Target::Rollcall, Via::Api) => format!("/apps/{APP_ID}/events"),
            _ => "/publish".to_string(),
        };
        Self {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .tcp_nodelay(true)
                // Every send ends: a server that never answers counts as
                // an error instead of holding a scenario open.
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            url: format!("{base}{path}"),
            target,
            via,
            plan,
            pad,
        }
    }

    pub fn request(&self, seq: u64) -> Request {
        match (self.target, self.via) {
            (Target::Rollcall, Via::Webhook) => {
                let now_ms = rollcall::domain::now_millis();
                let body = self.plan.webhook_body(seq, now_ms);
                let auth = sign_webhook(KEY, SECRET, body.as_bytes(), now_ms / 1000, 600);
                Request {
                    body: body.into(),
                    authorization: Some(auth),
                    query: None,
                }
            }
            (Target::Rollcall, Via::Api) => {
                let body = self.plan.pusher_api_body(seq, self.pad);
                let timestamp = (rollcall::domain::now_millis() / 1000).to_string();
                let md5 = body_md5_hex(body.as_bytes());
                let pairs = [
                    ("auth_key", APP_KEY),
                    ("auth_timestamp", timestamp.as_str()),
                    ("auth_version", "1.0"),
                    ("body_md5", md5.as_str()),
                ];
                let path = format!("/apps/{APP_ID}/events");
                let signature = sign_http_api(APP_SECRET, "POST", &path, &pairs);
                let query = format!(
                    "auth_key={APP_KEY}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={md5}&auth_signature={signature}"
                );
                Request {
                    body: body.into(),
                    authorization: None,
                    query: Some(query),
                }
            }
            _ => Request {
                body: self.plan.publish_body(seq, self.pad).into(),
                authorization: None,
                query: None,
            },
        }
    }

    /// Sends one request; `Ok(true)` on 2xx.
    pub async fn send(&self, req: &Request) -> Result<bool, reqwest::Error> {
        let mut b = match &req.query {
            Some(q) => self.http.post(format!("{}?{q}", self.url)),
            None => self.http.post(&self.url),
        }
        .body(req.body.clone());
        b = match &req.authorization {
            Some(a) => b
                .header("Content-Type", "application/webhook+json")
                .header("Authorization", a.as_str()),
            None => b.header("Content-Type", "application/json"),
        };
        let r = b.send().await?;
        let ok = r.status().is_success();
        let _ = r.bytes().await?;
        Ok(ok)
    }
}

/// What a sending phase did.
#[derive(Default, Debug)]
pub struct Sent {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// How far behind its schedule the sender fell at worst.
    pub max_lag: Duration,
    pub elapsed: Duration,
}

/// Outcomes of sends shared by many sending tasks.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn record(&self, result: Result<bool, reqwest::Error>) {
        match result {
            Ok(true) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            other => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| format!("{other:?}"));
            }
        }
    }

    fn totals(&self) -> (u64, u64, Option<String>) {
        (
            self.ok.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.first_error.lock().unwrap().clone(),
        )
    }
}

/// Open loop: sends seqs `from..from+count` at `rate` per second, each
/// stamped in `tracker` right before it leaves, with at most `in_flight`
/// outstanding (past that the schedule slips, reported as `max_lag`).
pub async fn at_rate(
    publisher: &Publisher,
    tracker: &Arc<Tracker>,
    from: u64,
    count: u64,
    rate: f64,
    in_flight: usize,
    request_latency: Option<Arc<Latencies>>,
) -> Sent {
    at_rate_spread(
        std::slice::from_ref(publisher),
        tracker,
        from,
        count,
        rate,
        in_flight,
        request_latency,
    )
    .await
}

/// Which of `n` servers gets `seq`: a multiplicative hash, so the choice
/// is independent of the room (`seq % rooms`), as a load balancer's is.
pub fn spread(seq: u64, n: usize) -> usize {
    ((seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % n.max(1) as u64) as usize
}

/// [`at_rate`] over several servers (nodes of one cluster): each seq goes
/// to `publishers[spread(seq, len)]`.
pub async fn at_rate_spread(
    publishers: &[Publisher],
    tracker: &Arc<Tracker>,
    from: u64,
    count: u64,
    rate: f64,
    in_flight: usize,
    request_latency: Option<Arc<Latencies>>,
) -> Sent {
    let gate = Arc::new(Semaphore::new(in_flight));
    let tally = Arc::new(Tally::default());
    let start = tokio::time::Instant::now();
    let mut max_lag = Duration::ZERO;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let permit = gate.clone().acquire_owned().await.expect("open semaphore");
        max_lag = max_lag.max(tokio::time::Instant::now().saturating_duration_since(due));
        let seq = from + i;
        let (p, t, tally, lat) = (
            publishers[spread(seq, publishers.len())].clone(),
            tracker.clone(),
            tally.clone(),
            request_latency.clone(),
        );
        tasks.spawn(async move {
            let req = p.request(seq);
            t.mark_sent(seq);
            let t0 = Instant::now();
            let result = p.send(&req).await;
            if let Some(l) = lat {
                l.record(seq as usize, t0.elapsed());
            }
            tally.record(result);
            drop(permit);
        });
        // Reap finished tasks as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let (ok, errors, first_error) = tally.totals();
    Sent {
        ok,
        errors,
        first_error,
        max_lag,
        elapsed: start.elapsed(),
    }
}

/// Closed loop: `workers` senders each send their share of `requests` back
/// to back until done or `deadline`; returns (accepted, errors, elapsed).
pub async fn closed_loop(
    publisher: &Publisher,
    requests: Arc<Vec<Request>>,
    workers: usize,
    deadline: Duration,
    latency: Arc<Latencies>,
) -> (u64, u64, Option<String>, Duration) {
    closed_loop_over(
        std::slice::from_ref(publisher),
        requests,
        workers,
        deadline,
        latency,
    )
    .await
}

/// [`closed_loop`] spread over several servers: request `i` goes to
/// `publishers[i % publishers.len()]`, round robin.
pub async fn closed_loop_over(
    publishers: &[Publisher],
    requests: Arc<Vec<Request>>,
    workers: usize,
    deadline: Duration,
    latency: Arc<Latencies>,
) -> (u64, u64, Option<String>, Duration) {
    assert!(!publishers.is_empty(), "at least one publisher");
    let publishers: Arc<Vec<Publisher>> = Arc::new(publishers.to_vec());
    let next = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (p, reqs, next, tally, lat) = (
            publishers.clone(),
            requests.clone(),
            next.clone(),
            tally.clone(),
            latency.clone(),
        );
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= reqs.len() || start.elapsed() > deadline {
                    break;
                }
                let t0 = Instant::now();
                let r = p[i % p.len()].send(&reqs[i]).await;
                lat.record(w, t0.elapsed());
                tally.record(r);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let (ok, errors, first_error) = tally.totals();
    (ok, errors, first_error, start.elapsed())
}
