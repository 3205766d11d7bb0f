//! A handler that panics is detached and reported; the others and the caller carry on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dspex_telemetry_core::{Dispatcher, Event, EventName, Measurements, Metadata, catalog};

const E: EventName = EventName::from_static(&["test", "event"]);

#[test]
fn a_panicking_handler_is_detached_while_two_others_keep_receiving_every_event() {
    let d = Dispatcher::new();
    let first = Arc::new(AtomicUsize::new(0));
    let third = Arc::new(AtomicUsize::new(0));
    let panicked = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));

    let f = first.clone();
    d.attach("first", E, move |_: &Event<'_>| {
        f.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    let p = panicked.clone();
    d.attach("faulty", E, move |_: &Event<'_>| {
        p.fetch_add(1, Ordering::SeqCst);
        panic!("boom in handler");
    })
    .unwrap();
    let t = third.clone();
    d.attach("third", E, move |_: &Event<'_>| {
        t.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    let sink = failures.clone();
    d.attach(
        "failures",
        catalog::HANDLER_FAILURE,
        move |e: &Event<'_>| {
            let get = |k| {
                e.metadata()
                    .get(k)
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            };
            sink.lock().unwrap().push((
                get("handler_id"),
                get("event"),
                get("kind"),
                get("reason"),
            ));
        },
    )
    .unwrap();

    for _ in 0..10 {
        d.execute(&E, &Measurements::new(), &Metadata::new());
    }

    assert_eq!(first.load(Ordering::SeqCst), 10);
    assert_eq!(
        third.load(Ordering::SeqCst),
        10,
        "the handler after the faulty one ran every time"
    );
    assert_eq!(
        panicked.load(Ordering::SeqCst),
        1,
        "detached after its first panic"
    );
    assert_eq!(d.handler_failures(), 1);
    assert_eq!(
        *failures.lock().unwrap(),
        [(
            "faulty".into(),
            "test.event".into(),
            "panic".into(),
            "boom in handler".into()
        )]
    );
    let ids: Vec<_> = d.list_handlers(None).into_iter().map(|h| h.id).collect();
    assert_eq!(ids, ["first", "third", "failures"]);
}

#[test]
fn a_handler_reattached_under_the_same_id_is_not_detached_by_an_old_panic() {
    let d = Dispatcher::new();
    d.attach("h", E, |_: &Event<'_>| panic!("old")).unwrap();
    d.execute(&E, &Measurements::new(), &Metadata::new());
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    d.attach("h", E, move |_: &Event<'_>| {
        c.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    d.execute(&E, &Measurements::new(), &Metadata::new());
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[test]
fn a_handler_that_panics_on_the_failure_event_too_does_not_loop() {
    let d = Dispatcher::new();
    d.attach_prefix(
        "everything",
        EventName::from_static(&["test"]),
        |_: &Event<'_>| panic!("always"),
    )
    .unwrap();
    d.attach_prefix(
        "also",
        EventName::from_static(&["dspex"]),
        |_: &Event<'_>| panic!("always too"),
    )
    .unwrap();
    d.execute(&E, &Measurements::new(), &Metadata::new());
    assert_eq!(d.handler_failures(), 2);
    assert!(d.list_handlers(None).is_empty());
}
