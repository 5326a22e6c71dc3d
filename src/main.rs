//! The `rollcall` binary: parse the command line, set up logging, call the
//! library.

use rollcall::cli::Command;
use rollcall::config::Settings;
use rollcall::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Parsed first: the log format is an option. Parsing logs nothing, and
    // its refusals are printed by `cli::parse` itself.
    let cli = rollcall::cli::parse();
    let level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    rollcall::telemetry::init(cli.log_format, level);
    match cli.command {
        Command::Serve(args) => {
            let settings = Settings::from_args(args)?;
            let app = Application::build(settings).await?;
            app.run_until(shutdown_signal()).await
        }
        Command::Webhook(args) => rollcall::tools::webhook::run(args).await,
        Command::Watch(args) => rollcall::tools::watch::run(args).await,
        Command::Simulate(args) => rollcall::tools::simulate::run(args).await,
        Command::Reconcile(args) => rollcall::tools::reconcile::run(args).await,
        Command::Token(args) => rollcall::tools::token::run(args),
        Command::Link(args) => rollcall::tools::link::run(args),
    }
}

/// SIGTERM (orchestrators) or Ctrl-C (people).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
