//! The connections OTLP requests travel on: the shared HTTP client (reqwest over rustls,
//! `dspex-telemetry-http`) for OTLP/HTTP and a tonic channel for OTLP/gRPC, both with TLS (the system's roots plus an
//! optional CA file), timeouts, and response bodies read up to a small cap.

use std::time::Duration;

#[cfg(feature = "otlp-http")]
use bytes::Bytes;
use dspex_telemetry_http::CaCertificates;
#[cfg(feature = "otlp-http")]
use dspex_telemetry_http::{ClientOptions, HttpClient as SharedClient, read_capped};
#[cfg(feature = "otlp-http")]
use http::{Request, Response};
#[cfg(feature = "otlp-http")]
use opentelemetry_http::{HttpClient, HttpError};

#[cfg(feature = "otlp-http")]
/// How much of a collector's answer is read: enough for an OTLP partial-success message or an
/// error text; a larger body is cut there (and the connection closed), whatever it holds.
pub(crate) const MAX_RESPONSE_BYTES: usize = dspex_telemetry_http::DEFAULT_MAX_RESPONSE_BYTES;

#[cfg(feature = "otlp-http")]
/// The OTLP/HTTP client: reqwest over rustls, one pool of connections reused across
/// requests, `timeout` per request, answers read up to [`MAX_RESPONSE_BYTES`].
#[derive(Debug, Clone)]
pub(crate) struct OtlpHttpClient {
    inner: reqwest::Client,
    timeout: Duration,
}

#[cfg(feature = "otlp-http")]
impl OtlpHttpClient {
    pub(crate) fn new(timeout: Duration, roots: &CaCertificates) -> Result<Self, String> {
        let shared = SharedClient::new(&ClientOptions {
            ca: roots.clone(),
            max_response_bytes: MAX_RESPONSE_BYTES,
            connect_timeout: timeout,
            ..ClientOptions::default()
        })
        .map_err(|e| e.to_string())?;
        Ok(OtlpHttpClient {
            inner: shared.reqwest().clone(),
            timeout,
        })
    }

    /// Posts `body` to `url`, returning the status and at most [`MAX_RESPONSE_BYTES`] of the
    /// answer.
    pub(crate) async fn post(
        &self,
        url: &str,
        headers: &http::HeaderMap,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Result<(http::StatusCode, Bytes), reqwest::Error> {
        let response = self
            .inner
            .post(url)
            .headers(headers.clone())
            .header(http::header::CONTENT_TYPE, content_type)
            .body(body)
            .timeout(self.timeout)
            .send()
            .await?;
        let status = response.status();
        Ok((status, read_capped(response, MAX_RESPONSE_BYTES).await?.0))
    }
}

#[cfg(feature = "otlp-http")]
#[async_trait::async_trait]
impl HttpClient for OtlpHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let mut request = reqwest::Request::try_from(request)?;
        *request.timeout_mut() = Some(self.timeout);
        let client = self.inner.clone();
        let work = async move {
            let response = client.execute(request).await?;
            let mut answer = Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                *headers = response.headers().clone();
            }
            let (body, _) = read_capped(response, MAX_RESPONSE_BYTES).await?;
            Ok::<_, HttpError>(answer.body(body)?)
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            return work.await;
        }
        // Outside any runtime (the SDK's batch processor exports from a thread of its own,
        // when a service adds this exporter to its own provider): the request runs on a
        // runtime of the exporter's.
        fallback_runtime()?.spawn(work).await?
    }
}

#[cfg(feature = "otlp-http")]
/// A runtime of one thread for requests made outside any, started at the first.
fn fallback_runtime() -> Result<&'static tokio::runtime::Runtime, HttpError> {
    static RUNTIME: std::sync::OnceLock<Option<tokio::runtime::Runtime>> =
        std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("dspex-otlp-http")
                .enable_all()
                .build()
                .ok()
        })
        .as_ref()
        .ok_or_else(|| "cannot start a runtime for OTLP requests".into())
}

#[cfg(feature = "otlp-grpc")]
/// A lazily connecting tonic channel to `endpoint` (`https://` turns TLS on), with `timeout`
/// per request. Must be called inside a tokio runtime.
pub(crate) fn grpc_channel(
    endpoint: &str,
    timeout: Duration,
    roots: &CaCertificates,
) -> Result<tonic::transport::Channel, String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let mut channel = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| e.to_string())?
        .timeout(timeout)
        .connect_timeout(timeout);
    if endpoint.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_native_roots();
        if let Some(pem) = roots.pem() {
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        channel = channel.tls_config(tls).map_err(|e| e.to_string())?;
    }
    Ok(channel.connect_lazy())
}
