//! The connections OTLP requests travel on: an HTTP client (reqwest over rustls) for
//! OTLP/HTTP and a tonic channel for OTLP/gRPC, both with TLS (the system's roots plus an
//! optional CA file), timeouts, and response bodies read up to a small cap.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use opentelemetry_http::{HttpClient, HttpError};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// How much of a collector's answer is read: enough for an OTLP partial-success message or an
/// error text; a larger body is cut there (and the connection closed), whatever it holds.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The CA certificates (PEM) a connection trusts besides the system's.
#[derive(Clone, Default)]
pub(crate) struct ExtraRoots {
    pem: Option<Arc<[u8]>>,
}

impl ExtraRoots {
    /// The certificates in `pem`; an error says what is wrong with them.
    pub(crate) fn from_pem(pem: Vec<u8>) -> Result<Self, String> {
        let count = CertificateDer::pem_slice_iter(&pem)
            .map(|c| c.map_err(|e| format!("not a PEM certificate: {e}")))
            .collect::<Result<Vec<_>, _>>()?
            .len();
        if count == 0 {
            return Err("holds no PEM certificate".into());
        }
        Ok(ExtraRoots {
            pem: Some(pem.into()),
        })
    }

    pub(crate) fn pem(&self) -> Option<&[u8]> {
        self.pem.as_deref()
    }
}

impl std::fmt::Debug for ExtraRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.pem.is_some() {
            "ExtraRoots(ca file)"
        } else {
            "ExtraRoots(none)"
        })
    }
}

/// A rustls configuration on the `ring` provider with the system's roots and `extra`.
fn tls_config(extra: &ExtraRoots) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    // A system without a certificate store still reaches a collector whose CA is given.
    let system = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(system.certs);
    if let Some(pem) = extra.pem() {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("unusable CA certificate: {e}"))?;
        }
    }
    // Other rustls users in the process (a reqwest client built without a provider of its
    // own, as features unify) need a process-wide provider: give them ours when none is set.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// The OTLP/HTTP client: reqwest over rustls, one pool of connections reused across
/// requests, `timeout` per request, answers read up to [`MAX_RESPONSE_BYTES`].
#[derive(Debug, Clone)]
pub(crate) struct OtlpHttpClient {
    inner: reqwest::Client,
}

impl OtlpHttpClient {
    pub(crate) fn new(timeout: Duration, roots: &ExtraRoots) -> Result<Self, String> {
        let inner = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .tls_backend_preconfigured(tls_config(roots)?)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(OtlpHttpClient { inner })
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
            .send()
            .await?;
        let status = response.status();
        Ok((status, read_capped(response).await?))
    }
}

async fn read_capped(mut response: reqwest::Response) -> Result<Bytes, reqwest::Error> {
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_RESPONSE_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_RESPONSE_BYTES {
            // The rest is not read: dropping the response closes its connection.
            break;
        }
    }
    Ok(body.freeze())
}

#[async_trait::async_trait]
impl HttpClient for OtlpHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let response = self.inner.execute(request).await?;
        let mut answer = Response::builder().status(response.status());
        if let Some(headers) = answer.headers_mut() {
            *headers = response.headers().clone();
        }
        let body = read_capped(response).await?;
        Ok(answer.body(body)?)
    }
}

/// A lazily connecting tonic channel to `endpoint` (`https://` turns TLS on), with `timeout`
/// per request. Must be called inside a tokio runtime.
pub(crate) fn grpc_channel(
    endpoint: &str,
    timeout: Duration,
    roots: &ExtraRoots,
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
