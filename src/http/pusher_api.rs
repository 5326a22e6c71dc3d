//! The Pusher HTTP API, as the main app's Pusher server library speaks it:
//! `POST /apps/{app_id}/events`, `POST /apps/{app_id}/batch_events`,
//! `GET /apps/{app_id}/channels`, `GET /apps/{app_id}/channels/{name}`,
//! `GET /apps/{app_id}/channels/{name}/users`.
//!
//! Every request is signed (`pusher::auth::verify_http_api_request`).
//! Events go through `Store::publish`, so sockets on every node get them;
//! channel queries go through `Store::channel_subscriptions`, which sums
//! every node's subscriptions.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::AppState;
use super::client_ip::ClientIp;
use super::error::AppError;
use crate::metrics::Metrics;
use crate::pusher::auth::verify_http_api_request;
use crate::pusher::{ChannelKind, ChannelName, Halt, SocketId, frame};
use crate::store::{Broadcast, ChannelQuery, StoreError, SubscriptionCounts};

/// Largest request body: a full batch (10 events of 10 KiB data, escaped,
/// with 100 channel names each) fits.
pub const MAX_BODY_BYTES: usize = 512 * 1024;
/// Pusher's limit on an event's `data`.
pub const MAX_DATA_BYTES: usize = 10 * 1024;
/// Pusher's limit on the channels of one event.
pub const MAX_CHANNELS_PER_EVENT: usize = 100;
/// Pusher's limit on the events of one batch.
pub const MAX_BATCH_EVENTS: usize = 10;
/// Pusher's limit on an event name.
pub const MAX_EVENT_NAME_LEN: usize = 200;

/// The query pairs of an authenticated request, URL-decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// 429 while the client's address has no failed credential left, 404 for
/// another app id, then the request signature (401, which spends one).
fn authenticate(
    app: &AppState,
    client: ClientIp,
    app_id: &str,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> Result<Query, AppError> {
    app.limits.credentials_allowed(client.0)?;
    if app_id != &*app.pusher_app_id {
        return Err(AppError::not_found(format!("no app with id {app_id:?}")));
    }
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (&**k, &**v)).collect();
    let now = crate::domain::now_millis() / 1000;
    verify_http_api_request(
        &app.pusher_app_key,
        &app.app_secret,
        method.as_str(),
        uri.path(),
        &borrowed,
        body,
        now,
    )
    .map_err(|e| {
        tracing::info!(error = %e, path = uri.path(), "Pusher HTTP API request rejected");
        app.limits.credential_failed(client.0);
        AppError::unauthorized(e.code(), e.to_string())
    })?;
    Ok(Query(pairs))
}

fn body_error(rejection: BytesRejection) -> AppError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::too_large(MAX_BODY_BYTES)
    } else {
        AppError::bad_request("unreadable_body", rejection.body_text())
    }
}

fn store_error(e: StoreError) -> AppError {
    tracing::error!(error = %e, "Pusher HTTP API: store operation failed");
    AppError::store_unavailable()
}

fn invalid(message: impl Into<String>) -> AppError {
    AppError::bad_request("invalid_request", message)
}

/// The `info` attributes a request may ask for.
#[derive(Debug, Default, Clone, Copy)]
struct Info {
    subscription_count: bool,
    user_count: bool,
}

impl Info {
    fn parse(info: Option<&str>) -> Result<Self, AppError> {
        let mut out = Self::default();
        for attribute in info.unwrap_or_default().split(',').map(str::trim) {
            match attribute {
                "" => {}
                "subscription_count" => out.subscription_count = true,
                "user_count" => out.user_count = true,
                other => {
                    return Err(invalid(format!(
                        "unknown info attribute {other:?}; use subscription_count or user_count"
                    )));
                }
            }
        }
        Ok(out)
    }

    fn any(self) -> bool {
        self.subscription_count || self.user_count
    }

    /// `user_count` exists only for presence channels (as on Pusher).
    fn check_for(self, channel: &ChannelName) -> Result<(), AppError> {
        if self.user_count && channel.kind() != ChannelKind::Presence {
            return Err(invalid(format!(
                "user_count is only available for presence channels, and {channel} is not one"
            )));
        }
        Ok(())
    }

    /// The attributes of one channel: `(subscriptions, users)`.
    fn attributes(self, (subscriptions, users): (usize, usize)) -> Map<String, Value> {
        let mut out = Map::new();
        if self.user_count {
            out.insert("user_count".into(), json!(users));
        }
        if self.subscription_count {
            out.insert("subscription_count".into(), json!(subscriptions));
        }
        out
    }
}

/// An event as the API receives it; unknown fields are ignored.
#[derive(Debug, Deserialize)]
struct EventBody {
    name: Option<String>,
    data: Option<Value>,
    channels: Option<Vec<String>>,
    channel: Option<String>,
    socket_id: Option<String>,
    info: Option<String>,
}

/// A validated event, ready to publish.
pub struct Event {
    name: String,
    data: String,
    channels: Vec<ChannelName>,
    except: Option<SocketId>,
    info: Info,
}

impl Event {
    fn parse(body: EventBody) -> Result<Self, AppError> {
        let name = body
            .name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid("the event needs a non-empty \"name\""))?;
        if name.chars().count() > MAX_EVENT_NAME_LEN {
            return Err(invalid(format!(
                "the event name is longer than {MAX_EVENT_NAME_LEN} characters"
            )));
        }
        if name.starts_with("pusher:") || name.starts_with("pusher_internal:") {
            return Err(invalid(format!(
                "event names starting with pusher: are reserved ({name:?})"
            )));
        }
        // Pusher libraries send `data` as a string and subscribers get it
        // verbatim; any other JSON value is sent as its JSON text.
        let data = match body.data {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => return Err(invalid("the event needs \"data\"")),
        };
        if data.len() > MAX_DATA_BYTES {
            return Err(AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the event data is larger than {MAX_DATA_BYTES} bytes"),
            ));
        }
        let names = match (body.channels, body.channel) {
            (Some(channels), None) => channels,
            (None, Some(channel)) => vec![channel],
            (Some(_), Some(_)) => {
                return Err(invalid("give either \"channels\" or \"channel\", not both"));
            }
            (None, None) => return Err(invalid("the event needs \"channels\" or \"channel\"")),
        };
        if names.is_empty() {
            return Err(invalid("the event names no channel"));
        }
        if names.len() > MAX_CHANNELS_PER_EVENT {
            return Err(invalid(format!(
                "an event may go to at most {MAX_CHANNELS_PER_EVENT} channels, not {}",
                names.len()
            )));
        }
        let mut channels = Vec::with_capacity(names.len());
        for n in &names {
            let channel = ChannelName::parse_for_publish(n)
                .map_err(|e| invalid(format!("invalid channel {n:?}: {e}")))?;
            if !channels.contains(&channel) {
                channels.push(channel);
            }
        }
        // Each encrypted channel's payload is encrypted with that channel's
        // own key, so one payload cannot go to several (Pusher's rule and
        // its server libraries' wording).
        if channels.len() > 1 && channels.iter().any(ChannelName::is_encrypted) {
            return Err(invalid(
                "You cannot trigger to multiple channels when using encrypted channels",
            ));
        }
        let except = body
            .socket_id
            .map(|s| SocketId::parse(&s).map_err(|e| invalid(format!("socket_id {s:?}: {e}"))))
            .transpose()?;
        let info = Info::parse(body.info.as_deref())?;
        for channel in &channels {
            info.check_for(channel)?;
        }
        Ok(Self {
            name,
            data,
            channels,
            except,
            info,
        })
    }

    /// One frame per channel, serialized once and shared by its subscribers.
    fn broadcasts(&self) -> impl Iterator<Item = Broadcast> + '_ {
        self.channels.iter().map(|channel| Broadcast {
            channel: channel.as_str().to_owned(),
            frame: frame::event(&self.name, Some(channel.as_str()), &self.data),
            except: self.except.clone(),
            halt: None,
        })
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, AppError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| AppError::bad_request("invalid_json", e.to_string()))?;
    if !value.is_object() {
        return Err(AppError::bad_request(
            "invalid_json",
            "the body must be a JSON object",
        ));
    }
    serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
}

/// Publishes `events` on every node, in order, in one store call.
async fn publish(app: &AppState, events: &[Event]) -> Result<(), AppError> {
    let broadcasts: Vec<Broadcast> = events.iter().flat_map(Event::broadcasts).collect();
    let n = broadcasts.len() as u64;
    crate::cache_channels::remember(&*app.event_cache, &broadcasts)
        .await
        .map_err(store_error)?;
    app.store.publish(broadcasts).await.map_err(store_error)?;
    Metrics::add(&app.metrics.api_messages_published, n);
    Ok(())
}

/// Subscriptions (summed over every node) and presence members of some
/// channels.
#[derive(Default)]
struct Counts {
    subscriptions: SubscriptionCounts,
    users: BTreeMap<String, usize>,
}

impl Counts {
    /// The counts of `names`: members are read for presence channels only
    /// (`user_count` exists for nothing else).
    async fn of(app: &AppState, names: Vec<String>) -> Result<Self, AppError> {
        if names.is_empty() {
            return Ok(Self::default());
        }
        let presence: Vec<String> = names
            .iter()
            .filter(|n| n.starts_with("presence-"))
            .cloned()
            .collect();
        let subscriptions = app
            .store
            .channel_subscriptions(&ChannelQuery::Names(names))
            .await
            .map_err(store_error)?;
        let users = users_of(app, presence).await?;
        Ok(Self {
            subscriptions,
            users,
        })
    }

    fn get(&self, channel: &str) -> (usize, usize) {
        (
            self.subscriptions.get(channel).copied().unwrap_or(0),
            self.users.get(channel).copied().unwrap_or(0),
        )
    }
}

/// Members of each of these presence channels, from the store (exact
/// across nodes).
async fn users_of(
    app: &AppState,
    channels: Vec<String>,
) -> Result<BTreeMap<String, usize>, AppError> {
    let counts = app
        .presence
        .user_counts(&channels)
        .await
        .map_err(store_error)?;
    Ok(channels.into_iter().zip(counts).collect())
}

/// Counts of the channels of the events that asked for `info`.
async fn counts_for(app: &AppState, events: &[Event]) -> Result<Counts, AppError> {
    let names: Vec<String> = events
        .iter()
        .filter(|e| e.info.any())
        .flat_map(|e| e.channels.iter().map(|c| c.as_str().to_owned()))
        .collect();
    Counts::of(app, names).await
}

fn count(counts: &Counts, channel: &ChannelName) -> (usize, usize) {
    counts.get(channel.as_str())
}

/// `POST /apps/{app_id}/events`: `{}`, or `{"channels": {…}}` with `info`.
pub async fn events(
    State(app): State<AppState>,
    Path(app_id): Path<String>,
    client: ClientIp,
    method: Method,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AppError> {
    let body = body.map_err(body_error)?;
    authenticate(&app, client, &app_id, &method, &uri, &body)?;
    let events = [parse_event(&body)?];
    publish(&app, &events).await?;
    let [event] = events;
    if !event.info.any() {
        return Ok(Json(json!({})));
    }
    let counts = counts_for(&app, std::slice::from_ref(&event)).await?;
    let channels: Map<String, Value> = event
        .channels
        .iter()
        .map(|c| {
            let attributes = event.info.attributes(count(&counts, c));
            (c.as_str().to_owned(), Value::Object(attributes))
        })
        .collect();
    Ok(Json(json!({ "channels": channels })))
}

#[derive(Debug, Deserialize)]
struct BatchBody {
    batch: Vec<EventBody>,
}

/// The body of `POST /apps/{app_id}/events`, validated. Public (like
/// [`parse_batch`]) so the fuzz target `pusher_http_api` drives the
/// handler's own parser; refusals are 400 (413 for oversized `data`).
pub fn parse_event(body: &[u8]) -> Result<Event, AppError> {
    Event::parse(parse_json(body)?)
}

/// The body of `POST /apps/{app_id}/batch_events`: every event is validated
/// (one channel each) before any is published.
pub fn parse_batch(body: &[u8]) -> Result<Vec<Event>, AppError> {
    let batch: BatchBody = parse_json(body)?;
    if batch.batch.len() > MAX_BATCH_EVENTS {
        return Err(invalid(format!(
            "a batch holds at most {MAX_BATCH_EVENTS} events, not {}",
            batch.batch.len()
        )));
    }
    let mut events = Vec::with_capacity(batch.batch.len());
    for (i, body) in batch.batch.into_iter().enumerate() {
        let event = Event::parse(body).map_err(|mut e| {
            e.message = format!("batch[{i}]: {}", e.message);
            e
        })?;
        if event.channels.len() != 1 {
            return Err(invalid(format!(
                "batch[{i}]: a batch event names one channel"
            )));
        }
        events.push(event);
    }
    Ok(events)
}

/// `POST /apps/{app_id}/batch_events`: `{}`, or `{"batch": [{…}, …]}` when
/// an event asked for `info`. Each event names one channel (as on Pusher);
/// all are validated before any is published.
pub async fn batch_events(
    State(app): State<AppState>,
    Path(app_id): Path<String>,
    client: ClientIp,
    method: Method,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AppError> {
    let body = body.map_err(body_error)?;
    authenticate(&app, client, &app_id, &method, &uri, &body)?;
    let events = parse_batch(&body)?;
    publish(&app, &events).await?;
    if !events.iter().any(|e| e.info.any()) {
        return Ok(Json(json!({})));
    }
    let counts = counts_for(&app, &events).await?;
    let batch: Vec<Value> = events
        .iter()
        .map(|e| Value::Object(e.info.attributes(count(&counts, &e.channels[0]))))
        .collect();
    Ok(Json(json!({ "batch": batch })))
}

/// `GET /apps/{app_id}/channels?filter_by_prefix=&info=`: occupied channels.
pub async fn channels(
    State(app): State<AppState>,
    Path(app_id): Path<String>,
    client: ClientIp,
    method: Method,
    uri: Uri,
) -> Result<Json<Value>, AppError> {
    let query = authenticate(&app, client, &app_id, &method, &uri, &[])?;
    let prefix = query.get("filter_by_prefix").unwrap_or_default().to_owned();
    let info = Info::parse(query.get("info"))?;
    if info.user_count && !prefix.starts_with("presence-") {
        return Err(invalid(
            "user_count is only available for presence channels: add filter_by_prefix=presence-",
        ));
    }
    let counts = app
        .store
        .channel_subscriptions(&ChannelQuery::Prefix(prefix))
        .await
        .map_err(store_error)?;
    let users = if info.user_count {
        users_of(&app, counts.keys().cloned().collect()).await?
    } else {
        BTreeMap::new()
    };
    let channels: BTreeMap<String, Value> = counts
        .into_iter()
        .map(|(channel, n)| {
            let members = users.get(&channel).copied().unwrap_or(0);
            (channel, Value::Object(info.attributes((n, members))))
        })
        .collect();
    Ok(Json(json!({ "channels": channels })))
}

fn channel_param(name: &str) -> Result<ChannelName, AppError> {
    ChannelName::parse(name).map_err(|e| invalid(format!("invalid channel {name:?}: {e}")))
}

/// `GET /apps/{app_id}/channels/{name}?info=`: `{"occupied": bool, …}`.
pub async fn channel(
    State(app): State<AppState>,
    Path((app_id, name)): Path<(String, String)>,
    client: ClientIp,
    method: Method,
    uri: Uri,
) -> Result<Json<Value>, AppError> {
    let query = authenticate(&app, client, &app_id, &method, &uri, &[])?;
    let channel = channel_param(&name)?;
    let info = Info::parse(query.get("info"))?;
    info.check_for(&channel)?;
    let counts = Counts::of(&app, vec![name]).await?;
    let n = count(&counts, &channel);
    let mut body = info.attributes(n);
    body.insert("occupied".into(), json!(n.0 > 0));
    Ok(Json(Value::Object(body)))
}

/// `GET /apps/{app_id}/channels/{name}/users`: a presence channel's
/// members, `{"users": [{"id": …}, …]}`, exact across nodes.
pub async fn users(
    State(app): State<AppState>,
    Path((app_id, name)): Path<(String, String)>,
    client: ClientIp,
    method: Method,
    uri: Uri,
) -> Result<Json<Value>, AppError> {
    authenticate(&app, client, &app_id, &method, &uri, &[])?;
    let channel = channel_param(&name)?;
    if channel.kind() != ChannelKind::Presence {
        return Err(invalid(format!(
            "users are only available for presence channels, and {channel} is not one"
        )));
    }
    let members = app
        .presence
        .members(channel.as_str())
        .await
        .map_err(store_error)?;
    let users: Vec<Value> = members
        .into_iter()
        .map(|(id, _)| json!({ "id": id }))
        .collect();
    Ok(Json(json!({ "users": users })))
}

/// `POST /apps/{app_id}/users/{user_id}/terminate_connections`: every
/// socket signed in as the user, on every node, gets a 4009 `pusher:error`
/// and a 4009 close, as Pusher (and its peers) send; pusher-js treats
/// 4000–4099 as refused and does not reconnect on its own. Those sockets
/// are exactly the subscribers of the user's `#server-to-user-<id>`, so a
/// halt broadcast on it reaches them wherever they are. Answers `{}`.
pub async fn terminate_connections(
    State(app): State<AppState>,
    Path((app_id, user_id)): Path<(String, String)>,
    client: ClientIp,
    method: Method,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AppError> {
    let body = body.map_err(body_error)?;
    authenticate(&app, client, &app_id, &method, &uri, &body)?;
    let channel = ChannelName::user(&user_id).ok_or_else(|| {
        invalid(format!(
            "invalid user id {user_id:?}: 1 to 128 of [A-Za-z0-9_-=@,.;]"
        ))
    })?;
    let halt = Broadcast::halt(channel.as_str(), Halt::Terminated);
    app.store.publish(vec![halt]).await.map_err(store_error)?;
    Ok(Json(json!({})))
}
