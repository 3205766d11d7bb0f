//! Memory per series is fixed: ten million samples allocate nothing, and a series stays under
//! 32 KiB with the default configuration.

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
fn ten_million_samples_into_one_series_stay_under_32_kib() {
    let clock = ManualClock::new(0);
    let shape = Arc::new(WindowShape::new(WindowConfig::default()).unwrap());
    let before = mine();
    let window = SeriesWindow::new(shape, Arc::new(clock.clone()));
    let series_heap = mine() - before;
    let reported = window.memory_bytes();
    eprintln!("one series: {reported} bytes reported, {series_heap} bytes allocated");
    assert!(reported <= LIMIT, "memory_bytes {reported} > {LIMIT}");
    assert!(
        series_heap <= LIMIT,
        "a new series allocated {series_heap} bytes"
    );

    let after_new = mine();
    let mut x = 0.37f64;
    for i in 0..10_000_000u64 {
        // Spread over the whole value range, and across sub-windows.
        x = (x * 1.618_033_988_749_895).fract();
        window.record(10f64.powf(-3.0 + 9.0 * x));
        if i % 1_000_000 == 0 {
            clock.advance_ms(7_000);
        }
    }
    assert_eq!(mine(), after_new, "recording allocated");
    assert!(ALLOCATED.load(Ordering::SeqCst) > 0);
    assert_eq!(window.memory_bytes(), reported);
    assert!(window.snapshot().count > 0);
}
