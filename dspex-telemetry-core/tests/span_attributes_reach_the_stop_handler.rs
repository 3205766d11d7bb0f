//! Attributes set on the current span (`context::set_attributes`) are seen by the handlers of
//! that span's `stop`, in sync and async spans, and are not inherited by child spans.

use std::sync::{Arc, Mutex};

use dspex_telemetry_core::{Dispatcher, Event, SpanPrefix, context, metadata};

const OUTER: SpanPrefix = SpanPrefix::from_static(&["app", "outer"]);
const INNER: SpanPrefix = SpanPrefix::from_static(&["app", "inner"]);

type Seen = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

fn recording() -> (Dispatcher, Seen) {
    let d = Dispatcher::new();
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    d.attach_many(
        "rec",
        [OUTER.stop().clone(), INNER.stop().clone()],
        move |e: &Event<'_>| {
            let ctx = context::current().expect("a span's stop runs in its context");
            let attributes = ctx
                .attributes()
                .map(|(k, v)| (k.to_owned(), v.to_string()))
                .collect();
            sink.lock()
                .unwrap()
                .push((e.name().to_string(), attributes));
        },
    )
    .unwrap();
    (d, seen)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn sync_spans_carry_their_own_attributes_only() {
    let (d, seen) = recording();
    d.span(&OUTER, metadata! {}, || {
        context::set_attributes([("business.data_size", 512.into())]);
        d.span(&INNER, metadata! {}, || {
            context::set_attributes([("inner.only", true.into())]);
            ((), metadata! {})
        });
        // Set again: replaced, not repeated.
        context::set_attributes([
            ("business.data_size", 1024.into()),
            ("business.tier", "gold".into()),
        ]);
        ((), metadata! {})
    });
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen[0],
        ("app.inner.stop".into(), pairs(&[("inner.only", "true")]))
    );
    assert_eq!(
        seen[1],
        (
            "app.outer.stop".into(),
            pairs(&[("business.data_size", "1024"), ("business.tier", "gold")])
        )
    );
}

#[tokio::test]
async fn async_spans_keep_attributes_across_awaits() {
    let (d, seen) = recording();
    d.span_async(&OUTER, metadata! {}, async {
        context::set_attributes([("step", "one".into())]);
        tokio::task::yield_now().await;
        context::set_attributes([("after.await", 1.5.into())]);
        ((), metadata! {})
    })
    .await;
    assert_eq!(
        seen.lock().unwrap()[0],
        (
            "app.outer.stop".into(),
            pairs(&[("step", "one"), ("after.await", "1.5")])
        )
    );
}
