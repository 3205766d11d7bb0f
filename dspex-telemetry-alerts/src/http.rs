//! POSTing JSON to a receiver, through the exporters' HTTP client.

use std::time::Duration;

use dspex_telemetry_exporters::http_client::{self, Endpoint};
use http::{Method, Request, header};
use http_body_util::Full;
use hyper::body::Bytes;

use crate::Secret;
use crate::handler::HandlerError;

/// A checked receiver URL with its headers and deadline.
#[derive(Clone)]
pub(crate) struct Target {
    url: String,
    endpoint: Endpoint,
    path: String,
    headers: Vec<(String, Secret)>,
    timeout: Duration,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("headers", &self.headers)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Target {
    pub(crate) fn new(
        url: &str,
        headers: Vec<(String, Secret)>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let endpoint = Endpoint::parse(url, 80)?;
        let uri: http::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
        let path = uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        for (name, _) in &headers {
            header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{name:?} is not a header name"))?;
        }
        if timeout.is_zero() {
            return Err("the timeout must be above zero".into());
        }
        Ok(Target {
            url: url.to_owned(),
            endpoint,
            path,
            headers,
            timeout,
        })
    }
}

/// One POST of `body` as JSON; a non-2xx answer is `Refused`.
pub(crate) async fn post_json(target: &Target, body: Vec<u8>) -> Result<(), HandlerError> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(&target.path)
        .header(header::HOST, &target.endpoint.authority)
        .header(header::CONTENT_TYPE, "application/json");
    for (name, value) in &target.headers {
        request = request.header(name.as_str(), value.expose());
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| HandlerError::Other(e.to_string()))?;
    match http_client::send(&target.endpoint.authority, request, target.timeout).await {
        Ok((status, _)) if status.is_success() => Ok(()),
        Ok((status, body)) => Err(HandlerError::Refused {
            target: target.url.clone(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).chars().take(200).collect(),
        }),
        Err(reason) => Err(HandlerError::Unreachable {
            target: target.url.clone(),
            reason,
        }),
    }
}
