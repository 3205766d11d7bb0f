//! Snapshot-testing your alerts: a traffic pattern on a manual clock, run through your
//! [`AlertsConfig`], gives the alerts that fire and resolve, when, with their messages and the
//! payload each of your handlers would send. The engine is deterministic, so the result can
//! be pinned (with `insta`, say) and a change of threshold or rule shows in review.
//!
//! ```
//! use dspex_telemetry_alerts::{AlertsConfig, scenario::Scenario};
//! let config: AlertsConfig = toml::from_str(
//!     "thresholds = { tool_execution_p99_ms = 500 }\nevaluation_interval_ms = 5000",
//! ).unwrap();
//! let steps = Scenario::new(&config)
//!     // web_search every 100 ms: 200 ms for 20 s, then 900 ms for 20 s, then 200 ms again.
//!     .calls("dspex_tools_execute", &[("tool_name", "web_search")], 0..20_000, 100, 200.0)
//!     .calls("dspex_tools_execute", &[("tool_name", "web_search")], 20_000..40_000, 100, 900.0)
//!     .calls("dspex_tools_execute", &[("tool_name", "web_search")], 40_000..120_000, 100, 200.0)
//!     .run(120_000)
//!     .unwrap();
//! let lines: Vec<String> = steps.iter().map(|s| s.line()).collect();
//! assert_eq!(lines.len(), 2);
//! // Three breached evaluations in a row (25, 30 and 35 s) fire it; the 60 s window holds
//! // slow calls until 100 s, but from 90 s they are under 1 % of its calls.
//! assert!(lines[0].starts_with("35.0s fired [MEDIUM] performance degradation on dspex_tools_execute"));
//! assert!(lines[1].starts_with("90.0s resolved"));
//! ```

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use dspex_telemetry_metrics::{ManualClock, RecorderConfig, WindowedRecorder};

use crate::alert::{Notification, Severity, Transition};
use crate::config::{AlertsConfig, ConfigError, HandlerConfig};
use crate::handler::alertmanager_payload;

/// Where the scenario's clock starts, as Unix milliseconds: the alerts' timestamps are this
/// plus the time into the scenario (2023-11-14T22:13:20Z).
pub const START_UNIX_MS: u64 = 1_700_000_000_000;

/// A run of calls: one every `every_ms` over `during`, each taking `duration_ms`, one in
/// `fail_one_in` failing (0: none).
#[derive(Debug, Clone)]
struct Calls {
    operation: String,
    labels: Vec<(String, String)>,
    during: Range<u64>,
    every_ms: u64,
    duration_ms: f64,
    fail_one_in: u64,
}

/// A traffic pattern through an [`AlertsConfig`]; see the [module](self).
#[derive(Debug, Clone)]
pub struct Scenario<'c> {
    config: &'c AlertsConfig,
    window: RecorderConfig,
    calls: Vec<Calls>,
}

/// One notification of a scenario: when (milliseconds into it), what, and what each handler
/// of the configuration would send.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Step {
    /// Milliseconds into the scenario.
    pub at_ms: u64,
    /// Fired or resolved.
    pub transition: Transition,
    /// The alert's id (its rule and labels).
    pub alert: String,
    /// Its severity.
    pub severity: Severity,
    /// Its message.
    pub message: String,
    /// Per handler of the configuration (`log`, `webhook`, `alertmanager`, in its order, a
    /// second of a kind numbered `webhook#2`), what it would send: the log line's level and
    /// text, the webhook's JSON body, Alertmanager's JSON body.
    pub payloads: BTreeMap<String, serde_json::Value>,
}

impl Step {
    /// `"<seconds>s <fired|resolved> <message>"`: a line for a compact snapshot.
    pub fn line(&self) -> String {
        let what = match self.transition {
            Transition::Fired => "fired",
            Transition::Resolved => "resolved",
        };
        format!("{:.1}s {what} {}", self.at_ms as f64 / 1e3, self.message)
    }
}

impl<'c> Scenario<'c> {
    /// A scenario through `config`'s thresholds, suppression, evaluation interval and
    /// handlers, over the default window (`RecorderConfig::default()`).
    pub fn new(config: &'c AlertsConfig) -> Self {
        Scenario {
            config,
            window: RecorderConfig::default(),
            calls: Vec::new(),
        }
    }

    /// The window the rules read (your `[metrics]`: `MetricsConfig::into_recorder_config`).
    pub fn window(mut self, window: RecorderConfig) -> Self {
        self.window = window;
        self
    }

    /// Calls of `operation` (a metric base such as `dspex_bridge_call_method` or
    /// `dspex_tools_execute`: the calls are recorded as the catalog records them, into
    /// `<operation>_duration`, `<operation>_count` and, for failures, `<operation>_errors`)
    /// with `labels`, one every `every_ms` milliseconds over `during`, each taking
    /// `duration_ms`.
    pub fn calls(
        self,
        operation: &str,
        labels: &[(&str, &str)],
        during: Range<u64>,
        every_ms: u64,
        duration_ms: f64,
    ) -> Self {
        self.failing_calls(operation, labels, during, every_ms, duration_ms, 0)
    }

    /// As [`Scenario::calls`], one in `fail_one_in` of them failing (1: all; 0: none).
    pub fn failing_calls(
        mut self,
        operation: &str,
        labels: &[(&str, &str)],
        during: Range<u64>,
        every_ms: u64,
        duration_ms: f64,
        fail_one_in: u64,
    ) -> Self {
        self.calls.push(Calls {
            operation: operation.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            during,
            every_ms: every_ms.max(1),
            duration_ms,
            fail_one_in,
        });
        self
    }

    /// Runs the scenario for `until_ms`: the calls in time order, the rules evaluated every
    /// `evaluation_interval_ms` from the first interval on. The notifications, in order.
    /// Fails, naming the key, on a configuration that does not build.
    pub fn run(&self, until_ms: u64) -> Result<Vec<Step>, ConfigError> {
        let (mut engine, _) = self.config.build()?;
        let clock = ManualClock::new(0);
        let window = WindowedRecorder::with_clock(self.window.clone(), Arc::new(clock.clone()))
            .map_err(|e| {
                let dspex_telemetry_metrics::WindowConfigError::Invalid { key, reason } = e;
                ConfigError {
                    key: format!("metrics.{key}"),
                    reason,
                }
            })?;
        // Each run's next call (its time and its index in the run), taken in time order.
        let mut next: Vec<Option<(u64, u64)>> = self
            .calls
            .iter()
            .map(|c| (c.during.start < c.during.end).then_some((c.during.start, 0)))
            .collect();
        let mut take_until = |limit: u64| -> Option<(u64, usize, u64)> {
            let (run, (at, n)) = next
                .iter()
                .enumerate()
                .filter_map(|(run, call)| call.map(|call| (run, call)))
                .min_by_key(|(run, (at, _))| (*at, *run))?;
            if at > limit {
                return None;
            }
            let c = &self.calls[run];
            next[run] = at
                .checked_add(c.every_ms)
                .filter(|t| *t < c.during.end)
                .map(|t| (t, n + 1));
            Some((at, run, n))
        };
        let every = self.config.evaluation_interval().as_millis().max(1) as u64;
        let mut steps = Vec::new();
        let mut evaluate_at = every;
        while evaluate_at <= until_ms {
            while let Some((at, run, n)) = take_until(evaluate_at) {
                clock.set_ms(at);
                let c = &self.calls[run];
                let failed = c.fail_one_in > 0 && n % c.fail_one_in == 0;
                record(&window, c, failed);
            }
            clock.set_ms(evaluate_at);
            for n in engine.evaluate(&window, START_UNIX_MS.saturating_add(evaluate_at)) {
                steps.push(self.step(evaluate_at, &n));
            }
            let Some(later) = evaluate_at.checked_add(every) else {
                break;
            };
            evaluate_at = later;
        }
        Ok(steps)
    }

    fn step(&self, at_ms: u64, n: &Notification) -> Step {
        let mut payloads = BTreeMap::new();
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for handler in &self.config.alert_handlers {
            let (kind, payload) = match handler {
                HandlerConfig::Log { level } => {
                    let level = match n.transition {
                        Transition::Resolved => "info".to_owned(),
                        Transition::Fired => format!("{level:?}").to_lowercase(),
                    };
                    (
                        "log",
                        serde_json::json!({ "level": level, "message": n.alert.message }),
                    )
                }
                HandlerConfig::Webhook { .. } => (
                    "webhook",
                    serde_json::to_value(n).unwrap_or(serde_json::Value::Null),
                ),
                HandlerConfig::Alertmanager { .. } => ("alertmanager", alertmanager_payload(n)),
            };
            let count = seen.entry(kind).or_default();
            *count += 1;
            let name = match *count {
                1 => kind.to_owned(),
                k => format!("{kind}#{k}"),
            };
            payloads.insert(name, payload);
        }
        Step {
            at_ms,
            transition: n.transition,
            alert: n.alert.id.clone(),
            severity: n.alert.severity,
            message: n.alert.message.clone(),
            payloads,
        }
    }
}

/// One call, recorded as the catalog records it.
fn record(window: &WindowedRecorder, c: &Calls, failed: bool) {
    let labels: Vec<metrics::Label> = c
        .labels
        .iter()
        .map(|(k, v)| metrics::Label::new(k.clone(), v.clone()))
        .collect();
    metrics::with_local_recorder(window, || {
        let name = |suffix: &str| format!("{}_{suffix}", c.operation);
        metrics::histogram!(name("duration"), labels.clone()).record(c.duration_ms);
        metrics::counter!(name("count"), labels.clone()).increment(1);
        if failed {
            metrics::counter!(name("errors"), labels.clone()).increment(1);
        }
    });
}
