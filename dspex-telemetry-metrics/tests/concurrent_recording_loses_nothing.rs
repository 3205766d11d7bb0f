//! Two threads recording into the same series lose no samples.

use std::sync::{Arc, Barrier};

use dspex_telemetry_metrics::{MonotonicClock, SeriesWindow, WindowConfig, WindowShape};

#[test]
fn two_threads_recording_into_one_series_add_up_exactly() {
    const PER_THREAD: u64 = 1_000_000;
    let shape = Arc::new(WindowShape::new(WindowConfig::default()).unwrap());
    let window = Arc::new(SeriesWindow::new(shape, Arc::new(MonotonicClock)));
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let (window, barrier) = (window.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..PER_THREAD {
                    window.record(1.0 + (i % 1000) as f64 + t as f64);
                    if i % 100 == 0 {
                        window.record_error();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let snap = window.snapshot();
    assert_eq!(snap.count, 2 * PER_THREAD);
    assert_eq!(snap.error_count, 2 * PER_THREAD / 100);
    let expected_sum: f64 = (0..2)
        .map(|t| {
            (0..PER_THREAD)
                .map(|i| 1.0 + (i % 1000) as f64 + t as f64)
                .sum::<f64>()
        })
        .sum();
    assert!(
        (snap.sum - expected_sum).abs() / expected_sum < 1e-9,
        "{} vs {}",
        snap.sum,
        expected_sum
    );
    assert_eq!(snap.min, 1.0);
    assert_eq!(snap.max, 1001.0);
}
