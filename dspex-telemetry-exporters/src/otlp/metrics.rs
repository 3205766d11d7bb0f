//! OTLP metrics: a `metrics::Recorder` keeping counters, gauges and explicit-bucket histograms
//! (cumulative since it was made), exported on an interval over OTLP/HTTP or gRPC.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dspex_telemetry_metrics::{MetricDefinition, MetricKind, catalog};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
#[cfg(feature = "otlp-grpc")]
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    self as pb, AggregationTemporality, HistogramDataPoint, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource as PbResource;
#[cfg(feature = "otlp-http")]
use prost::Message;

#[cfg(feature = "otlp-http")]
use super::client::OtlpHttpClient;
#[cfg(feature = "otlp-grpc")]
use super::client::grpc_channel;
use super::env::{Compression, OtlpConfig, Protocol, ResolvedOtlp, Signal};
#[cfg(not(all(feature = "otlp-http", feature = "otlp-grpc")))]
use super::not_built;
use super::{OtlpError, invalid, log_safe};
use crate::series_map::{SeriesKind, SeriesMap, update_f64};

/// A counter's total, a gauge's value or a histogram's buckets, at one export.
enum PointValue {
    Counter(u64),
    Gauge(f64),
    Histogram {
        count: u64,
        sum: f64,
        min: f64,
        max: f64,
        counts: Vec<u64>,
        bounds: Vec<f64>,
    },
}

/// One metric's points at one export.
struct MetricRecord {
    name: String,
    description: String,
    unit: String,
    points: Vec<(Vec<(String, String)>, PointValue)>,
}

/// The OTLP metrics exporter's configuration: the connection ([`OtlpConfig`]'s keys, and
/// the environment's `…_METRICS_…` variables) and how often to export.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpMetricsConfig {
    /// Where and how (its batching keys are not used).
    pub connection: OtlpConfig,
    /// How often to export (default 10 s).
    pub export_interval: Duration,
}

impl Default for OtlpMetricsConfig {
    fn default() -> Self {
        OtlpMetricsConfig {
            connection: OtlpConfig::default(),
            export_interval: Duration::from_secs(10),
        }
    }
}

enum Series {
    Counter(AtomicU64),
    Gauge(AtomicU64),
    Histogram(Buckets),
}

struct Buckets {
    bounds: Arc<[f64]>,
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

impl CounterFn for Series {
    fn increment(&self, value: u64) {
        if let Series::Counter(total) = self {
            total.fetch_add(value, Ordering::Relaxed);
        }
    }
    fn absolute(&self, value: u64) {
        if let Series::Counter(total) = self {
            total.fetch_max(value, Ordering::Relaxed);
        }
    }
}

impl GaugeFn for Series {
    fn increment(&self, value: f64) {
        if let Series::Gauge(bits) = self {
            update_f64(bits, |v| v + value);
        }
    }
    fn decrement(&self, value: f64) {
        if let Series::Gauge(bits) = self {
            update_f64(bits, |v| v - value);
        }
    }
    fn set(&self, value: f64) {
        if let Series::Gauge(bits) = self {
            bits.store(value.to_bits(), Ordering::Relaxed);
        }
    }
}

impl HistogramFn for Series {
    fn record(&self, value: f64) {
        let Series::Histogram(b) = self else { return };
        if value.is_nan() {
            return;
        }
        // Bucket i holds values in (bounds[i-1], bounds[i]]; the last one everything above.
        let i = b.bounds.partition_point(|&bound| bound < value);
        b.counts[i].fetch_add(1, Ordering::Relaxed);
        update_f64(&b.sum, |s| s + value);
        update_f64(&b.min, |m| m.min(value));
        update_f64(&b.max, |m| m.max(value));
    }
}

struct Shared {
    config: OtlpMetricsConfig,
    resolved: ResolvedOtlp,
    series: SeriesMap<Series>,
    descriptions: RwLock<HashMap<String, (String, Option<Unit>)>>,
    buckets: HashMap<String, Arc<[f64]>>,
    default_buckets: Arc<[f64]>,
    started_unix_ns: u64,
    exported_points: AtomicU64,
    failed_requests: AtomicU64,
}

/// A `metrics::Recorder` for OTLP. Install it (alone or in a fanout) and run
/// [`OtlpMetrics`] to export what it holds. Histograms use the definitions' buckets (the
/// catalog's millisecond buckets for the rest), as the Prometheus recorder does.
#[derive(Clone)]
pub struct OtlpMetricsRecorder {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for OtlpMetricsRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpMetricsRecorder")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl OtlpMetricsRecorder {
    /// A recorder for `config` and `definitions`; errors name the key at fault.
    pub fn new(
        config: OtlpMetricsConfig,
        definitions: &[MetricDefinition],
    ) -> Result<Self, OtlpError> {
        // Checked here so that a bad configuration fails before anything is recorded.
        let resolved = config.connection.resolve(Signal::Metrics)?;
        if config.export_interval.is_zero() {
            return Err(invalid("export_interval", "must be above zero"));
        }
        let buckets = definitions
            .iter()
            .filter_map(|def| match def.kind() {
                MetricKind::Distribution { buckets } => {
                    Some((def.name().to_owned(), Arc::from(buckets.as_slice())))
                }
                _ => None,
            })
            .collect();
        Ok(OtlpMetricsRecorder {
            shared: Arc::new(Shared {
                config,
                resolved,
                series: SeriesMap::default(),
                descriptions: RwLock::new(HashMap::new()),
                buckets,
                default_buckets: Arc::from(catalog::DURATION_BUCKETS_MS),
                started_unix_ns: dspex_telemetry_core::system_time_ns().max(0) as u64,
                exported_points: AtomicU64::new(0),
                failed_requests: AtomicU64::new(0),
            }),
        })
    }

    fn series(&self, kind: SeriesKind, key: &Key, make: impl FnOnce() -> Series) -> Arc<Series> {
        self.shared.series.get_or_create(kind, key, make)
    }

    fn describe(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.shared
            .descriptions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.as_str().to_owned(), (description.into_owned(), unit));
    }

    /// What every series holds now, grouped by metric name.
    fn collect(&self) -> Vec<MetricRecord> {
        let series = self.shared.series.entries();
        let descriptions = self
            .shared
            .descriptions
            .read()
            .unwrap_or_else(|e| e.into_inner());
        // One record per name and kind: a name used as a counter and as a histogram is two
        // metrics (each data point of a record has the record's type).
        let mut by_name: BTreeMap<(String, SeriesKind), MetricRecord> = BTreeMap::new();
        for (key, series) in series {
            let name = key.name().to_owned();
            let kind = match &*series {
                Series::Counter(_) => SeriesKind::Counter,
                Series::Gauge(_) => SeriesKind::Gauge,
                Series::Histogram(_) => SeriesKind::Histogram,
            };
            let (description, unit) = descriptions.get(&name).cloned().unwrap_or_default();
            let record = by_name
                .entry((name.clone(), kind))
                .or_insert_with(|| MetricRecord {
                    name,
                    description,
                    unit: unit.map(ucum).unwrap_or_default(),
                    points: Vec::new(),
                });
            let attributes = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            let value = match &*series {
                Series::Counter(total) => PointValue::Counter(total.load(Ordering::Relaxed)),
                Series::Gauge(bits) => {
                    PointValue::Gauge(f64::from_bits(bits.load(Ordering::Relaxed)))
                }
                Series::Histogram(b) => {
                    let counts: Vec<u64> =
                        b.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
                    PointValue::Histogram {
                        count: counts.iter().sum(),
                        sum: f64::from_bits(b.sum.load(Ordering::Relaxed)),
                        min: f64::from_bits(b.min.load(Ordering::Relaxed)),
                        max: f64::from_bits(b.max.load(Ordering::Relaxed)),
                        counts,
                        bounds: b.bounds.to_vec(),
                    }
                }
            };
            record.points.push((attributes, value));
        }
        by_name.into_values().collect()
    }
}

/// The UCUM unit OTLP expects.
fn ucum(unit: Unit) -> String {
    match unit {
        Unit::Count => "1".into(),
        Unit::Percent => "%".into(),
        Unit::Seconds => "s".into(),
        Unit::Milliseconds => "ms".into(),
        Unit::Microseconds => "us".into(),
        Unit::Nanoseconds => "ns".into(),
        Unit::Bytes => "By".into(),
        other => other.as_canonical_label().to_owned(),
    }
}

impl Recorder for OtlpMetricsRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.series(SeriesKind::Counter, key, || {
            Series::Counter(AtomicU64::new(0))
        }))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.series(SeriesKind::Gauge, key, || {
            Series::Gauge(AtomicU64::new(0f64.to_bits()))
        }))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let bounds = self
            .shared
            .buckets
            .get(key.name())
            .unwrap_or(&self.shared.default_buckets)
            .clone();
        Histogram::from_arc(self.series(SeriesKind::Histogram, key, || {
            Series::Histogram(Buckets {
                counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                bounds,
                sum: AtomicU64::new(0f64.to_bits()),
                min: AtomicU64::new(f64::INFINITY.to_bits()),
                max: AtomicU64::new(f64::NEG_INFINITY.to_bits()),
            })
        }))
    }
}

/// Exports what an [`OtlpMetricsRecorder`] holds every `export_interval`, and once more at
/// [`OtlpMetrics::shutdown`].
#[derive(Debug)]
pub struct OtlpMetrics {
    recorder: OtlpMetricsRecorder,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl OtlpMetrics {
    /// Starts the exporting task on the current tokio runtime.
    pub fn start(recorder: OtlpMetricsRecorder) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let exporter = recorder.clone();
        let task = tokio::spawn(async move {
            let shared = &exporter.shared;
            let Ok(transport) = Transport::new(&shared.resolved) else {
                return;
            };
            let mut ticks = tokio::time::interval(shared.config.export_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = ticks.tick() => exporter.export(&transport).await,
                    _ = stopped.changed() => {
                        let limit = shared.resolved.timeout();
                        let _ = tokio::time::timeout(limit, exporter.export(&transport)).await;
                        return;
                    }
                }
            }
        });
        OtlpMetrics {
            recorder,
            stop,
            task: Some(task),
        }
    }

    /// Data points the collector accepted so far, and requests that failed.
    pub fn stats(&self) -> (u64, u64) {
        let shared = &self.recorder.shared;
        (
            shared.exported_points.load(Ordering::Relaxed),
            shared.failed_requests.load(Ordering::Relaxed),
        )
    }

    /// Exports once more, then stops.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for OtlpMetrics {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// How metric exports travel: the OTLP/HTTP client or a gRPC channel.
enum Transport {
    #[cfg(feature = "otlp-http")]
    Http {
        client: OtlpHttpClient,
        headers: http::HeaderMap,
    },
    #[cfg(feature = "otlp-grpc")]
    Grpc(tonic::transport::Channel),
}

impl Transport {
    fn new(resolved: &ResolvedOtlp) -> Result<Self, OtlpError> {
        Ok(match resolved.protocol() {
            #[cfg(not(feature = "otlp-http"))]
            Protocol::HttpProtobuf => return Err(not_built(Protocol::HttpProtobuf)),
            #[cfg(not(feature = "otlp-grpc"))]
            Protocol::Grpc => return Err(not_built(Protocol::Grpc)),
            #[cfg(feature = "otlp-http")]
            Protocol::HttpProtobuf => Transport::Http {
                client: OtlpHttpClient::new(resolved.timeout(), resolved.roots())
                    .map_err(|e| invalid(resolved.certificate_key(), e))?,
                headers: resolved.http_headers(),
            },
            #[cfg(feature = "otlp-grpc")]
            Protocol::Grpc => Transport::Grpc(
                grpc_channel(resolved.url(), resolved.timeout(), resolved.roots())
                    .map_err(|e| invalid(resolved.endpoint_key(), e))?,
            ),
        })
    }

    async fn send(
        &self,
        resolved: &ResolvedOtlp,
        request: ExportMetricsServiceRequest,
    ) -> Result<(), String> {
        match self {
            #[cfg(feature = "otlp-http")]
            Transport::Http { client, headers } => {
                let mut body = request.encode_to_vec();
                let mut headers = headers.clone();
                if resolved.compression() == Compression::Gzip {
                    body = gzip(&body).map_err(|e| format!("gzip: {e}"))?;
                    headers.insert(
                        http::header::CONTENT_ENCODING,
                        http::HeaderValue::from_static("gzip"),
                    );
                }
                let (status, body) = client
                    .post(resolved.url(), &headers, "application/x-protobuf", body)
                    .await
                    .map_err(|e| e.without_url().to_string())?;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!(
                        "status {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    ))
                }
            }
            #[cfg(feature = "otlp-grpc")]
            Transport::Grpc(channel) => {
                let mut client = MetricsServiceClient::new(channel.clone());
                if resolved.compression() == Compression::Gzip {
                    client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                let mut call = tonic::Request::new(request);
                *call.metadata_mut() = resolved.grpc_metadata();
                call.set_timeout(resolved.timeout());
                client
                    .export(call)
                    .await
                    .map(|_| ())
                    .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
            }
        }
    }
}

#[cfg(feature = "otlp-http")]
fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body)?;
    encoder.finish()
}

fn string_value(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// The `ExportMetricsServiceRequest` holding `metrics`, every point cumulative since
/// `start_unix_ns`, observed at `now_unix_ns`.
fn export_request(
    resource: &opentelemetry_sdk::Resource,
    metrics: Vec<MetricRecord>,
    start_unix_ns: u64,
    now_unix_ns: u64,
) -> ExportMetricsServiceRequest {
    let cumulative = AggregationTemporality::Cumulative as i32;
    let attributes = |labels: &[(String, String)]| {
        labels
            .iter()
            .map(|(k, v)| string_value(k, v))
            .collect::<Vec<_>>()
    };
    let number = |labels: &[(String, String)], value| NumberDataPoint {
        attributes: attributes(labels),
        start_time_unix_nano: start_unix_ns,
        time_unix_nano: now_unix_ns,
        value: Some(value),
        ..Default::default()
    };
    let metrics = metrics
        .into_iter()
        .filter_map(|record| {
            let data = match record.points.first().map(|p| &p.1)? {
                PointValue::Counter(_) => metric::Data::Sum(pb::Sum {
                    data_points: record
                        .points
                        .iter()
                        .filter_map(|(labels, value)| match value {
                            PointValue::Counter(total) => Some(number(
                                labels,
                                number_data_point::Value::AsInt(*total as i64),
                            )),
                            _ => None,
                        })
                        .collect(),
                    aggregation_temporality: cumulative,
                    is_monotonic: true,
                }),
                PointValue::Gauge(_) => metric::Data::Gauge(pb::Gauge {
                    data_points: record
                        .points
                        .iter()
                        .filter_map(|(labels, value)| match value {
                            PointValue::Gauge(v) => {
                                Some(number(labels, number_data_point::Value::AsDouble(*v)))
                            }
                            _ => None,
                        })
                        .collect(),
                }),
                PointValue::Histogram { .. } => metric::Data::Histogram(pb::Histogram {
                    data_points: record
                        .points
                        .iter()
                        .filter_map(|(labels, value)| match value {
                            PointValue::Histogram {
                                count,
                                sum,
                                min,
                                max,
                                counts,
                                bounds,
                            } => Some(HistogramDataPoint {
                                attributes: attributes(labels),
                                start_time_unix_nano: start_unix_ns,
                                time_unix_nano: now_unix_ns,
                                count: *count,
                                sum: Some(*sum),
                                bucket_counts: counts.clone(),
                                explicit_bounds: bounds.clone(),
                                min: (*count > 0).then_some(*min),
                                max: (*count > 0).then_some(*max),
                                ..Default::default()
                            }),
                            _ => None,
                        })
                        .collect(),
                    aggregation_temporality: cumulative,
                }),
            };
            Some(pb::Metric {
                name: record.name,
                description: record.description,
                unit: record.unit,
                data: Some(data),
                ..Default::default()
            })
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(PbResource {
                attributes: resource
                    .iter()
                    .map(|(k, v)| string_value(k.as_str(), &v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "dspex-telemetry".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

impl OtlpMetricsRecorder {
    async fn export(&self, transport: &Transport) {
        let metrics = self.collect();
        if metrics.is_empty() {
            return;
        }
        let shared = &self.shared;
        let points: u64 = metrics.iter().map(|m| m.points.len() as u64).sum();
        let request = export_request(
            &shared.resolved.resource(),
            metrics,
            shared.started_unix_ns,
            dspex_telemetry_core::system_time_ns().max(0) as u64,
        );
        match transport.send(&shared.resolved, request).await {
            Ok(()) => {
                shared.exported_points.fetch_add(points, Ordering::Relaxed);
            }
            Err(why) => {
                if shared.failed_requests.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(error = %log_safe(&why, 200), "OTLP metrics export failed; counting further failures");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static META: Metadata<'static> = Metadata::new("t", metrics::Level::INFO, None);

    #[test]
    fn a_name_used_as_a_counter_and_as_a_histogram_is_two_metrics() {
        let recorder = OtlpMetricsRecorder::new(
            OtlpMetricsConfig {
                connection: OtlpConfig {
                    endpoint: Some("http://127.0.0.1:4318".into()),
                    ..OtlpConfig::default()
                },
                ..OtlpMetricsConfig::default()
            },
            &[],
        )
        .unwrap();
        let key = Key::from_name("dual");
        recorder.register_counter(&key, &META).increment(3);
        recorder.register_histogram(&key, &META).record(2.5);
        let records = recorder.collect();
        assert_eq!(records.len(), 2);
        assert!(
            records
                .iter()
                .all(|r| r.name == "dual" && r.points.len() == 1)
        );
        assert!(
            records
                .iter()
                .any(|r| matches!(r.points[0].1, PointValue::Counter(3)))
        );
        assert!(
            records
                .iter()
                .any(|r| matches!(r.points[0].1, PointValue::Histogram { count: 1, .. }))
        );
    }
}
