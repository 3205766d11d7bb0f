//! Every span that ends reaches the span sinks as a typed record: ids as bytes, the parent,
//! its kind, times, status and attributes, with or without event handlers, sync and async;
//! a sink that panics is detached and reported, never the caller's problem.

use std::sync::{Arc, Mutex};

use dspex_telemetry_core::{
    Dispatcher, Event, SpanKind, SpanRecord, SpanSink, SpanStatus, TraceContext, TraceParent,
    catalog, context, metadata,
};

/// What a sink saw of one span, owned.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    trace_id: String,
    span_id: String,
    parent: Option<String>,
    remote_parent: bool,
    name: String,
    kind: SpanKind,
    duration_ns: u64,
    error: Option<(String, String)>,
    metadata: Vec<(String, String)>,
    attributes: Vec<(String, String)>,
    correlation_id: Option<String>,
}

#[derive(Default)]
struct Recording(Mutex<Vec<Seen>>);

impl SpanSink for Recording {
    fn on_end(&self, span: &SpanRecord<'_>) {
        assert!(
            context::current().is_none(),
            "a sink runs with no current context"
        );
        self.0.lock().unwrap().push(Seen {
            trace_id: span.trace_id.to_string(),
            span_id: span.span_id.to_string(),
            parent: span.parent_span_id.map(|p| p.to_string()),
            remote_parent: span.parent_is_remote,
            name: span.name.to_string(),
            kind: span.kind,
            duration_ns: span.end_unix_ns - span.start_unix_ns,
            error: match span.status {
                SpanStatus::Unset => None,
                SpanStatus::Error { kind, message } => Some((kind.into(), message.into())),
            },
            metadata: span
                .metadata
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_string()))
                .collect(),
            attributes: span
                .attributes
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_string()))
                .collect(),
            correlation_id: span.correlation_id.map(|c| c.as_str().to_owned()),
        });
    }
}

fn sink(dispatcher: &Dispatcher) -> Arc<Recording> {
    let sink = Arc::new(Recording::default());
    dispatcher.attach_span_sink("spans", sink.clone()).unwrap();
    sink
}

#[test]
fn nested_spans_arrive_with_their_parents_kinds_and_times_without_any_handler() {
    let d = Dispatcher::new();
    let spans = sink(&d);
    let outer = d.span(
        &catalog::TOOLS_EXECUTE,
        metadata! { "tool_name" => "search" },
        || {
            let ctx = context::current().unwrap();
            d.span(
                &catalog::BRIDGE_CALL,
                metadata! { "module" => "dspy" },
                || {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    ((), metadata! { "success" => true })
                },
            );
            (ctx, metadata! {})
        },
    );
    let seen = spans.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    let (inner, top) = (&seen[0], &seen[1]);
    assert_eq!(inner.name, "dspex.bridge.call");
    assert_eq!(inner.kind, SpanKind::Client);
    assert_eq!(top.name, "dspex.tools.execute");
    assert_eq!(top.kind, SpanKind::Internal);
    assert_eq!(inner.trace_id, top.trace_id);
    assert_eq!(inner.parent.as_deref(), Some(top.span_id.as_str()));
    assert_eq!(top.span_id, outer.span_id().to_string());
    assert_eq!(top.parent, None);
    assert!(inner.duration_ns >= 2_000_000, "{inner:?}");
    assert!(top.duration_ns >= inner.duration_ns);
    assert_eq!(
        inner.metadata,
        [
            ("module".into(), "dspy".into()),
            ("success".into(), "true".into())
        ]
    );
    assert_eq!(inner.error, None);
}

#[test]
fn errors_and_panics_end_with_error_status_and_the_events_still_reach_handlers() {
    let d = Dispatcher::new();
    let spans = sink(&d);
    let stops = Arc::new(Mutex::new(0));
    let counted = stops.clone();
    d.attach(
        "stops",
        catalog::CONTRACT_VALIDATE.exception().clone(),
        move |_: &Event<'_>| *counted.lock().unwrap() += 1,
    )
    .unwrap();
    let failed: Result<(), String> = d.try_span(&catalog::CONTRACT_VALIDATE, metadata! {}, || {
        (Err("bad field".to_owned()), metadata! {})
    });
    assert!(failed.is_err());
    let panicked = std::panic::catch_unwind(|| {
        d.span(&catalog::TYPES_CAST, metadata! {}, || -> ((), _) {
            panic!("cast exploded")
        })
    });
    assert!(panicked.is_err());
    let seen = spans.0.lock().unwrap().clone();
    assert_eq!(
        seen[0].error,
        Some(("error".to_owned(), "bad field".to_owned()))
    );
    assert_eq!(
        seen[1].error,
        Some(("panic".to_owned(), "cast exploded".to_owned()))
    );
    assert_eq!(*stops.lock().unwrap(), 1);
}

#[test]
fn with_span_names_its_span_and_attributes_set_inside_come_along() {
    let sink = Arc::new(Recording::default());
    Dispatcher::global()
        .attach_span_sink("with-span-records", sink.clone())
        .unwrap();
    let root = TraceContext::new_root()
        .with_correlation_id(dspex_telemetry_core::CorrelationId::parse("order-9").unwrap());
    root.in_scope(|| {
        dspex_telemetry_core::with_span("business.load", || {
            context::set_attributes([("rows", 12.into())]);
        })
    });
    Dispatcher::global().detach("with-span-records").unwrap();
    let seen = sink.0.lock().unwrap().clone();
    let span = seen
        .iter()
        .find(|s| s.name == "business.load")
        .unwrap_or_else(|| panic!("{seen:#?}"));
    assert_eq!(span.attributes, [("rows".to_owned(), "12".to_owned())]);
    assert_eq!(span.trace_id, root.trace_id().to_string());
    assert_eq!(
        span.parent, None,
        "a root made with new_root is no span: the first span takes its place"
    );
    assert_eq!(span.correlation_id.as_deref(), Some("order-9"));
}

#[test]
fn a_span_continuing_a_callers_traceparent_has_a_remote_parent() {
    let d = Dispatcher::new();
    let spans = sink(&d);
    let caller =
        TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    TraceContext::continue_from(&caller).in_scope(|| {
        d.span(&catalog::BRIDGE_CALL, metadata! {}, || ((), metadata! {}));
    });
    let seen = spans.0.lock().unwrap().clone();
    assert_eq!(seen[0].trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        seen[0].parent.as_deref(),
        Some("00f067aa0ba902b7"),
        "the context that continues the caller's trace is no span: the caller's is the parent"
    );
    assert!(seen[0].remote_parent);
}

#[tokio::test]
async fn async_spans_and_cancelled_ones_arrive_too() {
    let d = Dispatcher::new();
    let spans = sink(&d);
    d.span_async(&catalog::BRIDGE_CALL, metadata! {}, async {
        tokio::task::yield_now().await;
        ((), metadata! {})
    })
    .await;
    let never = d.span_async(&catalog::TOOLS_EXECUTE, metadata! {}, async {
        std::future::pending::<()>().await;
        ((), metadata! {})
    });
    let _ = tokio::time::timeout(std::time::Duration::from_millis(5), never).await;
    let seen = spans.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[0].error, None);
    assert_eq!(
        seen[1].error.as_ref().map(|e| e.0.as_str()),
        Some("cancelled")
    );
}

#[test]
fn a_sink_that_panics_is_detached_and_the_call_goes_on() {
    struct Exploding;
    impl SpanSink for Exploding {
        fn on_end(&self, _: &SpanRecord<'_>) {
            panic!("sink exploded");
        }
    }
    let d = Dispatcher::new();
    d.attach_span_sink("boom", Exploding).unwrap();
    let value = d.span(&catalog::BRIDGE_CALL, metadata! {}, || (7, metadata! {}));
    assert_eq!(value, 7);
    assert_eq!(d.handler_failures(), 1);
    assert!(!d.has_span_sinks());
    assert!(d.attach_span_sink("boom", Exploding).is_ok());
}

#[test]
fn what_the_work_adds_replaces_what_the_span_started_with_with_or_without_a_stop_handler() {
    for with_handler in [false, true] {
        let d = Dispatcher::new();
        let spans = sink(&d);
        let stops = Arc::new(Mutex::new(Vec::new()));
        if with_handler {
            let stops = stops.clone();
            d.attach(
                "stop",
                catalog::BRIDGE_CALL.stop().clone(),
                move |e: &Event<'_>| {
                    stops.lock().unwrap().push(
                        e.metadata()
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>(),
                    )
                },
            )
            .unwrap();
        }
        d.span(
            &catalog::BRIDGE_CALL,
            metadata! { "module" => "dspy", "attempt" => 1, "function" => "Predict" },
            || ((), metadata! { "attempt" => 2, "success" => true }),
        );
        let seen = spans.0.lock().unwrap().clone();
        let expected: Vec<(String, String)> = [
            ("module", "dspy"),
            ("function", "Predict"),
            ("attempt", "2"),
            ("success", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut got = seen[0].metadata.clone();
        got.sort();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(got, want, "with a stop handler: {with_handler}");
        if with_handler {
            let stops = stops.lock().unwrap();
            assert_eq!(stops.len(), 1);
            assert!(stops[0].contains(&"attempt=2".to_string()), "{stops:?}");
            assert_eq!(stops[0].len(), 4, "{stops:?}");
        }
    }
}

#[test]
fn span_metadata_in_two_parts_reads_as_one() {
    use dspex_telemetry_core::{Metadata, SpanMetadata, Value};
    let start = metadata! { "a" => 1, "b" => 2, "c" => 3 };
    let end = metadata! { "b" => 20, "d" => 4 };
    let both = SpanMetadata::new(&start, &end);
    assert_eq!(both.len(), 4);
    assert_eq!(both.get("b"), Some(&Value::Int(20)));
    assert_eq!(both.get("a"), Some(&Value::Int(1)));
    assert_eq!(both.get("z"), None);
    let mut visited = Vec::new();
    both.for_each(|k, v| visited.push(format!("{k}={v}")));
    let iterated: Vec<String> = both.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(visited, ["a=1", "c=3", "b=20", "d=4"]);
    assert_eq!(iterated, visited);
    let one = SpanMetadata::one(&start);
    assert_eq!(one.len(), 3);
    assert!(!one.is_empty());
    // Past the first 64 entries, replacement is still found (by search).
    let keys: Vec<String> = (0..70).map(|i| format!("k{i}")).collect();
    let mut many = Metadata::new();
    for k in &keys {
        many.insert(k.as_str(), 0);
    }
    let late = metadata! { "k68" => 1, "k1" => 1 };
    let both = SpanMetadata::new(&many, &late);
    assert_eq!(both.len(), 70);
    assert_eq!(both.iter().count(), 70);
    assert_eq!(both.get("k68"), Some(&Value::Int(1)));
}

#[tokio::test]
async fn a_future_in_a_new_trace_is_its_roots_span_and_a_dropped_one_is_cancelled() {
    use dspex_telemetry_core::{CorrelationId, WithTraceContext};
    // The root goes to the global dispatcher's sinks, as start_trace's does.
    let d = Dispatcher::global();
    let spans = sink(d);
    let id = CorrelationId::parse("request-1").unwrap();
    async {
        tokio::task::yield_now().await;
        d.span_async(&catalog::BRIDGE_CALL, metadata! {}, async {
            ((), metadata! {})
        })
        .await;
    }
    .in_new_trace(Some(id))
    .await;
    let never = async { std::future::pending::<()>().await }.in_new_trace(None);
    let _ = tokio::time::timeout(std::time::Duration::from_millis(5), never).await;
    let seen = spans.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    let (call, root, dropped) = (&seen[0], &seen[1], &seen[2]);
    assert_eq!(root.name, "dspex.trace");
    assert_eq!(root.parent, None, "the trace's root");
    assert_eq!(call.parent.as_ref(), Some(&root.span_id));
    assert_eq!(call.trace_id, root.trace_id);
    assert_eq!(root.correlation_id.as_deref(), Some("request-1"));
    assert!(root.duration_ns >= call.duration_ns);
    assert_eq!(root.error, None);
    assert_eq!(dropped.name, "dspex.trace");
    assert_ne!(dropped.trace_id, root.trace_id, "a trace of its own");
    assert_eq!(
        dropped.error.as_ref().map(|e| e.0.as_str()),
        Some("cancelled")
    );
}
