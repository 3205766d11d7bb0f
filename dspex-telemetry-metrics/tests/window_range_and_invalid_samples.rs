//! A histogram's window spans its metric's range (around its buckets, or declared), so the
//! catalog's hours-long session lifetimes read within 1 %; samples that are not finite,
//! non-negative numbers are refused and counted; counts stop at a counter's capacity instead
//! of wrapping; samples outside the range are counted.

use std::sync::Arc;

use dspex_telemetry_core::{Dispatcher, catalog, measurements, metadata};
use dspex_telemetry_metrics::{
    DefinitionError, ManualClock, MetricDefinition, MetricsConfig, MetricsHandler, RecorderConfig,
    SeriesWindow, ValueRange, WindowConfig, WindowShape, WindowedRecorder,
    catalog as metric_catalog,
};
use metrics::Recorder;
use proptest::prelude::*;

/// The exact nearest-rank quantile of `values`, sorted.
fn exact(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn assert_within_one_percent(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= want * 0.01,
        "{what}: {got} is not within 1 % of {want}"
    );
}

/// Session lifetimes of 20 to 120 minutes, spread by a fixed generator.
fn lifetimes_ms(n: usize) -> Vec<f64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let minutes = 20.0 + (x % 100_001) as f64 / 100_000.0 * 100.0;
            (minutes * 60_000.0).round()
        })
        .collect()
}

#[test]
fn a_thousand_session_lifetimes_of_hours_read_within_one_percent_through_the_catalog() {
    let clock = ManualClock::new(0);
    let config = RecorderConfig {
        window: WindowConfig {
            window_size_ms: 3_600_000,
            ..WindowConfig::default()
        },
        ..RecorderConfig::default()
    }
    .with_definitions(&metric_catalog::dspex_metrics());
    let recorder = WindowedRecorder::with_clock(config, Arc::new(clock.clone())).unwrap();
    let d = Dispatcher::new();
    let lifetimes = lifetimes_ms(1_000);
    metrics::with_local_recorder(&recorder, || {
        let _handler =
            MetricsHandler::attach(&d, "m", metric_catalog::dspex_metrics(), 1_000).unwrap();
        for &ms in &lifetimes {
            d.execute(
                &catalog::SESSION_EXPIRED,
                &measurements! { "lifetime_ms" => ms },
                &metadata! {},
            );
        }
    });
    let snap = recorder
        .histogram("dspex_session_lifetime", &[])
        .expect("the lifetimes were recorded");
    let mut sorted = lifetimes.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(snap.count, 1_000);
    assert_eq!(snap.out_of_range, 0);
    assert_within_one_percent("p50", snap.p50, exact(&sorted, 0.50));
    assert_within_one_percent("p95", snap.p95, exact(&sorted, 0.95));
    assert_within_one_percent("p99", snap.p99, exact(&sorted, 0.99));
}

#[test]
fn the_catalogs_distributions_get_ranges_around_their_buckets_and_toml_overrides_them() {
    let catalog = metric_catalog::dspex_metrics();
    let config = RecorderConfig::default().with_definitions(&catalog);
    for definition in &catalog {
        if let dspex_telemetry_metrics::MetricKind::Distribution { buckets } = definition.kind() {
            let range = config.ranges[definition.name()];
            assert!(range.min <= buckets[0] / 100.0, "{}", definition.name());
            assert!(
                range.max >= buckets[buckets.len() - 1] * 10.0,
                "{}",
                definition.name()
            );
        }
    }
    let from_toml: MetricsConfig = toml::from_str(
        "[ranges]\ndspex_session_lifetime = { min = 1, max = 1e9 }\nmy_job_ms = { min = 1e-6, max = 1e3 }",
    )
    .unwrap();
    let config = from_toml
        .into_recorder_config()
        .unwrap()
        .with_definitions(&catalog);
    assert_eq!(
        config.ranges["dspex_session_lifetime"],
        ValueRange { min: 1.0, max: 1e9 }
    );
    assert!(
        config
            .ranges
            .contains_key("dspex_bridge_call_method_duration")
    );
    // A user's own histogram with a declared range reads sub-microsecond values (in ms)
    // within 1 %, beside values a million times larger.
    let recorder = WindowedRecorder::new(config).unwrap();
    metrics::with_local_recorder(&recorder, || {
        for _ in 0..60 {
            metrics::histogram!("my_job_ms").record(0.000_25);
        }
        for _ in 0..40 {
            metrics::histogram!("my_job_ms").record(250.0);
        }
    });
    let snap = recorder.histogram("my_job_ms", &[]).unwrap();
    assert_within_one_percent("p50", snap.p50, 0.000_25);
    assert_within_one_percent("p99", snap.p99, 250.0);
    assert_eq!(snap.out_of_range, 0);
}

#[test]
fn bad_ranges_are_refused_naming_the_key() {
    let refused = |min: f64, max: f64| {
        let mut config = RecorderConfig::default();
        config
            .ranges
            .insert("my_job_ms".into(), ValueRange { min, max });
        WindowedRecorder::new(config).unwrap_err().to_string()
    };
    assert!(refused(0.0, 1.0).contains("`ranges.my_job_ms.min`"));
    assert!(refused(f64::NAN, 1.0).contains("`ranges.my_job_ms.min`"));
    assert!(refused(5.0, 1.0).contains("`ranges.my_job_ms.max`"));
    assert!(refused(1.0, f64::INFINITY).contains("`ranges.my_job_ms.max`"));
    // Too many buckets for one window.
    assert!(refused(1e-300, 1e300).contains("`ranges.my_job_ms.max`"));
    let bad =
        MetricDefinition::distribution("x", [catalog::SESSION_EXPIRED], &[1.0]).range(2.0, 1.0);
    assert_eq!(
        MetricsHandler::attach(&Dispatcher::new(), "m", vec![bad], 10)
            .unwrap_err()
            .to_string(),
        DefinitionError::InvalidRange("x".into()).to_string()
    );
}

fn window() -> (SeriesWindow, ManualClock) {
    let clock = ManualClock::new(0);
    let shape = Arc::new(WindowShape::new(WindowConfig::default()).unwrap());
    (SeriesWindow::new(shape, Arc::new(clock.clone())), clock)
}

#[test]
fn nan_infinities_and_negatives_are_refused_and_counted() {
    let (w, _clock) = window();
    w.record(f64::INFINITY);
    let snap = w.snapshot();
    assert_eq!((snap.count, snap.refused), (0, 1), "+∞ alone is no sample");
    for bad in [f64::NAN, f64::NEG_INFINITY, -1.0, -1e-9, f64::INFINITY] {
        w.record(bad);
    }
    w.record_many(-5.0, 7);
    for ms in [10.0, 20.0, 30.0] {
        w.record(ms);
    }
    let snap = w.snapshot();
    assert_eq!(snap.count, 3);
    assert_eq!(snap.refused, 1 + 5 + 7);
    assert_eq!((snap.min, snap.max), (10.0, 30.0));
    assert_eq!(snap.sum, 60.0);
    assert_within_one_percent("p50", snap.p50, 20.0);
    // Zero is a value.
    w.record(0.0);
    assert_eq!(w.snapshot().count, 4);
}

#[test]
fn counts_stop_at_a_counters_capacity_instead_of_wrapping() {
    for threads in [1usize, 4] {
        // Four threads: some record without a writer shard of their own.
        let (w, _clock) = window();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    w.record_many(5.0, u32::MAX);
                    w.record_many(5.0, u32::MAX);
                });
            }
        });
        let snap = w.snapshot();
        let offered = 2 * threads as u64 * u64::from(u32::MAX);
        assert!(snap.count >= u64::from(u32::MAX), "{threads}: {snap:?}");
        assert_eq!(snap.count + snap.refused, offered, "{threads} threads");
        assert_within_one_percent("p50", snap.p50, 5.0);
    }
}

#[test]
fn samples_outside_the_range_are_counted() {
    let (w, _clock) = window();
    for v in [1e-4, 5.0, 2e6, 1e-3, 1e6] {
        w.record(v);
    }
    let snap = w.snapshot();
    assert_eq!(snap.count, 5);
    assert_eq!(
        snap.out_of_range, 2,
        "1e-4 and 2e6; the bounds themselves are in range"
    );
    assert_eq!((snap.min, snap.max), (1e-4, 2e6), "min and max stay exact");
}

#[test]
fn a_recorders_histogram_counts_what_it_refused() {
    let recorder = WindowedRecorder::new(RecorderConfig::default()).unwrap();
    let key = metrics::Key::from_name("my_job_ms");
    let meta = metrics::Metadata::new("t", metrics::Level::INFO, None);
    let h = recorder.register_histogram(&key, &meta);
    h.record(f64::NAN);
    h.record(1.0);
    let snap = recorder.histogram("my_job_ms", &[]).unwrap();
    assert_eq!((snap.count, snap.refused), (1, 1));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any mix of values within a declared range reads within 1 % at p50, p95 and p99.
    #[test]
    fn values_within_a_declared_range_read_within_one_percent(
        values in proptest::collection::vec(1e-6f64..1e9, 1..400),
    ) {
        let mut config = RecorderConfig::default();
        config.ranges.insert("wide".into(), ValueRange { min: 1e-6, max: 1e9 });
        let recorder = WindowedRecorder::new(config).unwrap();
        metrics::with_local_recorder(&recorder, || {
            for &v in &values {
                metrics::histogram!("wide").record(v);
            }
        });
        let snap = recorder.histogram("wide", &[]).unwrap();
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        for (q, got) in [(0.5, snap.p50), (0.95, snap.p95), (0.99, snap.p99)] {
            let want = exact(&sorted, q);
            prop_assert!((got - want).abs() <= want * 0.01, "q{q}: {got} vs {want}");
        }
    }
}
