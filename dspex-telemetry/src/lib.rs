//! The dspex-telemetry stack from one TOML file.
//!
//! [`Config`] has the specification's sections: `[telemetry]` (which handlers run), `[metrics]`
//! (the sliding window), `[alerts]` (thresholds, suppression, alert handlers) and `[reporter]`
//! (backends and reporting interval). [`Telemetry::start`] installs the recorder (the window,
//! plus every backend's), attaches the metric catalog to a dispatcher, and starts the alert
//! service and the backends; [`Telemetry::shutdown`] flushes and stops them.
//!
//! ```
//! use dspex_telemetry::{Config, Handler};
//!
//! let config = Config::from_toml(r#"
//!     [telemetry]
//!     handlers = ["metrics", "reporter", "alerts"]
//!
//!     [metrics]
//!     window_size_ms = 30000
//!
//!     [alerts.thresholds]
//!     bridge_call_p99_ms = 1000
//!
//!     [[alerts.alert_handlers]]
//!     type = "log"
//!     level = "error"
//!
//!     [reporter]
//!     reporting_interval = 30000
//!
//!     [[reporter.backends]]
//!     type = "prometheus"
//!     listen = "127.0.0.1:9568"
//! "#).unwrap();
//! assert!(config.telemetry.handlers.contains(&Handler::Alerts));
//! assert_eq!(config.metrics.window_size_ms, 30_000);
//!
//! let err = Config::from_toml("[metrics]\nwindow_size = 5").unwrap_err();
//! assert!(err.to_string().contains("window_size"), "{err}");
//! ```
//!
//! Crates underneath, re-exported: [`core`] (events, spans, trace context), [`metrics`]
//! (definitions, the window, the catalog), [`alerts`], [`exporters`] and [`bridge`] (the
//! Python worker pool).

pub use dspex_telemetry_alerts as alerts;
pub use dspex_telemetry_bridge as bridge;
pub use dspex_telemetry_core as core;
pub use dspex_telemetry_exporters as exporters;
pub use dspex_telemetry_metrics as metrics;

mod config;
pub mod generate;
pub mod quickstart;
mod stack;

pub use config::{Config, ConfigError, Handler, TelemetrySection};
pub use stack::{StackRecorder, StartError, Telemetry};

/// The README's and the guide's samples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
#[doc = include_str!("../../docs/guide.md")]
struct ReadmeDoctests;
