//! The sliding window of one series: a ring of sub-windows, each a relative-error sketch with
//! count, sum, min, max and errors, recorded with atomics and read by merging.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering, fence};

use crate::clock::{Clock, ClockHandle};
use crate::paged::{Counter, Paged};
use crate::ring::{Ring, Slot};
use crate::sketch::LogMapping;
use crate::writer;
use dspex_telemetry_core::bounds;

/// The most `max_samples` accepts: a million counters (4 MiB) per series.
pub const MAX_SAMPLES: u64 = 1_000_000;

/// The most `sub_windows` accepts.
pub const MAX_SUB_WINDOWS: u64 = 1_000;

/// Why a window configuration was refused; each names the key at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WindowConfigError {
    /// A key's value is out of range.
    #[error("invalid `{key}`: {reason}")]
    Invalid {
        /// The configuration key (`window_size_ms`, `ranges.<metric>.max`, …).
        key: String,
        /// What is wrong with its value.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> WindowConfigError {
    WindowConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The values a histogram's window tells apart within the relative accuracy: from `min` to
/// `max`, in the metric's unit. A sample outside is counted at the range's edge (and in
/// [`WindowSnapshot::out_of_range`]). Each decade of range costs about 116 bucket counters
/// per sub-window at the default accuracy.
///
/// ```
/// use dspex_telemetry_metrics::ValueRange;
/// let range: ValueRange = toml::from_str("min = 1\nmax = 86_400_000").unwrap();
/// assert_eq!(range, ValueRange { min: 1.0, max: 86_400_000.0 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueRange {
    /// The smallest value told apart from its neighbours (positive).
    pub min: f64,
    /// The largest (above `min`).
    pub max: f64,
}

impl ValueRange {
    /// The range around a histogram's bucket boundaries: from a thousandth of its smallest
    /// positive boundary to a hundred times its largest, so that values well past either
    /// end keep their relative accuracy. `None` without a positive boundary.
    pub fn around_buckets(buckets: &[f64]) -> Option<ValueRange> {
        let positive = || {
            buckets
                .iter()
                .copied()
                .filter(|b| b.is_finite() && *b > 0.0)
        };
        let lowest = positive().reduce(f64::min)?;
        let highest = positive().reduce(f64::max)?;
        Some(ValueRange {
            min: lowest / 1_000.0,
            max: highest * 100.0,
        })
    }
}

/// How a window slides and how much it may hold. The spec's keys: `window_size_ms`,
/// `max_samples`.
///
/// **What `max_samples` bounds.** The window keeps no raw samples: each sub-window counts
/// samples in log-spaced buckets, so memory does not grow with traffic. `max_samples` is the
/// most bucket counters one series may hold: those of its sub-windows (4 bytes each) and of its
/// writer shards (2 bytes each), so a series takes at most `4 × max_samples` bytes of counters
/// plus a fixed few hundred bytes. With the defaults (`relative_accuracy` 0.99 %, values from
/// 0.001 to 1 000 000, 6 sub-windows, 2 writer shards) a series holds at most 6 × 1 048 +
/// 2 × 1 048 counters, about 29 KiB, under the default `max_samples` of 10 000. Counters are
/// made in pages of 64 as values first reach them: a quiet series, or one whose values stay
/// within a decade or two, holds a few pages (2 to 5 KiB). A smaller
/// `max_samples` gives fewer writer shards first (slower records from more threads), then
/// fewer sub-windows (a coarser slide), never less accuracy.
///
/// **Writer shards.** The first `writer_shards` threads to record (process-wide; a slot is
/// given back when its thread exits) each write a shard of every series that no other thread
/// writes, without atomic read-modify-write instructions; the shard joins its sub-window when
/// that sub-window ends. Other threads add to the sub-window with atomic instructions. Reads
/// see both, and are retried if a shard is being joined meanwhile.
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
    /// Threads that record into a shard of their own (default 2); see above.
    pub writer_shards: usize,
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
            writer_shards: 2,
        }
    }
}

/// A validated configuration with its derived shape, shared by every series of a recorder.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowShape {
    config: WindowConfig,
    mapping: LogMapping,
    sub_windows: usize,
    sub_window_ms: u64,
    writer_shards: usize,
}

impl WindowShape {
    /// Validates `config`; errors name the key at fault.
    pub fn new(config: WindowConfig) -> Result<Self, WindowConfigError> {
        let range = |key, value: u64, min, max| {
            bounds::within(value, min, max).map_err(|e| invalid(key, e.to_string()))
        };
        range("window_size_ms", config.window_size_ms, 10, bounds::WEEK_MS)?;
        range("max_samples", config.max_samples as u64, 1, MAX_SAMPLES)?;
        range("sub_windows", config.sub_windows as u64, 2, MAX_SUB_WINDOWS)?;
        if !(config.relative_accuracy >= 0.004 && config.relative_accuracy < 0.5) {
            return Err(invalid("relative_accuracy", "must be in [0.004, 0.5)"));
        }
        if !(config.min_value >= f64::MIN_POSITIVE && config.min_value.is_finite()) {
            return Err(invalid("min_value", "must be a positive normal number"));
        }
        if !(config.max_value > config.min_value && config.max_value.is_finite()) {
            return Err(invalid("max_value", "must be a number above min_value"));
        }
        let gamma = (1.0 + config.relative_accuracy) / (1.0 - config.relative_accuracy);
        let buckets = (config.max_value / config.min_value).ln() / gamma.ln();
        if buckets > f64::from(u16::MAX) - 2.0 {
            return Err(invalid(
                "max_value",
                format!(
                    "{} to {} at this relative_accuracy needs {buckets:.0} buckets; at most 65 533",
                    config.min_value, config.max_value
                ),
            ));
        }
        if config.writer_shards > writer::MAX_SLOTS {
            return Err(invalid(
                "writer_shards",
                format!("must be at most {}", writer::MAX_SLOTS),
            ));
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
        let writer_shards = config
            .writer_shards
            .min((config.max_samples - sub_windows * per_sub) / per_sub);
        Ok(WindowShape {
            config,
            mapping,
            sub_windows,
            sub_window_ms,
            writer_shards,
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

    /// The number of writer shards each series has.
    pub fn writer_shards(&self) -> usize {
        self.writer_shards
    }

    /// Bucket counters per series (what `max_samples` bounds).
    pub fn counters_per_series(&self) -> usize {
        (self.sub_windows + self.writer_shards) * (self.mapping.len() + 1)
    }
}

struct SubWindow {
    epoch: AtomicU64,
    errors: AtomicU64,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
    buckets: Paged<AtomicU32>,
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
            buckets: Paged::new(buckets),
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
        self.buckets
            .for_each_page(|_, page| page.iter().for_each(|b| b.store(0, Ordering::Relaxed)));
    }
}

/// Adds `n` to a sub-window's bucket counter, which stops at `u32::MAX` instead of wrapping;
/// returns how many samples did not fit. Far from the top (the common case) it is one atomic
/// add: even thousands of threads adding at most 2^16 each at once cannot carry a counter
/// under 2^31 past 2^32. Near it, a compare-and-swap loop saturates exactly.
#[inline]
fn add_count(cell: &AtomicU32, n: u32) -> u64 {
    if n <= 1 << 16 && cell.load(Ordering::Relaxed) < 1 << 31 {
        cell.fetch_add(n, Ordering::Relaxed);
        return 0;
    }
    add_count_saturating(cell, n)
}

#[cold]
fn add_count_saturating(cell: &AtomicU32, n: u32) -> u64 {
    let mut current = cell.load(Ordering::Relaxed);
    loop {
        let next = current.saturating_add(n);
        match cell.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return u64::from(current) + u64::from(n) - u64::from(next),
            Err(seen) => current = seen,
        }
    }
}

/// Adds the counters of `buckets`' pages to `counts`.
fn add_pages<A: Counter + Load>(counts: &mut [u64], buckets: &Paged<A>) {
    buckets.for_each_page(|first, page| {
        for (total, bucket) in counts.iter_mut().skip(first).zip(page.iter()) {
            *total += bucket.load_u64();
        }
    });
}

/// A counter read as a `u64`.
trait Load {
    fn load_u64(&self) -> u64;
}

impl Load for AtomicU32 {
    #[inline]
    fn load_u64(&self) -> u64 {
        u64::from(self.load(Ordering::Relaxed))
    }
}

impl Load for AtomicU16 {
    #[inline]
    fn load_u64(&self) -> u64 {
        u64::from(self.load(Ordering::Relaxed))
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

/// One thread's part of the current sub-window of a series. Only the thread holding the
/// writer slot writes it (plain loads and stores on atomics), so its counters are 16-bit: a
/// counter about to overflow is moved to the sub-window first.
#[repr(align(64))]
struct WriterShard {
    /// The sub-window the shard's counts belong to, plus one; 0 while it has none or is being
    /// joined to its sub-window.
    epoch: AtomicU64,
    /// When that sub-window ends (ms); only the owner reads it.
    end_ms: AtomicU64,
    errors: AtomicU64,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
    buckets: Paged<AtomicU16>,
}

impl WriterShard {
    fn new(buckets: usize) -> Self {
        WriterShard {
            epoch: AtomicU64::new(0),
            end_ms: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
            min: AtomicU64::new(EMPTY_MIN),
            max: AtomicU64::new(EMPTY_MAX),
            buckets: Paged::new(buckets),
        }
    }
}

/// Adds `add` to a cell only this thread writes.
#[inline]
fn bump(cell: &AtomicU64, add: u64) {
    cell.store(
        cell.load(Ordering::Relaxed).wrapping_add(add),
        Ordering::Relaxed,
    );
}

/// Longest a read waits for shards that are joining their sub-window (see
/// [`SeriesWindow::snapshot`]).
const MAX_READ_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// The sliding window of one series.
///
/// Recording is lock-free: a coarse clock read, a table lookup for the bucket, and adds to the
/// bucket and the sum (min and max are only read unless they move). A thread holding a writer
/// slot adds to its own shard with plain stores; others add to the current sub-window with
/// relaxed atomic adds. The first record of a new sub-window clears the slot it reuses, under
/// a lock that only that moment takes; a shard joins its sub-window when its thread first
/// records in the next one. A read merges the sub-windows and shards still in the window.
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
    clock: ClockHandle,
    ring: Ring<SubWindow>,
    shards: Box<[WriterShard]>,
    /// Shards that began and that finished joining their sub-window (or moving a counter to
    /// it): a read during which these moved is retried.
    joins_started: AtomicU64,
    joins_finished: AtomicU64,
    created_ms: u64,
    last_update_ms: AtomicU64,
    /// Samples refused: NaN, infinite or negative values, and counts past a counter's capacity.
    refused: AtomicU64,
    /// Samples outside the shape's `[min_value, max_value]`, recorded at the range's edge.
    out_of_range: AtomicU64,
    /// The metric's name, for the log line of a refused sample.
    name: Box<str>,
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
    /// Samples this series refused since it was created (not only in the window): NaN,
    /// infinite and negative values, and counts past a sub-window counter's capacity
    /// (4 294 967 295 samples of one bucket).
    pub refused: u64,
    /// Samples since the series was created that fell outside its range (`min_value` to
    /// `max_value`): counted in the window at the range's edge, so quantiles that land there
    /// are bounded by the exact `min` and `max` only, not by the relative accuracy.
    pub out_of_range: u64,
    counts: Vec<u64>,
    shape: Arc<WindowShape>,
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
                return self.shape.mapping.value(index).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

impl SeriesWindow {
    /// A window of `shape`, sliding on `clock`.
    pub fn new(shape: Arc<WindowShape>, clock: Arc<dyn Clock>) -> Self {
        Self::with_handle(shape, ClockHandle::new(clock))
    }

    pub(crate) fn with_handle(shape: Arc<WindowShape>, clock: ClockHandle) -> Self {
        let buckets = shape.mapping.len() + 1;
        let now = clock.now_ms();
        SeriesWindow {
            ring: Ring::new(
                (0..shape.sub_windows)
                    .map(|_| SubWindow::new(buckets))
                    .collect(),
                shape.sub_window_ms,
            ),
            shards: (0..shape.writer_shards)
                .map(|_| WriterShard::new(buckets))
                .collect(),
            joins_started: AtomicU64::new(0),
            joins_finished: AtomicU64::new(0),
            shape,
            clock,
            created_ms: now,
            last_update_ms: AtomicU64::new(now),
            refused: AtomicU64::new(0),
            out_of_range: AtomicU64::new(0),
            name: Box::from(""),
        }
    }

    /// Names the series in the log line of its first refused sample.
    pub(crate) fn named(mut self, name: &str) -> Self {
        self.name = Box::from(name);
        self
    }

    /// Records one sample.
    #[inline]
    pub fn record(&self, value: f64) {
        self.record_many(value, 1);
    }

    /// Records `count` samples of `value`. A NaN, infinite or negative value is refused:
    /// counted in [`WindowSnapshot::refused`] (the first one logged at WARN), not recorded.
    #[inline]
    pub fn record_many(&self, value: f64, count: u32) {
        if count == 0 {
            return;
        }
        if !(0.0..=f64::MAX).contains(&value) {
            self.refuse(u64::from(count), "not a finite, non-negative number");
            return;
        }
        let now = self.clock.now_ms();
        let index = self.shape.mapping.index(value);
        if (index == 1 || index == self.shape.mapping.len())
            && !(value >= self.shape.config.min_value && value <= self.shape.config.max_value)
        {
            self.note_out_of_range(count);
        }
        match self.shards.get(writer::slot()) {
            Some(shard) => self.record_owned(shard, now, index, value, count),
            None => self.record_shared(now, index, value, count),
        }
        self.touch(now);
    }

    #[cold]
    fn refuse(&self, samples: u64, why: &str) {
        if self.refused.fetch_add(samples, Ordering::Relaxed) == 0 {
            tracing::warn!(
                metric = %self.name,
                reason = why,
                "a histogram sample was refused; further ones are counted only"
            );
        }
    }

    #[cold]
    fn note_out_of_range(&self, samples: u32) {
        self.out_of_range
            .fetch_add(u64::from(samples), Ordering::Relaxed);
    }

    /// Records into this thread's own shard: no atomic read-modify-write.
    #[inline]
    fn record_owned(&self, shard: &WriterShard, now: u64, index: usize, value: f64, count: u32) {
        if now >= shard.end_ms.load(Ordering::Relaxed) {
            self.open(shard, now);
        }
        let bucket = shard.buckets.get_or_make(index);
        let n = u64::from(bucket.load(Ordering::Relaxed)) + u64::from(count);
        match u16::try_from(n) {
            Ok(n) if n < u16::MAX => bucket.store(n, Ordering::Relaxed),
            _ => {
                let fits = u32::try_from(n).unwrap_or(u32::MAX);
                if u64::from(fits) < n {
                    self.refuse(n - u64::from(fits), "a bucket's counter is full");
                }
                self.spill(shard, index, fits)
            }
        }
        if value.is_finite() {
            let sum = f64::from_bits(shard.sum.load(Ordering::Relaxed)) + value * f64::from(count);
            shard.sum.store(sum.to_bits(), Ordering::Relaxed);
            if value < f64::from_bits(shard.min.load(Ordering::Relaxed)) {
                shard.min.store(value.to_bits(), Ordering::Relaxed);
            }
            if value > f64::from_bits(shard.max.load(Ordering::Relaxed)) {
                shard.max.store(value.to_bits(), Ordering::Relaxed);
            }
        }
    }

    /// Records into the current sub-window with atomic adds (threads without a shard).
    #[inline]
    fn record_shared(&self, now: u64, index: usize, value: f64, count: u32) {
        let slot = self.ring.current(now);
        // The count is the buckets' sum, taken when read: one atomic add fewer per sample.
        let excess = add_count(slot.buckets.get_or_make(index), count);
        if excess != 0 {
            self.refuse(excess, "a bucket's counter is full");
        }
        if value.is_finite() {
            add_f64(&slot.sum, value * f64::from(count));
            fold_f64(&slot.min, value, |v, cur| v < cur);
            fold_f64(&slot.max, value, |v, cur| v > cur);
        }
    }

    /// Moves a shard's counter that would overflow (`n` samples) to its sub-window.
    #[cold]
    fn spill(&self, shard: &WriterShard, index: usize, n: u32) {
        let epoch = shard.epoch.load(Ordering::Relaxed);
        self.joins_started.fetch_add(1, Ordering::AcqRel);
        // The shard's sub-window is the current one: its slot is open and stays so.
        let mut excess = 0;
        self.ring.with_slot_of(epoch, |slot| {
            excess = add_count(slot.buckets.get_or_make(index), n);
        });
        if let Some(bucket) = shard.buckets.get(index) {
            bucket.store(0, Ordering::Relaxed);
        }
        self.joins_finished.fetch_add(1, Ordering::Release);
        if excess != 0 {
            self.refuse(excess, "a bucket's counter is full");
        }
    }

    /// Joins what the shard holds to its sub-window (if that is still in the ring) and opens
    /// the shard for the sub-window of `now`.
    #[cold]
    fn open(&self, shard: &WriterShard, now: u64) {
        // The ring's slot for the new sub-window is opened now, so that joining this shard to
        // it later finds it.
        self.ring.current(now);
        let sub_window_ms = self.ring.sub_window_ms();
        let epoch = now / sub_window_ms + 1;
        let old = shard.epoch.load(Ordering::Relaxed);
        self.joins_started.fetch_add(1, Ordering::AcqRel);
        let mut excess = 0;
        if old != 0 {
            shard.epoch.store(0, Ordering::Release);
            self.ring.with_slot_of(old, |slot| {
                shard.buckets.for_each_page(|first, page| {
                    for (i, from) in page.iter().enumerate() {
                        let n = from.load(Ordering::Relaxed);
                        if n != 0 {
                            excess += add_count(slot.buckets.get_or_make(first + i), u32::from(n));
                        }
                    }
                });
                let errors = shard.errors.load(Ordering::Relaxed);
                if errors != 0 {
                    slot.errors.fetch_add(errors, Ordering::Relaxed);
                }
                let (min, max) = (
                    f64::from_bits(shard.min.load(Ordering::Relaxed)),
                    f64::from_bits(shard.max.load(Ordering::Relaxed)),
                );
                if min <= max {
                    add_f64(&slot.sum, f64::from_bits(shard.sum.load(Ordering::Relaxed)));
                    fold_f64(&slot.min, min, |v, cur| v < cur);
                    fold_f64(&slot.max, max, |v, cur| v > cur);
                }
            });
            shard
                .buckets
                .for_each_page(|_, page| page.iter().for_each(|b| b.store(0, Ordering::Relaxed)));
            shard.errors.store(0, Ordering::Relaxed);
            shard.sum.store(0f64.to_bits(), Ordering::Relaxed);
            shard.min.store(EMPTY_MIN, Ordering::Relaxed);
            shard.max.store(EMPTY_MAX, Ordering::Relaxed);
        }
        shard.end_ms.store(epoch * sub_window_ms, Ordering::Relaxed);
        shard.epoch.store(epoch, Ordering::Release);
        self.joins_finished.fetch_add(1, Ordering::Release);
        if excess != 0 {
            self.refuse(excess, "a bucket's counter is full");
        }
    }

    /// Records one error (a failed operation; its duration is recorded with `record`).
    #[inline]
    pub fn record_error(&self) {
        let now = self.clock.now_ms();
        match self.shards.get(writer::slot()) {
            Some(shard) => {
                if now >= shard.end_ms.load(Ordering::Relaxed) {
                    self.open(shard, now);
                }
                bump(&shard.errors, 1);
            }
            None => {
                self.ring
                    .current(now)
                    .errors
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
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
                .map(|s| std::mem::size_of::<SubWindow>() + s.buckets.heap_bytes())
                .sum::<usize>()
            + self
                .shards
                .iter()
                .map(|s| std::mem::size_of::<WriterShard>() + s.buckets.heap_bytes())
                .sum::<usize>()
    }

    /// What the window holds now.
    pub fn snapshot(&self) -> WindowSnapshot {
        let now = self.clock.now_ms();
        let mut counts = vec![0u64; self.shape.mapping.len() + 1];
        let (mut errors, mut sum): (u64, f64);
        let (mut min, mut max): (f64, f64);
        let oldest_start = self.ring.live(now).1;
        let live = self.ring.live_epochs(now);
        // A shard joining its sub-window during the read would be counted twice or not at
        // all: read again until no join began or was under way during the read. A join is a
        // few hundred nanoseconds, but its thread can be preempted in the middle of one (on a
        // busy machine, for milliseconds): the read waits for it, yielding, then sleeping, up
        // to `MAX_READ_WAIT`, and after that keeps its last read.
        // The clock is read only once a first read had to wait.
        let mut deadline = None;
        let mut attempt = 0u32;
        loop {
            let started = self.joins_started.load(Ordering::Acquire);
            let settled = started == self.joins_finished.load(Ordering::Acquire);
            let give_up = attempt > 0
                && *deadline.get_or_insert_with(|| std::time::Instant::now() + MAX_READ_WAIT)
                    <= std::time::Instant::now();
            if settled || give_up {
                counts.iter_mut().for_each(|c| *c = 0);
                (errors, sum) = (0, 0.0);
                (min, max) = (f64::INFINITY, f64::NEG_INFINITY);
                for slot in self.ring.live(now).0 {
                    errors += slot.errors.load(Ordering::Relaxed);
                    sum += f64::from_bits(slot.sum.load(Ordering::Relaxed));
                    min = min.min(f64::from_bits(slot.min.load(Ordering::Relaxed)));
                    max = max.max(f64::from_bits(slot.max.load(Ordering::Relaxed)));
                    add_pages(&mut counts, &slot.buckets);
                }
                for shard in self.shards.iter() {
                    if !live.contains(&shard.epoch.load(Ordering::Acquire)) {
                        continue;
                    }
                    errors += shard.errors.load(Ordering::Relaxed);
                    sum += f64::from_bits(shard.sum.load(Ordering::Relaxed));
                    min = min.min(f64::from_bits(shard.min.load(Ordering::Relaxed)));
                    max = max.max(f64::from_bits(shard.max.load(Ordering::Relaxed)));
                    add_pages(&mut counts, &shard.buckets);
                }
                fence(Ordering::Acquire);
                if give_up || (settled && self.joins_started.load(Ordering::Relaxed) == started) {
                    break;
                }
            }
            attempt += 1;
            if attempt < 16 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(50));
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
            refused: self.refused.load(Ordering::Relaxed),
            out_of_range: self.out_of_range.load(Ordering::Relaxed),
            counts,
            shape: self.shape.clone(),
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
        let fits = u32::try_from(count).unwrap_or(u32::MAX);
        if fits as usize != count {
            self.refuse((count - fits as usize) as u64, "a bucket's counter is full");
        }
        SeriesWindow::record_many(self, value, fits);
    }
}
