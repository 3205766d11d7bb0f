//! Ranges for configuration numbers, checked where each crate validates its keys.

use std::fmt::Display;

/// A configuration number outside its range; the caller names the key.
///
/// ```
/// use dspex_telemetry_core::bounds::within;
/// assert_eq!(within(500u64, 1, 1_000), Ok(500));
/// let err = within(9_223_372_036_854_775_807u64, 10, 604_800_000).unwrap_err();
/// assert_eq!(err.to_string(), "must be from 10 to 604800000, not 9223372036854775807");
/// assert!(within(f64::NAN, 0.0, 100.0).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be from {min} to {max}, not {value}")]
pub struct OutOfRange {
    /// The least value allowed.
    pub min: String,
    /// The greatest value allowed.
    pub max: String,
    /// The value given.
    pub value: String,
}

/// `value` if `min <= value <= max` (so never NaN), else what is wrong.
pub fn within<T: PartialOrd + Display>(value: T, min: T, max: T) -> Result<T, OutOfRange> {
    if min <= value && value <= max {
        Ok(value)
    } else {
        Err(OutOfRange {
            min: min.to_string(),
            max: max.to_string(),
            value: value.to_string(),
        })
    }
}

/// A week in milliseconds: the longest window, interval or idle time a key accepts.
pub const WEEK_MS: u64 = 7 * 24 * 3_600_000;

/// Five minutes in milliseconds: the longest one request (a push, a webhook, an export) may
/// take.
pub const REQUEST_TIMEOUT_MAX_MS: u64 = 300_000;
