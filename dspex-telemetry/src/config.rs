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
    /// A string names an environment variable (`${VAR}`) that is not set, or not valid
    /// UTF-8.
    #[error("invalid `{key}`: the environment variable {variable} is not set")]
    Env {
        /// The key whose value names it (`reporter.backends[0].headers.x-api-key`, say).
        key: String,
        /// The variable.
        variable: String,
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

/// Replaces `${VAR}` in every string under `value` (at `key`) with `env(VAR)`.
fn expand(
    key: &str,
    value: &mut toml::Value,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(text) if text.contains("${") => {
            *text = expand_text(text, |name| {
                env(name).ok_or_else(|| ConfigError::Env {
                    key: key.to_owned(),
                    variable: dspex_telemetry_http::log_safe(name, 100),
                })
            })?;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand(&format!("{key}[{i}]"), item, env)?;
            }
        }
        toml::Value::Table(table) => {
            for (k, item) in table.iter_mut() {
                expand(&format!("{key}.{k}"), item, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// `message` with what it quotes (`"…"`) left out: the value at fault, which may be a secret.
fn unquoted(message: &str) -> String {
    let mut parts = message.split('"');
    let mut out = parts.next().unwrap_or_default().to_owned();
    // Odd parts are inside quotes; a quote left open keeps its text out too.
    for (i, part) in parts.enumerate() {
        match i % 2 {
            0 => out.push_str("\"…\""),
            _ => out.push_str(part),
        }
    }
    out
}

/// `text` with each `${NAME}` replaced by `lookup(NAME)`, and `$${` by `${`. A `${` without
/// its `}` stays as it is.
fn expand_text(
    text: &str,
    lookup: impl Fn(&str) -> Result<String, ConfigError>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        if rest[..at].ends_with('$') {
            // `$${`: a literal `${`.
            out.push_str(&rest[..at - 1]);
            out.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        match after.find('}') {
            Some(end) => {
                out.push_str(&lookup(&after[..end])?);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[at..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    Ok(out)
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
    /// Reads a configuration from TOML text. In any string value, `${VAR}` is replaced by the
    /// environment variable `VAR` (a token or password kept out of the file, say), and `$${`
    /// stands for a literal `${`; a variable that is not set is an error naming the key and
    /// the variable, never its value.
    ///
    /// ```
    /// use dspex_telemetry::Config;
    /// // SAFETY: the doctest is single-threaded.
    /// unsafe { std::env::set_var("DSPEX_DOC_TOKEN", "s3cret") };
    /// let config = Config::from_toml(r#"
    ///     [[alerts.alert_handlers]]
    ///     type = "webhook"
    ///     url = "https://hooks.example.com/alerts"
    ///     headers = { authorization = "Bearer ${DSPEX_DOC_TOKEN}" }
    /// "#).unwrap();
    /// assert!(!format!("{config:?}").contains("s3cret"), "secrets stay out of Debug");
    /// let missing = Config::from_toml("[reporter]\nbackends = [{ type = \"statsd\", host = \"${DSPEX_DOC_NOT_SET}\" }]");
    /// assert_eq!(
    ///     missing.unwrap_err().to_string(),
    ///     "invalid `reporter.backends[0].host`: the environment variable DSPEX_DOC_NOT_SET is not set"
    /// );
    /// ```
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_toml_with_env(text, |name| std::env::var(name).ok())
    }

    /// As [`Config::from_toml`], with `${VAR}` looked up by `env` instead of in the process's
    /// environment.
    pub fn from_toml_with_env(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let toml_error = |e: toml::de::Error| {
            let (line, message) = toml_error(text, &e);
            ConfigError::Toml { line, message }
        };
        if !text.contains("${") {
            return toml::from_str(text).map_err(toml_error);
        }
        let mut table: toml::Table = toml::from_str(text).map_err(toml_error)?;
        for (key, value) in table.iter_mut() {
            expand(key, value, &env)?;
        }
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Toml {
                line: None,
                // A value may now come from the environment (a secret): never quoted.
                message: dspex_telemetry_http::log_safe(&unquoted(e.message().trim()), 300),
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
