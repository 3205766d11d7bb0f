//! The spec's `thresholds`, as rules.

use crate::rule::{AlertType, Comparison, Rule, Source, Statistic};

/// The spec's threshold keys. Each one set becomes rules evaluated per method, tool, model or
/// pool; a key left out keeps the spec's value.
///
/// ```
/// use dspex_telemetry_alerts::thresholds::Thresholds;
/// let t: Thresholds = toml::from_str("bridge_call_p99_ms = 2000").unwrap();
/// assert_eq!((t.bridge_call_p99_ms, t.tool_execution_p99_ms), (Some(2000.0), Some(500.0)));
/// let names: Vec<String> = t.rules().into_iter().map(|r| r.name).collect();
/// assert_eq!(names, [
///     "bridge_call_p99_ms", "tool_execution_p99_ms", "bridge_call_error_rate_percent",
///     "tool_error_rate_percent", "lm_call_error_rate_percent", "queue_time_ms", "pool_exhausted",
/// ]);
/// assert!(toml::from_str::<Thresholds>("bridge_p99 = 1").unwrap_err().to_string().contains("bridge_p99"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// p99 of `dspex_bridge_call_method_duration` per method, in ms (spec default 1000).
    pub bridge_call_p99_ms: Option<f64>,
    /// p99 of `dspex_tools_execute_duration` per tool, in ms (spec default 500).
    pub tool_execution_p99_ms: Option<f64>,
    /// Errors per hundred calls of bridge calls (per method), tools (per tool) and
    /// language-model calls (per model) (spec default 5; above 0, at most 100).
    pub error_rate_percent: Option<f64>,
    /// p99 of `dspex_pool_queue_time` per pool, in ms (spec default 5000); a pool that refused
    /// work (`dspex_pool_exhausted_total` rose within the window) fires too.
    pub queue_time_ms: Option<f64>,
    /// Fewer calls than this in the window never breach a latency or error-rate rule
    /// (default 20).
    pub min_samples: u64,
}

impl Default for Thresholds {
    /// The spec's example values.
    fn default() -> Self {
        Thresholds {
            bridge_call_p99_ms: Some(1000.0),
            tool_execution_p99_ms: Some(500.0),
            error_rate_percent: Some(5.0),
            queue_time_ms: Some(5000.0),
            min_samples: 20,
        }
    }
}

impl Thresholds {
    /// No threshold set (build on it with struct update syntax).
    pub fn none() -> Self {
        Thresholds {
            bridge_call_p99_ms: None,
            tool_execution_p99_ms: None,
            error_rate_percent: None,
            queue_time_ms: None,
            min_samples: 20,
        }
    }

    /// The rules these thresholds mean.
    pub fn rules(&self) -> Vec<Rule> {
        let rule = |name: &str, source: Source, statistic, threshold, alert_type, unit| Rule {
            name: name.into(),
            source,
            statistic,
            comparison: Comparison::Above,
            threshold,
            min_samples: self.min_samples,
            for_ms: 0,
            alert_type,
            severity: None,
            unit,
        };
        let bridge = || Source::Operation("dspex_bridge_call_method".into());
        let tools = || Source::Operation("dspex_tools_execute".into());
        let lm = || Source::Operation("dspex_lm_call".into());
        let mut rules = Vec::new();
        if let Some(t) = self.bridge_call_p99_ms {
            rules.push(rule(
                "bridge_call_p99_ms",
                bridge(),
                Statistic::Quantile(0.99),
                t,
                AlertType::PerformanceDegradation,
                "ms",
            ));
        }
        if let Some(t) = self.tool_execution_p99_ms {
            rules.push(rule(
                "tool_execution_p99_ms",
                tools(),
                Statistic::Quantile(0.99),
                t,
                AlertType::PerformanceDegradation,
                "ms",
            ));
        }
        if let Some(t) = self.error_rate_percent {
            rules.push(rule(
                "bridge_call_error_rate_percent",
                bridge(),
                Statistic::ErrorRatePercent,
                t,
                AlertType::ErrorSpike,
                "%",
            ));
            rules.push(rule(
                "tool_error_rate_percent",
                tools(),
                Statistic::ErrorRatePercent,
                t,
                AlertType::ErrorSpike,
                "%",
            ));
            rules.push(rule(
                "lm_call_error_rate_percent",
                lm(),
                Statistic::ErrorRatePercent,
                t,
                AlertType::ErrorSpike,
                "%",
            ));
        }
        if let Some(t) = self.queue_time_ms {
            rules.push(rule(
                "queue_time_ms",
                Source::Histogram("dspex_pool_queue_time".into()),
                Statistic::Quantile(0.99),
                t,
                AlertType::ResourceExhaustion,
                "ms",
            ));
            rules.push(Rule {
                min_samples: 0,
                severity: Some(crate::Severity::Critical),
                ..rule(
                    "pool_exhausted",
                    Source::Counter("dspex_pool_exhausted_total".into()),
                    Statistic::Count,
                    0.0,
                    AlertType::ResourceExhaustion,
                    "",
                )
            });
        }
        rules
    }
}
