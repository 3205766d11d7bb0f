//! Windowed counters and gauges: what the recorder keeps for `counter!` and `gauge!`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::Clock;
use crate::ring::{Ring, Slot};
use std::sync::Arc;

pub(crate) struct CounterSlot {
    epoch: AtomicU64,
    count: AtomicU64,
}

impl Slot for CounterSlot {
    fn epoch(&self) -> &AtomicU64 {
        &self.epoch
    }
    fn clear(&self) {
        self.count.store(0, Ordering::Relaxed);
    }
}

/// A counter's total since it was created, and how much of it fell in the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterSnapshot {
    /// The total since the series was created (what Prometheus would show).
    pub total: u64,
    /// Increments within the window.
    pub in_window: u64,
    /// `in_window` per second over the span the window covers.
    pub rate_per_sec: f64,
}

/// A monotonic counter with a sliding window of its increments.
pub(crate) struct WindowedCounter {
    ring: Ring<CounterSlot>,
    total: AtomicU64,
    clock: Arc<dyn Clock>,
    created_ms: u64,
    window_ms: u64,
    pub(crate) last_update_ms: AtomicU64,
}

impl WindowedCounter {
    pub(crate) fn new(
        sub_windows: usize,
        sub_window_ms: u64,
        window_ms: u64,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let now = clock.now_ms();
        WindowedCounter {
            ring: Ring::new(
                (0..sub_windows)
                    .map(|_| CounterSlot {
                        epoch: AtomicU64::new(0),
                        count: AtomicU64::new(0),
                    })
                    .collect(),
                sub_window_ms,
            ),
            total: AtomicU64::new(0),
            clock,
            created_ms: now,
            window_ms,
            last_update_ms: AtomicU64::new(now),
        }
    }

    fn add(&self, n: u64) {
        let now = self.clock.now_ms();
        self.ring.current(now).count.fetch_add(n, Ordering::Relaxed);
        self.last_update_ms.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        let now = self.clock.now_ms();
        let (live, oldest_start) = self.ring.live(now);
        let in_window: u64 = live.map(|s| s.count.load(Ordering::Relaxed)).sum();
        let span_ms = now
            .saturating_sub(oldest_start.max(self.created_ms))
            .clamp(1, self.window_ms);
        CounterSnapshot {
            total: self.total.load(Ordering::Relaxed),
            in_window,
            rate_per_sec: in_window as f64 * 1000.0 / span_ms as f64,
        }
    }
}

impl metrics::CounterFn for WindowedCounter {
    fn increment(&self, value: u64) {
        self.total.fetch_add(value, Ordering::Relaxed);
        self.add(value);
    }

    fn absolute(&self, value: u64) {
        let previous = self.total.fetch_max(value, Ordering::Relaxed);
        if value > previous {
            self.add(value - previous);
        }
    }
}

/// A gauge: the last value set.
pub(crate) struct GaugeCell {
    bits: AtomicU64,
    clock: Arc<dyn Clock>,
    pub(crate) last_update_ms: AtomicU64,
}

impl GaugeCell {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        let now = clock.now_ms();
        GaugeCell {
            bits: AtomicU64::new(0f64.to_bits()),
            clock,
            last_update_ms: AtomicU64::new(now),
        }
    }

    pub(crate) fn value(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::Relaxed))
    }

    fn update(&self, f: impl Fn(f64) -> f64) {
        let mut current = self.bits.load(Ordering::Relaxed);
        loop {
            let next = f(f64::from_bits(current)).to_bits();
            match self.bits.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        self.last_update_ms
            .fetch_max(self.clock.now_ms(), Ordering::Relaxed);
    }
}

impl metrics::GaugeFn for GaugeCell {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.update(|_| value);
    }
}
