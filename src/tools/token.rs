//! `rollcall token --room R --identity I`: mints the LiveKit access token a
//! participant's page holds (HS256 with a LiveKit key, `roomJoin` for the
//! room), e.g. to try `POST /api/heartbeat` by hand. The same token a main
//! app's LiveKit SDK would mint; it never leaves this machine.

use clap::Args;

use crate::config::{DEV_LIVEKIT_KEY, DEV_LIVEKIT_SECRET};
use crate::livekit::sign_access_token;

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// LiveKit room name, e.g. itqan-academy-quran-session-121.
    #[arg(long)]
    pub room: String,
    /// Participant identity, e.g. 1_Ameer_Maher.
    #[arg(long)]
    pub identity: String,
    /// How long the token is valid.
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
    #[arg(long, env = "LIVEKIT_API_KEY", default_value = DEV_LIVEKIT_KEY)]
    pub key: String,
    #[arg(long, env = "LIVEKIT_API_SECRET", default_value = DEV_LIVEKIT_SECRET, hide_env_values = true)]
    pub secret: String,
}

/// Prints the token alone on stdout, so `$(rollcall token …)` works.
pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.identity.is_empty(), "--identity must not be empty");
    anyhow::ensure!(!args.room.is_empty(), "--room must not be empty");
    let now = crate::domain::now_millis() / 1000;
    let ttl = i64::try_from(args.ttl.as_secs()).unwrap_or(i64::MAX);
    println!(
        "{}",
        sign_access_token(
            &args.key,
            &args.secret,
            &args.identity,
            &args.room,
            now,
            ttl
        )
    );
    Ok(())
}
