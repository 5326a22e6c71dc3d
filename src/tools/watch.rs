//! `rollcall watch session.121`: subscribes to channels over the Pusher
//! protocol and prints every frame that arrives.

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
    let url = format!(
        "{}/app/{}?protocol=7&client=rollcall-watch&version={}",
        args.url.trim_end_matches('/'),
        args.key,
        env!("CARGO_PKG_VERSION")
    );
    crate::pusher::client::watch(&url, &args.channels, |event, channel, data| {
        println!("{} {} {}", event, channel.unwrap_or("-"), data);
    })
    .await
}
