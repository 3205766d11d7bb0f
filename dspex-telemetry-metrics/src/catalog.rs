//! The DSPex metric catalog: every metric this stack exports, defined once. The exporters,
//! the dashboard and the alert rules are built from it.
//!
//! Durations are exported in **milliseconds**, converted from the events' nanoseconds here
//! and nowhere else. Labels come only from the tags below: `args`, `session_id`,
//! correlation and trace ids never become labels.

use dspex_telemetry_core::catalog as events;

use crate::definition::{MetricDefinition, TagSource, Unit};

/// Bucket boundaries for operation durations, in milliseconds.
pub const DURATION_BUCKETS_MS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0,
    30_000.0, 60_000.0,
];

/// Bucket boundaries for session lifetimes, in milliseconds (1 s to 4 h).
pub const LIFETIME_BUCKETS_MS: &[f64] = &[
    1_000.0,
    10_000.0,
    60_000.0,
    300_000.0,
    900_000.0,
    1_800_000.0,
    3_600_000.0,
    7_200_000.0,
    14_400_000.0,
];

/// Bucket boundaries for time spent queued, in milliseconds.
pub const QUEUE_TIME_BUCKETS_MS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1_000.0, 5_000.0, 10_000.0, 30_000.0, 60_000.0,
];

/// Bucket boundaries for language-model call durations, in milliseconds (10 ms to 5 min).
pub const LM_DURATION_BUCKETS_MS: &[f64] = &[
    10.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0, 30_000.0, 60_000.0,
    120_000.0, 300_000.0,
];

/// The `method` label of bridge calls: `module.function`.
pub const METHOD: TagSource = TagSource::Join(&["module", "function"], ".");

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// Duration, count and errors of one span, with the same labels so the window can join them
/// (`WindowedRecorder::operation(base, labels)`).
fn operation(
    base: &str,
    span: &dspex_telemetry_core::SpanPrefix,
    what: &str,
    tag: (&'static str, TagSource),
) -> [MetricDefinition; 3] {
    let ends = || [span.stop().clone(), span.exception().clone()];
    [
        MetricDefinition::distribution(&format!("{base}_duration"), ends(), DURATION_BUCKETS_MS)
            .measurement("duration")
            .unit(Unit::Nanosecond, Unit::Millisecond)
            .tag(tag.0, tag.1.clone())
            .description(&format!("Duration of {what}, successful or not")),
        MetricDefinition::counter(&format!("{base}_count"), ends())
            .tag(tag.0, tag.1.clone())
            .description(&format!(
                "{} completed, successful or not",
                capitalized(what)
            ))
            .unit(Unit::Count, Unit::Count),
        MetricDefinition::counter(&format!("{base}_errors"), [span.exception().clone()])
            .tag(tag.0, tag.1)
            .description(&format!(
                "{} that failed: errors, panics, timeouts and cancellations",
                capitalized(what)
            )),
    ]
}

/// Every DSPex metric.
pub fn dspex_metrics() -> Vec<MetricDefinition> {
    let mut all = Vec::new();
    all.extend(operation(
        "dspex_bridge_call_method",
        &events::BRIDGE_CALL,
        "bridge calls",
        ("method", METHOD),
    ));
    all.extend(operation(
        "dspex_tools_execute",
        &events::TOOLS_EXECUTE,
        "tool executions",
        ("tool_name", TagSource::Metadata("tool_name")),
    ));
    all.extend(operation(
        "dspex_contract_validate",
        &events::CONTRACT_VALIDATE,
        "contract validations",
        ("signature", TagSource::Metadata("signature")),
    ));
    all.extend(operation(
        "dspex_types_cast",
        &events::TYPES_CAST,
        "type casts",
        ("to_type", TagSource::Metadata("to_type")),
    ));
    all.extend([
        MetricDefinition::counter("dspex_session_created_total", [events::SESSION_CREATED])
            .description("Sessions created"),
        MetricDefinition::counter("dspex_session_expired_total", [events::SESSION_EXPIRED])
            .tags(&["reason"])
            .description("Sessions expired or closed"),
        MetricDefinition::distribution(
            "dspex_session_lifetime",
            [events::SESSION_EXPIRED],
            LIFETIME_BUCKETS_MS,
        )
        .measurement("lifetime_ms")
        .unit(Unit::Millisecond, Unit::Millisecond)
        .description("How long sessions lived"),
        MetricDefinition::counter(
            "dspex_session_variable_operations_total",
            [events::SESSION_VARIABLE_SET, events::SESSION_VARIABLE_GET],
        )
        .tag("operation", TagSource::Phase)
        .description("Session variable reads and writes"),
        MetricDefinition::distribution(
            "dspex_pool_queue_time",
            [events::POOL_REQUEST_DISPATCHED],
            QUEUE_TIME_BUCKETS_MS,
        )
        .measurement("queue_time")
        .unit(Unit::Nanosecond, Unit::Millisecond)
        .tags(&["pool"])
        .description("Time requests waited in the worker pool's queue"),
        MetricDefinition::last_value("dspex_pool_queue_depth", [events::POOL_HEALTH])
            .measurement("queue_depth")
            .tags(&["pool"])
            .description("Requests waiting in the worker pool's queue"),
        MetricDefinition::last_value("dspex_pool_workers", [events::POOL_HEALTH])
            .measurement("workers_idle")
            .tags(&["pool"])
            .tag("state", TagSource::Constant("idle"))
            .description("Python workers by state"),
        MetricDefinition::last_value("dspex_pool_workers", [events::POOL_HEALTH])
            .measurement("workers_busy")
            .tags(&["pool"])
            .tag("state", TagSource::Constant("busy"))
            .description("Python workers by state"),
        MetricDefinition::last_value("dspex_pool_workers", [events::POOL_HEALTH])
            .measurement("workers_starting")
            .tags(&["pool"])
            .tag("state", TagSource::Constant("starting"))
            .description("Python workers by state"),
        MetricDefinition::last_value("dspex_pool_worker_memory_bytes", [events::POOL_WORKER_USAGE])
            .measurement("memory_bytes")
            .unit(Unit::Byte, Unit::Byte)
            .tags(&["pool", "worker_id"])
            .description("Resident memory of each Python worker, read from the OS"),
        MetricDefinition::last_value("dspex_pool_worker_cpu_seconds", [events::POOL_WORKER_USAGE])
            .measurement("cpu_seconds")
            .unit(Unit::Second, Unit::Second)
            .tags(&["pool", "worker_id"])
            .description(
                "CPU time (user and system) each Python worker spent since it started; rate() gives its use",
            ),
        MetricDefinition::last_value("dspex_process_memory_bytes", [events::POOL_HEALTH])
            .measurement("process_memory_bytes")
            .unit(Unit::Byte, Unit::Byte)
            .description("Resident memory of this service's own process, read from the OS"),
        MetricDefinition::last_value("dspex_process_cpu_seconds", [events::POOL_HEALTH])
            .measurement("process_cpu_seconds")
            .unit(Unit::Second, Unit::Second)
            .description("CPU time (user and system) this service's own process spent"),
        MetricDefinition::counter(
            "dspex_pool_worker_restarts_total",
            [events::POOL_WORKER_RESTARTED],
        )
        .tags(&["pool", "reason"])
        .description("Python workers replaced after they exited"),
        MetricDefinition::counter(
            "dspex_pool_worker_exits_total",
            [events::POOL_WORKER_EXITED],
        )
        .tags(&["pool", "reason"])
        .description("Python worker exits"),
        MetricDefinition::counter("dspex_pool_exhausted_total", [events::POOL_EXHAUSTED])
            .tags(&["pool"])
            .description("Requests refused because the pool's queue was full"),
        // Language-model calls (DSPy's, seen in the workers), by model: the same three names
        // as an operation's, so that the window and the alerts join them.
        MetricDefinition::distribution(
            "dspex_lm_call_duration",
            [events::LM_CALL],
            LM_DURATION_BUCKETS_MS,
        )
        .measurement("duration")
        .unit(Unit::Nanosecond, Unit::Millisecond)
        .tags(&["model"])
        .description("Duration of language-model calls, successful or not"),
        MetricDefinition::counter("dspex_lm_call_count", [events::LM_CALL])
            .tags(&["model"])
            .description("Language-model calls completed, successful or not")
            .unit(Unit::Count, Unit::Count),
        MetricDefinition::counter("dspex_lm_call_errors", [events::LM_CALL])
            .tags(&["model"])
            .keep(|e| e.metadata().get("status").and_then(|s| s.as_str()) == Some("error"))
            .description("Language-model calls that failed"),
        MetricDefinition::counter("dspex_lm_tokens_total", [events::LM_CALL])
            .measurement("prompt_tokens")
            .tags(&["model"])
            .tag("kind", TagSource::Constant("prompt"))
            .description("Tokens of language-model calls, by model and kind (prompt, completion)"),
        MetricDefinition::counter("dspex_lm_tokens_total", [events::LM_CALL])
            .measurement("completion_tokens")
            .tags(&["model"])
            .tag("kind", TagSource::Constant("completion"))
            .description("Tokens of language-model calls, by model and kind (prompt, completion)"),
        MetricDefinition::counter(
            "dspex_telemetry_handler_failures_total",
            [events::HANDLER_FAILURE],
        )
        .tags(&["handler_id"])
        .description("Telemetry handlers that panicked and were detached"),
        MetricDefinition::counter("dspex_alerts_fired_total", [events::ALERT_FIRED])
            .tags(&["alert_type", "severity"])
            .description("Alerts that started firing"),
        MetricDefinition::counter("dspex_alerts_resolved_total", [events::ALERT_RESOLVED])
            .tags(&["alert_type", "severity"])
            .description("Alerts that resolved"),
        MetricDefinition::last_value(
            "dspex_alerts_active",
            [events::ALERT_FIRED, events::ALERT_RESOLVED],
        )
        .measurement("active")
        .description("Alerts firing, as of the last alert fired or resolved"),
    ]);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_names_are_there_and_every_definition_is_valid() {
        let all = dspex_metrics();
        for def in &all {
            def.validate().unwrap();
        }
        let names: Vec<&str> = all.iter().map(|d| d.name()).collect();
        for spec in [
            "dspex_bridge_call_method_duration",
            "dspex_bridge_call_method_count",
            "dspex_bridge_call_method_errors",
            "dspex_tools_execute_duration",
            "dspex_tools_execute_count",
            "dspex_session_created_total",
            "dspex_session_lifetime",
            "dspex_session_variable_operations_total",
        ] {
            assert!(names.contains(&spec), "{spec} missing");
        }
    }
}

/// The catalog as a Markdown table (name, type, labels, unit, events), for the docs; a test
/// keeps `docs/metrics.md` equal to it.
pub fn markdown_table() -> String {
    use crate::definition::MetricKind;
    let mut rows: Vec<(String, String, String, String, String)> = Vec::new();
    for def in dspex_metrics() {
        let kind = match def.kind() {
            MetricKind::Counter => "counter",
            MetricKind::Sum => "sum",
            MetricKind::LastValue => "last value",
            MetricKind::Summary => "summary",
            MetricKind::Distribution { .. } => "histogram",
        };
        let labels = def
            .tag_list()
            .iter()
            .map(|t| format!("`{}`", t.name))
            .collect::<Vec<_>>()
            .join(", ");
        let events = def
            .events()
            .iter()
            .map(|e| format!("`{e}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let row = (
            format!("`{}`", def.name()),
            kind.to_owned(),
            labels,
            def.reported_unit().name().to_owned(),
            events,
        );
        // Definitions sharing a name (one per label value source) make one row.
        match rows.iter_mut().find(|r| r.0 == row.0) {
            Some(existing) if !existing.4.contains(&row.4) => {
                existing.4 = format!("{}, {}", existing.4, row.4)
            }
            Some(_) => {}
            None => rows.push(row),
        }
    }
    let mut out =
        String::from("| metric | type | labels | unit | events |\n|---|---|---|---|---|\n");
    for (name, kind, labels, unit, events) in rows {
        out.push_str(&format!(
            "| {name} | {kind} | {labels} | {unit} | {events} |\n"
        ));
    }
    out
}

#[cfg(test)]
mod docs_tests {
    #[test]
    fn the_docs_table_matches_the_catalog() {
        let docs = include_str!("../../docs/metrics.md");
        let table = super::markdown_table();
        assert!(
            docs.contains(&table),
            "docs/metrics.md is out of date; its catalog table must be:\n{table}"
        );
    }
}
