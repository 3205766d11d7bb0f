//! A real Prometheus server scrapes our `/metrics` endpoint (with a bearer token) and its
//! PromQL answers with the values the test recorded; `promtool check metrics` finds nothing
//! beyond naming notes (`_total`, `_count` suffixes) on the spec's own counter names.

mod support;

use std::time::Duration;

use dspex_telemetry_core::{Dispatcher, catalog, measurements, metadata};
use dspex_telemetry_exporters::Secret;
use dspex_telemetry_exporters::prometheus::{
    PrometheusConfig, PrometheusEndpoint, prometheus_recorder,
};
use dspex_telemetry_metrics::{MetricsHandler, catalog as metric_catalog};
use support::{PrometheusServer, http_get};

const TOKEN: &str = "test-token-7f3a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_endpoint_and_promql_reads_back_what_was_recorded() {
    let recorder = prometheus_recorder(&metric_catalog::dspex_metrics()).unwrap();
    let handle = recorder.handle();
    let d = Dispatcher::new();
    // 100 calls: 90 of 20 ms and 10 of 400 ms; 5 of them failed.
    metrics::with_local_recorder(&recorder, || {
        let _m = MetricsHandler::attach(&d, "m", metric_catalog::dspex_metrics(), 100).unwrap();
        let md = metadata! { "module" => "dspy", "function" => "Predict" };
        for i in 0..100 {
            let ns: i64 = if i < 90 { 20_000_000 } else { 400_000_000 };
            if i % 20 == 0 {
                d.execute(
                    catalog::BRIDGE_CALL.exception(),
                    &measurements! { "duration" => ns },
                    &md.clone().with("kind", "error"),
                );
            } else {
                d.execute(
                    catalog::BRIDGE_CALL.stop(),
                    &measurements! { "duration" => ns },
                    &md,
                );
            }
        }
    });
    let config = PrometheusConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        bearer_token: Some(Secret::new(TOKEN)),
        ..PrometheusConfig::default()
    };
    let endpoint = PrometheusEndpoint::start(&config, handle).await.unwrap();
    let addr = endpoint.local_addr();
    assert!(addr.ip().is_loopback());

    // Without the token: refused; with it: the text.
    let (status, _) = http_get(addr, "/metrics", &[]).await.unwrap();
    assert_eq!(status, 401);
    let bearer = format!("Bearer {TOKEN}");
    let (status, _) = http_get(addr, "/metrics", &[("Authorization", "Bearer wrong")])
        .await
        .unwrap();
    assert_eq!(status, 401);
    let (status, text) = http_get(addr, "/metrics", &[("Authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(http_get(addr, "/other", &[]).await.unwrap().0, 404);
    support::check_well_formed(&support::parse(&text));

    let prometheus = PrometheusServer::start(addr, Some(TOKEN));
    prometheus.until(r#"up{job="dspex"}"#, |v| v == 1.0).await;
    let count = prometheus
        .until(
            r#"dspex_bridge_call_method_count{method="dspy.Predict"}"#,
            |_| true,
        )
        .await;
    assert_eq!(count, 100.0);
    let errors = prometheus
        .until(
            r#"dspex_bridge_call_method_errors{method="dspy.Predict"}"#,
            |_| true,
        )
        .await;
    assert_eq!(errors, 5.0);
    // p50 lies in the (10, 25] ms bucket, p99 in the (250, 500] one: Prometheus interpolates
    // within the bucket.
    let p50 = prometheus
        .until(
            "histogram_quantile(0.5, sum by (le) (dspex_bridge_call_method_duration_bucket))",
            |_| true,
        )
        .await;
    assert!((10.0..=25.0).contains(&p50), "p50 {p50}");
    let p99 = prometheus
        .until(
            "histogram_quantile(0.99, sum by (le) (dspex_bridge_call_method_duration_bucket))",
            |_| true,
        )
        .await;
    assert!((250.0..=500.0).contains(&p99), "p99 {p99}");
    let sum = prometheus
        .until("sum(dspex_bridge_call_method_duration_sum)", |_| true)
        .await;
    assert!(
        (sum - (90.0 * 20.0 + 10.0 * 400.0)).abs() < 1e-6,
        "sum {sum}"
    );
    drop(prometheus);
    endpoint.shutdown().await;
    // The port is free again.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), http_get(addr, "/metrics", &[]))
            .await
            .map_or(true, |r| r.is_err()),
        "the endpoint still answers after shutdown"
    );
}

#[test]
fn promtool_finds_nothing_beyond_naming_notes_on_the_specs_counter_names() {
    let promtool = support::which("promtool").expect(
        "the `promtool` binary is needed (Debian package `prometheus`; `.ci/run` installs it)",
    );
    let recorder = prometheus_recorder(&metric_catalog::dspex_metrics()).unwrap();
    let handle = recorder.handle();
    let d = Dispatcher::new();
    metrics::with_local_recorder(&recorder, || {
        let _m = MetricsHandler::attach(&d, "m", metric_catalog::dspex_metrics(), 100).unwrap();
        let md = metadata! { "module" => "dspy", "function" => "Predict" };
        d.execute(
            catalog::BRIDGE_CALL.stop(),
            &measurements! { "duration" => 3_000_000 },
            &md,
        );
        d.execute(
            catalog::BRIDGE_CALL.exception(),
            &measurements! { "duration" => 3_000_000 },
            &md.clone().with("kind", "timeout"),
        );
        d.execute(
            catalog::TOOLS_EXECUTE.stop(),
            &measurements! { "duration" => 1_000_000 },
            &metadata! { "tool_name" => "search" },
        );
    });
    let text = handle.render();
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The spec's own counter names (`…_count`, `…_errors`) draw naming notes; nothing else may.
    const SPEC_COUNTERS: [&str; 4] = [
        "dspex_bridge_call_method_count",
        "dspex_bridge_call_method_errors",
        "dspex_tools_execute_count",
        "dspex_tools_execute_errors",
    ];
    let naming_note = |l: &str| {
        l.contains("counter metrics should have \"_total\" suffix")
            || l.contains("non-histogram and non-summary metrics should not have \"_count\" suffix")
    };
    let problems: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            !(naming_note(l) && SPEC_COUNTERS.contains(&l.split_whitespace().next().unwrap_or("")))
        })
        .collect();
    assert!(
        problems.is_empty(),
        "promtool says:\n{report}\nfor:\n{text}"
    );
    // It did read the text: the spec's names draw their notes.
    assert!(
        report.contains("dspex_bridge_call_method_count"),
        "promtool read nothing: {report}"
    );
}
