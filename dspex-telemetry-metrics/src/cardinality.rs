//! One cardinality cap for every metric through a recorder: a `metrics-util` layer that
//! bounds the label sets of each metric name and the length of each label value before any
//! recorder (the window, Prometheus, StatsD, OTLP) sees a key.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};
use metrics_util::layers::Layer;

use crate::recorder::{OVERFLOW_LABEL, PrecomputedHasher};

/// The default cap on a label value's length, in bytes.
pub const DEFAULT_MAX_LABEL_VALUE_BYTES: usize = 256;

/// What a capped recorder did to keys, as counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CardinalityStats {
    /// Label sets admitted as series of their own, over all metrics.
    pub series: u64,
    /// Distinct label sets folded into a metric's `overflow="true"` series: each counted once
    /// while the folded sets remembered per metric (16 times the cap, at least 4 096) have
    /// room; past that, each registration of a further one counts.
    pub overflowed_label_sets: u64,
    /// Admitted label sets with a value cut to the length cap.
    pub truncated_values: u64,
}

/// Wraps a recorder so that each metric name has at most `max_series_per_metric` label sets
/// (every kind of the name together); a further label set is recorded into the metric's
/// series labelled `overflow="true"`, and a label value longer than `max_label_value_bytes`
/// is cut (at a character boundary, ending in `…`). Every recorder behind it sees the same,
/// bounded keys: the catalog's and the user's own `counter!`, `histogram!` and `gauge!` alike.
///
/// The first registration of a key takes a lock; later ones are one lookup in a sharded map.
///
/// ```
/// use dspex_telemetry_metrics::{CardinalityLayer, RecorderConfig, WindowedRecorder};
/// use metrics_util::layers::Layer;
///
/// let window = WindowedRecorder::new(RecorderConfig::default()).unwrap();
/// let capped = CardinalityLayer::new(2, 16).layer(window.clone());
/// metrics::with_local_recorder(&capped, || {
///     for user in ["ann", "bob", "cyd", "dan"] {
///         metrics::counter!("logins_total", "user" => user).increment(1);
///     }
///     metrics::counter!("logins_total", "user" => "x".repeat(1_000)).increment(1);
/// });
/// assert_eq!(window.counter("logins_total", &[("user", "ann")]).unwrap().total, 1);
/// assert_eq!(window.counter("logins_total", &[("overflow", "true")]).unwrap().total, 3);
/// assert_eq!(capped.stats().overflowed_label_sets, 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardinalityLayer {
    max_series_per_metric: usize,
    max_label_value_bytes: usize,
}

impl CardinalityLayer {
    /// At most `max_series_per_metric` label sets per metric name (at least 1), label values
    /// of at most `max_label_value_bytes` bytes (at least 8).
    pub fn new(max_series_per_metric: usize, max_label_value_bytes: usize) -> Self {
        CardinalityLayer {
            max_series_per_metric: max_series_per_metric.max(1),
            max_label_value_bytes: max_label_value_bytes.max(8),
        }
    }
}

impl<R> Layer<R> for CardinalityLayer {
    type Output = Capped<R>;

    fn layer(&self, inner: R) -> Capped<R> {
        Capped {
            inner,
            state: Arc::new(State {
                limits: *self,
                decided: DashMap::with_hasher(BuildHasherDefault::default()),
                names: Mutex::new(HashMap::new()),
                series: AtomicU64::new(0),
                overflowed: AtomicU64::new(0),
                truncated: AtomicU64::new(0),
            }),
        }
    }
}

/// A recorder behind a [`CardinalityLayer`].
pub struct Capped<R> {
    inner: R,
    state: Arc<State>,
}

impl<R> std::fmt::Debug for Capped<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capped")
            .field("limits", &self.state.limits)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// How many label sets of one name were admitted, and which were folded (their hashes,
/// remembered up to a bound so that each is counted once).
#[derive(Default)]
struct NameState {
    admitted: usize,
    folded: HashSet<u64>,
}

/// How many folded label sets a name remembers, as a multiple of the cap (at least 4 096).
const FOLDED_REMEMBERED: usize = 16;

struct State {
    limits: CardinalityLayer,
    /// Per key seen (its label values cut to the cap): `None` to pass it as it is, or the key
    /// to use instead. Holds the admitted keys and, per name, at most as many folded ones.
    decided: DashMap<Key, Option<Key>, BuildHasherDefault<PrecomputedHasher>>,
    names: Mutex<HashMap<String, NameState>>,
    series: AtomicU64,
    overflowed: AtomicU64,
    truncated: AtomicU64,
}

/// Reads a [`Capped`] recorder's [`CardinalityStats`] after the recorder was installed.
#[derive(Clone)]
pub struct CardinalityStatsHandle(Arc<State>);

impl std::fmt::Debug for CardinalityStatsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CardinalityStatsHandle")
            .field(&self.stats())
            .finish()
    }
}

impl CardinalityStatsHandle {
    /// Forgets `keys` (series that every recorder behind the layer dropped as idle): their
    /// label sets no longer count against their metrics' caps, and the label sets those
    /// metrics had folded into overflow are decided again at their next registration (so a
    /// freed slot can go to one of them). Keys the layer did not admit are ignored.
    pub fn forget(&self, keys: &[Key]) {
        let mut names = self.0.names.lock().unwrap_or_else(|e| e.into_inner());
        let mut freed: HashSet<&str> = HashSet::new();
        for key in keys {
            if self
                .0
                .decided
                .remove_if(key, |_, decision| decision.is_none())
                .is_some()
            {
                if let Some(name) = names.get_mut(key.name()) {
                    name.admitted = name.admitted.saturating_sub(1);
                    freed.insert(key.name());
                }
            }
        }
        if !freed.is_empty() {
            self.0
                .decided
                .retain(|key, decision| decision.is_none() || !freed.contains(key.name()));
        }
    }

    /// What the cap did so far.
    pub fn stats(&self) -> CardinalityStats {
        CardinalityStats {
            series: self.0.series.load(Ordering::Relaxed),
            overflowed_label_sets: self.0.overflowed.load(Ordering::Relaxed),
            truncated_values: self.0.truncated.load(Ordering::Relaxed),
        }
    }
}

impl<R> Capped<R> {
    /// What the cap did so far.
    pub fn stats(&self) -> CardinalityStats {
        self.stats_handle().stats()
    }

    /// A handle that reads the stats after `self` is moved (into the global recorder).
    pub fn stats_handle(&self) -> CardinalityStatsHandle {
        CardinalityStatsHandle(self.state.clone())
    }

    /// The recorder behind the cap.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// Runs `f` with the key to record `key` under.
    #[inline]
    fn with_key<T>(&self, key: &Key, f: impl FnOnce(&Key) -> T) -> T {
        let cut = self.state.cut_values(key);
        let key = cut.as_ref().unwrap_or(key);
        // The shard's lock is released before the inner recorder runs.
        let decided = match self.state.decided.get(key) {
            Some(decision) => decision.value().clone(),
            None => self.state.decide(key, cut.is_some()),
        };
        f(decided.as_ref().unwrap_or(key))
    }
}

impl State {
    /// Admits or folds `key` (its values cut already; `cut` if any was), the first time.
    #[cold]
    fn decide(&self, key: &Key, cut: bool) -> Option<Key> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(decision) = self.decided.get(key) {
            return decision.value().clone();
        }
        let name = names.entry(key.name().to_owned()).or_default();
        let max = self.limits.max_series_per_metric;
        if name.admitted < max {
            name.admitted += 1;
            self.series.fetch_add(1, Ordering::Relaxed);
            if cut {
                self.truncated.fetch_add(1, Ordering::Relaxed);
            }
            self.decided.insert(key.clone(), None);
            return None;
        }
        let overflow = Key::from_parts(
            key.name().to_owned(),
            vec![Label::new(OVERFLOW_LABEL.0, OVERFLOW_LABEL.1)],
        );
        // Past the bound, each registration of a set not remembered counts again.
        let remembered = max.saturating_mul(FOLDED_REMEMBERED).max(4_096);
        if name.folded.len() >= remembered || name.folded.insert(key.get_hash()) {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
        }
        if name.folded.len() <= max {
            self.decided.insert(key.clone(), Some(overflow.clone()));
        }
        Some(overflow)
    }

    /// `key` with its label values cut to the cap, or `None` if none is longer.
    #[inline]
    fn cut_values(&self, key: &Key) -> Option<Key> {
        let max = self.limits.max_label_value_bytes;
        if key.labels().all(|l| l.value().len() <= max) {
            return None;
        }
        Some(cut_values(key, max))
    }
}

#[cold]
fn cut_values(key: &Key, max: usize) -> Key {
    let labels = key
        .labels()
        .map(|l| {
            if l.value().len() <= max {
                return l.clone();
            }
            let ellipsis = '…';
            let mut end = max - ellipsis.len_utf8();
            while !l.value().is_char_boundary(end) {
                end -= 1;
            }
            Label::new(
                l.key().to_owned(),
                format!("{}{ellipsis}", &l.value()[..end]),
            )
        })
        .collect::<Vec<_>>();
    Key::from_parts(key.name().to_owned(), labels)
}

impl<R: Recorder> Recorder for Capped<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.with_key(key, |k| self.inner.register_counter(k, metadata))
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.with_key(key, |k| self.inner.register_gauge(k, metadata))
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.with_key(key, |k| self.inner.register_histogram(k, metadata))
    }
}
