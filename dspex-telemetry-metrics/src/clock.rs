//! The clock the window slides on: milliseconds, cheap to read, injectable for tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonic millisecond clock. Only differences matter.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since an arbitrary origin; never goes backwards.
    fn now_ms(&self) -> u64;
}

/// The system's monotonic clock at coarse resolution (a few milliseconds on Linux), which
/// reads in a few nanoseconds: enough to choose a sub-window of seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        coarse_monotonic_ms()
    }
}

#[cfg(target_os = "linux")]
#[inline]
fn coarse_monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC_COARSE exists on every
    // Linux since 2.6.32 and cannot fail with a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if rc != 0 {
        return fallback_ms();
    }
    (ts.tv_sec as u64).saturating_mul(1000) + (ts.tv_nsec as u64) / 1_000_000
}

#[cfg(not(target_os = "linux"))]
#[inline]
fn coarse_monotonic_ms() -> u64 {
    fallback_ms()
}

fn fallback_ms() -> u64 {
    u64::try_from(dspex_telemetry_core::monotonic_time_ns() / 1_000_000).unwrap_or(0)
}

/// A clock that moves only when told to: for tests of sliding and expiry.
///
/// ```
/// use dspex_telemetry_metrics::{Clock, ManualClock};
/// let clock = ManualClock::new(1_000);
/// clock.advance_ms(250);
/// assert_eq!(clock.now_ms(), 1_250);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        ManualClock {
            ms: Arc::new(AtomicU64::new(start_ms)),
        }
    }

    /// Moves the clock forward.
    pub fn advance_ms(&self, ms: u64) {
        self.ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock (it must not go backwards).
    pub fn set_ms(&self, ms: u64) {
        self.ms.fetch_max(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }
}
