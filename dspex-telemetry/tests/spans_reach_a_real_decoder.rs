//! The stack's OpenTelemetry backend against a real OTLP decoder: `flush_spans` sends the
//! queued spans at once (well before the export interval), and `span_stats` counts them.

#[path = "../../dspex-telemetry-exporters/tests/support/mod.rs"]
mod support;

use dspex_telemetry::core::{CorrelationId, Dispatcher, TraceContext, catalog, metadata};
use dspex_telemetry::{Config, Telemetry};
use support::OtlpReceiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_spans_sends_the_queued_spans_at_once() {
    let receiver = OtlpReceiver::start().await;
    // Exports every 60 s: only a flush sends within the test.
    let config = Config::from_toml(&format!(
        "[reporter]\nreporting_interval = 60000\n\
         [[reporter.backends]]\ntype = \"opentelemetry\"\nendpoint = \"http://{}\"\n\
         [[reporter.backends]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:0\"\n",
        receiver.addr
    ))
    .expect("config");
    let d = Dispatcher::new();
    let telemetry = Telemetry::start(&config, &d)
        .await
        .expect("the stack starts");
    assert_eq!(telemetry.span_stats().map(|s| s.exported), Some(0));

    let ctx = TraceContext::new_root_with_correlation(CorrelationId::parse("order-9").unwrap());
    ctx.in_scope(|| {
        for _ in 0..3 {
            d.span(
                &catalog::BRIDGE_CALL,
                metadata! { "module" => "dspy", "function" => "Predict" },
                || ((), metadata! { "success" => true }),
            );
        }
    });
    telemetry.flush_spans().await;

    let spans = receiver.spans().await;
    let calls: Vec<_> = spans
        .iter()
        .filter(|s| s["name"] == "dspex.bridge.call")
        .collect();
    assert_eq!(calls.len(), 3, "{spans:#?}");
    for call in calls {
        assert_eq!(call["attributes"]["dspex.correlation_id"], "order-9");
        assert_eq!(call["attributes"]["code.function"], "Predict");
        assert_eq!(call["trace_id"], ctx.trace_id().to_string());
    }
    let stats = telemetry.span_stats().expect("the backend runs");
    assert_eq!((stats.exported, stats.dropped), (3, 0), "{stats:?}");
    // The exporter's own counters, in /metrics.
    let addr = telemetry.prometheus_addr().expect("the endpoint runs");
    let (status, text) = support::http_get(addr, "/metrics", &[])
        .await
        .expect("scrape");
    assert_eq!(status, 200);
    let exposition = support::parse(&text);
    assert_eq!(
        exposition.get("dspex_telemetry_spans_exported_total", &[]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        exposition.get("dspex_telemetry_spans_dropped_total", &[]),
        Some(0.0)
    );
    telemetry.shutdown().await;
}
