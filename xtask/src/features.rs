//! `cargo xtask features`: every crate's library built with no feature, then with each of its
//! features alone (clippy, warnings denied), so that no part leans on another's code or
//! dependencies without saying so; then the unit tests that exist only in builds without some
//! parts (a backend or handler left out is refused, naming its feature). Features whose name starts with `_` are internal (pulled in
//! by public ones) and are not built alone.

use std::process::Command;
use std::time::Instant;

use serde_json::Value;

use crate::cargo;

/// One build: a package with `--no-default-features` and at most one feature.
struct Build {
    package: String,
    feature: Option<String>,
}

/// The packages of the workspace that declare features, each with its public features.
fn builds(metadata: &Value) -> Vec<Build> {
    let mut builds = Vec::new();
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    for package in packages {
        let Some(name) = package["name"].as_str() else {
            continue;
        };
        let Some(features) = package["features"].as_object() else {
            continue;
        };
        let mut public: Vec<&String> = features
            .keys()
            .filter(|f| f.as_str() != "default" && !f.starts_with('_'))
            .collect();
        if public.is_empty() {
            continue;
        }
        public.sort();
        builds.push(Build {
            package: name.to_owned(),
            feature: None,
        });
        builds.extend(public.into_iter().map(|f| Build {
            package: name.to_owned(),
            feature: Some(f.clone()),
        }));
    }
    builds
}

/// Runs every build; true when all passed.
pub(crate) fn run() -> bool {
    let output = match cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
    {
        Ok(output) if output.status.success() => output.stdout,
        Ok(output) => {
            eprintln!(
                "xtask: cargo metadata failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            return false;
        }
        Err(e) => {
            eprintln!("xtask: cannot run cargo metadata: {e}");
            return false;
        }
    };
    let metadata: Value = match serde_json::from_slice(&output) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("xtask: cargo metadata's answer is not JSON: {e}");
            return false;
        }
    };
    let builds = builds(&metadata);
    if builds.is_empty() {
        eprintln!("xtask: no package declares a feature");
        return false;
    }
    let mut failed = Vec::new();
    for build in &builds {
        let label = format!(
            "{} --no-default-features{}",
            build.package,
            build
                .feature
                .as_deref()
                .map(|f| format!(" --features {f}"))
                .unwrap_or_default()
        );
        let mut command: Command = cargo();
        command.args([
            "clippy",
            "--quiet",
            "-p",
            &build.package,
            "--lib",
            "--no-default-features",
        ]);
        if let Some(feature) = &build.feature {
            command.args(["--features", feature]);
        }
        command.args(["--", "-D", "warnings"]);
        let started = Instant::now();
        let ok = command.status().is_ok_and(|s| s.success());
        eprintln!(
            "xtask: {} {label} ({:.1} s)",
            if ok { "ok    " } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        if !ok {
            failed.push(label);
        }
    }
    // The refusals of a build without some parts: unit tests that exist only in such builds.
    for (package, feature) in [
        ("dspex-telemetry-exporters", None),
        ("dspex-telemetry-exporters", Some("otlp-http")),
        ("dspex-telemetry-alerts", None),
    ] {
        let mut command = cargo();
        command.args([
            "test",
            "--quiet",
            "-p",
            package,
            "--lib",
            "--no-default-features",
        ]);
        if let Some(feature) = feature {
            command.args(["--features", feature]);
        }
        command.args(["--", "left_out"]);
        let label = format!(
            "tests of {package} with {}",
            feature.unwrap_or("no feature")
        );
        if command.status().is_ok_and(|s| s.success()) {
            eprintln!("xtask: ok     {label}");
        } else {
            eprintln!("xtask: FAILED {label}");
            failed.push(label);
        }
    }
    if failed.is_empty() {
        eprintln!("xtask: {} feature builds passed", builds.len());
        true
    } else {
        eprintln!("xtask: {} feature builds failed:", failed.len());
        for label in failed {
            eprintln!("  {label}");
        }
        false
    }
}
