//! Pushes land on a real push gateway and read back; a re-push replaces the group; a gateway
//! that is down or refuses costs an error, not a panic; basic auth works against a gateway
//! that requires it; a gateway serving TLS (its `--web.config.file`, a CA the test makes) is
//! reached through the Reporter's `push_certificate`, and refused without it.

mod support;

use std::time::{Duration, Instant};

use dspex_telemetry_exporters::Secret;
use dspex_telemetry_exporters::prometheus::prometheus_recorder;
use dspex_telemetry_exporters::push_gateway::{PushError, PushGateway, PushGatewayConfig};
use dspex_telemetry_metrics::catalog as metric_catalog;
use support::{PushGatewayServer, free_port, test_ca, tls::temp_dir};

fn recorder_with(calls: u64, extra: bool) -> metrics_exporter_prometheus::PrometheusRecorder {
    let recorder = prometheus_recorder(&metric_catalog::dspex_metrics()).unwrap();
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("dspex_bridge_call_method_count", "method" => "dspy.Predict")
            .increment(calls);
        metrics::histogram!("dspex_bridge_call_method_duration", "method" => "dspy.Predict")
            .record(12.0);
        if extra {
            metrics::gauge!("app_only_in_the_first_push").set(1.0);
        }
    });
    recorder
}

fn gateway(addr: std::net::SocketAddr) -> PushGateway {
    PushGateway::new(PushGatewayConfig {
        endpoint: format!("http://{addr}").into(),
        instance: Some("worker-1".into()),
        ..PushGatewayConfig::default()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_lands_and_a_re_push_replaces_the_group() {
    let server = PushGatewayServer::start(None).await;
    let gateway = gateway(server.addr);
    let group = [
        ("instance", "worker-1"),
        ("job", "dspex"),
        ("method", "dspy.Predict"),
    ];

    gateway
        .push(&recorder_with(3, true).handle())
        .await
        .unwrap();
    let seen = server.scraped(&[]).await;
    assert_eq!(
        seen.get("dspex_bridge_call_method_count", &group),
        Some(3.0)
    );
    assert_eq!(
        seen.get("dspex_bridge_call_method_duration_count", &group),
        Some(1.0)
    );
    assert_eq!(
        seen.get(
            "app_only_in_the_first_push",
            &[("instance", "worker-1"), ("job", "dspex")]
        ),
        Some(1.0)
    );

    gateway
        .push(&recorder_with(5, false).handle())
        .await
        .unwrap();
    let seen = server.scraped(&[]).await;
    assert_eq!(
        seen.get("dspex_bridge_call_method_count", &group),
        Some(5.0)
    );
    assert!(
        seen.samples
            .iter()
            .all(|s| s.name != "app_only_in_the_first_push"),
        "a re-push replaces the whole group"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_is_down_costs_an_error_at_once() {
    // Nothing listens on this port.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let started = Instant::now();
    let err = gateway(addr)
        .push(&recorder_with(1, false).handle())
        .await
        .unwrap_err();
    assert!(matches!(err, PushError::Connect { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_land_again_once_the_gateway_is_back() {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let gateway = gateway(addr);
    assert!(
        gateway
            .push(&recorder_with(2, false).handle())
            .await
            .is_err()
    );
    let server = PushGatewayServer::start_on(addr.port(), None).await;
    gateway
        .push(&recorder_with(2, false).handle())
        .await
        .unwrap();
    let group = [
        ("instance", "worker-1"),
        ("job", "dspex"),
        ("method", "dspy.Predict"),
    ];
    assert_eq!(
        server
            .scraped(&[])
            .await
            .get("dspex_bridge_call_method_count", &group),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_is_sent_and_a_refusal_is_an_error() {
    // bcrypt of "s3cret-pw".
    let web =
        "basic_auth_users:\n  ops: $2b$12$4LW.qkPFzJvn2hHw2HGM..GLHimHk1iwmzwMINr3H9AYIR8FlZWgW\n";
    let server = PushGatewayServer::start(Some(web)).await;
    let endpoint = format!("http://{}", server.addr);

    let anonymous = PushGateway::new(PushGatewayConfig {
        endpoint: endpoint.clone().into(),
        ..PushGatewayConfig::default()
    })
    .unwrap();
    let err = anonymous
        .push(&recorder_with(1, false).handle())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PushError::Status { status, .. } if status.as_u16() == 401),
        "{err}"
    );

    let ops = PushGateway::new(PushGatewayConfig {
        endpoint: endpoint.into(),
        basic_auth: Some(("ops".into(), Secret::new("s3cret-pw"))),
        ..PushGatewayConfig::default()
    })
    .unwrap();
    ops.push(&recorder_with(7, false).handle()).await.unwrap();
    // "ops:s3cret-pw" in base64.
    let seen = server
        .scraped(&[("Authorization", "Basic b3BzOnMzY3JldC1wdw==")])
        .await;
    assert_eq!(
        seen.get(
            "dspex_bridge_call_method_count",
            &[
                ("instance", ""),
                ("job", "dspex"),
                ("method", "dspy.Predict")
            ]
        ),
        Some(7.0)
    );
}

#[test]
fn bad_configuration_names_the_key() {
    let cases = [
        (
            PushGatewayConfig {
                endpoint: "ftp://x:1".into(),
                ..Default::default()
            },
            "push_gateway",
        ),
        (
            PushGatewayConfig {
                endpoint: "not a url".into(),
                ..Default::default()
            },
            "push_gateway",
        ),
        (
            PushGatewayConfig {
                job: String::new(),
                ..Default::default()
            },
            "job",
        ),
        (
            PushGatewayConfig {
                timeout: Duration::ZERO,
                ..Default::default()
            },
            "timeout",
        ),
        (
            PushGatewayConfig {
                basic_auth: Some(("a".into(), Secret::new("b"))),
                bearer_token: Some(Secret::new("c")),
                ..Default::default()
            },
            "bearer_token",
        ),
    ];
    for (config, key) in cases {
        let err = PushGateway::new(config).unwrap_err().to_string();
        assert!(err.contains(&format!("`{key}`")), "{err} should name {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_over_tls_gets_the_push_with_the_ca_and_refuses_it_without() {
    let dir = temp_dir("pushgateway-tls");
    let (ca, cert, key) = test_ca(&dir);
    let server = PushGatewayServer::start_tls(&cert, &key, &ca).await;
    let url = server.url();
    assert!(url.starts_with("https://"), "{url}");

    // Without the CA: a typed connection error naming no path.
    let untrusting = PushGateway::new(PushGatewayConfig {
        endpoint: url.clone().into(),
        ..PushGatewayConfig::default()
    })
    .unwrap();
    let err = untrusting
        .push(&recorder_with(1, false).handle())
        .await
        .unwrap_err();
    assert!(matches!(err, PushError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");

    // The Reporter's keys, as a user writes them: the push lands and reads back.
    let config: dspex_telemetry_exporters::reporter::ReporterConfig = toml::from_str(&format!(
        r#"
        reporting_interval = 100
        [[backends]]
        type = "prometheus"
        push_gateway = "{url}"
        push_certificate = "{}"
        instance = "worker-tls"
        "#,
        ca.display()
    ))
    .unwrap();
    let (reporter, recorder) = dspex_telemetry_exporters::reporter::Reporter::start(
        &config,
        &metric_catalog::dspex_metrics(),
        None,
        &dspex_telemetry_core::Dispatcher::new(),
    )
    .await
    .unwrap();
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("dspex_bridge_call_method_count", "method" => "dspy.Predict")
            .increment(4);
    });
    let group = [
        ("instance", "worker-tls"),
        ("job", "dspex"),
        ("method", "dspy.Predict"),
    ];
    let limit = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = server.scraped(&[]).await;
        if seen.get("dspex_bridge_call_method_count", &group) == Some(4.0) {
            break;
        }
        assert!(
            Instant::now() < limit,
            "the push did not land over TLS within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reporter.shutdown().await;
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
