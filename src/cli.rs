//! The `rollcall` command line: `serve` and the tools.

use clap::{Parser, Subcommand};

use crate::config::ServeArgs;
use crate::tools::reconcile::ReconcileArgs;
use crate::tools::watch::WatchArgs;
use crate::tools::webhook::WebhookArgs;

#[derive(Debug, Parser)]
#[command(
    name = "rollcall",
    version,
    about = "Realtime attendance for LiveKit meetings"
)]
pub struct Cli {
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
    /// Print every frame a channel receives.
    Watch(WatchArgs),
    /// Ask a running server to check a room against LiveKit now.
    Reconcile(ReconcileArgs),
}
