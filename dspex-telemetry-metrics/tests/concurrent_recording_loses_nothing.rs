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

/// Four writers (two with shards of their own, two on the shared atomic path) record while the
/// clock crosses sub-window boundaries, so shards keep joining their sub-windows; a reader
/// meanwhile never sees a sample counted twice or a count go back, and at the end every
/// sample is there.
#[test]
fn reads_during_sub_window_changes_neither_lose_nor_double_count() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use dspex_telemetry_metrics::ManualClock;

    const WRITERS: u64 = 4;
    const PER_WRITER: u64 = 200_000;
    let clock = ManualClock::new(0);
    let shape = Arc::new(WindowShape::new(WindowConfig::default()).unwrap());
    assert_eq!(shape.writer_shards(), 2);
    let window = Arc::new(SeriesWindow::new(shape, Arc::new(clock.clone())));
    let recorded = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(WRITERS as usize + 2));

    let writers: Vec<_> = (0..WRITERS)
        .map(|t| {
            let (window, recorded, barrier) = (window.clone(), recorded.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..PER_WRITER {
                    window.record(1.0 + ((i + t) % 500) as f64);
                    recorded.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // The clock moves 50 s in 100 ms steps: five sub-window boundaries, nothing leaves.
    let ticker = {
        let (clock, done, barrier) = (clock.clone(), done.clone(), barrier.clone());
        std::thread::spawn(move || {
            barrier.wait();
            let mut moved = 0;
            while !done.load(Ordering::SeqCst) && moved < 50_000 {
                clock.advance_ms(100);
                moved += 100;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    barrier.wait();
    let mut last = 0;
    let mut reads = 0;
    while recorded.load(Ordering::SeqCst) < WRITERS * PER_WRITER {
        let count = window.snapshot().count;
        let after = recorded.load(Ordering::SeqCst);
        assert!(count >= last, "a read went back from {last} to {count}");
        // Records in flight (counted in the window, not yet in `recorded`): one per writer.
        assert!(
            count <= after + WRITERS,
            "a read counted {count} with {after} recorded"
        );
        last = count;
        reads += 1;
    }
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    ticker.join().unwrap();
    assert!(reads > 10, "the reader raced the writers {reads} times");
    let snap = window.snapshot();
    assert_eq!(snap.count, WRITERS * PER_WRITER);
    assert_eq!((snap.min, snap.max), (1.0, 500.0));
}

/// Counters too: four threads (two with writer shards, two without) incrementing one counter
/// through the recorder add up exactly, in its total and in its window.
#[test]
fn four_threads_incrementing_one_counter_add_up_exactly() {
    use dspex_telemetry_metrics::{RecorderConfig, WindowedRecorder};

    const PER_THREAD: u64 = 250_000;
    let recorder = WindowedRecorder::new(RecorderConfig::default()).unwrap();
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (recorder, barrier) = (recorder.clone(), barrier.clone());
            std::thread::spawn(move || {
                metrics::with_local_recorder(&recorder, || {
                    let counter = metrics::counter!("calls_total", "kind" => "x");
                    barrier.wait();
                    for _ in 0..PER_THREAD {
                        counter.increment(1);
                    }
                });
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let snap = recorder.counter("calls_total", &[("kind", "x")]).unwrap();
    assert_eq!(snap.total, 4 * PER_THREAD);
    assert_eq!(snap.in_window, 4 * PER_THREAD);
}
