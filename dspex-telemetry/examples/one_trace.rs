//! One trace from a service that traces with `tracing` + `tracing-opentelemetry`, through the
//! bridge, into Python.
//!
//! The service has its own OpenTelemetry pipeline (here the SDK's in-memory exporter, so the
//! example needs no collector; any `SpanExporter` does the same). With the `opentelemetry`
//! feature, the bridge call made inside the service's `tracing` span is that span's child,
//! Python's spans hang under the call, and a `tracing` span opened inside one of our spans is
//! its child. Our spans go to the same exporter (`OtlpTraces::start_with_exporter`). The
//! example prints the trace as a tree and fails if it is not one trace with every parent
//! present.
//!
//! ```text
//! cargo run -p dspex-telemetry --example one_trace --features opentelemetry
//! ```

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;

use dspex_telemetry::bridge::{Pool, PoolConfig};
use dspex_telemetry::core::{Dispatcher, with_span};
use dspex_telemetry::exporters::otlp::{OtlpConfig, OtlpTraces};
use opentelemetry::trace::{SpanId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    // The service's pipeline: tracing → tracing-opentelemetry → the SDK → an exporter.
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("service"))),
    )?;
    // Our spans, to the same exporter.
    let ours = OtlpTraces::start_with_exporter(
        exporter.clone(),
        OtlpConfig::default(),
        Dispatcher::global(),
        "one_trace",
    )?;
    let pool = Pool::start(PoolConfig {
        size: 1,
        python_path: vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/python")],
        dispatcher: Dispatcher::global().clone(),
        health_interval: None,
        ..PoolConfig::default()
    })
    .await?;

    let prediction = async {
        let prediction = pool
            .call(
                "quickstart_tools",
                "predict",
                vec![json!("why is the sky blue?")],
            )
            .await;
        with_span("business.store", || {
            tracing::info_span!("db.insert").in_scope(|| ());
        });
        prediction
    }
    .instrument(tracing::info_span!("handle_request"))
    .await?;
    println!("prediction: {prediction}");

    pool.shutdown().await;
    ours.flush().await;
    // (Shutting down the in-memory exporter empties it: read it first.)
    let spans = exporter.get_finished_spans()?;
    ours.shutdown().await;
    print_tree(&spans);

    let traces: HashSet<_> = spans.iter().map(|s| s.span_context.trace_id()).collect();
    let ids: HashSet<_> = spans.iter().map(|s| s.span_context.span_id()).collect();
    let orphans: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_span_id != SpanId::INVALID && !ids.contains(&s.parent_span_id))
        .map(|s| s.name.to_string())
        .collect();
    println!(
        "{} spans, {} trace(s), {} without their parent",
        spans.len(),
        traces.len(),
        orphans.len()
    );
    Ok(match (traces.len(), orphans.is_empty()) {
        (1, true) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

/// Prints each span under its parent.
fn print_tree(spans: &[SpanData]) {
    let mut children: HashMap<SpanId, Vec<&SpanData>> = HashMap::new();
    for span in spans {
        children.entry(span.parent_span_id).or_default().push(span);
    }
    fn walk(children: &HashMap<SpanId, Vec<&SpanData>>, parent: SpanId, depth: usize) {
        let mut these = children.get(&parent).cloned().unwrap_or_default();
        these.sort_by_key(|s| s.start_time);
        for span in these {
            let ms = span
                .end_time
                .duration_since(span.start_time)
                .unwrap_or_default()
                .as_secs_f64()
                * 1e3;
            println!(
                "{:indent$}{} ({:.2} ms)",
                "",
                span.name,
                ms,
                indent = depth * 2
            );
            walk(children, span.span_context.span_id(), depth + 1);
        }
    }
    walk(&children, SpanId::INVALID, 0);
}
