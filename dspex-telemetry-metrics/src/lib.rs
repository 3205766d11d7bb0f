//! Metrics for dspex-telemetry: sliding-window p50/p95/p99, error rates and rates per series,
//! with a proven accuracy bound and fixed memory per series.
//!
//! **Status.** The sliding window ([`SeriesWindow`], [`WindowConfig`]) is implemented and
//! tested. Metric definitions, the handler that turns events into `metrics` facade calls,
//! the `metrics::Recorder` over the window and the DSPex metric catalog come next; until then
//! this crate exports only the window.
//!
//! ```
//! use std::sync::Arc;
//! use dspex_telemetry_metrics::{MonotonicClock, SeriesWindow, WindowConfig, WindowShape};
//!
//! let shape = Arc::new(WindowShape::new(WindowConfig { window_size_ms: 30_000, ..Default::default() }).unwrap());
//! let window = SeriesWindow::new(shape, Arc::new(MonotonicClock));
//! window.record(12.5);
//! assert_eq!(window.snapshot().count, 1);
//! ```
#![deny(missing_docs)]

pub mod catalog;
mod clock;
mod counter;
mod definition;
mod handler;
mod recorder;
mod ring;
mod sketch;
pub mod testing;
mod window;

pub use clock::{Clock, ManualClock, MonotonicClock};
pub use counter::CounterSnapshot;
pub use definition::{
    DefinitionError, EventFilter, FORBIDDEN_TAGS, Measurement, MetricDefinition, MetricKind, Tag,
    TagSource, Unit,
};
pub use handler::{MetricsError, MetricsHandler};
pub use recorder::{
    Description, OVERFLOW_LABEL, RecorderConfig, SeriesSnapshot, SeriesValue, WindowedRecorder,
};
pub use window::{SeriesWindow, WindowConfig, WindowConfigError, WindowShape, WindowSnapshot};
