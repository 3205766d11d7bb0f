//! With no TOML at all, the OpenTelemetry environment turns the OTLP backend on: the
//! quickstart's spans reach a real decoder over https, trusted through
//! `OTEL_EXPORTER_OTLP_CERTIFICATE`, named by `OTEL_SERVICE_NAME`. Its own test binary: it sets
//! the process's environment.

#[path = "../../dspex-telemetry-exporters/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use dspex_telemetry::quickstart::{self, Options};
use support::{OtlpReceiver, ReceiverOptions, test_ca};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstarts_spans_reach_an_https_collector_configured_by_the_environment() {
    let dir = std::env::temp_dir().join(format!("dspex-env-otlp-{}", std::process::id()));
    let (ca, cert, key) = test_ca(&dir);
    let receiver = OtlpReceiver::start_with(
        0,
        ReceiverOptions {
            tls: Some((cert, key)),
            ..ReceiverOptions::default()
        },
    )
    .await;
    // SAFETY: this test binary runs this one test; nothing else reads the environment yet.
    unsafe {
        std::env::set_var(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("https://127.0.0.1:{}", receiver.addr.port()),
        );
        std::env::set_var("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca);
        std::env::set_var("OTEL_SERVICE_NAME", "checkout-from-env");
        std::env::set_var("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test");
    }
    let options = Options {
        duration: Duration::from_secs(4),
        workers: 2,
        listen: "127.0.0.1:0".into(),
        ..Options::default()
    };
    let mut out = Vec::new();
    let summary = quickstart::run(options, &mut out)
        .await
        .expect("the quickstart runs");
    assert!(summary.requests > 0);
    let spans = receiver.spans().await;
    let calls: Vec<_> = spans
        .iter()
        .filter(|s| s["name"] == "dspex.bridge.call")
        .collect();
    assert!(
        !calls.is_empty(),
        "no bridge call among {} spans",
        spans.len()
    );
    for span in &spans {
        assert_eq!(span["resource"]["service.name"], "checkout-from-env");
        assert_eq!(span["resource"]["deployment.environment"], "test");
    }
    // Python's side of the calls came back too, as children of the calls. (Python's side of a
    // tool runs under its tool span instead; spans of several resources leave in requests of
    // their own, so the first server span received may be either.)
    let servers: Vec<_> = spans.iter().filter(|s| s["kind"] == 2).collect();
    assert!(!servers.is_empty(), "no server span among {spans:#?}");
    assert!(
        servers
            .iter()
            .any(|p| calls.iter().any(|c| c["span_id"] == p["parent_span_id"])),
        "no server span is a bridge call's child: {servers:#?}"
    );
}
