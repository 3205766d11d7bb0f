//! One cap on label sets per metric, and on label values' length, for every recorder behind
//! it: the window and a real Prometheus exporter see the same bounded series, from the
//! catalog's events and from a user's own `counter!` alike; an operation's label set is
//! admitted once for all its metrics, and its error counter is exported at zero from its first
//! call.

use dspex_telemetry_core::{Dispatcher, catalog, measurements, metadata};
use dspex_telemetry_metrics::{
    CardinalityLayer, MetricsHandler, RecorderConfig, WindowedRecorder, catalog as metric_catalog,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::layers::{FanoutBuilder, Layer};

/// The window and a Prometheus recorder behind one cap, with the Prometheus handle to render.
fn capped(
    cap: usize,
    value_bytes: usize,
) -> (
    dspex_telemetry_metrics::Capped<metrics_util::layers::Fanout>,
    WindowedRecorder,
    PrometheusHandle,
) {
    let window = WindowedRecorder::new(RecorderConfig {
        // The window's own cap is higher: what is capped here is the layer's doing.
        max_series_per_metric: 1_000_000,
        ..RecorderConfig::default()
    })
    .unwrap();
    let prometheus = PrometheusBuilder::new().build_recorder();
    let handle = prometheus.handle();
    let fanout = FanoutBuilder::default()
        .add_recorder(window.clone())
        .add_recorder(prometheus)
        .build();
    (
        CardinalityLayer::new(cap, value_bytes).layer(fanout),
        window,
        handle,
    )
}

/// The sample lines of `metric` in a Prometheus render.
fn lines<'a>(render: &'a str, metric: &str) -> Vec<&'a str> {
    render
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .collect()
}

#[test]
fn a_users_counter_with_a_hundred_thousand_label_values_stays_capped_everywhere() {
    let (capped, window, prometheus) = capped(1_000, 256);
    metrics::with_local_recorder(&capped, || {
        for i in 0..100_000 {
            metrics::counter!("user_requests_total", "user" => format!("user-{i}")).increment(1);
        }
    });
    let render = prometheus.render();
    let series = lines(&render, "user_requests_total");
    assert_eq!(
        series.len(),
        1_001,
        "1 000 label sets and the overflow series"
    );
    let overflow = series
        .iter()
        .find(|l| l.contains("overflow=\"true\""))
        .expect("an overflow series");
    assert!(overflow.ends_with(" 99000"), "{overflow}");
    assert_eq!(
        window
            .counter("user_requests_total", &[("overflow", "true")])
            .unwrap()
            .total,
        99_000,
        "nothing recorded is lost"
    );
    assert_eq!(window.series_count(), 1_001);
    let stats = capped.stats();
    assert_eq!(stats.series, 1_000);
    assert_eq!(stats.overflowed_label_sets, 99_000);
}

#[test]
fn long_label_values_are_cut_for_every_recorder() {
    let (capped, window, prometheus) = capped(1_000, 256);
    let long = "é".repeat(32 * 1024); // 64 KiB, two bytes a character
    metrics::with_local_recorder(&capped, || {
        for i in 0..12 {
            metrics::counter!("user_pages_total", "page" => format!("{i}{long}")).increment(1);
        }
    });
    let render = prometheus.render();
    let series = lines(&render, "user_pages_total");
    assert_eq!(series.len(), 12);
    assert!(render.len() < 12 * 400, "a {} byte scrape", render.len());
    for line in series {
        assert!(line.contains('…'), "{line}");
    }
    let snapshot = window.snapshot();
    let cut = snapshot
        .iter()
        .find(|s| s.name == "user_pages_total")
        .unwrap();
    assert!(cut.labels[0].1.len() <= 256);
    assert!(cut.labels[0].1.ends_with('…'));
    assert_eq!(capped.stats().truncated_values, 12);
}

#[test]
fn an_operations_label_set_is_admitted_once_for_its_stop_and_exception_metrics() {
    let (capped, window, prometheus) = capped(1_000_000, 256);
    let d = Dispatcher::new();
    let handler = metrics::with_local_recorder(&capped, || {
        let handler =
            MetricsHandler::attach(&d, "m", metric_catalog::dspex_metrics(), 500).unwrap();
        // Tools 0–999 succeed, then tools 999 down to 0 fail once each: the failures come
        // in another order, yet the same 500 tools have series of their own everywhere.
        for i in 0..1_000 {
            let tool = format!("tool-{i}");
            d.execute(
                catalog::TOOLS_EXECUTE.stop(),
                &measurements! { "duration" => 1_000_000 },
                &metadata! { "tool_name" => tool.as_str() },
            );
        }
        for i in (0..1_000).rev() {
            let tool = format!("tool-{i}");
            d.execute(
                catalog::TOOLS_EXECUTE.exception(),
                &measurements! { "duration" => 1_000_000 },
                &metadata! { "tool_name" => tool.as_str(), "kind" => "error" },
            );
        }
        handler
    });
    assert_eq!(
        handler.overflowed(),
        500,
        "each folded label set counted once"
    );
    let render = prometheus.render();
    let tools = |metric: &str| {
        let mut tools: Vec<String> = lines(&render, metric)
            .iter()
            .filter_map(|l| l.split("tool_name=\"").nth(1))
            .map(|rest| rest.split('"').next().unwrap().to_owned())
            .collect();
        tools.sort();
        tools
    };
    let counted = tools("dspex_tools_execute_count");
    assert_eq!(counted.len(), 500);
    assert_eq!(tools("dspex_tools_execute_errors"), counted);
    assert_eq!(tools("dspex_tools_execute_duration_count"), counted);
    for metric in [
        "dspex_tools_execute_count",
        "dspex_tools_execute_errors",
        "dspex_tools_execute_duration_count",
    ] {
        assert_eq!(
            lines(&render, metric)
                .iter()
                .filter(|l| l.contains("overflow=\"true\""))
                .count(),
            1,
            "{metric}"
        );
    }
    // Each admitted tool: one success and one failure.
    let op = window
        .operation("dspex_tools_execute", &[("tool_name", "tool-7")])
        .unwrap();
    assert_eq!((op.count, op.error_count), (2, 1));
}

#[test]
fn an_operations_error_counter_is_exported_at_zero_from_its_first_call() {
    let (capped, window, prometheus) = capped(1_000, 256);
    let d = Dispatcher::new();
    let _handler = metrics::with_local_recorder(&capped, || {
        let handler =
            MetricsHandler::attach(&d, "m", metric_catalog::dspex_metrics(), 1_000).unwrap();
        d.execute(
            catalog::BRIDGE_CALL.stop(),
            &measurements! { "duration" => 2_000_000 },
            &metadata! { "module" => "dspy", "function" => "Predict" },
        );
        handler
    });
    let render = prometheus.render();
    let errors = lines(&render, "dspex_bridge_call_method_errors");
    assert_eq!(
        errors,
        ["dspex_bridge_call_method_errors{method=\"dspy.Predict\"} 0"],
        "{render}"
    );
    let op = window
        .operation("dspex_bridge_call_method", &[("method", "dspy.Predict")])
        .unwrap();
    assert_eq!((op.count, op.error_count, op.error_rate), (1, 0, 0.0));
    assert!(
        window
            .counter(
                "dspex_bridge_call_method_errors",
                &[("method", "dspy.Predict")]
            )
            .is_some(),
        "the window has the error counter too"
    );
}
