//! `memory_bench`: what series cost in memory, counted by a global allocator that tracks the
//! bytes live, and how long Prometheus takes to render many of them.
//!
//! Run: `cargo bench -p dspex-telemetry-benches --bench memory_bench`, then `cargo xtask
//! bench-report`. It writes `<target>/criterion/memory.json`:
//!
//! | figure | what it is |
//! |---|---|
//! | `window_series_bytes` | one sliding-window series after 100 000 samples (heap and struct) |
//! | `catalog_10000_series_bytes` | 10 000 bridge-call label sets through the metric catalog into the window and Prometheus (fanout), after one event each |
//! | `prometheus_10000_series_bytes` | the baseline: the same 10 000 label sets into `metrics-exporter-prometheus` alone, the same three series (`histogram!`, `counter!`, the error counter registered at 0) |
//! | `prometheus_render_10000_series_ms` | rendering the Prometheus text of the first case (median of 5) |
//! | `otlp_span_caller_allocations_per_span` | heap allocations on the caller's thread per bridge-call span exported through `OtlpTraces`, in steady state (10 000 spans after 1 000 to warm up) |

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use dspex_telemetry_core::{Dispatcher, catalog, measurements, metadata};
use dspex_telemetry_metrics::{
    MetricsHandler, RecorderConfig, WindowedRecorder, catalog as metric_catalog,
};
use metrics_exporter_prometheus::PrometheusBuilder;

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// Allocations made on this thread (no destructor, so readable from the allocator).
    static THREAD_ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn count_allocation() {
    let _ = THREAD_ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn thread_allocations() -> u64 {
    THREAD_ALLOCATIONS.with(|n| n.get())
}

// SAFETY: every call forwards to the system allocator with the same arguments; the counter
// only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        count_allocation();
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        count_allocation();
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const SERIES: usize = 10_000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // One window series, after many samples: what `memory_bytes` reports, and what the heap says.
    let window = WindowedRecorder::new(RecorderConfig::default()).expect("config");
    let d = Dispatcher::new();
    let handler = metrics::with_local_recorder(&window, || {
        MetricsHandler::attach(&d, "m", metric_catalog::dspex_metrics(), SERIES + 1)
            .expect("attach")
    });
    let base = live();
    let md = metadata! { "module" => "dspy", "function" => "Predict" };
    metrics::with_local_recorder(&window, || {
        for i in 0..100_000i64 {
            d.execute(
                catalog::BRIDGE_CALL.stop(),
                &measurements! { "duration" => 1_000_000 + i * 997 % 50_000_000 },
                &md,
            );
        }
    });
    // Duration histogram and call counter: the stop event's two series.
    let one_series = live() - base;
    handler.detach();
    drop(window);

    // 10 000 label sets through the catalog into the window and Prometheus. The label values
    // are the input, made before counting.
    let names: Vec<String> = (0..SERIES).map(|i| format!("function_{i}")).collect();
    let prometheus = PrometheusBuilder::new()
        .set_buckets(metric_catalog::DURATION_BUCKETS_MS)
        .expect("buckets")
        .build_recorder();
    let handle = prometheus.handle();
    let start_live = live();
    let window = WindowedRecorder::new(RecorderConfig::default()).expect("config");
    let fanout = metrics_util::layers::FanoutBuilder::default()
        .add_recorder(window.clone())
        .add_recorder(prometheus)
        .build();
    let d = Dispatcher::new();
    let handler = metrics::with_local_recorder(&fanout, || {
        MetricsHandler::attach(&d, "m", metric_catalog::dspex_metrics(), SERIES + 1)
            .expect("attach")
    });
    metrics::with_local_recorder(&fanout, || {
        for name in &names {
            d.execute(
                catalog::BRIDGE_CALL.stop(),
                &measurements! { "duration" => 2_500_000 },
                &metadata! { "module" => "app", "function" => name.as_str() },
            );
        }
    });
    handle.run_upkeep();
    let catalog_bytes = live() - start_live;
    let mut renders: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let text = handle.render();
            assert!(text.len() > SERIES * 100, "every series is rendered");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    renders.sort_by(f64::total_cmp);
    handler.detach();

    // The baseline: the same label sets with the macros into Prometheus alone.
    let start_live = live();
    let baseline = PrometheusBuilder::new()
        .set_buckets(metric_catalog::DURATION_BUCKETS_MS)
        .expect("buckets")
        .build_recorder();
    let baseline_handle = baseline.handle();
    metrics::with_local_recorder(&baseline, || {
        for name in &names {
            let method = format!("app.{name}");
            metrics::histogram!("dspex_bridge_call_method_duration", "method" => method.clone())
                .record(2.5);
            metrics::counter!("dspex_bridge_call_method_count", "method" => method.clone())
                .increment(1);
            // The catalog exports a method's error counter from its first call (at 0).
            metrics::counter!("dspex_bridge_call_method_errors", "method" => method).absolute(0);
        }
    });
    baseline_handle.run_upkeep();
    let baseline_bytes = live() - start_live;

    let span_allocations = otlp_span_caller_allocations();
    assert_eq!(
        span_allocations, 0.0,
        "a span costs the caller's thread no allocation in steady state"
    );

    let json = serde_json::json!({
        "otlp_span_caller_allocations_per_span": span_allocations,
        "window_series_bytes": window_series_bytes(),
        "stop_event_series_heap_bytes": one_series,
        "catalog_10000_series_bytes": catalog_bytes,
        "prometheus_10000_series_bytes": baseline_bytes,
        "prometheus_render_10000_series_ms": renders[renders.len() / 2],
    });
    println!("{}", serde_json::to_string_pretty(&json).expect("json"));
    // `cargo bench -- --test` (CI) checks that the bench runs, and keeps the last real results.
    if !std::env::args().any(|a| a == "--test") {
        dspex_telemetry_benches::write_result("memory.json", &json);
    }
    drop(window);
}

/// Allocations on this thread per bridge-call span (six attributes, in a trace) exported
/// through `OtlpTraces` to the SDK's in-memory exporter, after a warm-up.
fn otlp_span_caller_allocations() -> f64 {
    use dspex_telemetry_core::TraceContext;
    use dspex_telemetry_exporters::otlp::{OtlpConfig, OtlpTraces};
    let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    let d = Dispatcher::new();
    let traces = OtlpTraces::start_with_exporter(
        exporter.clone(),
        OtlpConfig {
            thread_buffer_bytes: 16 * 1024 * 1024,
            max_queue: 1 << 20,
            ..OtlpConfig::default()
        },
        &d,
        "otlp",
    )
    .expect("otlp");
    let span =
        || {
            d.span(
            &catalog::BRIDGE_CALL,
            metadata! { "module" => "dspy", "function" => "Predict", "args" => "[\"question\"]" },
            || ((), metadata! { "success" => true, "result_type" => "dict", "worker_id" => 1 }),
        )
        };
    let _trace = TraceContext::new_root().attach();
    for _ in 0..1_000 {
        span();
    }
    let before = thread_allocations();
    const SPANS: u64 = 10_000;
    for _ in 0..SPANS {
        span();
    }
    let per_span = (thread_allocations() - before) as f64 / SPANS as f64;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(traces.flush());
    let stats = traces.stats();
    assert_eq!(stats.exported, 11_000, "every span was exported: {stats:?}");
    rt.block_on(traces.shutdown());
    per_span
}

/// One series' `memory_bytes` after 100 000 samples.
fn window_series_bytes() -> usize {
    use dspex_telemetry_metrics::{ManualClock, SeriesWindow, WindowConfig, WindowShape};
    use std::sync::Arc;
    let shape = Arc::new(WindowShape::new(WindowConfig::default()).expect("config"));
    let window = SeriesWindow::new(shape, Arc::new(ManualClock::new(0)));
    for i in 0..100_000u32 {
        window.record(f64::from(i % 5_000) + 0.5);
    }
    window.memory_bytes()
}
