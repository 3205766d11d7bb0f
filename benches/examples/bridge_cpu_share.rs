//! What telemetry adds to a bridge call, in wall time and in CPU time on each side of the pipe.
//!
//! One pool of two Python workers; rounds of calls alternate between telemetry off and on (the
//! DSPex metric catalog's handlers attached to the pool's dispatcher, then paused), so both
//! configurations use the same worker processes under the same machine conditions. Each round
//! reads the wall clock, this process's CPU time and the workers' CPU time
//! (`/proc/<pid>/schedstat`); the report pairs each "on" round with the "off" round next to it
//! and gives the median ratio (and quartiles) and the mean difference per call.
//!
//! Run: `cargo run --release -p dspex-telemetry-benches --example bridge_cpu_share -- [callers] [rounds]`
//! (Linux; defaults 1 caller, 100 rounds of 400 calls per configuration).

use std::collections::BTreeSet;
use std::time::Instant;

use dspex_telemetry_bridge::{Pool, PoolConfig};
use dspex_telemetry_core::Dispatcher;
use dspex_telemetry_metrics::{
    MetricsHandler, RecorderConfig, WindowedRecorder, catalog as metric_catalog,
};
use serde_json::json;

const PER_ROUND: u64 = 400;

/// This process's children (the pool's workers).
fn children() -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let path = task.expect("task").path().join("children");
        for pid in std::fs::read_to_string(path)
            .unwrap_or_default()
            .split_whitespace()
        {
            out.insert(pid.parse().expect("a pid"));
        }
    }
    out
}

/// CPU time the processes have run, in nanoseconds.
fn cpu_ns_of(pids: &BTreeSet<u32>) -> u64 {
    pids.iter()
        .map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
                .expect("schedstat")
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .expect("run time in ns")
        })
        .sum()
}

/// This process's CPU time (all its threads, exited ones too), in nanoseconds.
fn own_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_PROCESS_CPUTIME_ID");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (v[n / 4], v[n / 2], v[3 * n / 4])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let callers: u64 = args.next().map_or(1, |s| s.parse().expect("callers"));
    let rounds: usize = args.next().map_or(100, |s| s.parse().expect("rounds"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
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
    let workers = children();
    // Attached once and paused/resumed: "on" is the steady state a service runs in.
    let handler = MetricsHandler::attach(
        &dispatcher,
        "metrics",
        metric_catalog::dspex_metrics(),
        1_000,
    )
    .expect("attach");
    handler.pause();
    let run = || {
        rt.block_on(async {
            let tasks: Vec<_> = (0..callers)
                .map(|_| {
                    let pool = pool.clone();
                    tokio::spawn(async move {
                        for _ in 0..PER_ROUND / callers {
                            let v = pool.call("builtins", "abs", vec![json!(-3)]).await;
                            assert_eq!(v.expect("call"), json!(3));
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("caller");
            }
        })
    };
    run();
    // [off, on] × [wall, own CPU, workers' CPU], µs per call, one entry per round.
    let mut per_call = [[vec![], vec![], vec![]], [vec![], vec![], vec![]]];
    for round in 0..rounds {
        for k in 0..2 {
            let on = (k + round) % 2 == 1;
            if on {
                handler.resume().expect("resume");
            }
            let (wall, own, theirs) = (Instant::now(), own_cpu_ns(), cpu_ns_of(&workers));
            run();
            let spent = [
                wall.elapsed().as_nanos() as f64,
                (own_cpu_ns() - own) as f64,
                (cpu_ns_of(&workers) - theirs) as f64,
            ];
            for (i, ns) in spent.iter().enumerate() {
                per_call[usize::from(on)][i].push(ns / PER_ROUND as f64 / 1_000.0);
            }
            if on {
                handler.pause();
            }
        }
    }
    println!("{callers} caller(s), {rounds} rounds of {PER_ROUND} calls per configuration");
    for (i, what) in ["wall time", "Rust process CPU", "Python workers' CPU"]
        .iter()
        .enumerate()
    {
        let (off, on) = (&per_call[0][i], &per_call[1][i]);
        let ratios = off.iter().zip(on).map(|(a, b)| b / a).collect();
        let (q1, mid, q3) = median(ratios);
        let diff = off.iter().zip(on).map(|(a, b)| b - a).sum::<f64>() / off.len() as f64;
        let (off_med, on_med) = (median(off.clone()).1, median(on.clone()).1);
        println!(
            "{what:>20}: off {off_med:6.1} µs, on {on_med:6.1} µs per call; on/off median {mid:.3} (quartiles {q1:.3}–{q3:.3}); mean difference {diff:+.2} µs"
        );
    }
    let calls = recorder
        .operation("dspex_bridge_call_method", &[("method", "builtins.abs")])
        .map_or(0, |s| s.count);
    assert!(calls > 0, "the instrumented rounds were recorded");
    rt.block_on(pool.shutdown());
}
