//! Alerts for dspex-telemetry: threshold rules on window snapshots, the spec's alert types
//! (performance degradation, error spike, resource exhaustion) with severities, suppression,
//! the pending → firing → resolved lifecycle, and handlers.
//!
//! - [`Rule`]s read a statistic of a metric in the [`WindowedRecorder`] for every label set;
//!   [`thresholds::Thresholds`] turns the spec's `thresholds` into rules.
//! - [`AlertEngine`] evaluates them at a time you give it and returns [`Notification`]s.
//! - [`AlertService`] evaluates on an interval, emits `[:dspex, :alerts, :fired | :resolved]`
//!   and hands notifications to [`AlertHandler`]s ([`LogHandler`], [`WebhookHandler`],
//!   [`AlertmanagerHandler`], your own), each on its own queue. The webhook and Alertmanager
//!   handlers are the `webhook` and `alertmanager` features (both on by default); without
//!   them the crate needs no HTTP client.
//! - [`AlertsConfig`]: the spec's `thresholds`, `suppression` and `alert_handlers` from TOML.
//!
//! [`WindowedRecorder`]: dspex_telemetry_metrics::WindowedRecorder
#![deny(missing_docs)]

mod alert;
mod config;
mod engine;
mod exemplar;
mod handler;
mod http;
mod prometheus_rules;
mod rule;
pub mod scenario;
mod service;
pub mod thresholds;

pub use alert::{Alert, Notification, Severity, Transition};
pub use config::{AlertsConfig, ConfigError, HandlerConfig};
pub use dspex_telemetry_http::{CaCertificates, Secret};
#[cfg(feature = "webhook")]
pub use dspex_telemetry_http::{HttpClient, HttpError};
pub use engine::{AlertEngine, Suppression};
pub use exemplar::{Exemplar, Exemplars};
#[cfg(feature = "alertmanager")]
pub use handler::AlertmanagerHandler;
#[cfg(feature = "webhook")]
pub use handler::WebhookHandler;
pub use handler::{AlertHandler, HandlerError, HandlerFuture, LogHandler, LogLevel};
pub use http::HandlerSetupError;
pub use prometheus_rules::prometheus_rules;
pub use rule::{AlertType, Comparison, Rule, Source, Statistic, WindowSummary};
pub use service::AlertService;

/// The guide's samples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/alerts.md")]
struct GuideDoctests;
