//! `rollcall watch session.121`: subscribes to channels over the Pusher
//! protocol and prints every frame that arrives.

use anyhow::Context;
use clap::Args;

use crate::config::DEV_APP_KEY;

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
}

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let url = format!("{}/app/{}", args.url.trim_end_matches('/'), args.key);
    let closed = crate::pusher::client::watch(&url, &args.channels, |e| {
        println!(
            "{} {} {}",
            e.event,
            e.channel.as_deref().unwrap_or("-"),
            e.data
        );
    })
    .await
    .with_context(|| format!("cannot watch {url}"))?;
    if let Some((code, reason)) = closed {
        eprintln!("closed by the server: {code} {reason}");
    }
    Ok(())
}
