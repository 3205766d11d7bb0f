//! A real DSPy program's LM calls counted in the metrics, read from a real Prometheus
//! exporter's output: calls, errors and tokens by model. (Its own test binary: it installs
//! the process's global recorder.)

use std::path::PathBuf;
use std::time::Duration;

use dspex_telemetry_bridge::{Args, DspyModule, Pool, PoolConfig};
use dspex_telemetry_core::Dispatcher;
use dspex_telemetry_metrics::{MetricsHandler, catalog};
use metrics_exporter_prometheus::PrometheusBuilder;

fn dspy_python() -> String {
    let peers = std::env::var_os("DSPEX_TEST_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-peers"));
    let python = peers.join("dspy-venv/bin/python");
    assert!(
        python.is_file(),
        "no DSPy environment at {}: run `cargo xtask peers` (or `cargo xtask test`), which installs dspy",
        python.display()
    );
    python.to_string_lossy().into_owned()
}

/// The value of the sample `name{labels}` in Prometheus text (labels in the exporter's order).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lm_calls_and_their_tokens_are_counted_by_model() {
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this test binary");
    let d = Dispatcher::new();
    let _metrics = MetricsHandler::attach(&d, "metrics", catalog::dspex_metrics(), 100).unwrap();
    let pool = Pool::start(PoolConfig {
        size: 1,
        python: dspy_python(),
        python_path: vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python")],
        preload: vec!["dspy_offline".into()],
        dispatcher: d.clone(),
        health_interval: None,
        startup_timeout: Duration::from_secs(60),
        call_timeout: Duration::from_secs(60),
        ..PoolConfig::default()
    })
    .await
    .expect("a worker with DSPy must start");
    let predict = DspyModule::predict(&pool, "question -> answer")
        .await
        .unwrap();
    for question in ["2 + 2?", "3 + 1?"] {
        predict
            .execute(Args::new().kwarg("question", question))
            .await
            .unwrap();
    }
    pool.call("dspy_offline", "use_failing_lm", vec![])
        .await
        .unwrap();
    assert!(
        predict
            .execute(Args::new().kwarg("question", "?"))
            .await
            .is_err()
    );
    let text = prometheus.render();
    let model = r#"model="openai/gpt-4o-mini""#;
    let read = |series: String| {
        sample(&text, &series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    assert_eq!(read(format!("dspex_lm_call_count{{{model}}}")), 3.0);
    assert_eq!(read(format!("dspex_lm_call_errors{{{model}}}")), 1.0);
    assert_eq!(
        read(format!("dspex_lm_tokens_total{{{model},kind=\"prompt\"}}")),
        20.0
    );
    assert_eq!(
        read(format!(
            "dspex_lm_tokens_total{{{model},kind=\"completion\"}}"
        )),
        40.0
    );
    assert_eq!(
        read(format!("dspex_lm_call_duration_count{{{model}}}")),
        3.0
    );
    pool.shutdown().await;
}
