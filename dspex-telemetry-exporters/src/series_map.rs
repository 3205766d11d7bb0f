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

pub(crate) struct SeriesMap<T> {
    map: RwLock<HashMap<Key, Arc<T>>>,
}

impl<T> Default for SeriesMap<T> {
    fn default() -> Self {
        SeriesMap {
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl<T> SeriesMap<T> {
    /// The cell of `key`, made by `make` the first time.
    pub(crate) fn get_or_create(&self, key: &Key, make: impl FnOnce() -> T) -> Arc<T> {
        if let Some(cell) = self.map.read().unwrap_or_else(|e| e.into_inner()).get(key) {
            return cell.clone();
        }
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_insert_with(|| Arc::new(make()))
            .clone()
    }

    /// Every key and cell, as of now.
    pub(crate) fn entries(&self) -> Vec<(Key, Arc<T>)> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, c)| (k.clone(), c.clone()))
            .collect()
    }
}
