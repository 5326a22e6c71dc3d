//! A test double of LiveKit's Twirp RoomService (`ListRooms`,
//! `ListParticipants`) on a loopback port: no LiveKit server can run here.
//!
//! It answers as LiveKit's server does (livekit/livekit
//! `pkg/service/{auth,roomservice,server}.go`, the generated
//! `livekit_room.twirp.go` of livekit/protocol):
//!
//! - The token is checked by an HTTP middleware before Twirp routing: a
//!   header without `Bearer ` → 401 plain text; an undecodable token, an
//!   unknown key, a bad signature or an expired token (60 s leeway, `exp`
//!   required, HS256 only) → 401 **plain text**. No header at all passes,
//!   with no grants.
//! - Twirp routing: only `POST` with `Content-Type: application/json` on
//!   `/twirp/livekit.RoomService/<Method>`; anything else is 404
//!   `bad_route`. An undecodable request body is 400 `malformed`.
//! - A missing grant (`roomList` for `ListRooms`; `roomAdmin` with `room`
//!   equal to the requested room for `ListParticipants`) is 401
//!   `unauthenticated` "permissions denied" — a Twirp JSON error.
//! - Answers are protojson with proto field names and zero values emitted,
//!   int64 as strings, enums as names; switchable to camelCase, omitted
//!   zero values and int64 numbers to exercise a client's tolerance.
//! - An unknown room in `ListParticipants` is 404 `not_found` "requested
//!   room does not exist" (LiveKit asking the room's node), or, with
//!   [`UnknownRoom::EmptyList`], 200 with no participants (LiveKit OSS
//!   reading its store, its default).
//!
//! Programmable through a cheap, cloneable handle: the server stops when
//! the last clone is dropped. Set `LIVEKIT_URL` to [`LivekitDouble::url`]
//! (or [`LivekitDouble::ws_url`]) with the key pair it was started with;
//! it serves other processes as well as this one.

#![allow(dead_code)] // a toolbox: not every test uses every knob

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method as HttpMethod, StatusCode, Uri, header};
use axum::response::Response;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::distr::{Alphanumeric, SampleString};
use rollcall::livekit::{ParticipantKind, ParticipantState};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::task::AbortHandle;

/// The key pair [`LivekitDouble::start`] accepts (LiveKit's dev defaults).
pub const DOUBLE_KEY: &str = "devkey";
pub const DOUBLE_SECRET: &str = "secret";

const SERVICE_PREFIX: &str = "/twirp/livekit.RoomService/";

/// The two RoomService methods the double serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    ListRooms,
    ListParticipants,
}

impl Method {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "ListRooms" => Some(Self::ListRooms),
            "ListParticipants" => Some(Self::ListParticipants),
            _ => None,
        }
    }
}

/// How answers spell field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// `joined_at_ms`: what LiveKit's Twirp server sends.
    ProtoNames,
    /// `joinedAtMs`: protojson's default (Twirp's `jsonCamelCase` option).
    CamelCase,
}

/// What `ListParticipants` answers for a room the double does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownRoom {
    /// 404 `not_found` "requested room does not exist".
    NotFound,
    /// 200 with no participants.
    EmptyList,
}

/// An injected failure, answered instead of the real answer.
#[derive(Debug, Clone)]
pub enum Fault {
    /// A Twirp JSON error with this HTTP status and code.
    Twirp {
        status: u16,
        code: String,
        msg: String,
    },
    /// Any status, content type and body (a proxy's HTML page, garbage).
    Raw {
        status: u16,
        content_type: &'static str,
        body: String,
    },
    /// A 200 JSON answer of `bytes` bytes, streamed in chunks so the
    /// double never holds it; with or without a `Content-Length`.
    Huge { bytes: usize, declare_length: bool },
}

impl Fault {
    /// A Twirp error with the status Twirp's servers give `code`.
    pub fn twirp(code: &str, msg: &str) -> Self {
        Self::Twirp {
            status: twirp_status(code),
            code: code.to_owned(),
            msg: msg.to_owned(),
        }
    }

    /// A 200 `application/json` answer that is not JSON.
    pub fn garbage() -> Self {
        Self::Raw {
            status: 200,
            content_type: "application/json",
            body: r#"{"rooms":[{"sid":"RM_x","name": <!-- truncated"#.to_owned(),
        }
    }

    /// A plain-text answer, as LiveKit's auth middleware or a proxy sends.
    pub fn plain(status: u16, body: &str) -> Self {
        Self::Raw {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_owned(),
        }
    }
}

/// A participant as the double lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeParticipant {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub state: ParticipantState,
    /// Unix seconds.
    pub joined_at: i64,
    /// Unix milliseconds; 0 leaves it out (older servers send seconds only).
    pub joined_at_ms: i64,
    pub kind: ParticipantKind,
    pub metadata: String,
}

impl FakeParticipant {
    /// An `ACTIVE`, `STANDARD` participant with a fresh `PA_…` sid, named
    /// after its identity, joined at `joined_at_ms`.
    pub fn new(identity: &str, joined_at_ms: i64) -> Self {
        Self {
            sid: format!("PA_{}", random_id()),
            identity: identity.to_owned(),
            name: identity.to_owned(),
            state: ParticipantState::Active,
            joined_at: joined_at_ms.div_euclid(1000),
            joined_at_ms,
            kind: ParticipantKind::Standard,
            metadata: String::new(),
        }
    }

    pub fn sid(mut self, sid: &str) -> Self {
        self.sid = sid.to_owned();
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    pub fn state(mut self, state: ParticipantState) -> Self {
        self.state = state;
        self
    }

    pub fn kind(mut self, kind: ParticipantKind) -> Self {
        self.kind = kind;
        self
    }

    pub fn metadata(mut self, metadata: &str) -> Self {
        self.metadata = metadata.to_owned();
        self
    }

    /// Only `joined_at` (seconds), as LiveKit before `joined_at_ms`.
    pub fn seconds_only(mut self) -> Self {
        self.joined_at_ms = 0;
        self
    }
}

/// A room as the double lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRoom {
    pub sid: String,
    pub name: String,
    pub metadata: String,
    /// Unix seconds.
    pub creation_time: i64,
    pub participants: Vec<FakeParticipant>,
}

impl FakeRoom {
    /// A room created now, with a fresh `RM_…` sid, no metadata and nobody in it.
    pub fn new(name: &str) -> Self {
        Self {
            sid: format!("RM_{}", random_id()),
            name: name.to_owned(),
            metadata: String::new(),
            creation_time: rollcall::domain::now_millis() / 1000,
            participants: Vec::new(),
        }
    }

    pub fn sid(mut self, sid: &str) -> Self {
        self.sid = sid.to_owned();
        self
    }

    pub fn metadata(mut self, metadata: &str) -> Self {
        self.metadata = metadata.to_owned();
        self
    }

    pub fn created_at(mut self, unix_secs: i64) -> Self {
        self.creation_time = unix_secs;
        self
    }

    pub fn with(mut self, participant: FakeParticipant) -> Self {
        self.participants.push(participant);
        self
    }
}

struct Shared {
    keys: HashMap<String, String>,
    rooms: BTreeMap<String, FakeRoom>,
    spelling: Spelling,
    emit_defaults: bool,
    int64_as_numbers: bool,
    unknown_room: UnknownRoom,
    /// Per method: the fault and how many more answers it takes (`None`: all).
    faults: HashMap<Method, (Fault, Option<u32>)>,
    delays: HashMap<Method, Duration>,
    calls: HashMap<Method, u64>,
    room_calls: HashMap<(Method, String), u64>,
    /// Calls being answered now, and the most ever at once.
    in_flight: usize,
    max_in_flight: usize,
}

type SharedState = Arc<Mutex<Shared>>;

struct Inner {
    state: SharedState,
    addr: SocketAddr,
    server: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The running double; clones share it.
#[derive(Clone)]
pub struct LivekitDouble(Arc<Inner>);

impl LivekitDouble {
    /// Starts on `127.0.0.1:0`, accepting [`DOUBLE_KEY`] / [`DOUBLE_SECRET`].
    pub async fn start() -> Self {
        Self::start_with_keys(&[(DOUBLE_KEY, DOUBLE_SECRET)]).await
    }

    /// Starts accepting tokens of any of these key pairs.
    pub async fn start_with_keys(keys: &[(&str, &str)]) -> Self {
        let state = Arc::new(Mutex::new(Shared {
            keys: keys
                .iter()
                .map(|(k, s)| ((*k).to_owned(), (*s).to_owned()))
                .collect(),
            rooms: BTreeMap::new(),
            spelling: Spelling::ProtoNames,
            emit_defaults: true,
            int64_as_numbers: false,
            unknown_room: UnknownRoom::NotFound,
            faults: HashMap::new(),
            delays: HashMap::new(),
            calls: HashMap::new(),
            room_calls: HashMap::new(),
            in_flight: 0,
            max_in_flight: 0,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the LiveKit double");
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })
        .abort_handle();
        Self(Arc::new(Inner {
            state,
            addr,
            server,
        }))
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    /// `http://127.0.0.1:<port>`, for `LIVEKIT_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.0.addr)
    }

    /// `ws://127.0.0.1:<port>`: the form a LiveKit URL usually takes.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.0.addr)
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.0.state.lock().unwrap()
    }

    /// Replaces every room.
    pub fn set_rooms(&self, rooms: impl IntoIterator<Item = FakeRoom>) {
        self.lock().rooms = rooms.into_iter().map(|r| (r.name.clone(), r)).collect();
    }

    /// Adds a room, or replaces the one with its name.
    pub fn put_room(&self, room: FakeRoom) {
        self.lock().rooms.insert(room.name.clone(), room);
    }

    /// Removes a room (LiveKit closed it); returns it if it was there.
    pub fn remove_room(&self, name: &str) -> Option<FakeRoom> {
        self.lock().rooms.remove(name)
    }

    pub fn room(&self, name: &str) -> Option<FakeRoom> {
        self.lock().rooms.get(name).cloned()
    }

    /// Replaces a room's participants. Panics if the room is unknown.
    pub fn set_participants(&self, room: &str, participants: Vec<FakeParticipant>) {
        self.with_room(room, |r| r.participants = participants);
    }

    /// Adds a participant, or replaces the one with its sid.
    pub fn join(&self, room: &str, participant: FakeParticipant) {
        self.with_room(room, |r| {
            r.participants.retain(|p| p.sid != participant.sid);
            r.participants.push(participant);
        });
    }

    /// Removes a participant by sid.
    pub fn leave(&self, room: &str, sid: &str) {
        self.with_room(room, |r| r.participants.retain(|p| p.sid != sid));
    }

    fn with_room(&self, room: &str, f: impl FnOnce(&mut FakeRoom)) {
        let mut s = self.lock();
        let r = s
            .rooms
            .get_mut(room)
            .unwrap_or_else(|| panic!("the LiveKit double has no room {room:?}"));
        f(r);
    }

    pub fn set_spelling(&self, spelling: Spelling) {
        self.lock().spelling = spelling;
    }

    /// `false` leaves zero values out, as `jsonSkipDefaults` does.
    pub fn set_emit_defaults(&self, emit: bool) {
        self.lock().emit_defaults = emit;
    }

    /// `true` writes int64 fields as JSON numbers instead of strings.
    pub fn set_int64_as_numbers(&self, numbers: bool) {
        self.lock().int64_as_numbers = numbers;
    }

    pub fn set_unknown_room(&self, answer: UnknownRoom) {
        self.lock().unknown_room = answer;
    }

    /// Answers every call of `method` with `fault` until [`Self::heal`].
    pub fn fail(&self, method: Method, fault: Fault) {
        self.lock().faults.insert(method, (fault, None));
    }

    /// Answers the next `times` calls of `method` with `fault`.
    pub fn fail_next(&self, method: Method, fault: Fault, times: u32) {
        self.lock().faults.insert(method, (fault, Some(times)));
    }

    pub fn heal(&self, method: Method) {
        self.lock().faults.remove(&method);
    }

    /// Delays every answer of `method` (faults included) by `delay`.
    pub fn set_delay(&self, method: Method, delay: Duration) {
        self.lock().delays.insert(method, delay);
    }

    /// Removes every fault and delay.
    pub fn heal_all(&self) {
        let mut s = self.lock();
        s.faults.clear();
        s.delays.clear();
    }

    /// Requests that reached `method`'s route, refused ones included.
    pub fn calls(&self, method: Method) -> u64 {
        self.lock().calls.get(&method).copied().unwrap_or(0)
    }

    /// Requests of `method` naming `room` (`ListParticipants`' room, or one
    /// of `ListRooms`' names).
    pub fn room_calls(&self, method: Method, room: &str) -> u64 {
        self.lock()
            .room_calls
            .get(&(method, room.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub fn reset_counters(&self) {
        let mut s = self.lock();
        s.calls.clear();
        s.room_calls.clear();
        s.max_in_flight = s.in_flight;
    }

    /// The most calls (of any method) the double was answering at once.
    pub fn max_in_flight(&self) -> usize {
        self.lock().max_in_flight
    }
}

fn random_id() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 12)
}

/// `twirp.ServerHTTPStatusFromErrorCode`.
fn twirp_status(code: &str) -> u16 {
    match code {
        "canceled" | "deadline_exceeded" => 408,
        "invalid_argument" | "malformed" | "out_of_range" => 400,
        "not_found" | "bad_route" => 404,
        "already_exists" | "aborted" => 409,
        "permission_denied" => 403,
        "unauthenticated" => 401,
        "resource_exhausted" => 429,
        "failed_precondition" => 412,
        "unimplemented" => 501,
        "unavailable" => 503,
        _ => 500, // unknown, internal, data_loss
    }
}

fn twirp_error(code: &str, msg: &str, meta: Option<Value>) -> Response {
    let mut body = json!({"code": code, "msg": msg});
    if let Some(meta) = meta {
        body["meta"] = meta;
    }
    raw(
        twirp_status(code),
        "application/json",
        body.to_string().into(),
    )
}

fn bad_route(msg: &str, method: &HttpMethod, path: &str) -> Response {
    twirp_error(
        "bad_route",
        msg,
        Some(json!({"twirp_invalid_route": format!("{method} {path}")})),
    )
}

/// LiveKit's auth middleware refusals: status 401 and a plain-text body.
fn auth_refusal(msg: &str) -> Response {
    raw(401, "text/plain; charset=utf-8", msg.to_owned().into())
}

fn raw(status: u16, content_type: &'static str, body: Body) -> Response {
    let mut res = Response::new(body);
    *res.status_mut() = StatusCode::from_u16(status).expect("a valid status");
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Grant {
    #[serde(default)]
    room_list: bool,
    #[serde(default)]
    room_admin: bool,
    #[serde(default)]
    room: String,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    video: Option<Grant>,
}

#[derive(Deserialize)]
struct Issuer {
    #[serde(default)]
    iss: String,
}

/// The middleware: the verified token's grant; an empty grant when no
/// token was sent (LiveKit lets that through, to be refused by the
/// method's permission check); `Err` with the refusal's plain-text body.
fn authenticate(headers: &HeaderMap, keys: &HashMap<String, String>) -> Result<Grant, String> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Grant::default());
    };
    let value = value.to_str().unwrap_or("");
    if value.is_empty() {
        return Ok(Grant::default());
    }
    let Some(token) = value.strip_prefix("Bearer ") else {
        return Err("invalid authorization header. Must start with Bearer ".to_owned());
    };
    let header = jsonwebtoken::decode_header(token);
    let issuer = jsonwebtoken::dangerous::insecure_decode::<Issuer>(token);
    let (Ok(header), Ok(issuer)) = (header, issuer) else {
        return Err("invalid authorization token".to_owned());
    };
    if header.alg != Algorithm::HS256 {
        return Err("invalid authorization token".to_owned());
    }
    let iss = issuer.claims.iss;
    let Some(secret) = keys.get(&iss).filter(|s| !s.is_empty()) else {
        return Err("invalid API key".to_owned());
    };
    // golang-jwt as LiveKit configures it: HS256, issuer, 60 s leeway, exp
    // required, nbf checked when present.
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 60;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);
    validation.set_issuer(&[iss.as_str()]);
    match jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    ) {
        Ok(data) => Ok(data.claims.video.unwrap_or_default()),
        Err(e) => Err(format!("invalid authorization token: {e}")),
    }
}

/// Ends one in-flight call when dropped.
struct InFlight(SharedState);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().unwrap().in_flight -= 1;
    }
}

async fn handle(
    State(state): State<SharedState>,
    method: HttpMethod,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let keys = state.lock().unwrap().keys.clone();
    let grant = match authenticate(&headers, &keys) {
        Ok(grant) => grant,
        Err(refusal) => {
            // Count a refused call on its route, as a caller would see it.
            count(&state, &uri, &body);
            return auth_refusal(&refusal);
        }
    };
    // LiveKit strips one leading slash of `//twirp/…`.
    let path = uri.path();
    let path = path
        .strip_prefix('/')
        .filter(|p| p.starts_with('/'))
        .unwrap_or(path);
    let Some(name) = path.strip_prefix(SERVICE_PREFIX) else {
        return bad_route(&format!("no handler for path {path:?}"), &method, path);
    };
    let Some(rpc) = Method::from_name(name) else {
        return bad_route(&format!("no handler for path {path:?}"), &method, path);
    };
    let (delay, fault) = {
        let mut s = state.lock().unwrap();
        *s.calls.entry(rpc).or_default() += 1;
        for room in rooms_named(rpc, &body) {
            *s.room_calls.entry((rpc, room)).or_default() += 1;
        }
        let fault = match s.faults.get_mut(&rpc) {
            Some((fault, None)) => Some(fault.clone()),
            Some((fault, Some(n))) if *n > 0 => {
                *n -= 1;
                Some(fault.clone())
            }
            _ => None,
        };
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        (s.delays.get(&rpc).copied(), fault)
    };
    // Counted until this answer is made, even if the caller gives up.
    let _in_flight = InFlight(Arc::clone(&state));
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(fault) = fault {
        return answer_fault(fault);
    }

    if method != HttpMethod::POST {
        return bad_route(
            &format!(
                "unsupported method {:?} (only POST is allowed)",
                method.as_str()
            ),
            &method,
            path,
        );
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return bad_route(
            &format!("unexpected Content-Type: {content_type:?}"),
            &method,
            path,
        );
    }
    let Ok(request) = serde_json::from_slice::<Map<String, Value>>(&body) else {
        return twirp_error("malformed", "the json request could not be decoded", None);
    };

    let s = state.lock().unwrap();
    let encoding = Encoding {
        spelling: s.spelling,
        emit_defaults: s.emit_defaults,
        int64_as_numbers: s.int64_as_numbers,
    };
    match rpc {
        Method::ListRooms => {
            if !grant.room_list {
                return twirp_error("unauthenticated", "permissions denied", None);
            }
            let names: Vec<String> = match request.get("names") {
                None | Some(Value::Null) => Vec::new(),
                Some(v) => match serde_json::from_value(v.clone()) {
                    Ok(names) => names,
                    Err(_) => {
                        return twirp_error(
                            "malformed",
                            "the json request could not be decoded",
                            None,
                        );
                    }
                },
            };
            let rooms: Vec<Value> = s
                .rooms
                .values()
                .filter(|r| names.is_empty() || names.contains(&r.name))
                .map(|r| encoding.room(r))
                .collect();
            ok_json(encoding.repeated("rooms", rooms))
        }
        Method::ListParticipants => {
            let room = match request.get("room") {
                None | Some(Value::Null) => "",
                Some(Value::String(r)) => r.as_str(),
                Some(_) => {
                    return twirp_error("malformed", "the json request could not be decoded", None);
                }
            };
            if !grant.room_admin || grant.room != room {
                return twirp_error("unauthenticated", "permissions denied", None);
            }
            match (s.rooms.get(room), s.unknown_room) {
                (Some(r), _) => {
                    let ps = r.participants.iter().map(|p| encoding.participant(p));
                    ok_json(encoding.repeated("participants", ps.collect()))
                }
                (None, UnknownRoom::EmptyList) => {
                    ok_json(encoding.repeated("participants", Vec::new()))
                }
                (None, UnknownRoom::NotFound) => {
                    twirp_error("not_found", "requested room does not exist", None)
                }
            }
        }
    }
}

/// The rooms a request names, for the per-room counters.
fn rooms_named(rpc: Method, body: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    match rpc {
        Method::ListRooms => v["names"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        Method::ListParticipants => v["room"].as_str().map(str::to_owned).into_iter().collect(),
    }
}

fn count(state: &SharedState, uri: &Uri, body: &[u8]) {
    let Some(rpc) = uri
        .path()
        .strip_prefix(SERVICE_PREFIX)
        .and_then(Method::from_name)
    else {
        return;
    };
    let mut s = state.lock().unwrap();
    *s.calls.entry(rpc).or_default() += 1;
    for room in rooms_named(rpc, body) {
        *s.room_calls.entry((rpc, room)).or_default() += 1;
    }
}

fn ok_json(v: Value) -> Response {
    raw(200, "application/json", v.to_string().into())
}

fn answer_fault(fault: Fault) -> Response {
    match fault {
        Fault::Twirp { status, code, msg } => {
            let mut res = twirp_error(&code, &msg, None);
            *res.status_mut() = StatusCode::from_u16(status).expect("a valid status");
            res
        }
        Fault::Raw {
            status,
            content_type,
            body,
        } => raw(status, content_type, body.into()),
        Fault::Huge {
            bytes,
            declare_length,
        } => {
            // `{"rooms":[` then JSON whitespace: never read to the end.
            const CHUNK: usize = 64 * 1024;
            let head = Bytes::from_static(b"{\"rooms\":[");
            let filler = Bytes::from(vec![b' '; CHUNK]);
            let mut left = bytes.saturating_sub(head.len());
            let tail = std::iter::from_fn(move || {
                (left > 0).then(|| {
                    let n = left.min(CHUNK);
                    left -= n;
                    filler.slice(..n)
                })
            });
            let chunks = std::iter::once(head)
                .chain(tail)
                .map(Ok::<_, std::io::Error>);
            let mut res = raw(
                200,
                "application/json",
                Body::from_stream(futures_util::stream::iter(chunks)),
            );
            if declare_length {
                res.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes));
            }
            res
        }
    }
}

/// How an answer is written: protojson options.
struct Encoding {
    spelling: Spelling,
    emit_defaults: bool,
    int64_as_numbers: bool,
}

impl Encoding {
    fn key(&self, snake: &'static str) -> String {
        match self.spelling {
            Spelling::ProtoNames => snake.to_owned(),
            Spelling::CamelCase => {
                let mut out = String::with_capacity(snake.len());
                let mut upper = false;
                for c in snake.chars() {
                    if c == '_' {
                        upper = true;
                    } else if upper {
                        out.extend(c.to_uppercase());
                        upper = false;
                    } else {
                        out.push(c);
                    }
                }
                out
            }
        }
    }

    /// Builds an object from `(proto name, value, is zero)`, leaving zero
    /// values out unless they are emitted.
    fn object(&self, fields: Vec<(&'static str, Value, bool)>) -> Value {
        let mut map = Map::new();
        for (name, value, zero) in fields {
            if self.emit_defaults || !zero {
                map.insert(self.key(name), value);
            }
        }
        Value::Object(map)
    }

    fn int64(&self, v: i64) -> (Value, bool) {
        let value = if self.int64_as_numbers {
            json!(v)
        } else {
            json!(v.to_string())
        };
        (value, v == 0)
    }

    fn repeated(&self, name: &'static str, items: Vec<Value>) -> Value {
        let zero = items.is_empty();
        self.object(vec![(name, Value::Array(items), zero)])
    }

    fn room(&self, r: &FakeRoom) -> Value {
        let s = |v: &str| (json!(v), v.is_empty());
        let (creation_time, ct_zero) = self.int64(r.creation_time);
        let (creation_time_ms, ctm_zero) = self.int64(r.creation_time.saturating_mul(1000));
        let n = r.participants.len();
        let (sid, sid_zero) = s(&r.sid);
        let (name, name_zero) = s(&r.name);
        let (metadata, md_zero) = s(&r.metadata);
        self.object(vec![
            ("sid", sid, sid_zero),
            ("name", name, name_zero),
            ("empty_timeout", json!(300), false),
            ("departure_timeout", json!(20), false),
            ("max_participants", json!(0), true),
            ("creation_time", creation_time, ct_zero),
            ("creation_time_ms", creation_time_ms, ctm_zero),
            ("turn_password", json!(""), true),
            (
                "enabled_codecs",
                json!([
                    {"mime": "audio/opus", self.key("fmtp_line"): ""},
                    {"mime": "video/VP8", self.key("fmtp_line"): ""},
                ]),
                false,
            ),
            ("metadata", metadata, md_zero),
            ("num_participants", json!(n), n == 0),
            ("num_publishers", json!(0), true),
            ("active_recording", json!(false), true),
            ("version", Value::Null, true),
        ])
    }

    fn participant(&self, p: &FakeParticipant) -> Value {
        let s = |v: &str| (json!(v), v.is_empty());
        let (joined_at, ja_zero) = self.int64(p.joined_at);
        let (joined_at_ms, jam_zero) = self.int64(p.joined_at_ms);
        let (sid, sid_zero) = s(&p.sid);
        let (identity, id_zero) = s(&p.identity);
        let (name, name_zero) = s(&p.name);
        let (metadata, md_zero) = s(&p.metadata);
        self.object(vec![
            ("sid", sid, sid_zero),
            ("identity", identity, id_zero),
            (
                "state",
                json!(p.state.as_str()),
                p.state == ParticipantState::Joining,
            ),
            ("tracks", json!([]), true),
            ("metadata", metadata, md_zero),
            ("joined_at", joined_at, ja_zero),
            ("joined_at_ms", joined_at_ms, jam_zero),
            ("name", name, name_zero),
            ("version", json!(1), false),
            ("permission", Value::Null, true),
            ("region", json!(""), true),
            ("is_publisher", json!(false), true),
            (
                "kind",
                json!(p.kind.as_str()),
                p.kind == ParticipantKind::Standard,
            ),
            ("attributes", json!({}), true),
            ("disconnect_reason", json!("UNKNOWN_REASON"), true),
            ("kind_details", json!([]), true),
        ])
    }
}
