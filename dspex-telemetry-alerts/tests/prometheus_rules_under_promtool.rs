//! The generated Prometheus rules: the committed file is what the code generates, `promtool
//! check rules` accepts it, and `promtool test rules` shows every alert (each rule, each
//! severity tier) firing on series that breach it, and silent on series under it or with too
//! few observations.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use dspex_telemetry_alerts::{Rule, Source, Statistic, prometheus_rules, thresholds::Thresholds};
use dspex_telemetry_metrics::{MetricKind, MetricsConfig, catalog};

const COMMITTED: &str = include_str!("../../telemetry/prometheus_alerts.yml");

fn generated() -> String {
    prometheus_rules(
        &Thresholds::default().rules(),
        MetricsConfig::default().window_size_ms,
        &catalog::dspex_metrics(),
    )
}

fn promtool() -> PathBuf {
    ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("the `promtool` binary is needed (Debian package `prometheus`; `cargo xtask test` installs it)")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dspex-rules-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_committed_rules_are_what_the_code_generates() {
    assert!(
        COMMITTED == generated(),
        "telemetry/prometheus_alerts.yml is out of date: run `cargo xtask alert-rules`"
    );
}

#[test]
fn promtool_accepts_the_rules() {
    let dir = scratch("check");
    let file = dir.join("prometheus_alerts.yml");
    std::fs::write(&file, generated()).unwrap();
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    // 6 rules × 4 severity tiers, and pool exhaustion (critical only).
    assert!(text.contains("SUCCESS: 25 rules found"), "{text}");
}

/// The severity tiers a rule's alerts have, as (severity, factor of the threshold).
fn tiers(rule: &Rule) -> Vec<(&'static str, f64)> {
    match rule.severity {
        Some(fixed) => vec![(fixed.as_str(), 1.0)],
        None => vec![
            ("low", 1.0),
            ("medium", 1.5),
            ("high", 2.0),
            ("critical", 3.0),
        ],
    }
}

/// A value strictly inside tier `k`: past its factor, short of the next one.
fn inside_tier(rule: &Rule, k: usize) -> f64 {
    let t = tiers(rule);
    let low = t[k].1;
    let high = t.get(k + 1).map_or(low * 1.2, |n| n.1);
    rule.threshold * (low + high) / 2.0
}

fn alert_name(rule: &Rule) -> String {
    let mut name = String::from("Dspex");
    for part in rule.name.split('_') {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            name.push(first.to_ascii_uppercase());
            name.extend(chars);
        }
    }
    name
}

fn histogram(name: &str) -> (String, Vec<f64>) {
    let def = catalog::dspex_metrics()
        .into_iter()
        .find(|d| d.name() == name)
        .unwrap_or_else(|| panic!("{name} is in the catalog"));
    let label = def.tag_list()[0].name.to_owned();
    match def.kind() {
        MetricKind::Distribution { buckets } => (label, buckets.clone()),
        other => panic!("{name} is a histogram, not {other:?}"),
    }
}

/// Series lines (promtool notation, one step per 15 s) of a histogram whose p99 sits at
/// `target`: `per_step` observations a step, some in the first bucket and the rest in the
/// bucket holding `target`, in the proportion that puts the interpolated p99 there.
fn histogram_series(
    name: &str,
    labels: &str,
    buckets: &[f64],
    target: f64,
    per_step: u64,
) -> String {
    let upper = buckets
        .iter()
        .position(|b| *b >= target)
        .unwrap_or_else(|| {
            panic!("{name}: {target} is past the last bucket, so no rule can see it")
        });
    let (a, b) = (
        if upper == 0 { 0.0 } else { buckets[upper - 1] },
        buckets[upper],
    );
    let p = (target - a) / (b - a);
    let low_share = if p < 0.99 {
        (0.99 - p) / (1.0 - p)
    } else {
        0.0
    };
    let low = ((per_step as f64) * low_share).round() as u64;
    let mut out = String::new();
    let les = buckets
        .iter()
        .map(|b| format!("{b}"))
        .chain(["+Inf".to_owned()]);
    for (i, le) in les.enumerate() {
        // The low observations sit in the first bucket, the others in the target's.
        let cumulative = match upper {
            0 => per_step,
            _ if i >= upper => per_step,
            _ => low,
        };
        let _ = writeln!(
            out,
            "      - series: '{name}_bucket{{{labels}, le=\"{le}\"}}'\n        values: '0+{cumulative}x12'"
        );
    }
    let _ = writeln!(
        out,
        "      - series: '{name}_count{{{labels}}}'\n        values: '0+{per_step}x12'"
    );
    out
}

fn expected(rule: &Rule, label: &str, value: &str, up_to: usize) -> String {
    let mut out = String::new();
    for (severity, _) in &tiers(rule)[..=up_to] {
        let _ = writeln!(
            out,
            "          - exp_labels: {{severity: {severity}, alert_type: {}, rule: {}, {label}: \"{value}\"}}",
            rule.alert_type.as_str(),
            rule.name
        );
    }
    out
}

/// One promtool test group per rule: a series inside each severity tier, one under the
/// threshold, one breaching it with too few observations.
fn test_group(rule: &Rule) -> String {
    let mut series = String::new();
    let mut alerts = String::new();
    let n = tiers(rule).len();
    match (&rule.source, rule.statistic) {
        (Source::Operation(_) | Source::Histogram(_), Statistic::Quantile(q)) => {
            assert_eq!(q, 0.99, "the series are built for p99");
            let name = match &rule.source {
                Source::Operation(base) => format!("{base}_duration"),
                Source::Histogram(name) => name.clone(),
                Source::Counter(_) => unreachable!(),
            };
            let (label, buckets) = histogram(&name);
            for k in 0..n {
                let value = format!("tier{k}");
                series += &histogram_series(
                    &name,
                    &format!("{label}=\"{value}\""),
                    &buckets,
                    inside_tier(rule, k),
                    1000,
                );
                alerts += &expected(rule, &label, &value, k);
            }
            series += &histogram_series(
                &name,
                &format!("{label}=\"under\""),
                &buckets,
                rule.threshold * 0.5,
                1000,
            );
            // Breaching, but 2 observations a step is 8 in the window, under `min_samples`.
            series += &histogram_series(
                &name,
                &format!("{label}=\"few\""),
                &buckets,
                inside_tier(rule, n - 1),
                2,
            );
        }
        (Source::Operation(base), Statistic::ErrorRatePercent) => {
            let label = histogram(&format!("{base}_duration")).0;
            let mut add = |value: &str, calls: u64, errors: u64| {
                for (name, per_step) in [
                    (format!("{base}_count"), calls),
                    (format!("{base}_duration_count"), calls),
                    (format!("{base}_errors"), errors),
                ] {
                    let _ = writeln!(
                        series,
                        "      - series: '{name}{{{label}=\"{value}\"}}'\n        values: '0+{per_step}x12'"
                    );
                }
            };
            for k in 0..n {
                let percent = inside_tier(rule, k);
                add(&format!("tier{k}"), 1000, (percent * 10.0).round() as u64);
                alerts += &expected(rule, &label, &format!("tier{k}"), k);
            }
            add("under", 1000, (rule.threshold * 5.0).round() as u64);
            add("few", 2, 2);
        }
        (Source::Counter(name), Statistic::Count) => {
            let label = catalog::dspex_metrics()
                .into_iter()
                .find(|d| d.name() == name)
                .map(|d| d.tag_list()[0].name.to_owned())
                .unwrap();
            let _ = writeln!(
                series,
                "      - series: '{name}{{{label}=\"tier0\"}}'\n        values: '0+1x12'\n      - series: '{name}{{{label}=\"under\"}}'\n        values: '0+0x12'"
            );
            alerts += &expected(rule, &label, "tier0", 0);
        }
        other => panic!("no test series for {other:?}"),
    }
    format!(
        "  - interval: 15s\n    input_series:\n{series}    alert_rule_test:\n      - eval_time: 3m\n        alertname: {}\n        exp_alerts:\n{alerts}",
        alert_name(rule)
    )
}

#[test]
fn promtool_sees_every_alert_fire_past_its_tier_and_stay_silent_under_it() {
    let rules = Thresholds::default().rules();
    let dir = scratch("test");
    // The annotations render the value (`{{ $value }}`), which promtool would compare too;
    // `promtool check rules` checks their templates above, so the unit test leaves them out.
    let without_annotations: String = generated()
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with("annotations:")
                || t.starts_with("summary:")
                || t.starts_with("description:"))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.join("rules.yml"), without_annotations).unwrap();
    let mut tests = String::from("rule_files: [rules.yml]\nevaluation_interval: 15s\ntests:\n");
    for rule in &rules {
        tests += &test_group(rule);
    }
    std::fs::write(dir.join("tests.yml"), &tests).unwrap();
    let out = Command::new(promtool())
        .args(["test", "rules", "tests.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}\ntests:\n{tests}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every rule was tested.
    assert_eq!(tests.matches("alertname:").count(), rules.len());
}
