//! Alert handlers: one trait; a log handler, a webhook handler and an Alertmanager handler.

use std::future::Future;
use std::pin::Pin;
#[cfg(feature = "webhook")]
use std::time::Duration;

#[cfg(feature = "webhook")]
use dspex_telemetry_http::{HttpClient, HttpError, HttpUrl};

use crate::alert::{Notification, Transition};
#[cfg(feature = "webhook")]
use crate::http::{HandlerSetupError, Target};

/// What a handler's `handle_alert` returns.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

/// Receives notifications. Each handler runs on its own task with its own queue, so a slow or
/// failing one never delays evaluation or the others.
///
/// ```
/// use dspex_telemetry_alerts::{AlertHandler, HandlerError, HandlerFuture, Notification};
///
/// /// Counts notifications (a custom handler; the guide's Slack example is another).
/// struct Counting(std::sync::atomic::AtomicUsize);
///
/// impl AlertHandler for Counting {
///     fn name(&self) -> &str {
///         "counting"
///     }
///     fn handle_alert<'a>(&'a self, _notification: &'a Notification) -> HandlerFuture<'a> {
///         Box::pin(async move {
///             self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///             Ok::<(), HandlerError>(())
///         })
///     }
/// }
/// ```
pub trait AlertHandler: Send + Sync + 'static {
    /// A short name for logs and counters.
    fn name(&self) -> &str;

    /// Handles one notification.
    fn handle_alert<'a>(&'a self, notification: &'a Notification) -> HandlerFuture<'a>;
}

/// Why a handler failed. Every text in it is bounded and escaped; URLs show no path, query
/// or credentials.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The request failed: no answer, a broken connection or an error status (after every
    /// retry).
    #[cfg(feature = "webhook")]
    #[error(transparent)]
    Http(HttpError),
    /// The notification could not be written as JSON.
    #[error("cannot write the payload: {0}")]
    Payload(#[from] serde_json::Error),
    /// Anything else (a custom handler's own failure).
    #[error("{0}")]
    Other(String),
}

#[cfg(feature = "webhook")]
impl From<HttpError> for HandlerError {
    fn from(e: HttpError) -> Self {
        HandlerError::Http(e)
    }
}

/// The level a [`LogHandler`] logs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// `tracing::error!`.
    #[default]
    Error,
    /// `tracing::warn!`.
    Warn,
    /// `tracing::info!`.
    Info,
}

/// Logs every notification through `tracing` (target `dspex_telemetry::alerts`), with the
/// alert's fields; resolutions at `info`.
#[derive(Debug, Clone, Default)]
pub struct LogHandler {
    /// The level fired alerts are logged at.
    pub level: LogLevel,
}

impl AlertHandler for LogHandler {
    fn name(&self) -> &str {
        "log"
    }

    fn handle_alert<'a>(&'a self, n: &'a Notification) -> HandlerFuture<'a> {
        Box::pin(async move {
            let a = &n.alert;
            let level = match n.transition {
                Transition::Resolved => LogLevel::Info,
                Transition::Fired => self.level,
            };
            macro_rules! log {
                ($macro:ident) => {
                    tracing::$macro!(
                        target: "dspex_telemetry::alerts",
                        alert = %a.id,
                        alert_type = %a.alert_type,
                        severity = %a.severity,
                        value = a.value,
                        threshold = a.threshold,
                        "{}",
                        a.message
                    )
                };
            }
            match level {
                LogLevel::Error => log!(error),
                LogLevel::Warn => log!(warn),
                LogLevel::Info => log!(info),
            }
            Ok(())
        })
    }
}

#[cfg(feature = "webhook")]
/// POSTs each notification as JSON (the [`Notification`] serialized) to a URL, with a timeout
/// and retries with doubling backoff on failures and 5xx answers. Header values (tokens) never
/// show in `Debug` or logs.
#[derive(Debug, Clone)]
pub struct WebhookHandler {
    target: Target,
    /// Attempts after the first (default 3).
    pub retries: u32,
    /// The wait before the first retry; doubled each time (default 200 ms).
    pub backoff: Duration,
}

#[cfg(feature = "webhook")]
impl WebhookHandler {
    /// A handler for `url` (`http://` or `https://`, trusting the system's CA certificates),
    /// each attempt limited to `timeout`, sending `headers`; errors name the setting at fault
    /// and never show a secret.
    pub fn new(
        url: &str,
        headers: Vec<(String, crate::Secret)>,
        timeout: Duration,
    ) -> Result<Self, HandlerSetupError> {
        Self::with_client(
            &HttpClient::new(&Default::default())?,
            url,
            headers,
            timeout,
        )
    }

    /// The same through `client` (its CA certificates, its pool of connections).
    pub fn with_client(
        client: &HttpClient,
        url: &str,
        headers: Vec<(String, crate::Secret)>,
        timeout: Duration,
    ) -> Result<Self, HandlerSetupError> {
        Self::to(client, HttpUrl::parse(url)?, &headers, timeout)
    }

    fn to(
        client: &HttpClient,
        url: HttpUrl,
        headers: &[(String, crate::Secret)],
        timeout: Duration,
    ) -> Result<Self, HandlerSetupError> {
        Ok(WebhookHandler {
            target: Target::new(client, url, headers, timeout)?,
            retries: 3,
            backoff: Duration::from_millis(200),
        })
    }

    /// POSTs `body` (JSON) with the handler's retries: what custom handlers built on it send.
    pub async fn post_json(&self, body: Vec<u8>) -> Result<(), HandlerError> {
        self.post_with_retries(body).await
    }

    async fn post_with_retries(&self, body: Vec<u8>) -> Result<(), HandlerError> {
        let mut wait = self.backoff;
        let mut attempt = 0;
        loop {
            let outcome = self.target.post_json(body.clone()).await;
            let retry = match &outcome {
                Ok(()) => return Ok(()),
                Err(e) => e.is_retryable(),
            };
            if !retry || attempt >= self.retries {
                return outcome.map_err(HandlerError::Http);
            }
            attempt += 1;
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
        }
    }
}

#[cfg(feature = "webhook")]
impl AlertHandler for WebhookHandler {
    fn name(&self) -> &str {
        "webhook"
    }

    fn handle_alert<'a>(&'a self, n: &'a Notification) -> HandlerFuture<'a> {
        Box::pin(async move {
            let body = serde_json::to_vec(n)?;
            self.post_with_retries(body).await
        })
    }
}

#[cfg(feature = "alertmanager")]
/// Sends alerts to a Prometheus Alertmanager (`POST /api/v2/alerts`): labels `alertname`
/// (the rule), `severity`, `alert_type`, `metric` and the alert's own labels; annotations
/// `summary` (the message), `value`, `threshold`, `factor`; `startsAt`; a resolved alert with
/// `endsAt`, which ends it there.
#[derive(Debug, Clone)]
pub struct AlertmanagerHandler {
    webhook: WebhookHandler,
}

#[cfg(feature = "alertmanager")]
impl AlertmanagerHandler {
    /// A handler for the Alertmanager at `url` (`http://host:9093`, or `https://`, trusting
    /// the system's CA certificates).
    pub fn new(url: &str, timeout: Duration) -> Result<Self, HandlerSetupError> {
        Self::with_client(&HttpClient::new(&Default::default())?, url, timeout)
    }

    /// The same through `client` (its CA certificates, its pool of connections).
    pub fn with_client(
        client: &HttpClient,
        url: &str,
        timeout: Duration,
    ) -> Result<Self, HandlerSetupError> {
        let api = HttpUrl::parse(url)?.join("api/v2/alerts");
        Ok(AlertmanagerHandler {
            webhook: WebhookHandler::to(client, api, &[], timeout)?,
        })
    }

    /// The JSON body for one notification.
    pub fn payload(n: &Notification) -> serde_json::Value {
        alertmanager_payload(n)
    }
}

#[cfg(feature = "alertmanager")]
impl AlertHandler for AlertmanagerHandler {
    fn name(&self) -> &str {
        "alertmanager"
    }

    fn handle_alert<'a>(&'a self, n: &'a Notification) -> HandlerFuture<'a> {
        Box::pin(async move {
            let body = serde_json::to_vec(&Self::payload(n))?;
            self.webhook.post_with_retries(body).await
        })
    }
}

/// The Alertmanager's JSON body for one notification (what the Alertmanager handler sends).
pub(crate) fn alertmanager_payload(n: &Notification) -> serde_json::Value {
    let a = &n.alert;
    let mut labels = serde_json::Map::new();
    labels.insert("alertname".into(), a.rule.clone().into());
    labels.insert("severity".into(), a.severity.as_str().into());
    labels.insert("alert_type".into(), a.alert_type.as_str().into());
    labels.insert("metric".into(), a.metric.clone().into());
    for (k, v) in &a.labels {
        labels.insert(k.clone(), v.clone().into());
    }
    let mut alert = serde_json::json!({
        "labels": labels,
        "annotations": {
            "summary": a.message,
            "value": a.value.to_string(),
            "threshold": a.threshold.to_string(),
            "factor": format!("{:.2}", a.factor),
        },
        "startsAt": rfc3339(a.started_at_ms),
    });
    if let Some(end) = a.resolved_at_ms {
        alert["endsAt"] = rfc3339(end).into();
    }
    if !a.exemplars.is_empty() {
        let ids: Vec<&str> = a.exemplars.iter().map(|e| e.trace_id.as_str()).collect();
        alert["annotations"]["trace_ids"] = ids.join(",").into();
    }
    serde_json::Value::Array(vec![alert])
}

/// Unix milliseconds as RFC 3339 UTC (`2023-11-14T22:13:20.000Z`).
pub(crate) fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }
}
