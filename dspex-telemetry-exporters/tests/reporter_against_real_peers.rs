//! The Reporter from one TOML configuration: StatsD and Prometheus (endpoint and push
//! gateway) receive what events recorded, on the interval and at shutdown; bad
//! configuration names the key.

mod support;

use dspex_telemetry_core::{Dispatcher, catalog, measurements, metadata};
use dspex_telemetry_exporters::reporter::{Reporter, ReporterConfig};
use dspex_telemetry_metrics::{
    MetricsHandler, RecorderConfig, WindowedRecorder, catalog as metric_catalog,
};
use support::{OtlpReceiver, PushGatewayServer, StatsdServer, http_get};

fn calls(d: &Dispatcher, n: usize) {
    let md = metadata! { "module" => "dspy", "function" => "Predict" };
    for _ in 0..n {
        d.execute(
            catalog::BRIDGE_CALL.stop(),
            &measurements! { "duration" => 8_000_000 },
            &md,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_gets_the_events_and_shutdown_flushes_them_all() {
    let statsd = StatsdServer::start().await;
    let gateway = PushGatewayServer::start(None).await;
    let otlp = OtlpReceiver::start().await;
    let config: ReporterConfig = toml::from_str(&format!(
        r#"
        reporting_interval = 200

        [[backends]]
        type = "statsd"
        port = {statsd_port}

        [[backends]]
        type = "prometheus"
        listen = "127.0.0.1:0"
        push_gateway = "http://{gateway}"
        instance = "test-1"

        [[backends]]
        type = "opentelemetry"
        enabled = true
        endpoint = "http://{otlp}"
        protocol = "grpc"
        service_name = "reporter-test"
        headers = {{ "x-api-key" = "k-9" }}
        "#,
        statsd_port = statsd.addr.port(),
        gateway = gateway.addr,
        otlp = otlp.grpc,
    ))
    .unwrap();
    let window = WindowedRecorder::new(RecorderConfig::default()).unwrap();
    let d = Dispatcher::new();
    let (reporter, recorder) = Reporter::start(
        &config,
        &metric_catalog::dspex_metrics(),
        Some(window.clone()),
        &d,
    )
    .await
    .unwrap();
    let handler = metrics::with_local_recorder(&recorder, || {
        let handler =
            MetricsHandler::attach(&d, "m", metric_catalog::dspex_metrics(), 100).unwrap();
        calls(&d, 3);
        // A span: the OpenTelemetry backend sends it.
        d.span(
            &catalog::TOOLS_EXECUTE,
            metadata! { "tool_name" => "search" },
            || ((), metadata! {}),
        );
        handler
    });

    // A flush sends the queued span at once, before the 200 ms interval is up.
    reporter.flush_spans().await;
    let spans = otlp.spans().await;
    assert!(
        spans.iter().any(|s| s["name"] == "dspex.tools.execute"),
        "the flush sent the tool span: {spans:#?}"
    );
    assert_eq!(reporter.otlp_stats().map(|s| s.exported), Some(1));

    // On the interval: StatsD and the gateway; any time: the endpoint; the window too.
    assert_eq!(
        statsd
            .until_number(
                "counters",
                "dspex_bridge_call_method_count.dspy.Predict",
                3.0
            )
            .await,
        Some(3.0)
    );
    let group = [
        ("instance", "test-1"),
        ("job", "dspex"),
        ("method", "dspy.Predict"),
    ];
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while gateway
        .scraped(&[])
        .await
        .get("dspex_bridge_call_method_count", &group)
        != Some(3.0)
    {
        assert!(std::time::Instant::now() < limit, "the push never landed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, text) = http_get(reporter.prometheus_addr().unwrap(), "/metrics", &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        text.contains(r#"dspex_bridge_call_method_count{method="dspy.Predict"} 3"#),
        "{text}"
    );
    assert_eq!(
        window
            .operation("dspex_bridge_call_method", &[("method", "dspy.Predict")])
            .unwrap()
            .count,
        3
    );

    // Two more calls, then shutdown at once: the last flush carries them.
    metrics::with_local_recorder(&recorder, || calls(&d, 2));
    reporter.shutdown().await;
    assert_eq!(
        statsd
            .until_number(
                "counters",
                "dspex_bridge_call_method_count.dspy.Predict",
                5.0
            )
            .await,
        Some(5.0)
    );
    assert_eq!(
        gateway
            .scraped(&[])
            .await
            .get("dspex_bridge_call_method_count", &group),
        Some(5.0)
    );
    // The span was sent (at the latest at shutdown), over gRPC, with the configured resource.
    let spans = otlp.spans().await;
    let tool = spans
        .iter()
        .find(|s| s["name"] == "dspex.tools.execute")
        .unwrap_or_else(|| panic!("no tool span in {spans:#?}"));
    assert_eq!(tool["transport"], "grpc");
    assert_eq!(tool["resource"]["service.name"], "reporter-test");
    assert_eq!(tool["headers"]["x-api-key"], "k-9");
    // And the metrics, cumulative: the last export (at shutdown) counts all five calls.
    let points = otlp.points().await;
    let count = points
        .iter()
        .rev()
        .find(|p| p["name"] == "dspex_bridge_call_method_count")
        .unwrap_or_else(|| panic!("no call count in {points:#?}"));
    assert_eq!(count["value"], 5);
    assert_eq!(count["transport"], "grpc");
    handler.detach();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_names_the_key() {
    let cases = [
        ("reporting_interval = 0", "reporting_interval"),
        (
            "[[backends]]\ntype = \"opentelemetry\"\nendpoint = \"ftp://collector:4317\"",
            "backends[0].endpoint",
        ),
        (
            "[[backends]]\ntype = \"statsd\"\nport = 0",
            "backends[0].port",
        ),
        ("[[backends]]\ntype = \"prometheus\"", "backends[0].listen"),
        (
            "[[backends]]\ntype = \"prometheus\"\nlisten = \"nowhere\"",
            "backends[0].listen",
        ),
        (
            "[[backends]]\ntype = \"prometheus\"\npush_gateway = \"https://gw:99999\"",
            "backends[0].push_gateway",
        ),
        (
            "[[backends]]\ntype = \"prometheus\"\npush_gateway = \"https://gw:abc\"",
            "backends[0].push_gateway",
        ),
        (
            "[[backends]]\ntype = \"prometheus\"\npush_gateway = \"https:///metrics\"",
            "backends[0].push_gateway",
        ),
        (
            "[[backends]]\ntype = \"prometheus\"\npush_gateway = \"https://gw:9091\"\npush_certificate = \"/nonexistent/ca.pem\"",
            "backends[0].push_certificate",
        ),
        (
            "[[backends]]\ntype = \"prometheus\"\npush_gateway = \"https://gw:9091\"\npush_timeout_ms = 0",
            "backends[0].push_timeout_ms",
        ),
        (
            "[[backends]]\ntype = \"prometheus\"\npush_gateway = \"http://gw:9091\"\npush_user = \"ops\"",
            "backends[0].push_password",
        ),
    ];
    for (text, key) in cases {
        let config: ReporterConfig = toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let err = Reporter::start(
            &config,
            &metric_catalog::dspex_metrics(),
            None,
            &Dispatcher::new(),
        )
        .await
        .map(|_| ())
        .unwrap_err();
        assert_eq!(err.key, key, "{text}: {err}");
    }
    // Unknown keys are refused by the parser, by name.
    for (text, key) in [
        ("reporting_intervall = 5", "reporting_intervall"),
        ("[[backends]]\ntype = \"statsd\"\nhots = \"x\"", "hots"),
        ("[[backends]]\ntype = \"graphite\"", "graphite"),
    ] {
        let err = toml::from_str::<ReporterConfig>(text)
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}
