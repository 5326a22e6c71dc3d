//! Command-line tools beside the server: a webhook simulator and a
//! terminal view of a channel, so a newcomer can see an update arrive
//! without writing code; and an on-demand reconciliation for operators.

pub mod link;
pub mod reconcile;
pub mod token;
pub mod watch;
pub mod webhook;
