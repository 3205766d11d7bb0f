//! The window slides: old samples leave on time, new ones count, nothing resets wholesale.

use std::sync::Arc;

use dspex_telemetry_metrics::{
    ManualClock, SeriesWindow, WindowConfig, WindowConfigError, WindowShape,
};

/// A default window, written through this thread's own shard (`shards` 2, the default) or
/// through the shared atomic path (`shards` 0): both must slide alike.
fn window(clock: &ManualClock, shards: usize) -> SeriesWindow {
    let config = WindowConfig {
        writer_shards: shards,
        ..Default::default()
    };
    let shape = Arc::new(WindowShape::new(config).unwrap());
    SeriesWindow::new(shape, Arc::new(clock.clone()))
}

const SHARDS: [usize; 2] = [2, 0];

#[test]
fn samples_leave_one_sub_window_at_a_time() {
    for shards in SHARDS {
        let clock = ManualClock::new(0);
        let w = window(&clock, shards);
        // One batch of 10 samples in each 10-second sub-window, values 1, 2, … by batch.
        for batch in 1..=6u64 {
            for _ in 0..10 {
                w.record(batch as f64);
            }
            clock.advance_ms(10_000);
        }
        // t = 60 s: the first batch (t in [0, 10)) has left; five batches remain.
        let snap = w.snapshot();
        assert_eq!(snap.count, 50);
        assert_eq!(snap.min, 2.0);
        assert_eq!(snap.max, 6.0);
        // Each further step drops exactly one batch: no wholesale reset.
        for remaining in (0..5u64).rev() {
            clock.advance_ms(10_000);
            let snap = w.snapshot();
            assert_eq!(snap.count, remaining * 10, "at t={} ms", clock_now(&clock));
            if remaining > 0 {
                assert_eq!(snap.min, (7 - remaining) as f64);
            }
        }
    }
}

fn clock_now(clock: &ManualClock) -> u64 {
    use dspex_telemetry_metrics::Clock;
    clock.now_ms()
}

#[test]
fn new_samples_count_and_reused_slots_start_empty() {
    for shards in SHARDS {
        let clock = ManualClock::new(0);
        let w = window(&clock, shards);
        for _ in 0..100 {
            w.record(500.0);
        }
        w.record_error();
        clock.advance_ms(70_000);
        for _ in 0..4 {
            w.record(2.0);
        }
        let snap = w.snapshot();
        assert_eq!(snap.count, 4, "the old samples left, the new ones count");
        assert_eq!(snap.error_count, 0);
        assert_eq!(snap.max, 2.0);
        assert!((snap.p99 - 2.0).abs() < 0.02);
    }
}

#[test]
fn rates_and_error_rates_cover_the_window() {
    for shards in SHARDS {
        let clock = ManualClock::new(0);
        let w = window(&clock, shards);
        for i in 0..600 {
            w.record(10.0);
            if i % 20 == 0 {
                w.record_error();
            }
            clock.advance_ms(100);
        }
        // 60 s of 10 samples per second; the window covers the last 50–60 s.
        let snap = w.snapshot();
        assert!(
            (snap.rate_per_sec - 10.0).abs() < 0.5,
            "rate {}",
            snap.rate_per_sec
        );
        assert!(
            (snap.error_rate - 0.05).abs() < 0.005,
            "error rate {}",
            snap.error_rate
        );
        assert_eq!(snap.span_ms, 50_000);
    }
}

#[test]
fn bad_configuration_names_the_key() {
    let cases = [
        (
            WindowConfig {
                window_size_ms: 0,
                ..Default::default()
            },
            "window_size_ms",
        ),
        (
            WindowConfig {
                max_samples: 100,
                ..Default::default()
            },
            "max_samples",
        ),
        (
            WindowConfig {
                relative_accuracy: 0.0,
                ..Default::default()
            },
            "relative_accuracy",
        ),
        (
            WindowConfig {
                relative_accuracy: 0.001,
                ..Default::default()
            },
            "relative_accuracy",
        ),
        (
            WindowConfig {
                relative_accuracy: 0.004,
                max_value: 1e300,
                ..Default::default()
            },
            "max_value",
        ),
        (
            WindowConfig {
                writer_shards: 65,
                ..Default::default()
            },
            "writer_shards",
        ),
        (
            WindowConfig {
                min_value: -1.0,
                ..Default::default()
            },
            "min_value",
        ),
        (
            WindowConfig {
                max_value: 0.0001,
                ..Default::default()
            },
            "max_value",
        ),
        (
            WindowConfig {
                sub_windows: 1,
                ..Default::default()
            },
            "sub_windows",
        ),
    ];
    for (config, key) in cases {
        let WindowConfigError::Invalid { key: got, .. } = WindowShape::new(config).unwrap_err();
        assert_eq!(got, key);
    }
    let small = WindowShape::new(WindowConfig {
        max_samples: 3_000,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        small.sub_windows(),
        2,
        "a smaller max_samples gives fewer sub-windows"
    );
    assert_eq!(
        small.writer_shards(),
        0,
        "writer shards are the first to go when max_samples is short"
    );
    assert!(small.counters_per_series() <= 3_000);
}
