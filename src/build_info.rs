//! `rollcall_build_info`: which build answers, for dashboards and alerts
//! that compare nodes during a rollout.

use std::fmt::Write;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit's short hash, set by `build.rs` from git (or from
/// `ROLLCALL_GIT_COMMIT` when building outside a checkout); else `unknown`.
pub const COMMIT: &str = match option_env!("ROLLCALL_GIT_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

pub fn render(out: &mut String) {
    let name = "rollcall_build_info";
    let _ = writeln!(
        out,
        "# HELP {name} The running build: version and git commit; always 1."
    );
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name}{{version=\"{VERSION}\",commit=\"{COMMIT}\"}} 1");
}
