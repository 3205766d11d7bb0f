//! The evaluation and lifecycle of alerts: pending → firing → resolved, with suppression.

use std::collections::{HashMap, HashSet};

use dspex_telemetry_metrics::WindowedRecorder;

use crate::alert::{Alert, Notification, Severity, Transition, alert_id, message};
use crate::exemplar::Exemplars;
use crate::rule::{Comparison, Rule};

/// Against alert fatigue (the spec's `suppression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Suppression {
    /// The least time between two notifications of the same alert (default 300 000 ms). A
    /// still-firing alert is notified again once this much time has passed.
    pub min_interval_ms: u64,
    /// Consecutive breached evaluations before an alert first fires (default 3).
    pub occurrence_threshold: u32,
}

impl Default for Suppression {
    fn default() -> Self {
        Suppression {
            min_interval_ms: 300_000,
            occurrence_threshold: 3,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Consecutive breached evaluations.
    occurrences: u32,
    /// When the current run of breaches began.
    breaching_since_ms: Option<u64>,
    /// The alert while it fires.
    firing: Option<Alert>,
    /// Whether this firing was notified (a suppressed one resolves silently).
    notified: bool,
    /// When this alert was last notified, fired or resolved.
    last_notified_ms: Option<u64>,
}

/// Evaluates rules against a window and keeps each alert's lifecycle. Deterministic: the time
/// is given to [`AlertEngine::evaluate`], so tests drive it step by step.
///
/// ```
/// use std::sync::Arc;
/// use dspex_telemetry_alerts::{AlertEngine, Suppression, Transition, thresholds::Thresholds};
/// use dspex_telemetry_metrics::{ManualClock, RecorderConfig, WindowedRecorder};
///
/// let clock = ManualClock::new(0);
/// let window = WindowedRecorder::with_clock(RecorderConfig::default(), Arc::new(clock.clone())).unwrap();
/// let rules = Thresholds { bridge_call_p99_ms: Some(1000.0), ..Thresholds::none() }.rules();
/// let mut engine = AlertEngine::new(rules, Suppression { min_interval_ms: 60_000, occurrence_threshold: 1 });
/// metrics::with_local_recorder(&window, || {
///     for _ in 0..20 {
///         metrics::histogram!("dspex_bridge_call_method_duration", "method" => "dspy.Predict").record(1200.0);
///     }
/// });
/// let fired = engine.evaluate(&window, 1_000);
/// assert_eq!(fired[0].transition, Transition::Fired);
/// assert!((fired[0].alert.factor - 1.2).abs() < 0.02);
/// ```
#[derive(Debug)]
pub struct AlertEngine {
    rules: Vec<Rule>,
    suppression: Suppression,
    states: HashMap<String, State>,
    exemplars: Option<Exemplars>,
}

impl AlertEngine {
    /// An engine for `rules`.
    pub fn new(rules: Vec<Rule>, suppression: Suppression) -> Self {
        AlertEngine {
            rules,
            suppression,
            states: HashMap::new(),
            exemplars: None,
        }
    }

    /// Attaches example requests (with their trace ids) to the alerts from `exemplars`.
    pub fn with_exemplars(mut self, exemplars: Exemplars) -> Self {
        self.exemplars = Some(exemplars);
        self
    }

    /// The rules it evaluates.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The alerts firing now.
    pub fn active(&self) -> Vec<&Alert> {
        let mut active: Vec<&Alert> = self
            .states
            .values()
            .filter_map(|s| s.firing.as_ref())
            .collect();
        active.sort_by(|a, b| a.id.cmp(&b.id));
        active
    }

    /// Reads every rule from `recorder` at time `now_ms` (Unix milliseconds) and returns the
    /// notifications due: alerts that fire (after `occurrence_threshold` consecutive breaches
    /// lasting the rule's `for_ms`), fire again (after `min_interval_ms`), or resolve.
    pub fn evaluate(&mut self, recorder: &WindowedRecorder, now_ms: u64) -> Vec<Notification> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let suppression = self.suppression;
        for rule in &self.rules {
            for reading in rule.read(recorder) {
                let id = alert_id(&rule.name, &reading.labels);
                seen.insert(id.clone());
                let state = self.states.entry(id.clone()).or_default();
                if !reading.breached {
                    resolve(state, now_ms, &mut out);
                    continue;
                }
                state.occurrences = state.occurrences.saturating_add(1);
                let since = *state.breaching_since_ms.get_or_insert(now_ms);
                if state.occurrences < suppression.occurrence_threshold.max(1)
                    || now_ms.saturating_sub(since) < rule.for_ms
                {
                    continue; // pending
                }
                let factor = match rule.comparison {
                    Comparison::Above if rule.threshold != 0.0 => reading.value / rule.threshold,
                    Comparison::Below if reading.value != 0.0 => rule.threshold / reading.value,
                    _ => f64::INFINITY,
                };
                let started_at_ms = state.firing.as_ref().map_or(now_ms, |a| a.started_at_ms);
                let exemplars = self.exemplars.as_ref().map_or_else(Vec::new, |e| {
                    e.for_alert(
                        rule.source.metric(),
                        &reading.labels,
                        rule.alert_type,
                        now_ms,
                    )
                });
                let mut alert = Alert {
                    id,
                    rule: rule.name.clone(),
                    alert_type: rule.alert_type,
                    severity: Severity::of(rule, factor),
                    metric: rule.source.metric().to_owned(),
                    labels: reading.labels,
                    statistic: rule.statistic.to_string(),
                    value: reading.value,
                    threshold: rule.threshold,
                    factor,
                    unit: rule.unit.to_owned(),
                    window: reading.window,
                    started_at_ms,
                    resolved_at_ms: None,
                    exemplars,
                    message: String::new(),
                };
                alert.message = message(&alert, Transition::Fired);
                let first = state.firing.is_none();
                let quiet_long_enough = state
                    .last_notified_ms
                    .is_none_or(|t| now_ms.saturating_sub(t) >= suppression.min_interval_ms);
                if quiet_long_enough {
                    state.notified = true;
                    state.last_notified_ms = Some(now_ms);
                    out.push(Notification {
                        transition: Transition::Fired,
                        alert: alert.clone(),
                    });
                } else if first {
                    state.notified = false;
                }
                state.firing = Some(alert);
            }
        }
        // Series that left the recorder (swept after idling) resolve too.
        for (id, state) in &mut self.states {
            if !seen.contains(id) {
                resolve(state, now_ms, &mut out);
            }
        }
        out
    }
}

fn resolve(state: &mut State, now_ms: u64, out: &mut Vec<Notification>) {
    state.occurrences = 0;
    state.breaching_since_ms = None;
    if let Some(mut alert) = state.firing.take() {
        if state.notified {
            alert.resolved_at_ms = Some(now_ms);
            alert.message = message(&alert, Transition::Resolved);
            state.last_notified_ms = Some(now_ms);
            out.push(Notification {
                transition: Transition::Resolved,
                alert,
            });
        }
        state.notified = false;
    }
}
