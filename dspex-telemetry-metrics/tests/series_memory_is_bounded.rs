//! Memory per series is bounded: a new series takes under 2 KiB, makes its counters in pages
//! as values reach them, and stays under 32 KiB with the default configuration whatever it
//! records; once its pages are made, recording allocates nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dspex_telemetry_metrics::{ManualClock, SeriesWindow, WindowConfig, WindowShape};

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Bytes this thread allocated (other threads, such as the test harness's, do not count).
    static MINE: Cell<usize> = const { Cell::new(0) };
}

fn mine() -> usize {
    MINE.with(Cell::get)
}

// SAFETY: forwards to the system allocator, counting bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::SeqCst);
        let _ = MINE.try_with(|m| m.set(m.get() + layout.size()));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const LIMIT: usize = 32 * 1024;

#[test]
fn a_series_starts_small_and_stays_under_32_kib_whatever_it_records() {
    let clock = ManualClock::new(0);
    let shape = Arc::new(WindowShape::new(WindowConfig::default()).unwrap());
    let before = mine();
    let window = SeriesWindow::new(shape, Arc::new(clock.clone()));
    let new_heap = mine() - before;
    let new_reported = window.memory_bytes();
    eprintln!("a new series: {new_reported} bytes reported, {new_heap} bytes allocated");
    assert!(
        new_heap <= 2 * 1024,
        "a new series allocated {new_heap} bytes: its counters are made as values reach them"
    );

    // A quiet series: a few values around one latency stay in a page or two per sub-window.
    for ms in [12.0, 13.5, 15.0] {
        window.record(ms);
    }
    assert!(
        mine() - before <= 3 * 1024,
        "three samples took {} bytes",
        mine() - before
    );

    let mut x = 0.37f64;
    for i in 0..10_000_000u64 {
        // Spread over the whole value range, and across sub-windows.
        x = (x * 1.618_033_988_749_895).fract();
        window.record(10f64.powf(-3.0 + 9.0 * x));
        if i % 1_000_000 == 0 {
            clock.advance_ms(7_000);
        }
    }
    let full_heap = mine() - before;
    let reported = window.memory_bytes();
    eprintln!("after 10 000 000 samples: {reported} bytes reported, {full_heap} bytes allocated");
    assert!(reported <= LIMIT, "memory_bytes {reported} > {LIMIT}");
    assert!(full_heap <= LIMIT, "the series allocated {full_heap} bytes");
    assert!(
        reported >= full_heap,
        "memory_bytes ({reported}) counts what the series allocated ({full_heap})"
    );

    // Every page made: recording allocates nothing more.
    let steady = mine();
    for i in 0..1_000_000u64 {
        x = (x * 1.618_033_988_749_895).fract();
        window.record(10f64.powf(-3.0 + 9.0 * x));
        if i % 100_000 == 0 {
            clock.advance_ms(7_000);
        }
    }
    assert_eq!(
        mine(),
        steady,
        "recording allocated once every page was made"
    );
    assert!(ALLOCATED.load(Ordering::SeqCst) > 0);
    assert_eq!(window.memory_bytes(), reported);
    assert!(window.snapshot().count > 0);
}
