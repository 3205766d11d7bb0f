//! Metrics for dspex-telemetry: events into the `metrics` facade, and a recorder that keeps
//! every series in a sliding window with p50/p95/p99 within 1 %, error rates and rates, in
//! fixed memory.
//!
//! - [`MetricDefinition`]: counter, sum, last value, summary, distribution, each fed by events,
//!   with unit conversion (ns → ms), allow-listed labels and keep/drop predicates.
//! - [`MetricsHandler`]: attaches definitions to a dispatcher and records through the `metrics`
//!   facade, so every installed recorder (the window, Prometheus, StatsD) sees DSPex metrics.
//! - [`WindowedRecorder`]: a `metrics::Recorder` keeping each series in a [`SeriesWindow`];
//!   users' own `metrics::histogram!` calls land there too.
//! - [`catalog::dspex_metrics`]: the DSPex metrics, with the spec's names.
//! - [`testing::CapturingRecorder`]: assert on exactly what was emitted.
//!
//! ```
//! use dspex_telemetry_core::{catalog, metadata, Dispatcher};
//! use dspex_telemetry_metrics::{catalog as metric_catalog, MetricsConfig, MetricsHandler, WindowedRecorder};
//!
//! let config: MetricsConfig = toml::from_str("window_size_ms = 60_000").unwrap();
//! let recorder = WindowedRecorder::new(config.into_recorder_config().unwrap()).unwrap();
//! // In a service: metrics::set_global_recorder(recorder.clone()), alone or in a fanout.
//! let dispatcher = Dispatcher::new();
//! metrics::with_local_recorder(&recorder, || {
//!     let _metrics = MetricsHandler::attach(&dispatcher, "dspex-metrics", metric_catalog::dspex_metrics(), 1_000).unwrap();
//!     for _ in 0..3 {
//!         dispatcher.span(&catalog::TOOLS_EXECUTE, metadata! { "tool_name" => "search" }, || ((), metadata! {}));
//!     }
//! });
//! let tools = recorder.operation("dspex_tools_execute", &[("tool_name", "search")]).unwrap();
//! assert_eq!((tools.count, tools.error_count), (3, 0));
//! ```
#![deny(missing_docs)]

mod append_only;
mod cardinality;
pub mod catalog;
mod clock;
mod config;
mod counter;
mod definition;
mod handler;
mod paged;
mod recorder;
mod ring;
mod sketch;
pub mod testing;
mod window;
mod writer;

pub use cardinality::{
    Capped, CardinalityLayer, CardinalityStats, CardinalityStatsHandle,
    DEFAULT_MAX_LABEL_VALUE_BYTES,
};
pub use clock::{Clock, ManualClock, MonotonicClock};
pub use config::{MAX_SERIES_PER_METRIC, MetricsConfig};
pub use counter::CounterSnapshot;
pub use definition::{
    DefinitionError, EventFilter, FORBIDDEN_TAGS, Measurement, MetricDefinition, MetricKind, Tag,
    TagSource, Unit, ValueMap,
};
pub use handler::{MetricsError, MetricsHandler};
pub use recorder::{
    Description, OVERFLOW_LABEL, RecorderConfig, SeriesSnapshot, SeriesValue, WindowedRecorder,
};
pub use window::{
    MAX_SAMPLES, MAX_SUB_WINDOWS, SeriesWindow, ValueRange, WindowConfig, WindowConfigError,
    WindowShape, WindowSnapshot,
};

/// The guide's samples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/metrics.md")]
struct GuideDoctests;
