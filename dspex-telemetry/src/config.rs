//! The TOML configuration, one section per part of the stack.

use std::path::Path;

use dspex_telemetry_alerts::AlertsConfig;
use dspex_telemetry_exporters::reporter::ReporterConfig;
use dspex_telemetry_metrics::MetricsConfig;
use serde::Deserialize;

/// One of the handlers `[telemetry] handlers` lists (the spec's `DSPex.Telemetry.Metrics`,
/// `.Reporter` and `.Alerts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Handler {
    /// The metric catalog attached to the dispatcher, into the window (and the backends).
    Metrics,
    /// The `[reporter]` backends (StatsD, Prometheus, OpenTelemetry).
    Reporter,
    /// The `[alerts]` rules evaluated on the window, and their handlers.
    Alerts,
}

/// `[telemetry]`: what runs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// The handlers to start (default all three).
    pub handlers: Vec<Handler>,
    /// Logs every event at `DEBUG` (target `dspex_telemetry::events`; default false).
    pub debug: bool,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            handlers: vec![Handler::Metrics, Handler::Reporter, Handler::Alerts],
            debug: false,
        }
    }
}

/// The whole configuration. Every section and key may be left out (defaults as the
/// specification's); an unknown key is an error that names it.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[telemetry]`.
    pub telemetry: TelemetrySection,
    /// `[metrics]`: the spec's `window_size_ms`, `max_samples`, and the window's other keys.
    pub metrics: MetricsConfig,
    /// `[alerts]`: `thresholds`, `suppression`, `alert_handlers`, `evaluation_interval_ms`.
    pub alerts: AlertsConfig,
    /// `[reporter]`: `backends`, `reporting_interval`.
    pub reporter: ReporterConfig,
}

/// Why a configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed, or a key is unknown or of the wrong type (the message names it).
    /// The offending line is named by its number, never quoted: it may hold a secret.
    #[error("invalid configuration{}: {message}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Toml {
        /// The line at fault, from 1.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
}

/// `error`'s message and line, without the source text the parser quotes.
pub(crate) fn toml_error(text: &str, error: &toml::de::Error) -> (Option<usize>, String) {
    let line = error
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let message = dspex_telemetry_http::log_safe(error.message().trim(), 300);
    (line, message)
}

impl Config {
    /// Reads a configuration from TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, message) = toml_error(text, &e);
            ConfigError::Toml { line, message }
        })
    }

    /// Reads a configuration file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text)
    }

    /// Whether `[telemetry] handlers` lists `handler`.
    pub fn runs(&self, handler: Handler) -> bool {
        self.telemetry.handlers.contains(&handler)
    }
}
