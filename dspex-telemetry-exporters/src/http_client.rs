//! The project's HTTP client: one request over a fresh connection (HTTP/1.1, or HTTP/2 with
//! prior knowledge for gRPC), with a deadline, `http://` only. The push gateway, the OTLP
//! exporters and the alert handlers send through it.

use std::time::Duration;

use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// A checked `http://host[:port]/base` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`, for connecting and the `Host` header.
    pub authority: String,
    /// The path part, without a trailing slash.
    pub base_path: String,
}

impl Endpoint {
    /// Parses `url`; the error says what is wrong (the caller names the key).
    pub fn parse(url: &str, default_port: u16) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("{url:?}: only http:// URLs are supported"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{url:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err("credentials in the URL are refused: use the credential keys".into());
        }
        let authority = match authority.port() {
            Some(_) => authority.as_str().to_owned(),
            None => format!("{}:{default_port}", authority.host()),
        };
        Ok(Endpoint {
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

/// Sends `request` to `authority` and returns the status and body, or why it failed.
pub async fn send(
    authority: &str,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), String> {
    within(timeout, async {
        let io = connect(authority).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        let _driver = Driver::spawn(connection);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let (status, _, body) = collect(response).await?;
        Ok((status, body))
    })
    .await
}

/// Sends `request` over HTTP/2 without TLS (prior knowledge, as gRPC does on `http://`) and
/// returns the status, the headers and trailers together, and the body.
pub async fn send_h2(
    authority: &str,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    within(timeout, async {
        let io = connect(authority).await?;
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
        let _driver = Driver::spawn(connection);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        collect(response).await
    })
    .await
}

async fn connect(authority: &str) -> Result<TokioIo<tokio::net::TcpStream>, String> {
    tokio::net::TcpStream::connect(authority)
        .await
        .map(TokioIo::new)
        .map_err(|e| e.to_string())
}

/// `exchange`, or an error once `timeout` has passed.
async fn within<T>(
    timeout: Duration,
    exchange: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

/// The task that drives a connection, stopped when the exchange ends.
struct Driver(tokio::task::JoinHandle<()>);

impl Driver {
    fn spawn(connection: impl std::future::Future + Send + 'static) -> Self {
        Driver(tokio::spawn(async move {
            let _ = connection.await;
        }))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A response's status, headers with its trailers, and body.
async fn collect(
    response: http::Response<hyper::body::Incoming>,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let status = response.status();
    let mut headers = response.headers().clone();
    let collected = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if let Some(trailers) = collected.trailers() {
        headers.extend(trailers.clone());
    }
    Ok((status, headers, collected.to_bytes()))
}
