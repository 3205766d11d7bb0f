//! Pushing to a Prometheus push gateway: the spec's `{:prometheus, push_gateway: …}` backend.

use std::fmt;
use std::time::Duration;

use http::{Method, Request, StatusCode, header};
use http_body_util::Full;
use hyper::body::Bytes;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::Secret;
use crate::http_client::{self, Endpoint};
use crate::prometheus::{CONTENT_TYPE, PrometheusError};

/// Where and as whom to push.
#[derive(Clone, PartialEq)]
pub struct PushGatewayConfig {
    /// The gateway's base URL, `http://host:port` (the spec's `push_gateway`). Credentials go
    /// in `basic_auth` or `bearer_token`, not in the URL.
    pub endpoint: String,
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
            .finish()
    }
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The gateway could not be reached, or the connection broke.
    #[error("push gateway {endpoint}: {reason}")]
    Unreachable {
        /// The gateway.
        endpoint: String,
        /// What happened.
        reason: String,
    },
    /// The gateway answered with an error status.
    #[error("push gateway {endpoint} answered {status}: {body}")]
    Refused {
        /// The gateway.
        endpoint: String,
        /// Its status.
        status: StatusCode,
        /// The start of its answer.
        body: String,
    },
    /// The push took longer than `timeout`.
    #[error("push gateway {endpoint}: no answer within {timeout:?}")]
    TimedOut {
        /// The gateway.
        endpoint: String,
        /// The limit.
        timeout: Duration,
    },
}

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
    authority: String,
    path: String,
    authorization: Option<String>,
}

impl fmt::Debug for PushGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The Authorization header value is left out: it holds the credentials.
        f.debug_struct("PushGateway")
            .field("config", &self.config)
            .field("path", &self.path)
            .finish()
    }
}

impl PushGateway {
    /// Checks the configuration; errors name the key at fault.
    pub fn new(config: PushGatewayConfig) -> Result<Self, PrometheusError> {
        let invalid = |key: &'static str, reason: String| PrometheusError::Invalid { key, reason };
        let endpoint =
            Endpoint::parse(&config.endpoint, 80).map_err(|e| invalid("push_gateway", e))?;
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
        let mut path = format!(
            "{}/metrics/job/{}",
            endpoint.base_path,
            segment(&config.job)
        );
        if let Some(instance) = &config.instance {
            path.push_str(&format!("/instance/{}", segment(instance)));
        }
        let authorization = match (&config.basic_auth, &config.bearer_token) {
            (Some((user, password)), _) => Some(format!(
                "Basic {}",
                base64(format!("{user}:{}", password.expose()).as_bytes())
            )),
            (None, Some(token)) => Some(format!("Bearer {}", token.expose())),
            (None, None) => None,
        };
        Ok(PushGateway {
            config,
            authority: endpoint.authority,
            path,
            authorization,
        })
    }

    /// The path of this group on the gateway.
    pub fn group_path(&self) -> &str {
        &self.path
    }

    /// Renders `handle` and pushes it, replacing the group's metrics.
    pub async fn push(&self, handle: &PrometheusHandle) -> Result<(), PushError> {
        let mut body = handle.render();
        // The gateway refuses a body that does not end with a newline.
        if !body.ends_with('\n') {
            body.push('\n');
        }
        let endpoint = &self.config.endpoint;
        let mut request = Request::builder()
            .method(Method::PUT)
            .uri(&self.path)
            .header(header::HOST, &self.authority)
            .header(header::CONTENT_TYPE, CONTENT_TYPE);
        if let Some(authorization) = &self.authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let request =
            request
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| PushError::Unreachable {
                    endpoint: endpoint.clone(),
                    reason: e.to_string(),
                })?;
        match http_client::send(&self.authority, request, self.config.timeout).await {
            Ok((status, _)) if status.is_success() => Ok(()),
            Ok((status, body)) => Err(PushError::Refused {
                endpoint: endpoint.clone(),
                status,
                body: String::from_utf8_lossy(&body).chars().take(200).collect(),
            }),
            Err(reason) if reason.starts_with("no answer within") => Err(PushError::TimedOut {
                endpoint: endpoint.clone(),
                timeout: self.config.timeout,
            }),
            Err(reason) => Err(PushError::Unreachable {
                endpoint: endpoint.clone(),
                reason,
            }),
        }
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

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let config = PushGatewayConfig {
            basic_auth: Some(("ops".into(), Secret::new("hunter2"))),
            ..PushGatewayConfig::default()
        };
        let shown = format!("{:?}", PushGateway::new(config).unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains(&base64(b"ops:hunter2")), "{shown}");
    }
}
