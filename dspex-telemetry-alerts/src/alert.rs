//! Alerts: what fired, how bad it is, and what the window saw.

use std::fmt;

use crate::exemplar::Exemplar;
use crate::rule::{AlertType, Rule, WindowSummary};

/// How urgent an alert is.
///
/// The rules, from the ratio of the observed value to the threshold (for a rule that fires
/// below its threshold, threshold / value): at least 3 → critical, at least 2 → high, at least
/// 1.5 → medium, else low; unless the rule fixes its severity (a pool exhaustion, any at all,
/// is critical).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Barely over the line.
    Low,
    /// 1.5× over.
    Medium,
    /// 2× over.
    High,
    /// 3× over, or the pool refused work.
    Critical,
}

impl Severity {
    /// The name used in messages, labels and payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The severity of an alert of `rule` at `factor`: the rule's own, if it fixes one.
    pub(crate) fn of(rule: &Rule, factor: f64) -> Self {
        if let Some(fixed) = rule.severity {
            return fixed;
        }
        if factor >= 3.0 {
            Severity::Critical
        } else if factor >= 2.0 {
            Severity::High
        } else if factor >= 1.5 {
            Severity::Medium
        } else {
            Severity::Low
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert: a rule breached for one label set.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Alert {
    /// The rule's name and the label set, as one stable key (`bridge_call_p99_ms{method="dspy.Predict"}`).
    pub id: String,
    /// The rule that raised it.
    pub rule: String,
    /// The alert type.
    #[serde(rename = "type")]
    pub alert_type: AlertType,
    /// How urgent it is.
    pub severity: Severity,
    /// The metric read.
    pub metric: String,
    /// The label set (method, tool_name, pool, …); a JSON object when serialized.
    #[serde(serialize_with = "labels_as_object")]
    pub labels: Vec<(String, String)>,
    /// What was computed (`p99`, `error rate %`, …).
    pub statistic: String,
    /// The value observed at the last evaluation.
    pub value: f64,
    /// The threshold.
    pub threshold: f64,
    /// `value / threshold` (the degradation factor of a performance alert).
    pub factor: f64,
    /// The value's unit.
    pub unit: String,
    /// What the window held.
    pub window: WindowSummary,
    /// When the alert started firing (Unix milliseconds).
    pub started_at_ms: u64,
    /// When it resolved, if it has.
    pub resolved_at_ms: Option<u64>,
    /// Example requests behind it, with their trace ids (the slowest for a performance alert,
    /// the latest failures for an error spike), when [`crate::Exemplars`] are kept.
    pub exemplars: Vec<Exemplar>,
    /// A sentence for people.
    pub message: String,
}

fn labels_as_object<S: serde::Serializer>(
    labels: &[(String, String)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(Some(labels.len()))?;
    for (k, v) in labels {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

/// Whether a notification says an alert fires or has resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// It fires (first time, or again after `min_interval_ms` while it still fires).
    Fired,
    /// It no longer breaches.
    Resolved,
}

/// What handlers receive.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Notification {
    /// Fired or resolved.
    pub transition: Transition,
    /// The alert.
    pub alert: Alert,
}

fn labels_text(labels: &[(String, String)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The stable key of a rule's alert for a label set.
pub(crate) fn alert_id(rule: &str, labels: &[(String, String)]) -> String {
    format!("{rule}{{{}}}", labels_text(labels))
}

/// The sentence for people, by type.
pub(crate) fn message(alert: &Alert, transition: Transition) -> String {
    let subject = if alert.labels.is_empty() {
        alert.metric.clone()
    } else {
        format!("{} {{{}}}", alert.metric, labels_text(&alert.labels))
    };
    let number = |v: f64| {
        if v.fract() == 0.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    };
    let unit = if alert.unit.is_empty() || alert.unit == "%" {
        alert.unit.clone()
    } else {
        format!(" {}", alert.unit)
    };
    let body = match alert.alert_type {
        AlertType::PerformanceDegradation => format!(
            "performance degradation on {subject}: {} {}{unit} over the {}{unit} threshold ({:.2}× slower, {} calls in the last {} s)",
            alert.statistic,
            number(alert.value),
            number(alert.threshold),
            alert.factor,
            alert.window.count,
            alert.window.span_ms / 1000,
        ),
        AlertType::ErrorSpike => format!(
            "error spike on {subject}: {} errors in {} calls ({}{unit}, threshold {}{unit}) in the last {} s",
            alert.window.error_count,
            alert.window.count,
            number(alert.value),
            number(alert.threshold),
            alert.window.span_ms / 1000,
        ),
        AlertType::ResourceExhaustion => format!(
            "resource exhaustion on {subject}: {} {}{unit} (threshold {}{unit})",
            alert.statistic,
            number(alert.value),
            number(alert.threshold),
        ),
    };
    match transition {
        Transition::Fired => format!("[{}] {body}", alert.severity.as_str().to_uppercase()),
        Transition::Resolved => format!("[RESOLVED] {body}"),
    }
}
