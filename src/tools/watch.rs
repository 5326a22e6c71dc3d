//! `rollcall watch session.121`: subscribes to channels over the Pusher
//! protocol and prints one readable line per update (`--json`: every raw
//! frame). Reconnects like a browser (`pusher::client::watch_reconnecting`),
//! so a watcher left open across a server restart carries on.

use clap::Args;
use serde_json::Value;

use crate::config::DEV_APP_KEY;
use crate::pusher::client::{ServerEvent, WatchEvent, watch_reconnecting};
use crate::tools::roster_line;

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Channels to subscribe to, e.g. session.121.
    #[arg(required = true)]
    pub channels: Vec<String>,
    /// The server's WebSocket base URL.
    #[arg(long, env = "ROLLCALL_WS_URL", default_value = "ws://127.0.0.1:6001")]
    pub url: String,
    #[arg(long, env = "ROLLCALL_APP_KEY", default_value = DEV_APP_KEY)]
    pub key: String,
    /// Print every frame as received (`<event> <channel> <data>`) instead
    /// of readable lines.
    #[arg(long)]
    pub json: bool,
}

/// Runs until interrupted, or until the server closes with a code that
/// says not to reconnect (4000–4099, 4300–4399): then an error, so the
/// exit status is non-zero.
pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let url = format!("{}/app/{}", args.url.trim_end_matches('/'), args.key);
    let json = args.json;
    let refused = watch_reconnecting(&url, &args.channels, |e| match e {
        WatchEvent::Frame(frame) if json => println!(
            "{} {} {}",
            frame.event,
            frame.channel.as_deref().unwrap_or("-"),
            frame.data
        ),
        WatchEvent::Frame(frame) => readable(&frame),
        // Connection news goes to stderr: stdout stays one line per update.
        WatchEvent::Closed { code, reason } => match code {
            Some(code) => eprintln!("closed by the server: {code} {reason}"),
            None => eprintln!("connection to {url} lost: {reason}"),
        },
        WatchEvent::Retrying(d) if d.is_zero() => eprintln!("reconnecting now"),
        WatchEvent::Retrying(d) => eprintln!("reconnecting in {:.1} s", d.as_secs_f64()),
    })
    .await;
    Err(anyhow::anyhow!("{refused}"))
}

/// One line per person for an update, a header and a line per person for
/// a snapshot; protocol frames as a short note on stderr.
fn readable(frame: &ServerEvent) {
    let channel = frame.channel.as_deref().unwrap_or("-");
    let data: Value = serde_json::from_str(&frame.data).unwrap_or(Value::Null);
    match frame.event.as_str() {
        "attendance.updated" => println!(
            "{}",
            roster_line::person(&data["attendance"], data["timestamp"].as_str())
        ),
        "attendance.snapshot" => {
            println!("{}", roster_line::snapshot_header(channel, &data));
            for person in data["participants"].as_array().into_iter().flatten() {
                println!(
                    "{}",
                    roster_line::person(person, data["timestamp"].as_str())
                );
            }
        }
        "pusher:connection_established" => eprintln!("connected"),
        // On stdout: a channel no room has fed yet gets no snapshot, and
        // this line is then the only sign the watcher is listening.
        "pusher_internal:subscription_succeeded" => println!(
            "{}  subscribed to {channel}",
            chrono::Local::now().format("%H:%M:%S")
        ),
        "pusher:ping" | "pusher:pong" => {}
        "pusher:error" => eprintln!("error from the server: {}", frame.data),
        // Anything else on a channel (a main app's own events): as is.
        other => println!("{other} {channel} {}", frame.data),
    }
}
