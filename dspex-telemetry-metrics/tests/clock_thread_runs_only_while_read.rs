//! The system clock's background thread keeps the reading current while it is read, and parks
//! after a second without reads; the next read is still right and wakes it.
#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use dspex_telemetry_metrics::{Clock, MonotonicClock};

/// The `dspex-clock` thread's voluntary context switches (one per tick while it runs).
fn clock_thread_switches() -> u64 {
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let dir = task.expect("task entry").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() == "dspex-clock" {
            let status = std::fs::read_to_string(dir.join("status")).expect("status");
            return status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .expect("voluntary_ctxt_switches")
                .trim()
                .parse()
                .expect("a number");
        }
    }
    panic!("no dspex-clock thread");
}

#[test]
fn the_clock_follows_time_while_read_and_its_thread_parks_when_not() {
    let clock = MonotonicClock;
    let first = clock.now_ms();
    // While read, the reading follows the system clock.
    let started = Instant::now();
    let mut last = first;
    while started.elapsed() < Duration::from_millis(300) {
        let now = clock.now_ms();
        assert!(now >= last, "the clock went back from {last} to {now}");
        last = now;
        std::thread::sleep(Duration::from_millis(1));
    }
    let moved = last - first;
    assert!(
        (150..=2_000).contains(&moved),
        "300 ms of reads saw the clock move {moved} ms"
    );
    let ticking = clock_thread_switches();
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        clock_thread_switches() > ticking,
        "the thread ticks while read"
    );

    // Unread for over a second, the thread parks: it stops waking up.
    std::thread::sleep(Duration::from_millis(2_500));
    let parked = clock_thread_switches();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(clock_thread_switches(), parked, "the thread still wakes up");

    // The next read takes the system clock (2.8 s have passed) and wakes the thread.
    let after = clock.now_ms();
    assert!(
        after >= last + 2_700,
        "after a 2.8 s pause the clock read {after}, {last} before"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(clock.now_ms() >= after);
    assert!(clock_thread_switches() > parked, "the read woke the thread");
}
