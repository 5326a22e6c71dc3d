//! Logging, set up once per process, after the command line is parsed (so
//! `--log-format` / `ROLLCALL_LOG_FORMAT` is known before the first line).
//! `RUST_LOG` overrides the default level (`info`); logs go to stderr so
//! tool output on stdout stays clean.
//!
//! The format is a global option of every subcommand, not only `serve`:
//! the tools (`webhook`, `watch`, `reconcile`) log too, and a script that
//! runs them next to the server should get the same lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human lines; coloured only on a terminal (see [`colour`]).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`
    /// with the `message`, `span`), never coloured: for log shippers.
    Json,
}

impl LogFormat {
    /// The clap value parser: only `text` and `json`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err("expected text or json".into()),
        }
    }
}

/// Whether text lines get ANSI colours: only when a person reads them on a
/// terminal (a file, a pipe or journald would get escape codes as text),
/// and never when `NO_COLOR` is set to anything non-empty (no-color.org).
pub fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// `default_level` applies unless `RUST_LOG` says otherwise: `info` for the
/// server, `warn` for the tools, whose own output is on stdout and whose
/// log should only speak up about a problem.
pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => {
            let no_color = std::env::var_os("NO_COLOR");
            builder
                .with_ansi(colour(std::io::stderr().is_terminal(), no_color.as_deref()))
                .try_init()
        }
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None), "a pipe or a file gets no escapes");
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(
            colour(true, Some(OsStr::new(""))),
            "an empty NO_COLOR is unset"
        );
    }

    #[test]
    fn only_text_and_json() {
        assert_eq!(LogFormat::parse("text"), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse("json"), Ok(LogFormat::Json));
        for bad in ["", "JSON", "logfmt", " text"] {
            assert!(LogFormat::parse(bad).is_err(), "{bad:?}");
        }
    }
}
