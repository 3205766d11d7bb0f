//! Pushing to a Prometheus push gateway: the spec's `{:prometheus, push_gateway: …}` backend,
//! over the shared HTTP client (`https://` with the system's roots plus a CA file).
//!
//! metrics-exporter-prometheus can push too (its `push-gateway` feature), but from its own
//! exporter loop and without a CA of one's own, a per-push deadline or the push's outcome; this
//! module pushes the same rendered text through the client the alert handlers use.

use std::fmt;
use std::time::Duration;

use dspex_telemetry_http::http::{HeaderMap, HeaderValue, Method, header};
use dspex_telemetry_http::{
    CaCertificates, ClientOptions, Credentials, HttpClient, HttpError, HttpUrl, UrlText,
};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::Secret;
use crate::prometheus::{CONTENT_TYPE, PrometheusError};

/// Where and as whom to push.
#[derive(Clone, PartialEq)]
pub struct PushGatewayConfig {
    /// The gateway's base URL, `http://host:port` or `https://…` (the spec's `push_gateway`).
    /// Credentials go in `basic_auth` or `bearer_token`, not in the URL.
    pub endpoint: UrlText,
    /// The `job` grouping label (default `dspex`).
    pub job: String,
    /// The `instance` grouping label, if any (the host name, say).
    pub instance: Option<String>,
    /// HTTP basic credentials: user and password.
    pub basic_auth: Option<(String, Secret)>,
    /// A bearer token (instead of basic credentials).
    pub bearer_token: Option<Secret>,
    /// How long one push may take (default 5 s).
    pub timeout: Duration,
    /// CA certificates trusted besides the system's (default none).
    pub ca: CaCertificates,
}

impl Default for PushGatewayConfig {
    fn default() -> Self {
        PushGatewayConfig {
            endpoint: "http://127.0.0.1:9091".into(),
            job: "dspex".into(),
            instance: None,
            basic_auth: None,
            bearer_token: None,
            timeout: Duration::from_secs(5),
            ca: CaCertificates::none(),
        }
    }
}

impl fmt::Debug for PushGatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushGatewayConfig")
            .field("endpoint", &self.endpoint)
            .field("job", &self.job)
            .field("instance", &self.instance)
            .field(
                "basic_auth",
                &self.basic_auth.as_ref().map(|(user, _)| (user, "***")),
            )
            .field("bearer_token", &self.bearer_token)
            .field("timeout", &self.timeout)
            .field("ca", &self.ca)
            .finish()
    }
}

/// Why a push failed: the gateway could not be reached, did not answer in time, or answered
/// with an error status (the URL shown without its path or query).
pub type PushError = HttpError;

/// Pushes rendered metrics to one push gateway group (`job`, `instance`), replacing what the
/// group held (HTTP `PUT`), so a metric that is gone stops being served too.
///
/// ```
/// use dspex_telemetry_exporters::push_gateway::{PushGateway, PushGatewayConfig};
/// let gateway = PushGateway::new(PushGatewayConfig {
///     endpoint: "http://127.0.0.1:9091".into(),
///     instance: Some("worker-1".into()),
///     ..PushGatewayConfig::default()
/// })
/// .unwrap();
/// assert_eq!(gateway.group_path(), "/metrics/job/dspex/instance/worker-1");
/// assert!(PushGateway::new(PushGatewayConfig { endpoint: "http://u:p@host:9091".into(), ..Default::default() }).is_err());
/// ```
#[derive(Clone)]
pub struct PushGateway {
    config: PushGatewayConfig,
    url: HttpUrl,
    headers: HeaderMap,
    client: HttpClient,
}

impl fmt::Debug for PushGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The Authorization header value is left out: it holds the credentials.
        f.debug_struct("PushGateway")
            .field("config", &self.config)
            .field("url", &self.url)
            .finish()
    }
}

impl PushGateway {
    /// Checks the configuration; errors name the key at fault and never show a secret.
    pub fn new(config: PushGatewayConfig) -> Result<Self, PrometheusError> {
        let client = HttpClient::new(&ClientOptions {
            ca: config.ca.clone(),
            ..ClientOptions::default()
        })
        .map_err(|e| PrometheusError::Invalid {
            key: "certificate",
            reason: e.to_string(),
        })?;
        Self::with_client(config, &client)
    }

    /// The same through `client` (its CA certificates and pool; `config.ca` is not read).
    pub fn with_client(
        config: PushGatewayConfig,
        client: &HttpClient,
    ) -> Result<Self, PrometheusError> {
        let invalid = |key: &'static str, reason: String| PrometheusError::Invalid { key, reason };
        let base = config
            .endpoint
            .check()
            .map_err(|e| invalid("push_gateway", e.to_string()))?;
        if config.job.is_empty() {
            return Err(invalid("job", "must not be empty".into()));
        }
        if config.basic_auth.is_some() && config.bearer_token.is_some() {
            return Err(invalid(
                "bearer_token",
                "give `basic_auth` or `bearer_token`, not both".into(),
            ));
        }
        if config.timeout.is_zero() {
            return Err(invalid("timeout", "must be above zero".into()));
        }
        let mut path = format!("metrics/job/{}", segment(&config.job));
        if let Some(instance) = &config.instance {
            path.push_str(&format!("/instance/{}", segment(instance)));
        }
        let url = base.join(&path);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        let credentials = match (&config.basic_auth, &config.bearer_token) {
            (Some((user, password)), _) => Some((
                "basic_auth",
                Credentials::Basic {
                    user: user.clone(),
                    password: password.clone(),
                },
            )),
            (None, Some(token)) => Some(("bearer_token", Credentials::Bearer(token.clone()))),
            (None, None) => None,
        };
        if let Some((key, credentials)) = credentials {
            let value = credentials
                .header_value()
                .map_err(|_| invalid(key, "holds a character a header cannot hold".into()))?;
            headers.insert(header::AUTHORIZATION, value);
        }
        Ok(PushGateway {
            config,
            url,
            headers,
            client: client.clone(),
        })
    }

    /// The path of this group on the gateway.
    pub fn group_path(&self) -> &str {
        self.url.path()
    }

    /// Renders `handle` and pushes it, replacing the group's metrics.
    pub async fn push(&self, handle: &PrometheusHandle) -> Result<(), PushError> {
        let mut body = handle.render();
        // The gateway refuses a body that does not end with a newline.
        if !body.ends_with('\n') {
            body.push('\n');
        }
        self.client
            .send(
                Method::PUT,
                &self.url,
                &self.headers,
                body,
                self.config.timeout,
            )
            .await
            .map(|_| ())
    }
}

/// A grouping label value as a path segment: percent-encoded where needed (the gateway's
/// base64 form is for values with `/`, which this encoding covers too).
fn segment(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let config = PushGatewayConfig {
            basic_auth: Some(("ops".into(), Secret::new("hunter2"))),
            ..PushGatewayConfig::default()
        };
        let shown = format!("{:?}", PushGateway::new(config).unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("b3BzOmh1bnRlcjI="), "{shown}");
    }
}
