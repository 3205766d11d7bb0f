//! Python's OpenTelemetry in a real worker (the OpenTelemetry SDK installed by the test setup):
//! the call's span is OpenTelemetry's current span in Python (with the caller's tracestate and
//! baggage); the spans OpenTelemetry ends come back with the reply as the call's descendants,
//! with their kind, events and attributes under their own names, nested with the worker's own
//! spans; a span ended after its call goes with the next reply; long attributes are cut; spans
//! that would make a reply too large are dropped, counted and logged, and the call succeeds.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use dspex_telemetry_bridge::{BridgeError, Pool, PoolConfig};
use dspex_telemetry_core::{
    Dispatcher, SpanKind, SpanRecord, SpanSink, SpanStatus, TraceContext, TraceState,
    WithTraceContext,
};
use serde_json::{Value, json};

fn otel_python() -> String {
    let peers = std::env::var_os("DSPEX_TEST_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-peers"));
    let python = peers.join("dspy-otel-venv/bin/python");
    assert!(
        python.is_file(),
        "no Python environment with OpenTelemetry at {}: run `cargo xtask peers` (or `cargo xtask test`)",
        python.display()
    );
    python.to_string_lossy().into_owned()
}

/// A span as a sink saw it.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    span_id: String,
    parent: Option<String>,
    name: String,
    kind: SpanKind,
    error: Option<String>,
    attributes: Vec<(String, String)>,
    events: Vec<(String, Vec<(String, String)>)>,
}

#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Span>>>);

impl SpanSink for Spans {
    fn on_end(&self, span: &SpanRecord<'_>) {
        let mut name = String::new();
        span.name.for_each_part(|p| name.push_str(p));
        self.0.lock().unwrap().push(Span {
            trace_id: span.trace_id.to_string(),
            span_id: span.span_id.to_string(),
            parent: span.parent_span_id.map(|p| p.to_string()),
            name,
            kind: span.kind,
            error: match span.status {
                SpanStatus::Error { message, .. } => Some(message.to_string()),
                _ => None,
            },
            attributes: span
                .attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            events: span
                .events
                .iter()
                .map(|e| {
                    let attributes = e
                        .attributes
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    (e.name.to_string(), attributes)
                })
                .collect(),
        });
    }
}

impl Spans {
    fn named(&self, name: &str) -> Span {
        let spans = self.0.lock().unwrap();
        spans
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no span {name}: {spans:#?}"))
    }
    fn all(&self) -> Vec<Span> {
        self.0.lock().unwrap().clone()
    }
}

impl Span {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A worker with the OpenTelemetry SDK; its spans reach the returned sink when `listening`.
async fn pool(max_frame_bytes: usize, listening: bool) -> (Pool, Spans) {
    let d = Dispatcher::new();
    let spans = Spans::default();
    if listening {
        d.attach_span_sink("spans", spans.clone()).unwrap();
    }
    let pool = Pool::start(PoolConfig {
        size: 1,
        python: otel_python(),
        python_path: vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python")],
        preload: vec!["otel_fixtures".into()],
        dispatcher: d,
        max_frame_bytes,
        health_interval: None,
        ..PoolConfig::default()
    })
    .await
    .expect("a worker with the OpenTelemetry SDK starts");
    (pool, spans)
}

fn caller() -> TraceContext {
    let mut ctx = TraceContext::new_root()
        .with_tracestate(TraceState::parse(["vendor=opaque,other=2"]).unwrap());
    ctx.add_baggage("tenant", "acme").unwrap();
    ctx.child()
}

#[tokio::test]
async fn python_spans_join_the_call_with_their_kind_events_and_attributes() {
    let (pool, spans) = pool(16 * 1024 * 1024, true).await;
    let ctx = caller();
    let seen = pool
        .call("otel_fixtures", "nested", vec![])
        .with_trace_context(ctx.clone())
        .await
        .unwrap();
    pool.shutdown().await;

    let call = spans.named("dspex.bridge.call");
    let python = spans.named("python otel_fixtures.nested");
    let (outer, middle, inner) = (
        spans.named("outer"),
        spans.named("middle"),
        spans.named("inner"),
    );
    // In Python, the call's span was OpenTelemetry's current one, with the caller's state.
    assert_eq!(seen["trace_id"], json!(ctx.trace_id().to_string()));
    assert_eq!(seen["span_id"], json!(python.span_id));
    assert_eq!(seen["remote"], json!(true));
    assert_eq!(seen["tracestate"], json!("vendor=opaque,other=2"));
    assert_eq!(seen["baggage"], json!({"tenant": "acme"}));
    // Back in Rust: one tree, the worker's span between OpenTelemetry's two.
    for span in spans.all() {
        assert_eq!(span.trace_id, ctx.trace_id().to_string(), "{span:?}");
    }
    assert_eq!(python.parent.as_deref(), Some(call.span_id.as_str()));
    assert_eq!(outer.parent.as_deref(), Some(python.span_id.as_str()));
    assert_eq!(middle.parent.as_deref(), Some(outer.span_id.as_str()));
    assert_eq!(inner.parent.as_deref(), Some(middle.span_id.as_str()));
    assert_eq!(outer.kind, SpanKind::Client);
    assert_eq!(inner.kind, SpanKind::Internal);
    assert_eq!(outer.attribute("rows"), Some("3"), "{outer:?}");
    assert_eq!(
        outer.events,
        [(
            "retry".to_string(),
            vec![("attempt".to_string(), "2".to_string())]
        )]
    );
}

#[tokio::test]
async fn a_span_that_raises_comes_back_failed_with_its_exception() {
    let (pool, spans) = pool(16 * 1024 * 1024, true).await;
    let error = pool
        .call("otel_fixtures", "failing", vec![])
        .with_trace_context(caller())
        .await
        .unwrap_err();
    assert!(matches!(error, BridgeError::Python { ref kind, .. } if kind == "KeyError"));
    pool.shutdown().await;
    let failing = spans.named("failing");
    assert_eq!(failing.error.as_deref(), Some("KeyError: 'missing'"));
    let (name, attributes) = &failing.events[0];
    assert_eq!(name, "exception");
    assert!(attributes.contains(&("exception.type".to_string(), "KeyError".to_string())));
}

#[tokio::test]
async fn a_span_that_ends_after_its_call_comes_with_the_next_reply() {
    let (pool, spans) = pool(16 * 1024 * 1024, true).await;
    let first = caller();
    assert_eq!(
        pool.call("otel_fixtures", "late", vec![json!(0.2)])
            .with_trace_context(first.clone())
            .await
            .unwrap(),
        json!("started")
    );
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let second = caller();
    pool.call("otel_fixtures", "long_attribute", vec![json!(10_000)])
        .with_trace_context(second.clone())
        .await
        .unwrap();
    pool.shutdown().await;
    let late = spans.named("late");
    let python = spans.named("python otel_fixtures.late");
    assert_eq!(late.trace_id, first.trace_id().to_string(), "its own trace");
    assert_eq!(late.parent.as_deref(), Some(python.span_id.as_str()));
    let long = spans.named("long");
    assert_eq!(long.trace_id, second.trace_id().to_string());
    let text = long.attribute("text").unwrap();
    assert_eq!(
        text.chars().count(),
        4097,
        "cut at 4 096 characters, then …"
    );
    assert!(text.ends_with('…'));
}

#[tokio::test]
async fn spans_too_large_for_a_frame_are_dropped_and_counted_not_the_call() {
    let (pool, spans) = pool(256 * 1024, true).await;
    let result = pool
        .call("otel_fixtures", "many_spans", vec![json!(200), json!(4000)])
        .with_trace_context(caller())
        .await;
    assert_eq!(result.unwrap(), json!("ok"), "the call succeeds");
    assert_eq!(pool.health().spans_dropped, 200);
    assert!(
        spans.all().iter().all(|s| !s.name.starts_with("bulk")),
        "no bulk span came back"
    );
    // The call's own span still did.
    spans.named("python otel_fixtures.many_spans");
    pool.shutdown().await;
}

#[tokio::test]
async fn without_a_listener_python_still_runs_in_the_callers_context() {
    let (pool, _) = pool(16 * 1024 * 1024, false).await;
    let seen = pool
        .call("otel_fixtures", "nested", vec![])
        .with_trace_context(caller())
        .await
        .unwrap();
    // The context is still OpenTelemetry's in Python: its spans join the trace wherever the
    // worker exports them.
    assert_eq!(seen["remote"], json!(true));
    let value: Value = pool
        .call("otel_fixtures", "long_attribute", vec![json!(10)])
        .await
        .unwrap();
    assert_eq!(value, json!("ok"));
    pool.shutdown().await;
}
