//! The metrics section of the configuration, with the spec's keys.

use dspex_telemetry_core::bounds;
use serde::Deserialize;
use std::collections::BTreeMap;

use crate::cardinality::{CardinalityLayer, DEFAULT_MAX_LABEL_VALUE_BYTES};
use crate::recorder::RecorderConfig;
use crate::window::{ValueRange, WindowConfig, WindowConfigError, WindowShape};

/// The most `max_series_per_metric` accepts.
pub const MAX_SERIES_PER_METRIC: u64 = 1_000_000;

/// The metrics configuration: the spec's `window_size_ms` and `max_samples`, and the bounds
/// this implementation adds. Every key is optional; unknown keys are refused by name.
///
/// ```
/// use dspex_telemetry_metrics::MetricsConfig;
/// let config: MetricsConfig = toml::from_str("window_size_ms = 30_000\nmax_samples = 5_000").unwrap();
/// let recorder_config = config.into_recorder_config().unwrap();
/// assert_eq!(recorder_config.window.window_size_ms, 30_000);
/// assert!(toml::from_str::<MetricsConfig>("window_size = 1").unwrap_err().to_string().contains("window_size"));
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// The sliding window's length in milliseconds (default 60 000; 10 to a week).
    pub window_size_ms: u64,
    /// The most bucket counters one series holds (default 10 000; at most 1 000 000); see
    /// [`WindowConfig`].
    pub max_samples: usize,
    /// Sub-windows per window (default 6; 2 to 1 000).
    pub sub_windows: usize,
    /// Label sets per metric before the overflow series (default 1 000; 1 to 1 000 000),
    /// for every metric through the stack's recorders: the catalog's and the user's own.
    pub max_series_per_metric: usize,
    /// Bytes of a label value; a longer one is cut, ending in `…` (default 256; 16 to
    /// 65 536).
    pub max_label_value_bytes: usize,
    /// Idle time after which an unreferenced series is dropped (default 600 000 ms; at most a
    /// week).
    pub idle_timeout_ms: u64,
    /// Histograms whose values span another range than the default (0.001 to 1 000 000), by
    /// metric name: `[metrics.ranges] my_job_duration_ms = { min = 1, max = 86_400_000 }`.
    /// The catalog's distributions have ranges around their buckets already; one set here
    /// replaces it.
    pub ranges: BTreeMap<String, ValueRange>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        let recorder = RecorderConfig::default();
        MetricsConfig {
            window_size_ms: recorder.window.window_size_ms,
            max_samples: recorder.window.max_samples,
            sub_windows: recorder.window.sub_windows,
            max_series_per_metric: recorder.max_series_per_metric,
            max_label_value_bytes: DEFAULT_MAX_LABEL_VALUE_BYTES,
            idle_timeout_ms: recorder.idle_timeout_ms,
            ranges: recorder.ranges,
        }
    }
}

impl MetricsConfig {
    /// The cap on label sets and label values these keys describe, for every recorder.
    pub fn cardinality_layer(&self) -> CardinalityLayer {
        CardinalityLayer::new(self.max_series_per_metric, self.max_label_value_bytes)
    }

    /// The recorder configuration, validated; an error names the key at fault.
    pub fn into_recorder_config(self) -> Result<RecorderConfig, WindowConfigError> {
        let window = WindowConfig {
            window_size_ms: self.window_size_ms,
            max_samples: self.max_samples,
            sub_windows: self.sub_windows,
            ..WindowConfig::default()
        };
        WindowShape::new(window.clone())?;
        let range = |key, value: u64, min, max| {
            bounds::within(value, min, max).map_err(|e| WindowConfigError::Invalid {
                key: String::from(key),
                reason: e.to_string(),
            })
        };
        range(
            "max_series_per_metric",
            self.max_series_per_metric as u64,
            1,
            MAX_SERIES_PER_METRIC,
        )?;
        range("idle_timeout_ms", self.idle_timeout_ms, 1, bounds::WEEK_MS)?;
        range(
            "max_label_value_bytes",
            self.max_label_value_bytes as u64,
            16,
            65_536,
        )?;
        Ok(RecorderConfig {
            window,
            max_series_per_metric: self.max_series_per_metric,
            idle_timeout_ms: self.idle_timeout_ms,
            ranges: self.ranges,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_specs() {
        let c = MetricsConfig::default();
        assert_eq!((c.window_size_ms, c.max_samples), (60_000, 10_000));
        let parsed: MetricsConfig = toml::from_str("").unwrap();
        assert_eq!(parsed, c);
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = toml::from_str::<MetricsConfig>("window_size_ms = \"soon\"").unwrap_err();
        assert!(err.to_string().contains("window_size_ms"), "{err}");
        let err = toml::from_str::<MetricsConfig>("max_samples = 10")
            .unwrap()
            .into_recorder_config()
            .unwrap_err();
        assert!(err.to_string().contains("max_samples"), "{err}");
        let err = toml::from_str::<MetricsConfig>("max_series_per_metric = 0")
            .unwrap()
            .into_recorder_config()
            .unwrap_err();
        assert!(err.to_string().contains("max_series_per_metric"), "{err}");
    }
}
