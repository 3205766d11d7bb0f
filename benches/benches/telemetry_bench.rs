//! `telemetry_bench`: the cost of the core on the caller's thread, with baselines measured in
//! the same run.
//!
//! Run: `cargo bench -p dspex-telemetry-benches --bench telemetry_bench`, then
//! `cargo xtask bench-report` to regenerate `docs/benchmarks.md` from criterion's output.
//!
//! | bench | what it measures |
//! |---|---|
//! | `baseline/atomic_add` | `AtomicU64::fetch_add(1, Relaxed)`: the floor |
//! | `baseline/instant_now`, `baseline/system_time_now` | one read of each clock (a span reads three) |
//! | `baseline/tracing_span_no_subscriber` | `tracing::info_span!(..).in_scope(..)` with no subscriber |
//! | `baseline/metrics_counter_no_recorder` | `metrics::counter!(..).increment(1)` with no recorder |
//! | `execute/no_handler` | `execute` on a dispatcher with nothing attached |
//! | `execute/no_handler_for_event` | `execute` of an event nobody listens to, while others have handlers |
//! | `execute/one_noop_handler`, `execute/four_noop_handlers` | `execute` with handlers that do nothing |
//! | `span/no_handler` | `span` with no handler and no active trace |
//! | `span/one_noop_handler` | `span` with one handler on `stop` (clock reads, trace context, two events) |
//! | `context/scope_enter_exit` | `TraceContext::in_scope` around nothing |
//! | `context/current` | `context::current()` inside a scope |
//! | `traceparent/parse`, `traceparent/format` | W3C header decode and encode |
//! | `window/record` | one sample into a series' sliding window (clock read, bucket, atomics) |
//! | `window/metrics_util_summary_add` | the same sample into `metrics-util`'s `Summary` (DDSketch) |
//! | `window/hdrhistogram_record` | the same sample into an `hdrhistogram` (3 significant digits) |
//! | `window/prometheus_bucket_push` | the same sample into the Prometheus exporter's histogram storage (`metrics-util`'s `AtomicBucket`, drained every 65 536 samples outside the timing) |
//! | `event_path/dspex_event_to_window_and_prometheus` | a bridge-call `stop` event through the metrics handler into the window and the Prometheus recorder (fanout) |
//! | `event_path/histogram_macro_to_prometheus` | `metrics::histogram!(name, "method" => …).record(ms)` into the Prometheus recorder |
//! | `event_path/histogram_and_counter_macros_to_prometheus` | the same work the catalog does for a `stop` event (duration histogram and call counter) with the macros, into Prometheus |
//! | `exporters/backends_up` | a bridge-call span through the Reporter (window, Prometheus, StatsD, OTLP metrics recorders; the OTLP span handler) while StatsD, the push gateway and OTLP send every 10 ms to live sinks |
//! | `exporters/backends_down` | the same with every server down (closed ports): the caller's cost must not grow |
//! | `otlp_span/dspex_bridge_call_span` | a bridge-call span (six attributes) through the OTLP span handler, exported over OTLP/HTTP to a local sink |
//! | `otlp_span/tracing_opentelemetry_span` | the same span with `tracing` + `tracing-opentelemetry` 0.34 + the OpenTelemetry SDK's batch processor and OTLP/HTTP exporter 0.33, to the same kind of sink |
//! | `otlp_span/fastrace_span` | the same span with `fastrace` 0.7 (a local span under a root per 512 spans) and its OpenTelemetry reporter 0.19 with the same OTLP/HTTP exporter |
//! | `whole_stack/dspex_{1,2}` | the bridge-call span through the stack `Telemetry::start` runs (the catalog into the window, Prometheus, StatsD and OTLP metrics; alerts evaluating every second; the span over OTLP/HTTP), on 1 and 2 threads at once; time per call per thread |
//! | `whole_stack/metrics_tracing_opentelemetry_{1,2}` | the `metrics` macros (duration histogram, call counter) into the Prometheus recorder, and the span with `tracing` + `tracing-opentelemetry` as above |
//! | `whole_stack/metrics_fastrace_{1,2}` | the same macros, and the span with `fastrace` as above |
//!
//! The three `event_path` benches time their own batches interleaved with untimed batches of
//! the other two, in a rotating order, so drift in the machine's speed falls on all three alike; the
//! `otlp_span` and `whole_stack` contenders likewise run in turn within each sample.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use dspex_telemetry_core::{
    Dispatcher, Event, EventName, Measurements, Metadata, SpanPrefix, TraceContext, TraceParent,
    context,
};

const EVENT: EventName = EventName::from_static(&["dspex", "bridge", "call", "stop"]);
const OTHER: EventName = EventName::from_static(&["dspex", "tools", "execute", "stop"]);
const SPAN: SpanPrefix = SpanPrefix::from_static(&["dspex", "bridge", "call"]);
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn noop(_: &Event<'_>) {}

fn baselines(c: &mut Criterion) {
    let mut g = c.benchmark_group("baseline");
    let counter = AtomicU64::new(0);
    g.bench_function("atomic_add", |b| {
        b.iter(|| black_box(&counter).fetch_add(1, Ordering::Relaxed))
    });
    g.bench_function("instant_now", |b| b.iter(std::time::Instant::now));
    g.bench_function("system_time_now", |b| b.iter(std::time::SystemTime::now));
    g.bench_function("tracing_span_no_subscriber", |b| {
        b.iter(|| tracing::info_span!("bridge_call", module = "dspy").in_scope(|| black_box(1)))
    });
    g.bench_function("metrics_counter_no_recorder", |b| {
        b.iter(|| {
            metrics::counter!("dspex_bridge_call_method_count", "method" => "predict").increment(1)
        })
    });
    g.finish();
}

fn execute(c: &mut Criterion) {
    let mut g = c.benchmark_group("execute");
    let measurements = Measurements::new()
        .with("duration", 1_200_000)
        .with("monotonic_time", 7);
    let metadata = Metadata::new()
        .with("module", "dspy")
        .with("function", "predict");

    let empty = Dispatcher::new();
    g.bench_function("no_handler", |b| {
        b.iter(|| {
            empty.execute(
                black_box(&EVENT),
                black_box(&measurements),
                black_box(&metadata),
            )
        })
    });

    let elsewhere = Dispatcher::new();
    elsewhere.attach("other", OTHER, noop).expect("attach");
    g.bench_function("no_handler_for_event", |b| {
        b.iter(|| {
            elsewhere.execute(
                black_box(&EVENT),
                black_box(&measurements),
                black_box(&metadata),
            )
        })
    });

    let one = Dispatcher::new();
    one.attach("noop", EVENT, noop).expect("attach");
    g.bench_function("one_noop_handler", |b| {
        b.iter(|| {
            one.execute(
                black_box(&EVENT),
                black_box(&measurements),
                black_box(&metadata),
            )
        })
    });

    let four = Dispatcher::new();
    for i in 0..4 {
        four.attach(format!("noop-{i}"), EVENT, noop)
            .expect("attach");
    }
    g.bench_function("four_noop_handlers", |b| {
        b.iter(|| {
            four.execute(
                black_box(&EVENT),
                black_box(&measurements),
                black_box(&metadata),
            )
        })
    });
    g.finish();
}

fn span(c: &mut Criterion) {
    let mut g = c.benchmark_group("span");
    let empty = Dispatcher::new();
    g.bench_function("no_handler", |b| {
        b.iter(|| empty.span(&SPAN, Metadata::new(), || (black_box(1), Metadata::new())))
    });
    let one = Dispatcher::new();
    one.attach("noop", SPAN.stop().clone(), noop)
        .expect("attach");
    g.bench_function("one_noop_handler", |b| {
        b.iter(|| one.span(&SPAN, Metadata::new(), || (black_box(1), Metadata::new())))
    });
    g.finish();
}

fn trace_context(c: &mut Criterion) {
    let mut g = c.benchmark_group("context");
    let ctx = TraceContext::new_root();
    g.bench_function("scope_enter_exit", |b| {
        b.iter(|| ctx.in_scope(|| black_box(1)))
    });
    ctx.in_scope(|| g.bench_function("current", |b| b.iter(context::current)));
    g.finish();

    let mut g = c.benchmark_group("traceparent");
    g.bench_function("parse", |b| {
        b.iter(|| TraceParent::parse(black_box(TRACEPARENT)))
    });
    let tp = TraceParent::parse(TRACEPARENT).expect("valid");
    g.bench_function("format", |b| b.iter(|| black_box(&tp).to_string()));
    g.finish();
}

fn window(c: &mut Criterion) {
    use dspex_telemetry_metrics::{MonotonicClock, SeriesWindow, WindowConfig, WindowShape};
    use std::sync::Arc;

    // Log-spread latencies in milliseconds, cycled.
    let values: Vec<f64> = (0..1024)
        .map(|i| 10f64.powf(-1.0 + 4.0 * ((i * 7919) % 1024) as f64 / 1024.0))
        .collect();
    let mut g = c.benchmark_group("window");
    let shape = Arc::new(WindowShape::new(WindowConfig::default()).expect("default config"));
    let series = SeriesWindow::new(shape, Arc::new(MonotonicClock));
    let mut i = 0usize;
    g.bench_function("record", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            series.record(black_box(values[i]))
        })
    });
    let mut summary = metrics_util::storage::Summary::with_defaults();
    g.bench_function("metrics_util_summary_add", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            summary.add(black_box(values[i]))
        })
    });
    let mut hdr = hdrhistogram::Histogram::<u64>::new(3).expect("valid precision");
    g.bench_function("hdrhistogram_record", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            // Microseconds, as integers.
            hdr.saturating_record(black_box((values[i] * 1000.0) as u64))
        })
    });
    let bucket = metrics_util::storage::AtomicBucket::<f64>::new();
    g.bench_function("prometheus_bucket_push", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < n {
                let batch = (n - done).min(65_536);
                let start = std::time::Instant::now();
                for _ in 0..batch {
                    i = (i + 1) & 1023;
                    bucket.push(black_box(values[i]));
                }
                total += start.elapsed();
                bucket.clear();
                done += batch;
            }
            total
        })
    });
    g.finish();
}

fn event_path(c: &mut Criterion) {
    use dspex_telemetry_core::{catalog, measurements, metadata};
    use dspex_telemetry_metrics::{
        MetricsHandler, RecorderConfig, WindowedRecorder, catalog as metric_catalog,
    };
    use metrics_exporter_prometheus::PrometheusBuilder;

    let buckets = metric_catalog::DURATION_BUCKETS_MS;
    let prometheus = || {
        PrometheusBuilder::new()
            .set_buckets(buckets)
            .expect("buckets")
            .build_recorder()
    };
    // Ours: the event through the handler into the window and Prometheus (fanout).
    let ours_prometheus = prometheus();
    let ours_handle = ours_prometheus.handle();
    let window = WindowedRecorder::new(RecorderConfig::default()).expect("default config");
    let fanout = metrics_util::layers::FanoutBuilder::default()
        .add_recorder(window)
        .add_recorder(ours_prometheus)
        .build();
    let d = Dispatcher::new();
    let _handler = metrics::with_local_recorder(&fanout, || {
        MetricsHandler::attach(&d, "metrics", metric_catalog::dspex_metrics(), 1_000)
            .expect("attach")
    });
    let measurements = measurements! { "duration" => 2_500_000, "monotonic_time" => 7 };
    let metadata = metadata! { "module" => "dspy", "function" => "Predict", "session_id" => "s-1" };
    // The baselines: the macros into a Prometheus recorder of their own.
    let macros_prometheus = prometheus();
    let macros_handle = macros_prometheus.handle();

    // Each runs `batch` iterations and returns their time; the Prometheus upkeep that drains
    // the histogram samples runs outside the timing.
    let ours = |batch: u64| {
        let start = Instant::now();
        metrics::with_local_recorder(&fanout, || {
            for _ in 0..batch {
                d.execute(
                    black_box(catalog::BRIDGE_CALL.stop()),
                    black_box(&measurements),
                    black_box(&metadata),
                )
            }
        });
        let spent = start.elapsed();
        ours_handle.run_upkeep();
        spent
    };
    let histogram = |batch: u64| {
        let start = Instant::now();
        metrics::with_local_recorder(&macros_prometheus, || {
            for _ in 0..batch {
                metrics::histogram!("dspex_bridge_call_method_duration", "method" => "dspy.Predict")
                    .record(black_box(2.5))
            }
        });
        let spent = start.elapsed();
        macros_handle.run_upkeep();
        spent
    };
    let histogram_and_counter = |batch: u64| {
        let start = Instant::now();
        metrics::with_local_recorder(&macros_prometheus, || {
            for _ in 0..batch {
                bridge_call_macros();
            }
        });
        let spent = start.elapsed();
        macros_handle.run_upkeep();
        spent
    };
    let started = std::time::SystemTime::now();
    // Each bench times its own batches, interleaved with untimed batches of the other two:
    // all three see the same machine conditions, so drift does not fall on one of them.
    const BATCH: u64 = 16_384;
    let mut g = c.benchmark_group("event_path");
    for name in [
        "dspex_event_to_window_and_prometheus",
        "histogram_macro_to_prometheus",
        "histogram_and_counter_macros_to_prometheus",
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|n| {
                let mut total = Duration::ZERO;
                let mut done = 0;
                let mine = match name {
                    "dspex_event_to_window_and_prometheus" => 0,
                    "histogram_macro_to_prometheus" => 1,
                    _ => 2,
                };
                let mut round = 0;
                while done < n {
                    let batch = BATCH.min(n - done);
                    // Each batch starts with the next of the three, so none is always first.
                    let mut times = [Duration::ZERO; 3];
                    for k in 0..3 {
                        let which = (round + k) % 3;
                        times[which] = match which {
                            0 => ours(batch),
                            1 => histogram(batch),
                            _ => histogram_and_counter(batch),
                        };
                    }
                    total += times[mine];
                    done += batch;
                    round += 1;
                }
                total
            })
        });
    }
    g.finish();
    keep_event_path_run(started);
}

/// Adds this run's `event_path` medians to `<target>/criterion/event-path-runs.json` (the
/// last ten runs; `cargo xtask bench-report` shows the last three), when criterion measured
/// them in this run (not under `--test`, not filtered out).
fn keep_event_path_run(started: std::time::SystemTime) {
    let median = |bench: &str| -> Option<f64> {
        let path = dspex_telemetry_benches::result_path("event_path")
            .join(bench)
            .join("new/estimates.json");
        if std::fs::metadata(&path).ok()?.modified().ok()? < started {
            return None;
        }
        let estimates: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
        estimates["median"]["point_estimate"].as_f64()
    };
    let (Some(ours), Some(histogram), Some(both)) = (
        median("dspex_event_to_window_and_prometheus"),
        median("histogram_macro_to_prometheus"),
        median("histogram_and_counter_macros_to_prometheus"),
    ) else {
        return;
    };
    let path = dspex_telemetry_benches::result_path("event-path-runs.json");
    let mut runs: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let at = started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    runs.push(serde_json::json!({
        "unix_time": at,
        "ours_ns": ours,
        "histogram_ns": histogram,
        "histogram_and_counter_ns": both,
    }));
    let first = runs.len().saturating_sub(10);
    std::fs::write(
        &path,
        serde_json::Value::from(runs.split_off(first)).to_string(),
    )
    .expect("write");
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

/// The caller's cost while exporters send every 10 ms to peers that are up, then down: it
/// must not grow when they are down.
fn exporters_peer_down(c: &mut Criterion) {
    use dspex_telemetry_core::{catalog, metadata};
    use dspex_telemetry_exporters::reporter::{Reporter, ReporterConfig};
    use dspex_telemetry_metrics::{
        MetricsHandler, RecorderConfig, WindowedRecorder, catalog as metric_catalog,
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (udp_up, tcp_up) = sink_ports();
    // Ports nothing listens on.
    let closed = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    };
    let config = |statsd: u16, http: u16| {
        format!(
            "reporting_interval = 10\n\
             [[backends]]\ntype = \"statsd\"\nport = {statsd}\n\
             [[backends]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:0\"\npush_gateway = \"http://127.0.0.1:{http}\"\n\
             [[backends]]\ntype = \"opentelemetry\"\nendpoint = \"http://127.0.0.1:{http}\"\n"
        )
    };
    let metadata = metadata! { "module" => "dspy", "function" => "Predict" };
    let mut g = c.benchmark_group("exporters");
    for (name, config) in [
        ("backends_down", config(closed(), closed())),
        ("backends_up", config(udp_up, tcp_up)),
    ] {
        let config: ReporterConfig = toml::from_str(&config).expect("config");
        let window = WindowedRecorder::new(RecorderConfig::default()).expect("window");
        let d = Dispatcher::new();
        let (reporter, recorder) = rt
            .block_on(Reporter::start(
                &config,
                &metric_catalog::dspex_metrics(),
                Some(window),
                &d,
            ))
            .expect("reporter");
        metrics::with_local_recorder(&recorder, || {
            let handler =
                MetricsHandler::attach(&d, "metrics", metric_catalog::dspex_metrics(), 1_000)
                    .expect("attach");
            g.bench_function(name, |b| {
                b.iter(|| {
                    d.span(&catalog::BRIDGE_CALL, black_box(metadata.clone()), || {
                        ((), metadata! { "success" => true })
                    })
                })
            });
            handler.detach();
        });
        // At least a few pushes, whether or not the bench ran (a filter can skip it).
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
        let failures = reporter.push_failures();
        rt.block_on(reporter.shutdown());
        if name.ends_with("_down") {
            assert!(
                failures > 0,
                "pushes to a gateway that is down fail (and are counted)"
            );
        } else {
            assert_eq!(failures, 0, "pushes to the sink succeed");
        }
    }
    g.finish();
}

/// How many spans every contender may queue for export.
const SPAN_QUEUE: usize = 65_536;

/// The process's sinks (a UDP port and an HTTP port that accept everything), started once:
/// `fastrace`'s reporter is global and keeps the first port it is given.
fn sink_ports() -> (u16, u16) {
    static PORTS: std::sync::OnceLock<(u16, u16)> = std::sync::OnceLock::new();
    *PORTS.get_or_init(dspex_telemetry_benches::sinks)
}

/// A bridge-call span exported over OTLP/HTTP to a local collector sink: ours (the OTLP span
/// handler on the dispatcher) against `tracing` + `tracing-opentelemetry` with the SDK's batch
/// processor and the official OTLP/HTTP exporter, for a span with the same name and attributes.
/// Both queue up to 65 536 spans and send batches of 512 from their own thread or task; and
/// `fastrace` with its OpenTelemetry reporter and the same exporter. Spans are timed in chunks
/// of 512, each followed by an untimed flush, so every span is exported (none dropped) and the
/// caller's cost is what is timed; the three take turns within each sample.
fn otlp_span(c: &mut Criterion) {
    use dspex_telemetry_exporters::otlp::{OtlpConfig, OtlpTraces};
    let (_, http) = sink_ports();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("otlp_span");

    let d = Dispatcher::new();
    let traces = rt
        .block_on(async {
            OtlpTraces::start(
                OtlpConfig {
                    endpoint: Some(format!("http://127.0.0.1:{http}").into()),
                    max_queue: SPAN_QUEUE,
                    max_batch: 512,
                    export_interval: Duration::from_millis(100),
                    ..OtlpConfig::default()
                },
                &d,
                "otlp",
            )
        })
        .expect("otlp");
    let ours = dspex_contender("dspex_bridge_call_span", &d, || rt.block_on(traces.flush()));
    let (provider, dispatch) = tracing_opentelemetry_to(http);
    let with_tracing = tracing_contender("tracing_opentelemetry_span", &dispatch, None, || {
        provider.force_flush().expect("flush")
    });
    fastrace_to(http);
    let with_fastrace = fastrace_contender("fastrace_span", None, fastrace::flush);
    let ran = in_turn(&mut g, 1, "", &[&ours, &with_tracing, &with_fastrace]);
    g.finish();
    drop([ours, with_tracing, with_fastrace]);
    let stats = traces.stats();
    rt.block_on(traces.shutdown());
    let _ = provider.shutdown();
    assert_eq!(stats.dropped, 0, "every span was exported: {stats:?}");
    assert!(!ran || stats.exported > 0, "{stats:?}");
}

/// One bench per contender, `<name><suffix>`, each run on `threads` threads; within each
/// sample every contender runs the same calls in turn and only the bench's own are timed, so
/// drift in the machine's speed falls on all alike. Whether any bench ran (a filter can skip
/// them all).
fn in_turn(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    threads: usize,
    suffix: &str,
    contenders: &[&Contender<'_>],
) -> bool {
    let mut ran = false;
    for timed in contenders {
        g.bench_function(format!("{}{suffix}", timed.name), |b| {
            ran = true;
            b.iter_custom(|n| {
                let mut total = Duration::ZERO;
                for other in contenders {
                    let spent = on_threads(threads, n, other);
                    if std::ptr::eq(*other, *timed) {
                        total = spent;
                    }
                }
                total
            })
        });
    }
    ran
}

/// Spans queued by the OpenTelemetry SDK's batch processor (as many as ours queue, batches of
/// 512) and exported with the official OTLP/HTTP exporter to the sink at `http`; the
/// provider (to flush) and a `tracing` dispatch with the `tracing-opentelemetry` layer.
fn tracing_opentelemetry_to(
    http: u16,
) -> (
    opentelemetry_sdk::trace::SdkTracerProvider,
    tracing::Dispatch,
) {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt;

    // The blocking reqwest client needs a process-wide rustls provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("http://127.0.0.1:{http}/v1/traces"))
        .build()
        .expect("otlp exporter");
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(SPAN_QUEUE)
                .with_max_export_batch_size(512)
                .with_scheduled_delay(Duration::from_millis(100))
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("dspex")));
    (provider, tracing::Dispatch::new(subscriber))
}

/// The bridge-call span with `tracing`: three attributes at the start, three at the end.
fn tracing_bridge_call_span() {
    let span = tracing::info_span!(
        "dspex.bridge.call",
        module = "dspy",
        function = "Predict",
        args = "[\"question\"]",
        success = tracing::field::Empty,
        result_type = tracing::field::Empty,
        worker_id = tracing::field::Empty,
    );
    let entered = span.enter();
    black_box(());
    span.record("success", true);
    span.record("result_type", "dict");
    span.record("worker_id", 1);
    drop(entered);
}

/// `fastrace`'s global reporter: its OpenTelemetry reporter with the official OTLP/HTTP
/// exporter, to the sink at `http`. Set once per process (the first caller's sink wins).
fn fastrace_to(http: u16) {
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let exporter = SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("http://127.0.0.1:{http}/v1/traces"))
            .build()
            .expect("otlp exporter");
        let reporter = fastrace_opentelemetry::OpenTelemetryReporter::new(
            exporter,
            std::borrow::Cow::Owned(opentelemetry_sdk::Resource::builder().build()),
            opentelemetry::InstrumentationScope::builder("dspex").build(),
        );
        fastrace::set_reporter(
            reporter,
            fastrace::collector::Config::default().report_interval(Duration::from_millis(100)),
        );
    });
}

/// The bridge-call span with `fastrace`, under the thread's local parent: three properties at
/// the start, three at the end (its properties are strings).
fn fastrace_bridge_call_span() {
    let _span = fastrace::local::LocalSpan::enter_with_local_parent("dspex.bridge.call")
        .with_properties(|| {
            [
                ("module", "dspy"),
                ("function", "Predict"),
                ("args", "[\"question\"]"),
            ]
        });
    black_box(());
    fastrace::local::LocalSpan::add_properties(|| {
        [
            ("success", "true"),
            ("result_type", "dict"),
            ("worker_id", "1"),
        ]
    });
}

/// Runs a thread's body in the thread's context.
type Scope<'a> = Box<dyn Fn(&mut dyn FnMut()) + Sync + 'a>;

/// One contender of `otlp_span` or `whole_stack`: what a thread runs, in what context, and how
/// its spans are exported between the timed chunks.
struct Contender<'a> {
    name: &'static str,
    /// Sets up the thread's context (recorder, subscriber, trace) around `body`.
    scope: Scope<'a>,
    /// Makes `count` bridge calls' worth of telemetry.
    chunk: Box<dyn Fn(u64) + Sync + 'a>,
    /// Exports what the chunks queued; untimed.
    flush: Box<dyn Fn() + Sync + 'a>,
}

/// Ours: the bridge-call span on `d`, inside a trace.
fn dspex_contender<'a>(
    name: &'static str,
    d: &'a Dispatcher,
    flush: impl Fn() + Sync + 'a,
) -> Contender<'a> {
    Contender {
        name,
        scope: Box::new(|body| {
            let _trace = context::start_trace();
            body()
        }),
        chunk: Box::new(move |count| {
            for _ in 0..count {
                dspex_telemetry_benches::bridge_call_span(d)
            }
        }),
        flush: Box::new(flush),
    }
}

/// The duration histogram and the call counter of a bridge call, with the `metrics` macros.
fn bridge_call_macros() {
    metrics::histogram!("dspex_bridge_call_method_duration", "method" => "dspy.Predict")
        .record(black_box(2.5));
    metrics::counter!("dspex_bridge_call_method_count", "method" => "dspy.Predict").increment(1);
}

/// The span with `tracing` + `tracing-opentelemetry` (under a root span), and with `metrics`
/// the macros into that recorder.
fn tracing_contender<'a>(
    name: &'static str,
    dispatch: &'a tracing::Dispatch,
    metrics: Option<&'a metrics_exporter_prometheus::PrometheusRecorder>,
    flush: impl Fn() + Sync + 'a,
) -> Contender<'a> {
    Contender {
        name,
        scope: Box::new(move |body| {
            let mut traced = || {
                tracing::dispatcher::with_default(dispatch, || {
                    let root = tracing::info_span!("request");
                    let _root = root.enter();
                    body()
                })
            };
            match metrics {
                Some(recorder) => metrics::with_local_recorder(recorder, traced),
                None => traced(),
            }
        }),
        chunk: Box::new(move |count| {
            for _ in 0..count {
                tracing_bridge_call_span();
                if metrics.is_some() {
                    bridge_call_macros();
                }
            }
        }),
        flush: Box::new(flush),
    }
}

/// The span with `fastrace` (a root per chunk: spans under a root are reported when it ends),
/// and with `metrics` the macros into that recorder.
fn fastrace_contender<'a>(
    name: &'static str,
    metrics: Option<&'a metrics_exporter_prometheus::PrometheusRecorder>,
    flush: impl Fn() + Sync + 'a,
) -> Contender<'a> {
    Contender {
        name,
        scope: Box::new(move |body| match metrics {
            Some(recorder) => metrics::with_local_recorder(recorder, body),
            None => body(),
        }),
        chunk: Box::new(move |count| {
            let root = fastrace::Span::root("request", fastrace::collector::SpanContext::random());
            let _parent = root.set_local_parent();
            for _ in 0..count {
                fastrace_bridge_call_span();
                if metrics.is_some() {
                    bridge_call_macros();
                }
            }
        }),
        flush: Box::new(flush),
    }
}

/// Calls per thread between two flushes in `whole_stack`: two threads' chunks fit the stack's
/// default span queue (2 048).
const CHUNK: u64 = 512;

/// `n` calls on each of `threads` threads, in chunks of [`CHUNK`] that all threads start
/// together; the wall time from each start until the last thread is done, summed. The flush
/// after each chunk is not timed. Each thread first makes one untimed chunk of calls (then a
/// flush), so what a contender sets up once per thread (its buffers, its thread-locals, cold
/// caches) is not charged to the calls of a thread that, like a service's workers, lives long.
fn on_threads(threads: usize, n: u64, c: &Contender<'_>) -> Duration {
    use std::sync::Barrier;
    let (warmed, start, end) = (
        Barrier::new(threads + 1),
        Barrier::new(threads + 1),
        Barrier::new(threads + 1),
    );
    let count = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                (c.scope)(&mut || {
                    (c.chunk)(CHUNK);
                    warmed.wait();
                    loop {
                        start.wait();
                        let k = count.load(Ordering::Acquire);
                        if k == 0 {
                            return;
                        }
                        (c.chunk)(k);
                        end.wait();
                    }
                })
            });
        }
        warmed.wait();
        (c.flush)();
        let mut total = Duration::ZERO;
        let mut done = 0;
        while done < n {
            let k = CHUNK.min(n - done);
            count.store(k, Ordering::Release);
            start.wait();
            let t = Instant::now();
            end.wait();
            total += t.elapsed();
            (c.flush)();
            done += k;
        }
        count.store(0, Ordering::Release);
        start.wait();
        total
    })
}

/// The whole stack on, at 1 and 2 threads: a bridge-call span (six attributes) through the
/// stack a service runs (`Telemetry::start`: the metric catalog into the sliding window,
/// Prometheus, StatsD and OTLP metrics; alerts evaluating every second; the span exported over
/// OTLP/HTTP), against the `metrics` macros (duration histogram and call counter) into the
/// Prometheus recorder plus the same span with `tracing` + `tracing-opentelemetry`, and with
/// `fastrace` and its OpenTelemetry reporter. Every span goes to the same kind of local sink.
/// The three run in turn within each sample, so drift falls on all alike.
fn whole_stack(c: &mut Criterion) {
    use dspex_telemetry::{Config, Telemetry};
    use dspex_telemetry_metrics::catalog as metric_catalog;
    use metrics_exporter_prometheus::PrometheusBuilder;

    let (udp, http) = sink_ports();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let config = Config::from_toml(&format!(
        "[alerts]\nevaluation_interval_ms = 1000\n\
         [reporter]\nreporting_interval = 1000\n\
         [[reporter.backends]]\ntype = \"statsd\"\nhost = \"127.0.0.1\"\nport = {udp}\n\
         [[reporter.backends]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:0\"\n\
         [[reporter.backends]]\ntype = \"opentelemetry\"\nendpoint = \"http://127.0.0.1:{http}\"\n"
    ))
    .expect("config");
    let d = Dispatcher::new();
    let telemetry = rt
        .block_on(Telemetry::start(&config, &d))
        .expect("the stack starts");
    let ours = dspex_contender("dspex", &d, || rt.block_on(telemetry.flush_spans()));
    let prometheus = PrometheusBuilder::new()
        .set_buckets(metric_catalog::DURATION_BUCKETS_MS)
        .expect("buckets")
        .build_recorder();
    let prometheus_handle = prometheus.handle();
    let (provider, dispatch) = tracing_opentelemetry_to(http);
    let with_tracing = tracing_contender(
        "metrics_tracing_opentelemetry",
        &dispatch,
        Some(&prometheus),
        || {
            provider.force_flush().expect("flush");
            prometheus_handle.run_upkeep();
        },
    );
    fastrace_to(http);
    let with_fastrace = fastrace_contender("metrics_fastrace", Some(&prometheus), || {
        fastrace::flush();
        prometheus_handle.run_upkeep();
    });

    let mut g = c.benchmark_group("whole_stack");
    let mut ran = false;
    for threads in [1usize, 2] {
        let contenders = [&ours, &with_tracing, &with_fastrace];
        ran |= in_turn(&mut g, threads, &format!("_{threads}"), &contenders);
    }
    g.finish();
    let stats = telemetry
        .span_stats()
        .expect("the OpenTelemetry backend runs");
    assert_eq!(stats.dropped, 0, "every span was exported: {stats:?}");
    assert!(!ran || stats.exported > 0, "{stats:?}");
    assert!(
        !ran || telemetry
            .window()
            .operation("dspex_bridge_call_method", &[("method", "dspy.Predict")])
            .is_some_and(|s| s.count > 0),
        "the window saw the calls"
    );
    let _ = provider.shutdown();
    drop([ours, with_tracing, with_fastrace]);
    rt.block_on(telemetry.shutdown());
}

criterion_group! {
    name = benches;
    config = config();
    // `whole_stack` installs the process's global recorder: it runs last.
    targets = baselines, execute, span, trace_context, window, event_path, exporters_peer_down, otlp_span, whole_stack
}
criterion_main!(benches);
