//! POSTing JSON to a receiver, through the shared HTTP client.

#[cfg(feature = "webhook")]
use std::time::Duration;

#[cfg(feature = "webhook")]
use dspex_telemetry_http::http::{HeaderMap, HeaderValue, Method, header};
use dspex_telemetry_http::{CertificateError, HeaderError, UrlError};
#[cfg(feature = "webhook")]
use dspex_telemetry_http::{HttpClient, HttpError, HttpUrl, Secret, header_map};

/// Why a handler could not be made; [`HandlerSetupError::key`] names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum HandlerSetupError {
    /// The URL.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// A header's name or value.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// A zero timeout.
    #[error("must be above zero")]
    Timeout,
    /// The CA certificate file.
    #[error(transparent)]
    Certificate(#[from] CertificateError),
}

impl HandlerSetupError {
    /// The configuration key at fault: `url`, `headers`, `timeout_ms` or `certificate`.
    pub fn key(&self) -> &'static str {
        match self {
            HandlerSetupError::Url(_) => "url",
            HandlerSetupError::Header(_) => "headers",
            HandlerSetupError::Timeout => "timeout_ms",
            HandlerSetupError::Certificate(_) => "certificate",
        }
    }
}

#[cfg(feature = "webhook")]
/// A checked receiver URL with its headers, deadline and client. `Debug` shows the URL
/// redacted and no header value.
#[derive(Clone)]
pub(crate) struct Target {
    url: HttpUrl,
    headers: HeaderMap,
    timeout: Duration,
    client: HttpClient,
}

#[cfg(feature = "webhook")]
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[cfg(feature = "webhook")]
impl Target {
    pub(crate) fn new(
        client: &HttpClient,
        url: HttpUrl,
        headers: &[(String, Secret)],
        timeout: Duration,
    ) -> Result<Self, HandlerSetupError> {
        let mut headers = header_map(headers.iter().map(|(k, v)| (k.as_str(), v)))?;
        if timeout.is_zero() {
            return Err(HandlerSetupError::Timeout);
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(Target {
            url,
            headers,
            timeout,
            client: client.clone(),
        })
    }

    /// One POST of `body` as JSON; an answer outside 2xx is an error.
    pub(crate) async fn post_json(&self, body: Vec<u8>) -> Result<(), HttpError> {
        self.client
            .send(Method::POST, &self.url, &self.headers, body, self.timeout)
            .await
            .map(|_| ())
    }
}
