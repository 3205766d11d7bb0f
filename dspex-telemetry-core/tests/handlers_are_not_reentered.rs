//! A handler or span sink that emits what it handles is not called again from its own call:
//! the caller's stack stays bounded, the skip is counted, and other handlers still see the
//! nested events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dspex_telemetry_core::{
    Dispatcher, Event, EventName, MAX_NESTED_HANDLERS, Measurements, Metadata, SpanPrefix,
    SpanRecord, SpanSink, metadata,
};

const ECHO: EventName = EventName::from_static(&["test", "echo"]);
const PING: EventName = EventName::from_static(&["test", "ping"]);
const PONG: EventName = EventName::from_static(&["test", "pong"]);
const WORK: SpanPrefix = SpanPrefix::from_static(&["test", "work"]);

fn counter() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(0))
}

fn emit(d: &Dispatcher, event: &EventName) {
    d.execute(event, &Measurements::new().with("n", 1), &Metadata::new());
}

#[test]
fn a_handler_that_emits_its_own_event_runs_once_and_the_skip_is_counted() {
    let d = Dispatcher::new();
    let (echoes, watched) = (counter(), counter());
    let (inner, seen) = (d.clone(), echoes.clone());
    d.attach("echo", ECHO, move |_: &Event<'_>| {
        seen.fetch_add(1, Ordering::Relaxed);
        emit(&inner, &ECHO);
    })
    .unwrap();
    let seen = watched.clone();
    d.attach("watcher", ECHO, move |_: &Event<'_>| {
        seen.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();

    for _ in 0..3 {
        emit(&d, &ECHO);
    }
    assert_eq!(echoes.load(Ordering::Relaxed), 3, "once per outer emission");
    // The watcher sees the outer events and the ones the echo handler emitted.
    assert_eq!(watched.load(Ordering::Relaxed), 6);
    assert_eq!(d.reentries_skipped(), 3);
    // The guard is released after each call: the handler is still attached and called.
    emit(&d, &ECHO);
    assert_eq!(echoes.load(Ordering::Relaxed), 4);
    assert_eq!(d.handler_failures(), 0);
    // The handler holds the dispatcher: detaching breaks the cycle.
    d.detach("echo").unwrap();
}

#[test]
fn two_handlers_that_emit_each_others_events_stop_after_one_round() {
    let d = Dispatcher::new();
    let (pings, pongs) = (counter(), counter());
    let (inner, seen) = (d.clone(), pings.clone());
    d.attach("on-ping", PING, move |_: &Event<'_>| {
        seen.fetch_add(1, Ordering::Relaxed);
        emit(&inner, &PONG);
    })
    .unwrap();
    let (inner, seen) = (d.clone(), pongs.clone());
    d.attach("on-pong", PONG, move |_: &Event<'_>| {
        seen.fetch_add(1, Ordering::Relaxed);
        emit(&inner, &PING);
    })
    .unwrap();

    emit(&d, &PING);
    assert_eq!(pings.load(Ordering::Relaxed), 1);
    assert_eq!(pongs.load(Ordering::Relaxed), 1);
    assert_eq!(d.reentries_skipped(), 1);
    assert_eq!(d.detach_all(&["on-ping", "on-pong"]), 2);
}

#[test]
fn a_chain_of_distinct_handlers_is_cut_at_the_nesting_limit() {
    let d = Dispatcher::new();
    let calls = counter();
    let names: Vec<EventName> = (0..MAX_NESTED_HANDLERS + 8)
        .map(|i| EventName::parse(&format!("test.chain.e{i}")).unwrap())
        .collect();
    for (i, name) in names.iter().enumerate() {
        let (inner, next, seen) = (d.clone(), names.get(i + 1).cloned(), calls.clone());
        d.attach(format!("chain-{i}"), name.clone(), move |_: &Event<'_>| {
            seen.fetch_add(1, Ordering::Relaxed);
            if let Some(next) = &next {
                emit(&inner, next);
            }
        })
        .unwrap();
    }
    emit(&d, &names[0]);
    assert_eq!(calls.load(Ordering::Relaxed), MAX_NESTED_HANDLERS as u64);
    assert_eq!(d.reentries_skipped(), 1);
    let ids: Vec<String> = (0..names.len()).map(|i| format!("chain-{i}")).collect();
    assert_eq!(d.detach_all(&ids), names.len());
}

/// A span sink that times a span of its own for every span it receives.
struct SpanningSink {
    dispatcher: Dispatcher,
    received: Arc<AtomicU64>,
}

impl SpanSink for SpanningSink {
    fn on_end(&self, _span: &SpanRecord<'_>) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.dispatcher
            .span(&WORK, metadata! {}, || ((), metadata! {}));
    }
}

#[test]
fn a_span_sink_that_makes_spans_does_not_recurse() {
    let d = Dispatcher::new();
    let received = counter();
    d.attach_span_sink(
        "spanning",
        SpanningSink {
            dispatcher: d.clone(),
            received: received.clone(),
        },
    )
    .unwrap();
    d.span(&WORK, metadata! {}, || ((), metadata! {}));
    assert_eq!(received.load(Ordering::Relaxed), 1);
    assert_eq!(d.reentries_skipped(), 1);
    assert!(d.has_span_sinks(), "the sink stays attached");
    d.detach("spanning").unwrap();
}

#[test]
fn the_guard_is_per_thread() {
    // A handler blocked on one thread does not stop the same handler on another.
    let d = Dispatcher::new();
    let calls = counter();
    let (inner, seen) = (d.clone(), calls.clone());
    d.attach("nested", ECHO, move |_: &Event<'_>| {
        seen.fetch_add(1, Ordering::Relaxed);
        let (inner, seen) = (inner.clone(), seen.clone());
        // Emitting from another thread inside the handler is not re-entry.
        if seen.load(Ordering::Relaxed) == 1 {
            std::thread::spawn(move || emit(&inner, &ECHO))
                .join()
                .unwrap();
        }
    })
    .unwrap();
    emit(&d, &ECHO);
    assert_eq!(calls.load(Ordering::Relaxed), 2);
    assert_eq!(d.reentries_skipped(), 0);
    d.detach("nested").unwrap();
}
