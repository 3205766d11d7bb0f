//! Real DSPy programs (dspy 3.4.1, from the test setup's environment) through the pool,
//! offline: litellm's mock response stands in for the model and reports token usage.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dspex_telemetry_bridge::{Args, BridgeError, DspyModule, Pool, PoolConfig};
use dspex_telemetry_core::{
    Dispatcher, Event, EventName, TraceContext, WithTraceContext, catalog, context,
};
use serde_json::{Value, json};

/// The interpreter of the test setup's DSPy environment (`cargo xtask peers` makes it).
fn dspy_python() -> String {
    let peers = std::env::var_os("DSPEX_TEST_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-peers"));
    let python = peers.join("dspy-venv/bin/python");
    assert!(
        python.is_file(),
        "no DSPy environment at {}: run `cargo xtask peers` (or `cargo xtask test`), which installs dspy",
        python.display()
    );
    python.to_string_lossy().into_owned()
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("python")
}

#[derive(Debug, Clone)]
struct Seen {
    name: String,
    measurements: Vec<(String, f64)>,
    metadata: Vec<(String, String)>,
    trace: Option<TraceContext>,
}

impl Seen {
    fn md(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn m(&self, key: &str) -> Option<f64> {
        self.measurements
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn recording_dispatcher() -> (Dispatcher, Log) {
    let d = Dispatcher::new();
    let log: Log = Arc::default();
    let sink = log.clone();
    d.attach_prefix(
        "rec",
        EventName::from_static(&["dspex"]),
        move |e: &Event<'_>| {
            sink.lock().unwrap().push(Seen {
                name: e.name().to_string(),
                measurements: e
                    .measurements()
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.as_f64()))
                    .collect(),
                metadata: e
                    .metadata()
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_string()))
                    .collect(),
                trace: context::current(),
            })
        },
    )
    .unwrap();
    (d, log)
}

fn events(log: &Log, name: &str) -> Vec<Seen> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.name == name)
        .cloned()
        .collect()
}

async fn dspy_pool(d: &Dispatcher, size: usize) -> Pool {
    dspy_pool_with(d, size, false).await
}

async fn dspy_pool_with(d: &Dispatcher, size: usize, fork_workers: bool) -> Pool {
    Pool::start(PoolConfig {
        size,
        fork_workers,
        python: dspy_python(),
        python_path: vec![fixtures()],
        preload: vec!["dspy_offline".into()],
        dispatcher: d.clone(),
        health_interval: None,
        // litellm's first import takes seconds.
        startup_timeout: Duration::from_secs(60),
        call_timeout: Duration::from_secs(60),
        ..PoolConfig::default()
    })
    .await
    .expect("a worker with DSPy must start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_and_chain_of_thought_take_keyword_arguments_and_return_their_fields() {
    let (d, log) = recording_dispatcher();
    let pool = dspy_pool(&d, 1).await;

    // The spec's flow: Predict.new(signature), then execute(predictor, %{question: …}).
    let predict = DspyModule::predict(&pool, "question -> answer")
        .await
        .unwrap();
    let prediction = predict
        .execute(Args::new().kwarg("question", "What is 2 + 2?"))
        .await
        .unwrap();
    assert_eq!(Value::Object(prediction), json!({"answer": "4"}));

    let cot = DspyModule::chain_of_thought(&pool, "question -> answer")
        .await
        .unwrap();
    let mut inputs = serde_json::Map::new();
    inputs.insert("question".into(), json!("What is 2 + 2?"));
    let prediction = cot.execute(inputs).await.unwrap();
    assert_eq!(
        Value::Object(prediction),
        json!({"reasoning": "Two plus two is four.", "answer": "4"})
    );

    // The same through the general calls: a Predict created with its signature, its
    // `forward` called with a keyword argument.
    let predictor = pool
        .create_instance("dspy", "Predict", vec![json!("question -> answer")])
        .await
        .unwrap();
    let out = pool
        .call_method(
            &predictor,
            "forward",
            Args::new().kwarg("question", "And 3 + 1?"),
        )
        .await
        .unwrap();
    assert_eq!(out, json!({"answer": "4"}));

    // Each LM call is an event with the model and the tokens the model reported.
    let lm = events(&log, "dspex.lm.call");
    assert_eq!(lm.len(), 3, "{lm:?}");
    for call in &lm {
        assert_eq!(call.md("model"), Some("openai/gpt-4o-mini"));
        assert_eq!(call.md("status"), Some("ok"));
        assert_eq!(call.m("prompt_tokens"), Some(10.0));
        assert_eq!(call.m("completion_tokens"), Some(20.0));
        assert_eq!(call.m("total_tokens"), Some(30.0));
        assert!(call.m("duration").unwrap() > 0.0);
    }
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_model_fails_the_call_and_its_lm_call_and_spans_are_reported() {
    let (d, log) = recording_dispatcher();
    let pool = dspy_pool(&d, 1).await;
    let predict = DspyModule::predict(&pool, "question -> answer")
        .await
        .unwrap();
    assert_eq!(
        pool.call("dspy_offline", "use_failing_lm", vec![])
            .await
            .unwrap(),
        json!(true)
    );
    let ctx = TraceContext::new_root();
    let outcome = predict
        .execute(Args::new().kwarg("question", "What is 2 + 2?"))
        .with_trace_context(ctx.clone())
        .await;
    let Err(BridgeError::Python { kind, message, .. }) = &outcome else {
        panic!("{outcome:?}");
    };
    assert!(kind.starts_with("LM"), "{kind}: {message}");
    assert!(message.contains("the model is down"), "{message}");

    let lm = events(&log, "dspex.lm.call");
    assert_eq!(lm.len(), 1, "{lm:?}");
    assert_eq!(lm[0].md("status"), Some("error"));
    assert!(lm[0].md("error").unwrap().starts_with("LM"), "{lm:?}");
    assert!(lm[0].md("message").unwrap().contains("the model is down"));
    assert_eq!(lm[0].m("prompt_tokens"), None, "no usage for a failed call");
    // In the call's trace.
    assert_eq!(lm[0].trace.as_ref().unwrap().trace_id(), ctx.trace_id());

    // The spans of the failed call came back: the worker's side, Predict, the LM call.
    let trace = ctx.trace_id().to_string();
    let spans: Vec<Seen> = events(&log, "dspex.python.span")
        .into_iter()
        .filter(|s| s.md("trace_id") == Some(trace.as_str()))
        .collect();
    assert_eq!(spans.len(), 3, "{spans:?}");
    let names: Vec<&str> = spans.iter().filter_map(|s| s.md("name")).collect();
    assert!(names.contains(&"Predict.forward"), "{names:?}");
    assert!(names.contains(&"chat openai/gpt-4o-mini"), "{names:?}");
    for span in &spans {
        assert_eq!(span.md("status"), Some("error"), "{span:?}");
    }
    assert_eq!(
        events(&log, "dspex.bridge.call.exception")
            .last()
            .unwrap()
            .md("error"),
        Some("python_exception")
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_and_lm_spans_nest_under_the_bridge_call() {
    let (d, log) = recording_dispatcher();
    let pool = dspy_pool(&d, 1).await;
    let cot = DspyModule::chain_of_thought(&pool, "question -> answer")
        .await
        .unwrap();
    let ctx = TraceContext::new_root();
    cot.execute(Args::new().kwarg("question", "What is 2 + 2?"))
        .with_trace_context(ctx.clone())
        .await
        .unwrap();
    // Creating the module was a call (and a trace) of its own.
    let trace = ctx.trace_id().to_string();
    let spans: Vec<Seen> = events(&log, "dspex.python.span")
        .into_iter()
        .filter(|s| s.md("trace_id") == Some(trace.as_str()))
        .collect();
    assert_eq!(spans.len(), 4, "{spans:?}");
    let by_name = |name: &str| {
        spans
            .iter()
            .find(|s| s.md("name") == Some(name))
            .unwrap_or_else(|| panic!("no span {name}: {spans:?}"))
    };
    let worker = by_name("python dspy.ChainOfThought.__call__");
    let cot_span = by_name("ChainOfThought.forward");
    let predict = by_name("Predict.forward");
    let lm = by_name("chat openai/gpt-4o-mini");
    assert_eq!(cot_span.md("parent_span_id"), worker.md("span_id"));
    assert_eq!(predict.md("parent_span_id"), cot_span.md("span_id"));
    assert_eq!(lm.md("parent_span_id"), predict.md("span_id"));
    assert_eq!(lm.md("gen_ai.request.model"), Some("openai/gpt-4o-mini"));
    assert_eq!(lm.md("gen_ai.usage.input_tokens"), Some("10"));
    assert_eq!(lm.md("gen_ai.usage.output_tokens"), Some("20"));
    // The LM call's event is in the same trace.
    let lm_call = events(&log, &catalog::LM_CALL.to_string()).pop().unwrap();
    assert_eq!(lm_call.trace.unwrap().trace_id(), ctx.trace_id());
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pydantic_models_and_examples_come_back_as_data() {
    let (d, log) = recording_dispatcher();
    let pool = dspy_pool(&d, 1).await;
    let out = pool.call("dspy_offline", "verdict", vec![]).await.unwrap();
    assert_eq!(
        out,
        json!({
            "verdict": {"answer": "4", "confidence": 0.9},
            "example": {"question": "2+2?", "answer": "4"},
        })
    );
    // Predict.batch: a list of predictions, each as its fields; each LM call counted.
    let out = pool
        .call(
            "dspy_offline",
            "batch",
            vec![json!(["1 + 3?", "2 + 2?", "0 + 4?"])],
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        json!([{"answer": "4"}, {"answer": "4"}, {"answer": "4"}])
    );
    // Made on DSPy's threads, the three LM calls still belong to the request.
    let lm = events(&log, "dspex.lm.call");
    assert_eq!(lm.len(), 3, "{lm:?}");
    assert!(
        lm.iter().all(|c| c.m("total_tokens") == Some(30.0)),
        "{lm:?}"
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_that_preload_dspy_start_together() {
    // When each worker's start began and ended, from its `spawned` event (emitted when it is
    // ready, with its `startup_time`).
    let d = Dispatcher::new();
    let starts: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let sink = starts.clone();
    d.attach(
        "starts",
        catalog::POOL_WORKER_SPAWNED,
        move |e: &Event<'_>| {
            let ready = Instant::now();
            let took = e.measurements().get("startup_time").unwrap().as_f64();
            let began = ready - Duration::from_nanos(took as u64);
            sink.lock().unwrap().push((began, ready));
        },
    )
    .unwrap();
    let pool = dspy_pool(&d, 4).await;
    pool.shutdown().await;
    let starts = starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 4);
    // In parallel: every worker's start began before the first was ready (one after another,
    // each would begin after the previous one was ready). How long they take together is in
    // the bench report (`pool_start`), not timed here.
    let last_began = starts.iter().map(|s| s.0).max().unwrap();
    let first_ready = starts.iter().map(|s| s.1).min().unwrap();
    assert!(
        last_began < first_ready,
        "a worker's start began {:?} after the first was ready",
        last_began - first_ready
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_forked_from_a_dspy_template_run_programs_and_report_their_lm_calls() {
    let (d, log) = recording_dispatcher();
    let began = Instant::now();
    let pool = dspy_pool_with(&d, 4, true).await;
    eprintln!("4 forked DSPy workers ready in {:?}", began.elapsed());
    // Modules made in whichever worker is free (each stays in its worker).
    for _ in 0..12 {
        let predict = DspyModule::predict(&pool, "question -> answer")
            .await
            .unwrap();
        let prediction = predict
            .execute(Args::new().kwarg("question", "What is 2 + 2?"))
            .await
            .unwrap();
        assert_eq!(Value::Object(prediction), json!({"answer": "4"}));
    }
    let lm = events(&log, "dspex.lm.call");
    assert_eq!(lm.len(), 12, "{lm:?}");
    assert!(lm.iter().all(|c| c.m("total_tokens") == Some(30.0)));
    pool.shutdown().await;
}
