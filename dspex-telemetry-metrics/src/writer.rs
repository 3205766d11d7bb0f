//! Writer slots: each of the first few threads that record gets a slot number of its own, and
//! with it a shard of every series that only it writes, so its records need no atomic
//! read-modify-write instruction (on x86 a `lock`ed add alone costs more than the rest of a
//! record). Threads beyond the series' shards record with atomic adds, as correctly but slower.
//! A slot is given back when its thread exits, and the next thread to ask takes it over with
//! what the shards hold.

use std::cell::Cell;
use std::sync::Mutex;

/// The most writer slots handed out at once; a series has shards for the first few.
pub(crate) const MAX_SLOTS: usize = 64;

/// This thread has not asked yet.
const UNASSIGNED: usize = usize::MAX;
/// This thread has no slot: all were taken, or it is exiting.
pub(crate) const NO_SLOT: usize = usize::MAX - 1;

/// Bit `k` set: slot `k` is held by a live thread.
static TAKEN: Mutex<u64> = Mutex::new(0);

thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(UNASSIGNED) };
    static RELEASE: Release = const { Release };
}

/// Gives the thread's slot back when the thread exits.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        let slot = SLOT.get();
        // Records made by later thread-local destructors take the shared path.
        SLOT.set(NO_SLOT);
        if slot < MAX_SLOTS {
            let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
            *taken &= !(1u64 << slot);
        }
    }
}

/// This thread's slot, or [`NO_SLOT`]. The first call takes the lowest free slot.
#[inline]
pub(crate) fn slot() -> usize {
    match SLOT.get() {
        UNASSIGNED => assign(),
        slot => slot,
    }
}

#[cold]
fn assign() -> usize {
    // Register the release first: if that is impossible (the thread is exiting), take no slot.
    if RELEASE.try_with(|_| ()).is_err() {
        SLOT.set(NO_SLOT);
        return NO_SLOT;
    }
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let free = (!*taken).trailing_zeros() as usize;
    let slot = if free < MAX_SLOTS {
        *taken |= 1u64 << free;
        free
    } else {
        NO_SLOT
    };
    SLOT.set(slot);
    slot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_held_for_the_thread_and_given_back_when_it_exits() {
        let mine = slot();
        assert!(mine < MAX_SLOTS);
        assert_eq!(slot(), mine, "the same slot on every call");
        let (tx, rx) = std::sync::mpsc::channel();
        let other = std::thread::spawn(move || {
            let s = slot();
            tx.send(s).unwrap();
            s
        });
        let theirs = rx.recv().unwrap();
        assert_ne!(theirs, mine, "two live threads never share a slot");
        other.join().unwrap();
        let taken = *TAKEN.lock().unwrap();
        assert_eq!(
            taken & (1 << theirs),
            0,
            "an exited thread's slot is free again"
        );
        assert_ne!(taken & (1 << mine), 0);
    }
}
