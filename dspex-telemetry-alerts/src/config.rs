//! The alerts configuration, with the spec's keys: `thresholds`, `suppression`,
//! `alert_handlers`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dspex_telemetry_http::{CaCertificates, ClientOptions, HttpClient, UrlText};

use crate::Secret;
use crate::engine::{AlertEngine, Suppression};
use crate::handler::{AlertHandler, AlertmanagerHandler, LogHandler, LogLevel, WebhookHandler};
use crate::http::HandlerSetupError;
use crate::thresholds::Thresholds;

/// The spec's alerts configuration, loadable from TOML; unknown keys are refused by name.
///
/// ```
/// use dspex_telemetry_alerts::AlertsConfig;
/// let config: AlertsConfig = toml::from_str(r#"
///     evaluation_interval_ms = 10_000
///
///     [thresholds]
///     bridge_call_p99_ms = 1000
///     tool_execution_p99_ms = 500
///     error_rate_percent = 5
///     queue_time_ms = 5000
///
///     [suppression]
///     min_interval_ms = 300_000
///     occurrence_threshold = 5
///
///     [[alert_handlers]]
///     type = "log"
///     level = "error"
///
///     [[alert_handlers]]
///     type = "webhook"
///     url = "http://127.0.0.1:8080/alerts"
///     headers = { authorization = "Bearer change-me" }
/// "#).unwrap();
/// let (engine, handlers) = config.build().unwrap();
/// assert_eq!(engine.rules().len(), 6);
/// assert_eq!(handlers.len(), 2);
/// let err = toml::from_str::<AlertsConfig>("[suppression]\nmin_interval = 5").unwrap_err();
/// assert!(err.to_string().contains("min_interval"));
/// ```
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// The spec's thresholds (a key left out keeps the spec's value).
    pub thresholds: Thresholds,
    /// Against alert fatigue.
    pub suppression: Suppression,
    /// Where notifications go.
    pub alert_handlers: Vec<HandlerConfig>,
    /// How often rules are evaluated, in milliseconds (default 10 000).
    pub evaluation_interval_ms: Option<u64>,
}

/// One handler, as `type = "log" | "webhook" | "alertmanager"` with its keys.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum HandlerConfig {
    /// Logs through `tracing`.
    Log {
        /// `"error"` (default), `"warn"` or `"info"`.
        #[serde(default)]
        level: LogLevel,
    },
    /// POSTs the notification as JSON.
    Webhook {
        /// The receiver, `https://` or `http://`; shown without its path or query (a
        /// webhook's token) in `Debug`, errors and logs.
        url: UrlText,
        /// Request headers (tokens); never shown in `Debug` or logs.
        #[serde(default)]
        headers: BTreeMap<String, Secret>,
        /// Per attempt, in milliseconds (default 5 000).
        #[serde(default)]
        timeout_ms: Option<u64>,
        /// Attempts after the first (default 3).
        #[serde(default)]
        retries: Option<u32>,
        /// A PEM file of CA certificates trusted besides the system's.
        #[serde(default)]
        certificate: Option<PathBuf>,
    },
    /// Sends to an Alertmanager.
    Alertmanager {
        /// Its base URL (`http://127.0.0.1:9093`, or `https://`).
        url: UrlText,
        /// Per attempt, in milliseconds (default 5 000).
        #[serde(default)]
        timeout_ms: Option<u64>,
        /// A PEM file of CA certificates trusted besides the system's.
        #[serde(default)]
        certificate: Option<PathBuf>,
    },
}

/// Why the configuration was refused; `key` names the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid `{key}`: {reason}")]
pub struct ConfigError {
    /// The configuration key (`alert_handlers[1].url`, say).
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl AlertsConfig {
    /// How often to evaluate.
    pub fn evaluation_interval(&self) -> Duration {
        Duration::from_millis(self.evaluation_interval_ms.unwrap_or(10_000))
    }

    /// The engine and the handlers this configuration describes; errors name the key.
    pub fn build(&self) -> Result<(AlertEngine, Vec<Arc<dyn AlertHandler>>), ConfigError> {
        let error = |key: String, reason: String| ConfigError { key, reason };
        if self.evaluation_interval_ms == Some(0) {
            return Err(error(
                "evaluation_interval_ms".into(),
                "must be above zero".into(),
            ));
        }
        for (key, value) in [
            (
                "thresholds.bridge_call_p99_ms",
                self.thresholds.bridge_call_p99_ms,
            ),
            (
                "thresholds.tool_execution_p99_ms",
                self.thresholds.tool_execution_p99_ms,
            ),
            (
                "thresholds.error_rate_percent",
                self.thresholds.error_rate_percent,
            ),
            ("thresholds.queue_time_ms", self.thresholds.queue_time_ms),
        ] {
            if value.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                return Err(error(key.into(), "must be a number above zero".into()));
            }
        }
        let mut handlers: Vec<Arc<dyn AlertHandler>> = Vec::new();
        // One client (one pool of connections) for the handlers that trust the same CAs.
        let mut clients: BTreeMap<Option<PathBuf>, HttpClient> = BTreeMap::new();
        for (i, handler) in self.alert_handlers.iter().enumerate() {
            let key = |k: &str| format!("alert_handlers[{i}].{k}");
            let at = |e: HandlerSetupError| error(key(e.key()), e.to_string());
            let timeout = |ms: Option<u64>| Duration::from_millis(ms.unwrap_or(5_000));
            let mut client_for = |certificate: &Option<PathBuf>| {
                if let Some(client) = clients.get(certificate) {
                    return Ok(client.clone());
                }
                let ca = match certificate {
                    Some(path) => CaCertificates::from_file(path)?,
                    None => CaCertificates::none(),
                };
                let client = HttpClient::new(&ClientOptions {
                    ca,
                    ..ClientOptions::default()
                })?;
                clients.insert(certificate.clone(), client.clone());
                Ok::<_, HandlerSetupError>(client)
            };
            handlers.push(match handler {
                HandlerConfig::Log { level } => Arc::new(LogHandler { level: *level }),
                HandlerConfig::Webhook {
                    url,
                    headers,
                    timeout_ms,
                    retries,
                    certificate,
                } => {
                    let client = client_for(certificate).map_err(at)?;
                    let mut hook = WebhookHandler::with_client(
                        &client,
                        url.expose(),
                        headers.clone().into_iter().collect(),
                        timeout(*timeout_ms),
                    )
                    .map_err(at)?;
                    if let Some(retries) = retries {
                        hook.retries = *retries;
                    }
                    Arc::new(hook)
                }
                HandlerConfig::Alertmanager {
                    url,
                    timeout_ms,
                    certificate,
                } => {
                    let client = client_for(certificate).map_err(at)?;
                    Arc::new(
                        AlertmanagerHandler::with_client(
                            &client,
                            url.expose(),
                            timeout(*timeout_ms),
                        )
                        .map_err(at)?,
                    )
                }
            });
        }
        Ok((
            AlertEngine::new(self.thresholds.rules(), self.suppression),
            handlers,
        ))
    }
}
