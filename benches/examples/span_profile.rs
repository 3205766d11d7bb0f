//! The caller's side of a bridge-call span through the OTLP span exporter, for a profiler:
//! `valgrind --tool=callgrind --toggle-collect='*run_spans*' target/release/examples/span_profile`
//! counts the instructions of `run_spans` alone (chunks of 500 spans, each followed by an
//! untimed flush, so that no thread buffer fills).

use dspex_telemetry_benches::{Discard, bridge_call_span, threads_cpu_ns};
use dspex_telemetry_core::{Dispatcher, TraceContext, catalog, metadata};
use dspex_telemetry_exporters::otlp::{OtlpConfig, OtlpTraces};

#[inline(never)]
fn run_spans(d: &Dispatcher, n: usize) {
    for _ in 0..n {
        bridge_call_span(d);
    }
}

#[inline(never)]
fn warm_up(d: &Dispatcher) {
    for _ in 0..500 {
        d.span(
            &catalog::BRIDGE_CALL,
            metadata! { "module" => "dspy" },
            || ((), metadata! {}),
        );
    }
}

/// CPU time of the collector thread (`dspex-otlp-spans`), in nanoseconds.
fn collector_cpu_ns() -> u64 {
    threads_cpu_ns()
        .get("dspex-otlp-span")
        .copied()
        .unwrap_or(0)
}

fn main() {
    let chunks: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let d = Dispatcher::new();
    // `span_profile CHUNKS http`: through opentelemetry-otlp over HTTP to a local sink, and the
    // collector thread's CPU time per span printed.
    let http = std::env::args().nth(2).is_some_and(|a| a == "http");
    let traces = if http {
        let (_, port) = dspex_telemetry_benches::sinks();
        let config = OtlpConfig {
            endpoint: Some(format!("http://127.0.0.1:{port}").into()),
            ..OtlpConfig::default()
        };
        let _inside = runtime.enter();
        OtlpTraces::start(config, &d, "otlp")
    } else {
        OtlpTraces::start_with_exporter(Discard, OtlpConfig::default(), &d, "otlp")
    }
    .expect("the exporter starts");
    let collector_before = collector_cpu_ns();
    TraceContext::new_root().in_scope(|| {
        // Untimed: the clock's calibration, the thread's buffer.
        warm_up(&d);
        runtime.block_on(traces.flush());
        for _ in 0..chunks {
            run_spans(&d, 500);
            runtime.block_on(traces.flush());
        }
    });
    let stats = traces.stats();
    println!(
        "collector thread: {:.2} µs per span",
        (collector_cpu_ns() - collector_before) as f64 / stats.exported as f64 / 1e3
    );
    runtime.block_on(traces.shutdown());
    assert_eq!(stats.exported, (chunks * 500 + 500) as u64, "{stats:?}");
    println!("{} spans exported", stats.exported);
}
