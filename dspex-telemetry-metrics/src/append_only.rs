//! An append-only hash table read without locks: what the metrics handler's handle cache
//! needs (a label set is added once, then looked up on every event).
//!
//! Readers load the current table and probe it with acquire loads: no lock, no atomic
//! read-modify-write. Writers (rare: a label set's first event) take a mutex, and grow the table
//! by building a larger copy and publishing it. Entries and old tables are freed only when the
//! map is dropped, so a reader's references stay valid while it holds the map.

use std::marker::PhantomData;
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, Ordering};

struct Entry<V> {
    hash: u64,
    value: V,
}

struct Table<V> {
    mask: usize,
    slots: Box<[AtomicPtr<Entry<V>>]>,
}

impl<V> Table<V> {
    fn with_capacity(slots: usize) -> Box<Self> {
        Box::new(Table {
            mask: slots - 1,
            slots: (0..slots)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
        })
    }

    /// Puts `entry` in the first free slot of its probe sequence (the caller holds the writer).
    fn place(&self, entry: *mut Entry<V>, hash: u64) {
        let mut i = (hash as usize) & self.mask;
        while !self.slots[i].load(Ordering::Relaxed).is_null() {
            i = (i + 1) & self.mask;
        }
        self.slots[i].store(entry, Ordering::Release);
    }
}

/// Tables and entries are allocated once (`Box::into_raw`) and kept as raw pointers, the
/// stable addresses readers hold, until the map drops: a `Box` moved into a `Vec` would claim
/// unique access and invalidate them.
struct Writer<V> {
    /// Every table ever published; the last is current. Old ones stay for readers still on them.
    tables: Vec<*mut Table<V>>,
    entries: Vec<*mut Entry<V>>,
}

impl<V> Drop for Writer<V> {
    fn drop(&mut self) {
        for &table in &self.tables {
            // SAFETY: made by `Box::into_raw` and freed only here, once.
            drop(unsafe { Box::from_raw(table) });
        }
        for &entry in &self.entries {
            // SAFETY: as above.
            drop(unsafe { Box::from_raw(entry) });
        }
    }
}

pub(crate) struct AppendOnlyMap<V> {
    current: AtomicPtr<Table<V>>,
    writer: Mutex<Writer<V>>,
    _values: PhantomData<V>,
}

// SAFETY: the map owns its tables and entries (freed with it) as a `Vec<Box<_>>` would; the
// pointers are only dereferenced as shared references (readers) or under the writer's lock.
unsafe impl<V: Send + Sync> Send for AppendOnlyMap<V> {}
// SAFETY: readers share `&V` across threads (so `V: Sync`); values are added from any thread
// (so `V: Send`).
unsafe impl<V: Send + Sync> Sync for AppendOnlyMap<V> {}

impl<V> AppendOnlyMap<V> {
    pub(crate) fn new() -> Self {
        let table = Box::into_raw(Table::with_capacity(16));
        AppendOnlyMap {
            current: AtomicPtr::new(table),
            writer: Mutex::new(Writer {
                tables: vec![table],
                entries: Vec::new(),
            }),
            _values: PhantomData,
        }
    }

    /// The value under `hash` that `is_it` accepts.
    #[inline]
    pub(crate) fn find(&self, hash: u64, is_it: impl Fn(&V) -> bool) -> Option<&V> {
        // SAFETY: `current` always points at a table owned by `writer.tables`, which only
        // grows until `self` drops; the table's slots hold null or entries owned by
        // `writer.entries`, likewise never freed before `self`. Both were fully written before
        // their pointers were published with release stores, read here with acquire loads.
        let table = unsafe { &*self.current.load(Ordering::Acquire) };
        let mut i = (hash as usize) & table.mask;
        for _ in 0..=table.mask {
            let entry = table.slots[i].load(Ordering::Acquire);
            if entry.is_null() {
                return None;
            }
            // SAFETY: as above.
            let entry = unsafe { &*entry };
            if entry.hash == hash && is_it(&entry.value) {
                return Some(&entry.value);
            }
            i = (i + 1) & table.mask;
        }
        None
    }

    /// Adds `value` under `hash` unless one that `is_it` accepts is there; returns the one kept.
    pub(crate) fn insert(&self, hash: u64, value: V, is_it: impl Fn(&V) -> bool) -> &V {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = self.find(hash, &is_it) {
            return found;
        }
        let count = writer.entries.len() + 1;
        // SAFETY (this and the other dereferences below): tables and entries live until the
        // writer drops, with `self`.
        let capacity = writer
            .tables
            .last()
            .map_or(0, |&t| unsafe { (*t).mask } + 1);
        if count * 4 > capacity * 3 {
            let bigger = Box::into_raw(Table::with_capacity(capacity * 2));
            for &e in &writer.entries {
                // SAFETY: as above; `bigger` is not published yet.
                unsafe { (*bigger).place(e, (*e).hash) };
            }
            self.current.store(bigger, Ordering::Release);
            writer.tables.push(bigger);
        }
        let ptr = Box::into_raw(Box::new(Entry { hash, value }));
        writer.entries.push(ptr);
        if let Some(&table) = writer.tables.last() {
            // SAFETY: as above.
            unsafe { (*table).place(ptr, hash) };
        }
        // SAFETY: `ptr` is owned by `writer.entries`, freed only with `self`.
        unsafe { &(*ptr).value }
    }

    /// Runs `f` on every entry (its hash and value), holding the writer: no entry is added
    /// meanwhile.
    pub(crate) fn for_each(&self, mut f: impl FnMut(u64, &V)) {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        for &entry in &writer.entries {
            // SAFETY: entries live until the writer drops, with `self`.
            let entry = unsafe { &*entry };
            f(entry.hash, &entry.value);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Entries the one-thread test inserts (fewer under Miri, which interprets every access).
    const INSERTED: u64 = if cfg!(miri) { 200 } else { 1_000 };

    #[test]
    fn finds_what_was_inserted_across_growth_and_collisions() {
        let map = AppendOnlyMap::new();
        for i in 0..INSERTED {
            // Every fourth key shares a hash with another: the predicate tells them apart.
            let hash = i / 4;
            map.insert(hash, i, |v| *v == i);
        }
        assert_eq!(map.len(), INSERTED as usize);
        for i in 0..INSERTED {
            assert_eq!(map.find(i / 4, |v| *v == i), Some(&i));
        }
        assert_eq!(map.find(5, |v| *v == u64::MAX), None);
        assert_eq!(
            *map.insert(3, 12, |v| *v == 12),
            12,
            "an existing entry is kept"
        );
        assert_eq!(map.len(), INSERTED as usize);
    }

    /// Entries the two-thread test inserts (fewer under Miri, which interprets every access).
    const GROWN: u64 = if cfg!(miri) { 300 } else { 20_000 };

    #[test]
    fn readers_on_other_threads_see_entries_while_the_table_grows() {
        let map = Arc::new(AppendOnlyMap::new());
        let writer = {
            let map = map.clone();
            std::thread::spawn(move || {
                for i in 0..GROWN {
                    map.insert(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i, |v| *v == i);
                }
            })
        };
        let reader = {
            let map = map.clone();
            std::thread::spawn(move || {
                let mut seen = 0u64;
                while seen < GROWN {
                    // Entries appear in order; once seen, one stays found.
                    if map
                        .find(seen.wrapping_mul(0x9e37_79b9_7f4a_7c15), |v| *v == seen)
                        .is_some()
                    {
                        seen += 1;
                    }
                }
                for i in 0..GROWN {
                    assert!(
                        map.find(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), |v| *v == i)
                            .is_some()
                    );
                }
            })
        };
        writer.join().unwrap();
        reader.join().unwrap();
    }
}
