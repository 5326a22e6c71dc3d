//! A small client for LiveKit's Twirp `RoomService`: `ListRooms` and
//! `ListParticipants`, the two questions reconciliation asks (rules 23–27).
//!
//! We write our own rather than use crates.io `livekit-api` (feature
//! `services`): that crate pulls in a large dependency tree, decodes with
//! generated types that reject enum values it does not know (a LiveKit
//! upgrade adding a participant kind would turn every listing into an
//! error), and gives no control over the per-call deadline or how much of a
//! response is read. Here the types are `event.rs`'s tolerant ones, every
//! call has one total deadline, and a response is read in chunks up to a cap.
//!
//! # The wire, as LiveKit's server speaks it
//!
//! (livekit/livekit `pkg/service/{auth,roomservice,server}.go`, the generated
//! `livekit/livekit_room.twirp.go` in livekit/protocol, `auth/verifier.go`.)
//!
//! - `POST {base}/twirp/livekit.RoomService/<Method>`, `Content-Type:
//!   application/json` (anything else is a 404 `bad_route`).
//! - `Authorization: Bearer <JWT>`: HS256 only, `iss` = API key, `exp`
//!   required, 60 s leeway on `exp`/`nbf`. `ListRooms` needs
//!   `video.roomList`; `ListParticipants` needs `video.roomAdmin` and
//!   `video.room` equal to the requested room.
//! - A token that does not verify is refused by an HTTP middleware before
//!   Twirp runs: 401 with a **plain-text** body (`invalid authorization
//!   token: …`, `invalid API key`). A valid token without the grant is a
//!   Twirp error, also 401: `{"code":"unauthenticated","msg":"permissions
//!   denied"}` (LiveKit never answers `permission_denied` here).
//! - Success bodies are protojson with proto field names (`joined_at_ms`)
//!   and zero values emitted; int64 as strings, enums as names.
//! - An unknown room in `ListParticipants`: 404 `not_found` ("requested room
//!   does not exist") when the server asks the room's node, but 200 with no
//!   participants when it reads its store (LiveKit OSS's default). A caller
//!   must therefore not read an empty list as "the room is gone":
//!   `ListRooms` is the authority on which rooms exist.
//!
//! Nothing here retries: the reconciliation interval is the retry.

use std::fmt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use super::event::{ParticipantInfo, Room};

/// Largest success body read: far above any real listing (a 16 MiB
/// `ListRooms` would be tens of thousands of rooms), small enough that a
/// broken or hostile endpoint cannot exhaust memory.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Lifetime of the token minted for each call. A fresh token per call, so
/// it only has to outlive one request; LiveKit adds 60 s of leeway for
/// clock skew.
pub const TOKEN_TTL_SECS: i64 = 60;

/// Error bodies are only read for their message: the rest is dropped.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// An error message kept for logs, in characters.
const MAX_ERROR_MSG_CHARS: usize = 512;
/// Appended to the base URL's path; Twirp's default prefix and LiveKit's
/// proto package and service.
const SERVICE_PATH: &str = "twirp/livekit.RoomService";

/// A configured RoomService client. Cheap to clone (the `reqwest::Client`
/// is shared).
#[derive(Clone)]
pub struct RoomService {
    /// `{scheme}://{host}{prefix}/twirp/livekit.RoomService`, no trailing `/`.
    service_url: String,
    api_key: String,
    api_secret: String,
    client: reqwest::Client,
    call_timeout: Duration,
    max_response_bytes: usize,
}

impl fmt::Debug for RoomService {
    // Never print the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomService")
            .field("service_url", &self.service_url)
            .field("api_key", &self.api_key)
            .field("call_timeout", &self.call_timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

/// Why a [`RoomService`] cannot be built: a configuration error, reported
/// once at startup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomServiceConfigError {
    /// `LIVEKIT_URL` cannot be turned into a RoomService base URL.
    #[error("LIVEKIT_URL is not usable for RoomService calls: {0}")]
    Url(String),
    /// An empty API key or secret could only produce refused tokens.
    #[error("the LiveKit API key and secret must not be empty")]
    EmptyCredentials,
    /// A zero deadline would fail every call.
    #[error("the RoomService call timeout must be positive")]
    ZeroTimeout,
}

/// Why one call failed. Every variant leaves LiveKit's state unknown: the
/// caller changes nothing (rule 26), logs it and counts [`Self::kind`].
#[derive(Debug, thiserror::Error)]
pub enum RoomServiceError {
    /// No complete answer within the deadline (ours, or the injected
    /// client's own timeout, whose length we don't know: `None`).
    #[error("LiveKit did not answer in time{}", after.map(|d| format!(" ({d:?})")).unwrap_or_default())]
    Timeout {
        /// The deadline that ran out, when it was ours.
        after: Option<Duration>,
    },
    /// No connection could be made (DNS, refused, TLS handshake).
    #[error("cannot connect to LiveKit: {0}")]
    Connect(#[source] reqwest::Error),
    /// The connection broke, or the request could not be sent or read.
    #[error("LiveKit request failed: {0}")]
    Transport(#[source] reqwest::Error),
    /// LiveKit (or something in front of it) answered with a non-200
    /// status.
    #[error("LiveKit answered HTTP {status} `{code}`: {msg}")]
    Twirp {
        /// The HTTP status.
        status: u16,
        /// The Twirp error code (`not_found`, `unauthenticated`, …). For a
        /// body that is not a Twirp error, derived from the status as Twirp
        /// clients derive it (401 `unauthenticated`, 403
        /// `permission_denied`, 404 `bad_route`, 429 `resource_exhausted`,
        /// 502–504 `unavailable`, 3xx and 400 `internal`, else `unknown`).
        code: String,
        /// The Twirp `msg`, or the start of a plain body; at most 512
        /// characters.
        msg: String,
        /// The body was not a Twirp error: LiveKit's token check answers in
        /// plain text, proxies in HTML.
        plain_body: bool,
    },
    /// A 200 whose body is not the expected protojson message.
    #[error("LiveKit answered a malformed body: {reason}")]
    Malformed {
        /// What did not parse.
        reason: String,
    },
    /// The body grew past the cap; reading stopped there.
    #[error("LiveKit's answer exceeds {limit} bytes")]
    TooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
}

impl RoomServiceError {
    /// A stable, low-cardinality label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::Connect(_) => "connect",
            Self::Transport(_) => "transport",
            Self::Twirp { .. } => "twirp",
            Self::Malformed { .. } => "malformed",
            Self::TooLarge { .. } => "too_large",
        }
    }

    /// The Twirp code of a [`Self::Twirp`] error.
    pub fn twirp_code(&self) -> Option<&str> {
        match self {
            Self::Twirp { code, .. } => Some(code),
            _ => None,
        }
    }

    /// LiveKit's own "no such room": a Twirp `not_found` body with 404.
    /// A bare 404 (a wrong path prefix, a proxy) is `bad_route` and is not
    /// this: a misconfigured URL must never read as "every room is gone".
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::Twirp { status: 404, code, plain_body: false, .. } if code == "not_found"
        )
    }

    fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::Timeout { after: None }
        } else if e.is_connect() {
            Self::Connect(e)
        } else {
            Self::Transport(e)
        }
    }
}

impl RoomService {
    /// A client for the LiveKit server at `livekit_url` (`LIVEKIT_URL`).
    ///
    /// `wss://` means `https://` and `ws://` means `http://` (LiveKit serves
    /// signalling and the API on one port); `https://` and `http://` are
    /// taken as they are. A path prefix is kept (a LiveKit behind a
    /// path-routing proxy); trailing slashes do not matter. Credentials,
    /// a query or a fragment in the URL are refused rather than guessed at.
    ///
    /// `client` is injected so the application decides TLS roots, proxies
    /// and pooling; `call_timeout` bounds each call from send to the last
    /// body byte.
    pub fn new(
        livekit_url: &str,
        api_key: &str,
        api_secret: &str,
        client: reqwest::Client,
        call_timeout: Duration,
    ) -> Result<Self, RoomServiceConfigError> {
        let service_url = service_url(livekit_url)?;
        if api_key.is_empty() || api_secret.is_empty() {
            return Err(RoomServiceConfigError::EmptyCredentials);
        }
        if call_timeout.is_zero() {
            return Err(RoomServiceConfigError::ZeroTimeout);
        }
        Ok(Self {
            service_url,
            api_key: api_key.to_owned(),
            api_secret: api_secret.to_owned(),
            client,
            call_timeout,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        })
    }

    /// Replaces the response size cap ([`DEFAULT_MAX_RESPONSE_BYTES`]).
    pub fn with_max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// The URL a method is posted to, e.g. for logs.
    pub fn endpoint(&self, method: &str) -> String {
        format!("{}/{method}", self.service_url)
    }

    /// The API key the tokens are issued by.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The per-call deadline.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// `ListRooms`: the active rooms among `names`, or every active room
    /// when `names` is empty. A requested room LiveKit does not have is
    /// simply absent from the answer.
    pub async fn list_rooms(&self, names: &[String]) -> Result<Vec<Room>, RoomServiceError> {
        read_all(self.list_rooms_raw(names).await?)
    }

    /// `ListParticipants`: everyone LiveKit has in `room`, in every state
    /// (the caller filters on state and kind). `Ok(None)` when LiveKit
    /// answers that the room does not exist (404 `not_found`). An empty
    /// list does not prove the room exists: see the module doc.
    pub async fn list_participants(
        &self,
        room: &str,
    ) -> Result<Option<Vec<ParticipantInfo>>, RoomServiceError> {
        self.list_participants_raw(room)
            .await?
            .map(read_all)
            .transpose()
    }

    /// `ListRooms` as LiveKit spelled it: each room's JSON object as
    /// returned (reconciliation logs exactly what LiveKit said, rule 27),
    /// every one checked to read as a [`Room`].
    pub async fn list_rooms_raw(
        &self,
        names: &[String],
    ) -> Result<Vec<serde_json::Value>, RoomServiceError> {
        #[derive(Serialize)]
        struct Request<'a> {
            names: &'a [String],
        }
        #[derive(Deserialize)]
        struct Response {
            #[serde(default, deserialize_with = "de_list")]
            rooms: Vec<serde_json::Value>,
        }
        let grant = VideoGrant {
            room_list: true,
            ..VideoGrant::default()
        };
        let res: Response = self.call("ListRooms", &grant, &Request { names }).await?;
        every_reads_as::<Room>(&res.rooms, "room")?;
        Ok(res.rooms)
    }

    /// `ListParticipants` as LiveKit spelled it (see [`Self::list_rooms_raw`]):
    /// `Ok(None)` for LiveKit's `not_found`; the body is read by
    /// [`decode_participants`].
    pub async fn list_participants_raw(
        &self,
        room: &str,
    ) -> Result<Option<Vec<serde_json::Value>>, RoomServiceError> {
        #[derive(Serialize)]
        struct Request<'a> {
            room: &'a str,
        }
        let grant = VideoGrant {
            room_admin: true,
            room: Some(room),
            ..VideoGrant::default()
        };
        match self
            .call::<_, RawParticipants>("ListParticipants", &grant, &Request { room })
            .await
        {
            Ok(res) => {
                every_reads_as::<ParticipantInfo>(&res.participants, "participant")?;
                Ok(Some(res.participants))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `livekit_url` would be accepted by [`Self::new`] (for
    /// configuration checks at startup).
    pub fn check_url(livekit_url: &str) -> Result<(), RoomServiceConfigError> {
        service_url(livekit_url).map(|_| ())
    }

    /// One Twirp JSON call: fresh token, one deadline over sending and
    /// reading, capped body, then decoding.
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &str,
        grant: &VideoGrant<'_>,
        request: &Req,
    ) -> Result<Resp, RoomServiceError> {
        let token = self.token(grant, crate::domain::now_millis() / 1000);
        // Serializing a struct of strings cannot fail.
        let body = serde_json::to_vec(request).expect("request types serialize");
        let send = self
            .client
            .post(self.endpoint(method))
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .bearer_auth(token)
            .body(body)
            .send();
        let exchange = async {
            let response = send.await.map_err(RoomServiceError::from_reqwest)?;
            let status = response.status().as_u16();
            // Twirp succeeds with exactly 200; any other status is an error
            // (a 3xx too: Twirp is POST-only and never redirects).
            if status != 200 {
                let (body, _) = read_capped(response, MAX_ERROR_BODY_BYTES)
                    .await
                    .map_err(RoomServiceError::from_reqwest)?;
                return Err(twirp_error(status, &body));
            }
            let limit = self.max_response_bytes;
            // A declared length past the cap is refused before reading.
            if response.content_length().is_some_and(|n| n > limit as u64) {
                return Err(RoomServiceError::TooLarge { limit });
            }
            match read_capped(response, limit).await {
                Ok((body, true)) => Ok(body),
                Ok((_, false)) => Err(RoomServiceError::TooLarge { limit }),
                Err(e) => Err(RoomServiceError::from_reqwest(e)),
            }
        };
        let body = tokio::time::timeout(self.call_timeout, exchange)
            .await
            .map_err(|_| RoomServiceError::Timeout {
                after: Some(self.call_timeout),
            })??;
        decode(&body)
    }

    /// The bearer token for one call: what LiveKit's server SDKs mint for
    /// the same calls (`iss`, `nbf` = now, short `exp`, one `video` grant),
    /// without a `sub`, which the API does not read.
    fn token(&self, grant: &VideoGrant<'_>, now_unix: i64) -> String {
        let claims = TokenClaims {
            iss: &self.api_key,
            nbf: now_unix,
            exp: now_unix.saturating_add(TOKEN_TTL_SECS),
            video: grant,
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(self.api_secret.as_bytes()),
        )
        .expect("HS256 signing of plain claims is infallible")
    }
}

#[derive(Serialize)]
struct TokenClaims<'a, 'b> {
    iss: &'a str,
    nbf: i64,
    exp: i64,
    video: &'a VideoGrant<'b>,
}

/// The `video` grant, serialized as LiveKit's SDKs do: false and empty
/// fields left out.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct VideoGrant<'a> {
    #[serde(skip_serializing_if = "is_false")]
    room_list: bool,
    #[serde(skip_serializing_if = "is_false")]
    room_admin: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `LIVEKIT_URL` → `{http(s)}://{host}{prefix}/twirp/livekit.RoomService`.
fn service_url(raw: &str) -> Result<String, RoomServiceConfigError> {
    let bad = |reason: &str| RoomServiceConfigError::Url(reason.to_owned());
    let mut url = reqwest::Url::parse(raw.trim())
        .map_err(|e| RoomServiceConfigError::Url(format!("not an absolute URL ({e})")))?;
    let scheme = match url.scheme() {
        "wss" | "https" => "https",
        "ws" | "http" => "http",
        other => {
            return Err(RoomServiceConfigError::Url(format!(
                "scheme `{other}` is not ws, wss, http or https"
            )));
        }
    };
    // All four are "special" schemes, so switching among them is allowed;
    // an explicit port stays, a default one stays implied.
    url.set_scheme(scheme)
        .map_err(|()| bad("the scheme cannot be changed"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials in the URL are not supported"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a query or fragment is not supported"));
    }
    let prefix = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{prefix}/{SERVICE_PATH}"));
    Ok(url.into())
}

/// Reads at most `cap` bytes of the body. `(bytes, true)` when the body
/// ended within the cap; `(first cap bytes, false)` when it did not — the
/// rest is never read, and dropping the response closes the connection.
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<(Bytes, bool), reqwest::Error> {
    // Pre-size from the declared length, but never trust it for more than
    // a modest allocation before the bytes actually arrive.
    let hint = response
        .content_length()
        .map_or(8 * 1024, |n| n.min(1024 * 1024) as usize);
    let mut buf = BytesMut::with_capacity(hint.min(cap));
    while let Some(chunk) = response.chunk().await? {
        let room = cap - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            return Ok((buf.freeze(), false));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf.freeze(), true))
}

/// Decodes a 200 body. It must be a JSON object: serde would also build a
/// struct from a JSON array, and `[]` read as "no rooms" would close every
/// open cycle.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, RoomServiceError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(RoomServiceError::Malformed {
            reason: "the body is not a JSON object".to_owned(),
        });
    }
    serde_json::from_slice(body).map_err(|e| RoomServiceError::Malformed {
        reason: e.to_string(),
    })
}

/// A non-200 answer → [`RoomServiceError::Twirp`]. A Twirp error body is
/// `{"code": "...", "msg": "...", "meta": {...}}`; anything else keeps its
/// text as the message and gets a code from the status.
fn twirp_error(status: u16, body: &[u8]) -> RoomServiceError {
    #[derive(Deserialize)]
    struct TwirpBody {
        code: String,
        #[serde(default)]
        msg: Option<String>,
    }
    let parsed = (!(300..400).contains(&status))
        .then(|| serde_json::from_slice::<TwirpBody>(body).ok())
        .flatten()
        .filter(|b| !b.code.is_empty());
    match parsed {
        Some(b) => RoomServiceError::Twirp {
            status,
            code: b.code,
            msg: clip(b.msg.as_deref().unwrap_or_default()),
            plain_body: false,
        },
        None => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            RoomServiceError::Twirp {
                status,
                code: code_for_status(status).to_owned(),
                msg: if text.is_empty() {
                    format!("HTTP {status} with no body")
                } else {
                    clip(text)
                },
                plain_body: true,
            }
        }
    }
}

/// The Twirp code a Twirp client assigns to a non-Twirp error response.
fn code_for_status(status: u16) -> &'static str {
    match status {
        // Redirects (Twirp never redirects a POST) and 400 alike.
        300..=400 => "internal",
        401 => "unauthenticated",
        403 => "permission_denied",
        404 => "bad_route",
        429 => "resource_exhausted",
        502..=504 => "unavailable",
        _ => "unknown",
    }
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_ERROR_MSG_CHARS) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

/// A protojson repeated field: absent (zero values omitted) or `null`
/// means empty.
/// A `ListParticipants` answer's participants as LiveKit spelled them.
#[derive(Deserialize)]
struct RawParticipants {
    #[serde(default, deserialize_with = "de_list")]
    participants: Vec<serde_json::Value>,
}

/// Reads a 200 `ListParticipants` body as `list_participants_raw` does:
/// a JSON object whose participants each read as a [`ParticipantInfo`]. One
/// that does not fails the whole listing: skipping it would read as "gone"
/// and close a cycle of someone still there. Public for the fuzz target.
pub fn decode_participants(body: &[u8]) -> Result<Vec<serde_json::Value>, RoomServiceError> {
    let res: RawParticipants = decode(body)?;
    every_reads_as::<ParticipantInfo>(&res.participants, "participant")?;
    Ok(res.participants)
}

/// The typed reading of values `every_reads_as` already checked.
fn read_all<T: DeserializeOwned>(
    values: Vec<serde_json::Value>,
) -> Result<Vec<T>, RoomServiceError> {
    values
        .into_iter()
        .map(|v| {
            serde_json::from_value(v).map_err(|e| RoomServiceError::Malformed {
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Each value reads as a `T`, or the answer is malformed.
fn every_reads_as<T: DeserializeOwned>(
    values: &[serde_json::Value],
    what: &str,
) -> Result<(), RoomServiceError> {
    for (i, v) in values.iter().enumerate() {
        if !v.is_object() {
            return Err(RoomServiceError::Malformed {
                reason: format!("{what} {i} is not a JSON object"),
            });
        }
        serde_json::from_value::<T>(v.clone()).map_err(|e| RoomServiceError::Malformed {
            reason: format!("{what} {i}: {e}"),
        })?;
    }
    Ok(())
}

fn de_list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Option::<Vec<T>>::deserialize(d).map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::livekit::{ParticipantKind, ParticipantState};
    use jsonwebtoken::{DecodingKey, Validation};
    use serde_json::{Value, json};

    fn client(url: &str) -> Result<RoomService, RoomServiceConfigError> {
        RoomService::new(
            url,
            "devkey",
            "secret",
            reqwest::Client::new(),
            Duration::from_secs(5),
        )
    }

    #[test]
    fn url_mapping() {
        for (given, endpoint) in [
            (
                "wss://lk.example.com",
                "https://lk.example.com/twirp/livekit.RoomService/ListRooms",
            ),
            (
                "wss://project.livekit.cloud/",
                "https://project.livekit.cloud/twirp/livekit.RoomService/ListRooms",
            ),
            (
                "ws://127.0.0.1:7880",
                "http://127.0.0.1:7880/twirp/livekit.RoomService/ListRooms",
            ),
            (
                "https://lk.example.com:8443/",
                "https://lk.example.com:8443/twirp/livekit.RoomService/ListRooms",
            ),
            (
                "http://localhost:7880",
                "http://localhost:7880/twirp/livekit.RoomService/ListRooms",
            ),
            // The default port of the old scheme is the new one's too.
            (
                "wss://lk.example.com:443",
                "https://lk.example.com/twirp/livekit.RoomService/ListRooms",
            ),
            // A non-default port is kept even if it looks like the other
            // scheme's.
            (
                "wss://lk.example.com:80",
                "https://lk.example.com:80/twirp/livekit.RoomService/ListRooms",
            ),
            (
                "https://gw.example.com/livekit",
                "https://gw.example.com/livekit/twirp/livekit.RoomService/ListRooms",
            ),
            (
                "wss://gw.example.com/a/b//",
                "https://gw.example.com/a/b/twirp/livekit.RoomService/ListRooms",
            ),
            (
                "  WSS://LK.example.com  ",
                "https://lk.example.com/twirp/livekit.RoomService/ListRooms",
            ),
            (
                "ws://[::1]:7880",
                "http://[::1]:7880/twirp/livekit.RoomService/ListRooms",
            ),
        ] {
            let svc = client(given).unwrap_or_else(|e| panic!("{given}: {e}"));
            assert_eq!(svc.endpoint("ListRooms"), endpoint, "{given}");
        }
    }

    #[test]
    fn url_refusals() {
        for bad in [
            "",
            "lk.example.com",
            "lk.example.com:7880",
            "ftp://lk.example.com",
            "tcp://lk.example.com:7880",
            "file:///tmp/x",
            "https://user:pass@lk.example.com",
            "https://lk.example.com/?region=eu",
            "https://lk.example.com/#x",
            "https://",
        ] {
            match client(bad) {
                Err(RoomServiceConfigError::Url(_)) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let err = |key: &str, secret: &str, t: Duration| {
            RoomService::new("wss://x", key, secret, reqwest::Client::new(), t).unwrap_err()
        };
        let t = Duration::from_secs(1);
        assert_eq!(err("", "s", t), RoomServiceConfigError::EmptyCredentials);
        assert_eq!(err("k", "", t), RoomServiceConfigError::EmptyCredentials);
        assert_eq!(
            err("k", "s", Duration::ZERO),
            RoomServiceConfigError::ZeroTimeout
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let svc = RoomService::new(
            "wss://x",
            "devkey",
            "s3cr3t-value",
            reqwest::Client::new(),
            Duration::from_secs(1),
        )
        .unwrap();
        let shown = format!("{svc:?}");
        assert!(shown.contains("devkey"), "{shown}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
    }

    fn claims_of(token: &str, secret: &str) -> Value {
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        v.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(secret.as_bytes()), &v)
            .unwrap()
            .claims
    }

    #[test]
    fn token_claims() {
        let svc = client("wss://x").unwrap();
        let now = 1_763_719_200;
        let list = svc.token(
            &VideoGrant {
                room_list: true,
                ..VideoGrant::default()
            },
            now,
        );
        assert_eq!(
            jsonwebtoken::decode_header(&list).unwrap().alg,
            Algorithm::HS256
        );
        assert_eq!(
            claims_of(&list, "secret"),
            json!({"iss": "devkey", "nbf": now, "exp": now + 60, "video": {"roomList": true}})
        );

        let admin = svc.token(
            &VideoGrant {
                room_admin: true,
                room: Some("itqan-academy-quran-session-121"),
                ..VideoGrant::default()
            },
            now,
        );
        assert_eq!(
            claims_of(&admin, "secret"),
            json!({"iss": "devkey", "nbf": now, "exp": now + 60,
                   "video": {"roomAdmin": true, "room": "itqan-academy-quran-session-121"}})
        );

        // Signed with the secret: another secret does not verify it.
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        assert!(
            jsonwebtoken::decode::<Value>(&admin, &DecodingKey::from_secret(b"other"), &v).is_err()
        );
    }

    #[test]
    fn twirp_error_bodies() {
        let e = twirp_error(
            404,
            br#"{"code":"not_found","msg":"requested room does not exist"}"#,
        );
        assert!(e.is_not_found(), "{e}");
        assert_eq!(e.kind(), "twirp");
        assert_eq!(e.twirp_code(), Some("not_found"));
        assert_eq!(
            e.to_string(),
            "LiveKit answered HTTP 404 `not_found`: requested room does not exist"
        );

        // Metadata and unknown fields are tolerated; a missing msg is empty.
        let e = twirp_error(
            503,
            br#"{"code":"unavailable","meta":{"retry":"1"},"extra":1}"#,
        );
        assert!(
            matches!(&e, RoomServiceError::Twirp { status: 503, code, msg, plain_body: false }
            if code == "unavailable" && msg.is_empty())
        );

        // A grant LiveKit refuses: Twirp's unauthenticated, 401.
        let e = twirp_error(
            401,
            br#"{"code":"unauthenticated","msg":"permissions denied"}"#,
        );
        assert_eq!(e.twirp_code(), Some("unauthenticated"));
        assert!(!e.is_not_found());

        // A token LiveKit cannot verify: plain text from its middleware.
        let e = twirp_error(
            401,
            b"invalid authorization token: token signature is invalid",
        );
        assert!(
            matches!(&e, RoomServiceError::Twirp { status: 401, code, msg, plain_body: true }
            if code == "unauthenticated" && msg.starts_with("invalid authorization token"))
        );

        // A bare 404 is a route problem, never "no such room".
        for body in [
            &b"404 page not found"[..],
            b"",
            br#"{"code":"bad_route","msg":"no handler"}"#,
        ] {
            let e = twirp_error(404, body);
            assert_eq!(e.twirp_code(), Some("bad_route"), "{e}");
            assert!(!e.is_not_found(), "{e}");
        }
        // JSON without a code, or a not_found under a 3xx, is not Twirp.
        let e = twirp_error(502, br#"{"error":"bad gateway"}"#);
        assert!(
            matches!(&e, RoomServiceError::Twirp { code, plain_body: true, .. } if code == "unavailable")
        );
        let e = twirp_error(302, br#"{"code":"not_found","msg":"x"}"#);
        assert!(
            matches!(&e, RoomServiceError::Twirp { code, plain_body: true, .. } if code == "internal")
        );
        assert!(!e.is_not_found());

        for (status, code) in [
            (400, "internal"),
            (403, "permission_denied"),
            (429, "resource_exhausted"),
            (500, "unknown"),
            (504, "unavailable"),
        ] {
            assert_eq!(twirp_error(status, b"<html>").twirp_code(), Some(code));
        }
        let e = twirp_error(500, b"");
        assert!(e.to_string().ends_with("HTTP 500 with no body"), "{e}");

        // Long messages are clipped for logs.
        let long = "é".repeat(2_000);
        let e = twirp_error(500, long.as_bytes());
        let RoomServiceError::Twirp { msg, .. } = e else {
            unreachable!()
        };
        assert_eq!(msg.chars().count(), MAX_ERROR_MSG_CHARS + 1);
    }

    #[test]
    fn error_kinds() {
        assert_eq!(RoomServiceError::Timeout { after: None }.kind(), "timeout");
        assert_eq!(
            RoomServiceError::Malformed { reason: "x".into() }.kind(),
            "malformed"
        );
        assert_eq!(RoomServiceError::TooLarge { limit: 1 }.kind(), "too_large");
        assert_eq!(
            RoomServiceError::Timeout {
                after: Some(Duration::from_millis(300))
            }
            .to_string(),
            "LiveKit did not answer in time (300ms)"
        );
    }

    #[derive(Deserialize, Debug)]
    struct Participants {
        #[serde(default, deserialize_with = "de_list")]
        participants: Vec<ParticipantInfo>,
    }

    #[test]
    fn decoding_both_spellings() {
        let snake = br#"{"participants":[{"sid":"PA_1","identity":"u","state":"ACTIVE",
            "joined_at":"1763719201","joined_at_ms":"1763719201456","kind":"SIP",
            "permission":null,"tracks":[]}]}"#;
        let camel = br#"{"participants":[{"sid":"PA_1","identity":"u","state":2,
            "joinedAt":1763719201,"joinedAtMs":"1763719201456","kind":3}]}"#;
        let a: Participants = decode(snake).unwrap();
        let b: Participants = decode(camel).unwrap();
        assert_eq!(a.participants, b.participants);
        let p = &a.participants[0];
        assert_eq!(p.state, ParticipantState::Active);
        assert_eq!(p.kind, ParticipantKind::Sip);
        assert_eq!(p.joined_at_millis(), Some(1_763_719_201_456));

        // Zero values omitted, or the list null: empty.
        for empty in [
            &b"{}"[..],
            b" {\"participants\":[]}",
            b"{\"participants\":null}",
        ] {
            let p: Participants = decode(empty).unwrap();
            assert!(p.participants.is_empty());
        }
    }

    #[test]
    fn decoding_refuses_non_objects() {
        for bad in [
            &b""[..],
            b"[]",
            b"[[]]",
            b"null",
            b"\"x\"",
            b"<html>",
            b"{\"participants\":",
            b"{\"participants\":{}}",
            b"{\"participants\":[{\"joined_at\":\"soon\"}]}",
        ] {
            let e = decode::<Participants>(bad).unwrap_err();
            assert_eq!(e.kind(), "malformed", "{}", String::from_utf8_lossy(bad));
        }
    }
}
