//! Starting and stopping the stack a [`Config`] describes.

use std::net::SocketAddr;
use std::sync::Arc;

use dspex_telemetry_alerts::{Alert, AlertService};
use dspex_telemetry_core::{Dispatcher, EventName, attach_debug_handler};
use dspex_telemetry_exporters::reporter::Reporter;
use dspex_telemetry_metrics::{
    CardinalityStatsHandle, MetricsHandler, WindowConfigError, WindowedRecorder, catalog,
};
use metrics_util::layers::Layer as _;

use crate::config::{Config, Handler};

/// Why the stack did not start; each names the configuration key at fault where there is one.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `[metrics]` holds a value out of range.
    #[error("invalid `metrics.{key}`: {reason}")]
    Metrics {
        /// The key under `[metrics]`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// `[alerts]` holds a value out of range, or a handler cannot be built.
    #[error("invalid `alerts.{key}`: {reason}")]
    Alerts {
        /// The key under `[alerts]`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A `[reporter]` backend could not start.
    #[error("invalid `reporter.{key}`: {reason}")]
    Reporter {
        /// The key under `[reporter]`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The process has a global `metrics` recorder already (one per process).
    #[error(
        "a global metrics recorder is installed already: start the stack once per process, or \
         compose it with yours (Telemetry::start_composed)"
    )]
    RecorderInstalled,
    /// A handler with the stack's id is attached to the dispatcher already.
    #[error("cannot attach to the dispatcher: {0}")]
    Attach(String),
}

/// The running stack. Keep it for the life of the service and call
/// [`Telemetry::shutdown`] before exit, so every backend is flushed once.
#[derive(Debug)]
pub struct Telemetry {
    window: WindowedRecorder,
    cardinality: CardinalityStatsHandle,
    metrics: Option<Arc<MetricsHandler>>,
    /// Lets go of idle label sets and series every quarter of `idle_timeout_ms`.
    sweeper: Sweeper,
    reporter: Option<Reporter>,
    alerts: Option<AlertService>,
    dispatcher: Dispatcher,
    debug: bool,
}

/// The id the stack's handlers attach under.
const ID: &str = "dspex-telemetry";

impl Telemetry {
    /// Starts what `config` describes for the events of `dispatcher`, on the current tokio
    /// runtime: installs the process's global `metrics` recorder (the sliding window, plus the
    /// reporter's backends), attaches the DSPex metric catalog, starts the alert service.
    ///
    /// A service that installs its own global recorder uses [`Telemetry::start_composed`].
    pub async fn start(config: &Config, dispatcher: &Dispatcher) -> Result<Telemetry, StartError> {
        let (telemetry, recorder) = Self::start_inner(config, dispatcher).await?;
        if metrics::set_global_recorder(recorder).is_err() {
            telemetry.shutdown().await;
            return Err(StartError::RecorderInstalled);
        }
        Ok(telemetry)
    }

    /// As [`Telemetry::start`], but the stack's recorder (the window, the reporter's
    /// backends, behind the cardinality cap) is handed back instead of installed: add it to
    /// your own fanout (`metrics_util::layers::FanoutBuilder`) beside your recorders, and
    /// install that. The catalog records through the `metrics` facade, so until the fanout is
    /// the global recorder the stack sees no metrics; everything the facade records then
    /// reaches both your recorders and the stack's.
    ///
    /// ```no_run
    /// # async fn run(config: &dspex_telemetry::Config) -> Result<(), Box<dyn std::error::Error>> {
    /// use dspex_telemetry::Telemetry;
    /// use dspex_telemetry::core::Dispatcher;
    /// use metrics_util::layers::FanoutBuilder;
    ///
    /// let mine = metrics::NoopRecorder; // your own: metrics-exporter-prometheus's, say
    /// let (telemetry, ours) = Telemetry::start_composed(config, Dispatcher::global()).await?;
    /// let fanout = FanoutBuilder::default().add_recorder(mine).add_recorder(ours).build();
    /// metrics::set_global_recorder(fanout)?;
    /// # Ok(()) }
    /// ```
    pub async fn start_composed(
        config: &Config,
        dispatcher: &Dispatcher,
    ) -> Result<(Telemetry, StackRecorder), StartError> {
        let (telemetry, recorder) = Self::start_inner(config, dispatcher).await?;
        Ok((telemetry, recorder))
    }

    async fn start_inner(
        config: &Config,
        dispatcher: &Dispatcher,
    ) -> Result<(Telemetry, StackRecorder), StartError> {
        let definitions = catalog::dspex_metrics();
        // The catalog's histograms get windows over their own ranges (around their buckets),
        // unless `[metrics.ranges]` sets one.
        let recorder_config = config
            .metrics
            .clone()
            .into_recorder_config()?
            .with_definitions(&definitions);
        let window = WindowedRecorder::new(recorder_config)?;
        // One cap on label sets and label values for every recorder behind the facade.
        let cap = config.metrics.cardinality_layer();
        let cardinality;
        let recorder: StackRecorder;
        let alerts_parts = if config.runs(Handler::Alerts) {
            Some(config.alerts.build().map_err(|e| StartError::Alerts {
                key: e.key.clone(),
                reason: e.reason.clone(),
            })?)
        } else {
            None
        };
        let reporter = if config.runs(Handler::Reporter) {
            let (reporter, fanout) = Reporter::start(
                &config.reporter,
                &definitions,
                Some(window.clone()),
                dispatcher,
            )
            .await
            .map_err(|e| StartError::Reporter {
                key: e.key.clone(),
                reason: e.reason.clone(),
            })?;
            let capped = cap.layer(fanout);
            cardinality = capped.stats_handle();
            recorder = Box::new(capped);
            Some(reporter)
        } else {
            let capped = cap.layer(window.clone());
            cardinality = capped.stats_handle();
            recorder = Box::new(capped);
            None
        };
        let metrics = if config.runs(Handler::Metrics) {
            let attached = MetricsHandler::attach(
                dispatcher,
                ID,
                definitions,
                config.metrics.max_series_per_metric,
            );
            match attached {
                Ok(handler) => Some(Arc::new(handler)),
                Err(e) => {
                    if let Some(reporter) = reporter {
                        reporter.shutdown().await;
                    }
                    return Err(StartError::Attach(e.to_string()));
                }
            }
        } else {
            None
        };
        // With a reporter, its exporters keep every series they were given: the cap then
        // keeps their slots too, so that what they hold stays within it.
        let keeps_series = reporter.as_ref().is_some_and(Reporter::keeps_series);
        let forget = (!keeps_series).then(|| cardinality.clone());
        let sweeper = Sweeper(tokio::spawn(sweep_idle(
            window.clone(),
            metrics.clone(),
            forget,
        )));
        let alerts = alerts_parts.map(|(engine, handlers)| {
            AlertService::start(
                engine,
                window.clone(),
                handlers,
                dispatcher.clone(),
                config.alerts.evaluation_interval(),
            )
        });
        let debug_attached = match config.telemetry.debug {
            true => attach_debug_handler(dispatcher, EventName::from_static(&["dspex"]))
                .map_err(|e| StartError::Attach(e.to_string())),
            false => Ok(()),
        };
        let telemetry = Telemetry {
            window,
            cardinality,
            metrics,
            sweeper,
            reporter,
            alerts,
            dispatcher: dispatcher.clone(),
            debug: false,
        };
        if let Err(e) = debug_attached {
            // Nothing started is left running: the reporter's ports, the alert service.
            telemetry.shutdown().await;
            return Err(e);
        }
        let telemetry = Telemetry {
            debug: config.telemetry.debug,
            ..telemetry
        };
        Ok((telemetry, recorder))
    }

    /// The sliding window: p50/p95/p99, error rates and rates of every series now.
    pub fn window(&self) -> &WindowedRecorder {
        &self.window
    }

    /// What the cap on label sets and label values did to every metric through the stack
    /// (`[metrics] max_series_per_metric`, `max_label_value_bytes`).
    pub fn cardinality(&self) -> dspex_telemetry_metrics::CardinalityStats {
        self.cardinality.stats()
    }

    /// Where the Prometheus `/metrics` endpoint listens, if a backend serves one.
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.reporter.as_ref().and_then(Reporter::prometheus_addr)
    }

    /// The alerts firing at the last evaluation (none without the alerts handler).
    pub fn active_alerts(&self) -> Vec<Alert> {
        self.alerts
            .as_ref()
            .map(AlertService::active)
            .unwrap_or_default()
    }

    /// Sends the spans queued for OpenTelemetry now and waits until they have been sent (or
    /// have failed): before a checkpoint, or a test reading the collector. Returns at once
    /// without the OpenTelemetry backend.
    pub async fn flush_spans(&self) {
        if let Some(reporter) = &self.reporter {
            reporter.flush_spans().await;
        }
    }

    #[cfg(any(feature = "otlp-http", feature = "otlp-grpc"))]
    /// The OpenTelemetry backend as a span processor for the service's own
    /// `SdkTracerProvider`: the service's OpenTelemetry spans leave on the same queue and
    /// connection as ours, under the same bounds and counters. `None` without that backend.
    pub fn span_processor(&self) -> Option<dspex_telemetry_exporters::otlp::OtlpSpanProcessor> {
        self.reporter.as_ref().and_then(Reporter::span_processor)
    }

    #[cfg(any(feature = "otlp-http", feature = "otlp-grpc"))]
    /// Spans sent, dropped and failed by the OpenTelemetry backend, if it runs.
    pub fn span_stats(&self) -> Option<dspex_telemetry_exporters::otlp::OtlpStats> {
        self.reporter.as_ref().and_then(Reporter::otlp_stats)
    }

    /// Detaches the handlers, stops the alert service, flushes and stops every backend.
    pub async fn shutdown(self) {
        drop(self.sweeper);
        if let Some(handler) = self.metrics {
            handler.pause();
        }
        if self.debug {
            let _ = self
                .dispatcher
                .detach(dspex_telemetry_core::DEBUG_HANDLER_ID);
        }
        if let Some(alerts) = self.alerts {
            alerts.shutdown().await;
        }
        if let Some(reporter) = self.reporter {
            reporter.shutdown().await;
        }
    }
}

/// The stack's `metrics` recorder, handed back by [`Telemetry::start_composed`] for your own
/// fanout (a boxed recorder is a `metrics::Recorder`).
pub type StackRecorder = Box<dyn metrics::Recorder + Sync>;

/// The sweeping task, stopped when the stack is shut down or dropped.
#[derive(Debug)]
struct Sweeper(tokio::task::JoinHandle<()>);

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every quarter of `idle_timeout_ms` (50 ms to a minute): the metrics handler lets go of the
/// label sets no event used for `idle_timeout_ms`, then the window drops the series idle that
/// long that nobody holds, and the cardinality cap forgets them (`forget`: when no exporter
/// keeps series of its own).
async fn sweep_idle(
    window: WindowedRecorder,
    metrics: Option<Arc<MetricsHandler>>,
    forget: Option<CardinalityStatsHandle>,
) {
    let idle_ms = window.idle_timeout_ms().max(1);
    let tick_ms = (idle_ms / 4).clamp(50, 60_000);
    let idle_sweeps = u32::try_from(idle_ms.div_ceil(tick_ms)).unwrap_or(u32::MAX);
    let mut interval = tokio::time::interval(std::time::Duration::from_millis(tick_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        if let Some(handler) = &metrics {
            handler.sweep(idle_sweeps);
        }
        let mut dropped = Vec::new();
        window.sweep_with(|key| dropped.push(key.clone()));
        if let Some(cardinality) = &forget {
            cardinality.forget(&dropped);
        }
    }
}

impl From<WindowConfigError> for StartError {
    fn from(e: WindowConfigError) -> Self {
        let WindowConfigError::Invalid { key, reason } = e;
        StartError::Metrics { key, reason }
    }
}
