//! What a real StatsD daemon (Etsy statsd 0.9) receives equals what was recorded: counter
//! sums, every timing value, gauges (negative ones too), with labels folded into the name or
//! sent as DogStatsD tags; shutdown sends what is left; a daemon that is away loses only what
//! was sent meanwhile, and delivery resumes when it is back.

mod support;

use std::time::Duration;

use dspex_telemetry_exporters::statsd::{StatsdConfig, StatsdExporter, StatsdRecorder, TagStyle};
use support::{StatsdServer, free_port};

fn recorder(port: u16, tags: TagStyle, flush: Duration) -> StatsdRecorder {
    StatsdRecorder::new(StatsdConfig {
        port,
        tags,
        flush_interval: flush,
        ..StatsdConfig::default()
    })
    .unwrap()
}

fn record_a_few(recorder: &StatsdRecorder) {
    metrics::with_local_recorder(recorder, || {
        let calls = metrics::counter!("dspex_bridge_call_method_count", "method" => "dspy.Predict");
        calls.increment(3);
        calls.increment(4);
        for ms in [5.0, 10.0, 15.5] {
            metrics::histogram!("dspex_bridge_call_method_duration", "method" => "dspy.Predict")
                .record(ms);
        }
        metrics::gauge!("dspex_pool_queue_depth", "pool" => "default").set(5.0);
        metrics::gauge!("app_balance").set(-2.5);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_timings_and_gauges_arrive_with_labels_folded_into_the_name() {
    let server = StatsdServer::start().await;
    let recorder = recorder(
        server.addr.port(),
        TagStyle::Folded,
        Duration::from_millis(100),
    );
    let exporter = StatsdExporter::start(recorder.clone()).await.unwrap();
    record_a_few(&recorder);
    let key = "dspex_bridge_call_method_count.dspy.Predict";
    assert_eq!(server.until_number("counters", key, 7.0).await, Some(7.0));
    assert_eq!(
        server
            .timers()
            .await
            .get("dspex_bridge_call_method_duration.dspy.Predict"),
        Some(&(vec![5.0, 10.0, 15.5], 3))
    );
    let gauges = server.numbers("gauges").await;
    assert_eq!(gauges.get("dspex_pool_queue_depth.default"), Some(&5.0));
    assert_eq!(
        gauges.get("app_balance"),
        Some(&-2.5),
        "a negative gauge is set, not added"
    );
    // Nothing more is sent while nothing is recorded: counters are deltas.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.numbers("counters").await.get(key), Some(&7.0));
    assert_eq!(
        server
            .numbers("counters")
            .await
            .get("statsd.bad_lines_seen"),
        Some(&0.0)
    );
    assert!(exporter.stats().packets_sent > 0);
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dogstatsd_tags_arrive_as_tags() {
    let server = StatsdServer::start().await;
    let recorder = recorder(
        server.addr.port(),
        TagStyle::DogStatsd,
        Duration::from_millis(100),
    );
    let exporter = StatsdExporter::start(recorder.clone()).await.unwrap();
    record_a_few(&recorder);
    // Etsy statsd folds DogStatsD tags into its key as `;name=value`.
    let key = "dspex_bridge_call_method_count;method=dspy.Predict";
    assert_eq!(server.until_number("counters", key, 7.0).await, Some(7.0));
    assert_eq!(
        server
            .timers()
            .await
            .get("dspex_bridge_call_method_duration;method=dspy.Predict"),
        Some(&(vec![5.0, 10.0, 15.5], 3))
    );
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_what_is_left_and_the_sample_buffer_is_bounded() {
    let server = StatsdServer::start().await;
    let recorder = StatsdRecorder::new(StatsdConfig {
        port: server.addr.port(),
        flush_interval: Duration::from_secs(3600),
        max_buffered_samples: 1_000,
        max_packet_bytes: 512,
        ..StatsdConfig::default()
    })
    .unwrap();
    let exporter = StatsdExporter::start(recorder.clone()).await.unwrap();
    metrics::with_local_recorder(&recorder, || {
        for i in 0..5_000 {
            metrics::histogram!("app_latency").record(f64::from(i % 100));
        }
        metrics::counter!("app_jobs_total").increment(12);
    });
    assert_eq!(exporter.stats().samples_dropped, 4_000);
    exporter.shutdown().await;
    assert_eq!(
        server
            .until_number("counters", "app_jobs_total", 12.0)
            .await,
        Some(12.0)
    );
    let limit = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = server.timers().await.get("app_latency").map_or(0, |t| t.1);
        if got == 1_000 || std::time::Instant::now() > limit {
            assert_eq!(got, 1_000, "every buffered sample arrives at shutdown");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_when_the_daemon_comes_back() {
    let port = free_port();
    let recorder = recorder(port, TagStyle::Folded, Duration::from_millis(50));
    let exporter = StatsdExporter::start(recorder.clone()).await.unwrap();
    // No daemon yet: recording goes on, and what is sent meanwhile is lost (UDP).
    metrics::with_local_recorder(&recorder, || {
        for _ in 0..100_000 {
            metrics::counter!("app_events_total").increment(1);
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server = StatsdServer::start_on(port).await;
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("app_events_total").increment(2)
    });
    assert_eq!(
        server
            .until_number("counters", "app_events_total", 2.0)
            .await,
        Some(2.0)
    );
    exporter.shutdown().await;
}

#[test]
fn bad_configuration_names_the_key() {
    let cases = [
        (
            StatsdConfig {
                host: String::new(),
                ..Default::default()
            },
            "host",
        ),
        (
            StatsdConfig {
                port: 0,
                ..Default::default()
            },
            "port",
        ),
        (
            StatsdConfig {
                flush_interval: Duration::ZERO,
                ..Default::default()
            },
            "flush_interval",
        ),
        (
            StatsdConfig {
                max_packet_bytes: 10,
                ..Default::default()
            },
            "max_packet_bytes",
        ),
        (
            StatsdConfig {
                prefix: Some("a b".into()),
                ..Default::default()
            },
            "prefix",
        ),
    ];
    for (config, key) in cases {
        let err = StatsdRecorder::new(config).unwrap_err().to_string();
        assert!(err.contains(&format!("`{key}`")), "{err} should name {key}");
    }
}
