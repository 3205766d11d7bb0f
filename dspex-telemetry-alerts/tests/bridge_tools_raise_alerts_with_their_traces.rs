//! End to end with the real bridge: a Python tool made slow raises a performance alert, and one
//! made to fail an error spike; each names the tool and carries the trace id of one of the slow
//! or failed calls.

use std::collections::HashSet;

use dspex_telemetry_alerts::thresholds::Thresholds;
use dspex_telemetry_alerts::{AlertEngine, AlertType, Exemplars, Suppression};
use dspex_telemetry_bridge::{Pool, PoolConfig, ToolCall};
use dspex_telemetry_core::{Dispatcher, TraceContext, WithTraceContext};
use dspex_telemetry_metrics::{
    MetricsHandler, RecorderConfig, WindowedRecorder, catalog as metric_catalog,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_failing_tools_raise_alerts_that_lead_to_their_traces() {
    // The pool's events run on the runtime's threads: the window is the global recorder.
    let window = WindowedRecorder::new(RecorderConfig::default()).unwrap();
    metrics::set_global_recorder(window.clone()).expect("the only recorder of this test binary");
    let d = Dispatcher::new();
    let _metrics =
        MetricsHandler::attach(&d, "metrics", metric_catalog::dspex_metrics(), 100).unwrap();
    let exemplars = Exemplars::attach(&d, "exemplars", 3, 60_000).unwrap();
    let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../dspex-telemetry-bridge/tests/python");
    let pool = Pool::start(PoolConfig {
        python_path: vec![fixtures],
        preload: vec!["bridge_tools".into()],
        dispatcher: d.clone(),
        health_interval: None,
        ..PoolConfig::default()
    })
    .await
    .expect("python3 must be installed");

    let mut slow_traces = HashSet::new();
    let mut failed_traces = HashSet::new();
    for _ in 0..6 {
        let root = TraceContext::new_root();
        let out = pool
            .execute_tool("slow", vec![json!(0.15)], ToolCall::default())
            .with_trace_context(root.clone())
            .await
            .unwrap();
        assert_eq!(out, json!("late"));
        slow_traces.insert(root.trace_id().to_string());
        let root = TraceContext::new_root();
        // A string is no number of seconds: the tool raises.
        let failed = pool
            .execute_tool("slow", vec![json!("soon")], ToolCall::default())
            .with_trace_context(root.clone())
            .await;
        assert!(failed.is_err());
        failed_traces.insert(root.trace_id().to_string());
        // A fast, healthy tool alongside.
        pool.execute_tool("web_search", vec![json!("q")], ToolCall::default())
            .await
            .unwrap();
    }
    pool.shutdown().await;

    let mut engine = AlertEngine::new(
        Thresholds {
            tool_execution_p99_ms: Some(100.0),
            error_rate_percent: Some(5.0),
            min_samples: 5,
            ..Thresholds::none()
        }
        .rules(),
        Suppression {
            min_interval_ms: 0,
            occurrence_threshold: 1,
        },
    )
    .with_exemplars(exemplars);
    let now_ms = dspex_telemetry_core::system_time_ns() as u64 / 1_000_000;
    let notifications = engine.evaluate(&window, now_ms + 10);
    let on_slow: Vec<_> = notifications
        .iter()
        .map(|n| &n.alert)
        .filter(|a| a.labels == vec![("tool_name".to_owned(), "slow".to_owned())])
        .collect();
    assert!(
        notifications.iter().all(|n| n.alert.labels[0].1 == "slow"),
        "only the slow tool alerts: {notifications:#?}"
    );

    let performance = on_slow
        .iter()
        .find(|a| a.alert_type == AlertType::PerformanceDegradation)
        .unwrap_or_else(|| panic!("no performance alert in {notifications:#?}"));
    assert!(performance.value >= 150.0, "p99 {}", performance.value);
    assert!(performance.message.contains("tool_name=\"slow\""));
    let first = &performance.exemplars[0];
    assert!(
        slow_traces.contains(&first.trace_id),
        "the slowest example {first:?} is one of the slow calls"
    );
    assert!(first.duration_ms >= 150.0 && !first.failed);

    let spike = on_slow
        .iter()
        .find(|a| a.alert_type == AlertType::ErrorSpike)
        .unwrap_or_else(|| panic!("no error spike in {notifications:#?}"));
    assert_eq!(spike.window.error_count, 6);
    assert!(!spike.exemplars.is_empty());
    for e in &spike.exemplars {
        assert!(
            e.failed && failed_traces.contains(&e.trace_id),
            "{e:?} is a failed call"
        );
    }
}
