//! Embeds the git commit for `rollcall_build_info` (src/build_info.rs).
//! Never fails: outside a git checkout (a tarball, a container build
//! context without `.git`) the commit is `unknown`, or whatever
//! `ROLLCALL_GIT_COMMIT` says.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=ROLLCALL_GIT_COMMIT");
    let commit = std::env::var("ROLLCALL_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    if let Some(commit) = commit {
        // Only hex (or a CI's own tag) belongs in a label value.
        let commit: String = commit
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "-._".contains(*c))
            .collect();
        println!("cargo:rustc-env=ROLLCALL_GIT_COMMIT={commit}");
    }
    // Rebuild when HEAD moves (a checkout, a commit), not on every edit:
    // without these lines cargo would rerun this script for any file change.
    for (args, file) in [
        (["rev-parse", "--git-dir"], "HEAD"),
        (["rev-parse", "--git-common-dir"], "packed-refs"),
    ] {
        if let Some(dir) = git(&args) {
            println!(
                "cargo:rerun-if-changed={}",
                PathBuf::from(dir).join(file).display()
            );
        }
    }
    if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(dir) = git(&["rev-parse", "--git-common-dir"])
    {
        println!(
            "cargo:rerun-if-changed={}",
            PathBuf::from(dir).join(head_ref).display()
        );
    }
    if git(&["rev-parse", "--git-dir"]).is_none() {
        println!("cargo:rerun-if-changed=build.rs");
    }
}

/// A git command's trimmed output, or `None` if git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}
