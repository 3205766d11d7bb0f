//! The trace context survives `.await` points and reaches spawned tasks and threads when
//! carried; async spans emit their events with the span's context.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dspex_telemetry_core::{
    Dispatcher, Event, Metadata, SpanPrefix, TraceContext, WithTraceContext, context, metadata,
};

const OP: SpanPrefix = SpanPrefix::from_static(&["dspex", "async", "op"]);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_is_kept_across_await_points_on_a_multi_threaded_runtime() {
    let root = TraceContext::new_root();
    let expected = root.trace_id();
    let seen = async {
        let mut ids = Vec::new();
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            ids.push(context::current().map(|c| c.trace_id()));
        }
        ids
    }
    .with_trace_context(root)
    .await;
    assert!(seen.iter().all(|id| *id == Some(expected)), "{seen:?}");
    assert!(
        context::current().is_none(),
        "the context did not leak into the runtime thread"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_task_has_the_context_only_when_it_is_carried() {
    let root = TraceContext::new_root();
    let (carried, bare) = async {
        let carried =
            tokio::spawn(async { context::current().map(|c| c.trace_id()) }.in_current_trace());
        let bare = tokio::spawn(async { context::current().map(|c| c.trace_id()) });
        (carried.await.unwrap(), bare.await.unwrap())
    }
    .with_trace_context(root.clone())
    .await;
    assert_eq!(carried, Some(root.trace_id()));
    assert_eq!(bare, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baggage_added_inside_a_future_survives_its_later_polls() {
    let value = async {
        context::add_baggage("tenant", "acme").unwrap();
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        context::current().and_then(|c| c.baggage().get("tenant").map(String::from))
    }
    .with_trace_context(TraceContext::new_root())
    .await;
    assert_eq!(value.as_deref(), Some("acme"));
}

#[test]
fn a_thread_gets_the_context_when_it_is_carried() {
    let root = TraceContext::new_root();
    let ctx = root.clone();
    let seen = std::thread::spawn(move || ctx.in_scope(|| context::current().map(|c| c.span_id())))
        .join()
        .unwrap();
    assert_eq!(seen, Some(root.span_id()));
}

type Log = Arc<Mutex<Vec<(String, Option<TraceContext>, Metadata<'static>)>>>;

fn recorder(d: &Dispatcher) -> Log {
    let seen: Log = Arc::default();
    let sink = seen.clone();
    d.attach_prefix("rec", OP.prefix().clone(), move |e: &Event<'_>| {
        let phase = e.name().segments().last().unwrap().to_owned();
        sink.lock()
            .unwrap()
            .push((phase, context::current(), e.metadata().clone().into_owned()));
    })
    .unwrap();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_span_emits_start_and_stop_in_its_own_context() {
    let d = Dispatcher::new();
    let seen = recorder(&d);
    let root = TraceContext::new_root();
    let inner_ctx = d
        .span_async(&OP, metadata! { "tool_name" => "search" }, async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            (context::current(), metadata! { "result_type" => "list" })
        })
        .with_trace_context(root.clone())
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        ["start", "stop"]
    );
    assert_eq!(inner_ctx.trace_id(), root.trace_id());
    assert_eq!(
        inner_ctx.parent_span_id(),
        None,
        "the root is no span: this span is the trace's root"
    );
    assert_eq!(seen[0].1.as_ref(), Some(&inner_ctx));
    assert_eq!(seen[1].1.as_ref(), Some(&inner_ctx));
    assert_eq!(
        seen[1].2.get("result_type").and_then(|v| v.as_str()),
        Some("list")
    );
}

#[tokio::test]
async fn an_async_span_reports_errors_panics_and_cancellation() {
    let d = Dispatcher::new();
    let seen = recorder(&d);

    let err: Result<(), String> = d
        .try_span_async(&OP, Metadata::new(), async {
            (Err("refused".to_owned()), Metadata::new())
        })
        .await;
    assert!(err.is_err());

    let panicked = tokio::spawn(d.span_async(&OP, Metadata::new(), async {
        tokio::task::yield_now().await;
        if true {
            panic!("python worker crashed");
        }
        ((), Metadata::new())
    }))
    .await;
    assert!(panicked.unwrap_err().is_panic());

    let slow = d.span_async(&OP, Metadata::new(), async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        ((), Metadata::new())
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(5), slow)
            .await
            .is_err()
    );

    let seen = seen.lock().unwrap();
    let summary: Vec<(String, Option<String>)> = seen
        .iter()
        .map(|(phase, _, md)| (phase.clone(), md.get("kind").map(|v| v.to_string())))
        .collect();
    let pair = |p: &str, k: Option<&str>| (p.to_owned(), k.map(String::from));
    assert_eq!(
        summary,
        [
            pair("start", None),
            pair("exception", Some("error")),
            pair("start", None),
            pair("exception", Some("panic")),
            pair("start", None),
            pair("exception", Some("cancelled")),
        ]
    );
    assert_eq!(
        seen[3].2.get("reason").and_then(|v| v.as_str()),
        Some("python worker crashed")
    );
}
