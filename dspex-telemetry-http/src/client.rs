//! The HTTP client: reqwest over rustls, one pool of connections per client, a deadline per
//! request, answers read up to a cap, typed errors that never show a URL's secrets.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::HeaderMap;
use http::{Method, StatusCode};

use crate::tls::{CaCertificates, CertificateError, tls_config};
use crate::{HttpUrl, log_safe};

/// How much of an answer is read by default: enough for an error text or a small JSON answer;
/// a larger body is cut there (and its connection closed), whatever it holds.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// How much of an answer's text an error keeps.
const ERROR_BODY_CHARS: usize = 200;

/// How a [`HttpClient`] is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// CA certificates trusted besides the system's (default none).
    pub ca: CaCertificates,
    /// The most of an answer that is read (default [`DEFAULT_MAX_RESPONSE_BYTES`]).
    pub max_response_bytes: usize,
    /// How long connecting (TCP and TLS) may take (default 5 s); each request's own deadline
    /// bounds it too.
    pub connect_timeout: Duration,
    /// How long an unused connection is kept for reuse (default 30 s).
    pub idle_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            ca: CaCertificates::none(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a request failed. Every text in it is bounded and escaped, and the URL is shown as
/// [`HttpUrl`]'s `Display` shows it (no path, query or credentials).
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    /// No answer within the request's deadline.
    #[error("{url}: no answer within {timeout:?}")]
    Timeout {
        /// Where, redacted.
        url: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The connection could not be made (refused, no route, a TLS handshake that failed).
    #[error("{url}: cannot connect: {reason}")]
    Connect {
        /// Where, redacted.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The connection broke, or the request could not be sent.
    #[error("{url}: {reason}")]
    Transport {
        /// Where, redacted.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The peer answered with a status outside 2xx.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// Where, redacted.
        url: String,
        /// Its status.
        status: StatusCode,
        /// The start of its answer, escaped.
        body: String,
    },
}

impl HttpError {
    /// The peer's status, when it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether trying again may help: no answer, a broken connection, 429 or a 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            HttpError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => true,
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Its status (2xx).
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body, up to the client's cap.
    pub body: Bytes,
    /// Whether the body was longer than the cap (and cut there).
    pub truncated: bool,
}

/// The HTTP client of the exporters and alert handlers: https with the system's roots plus a
/// configurable CA, connections reused, `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` honoured,
/// redirects not followed (a webhook's headers stay with its host), a deadline per request,
/// answers read up to a cap. Cloning shares the pool.
///
/// ```no_run
/// use std::time::Duration;
/// use dspex_telemetry_http::{HttpClient, HttpUrl};
/// # async fn send() -> Result<(), Box<dyn std::error::Error>> {
/// let client = HttpClient::new(&Default::default())?;
/// let url = HttpUrl::parse("https://alerts.example.com/hooks/dspex")?;
/// let answer = client
///     .send(http::Method::POST, &url, &http::HeaderMap::new(), br#"{"ok":true}"#.to_vec(), Duration::from_secs(5))
///     .await?;
/// assert!(answer.status.is_success());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    max_response_bytes: usize,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client with `options`; fails only on unusable CA certificates.
    pub fn new(options: &ClientOptions) -> Result<Self, CertificateError> {
        let inner = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(&options.ca)?)
            .connect_timeout(options.connect_timeout)
            .pool_idle_timeout(options.idle_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CertificateError::Invalid(reason_of(e)))?;
        Ok(HttpClient {
            inner,
            max_response_bytes: options.max_response_bytes.max(1),
        })
    }

    /// The reqwest client underneath, for an exporter that speaks through reqwest itself
    /// (OTLP/HTTP).
    pub fn reqwest(&self) -> &reqwest::Client {
        &self.inner
    }

    /// The most of an answer this client reads.
    pub fn max_response_bytes(&self) -> usize {
        self.max_response_bytes
    }

    /// Sends one request and reads the answer; a status outside 2xx is an error.
    pub async fn send(
        &self,
        method: Method,
        url: &HttpUrl,
        headers: &HeaderMap,
        body: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<HttpResponse, HttpError> {
        let exchange = async {
            let response = self
                .inner
                .request(method, url.as_url().clone())
                .headers(headers.clone())
                .body(body.into())
                .send()
                .await?;
            let status = response.status();
            let headers = response.headers().clone();
            let (body, truncated) = read_capped(response, self.max_response_bytes).await?;
            Ok::<_, reqwest::Error>(HttpResponse {
                status,
                headers,
                body,
                truncated,
            })
        };
        // One deadline over connecting, sending and reading the answer.
        let response = match tokio::time::timeout(timeout, exchange).await.ok() {
            None => {
                return Err(HttpError::Timeout {
                    url: url.to_string(),
                    timeout,
                });
            }
            Some(Err(e)) => return Err(error_of(e, url, timeout)),
            Some(Ok(response)) => response,
        };
        if !response.status.is_success() {
            return Err(HttpError::Status {
                url: url.to_string(),
                status: response.status,
                body: log_safe(&String::from_utf8_lossy(&response.body), ERROR_BODY_CHARS),
            });
        }
        Ok(response)
    }
}

/// Reads `response`'s body up to `cap` bytes; the rest is not read (dropping the response
/// closes its connection).
pub async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<(Bytes, bool), reqwest::Error> {
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if chunk.len() > room {
            return Ok((body.freeze(), true));
        }
    }
    Ok((body.freeze(), false))
}

fn error_of(e: reqwest::Error, url: &HttpUrl, timeout: Duration) -> HttpError {
    let url = url.to_string();
    // A connect timeout is a connection failure (its own deadline), not the request's.
    if e.is_connect() {
        HttpError::Connect {
            url,
            reason: reason_of(e),
        }
    } else if e.is_timeout() {
        HttpError::Timeout { url, timeout }
    } else {
        HttpError::Transport {
            url,
            reason: reason_of(e),
        }
    }
}

/// A reqwest error's text and its sources', without its URL, bounded and escaped.
fn reason_of(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    log_safe(&text, 300)
}
