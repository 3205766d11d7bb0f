//! The clock the window slides on: milliseconds, cheap to read, injectable for tests.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A monotonic millisecond clock. Only differences matter.
pub trait Clock: Any + Send + Sync {
    /// Milliseconds since an arbitrary origin; never goes backwards.
    fn now_ms(&self) -> u64;
}

/// The system's monotonic clock, to within [`MonotonicClock::RESOLUTION_MS`]: enough to choose
/// a sub-window of seconds, and read in about a nanosecond.
///
/// Reading the system clock costs more than the rest of a record, so records read a
/// millisecond cell that a background thread (`dspex-clock`) sets from the system's coarse
/// monotonic clock every few milliseconds. The thread runs only while the clock is read: after
/// a second without a read it parks, and the next read takes the system clock itself and wakes
/// it.
#[derive(Debug, Clone, Copy, Default)]
pub struct MonotonicClock;

impl MonotonicClock {
    /// How far behind the system clock a reading may be, in milliseconds (plus however long the
    /// background thread waits to be scheduled).
    pub const RESOLUTION_MS: u64 = TICK_MS;
}

impl Clock for MonotonicClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        recent_ms()
    }
}

/// The clock a series reads: the system's, inlined, or another one through its trait.
#[derive(Clone)]
pub(crate) enum ClockHandle {
    System,
    Other(Arc<dyn Clock>),
}

impl ClockHandle {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        let any: &dyn Any = &*clock;
        if any.is::<MonotonicClock>() {
            ClockHandle::System
        } else {
            ClockHandle::Other(clock)
        }
    }

    #[inline]
    pub(crate) fn now_ms(&self) -> u64 {
        match self {
            ClockHandle::System => recent_ms(),
            ClockHandle::Other(clock) => clock.now_ms(),
        }
    }
}

const TICK_MS: u64 = 4;
/// Ticks without a read before the clock thread parks (one second; a few under Miri, which
/// interprets the thread's every step).
const IDLE_TICKS: u32 = if cfg!(miri) { 3 } else { 250 };
/// In the cell while the clock thread is parked or not started.
const ASLEEP: u64 = u64::MAX;

static RECENT_MS: AtomicU64 = AtomicU64::new(ASLEEP);
static READ_SINCE_TICK: AtomicBool = AtomicBool::new(false);
/// The clock thread, and the process it was started in (a forked child starts its own).
static TICKER: Mutex<Option<(u32, std::thread::Thread)>> = Mutex::new(None);

#[inline]
fn recent_ms() -> u64 {
    let ms = RECENT_MS.load(Ordering::Relaxed);
    if ms == ASLEEP {
        return wake();
    }
    // A store only on the first read after a tick: the line stays shared otherwise.
    if !READ_SINCE_TICK.load(Ordering::Relaxed) {
        READ_SINCE_TICK.store(true, Ordering::Relaxed);
    }
    ms
}

/// Reads the system clock and (re)starts the clock thread.
#[cold]
fn wake() -> u64 {
    let now = coarse_monotonic_ms();
    READ_SINCE_TICK.store(true, Ordering::Relaxed);
    let mut ticker = TICKER.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    match &*ticker {
        Some((started_in, thread)) if *started_in == pid => thread.unpark(),
        _ => {
            let spawned = std::thread::Builder::new()
                .name("dspex-clock".into())
                .spawn(tick);
            // Without a thread every read takes the system clock: slower, still right.
            let Ok(handle) = spawned else {
                return now;
            };
            *ticker = Some((pid, handle.thread().clone()));
            #[cfg(all(unix, not(miri)))]
            forget_in_forked_children();
        }
    }
    // Published, so that a reading the clock thread took before this one cannot follow it.
    publish(now)
}

/// Puts `ms` in the cell unless it holds a later reading; returns what the cell holds then.
/// A reading the clock thread took before being preempted never replaces a later one that a
/// reader published meanwhile: the clock never goes back.
fn publish(ms: u64) -> u64 {
    let mut current = RECENT_MS.load(Ordering::Relaxed);
    loop {
        if current != ASLEEP && current >= ms {
            return current;
        }
        match RECENT_MS.compare_exchange_weak(current, ms, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return ms,
            Err(seen) => current = seen,
        }
    }
}

fn tick() {
    let mut idle = 0;
    loop {
        publish(coarse_monotonic_ms());
        std::thread::sleep(Duration::from_millis(TICK_MS));
        if READ_SINCE_TICK.swap(false, Ordering::Relaxed) {
            idle = 0;
        } else {
            idle += 1;
        }
        if idle >= IDLE_TICKS {
            RECENT_MS.store(ASLEEP, Ordering::SeqCst);
            // A read after the store above wakes us (an unpark before the park is kept).
            std::thread::park();
            idle = 0;
        }
    }
}

/// A forked child has no clock thread: the cell must say so, or the child's clock stands still.
#[cfg(all(unix, not(miri)))]
fn forget_in_forked_children() {
    extern "C" fn in_child() {
        RECENT_MS.store(ASLEEP, Ordering::SeqCst);
    }
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic, which is
        // async-signal-safe as a fork handler must be.
        unsafe {
            libc::pthread_atfork(None, None, Some(in_child));
        }
    });
}

#[cfg(all(target_os = "linux", not(miri)))]
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

#[cfg(not(all(target_os = "linux", not(miri))))]
#[inline]
fn coarse_monotonic_ms() -> u64 {
    fallback_ms()
}

#[cfg(not(miri))]
fn fallback_ms() -> u64 {
    u64::try_from(dspex_telemetry_core::monotonic_time_ns() / 1_000_000).unwrap_or(0)
}

/// Under Miri, which models neither the coarse clock nor the CPU's counter: the standard
/// library's clock.
#[cfg(miri)]
fn fallback_ms() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Readers on several threads while the clock thread ticks, parks after its idle ticks and
    /// is woken again: every reader's readings never go back, and they follow time. (Run
    /// under Miri in CI, which checks the clock's atomics and its park and unpark.)
    #[test]
    fn readings_never_go_back_while_the_clock_thread_parks_and_wakes() {
        let idle = Duration::from_millis(TICK_MS * (u64::from(IDLE_TICKS) + 4));
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let mut last = recent_ms();
                    for round in 0..3 {
                        for _ in 0..20 {
                            let now = recent_ms();
                            assert!(now >= last, "went back from {last} to {now}");
                            last = now;
                        }
                        // Long enough without a read for the clock thread to park.
                        if round < 2 {
                            std::thread::sleep(idle);
                        }
                    }
                });
            }
        });
        // It follows time (within seconds: under Miri the clock thread runs when scheduled).
        let before = recent_ms();
        let started = std::time::Instant::now();
        let mut after = before;
        while after < before + 40 && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
            after = recent_ms();
        }
        assert!(
            after >= before + 40,
            "{before}, then {after} {:?} later",
            started.elapsed()
        );
    }
}
