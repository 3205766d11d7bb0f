//! Spans emit start, then stop or exception, with nanosecond measurements.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use dspex_telemetry_core::{
    Dispatcher, Event, EventName, Metadata, SpanPrefix, TraceContext, Value, context, metadata,
};

const OP: SpanPrefix = SpanPrefix::from_static(&["dspex", "my_component", "operation"]);

#[derive(Debug, Clone)]
struct Seen {
    name: String,
    measurements: Vec<(String, i64)>,
    metadata: Vec<(String, String)>,
    ctx: Option<TraceContext>,
}

fn recorder(d: &Dispatcher) -> Arc<Mutex<Vec<Seen>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    d.attach_prefix("rec", OP.prefix().clone(), move |e: &Event<'_>| {
        sink.lock().unwrap().push(Seen {
            name: e.name().segments().last().unwrap().to_owned(),
            measurements: e
                .measurements()
                .iter()
                .map(|(k, v)| (k.to_owned(), v.as_i64().unwrap()))
                .collect(),
            metadata: e
                .metadata()
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_string()))
                .collect(),
            ctx: context::current(),
        })
    })
    .unwrap();
    seen
}

fn keys(pairs: &[(String, i64)]) -> Vec<&str> {
    pairs.iter().map(|(k, _)| k.as_str()).collect()
}

fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn start_then_stop_with_duration_and_the_closures_metadata() {
    let d = Dispatcher::new();
    let seen = recorder(&d);
    let before = dspex_telemetry_core::system_time_ns();
    let out = d.span(&OP, metadata! { "request_id" => "r1" }, || {
        std::thread::sleep(std::time::Duration::from_millis(2));
        (
            41 + 1,
            metadata! { "items_processed" => 3, "cache_hit" => true },
        )
    });
    assert_eq!(out, 42);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    let (start, stop) = (&seen[0], &seen[1]);
    assert_eq!(start.name, "start");
    assert_eq!(keys(&start.measurements), ["monotonic_time", "system_time"]);
    assert!(start.measurements[1].1 >= before);
    assert_eq!(start.metadata, [("request_id".into(), "r1".into())]);
    assert_eq!(stop.name, "stop");
    assert_eq!(keys(&stop.measurements), ["duration", "monotonic_time"]);
    let duration = stop.measurements[0].1;
    assert!(
        duration >= 2_000_000,
        "duration is in nanoseconds: {duration}"
    );
    assert!(stop.measurements[1].1 >= start.measurements[0].1 + duration);
    assert_eq!(get(&stop.metadata, "request_id"), Some("r1"));
    assert_eq!(get(&stop.metadata, "items_processed"), Some("3"));
    assert_eq!(get(&stop.metadata, "cache_hit"), Some("true"));
    // Both events belong to one new trace, and the scope ends with the span.
    let (a, b) = (start.ctx.clone().unwrap(), stop.ctx.clone().unwrap());
    assert_eq!(a, b);
    assert_eq!(a.parent_span_id(), None);
    assert!(context::current().is_none());
}

#[test]
fn an_error_result_emits_exception_with_kind_and_reason() {
    let d = Dispatcher::new();
    let seen = recorder(&d);
    let out: Result<u8, String> = d.try_span(&OP, Metadata::new(), || {
        (Err("worker timed out".into()), Metadata::new())
    });
    assert_eq!(out, Err("worker timed out".into()));
    let ok: Result<u8, String> = d.try_span(&OP, Metadata::new(), || (Ok(1), Metadata::new()));
    assert_eq!(ok, Ok(1));
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()[..2],
        ["start", "exception"]
    );
    assert_eq!(keys(&seen[1].measurements), ["duration", "monotonic_time"]);
    assert_eq!(get(&seen[1].metadata, "kind"), Some("error"));
    assert_eq!(get(&seen[1].metadata, "reason"), Some("worker timed out"));
    assert_eq!(
        seen.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()[2..],
        ["start", "stop"]
    );
}

#[test]
fn a_panicking_closure_emits_exception_then_the_panic_continues() {
    let d = Dispatcher::new();
    let seen = recorder(&d);
    let result = catch_unwind(AssertUnwindSafe(|| {
        d.span(
            &OP,
            metadata! { "module" => "m" },
            || -> ((), Metadata<'static>) { panic!("python died") },
        )
    }));
    let payload = result.expect_err("the panic is resumed");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"python died"));
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["start", "exception"]
    );
    assert_eq!(get(&seen[1].metadata, "kind"), Some("panic"));
    assert_eq!(get(&seen[1].metadata, "reason"), Some("python died"));
    assert_eq!(get(&seen[1].metadata, "module"), Some("m"));
    assert!(
        context::current().is_none(),
        "the span's context was left on unwind"
    );
}

#[test]
fn a_span_inside_a_trace_is_a_child_of_the_current_span() {
    let d = Dispatcher::new();
    let seen = recorder(&d);
    let trace = context::start_trace();
    let root = context::current().unwrap();
    d.span(&OP, Metadata::new(), || ((), Metadata::new()));
    drop(trace);
    let seen = seen.lock().unwrap();
    let ctx = seen[0].ctx.clone().unwrap();
    assert_eq!(ctx.trace_id(), root.trace_id());
    assert_eq!(ctx.parent_span_id(), Some(root.span_id()));
    assert_ne!(ctx.span_id(), root.span_id());
}

#[test]
fn without_handlers_the_closure_just_runs() {
    let d = Dispatcher::new();
    d.attach(
        "elsewhere",
        EventName::from_static(&["other"]),
        |_: &Event<'_>| {},
    )
    .unwrap();
    let ctx = d.span(&OP, Metadata::new(), || {
        (context::current(), Metadata::new())
    });
    assert!(ctx.is_none(), "no handler, no trace opened");
}

#[test]
fn dynamic_span_prefixes_emit_the_same_names() {
    let d = Dispatcher::new();
    let seen = recorder(&d);
    let prefix = SpanPrefix::new(EventName::parse("dspex.my_component.operation").unwrap());
    d.span(&prefix, Metadata::new(), || ((), Metadata::new()));
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(
        prefix.exception().to_string(),
        "dspex.my_component.operation.exception"
    );
}

#[test]
fn with_span_always_opens_a_context_and_nests() {
    let (outer, inner) = dspex_telemetry_core::with_span("business.process_request", || {
        let outer = context::current().unwrap();
        let inner =
            dspex_telemetry_core::with_span("business.load", || context::current().unwrap());
        (outer, inner)
    });
    assert_eq!(inner.trace_id(), outer.trace_id());
    assert_eq!(inner.parent_span_id(), Some(outer.span_id()));
    assert!(context::current().is_none());
    assert_eq!(Value::from("x").as_str(), Some("x"));
}

#[test]
fn an_error_may_name_a_finer_kind() {
    let d = Dispatcher::new();
    let seen = recorder(&d);
    let out: Result<(), &str> = d.try_span(&OP, Metadata::new(), || {
        (Err("deadline passed"), metadata! { "kind" => "timeout" })
    });
    assert!(out.is_err());
    let seen = seen.lock().unwrap();
    assert_eq!(get(&seen[1].metadata, "kind"), Some("timeout"));
    assert_eq!(get(&seen[1].metadata, "reason"), Some("deadline passed"));
}
