//! The series of a push-style recorder (StatsD, OTLP metrics): one cell per key, made on first
//! registration, and a copy of the list for the sending task; and the update of an `f64` kept
//! in an atomic, which their gauges and sums share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Replaces the `f64` in `cell` (kept as bits) with `f(current)`; a load and no write when the
/// value does not change.
pub(crate) fn update_f64(cell: &AtomicU64, f: impl Fn(f64) -> f64) {
    let mut current = cell.load(Ordering::Relaxed);
    loop {
        let next = f(f64::from_bits(current)).to_bits();
        if next == current {
            return;
        }
        match cell.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => current = seen,
        }
    }
}

use metrics::Key;

/// Which kind of `metrics` handle a series serves: a name used as a counter and as a histogram
/// is two series, not one that ignores the second kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum SeriesKind {
    Counter,
    Gauge,
    Histogram,
}

pub(crate) struct SeriesMap<T> {
    /// Per key, its series of each kind.
    map: RwLock<HashMap<Key, [Option<Arc<T>>; 3]>>,
}

impl<T> Default for SeriesMap<T> {
    fn default() -> Self {
        SeriesMap {
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl<T> SeriesMap<T> {
    /// The cell of `key` as a `kind`, made by `make` the first time.
    pub(crate) fn get_or_create(
        &self,
        kind: SeriesKind,
        key: &Key,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        let at = kind as usize;
        if let Some(Some(cell)) = self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map(|kinds| &kinds[at])
        {
            return cell.clone();
        }
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()[at]
            .get_or_insert_with(|| Arc::new(make()))
            .clone()
    }

    /// Every key and cell, as of now.
    pub(crate) fn entries(&self) -> Vec<(Key, Arc<T>)> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flat_map(|(k, kinds)| kinds.iter().flatten().map(|c| (k.clone(), c.clone())))
            .collect()
    }
}
