//! The quickstart, run briefly with a real Prometheus scraping its `/metrics`: alerts fire and
//! resolve, and every query of the generated Grafana dashboard is valid PromQL that returns
//! data from what the run exported.

#[path = "../../dspex-telemetry-exporters/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use dspex_telemetry::quickstart::{self, Options};
use dspex_telemetry_exporters::grafana;
use dspex_telemetry_metrics::catalog;
use support::{PrometheusServer, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_feeds_every_dashboard_query_and_its_alerts_fire_and_resolve() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let prometheus = PrometheusServer::start(listen.parse().unwrap(), None);
    let options = Options {
        duration: Duration::from_secs(30),
        workers: 4,
        listen,
        ..Options::default()
    };
    let mut output: Vec<u8> = Vec::new();
    let summary = quickstart::run(options, &mut output)
        .await
        .expect("the quickstart runs");
    // The queries look at the run's last seconds: once its /metrics is gone, Prometheus marks
    // the gauges stale.
    let during_the_run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - 3.0;
    let output = String::from_utf8_lossy(&output);
    assert!(summary.requests > 100, "{output}");
    assert!(summary.fired >= 2, "alerts fired:\n{output}");
    assert!(summary.resolved >= 1, "alerts resolved:\n{output}");
    assert!(
        summary
            .transcript
            .iter()
            .any(|l| l.contains("FIRED") && l.contains("web_search")),
        "the slow tool's alert:\n{output}"
    );
    assert!(output.contains("Summary:"), "{output}");

    // Prometheus scraped the run every second; its last minute is in the store.
    prometheus
        .until("sum(dspex_bridge_call_method_count)", |v| v > 100.0)
        .await;
    let dashboard = grafana::dashboard(&catalog::dspex_metrics());
    let mut empty = Vec::new();
    let queries = grafana::queries(&dashboard);
    for expr in &queries {
        let promql = expr
            .replace(grafana::RATE_INTERVAL, "1m")
            .replace("$__range", "5m");
        match prometheus
            .query_series_at(&promql, Some(during_the_run))
            .await
        {
            Ok(0) => empty.push(promql),
            Ok(_) => {}
            Err(e) => panic!("Prometheus refused `{promql}`: {e}"),
        }
    }
    assert!(
        empty.is_empty(),
        "{} of {} dashboard queries returned no data:\n{}\nquickstart output:\n{output}",
        empty.len(),
        queries.len(),
        empty.join("\n")
    );
}
