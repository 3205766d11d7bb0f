//! Rules: what to read from the window, how to compare it, and what kind of alert a breach is.

use std::fmt;

use dspex_telemetry_metrics::{SeriesValue, WindowSnapshot, WindowedRecorder};

/// The spec's three alert types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertType {
    /// A latency above its threshold; carries the degradation factor (observed / threshold).
    PerformanceDegradation,
    /// An error rate above its threshold; carries the error count and rate.
    ErrorSpike,
    /// The worker pool exhausted, or requests waiting too long in its queue.
    ResourceExhaustion,
}

impl AlertType {
    /// The name used in messages, labels and payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertType::PerformanceDegradation => "performance_degradation",
            AlertType::ErrorSpike => "error_spike",
            AlertType::ResourceExhaustion => "resource_exhaustion",
        }
    }
}

impl fmt::Display for AlertType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a rule reads its value.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// An operation: histogram `{base}_duration` with counter `{base}_errors` as its errors
    /// (see `WindowedRecorder::operation`).
    Operation(String),
    /// A histogram's window.
    Histogram(String),
    /// A counter's increments within the window.
    Counter(String),
}

impl Source {
    /// The series the source reads.
    pub(crate) fn series(&self) -> String {
        match self {
            Source::Operation(base) => format!("{base}_duration"),
            Source::Histogram(name) | Source::Counter(name) => name.clone(),
        }
    }

    /// The metric, as alerts name it: an operation's base name (`dspex_bridge_call_method`),
    /// else the metric's name.
    pub fn metric(&self) -> &str {
        match self {
            Source::Operation(name) | Source::Histogram(name) | Source::Counter(name) => name,
        }
    }
}

/// What to compute from the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Statistic {
    /// A quantile (0.99 for p99) of a histogram, in its unit (milliseconds for durations).
    Quantile(f64),
    /// The mean.
    Mean,
    /// The largest sample.
    Max,
    /// Errors per hundred calls of an operation.
    ErrorRatePercent,
    /// Errors of an operation.
    ErrorCount,
    /// A counter's increments (or a histogram's samples) within the window.
    Count,
}

impl fmt::Display for Statistic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Statistic::Quantile(q) => write!(f, "p{}", (q * 100.0 * 1000.0).round() / 1000.0),
            Statistic::Mean => f.write_str("mean"),
            Statistic::Max => f.write_str("max"),
            Statistic::ErrorRatePercent => f.write_str("error rate %"),
            Statistic::ErrorCount => f.write_str("errors"),
            Statistic::Count => f.write_str("count"),
        }
    }
}

/// Which way a breach lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// The value is above the threshold.
    Above,
    /// The value is below the threshold.
    Below,
}

/// A threshold rule, evaluated for every label set of its metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// A name unique among the rules (`bridge_call_p99_ms`, say).
    pub name: String,
    /// Where the value comes from.
    pub source: Source,
    /// What is computed.
    pub statistic: Statistic,
    /// Which way is a breach.
    pub comparison: Comparison,
    /// The threshold, in the statistic's unit.
    pub threshold: f64,
    /// Fewer samples than this in the window never breach (so 1 error in 1 call is not a 100 %
    /// spike). Counters ignore it.
    pub min_samples: u64,
    /// How long a breach must last before the alert fires (besides the occurrence count).
    pub for_ms: u64,
    /// The alert a breach raises.
    pub alert_type: AlertType,
    /// A fixed severity; `None` derives it from how far the value is past the threshold (see
    /// [`crate::Severity`]).
    pub severity: Option<crate::Severity>,
    /// The unit of the value, for messages (`ms`, `%`, ``).
    pub unit: &'static str,
}

/// One label set's reading of a rule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reading {
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) value: f64,
    pub(crate) breached: bool,
    pub(crate) window: WindowSummary,
}

/// What the window held when an alert was evaluated.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct WindowSummary {
    /// Samples (calls) in the window.
    pub count: u64,
    /// Errors in the window (operations only).
    pub error_count: u64,
    /// Median, 95th and 99th percentiles (histograms only).
    pub p50: f64,
    /// See `p50`.
    pub p95: f64,
    /// See `p50`.
    pub p99: f64,
    /// How much time the window covered, in milliseconds.
    pub span_ms: u64,
}

impl WindowSummary {
    fn of(snapshot: &WindowSnapshot) -> Self {
        WindowSummary {
            count: snapshot.count,
            error_count: snapshot.error_count,
            p50: snapshot.p50,
            p95: snapshot.p95,
            p99: snapshot.p99,
            span_ms: snapshot.span_ms,
        }
    }
}

impl Rule {
    /// Reads the rule for every label set of its metric in `recorder`.
    pub(crate) fn read(&self, recorder: &WindowedRecorder) -> Vec<Reading> {
        let metric = self.source.series();
        let mut readings = Vec::new();
        for series in recorder.snapshot() {
            if series.name != metric {
                continue;
            }
            let labels = series.label_pairs();
            let (value, samples, window) = match (&self.source, &series.value) {
                (Source::Operation(base), SeriesValue::Histogram(_)) => {
                    let Some(op) = recorder.operation(base, &labels) else {
                        continue;
                    };
                    (self.compute(&op), op.count, WindowSummary::of(&op))
                }
                (Source::Histogram(_), SeriesValue::Histogram(h)) => {
                    (self.compute(h), h.count, WindowSummary::of(h))
                }
                (Source::Counter(_), SeriesValue::Counter(c)) => {
                    let window = WindowSummary {
                        count: c.in_window,
                        ..WindowSummary::default()
                    };
                    (c.in_window as f64, u64::MAX, window)
                }
                _ => continue,
            };
            let breached = samples >= self.min_samples
                && match self.comparison {
                    Comparison::Above => value > self.threshold,
                    Comparison::Below => value < self.threshold,
                };
            readings.push(Reading {
                labels: series.labels.clone(),
                value,
                breached,
                window,
            });
        }
        readings
    }

    fn compute(&self, w: &WindowSnapshot) -> f64 {
        match self.statistic {
            Statistic::Quantile(q) => w.quantile(q),
            Statistic::Mean => w.mean,
            Statistic::Max => w.max,
            Statistic::ErrorRatePercent => w.error_rate * 100.0,
            Statistic::ErrorCount => w.error_count as f64,
            Statistic::Count => w.count as f64,
        }
    }
}
