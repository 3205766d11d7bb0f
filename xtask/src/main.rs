//! Project tasks, run as `cargo xtask <task>`.
//!
//! - `cargo xtask test`: the whole test suite, the one entry point used by the README, CI and
//!   developers. Unit, integration and property tests of every crate (through
//!   `cargo nextest` when it is installed, `cargo test` otherwise), then the doctests.
//!   Extra arguments go to the test runner (`cargo xtask test -p dspex-telemetry-core`).
//! - `cargo xtask bench-report`: regenerates `docs/benchmarks.md` from criterion's output.

mod bench_report;

use std::env;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = env::args().skip(1);
    match args.next().as_deref() {
        Some("test") => test(args.collect()),
        Some("bench-report") => match bench_report::run(&workspace_root()) {
            Ok(path) => {
                eprintln!("xtask: wrote {}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("xtask: {e}");
                ExitCode::FAILURE
            }
        },
        Some("help") | Some("--help") | Some("-h") | None => {
            eprintln!(
                "usage: cargo xtask test [ARGS…]   run every test (ARGS go to the test runner)"
            );
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("xtask: unknown task {other:?}; try `cargo xtask help`");
            ExitCode::from(2)
        }
    }
}

/// The workspace root: xtask's manifest folder's parent.
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or(manifest.clone(), |p| p.to_path_buf())
}

fn cargo() -> Command {
    Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Runs `command`, echoing it; false when it failed or could not start.
fn run(mut command: Command) -> bool {
    eprintln!("xtask: running {command:?}");
    match command.status() {
        Ok(status) => status.success(),
        Err(e) => {
            eprintln!("xtask: could not start {command:?}: {e}");
            false
        }
    }
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn test(extra: Vec<String>) -> ExitCode {
    let scope: Vec<String> = if extra.is_empty() {
        vec!["--workspace".into()]
    } else {
        extra
    };
    let mut tests = cargo();
    if has_nextest() {
        tests.args(["nextest", "run", "--all-features", "--no-fail-fast"]);
    } else {
        eprintln!("xtask: cargo-nextest is not installed; using cargo test");
        tests.args(["test", "--all-features", "--no-fail-fast"]);
    }
    tests.args(&scope);
    if !run(tests) {
        return ExitCode::FAILURE;
    }
    let mut doctests = cargo();
    doctests
        .args(["test", "--doc", "--all-features"])
        .args(&scope);
    if !run(doctests) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
