//! The Reporter: the spec's `backends` list and `reporting_interval` in one configuration,
//! one recorder to install, a task that reports on the interval, and a shutdown that flushes
//! every backend once.

use std::net::SocketAddr;
#[cfg(feature = "push-gateway")]
use std::sync::Arc;
#[cfg(feature = "push-gateway")]
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dspex_telemetry_core::{Dispatcher, bounds};
use dspex_telemetry_metrics::{MetricDefinition, WindowedRecorder};
#[cfg(feature = "push-gateway")]
use metrics_exporter_prometheus::PrometheusHandle;
use metrics_util::layers::{Fanout, FanoutBuilder};
use serde::Deserialize;
#[cfg(feature = "push-gateway")]
use tokio::sync::watch;
#[cfg(feature = "push-gateway")]
use tokio::task::JoinHandle;

use crate::Secret;
#[cfg(feature = "_otlp")]
use crate::otlp::{
    Compression, OtlpConfig, OtlpMetrics, OtlpMetricsConfig, OtlpMetricsRecorder, OtlpTraces,
    Protocol,
};
#[cfg(any(feature = "prometheus", feature = "push-gateway"))]
use crate::prometheus::prometheus_recorder;
#[cfg(feature = "prometheus")]
use crate::prometheus::{PrometheusConfig, PrometheusEndpoint};
#[cfg(feature = "push-gateway")]
use crate::push_gateway::{PushGateway, PushGatewayConfig};
#[cfg(feature = "statsd")]
use crate::statsd::{StatsdConfig, StatsdExporter, StatsdRecorder, TagStyle};
#[cfg(feature = "push-gateway")]
use dspex_telemetry_http::CaCertificates;
use dspex_telemetry_http::UrlText;

/// The Reporter's configuration, with the spec's keys.
///
/// ```
/// use dspex_telemetry_exporters::reporter::ReporterConfig;
/// let config: ReporterConfig = toml::from_str(r#"
///     reporting_interval = 30_000
///
///     [[backends]]
///     type = "statsd"
///     host = "127.0.0.1"
///     port = 8125
///
///     [[backends]]
///     type = "prometheus"
///     listen = "127.0.0.1:9568"
///     push_gateway = "http://127.0.0.1:9091"
/// "#).unwrap();
/// assert_eq!(config.backends.len(), 2);
/// assert!(toml::from_str::<ReporterConfig>("reporting_intervall = 1").unwrap_err().to_string().contains("reporting_intervall"));
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReporterConfig {
    /// Where metrics go (default none).
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// How often the Reporter sends, in milliseconds (default 30 000; at most a week).
    #[serde(default = "default_reporting_interval")]
    pub reporting_interval: u64,
}

fn default_reporting_interval() -> u64 {
    30_000
}

impl Default for ReporterConfig {
    fn default() -> Self {
        ReporterConfig {
            backends: Vec::new(),
            reporting_interval: default_reporting_interval(),
        }
    }
}

/// One backend, as `type = "statsd" | "prometheus" | "opentelemetry"` with its keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum BackendConfig {
    /// `{:statsd, host:, port:}`.
    Statsd(StatsdBackend),
    /// `{:prometheus, push_gateway: …}`, and/or a `/metrics` endpoint.
    Prometheus(PrometheusBackend),
    /// `{:opentelemetry, enabled: true}`: spans and metrics over OTLP.
    Opentelemetry(OpenTelemetryBackend),
}

/// The StatsD backend's keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsdBackend {
    /// The server (default `127.0.0.1`).
    #[serde(default = "default_statsd_host")]
    pub host: String,
    /// Its UDP port (default 8125).
    #[serde(default = "default_statsd_port")]
    pub port: u16,
    /// Put before every name.
    #[serde(default)]
    pub prefix: Option<String>,
    /// `"folded"` (default) or `"dogstatsd"`.
    #[serde(default)]
    pub tags: TagsKey,
}

fn default_statsd_host() -> String {
    "127.0.0.1".into()
}

fn default_statsd_port() -> u16 {
    8125
}

/// How StatsD labels travel, as written in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TagsKey {
    /// Folded into the name.
    #[default]
    Folded,
    /// DogStatsD tags.
    Dogstatsd,
}

/// The Prometheus backend's keys: a `/metrics` endpoint, a push gateway, or both.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusBackend {
    /// Serve `/metrics` here (`"127.0.0.1:9568"`, say).
    #[serde(default)]
    pub listen: Option<String>,
    /// A scrape must send this bearer token.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// Push to this gateway (`"http://127.0.0.1:9091"`, or `https://`) on every interval;
    /// shown without its path or query in `Debug` and errors.
    #[serde(default)]
    pub push_gateway: Option<UrlText>,
    /// A PEM file of CA certificates the push trusts besides the system's.
    #[serde(default)]
    pub push_certificate: Option<std::path::PathBuf>,
    /// How long one push may take, in milliseconds (default 5 000; at most 300 000).
    #[serde(default)]
    pub push_timeout_ms: Option<u64>,
    /// The push's `job` label (default `dspex`).
    #[serde(default)]
    pub job: Option<String>,
    /// The push's `instance` label.
    #[serde(default)]
    pub instance: Option<String>,
    /// Basic credentials for the gateway: user.
    #[serde(default)]
    pub push_user: Option<String>,
    /// Basic credentials for the gateway: password.
    #[serde(default)]
    pub push_password: Option<Secret>,
}

/// The OpenTelemetry backend's keys: the spans of the Reporter's dispatcher, and the metrics,
/// over OTLP. A connection key left out is taken from its OpenTelemetry environment variable
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`, `…_HEADERS`, `…_PROTOCOL`, `…_CERTIFICATE`,
/// `…_COMPRESSION`, `…_TIMEOUT`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`): the key wins
/// when both are given.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenTelemetryBackend {
    /// As in the spec (default true); `false` leaves the backend off.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The collector's base URL (default `http://localhost:4318`, or `:4317` for gRPC);
    /// `https://` for TLS.
    #[serde(default)]
    pub endpoint: Option<UrlText>,
    /// The traces URL, used as it is (else `<endpoint>/v1/traces`).
    #[serde(default)]
    pub traces_endpoint: Option<UrlText>,
    /// The metrics URL, used as it is (else `<endpoint>/v1/metrics`).
    #[serde(default)]
    pub metrics_endpoint: Option<UrlText>,
    /// `"http/protobuf"` (default) or `"grpc"`.
    #[serde(default)]
    pub protocol: Option<ProtocolKey>,
    /// Request headers (an API key, say); values never shown in `Debug`.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, Secret>,
    /// A PEM file of CA certificates to trust besides the system's.
    #[serde(default)]
    pub certificate: Option<std::path::PathBuf>,
    /// `"gzip"` or `"none"` (default).
    #[serde(default)]
    pub compression: Option<CompressionKey>,
    /// How long one export may take, in milliseconds (default 10 000; at most 300 000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The `service.name` resource attribute (default `dspex`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// The `service.version` resource attribute.
    #[serde(default)]
    pub service_version: Option<String>,
    /// Spans waiting for export, at most (default 65 536); more are dropped and counted.
    #[serde(default)]
    pub max_queue: Option<usize>,
    /// Spans per export request, at most (default 512).
    #[serde(default)]
    pub max_batch: Option<usize>,
    /// How long a span may wait before its batch is sent, in milliseconds (default 1 000).
    #[serde(default)]
    pub export_interval_ms: Option<u64>,
    /// Bytes of spans each thread buffers for the exporter (default 262 144).
    #[serde(default)]
    pub thread_buffer_bytes: Option<usize>,
    /// How long the shutdown may take, in milliseconds (default 5 000).
    #[serde(default)]
    pub shutdown_timeout_ms: Option<u64>,
}

#[cfg(feature = "_otlp")]
impl OpenTelemetryBackend {
    /// The exporters' configuration these keys describe; an error is (key, reason).
    pub fn otlp_config(&self) -> Result<OtlpConfig, (&'static str, String)> {
        let defaults = OtlpConfig::default();
        let ms = |key: &'static str, v: Option<u64>, default: Duration| match v {
            None => Ok(default),
            Some(0) => Err((key, "must be above zero".to_owned())),
            Some(ms) => Ok(Duration::from_millis(ms)),
        };
        Ok(OtlpConfig {
            endpoint: self.endpoint.clone(),
            traces_endpoint: self.traces_endpoint.clone(),
            metrics_endpoint: self.metrics_endpoint.clone(),
            protocol: self.protocol.map(|p| match p {
                ProtocolKey::HttpProtobuf => Protocol::HttpProtobuf,
                ProtocolKey::Grpc => Protocol::Grpc,
            }),
            headers: self.headers.clone().into_iter().collect(),
            certificate: self.certificate.clone(),
            compression: self.compression.map(|c| match c {
                CompressionKey::Gzip => Compression::Gzip,
                CompressionKey::None => Compression::None,
            }),
            timeout: self
                .timeout_ms
                .map(|timeout_ms| {
                    bounds::within(timeout_ms, 1, bounds::REQUEST_TIMEOUT_MAX_MS)
                        .map(Duration::from_millis)
                        .map_err(|e| ("timeout_ms", e.to_string()))
                })
                .transpose()?,
            service_name: self.service_name.clone(),
            service_version: self.service_version.clone(),
            max_queue: self.max_queue.unwrap_or(defaults.max_queue),
            max_batch: self.max_batch.unwrap_or(defaults.max_batch),
            export_interval: ms(
                "export_interval_ms",
                self.export_interval_ms,
                defaults.export_interval,
            )?,
            thread_buffer_bytes: self
                .thread_buffer_bytes
                .unwrap_or(defaults.thread_buffer_bytes),
            shutdown_timeout: ms(
                "shutdown_timeout_ms",
                self.shutdown_timeout_ms,
                defaults.shutdown_timeout,
            )?,
        })
    }
}

impl Default for OpenTelemetryBackend {
    fn default() -> Self {
        OpenTelemetryBackend {
            enabled: true,
            endpoint: None,
            traces_endpoint: None,
            metrics_endpoint: None,
            protocol: None,
            headers: Default::default(),
            certificate: None,
            compression: None,
            timeout_ms: None,
            service_name: None,
            service_version: None,
            max_queue: None,
            max_batch: None,
            export_interval_ms: None,
            thread_buffer_bytes: None,
            shutdown_timeout_ms: None,
        }
    }
}

/// Whether the environment asks for OTLP export: `OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, and `OTEL_SDK_DISABLED` is not `true`.
pub fn otlp_wanted_by_env(env: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name| env(name).is_some_and(|v| !v.trim().is_empty());
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

fn yes() -> bool {
    true
}

/// The OTLP protocol, as written in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ProtocolKey {
    /// OTLP/HTTP with protobuf bodies.
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// OTLP/gRPC.
    #[serde(rename = "grpc")]
    Grpc,
}

/// Request compression, as written in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionKey {
    /// gzip.
    Gzip,
    /// None.
    None,
}

/// Why the Reporter could not start; `key` names the configuration key at fault
/// (`backends[1].push_gateway`, say).
#[derive(Debug, thiserror::Error)]
#[error("invalid `{key}`: {reason}")]
pub struct ReporterError {
    /// The configuration key.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// The Reporter's key for a [`PushGatewayConfig`] field.
#[cfg(feature = "push-gateway")]
fn push_key(field: &str) -> &'static str {
    match field {
        "job" => "job",
        "basic_auth" => "push_password",
        "timeout" => "push_timeout_ms",
        "certificate" => "push_certificate",
        _ => "push_gateway",
    }
}

fn error(key: impl Into<String>, reason: impl std::fmt::Display) -> ReporterError {
    ReporterError {
        key: key.into(),
        reason: reason.to_string(),
    }
}

/// The error for a part whose cargo feature this build left out; `features` names it
/// (`` `statsd` ``).
#[cfg(not(all(
    feature = "prometheus",
    feature = "push-gateway",
    feature = "statsd",
    feature = "_otlp"
)))]
fn not_built(key: String, what: &str, features: &str) -> ReporterError {
    error(
        key,
        format!(
            "{what} is not in this build: turn on {features} of dspex-telemetry \
             (or dspex-telemetry-exporters)"
        ),
    )
}

/// Running backends. Install [`Reporter::start`]'s recorder, attach the metrics handler, and
/// call [`Reporter::shutdown`] before exit so that every backend is flushed once.
#[derive(Debug)]
pub struct Reporter {
    #[cfg(feature = "_otlp")]
    traces: Option<OtlpTraces>,
    #[cfg(feature = "_otlp")]
    otlp_metrics: Option<OtlpMetrics>,
    #[cfg(feature = "prometheus")]
    endpoint: Option<PrometheusEndpoint>,
    #[cfg(feature = "statsd")]
    statsd: Option<StatsdExporter>,
    #[cfg(feature = "push-gateway")]
    pusher: Option<Arc<Pusher>>,
    #[cfg(feature = "push-gateway")]
    stop: watch::Sender<bool>,
    #[cfg(feature = "push-gateway")]
    task: Option<JoinHandle<()>>,
}

#[cfg(feature = "push-gateway")]
#[derive(Debug)]
struct Pusher {
    gateway: PushGateway,
    handle: PrometheusHandle,
    failures: AtomicU64,
}

#[cfg(feature = "push-gateway")]
impl Pusher {
    async fn push(&self) {
        if let Err(e) = self.gateway.push(&self.handle).await {
            if self.failures.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(error = %e, "push to the gateway failed; counting further failures");
            }
        }
    }
}

impl Reporter {
    /// Starts every backend of `config` for `definitions` (and, for OpenTelemetry, the spans
    /// of `dispatcher`) on the current tokio runtime. Returns the Reporter and the recorder to
    /// install (every backend's, plus `window` if given: the sliding window for alerts and the
    /// live view). Errors name the key.
    #[cfg_attr(
        not(all(
            feature = "prometheus",
            feature = "push-gateway",
            feature = "statsd",
            feature = "_otlp"
        )),
        allow(unused_variables, unused_mut)
    )]
    pub async fn start(
        config: &ReporterConfig,
        definitions: &[MetricDefinition],
        window: Option<WindowedRecorder>,
        dispatcher: &Dispatcher,
    ) -> Result<(Reporter, Fanout), ReporterError> {
        bounds::within(config.reporting_interval, 1, bounds::WEEK_MS)
            .map_err(|e| error("reporting_interval", e))?;
        let interval = Duration::from_millis(config.reporting_interval);
        let mut fanout = FanoutBuilder::default();
        if let Some(window) = window {
            fanout = fanout.add_recorder(window);
        }
        let mut reporter = Reporter {
            #[cfg(feature = "_otlp")]
            traces: None,
            #[cfg(feature = "_otlp")]
            otlp_metrics: None,
            #[cfg(feature = "prometheus")]
            endpoint: None,
            #[cfg(feature = "statsd")]
            statsd: None,
            #[cfg(feature = "push-gateway")]
            pusher: None,
            #[cfg(feature = "push-gateway")]
            stop: watch::channel(false).0,
            #[cfg(feature = "push-gateway")]
            task: None,
        };
        let mut prometheus_seen = false;
        let mut statsd_seen = false;
        // With no opentelemetry backend configured, the OpenTelemetry environment turns one on
        // (its keys from the variables), as an OpenTelemetry SDK would; a build without OTLP
        // says once that it leaves the variables alone.
        let wanted_by_env = !config
            .backends
            .iter()
            .any(|b| matches!(b, BackendConfig::Opentelemetry(_)))
            && otlp_wanted_by_env(|name| std::env::var(name).ok());
        if wanted_by_env && cfg!(not(feature = "_otlp")) {
            tracing::warn!(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but this build has no OTLP exporter \
                 (the `otlp-http` or `otlp-grpc` feature): no spans are exported"
            );
        }
        let from_env = (wanted_by_env && cfg!(feature = "_otlp"))
            .then(|| BackendConfig::Opentelemetry(OpenTelemetryBackend::default()));
        for (i, backend) in config.backends.iter().chain(from_env.iter()).enumerate() {
            let key = |k: &str| format!("backends[{i}].{k}");
            match backend {
                #[cfg(not(feature = "_otlp"))]
                BackendConfig::Opentelemetry(b) => {
                    if b.enabled {
                        return Err(not_built(
                            key("type"),
                            "OTLP",
                            "the `otlp-http` or `otlp-grpc` feature",
                        ));
                    }
                }
                #[cfg(feature = "_otlp")]
                BackendConfig::Opentelemetry(b) => {
                    if !b.enabled {
                        continue;
                    }
                    if reporter.traces.is_some() {
                        return Err(error(key("type"), "only one opentelemetry backend"));
                    }
                    let otlp_error = |e: crate::otlp::OtlpError| match e {
                        // An environment variable is named as it is; a key under its backend.
                        crate::otlp::OtlpError::Invalid { key: k, reason }
                            if k.starts_with("OTEL_") =>
                        {
                            error(k, reason)
                        }
                        crate::otlp::OtlpError::Invalid { key: k, reason } => error(key(k), reason),
                        other => error(key("type"), other),
                    };
                    let connection = b
                        .otlp_config()
                        .map_err(|(k, reason)| error(key(k), reason))?;
                    let metrics_recorder = OtlpMetricsRecorder::new(
                        OtlpMetricsConfig {
                            connection: connection.clone(),
                            export_interval: interval,
                        },
                        definitions,
                    )
                    .map_err(otlp_error)?;
                    let traces = OtlpTraces::start(connection, dispatcher, "dspex-reporter:otlp")
                        .map_err(otlp_error)?;
                    reporter.traces = Some(traces);
                    fanout = fanout.add_recorder(metrics_recorder.clone());
                    reporter.otlp_metrics = Some(OtlpMetrics::start(metrics_recorder));
                }
                BackendConfig::Statsd(_) if std::mem::replace(&mut statsd_seen, true) => {
                    return Err(error(key("type"), "only one statsd backend"));
                }
                #[cfg(not(feature = "statsd"))]
                BackendConfig::Statsd(_) => {
                    return Err(not_built(key("type"), "StatsD", "the `statsd` feature"));
                }
                #[cfg(feature = "statsd")]
                BackendConfig::Statsd(b) => {
                    let recorder = StatsdRecorder::new(StatsdConfig {
                        host: b.host.clone(),
                        port: b.port,
                        prefix: b.prefix.clone(),
                        tags: match b.tags {
                            TagsKey::Folded => TagStyle::Folded,
                            TagsKey::Dogstatsd => TagStyle::DogStatsd,
                        },
                        flush_interval: interval,
                        ..StatsdConfig::default()
                    })
                    .map_err(|e| error(key(statsd_key(&e)), e))?;
                    let exporter = StatsdExporter::start(recorder.clone())
                        .await
                        .map_err(|e| error(key(statsd_key(&e)), e))?;
                    fanout = fanout.add_recorder(recorder);
                    reporter.statsd = Some(exporter);
                }
                BackendConfig::Prometheus(b) => {
                    if std::mem::replace(&mut prometheus_seen, true) {
                        return Err(error(key("type"), "only one prometheus backend"));
                    }
                    if b.listen.is_none() && b.push_gateway.is_none() {
                        return Err(error(
                            key("listen"),
                            "give `listen`, `push_gateway` or both",
                        ));
                    }
                    #[cfg(not(feature = "prometheus"))]
                    if b.listen.is_some() {
                        return Err(not_built(
                            key("listen"),
                            "the /metrics endpoint",
                            "the `prometheus` feature",
                        ));
                    }
                    #[cfg(not(feature = "push-gateway"))]
                    if b.push_gateway.is_some() {
                        return Err(not_built(
                            key("push_gateway"),
                            "the push gateway",
                            "the `push-gateway` feature",
                        ));
                    }
                    #[cfg(any(feature = "prometheus", feature = "push-gateway"))]
                    let recorder =
                        prometheus_recorder(definitions).map_err(|e| error(key("buckets"), e))?;
                    #[cfg(any(feature = "prometheus", feature = "push-gateway"))]
                    let handle = recorder.handle();
                    #[cfg(any(feature = "prometheus", feature = "push-gateway"))]
                    {
                        fanout = fanout.add_recorder(recorder);
                    }
                    #[cfg(feature = "prometheus")]
                    if let Some(listen) = &b.listen {
                        let listen: SocketAddr = listen
                            .parse()
                            .map_err(|e| error(key("listen"), format!("{listen:?}: {e}")))?;
                        let endpoint = PrometheusEndpoint::start(
                            &PrometheusConfig {
                                listen,
                                bearer_token: b.bearer_token.clone(),
                                ..PrometheusConfig::default()
                            },
                            handle.clone(),
                        )
                        .await
                        .map_err(|e| error(key("listen"), e))?;
                        reporter.endpoint = Some(endpoint);
                    }
                    #[cfg(feature = "push-gateway")]
                    if let Some(url) = &b.push_gateway {
                        let basic_auth = match (&b.push_user, &b.push_password) {
                            (Some(user), Some(password)) => Some((user.clone(), password.clone())),
                            (None, None) => None,
                            _ => {
                                return Err(error(
                                    key("push_password"),
                                    "give `push_user` and `push_password` together",
                                ));
                            }
                        };
                        let ca = match &b.push_certificate {
                            Some(path) => CaCertificates::from_file(path)
                                .map_err(|e| error(key("push_certificate"), e))?,
                            None => CaCertificates::none(),
                        };
                        if b.push_timeout_ms == Some(0) {
                            return Err(error(key("push_timeout_ms"), "must be above zero"));
                        }
                        let gateway = PushGateway::new(PushGatewayConfig {
                            endpoint: url.clone(),
                            job: b.job.clone().unwrap_or_else(|| "dspex".into()),
                            instance: b.instance.clone(),
                            basic_auth,
                            timeout: Duration::from_millis(
                                bounds::within(
                                    b.push_timeout_ms.unwrap_or(5_000),
                                    1,
                                    bounds::REQUEST_TIMEOUT_MAX_MS,
                                )
                                .map_err(|e| error(key("push_timeout_ms"), e))?,
                            ),
                            ca,
                            ..PushGatewayConfig::default()
                        })
                        .map_err(|e| match e {
                            crate::prometheus::PrometheusError::Invalid { key: k, reason } => {
                                error(key(push_key(k)), reason)
                            }
                            other => error(key("push_gateway"), other),
                        })?;
                        reporter.pusher = Some(Arc::new(Pusher {
                            gateway,
                            handle,
                            failures: AtomicU64::new(0),
                        }));
                    }
                }
            }
        }
        #[cfg(feature = "push-gateway")]
        if let Some(pusher) = reporter.pusher.clone() {
            let mut stopped = reporter.stop.subscribe();
            reporter.task = Some(tokio::spawn(async move {
                let mut ticks = tokio::time::interval(interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks.tick().await;
                loop {
                    tokio::select! {
                        _ = ticks.tick() => pusher.push().await,
                        _ = stopped.changed() => return,
                    }
                }
            }));
        }
        Ok((reporter, fanout.build()))
    }

    /// Whether a backend keeps metric series of its own (Prometheus, a push gateway,
    /// StatsD, OTLP metrics): what it was given stays there, whatever the window drops.
    pub fn keeps_series(&self) -> bool {
        #[allow(unused_mut)]
        let mut keeps = false;
        #[cfg(feature = "prometheus")]
        {
            keeps |= self.endpoint.is_some();
        }
        #[cfg(feature = "push-gateway")]
        {
            keeps |= self.pusher.is_some();
        }
        #[cfg(feature = "statsd")]
        {
            keeps |= self.statsd.is_some();
        }
        #[cfg(feature = "_otlp")]
        {
            keeps |= self.otlp_metrics.is_some();
        }
        keeps
    }

    /// The `/metrics` endpoint's address, if one runs.
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        #[cfg(feature = "prometheus")]
        return self.endpoint.as_ref().map(PrometheusEndpoint::local_addr);
        #[cfg(not(feature = "prometheus"))]
        None
    }

    /// Pushes to the gateway that failed so far.
    pub fn push_failures(&self) -> u64 {
        #[cfg(feature = "push-gateway")]
        return self
            .pusher
            .as_ref()
            .map_or(0, |p| p.failures.load(Ordering::Relaxed));
        #[cfg(not(feature = "push-gateway"))]
        0
    }

    /// Spans sent, dropped and failed by the OpenTelemetry backend, if it runs.
    #[cfg(feature = "_otlp")]
    pub fn otlp_stats(&self) -> Option<crate::otlp::OtlpStats> {
        self.traces.as_ref().map(OtlpTraces::stats)
    }

    /// The OpenTelemetry backend as a span processor for your own `SdkTracerProvider`
    /// (see [`OtlpTraces::span_processor`]), if that backend runs.
    #[cfg(feature = "_otlp")]
    pub fn span_processor(&self) -> Option<crate::otlp::OtlpSpanProcessor> {
        self.traces.as_ref().map(OtlpTraces::span_processor)
    }

    /// Sends the spans the OpenTelemetry backend has queued now, and waits until they have
    /// been sent (or have failed); returns at once without that backend.
    pub async fn flush_spans(&self) {
        #[cfg(feature = "_otlp")]
        if let Some(traces) = &self.traces {
            traces.flush().await;
        }
    }

    /// Flushes every backend once (a last push, the StatsD buffer, the queued spans), then
    /// stops them.
    pub async fn shutdown(#[allow(unused_mut)] mut self) {
        #[cfg(feature = "_otlp")]
        {
            if let Some(traces) = self.traces.take() {
                traces.shutdown().await;
            }
            if let Some(metrics) = self.otlp_metrics.take() {
                metrics.shutdown().await;
            }
        }
        #[cfg(feature = "push-gateway")]
        {
            let _ = self.stop.send(true);
            if let Some(task) = self.task.take() {
                let _ = task.await;
            }
            if let Some(pusher) = self.pusher.take() {
                pusher.push().await;
            }
        }
        #[cfg(feature = "statsd")]
        if let Some(statsd) = self.statsd.take() {
            statsd.shutdown().await;
        }
        #[cfg(feature = "prometheus")]
        if let Some(endpoint) = self.endpoint.take() {
            endpoint.shutdown().await;
        }
    }
}

#[cfg(feature = "statsd")]
fn statsd_key(e: &crate::statsd::StatsdError) -> &'static str {
    match e {
        crate::statsd::StatsdError::Invalid { key, .. } => key,
    }
}

/// A build without some parts refuses their backends, naming the key and the feature.
#[cfg(all(
    test,
    not(all(
        feature = "prometheus",
        feature = "push-gateway",
        feature = "statsd",
        feature = "_otlp"
    ))
))]
mod parts_left_out {
    use super::*;

    fn refusal(backend: &str) -> Option<ReporterError> {
        let config: ReporterConfig =
            toml::from_str(&format!("[[backends]]\n{backend}")).expect("valid TOML");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime
            .block_on(Reporter::start(&config, &[], None, &Dispatcher::new()))
            .err()
    }

    #[test]
    fn a_backend_whose_feature_is_off_is_refused_naming_the_feature() {
        let cases = [
            (
                cfg!(feature = "statsd"),
                r#"type = "statsd""#,
                "backends[0].type",
                "`statsd`",
            ),
            (
                cfg!(feature = "prometheus"),
                r#"type = "prometheus"
                   listen = "127.0.0.1:0""#,
                "backends[0].listen",
                "`prometheus`",
            ),
            (
                cfg!(feature = "push-gateway"),
                r#"type = "prometheus"
                   push_gateway = "http://127.0.0.1:9091""#,
                "backends[0].push_gateway",
                "`push-gateway`",
            ),
            (
                cfg!(feature = "_otlp"),
                r#"type = "opentelemetry"
                   endpoint = "http://127.0.0.1:4318""#,
                "backends[0].type",
                "`otlp-http`",
            ),
        ];
        let mut refused = 0;
        for (built, backend, key, feature) in cases {
            if built {
                continue;
            }
            let e = refusal(backend).unwrap_or_else(|| panic!("{backend} started"));
            assert_eq!(e.key, key, "{e}");
            assert!(e.reason.contains(feature), "{e}");
            assert!(e.reason.contains("not in this build"), "{e}");
            refused += 1;
        }
        assert!(refused > 0, "this build has every part");
    }

    #[cfg(not(feature = "statsd"))]
    #[test]
    fn the_refusal_reads_as_a_user_sees_it() {
        let e = refusal(r#"type = "statsd""#).expect("refused");
        insta::assert_snapshot!(e.to_string(), @"invalid `backends[0].type`: StatsD is not in this build: turn on the `statsd` feature of dspex-telemetry (or dspex-telemetry-exporters)");
    }

    #[cfg(feature = "_otlp")]
    #[test]
    fn an_otlp_protocol_whose_feature_is_off_is_refused_naming_the_feature() {
        let (protocol, feature) = if cfg!(feature = "otlp-http") {
            ("grpc", "`otlp-grpc`")
        } else {
            ("http/protobuf", "`otlp-http`")
        };
        let e = refusal(&format!(
            "type = \"opentelemetry\"\nendpoint = \"http://127.0.0.1:4318\"\nprotocol = \"{protocol}\""
        ))
        .expect("refused");
        assert_eq!(e.key, "backends[0].protocol", "{e}");
        assert!(e.reason.contains(feature), "{e}");
    }

    #[cfg(all(feature = "otlp-http", not(feature = "otlp-grpc")))]
    #[test]
    fn the_protocol_refusal_reads_as_a_user_sees_it() {
        let e = refusal(
            "type = \"opentelemetry\"\nendpoint = \"http://127.0.0.1:4317\"\nprotocol = \"grpc\"",
        )
        .expect("refused");
        insta::assert_snapshot!(e.to_string(), @"invalid `backends[0].protocol`: OTLP/gRPC is not in this build: turn on the `otlp-grpc` feature of dspex-telemetry (or dspex-telemetry-exporters)");
    }
}
