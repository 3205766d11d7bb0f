//! The two clocks of an event: monotonic time for durations, system time for wall-clock
//! timestamps. Both in nanoseconds.

use std::sync::LazyLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Nanoseconds on this process's monotonic clock (its origin is arbitrary, as Erlang's
/// `monotonic_time`): only differences mean something.
#[inline]
pub fn monotonic_time_ns() -> i64 {
    monotonic_ns_at(now())
}

/// The current instant, read after the clock's origin is fixed, so
/// `monotonic_ns_at(now())` never saturates at the origin.
#[inline]
pub(crate) fn now() -> Instant {
    LazyLock::force(&ORIGIN);
    Instant::now()
}

/// The monotonic-clock reading of `instant`, in nanoseconds.
#[inline]
pub(crate) fn monotonic_ns_at(instant: Instant) -> i64 {
    let nanos = instant.saturating_duration_since(*ORIGIN).as_nanos();
    i64::try_from(nanos).unwrap_or(i64::MAX)
}

/// Nanoseconds since the Unix epoch on the system clock (0 if the clock is before 1970).
#[inline]
pub fn system_time_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
