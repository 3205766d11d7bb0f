//! The OTLP configuration, and the OpenTelemetry environment variables that fill what it
//! leaves unset (as the OpenTelemetry specification defines them).

use std::path::PathBuf;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;

use super::{OtlpError, invalid};
use crate::Secret;
use dspex_telemetry_http::{CaCertificates, HttpUrl, UrlText};

/// How requests travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// OTLP/HTTP with protobuf bodies, `POST <endpoint>/v1/traces` (the collector's port 4318).
    #[default]
    HttpProtobuf,
    /// OTLP/gRPC (the collector's port 4317), over TLS for an `https://` endpoint.
    Grpc,
}

/// Request body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// None (the OpenTelemetry default).
    #[default]
    None,
    /// gzip.
    Gzip,
}

/// Which signal a connection is for: it picks the `…_TRACES_…` or `…_METRICS_…` variables and
/// the `/v1/traces` or `/v1/metrics` path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Spans.
    Traces,
    /// Metrics.
    Metrics,
}

impl Protocol {
    /// OpenTelemetry's default, http/protobuf, unless this build has only gRPC.
    fn built_in_default() -> Protocol {
        if cfg!(feature = "otlp-http") {
            Protocol::HttpProtobuf
        } else {
            Protocol::Grpc
        }
    }

    /// Refused under `key` when this build left out the cargo feature the protocol needs.
    pub(crate) fn check_built(self, key: &'static str) -> Result<(), OtlpError> {
        let (name, feature) = match self {
            Protocol::HttpProtobuf if cfg!(not(feature = "otlp-http")) => {
                ("OTLP/HTTP", "otlp-http")
            }
            Protocol::Grpc if cfg!(not(feature = "otlp-grpc")) => ("OTLP/gRPC", "otlp-grpc"),
            _ => return Ok(()),
        };
        Err(invalid(
            key,
            format!(
                "{name} is not in this build: turn on the `{feature}` feature of \
                 dspex-telemetry (or dspex-telemetry-exporters)"
            ),
        ))
    }
}

impl Signal {
    fn path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
        }
    }
}

/// The OTLP exporters' configuration. Every connection key left `None` (or empty) is taken
/// from its OpenTelemetry environment variable, else from the OpenTelemetry default.
///
/// ```
/// use dspex_telemetry_exporters::otlp::{OtlpConfig, Protocol, Signal};
/// let env = |name: &str| match name {
///     "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("https://otlp.example.com".to_owned()),
///     "OTEL_EXPORTER_OTLP_HEADERS" => Some("x-api-key=abc%20123".to_owned()),
///     "OTEL_SERVICE_NAME" => Some("checkout".to_owned()),
///     _ => None,
/// };
/// let resolved = OtlpConfig::default().resolve_with(Signal::Traces, env).unwrap();
/// assert_eq!(resolved.url(), "https://otlp.example.com/v1/traces");
/// assert_eq!(resolved.protocol(), Protocol::HttpProtobuf);
/// assert_eq!(resolved.service_name(), "checkout");
/// // A key set in the configuration wins over its variable.
/// let mine = OtlpConfig { service_name: Some("mine".into()), ..OtlpConfig::default() };
/// assert_eq!(mine.resolve_with(Signal::Traces, env).unwrap().service_name(), "mine");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// The collector's base URL (`https://…:4318`); `/v1/traces` and `/v1/metrics` are
    /// appended for OTLP/HTTP. Variable: `OTEL_EXPORTER_OTLP_ENDPOINT`; default
    /// `http://localhost:4318` (`:4317` for gRPC).
    pub endpoint: Option<UrlText>,
    /// The traces URL, used as it is. Variable: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    pub traces_endpoint: Option<UrlText>,
    /// The metrics URL, used as it is. Variable: `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`.
    pub metrics_endpoint: Option<UrlText>,
    /// OTLP/HTTP or OTLP/gRPC. Variable: `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`,
    /// `grpc`); default OTLP/HTTP.
    pub protocol: Option<Protocol>,
    /// Request headers (an API key, say); values never show in `Debug`. Added to those of
    /// `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k2=v2`), replacing a name given in both.
    pub headers: Vec<(String, Secret)>,
    /// A PEM file of CA certificates trusted besides the system's. Variable:
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE`.
    pub certificate: Option<PathBuf>,
    /// Request compression. Variable: `OTEL_EXPORTER_OTLP_COMPRESSION` (`gzip`, `none`).
    pub compression: Option<Compression>,
    /// How long one export may take, retries included. Variable: `OTEL_EXPORTER_OTLP_TIMEOUT`
    /// (milliseconds); default 10 s.
    pub timeout: Option<Duration>,
    /// The `service.name` resource attribute. Variables: `OTEL_SERVICE_NAME`, then
    /// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`; default `dspex`.
    pub service_name: Option<String>,
    /// The `service.version` resource attribute, if any.
    pub service_version: Option<String>,
    /// Spans waiting in the collector for export, at most; more are dropped and counted
    /// (default 65 536).
    pub max_queue: usize,
    /// Spans per export request, at most (default 512).
    pub max_batch: usize,
    /// How long a span may wait before its batch is sent (default 1 s).
    pub export_interval: Duration,
    /// Bytes of finished spans each thread buffers until the collector takes them (default
    /// 256 KiB, about a thousand spans); a full buffer drops the span and counts it.
    pub thread_buffer_bytes: usize,
    /// How long [`OtlpTraces::shutdown`](super::OtlpTraces::shutdown) may take, the last
    /// export included (default 5 s).
    pub shutdown_timeout: Duration,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: None,
            traces_endpoint: None,
            metrics_endpoint: None,
            protocol: None,
            headers: Vec::new(),
            certificate: None,
            compression: None,
            timeout: None,
            service_name: None,
            service_version: None,
            max_queue: 65_536,
            max_batch: 512,
            export_interval: Duration::from_secs(1),
            thread_buffer_bytes: 256 * 1024,
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// A connection's settings once the configuration and the environment are combined.
#[derive(Debug, Clone)]
pub struct ResolvedOtlp {
    /// Shown in `Debug` without its path or query.
    url: UrlText,
    endpoint_key: &'static str,
    protocol: Protocol,
    headers: Vec<(String, Secret)>,
    roots: CaCertificates,
    #[cfg_attr(not(feature = "otlp-http"), allow(dead_code))]
    certificate_key: &'static str,
    compression: Compression,
    timeout: Duration,
    service_name: String,
    resource: Vec<(String, String)>,
}

impl ResolvedOtlp {
    /// Where requests go (the full URL for OTLP/HTTP; the server for gRPC).
    pub fn url(&self) -> &str {
        self.url.expose()
    }
    /// OTLP/HTTP or gRPC.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
    /// Request compression.
    pub fn compression(&self) -> Compression {
        self.compression
    }
    /// How long one export may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
    /// The `service.name`.
    pub fn service_name(&self) -> &str {
        &self.service_name
    }
    /// The request headers' names (their values are secret).
    pub fn header_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.headers.iter().map(|(k, _)| k.as_str())
    }
    /// The resource every export carries: `service.name`, `service.version`, what
    /// `OTEL_RESOURCE_ATTRIBUTES` adds, and the SDK's own facts.
    pub fn resource(&self) -> Resource {
        Resource::builder_empty()
            .with_attributes(
                self.resource
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .with_attributes([
                KeyValue::new("telemetry.sdk.name", "dspex-telemetry"),
                KeyValue::new("telemetry.sdk.language", "rust"),
                KeyValue::new("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
            ])
            .with_service_name(self.service_name.clone())
            .build()
    }

    pub(crate) fn endpoint_key(&self) -> &'static str {
        self.endpoint_key
    }
    #[cfg(feature = "otlp-http")]
    pub(crate) fn certificate_key(&self) -> &'static str {
        self.certificate_key
    }
    pub(crate) fn roots(&self) -> &CaCertificates {
        &self.roots
    }
    #[cfg(feature = "otlp-http")]
    pub(crate) fn header_map(&self) -> std::collections::HashMap<String, String> {
        self.headers
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_owned()))
            .collect()
    }
    pub(crate) fn http_headers(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (k, v) in &self.headers {
            // Checked when resolved.
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_str(v.expose()),
            ) {
                map.insert(k, v);
            }
        }
        map
    }
    #[cfg(feature = "otlp-grpc")]
    pub(crate) fn grpc_metadata(&self) -> tonic::metadata::MetadataMap {
        tonic::metadata::MetadataMap::from_headers(self.http_headers())
    }
}

impl OtlpConfig {
    /// This configuration for `signal`, with the process's environment filling what it
    /// leaves unset. Errors name the key or the variable at fault.
    pub fn resolve(&self, signal: Signal) -> Result<ResolvedOtlp, OtlpError> {
        self.resolve_with(signal, |name| std::env::var(name).ok())
    }

    /// As [`OtlpConfig::resolve`], reading variables through `env` (for tests, and for
    /// services that keep their settings elsewhere).
    pub fn resolve_with(
        &self,
        signal: Signal,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ResolvedOtlp, OtlpError> {
        let var = |general: &'static str, specific: &'static str| {
            env(specific)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (specific, v))
                .or_else(|| {
                    env(general)
                        .filter(|v| !v.trim().is_empty())
                        .map(|v| (general, v))
                })
        };
        let traces = signal == Signal::Traces;
        let pick = |t: &'static str, m: &'static str| if traces { t } else { m };

        let (protocol, protocol_key) = match self.protocol {
            Some(p) => (p, "protocol"),
            None => match var(
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                pick(
                    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
                ),
            ) {
                None => (Protocol::built_in_default(), "protocol"),
                Some((key, v)) => match v.trim() {
                    "http/protobuf" => (Protocol::HttpProtobuf, key),
                    "grpc" => (Protocol::Grpc, key),
                    other => {
                        return Err(invalid(
                            key,
                            format!(
                                "{:?} is not a supported protocol: use \"http/protobuf\" or \"grpc\"",
                                super::log_safe(other, 40)
                            ),
                        ));
                    }
                },
            },
        };
        protocol.check_built(protocol_key)?;

        let own_signal_url = if traces {
            &self.traces_endpoint
        } else {
            &self.metrics_endpoint
        }
        .as_ref()
        .map(|u| u.expose().to_owned());
        let (url, endpoint_key) = if let Some(url) = own_signal_url.filter(|u| !u.is_empty()) {
            (url, pick("traces_endpoint", "metrics_endpoint"))
        } else if let Some(base) = self
            .endpoint
            .as_ref()
            .map(|u| u.expose().to_owned())
            .filter(|u| !u.is_empty())
        {
            (with_path(&base, protocol, signal), "endpoint")
        } else if let Some(url) = env(pick(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        ))
        .filter(|u| !u.trim().is_empty())
        {
            (
                url.trim().to_owned(),
                pick(
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                ),
            )
        } else if let Some(base) =
            env("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|u| !u.trim().is_empty())
        {
            (
                with_path(base.trim(), protocol, signal),
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            )
        } else {
            let base = match protocol {
                Protocol::HttpProtobuf => "http://localhost:4318",
                Protocol::Grpc => "http://localhost:4317",
            };
            (with_path(base, protocol, signal), "endpoint")
        };
        check_url(&url, endpoint_key)?;

        let mut headers: Vec<(String, Secret)> = Vec::new();
        if let Some((key, text)) = var(
            "OTEL_EXPORTER_OTLP_HEADERS",
            pick(
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
            ),
        ) {
            for (name, value) in key_values(&text, key)? {
                headers.push((name.to_ascii_lowercase(), Secret::new(value)));
            }
        }
        for (name, value) in &self.headers {
            let name = name.to_ascii_lowercase();
            headers.retain(|(k, _)| *k != name);
            headers.push((name, value.clone()));
        }
        for (name, value) in &headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(invalid(
                    "headers",
                    format!("{:?} is not a header name", super::log_safe(name, 40)),
                ));
            }
            if http::HeaderValue::from_str(value.expose()).is_err() {
                return Err(invalid(
                    "headers",
                    format!(
                        "the value of {name:?} holds a character a header cannot carry (a newline, say)"
                    ),
                ));
            }
        }

        let certificate = match &self.certificate {
            Some(path) => Some(("certificate", path.clone())),
            None => var(
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                pick(
                    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                    "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
                ),
            )
            .map(|(k, v)| (k, PathBuf::from(v.trim()))),
        };
        let (roots, certificate_key) = match certificate {
            None => (CaCertificates::none(), "certificate"),
            Some((key, path)) => {
                let pem = std::fs::read(&path)
                    .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
                let roots = CaCertificates::from_pem(pem)
                    .map_err(|e| invalid(key, format!("{}: {e}", path.display())))?;
                (roots, key)
            }
        };

        let compression = match self.compression {
            Some(c) => c,
            None => match var(
                "OTEL_EXPORTER_OTLP_COMPRESSION",
                pick(
                    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
                    "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
                ),
            ) {
                None => Compression::None,
                Some((key, v)) => match v.trim() {
                    "gzip" => Compression::Gzip,
                    "none" => Compression::None,
                    other => {
                        return Err(invalid(
                            key,
                            format!(
                                "{:?} is not a supported compression: use \"gzip\" or \"none\"",
                                super::log_safe(other, 40)
                            ),
                        ));
                    }
                },
            },
        };

        let timeout = match self.timeout {
            Some(t) if t.is_zero() => return Err(invalid("timeout", "must be above zero")),
            Some(t) => t,
            None => match var(
                "OTEL_EXPORTER_OTLP_TIMEOUT",
                pick(
                    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
                ),
            ) {
                None => Duration::from_secs(10),
                Some((key, v)) => match v.trim().parse::<u64>() {
                    Ok(ms) if ms > 0 && ms <= 3_600_000 => Duration::from_millis(ms),
                    _ => {
                        return Err(invalid(
                            key,
                            "must be a whole number of milliseconds from 1 to 3600000",
                        ));
                    }
                },
            },
        };

        let mut resource: Vec<(String, String)> = Vec::new();
        if let Some(text) = env("OTEL_RESOURCE_ATTRIBUTES") {
            resource = key_values(&text, "OTEL_RESOURCE_ATTRIBUTES")?;
        }
        let from_attributes = resource
            .iter()
            .find(|(k, _)| k == "service.name")
            .map(|(_, v)| v.clone());
        let service_name = self
            .service_name
            .clone()
            .or_else(|| env("OTEL_SERVICE_NAME").filter(|s| !s.trim().is_empty()))
            .or(from_attributes)
            .unwrap_or_else(|| "dspex".into());
        if let Some(version) = &self.service_version {
            resource.retain(|(k, _)| k != "service.version");
            resource.push(("service.version".into(), version.clone()));
        }
        Ok(ResolvedOtlp {
            url: UrlText::new(url),
            endpoint_key,
            protocol,
            headers,
            roots,
            certificate_key,
            compression,
            timeout,
            service_name,
            resource,
        })
    }

    /// Checks the batching keys; errors name the key.
    pub(crate) fn check_batching(&self) -> Result<(), OtlpError> {
        if self.max_queue == 0 || self.max_queue > 16 * 1024 * 1024 {
            return Err(invalid("max_queue", "must be from 1 to 16777216"));
        }
        if self.max_batch == 0 || self.max_batch > 1 << 20 {
            return Err(invalid("max_batch", "must be from 1 to 1048576"));
        }
        if self.export_interval.is_zero() || self.export_interval > Duration::from_secs(3600) {
            return Err(invalid(
                "export_interval",
                "must be above zero and at most an hour",
            ));
        }
        if self.thread_buffer_bytes < 4096 || self.thread_buffer_bytes > 64 * 1024 * 1024 {
            return Err(invalid(
                "thread_buffer_bytes",
                "must be from 4096 to 67108864",
            ));
        }
        if self.shutdown_timeout.is_zero() || self.shutdown_timeout > Duration::from_secs(600) {
            return Err(invalid(
                "shutdown_timeout",
                "must be above zero and at most 10 minutes",
            ));
        }
        Ok(())
    }
}

/// The `k=v,k2=v2` entries of an OpenTelemetry list variable (`…_HEADERS`,
/// `OTEL_RESOURCE_ATTRIBUTES`), percent-decoded; the error never repeats a value.
fn key_values(text: &str, key: &'static str) -> Result<Vec<(String, String)>, OtlpError> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s.trim())
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| invalid(key, "a percent-encoded entry is not UTF-8"))
    };
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                invalid(
                    key,
                    "each entry must be key=value (the values are not shown)",
                )
            })?;
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// The signal's URL under a base endpoint: `/v1/traces` appended for OTLP/HTTP (after the
/// base's own path), nothing for gRPC.
fn with_path(base: &str, protocol: Protocol, signal: Signal) -> String {
    match protocol {
        Protocol::Grpc => base.to_owned(),
        Protocol::HttpProtobuf => format!("{}{}", base.trim_end_matches('/'), signal.path()),
    }
}

/// An `http://` or `https://` URL with a host and a port in range, checked by the shared
/// parser; the error never repeats the URL (it may carry credentials).
fn check_url(url: &str, key: &'static str) -> Result<(), OtlpError> {
    HttpUrl::parse(url)
        .map(|_| ())
        .map_err(|e| invalid(key, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_signal_variable_wins_over_the_general_one_and_is_used_as_it_is() {
        let env = env_of(&[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "https://all.example:4318/base/",
            ),
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "https://m.example/custom",
            ),
        ]);
        let config = OtlpConfig::default();
        assert_eq!(
            config.resolve_with(Signal::Traces, &env).unwrap().url(),
            "https://all.example:4318/base/v1/traces"
        );
        assert_eq!(
            config.resolve_with(Signal::Metrics, &env).unwrap().url(),
            "https://m.example/custom"
        );
    }

    #[test]
    fn bad_values_name_their_key_or_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "-1")],
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_COMPRESSION", "zip")],
                "OTEL_EXPORTER_OTLP_COMPRESSION",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")],
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://x")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:99999")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/no/such/ca.pem")],
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
            ),
        ];
        for (vars, key) in cases {
            let err = OtlpConfig::default()
                .resolve_with(Signal::Traces, env_of(vars))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{vars:?}: {err}");
        }
        let with_secret = OtlpConfig {
            endpoint: Some("https://user:hunter2@collector.example".into()),
            ..OtlpConfig::default()
        };
        let err = with_secret
            .resolve_with(Signal::Traces, |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`endpoint`") && !err.contains("hunter2"),
            "{err}"
        );
        let newline = OtlpConfig {
            headers: vec![("x-api-key".into(), Secret::new("a\nb"))],
            ..OtlpConfig::default()
        };
        let err = newline
            .resolve_with(Signal::Traces, |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`headers`") && err.contains("newline"),
            "{err}"
        );
    }

    #[test]
    fn configured_headers_replace_the_environments_and_the_service_name_has_its_order() {
        let env = env_of(&[
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "X-Api-Key=from-env,tenant=a%2Cb",
            ),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from-attrs,deployment.environment=prod",
            ),
        ]);
        let config = OtlpConfig {
            headers: vec![("x-api-key".into(), Secret::new("from-config"))],
            ..OtlpConfig::default()
        };
        let resolved = config.resolve_with(Signal::Traces, &env).unwrap();
        let map = resolved.header_map();
        assert_eq!(map["x-api-key"], "from-config");
        assert_eq!(map["tenant"], "a,b");
        assert_eq!(resolved.service_name(), "from-attrs");
        let resource = resolved.resource();
        assert_eq!(
            resource
                .get(&opentelemetry::Key::new("deployment.environment"))
                .map(|v| v.to_string()),
            Some("prod".into())
        );
        assert!(!format!("{resolved:?}").contains("from-config"));
    }
}
