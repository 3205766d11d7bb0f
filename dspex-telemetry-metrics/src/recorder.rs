//! [`WindowedRecorder`]: a `metrics::Recorder` that keeps every series in a sliding window,
//! for the alerts and the live view to read.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};

use crate::clock::{Clock, ClockHandle, MonotonicClock};
use crate::counter::{CounterSnapshot, GaugeCell, WindowedCounter};
use crate::definition::MetricDefinition;
use crate::window::{
    SeriesWindow, ValueRange, WindowConfig, WindowConfigError, WindowShape, WindowSnapshot,
};

/// The label an overflow series carries: `overflow="true"`.
pub const OVERFLOW_LABEL: (&str, &str) = ("overflow", "true");

/// How the recorder windows series and bounds their number.
#[derive(Debug, Clone, PartialEq)]
pub struct RecorderConfig {
    /// The window of every series.
    pub window: WindowConfig,
    /// The most label sets one metric name may have; further ones fold into a single series
    /// labelled `overflow="true"` (default 1 000).
    pub max_series_per_metric: usize,
    /// A series nobody has updated for this long, and nobody holds a handle to, is dropped by
    /// [`WindowedRecorder::sweep`] (default 600 000: ten minutes).
    pub idle_timeout_ms: u64,
    /// Histograms whose values span another range than the window's `min_value` to
    /// `max_value`, by metric name (see [`RecorderConfig::with_definitions`]).
    pub ranges: BTreeMap<String, ValueRange>,
}

impl RecorderConfig {
    /// Adds the range of each histogram among `definitions` (declared with
    /// [`MetricDefinition::range`], or around its buckets) that has none here yet: a range
    /// set in the configuration wins.
    ///
    /// ```
    /// use dspex_telemetry_metrics::{RecorderConfig, catalog};
    /// let config = RecorderConfig::default().with_definitions(&catalog::dspex_metrics());
    /// let lifetime = config.ranges["dspex_session_lifetime"];
    /// assert!(lifetime.max >= 4.0 * 3_600_000.0, "sessions live for hours");
    /// ```
    pub fn with_definitions(mut self, definitions: &[MetricDefinition]) -> Self {
        for definition in definitions {
            if let Some(range) = definition.value_range() {
                self.ranges
                    .entry(definition.name().to_owned())
                    .or_insert(range);
            }
        }
        self
    }
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            window: WindowConfig::default(),
            max_series_per_metric: 1_000,
            idle_timeout_ms: 600_000,
            ranges: BTreeMap::new(),
        }
    }
}

/// For keys whose hash is computed once (`metrics::Key`, label-value hashes): the map uses it
/// as is.
#[derive(Default)]
pub(crate) struct PrecomputedHasher(u64);

impl Hasher for PrecomputedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map<T> = HashMap<Key, Arc<T>, BuildHasherDefault<PrecomputedHasher>>;

#[derive(Default)]
struct Registry {
    histograms: Map<SeriesWindow>,
    counters: Map<WindowedCounter>,
    gauges: Map<GaugeCell>,
    per_name: HashMap<String, usize>,
    /// Hashes of the keys folded into an overflow series (up to a bound), so that each is
    /// counted once and found again without the write lock.
    folded: std::collections::HashSet<u64>,
}

/// How many folded keys the registry remembers, as a multiple of `max_series_per_metric`
/// (at least 4 096).
const FOLDED_REMEMBERED: usize = 16;

/// A metric's unit and description, as given to `describe_*`.
#[derive(Debug, Clone, PartialEq)]
pub struct Description {
    /// The unit, if one was given.
    pub unit: Option<Unit>,
    /// The description (Prometheus's HELP).
    pub text: String,
}

struct Inner {
    shape: Arc<WindowShape>,
    /// The shapes of histograms with a range of their own, by metric name.
    shapes: HashMap<String, Arc<WindowShape>>,
    clock: ClockHandle,
    config: RecorderConfig,
    registry: RwLock<Registry>,
    descriptions: RwLock<HashMap<String, Description>>,
    overflowed: AtomicU64,
}

/// A `metrics::Recorder` keeping each series in a sliding window: histograms as
/// [`SeriesWindow`]s (p50/p95/p99, rate), counters with their windowed increments, gauges
/// with their last value. Clone it to share; install it with `metrics::set_global_recorder`,
/// alone or beside an exporter's recorder through `metrics-util`'s fanout.
///
/// Memory is bounded: each series is fixed-size, and each metric name holds at most
/// `max_series_per_metric` label sets, plus one overflow series.
///
/// ```
/// use dspex_telemetry_metrics::{RecorderConfig, WindowedRecorder};
/// use metrics::Recorder;
///
/// let recorder = WindowedRecorder::new(RecorderConfig::default()).unwrap();
/// metrics::with_local_recorder(&recorder, || {
///     for ms in [12.0, 15.0, 300.0] {
///         metrics::histogram!("dspex_bridge_call_method_duration", "method" => "dspy.Predict").record(ms);
///     }
///     metrics::counter!("dspex_bridge_call_method_errors", "method" => "dspy.Predict").increment(1);
/// });
/// let op = recorder.operation("dspex_bridge_call_method", &[("method", "dspy.Predict")]).unwrap();
/// assert_eq!(op.count, 3);
/// assert_eq!(op.error_count, 1);
/// assert!((op.p99 - 300.0).abs() <= 3.0);
/// ```
#[derive(Clone)]
pub struct WindowedRecorder {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WindowedRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowedRecorder")
            .field("series", &self.series_count())
            .field("overflowed", &self.overflowed())
            .finish()
    }
}

/// One series as [`WindowedRecorder::snapshot`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSnapshot {
    /// The metric name.
    pub name: String,
    /// Its labels, in the order they were recorded with.
    pub labels: Vec<(String, String)>,
    /// What it holds.
    pub value: SeriesValue,
}

impl SeriesSnapshot {
    /// The labels as borrowed pairs, as [`WindowedRecorder::operation`] and the other lookups
    /// take them.
    pub fn label_pairs(&self) -> Vec<(&str, &str)> {
        self.labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// The value of a series.
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesValue {
    /// A histogram's window.
    Histogram(WindowSnapshot),
    /// A counter.
    Counter(CounterSnapshot),
    /// A gauge's last value.
    Gauge(f64),
}

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(k.to_string(), v.to_string()))
        .collect();
    Key::from_parts(name.to_owned(), labels)
}

fn labels_of(key: &Key) -> Vec<(String, String)> {
    key.labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect()
}

impl WindowedRecorder {
    /// A recorder on the system's monotonic clock; errors name the configuration key at fault.
    pub fn new(config: RecorderConfig) -> Result<Self, WindowConfigError> {
        Self::with_clock(config, Arc::new(MonotonicClock))
    }

    /// A recorder on `clock` (a [`crate::ManualClock`] in tests).
    pub fn with_clock(
        config: RecorderConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, WindowConfigError> {
        if config.max_series_per_metric == 0 {
            return Err(WindowConfigError::Invalid {
                key: "max_series_per_metric".into(),
                reason: "must be at least 1".into(),
            });
        }
        let shape = Arc::new(WindowShape::new(config.window.clone())?);
        let mut shapes = HashMap::new();
        // Metrics with the same range share one shape (its bucket table).
        let mut made: Vec<(ValueRange, Arc<WindowShape>)> = Vec::new();
        for (name, range) in &config.ranges {
            let at = |what: &str| format!("ranges.{name}.{what}");
            if !(range.min >= f64::MIN_POSITIVE && range.min.is_finite()) {
                return Err(WindowConfigError::Invalid {
                    key: at("min"),
                    reason: "must be a positive number".into(),
                });
            }
            if !(range.max > range.min && range.max.is_finite()) {
                return Err(WindowConfigError::Invalid {
                    key: at("max"),
                    reason: "must be a number above min".into(),
                });
            }
            let shape = match made.iter().find(|(r, _)| r == range) {
                Some((_, shape)) => shape.clone(),
                None => {
                    let shape = WindowShape::new(WindowConfig {
                        min_value: range.min,
                        max_value: range.max,
                        ..config.window.clone()
                    })
                    .map_err(|e| {
                        let WindowConfigError::Invalid { key, reason } = e;
                        match key.as_str() {
                            "min_value" => WindowConfigError::Invalid {
                                key: at("min"),
                                reason,
                            },
                            "max_value" => WindowConfigError::Invalid {
                                key: at("max"),
                                reason,
                            },
                            _ => WindowConfigError::Invalid {
                                reason: format!(
                                    "{reason}, for the range of `{name}` ({} to {})",
                                    range.min, range.max
                                ),
                                key,
                            },
                        }
                    })?;
                    let shape = Arc::new(shape);
                    made.push((*range, shape.clone()));
                    shape
                }
            };
            shapes.insert(name.clone(), shape);
        }
        Ok(WindowedRecorder {
            inner: Arc::new(Inner {
                shape,
                shapes,
                clock: ClockHandle::new(clock),
                config,
                registry: RwLock::new(Registry::default()),
                descriptions: RwLock::new(HashMap::new()),
                overflowed: AtomicU64::new(0),
            }),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.inner
            .registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.inner
            .registry
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The series for `key` in `map`, created on first use; a label set over the metric's cap
    /// is folded into the metric's overflow series.
    fn get_or_create<T: Stored>(&self, key: &Key, make: impl FnOnce() -> T) -> Arc<T> {
        let overflow = || {
            Key::from_parts(
                key.name().to_owned(),
                vec![Label::new(OVERFLOW_LABEL.0, OVERFLOW_LABEL.1)],
            )
        };
        {
            let registry = self.read();
            if let Some(series) = T::map(&registry).get(key) {
                return series.clone();
            }
            if registry.folded.contains(&key.get_hash()) {
                if let Some(series) = T::map(&registry).get(&overflow()) {
                    return series.clone();
                }
            }
        }
        let mut registry = self.write();
        if let Some(series) = T::map_mut(&mut registry).get(key) {
            return series.clone();
        }
        let used = registry.per_name.get(key.name()).copied().unwrap_or(0);
        let key = if used >= self.inner.config.max_series_per_metric {
            let remembered = (self.inner.config.max_series_per_metric)
                .saturating_mul(FOLDED_REMEMBERED)
                .max(4_096);
            // Past the bound, each registration of a key not remembered counts again.
            if registry.folded.len() >= remembered || registry.folded.insert(key.get_hash()) {
                self.inner.overflowed.fetch_add(1, Ordering::Relaxed);
            }
            let overflow = overflow();
            if let Some(series) = T::map_mut(&mut registry).get(&overflow) {
                return series.clone();
            }
            overflow
        } else {
            // A key that is its metric's overflow series is never counted (nor uncounted
            // when swept).
            if !is_overflow(key) {
                *registry.per_name.entry(key.name().to_owned()).or_insert(0) += 1;
            }
            key.clone()
        };
        let series = Arc::new(make());
        T::map_mut(&mut registry).insert(key, series.clone());
        series
    }

    fn new_counter(&self) -> WindowedCounter {
        let shape = &self.inner.shape;
        WindowedCounter::new(
            shape.sub_windows(),
            shape.sub_window_ms(),
            shape.config().window_size_ms,
            shape.writer_shards(),
            self.inner.clock.clone(),
        )
    }

    /// The window of histogram `name` with `labels` (in the order they were recorded with).
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<WindowSnapshot> {
        self.read()
            .histograms
            .get(&key(name, labels))
            .map(|h| h.snapshot())
    }

    /// Counter `name` with `labels`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<CounterSnapshot> {
        self.read()
            .counters
            .get(&key(name, labels))
            .map(|c| c.snapshot())
    }

    /// Gauge `name` with `labels`.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.read()
            .gauges
            .get(&key(name, labels))
            .map(|g| g.value())
    }

    /// An operation's window: histogram `{base}_duration` with the in-window increments of
    /// counter `{base}_errors` as its errors (so `error_rate` = errors / calls).
    pub fn operation(&self, base: &str, labels: &[(&str, &str)]) -> Option<WindowSnapshot> {
        let mut snap = self.histogram(&format!("{base}_duration"), labels)?;
        if let Some(errors) = self.counter(&format!("{base}_errors"), labels) {
            snap.error_count += errors.in_window;
            snap.error_rate = if snap.count > 0 {
                snap.error_count as f64 / snap.count as f64
            } else {
                0.0
            };
        }
        Some(snap)
    }

    /// Every series, sorted by name then labels.
    pub fn snapshot(&self) -> Vec<SeriesSnapshot> {
        let registry = self.read();
        let mut out: Vec<SeriesSnapshot> = Vec::new();
        out.extend(registry.histograms.iter().map(|(k, h)| SeriesSnapshot {
            name: k.name().to_owned(),
            labels: labels_of(k),
            value: SeriesValue::Histogram(h.snapshot()),
        }));
        out.extend(registry.counters.iter().map(|(k, c)| SeriesSnapshot {
            name: k.name().to_owned(),
            labels: labels_of(k),
            value: SeriesValue::Counter(c.snapshot()),
        }));
        out.extend(registry.gauges.iter().map(|(k, g)| SeriesSnapshot {
            name: k.name().to_owned(),
            labels: labels_of(k),
            value: SeriesValue::Gauge(g.value()),
        }));
        out.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        out
    }

    /// The unit and description given for `name`, if any.
    pub fn description(&self, name: &str) -> Option<Description> {
        self.inner
            .descriptions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// How many series exist.
    pub fn series_count(&self) -> usize {
        let r = self.read();
        r.histograms.len() + r.counters.len() + r.gauges.len()
    }

    /// How many distinct label sets were folded into an overflow series because their metric
    /// had reached `max_series_per_metric` label sets. Each is counted once while the folded
    /// ones remembered (16 times the cap in all, at least 4 096) have room; past that, each
    /// registration of a further one counts.
    pub fn overflowed(&self) -> u64 {
        self.inner.overflowed.load(Ordering::Relaxed)
    }

    /// Drops series idle for `idle_timeout_ms` that no handle refers to; returns how many.
    pub fn sweep(&self) -> usize {
        self.sweep_with(|_| {})
    }

    /// As [`WindowedRecorder::sweep`], calling `dropped` with each dropped series' key (to
    /// let a [`crate::CardinalityLayer`] in front forget it too).
    pub fn sweep_with(&self, mut dropped: impl FnMut(&Key)) -> usize {
        let now = self.inner.clock.now_ms();
        let idle = self.inner.config.idle_timeout_ms;
        let stale = |last: u64, refs: usize| refs == 1 && now.saturating_sub(last) >= idle;
        let mut registry = self.write();
        let mut keys: Vec<Key> = Vec::new();
        sweep_map(&mut registry.histograms, &stale, &mut keys);
        sweep_map(&mut registry.counters, &stale, &mut keys);
        sweep_map(&mut registry.gauges, &stale, &mut keys);
        for key in &keys {
            // An overflow series was never counted against its metric's cap.
            if !is_overflow(key) {
                if let Some(n) = registry.per_name.get_mut(key.name()) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        drop(registry);
        keys.iter().for_each(&mut dropped);
        keys.len()
    }

    /// The configured `idle_timeout_ms`.
    pub fn idle_timeout_ms(&self) -> u64 {
        self.inner.config.idle_timeout_ms
    }

    fn describe(&self, key: KeyName, unit: Option<Unit>, text: SharedString) {
        self.inner
            .descriptions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                key.as_str().to_owned(),
                Description {
                    unit,
                    text: text.to_string(),
                },
            );
    }
}

/// Whether `key` is its metric's overflow series (its one label `overflow="true"`).
fn is_overflow(key: &Key) -> bool {
    let mut labels = key.labels();
    matches!(
        (labels.next(), labels.next()),
        (Some(l), None) if (l.key(), l.value()) == OVERFLOW_LABEL
    )
}

/// Which of the registry's maps holds a kind of series, and when a series last changed.
trait Stored: Sized {
    fn map(registry: &Registry) -> &Map<Self>;
    fn map_mut(registry: &mut Registry) -> &mut Map<Self>;
    fn last_update_ms(&self) -> u64;
}

/// Removes the series `stale(last update, references)` selects, noting their names.
fn sweep_map<T: Stored>(
    map: &mut Map<T>,
    stale: &impl Fn(u64, usize) -> bool,
    dropped: &mut Vec<Key>,
) {
    map.retain(|key, series| {
        let keep = !stale(series.last_update_ms(), Arc::strong_count(series));
        if !keep {
            dropped.push(key.clone());
        }
        keep
    });
}

impl Stored for SeriesWindow {
    fn map(r: &Registry) -> &Map<Self> {
        &r.histograms
    }
    fn map_mut(r: &mut Registry) -> &mut Map<Self> {
        &mut r.histograms
    }
    fn last_update_ms(&self) -> u64 {
        SeriesWindow::last_update_ms(self)
    }
}

impl Stored for WindowedCounter {
    fn map(r: &Registry) -> &Map<Self> {
        &r.counters
    }
    fn map_mut(r: &mut Registry) -> &mut Map<Self> {
        &mut r.counters
    }
    fn last_update_ms(&self) -> u64 {
        self.last_update_ms.load(Ordering::Relaxed)
    }
}

impl Stored for GaugeCell {
    fn map(r: &Registry) -> &Map<Self> {
        &r.gauges
    }
    fn map_mut(r: &mut Registry) -> &mut Map<Self> {
        &mut r.gauges
    }
    fn last_update_ms(&self) -> u64 {
        self.last_update_ms.load(Ordering::Relaxed)
    }
}

impl Recorder for WindowedRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.get_or_create(key, || self.new_counter()))
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        let clock = self.inner.clock.clone();
        Gauge::from_arc(self.get_or_create(key, || GaugeCell::new(clock)))
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        let shape = self
            .inner
            .shapes
            .get(key.name())
            .unwrap_or(&self.inner.shape)
            .clone();
        let clock = self.inner.clock.clone();
        Histogram::from_arc(self.get_or_create(key, || {
            SeriesWindow::with_handle(shape, clock).named(key.name())
        }))
    }
}
