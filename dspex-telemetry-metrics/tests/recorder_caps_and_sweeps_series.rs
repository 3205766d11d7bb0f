//! The recorder: label sets past the cap fold into one overflow series, idle series are
//! swept, counters and gauges behave as the `metrics` facade promises.

use std::sync::Arc;

use dspex_telemetry_metrics::{
    ManualClock, OVERFLOW_LABEL, RecorderConfig, SeriesValue, WindowedRecorder,
};
use metrics::{Key, Label, Recorder};

static META: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, None);

fn recorder(clock: &ManualClock, cap: usize) -> WindowedRecorder {
    let config = RecorderConfig {
        max_series_per_metric: cap,
        ..RecorderConfig::default()
    };
    WindowedRecorder::with_clock(config, Arc::new(clock.clone())).unwrap()
}

#[test]
fn a_million_distinct_label_sets_stay_capped() {
    let clock = ManualClock::new(0);
    let r = recorder(&clock, 100);
    for i in 0..1_000_000u32 {
        let key = Key::from_parts(
            "dspex_tools_execute_duration",
            vec![Label::new("tool_name", format!("tool-{i}"))],
        );
        r.register_histogram(&key, &META).record(1.0);
    }
    assert_eq!(
        r.series_count(),
        101,
        "100 label sets and one overflow series"
    );
    assert_eq!(r.overflowed(), 1_000_000 - 100);
    let overflow = r
        .histogram("dspex_tools_execute_duration", &[OVERFLOW_LABEL])
        .unwrap();
    assert_eq!(overflow.count, 1_000_000 - 100, "nothing recorded is lost");
    assert_eq!(
        r.histogram("dspex_tools_execute_duration", &[("tool_name", "tool-7")])
            .unwrap()
            .count,
        1
    );
    // Another metric has its own budget.
    metrics::with_local_recorder(&r, || metrics::histogram!("other").record(1.0));
    assert_eq!(r.series_count(), 102);
}

#[test]
fn idle_series_nobody_holds_are_swept() {
    let clock = ManualClock::new(0);
    let r = recorder(&clock, 10);
    let held = r.register_counter(&Key::from_name("held"), &META);
    metrics::with_local_recorder(&r, || {
        metrics::counter!("dspex_session_created_total").increment(1);
        metrics::gauge!("dspex_pool_queue_depth").set(3.0);
    });
    clock.advance_ms(599_000);
    assert_eq!(r.sweep(), 0, "not idle long enough");
    metrics::with_local_recorder(&r, || metrics::gauge!("dspex_pool_queue_depth").set(4.0));
    clock.advance_ms(1_000);
    assert_eq!(
        r.sweep(),
        1,
        "the counter went idle; the gauge was updated; `held` is held"
    );
    assert!(r.counter("dspex_session_created_total", &[]).is_none());
    assert_eq!(r.gauge("dspex_pool_queue_depth", &[]), Some(4.0));
    held.increment(2);
    assert_eq!(r.counter("held", &[]).unwrap().total, 2);
}

#[test]
fn counters_window_their_increments_and_keep_their_total() {
    let clock = ManualClock::new(0);
    let r = recorder(&clock, 10);
    let c = r.register_counter(&Key::from_name("dspex_pool_worker_restarts_total"), &META);
    c.increment(5);
    c.absolute(12);
    c.absolute(3);
    let snap = r.counter("dspex_pool_worker_restarts_total", &[]).unwrap();
    assert_eq!((snap.total, snap.in_window), (12, 12));
    clock.advance_ms(61_000);
    c.increment(1);
    let snap = r.counter("dspex_pool_worker_restarts_total", &[]).unwrap();
    assert_eq!((snap.total, snap.in_window), (13, 1));
}

#[test]
fn gauges_descriptions_and_the_full_snapshot() {
    let clock = ManualClock::new(0);
    let r = recorder(&clock, 10);
    metrics::with_local_recorder(&r, || {
        metrics::describe_histogram!(
            "dspex_bridge_call_method_duration",
            metrics::Unit::Milliseconds,
            "Bridge call duration in milliseconds."
        );
        let g = metrics::gauge!("dspex_pool_workers", "state" => "idle");
        g.set(4.0);
        g.increment(1.0);
        g.decrement(2.0);
        metrics::histogram!("dspex_bridge_call_method_duration", "method" => "m").record(2.0);
    });
    assert_eq!(
        r.gauge("dspex_pool_workers", &[("state", "idle")]),
        Some(3.0)
    );
    let d = r.description("dspex_bridge_call_method_duration").unwrap();
    assert_eq!(d.unit, Some(metrics::Unit::Milliseconds));
    assert_eq!(d.text, "Bridge call duration in milliseconds.");
    let all = r.snapshot();
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["dspex_bridge_call_method_duration", "dspex_pool_workers"]
    );
    assert!(matches!(&all[0].value, SeriesValue::Histogram(h) if h.count == 1));
    assert_eq!(all[1].labels, [("state".to_owned(), "idle".to_owned())]);
}

#[test]
fn a_zero_series_cap_is_refused_by_name() {
    let err = WindowedRecorder::new(RecorderConfig {
        max_series_per_metric: 0,
        ..RecorderConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("max_series_per_metric"), "{err}");
}
