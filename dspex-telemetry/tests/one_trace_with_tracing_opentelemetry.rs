//! A service that traces with `tracing` + `tracing-opentelemetry` (its own OpenTelemetry
//! pipeline, exporting to the same collector) and calls Python through the bridge: one trace.
//! The service's `tracing` span is the parent of the bridge call (and so of Python's spans),
//! and a `tracing` span opened inside a dspex span is that span's child. Every span arrives
//! at a real OTLP decoder; every parent is one of them.

#[path = "common/service_pipeline.rs"]
mod service_pipeline;
#[path = "../../dspex-telemetry-exporters/tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;

use dspex_telemetry::bridge::{Pool, PoolConfig};
use dspex_telemetry::core::{Dispatcher, with_span};
use dspex_telemetry::{Config, Telemetry};
use serde_json::{Value, json};
use support::OtlpReceiver;
use tracing::Instrument;

/// The service's provider with an exporter of its own, then sending through our stack's
/// processor (one queue, one connection). One test: both use the global dispatcher.
#[tokio::test(flavor = "current_thread")]
async fn the_services_tracing_spans_and_ours_are_one_trace() {
    the_services_spans_and_ours_are_one_trace(false).await;
    the_services_spans_and_ours_are_one_trace(true).await;
}

async fn the_services_spans_and_ours_are_one_trace(through_our_processor: bool) {
    let receiver = OtlpReceiver::start().await;
    let endpoint = format!("http://{}", receiver.addr);
    // Our stack, exporting our spans.
    let config = Config::from_toml(&format!(
        "[reporter]\nreporting_interval = 60000\n\
         [[reporter.backends]]\ntype = \"opentelemetry\"\nendpoint = \"{endpoint}\"\n"
    ))
    .expect("config");
    // Composed, not installed: the test starts the stack twice in one process, and the
    // spans are what it checks.
    let (telemetry, _recorder) = Telemetry::start_composed(&config, Dispatcher::global())
        .await
        .expect("the stack starts");
    // The service's own pipeline, exporting to the same collector, or through our processor.
    let processor = through_our_processor.then(|| {
        telemetry
            .span_processor()
            .expect("the opentelemetry backend runs")
    });
    let (provider, _subscriber) = service_pipeline::with_processor(processor, &endpoint);

    let pool = Pool::start(PoolConfig {
        size: 1,
        python_path: vec![
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../dspex-telemetry-bridge/tests/python"),
        ],
        dispatcher: Dispatcher::global().clone(),
        health_interval: None,
        ..PoolConfig::default()
    })
    .await
    .expect("a worker starts");

    async {
        let done = pool
            .call("bridge_fixtures", "nested", vec![json!(2)])
            .await
            .unwrap();
        assert_eq!(done, json!("done"));
        with_span("business.step", || {
            tracing::info_span!("db.query").in_scope(|| ());
        });
    }
    .instrument(tracing::info_span!("handle_request"))
    .await;

    pool.shutdown().await;
    telemetry.flush_spans().await;
    tokio::task::spawn_blocking(move || provider.force_flush().expect("the service's spans flush"))
        .await
        .unwrap();
    telemetry.flush_spans().await;
    let spans = receiver.spans().await;
    let stats = telemetry
        .span_stats()
        .expect("the opentelemetry backend runs");
    telemetry.shutdown().await;
    if through_our_processor {
        assert_eq!(
            stats.exported,
            spans.len() as u64,
            "every span, the service's too, left through our exporter: {stats:?}"
        );
    } else {
        assert!(stats.exported < spans.len() as u64, "{stats:?}");
    }
    assert_eq!(stats.dropped, 0, "{stats:?}");

    let traces: BTreeSet<&str> = spans
        .iter()
        .map(|s| s["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(traces.len(), 1, "one trace: {spans:#?}");
    let by_name = |name: &str| -> &Value {
        spans
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name}: {spans:#?}"))
    };
    let ids: BTreeSet<&str> = spans
        .iter()
        .map(|s| s["span_id"].as_str().unwrap())
        .collect();
    for span in &spans {
        let parent = span["parent_span_id"].as_str().unwrap();
        assert!(
            parent.is_empty() || ids.contains(parent),
            "{} names parent {parent}, which is not exported: {spans:#?}",
            span["name"]
        );
    }
    let request = by_name("handle_request");
    assert_eq!(
        request["parent_span_id"], "",
        "the service's span is the root"
    );
    let call = by_name("dspex.bridge.call");
    assert_eq!(call["parent_span_id"], request["span_id"]);
    let python = by_name("retrieve");
    assert_ne!(
        python["parent_span_id"], "",
        "Python's spans hang under the call"
    );
    let step = by_name("business.step");
    assert_eq!(step["parent_span_id"], request["span_id"]);
    assert_eq!(by_name("db.query")["parent_span_id"], step["span_id"]);
}
