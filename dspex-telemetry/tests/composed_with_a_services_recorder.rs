//! A service that has its own `metrics` recorder (metrics-exporter-prometheus's) composes the
//! stack with it: `Telemetry::start_composed` hands back the stack's recorder, one fanout holds
//! both, and each /metrics shows the service's series and the stack's. Starting the stack
//! the default way once a recorder is installed fails, saying why.

#[path = "../../dspex-telemetry-exporters/tests/support/mod.rs"]
mod support;

use dspex_telemetry::core::{Dispatcher, catalog, metadata};
use dspex_telemetry::{Config, StartError, Telemetry};
use metrics_util::layers::FanoutBuilder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_services_own_recorder_and_the_stack_share_one_fanout() {
    let theirs = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let their_metrics = theirs.handle();
    let config = Config::from_toml(
        "[reporter]\nreporting_interval = 60000\n\
         [[reporter.backends]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("config");
    let d = Dispatcher::new();
    let (telemetry, ours) = Telemetry::start_composed(&config, &d)
        .await
        .expect("the stack starts without installing a recorder");
    let fanout = FanoutBuilder::default()
        .add_recorder(theirs)
        .add_recorder(ours)
        .build();
    metrics::set_global_recorder(fanout).expect("the service installs its fanout");

    // The service's own metric, and a bridge call through the stack's catalog.
    metrics::counter!("service_requests_total", "route" => "/answer").increment(3);
    d.span(
        &catalog::BRIDGE_CALL,
        metadata! { "module" => "dspy", "function" => "Predict" },
        || ((), metadata! { "success" => true }),
    );

    let theirs = their_metrics.render();
    assert!(
        theirs.contains("service_requests_total{route=\"/answer\"} 3"),
        "{theirs}"
    );
    assert!(
        theirs.contains("dspex_bridge_call_method_count"),
        "the stack's series reach the service's recorder: {theirs}"
    );
    let addr = telemetry.prometheus_addr().expect("the stack's /metrics");
    let (status, ours) = support::http_get(addr, "/metrics", &[])
        .await
        .expect("GET /metrics");
    assert_eq!(status, 200);
    assert!(
        ours.contains("service_requests_total{route=\"/answer\"} 3"),
        "the service's series reach the stack's /metrics: {ours}"
    );
    assert!(ours.contains("dspex_bridge_call_method_count"), "{ours}");
    assert_eq!(
        telemetry
            .window()
            .snapshot()
            .iter()
            .filter(|s| s.name == "service_requests_total")
            .count(),
        1,
        "and its window"
    );

    // The default start, with a recorder installed, fails and says why.
    let again = Telemetry::start(&Config::default(), &Dispatcher::new()).await;
    let error = again.expect_err("one global recorder per process");
    assert!(matches!(error, StartError::RecorderInstalled), "{error}");
    assert!(error.to_string().contains("start_composed"), "{error}");
    telemetry.shutdown().await;
}
