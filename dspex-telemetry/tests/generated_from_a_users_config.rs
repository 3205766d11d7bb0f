//! The dashboard and the alert rules generated from a service's own configuration and metric
//! definitions: its metrics get panels whose queries name only series it exports, its changed
//! threshold is in the rules, `promtool check rules` accepts them and `promtool test rules`
//! shows the changed threshold firing where the default stays silent. And the
//! `dspex-telemetry` binary prints both.

#[path = "../../dspex-telemetry-exporters/tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use dspex_telemetry::core::EventName;
use dspex_telemetry::exporters::grafana;
use dspex_telemetry::metrics::{MetricDefinition, MetricKind, Unit, catalog};
use dspex_telemetry::{Config, generate};

fn mine() -> Vec<MetricDefinition> {
    let stop = EventName::from_static(&["shop", "checkout", "stop"]);
    vec![
        MetricDefinition::counter("checkout_orders_total", [stop.clone()]).tags(&["region"]),
        MetricDefinition::distribution("checkout_duration", [stop], &[10.0, 50.0, 250.0, 1000.0])
            .measurement("duration")
            .unit(Unit::Nanosecond, Unit::Millisecond)
            .tags(&["region"]),
    ]
}

fn config() -> Config {
    Config::from_toml("[alerts.thresholds]\nbridge_call_p99_ms = 250").expect("config")
}

fn promtool() -> PathBuf {
    support::which("promtool").expect(
        "the `promtool` binary is needed (Debian package `prometheus`; `cargo xtask test` installs it)",
    )
}

fn run(args: &[&str], dir: &std::path::Path) -> (bool, String) {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_services_metrics_get_panels_of_their_own() {
    let definitions = mine();
    let dashboard = generate::dashboard(&config(), &definitions);
    let text = dashboard.to_string();
    assert!(text.contains("Your metrics"), "a row for them");
    // The changed threshold is drawn on the bridge call latency panel; the others keep the
    // spec's.
    let line = |title: &str| {
        let panel = dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title}"));
        assert_eq!(
            panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"],
            "line"
        );
        panel["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"].as_f64()
    };
    assert_eq!(line("Bridge calls latency p50 / p95 / p99"), Some(250.0));
    assert_eq!(line("Tool executions latency p50 / p95 / p99"), Some(500.0));
    assert_eq!(line("Error rate by operation"), Some(5.0));
    assert!(
        text.contains("sum by (region) (rate(checkout_orders_total[$__rate_interval]))"),
        "{text}"
    );
    assert!(
        text.contains("histogram_quantile(0.99, sum by (le, region) (rate(checkout_duration_bucket[$__rate_interval])))"),
        "{text}"
    );
    // Every query names only series the catalog and the service's metrics produce.
    let mut all = catalog::dspex_metrics();
    all.extend(definitions);
    let exported = grafana::exposition_names(&all);
    for expr in grafana::queries(&dashboard) {
        for series in grafana::series_in(&expr) {
            assert!(
                exported.contains(&series),
                "{series} in `{expr}` is exported by nothing"
            );
        }
    }
    // Without metrics of its own, the committed dashboard.
    let committed: serde_json::Value =
        serde_json::from_str(include_str!("../../telemetry/grafana_dashboard.json")).unwrap();
    assert_eq!(generate::dashboard(&Config::default(), &[]), committed);
}

/// The bridge call duration's bucket bounds.
fn buckets() -> Vec<f64> {
    let def = catalog::dspex_metrics()
        .into_iter()
        .find(|d| d.name() == "dspex_bridge_call_method_duration")
        .unwrap();
    match def.kind() {
        MetricKind::Distribution { buckets } => buckets.clone(),
        other => panic!("a histogram, not {other:?}"),
    }
}

/// A promtool test: 1 000 `dspy.Predict` calls a step, 984 in the first bucket and 16 in
/// the bucket `(a, b]` that holds 300 ms, so that the interpolated p99 is `a + 0.375 (b - a)`;
/// the alerts expected at 3 minutes. Returns the test and that p99.
fn promtool_test(expected: impl Fn(f64) -> String) -> (String, f64) {
    const PER_STEP: u64 = 1000;
    const LOW: u64 = 984;
    let buckets = buckets();
    let upper = buckets
        .iter()
        .position(|b| *b >= 300.0)
        .expect("a bucket holds 300 ms");
    assert!(upper > 0);
    let (a, b) = (buckets[upper - 1], buckets[upper]);
    let p99 = a + (990 - LOW) as f64 / (PER_STEP - LOW) as f64 * (b - a);
    let mut series = String::new();
    for (i, le) in buckets
        .iter()
        .map(|b| b.to_string())
        .chain(["+Inf".to_owned()])
        .enumerate()
    {
        let cumulative = if i >= upper { PER_STEP } else { LOW };
        let _ = writeln!(
            series,
            "      - series: 'dspex_bridge_call_method_duration_bucket{{method=\"dspy.Predict\", le=\"{le}\"}}'\n        values: '0+{cumulative}x12'"
        );
    }
    let _ = writeln!(
        series,
        "      - series: 'dspex_bridge_call_method_duration_count{{method=\"dspy.Predict\"}}'\n        values: '0+{PER_STEP}x12'"
    );
    let test = format!(
        "rule_files: [rules.yml]\nevaluation_interval: 15s\ntests:\n  - interval: 15s\n    input_series:\n{series}    alert_rule_test:\n      - eval_time: 3m\n        alertname: DspexBridgeCallP99Ms\n        exp_alerts:{}",
        expected(p99)
    );
    (test, p99)
}

#[test]
fn the_changed_threshold_is_in_the_rules_and_fires_under_promtool() {
    let rules = generate::alert_rules(&config(), &[]);
    assert!(
        rules.contains("dspex_bridge_call_method_duration_bucket[1m]))) > 250 and"),
        "{rules}"
    );
    let dir = std::env::temp_dir().join(format!("dspex-user-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rules.yml"), &rules).unwrap();
    let (ok, text) = run(&["check", "rules", "rules.yml"], &dir);
    assert!(ok, "{text}");

    // Calls whose p99 is over the changed 250 ms, under 1.5× (its low tier).
    let (fires, p99) = promtool_test(|p99| {
        format!(
            "\n          - exp_labels: {{severity: low, alert_type: performance_degradation, rule: bridge_call_p99_ms, method: \"dspy.Predict\"}}\n            exp_annotations:\n              summary: \"dspex_bridge_call_method p99 (method=dspy.Predict): {p99:.2}ms\"\n              description: \"p99 of dspex_bridge_call_method over the last 1m is above 250ms (the `bridge_call_p99_ms` threshold), with at least 20 observations.\"\n"
        )
    });
    assert!(p99 > 250.0 && p99 < 375.0, "{p99}");
    std::fs::write(dir.join("fires.yml"), fires).unwrap();
    let (ok, text) = run(&["test", "rules", "fires.yml"], &dir);
    assert!(ok, "p99 {p99} ms fires under 250 ms: {text}");

    // The default threshold (1000 ms) stays silent on the same calls.
    std::fs::write(
        dir.join("rules.yml"),
        generate::alert_rules(&Config::default(), &[]),
    )
    .unwrap();
    let (silent, _) = promtool_test(|_| " []\n".to_owned());
    std::fs::write(dir.join("silent.yml"), silent).unwrap();
    let (ok, text) = run(&["test", "rules", "silent.yml"], &dir);
    assert!(ok, "p99 {p99} ms is silent under 1000 ms: {text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_binary_prints_the_dashboard_and_the_rules_of_a_configuration() {
    let dir = std::env::temp_dir().join(format!("dspex-gen-cmd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("telemetry.toml");
    std::fs::write(&file, "[alerts.thresholds]\nbridge_call_p99_ms = 250\n").unwrap();
    let bin = env!("CARGO_BIN_EXE_dspex-telemetry");
    let rules = Command::new(bin)
        .args(["alert-rules", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(rules.status.success());
    assert_eq!(
        String::from_utf8(rules.stdout).unwrap(),
        generate::alert_rules(&config(), &[])
    );
    let dashboard = Command::new(bin)
        .args(["dashboard", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(dashboard.status.success());
    let json: serde_json::Value = serde_json::from_slice(&dashboard.stdout).unwrap();
    assert_eq!(json, generate::dashboard(&config(), &[]));
    let plain = Command::new(bin).arg("dashboard").output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert_eq!(json, generate::dashboard(&Config::default(), &[]));
    let bad = Command::new(bin)
        .args(["dashboard", "--config"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "a flag without its file");
    std::fs::remove_dir_all(&dir).unwrap();
}
