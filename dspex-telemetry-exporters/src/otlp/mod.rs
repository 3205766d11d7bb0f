//! OpenTelemetry: every span of the core (bridge calls, tools, contracts, casts, users'
//! `with_span`, the spans Python workers time) reaches an `opentelemetry_sdk`
//! [`SpanExporter`](opentelemetry_sdk::trace::SpanExporter): `opentelemetry-otlp` over
//! OTLP/HTTP (protobuf) or OTLP/gRPC by default, or one of your own.
//!
//! On the caller's thread a span costs a copy of its record into a buffer of that thread (no
//! lock, no allocation in steady state). A collector thread takes the buffers, turns the
//! records into `SpanData` and exports them in batches; full buffers and failed requests drop
//! spans and count them ([`OtlpTraces::stats`], and `dspex_telemetry_spans_*_total` in the
//! metrics). [`OtlpTraces::shutdown`] ends within its deadline whatever the collector does.
//!
//! Configuration comes from [`OtlpConfig`] and, for what it leaves unset, from the
//! OpenTelemetry environment variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `…_TRACES_ENDPOINT`,
//! `…_HEADERS`, `…_PROTOCOL`, `…_CERTIFICATE`, `…_COMPRESSION`, `…_TIMEOUT`, their `TRACES_`
//! and `METRICS_` forms, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`): a key given in the
//! configuration wins over its variable.

mod client;
mod collector;
mod env;
mod metrics;
mod record;

pub use collector::{OtlpSpanProcessor, OtlpStats, OtlpTraces};
pub use env::{Compression, OtlpConfig, Protocol, ResolvedOtlp, Signal};
pub use metrics::{OtlpMetrics, OtlpMetricsConfig, OtlpMetricsRecorder};

use opentelemetry_otlp::WithExportConfig;
#[cfg(feature = "otlp-http")]
use opentelemetry_otlp::WithHttpConfig;
#[cfg(feature = "otlp-grpc")]
use opentelemetry_otlp::WithTonicConfig;

/// Why an exporter could not start; each names the configuration key (or environment
/// variable) at fault.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// A key's value is unusable.
    #[error("invalid `{key}`: {reason}")]
    Invalid {
        /// The configuration key or environment variable.
        key: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// The dispatcher refused the span sink (its id is taken).
    #[error(transparent)]
    Attach(#[from] dspex_telemetry_core::AttachError),
}

/// The error for a protocol whose cargo feature this build left out (a resolved
/// configuration never holds one: `resolve` refuses it first).
#[cfg(not(all(feature = "otlp-http", feature = "otlp-grpc")))]
pub(crate) fn not_built(protocol: Protocol) -> OtlpError {
    match protocol.check_built("protocol") {
        Err(e) => e,
        Ok(()) => invalid("protocol", "not in this build"),
    }
}

pub(crate) fn invalid(key: &'static str, reason: impl Into<String>) -> OtlpError {
    OtlpError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// The `opentelemetry-otlp` span exporter for `resolved` (TLS, gzip, headers, timeout and the
/// OTLP retry of 429/502/503/504 honouring `Retry-After`), for your own `SdkTracerProvider`
/// too. A gRPC exporter must be built inside a tokio runtime.
///
/// ```
/// use dspex_telemetry_exporters::otlp::{span_exporter, OtlpConfig, Signal};
/// let resolved = OtlpConfig { endpoint: Some("https://collector.example:4318".into()), ..OtlpConfig::default() }
///     .resolve_with(Signal::Traces, |_| None)
///     .unwrap();
/// assert_eq!(resolved.url(), "https://collector.example:4318/v1/traces");
/// let exporter = span_exporter(&resolved).unwrap();
/// let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
///     .with_batch_exporter(exporter)
///     .build();
/// # drop(provider);
/// ```
pub fn span_exporter(
    resolved: &ResolvedOtlp,
) -> Result<opentelemetry_otlp::SpanExporter, OtlpError> {
    let built = match resolved.protocol() {
        #[cfg(not(feature = "otlp-http"))]
        Protocol::HttpProtobuf => return Err(not_built(Protocol::HttpProtobuf)),
        #[cfg(not(feature = "otlp-grpc"))]
        Protocol::Grpc => return Err(not_built(Protocol::Grpc)),
        #[cfg(feature = "otlp-http")]
        Protocol::HttpProtobuf => {
            let client = client::OtlpHttpClient::new(resolved.timeout(), resolved.roots())
                .map_err(|e| invalid(resolved.certificate_key(), e))?;
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(resolved.url())
                .with_timeout(resolved.timeout())
                .with_http_client(client)
                .with_headers(resolved.header_map());
            if resolved.compression() == Compression::Gzip {
                builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            builder.build()
        }
        #[cfg(feature = "otlp-grpc")]
        Protocol::Grpc => {
            let channel =
                client::grpc_channel(resolved.url(), resolved.timeout(), resolved.roots())
                    .map_err(|e| invalid(resolved.endpoint_key(), e))?;
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_channel(channel)
                .with_timeout(resolved.timeout())
                .with_metadata(resolved.grpc_metadata());
            if resolved.compression() == Compression::Gzip {
                builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            builder.build()
        }
    };
    // The builder's text quotes the whole URL, which may carry a token: not repeated.
    built.map_err(|_| {
        invalid(
            resolved.endpoint_key(),
            "the OTLP exporter cannot use this URL (a character a URI cannot hold?)",
        )
    })
}

pub(crate) use dspex_telemetry_http::log_safe;
