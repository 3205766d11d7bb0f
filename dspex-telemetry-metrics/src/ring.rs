//! A ring of sub-windows of time: the current one takes records, a read takes the ones still
//! in the window. Shared by histogram windows and windowed counters.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// One sub-window's storage.
pub(crate) trait Slot: Send + Sync {
    /// Which sub-window of time the slot holds, plus one; 0 when never used.
    fn epoch(&self) -> &AtomicU64;
    /// Empties the slot for reuse.
    fn clear(&self);
}

pub(crate) struct Ring<S> {
    slots: Box<[S]>,
    sub_window_ms: u64,
    rotation: Mutex<()>,
}

impl<S: Slot> Ring<S> {
    pub(crate) fn new(slots: Box<[S]>, sub_window_ms: u64) -> Self {
        Ring {
            slots,
            sub_window_ms,
            rotation: Mutex::new(()),
        }
    }

    /// The slot for time `now_ms`, cleared first if it last held an older sub-window.
    ///
    /// The clearing takes a lock that only the first record of a sub-window takes. A slot is
    /// reused a whole window after it was last current, so no record is in flight into it then.
    #[inline]
    pub(crate) fn current(&self, now_ms: u64) -> &S {
        self.current_with(now_ms, |_| {})
    }

    /// As [`Ring::current`]; `opened` runs on the slot after it is cleared for a new
    /// sub-window, before any record can reach it.
    #[inline]
    pub(crate) fn current_with(&self, now_ms: u64, opened: impl FnOnce(&S)) -> &S {
        let epoch = now_ms / self.sub_window_ms + 1;
        let slot = &self.slots[(epoch % self.slots.len() as u64) as usize];
        if slot.epoch().load(Ordering::Acquire) != epoch {
            self.rotate(slot, epoch, opened);
        }
        slot
    }

    #[cold]
    fn rotate(&self, slot: &S, epoch: u64, opened: impl FnOnce(&S)) {
        let _guard = self.rotation.lock().unwrap_or_else(|e| e.into_inner());
        if slot.epoch().load(Ordering::Acquire) < epoch {
            slot.clear();
            opened(slot);
            slot.epoch().store(epoch, Ordering::Release);
        }
    }

    /// Runs `f` on the slot holding sub-window `epoch`, if one still does, with rotation held
    /// off meanwhile (so the slot cannot be cleared for a newer sub-window under `f`).
    pub(crate) fn with_slot_of(&self, epoch: u64, f: impl FnOnce(&S)) {
        let _guard = self.rotation.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &self.slots[(epoch % self.slots.len() as u64) as usize];
        if slot.epoch().load(Ordering::Acquire) == epoch {
            f(slot);
        }
    }

    /// The sub-windows (epochs) still in the window at `now_ms`, oldest first.
    pub(crate) fn live_epochs(&self, now_ms: u64) -> std::ops::RangeInclusive<u64> {
        let current = now_ms / self.sub_window_ms + 1;
        let oldest = current.saturating_sub(self.slots.len() as u64 - 1).max(1);
        oldest..=current
    }

    /// The length of a sub-window.
    pub(crate) fn sub_window_ms(&self) -> u64 {
        self.sub_window_ms
    }

    /// The slots still in the window at `now_ms`, and the time the oldest of them began.
    pub(crate) fn live(&self, now_ms: u64) -> (impl Iterator<Item = &S> + '_, u64) {
        let epochs = self.live_epochs(now_ms);
        let (oldest, current) = (*epochs.start(), *epochs.end());
        let slots = self.slots.iter().filter(move |s| {
            let epoch = s.epoch().load(Ordering::Acquire);
            (oldest..=current).contains(&epoch)
        });
        (slots, (oldest - 1) * self.sub_window_ms)
    }

    pub(crate) fn slots(&self) -> &[S] {
        &self.slots
    }
}
