//! Exemplars: the trace of example slow or failed requests, so a person can go from an alert
//! to a trace.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use dspex_telemetry_core::{
    AttachError, CorrelationId, Dispatcher, Event, SpanId, TraceId, catalog, context,
};

use crate::rule::AlertType;

/// One example request: its trace, span and correlation ids, duration and outcome.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Exemplar {
    /// The trace id (hex).
    pub trace_id: String,
    /// The request's span id (hex).
    pub span_id: String,
    /// Its correlation id.
    pub correlation_id: String,
    /// How long it took, in milliseconds.
    pub duration_ms: f64,
    /// Whether it failed.
    pub failed: bool,
    /// When it ended (Unix milliseconds).
    pub at_ms: u64,
}

#[derive(Debug, Clone)]
struct Seen {
    trace_id: TraceId,
    span_id: SpanId,
    correlation_id: Option<CorrelationId>,
    duration_ms: f64,
    failed: bool,
    at_ms: u64,
}

impl Seen {
    fn exemplar(&self) -> Exemplar {
        Exemplar {
            trace_id: self.trace_id.to_string(),
            span_id: self.span_id.to_string(),
            correlation_id: self
                .correlation_id
                .as_ref()
                .map_or_else(|| self.trace_id.to_string(), |c| c.as_str().to_owned()),
            duration_ms: self.duration_ms,
            failed: self.failed,
            at_ms: self.at_ms,
        }
    }
}

/// Between the operation and the label in a slot's key (no metric name holds it).
const SEPARATOR: char = '\u{1f}';

thread_local! {
    static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

#[derive(Debug, Default)]
struct Slot {
    slowest: Vec<Seen>,
    failures: Vec<Seen>,
}

/// Keeps, per operation and label value (bridge calls per `method`, tools per `tool_name`),
/// the slowest requests and the latest failures of the last `window_ms`, for the alerts on
/// those operations. Attach it to the dispatcher the operations report to.
#[derive(Debug, Clone)]
pub struct Exemplars {
    /// Keyed by `slot_key(operation, label)`.
    slots: Arc<Mutex<HashMap<String, Slot>>>,
    keep: usize,
    window_ms: u64,
}

impl Exemplars {
    /// Attaches (handler id `handler_id`) to the bridge-call and tool spans of `dispatcher`,
    /// keeping `keep` examples of each kind within `window_ms` (the metrics window's length).
    pub fn attach(
        dispatcher: &Dispatcher,
        handler_id: &str,
        keep: usize,
        window_ms: u64,
    ) -> Result<Self, AttachError> {
        let exemplars = Exemplars {
            slots: Arc::default(),
            keep: keep.max(1),
            window_ms,
        };
        let events = [
            catalog::BRIDGE_CALL.stop().clone(),
            catalog::BRIDGE_CALL.exception().clone(),
            catalog::TOOLS_EXECUTE.stop().clone(),
            catalog::TOOLS_EXECUTE.exception().clone(),
        ];
        let sink = exemplars.clone();
        dispatcher.attach_many(handler_id, events, move |e: &Event<'_>| sink.observe(e))?;
        Ok(exemplars)
    }

    fn observe(&self, event: &Event<'_>) {
        let Some(ctx) = context::current() else {
            return;
        };
        let name = event.name();
        let md = event.metadata();
        // The slot's key is written into a per-thread buffer: no allocation once the slot exists.
        let parts = if name.starts_with(catalog::TOOLS_EXECUTE.prefix()) {
            let Some(tool) = md.get("tool_name") else {
                return;
            };
            ("dspex_tools_execute", tool, None)
        } else {
            let (Some(module), Some(function)) = (md.get("module"), md.get("function")) else {
                return;
            };
            ("dspex_bridge_call_method", module, Some(function))
        };
        let duration_ms = event
            .measurements()
            .get("duration")
            .and_then(|d| d.as_i64())
            .unwrap_or(0) as f64
            / 1e6;
        let at_ms = dspex_telemetry_core::system_time_ns().max(0) as u64 / 1_000_000;
        let seen = Seen {
            trace_id: ctx.trace_id(),
            span_id: ctx.span_id(),
            correlation_id: ctx.explicit_correlation_id().cloned(),
            duration_ms,
            failed: name.segments().last() == Some("exception"),
            at_ms,
        };
        let oldest = at_ms.saturating_sub(self.window_ms);
        // (Not at all on a thread that is exiting, whose buffer is gone.)
        let _ = KEY.try_with(|key| {
            let mut key = key.borrow_mut();
            key.clear();
            key.push_str(parts.0);
            key.push(SEPARATOR);
            let _ = write!(key, "{}", parts.1);
            if let Some(function) = parts.2 {
                let _ = write!(key, ".{function}");
            }
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            if !slots.contains_key(key.as_str()) {
                slots.insert(key.clone(), Slot::default());
            }
            if let Some(slot) = slots.get_mut(key.as_str()) {
                self.keep_in(slot, seen, oldest);
            }
        });
    }

    fn keep_in(&self, slot: &mut Slot, seen: Seen, oldest: u64) {
        slot.slowest.retain(|s| s.at_ms >= oldest);
        slot.failures.retain(|s| s.at_ms >= oldest);
        if seen.failed {
            if slot.failures.len() >= self.keep {
                slot.failures.remove(0);
            }
            slot.failures.push(seen.clone());
        }
        if slot.slowest.len() < self.keep {
            slot.slowest.push(seen);
        } else if let Some((i, fastest)) = slot
            .slowest
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.duration_ms.total_cmp(&b.1.duration_ms))
        {
            if seen.duration_ms > fastest.duration_ms {
                slot.slowest[i] = seen;
            }
        }
    }

    /// The examples for an alert on `metric` with `labels`: the slowest requests (slowest
    /// first) for a performance alert, the latest failures (latest first) for an error spike.
    pub(crate) fn for_alert(
        &self,
        metric: &str,
        labels: &[(String, String)],
        alert_type: AlertType,
        now_ms: u64,
    ) -> Vec<Exemplar> {
        let (operation, key) = match metric {
            "dspex_tools_execute" => ("dspex_tools_execute", "tool_name"),
            "dspex_bridge_call_method" => ("dspex_bridge_call_method", "method"),
            _ => return Vec::new(),
        };
        let Some((_, label)) = labels.iter().find(|(k, _)| k == key) else {
            return Vec::new();
        };
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = slots.get(&format!("{operation}{SEPARATOR}{label}")) else {
            return Vec::new();
        };
        let oldest = now_ms.saturating_sub(self.window_ms);
        let mut chosen: Vec<&Seen> = match alert_type {
            AlertType::ErrorSpike => slot.failures.iter().rev().collect(),
            _ => {
                let mut slowest: Vec<&Seen> = slot.slowest.iter().collect();
                slowest.sort_by(|a, b| b.duration_ms.total_cmp(&a.duration_ms));
                slowest
            }
        };
        chosen.retain(|s| s.at_ms >= oldest);
        chosen.into_iter().map(Seen::exemplar).collect()
    }
}
