//! Passwords, tokens, query tokens and webhook paths given in the configuration never show in
//! its `Debug`, in a start error, or in the log lines of failed deliveries (a webhook, an
//! Alertmanager and a push gateway that cannot be reached), asserted on the text itself.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dspex_telemetry::{Config, Telemetry};
use dspex_telemetry_core::Dispatcher;

const SECRETS: [&str; 4] = ["s3cr3t-path", "t0k3n", "h3ader", "pa55word"];

fn assert_clean(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret:?} shows in {what}: {text}");
    }
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[test]
fn start_errors_keep_credentials_out() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (text, key) in [
        (
            "[[reporter.backends]]\ntype = \"prometheus\"\npush_gateway = \"http://ops:pa55word@127.0.0.1:9091/t0k3n\"",
            "backends[0].push_gateway",
        ),
        (
            "[[reporter.backends]]\ntype = \"prometheus\"\npush_gateway = \"https://127.0.0.1:99999/?token=t0k3n\"",
            "backends[0].push_gateway",
        ),
        (
            "[[alerts.alert_handlers]]\ntype = \"webhook\"\nurl = \"https://hooks.example.com:abc/s3cr3t-path\"",
            "alert_handlers[0].url",
        ),
        (
            "[[alerts.alert_handlers]]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/s3cr3t-path\"\nheaders = { authorization = \"Bearer h3ader\\n\" }",
            "alert_handlers[0].headers",
        ),
        (
            "[[reporter.backends]]\ntype = \"opentelemetry\"\nendpoint = \"http://127.0.0.1:4318/x?token=t0k3n a\"",
            "backends[0].endpoint",
        ),
    ] {
        let config = Config::from_toml(text).unwrap();
        assert_clean("the configuration's Debug", &format!("{config:?}"));
        let err = runtime
            .block_on(Telemetry::start(&config, &Dispatcher::new()))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{err} names {key}");
        assert_clean("a start error", &err);
    }
}

#[test]
fn a_malformed_file_is_named_by_line_not_quoted() {
    for text in [
        "[[alerts.alert_handlers]]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/s3cr3t-path\" t0k3n",
        "[reporter]\nbackends = [{ type = \"prometheus\", push_gateway = \"http://gw:9091\", push_password = \"pa55word\", pushh = 1 }]",
    ] {
        let err = Config::from_toml(text).unwrap_err().to_string();
        assert!(err.contains("at line"), "{err}");
        assert_clean("a parse error", &err);
    }
}

#[test]
fn failed_deliveries_log_without_credentials() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let (hook, am, gateway) = (dead_port(), dead_port(), dead_port());
    // `alertmanager_extra` goes into the Alertmanager handler's table.
    let text = |alertmanager_extra: &str| {
        format!(
            r#"
        [alerts]
        evaluation_interval_ms = 50
        thresholds = {{ bridge_call_p99_ms = 100 }}
        suppression = {{ min_interval_ms = 60000, occurrence_threshold = 1 }}
        alert_handlers = [
            {{ type = "webhook", url = "http://127.0.0.1:{hook}/services/s3cr3t-path?token=t0k3n", headers = {{ authorization = "Bearer h3ader" }}, retries = 0, timeout_ms = 500 }},
            {{ type = "alertmanager", url = "http://127.0.0.1:{am}/s3cr3t-path/"{alertmanager_extra} }},
        ]

        [reporter]
        reporting_interval = 100
        backends = [
            {{ type = "prometheus", push_gateway = "http://127.0.0.1:{gateway}/s3cr3t-path?token=t0k3n", push_user = "ops", push_password = "pa55word" }},
        ]
        "#
        )
    };
    // `retries` is not a key of the Alertmanager handler: the error names it, nothing else.
    let err = Config::from_toml(&text(", retries = 0"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("retries"), "{err}");
    assert_clean("a configuration error", &err);

    let config = Config::from_toml(&text("")).unwrap();
    assert_clean("the configuration's Debug", &format!("{config:?}"));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let telemetry = Telemetry::start(&config, &Dispatcher::new()).await.unwrap();
        assert_clean("the stack's Debug", &format!("{telemetry:?}"));
        for _ in 0..20 {
            metrics::histogram!("dspex_bridge_call_method_duration", "method" => "dspy.Predict")
                .record(900.0);
        }
        let limit = Instant::now() + Duration::from_secs(20);
        loop {
            let text = logs.text();
            let webhook_failed =
                text.contains("handler=\"webhook\"") || text.contains("handler=webhook");
            let am_failed =
                text.contains("handler=\"alertmanager\"") || text.contains("handler=alertmanager");
            let push_failed = text.contains("push to the gateway failed");
            if webhook_failed && am_failed && push_failed {
                break;
            }
            assert!(
                Instant::now() < limit,
                "not every failure was logged within 20 s:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        telemetry.shutdown().await;
    });
    let text = logs.text();
    assert!(text.contains("cannot connect"), "{text}");
    assert_clean("the log", &text);
}
