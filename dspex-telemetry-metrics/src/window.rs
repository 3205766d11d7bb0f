//! The sliding window of one series: a ring of sub-windows, each a relative-error sketch with
//! count, sum, min, max and errors, recorded with atomics and read by merging.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::clock::Clock;
use crate::ring::{Ring, Slot};
use crate::sketch::LogMapping;

/// Why a window configuration was refused; each names the key at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WindowConfigError {
    /// A key's value is out of range.
    #[error("invalid `{key}`: {reason}")]
    Invalid {
        /// The configuration key.
        key: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> WindowConfigError {
    WindowConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// How a window slides and how much it may hold. The spec's keys: `window_size_ms`,
/// `max_samples`.
///
/// **What `max_samples` bounds.** The window keeps no raw samples: each sub-window counts
/// samples in log-spaced buckets, so memory does not grow with traffic. `max_samples` is the
/// most bucket counters one series may hold across its sub-windows, so a series takes at most
/// `4 × max_samples` bytes of counters plus a fixed few hundred bytes. With the defaults
/// (`relative_accuracy` 0.99 %, values from 0.001 to 1 000 000, 6 sub-windows) a series
/// holds 6 × 1 047 counters, about 25 KiB, under the default `max_samples` of 10 000. A
/// smaller `max_samples` gives fewer sub-windows (a coarser slide), never less accuracy.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowConfig {
    /// The window's length (`window_size_ms`, default 60 000).
    pub window_size_ms: u64,
    /// The most bucket counters a series may hold (`max_samples`, default 10 000).
    pub max_samples: usize,
    /// How many sub-windows the window is cut into (default 6: it slides in steps of
    /// `window_size_ms / 6`). Lowered if `max_samples` allows fewer.
    pub sub_windows: usize,
    /// The bound on the relative error of every quantile (default 0.0099, under 1 %).
    pub relative_accuracy: f64,
    /// The smallest value told apart from its neighbours (default 0.001: 1 µs in ms).
    pub min_value: f64,
    /// The largest value told apart from its neighbours (default 1 000 000: 16.7 min in ms).
    pub max_value: f64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            window_size_ms: 60_000,
            max_samples: 10_000,
            sub_windows: 6,
            relative_accuracy: 0.0099,
            min_value: 1e-3,
            max_value: 1e6,
        }
    }
}

/// A validated configuration with its derived shape, shared by every series of a recorder.
#[derive(Debug, Clone)]
pub struct WindowShape {
    config: WindowConfig,
    mapping: LogMapping,
    sub_windows: usize,
    sub_window_ms: u64,
}

impl WindowShape {
    /// Validates `config`; errors name the key at fault.
    pub fn new(config: WindowConfig) -> Result<Self, WindowConfigError> {
        if config.window_size_ms < 10 {
            return Err(invalid("window_size_ms", "must be at least 10"));
        }
        if !(config.relative_accuracy > 0.0 && config.relative_accuracy < 0.5) {
            return Err(invalid("relative_accuracy", "must be in (0, 0.5)"));
        }
        if !(config.min_value > 0.0 && config.min_value.is_finite()) {
            return Err(invalid("min_value", "must be a positive number"));
        }
        if !(config.max_value > config.min_value && config.max_value.is_finite()) {
            return Err(invalid("max_value", "must be a number above min_value"));
        }
        if config.sub_windows < 2 {
            return Err(invalid("sub_windows", "must be at least 2"));
        }
        let mapping = LogMapping::new(config.relative_accuracy, config.min_value, config.max_value);
        let per_sub = mapping.len() + 1;
        let affordable = config.max_samples / per_sub;
        if affordable < 2 {
            return Err(invalid(
                "max_samples",
                format!(
                    "must be at least {} (two sub-windows of {per_sub} buckets) for this accuracy and value range",
                    2 * per_sub
                ),
            ));
        }
        let sub_windows = config.sub_windows.min(affordable);
        let sub_window_ms = (config.window_size_ms / sub_windows as u64).max(1);
        Ok(WindowShape {
            config,
            mapping,
            sub_windows,
            sub_window_ms,
        })
    }

    /// The configuration it was made from.
    pub fn config(&self) -> &WindowConfig {
        &self.config
    }

    /// The number of sub-windows actually used.
    pub fn sub_windows(&self) -> usize {
        self.sub_windows
    }

    /// The length of one sub-window: the step the window slides by.
    pub fn sub_window_ms(&self) -> u64 {
        self.sub_window_ms
    }

    /// Bucket counters per series (what `max_samples` bounds).
    pub fn counters_per_series(&self) -> usize {
        self.sub_windows * (self.mapping.len() + 1)
    }
}

struct SubWindow {
    epoch: AtomicU64,
    errors: AtomicU64,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
    buckets: Box<[AtomicU32]>,
}

const EMPTY_MIN: u64 = f64::INFINITY.to_bits();
const EMPTY_MAX: u64 = f64::NEG_INFINITY.to_bits();

impl SubWindow {
    fn new(buckets: usize) -> Self {
        SubWindow {
            epoch: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
            min: AtomicU64::new(EMPTY_MIN),
            max: AtomicU64::new(EMPTY_MAX),
            buckets: (0..buckets).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

impl Slot for SubWindow {
    fn epoch(&self) -> &AtomicU64 {
        &self.epoch
    }

    fn clear(&self) {
        self.errors.store(0, Ordering::Relaxed);
        self.sum.store(0f64.to_bits(), Ordering::Relaxed);
        self.min.store(EMPTY_MIN, Ordering::Relaxed);
        self.max.store(EMPTY_MAX, Ordering::Relaxed);
        for b in self.buckets.iter() {
            b.store(0, Ordering::Relaxed);
        }
    }
}

/// Adds to an f64 kept as bits.
#[inline]
fn add_f64(cell: &AtomicU64, value: f64) {
    let mut current = cell.load(Ordering::Relaxed);
    loop {
        let next = (f64::from_bits(current) + value).to_bits();
        match cell.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => current = seen,
        }
    }
}

/// Lowers (or raises) an f64 kept as bits; a load and no write in the common case.
#[inline]
fn fold_f64(cell: &AtomicU64, value: f64, better: impl Fn(f64, f64) -> bool) {
    let mut current = cell.load(Ordering::Relaxed);
    while better(value, f64::from_bits(current)) {
        match cell.compare_exchange_weak(
            current,
            value.to_bits(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return,
            Err(seen) => current = seen,
        }
    }
}

/// The sliding window of one series.
///
/// Recording is lock-free: a coarse clock read, a bucket index, one relaxed atomic add to the
/// bucket and one to the sum, on the current sub-window (min and max are only read unless they
/// move). The first record of a new sub-window clears the slot it reuses, under a
/// lock that only that moment takes. A read merges the sub-windows still in the window.
///
/// ```
/// use std::sync::Arc;
/// use dspex_telemetry_metrics::{ManualClock, SeriesWindow, WindowConfig, WindowShape};
///
/// let clock = ManualClock::new(0);
/// let shape = Arc::new(WindowShape::new(WindowConfig::default()).unwrap());
/// let window = SeriesWindow::new(shape, Arc::new(clock.clone()));
/// for ms in 1..=100 {
///     window.record(ms as f64);
/// }
/// window.record_error();
/// let snap = window.snapshot();
/// assert_eq!(snap.count, 100);
/// assert!((snap.p99 - 99.0).abs() <= 99.0 * 0.01);
/// assert_eq!(snap.error_count, 1);
/// clock.advance_ms(61_000);
/// assert_eq!(window.snapshot().count, 0, "everything left the window");
/// ```
pub struct SeriesWindow {
    shape: Arc<WindowShape>,
    clock: Arc<dyn Clock>,
    ring: Ring<SubWindow>,
    created_ms: u64,
    last_update_ms: AtomicU64,
}

impl std::fmt::Debug for SeriesWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesWindow")
            .field("sub_windows", &self.ring.slots().len())
            .field("sub_window_ms", &self.shape.sub_window_ms)
            .finish()
    }
}

/// What a window saw over its span: counts, extremes, quantiles, rates.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSnapshot {
    /// Samples recorded in the window.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest, exactly (0 with no sample).
    pub min: f64,
    /// The largest, exactly (0 with no sample).
    pub max: f64,
    /// `sum / count` (0 with no sample).
    pub mean: f64,
    /// The median, within the configured relative accuracy of the exact nearest-rank value.
    pub p50: f64,
    /// The 95th percentile, likewise.
    pub p95: f64,
    /// The 99th percentile, likewise.
    pub p99: f64,
    /// Samples per second over the span the window covers.
    pub rate_per_sec: f64,
    /// Errors recorded in the window.
    pub error_count: u64,
    /// `error_count / count` (0 with no sample).
    pub error_rate: f64,
    /// How much time the snapshot covers, in milliseconds (at most the window's length).
    pub span_ms: u64,
    counts: Vec<u64>,
    mapping: LogMapping,
}

impl WindowSnapshot {
    /// The value at quantile `q` (0 ≤ q ≤ 1) by nearest rank, within the configured relative
    /// accuracy of the exact value; 0 with no sample.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (index, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return self.mapping.value(index).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

impl SeriesWindow {
    /// A window of `shape`, sliding on `clock`.
    pub fn new(shape: Arc<WindowShape>, clock: Arc<dyn Clock>) -> Self {
        let buckets = shape.mapping.len() + 1;
        let now = clock.now_ms();
        SeriesWindow {
            ring: Ring::new(
                (0..shape.sub_windows)
                    .map(|_| SubWindow::new(buckets))
                    .collect(),
                shape.sub_window_ms,
            ),
            shape,
            clock,
            created_ms: now,
            last_update_ms: AtomicU64::new(now),
        }
    }

    #[inline]
    fn current(&self) -> (&SubWindow, u64) {
        let now = self.clock.now_ms();
        (self.ring.current(now), now)
    }

    /// Records one sample.
    #[inline]
    pub fn record(&self, value: f64) {
        self.record_many(value, 1);
    }

    /// Records `count` samples of `value`.
    #[inline]
    pub fn record_many(&self, value: f64, count: u32) {
        if count == 0 {
            return;
        }
        let (slot, now) = self.current();
        let index = self.shape.mapping.index(value);
        // The count is the buckets' sum, taken when read: one atomic add fewer per sample.
        slot.buckets[index].fetch_add(count, Ordering::Relaxed);
        if value.is_finite() {
            add_f64(&slot.sum, value * f64::from(count));
            fold_f64(&slot.min, value, |v, cur| v < cur);
            fold_f64(&slot.max, value, |v, cur| v > cur);
        }
        self.touch(now);
    }

    /// Records one error (a failed operation; its duration is recorded with `record`).
    #[inline]
    pub fn record_error(&self) {
        let (slot, now) = self.current();
        slot.errors.fetch_add(1, Ordering::Relaxed);
        self.touch(now);
    }

    #[inline]
    fn touch(&self, now: u64) {
        // Written once per millisecond at most: a load, and a store only when time moved.
        if self.last_update_ms.load(Ordering::Relaxed) < now {
            self.last_update_ms.store(now, Ordering::Relaxed);
        }
    }

    /// When this series last recorded anything, on its clock.
    pub fn last_update_ms(&self) -> u64 {
        self.last_update_ms.load(Ordering::Relaxed)
    }

    /// Heap and inline bytes this series takes: what `max_samples` bounds, plus the fixed part.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .ring
                .slots()
                .iter()
                .map(|s| std::mem::size_of::<SubWindow>() + std::mem::size_of_val(&*s.buckets))
                .sum::<usize>()
    }

    /// What the window holds now.
    pub fn snapshot(&self) -> WindowSnapshot {
        let now = self.clock.now_ms();
        let mapping = self.shape.mapping.clone();
        let mut counts = vec![0u64; mapping.len() + 1];
        let (mut errors, mut sum) = (0u64, 0f64);
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        let (live, oldest_start) = self.ring.live(now);
        for slot in live {
            errors += slot.errors.load(Ordering::Relaxed);
            sum += f64::from_bits(slot.sum.load(Ordering::Relaxed));
            min = min.min(f64::from_bits(slot.min.load(Ordering::Relaxed)));
            max = max.max(f64::from_bits(slot.max.load(Ordering::Relaxed)));
            for (total, bucket) in counts.iter_mut().zip(slot.buckets.iter()) {
                *total += u64::from(bucket.load(Ordering::Relaxed));
            }
        }
        let count: u64 = counts.iter().sum();
        if !min.is_finite() {
            min = 0.0;
        }
        if !max.is_finite() {
            max = 0.0;
        }
        let window_start = oldest_start.max(self.created_ms);
        let span_ms = now
            .saturating_sub(window_start)
            .clamp(1, self.shape.config.window_size_ms);
        let mut snap = WindowSnapshot {
            count,
            sum,
            min,
            max,
            mean: if count > 0 { sum / count as f64 } else { 0.0 },
            p50: 0.0,
            p95: 0.0,
            p99: 0.0,
            rate_per_sec: count as f64 * 1000.0 / span_ms as f64,
            error_count: errors,
            error_rate: if count > 0 {
                errors as f64 / count as f64
            } else {
                0.0
            },
            span_ms,
            counts,
            mapping,
        };
        snap.p50 = snap.quantile(0.50);
        snap.p95 = snap.quantile(0.95);
        snap.p99 = snap.quantile(0.99);
        snap
    }
}

impl metrics::HistogramFn for SeriesWindow {
    fn record(&self, value: f64) {
        SeriesWindow::record(self, value);
    }

    fn record_many(&self, value: f64, count: usize) {
        SeriesWindow::record_many(self, value, u32::try_from(count).unwrap_or(u32::MAX));
    }
}
