//! Windowed counters and gauges: what the recorder keeps for `counter!` and `gauge!`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::ClockHandle;
use crate::ring::{Ring, Slot};
use crate::writer;

/// A sub-window of a counter holds the total when it opened: the increments in the window
/// are the total now minus the total when its oldest sub-window opened, so an increment
/// costs one atomic add.
pub(crate) struct CounterSlot {
    epoch: AtomicU64,
    opening_total: AtomicU64,
}

impl Slot for CounterSlot {
    fn epoch(&self) -> &AtomicU64 {
        &self.epoch
    }
    fn clear(&self) {
        self.opening_total.store(0, Ordering::Relaxed);
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

/// One writer thread's part of a counter's total (see [`crate::writer`]).
#[repr(align(64))]
struct CounterShard {
    total: AtomicU64,
    /// When the sub-window this thread last saw open ends (ms).
    end_ms: AtomicU64,
}

/// A monotonic counter with a sliding window of its increments. Its total is the shared
/// total plus the writer shards' (each written by one thread, without atomic
/// read-modify-write).
pub(crate) struct WindowedCounter {
    ring: Ring<CounterSlot>,
    total: AtomicU64,
    shards: Box<[CounterShard]>,
    clock: ClockHandle,
    created_ms: u64,
    window_ms: u64,
    pub(crate) last_update_ms: AtomicU64,
}

impl WindowedCounter {
    pub(crate) fn new(
        sub_windows: usize,
        sub_window_ms: u64,
        window_ms: u64,
        writer_shards: usize,
        clock: ClockHandle,
    ) -> Self {
        let now = clock.now_ms();
        WindowedCounter {
            ring: Ring::new(
                (0..sub_windows)
                    .map(|_| CounterSlot {
                        epoch: AtomicU64::new(0),
                        opening_total: AtomicU64::new(0),
                    })
                    .collect(),
                sub_window_ms,
            ),
            total: AtomicU64::new(0),
            shards: (0..writer_shards)
                .map(|_| CounterShard {
                    total: AtomicU64::new(0),
                    end_ms: AtomicU64::new(0),
                })
                .collect(),
            clock,
            created_ms: now,
            window_ms,
            last_update_ms: AtomicU64::new(now),
        }
    }

    /// The total since creation: shared and sharded parts.
    fn total(&self) -> u64 {
        self.shards
            .iter()
            .fold(self.total.load(Ordering::Relaxed), |t, s| {
                t.wrapping_add(s.total.load(Ordering::Relaxed))
            })
    }

    /// Opens the current sub-window if needed (recording the total before this increment).
    #[inline]
    fn tick(&self, now: u64) {
        self.ring.current_with(now, |slot| {
            slot.opening_total.store(self.total(), Ordering::Relaxed)
        });
    }

    #[inline]
    fn touch(&self, now: u64) {
        if self.last_update_ms.load(Ordering::Relaxed) < now {
            self.last_update_ms.store(now, Ordering::Relaxed);
        }
    }

    #[cold]
    fn open(&self, shard: &CounterShard, now: u64) {
        self.tick(now);
        let sub_window_ms = self.ring.sub_window_ms();
        shard
            .end_ms
            .store((now / sub_window_ms + 1) * sub_window_ms, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        let now = self.clock.now_ms();
        let total = self.total();
        let (live, oldest_start) = self.ring.live(now);
        let opening = live.map(|s| s.opening_total.load(Ordering::Relaxed)).min();
        // No live sub-window: nothing happened within the window.
        let in_window = opening.map_or(0, |o| total.saturating_sub(o));
        let span_ms = now
            .saturating_sub(oldest_start.max(self.created_ms))
            .clamp(1, self.window_ms);
        CounterSnapshot {
            total,
            in_window,
            rate_per_sec: in_window as f64 * 1000.0 / span_ms as f64,
        }
    }
}

impl metrics::CounterFn for WindowedCounter {
    #[inline]
    fn increment(&self, value: u64) {
        let now = self.clock.now_ms();
        match self.shards.get(writer::slot()) {
            Some(shard) => {
                // Only this thread writes the shard, and a sub-window is opened by the first
                // record in it: until `end_ms` nothing needs opening.
                if now >= shard.end_ms.load(Ordering::Relaxed) {
                    self.open(shard, now);
                }
                let total = &shard.total;
                total.store(
                    total.load(Ordering::Relaxed).wrapping_add(value),
                    Ordering::Relaxed,
                );
            }
            None => {
                self.tick(now);
                self.total.fetch_add(value, Ordering::Relaxed);
            }
        }
        self.touch(now);
    }

    fn absolute(&self, value: u64) {
        let now = self.clock.now_ms();
        self.tick(now);
        // Raise the shared part so that the whole total reaches `value` (never lowers it).
        let current = self.total();
        if value > current {
            self.total.fetch_add(value - current, Ordering::Relaxed);
        }
        self.touch(now);
    }
}

/// A gauge: the last value set.
pub(crate) struct GaugeCell {
    bits: AtomicU64,
    clock: ClockHandle,
    pub(crate) last_update_ms: AtomicU64,
}

impl GaugeCell {
    pub(crate) fn new(clock: ClockHandle) -> Self {
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
