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

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use dspex_telemetry::bridge::{Pool, PoolConfig, Sessions, Signature, ToolCall};
use dspex_telemetry::core::{CorrelationId, Dispatcher, TraceContext, WithTraceContext};
use dspex_telemetry::{Config, Telemetry};
use dspex_telemetry_benches::{quartiles, sinks, write_result};
use serde_json::{Map, json};

struct Stack {
    pool: Pool,
    sessions: Arc<Sessions>,
    session: String,
}

fn pool(rt: &tokio::runtime::Runtime, dispatcher: &Dispatcher) -> Stack {
    let pool = rt
        .block_on(Pool::start(PoolConfig {
            size: 2,
            health_interval: Some(Duration::from_secs(1)),
            python_path: vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python")],
            preload: vec!["three_layer".into()],
            dispatcher: dispatcher.clone(),
            ..PoolConfig::default()
        }))
        .expect("python3 must be installed");
    let sessions = Arc::new(Sessions::new(dispatcher.clone(), Duration::from_secs(3600)));
    let session = sessions.create();
    Stack {
        pool,
        sessions,
        session,
    }
}

/// One application request, end to end.
async fn request(stack: &Stack, signature: &Signature, n: u64) {
    let id = CorrelationId::parse(&format!("request-{n}")).expect("id");
    async {
        let mut inputs = Map::new();
        inputs.insert("question".into(), json!("what is telemetry?"));
        let answer = stack
            .pool
            .predict(signature, "three_layer", "predict", inputs)
            .await
            .expect("predict");
        stack
            .pool
            .execute_tool("lookup", vec![json!("k")], ToolCall::default())
            .await
            .expect("tool");
        stack
            .sessions
            .set(&stack.session, "answer", answer["answer"].clone())
            .expect("set");
        stack.sessions.get(&stack.session, "answer").expect("get");
    }
    .with_trace_context(TraceContext::new_root_with_correlation(id))
    .await
}

/// `count` requests over `callers` tasks; the elapsed time.
fn run(
    rt: &tokio::runtime::Runtime,
    stack: &Arc<Stack>,
    signature: &Signature,
    callers: u64,
    count: u64,
) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|c| {
                let (stack, signature) = (stack.clone(), signature.clone());
                let share = count / callers + u64::from(c < count % callers);
                tokio::spawn(async move {
                    for n in 0..share {
                        request(&stack, &signature, n).await;
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let quick = args.iter().any(|a| a == "--test");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (udp, http) = sinks();
    let config = Config::from_toml(&format!(
        "[alerts]\nevaluation_interval_ms = 1000\n\
         [reporter]\nreporting_interval = 1000\n\
         [[reporter.backends]]\ntype = \"statsd\"\nhost = \"127.0.0.1\"\nport = {udp}\n\
         [[reporter.backends]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:0\"\n\
         [[reporter.backends]]\ntype = \"opentelemetry\"\nenabled = true\nendpoint = \"http://127.0.0.1:{http}\"\n"
    ))
    .expect("config");
    let on_dispatcher = Dispatcher::new();
    let telemetry = rt
        .block_on(Telemetry::start(&config, &on_dispatcher))
        .expect("the stack starts");
    let on = Arc::new(pool(&rt, &on_dispatcher));
    let off = Arc::new(pool(&rt, &Dispatcher::new()));
    let signature =
        Signature::parse("question: str -> answer: str, confidence: float").expect("signature");

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

    // Paired rounds: each "on" round against its neighbour "off" round.
    let rounds = if quick { 2 } else { 200 };
    let mut results = Vec::new();
    for callers in [1u64, 8] {
        let mut ratios = Vec::new();
        let (mut on_us, mut off_us) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            for k in 0..2 {
                let is_on = (k + round) % 2 == 1;
                let stack = if is_on { &on } else { &off };
                let per = run(&rt, stack, &signature, callers, 200).as_secs_f64() * 1e6 / 200.0;
                if is_on {
                    on_us.push(per)
                } else {
                    off_us.push(per)
                }
            }
            let (a, b) = (off_us[off_us.len() - 1], on_us[on_us.len() - 1]);
            ratios.push(b / a);
        }
        let ratio = quartiles(ratios).1;
        let row = json!({
            "callers": callers,
            "off_us": quartiles(off_us).1,
            "on_us": quartiles(on_us).1,
            "ratio": ratio,
            "telemetry_share": 1.0 - 1.0 / ratio,
        });
        println!("three_layer/paired/{callers}: {row}");
        results.push(row);
    }
    let window = telemetry
        .window()
        .operation("dspex_tools_execute", &[("tool_name", "lookup")])
        .map_or(0, |s| s.count);
    assert!(window > 0, "the instrumented requests were recorded");
    rt.block_on(on.pool.shutdown());
    rt.block_on(off.pool.shutdown());
    rt.block_on(telemetry.shutdown());
    if quick {
        return;
    }
    write_result("three-layer.json", &serde_json::Value::from(results));
}
