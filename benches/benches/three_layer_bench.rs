//! `three_layer_bench`: an application request through the bridge to a Python worker and back,
//! with the whole stack on (the metric catalog into the window, Prometheus, StatsD and OTLP
//! metrics; OTLP spans; alerts evaluating every second), against the same request through a
//! pool whose dispatcher has nothing attached.
//!
//! A request: a trace with a correlation id; a contract-checked prediction (the predictor
//! answers at once); a tool call; a session variable set and get.
//!
//! Run: `cargo bench -p dspex-telemetry-benches --bench three_layer_bench`, then `cargo xtask
//! bench-report`. Criterion times requests at 1 and 8 concurrent callers (`three_layer/*`);
//! then paired rounds (200 rounds of 200 requests per configuration, alternating) give the
//! share of a request's time spent in telemetry, written to `<target>/criterion/three-layer.json`.
//! The two configurations use two pools (four Python processes); the stack's global recorder
//! can be installed once per process, so it cannot be switched off in place.

use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use dspex_telemetry::Telemetry;
use dspex_telemetry::core::Dispatcher;
use dspex_telemetry_benches::three_layer::{Stack, config, paired, run, signature};
use dspex_telemetry_benches::{runtime, sinks, write_result};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let quick = args.iter().any(|a| a == "--test");
    let rt = runtime(2);
    let (udp, http) = sinks();
    let config = config("full", udp, http);
    let on_dispatcher = Dispatcher::new();
    let telemetry = rt
        .block_on(Telemetry::start(&config, &on_dispatcher))
        .expect("the stack starts");
    let on: Arc<Stack> = Stack::start(&rt, &on_dispatcher);
    let off = Stack::start(&rt, &Dispatcher::new());
    let signature = signature();

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .sample_size(30)
        .configure_from_args();
    {
        let mut g = c.benchmark_group("three_layer");
        for callers in [1u64, 8] {
            for (label, stack, other) in [("off", &off, &on), ("on", &on, &off)] {
                g.bench_function(format!("request_{label}/{callers}"), |b| {
                    b.iter_custom(|n| {
                        // Interleaved with as many untimed requests of the other configuration.
                        let mut total = Duration::ZERO;
                        let mut done = 0;
                        while done < n {
                            let batch = 32.min(n - done);
                            total += run(&rt, stack, &signature, callers, batch);
                            run(&rt, other, &signature, callers, batch);
                            done += batch;
                        }
                        total
                    })
                });
            }
        }
        g.finish();
    }
    c.final_summary();

    // Paired rounds: each "on" round against its neighbour "off" round, with the CPU time of
    // each side.
    let rounds = if quick { 2 } else { 200 };
    let mut results = Vec::new();
    for callers in [1u64, 8] {
        let row = paired(&rt, &off, &on, callers, rounds, 200);
        println!("three_layer/paired/{callers}: {row}");
        results.push(row);
    }
    let window = telemetry
        .window()
        .operation("dspex_tools_execute", &[("tool_name", "lookup")])
        .map_or(0, |s| s.count);
    assert!(window > 0, "the instrumented requests were recorded");
    on.shutdown(&rt);
    off.shutdown(&rt);
    rt.block_on(telemetry.shutdown());
    if quick {
        return;
    }
    write_result("three-layer.json", &serde_json::Value::from(results));
}
