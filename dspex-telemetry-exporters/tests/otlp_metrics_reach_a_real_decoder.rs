//! Metrics reach a real OTLP decoder (the official Python classes, over HTTP and gRPC): the
//! catalog's counters as monotonic cumulative sums, gauges, and duration histograms with the
//! catalog's millisecond bounds, with their labels, units and descriptions.

mod support;

use std::time::Duration;

use dspex_telemetry_core::{Dispatcher, catalog, measurements, metadata};
use dspex_telemetry_exporters::otlp::{
    OtlpConfig, OtlpMetrics, OtlpMetricsConfig, OtlpMetricsRecorder, Protocol,
};
use dspex_telemetry_metrics::{MetricsHandler, catalog as metric_catalog};
use serde_json::{Value, json};
use support::OtlpReceiver;

fn record(recorder: &OtlpMetricsRecorder) {
    let d = Dispatcher::new();
    metrics::with_local_recorder(recorder, || {
        let _m = MetricsHandler::attach(&d, "m", metric_catalog::dspex_metrics(), 100).unwrap();
        let md = metadata! { "module" => "dspy", "function" => "Predict" };
        for ms in [2i64, 20, 20, 400] {
            d.execute(
                catalog::BRIDGE_CALL.stop(),
                &measurements! { "duration" => ms * 1_000_000 },
                &md,
            );
        }
        metrics::gauge!("app_queue_depth", "pool" => "default").set(3.5);
    });
}

fn point<'a>(points: &'a [Value], name: &str) -> &'a Value {
    points
        .iter()
        .rev()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no point for {name} in {points:#?}"))
}

async fn exported_through(protocol: Protocol) {
    let receiver = OtlpReceiver::start().await;
    let endpoint = match protocol {
        Protocol::HttpProtobuf => receiver.addr,
        Protocol::Grpc => receiver.grpc,
    };
    let recorder = OtlpMetricsRecorder::new(
        OtlpMetricsConfig {
            connection: OtlpConfig {
                endpoint: Some(format!("http://{endpoint}").into()),
                protocol: Some(protocol),
                service_name: Some("metrics-test".into()),
                compression: Some(dspex_telemetry_exporters::otlp::Compression::Gzip),
                ..OtlpConfig::default()
            },
            export_interval: Duration::from_secs(3600),
        },
        &metric_catalog::dspex_metrics(),
    )
    .unwrap();
    let exporter = OtlpMetrics::start(recorder.clone());
    record(&recorder);
    // The interval is an hour: what arrives was sent by shutdown.
    exporter.shutdown().await;
    let points = receiver.points().await;

    let count = point(&points, "dspex_bridge_call_method_count");
    assert_eq!(count["kind"], json!("sum"));
    assert_eq!(count["monotonic"], json!(true));
    assert_eq!(count["temporality"], json!(2), "cumulative");
    assert_eq!(count["value"], json!(4));
    assert_eq!(count["attributes"]["method"], json!("dspy.Predict"));
    assert_eq!(count["resource"]["service.name"], json!("metrics-test"));

    let duration = point(&points, "dspex_bridge_call_method_duration");
    assert_eq!(duration["kind"], json!("histogram"));
    assert_eq!(duration["unit"], json!("ms"));
    assert!(
        duration["description"]
            .as_str()
            .unwrap()
            .contains("milliseconds")
    );
    assert_eq!(duration["count"], json!(4));
    assert_eq!(duration["sum"], json!(442.0));
    assert_eq!(
        (duration["min"].clone(), duration["max"].clone()),
        (json!(2.0), json!(400.0))
    );
    let bounds: Vec<f64> = serde_json::from_value(duration["explicit_bounds"].clone()).unwrap();
    assert_eq!(bounds, metric_catalog::DURATION_BUCKETS_MS);
    let counts: Vec<u64> = serde_json::from_value(duration["bucket_counts"].clone()).unwrap();
    assert_eq!(counts.len(), bounds.len() + 1);
    assert_eq!(counts.iter().sum::<u64>(), 4);
    // 2 ms in (1, 2.5], 20 ms twice in (10, 25], 400 ms in (250, 500].
    let bucket_of = |v: f64| bounds.partition_point(|&b| b < v);
    assert_eq!(counts[bucket_of(2.0)], 1);
    assert_eq!(counts[bucket_of(20.0)], 2);
    assert_eq!(counts[bucket_of(400.0)], 1);

    let gauge = point(&points, "app_queue_depth");
    assert_eq!(gauge["kind"], json!("gauge"));
    assert_eq!(gauge["value"], json!(3.5));
    assert!(points.iter().all(|p| p["transport"]
        == json!(match protocol {
            Protocol::HttpProtobuf => "http",
            Protocol::Grpc => "grpc",
        })));
    // Compressed: over HTTP the receiver saw the encoding (grpcio decodes without showing it).
    if protocol == Protocol::HttpProtobuf {
        assert!(
            points
                .iter()
                .all(|p| p["headers"]["content-encoding"] == "gzip"),
            "{:#?}",
            points[0]["headers"]
        );
    }
    assert!(
        points
            .iter()
            .all(|p| p["start"].as_u64() <= p["time"].as_u64())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_arrive_over_http() {
    exported_through(Protocol::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_arrive_over_grpc() {
    exported_through(Protocol::Grpc).await;
}

#[test]
fn bad_configuration_names_the_key() {
    for (config, key) in [
        (
            OtlpMetricsConfig {
                connection: OtlpConfig {
                    endpoint: Some("ftp://x".into()),
                    ..OtlpConfig::default()
                },
                ..Default::default()
            },
            "endpoint",
        ),
        (
            OtlpMetricsConfig {
                export_interval: Duration::ZERO,
                ..Default::default()
            },
            "export_interval",
        ),
        (
            OtlpMetricsConfig {
                connection: OtlpConfig {
                    timeout: Some(Duration::ZERO),
                    ..OtlpConfig::default()
                },
                ..Default::default()
            },
            "timeout",
        ),
    ] {
        let err = OtlpMetricsRecorder::new(config, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("`{key}`")), "{err} should name {key}");
    }
}
