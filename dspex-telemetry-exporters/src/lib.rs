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
//! - [`otlp`]: every span of the core (and the spans Python workers time) as OTLP spans over
//!   OTLP/HTTP (protobuf) or OTLP/gRPC, batched off the caller's thread, bounded, with a drop
//!   counter.
//!
//!   Metrics too ([`otlp::OtlpMetricsRecorder`]): counters, gauges and explicit-bucket
//!   histograms, cumulative.
//!
//! Each part is a cargo feature, all on by default: `prometheus` (the recorder and
//! `/metrics`), `push-gateway`, `statsd`, `otlp-http` and `otlp-grpc`. A backend whose feature
//! is off is refused at start, with an error that names the feature.
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
#[cfg(feature = "_otlp")]
pub mod otlp;
#[cfg(any(feature = "prometheus", feature = "push-gateway"))]
pub mod prometheus;
#[cfg(feature = "push-gateway")]
pub mod push_gateway;
pub mod reporter;
#[cfg(any(feature = "statsd", feature = "_otlp"))]
mod series_map;
#[cfg(feature = "statsd")]
pub mod statsd;

pub use dspex_telemetry_http::{CaCertificates, HttpUrl, Secret};
#[cfg(any(feature = "push-gateway", feature = "otlp-http"))]
pub use dspex_telemetry_http::{HttpClient, HttpError};

/// The guide's samples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/exporters.md")]
struct GuideDoctests;
