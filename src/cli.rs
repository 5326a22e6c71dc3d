//! The `rollcall` command line: `serve` and the tools.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser, Subcommand};

use crate::config::ServeArgs;
use crate::telemetry::LogFormat;
use crate::tools::link::LinkArgs;
use crate::tools::reconcile::ReconcileArgs;
use crate::tools::simulate::SimulateArgs;
use crate::tools::token::TokenArgs;
use crate::tools::watch::WatchArgs;
use crate::tools::webhook::WebhookArgs;

#[derive(Debug, Parser)]
#[command(
    name = "rollcall",
    version,
    about = "Realtime attendance for LiveKit meetings"
)]
pub struct Cli {
    /// Log lines on stderr: `text` (coloured only on a terminal, and not
    /// with NO_COLOR) or `json` (one object per line, for log shippers).
    /// Global: the tools log the same way as the server.
    #[arg(
        long,
        global = true,
        env = "ROLLCALL_LOG_FORMAT",
        default_value = "text",
        value_parser = LogFormat::parse
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once at startup: the size difference between variants is moot.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Post a signed LiveKit webhook to a running server.
    Webhook(WebhookArgs),
    /// Print one line per attendance update of a channel (reconnects).
    Watch(WatchArgs),
    /// Play a realistic meeting (schedule, joins, heartbeats, leaves)
    /// against a running server.
    Simulate(SimulateArgs),
    /// Ask a running server to check a room against LiveKit now.
    Reconcile(ReconcileArgs),
    /// Mint a participant's LiveKit access token (for heartbeats by hand).
    Token(TokenArgs),
    /// Print a dashboard URL with a viewer link (app secret signed).
    Link(LinkArgs),
}

/// Parses the command line; on a bad value, exits (status 2, as clap does)
/// with a message naming the environment variable as well as the flag —
/// in production settings come from the environment, and clap alone would
/// name only `--heartbeat-timeout <HEARTBEAT_TIMEOUT>`.
pub fn parse() -> Cli {
    Cli::try_parse().unwrap_or_else(|err| match explain(&err, &Cli::command()) {
        Some(message) => {
            eprintln!("error: {message}");
            std::process::exit(2)
        }
        None => err.exit(),
    })
}

/// `invalid value 'abc' for ROLLCALL_HEARTBEAT_TIMEOUT
/// (--heartbeat-timeout): expected a duration like 10s or 5m`, for a value
/// clap refused; `None` for every other error (help, version, unknown
/// flags), which clap prints well itself.
pub fn explain(err: &clap::Error, cmd: &clap::Command) -> Option<String> {
    if !matches!(
        err.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    let Some(ContextValue::String(value)) = err.get(ContextKind::InvalidValue) else {
        return None;
    };
    // `--heartbeat-timeout <HEARTBEAT_TIMEOUT>`
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?;
    let spec = find_arg(cmd, long)?;
    let why = match std::error::Error::source(err) {
        Some(source) => source.to_string(),
        None => match err.get(ContextKind::ValidValue) {
            Some(ContextValue::Strings(valid)) => format!("expected one of {}", valid.join(", ")),
            _ => "not accepted".to_string(),
        },
    };
    let setting = match spec.get_env() {
        Some(env) => format!("{} (--{long})", env.to_string_lossy()),
        None => format!("--{long}"),
    };
    Some(if spec.is_hide_env_values_set() {
        format!("invalid value for {setting} (not shown: a secret): {why}")
    } else {
        format!("invalid value '{value}' for {setting}: {why}")
    })
}

/// The argument with this long flag, in `cmd` or any subcommand.
fn find_arg<'c>(cmd: &'c clap::Command, long: &str) -> Option<&'c clap::Arg> {
    cmd.get_arguments()
        .find(|a| a.get_long() == Some(long))
        .or_else(|| cmd.get_subcommands().find_map(|sub| find_arg(sub, long)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(argv: &[&str]) -> Option<String> {
        let err = Cli::try_parse_from(argv).unwrap_err();
        explain(&err, &Cli::command())
    }

    #[test]
    fn bad_values_name_the_variable_the_flag_and_the_value() {
        assert_eq!(
            message(&["rollcall", "serve", "--heartbeat-timeout", "abc"]).unwrap(),
            "invalid value 'abc' for ROLLCALL_HEARTBEAT_TIMEOUT (--heartbeat-timeout): expected a duration like 10s or 5m (expected number at 0)"
        );
        let m = message(&["rollcall", "serve", "--rate-webhooks", "x/y"]).unwrap();
        assert!(
            m.starts_with("invalid value 'x/y' for ROLLCALL_RATE_WEBHOOKS (--rate-webhooks): expected <count>/<duration>"),
            "{m}"
        );
        let m = message(&["rollcall", "serve", "--max-connections=-1"]).unwrap();
        assert_eq!(
            m,
            "invalid value '-1' for ROLLCALL_MAX_CONNECTIONS (--max-connections): expected a whole number, 0 or more"
        );
        let m = message(&["rollcall", "watch", "--log-format", "xml"]).unwrap();
        assert_eq!(
            m,
            "invalid value 'xml' for ROLLCALL_LOG_FORMAT (--log-format): expected text or json"
        );
    }

    #[test]
    fn other_errors_are_clap_s_own() {
        assert_eq!(message(&["rollcall", "serve", "--no-such-flag"]), None);
        assert_eq!(message(&["rollcall"]), None);
    }
}
