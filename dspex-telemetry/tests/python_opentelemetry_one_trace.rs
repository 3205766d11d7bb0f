//! A service traced with `tracing` + `tracing-opentelemetry` calls a real DSPy program that
//! OpenInference instruments, in a worker whose OpenTelemetry spans come back to Rust: a real
//! OTLP decoder receives one trace, the service's span → the bridge call → the Python call →
//! DSPy's module → … → the LM call, every parent present. The same across `Predict.batch` on
//! four threads, and for a module that raises (error status, the exception, its spans kept).
//! And a worker without OpenTelemetry works as it did.

#[path = "common/service_pipeline.rs"]
mod service_pipeline;
#[path = "../../dspex-telemetry-exporters/tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use dspex_telemetry::bridge::{Pool, PoolConfig};
use dspex_telemetry::core::Dispatcher;
use dspex_telemetry::exporters::otlp::{OtlpConfig, OtlpTraces};
use serde_json::{Value, json};
use support::OtlpReceiver;
use tracing::Instrument;

fn python(venv: &str) -> PathBuf {
    let peers = std::env::var_os("DSPEX_TEST_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-peers"));
    let python = peers.join(venv).join("bin/python");
    assert!(
        python.is_file(),
        "no Python environment at {}: run `cargo xtask peers` (or `cargo xtask test`), which installs it",
        python.display()
    );
    python
}

/// What one request of the service sent to the collector: every span, ours, the service's and
/// Python's, and the call's result.
struct Run {
    spans: Vec<Value>,
    result: Result<Value, String>,
}

/// Starts our stack and the service's pipeline (both exporting to one real OTLP decoder) and a
/// worker running `python`, then calls `function(args)` inside the service's `handle_request`.
async fn run(python: PathBuf, function: &str, args: Vec<Value>) -> Run {
    let receiver = OtlpReceiver::start().await;
    let endpoint = format!("http://{}", receiver.addr);
    // Our spans, from a dispatcher of this test's own (the tests of this file may share a
    // process).
    let dispatcher = Dispatcher::new();
    let ours = OtlpTraces::start(
        OtlpConfig {
            endpoint: Some(endpoint.clone().into()),
            ..OtlpConfig::default()
        },
        &dispatcher,
        "otlp",
    )
    .expect("our exporter starts");
    // The service's own pipeline, exporting to the same collector.
    let (provider, _subscriber) = service_pipeline::start(&endpoint);
    let (module, function) = function.split_once('.').unwrap();
    let pool = Pool::start(PoolConfig {
        size: 1,
        python: python.to_string_lossy().into_owned(),
        python_path: vec![
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../dspex-telemetry-bridge/tests/python"),
        ],
        preload: vec![module.to_string()],
        dispatcher: dispatcher.clone(),
        health_interval: None,
        ..PoolConfig::default()
    })
    .await
    .expect("a worker starts");

    let result = pool
        .call(module, function, args)
        .instrument(tracing::info_span!("handle_request"))
        .await
        .map_err(|e| e.to_string());

    pool.shutdown().await;
    ours.flush().await;
    tokio::task::spawn_blocking(move || provider.force_flush().expect("the service's spans flush"))
        .await
        .unwrap();
    let spans = receiver.spans().await;
    ours.shutdown().await;
    Run { spans, result }
}

impl Run {
    fn named(&self, name: &str) -> &Value {
        self.spans
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no span {name}: {}", self.names()))
    }

    fn names(&self) -> String {
        let names: Vec<&str> = self
            .spans
            .iter()
            .map(|s| s["name"].as_str().unwrap_or(""))
            .collect();
        names.join(", ")
    }

    /// One trace, and every span's parent is one of its spans (the service's span is the root).
    fn check_one_trace(&self) {
        let traces: BTreeSet<&str> = self
            .spans
            .iter()
            .map(|s| s["trace_id"].as_str().unwrap())
            .collect();
        assert_eq!(traces.len(), 1, "one trace: {:#?}", self.spans);
        let ids: BTreeSet<&str> = self
            .spans
            .iter()
            .map(|s| s["span_id"].as_str().unwrap())
            .collect();
        for span in &self.spans {
            let parent = span["parent_span_id"].as_str().unwrap();
            if parent.is_empty() {
                assert_eq!(span["name"], "handle_request", "the only root");
            } else {
                assert!(
                    ids.contains(parent),
                    "{} names parent {parent}, which is not exported: {}",
                    span["name"],
                    self.names()
                );
            }
        }
    }

    /// The names from `span` up to the root.
    fn ancestry(&self, span: &Value) -> Vec<String> {
        let by_id: BTreeMap<&str, &Value> = self
            .spans
            .iter()
            .map(|s| (s["span_id"].as_str().unwrap(), s))
            .collect();
        let mut names = vec![];
        let mut at = Some(span);
        while let Some(span) = at {
            names.push(span["name"].as_str().unwrap().to_string());
            at = by_id.get(span["parent_span_id"].as_str().unwrap()).copied();
        }
        names
    }

    /// OpenInference's spans of one kind (`LLM`, `CHAIN`, …).
    fn openinference(&self, kind: &str) -> Vec<&Value> {
        self.spans
            .iter()
            .filter(|s| s["attributes"]["openinference.span.kind"] == kind)
            .collect()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn dspy_spans_from_openinference_join_the_services_trace() {
    let run = run(
        python("dspy-otel-venv"),
        "dspy_otel.predict",
        vec![json!("What is 2 + 2?")],
    )
    .await;
    assert_eq!(run.result.as_ref().unwrap()["answer"], "4");
    run.check_one_trace();
    let llm = run.openinference("LLM");
    assert!(!llm.is_empty(), "an LLM span: {}", run.names());
    let ancestry = run.ancestry(llm[0]);
    let call = run.named("dspex.bridge.call");
    assert_eq!(
        call["parent_span_id"],
        run.named("handle_request")["span_id"]
    );
    assert_eq!(
        &ancestry[ancestry.len() - 3..],
        [
            "python dspy_otel.predict",
            "dspex.bridge.call",
            "handle_request"
        ],
        "{ancestry:?}"
    );
    assert!(
        ancestry
            .iter()
            .any(|n| n.contains("Predict") && n.contains("forward")),
        "Predict.forward between the call and the LM: {ancestry:?}"
    );
    // Python's spans: their attributes under their own names.
    let span = llm[0];
    assert!(
        span["attributes"]["llm.model_name"]
            .as_str()
            .is_some_and(|m| m.contains("gpt-4o-mini")),
        "{span:#?}"
    );
    // Python's spans carry their process's resource, the service's spans the service's.
    let (python, service) = (&span["resource"], &call["resource"]);
    assert_eq!(python["telemetry.sdk.language"], "python", "{python:#?}");
    assert_eq!(python["process.runtime.name"], "cpython");
    assert!(
        python["process.runtime.version"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{python:#?}"
    );
    assert!(python["process.pid"].as_i64().is_some_and(|pid| pid > 0));
    assert_eq!(python["service.name"], service["service.name"]);
    assert_eq!(service["telemetry.sdk.language"], "rust");
    assert!(service.get("process.pid").is_none(), "{service:#?}");
    assert_eq!(
        run.named("python dspy_otel.predict")["resource"],
        *python,
        "the call's Python side is the worker's"
    );
    // The worker's own DSPy spans are there too, in the same tree.
    let chat = run.named("chat openai/gpt-4o-mini");
    assert!(run.ancestry(chat).contains(&"handle_request".to_string()));
}

#[tokio::test(flavor = "current_thread")]
async fn predict_batch_on_four_threads_stays_in_the_trace() {
    let questions: Vec<Value> = (0..8).map(|i| json!(format!("What is {i} + 2?"))).collect();
    let run = run(
        python("dspy-otel-venv"),
        "dspy_otel.batch",
        vec![Value::Array(questions)],
    )
    .await;
    assert_eq!(run.result.as_ref().unwrap().as_array().unwrap().len(), 8);
    run.check_one_trace();
    let llm = run.openinference("LLM");
    assert_eq!(llm.len(), 8, "one LLM span per question: {}", run.names());
    for span in llm {
        let ancestry = run.ancestry(span);
        assert_eq!(ancestry.last().map(String::as_str), Some("handle_request"));
        assert!(ancestry.contains(&"python dspy_otel.batch".to_string()));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_module_that_raises_keeps_its_spans_with_error_status_and_the_exception() {
    let run = run(
        python("dspy-otel-venv"),
        "dspy_otel.raising",
        vec![json!("Who?")],
    )
    .await;
    let error = run.result.clone().unwrap_err();
    assert!(error.contains("no record for"), "{error}");
    run.check_one_trace();
    // The LM call before the failure is kept.
    assert!(!run.openinference("LLM").is_empty(), "{}", run.names());
    let failed: Vec<&Value> = run
        .openinference("CHAIN")
        .into_iter()
        .filter(|s| s["name"].as_str().unwrap().starts_with("Lookup"))
        .collect();
    assert!(
        !failed.is_empty(),
        "the raising module's span: {}",
        run.names()
    );
    let span = failed[0];
    assert_eq!(span["status_code"], 2, "error status: {span:#?}");
    let exception = span["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "exception")
        .unwrap_or_else(|| panic!("an exception event: {span:#?}"));
    assert_eq!(exception["attributes"]["exception.type"], "ValueError");
    assert_eq!(
        run.named("python dspy_otel.raising")["status_code"],
        2,
        "the call's own span failed too"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn without_opentelemetry_in_the_worker_nothing_changes() {
    let run = run(
        python("dspy-venv"),
        "bridge_fixtures.opentelemetry_seen",
        vec![],
    )
    .await;
    assert_eq!(
        run.result.clone().unwrap(),
        json!({"api": false, "imported": false}),
        "the worker looked for OpenTelemetry, found none and imported nothing"
    );
    run.check_one_trace();
    assert_eq!(
        run.ancestry(run.named("python bridge_fixtures.opentelemetry_seen")),
        [
            "python bridge_fixtures.opentelemetry_seen",
            "dspex.bridge.call",
            "handle_request"
        ]
    );
}
