//! `bridge_performance_bench`: a call's round trip through the Python worker pool, with
//! telemetry on and off (the same pool), against a bare Python echo over a pipe (no pool), at
//! 1, 2 and 8 concurrent callers. Each bench reports the time per call: with N callers,
//! `elapsed / calls`, so lower is more throughput.
//!
//! Run: `cargo bench -p dspex-telemetry-benches --bench bridge_performance_bench`, then
//! `cargo xtask bench-report`.
//!
//! | bench | what it measures |
//! |---|---|
//! | `bridge/bare_pipe_echo_1` | one Python process, framed JSON over its pipes, no pool, no telemetry |
//! | `bridge/uninstrumented_N` | `Pool::call` with no handler attached, N concurrent callers |
//! | `bridge_ops/tool_calculator_*`, `bridge_ops/contract_predict_*`, `bridge_ops/session_set_get_*` | a tool execution, a contract-checked prediction (the predictor sleeps 3–12 ms), a session variable set + get, with telemetry off and on, one caller |
//! | `pool_start/dspy_N` | `Pool::start` of N workers that preload DSPy (`import dspy`, from the test setup's environment, `cargo xtask peers`), until every worker is ready; each worker imports it (in parallel) |
//! | `pool_start/dspy_4_forked` | the same with `fork_workers`: one template imports DSPy, four workers are forked from it |
//! | `python_otel` (after the criterion benches, in `python-otel.json`; alone with `DSPEX_BENCH_ONLY=python_otel`) | the Python side's CPU time per call, read from the OS for the worker process: a call that times one `dspex_span`, in an interpreter without OpenTelemetry and in one with its SDK (the call's context attached and detached, `dspex_worker.tracer_provider()` installed), and a call that times one OpenTelemetry span through the worker's processor |
//! | `bridge/instrumented_N` | `Pool::call` with the DSPex metric catalog attached (spans, pool events, metrics into a windowed recorder; the trace travels to Python), N callers |
//!
//! Both configurations use the same pool (the same worker processes, so the same placement on
//! the machine's cores): the metrics handler is resumed for instrumented batches and paused
//! for uninstrumented ones. Each bench interleaves batches of its own (timed) calls with
//! batches of the other configuration's (untimed).
//!
//! Criterion still samples one configuration for seconds and then the other, and on a small
//! machine their medians drift apart by several percent from run to run. After the criterion
//! benches, the binary runs paired rounds (`dspex_telemetry_benches::paired_rounds`: 600
//! rounds of 400 calls per configuration, alternating, each "on" round compared with its
//! neighbour) at 1, 2 and 8 callers and writes them to `<target>/criterion/bridge-paired.json`;
//! `cargo xtask bench-report` checks the instrumentation target on those. The operations
//! (`bridge_ops`) get paired rounds too, one caller, written to `bridge-ops-paired.json`.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::Criterion;
use dspex_telemetry_benches::{paired_rounds, run_calls, write_result};
use dspex_telemetry_bridge::{Pool, PoolConfig};
use dspex_telemetry_core::Dispatcher;
use dspex_telemetry_metrics::{
    MetricsHandler, RecorderConfig, WindowedRecorder, catalog as metric_catalog,
};
use serde_json::{Value, json};

/// A Python echo server with the pool's framing and JSON work, and nothing else.
const ECHO: &str = r#"
import json, struct, sys
i, o = sys.stdin.buffer, sys.stdout.buffer
while True:
    h = i.read(4)
    if len(h) < 4:
        break
    req = json.loads(i.read(struct.unpack(">I", h)[0]))
    body = json.dumps({"id": req["id"], "ok": True, "result": abs(*req["args"]), "spans": []}).encode()
    o.write(struct.pack(">I", len(body)) + body)
    o.flush()
"#;

fn bare_echo(c: &mut Criterion) {
    let mut child = Command::new("python3")
        .arg("-u")
        .arg("-c")
        .arg(ECHO)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 must be installed");
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut id = 0u64;
    c.benchmark_group("bridge").bench_function("bare_pipe_echo/1", |b| {
        b.iter(|| {
            id += 1;
            let body = serde_json::to_vec(&json!({"id": id, "op": "call", "module": "builtins", "function": "abs", "args": [-3], "kwargs": {}}))
                .expect("json");
            let mut frame = (body.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&body);
            stdin.write_all(&frame).expect("write");
            let mut header = [0u8; 4];
            stdout.read_exact(&mut header).expect("read");
            let mut reply = vec![0u8; u32::from_be_bytes(header) as usize];
            stdout.read_exact(&mut reply).expect("read");
            let reply: Value = serde_json::from_slice(&reply).expect("json");
            assert_eq!(reply["result"], json!(3));
        })
    });
    drop(stdin);
    let _ = child.wait();
}

/// Telemetry on (the DSPex metric catalog attached) or off (no handler attached), on one
/// dispatcher. The handler is attached once and paused/resumed, so that "on" measures the
/// steady state a service runs in (label sets resolved), not re-attaching.
struct Telemetry {
    handler: MetricsHandler,
    on: bool,
}

impl Telemetry {
    fn new(dispatcher: &Dispatcher) -> Self {
        let handler = MetricsHandler::attach(
            dispatcher,
            "metrics",
            metric_catalog::dspex_metrics(),
            1_000,
        )
        .expect("attach");
        handler.pause();
        Telemetry { handler, on: false }
    }

    fn set(&mut self, on: bool) {
        if on != self.on {
            if on {
                self.handler.resume().expect("resume");
            } else {
                self.handler.pause();
            }
            self.on = on;
        }
    }
}

/// Times `calls` calls with telemetry `on` (or off), interleaved in batches with as many
/// untimed calls in the other configuration: both run under the same machine conditions, so
/// drift over the run (frequency, other load) does not fall on one of them.
fn run_interleaved(
    rt: &tokio::runtime::Runtime,
    pool: &Pool,
    telemetry: &mut Telemetry,
    on: bool,
    callers: u64,
    calls: u64,
) -> Duration {
    const BATCH: u64 = 64;
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < calls {
        let batch = BATCH.min(calls - done);
        telemetry.set(on);
        total += run_calls(rt, pool, callers, batch);
        telemetry.set(!on);
        run_calls(rt, pool, callers, batch);
        done += batch;
    }
    telemetry.set(false);
    total
}

/// The pool, its runtime and its telemetry, shared by the criterion benches and the paired
/// rounds (the global recorder can be installed once).
struct Setup {
    rt: tokio::runtime::Runtime,
    recorder: WindowedRecorder,
    telemetry: Telemetry,
    pool: Pool,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Calls run on the runtime's threads: the recorder must be the global one.
    let recorder = WindowedRecorder::new(RecorderConfig::default()).expect("config");
    metrics::set_global_recorder(recorder.clone()).expect("no recorder installed yet");
    let dispatcher = Dispatcher::new();
    let telemetry = Telemetry::new(&dispatcher);
    let pool = rt
        .block_on(Pool::start(PoolConfig {
            size: 2,
            health_interval: None,
            dispatcher: dispatcher.clone(),
            // The bridge example's tools and predictor, for the operation benches.
            python_path: vec![
                std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../dspex-telemetry-bridge/examples/python"),
            ],
            preload: vec!["workload".into()],
            ..PoolConfig::default()
        }))
        .expect("python3 must be installed");
    Setup {
        rt,
        recorder,
        telemetry,
        pool,
    }
}

fn pool_round_trip(c: &mut Criterion, s: &mut Setup) {
    let mut g = c.benchmark_group("bridge");
    for callers in [1u64, 2, 8] {
        g.bench_function(format!("uninstrumented/{callers}"), |b| {
            b.iter_custom(|n| run_interleaved(&s.rt, &s.pool, &mut s.telemetry, false, callers, n))
        });
        g.bench_function(format!("instrumented/{callers}"), |b| {
            b.iter_custom(|n| run_interleaved(&s.rt, &s.pool, &mut s.telemetry, true, callers, n))
        });
    }
    g.finish();
}

/// A tool execution, a contract-checked prediction and a session variable set + get, each
/// with telemetry off and on (interleaved as the round trips are), one caller.
fn operations(c: &mut Criterion, s: &mut Setup) {
    use dspex_telemetry_bridge::{Sessions, Signature, ToolCall};
    use serde_json::{Map, json};

    let dispatcher = s.pool.config().dispatcher.clone();
    let sessions = Sessions::new(dispatcher, Duration::from_secs(600));
    let session = sessions.create();
    let signature =
        Signature::parse("question: str -> answer: str, confidence: float").expect("signature");
    let mut g = c.benchmark_group("bridge_ops");
    for on in [false, true] {
        let label = if on { "instrumented" } else { "uninstrumented" };
        s.telemetry.set(on);
        g.bench_function(format!("tool_calculator/{label}"), |b| {
            b.iter(|| {
                s.rt.block_on(s.pool.execute_tool(
                    "calculator",
                    vec![json!("6 * 7")],
                    ToolCall::default(),
                ))
                .expect("tool")
            })
        });
        g.bench_function(format!("contract_predict/{label}"), |b| {
            b.iter(|| {
                let mut inputs = Map::new();
                inputs.insert("question".into(), json!("what is telemetry?"));
                s.rt.block_on(s.pool.predict(&signature, "workload", "predict", inputs))
                    .expect("predict")
            })
        });
        g.bench_function(format!("session_set_get/{label}"), |b| {
            b.iter(|| {
                sessions
                    .set(&session, "answer", json!("forty-two"))
                    .expect("set");
                sessions.get(&session, "answer").expect("get")
            })
        });
    }
    s.telemetry.set(false);
    g.finish();
}

/// The operations of [`operations`] in paired rounds (telemetry off and on alternating, see
/// `dspex_telemetry_benches::paired_rounds_of`), one caller, written to
/// `<target>/criterion/bridge-ops-paired.json` for `cargo xtask bench-report`.
fn paired_operations(s: &mut Setup, quick: bool) {
    use dspex_telemetry_benches::paired_rounds_of;
    use dspex_telemetry_bridge::{Sessions, Signature, ToolCall};
    use serde_json::{Map, json};
    use std::time::Instant;

    s.telemetry.set(false);
    let dispatcher = s.pool.config().dispatcher.clone();
    let sessions = Sessions::new(dispatcher, Duration::from_secs(600));
    let session = sessions.create();
    let signature =
        Signature::parse("question: str -> answer: str, confidence: float").expect("signature");
    let (pool, rt) = (&s.pool, &s.rt);
    let tool = |n: u64| {
        let start = Instant::now();
        for _ in 0..n {
            rt.block_on(pool.execute_tool("calculator", vec![json!("6 * 7")], ToolCall::default()))
                .expect("tool");
        }
        start.elapsed()
    };
    let predict = |n: u64| {
        let start = Instant::now();
        for _ in 0..n {
            let mut inputs = Map::new();
            inputs.insert("question".into(), json!("what is telemetry?"));
            rt.block_on(pool.predict(&signature, "workload", "predict", inputs))
                .expect("predict");
        }
        start.elapsed()
    };
    let session_set_get = |n: u64| {
        let start = Instant::now();
        for _ in 0..n {
            sessions
                .set(&session, "answer", json!("forty-two"))
                .expect("set");
            sessions.get(&session, "answer").expect("get");
        }
        start.elapsed()
    };
    // (name, rounds, operations per round): the prediction sleeps 3–12 ms.
    type Operation<'a> = &'a dyn Fn(u64) -> Duration;
    let plan: [(&str, usize, u64, Operation<'_>); 3] = [
        ("tool_calculator", 300, 100, &tool),
        ("contract_predict", 60, 10, &predict),
        ("session_set_get", 300, 2_000, &session_set_get),
    ];
    let handler = &s.telemetry.handler;
    let results: Vec<_> = plan
        .into_iter()
        .map(|(name, rounds, per_round, run)| {
            let rounds = if quick { 2 } else { rounds };
            let p = paired_rounds_of(handler, 1, rounds, per_round, run);
            println!(
                "bridge_ops/paired/{name}: wall on/off median {:.3} (quartiles {:.3}–{:.3}); off {:.2} µs, on {:.2} µs per operation",
                p.wall.ratio, p.wall.ratio_q1, p.wall.ratio_q3, p.wall.off_us, p.wall.on_us
            );
            let mut row = p.to_json();
            row["operation"] = json!(name);
            row
        })
        .collect();
    if !quick {
        write_result("bridge-ops-paired.json", &Value::from(results));
    }
}

/// Paired rounds with telemetry on and off at 1, 2 and 8 callers (see
/// `dspex_telemetry_benches::paired_rounds`), written to `<target>/criterion/bridge-paired.json`
/// for `cargo xtask bench-report`, which checks the instrumentation target on them.
fn paired(s: &mut Setup, rounds: usize, write: bool) {
    s.telemetry.set(false);
    let results: Vec<_> = [1u64, 2, 8]
        .into_iter()
        .map(|callers| {
            let p = paired_rounds(&s.rt, &s.pool, &s.telemetry.handler, callers, rounds, 400);
            println!(
                "bridge/paired/{callers}: wall on/off median {:.3} (quartiles {:.3}–{:.3}); off {:.1} µs, on {:.1} µs per call",
                p.wall.ratio, p.wall.ratio_q1, p.wall.ratio_q3, p.wall.off_us, p.wall.on_us
            );
            p.to_json()
        })
        .collect();
    if !write {
        return;
    }
    write_result("bridge-paired.json", &Value::from(results));
}

/// The interpreter of the test setup's DSPy environment (`cargo xtask peers` makes it).
fn dspy_python() -> std::path::PathBuf {
    let peers = std::env::var_os("DSPEX_TEST_PEERS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-peers")
        });
    let python = peers.join("dspy-venv/bin/python");
    assert!(
        python.is_file(),
        "no DSPy environment at {}: run `cargo xtask peers`, which installs dspy",
        python.display()
    );
    python
}

/// How long N workers that preload DSPy take to be ready: started in parallel, 4 take about as
/// long as 1 where there is a core for each; forked from a template, about as long as 1
/// whatever the cores.
fn pool_start(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let python = dspy_python().to_string_lossy().into_owned();
    let mut group = c.benchmark_group("pool_start");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(10));
    for (size, fork_workers) in [(1, false), (4, false), (4, true)] {
        let name = match fork_workers {
            true => format!("dspy_{size}_forked"),
            false => format!("dspy_{size}"),
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let mut ready = Duration::ZERO;
                for _ in 0..iterations {
                    let began = std::time::Instant::now();
                    let pool = rt
                        .block_on(Pool::start(PoolConfig {
                            size,
                            fork_workers,
                            python: python.clone(),
                            preload: vec!["dspy".into()],
                            dispatcher: Dispatcher::new(),
                            health_interval: None,
                            startup_timeout: Duration::from_secs(60),
                            ..PoolConfig::default()
                        }))
                        .expect("workers with DSPy start");
                    ready += began.elapsed();
                    rt.block_on(pool.shutdown());
                }
                ready
            });
        });
    }
    group.finish();
}

/// The Python side's cost per call with OpenTelemetry's SDK absent and present: a pool of one
/// worker per interpreter (the system's `python3` without it; the test setup's environment
/// with it, `cargo xtask peers`), a span sink attached so that the worker times its spans,
/// and the worker's CPU time (user and system, from the OS) over rounds of calls. Written to
/// `<target>/criterion/python-otel.json` for `cargo xtask bench-report`.
fn python_otel(rt: &tokio::runtime::Runtime, quick: bool) {
    let otel_python = dspy_python()
        .parent()
        .and_then(|bin| bin.parent())
        .and_then(|venv| venv.parent())
        .map(|peers| peers.join("dspy-otel-venv/bin/python"))
        .filter(|p| p.is_file())
        .expect("no Python environment with OpenTelemetry: run `cargo xtask peers`");
    let (rounds, calls) = if quick { (2, 20) } else { (15, 5_000) };
    let variants = [
        ("absent", "python3".to_string(), "work"),
        (
            "present",
            otel_python.to_string_lossy().into_owned(),
            "work",
        ),
        (
            "present_otel_span",
            otel_python.to_string_lossy().into_owned(),
            "work_otel_span",
        ),
    ];
    let mut rows = Vec::new();
    for (variant, python, function) in variants {
        let dispatcher = Dispatcher::new();
        dispatcher
            .attach_span_sink("discard", dspex_telemetry_benches::KeepsNothing)
            .unwrap();
        let pool = rt
            .block_on(Pool::start(PoolConfig {
                size: 1,
                python,
                python_path: vec![
                    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python"),
                ],
                preload: vec!["otel_cost".into()],
                dispatcher,
                health_interval: None,
                ..PoolConfig::default()
            }))
            .expect("the worker starts");
        let call = |n: u64| {
            rt.block_on(async {
                let ctx = dspex_telemetry_core::TraceContext::new_root();
                for _ in 0..n {
                    use dspex_telemetry_core::WithTraceContext;
                    pool.call("otel_cost", function, Vec::<Value>::new())
                        .with_trace_context(ctx.clone())
                        .await
                        .expect("the call succeeds");
                }
            })
        };
        call(calls / 10 + 1);
        let mut cpu_us = Vec::new();
        let mut wall_us = Vec::new();
        for _ in 0..rounds {
            let before = pool.worker_usage()[0]
                .expect("the worker's CPU time")
                .cpu_seconds;
            let began = std::time::Instant::now();
            call(calls);
            wall_us.push(began.elapsed().as_secs_f64() * 1e6 / calls as f64);
            let after = pool.worker_usage()[0]
                .expect("the worker's CPU time")
                .cpu_seconds;
            cpu_us.push((after - before) * 1e6 / calls as f64);
        }
        rt.block_on(pool.shutdown());
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (cpu, wall) = (median(&mut cpu_us), median(&mut wall_us));
        println!("python_otel/{variant}: worker CPU {cpu:.1} µs, wall {wall:.1} µs per call");
        rows.push(json!({"variant": variant, "cpu_us": cpu, "wall_us": wall, "calls": calls, "rounds": rounds}));
    }
    if !quick {
        write_result("python-otel.json", &Value::from(rows));
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .sample_size(30)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs this with `--test`: one quick pass of everything.
    let quick = args.iter().any(|a| a == "--test" || a == "--list");
    // `DSPEX_BENCH_ONLY=python_otel` runs that measurement alone.
    if std::env::var("DSPEX_BENCH_ONLY").as_deref() == Ok("python_otel") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        python_otel(&rt, quick);
        return;
    }
    let mut c = config().configure_from_args();
    bare_echo(&mut c);
    let mut s = setup();
    pool_round_trip(&mut c, &mut s);
    operations(&mut c, &mut s);
    pool_start(&mut c, &s.rt);
    c.final_summary();
    if !args.iter().any(|a| a == "--list") {
        // A quick pass checks that the rounds run, and keeps the last real results.
        paired(&mut s, if quick { 2 } else { 600 }, !quick);
        paired_operations(&mut s, quick);
        python_otel(&s.rt, quick);
    }
    let calls = s
        .recorder
        .operation("dspex_bridge_call_method", &[("method", "builtins.abs")])
        .map_or(0, |op| op.count);
    assert!(calls > 0, "the instrumented runs were recorded");
    s.rt.block_on(s.pool.shutdown());
}
