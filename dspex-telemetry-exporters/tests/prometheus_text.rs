//! The Prometheus text for a fixed set of recorded values: the spec's names, millisecond
//! buckets, HELP and TYPE lines, escaped label values; checked by our own reader and pinned
//! by a snapshot.

mod support;

use dspex_telemetry_core::{Dispatcher, catalog, measurements, metadata};
use dspex_telemetry_exporters::prometheus::prometheus_recorder;
use dspex_telemetry_metrics::{MetricsHandler, catalog as metric_catalog};

/// Three bridge calls (2.5, 12 and 480 ms), one failed call, a tool run, a session, and a
/// user's own counter whose label value holds a quote, a backslash and a newline.
fn fixed_text() -> String {
    let recorder = prometheus_recorder(&metric_catalog::dspex_metrics()).unwrap();
    let handle = recorder.handle();
    let d = Dispatcher::new();
    metrics::with_local_recorder(&recorder, || {
        let _m = MetricsHandler::attach(&d, "m", metric_catalog::dspex_metrics(), 100).unwrap();
        let predict = metadata! { "module" => "dspy", "function" => "Predict", "args" => "[1]", "session_id" => "s-9" };
        for ms in [2.5, 12.0, 480.0] {
            let ns = (ms * 1e6) as i64;
            d.execute(
                catalog::BRIDGE_CALL.stop(),
                &measurements! { "duration" => ns },
                &predict,
            );
        }
        d.execute(
            catalog::BRIDGE_CALL.exception(),
            &measurements! { "duration" => 30_000_000 },
            &predict.clone().with("kind", "error"),
        );
        d.execute(
            catalog::TOOLS_EXECUTE.stop(),
            &measurements! { "duration" => 7_000_000 },
            &metadata! { "tool_name" => "web_search" },
        );
        d.execute(
            &catalog::SESSION_CREATED,
            &measurements! {},
            &metadata! { "session_id" => "s-9" },
        );
        metrics::describe_counter!("app_requests_total", "Requests served, by path.");
        metrics::counter!("app_requests_total", "path" => "a\"b\\c\nd").increment(4);
    });
    handle.render()
}

#[test]
fn the_text_is_well_formed_with_the_specs_names_and_values() {
    let text = fixed_text();
    let exposition = support::parse(&text);
    support::check_well_formed(&exposition);
    let method = [("method", "dspy.Predict")];
    assert_eq!(
        exposition.get("dspex_bridge_call_method_count", &method),
        Some(4.0)
    );
    assert_eq!(
        exposition.get("dspex_bridge_call_method_errors", &method),
        Some(1.0)
    );
    assert_eq!(
        exposition.types["dspex_bridge_call_method_duration"],
        "histogram"
    );
    assert_eq!(
        exposition.get("dspex_bridge_call_method_duration_sum", &method),
        Some(2.5 + 12.0 + 480.0 + 30.0)
    );
    let bucket = |le: &str| {
        exposition.get(
            "dspex_bridge_call_method_duration_bucket",
            &[("method", "dspy.Predict"), ("le", le)],
        )
    };
    assert_eq!(bucket("+Inf"), Some(4.0));
    let first_le = format!("{}", metric_catalog::DURATION_BUCKETS_MS[0]);
    assert!(
        bucket(&first_le).is_some(),
        "the catalog's first bucket {first_le}"
    );
    assert_eq!(
        exposition.get("dspex_tools_execute_count", &[("tool_name", "web_search")]),
        Some(1.0)
    );
    assert_eq!(
        exposition.get("dspex_session_created_total", &[]),
        Some(1.0)
    );
    // The escaped label value reads back as it was recorded.
    assert_eq!(
        exposition.get("app_requests_total", &[("path", "a\"b\\c\nd")]),
        Some(4.0)
    );
    assert!(exposition.helps["dspex_bridge_call_method_duration"].contains("(milliseconds)"));
    for secret in ["args", "session_id", "s-9", "[1]"] {
        assert!(
            exposition
                .samples
                .iter()
                .all(|s| !s.labels.contains_key(secret) && !s.labels.values().any(|v| v == secret)),
            "{secret} became a label"
        );
    }
}

#[test]
fn the_text_for_fixed_values_is_pinned() {
    // Families come out in the recorder's hash order: sort them, keeping each one whole.
    let text = fixed_text();
    let mut families: Vec<&str> = text
        .split("\n\n")
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect();
    families.sort_by_key(|f| f.lines().find(|l| l.starts_with("# TYPE")).unwrap_or(f));
    insta::assert_snapshot!(families.join("\n\n"));
}
