//! The three-layer application request (`three_layer_bench` and the `three_layer_parts`
//! example): a trace with a correlation id; a contract-checked prediction (the predictor
//! answers at once); a tool call; a session variable set and get.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dspex_telemetry::Config;
use dspex_telemetry_bridge::{Pool, PoolConfig, Sessions, Signature, ToolCall};
use dspex_telemetry_core::{CorrelationId, Dispatcher, TraceContext, WithTraceContext};
use serde_json::{Map, Value, json};

use crate::{children, cpu_ns_of, own_cpu_ns, quartiles};

/// The stack's configuration with `part` on (see the `three_layer_parts` example): `full` is
/// `three_layer_bench`'s; the backends send to the sinks at `udp` (StatsD) and `http` (OTLP).
pub fn config(part: &str, udp: u16, http: u16) -> Config {
    let statsd =
        format!("[[reporter.backends]]\ntype = \"statsd\"\nhost = \"127.0.0.1\"\nport = {udp}\n");
    let prometheus = "[[reporter.backends]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:0\"\n";
    let otlp = format!(
        "[[reporter.backends]]\ntype = \"opentelemetry\"\nendpoint = \"http://127.0.0.1:{http}\"\n"
    );
    let reporter = "[reporter]\nreporting_interval = 1000\n";
    let handlers = "[telemetry]\nhandlers = [\"metrics\", \"reporter\"]\n";
    let toml = match part {
        "context" => "[telemetry]\nhandlers = []\n".into(),
        // The last two have their span sink attached by the `three_layer_parts` example.
        "window" | "spans_recorded" | "spans_collected" => {
            "[telemetry]\nhandlers = [\"metrics\"]\n".into()
        }
        "prometheus" => format!("{handlers}{reporter}{prometheus}"),
        "statsd" => format!("{handlers}{reporter}{statsd}"),
        "otlp" => format!("{handlers}{reporter}{otlp}"),
        "alerts" => "[telemetry]\nhandlers = [\"metrics\", \"alerts\"]\n\
                     [alerts]\nevaluation_interval_ms = 1000\n"
            .into(),
        "full" => {
            format!("[alerts]\nevaluation_interval_ms = 1000\n{reporter}{statsd}{prometheus}{otlp}")
        }
        other => panic!("unknown part {other:?}: see the three_layer_parts example"),
    };
    Config::from_toml(&toml).expect("config")
}

/// A pool of two workers that preload the bench's Python module, and a session.
pub struct Stack {
    pool: Pool,
    sessions: Arc<Sessions>,
    session: String,
    /// The pool's worker processes.
    pub workers: BTreeSet<u32>,
}

impl Stack {
    /// Starts the pool on `dispatcher`.
    pub fn start(rt: &tokio::runtime::Runtime, dispatcher: &Dispatcher) -> Arc<Stack> {
        let before = children();
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
        let workers = children().difference(&before).copied().collect();
        let sessions = Arc::new(Sessions::new(dispatcher.clone(), Duration::from_secs(3600)));
        let session = sessions.create();
        Arc::new(Stack {
            pool,
            sessions,
            session,
            workers,
        })
    }

    /// Stops the pool.
    pub fn shutdown(&self, rt: &tokio::runtime::Runtime) {
        rt.block_on(self.pool.shutdown());
    }
}

/// The request's contract.
pub fn signature() -> Signature {
    Signature::parse("question: str -> answer: str, confidence: float").expect("signature")
}

/// One application request, end to end.
pub async fn request(stack: &Stack, signature: &Signature, n: u64) {
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
pub fn run(
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

/// Paired rounds of `per_round` requests from `callers` callers, alternating `off` and `on`
/// (the order flipping every round): the medians per request of the wall time, this
/// process's CPU time (the callers, the pools, and every background thread, which run
/// through the "off" rounds too) and the round's workers' CPU time, and the median ratio of
/// each "on" round's wall time to its neighbour's.
pub fn paired(
    rt: &tokio::runtime::Runtime,
    off: &Arc<Stack>,
    on: &Arc<Stack>,
    callers: u64,
    rounds: usize,
    per_round: u64,
) -> Value {
    let signature = signature();
    let mut ratios = Vec::new();
    // [off, on] × [wall, this process's CPU, the workers' CPU], µs per request.
    let mut per: [[Vec<f64>; 3]; 2] = Default::default();
    for round in 0..rounds {
        for k in 0..2 {
            let is_on = (k + round) % 2 == 1;
            let stack = if is_on { on } else { off };
            let (own, theirs) = (own_cpu_ns(), cpu_ns_of(&stack.workers));
            let wall = run(rt, stack, &signature, callers, per_round);
            let spent = [
                wall.as_nanos() as f64,
                (own_cpu_ns() - own) as f64,
                (cpu_ns_of(&stack.workers) - theirs) as f64,
            ];
            for (i, ns) in spent.into_iter().enumerate() {
                per[usize::from(is_on)][i].push(ns / per_round as f64 / 1e3);
            }
        }
        ratios.push(per[1][0][round] / per[0][0][round]);
    }
    let ratio = quartiles(ratios).1;
    let median = |v: &Vec<f64>| quartiles(v.clone()).1;
    let [off_per, on_per] = &per;
    json!({
        "callers": callers,
        "off_us": median(&off_per[0]),
        "on_us": median(&on_per[0]),
        "ratio": ratio,
        "telemetry_share": 1.0 - 1.0 / ratio,
        "rust_cpu_off_us": median(&off_per[1]),
        "rust_cpu_on_us": median(&on_per[1]),
        "workers_cpu_off_us": median(&off_per[2]),
        "workers_cpu_on_us": median(&on_per[2]),
    })
}
