//! `rollcall serve` settings: the contract's environment variables, each
//! also a CLI flag, parsed once into typed `Settings`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::engine::naming::{
    DEFAULT_CHANNEL_TEMPLATE, DEFAULT_IDENTITY_PATTERN, DEFAULT_ROOM_PATTERN,
};
use crate::engine::{Naming, VerdictRules};
use crate::http::client_ip::TrustedProxies;
use crate::limits::AllowedOrigins;
use crate::livekit::KeyRing;
use crate::store::RedisOptions;

pub const DEV_LIVEKIT_KEY: &str = "devkey";
pub const DEV_LIVEKIT_SECRET: &str = "secret";
pub const DEV_APP_ID: &str = "rollcall";
pub const DEV_APP_KEY: &str = "rollcall-key";
pub const DEV_APP_SECRET: &str = "rollcall-secret";

/// Flags of `rollcall serve`; every one can come from its environment
/// variable instead.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// HTTP + WebSocket address.
    #[arg(long, env = "ROLLCALL_LISTEN", default_value = "127.0.0.1:6001")]
    pub listen: SocketAddr,
    /// Redis URL; unset keeps state in this process's memory.
    #[arg(long, env = "ROLLCALL_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Comma-separated seed URLs of a Redis Cluster (Redis 7+, instead of
    /// ROLLCALL_REDIS_URL): rooms spread over its slots, broadcasts by
    /// sharded pub/sub.
    #[arg(long, env = "ROLLCALL_REDIS_CLUSTER")]
    pub redis_cluster: Option<String>,
    /// The LiveKit API key (with --livekit-api-secret).
    #[arg(long, env = "LIVEKIT_API_KEY")]
    pub livekit_api_key: Option<String>,
    #[arg(long, env = "LIVEKIT_API_SECRET", hide_env_values = true)]
    pub livekit_api_secret: Option<String>,
    /// Several LiveKit key pairs, `key1: secret1, key2: secret2`.
    #[arg(long, env = "LIVEKIT_KEYS", hide_env_values = true)]
    pub livekit_keys: Option<String>,
    #[arg(long, env = "ROLLCALL_APP_ID", default_value = DEV_APP_ID)]
    pub app_id: String,
    #[arg(long, env = "ROLLCALL_APP_KEY", default_value = DEV_APP_KEY)]
    pub app_key: String,
    #[arg(long, env = "ROLLCALL_APP_SECRET", default_value = DEV_APP_SECRET, hide_env_values = true)]
    pub app_secret: String,
    /// Regex on the room name; named groups fill the channel template.
    #[arg(long, env = "ROLLCALL_ROOM_PATTERN", default_value = DEFAULT_ROOM_PATTERN)]
    pub room_pattern: String,
    /// Regex on the participant identity; its `user_id` group is the person.
    #[arg(long, env = "ROLLCALL_IDENTITY_PATTERN", default_value = DEFAULT_IDENTITY_PATTERN)]
    pub identity_pattern: String,
    /// Channel a room's updates go to, e.g. `session.{id}`.
    #[arg(long, env = "ROLLCALL_CHANNEL_TEMPLATE", default_value = DEFAULT_CHANNEL_TEMPLATE)]
    pub channel_template: String,
    /// No heartbeat for this long closes a person's open cycle (rule 13).
    #[arg(long, env = "ROLLCALL_HEARTBEAT_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,
    /// How often stale cycles and due finalizations are looked for.
    #[arg(long, env = "ROLLCALL_SWEEP_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub sweep_interval: Duration,
    /// Wait after a session's scheduled end before the final verdict.
    #[arg(long, env = "ROLLCALL_FINALIZE_DELAY", default_value = "5m", value_parser = parse_duration)]
    pub finalize_delay: Duration,
    /// Joining later than start + this is "late".
    #[arg(long, env = "ROLLCALL_LATE_GRACE", default_value = "15m", value_parser = parse_duration)]
    pub late_grace: Duration,
    /// Below this percentage of the scheduled time: absent.
    #[arg(long, env = "ROLLCALL_ABSENT_BELOW", value_parser = parse_percent, default_value_t = 10.0)]
    pub absent_below: f64,
    /// Below this percentage: partial.
    #[arg(long, env = "ROLLCALL_PARTIAL_BELOW", value_parser = parse_percent, default_value_t = 50.0)]
    pub partial_below: f64,
    /// From this percentage: present even when late.
    #[arg(long, env = "ROLLCALL_PRESENT_FROM", value_parser = parse_percent, default_value_t = 75.0)]
    pub present_from: f64,
    /// Where the final report is POSTed, signed with the app secret.
    #[arg(long, env = "ROLLCALL_REPORT_WEBHOOK_URL")]
    pub report_webhook_url: Option<String>,
    /// The LiveKit server whose RoomService is asked who is really in each
    /// room (`https://…`, `wss://…`, `http://…`); unset: no reconciliation.
    #[arg(long, env = "LIVEKIT_URL")]
    pub livekit_url: Option<String>,
    /// How often live rooms are checked against LiveKit; `0`: on demand only.
    #[arg(long, env = "ROLLCALL_RECONCILE_INTERVAL", default_value = "2m", value_parser = parse_duration_or_zero)]
    pub reconcile_interval: Duration,
    /// Longest wait for one RoomService call; past it nothing changes.
    #[arg(long, env = "ROLLCALL_LIVEKIT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub livekit_timeout: Duration,
    /// Silence after which the server pings a socket (announced to clients).
    #[arg(long, env = "ROLLCALL_ACTIVITY_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub activity_timeout: Duration,
    /// How long a pinged socket has to answer before it is closed (4201).
    #[arg(long, env = "ROLLCALL_PONG_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub pong_timeout: Duration,
    /// Most WebSocket connections this node holds at once.
    #[arg(long, env = "ROLLCALL_MAX_CONNECTIONS", value_parser = parse_count, default_value_t = 200_000)]
    pub max_connections: usize,
    /// WebSocket connections the app may hold across all nodes (Pusher's
    /// per-app quota); past it a new connection gets 4004 and pusher-js
    /// stops retrying. Counted from each node's figure, refreshed every
    /// ROLLCALL_NODE_TTL / 4. `0` = no quota.
    #[arg(long, env = "ROLLCALL_MAX_APP_CONNECTIONS", value_parser = parse_count, default_value_t = 0)]
    pub max_app_connections: usize,
    /// Users one presence channel may have (Pusher's 100); a new user past
    /// it gets `pusher:subscription_error` with status 4100.
    #[arg(long, env = "ROLLCALL_MAX_PRESENCE_MEMBERS", value_parser = parse_presence_members, default_value_t = 100)]
    pub max_presence_members: usize,
    /// The lease each node renews in the store (every quarter of it): a
    /// node that stops renewing (crashed, cut off) has its presence members
    /// removed by the other nodes within 1.25 × this.
    #[arg(long, env = "ROLLCALL_NODE_TTL", default_value = "10s", value_parser = parse_node_ttl)]
    pub node_ttl: Duration,
    /// Room data in Redis expires this long after the room's last write.
    #[arg(long, env = "ROLLCALL_REDIS_RETENTION", default_value = "30days", value_parser = parse_duration)]
    pub redis_retention: Duration,
    /// Longest wait for a Redis command; past it webhooks get 503.
    #[arg(long, env = "ROLLCALL_REDIS_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub redis_timeout: Duration,
    /// Replicas that must have a commit before its webhook is acknowledged
    /// (Redis `WAIT`), so an acknowledged webhook survives the master's loss
    /// and a failover; `0`: the master's own fsync is enough. Default: 1 on
    /// a Redis Cluster (set 0 for a cluster without replicas), 0 on one
    /// Redis.
    #[arg(long, env = "ROLLCALL_REDIS_WAIT_REPLICAS", value_parser = parse_count)]
    pub redis_wait_replicas: Option<usize>,
    /// How long a commit waits for those replicas; past it the webhook gets
    /// 503 (LiveKit retries, and the retry is recognized). Less than
    /// ROLLCALL_REDIS_TIMEOUT.
    #[arg(long, env = "ROLLCALL_REDIS_WAIT_TIMEOUT", default_value = "500ms", value_parser = parse_duration)]
    pub redis_wait_timeout: Duration,
    /// Longest a graceful shutdown waits for in-flight work.
    #[arg(long, env = "ROLLCALL_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    // --- Client addresses and limits (issue 9) ---
    /// Reverse proxies (comma-separated CIDRs or bare IPs) whose
    /// `X-Forwarded-For` names the client; unset trusts nobody.
    #[arg(long, env = "ROLLCALL_TRUSTED_PROXIES", value_parser = TrustedProxies::parse)]
    pub trusted_proxies: Option<TrustedProxies>,
    /// Heartbeats per person (room + identity), `<count>/<duration>`; `0` = off.
    #[arg(long, env = "ROLLCALL_RATE_HEARTBEATS", default_value = "20/1m", value_parser = parse_rate)]
    pub rate_heartbeats: ::std::option::Option<Rate>,
    /// Failed credentials per client address; past it that address's
    /// authenticated requests get 429 until one is refilled. `0` = off.
    #[arg(long, env = "ROLLCALL_RATE_AUTH_FAILURES", default_value = "30/1m", value_parser = parse_rate)]
    pub rate_auth_failures: ::std::option::Option<Rate>,
    /// LiveKit webhooks per client address; `0` = off.
    #[arg(long, env = "ROLLCALL_RATE_WEBHOOKS", default_value = "2000/1s", value_parser = parse_rate)]
    pub rate_webhooks: ::std::option::Option<Rate>,
    /// Concurrent WebSocket connections per client address; `0` = off.
    #[arg(long, env = "ROLLCALL_MAX_CONNECTIONS_PER_IP", value_parser = parse_count, default_value_t = 5000)]
    pub max_connections_per_ip: usize,
    /// Origins (comma-separated, `https://app.example.com`) allowed to open
    /// WebSockets; unset allows any. Requests without `Origin` are allowed.
    #[arg(long, env = "ROLLCALL_ALLOWED_ORIGINS", value_parser = AllowedOrigins::parse)]
    pub allowed_origins: Option<AllowedOrigins>,
    // --- end client addresses and limits ---
    // --- WebSocket hardening (issue 9): write stalls, subscribe churn ---
    /// A socket write that makes no progress for this long ends the socket
    /// (the client stopped reading).
    #[arg(long, env = "ROLLCALL_WRITE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub write_timeout: Duration,
    /// Subscribe/unsubscribe requests allowed per socket, `<count>/<duration>`
    /// (burst `count`); `0` turns the limit off. Over it: 4301.
    #[arg(long, env = "ROLLCALL_RATE_SUBSCRIBES", default_value = "100/10s", value_parser = parse_rate)]
    pub rate_subscribes: ::std::option::Option<Rate>,
    // --- end WebSocket hardening ---
    /// `on` lets subscribers of private channels send `client-*` events to
    /// the channel's other subscribers (Laravel Echo's `whisper`), at most
    /// 10 a second per connection.
    #[arg(long, env = "ROLLCALL_CLIENT_EVENTS", default_value = "off", value_parser = parse_on_off)]
    pub client_events: bool,
    /// Where Pusher-style channel webhooks (channel_occupied,
    /// channel_vacated, member_added, member_removed, client_event,
    /// cache_miss) are POSTed, signed as Pusher signs them; unset: none.
    #[arg(long, env = "ROLLCALL_APP_WEBHOOK_URL")]
    pub app_webhook_url: Option<String>,
    /// How long channel_vacated and member_removed wait for the channel or
    /// member to come back (a page reload) before they are sent; `0`: no hold.
    #[arg(long, env = "ROLLCALL_APP_WEBHOOK_HOLD", default_value = "3s", value_parser = parse_duration_or_zero)]
    pub app_webhook_hold: Duration,
    /// A connection that has not signed in (`pusher:signin`) within this is
    /// closed with 4009, as Pusher's authorized connections are; unset: no
    /// limit.
    #[arg(long, env = "ROLLCALL_SIGNIN_TIMEOUT", value_parser = parse_duration)]
    pub signin_timeout: Option<Duration>,
    // --- The HTTP connection layer (src/server). ---
    /// A new connection's first request head, and any later head from its
    /// first byte, must arrive within this (else 408).
    #[arg(long, env = "ROLLCALL_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_header_timeout: Duration,
    /// A request's whole body must arrive within this after its head.
    #[arg(long, env = "ROLLCALL_HTTP_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub http_body_timeout: Duration,
    /// A keep-alive connection idle this long between requests is closed.
    #[arg(long, env = "ROLLCALL_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub http_idle_timeout: Duration,
    /// Most plain HTTP connections at once (WebSockets are counted by
    /// ROLLCALL_MAX_CONNECTIONS); more are answered 503.
    #[arg(long, env = "ROLLCALL_MAX_HTTP_CONNECTIONS", value_parser = parse_count, default_value_t = 4096)]
    pub max_http_connections: usize,
    /// Most plain HTTP connections from one address; 0 = no cap.
    #[arg(
        long,
        env = "ROLLCALL_MAX_HTTP_CONNECTIONS_PER_IP",
        value_parser = parse_count,
        default_value_t = 256
    )]
    pub max_http_connections_per_ip: usize,
    /// File descriptors kept for plain HTTP (health checks, webhooks):
    /// WebSocket upgrades are refused within this of the limit.
    #[arg(long, env = "ROLLCALL_FD_RESERVE", value_parser = parse_count, default_value_t = 256)]
    pub fd_reserve: usize,
}

/// A rate: `count` per `per`, e.g. `20/1m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// Parses `<count>/<duration>` (`20/1m`, `2000/1s`); `0` (or a zero count)
/// turns the limit off. Messages say what was expected; the variable and
/// the value are named by `cli::explain`.
pub fn parse_rate(s: &str) -> Result<Option<Rate>, String> {
    const EXPECTED: &str = "expected <count>/<duration> like 20/1m, or 0 for off";
    let s = s.trim();
    if s == "0" {
        return Ok(None);
    }
    let (count, per) = s.split_once('/').ok_or(EXPECTED)?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| format!("{EXPECTED} ({:?} is not a whole number)", count.trim()))?;
    let per = parse_duration(per).map_err(|e| format!("{EXPECTED} ({e})"))?;
    if count == 0 {
        return Ok(None);
    }
    if per.as_nanos() < u128::from(count) {
        return Err(format!(
            "{EXPECTED} (the duration must be at least 1ns per request)"
        ));
    }
    Ok(Some(Rate { count, per }))
}

/// A duration as people write it (`250ms`, `10s`, `5m`, `30days`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("expected a duration like 10s or 5m ({e})"))
}

/// A count of things (connections, descriptors): clap's own message for a
/// `usize` ("invalid digit found in string") would not say what it wants.
fn parse_count(s: &str) -> Result<usize, String> {
    s.trim()
        .parse()
        .map_err(|_| "expected a whole number, 0 or more".to_string())
}

/// At least one member, or presence channels could never be joined.
fn parse_presence_members(s: &str) -> Result<usize, String> {
    match parse_count(s)? {
        0 => Err("expected 1 or more".to_string()),
        n => Ok(n),
    }
}

/// A lease of at least a second: renewed every quarter of it, one store
/// round trip must fit comfortably.
fn parse_node_ttl(s: &str) -> Result<Duration, String> {
    let ttl = parse_duration(s)?;
    if ttl < Duration::from_secs(1) {
        return Err("expected 1s or more".to_string());
    }
    Ok(ttl)
}

/// `on` / `off` (also `true`/`false`, `1`/`0`), as the contract writes it.
fn parse_on_off(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err("expected on or off".to_string()),
    }
}

/// A verdict threshold in percent.
fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err("expected a percentage from 0 to 100".to_string()),
    }
}

/// The flag of a contract variable: `ROLLCALL_SWEEP_INTERVAL` →
/// `--sweep-interval`, `LIVEKIT_URL` → `--livekit-url` (every `ServeArgs`
/// field follows this; a test checks it).
pub fn flag_of(var: &str) -> String {
    let name = var.strip_prefix("ROLLCALL_").unwrap_or(var);
    format!("--{}", name.to_ascii_lowercase().replace('_', "-"))
}

/// `VAR (--flag)`, how every message names a setting.
struct Setting<'a>(&'a str);

impl std::fmt::Display for Setting<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.0, flag_of(self.0))
    }
}

/// A setting that parsed but does not make sense. Every message names the
/// variable (and its flag) and, unless it is a secret, the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "LIVEKIT_API_KEY (--livekit-api-key) and LIVEKIT_API_SECRET (--livekit-api-secret) must be set together; only one is set"
    )]
    HalfKeyPair,
    /// The value holds secrets: only the reason is shown.
    #[error("invalid value for LIVEKIT_KEYS (--livekit-keys), not shown as it holds secrets: {0}")]
    LivekitKeys(String),
    #[error("invalid value {value:?} for {}: {source}", Setting(var))]
    Naming {
        var: &'static str,
        value: String,
        #[source]
        source: crate::engine::naming::NamingError,
    },
    #[error(
        "invalid thresholds ROLLCALL_ABSENT_BELOW={absent}, ROLLCALL_PARTIAL_BELOW={partial}, ROLLCALL_PRESENT_FROM={present} (--absent-below, --partial-below, --present-from): expected 0 <= absent <= partial <= present <= 100"
    )]
    Thresholds {
        absent: f64,
        partial: f64,
        present: f64,
    },
    #[error(
        "invalid value '{0}' for ROLLCALL_REPORT_WEBHOOK_URL (--report-webhook-url): expected an http(s) URL"
    )]
    ReportUrl(String),
    #[error(
        "invalid value '{0}' for ROLLCALL_APP_WEBHOOK_URL (--app-webhook-url): expected an http(s) URL"
    )]
    AppWebhookUrl(String),
    #[error(
        "ROLLCALL_REDIS_WAIT_TIMEOUT (--redis-wait-timeout) must be shorter than ROLLCALL_REDIS_TIMEOUT (--redis-timeout), which bounds the commit and its wait together"
    )]
    WaitTimeout,
    #[error(
        "ROLLCALL_REDIS_URL (--redis-url) and ROLLCALL_REDIS_CLUSTER (--redis-cluster) are both set; set one: a single Redis or a cluster's seeds"
    )]
    TwoRedis,
    #[error(
        "invalid value '{0}' for ROLLCALL_REDIS_CLUSTER (--redis-cluster): expected comma-separated redis:// URLs"
    )]
    ClusterSeeds(String),
    #[error("invalid value '0s' for {}: must be greater than zero", Setting(.0))]
    ZeroDuration(&'static str),
    /// The message names `LIVEKIT_URL` itself.
    #[error("{1} (LIVEKIT_URL='{0}', --livekit-url)")]
    LivekitUrl(String, String),
    #[error(
        "refusing to listen on {0}, a non-loopback address (ROLLCALL_LISTEN, --listen), with the default development secrets: set LIVEKIT_API_KEY/LIVEKIT_API_SECRET (or LIVEKIT_KEYS) and ROLLCALL_APP_KEY/ROLLCALL_APP_SECRET"
    )]
    DevSecretsInPublic(SocketAddr),
}

/// An optional http(s) URL setting (empty = unset); `refuse` names it.
fn http_url(
    value: Option<String>,
    refuse: fn(String) -> ConfigError,
) -> Result<Option<reqwest::Url>, ConfigError> {
    let Some(u) = value.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    match reqwest::Url::parse(&u) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(Some(url)),
        _ => Err(refuse(u)),
    }
}

/// A duration, or `0` for "off".
fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(s).map_err(|e| format!("{e}, or 0 for off"))
}

/// Which of the three naming settings a `NamingError` is about.
fn naming_error(args: &ServeArgs, source: crate::engine::naming::NamingError) -> ConfigError {
    use crate::engine::naming::NamingError as E;
    let (var, value) = match &source {
        E::Regex { what: "room", .. } => ("ROLLCALL_ROOM_PATTERN", &args.room_pattern),
        E::Regex { .. } | E::NoUserIdGroup => ("ROLLCALL_IDENTITY_PATTERN", &args.identity_pattern),
        E::UnknownTemplateField(_) | E::UnclosedField => {
            ("ROLLCALL_CHANNEL_TEMPLATE", &args.channel_template)
        }
    };
    ConfigError::Naming {
        var,
        value: value.clone(),
        source,
    }
}

/// Validated settings of a server.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub redis_url: Option<String>,
    /// Seed URLs of a Redis Cluster (never together with `redis_url`).
    pub redis_cluster: Option<Vec<String>>,
    pub redis: RedisOptions,
    pub livekit_keys: KeyRing,
    pub app_id: String,
    pub app_key: String,
    pub app_secret: String,
    pub naming: Naming,
    pub rules: VerdictRules,
    pub heartbeat_timeout: Duration,
    pub sweep_interval: Duration,
    pub finalize_delay: Duration,
    pub report_webhook_url: Option<reqwest::Url>,
    /// Reconciliation with LiveKit (rules 23–27), when `LIVEKIT_URL` is set.
    pub livekit_api: Option<LiveKitApi>,
    pub activity_timeout: Duration,
    pub pong_timeout: Duration,
    pub max_connections: usize,
    /// `ROLLCALL_MAX_APP_CONNECTIONS`; 0: none.
    pub max_app_connections: usize,
    /// `ROLLCALL_MAX_PRESENCE_MEMBERS`.
    pub max_presence_members: usize,
    /// `ROLLCALL_NODE_TTL`.
    pub node_ttl: Duration,
    pub shutdown_timeout: Duration,
    /// Client addresses and limits (issue 9).
    pub limits: LimitSettings,
    /// See `ServeArgs::write_timeout`.
    pub write_timeout: Duration,
    /// Subscribe/unsubscribe requests per socket; `None`: unlimited.
    pub rate_subscribes: Option<Rate>,
    /// `ROLLCALL_CLIENT_EVENTS`.
    pub client_events: bool,
    /// `ROLLCALL_APP_WEBHOOK_URL`; unset: no app webhooks, no occupancy
    /// tracking.
    pub app_webhook_url: Option<reqwest::Url>,
    /// The hold (`ROLLCALL_APP_WEBHOOK_HOLD`), batching, bounds and retries.
    pub app_webhooks: crate::app_webhooks::AppWebhookOptions,
    /// `ROLLCALL_SIGNIN_TIMEOUT`; `None`: no limit.
    pub signin_timeout: Option<Duration>,
    /// The HTTP connection layer's timeouts and caps.
    pub http: crate::server::HttpLimits,
    /// Which secrets are the published development defaults.
    pub dev_defaults: Vec<&'static str>,
}

/// Where and how LiveKit's RoomService is asked (rules 23–27).
#[derive(Debug, Clone)]
pub struct LiveKitApi {
    pub url: String,
    pub api_key: String,
    pub api_secret: String,
    /// `None`: on demand only.
    pub reconcile_interval: Option<Duration>,
    pub call_timeout: Duration,
}

/// Client addresses and limits; every limit is `None`/`0` when off.
#[derive(Debug, Clone, Default)]
pub struct LimitSettings {
    pub trusted_proxies: TrustedProxies,
    pub heartbeats: Option<Rate>,
    pub auth_failures: Option<Rate>,
    pub webhooks: Option<Rate>,
    pub max_connections_per_ip: usize,
    pub allowed_origins: Option<AllowedOrigins>,
}

impl Settings {
    pub fn from_args(args: ServeArgs) -> Result<Self, ConfigError> {
        let mut dev_defaults = Vec::new();
        let mut pairs = Vec::new();
        match (&args.livekit_api_key, &args.livekit_api_secret) {
            (Some(k), Some(s)) => pairs.push((k.clone(), s.clone())),
            (None, None) => {}
            _ => return Err(ConfigError::HalfKeyPair),
        }
        if let Some(keys) = &args.livekit_keys {
            pairs.extend(
                KeyRing::parse_livekit_keys(keys)
                    .map_err(|e| ConfigError::LivekitKeys(e.to_string()))?,
            );
        }
        if pairs.is_empty() {
            pairs.push((DEV_LIVEKIT_KEY.to_string(), DEV_LIVEKIT_SECRET.to_string()));
        }
        if pairs.iter().any(|(_, s)| s == DEV_LIVEKIT_SECRET) {
            dev_defaults.push("LIVEKIT_API_SECRET");
        }
        if args.app_secret == DEV_APP_SECRET {
            dev_defaults.push("ROLLCALL_APP_SECRET");
        }
        if !dev_defaults.is_empty() && !args.listen.ip().is_loopback() {
            return Err(ConfigError::DevSecretsInPublic(args.listen));
        }
        let rules = VerdictRules {
            late_grace_ms: args.late_grace.as_millis() as i64,
            absent_below: args.absent_below,
            partial_below: args.partial_below,
            present_from: args.present_from,
        };
        let ordered = 0.0 <= rules.absent_below
            && rules.absent_below <= rules.partial_below
            && rules.partial_below <= rules.present_from
            && rules.present_from <= 100.0;
        if !ordered {
            return Err(ConfigError::Thresholds {
                absent: rules.absent_below,
                partial: rules.partial_below,
                present: rules.present_from,
            });
        }
        let naming = Naming::new(
            &args.room_pattern,
            &args.identity_pattern,
            &args.channel_template,
        )
        .map_err(|source| naming_error(&args, source))?;
        for (name, d) in [
            ("ROLLCALL_HEARTBEAT_TIMEOUT", args.heartbeat_timeout),
            ("ROLLCALL_SWEEP_INTERVAL", args.sweep_interval),
            ("ROLLCALL_ACTIVITY_TIMEOUT", args.activity_timeout),
            ("ROLLCALL_WRITE_TIMEOUT", args.write_timeout),
            ("ROLLCALL_HTTP_HEADER_TIMEOUT", args.http_header_timeout),
            ("ROLLCALL_HTTP_BODY_TIMEOUT", args.http_body_timeout),
            ("ROLLCALL_HTTP_IDLE_TIMEOUT", args.http_idle_timeout),
            ("ROLLCALL_LIVEKIT_TIMEOUT", args.livekit_timeout),
            (
                "ROLLCALL_SIGNIN_TIMEOUT",
                args.signin_timeout.unwrap_or(Duration::MAX),
            ),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        let redis_url = args.redis_url.filter(|u| !u.trim().is_empty());
        let redis_cluster = match args.redis_cluster.filter(|u| !u.trim().is_empty()) {
            Some(list) => {
                let seeds: Vec<String> = list
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if seeds.is_empty()
                    || seeds
                        .iter()
                        .any(|s| !(s.starts_with("redis://") || s.starts_with("rediss://")))
                {
                    return Err(ConfigError::ClusterSeeds(list));
                }
                Some(seeds)
            }
            None => None,
        };
        if redis_url.is_some() && redis_cluster.is_some() {
            return Err(ConfigError::TwoRedis);
        }
        let wait_replicas = args
            .redis_wait_replicas
            .unwrap_or(if redis_cluster.is_some() { 1 } else { 0 });
        if wait_replicas > 0 && args.redis_wait_timeout >= args.redis_timeout {
            return Err(ConfigError::WaitTimeout);
        }
        let report_webhook_url = http_url(args.report_webhook_url, ConfigError::ReportUrl)?;
        let app_webhook_url = http_url(args.app_webhook_url, ConfigError::AppWebhookUrl)?;
        let livekit_api = match args.livekit_url.filter(|u| !u.trim().is_empty()) {
            Some(url) => {
                // The first pair signs RoomService calls: LIVEKIT_API_KEY's
                // if set, else LIVEKIT_KEYS' first.
                let (api_key, api_secret) = pairs[0].clone();
                crate::livekit::RoomService::check_url(&url)
                    .map_err(|e| ConfigError::LivekitUrl(url.clone(), e.to_string()))?;
                Some(LiveKitApi {
                    url,
                    api_key,
                    api_secret,
                    reconcile_interval: Some(args.reconcile_interval).filter(|d| !d.is_zero()),
                    call_timeout: args.livekit_timeout,
                })
            }
            None => None,
        };
        Ok(Self {
            rules,
            livekit_api,
            heartbeat_timeout: args.heartbeat_timeout,
            sweep_interval: args.sweep_interval,
            finalize_delay: args.finalize_delay,
            report_webhook_url,
            listen: args.listen,
            redis_url,
            redis_cluster,
            redis: RedisOptions {
                retention: args.redis_retention,
                command_timeout: args.redis_timeout,
                wait_replicas,
                wait_timeout: args.redis_wait_timeout,
                ..RedisOptions::default()
            },
            livekit_keys: KeyRing::new(pairs),
            naming,
            app_id: args.app_id,
            app_key: args.app_key,
            app_secret: args.app_secret,
            activity_timeout: args.activity_timeout,
            pong_timeout: args.pong_timeout,
            max_connections: args.max_connections,
            max_app_connections: args.max_app_connections,
            max_presence_members: args.max_presence_members,
            node_ttl: args.node_ttl,
            shutdown_timeout: args.shutdown_timeout,
            limits: LimitSettings {
                trusted_proxies: args.trusted_proxies.unwrap_or_default(),
                heartbeats: args.rate_heartbeats,
                auth_failures: args.rate_auth_failures,
                webhooks: args.rate_webhooks,
                max_connections_per_ip: args.max_connections_per_ip,
                allowed_origins: args.allowed_origins,
            },
            write_timeout: args.write_timeout,
            rate_subscribes: args.rate_subscribes,
            client_events: args.client_events,
            app_webhook_url,
            app_webhooks: crate::app_webhooks::AppWebhookOptions {
                hold: args.app_webhook_hold,
                ..Default::default()
            },
            signin_timeout: args.signin_timeout,
            http: crate::server::HttpLimits {
                header_timeout: args.http_header_timeout,
                body_timeout: args.http_body_timeout,
                idle_timeout: args.http_idle_timeout,
                max_connections: args.max_http_connections,
                max_connections_per_ip: args.max_http_connections_per_ip,
                fd_reserve: args.fd_reserve,
            },
            dev_defaults,
        })
    }

    /// Development settings on an ephemeral loopback port (tests, tools).
    pub fn for_tests() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ServeArgs,
        }
        let mut args = Wrapper::parse_from(["rollcall"]).args;
        args.listen = "127.0.0.1:0".parse().expect("valid address");
        Self::from_args(args).expect("dev settings are valid")
    }
}

impl Settings {
    /// Where the state lives: one Redis, a Redis Cluster, or (`None`) this
    /// process's memory.
    pub fn redis_target(&self) -> Option<crate::store::conn::RedisTarget> {
        use crate::store::conn::RedisTarget;
        match (&self.redis_cluster, &self.redis_url) {
            (Some(seeds), _) => Some(RedisTarget::Cluster(seeds.clone())),
            (None, Some(url)) => Some(RedisTarget::Single(url.clone())),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn parse(flags: &[&str]) -> Result<Settings, ConfigError> {
        let mut argv = vec!["rollcall"];
        argv.extend_from_slice(flags);
        Settings::from_args(Wrapper::try_parse_from(argv).unwrap().args)
    }

    #[test]
    fn defaults_are_the_contracts_and_flag_dev_secrets() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:6001");
        assert_eq!(s.app_key, "rollcall-key");
        assert!(s.livekit_keys.secret_for("devkey").is_some());
        assert_eq!(
            s.dev_defaults,
            vec!["LIVEKIT_API_SECRET", "ROLLCALL_APP_SECRET"]
        );
        assert_eq!(s.activity_timeout, Duration::from_secs(120));
    }

    #[test]
    fn a_cluster_is_seeds_instead_of_a_url_and_waits_for_a_replica_by_default() {
        use crate::store::conn::RedisTarget;
        let s = parse(&[
            "--redis-cluster",
            " redis://10.0.0.1:7000, redis://10.0.0.2:7000 ,",
        ])
        .unwrap();
        assert_eq!(
            s.redis_target(),
            Some(RedisTarget::Cluster(vec![
                "redis://10.0.0.1:7000".into(),
                "redis://10.0.0.2:7000".into()
            ]))
        );
        assert_eq!(s.redis.wait_replicas, 1, "acknowledged on a replica too");
        let no_replicas = parse(&[
            "--redis-cluster",
            "redis://10.0.0.1:7000",
            "--redis-wait-replicas",
            "0",
        ])
        .unwrap();
        assert_eq!(no_replicas.redis.wait_replicas, 0);
        let single = parse(&["--redis-url", "redis://127.0.0.1:6379"]).unwrap();
        assert_eq!(
            single.redis_target(),
            Some(RedisTarget::Single("redis://127.0.0.1:6379".into()))
        );
        assert_eq!(single.redis.wait_replicas, 0);
        assert_eq!(parse(&[]).unwrap().redis_target(), None);
        assert!(matches!(
            parse(&[
                "--redis-url",
                "redis://127.0.0.1:6379",
                "--redis-cluster",
                "redis://127.0.0.1:7000"
            ]),
            Err(ConfigError::TwoRedis)
        ));
        for bad in [",", "127.0.0.1:7000", "redis://a:1,http://b:2"] {
            assert!(
                matches!(
                    parse(&["--redis-cluster", bad]),
                    Err(ConfigError::ClusterSeeds(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refuses_a_public_address_with_default_secrets() {
        assert!(matches!(
            parse(&["--listen", "0.0.0.0:6001"]),
            Err(ConfigError::DevSecretsInPublic(_))
        ));
        let ok = parse(&[
            "--listen",
            "0.0.0.0:6001",
            "--livekit-api-key",
            "k",
            "--livekit-api-secret",
            "s3cr3t",
            "--app-secret",
            "another",
        ]);
        assert!(ok.is_ok());
    }

    #[test]
    fn key_pairs_and_rotation() {
        assert!(matches!(
            parse(&["--livekit-api-key", "k"]),
            Err(ConfigError::HalfKeyPair)
        ));
        let s = parse(&["--livekit-keys", "a: one, b: two"]).unwrap();
        assert!(s.livekit_keys.secret_for("a").is_some());
        assert!(s.livekit_keys.secret_for("b").is_some());
        assert!(
            s.livekit_keys.secret_for("devkey").is_none(),
            "explicit keys replace the dev key"
        );
        assert!(s.dev_defaults.contains(&"ROLLCALL_APP_SECRET"));
        assert!(!s.dev_defaults.contains(&"LIVEKIT_API_SECRET"));
    }

    #[test]
    fn livekit_url_and_the_reconcile_interval() {
        let s = parse(&[]).unwrap();
        assert!(s.livekit_api.is_none(), "no LIVEKIT_URL: no reconciliation");
        let s = parse(&["--livekit-url", "wss://lk.example.com"]).unwrap();
        let api = s.livekit_api.unwrap();
        assert_eq!(api.reconcile_interval, Some(Duration::from_secs(120)));
        assert_eq!(api.call_timeout, Duration::from_secs(10));
        assert_eq!(
            (api.api_key.as_str(), api.api_secret.as_str()),
            ("devkey", "secret")
        );
        let s = parse(&[
            "--livekit-url",
            "http://127.0.0.1:7880",
            "--reconcile-interval",
            "0",
            "--livekit-keys",
            "rot: one, old: two",
        ])
        .unwrap();
        let api = s.livekit_api.unwrap();
        assert_eq!(api.reconcile_interval, None, "0 = on demand only");
        assert_eq!(api.api_key, "rot", "the first pair signs");
        let err = parse(&["--livekit-url", "ftp://lk"]).unwrap_err();
        assert!(err.to_string().starts_with("LIVEKIT_URL"), "{err}");
        assert!(matches!(
            parse(&["--livekit-url", "https://lk", "--livekit-timeout", "0s"]),
            Err(ConfigError::ZeroDuration("ROLLCALL_LIVEKIT_TIMEOUT"))
        ));
        // An empty LIVEKIT_URL (a blank line in an env file) is unset.
        assert!(parse(&["--livekit-url", ""]).unwrap().livekit_api.is_none());
    }

    #[test]
    fn issue4_settings_and_their_checks() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.heartbeat_timeout, Duration::from_secs(300));
        assert_eq!(s.sweep_interval, Duration::from_secs(10));
        assert_eq!(s.finalize_delay, Duration::from_secs(300));
        assert_eq!(s.rules.late_grace_ms, 15 * 60_000);
        assert!(s.report_webhook_url.is_none());
        assert!(matches!(
            parse(&["--absent-below", "60"]),
            Err(ConfigError::Thresholds { .. })
        ));
        assert!(matches!(
            parse(&["--report-webhook-url", "ftp://x"]),
            Err(ConfigError::ReportUrl(_))
        ));
        assert!(matches!(
            parse(&["--sweep-interval", "0s"]),
            Err(ConfigError::ZeroDuration(_))
        ));
        let s = parse(&[
            "--report-webhook-url",
            "http://127.0.0.1:9/r",
            "--heartbeat-timeout",
            "250ms",
        ])
        .unwrap();
        assert_eq!(
            s.report_webhook_url.unwrap().as_str(),
            "http://127.0.0.1:9/r"
        );
        assert_eq!(s.heartbeat_timeout, Duration::from_millis(250));
    }

    #[test]
    fn app_webhook_settings_are_checked() {
        let s = parse(&[]).unwrap();
        assert!(s.app_webhook_url.is_none());
        assert_eq!(s.app_webhooks.hold, Duration::from_secs(3));
        for bad in ["ftp://x", "not a url"] {
            assert!(matches!(
                parse(&["--app-webhook-url", bad]),
                Err(ConfigError::AppWebhookUrl(_))
            ));
        }
        let s = parse(&[
            "--app-webhook-url",
            "https://app.example.com/pusher/webhooks",
            "--app-webhook-hold",
            "0",
        ])
        .unwrap();
        assert_eq!(
            s.app_webhook_url.unwrap().as_str(),
            "https://app.example.com/pusher/webhooks"
        );
        assert_eq!(s.app_webhooks.hold, Duration::ZERO);
        assert!(
            parse(&["--app-webhook-url", ""])
                .unwrap()
                .app_webhook_url
                .is_none()
        );
    }

    #[test]
    fn durations_are_human_strings_and_patterns_are_checked() {
        let s = parse(&["--activity-timeout", "250ms"]).unwrap();
        assert_eq!(s.activity_timeout, Duration::from_millis(250));
        assert!(matches!(
            parse(&["--channel-template", "x.{nope}"]),
            Err(ConfigError::Naming { .. })
        ));
    }

    // --- Client addresses and limits (issue 9) ---
    #[test]
    fn limits_default_to_the_contracts_and_zero_turns_them_off() {
        let s = parse(&[]).unwrap().limits;
        let per_minute = |count| {
            Some(Rate {
                count,
                per: Duration::from_secs(60),
            })
        };
        assert_eq!(s.heartbeats, per_minute(20));
        assert_eq!(s.auth_failures, per_minute(30));
        assert_eq!(
            s.webhooks,
            Some(Rate {
                count: 2000,
                per: Duration::from_secs(1)
            })
        );
        assert_eq!(s.max_connections_per_ip, 5000);
        assert!(s.trusted_proxies.is_empty());
        assert!(s.allowed_origins.is_none());
        let s = parse(&[
            "--rate-heartbeats",
            "0",
            "--rate-auth-failures",
            "3/250ms",
            "--rate-webhooks",
            "0/1s",
            "--max-connections-per-ip",
            "0",
            "--trusted-proxies",
            "10.0.0.0/8, 127.0.0.1",
            "--allowed-origins",
            "https://app.example.com,http://localhost:3000",
        ])
        .unwrap()
        .limits;
        assert_eq!(s.heartbeats, None);
        assert_eq!(
            s.auth_failures,
            Some(Rate {
                count: 3,
                per: Duration::from_millis(250)
            })
        );
        assert_eq!(s.webhooks, None);
        assert_eq!(s.max_connections_per_ip, 0);
        assert!(s.trusted_proxies.contains("10.1.2.3".parse().unwrap()));
        assert!(s.trusted_proxies.contains("127.0.0.1".parse().unwrap()));
        assert!(!s.trusted_proxies.contains("127.0.0.2".parse().unwrap()));
        assert!(s.allowed_origins.unwrap().allows("http://localhost:3000"));
    }

    #[test]
    fn rates_and_addresses_are_checked() {
        assert_eq!(parse_rate("0"), Ok(None));
        assert_eq!(
            parse_rate(" 20 / 1m "),
            Ok(Some(Rate {
                count: 20,
                per: Duration::from_secs(60)
            }))
        );
        for bad in ["20", "x/1m", "20/soon", "-1/1m", "20/0s", ""] {
            assert!(parse_rate(bad).is_err(), "{bad:?} is refused");
        }
        let args = |flags: &[&str]| {
            let mut argv = vec!["rollcall"];
            argv.extend_from_slice(flags);
            Wrapper::try_parse_from(argv).map(|_| ())
        };
        assert!(args(&["--rate-webhooks", "lots"]).is_err());
        assert!(args(&["--trusted-proxies", "proxy.internal"]).is_err());
        assert!(args(&["--allowed-origins", "app.example.com"]).is_err());
    }
    // --- end client addresses and limits ---
    #[test]
    fn ws_hardening_settings_and_rates() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.write_timeout, Duration::from_secs(30));
        assert_eq!(
            s.rate_subscribes,
            Some(Rate {
                count: 100,
                per: Duration::from_secs(10)
            })
        );
        let s = parse(&["--write-timeout", "750ms", "--rate-subscribes", "0"]).unwrap();
        assert_eq!(s.write_timeout, Duration::from_millis(750));
        assert_eq!(s.rate_subscribes, None);
        assert!(matches!(
            parse(&["--write-timeout", "0s"]),
            Err(ConfigError::ZeroDuration("ROLLCALL_WRITE_TIMEOUT"))
        ));
        assert!(
            Wrapper::try_parse_from(["rollcall", "--rate-subscribes", "lots"]).is_err(),
            "a malformed rate is refused"
        );
    }

    #[test]
    fn the_signin_timeout_is_off_unless_set_and_never_zero() {
        assert_eq!(parse(&[]).unwrap().signin_timeout, None);
        let s = parse(&["--signin-timeout", "30s"]).unwrap();
        assert_eq!(s.signin_timeout, Some(Duration::from_secs(30)));
        assert!(matches!(
            parse(&["--signin-timeout", "0s"]),
            Err(ConfigError::ZeroDuration("ROLLCALL_SIGNIN_TIMEOUT"))
        ));
    }

    #[test]
    fn parse_rate_reads_count_per_duration() {
        let rate = |count, ms| {
            Some(Rate {
                count,
                per: Duration::from_millis(ms),
            })
        };
        assert_eq!(parse_rate("100/10s"), Ok(rate(100, 10_000)));
        assert_eq!(parse_rate(" 5 / 1m "), Ok(rate(5, 60_000)));
        assert_eq!(parse_rate("1/250ms"), Ok(rate(1, 250)));
        assert_eq!(parse_rate("0"), Ok(None));
        assert_eq!(parse_rate("0/10s"), Ok(None));
        for bad in [
            "", "10", "10/", "/10s", "x/10s", "-1/10s", "10/0s", "10/ten", "1.5/1s", "10/5ns",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn every_variable_s_flag_is_its_name() {
        use clap::CommandFactory;
        for arg in Wrapper::command().get_arguments() {
            let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            assert_eq!(flag_of(&env.to_string_lossy()), format!("--{long}"));
        }
    }

    #[test]
    fn errors_name_the_variable_its_flag_and_the_value() {
        let message = |flags: &[&str]| parse(flags).unwrap_err().to_string();
        assert_eq!(
            message(&["--sweep-interval", "0s"]),
            "invalid value '0s' for ROLLCALL_SWEEP_INTERVAL (--sweep-interval): must be greater than zero"
        );
        assert_eq!(
            message(&["--report-webhook-url", "ftp://x"]),
            "invalid value 'ftp://x' for ROLLCALL_REPORT_WEBHOOK_URL (--report-webhook-url): expected an http(s) URL"
        );
        let m = message(&["--absent-below", "60"]);
        assert!(m.contains("ROLLCALL_ABSENT_BELOW=60"), "{m}");
        let m = message(&["--channel-template", "x.{nope}"]);
        assert!(
            m.starts_with(
                "invalid value \"x.{nope}\" for ROLLCALL_CHANNEL_TEMPLATE (--channel-template): "
            ),
            "{m}"
        );
        let m = message(&["--identity-pattern", "^x$"]);
        assert!(m.contains("ROLLCALL_IDENTITY_PATTERN"), "{m}");
        let m = message(&["--livekit-url", "ftp://lk"]);
        assert!(m.contains("'ftp://lk'"), "{m}");
        let m = message(&["--livekit-keys", "a-secret-without-a-colon"]);
        assert!(m.contains("LIVEKIT_KEYS") && !m.contains("a-secret"), "{m}");
    }

    #[test]
    fn http_connection_limits() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.http, crate::server::HttpLimits::default());
        assert_eq!(s.http.header_timeout, Duration::from_secs(10));
        assert_eq!(s.http.body_timeout, Duration::from_secs(30));
        assert_eq!(s.http.idle_timeout, Duration::from_secs(60));
        assert_eq!(s.http.max_connections, 4096);
        assert_eq!(s.http.max_connections_per_ip, 256);
        assert_eq!(s.http.fd_reserve, 256);
        let s = parse(&[
            "--http-header-timeout",
            "300ms",
            "--http-body-timeout",
            "1s",
            "--http-idle-timeout",
            "2m",
            "--max-http-connections",
            "8",
            "--max-http-connections-per-ip",
            "0",
            "--fd-reserve",
            "64",
        ])
        .unwrap();
        assert_eq!(s.http.header_timeout, Duration::from_millis(300));
        assert_eq!(s.http.body_timeout, Duration::from_secs(1));
        assert_eq!(s.http.idle_timeout, Duration::from_secs(120));
        assert_eq!(s.http.max_connections, 8);
        assert_eq!(s.http.max_connections_per_ip, 0);
        assert_eq!(s.http.fd_reserve, 64);
        assert!(matches!(
            parse(&["--http-idle-timeout", "0s"]),
            Err(ConfigError::ZeroDuration("ROLLCALL_HTTP_IDLE_TIMEOUT"))
        ));
    }
}
