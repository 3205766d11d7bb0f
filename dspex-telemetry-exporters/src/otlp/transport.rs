//! Sending one OTLP export request, over HTTP/protobuf or gRPC: shared by traces and metrics.

use std::time::Duration;

use http::{Method, Request, header};
use http_body_util::Full;
use hyper::body::Bytes;

use super::Protocol;
use crate::Secret;
use crate::http_client::{self, Endpoint};

/// Which OTLP service a request goes to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Signal {
    Traces,
    Metrics,
}

/// Where and how requests go.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    pub(crate) protocol: Protocol,
    pub(crate) endpoint: Endpoint,
    pub(crate) headers: Vec<(String, Secret)>,
    pub(crate) timeout: Duration,
}

impl Transport {
    /// Checks the endpoint URL and the header names; errors are (key, reason).
    pub(crate) fn new(
        protocol: Protocol,
        endpoint: &str,
        headers: &[(String, Secret)],
        timeout: Duration,
    ) -> Result<Self, (&'static str, String)> {
        let default_port = match protocol {
            Protocol::HttpProtobuf => 4318,
            Protocol::Grpc => 4317,
        };
        let endpoint = Endpoint::parse(endpoint, default_port).map_err(|e| ("endpoint", e))?;
        for (name, _) in headers {
            if header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(("headers", format!("{name:?} is not a header name")));
            }
        }
        if timeout.is_zero() {
            return Err(("timeout", "must be above zero".into()));
        }
        Ok(Transport {
            protocol,
            endpoint,
            headers: headers.to_vec(),
            timeout,
        })
    }

    /// Sends one export request (an encoded `Export…ServiceRequest`); `Err` says why it failed.
    pub(crate) async fn export(&self, signal: Signal, body: Vec<u8>) -> Result<(), String> {
        let base = &self.endpoint.base_path;
        let (path, content_type, body) = match self.protocol {
            Protocol::HttpProtobuf => {
                let path = match signal {
                    Signal::Traces => format!("{base}/v1/traces"),
                    Signal::Metrics => format!("{base}/v1/metrics"),
                };
                (path, "application/x-protobuf", body)
            }
            Protocol::Grpc => {
                let service = match signal {
                    Signal::Traces => "opentelemetry.proto.collector.trace.v1.TraceService",
                    Signal::Metrics => "opentelemetry.proto.collector.metrics.v1.MetricsService",
                };
                // A gRPC message: uncompressed flag, 4-byte big-endian length, the protobuf.
                let mut framed = Vec::with_capacity(body.len() + 5);
                framed.push(0);
                framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
                framed.extend_from_slice(&body);
                // HTTP/2 needs an absolute URI.
                let uri = format!("http://{}{base}/{service}/Export", self.endpoint.authority);
                (uri, "application/grpc", framed)
            }
        };
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, content_type);
        request = match self.protocol {
            Protocol::HttpProtobuf => request.header(header::HOST, &self.endpoint.authority),
            Protocol::Grpc => request.header(header::TE, "trailers"),
        };
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.expose());
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let authority = &self.endpoint.authority;
        match self.protocol {
            Protocol::HttpProtobuf => {
                let (status, body) = http_client::send(authority, request, self.timeout).await?;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
                }
            }
            Protocol::Grpc => {
                let (status, headers, _) =
                    http_client::send_h2(authority, request, self.timeout).await?;
                let text = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                let grpc_status = text("grpc-status");
                if status.is_success() && grpc_status == "0" {
                    Ok(())
                } else {
                    Err(format!(
                        "{status}, grpc-status {grpc_status:?}: {}",
                        text("grpc-message")
                    ))
                }
            }
        }
    }
}
