//! The running alert service: evaluates on an interval, emits alert events, and hands each
//! notification to every handler's own queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dspex_telemetry_core::{Dispatcher, Measurements, Metadata, catalog};
use dspex_telemetry_metrics::WindowedRecorder;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::alert::{Alert, Notification, Transition};
use crate::engine::AlertEngine;
use crate::handler::AlertHandler;

/// Notifications waiting for one handler, at most; more are dropped and counted.
const HANDLER_QUEUE: usize = 64;

/// Evaluates an [`AlertEngine`] every `interval` on the current tokio runtime. Each
/// notification becomes a `[:dspex, :alerts, :fired | :resolved]` event (which the metric
/// catalog counts, with the active count as a gauge) and goes to every handler through its own
/// bounded queue: a slow or failing handler delays neither evaluation nor the others.
#[derive(Debug)]
pub struct AlertService {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    dropped: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    active: Arc<std::sync::Mutex<Vec<Alert>>>,
}

impl AlertService {
    /// Starts evaluating `engine` against `recorder`.
    pub fn start(
        mut engine: AlertEngine,
        recorder: WindowedRecorder,
        handlers: Vec<Arc<dyn AlertHandler>>,
        dispatcher: Dispatcher,
        interval: Duration,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let dropped = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let active = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        let mut queues = Vec::new();
        for handler in handlers {
            let (tx, mut rx) = mpsc::channel::<Arc<Notification>>(HANDLER_QUEUE);
            queues.push((handler.name().to_owned(), tx));
            let failed = failed.clone();
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let notification = tokio::select! {
                        n = rx.recv() => match n { Some(n) => n, None => return },
                        _ = stopped.changed() => return,
                    };
                    let outcome = tokio::select! {
                        outcome = handler.handle_alert(&notification) => outcome,
                        _ = stopped.changed() => return,
                    };
                    if let Err(e) = outcome {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            target: "dspex_telemetry::alerts",
                            handler = handler.name(),
                            alert = %notification.alert.id,
                            error = %dspex_telemetry_http::log_safe(&e.to_string(), 500),
                            "an alert handler failed"
                        );
                    }
                }
            }));
        }
        let (evaluation_dropped, evaluation_active) = (dropped.clone(), active.clone());
        let mut stopped_evaluation = stopped;
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stopped_evaluation.changed() => return,
                }
                let now_ms = dspex_telemetry_core::system_time_ns().max(0) as u64 / 1_000_000;
                let notifications = engine.evaluate(&recorder, now_ms);
                let active_now: Vec<Alert> = engine.active().into_iter().cloned().collect();
                let active_count = active_now.len();
                *evaluation_active.lock().unwrap_or_else(|e| e.into_inner()) = active_now;
                for n in notifications {
                    emit(&dispatcher, &n, active_count);
                    let n = Arc::new(n);
                    for (name, queue) in &queues {
                        if queue.try_send(n.clone()).is_err() {
                            evaluation_dropped.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                target: "dspex_telemetry::alerts",
                                handler = %name,
                                alert = %n.alert.id,
                                "an alert handler's queue is full; the notification is dropped"
                            );
                        }
                    }
                }
            }
        }));
        AlertService {
            stop,
            tasks,
            dropped,
            failed,
            active,
        }
    }

    /// The alerts firing at the last evaluation.
    pub fn active(&self) -> Vec<Alert> {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Notifications dropped because a handler's queue was full, and handler calls that failed.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.dropped.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Stops evaluating and the handlers (a notification being handled is abandoned).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for AlertService {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn emit(dispatcher: &Dispatcher, n: &Notification, active: usize) {
    let a = &n.alert;
    let mut measurements = Measurements::new()
        .with("value", a.value)
        .with("threshold", a.threshold)
        .with("active", active as i64);
    let event = match n.transition {
        Transition::Fired => &catalog::ALERT_FIRED,
        Transition::Resolved => {
            let firing_ms = a
                .resolved_at_ms
                .unwrap_or(a.started_at_ms)
                .saturating_sub(a.started_at_ms);
            measurements.insert(
                "firing_duration",
                (firing_ms.saturating_mul(1_000_000)) as i64,
            );
            &catalog::ALERT_RESOLVED
        }
    };
    let metadata = Metadata::new()
        .with("alert_type", a.alert_type.as_str())
        .with("severity", a.severity.as_str())
        .with("metric", a.metric.as_str())
        .with("rule", a.rule.as_str());
    dispatcher.execute(event, &measurements, &metadata);
}
