//! The alerts configuration, with the spec's keys: `thresholds`, `suppression`,
//! `alert_handlers`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dspex_telemetry_http::UrlText;
#[cfg(feature = "webhook")]
use dspex_telemetry_http::{CaCertificates, ClientOptions, HttpClient};

use dspex_telemetry_core::bounds;

use crate::Secret;
use crate::engine::{AlertEngine, Suppression};
#[cfg(feature = "alertmanager")]
use crate::handler::AlertmanagerHandler;
#[cfg(feature = "webhook")]
use crate::handler::WebhookHandler;
use crate::handler::{AlertHandler, LogHandler, LogLevel};
#[cfg(feature = "webhook")]
use crate::http::HandlerSetupError;
use crate::thresholds::Thresholds;

/// A day in milliseconds: the longest `evaluation_interval_ms`.
const DAY_MS: u64 = 86_400_000;

/// The most `suppression.occurrence_threshold` accepts.
const MAX_OCCURRENCES: u64 = 1_000_000;

/// The most `retries` a webhook accepts.
#[cfg(feature = "webhook")]
pub const MAX_RETRIES: u32 = 10;

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
/// assert_eq!(engine.rules().len(), 7);
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
    /// How often rules are evaluated, in milliseconds (default 10 000; at most a day).
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
        /// Per attempt, in milliseconds (default 5 000; at most 300 000).
        #[serde(default)]
        timeout_ms: Option<u64>,
        /// Attempts after the first (default 3; at most 10).
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
        /// Per attempt, in milliseconds (default 5 000; at most 300 000).
        #[serde(default)]
        timeout_ms: Option<u64>,
        /// A PEM file of CA certificates trusted besides the system's.
        #[serde(default)]
        certificate: Option<PathBuf>,
    },
}

/// The error for a handler whose cargo feature this build left out.
#[cfg(not(all(feature = "webhook", feature = "alertmanager")))]
fn not_built(key: String, feature: &str) -> ConfigError {
    ConfigError {
        key,
        reason: format!(
            "the {feature} handler is not in this build: turn on the `{feature}` feature of \
             dspex-telemetry (or dspex-telemetry-alerts)"
        ),
    }
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
        let range = |key: String, value: u64, min: u64, max: u64| {
            bounds::within(value, min, max).map_err(|e| error(key, e.to_string()))
        };
        if let Some(ms) = self.evaluation_interval_ms {
            range("evaluation_interval_ms".into(), ms, 1, DAY_MS)?;
        }
        range(
            "suppression.min_interval_ms".into(),
            self.suppression.min_interval_ms,
            0,
            bounds::WEEK_MS,
        )?;
        range(
            "suppression.occurrence_threshold".into(),
            self.suppression.occurrence_threshold.into(),
            1,
            MAX_OCCURRENCES,
        )?;
        if let Some(percent) = self.thresholds.error_rate_percent {
            bounds::within(percent, 0.0, 100.0)
                .map_err(|e| error("thresholds.error_rate_percent".into(), e.to_string()))?;
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
            if let Some(v) = value {
                bounds::within(v, 0.0, bounds::WEEK_MS as f64)
                    .map_err(|e| error(key.into(), e.to_string()))?;
            }
        }
        let mut handlers: Vec<Arc<dyn AlertHandler>> = Vec::new();
        // One client (one pool of connections) for the handlers that trust the same CAs.
        #[cfg(feature = "webhook")]
        let mut clients: BTreeMap<Option<PathBuf>, HttpClient> = BTreeMap::new();
        for (i, handler) in self.alert_handlers.iter().enumerate() {
            let key = |k: &str| format!("alert_handlers[{i}].{k}");
            #[cfg(feature = "webhook")]
            let at = |e: HandlerSetupError| error(key(e.key()), e.to_string());
            #[cfg(feature = "webhook")]
            let timeout = |ms: Option<u64>| {
                let ms = ms.unwrap_or(5_000);
                range(key("timeout_ms"), ms, 1, bounds::REQUEST_TIMEOUT_MAX_MS)?;
                Ok::<_, ConfigError>(Duration::from_millis(ms))
            };
            #[cfg(feature = "webhook")]
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
                #[cfg(feature = "webhook")]
                HandlerConfig::Webhook {
                    url,
                    headers,
                    timeout_ms,
                    retries,
                    certificate,
                } => {
                    let timeout = timeout(*timeout_ms)?;
                    if let Some(retries) = retries {
                        range(key("retries"), (*retries).into(), 0, MAX_RETRIES.into())?;
                    }
                    let client = client_for(certificate).map_err(at)?;
                    let mut hook = WebhookHandler::with_client(
                        &client,
                        url.expose(),
                        headers.clone().into_iter().collect(),
                        timeout,
                    )
                    .map_err(at)?;
                    if let Some(retries) = retries {
                        hook.retries = *retries;
                    }
                    Arc::new(hook)
                }
                #[cfg(feature = "alertmanager")]
                HandlerConfig::Alertmanager {
                    url,
                    timeout_ms,
                    certificate,
                } => {
                    let timeout = timeout(*timeout_ms)?;
                    let client = client_for(certificate).map_err(at)?;
                    Arc::new(
                        AlertmanagerHandler::with_client(&client, url.expose(), timeout)
                            .map_err(at)?,
                    )
                }
                #[cfg(not(feature = "webhook"))]
                HandlerConfig::Webhook { .. } => return Err(not_built(key("type"), "webhook")),
                #[cfg(not(feature = "alertmanager"))]
                HandlerConfig::Alertmanager { .. } => {
                    return Err(not_built(key("type"), "alertmanager"));
                }
            });
        }
        Ok((
            AlertEngine::new(self.thresholds.rules(), self.suppression),
            handlers,
        ))
    }
}

/// A build without the HTTP handlers refuses them, naming the key and the feature.
#[cfg(all(test, not(feature = "webhook")))]
mod handlers_left_out {
    use super::*;

    #[test]
    fn a_handler_whose_feature_is_off_is_refused_naming_the_feature() {
        for (handler, feature) in [("webhook", "`webhook`"), ("alertmanager", "`alertmanager`")] {
            let config: AlertsConfig = toml::from_str(&format!(
                "[[alert_handlers]]\ntype = \"log\"\n[[alert_handlers]]\ntype = \"{handler}\"\nurl = \"http://127.0.0.1:9093\""
            ))
            .expect("valid TOML");
            let e = config.build().err().expect("refused");
            assert_eq!(e.key, "alert_handlers[1].type", "{e}");
            assert!(e.reason.contains(feature), "{e}");
        }
    }

    #[test]
    fn the_refusal_reads_as_a_user_sees_it() {
        let config: AlertsConfig = toml::from_str(
            "[[alert_handlers]]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/x\"",
        )
        .expect("valid TOML");
        let e = config.build().err().expect("refused");
        insta::assert_snapshot!(e.to_string(), @"invalid `alert_handlers[0].type`: the webhook handler is not in this build: turn on the `webhook` feature of dspex-telemetry (or dspex-telemetry-alerts)");
    }
}
