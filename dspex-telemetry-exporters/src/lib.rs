//! Exporters for dspex-telemetry.
//!
//! - [`prometheus`]: a Prometheus recorder with the catalog's millisecond buckets and a
//!   `/metrics` endpoint (127.0.0.1 by default, optional bearer token).
//! - [`push_gateway`]: pushes the same text to a Prometheus push gateway group.
//! - [`statsd`]: a recorder that sends counters, gauges and timings to StatsD over UDP on an
//!   interval (plain or DogStatsD tags).
//! - [`reporter`]: the spec's `backends` and `reporting_interval` in one configuration, one
//!   recorder to install, and a shutdown that flushes every backend once.
//! - [`Secret`]: credentials that never show in `Debug` output or logs.
//!
//! - [`otlp`]: every span of the core (and the spans Python workers time) as OTLP spans over
//!   OTLP/HTTP (protobuf) or OTLP/gRPC, batched off the caller's thread, bounded, with a drop
//!   counter.
//!
//!   Metrics too ([`otlp::OtlpMetricsRecorder`]): counters, gauges and explicit-bucket
//!   histograms, cumulative.
//!
//! ```
//! use dspex_telemetry_core::{catalog, metadata, Dispatcher};
//! use dspex_telemetry_exporters::prometheus::prometheus_recorder;
//! use dspex_telemetry_metrics::{catalog as metric_catalog, MetricsHandler};
//!
//! let recorder = prometheus_recorder(&metric_catalog::dspex_metrics()).unwrap();
//! let handle = recorder.handle();
//! let dispatcher = Dispatcher::new();
//! metrics::with_local_recorder(&recorder, || {
//!     let _metrics = MetricsHandler::attach(&dispatcher, "m", metric_catalog::dspex_metrics(), 1_000).unwrap();
//!     dispatcher.span(&catalog::BRIDGE_CALL, metadata! { "module" => "dspy", "function" => "Predict" }, || ((), metadata! {}));
//! });
//! let text = handle.render();
//! assert!(text.contains(r#"dspex_bridge_call_method_count{method="dspy.Predict"} 1"#));
//! assert!(text.contains(r#"dspex_bridge_call_method_duration_bucket{method="dspy.Predict",le="+Inf"} 1"#));
//! ```
#![deny(missing_docs)]

pub mod grafana;
pub mod otlp;
pub mod prometheus;
pub mod push_gateway;
pub mod reporter;
mod series_map;
pub mod statsd;

pub use dspex_telemetry_http::{CaCertificates, HttpClient, HttpError, HttpUrl, Secret};

/// The guide's samples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/exporters.md")]
struct GuideDoctests;
