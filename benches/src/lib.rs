//! Shared by the bridge benchmarks: calls through a pool, and paired rounds with telemetry on
//! and off.
//!
//! Criterion samples one configuration for seconds, then the other; on a busy or small machine
//! the conditions drift between the two phases, and the ratio of their medians with them.
//! [`paired_rounds`] alternates short rounds of the two configurations on one pool and compares
//! each "on" round with the "off" round next to it, so drift cancels; it also reads the CPU
//! time each side of the pipe spent (`/proc`, Linux).

#![deny(missing_docs)]

pub mod three_layer;

/// A span sink that keeps nothing: span records are made, and dropped.
pub struct KeepsNothing;

impl dspex_telemetry_core::SpanSink for KeepsNothing {
    fn on_end(&self, span: &dspex_telemetry_core::SpanRecord<'_>) {
        std::hint::black_box(span.end_unix_ns);
    }
}

/// A span exporter that takes every batch and keeps nothing.
#[derive(Debug)]
pub struct Discard;

impl opentelemetry_sdk::trace::SpanExporter for Discard {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        drop(std::hint::black_box(batch));
        Ok(())
    }
}

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dspex_telemetry_bridge::Pool;
use dspex_telemetry_metrics::MetricsHandler;
use serde_json::{Value, json};

/// Runs `calls` calls of `builtins.abs(-3)` over `callers` concurrent tasks; returns the
/// elapsed time.
pub fn run_calls(rt: &tokio::runtime::Runtime, pool: &Pool, callers: u64, calls: u64) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|c| {
                let pool = pool.clone();
                let share = calls / callers + u64::from(c < calls % callers);
                tokio::spawn(async move {
                    for _ in 0..share {
                        let v = pool
                            .call("builtins", "abs", vec![json!(-3)])
                            .await
                            .expect("call");
                        assert_eq!(v, json!(3));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("caller");
        }
        start.elapsed()
    })
}

/// This process's children (the pool's workers).
pub fn children() -> BTreeSet<u32> {
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

/// The run time `/proc/.../schedstat` at `path` gives (its first field), in nanoseconds.
fn schedstat_ns(path: impl AsRef<std::path::Path>) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time the processes have run, in nanoseconds.
pub fn cpu_ns_of(pids: &BTreeSet<u32>) -> u64 {
    pids.iter()
        .map(|pid| schedstat_ns(format!("/proc/{pid}/schedstat")).expect("run time in ns"))
        .sum()
}

/// CPU time of this process's threads alive now, summed by thread name, in nanoseconds
/// (`dspex-otlp-span` for the OTLP collector, say).
pub fn threads_cpu_ns() -> std::collections::BTreeMap<String, u64> {
    let mut by_name = std::collections::BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let dir = task.expect("task").path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let ns = schedstat_ns(dir.join("schedstat")).unwrap_or(0);
        *by_name.entry(name.trim().to_owned()).or_insert(0) += ns;
    }
    by_name
}

/// A runtime with `workers` worker threads, every driver on.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A bridge-call span with six attributes, three at the start and three at the end: the span
/// the `otlp_span` and `whole_stack` benches and `span_profile` time.
pub fn bridge_call_span(d: &dspex_telemetry_core::Dispatcher) {
    use dspex_telemetry_core::{catalog, metadata};
    d.span(
        &catalog::BRIDGE_CALL,
        metadata! { "module" => "dspy", "function" => "Predict", "args" => "[\"question\"]" },
        || {
            (
                std::hint::black_box(()),
                metadata! { "success" => true, "result_type" => "dict", "worker_id" => 1 },
            )
        },
    )
}

/// This process's CPU time (all its threads, exited ones too), in nanoseconds.
pub fn own_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_PROCESS_CPUTIME_ID");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The first quartile, median and third quartile.
pub fn quartiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (v[n / 4], v[n / 2], v[3 * n / 4])
}

/// One quantity (wall time, or one side's CPU time) with telemetry off and on, per call.
#[derive(Debug, Clone, Copy)]
pub struct Compared {
    /// Median over the "off" rounds, µs per call.
    pub off_us: f64,
    /// Median over the "on" rounds, µs per call.
    pub on_us: f64,
    /// Median of the per-pair ratios on/off.
    pub ratio: f64,
    /// First quartile of the per-pair ratios.
    pub ratio_q1: f64,
    /// Third quartile of the per-pair ratios.
    pub ratio_q3: f64,
    /// Mean of the per-pair differences on − off, µs per call.
    pub mean_difference_us: f64,
}

impl Compared {
    fn of(off: &[f64], on: &[f64]) -> Compared {
        let (ratio_q1, ratio, ratio_q3) =
            quartiles(off.iter().zip(on).map(|(a, b)| b / a).collect());
        Compared {
            off_us: quartiles(off.to_vec()).1,
            on_us: quartiles(on.to_vec()).1,
            ratio,
            ratio_q1,
            ratio_q3,
            mean_difference_us: off.iter().zip(on).map(|(a, b)| b - a).sum::<f64>()
                / off.len() as f64,
        }
    }

    fn to_json(self) -> Value {
        json!({
            "off_us": self.off_us,
            "on_us": self.on_us,
            "ratio": self.ratio,
            "ratio_q1": self.ratio_q1,
            "ratio_q3": self.ratio_q3,
            "mean_difference_us": self.mean_difference_us,
        })
    }
}

/// The outcome of [`paired_rounds`].
#[derive(Debug, Clone, Copy)]
pub struct Paired {
    /// Concurrent callers.
    pub callers: u64,
    /// Rounds per configuration.
    pub rounds: usize,
    /// Calls per round.
    pub per_round: u64,
    /// Wall time per call.
    pub wall: Compared,
    /// This process's CPU time per call.
    pub rust_cpu: Compared,
    /// The workers' CPU time per call.
    pub workers_cpu: Compared,
}

impl Paired {
    /// As JSON, for `cargo xtask bench-report`.
    pub fn to_json(self) -> Value {
        json!({
            "callers": self.callers,
            "rounds": self.rounds,
            "per_round": self.per_round,
            "wall": self.wall.to_json(),
            "rust_cpu": self.rust_cpu.to_json(),
            "workers_cpu": self.workers_cpu.to_json(),
        })
    }
}

/// Alternates `rounds` rounds of `per_round` calls with telemetry off (`handler` paused) and on
/// (resumed) on `pool`, the order flipping every round, and compares each "on" round with its
/// neighbour. Leaves `handler` paused. `handler` must be paused when called.
pub fn paired_rounds(
    rt: &tokio::runtime::Runtime,
    pool: &Pool,
    handler: &MetricsHandler,
    callers: u64,
    rounds: usize,
    per_round: u64,
) -> Paired {
    paired_rounds_of(handler, callers, rounds, per_round, |calls| {
        run_calls(rt, pool, callers, calls)
    })
}

/// [`paired_rounds`] for any operation: `run(n)` makes `n` of them (through the pool whose
/// workers are this process's children, from `callers` concurrent callers) and returns the
/// time they took.
pub fn paired_rounds_of(
    handler: &MetricsHandler,
    callers: u64,
    rounds: usize,
    per_round: u64,
    mut run: impl FnMut(u64) -> Duration,
) -> Paired {
    assert!(
        rounds > 0 && per_round > 0,
        "at least one round of one call"
    );
    let workers = children();
    run(per_round);
    // [off, on] × [wall, own CPU, workers' CPU], µs per call, one entry per round.
    let mut per_call = [[vec![], vec![], vec![]], [vec![], vec![], vec![]]];
    for round in 0..rounds {
        for k in 0..2 {
            let on = (k + round) % 2 == 1;
            if on {
                handler.resume().expect("resume");
            }
            let (own, theirs) = (own_cpu_ns(), cpu_ns_of(&workers));
            let wall = run(per_round);
            let spent = [
                wall.as_nanos() as f64,
                (own_cpu_ns() - own) as f64,
                (cpu_ns_of(&workers) - theirs) as f64,
            ];
            if on {
                handler.pause();
            }
            for (i, ns) in spent.iter().enumerate() {
                per_call[usize::from(on)][i].push(ns / per_round as f64 / 1_000.0);
            }
        }
    }
    let [off, on] = &per_call;
    Paired {
        callers,
        rounds,
        per_round,
        wall: Compared::of(&off[0], &on[0]),
        rust_cpu: Compared::of(&off[1], &on[1]),
        workers_cpu: Compared::of(&off[2], &on[2]),
    }
}

/// Sinks standing in for a StatsD server (a UDP socket that drains) and for a push gateway
/// and an OTLP/HTTP collector (a hyper HTTP/1.1 server, on a thread of its own, that reads
/// each request's body whole and answers 200, keeping the connection open as a collector
/// does): the sender's side sees what a live server gives it. Returns (UDP port, HTTP port).
pub fn sinks() -> (u16, u16) {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp sink");
    let udp_port = udp.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65_536];
        while udp.recv(&mut buf).is_ok() {}
    });
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("http sink");
    let tcp_port = tcp.local_addr().expect("addr").port();
    tcp.set_nonblocking(true).expect("a non-blocking listener");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the sink's runtime");
        rt.block_on(serve_http(tcp));
    });
    (udp_port, tcp_port)
}

/// Requests the HTTP sink of [`sinks`] has answered.
pub static SINK_REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bytes of request bodies the HTTP sink of [`sinks`] has read.
pub static SINK_BODY_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Answers 200 to every request on `listener`, counting the requests and their body bytes.
async fn serve_http(listener: std::net::TcpListener) {
    use http_body_util::BodyExt;
    use std::sync::atomic::Ordering;
    let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
    while let Ok((stream, _)) = listener.accept().await {
        let service = hyper::service::service_fn(
            |request: hyper::Request<hyper::body::Incoming>| async move {
                let body = request.into_body().collect().await?.to_bytes();
                SINK_REQUESTS.fetch_add(1, Ordering::Relaxed);
                SINK_BODY_BYTES.fetch_add(body.len() as u64, Ordering::Relaxed);
                Ok::<_, hyper::Error>(hyper::Response::new(http_body_util::Empty::<
                    hyper::body::Bytes,
                >::new()))
            },
        );
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
        );
    }
}

/// Writes a bench's results beside criterion's, as `<target>/criterion/<name>`, for `cargo
/// xtask bench-report` (a bench binary runs as `<target>/release/deps/<bench>`).
pub fn write_result(name: &str, json: &Value) {
    let path = result_path(name);
    std::fs::write(&path, json.to_string()).expect("write");
    println!("wrote {}", path.display());
}

/// Where [`write_result`] writes `name`: `<target>/criterion/<name>` (the folder made).
pub fn result_path(name: &str) -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("the bench's path");
            exe.ancestors()
                .nth(3)
                .expect("<target>/release/{deps,examples}/<bench>")
                .to_path_buf()
        });
    let dir = target.join("criterion");
    std::fs::create_dir_all(&dir).expect("criterion's folder");
    dir.join(name)
}
