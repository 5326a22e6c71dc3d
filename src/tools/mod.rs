//! Command-line tools beside the server: a webhook simulator, a whole
//! simulated meeting and a terminal view of a channel, so a newcomer can
//! see attendance move without writing code; a participant's token for
//! heartbeats by hand; and an on-demand reconciliation for operators.

pub mod at;
pub mod link;
pub mod reconcile;
pub mod roster_line;
pub mod simulate;
pub mod token;
pub mod watch;
pub mod webhook;
