//! In the assembled stack, series nobody records into for `idle_timeout_ms` expire: the
//! metrics handler lets go of their handles, the window drops them and their memory is
//! returned (counted by the allocator), and the cap frees their slots. A label set used again
//! gets a new series, and series that come and go leave no more behind than the first did.

use std::time::{Duration, Instant};

use dspex_telemetry::{Config, Telemetry};
use dspex_telemetry_core::{Dispatcher, EventName, Measurements, Metadata, catalog, metadata};

#[path = "../../dspex-telemetry-metrics/tests/support/counting_allocator.rs"]
mod counting_allocator;

const TICK: EventName = EventName::from_static(&["test", "tick"]);

fn call(d: &Dispatcher, function: &str) {
    d.span(
        &catalog::BRIDGE_CALL,
        metadata! { "module" => "app", "function" => function },
        || ((), metadata! { "success" => true }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_idle_for_the_timeout_are_gone_with_their_memory() {
    let config =
        Config::from_toml("[metrics]\nidle_timeout_ms = 200\nmax_series_per_metric = 100").unwrap();
    let d = Dispatcher::new();
    let telemetry = Telemetry::start(&config, &d)
        .await
        .expect("the stack starts");
    let baseline = counting_allocator::live();
    for i in 0..100 {
        call(&d, &format!("f{i}"));
    }
    let series = telemetry.window().series_count();
    assert!(
        series >= 300,
        "duration, count and errors per method: {series}"
    );
    let used = counting_allocator::live() - baseline;
    // Three series a method, each with its sub-windows' page tables and the pages its one
    // value made (about 4.8 KB a method).
    assert!(used > 100 * 3_000, "{used} bytes for 100 methods");

    let started = Instant::now();
    expire_all(&telemetry, &d).await;
    let left = counting_allocator::live() - baseline;
    eprintln!(
        "100 methods: {used} bytes; after expiring in {:?}: {left} bytes",
        started.elapsed()
    );
    // The 300 series returned their memory: their sub-windows, page tables and pages. What
    // stays is the handler's table of label sets seen and what the stack's tables keep once
    // they have grown: 1 to 2 KB a method, depending on which thread swept first (measured).
    assert!(
        used - left > 200 * 1_000 && left < used / 2,
        "{left} bytes still held of the {used} the series took"
    );

    // The sweeper empties the window, then frees the cap's slots, on its own thread: give it
    // a few more of its ticks (50 ms each) to finish the one that emptied the window.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A label set used again is a series again, counted from zero.
    call(&d, "f7");
    let op = telemetry
        .window()
        .operation("dspex_bridge_call_method", &[("method", "app.f7")])
        .expect("f7 is a series again");
    assert_eq!((op.count, op.error_count), (1, 0));
    // The cap freed the slots: a hundred new methods get series of their own.
    for i in 0..99 {
        call(&d, &format!("g{i}"));
    }
    assert!(
        telemetry
            .window()
            .operation("dspex_bridge_call_method", &[("method", "app.g98")])
            .is_some()
    );
    assert_eq!(telemetry.cardinality().overflowed_label_sets, 0);

    // Those expire too, and leave no more behind than the first hundred did: what stays does
    // not grow as series come and go.
    expire_all(&telemetry, &d).await;
    let again = counting_allocator::live() - baseline;
    eprintln!("after a second hundred expired: {again} bytes");
    assert!(
        again < left + used / 10,
        "{again} bytes held after the second hundred expired, {left} after the first"
    );
    telemetry.shutdown().await;
}

/// Waits until the window holds no series (at most 5 s). This thread only ticks meanwhile (an
/// event no handler takes), which lets it see the handlers the sweep replaced, as a service's
/// threads do at their next event.
async fn expire_all(telemetry: &Telemetry, d: &Dispatcher) {
    let started = Instant::now();
    while telemetry.window().series_count() > 0 && started.elapsed() < Duration::from_secs(5) {
        d.execute(&TICK, &Measurements::new(), &Metadata::new());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        telemetry.window().series_count(),
        0,
        "every series expired within 5 s of a 200 ms idle timeout"
    );
}
