//! The integration suite: one binary, a real server per test on an
//! ephemeral port (`helpers::spawn_app`).

mod attendance_flow;
mod helpers;
mod lifecycle;
mod webhook_errors;
