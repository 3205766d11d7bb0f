//! Where telemetry's share of the three-layer request goes: the request of
//! `three_layer_bench` with one configuration of the stack on, against the same request on a
//! pool whose dispatcher has nothing attached, in paired rounds, with the CPU time of each
//! side of the pipe. One configuration per process (the stack installs the global recorder).
//!
//! Run: `cargo run --release -p dspex-telemetry-benches --example three_layer_parts -- PART
//! [callers] [rounds]`, PART one of:
//!
//! - `context`: no handler; the requests still carry their trace into Python;
//! - `window`: the metric catalog into the sliding window;
//! - `spans_recorded`: the window, and a span sink that keeps nothing: the span records are
//!   made, the workers time their spans and send them back, the pool reads them;
//! - `spans_collected`: the window, and the OTLP span pipeline (the threads' rings, the
//!   collector turning records into `SpanData`) with an exporter that discards its batches;
//! - `prometheus`, `statsd`: the window and that backend;
//! - `otlp`: the window, and spans and metrics over OTLP/HTTP;
//! - `alerts`: the window and the alerts evaluating every second;
//! - `full`: all of it (`three_layer_bench`'s configuration).

use dspex_telemetry::Telemetry;
use dspex_telemetry::core::Dispatcher;
use dspex_telemetry_benches::three_layer::{Stack, config, paired};
use dspex_telemetry_benches::{Discard, KeepsNothing, result_path, runtime, sinks, threads_cpu_ns};
use dspex_telemetry_exporters::otlp::{OtlpConfig, OtlpTraces};

fn main() {
    let mut args = std::env::args().skip(1);
    let part = args.next().unwrap_or_else(|| "full".into());
    let callers: u64 = args.next().map_or(1, |s| s.parse().expect("callers"));
    let rounds: usize = args.next().map_or(100, |s| s.parse().expect("rounds"));
    let rt = runtime(2);
    let (udp, http) = sinks();
    let config = config(&part, udp, http);
    let on_dispatcher = Dispatcher::new();
    let telemetry = rt
        .block_on(Telemetry::start(&config, &on_dispatcher))
        .expect("the stack starts");
    let _collected = match part.as_str() {
        "spans_recorded" => {
            on_dispatcher
                .attach_span_sink("keeps-nothing", KeepsNothing)
                .expect("a sink");
            None
        }
        "spans_collected" => Some(
            OtlpTraces::start_with_exporter(
                Discard,
                OtlpConfig::default(),
                &on_dispatcher,
                "discard",
            )
            .expect("the collector starts"),
        ),
        _ => None,
    };
    let on = Stack::start(&rt, &on_dispatcher);
    let off = Stack::start(&rt, &Dispatcher::new());
    // Warm both pools up.
    paired(&rt, &off, &on, callers, 2, 200);
    let threads_before = threads_cpu_ns();
    let mut row = paired(&rt, &off, &on, callers, rounds, 200);
    // The OTLP collector thread's CPU per "on" request (the "off" requests leave it idle).
    let requests = (rounds * 200) as f64;
    let collector =
        |threads: &std::collections::BTreeMap<String, u64>| threads.get("dspex-otlp-span").copied();
    if let (Some(before), Some(after)) = (collector(&threads_before), collector(&threads_cpu_ns()))
    {
        row["collector_us"] = ((after - before) as f64 / requests / 1e3).into();
    }
    row["part"] = part.clone().into();
    rt.block_on(telemetry.flush_spans());
    if let Some(stats) = telemetry.span_stats() {
        row["spans_per_request"] = (stats.exported as f64 / ((rounds + 2) * 200) as f64).into();
    }
    println!("{part}: {row}");
    // Kept with the other parts' rows for `cargo xtask bench-report`, once per part.
    let path = result_path("three-layer-parts.json");
    let mut rows: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    rows.retain(|r| r["part"] != part.as_str());
    rows.push(row);
    let order = [
        "context",
        "window",
        "spans_recorded",
        "spans_collected",
        "prometheus",
        "statsd",
        "otlp",
        "alerts",
        "full",
    ];
    rows.sort_by_key(|r| order.iter().position(|p| r["part"] == *p));
    std::fs::write(&path, serde_json::Value::from(rows).to_string()).expect("write");
    on.shutdown(&rt);
    off.shutdown(&rt);
    rt.block_on(telemetry.shutdown());
}
