//! The Grafana dashboard for the metrics this project exports to Prometheus, generated from the
//! metric catalog: every query names only series the catalog's metrics produce.
//!
//! Panels: bridge call latency p50/p95/p99 per method; tool execution latency and throughput
//! per tool; language-model calls per model (calls per second, latency, error rate, tokens per
//! second by kind); error rates by operation; Python worker pool health (workers by state,
//! queue depth, queue time, restarts, exhaustion); memory and CPU use of each worker and of the
//! service's own process; sessions (active, lifetime, variable operations); contract validation
//! and type casting; throughput; alerts; a table of requests by method. The alert thresholds
//! are drawn as red lines on the latency and error-rate panels ([`ThresholdLines`]).
//! `cargo xtask dashboard` writes it to `telemetry/grafana_dashboard.json`.
//!
//! ```
//! use dspex_telemetry_exporters::grafana;
//! use dspex_telemetry_metrics::catalog;
//!
//! let dashboard = grafana::dashboard(&catalog::dspex_metrics());
//! assert_eq!(dashboard["uid"], "dspex-telemetry");
//! let names = grafana::exposition_names(&catalog::dspex_metrics());
//! for expr in grafana::queries(&dashboard) {
//!     assert!(grafana::series_in(&expr).iter().all(|s| names.contains(s)), "{expr}");
//! }
//! ```

use std::collections::BTreeSet;

use dspex_telemetry_metrics::{MetricDefinition, MetricKind};
use serde_json::{Value, json};

/// The alert thresholds a dashboard draws as red lines on their panels: the bridge call and
/// tool latency panels (ms) and the error-rate panels (percent). `Default` is the spec's
/// values, as the alerts' own defaults; `None` draws no line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdLines {
    /// On "Bridge calls latency p50 / p95 / p99".
    pub bridge_call_p99_ms: Option<f64>,
    /// On "Tool executions latency p50 / p95 / p99".
    pub tool_execution_p99_ms: Option<f64>,
    /// On "Error rate by operation" and "Language-model call error rate".
    pub error_rate_percent: Option<f64>,
}

impl Default for ThresholdLines {
    fn default() -> Self {
        ThresholdLines {
            bridge_call_p99_ms: Some(1000.0),
            tool_execution_p99_ms: Some(500.0),
            error_rate_percent: Some(5.0),
        }
    }
}

impl ThresholdLines {
    /// No line.
    pub fn none() -> Self {
        ThresholdLines {
            bridge_call_p99_ms: None,
            tool_execution_p99_ms: None,
            error_rate_percent: None,
        }
    }
}

/// `panel` with a red line at `at` (Grafana's absolute thresholds, drawn as a line).
fn with_line(mut panel: Value, at: Option<f64>) -> Value {
    if let Some(at) = at {
        let defaults = &mut panel["fieldConfig"]["defaults"];
        defaults["thresholds"] = json!({
            "mode": "absolute",
            "steps": [
                { "color": "green", "value": null },
                { "color": "red", "value": at },
            ],
        });
        defaults["custom"] = json!({ "thresholdsStyle": { "mode": "line" } });
    }
    panel
}

/// The range every rate uses: Grafana's, at least four scrape intervals.
pub const RATE_INTERVAL: &str = "$__rate_interval";

/// An operation family: the metric base name, its label, and how panels name it.
struct Family {
    base: &'static str,
    label: &'static str,
    title: &'static str,
}

const FAMILIES: [Family; 4] = [
    Family {
        base: "dspex_bridge_call_method",
        label: "method",
        title: "Bridge calls",
    },
    Family {
        base: "dspex_tools_execute",
        label: "tool_name",
        title: "Tool executions",
    },
    Family {
        base: "dspex_contract_validate",
        label: "signature",
        title: "Contract validation",
    },
    Family {
        base: "dspex_types_cast",
        label: "to_type",
        title: "Type casting",
    },
];

/// Language-model calls (DSPy's, in the workers): the same three series as an operation's.
const LM: Family = Family {
    base: "dspex_lm_call",
    label: "model",
    title: "Language-model calls",
};

/// One query of a panel: PromQL and its legend.
fn target(ref_id: usize, expr: String, legend: &str) -> Value {
    json!({
        "refId": ((b'A' + ref_id as u8) as char).to_string(),
        "datasource": { "type": "prometheus", "uid": "${datasource}" },
        "expr": expr,
        "legendFormat": legend,
        "range": true,
    })
}

fn panel(
    kind: &str,
    title: &str,
    description: &str,
    unit: &str,
    queries: Vec<(String, String)>,
) -> Value {
    let targets: Vec<Value> = queries
        .into_iter()
        .enumerate()
        .map(|(i, (expr, legend))| target(i, expr, &legend))
        .collect();
    json!({
        "type": kind,
        "title": title,
        "description": description,
        "datasource": { "type": "prometheus", "uid": "${datasource}" },
        "fieldConfig": { "defaults": { "unit": unit }, "overrides": [] },
        "options": {},
        "targets": targets,
    })
}

fn quantile(q: f64, histogram: &str, by: &str) -> String {
    let by_le = if by.is_empty() {
        "le".to_owned()
    } else {
        format!("le, {by}")
    };
    format!("histogram_quantile({q}, sum by ({by_le}) (rate({histogram}_bucket[{RATE_INTERVAL}])))")
}

/// p50, p95 and p99 of `histogram` per `label`, each with its legend.
fn quantiles(histogram: &str, label: &str) -> Vec<(String, String)> {
    [0.5, 0.95, 0.99]
        .into_iter()
        .map(|q| {
            (
                quantile(q, histogram, label),
                format!("{{{{{label}}}}} p{}", (q * 100.0) as u32),
            )
        })
        .collect()
}

fn latency(f: &Family) -> Value {
    let histogram = format!("{}_duration", f.base);
    let l = f.label;
    panel(
        "timeseries",
        &format!("{} latency p50 / p95 / p99", f.title),
        &format!("Quantiles of `{histogram}` per `{l}`, from its buckets (milliseconds)."),
        "ms",
        quantiles(&histogram, l),
    )
}

fn throughput(f: &Family) -> Value {
    let l = f.label;
    panel(
        "timeseries",
        &format!("{} per second", f.title),
        &format!(
            "Completed {} per second per `{l}`, successful or not.",
            f.title.to_lowercase()
        ),
        "reqps",
        vec![(
            format!("sum by ({l}) (rate({}_count[{RATE_INTERVAL}]))", f.base),
            format!("{{{{{l}}}}}"),
        )],
    )
}

fn error_rate(f: &Family) -> (String, String) {
    let l = f.label;
    (
        format!(
            "100 * sum by ({l}) (rate({b}_errors[{RATE_INTERVAL}])) / sum by ({l}) (rate({b}_count[{RATE_INTERVAL}]))",
            b = f.base
        ),
        format!("{} {{{{{l}}}}}", f.title.to_lowercase()),
    )
}

/// Places panels on a 24-column grid, two per row, 8 units high (tables span the row).
fn lay_out(panels: Vec<Value>) -> Vec<Value> {
    let (mut x, mut y) = (0, 0);
    panels
        .into_iter()
        .enumerate()
        .map(|(i, mut p)| {
            let wide = p["type"] == "table" || p["type"] == "row";
            if wide && x != 0 {
                (x, y) = (0, y + 8);
            }
            let (w, h) = if p["type"] == "row" {
                (24, 1)
            } else if wide {
                (24, 8)
            } else {
                (12, 8)
            };
            p["id"] = json!(i + 1);
            p["gridPos"] = json!({ "h": h, "w": w, "x": x, "y": y });
            if wide || x == 12 {
                (x, y) = (0, y + h);
            } else {
                x = 12;
            }
            p
        })
        .collect()
}

fn row(title: &str) -> Value {
    json!({ "type": "row", "title": title, "collapsed": false, "panels": [] })
}

/// The dashboard, as Grafana's JSON model (schema version 39), for `definitions` (the metric
/// catalog): a `datasource` variable picks the Prometheus data source.
pub fn dashboard(definitions: &[MetricDefinition]) -> Value {
    dashboard_with(definitions, &ThresholdLines::default())
}

/// As [`dashboard`], with `lines` drawn (a service's own thresholds).
pub fn dashboard_with(definitions: &[MetricDefinition], lines: &ThresholdLines) -> Value {
    let has = |name: &str| definitions.iter().any(|d| d.name() == name);
    let [bridge, tools, contract, types] = &FAMILIES;
    let mut panels = vec![
        row("Bridge calls"),
        with_line(latency(bridge), lines.bridge_call_p99_ms),
        throughput(bridge),
    ];
    panels.push(row("Tools"));
    panels.push(with_line(latency(tools), lines.tool_execution_p99_ms));
    panels.push(throughput(tools));
    panels.push(row("Language-model calls"));
    panels.push(throughput(&LM));
    panels.push(latency(&LM));
    panels.push(with_line(
        panel(
            "timeseries",
            "Language-model call error rate",
            "Failed / completed language-model calls over the rate interval, in percent, per `model`.",
            "percent",
            vec![(error_rate(&LM).0, "{{model}}".into())],
        ),
        lines.error_rate_percent,
    ));
    panels.push(panel(
        "timeseries",
        "Language-model tokens per second",
        "Prompt and completion tokens per second per `model`, as the models reported them.",
        "short",
        vec![(
            format!("sum by (model, kind) (rate(dspex_lm_tokens_total[{RATE_INTERVAL}]))"),
            "{{model}} {{kind}}".into(),
        )],
    ));
    panels.push(row("Errors"));
    panels.push(with_line(
        panel(
            "timeseries",
            "Error rate by operation",
            "Failed / completed over the rate interval, in percent, per operation and label.",
            "percent",
            FAMILIES.iter().map(error_rate).collect(),
        ),
        lines.error_rate_percent,
    ));
    panels.push(panel(
        "timeseries",
        "Errors per second",
        "Failures per second: errors, panics, timeouts and cancellations.",
        "short",
        FAMILIES
            .iter()
            .map(|f| {
                (
                    format!(
                        "sum by ({l}) (rate({}_errors[{RATE_INTERVAL}]))",
                        f.base,
                        l = f.label
                    ),
                    format!("{} {{{{{}}}}}", f.title.to_lowercase(), f.label),
                )
            })
            .collect(),
    ));
    panels.push(row("Python worker pool"));
    panels.push(panel(
        "timeseries",
        "Workers by state",
        "Idle, busy and starting workers per pool (from the periodic health event).",
        "short",
        vec![(
            "sum by (pool, state) (dspex_pool_workers)".into(),
            "{{pool}} {{state}}".into(),
        )],
    ));
    panels.push(panel(
        "timeseries",
        "Queue depth and queue time p99",
        "Requests waiting for a worker, and how long requests waited (milliseconds, right axis).",
        "short",
        vec![
            (
                "sum by (pool) (dspex_pool_queue_depth)".into(),
                "{{pool}} depth".into(),
            ),
            (
                quantile(0.99, "dspex_pool_queue_time", "pool"),
                "{{pool}} queue time p99 (ms)".into(),
            ),
        ],
    ));
    panels.push(panel(
        "timeseries",
        "Worker restarts, exits and exhaustion",
        "Per second: workers replaced (by reason), workers exited, requests refused because the queue was full.",
        "short",
        vec![
            (
                format!("sum by (pool, reason) (rate(dspex_pool_worker_restarts_total[{RATE_INTERVAL}]))"),
                "{{pool}} restarts ({{reason}})".into(),
            ),
            (
                format!("sum by (pool, reason) (rate(dspex_pool_worker_exits_total[{RATE_INTERVAL}]))"),
                "{{pool}} exits ({{reason}})".into(),
            ),
            (
                format!("sum by (pool) (rate(dspex_pool_exhausted_total[{RATE_INTERVAL}]))"),
                "{{pool}} refused".into(),
            ),
        ],
    ));
    panels.push(panel(
        "timeseries",
        "Queue time p50 / p95 / p99",
        "How long requests waited for a worker (milliseconds).",
        "ms",
        quantiles("dspex_pool_queue_time", "pool"),
    ));
    panels.push(row("Worker and process resources"));
    panels.push(panel(
        "timeseries",
        "Memory",
        "Resident memory of each Python worker, and of the service's own process, read from the OS.",
        "bytes",
        vec![
            (
                "sum by (pool, worker_id) (dspex_pool_worker_memory_bytes)".into(),
                "{{pool}} worker {{worker_id}}".into(),
            ),
            (
                "sum by (instance) (dspex_process_memory_bytes)".into(),
                "process {{instance}}".into(),
            ),
        ],
    ));
    panels.push(panel(
        "timeseries",
        "CPU use",
        "CPU time (user and system) per second of each Python worker and of the service's own \
         process: 100 % is one core.",
        "percentunit",
        vec![
            (
                format!("sum by (pool, worker_id) (rate(dspex_pool_worker_cpu_seconds[{RATE_INTERVAL}]))"),
                "{{pool}} worker {{worker_id}}".into(),
            ),
            (
                format!("sum by (instance) (rate(dspex_process_cpu_seconds[{RATE_INTERVAL}]))"),
                "process {{instance}}".into(),
            ),
        ],
    ));
    if has("dspex_session_created_total") {
        panels.push(row("Sessions"));
        panels.push(panel(
            "timeseries",
            "Active sessions and session lifetime",
            "Sessions created and not yet expired; p50 and p95 of the lifetime of expired ones (milliseconds).",
            "short",
            vec![
                (
                    "sum(dspex_session_created_total) - sum(dspex_session_expired_total or vector(0))".into(),
                    "active".into(),
                ),
                (quantile(0.5, "dspex_session_lifetime", ""), "lifetime p50 (ms)".into()),
                (quantile(0.95, "dspex_session_lifetime", ""), "lifetime p95 (ms)".into()),
            ],
        ));
        panels.push(panel(
            "timeseries",
            "Session variable operations",
            "Variable sets and gets per second.",
            "ops",
            vec![(
                format!("sum by (operation) (rate(dspex_session_variable_operations_total[{RATE_INTERVAL}]))"),
                "{{operation}}".into(),
            )],
        ));
    }
    panels.push(row("Contracts and types"));
    panels.push(latency(contract));
    panels.push(panel(
        "timeseries",
        "Contract validations and type casts per second",
        "Per signature and per target type, successful or not.",
        "ops",
        vec![
            (
                format!(
                    "sum by (signature) (rate(dspex_contract_validate_count[{RATE_INTERVAL}]))"
                ),
                "validate {{signature}}".into(),
            ),
            (
                format!("sum by (to_type) (rate(dspex_types_cast_count[{RATE_INTERVAL}]))"),
                "cast to {{to_type}}".into(),
            ),
        ],
    ));
    panels.push(latency(types));
    panels.push(row("Throughput and alerts"));
    panels.push(panel(
        "timeseries",
        "Throughput",
        "Operations completed per second, all labels together.",
        "ops",
        FAMILIES
            .iter()
            .map(|f| {
                (
                    format!("sum(rate({}_count[{RATE_INTERVAL}]))", f.base),
                    f.title.to_lowercase(),
                )
            })
            .collect(),
    ));
    panels.push(panel(
        "timeseries",
        "Alerts",
        "Alerts firing in process now, and alerts fired and resolved per minute by type and severity.",
        "short",
        vec![
            ("sum(dspex_alerts_active)".into(), "active".into()),
            (
                format!("60 * sum by (alert_type, severity) (rate(dspex_alerts_fired_total[{RATE_INTERVAL}]))"),
                "fired/min {{alert_type}} {{severity}}".into(),
            ),
            (
                format!("60 * sum by (alert_type, severity) (rate(dspex_alerts_resolved_total[{RATE_INTERVAL}]))"),
                "resolved/min {{alert_type}} {{severity}}".into(),
            ),
            (
                // Zero rather than no data while no handler has failed.
                format!("sum by (handler_id) (rate(dspex_telemetry_handler_failures_total[{RATE_INTERVAL}])) or vector(0)"),
                "handler failures/s {{handler_id}}".into(),
            ),
        ],
    ));
    let mut requests = panel(
        "table",
        "Requests by method",
        "Per method over the dashboard's range: calls, errors, p99 (ms). Traces of single requests \
         are in the tracing backend the OpenTelemetry exporter sends to: search by \
         `dspex.correlation_id`, or follow an alert's exemplar trace ids.",
        "short",
        vec![
            (
                "sum by (method) (increase(dspex_bridge_call_method_count[$__range]))".into(),
                "calls".into(),
            ),
            (
                "sum by (method) (increase(dspex_bridge_call_method_errors[$__range]))".into(),
                "errors".into(),
            ),
            (
                "histogram_quantile(0.99, sum by (le, method) (increase(dspex_bridge_call_method_duration_bucket[$__range])))".into(),
                "p99 (ms)".into(),
            ),
        ],
    );
    for t in requests["targets"].as_array_mut().into_iter().flatten() {
        t["instant"] = json!(true);
        t["range"] = json!(false);
        t["format"] = json!("table");
    }
    requests["transformations"] = json!([{ "id": "merge", "options": {} }]);
    panels.push(requests);
    let custom = custom_panels(definitions);
    if !custom.is_empty() {
        panels.push(row("Your metrics"));
        panels.extend(custom);
    }
    json!({
        "title": "DSPex telemetry",
        "uid": "dspex-telemetry",
        "description": "Generated by `cargo xtask dashboard` from the dspex-telemetry metric catalog; do not edit.",
        "tags": ["dspex", "python-bridge"],
        "schemaVersion": 39,
        "version": 1,
        "editable": true,
        "graphTooltip": 1,
        "time": { "from": "now-1h", "to": "now" },
        "refresh": "10s",
        "timezone": "browser",
        "annotations": { "list": [] },
        "templating": {
            "list": [{
                "name": "datasource",
                "label": "Prometheus",
                "type": "datasource",
                "query": "prometheus",
                "hide": 0,
                "refresh": 1,
                "options": [],
            }],
        },
        "panels": lay_out(panels),
    })
}

/// A panel for each of `definitions` that is not in the DSPex catalog (a service's own
/// metrics), by kind: a counter's rate, a sum's or last value's level, a histogram's p50, p95
/// and p99 from its buckets; per tag.
fn custom_panels(definitions: &[MetricDefinition]) -> Vec<Value> {
    let catalog: BTreeSet<String> = dspex_telemetry_metrics::catalog::dspex_metrics()
        .iter()
        .map(|d| d.name().to_owned())
        .collect();
    definitions
        .iter()
        .filter(|d| !catalog.contains(d.name()))
        .map(|d| {
            let name = d.name();
            let tags: Vec<&str> = d.tag_list().iter().map(|t| t.name).collect();
            let by = tags.join(", ");
            let legend = match tags.is_empty() {
                true => name.to_owned(),
                false => tags
                    .iter()
                    .map(|t| format!("{{{{{t}}}}}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            let help = d.help();
            let unit = match d.reported_unit() {
                dspex_telemetry_metrics::Unit::Millisecond => "ms",
                dspex_telemetry_metrics::Unit::Second => "s",
                dspex_telemetry_metrics::Unit::Microsecond => "µs",
                dspex_telemetry_metrics::Unit::Nanosecond => "ns",
                dspex_telemetry_metrics::Unit::Byte => "bytes",
                dspex_telemetry_metrics::Unit::Count => "short",
            };
            match d.kind() {
                MetricKind::Counter => panel(
                    "timeseries",
                    &format!("{name} per second"),
                    &help,
                    "short",
                    vec![(
                        format!("sum by ({by}) (rate({name}[{RATE_INTERVAL}]))"),
                        legend,
                    )],
                ),
                MetricKind::Sum | MetricKind::LastValue => panel(
                    "timeseries",
                    name,
                    &help,
                    unit,
                    vec![(format!("sum by ({by}) ({name})"), legend)],
                ),
                MetricKind::Summary | MetricKind::Distribution { .. } => panel(
                    "timeseries",
                    &format!("{name} p50 / p95 / p99"),
                    &help,
                    unit,
                    [0.5, 0.95, 0.99]
                        .into_iter()
                        .map(|q| {
                            (
                                quantile(q, name, &by),
                                format!("{legend} p{}", (q * 100.0) as u32),
                            )
                        })
                        .collect(),
                ),
            }
        })
        .collect()
}

/// Every query (PromQL) of a dashboard's panels.
pub fn queries(dashboard: &Value) -> Vec<String> {
    dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect()
}

/// The series names Prometheus holds for `definitions`: counters and gauges under their
/// names, histograms as `_bucket`, `_sum` and `_count`.
pub fn exposition_names(definitions: &[MetricDefinition]) -> BTreeSet<String> {
    definitions
        .iter()
        .flat_map(|d| match d.kind() {
            MetricKind::Summary | MetricKind::Distribution { .. } => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{}{s}", d.name()))
                .collect::<Vec<_>>(),
            _ => vec![d.name().to_owned()],
        })
        .collect()
}

/// The series a PromQL expression selects: its identifiers that are not functions,
/// keywords, label names (in selectors and in `by (…)`, `on (…)` and the like), ranges,
/// numbers or Grafana variables.
pub fn series_in(expr: &str) -> BTreeSet<String> {
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let b = expr.as_bytes();
    let skip_to = |mut i: usize, close: u8| {
        while i < b.len() && b[i] != close {
            i += 1;
        }
        i + 1
    };
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => i = skip_to(i + 1, b'"'),
            b'[' => i = skip_to(i + 1, b']'),
            b'{' => i = skip_to(i + 1, b'}'),
            c if c.is_ascii_digit() || c == b'.' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c == b':' => {
                let start = i;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'$' | b':'))
                {
                    i += 1;
                }
                let word = &expr[start..i];
                let mut j = i;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                let call = b.get(j) == Some(&b'(');
                if GROUPING.contains(&word) && call {
                    i = skip_to(j + 1, b')');
                } else if !call && !KEYWORDS.contains(&word) && !word.starts_with('$') {
                    out.insert(word.to_owned());
                }
            }
            _ => i += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_told_from_functions_and_labels() {
        let expr = "100 * sum by (method, le) (rate(a_errors[$__rate_interval])) / sum by (method) (rate(a_count{x=\"y\"}[5m])) and on (method) b_total";
        let got: Vec<String> = series_in(expr).into_iter().collect();
        assert_eq!(got, ["a_count", "a_errors", "b_total"]);
        assert_eq!(
            series_in("sum(x_total) - sum(y_total or vector(0))")
                .into_iter()
                .collect::<Vec<_>>(),
            ["x_total", "y_total"]
        );
    }
}
