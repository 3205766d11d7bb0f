//! A worker's memory as the catalog's metric, read from a real Prometheus exporter's output,
//! follows the worker's real resident memory while Python allocates. (Its own test binary: it
//! installs the process's global recorder.)

use std::path::PathBuf;
use std::time::{Duration, Instant};

use dspex_telemetry_bridge::{Pool, PoolConfig, ResourceUsage};
use dspex_telemetry_core::Dispatcher;
use dspex_telemetry_metrics::{MetricsHandler, catalog};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;

/// The value of the one sample whose line starts with `prefix`, if there is one.
fn sample(prometheus: &PrometheusHandle, prefix: &str) -> Option<f64> {
    let text = prometheus.render();
    let mut values = text
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok());
    let value = values.next()?;
    assert!(values.next().is_none(), "one series expected:\n{text}");
    Some(value)
}

async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_metric_follows_a_workers_real_rss() {
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this test binary");
    let d = Dispatcher::new();
    let _metrics = MetricsHandler::attach(&d, "metrics", catalog::dspex_metrics(), 100).unwrap();
    let pool = Pool::start(PoolConfig {
        name: "memory".into(),
        size: 1,
        python_path: vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python")],
        dispatcher: d.clone(),
        health_interval: Some(Duration::from_millis(50)),
        ..PoolConfig::default()
    })
    .await
    .expect("a worker must start");
    let worker_series = r#"dspex_pool_worker_memory_bytes{pool="memory",worker_id="#;
    let pid = pool
        .call("lifecycle_fixtures", "grow", vec![json!(0)])
        .await
        .unwrap()
        .as_u64()
        .unwrap() as u32;
    until("the worker's memory metric", || {
        sample(&prometheus, worker_series).is_some()
    })
    .await;
    let before = sample(&prometheus, worker_series).unwrap();
    let os = ResourceUsage::of(pid).expect("the worker's /proc entry");
    assert!(
        (os.memory_bytes as f64 - before).abs() < (8 << 20) as f64,
        "metric {before} vs the OS's {os:?}"
    );
    // The service's own process is reported too.
    until("the process's memory metric", || {
        sample(&prometheus, "dspex_process_memory_bytes ").is_some_and(|v| v > 0.0)
    })
    .await;

    // 200 MiB more, written, held by the worker: the metric follows.
    pool.call("lifecycle_fixtures", "grow", vec![json!(200)])
        .await
        .unwrap();
    until("the metric to show the growth", || {
        sample(&prometheus, worker_series).unwrap_or(0.0) >= before + (190 << 20) as f64
    })
    .await;
    let after = sample(&prometheus, worker_series).unwrap();
    let os = ResourceUsage::of(pid).unwrap();
    assert!(
        (os.memory_bytes as f64 - after).abs() < (16 << 20) as f64,
        "metric {after} vs the OS's {os:?}"
    );
    pool.shutdown().await;
}
