//! Bucket counters allocated a page at a time, when the page first counts: a series that saw
//! a few values holds the pages around those values, not its whole range.
//!
//! A page, once made, stays until the counters are dropped, so a reference to a counter lives
//! as long as the counters do. Making a page is a compare-and-swap on its slot: two threads
//! racing for it keep the first one's page and free the other.

use std::sync::atomic::{AtomicPtr, AtomicU16, AtomicU32, Ordering};

/// Counters per page.
pub(crate) const PAGE: usize = 64;

/// An atomic counter a page holds.
pub(crate) trait Counter: Send + Sync {
    /// A zero counter.
    fn zero() -> Self;
}

impl Counter for AtomicU32 {
    fn zero() -> Self {
        AtomicU32::new(0)
    }
}

impl Counter for AtomicU16 {
    fn zero() -> Self {
        AtomicU16::new(0)
    }
}

/// `len` counters in pages of [`PAGE`], each page made when one of its counters is first
/// written.
pub(crate) struct Paged<A: Counter> {
    pages: Box<[AtomicPtr<[A; PAGE]>]>,
}

impl<A: Counter> Paged<A> {
    /// `len` counters, no page made yet.
    pub(crate) fn new(len: usize) -> Self {
        Paged {
            pages: (0..len.div_ceil(PAGE))
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
        }
    }

    /// Counter `index`, if its page was made.
    #[inline]
    pub(crate) fn get(&self, index: usize) -> Option<&A> {
        let page = self.pages[index / PAGE].load(Ordering::Acquire);
        // SAFETY: a non-null slot holds a page made by `Box::into_raw` in `make`, freed only
        // when `self` drops.
        (!page.is_null()).then(|| unsafe { &(*page)[index % PAGE] })
    }

    /// Counter `index`, its page made first if need be.
    #[inline]
    pub(crate) fn get_or_make(&self, index: usize) -> &A {
        match self.get(index) {
            Some(counter) => counter,
            None => &self.make(index / PAGE)[index % PAGE],
        }
    }

    #[cold]
    fn make(&self, page: usize) -> &[A; PAGE] {
        let fresh = Box::into_raw(Box::new(std::array::from_fn(|_| A::zero())));
        match self.pages[page].compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            // SAFETY: just published; freed only when `self` drops.
            Ok(_) => unsafe { &*fresh },
            Err(first) => {
                // SAFETY: `fresh` was never published: this thread owns it.
                drop(unsafe { Box::from_raw(fresh) });
                // SAFETY: as in `get`.
                unsafe { &*first }
            }
        }
    }

    /// Each page made so far, with the index of its first counter.
    #[inline]
    pub(crate) fn for_each_page(&self, mut f: impl FnMut(usize, &[A; PAGE])) {
        for (i, slot) in self.pages.iter().enumerate() {
            let page = slot.load(Ordering::Acquire);
            if !page.is_null() {
                // SAFETY: as in `get`.
                f(i * PAGE, unsafe { &*page });
            }
        }
    }

    /// Bytes on the heap: the page table and the pages made.
    pub(crate) fn heap_bytes(&self) -> usize {
        let mut pages = 0;
        self.for_each_page(|_, _| pages += 1);
        std::mem::size_of_val(&*self.pages) + pages * std::mem::size_of::<[A; PAGE]>()
    }
}

impl<A: Counter> Drop for Paged<A> {
    fn drop(&mut self) {
        for slot in self.pages.iter_mut() {
            let page = *slot.get_mut();
            if !page.is_null() {
                // SAFETY: made by `Box::into_raw` in `make`; `&mut self` means no reader is
                // left, and each page is freed once.
                drop(unsafe { Box::from_raw(page) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn pages_are_made_on_first_write_and_read_as_zero_before() {
        let counters: Paged<AtomicU32> = Paged::new(1_048);
        assert!(counters.get(700).is_none());
        let before = counters.heap_bytes();
        counters.get_or_make(700).fetch_add(3, Ordering::Relaxed);
        counters.get_or_make(701).fetch_add(1, Ordering::Relaxed);
        assert_eq!(
            counters.get(700).map(|c| c.load(Ordering::Relaxed)),
            Some(3)
        );
        assert_eq!(
            counters.get(701).map(|c| c.load(Ordering::Relaxed)),
            Some(1)
        );
        assert_eq!(
            counters.get(640).map(|c| c.load(Ordering::Relaxed)),
            Some(0)
        );
        assert!(counters.get(0).is_none());
        assert_eq!(counters.heap_bytes() - before, PAGE * 4, "one page");
        let mut seen = Vec::new();
        counters.for_each_page(|first, page| {
            seen.push((
                first,
                page.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u32>(),
            ))
        });
        assert_eq!(seen, [(640, 4)]);
    }

    #[test]
    fn threads_racing_for_a_page_share_one() {
        let counters: Arc<Paged<AtomicU16>> = Arc::new(Paged::new(130));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counters = counters.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        counters
                            .get_or_make(65 + i % 3)
                            .fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let mut total = 0;
        counters.for_each_page(|_, page| {
            total += page
                .iter()
                .map(|c| u32::from(c.load(Ordering::Relaxed)))
                .sum::<u32>()
        });
        assert_eq!(total, 200, "no count went to a page that was thrown away");
    }
}
