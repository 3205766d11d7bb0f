//! Absurd numbers in the configuration are refused at start, each error naming its key; the
//! largest accepted value of each key starts.

use dspex_telemetry::{Config, Telemetry};
use dspex_telemetry_core::Dispatcher;

async fn start_error(text: &str) -> Option<String> {
    let config = Config::from_toml(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    Telemetry::start(&config, &Dispatcher::new())
        .await
        .err()
        .map(|e| e.to_string())
}

const WEBHOOK: &str =
    "[[alerts.alert_handlers]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n";
const ALERTMANAGER: &str =
    "[[alerts.alert_handlers]]\ntype = \"alertmanager\"\nurl = \"http://127.0.0.1:9\"\n";
const PUSH: &str =
    "[[reporter.backends]]\ntype = \"prometheus\"\npush_gateway = \"http://127.0.0.1:9\"\n";
const OTLP: &str =
    "[[reporter.backends]]\ntype = \"opentelemetry\"\nendpoint = \"http://127.0.0.1:9\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_values_are_refused_naming_their_key() {
    let cases: Vec<(String, &str)> = vec![
        (
            "[metrics]\nwindow_size_ms = 9223372036854775807".into(),
            "window_size_ms",
        ),
        (
            "[metrics]\nmax_samples = 1000000000000".into(),
            "max_samples",
        ),
        ("[metrics]\nsub_windows = 100000".into(), "sub_windows"),
        (
            "[metrics]\nmax_series_per_metric = 0".into(),
            "max_series_per_metric",
        ),
        (
            "[metrics]\nmax_series_per_metric = 1000000000".into(),
            "max_series_per_metric",
        ),
        ("[metrics]\nidle_timeout_ms = 0".into(), "idle_timeout_ms"),
        (
            "[metrics]\nidle_timeout_ms = 18446744073709551615".into(),
            "idle_timeout_ms",
        ),
        (
            "[alerts.thresholds]\nerror_rate_percent = 500".into(),
            "thresholds.error_rate_percent",
        ),
        (
            "[alerts.thresholds]\nerror_rate_percent = nan".into(),
            "thresholds.error_rate_percent",
        ),
        (
            "[alerts.thresholds]\nbridge_call_p99_ms = 1e300".into(),
            "thresholds.bridge_call_p99_ms",
        ),
        (
            "[alerts.thresholds]\nqueue_time_ms = inf".into(),
            "thresholds.queue_time_ms",
        ),
        (
            "[alerts]\nevaluation_interval_ms = 9223372036854775807".into(),
            "evaluation_interval_ms",
        ),
        (
            "[alerts.suppression]\nmin_interval_ms = 9223372036854775807".into(),
            "suppression.min_interval_ms",
        ),
        (
            "[alerts.suppression]\noccurrence_threshold = 0".into(),
            "suppression.occurrence_threshold",
        ),
        (
            "[alerts.suppression]\noccurrence_threshold = 4000000000".into(),
            "suppression.occurrence_threshold",
        ),
        (
            format!("{WEBHOOK}retries = 4000000000"),
            "alert_handlers[0].retries",
        ),
        (
            format!("{WEBHOOK}timeout_ms = 0"),
            "alert_handlers[0].timeout_ms",
        ),
        (
            format!("{ALERTMANAGER}timeout_ms = 86400000"),
            "alert_handlers[0].timeout_ms",
        ),
        (
            "[reporter]\nreporting_interval = 9223372036854775807".into(),
            "reporting_interval",
        ),
        (
            format!("{PUSH}push_timeout_ms = 0"),
            "backends[0].push_timeout_ms",
        ),
        (
            format!("{PUSH}push_timeout_ms = 86400000"),
            "backends[0].push_timeout_ms",
        ),
        (
            format!("{OTLP}timeout_ms = 86400000"),
            "backends[0].timeout_ms",
        ),
        (
            format!("{OTLP}max_queue = 1000000000000"),
            "backends[0].max_queue",
        ),
    ];
    for (text, key) in &cases {
        let err = start_error(text)
            .await
            .unwrap_or_else(|| panic!("{text:?} started"));
        assert!(err.contains(&format!(".{key}`")), "{text:?}: {err}");
        assert!(err.contains("must be"), "{text:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_accepted_values_start() {
    let text = format!(
        "[metrics]\nwindow_size_ms = 604800000\nmax_samples = 1000000\nsub_windows = 1000\n\
         max_series_per_metric = 1000000\nidle_timeout_ms = 604800000\n\
         [alerts]\nevaluation_interval_ms = 86400000\n\
         [alerts.thresholds]\nerror_rate_percent = 100\nbridge_call_p99_ms = 604800000\n\
         [alerts.suppression]\nmin_interval_ms = 604800000\noccurrence_threshold = 1000000\n\
         {WEBHOOK}retries = 10\ntimeout_ms = 300000\n\
         [reporter]\nreporting_interval = 604800000\n"
    );
    assert_eq!(start_error(&text).await, None);
}
