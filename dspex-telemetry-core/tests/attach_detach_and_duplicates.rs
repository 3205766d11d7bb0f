//! Attaching, detaching, duplicate ids and listing handlers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dspex_telemetry_core::{
    AttachError, Attachment, DetachError, Dispatcher, Event, EventName, Measurements, Metadata,
    Reads, Subscription, catalog,
};

fn counter() -> (
    Arc<AtomicUsize>,
    impl Fn(&Event<'_>) + Send + Sync + 'static,
) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    (count, move |_: &Event<'_>| {
        seen.fetch_add(1, Ordering::SeqCst);
    })
}

const A: EventName = EventName::from_static(&["test", "a"]);
const B: EventName = EventName::from_static(&["test", "b"]);

#[test]
fn a_handler_receives_only_its_events_until_detached() {
    let d = Dispatcher::new();
    let (count, handler) = counter();
    d.attach("h", A, handler).unwrap();
    d.execute(&A, &Measurements::new(), &Metadata::new());
    d.execute(&B, &Measurements::new(), &Metadata::new());
    assert_eq!(count.load(Ordering::SeqCst), 1);
    d.detach("h").unwrap();
    d.execute(&A, &Measurements::new(), &Metadata::new());
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(d.detach("h"), Err(DetachError::NotFound("h".into())));
}

#[test]
fn an_id_attached_twice_is_an_error_and_the_first_handler_stays() {
    let d = Dispatcher::new();
    let (first, h1) = counter();
    let (second, h2) = counter();
    d.attach("same", A, h1).unwrap();
    assert_eq!(
        d.attach("same", B, h2),
        Err(AttachError::AlreadyExists("same".into()))
    );
    d.execute(&A, &Measurements::new(), &Metadata::new());
    d.execute(&B, &Measurements::new(), &Metadata::new());
    assert_eq!(first.load(Ordering::SeqCst), 1);
    assert_eq!(second.load(Ordering::SeqCst), 0);
}

#[test]
fn attach_all_attaches_every_handler_or_none() {
    let d = Dispatcher::new();
    let (a, ha) = counter();
    let (b, hb) = counter();
    let generation = d.generation();
    d.attach_all([Attachment::new("a", A, ha), Attachment::new("b", B, hb)])
        .unwrap();
    assert_eq!(d.generation(), generation + 1, "one table for both");
    d.execute(&A, &Measurements::new(), &Metadata::new());
    d.execute(&B, &Measurements::new(), &Metadata::new());
    assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (1, 1));

    // A taken id, or one given twice: nothing is attached.
    let (c, hc) = counter();
    let (_, hd) = counter();
    assert_eq!(
        d.attach_all([Attachment::new("c", A, hc), Attachment::new("a", A, hd)]),
        Err(AttachError::AlreadyExists("a".into()))
    );
    let (_, he) = counter();
    let (_, hf) = counter();
    assert_eq!(
        d.attach_all([Attachment::new("e", A, he), Attachment::new("e", B, hf)]),
        Err(AttachError::AlreadyExists("e".into()))
    );
    d.execute(&A, &Measurements::new(), &Metadata::new());
    assert_eq!(c.load(Ordering::SeqCst), 0);
    assert_eq!(d.list_handlers(None).len(), 2);

    assert_eq!(d.detach_all(&["a", "b", "missing"]), 2);
    assert!(d.list_handlers(None).is_empty());
    assert_eq!(d.detach_all(&["a"]), 0);
}

#[test]
fn reads_key_answers_for_every_handler_of_the_event() {
    let d = Dispatcher::new();
    assert!(!d.reads_key(&A, "args"), "nobody listens");
    let (_, h1) = counter();
    d.attach_all([Attachment::new("labels", A, h1).reading(Reads::Only(vec!["method"]))])
        .unwrap();
    assert!(d.reads_key(&A, "method"));
    assert!(!d.reads_key(&A, "args"), "only the declared keys");
    assert!(!d.reads_key(&B, "method"), "another event");
    // A handler attached without a declaration reads everything.
    let (_, h2) = counter();
    d.attach("everything", A, h2).unwrap();
    assert!(d.reads_key(&A, "args"));
    d.detach("everything").unwrap();
    assert!(!d.reads_key(&A, "args"));
    // So does a prefix subscriber.
    let (_, h3) = counter();
    d.attach_prefix("all", EventName::from_static(&["test"]), h3)
        .unwrap();
    assert!(d.reads_key(&A, "args") && d.reads_key(&B, "args"));
}

#[test]
fn attach_many_and_prefix_subscriptions_receive_every_matching_event() {
    let d = Dispatcher::new();
    let (many, h1) = counter();
    let (prefixed, h2) = counter();
    d.attach_many("many", [A, B], h1).unwrap();
    d.attach_prefix("all-test", EventName::from_static(&["test"]), h2)
        .unwrap();
    for e in [
        &A,
        &B,
        &EventName::parse("test.c.d").unwrap(),
        &EventName::parse("other").unwrap(),
    ] {
        d.execute(e, &Measurements::new(), &Metadata::new());
    }
    assert_eq!(many.load(Ordering::SeqCst), 2);
    assert_eq!(prefixed.load(Ordering::SeqCst), 3);
    assert_eq!(
        d.attach_many("none", [], |_: &Event<'_>| {}),
        Err(AttachError::NoEvents("none".into()))
    );
}

#[test]
fn dynamic_names_reach_handlers_attached_with_static_names() {
    let d = Dispatcher::new();
    let (count, handler) = counter();
    d.attach("h", catalog::BRIDGE_CALL.stop().clone(), handler)
        .unwrap();
    let from_python = EventName::parse("dspex.bridge.call.stop").unwrap();
    d.execute(&from_python, &Measurements::new(), &Metadata::new());
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[test]
fn list_handlers_filters_by_prefix() {
    let d = Dispatcher::new();
    d.attach(
        "bridge",
        catalog::BRIDGE_CALL.stop().clone(),
        |_: &Event<'_>| {},
    )
    .unwrap();
    d.attach(
        "tools",
        catalog::TOOLS_EXECUTE.stop().clone(),
        |_: &Event<'_>| {},
    )
    .unwrap();
    d.attach_prefix(
        "everything",
        EventName::from_static(&["dspex"]),
        |_: &Event<'_>| {},
    )
    .unwrap();
    let ids = |prefix: Option<&EventName>| -> Vec<String> {
        d.list_handlers(prefix).into_iter().map(|h| h.id).collect()
    };
    assert_eq!(ids(None), ["bridge", "tools", "everything"]);
    assert_eq!(
        ids(Some(&EventName::from_static(&["dspex", "bridge"]))),
        ["bridge"]
    );
    assert_eq!(
        ids(Some(&EventName::from_static(&["dspex"]))),
        ["bridge", "tools", "everything"]
    );
    let info = d.list_handlers(Some(&EventName::from_static(&["dspex", "tools"])));
    assert_eq!(
        info[0].subscriptions,
        [Subscription::Event(catalog::TOOLS_EXECUTE.stop().clone())]
    );
}

#[test]
fn handlers_see_measurements_and_metadata_as_emitted() {
    let d = Dispatcher::new();
    let got = Arc::new(std::sync::Mutex::new(None));
    let sink = got.clone();
    d.attach("h", A, move |e: &Event<'_>| {
        *sink.lock().unwrap() = Some((
            e.name().to_string(),
            e.measurements().get("size").and_then(|n| n.as_i64()),
            e.metadata()
                .get("var_name")
                .and_then(|v| v.as_str().map(String::from)),
        ));
    })
    .unwrap();
    let name = String::from("temperature");
    d.execute(
        &A,
        &Measurements::new().with("size", 42),
        &Metadata::new().with("var_name", name.as_str()),
    );
    assert_eq!(
        *got.lock().unwrap(),
        Some(("test.a".into(), Some(42), Some("temperature".into())))
    );
}

#[test]
fn independent_dispatchers_do_not_share_handlers() {
    let d1 = Dispatcher::new();
    let d2 = Dispatcher::new();
    let (count, handler) = counter();
    d1.attach("h", A, handler).unwrap();
    d2.execute(&A, &Measurements::new(), &Metadata::new());
    assert_eq!(count.load(Ordering::SeqCst), 0);
    assert!(d1.has_handlers(&A));
    assert!(!d2.has_handlers(&A));
}

#[test]
fn many_dispatchers_on_one_thread_each_see_their_own_latest_table() {
    // More dispatchers than the per-thread cache has slots, used alternately.
    let dispatchers: Vec<Dispatcher> = (0..9).map(|_| Dispatcher::new()).collect();
    let counts: Vec<_> = dispatchers
        .iter()
        .map(|d| {
            let (count, handler) = counter();
            d.attach("h", A, handler).unwrap();
            count
        })
        .collect();
    for round in 0..3 {
        for d in &dispatchers {
            d.execute(&A, &Measurements::new(), &Metadata::new());
        }
        if round == 1 {
            dispatchers[3].detach("h").unwrap();
        }
    }
    for (i, count) in counts.iter().enumerate() {
        assert_eq!(
            count.load(Ordering::SeqCst),
            if i == 3 { 2 } else { 3 },
            "dispatcher {i}"
        );
    }
}

/// Emits an event on its dispatcher when dropped, as a handler that flushes on drop might.
struct EmitsOnDrop(Dispatcher);

impl Drop for EmitsOnDrop {
    fn drop(&mut self) {
        self.0.execute(&B, &Measurements::new(), &Metadata::new());
    }
}

#[test]
fn a_handler_whose_drop_emits_events_can_be_detached() {
    let d = Dispatcher::new();
    let (dropped, on_b) = counter();
    d.attach("on-b", B, on_b).unwrap();
    let emitter = EmitsOnDrop(d.clone());
    d.attach("emitter", A, move |_: &Event<'_>| {
        let _keep = &emitter;
    })
    .unwrap();
    d.execute(&A, &Measurements::new(), &Metadata::new());
    d.detach("emitter").unwrap();
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the handler was dropped and its event delivered"
    );

    // The same when the handler is dropped because it panicked, inside a dispatch.
    let emitter = EmitsOnDrop(d.clone());
    d.attach("faulty", A, move |_: &Event<'_>| {
        let _keep = &emitter;
        panic!("faulty handler");
    })
    .unwrap();
    d.execute(&A, &Measurements::new(), &Metadata::new());
    d.execute(&A, &Measurements::new(), &Metadata::new());
    assert_eq!(dropped.load(Ordering::SeqCst), 2);
    assert_eq!(d.list_handlers(None).len(), 1);
}
