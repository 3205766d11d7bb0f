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

use super::proto::{self, MetricRecord, PointValue};
use super::transport::{Signal, Transport};
use super::{OtlpError, Protocol, resource};
use crate::Secret;
use crate::series_map::{SeriesMap, update_f64};

/// The OTLP metrics exporter's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpMetricsConfig {
    /// The collector's base URL (default `http://127.0.0.1:4318`; gRPC usually 4317).
    pub endpoint: String,
    /// OTLP/HTTP (default) or OTLP/gRPC.
    pub protocol: Protocol,
    /// Extra request headers; values never shown in `Debug`.
    pub headers: Vec<(String, Secret)>,
    /// The `service.name` resource attribute (default `dspex`).
    pub service_name: String,
    /// The `service.version` resource attribute, if any.
    pub service_version: Option<String>,
    /// How often to export (default 10 s).
    pub export_interval: Duration,
    /// How long one request may take (default 10 s).
    pub timeout: Duration,
}

impl Default for OtlpMetricsConfig {
    fn default() -> Self {
        OtlpMetricsConfig {
            endpoint: "http://127.0.0.1:4318".into(),
            protocol: Protocol::HttpProtobuf,
            headers: Vec::new(),
            service_name: "dspex".into(),
            service_version: None,
            export_interval: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
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
        Transport::new(
            config.protocol,
            &config.endpoint,
            &config.headers,
            config.timeout,
        )
        .map_err(|(key, reason)| OtlpError::Invalid { key, reason })?;
        if config.export_interval.is_zero() {
            return Err(OtlpError::Invalid {
                key: "export_interval",
                reason: "must be above zero".into(),
            });
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

    fn series(&self, key: &Key, make: impl FnOnce() -> Series) -> Arc<Series> {
        self.shared.series.get_or_create(key, make)
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
        let mut by_name: BTreeMap<String, MetricRecord> = BTreeMap::new();
        for (key, series) in series {
            let name = key.name().to_owned();
            let (description, unit) = descriptions.get(&name).cloned().unwrap_or_default();
            let record = by_name.entry(name.clone()).or_insert_with(|| MetricRecord {
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
        Counter::from_arc(self.series(key, || Series::Counter(AtomicU64::new(0))))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.series(key, || Series::Gauge(AtomicU64::new(0f64.to_bits()))))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let bounds = self
            .shared
            .buckets
            .get(key.name())
            .unwrap_or(&self.shared.default_buckets)
            .clone();
        Histogram::from_arc(self.series(key, || {
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
            let config = &exporter.shared.config;
            let Ok(transport) = Transport::new(
                config.protocol,
                &config.endpoint,
                &config.headers,
                config.timeout,
            ) else {
                return;
            };
            let mut ticks = tokio::time::interval(config.export_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = ticks.tick() => exporter.export(&transport).await,
                    _ = stopped.changed() => {
                        exporter.export(&transport).await;
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

impl OtlpMetricsRecorder {
    async fn export(&self, transport: &Transport) {
        let metrics = self.collect();
        if metrics.is_empty() {
            return;
        }
        let shared = &self.shared;
        let points: u64 = metrics.iter().map(|m| m.points.len() as u64).sum();
        let body = proto::export_metrics_request(
            &resource(
                &shared.config.service_name,
                shared.config.service_version.as_deref(),
            ),
            "dspex-telemetry",
            env!("CARGO_PKG_VERSION"),
            &metrics,
            shared.started_unix_ns,
            dspex_telemetry_core::system_time_ns().max(0) as u64,
        );
        match transport.export(Signal::Metrics, body).await {
            Ok(()) => {
                shared.exported_points.fetch_add(points, Ordering::Relaxed);
            }
            Err(why) => {
                if shared.failed_requests.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(error = %why, "OTLP metrics export failed; counting further failures");
                }
            }
        }
    }
}
