//! What telemetry adds to a bridge call, in wall time and in CPU time on each side of the pipe.
//!
//! One pool of two Python workers; rounds of calls alternate between telemetry off and on (the
//! DSPex metric catalog's handlers attached to the pool's dispatcher, then paused), so both
//! configurations use the same worker processes under the same machine conditions. Each round
//! reads the wall clock, this process's CPU time and the workers' CPU time
//! (`/proc/<pid>/schedstat`); the report pairs each "on" round with the "off" round next to it
//! and gives the median ratio (and quartiles) and the mean difference per call.
//! `bridge_performance_bench` runs the same rounds after its criterion benches.
//!
//! Run: `cargo run --release -p dspex-telemetry-benches --example bridge_cpu_share -- [callers] [rounds]`
//! (Linux; defaults 1 caller, 100 rounds of 400 calls per configuration).

use dspex_telemetry_benches::{Compared, paired_rounds};
use dspex_telemetry_bridge::{Pool, PoolConfig};
use dspex_telemetry_core::Dispatcher;
use dspex_telemetry_metrics::{
    MetricsHandler, RecorderConfig, WindowedRecorder, catalog as metric_catalog,
};

const PER_ROUND: u64 = 400;

fn main() {
    let mut args = std::env::args().skip(1);
    let callers: u64 = args.next().map_or(1, |s| s.parse().expect("callers"));
    let rounds: usize = args.next().map_or(100, |s| s.parse().expect("rounds"));
    let rt = dspex_telemetry_benches::runtime(2);
    let recorder = WindowedRecorder::new(RecorderConfig::default()).expect("config");
    metrics::set_global_recorder(recorder.clone()).expect("first recorder");
    let dispatcher = Dispatcher::new();
    let pool = rt
        .block_on(Pool::start(PoolConfig {
            size: 2,
            health_interval: None,
            dispatcher: dispatcher.clone(),
            ..PoolConfig::default()
        }))
        .expect("python3 must be installed");
    // Attached once and paused/resumed: "on" is the steady state a service runs in.
    let handler = MetricsHandler::attach(
        &dispatcher,
        "metrics",
        metric_catalog::dspex_metrics(),
        1_000,
    )
    .expect("attach");
    handler.pause();
    let paired = paired_rounds(&rt, &pool, &handler, callers, rounds, PER_ROUND);
    println!("{callers} caller(s), {rounds} rounds of {PER_ROUND} calls per configuration");
    let rows: [(&str, Compared); 3] = [
        ("wall time", paired.wall),
        ("Rust process CPU", paired.rust_cpu),
        ("Python workers' CPU", paired.workers_cpu),
    ];
    for (what, c) in rows {
        println!(
            "{what:>20}: off {:6.1} µs, on {:6.1} µs per call; on/off median {:.3} (quartiles {:.3}–{:.3}); mean difference {:+.2} µs",
            c.off_us, c.on_us, c.ratio, c.ratio_q1, c.ratio_q3, c.mean_difference_us
        );
    }
    let calls = recorder
        .operation("dspex_bridge_call_method", &[("method", "builtins.abs")])
        .map_or(0, |s| s.count);
    assert!(calls > 0, "the instrumented rounds were recorded");
    rt.block_on(pool.shutdown());
}
