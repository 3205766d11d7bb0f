//! The exporters' error messages, as users read them: pinned.

use std::time::Duration;

use dspex_telemetry_core::Dispatcher;
use dspex_telemetry_exporters::otlp::{
    OtlpConfig, OtlpMetricsConfig, OtlpMetricsRecorder, OtlpTraces,
};
use dspex_telemetry_exporters::prometheus::{PrometheusConfig, PrometheusEndpoint};
use dspex_telemetry_exporters::push_gateway::{PushError, PushGateway, PushGatewayConfig};
use dspex_telemetry_exporters::reporter::{Reporter, ReporterConfig};
use dspex_telemetry_exporters::statsd::{StatsdConfig, StatsdRecorder};

#[tokio::test]
async fn error_texts_are_pinned() {
    let mut texts = Vec::new();
    let handle = dspex_telemetry_exporters::prometheus::prometheus_recorder(&[])
        .unwrap()
        .handle();
    let bad_path = PrometheusConfig {
        path: "metrics".into(),
        ..PrometheusConfig::default()
    };
    for config in [
        bad_path,
        PrometheusConfig {
            max_connections: 0,
            ..PrometheusConfig::default()
        },
        PrometheusConfig {
            header_read_timeout: Duration::ZERO,
            ..PrometheusConfig::default()
        },
        PrometheusConfig {
            write_timeout: Duration::MAX,
            ..PrometheusConfig::default()
        },
    ] {
        texts.push(
            PrometheusEndpoint::start(&config, handle.clone())
                .await
                .unwrap_err()
                .to_string(),
        );
    }
    for config in [
        PushGatewayConfig {
            endpoint: "http://gw:99999".into(),
            ..Default::default()
        },
        PushGatewayConfig {
            endpoint: "http://ops:pw@gw:9091".into(),
            ..Default::default()
        },
        PushGatewayConfig {
            job: String::new(),
            ..Default::default()
        },
    ] {
        texts.push(PushGateway::new(config).unwrap_err().to_string());
    }
    texts.push(
        PushError::Status {
            url: "http://127.0.0.1:9091/…".into(),
            status: http::StatusCode::BAD_REQUEST,
            body: "text format parsing error in line 3".into(),
        }
        .to_string(),
    );
    texts.push(
        PushError::Connect {
            url: "https://127.0.0.1:9091/…".into(),
            reason: "invalid peer certificate: UnknownIssuer".into(),
        }
        .to_string(),
    );
    texts.push(
        PushError::Transport {
            url: "https://127.0.0.1:9091/…".into(),
            reason: "connection closed before message completed".into(),
        }
        .to_string(),
    );
    texts.push(
        PushError::Timeout {
            url: "http://127.0.0.1:9091/…".into(),
            timeout: Duration::from_secs(5),
        }
        .to_string(),
    );
    texts.push(
        StatsdRecorder::new(StatsdConfig {
            max_packet_bytes: 10,
            ..Default::default()
        })
        .unwrap_err()
        .to_string(),
    );
    texts.push(
        OtlpTraces::start(
            OtlpConfig {
                max_queue: 0,
                ..Default::default()
            },
            &Dispatcher::new(),
            "otlp",
        )
        .unwrap_err()
        .to_string(),
    );
    // A URL the URL parser takes but the OTLP exporter refuses: named, not quoted.
    texts.push(
        OtlpTraces::start(
            OtlpConfig {
                endpoint: Some("http://127.0.0.1:4318/x?token=a b".into()),
                ..Default::default()
            },
            &Dispatcher::new(),
            "otlp-bad-url",
        )
        .unwrap_err()
        .to_string(),
    );
    texts.push(
        OtlpMetricsRecorder::new(
            OtlpMetricsConfig {
                connection: OtlpConfig {
                    headers: vec![(
                        "bad header".into(),
                        dspex_telemetry_exporters::Secret::new("x"),
                    )],
                    ..Default::default()
                },
                ..Default::default()
            },
            &[],
        )
        .unwrap_err()
        .to_string(),
    );
    // The OpenTelemetry environment's bad values name their variable; no value is repeated.
    let env = |name: &str| {
        match name {
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/json"),
            "OTEL_EXPORTER_OTLP_HEADERS" => Some("x-api-key"),
            _ => None,
        }
        .map(str::to_owned)
    };
    texts.push(
        OtlpConfig::default()
            .resolve_with(dspex_telemetry_exporters::otlp::Signal::Traces, env)
            .unwrap_err()
            .to_string(),
    );
    let headers_only =
        |name: &str| (name == "OTEL_EXPORTER_OTLP_HEADERS").then(|| "x-api-key".to_owned());
    texts.push(
        OtlpConfig::default()
            .resolve_with(
                dspex_telemetry_exporters::otlp::Signal::Traces,
                headers_only,
            )
            .unwrap_err()
            .to_string(),
    );
    texts.push(
        OtlpConfig {
            endpoint: Some("https://user:hunter2@collector.example".into()),
            ..Default::default()
        }
        .resolve(dspex_telemetry_exporters::otlp::Signal::Traces)
        .unwrap_err()
        .to_string(),
    );
    for text in [
        "reporting_interval = 0",
        "[[backends]]\ntype = \"prometheus\"",
        "[[backends]]\ntype = \"prometheus\"\npush_gateway = \"http://gw:9091\"\npush_user = \"ops\"",
    ] {
        let config: ReporterConfig = toml::from_str(text).unwrap();
        let err = Reporter::start(&config, &[], None, &Dispatcher::new())
            .await
            .map(|_| ())
            .unwrap_err();
        texts.push(err.to_string());
    }
    insta::assert_snapshot!(texts.join("\n"));
}
