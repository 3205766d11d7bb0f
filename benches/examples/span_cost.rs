use dspex_telemetry_core::{Dispatcher, catalog, context, metadata};
use dspex_telemetry_exporters::otlp::{OtlpConfig, OtlpTraces};
use std::time::Instant;
fn main() {
    let d = Dispatcher::new();
    let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    let traces = OtlpTraces::start_with_exporter(
        exporter.clone(),
        OtlpConfig {
            thread_buffer_bytes: std::env::var("RING")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(256 * 1024),
            ..OtlpConfig::default()
        },
        &d,
        "x",
    )
    .unwrap();
    let mode = std::env::args().nth(1).unwrap_or_default();
    if mode == "nosink" {
        d.detach("x").unwrap();
        d.attach(
            "h",
            catalog::BRIDGE_CALL.stop().clone(),
            |_: &dspex_telemetry_core::Event<'_>| {},
        )
        .unwrap();
    }
    let _t = context::start_trace();
    for round in 0..5 {
        let n = 100_000;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut total = std::time::Duration::ZERO;
        for _ in 0..n / 512 {
            let t = Instant::now();
            for _ in 0..512 {
                d.span(&catalog::BRIDGE_CALL, metadata! { "module" => "dspy", "function" => "Predict", "args" => "[\"question\"]" },
                || (std::hint::black_box(()), metadata! { "success" => true, "result_type" => "dict", "worker_id" => 1 }));
            }
            total += t.elapsed();
            rt.block_on(traces.flush());
        }
        println!(
            "round {round}: {:.1} ns/span",
            total.as_nanos() as f64 / (n / 512 * 512) as f64
        );
    }
    println!("{:?}", traces.stats());
}
