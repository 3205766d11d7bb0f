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
//! - `prometheus`, `statsd`: the window and that backend;
//! - `otlp`: the window, and spans and metrics over OTLP/HTTP;
//! - `alerts`: the window and the alerts evaluating every second;
//! - `full`: all of it (`three_layer_bench`'s configuration).

use dspex_telemetry::core::Dispatcher;
use dspex_telemetry::{Config, Telemetry};
use dspex_telemetry_benches::sinks;
use dspex_telemetry_benches::three_layer::{Stack, paired};

fn config(part: &str, udp: u16, http: u16) -> String {
    let statsd =
        format!("[[reporter.backends]]\ntype = \"statsd\"\nhost = \"127.0.0.1\"\nport = {udp}\n");
    let prometheus = "[[reporter.backends]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:0\"\n";
    let otlp = format!(
        "[[reporter.backends]]\ntype = \"opentelemetry\"\nendpoint = \"http://127.0.0.1:{http}\"\n"
    );
    let reporter = "[reporter]\nreporting_interval = 1000\n";
    match part {
        "context" => "[telemetry]\nhandlers = []\n".into(),
        "window" => "[telemetry]\nhandlers = [\"metrics\"]\n".into(),
        "prometheus" => {
            format!("[telemetry]\nhandlers = [\"metrics\", \"reporter\"]\n{reporter}{prometheus}")
        }
        "statsd" => {
            format!("[telemetry]\nhandlers = [\"metrics\", \"reporter\"]\n{reporter}{statsd}")
        }
        "otlp" => format!("[telemetry]\nhandlers = [\"metrics\", \"reporter\"]\n{reporter}{otlp}"),
        "alerts" => "[telemetry]\nhandlers = [\"metrics\", \"alerts\"]\n\
                     [alerts]\nevaluation_interval_ms = 1000\n"
            .into(),
        "full" => {
            format!("[alerts]\nevaluation_interval_ms = 1000\n{reporter}{statsd}{prometheus}{otlp}")
        }
        other => panic!("unknown part {other:?}: see the example's documentation"),
    }
}

/// CPU time of this process's threads, summed by thread name, in nanoseconds.
fn thread_cpu_ns() -> std::collections::BTreeMap<String, u64> {
    let mut by_name = std::collections::BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let dir = task.expect("task").path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let ns = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        *by_name.entry(name.trim().to_owned()).or_insert(0) += ns;
    }
    by_name
}

fn main() {
    let mut args = std::env::args().skip(1);
    let part = args.next().unwrap_or_else(|| "full".into());
    let callers: u64 = args.next().map_or(1, |s| s.parse().expect("callers"));
    let rounds: usize = args.next().map_or(100, |s| s.parse().expect("rounds"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (udp, http) = sinks();
    let config = Config::from_toml(&config(&part, udp, http)).expect("config");
    let on_dispatcher = Dispatcher::new();
    let telemetry = rt
        .block_on(Telemetry::start(&config, &on_dispatcher))
        .expect("the stack starts");
    let on = Stack::start(&rt, &on_dispatcher);
    let off = Stack::start(&rt, &Dispatcher::new());
    // Warm both pools up.
    paired(&rt, &off, &on, callers, 2, 200);
    let threads_before = thread_cpu_ns();
    let row = paired(&rt, &off, &on, callers, rounds, 200);
    println!("{part}: {row}");
    // The stack's background threads' CPU per "on" request, by thread name (the "off"
    // requests leave them idle).
    let requests = (rounds * 200) as f64;
    let mut after = thread_cpu_ns();
    for (name, ns) in &threads_before {
        if let Some(now) = after.get_mut(name) {
            *now = now.saturating_sub(*ns);
        }
    }
    for (name, ns) in after {
        if !name.starts_with("tokio-rt") && !name.starts_with("three_layer") && ns > 0 {
            println!(
                "  thread {name}: {:.2} µs per request",
                ns as f64 / requests / 1e3
            );
        }
    }
    rt.block_on(telemetry.flush_spans());
    if let Some(stats) = telemetry.span_stats() {
        // The warm-up's two rounds and the measured ones: a round of 200 "on" requests each.
        let on_requests = ((rounds + 2) * 200) as f64;
        println!(
            "  spans exported per request: {:.1} ({stats:?}), {:.0} bytes per span, {} requests to the sink",
            stats.exported as f64 / on_requests,
            dspex_telemetry_benches::SINK_BODY_BYTES.load(std::sync::atomic::Ordering::Relaxed)
                as f64
                / stats.exported.max(1) as f64,
            dspex_telemetry_benches::SINK_REQUESTS.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    on.shutdown(&rt);
    off.shutdown(&rt);
    rt.block_on(telemetry.shutdown());
}
