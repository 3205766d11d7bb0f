//! Project tasks, run as `cargo xtask <task>`.
//!
//! - `cargo xtask test`: the whole test suite, the one entry point used by the README, CI and
//!   developers. Unit, integration and property tests of every crate (through
//!   `cargo nextest` when it is installed, `cargo test` otherwise), then the doctests.
//!   Extra arguments go to the test runner (`cargo xtask test -p dspex-telemetry-core`).
//!   First it installs the test peers' programs when they are missing (Debian `prometheus`,
//!   which brings `promtool`, `prometheus-pushgateway` and `prometheus-alertmanager`, through
//!   apt; the StatsD daemon, Grafana's published dashboard types (`@grafana/schema`) and the
//!   TypeScript compiler through npm, and a Python environment with the OTLP protobuf classes
//!   and `grpcio`, one with DSPy, one with DSPy, the OpenTelemetry SDK and OpenInference's DSPy
//!   instrumentation, and one with `aiohttp` (the W3C Trace Context suite), through pip, all into `target/test-peers`): the tests
//!   start the peers themselves, on 127.0.0.1, and fail naming the program if it is absent.
//!   `openssl`
//!   (apt) makes the TLS tests' CA and certificates.
//! - `cargo xtask peers`: installs the test peers alone (CI does, before the benches, which
//!   run DSPy workers too).
//! - `cargo xtask features`: builds (clippy, warnings denied) every crate that has features
//!   with none of them, then with each alone.
//! - `cargo xtask bench-report`: regenerates `docs/benchmarks.md` from criterion's output.
//! - `cargo xtask alert-rules`: regenerates `telemetry/prometheus_alerts.yml` from the default
//!   thresholds and window (a test fails when the committed file drifts from the code).
//! - `cargo xtask dashboard`: regenerates `telemetry/grafana_dashboard.json` from the metric
//!   catalog (likewise checked by a test).

mod bench_report;
mod features;
mod generated;

use std::env;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = env::args().skip(1);
    match args.next().as_deref() {
        Some("test") => test(args.collect()),
        Some("peers") => {
            if ensure_peers() {
                eprintln!("xtask: test peers ready in {}", peers_dir().display());
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Some("features") => {
            if features::run() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Some("bench-report") => report(bench_report::run(&workspace_root())),
        Some("alert-rules") => report(generated::write_alert_rules(&workspace_root())),
        Some("dashboard") => report(generated::write_dashboard(&workspace_root())),
        Some("help") | Some("--help") | Some("-h") | None => {
            eprintln!(
                "usage: cargo xtask test [ARGS…]   run every test (ARGS go to the test runner)\n\
                 \x20      cargo xtask peers          install the test peers (done by `test` too)\n\
                 \x20      cargo xtask features       build each crate with no feature and each feature alone\n\
                 \x20      cargo xtask bench-report   regenerate docs/benchmarks.md\n\
                 \x20      cargo xtask alert-rules    regenerate telemetry/prometheus_alerts.yml\n\
                 \x20      cargo xtask dashboard      regenerate telemetry/grafana_dashboard.json"
            );
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("xtask: unknown task {other:?}; try `cargo xtask help`");
            ExitCode::from(2)
        }
    }
}

/// Prints what a generator wrote, or why it could not.
fn report(result: Result<PathBuf, String>) -> ExitCode {
    match result {
        Ok(path) => {
            eprintln!("xtask: wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
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

/// Tests passed and failed, as the runners' closing lines report them.
#[derive(Default, Clone, Copy)]
struct Tally {
    passed: u64,
    failed: u64,
}

/// The number just before `word` in `line` (`"57 passed"` → 57).
fn count_before(line: &str, word: &str) -> u64 {
    let Some(at) = line.find(word) else { return 0 };
    line[..at]
        .trim_end()
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Reads a runner's closing lines: libtest's `test result: …` and nextest's `Summary […]`.
fn tally_line(line: &str, tally: &mut Tally) {
    let line = line.trim();
    if line.starts_with("test result:") || line.starts_with("Summary [") {
        tally.passed += count_before(line, " passed");
        tally.failed += count_before(line, " failed");
    }
}

/// Runs `command`, echoing its output while counting the tests its closing lines report.
fn run_counting(mut command: Command, tally: &mut Tally) -> bool {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::mpsc;

    eprintln!("xtask: running {command:?}");
    let mut child = match command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("xtask: could not start {command:?}: {e}");
            return false;
        }
    };
    let (tx, rx) = mpsc::channel::<String>();
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .enumerate()
    .map(|(i, stream)| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if i == 0 {
                    println!("{line}");
                } else {
                    eprintln!("{line}");
                }
                let _ = tx.send(line);
            }
        })
    })
    .collect();
    drop(tx);
    for line in rx {
        tally_line(&line, tally);
    }
    for reader in readers {
        let _ = reader.join();
    }
    child.wait().is_ok_and(|s| s.success())
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Programs the tests start as real peers, and the Debian packages that bring them.
const PEERS: &[(&str, &str)] = &[
    ("prometheus", "prometheus"),
    ("promtool", "prometheus"),
    ("prometheus-pushgateway", "prometheus-pushgateway"),
    ("prometheus-alertmanager", "prometheus-alertmanager"),
    // The TLS tests make their CA and server certificates with it.
    ("openssl", "openssl"),
];

fn on_path(program: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|d| d.join(program).is_file()))
}

/// Where `cargo xtask test` installs the npm-packaged peers (StatsD, Grafana's schema types);
/// the tests read it from `DSPEX_TEST_PEERS`.
fn peers_dir() -> PathBuf {
    workspace_root().join("target").join("test-peers")
}

/// The npm-packaged peers, pinned, with a file each leaves once installed: the StatsD daemon,
/// and Grafana's published dashboard types with the TypeScript compiler that checks the
/// generated dashboard against them.
const NPM_PEERS: &[(&str, &str)] = &[
    ("statsd@0.9.0", "node_modules/statsd/stats.js"),
    (
        "@grafana/schema@13.2.3",
        "node_modules/@grafana/schema/package.json",
    ),
    ("typescript@5.9.3", "node_modules/typescript/bin/tsc"),
];

/// Installs the peers that are missing: Debian packages through apt (`apt-get update` only if
/// the first try fails), [`NPM_PEERS`] through npm into [`peers_dir`]. Returns false, having said
/// why, if one is still missing.
fn ensure_peers() -> bool {
    let mut packages: Vec<&str> = PEERS
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|(_, package)| *package)
        .collect();
    packages.dedup();
    if !on_path("npm") {
        packages.extend(["nodejs", "npm"]);
    }
    if !packages.is_empty() {
        eprintln!("xtask: installing test peers: {}", packages.join(" "));
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&packages)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        if !install() {
            let _ = Command::new("apt-get").arg("update").status();
            install();
        }
    }
    let mut missing: Vec<&str> = PEERS
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|(program, _)| *program)
        .collect();
    let wanted: Vec<(&str, &str)> = NPM_PEERS
        .iter()
        .copied()
        .filter(|(_, marker)| !peers_dir().join(marker).is_file())
        .collect();
    if !wanted.is_empty() {
        let names: Vec<&str> = wanted.iter().map(|(package, _)| *package).collect();
        eprintln!(
            "xtask: installing {} into {}",
            names.join(" "),
            peers_dir().display()
        );
        let _ = std::fs::create_dir_all(peers_dir());
        let _ = Command::new("npm")
            .args([
                "install",
                "--omit=optional",
                "--no-audit",
                "--no-fund",
                "--prefix",
            ])
            .arg(peers_dir())
            .args(&names)
            .status();
        missing.extend(
            wanted
                .iter()
                .filter(|(_, marker)| !peers_dir().join(marker).is_file())
                .map(|(package, _)| *package),
        );
    }
    if !ensure_otlp_venv() {
        missing.push(OTLP_PROTO);
    }
    if !ensure_dspy_venv() {
        missing.push(DSPY);
    }
    if !ensure_venv(
        "dspy-otel-venv",
        &[DSPY, OTEL_SDK, OPENINFERENCE_DSPY],
        "import dspy, opentelemetry.sdk.trace, openinference.instrumentation.dspy",
    ) {
        missing.push(OPENINFERENCE_DSPY);
    }
    if !ensure_venv("w3c-venv", &[AIOHTTP], "import aiohttp") {
        missing.push(AIOHTTP);
    }
    if !missing.is_empty() {
        eprintln!(
            "xtask: cannot install {}; the tests that need them will fail",
            missing.join(", ")
        );
    }
    missing.is_empty()
}

/// The official OTLP protobuf classes the tests' receiver decodes with, and its gRPC server.
const OTLP_PROTO: &str = "opentelemetry-proto==1.27.0";
const GRPCIO: &str = "grpcio==1.85.3";
/// DSPy, for the bridge's tests, example and benches with real DSPy programs (offline: a
/// mocked LM); it brings pydantic and litellm.
const DSPY: &str = "dspy==3.4.1";
/// Python's OpenTelemetry SDK and OpenInference's DSPy instrumentation, beside DSPy in an
/// environment of their own (`dspy-venv` stays without OpenTelemetry): the tests of a worker
/// whose OpenTelemetry spans join the service's trace.
const OTEL_SDK: &str = "opentelemetry-sdk==1.45.2";
const OPENINFERENCE_DSPY: &str = "openinference-instrumentation-dspy==0.1.48";
/// The W3C Trace Context conformance suite's harness (vendored in the core's tests) runs on
/// aiohttp.
const AIOHTTP: &str = "aiohttp==3.14.5";

/// A Python environment in [`peers_dir`] with [`OTLP_PROTO`]; made once.
fn ensure_otlp_venv() -> bool {
    ensure_venv(
        "otlp-venv",
        &[OTLP_PROTO, GRPCIO],
        "import grpc, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc",
    )
}

/// A Python environment in [`peers_dir`] with [`DSPY`]; made once. The bridge's DSPy tests
/// run their workers with its interpreter.
fn ensure_dspy_venv() -> bool {
    ensure_venv("dspy-venv", &[DSPY], "import dspy, pydantic, litellm")
}

/// A Python environment `name` in [`peers_dir`] with `packages`, ready when `check` runs
/// there; made (or completed) only when it does not.
fn ensure_venv(name: &str, packages: &[&str], check: &str) -> bool {
    let venv = peers_dir().join(name);
    let python = venv.join("bin").join("python");
    let ready = || {
        Command::new(&python)
            .args(["-c", check])
            // litellm would otherwise try to fetch its model cost map at import.
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready() {
        return true;
    }
    eprintln!(
        "xtask: installing {} into {}",
        packages.join(" "),
        venv.display()
    );
    if !python.is_file() {
        let make_venv = || {
            Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !make_venv() {
            // Debian ships `venv` apart.
            let _ = Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "python3-venv"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status();
            make_venv();
        }
    }
    let _ = Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(packages)
        .status();
    ready()
}

fn test(extra: Vec<String>) -> ExitCode {
    let peers_ok = ensure_peers();
    let scope: Vec<String> = if extra.is_empty() {
        vec!["--workspace".into()]
    } else {
        extra
    };
    let mut tests = cargo();
    tests.env("DSPEX_TEST_PEERS", peers_dir());
    if has_nextest() {
        tests.args(["nextest", "run", "--all-features", "--no-fail-fast"]);
    } else {
        eprintln!("xtask: cargo-nextest is not installed; using cargo test");
        tests.args(["test", "--all-features", "--no-fail-fast"]);
    }
    tests.args(&scope);
    let mut tally = Tally::default();
    let tests_ok = run_counting(tests, &mut tally);
    let mut doctests = cargo();
    doctests
        .env("DSPEX_TEST_PEERS", peers_dir())
        .args(["test", "--doc", "--all-features"])
        .args(&scope);
    let doctests_ok = run_counting(doctests, &mut tally);
    println!("\nxtask: {} passed, {} failed", tally.passed, tally.failed);
    if tests_ok && doctests_ok && peers_ok && tally.passed > 0 {
        ExitCode::SUCCESS
    } else {
        if tally.passed == 0 {
            eprintln!("xtask: no test ran");
        }
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_lines_of_both_runners_are_counted() {
        let mut t = Tally::default();
        for line in [
            "test result: ok. 33 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.04s",
            "     Summary [   1.374s] 56 tests run: 55 passed, 1 failed, 0 skipped",
            "test result: FAILED. 0 passed; 1 failed; 0 ignored",
            "test foo ... ok",
            "     Summary [   0.973s] 57 tests run: 57 passed, 0 skipped",
        ] {
            tally_line(line, &mut t);
        }
        assert_eq!((t.passed, t.failed), (145, 2));
    }
}
