//! `rollcall link --room R` (or `--all`): prints a dashboard URL carrying a
//! viewer link (`crate::viewer`), the same one a main app would sign with
//! the app secret for a teacher. For trying private channels and the
//! session list by hand, and for `make demo`.

use clap::Args;

use crate::config::DEV_APP_SECRET;
use crate::viewer::{self, Scope};

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["room", "all"]))]
pub struct LinkArgs {
    /// The LiveKit room the link opens, e.g. itqan-academy-quran-session-121.
    #[arg(long)]
    pub room: Option<String>,
    /// A link to every room and the list of sessions (for admins).
    #[arg(long)]
    pub all: bool,
    /// How long the link works (at most 7 days).
    #[arg(long, default_value = "8h", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
    /// The dashboard's base URL as viewers reach it.
    #[arg(long, env = "ROLLCALL_URL", default_value = "http://127.0.0.1:6001")]
    pub url: String,
    #[arg(long, env = "ROLLCALL_APP_SECRET", default_value = DEV_APP_SECRET, hide_env_values = true)]
    pub secret: String,
}

/// Prints the URL alone on stdout.
pub fn run(args: LinkArgs) -> anyhow::Result<()> {
    let ttl = i64::try_from(args.ttl.as_secs()).unwrap_or(i64::MAX);
    anyhow::ensure!(
        (1..=viewer::MAX_TTL_SECS).contains(&ttl),
        "--ttl must be from 1s to 7 days"
    );
    let now = crate::domain::now_millis() / 1000;
    println!(
        "{}",
        dashboard_url(&args.url, args.room.as_deref(), &args.secret, now, ttl)
    );
    Ok(())
}

/// `<base>/?room=<room>&viewer=<token>`, or `<base>/?viewer=<token>` for
/// every room.
pub fn dashboard_url(base: &str, room: Option<&str>, secret: &str, now: i64, ttl: i64) -> String {
    let scope = room.map_or(Scope::All, |r| Scope::Room(r.to_string()));
    let token = viewer::sign(secret, &scope, now, ttl);
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(room) = room {
        query.append_pair("room", room);
    }
    query.append_pair("viewer", &token);
    format!("{}/?{}", base.trim_end_matches('/'), query.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_carries_a_link_the_server_accepts() {
        let url = dashboard_url("http://h:1/", Some("a b&c"), "s", 1000, 60);
        let query = url.strip_prefix("http://h:1/?").unwrap();
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(pairs[0], ("room".into(), "a b&c".into()));
        let scope = viewer::verify("s", &pairs[1].1, 1000).unwrap();
        assert_eq!(scope, Scope::Room("a b&c".into()));
        let all = dashboard_url("http://h:1", None, "s", 1000, 60);
        let token = all.strip_prefix("http://h:1/?viewer=").unwrap();
        assert_eq!(viewer::verify("s", token, 1000).unwrap(), Scope::All);
    }
}
