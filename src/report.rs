//! Reports: the roster object (`GET /api/sessions/{room}/attendance`, CSV
//! too) and the delivery of the final report to
//! `ROLLCALL_REPORT_WEBHOOK_URL` (rule 20), signed, retried with backoff
//! until accepted, never blocking anything else.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashSet;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{RoomName, Timestamp, UnixMillis};
use crate::engine::{Attendance, RoomState, Session};
use crate::metrics::Metrics;
use crate::outbound::{self, OutboundError};
use crate::rooms::Rooms;

pub const SIGNATURE_HEADER: &str = "X-Rollcall-Signature";
pub const FINALIZED_EVENT: &str = "attendance.finalized";

/// The contract's roster object for a room at `now`.
pub fn roster(rooms: &Rooms, session: &Session, state: &RoomState, now: UnixMillis) -> Value {
    let participants = rooms.view(session, state).roster(now);
    json!({
        "room": session.room,
        "session_id": session.session_id,
        "session_type": session.session_type,
        "channel": session.channel,
        "schedule": state.effective_schedule(),
        "is_final": state.finalization.is_final(),
        "revision": state.finalization.revision,
        "generated_at": Timestamp(now),
        "participants": participants,
    })
}

pub const CSV_HEADER: &str = "identity,user_id,name,first_join_time,last_leave_time,duration_seconds,duration_minutes,attendance_percentage,attendance_status,is_late,join_count";

/// The roster as CSV, one row per person, the contract's header first.
pub fn roster_csv(participants: &[Attendance]) -> String {
    let mut out = String::with_capacity(128 * (participants.len() + 1));
    out.push_str(CSV_HEADER);
    out.push('\n');
    for a in participants {
        let opt_time = |t: Option<Timestamp>| t.map(Timestamp::to_rfc3339).unwrap_or_default();
        let status = a.attendance_status.map(|s| s.as_str()).unwrap_or_default();
        let fields = [
            a.identity.clone(),
            a.user_id.to_string(),
            a.name.clone(),
            opt_time(a.first_join_time),
            opt_time(a.last_leave_time),
            a.duration_seconds.to_string(),
            a.duration_minutes.to_string(),
            a.attendance_percentage
                .map(|p| format!("{p:.1}"))
                .unwrap_or_default(),
            status.to_string(),
            a.is_late.map(|l| l.to_string()).unwrap_or_default(),
            a.join_count.to_string(),
        ];
        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// Characters that make a spreadsheet read a cell as a formula (OWASP's
/// CSV-injection list: TAB and CR too, since some spreadsheets skip them
/// and read the `=` behind; LF for the same reason).
const FORMULA_TRIGGERS: [char; 7] = ['=', '+', '-', '@', '\t', '\r', '\n'];

/// RFC 4180 quoting; a leading formula trigger is prefixed with `'` so
/// that a name cannot smuggle a formula into a spreadsheet. Plain numbers
/// (`-1`) are left as they are.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(FORMULA_TRIGGERS) && value.parse::<f64>().is_err() {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// Hex HMAC-SHA256 of `body` with `secret`: the report's signature.
pub fn sign(secret: &str, body: &[u8]) -> String {
    crate::pusher::auth::hmac_sha256_hex(secret, body)
}

const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Delivers final reports. One task per room at most on this node; a
/// per-room lease keeps two nodes from posting the same revision at once
/// (the receiver still treats `(room, revision)` as its idempotency key).
#[derive(Clone)]
pub struct Reporter {
    inner: Arc<ReporterInner>,
}

struct ReporterInner {
    url: reqwest::Url,
    secret: String,
    client: reqwest::Client,
    rooms: Rooms,
    node: String,
    in_flight: DashSet<RoomName>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Reporter {
    /// Builds the HTTPS client at once (`outbound::client`), so a missing
    /// or broken trust store stops the server at startup instead of showing
    /// up at the first finalization, hours later.
    pub fn new(
        url: reqwest::Url,
        secret: String,
        rooms: Rooms,
        node: String,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Self, OutboundError> {
        let client = outbound::client(ATTEMPT_TIMEOUT)?;
        Ok(Self {
            inner: Arc::new(ReporterInner {
                url,
                secret,
                client,
                rooms,
                node,
                in_flight: DashSet::new(),
                tracker,
                shutdown,
            }),
        })
    }

    /// Starts delivering `session`'s pending report, unless this node is
    /// already at it. Returns at once.
    pub fn deliver(&self, session: Session) {
        if !self.inner.in_flight.insert(session.room.clone()) {
            return;
        }
        let inner = Arc::clone(&self.inner);
        self.inner.tracker.spawn(async move {
            let room = session.room.clone();
            inner.deliver_until_done(session).await;
            inner.in_flight.remove(&room);
        });
    }
}

impl ReporterInner {
    async fn deliver_until_done(&self, session: Session) {
        let mut backoff = BACKOFF_START;
        loop {
            match self.attempt(&session).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    Metrics::add(&self.rooms.metrics.report_failures, 1);
                    // `{:#}`: the causes too (reqwest's "error sending request"
                    // says nothing; the TLS error behind it does).
                    tracing::warn!(room = %session.room, error = format!("{e:#}"), retry_in = ?backoff, "report not delivered")
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One try. `Ok(true)`: nothing (more) to deliver.
    async fn attempt(&self, session: &Session) -> anyhow::Result<bool> {
        let Some(state) = self.rooms.load(&session.room).await? else {
            return Ok(true);
        };
        if !state.finalization.report_due() {
            return Ok(true);
        }
        let lease = format!("report:{}", session.room);
        let store = &self.rooms.store;
        let ttl = ATTEMPT_TIMEOUT + Duration::from_secs(5);
        if !store.try_lease(&lease, &self.node, ttl).await? {
            return Ok(false); // another node is posting it right now
        }
        let result = self.post(session, &state).await;
        // Held for one attempt only: the next attempt, here or on another
        // node, must not wait out the lease.
        if let Err(e) = store.release_lease(&lease, &self.node).await {
            tracing::debug!(error = %e, "report lease not released; it expires by itself");
        }
        result
    }

    /// Posts the report of `state`'s revision and records its acceptance.
    async fn post(&self, session: &Session, state: &RoomState) -> anyhow::Result<bool> {
        let revision = state.finalization.revision;
        let mut body = roster(&self.rooms, session, state, crate::domain::now_millis());
        body["event"] = json!(FINALIZED_EVENT);
        let bytes = serde_json::to_vec(&body)?;
        let response = self
            .client
            .post(self.url.clone())
            .header("Content-Type", "application/json")
            .header(SIGNATURE_HEADER, sign(&self.secret, &bytes))
            .body(bytes)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "receiver answered {}",
            response.status()
        );
        tracing::info!(room = %session.room, revision, "final report delivered");
        Metrics::add(&self.rooms.metrics.reports_delivered, 1);
        self.rooms
            .update(session, None, |s| {
                s.finalization.reported_revision = s.finalization.reported_revision.max(revision);
                Default::default()
            })
            .await?;
        Ok(false) // look again: a later revision may have been made meanwhile
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("Ameer Maher"), "Ameer Maher");
        assert_eq!(csv_field("Maher, Ameer"), "\"Maher, Ameer\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-1"), "-1", "numbers stay numbers");
        assert_eq!(csv_field("+SUM(A1)"), "'+SUM(A1)");
        assert_eq!(csv_field("@cmd"), "'@cmd");
        // TAB and CR (and LF) before a formula: some spreadsheets skip them.
        assert_eq!(csv_field("\t=1+1"), "'\t=1+1");
        assert_eq!(csv_field("\r=1+1"), "\"'\r=1+1\"");
        assert_eq!(csv_field("\n=1+1"), "\"'\n=1+1\"");
    }

    /// Rule 18's verdicts reach the CSV as the contract spells them.
    #[test]
    fn csv_rows_carry_the_verdict_strings() {
        use crate::domain::{EventId, Identity, ParticipantSid, RoomSid, UserId};
        use crate::engine::{
            Fact, Naming, Observation, Participant, RoomView, Schedule, VerdictRules,
        };
        const T0: UnixMillis = 1_763_719_200_000; // 2025-11-21T10:00:00Z
        const MIN: i64 = 60_000;
        let session = Naming::default()
            .session("itqan-academy-quran-session-121")
            .unwrap();
        let mut state = RoomState::default();
        let expected = vec![Identity::new("4_Never_Came")];
        state.set_schedule(Some(Schedule::new(Timestamp(T0), 60, expected).unwrap()));
        // 100 % on time, 66.7 % late, 33.3 %: present, late, partial.
        for (user, from, to) in [(1, 0, 60), (2, 20, 60), (3, 0, 20)] {
            let (joined, left) = (T0 + from * MIN, T0 + to * MIN);
            state.apply(&Observation {
                id: EventId::new(format!("e{user}")),
                created_at: left,
                room_sid: RoomSid::new("RM_a"),
                metadata_schedule: None,
                fact: Fact::Left {
                    participant: Participant {
                        user_id: UserId::new(user.to_string()),
                        sid: ParticipantSid::new(format!("PA_{user}")),
                        identity: Identity::new(format!("{user}_Test_User")),
                        name: format!("User {user}"),
                    },
                    joined_at: Some(joined),
                },
            });
        }
        let (naming, rules) = (Naming::default(), VerdictRules::default());
        let view = RoomView {
            session: &session,
            state: &state,
            naming: &naming,
            rules: &rules,
        };
        let csv = roster_csv(&view.roster(T0 + 90 * MIN));
        let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
        assert_eq!(rows[0].join(","), CSV_HEADER);
        let status = CSV_HEADER.split(',').position(|h| h == "attendance_status");
        let got: Vec<(&str, &str)> = rows[1..]
            .iter()
            .map(|r| (r[0], r[status.unwrap()]))
            .collect();
        assert_eq!(
            got,
            [
                ("1_Test_User", "present"),
                ("2_Test_User", "late"),
                ("3_Test_User", "partial"),
                ("4_Never_Came", "absent"),
            ]
        );
        assert_eq!(
            rows[2].join(","),
            "2_Test_User,2,User 2,2025-11-21T10:20:00.000Z,2025-11-21T11:00:00.000Z,2400,40,66.7,late,true,1"
        );
    }

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
