//! Handlers against real HTTP servers on 127.0.0.1: a webhook receiver gets the payload; one
//! answering 500 then 200 gets it after a retry; one that hangs stalls neither evaluation nor
//! the other handlers; a real Alertmanager shows fired alerts and ends resolved ones, over
//! http and over TLS. Over https with a CA the test makes: the spec's webhook configuration
//! delivers fired and resolved payloads, and the Slack example posts its message. Payloads
//! pinned for fire and resolve.

#[path = "../examples/slack_handler.rs"]
mod slack;
#[path = "../../dspex-telemetry-http/tests/support/tls.rs"]
mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dspex_telemetry_alerts::thresholds::Thresholds;
use dspex_telemetry_alerts::{
    AlertEngine, AlertHandler, AlertService, AlertmanagerHandler, AlertsConfig, CaCertificates,
    HttpClient, Notification, Secret, Suppression, Transition, WebhookHandler,
};
use dspex_telemetry_core::{Dispatcher, Event, catalog};
use dspex_telemetry_http::{ClientOptions, HttpUrl};
use dspex_telemetry_metrics::{RecorderConfig, WindowedRecorder};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// What a receiver saw: bodies and headers of every request.
type Seen = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

/// An HTTP server on 127.0.0.1 answering each request with `status(n)` (n counts requests
/// from 0) after `delay`.
async fn receiver(status: fn(usize) -> u16, delay: Duration) -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let sink = sink.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let sink = sink.clone();
                    async move {
                        let headers = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                            .collect();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let n = {
                            let mut seen = sink.lock().unwrap();
                            seen.push((String::from_utf8_lossy(&body).into_owned(), headers));
                            seen.len() - 1
                        };
                        tokio::time::sleep(delay).await;
                        let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                        *response.status_mut() = hyper::StatusCode::from_u16(status(n)).unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn slow_calls(window: &WindowedRecorder) {
    metrics::with_local_recorder(window, || {
        for _ in 0..30 {
            metrics::histogram!("dspex_bridge_call_method_duration", "method" => "dspy.Predict")
                .record(2200.0);
        }
    });
}

fn engine() -> AlertEngine {
    AlertEngine::new(
        Thresholds {
            bridge_call_p99_ms: Some(1000.0),
            ..Thresholds::none()
        }
        .rules(),
        Suppression {
            min_interval_ms: 3_600_000,
            occurrence_threshold: 1,
        },
    )
}

/// A fired and a resolved notification from the engine.
fn fired_and_resolved() -> (Notification, Notification) {
    let clock = dspex_telemetry_metrics::ManualClock::new(0);
    let window =
        WindowedRecorder::with_clock(RecorderConfig::default(), Arc::new(clock.clone())).unwrap();
    slow_calls(&window);
    let mut engine = engine();
    clock.set_ms(30_000);
    let fired = engine.evaluate(&window, 1_700_000_000_000).remove(0);
    clock.advance_ms(61_000);
    let resolved = engine.evaluate(&window, 1_700_000_061_000).remove(0);
    (fired, resolved)
}

async fn until(what: &str, ready: impl Fn() -> bool) {
    let limit = Instant::now() + Duration::from_secs(15);
    while !ready() {
        assert!(Instant::now() < limit, "{what} did not happen within 15 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gets_the_payload_with_its_headers() {
    let (addr, seen) = receiver(|_| 200, Duration::ZERO).await;
    let hook = WebhookHandler::new(
        &format!("http://{addr}/hooks/alerts"),
        vec![("authorization".into(), Secret::new("Bearer t0k3n"))],
        Duration::from_secs(2),
    )
    .unwrap();
    assert!(
        !format!("{hook:?}").contains("t0k3n"),
        "the token stays out of Debug"
    );
    let (fired, _) = fired_and_resolved();
    hook.handle_alert(&fired).await.unwrap();
    let seen = seen.lock().unwrap();
    let (body, headers) = &seen[0];
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(body).unwrap(),
        serde_json::to_value(&fired).unwrap()
    );
    assert!(headers.contains(&("authorization".into(), "Bearer t0k3n".into())));
    assert!(headers.contains(&("content-type".into(), "application/json".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_500_then_200_gets_it_after_a_retry() {
    let (addr, seen) = receiver(|n| if n == 0 { 500 } else { 200 }, Duration::ZERO).await;
    let mut hook = WebhookHandler::new(
        &format!("http://{addr}/"),
        Vec::new(),
        Duration::from_secs(2),
    )
    .unwrap();
    hook.backoff = Duration::from_millis(20);
    let (fired, _) = fired_and_resolved();
    hook.handle_alert(&fired).await.unwrap();
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "one failed attempt, one retry"
    );

    // Always 500: every retry, then the error.
    let (addr, seen) = receiver(|_| 500, Duration::ZERO).await;
    let mut hook = WebhookHandler::new(
        &format!("http://{addr}/"),
        Vec::new(),
        Duration::from_secs(2),
    )
    .unwrap();
    hook.backoff = Duration::from_millis(10);
    let err = hook.handle_alert(&fired).await.unwrap_err();
    assert!(err.to_string().contains("500"), "{err}");
    assert_eq!(
        seen.lock().unwrap().len(),
        4,
        "the first attempt and three retries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_stalls_neither_evaluation_nor_other_handlers() {
    let (hanging, _) = receiver(|_| 200, Duration::from_secs(3600)).await;
    let (healthy, seen) = receiver(|_| 200, Duration::ZERO).await;
    let window = WindowedRecorder::new(RecorderConfig::default()).unwrap();
    slow_calls(&window);
    let d = Dispatcher::new();
    let events = Arc::new(Mutex::new(0usize));
    let sink = events.clone();
    d.attach("count", catalog::ALERT_FIRED, move |_: &Event<'_>| {
        *sink.lock().unwrap() += 1
    })
    .unwrap();
    let handlers: Vec<Arc<dyn AlertHandler>> = vec![
        Arc::new(
            WebhookHandler::new(
                &format!("http://{hanging}/"),
                Vec::new(),
                Duration::from_secs(3600),
            )
            .unwrap(),
        ),
        Arc::new(
            WebhookHandler::new(
                &format!("http://{healthy}/"),
                Vec::new(),
                Duration::from_secs(2),
            )
            .unwrap(),
        ),
    ];
    let service = AlertService::start(engine(), window, handlers, d, Duration::from_millis(50));
    until("the healthy receiver's notification", || {
        seen.lock().unwrap().len() == 1
    })
    .await;
    until("the fired event", || *events.lock().unwrap() == 1).await;
    assert_eq!(service.active().len(), 1);
    service.shutdown().await;
}

/// A real Alertmanager on 127.0.0.1 (over TLS with a certificate of the test's CA when
/// asked), killed on drop.
struct Alertmanager {
    url: String,
    client: HttpClient,
    child: Child,
    dir: std::path::PathBuf,
}

impl Alertmanager {
    async fn start(tls: bool) -> Self {
        let binary = ["/usr/bin/prometheus-alertmanager", "/usr/local/bin/alertmanager"]
            .into_iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file())
            .expect("the `prometheus-alertmanager` binary is needed (Debian package; `cargo xtask test` installs it)");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tls::temp_dir("alertmanager");
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: none\nreceivers:\n  - name: none\n",
        )
        .unwrap();
        let mut command = Command::new(binary);
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("alertmanager.log")).unwrap());
        let mut ca = CaCertificates::none();
        if tls {
            let (ca_file, cert, key) = tls::test_ca(&dir.join("tls"));
            let web = tls::prometheus_tls_web_config(&dir, &cert, &key);
            command.arg(format!("--web.config.file={}", web.display()));
            ca = CaCertificates::from_file(ca_file).unwrap();
        }
        let child = command.spawn().expect("start alertmanager");
        let scheme = if tls { "https" } else { "http" };
        let am = Alertmanager {
            url: format!("{scheme}://127.0.0.1:{port}"),
            client: HttpClient::new(&ClientOptions {
                ca,
                max_response_bytes: 1 << 20,
                ..ClientOptions::default()
            })
            .unwrap(),
            child,
            dir,
        };
        let limit = Instant::now() + Duration::from_secs(20);
        while am.alerts().await.is_none() {
            assert!(
                Instant::now() < limit,
                "alertmanager did not start within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        am
    }

    /// `GET /api/v2/alerts`, parsed.
    async fn alerts(&self) -> Option<Vec<serde_json::Value>> {
        let url = HttpUrl::parse(&self.url).ok()?.join("api/v2/alerts");
        let answer = self
            .client
            .send(
                http::Method::GET,
                &url,
                &http::HeaderMap::new(),
                "",
                Duration::from_secs(5),
            )
            .await
            .ok()?;
        serde_json::from_slice(&answer.body).ok()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Fires and resolves an alert through `handler` into `am`, reading each back.
async fn alertmanager_round_trip(am: &Alertmanager, handler: &AlertmanagerHandler) {
    // Timestamps of now, so that Alertmanager keeps the alert active.
    let now = dspex_telemetry_core::system_time_ns() as u64 / 1_000_000;
    let (mut fired, mut resolved) = fired_and_resolved();
    fired.alert.started_at_ms = now - 1_000;
    resolved.alert.started_at_ms = now - 1_000;
    resolved.alert.resolved_at_ms = Some(now);
    handler.handle_alert(&fired).await.unwrap();
    let alerts = am.alerts().await.unwrap();
    let ours = alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == "bridge_call_p99_ms")
        .unwrap_or_else(|| panic!("not in {alerts:#?}"));
    assert_eq!(ours["labels"]["method"], "dspy.Predict");
    assert_eq!(ours["labels"]["severity"], "high");
    assert_eq!(ours["status"]["state"], "active");
    assert!(
        ours["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("performance degradation")
    );

    handler.handle_alert(&resolved).await.unwrap();
    let limit = Instant::now() + Duration::from_secs(15);
    loop {
        let alerts = am.alerts().await.unwrap();
        let still_active = alerts.iter().any(|a| {
            a["labels"]["alertname"] == "bridge_call_p99_ms" && a["status"]["state"] == "active"
        });
        if !still_active {
            break;
        }
        assert!(
            Instant::now() < limit,
            "the resolved alert is still active: {alerts:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_shows_fired_alerts_and_ends_resolved_ones() {
    let am = Alertmanager::start(false).await;
    let handler = AlertmanagerHandler::new(&am.url, Duration::from_secs(5)).unwrap();
    alertmanager_round_trip(&am, &handler).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_over_tls_shows_fired_alerts_and_ends_resolved_ones() {
    let am = Alertmanager::start(true).await;
    // Without the CA: refused, and the error says why.
    let untrusting = AlertmanagerHandler::new(&am.url, Duration::from_secs(5)).unwrap();
    let (fired, _) = fired_and_resolved();
    let err = untrusting.handle_alert(&fired).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    // Through the configuration, with the CA file.
    let config: AlertsConfig = toml::from_str(&format!(
        "[[alert_handlers]]\ntype = \"alertmanager\"\nurl = \"{}\"\ncertificate = \"{}\"",
        am.url,
        am.dir.join("tls/ca.pem").display()
    ))
    .unwrap();
    let (_, handlers) = config.build().unwrap();
    assert_eq!(handlers[0].name(), "alertmanager");
    let handler = AlertmanagerHandler::with_client(
        &HttpClient::new(&ClientOptions {
            ca: CaCertificates::from_file(am.dir.join("tls/ca.pem")).unwrap(),
            ..ClientOptions::default()
        })
        .unwrap(),
        &am.url,
        Duration::from_secs(5),
    )
    .unwrap();
    alertmanager_round_trip(&am, &handler).await;
    // The configured handler delivers too (the same alert again, still resolved).
    let now = dspex_telemetry_core::system_time_ns() as u64 / 1_000_000;
    let (mut fired, _) = fired_and_resolved();
    fired.alert.rule = "from_the_config".into();
    fired.alert.started_at_ms = now - 1_000;
    handlers[0].handle_alert(&fired).await.unwrap();
    let alerts = am.alerts().await.unwrap();
    assert!(
        alerts
            .iter()
            .any(|a| a["labels"]["alertname"] == "from_the_config"),
        "{alerts:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_specs_https_webhook_delivers_fired_and_resolved_payloads() {
    let dir = tls::temp_dir("webhook-tls");
    let (ca, cert, key) = tls::test_ca(&dir);
    // The first answer is a 500: the handler retries.
    let receiver = tls::HttpsReceiver::start(&cert, &key, 1);
    let config: AlertsConfig = toml::from_str(&format!(
        r#"
        [[alert_handlers]]
        type = "webhook"
        url = "{}"
        headers = {{ authorization = "Bearer t0k3n" }}
        certificate = "{}"
        "#,
        receiver.url("/hooks/dspex"),
        ca.display()
    ))
    .unwrap();
    let (_, handlers) = config.build().unwrap();
    let (fired, resolved) = fired_and_resolved();
    handlers[0].handle_alert(&fired).await.unwrap();
    handlers[0].handle_alert(&resolved).await.unwrap();
    let seen = receiver.until_received(3).await;
    assert_eq!(seen.len(), 3, "a failed attempt, then each payload once");
    for (got, sent) in seen[1..].iter().zip([&fired, &resolved]) {
        assert_eq!(
            (got.method.as_str(), got.path.as_str()),
            ("POST", "/hooks/dspex")
        );
        assert_eq!(got.headers["authorization"], "Bearer t0k3n");
        assert_eq!(got.headers["content-type"], "application/json");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&got.body).unwrap(),
            serde_json::to_value(sent).unwrap()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slack_example_posts_its_message_over_https() {
    let dir = tls::temp_dir("slack-tls");
    let (ca, cert, key) = tls::test_ca(&dir);
    let receiver = tls::HttpsReceiver::start(&cert, &key, 0);
    let url = receiver.url("/services/T000/B000/XXXXXXXX");
    let client = HttpClient::new(&ClientOptions {
        ca: CaCertificates::from_file(&ca).unwrap(),
        ..ClientOptions::default()
    })
    .unwrap();
    let handler = slack::SlackHandler::with_client(&client, &url).unwrap();
    let sample = slack::sample();
    handler.handle_alert(&sample).await.unwrap();
    let seen = receiver.until_received(1).await;
    assert_eq!(seen[0].path, "/services/T000/B000/XXXXXXXX");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&seen[0].body).unwrap(),
        slack::slack_payload(&sample)
    );
    // Without the CA the same URL is refused, and the error keeps the token (the path) out.
    let err = slack::SlackHandler::new(&url)
        .unwrap()
        .handle_alert(&sample)
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("XXXXXXXX"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn payloads_are_pinned_for_fire_and_resolve() {
    let (fired, resolved) = fired_and_resolved();
    assert_eq!(resolved.transition, Transition::Resolved);
    for (name, n) in [("fired", &fired), ("resolved", &resolved)] {
        insta::assert_snapshot!(
            format!("webhook_{name}"),
            serde_json::to_string_pretty(n).unwrap()
        );
        insta::assert_snapshot!(
            format!("alertmanager_{name}"),
            serde_json::to_string_pretty(&AlertmanagerHandler::payload(n)).unwrap()
        );
        insta::assert_snapshot!(
            format!("slack_{name}"),
            serde_json::to_string_pretty(&slack::slack_payload(n)).unwrap()
        );
    }
    // The example's own sample, as its printout shows it.
    insta::assert_snapshot!(
        "slack_example_sample",
        serde_json::to_string_pretty(&slack::slack_payload(&slack::sample())).unwrap()
    );
}
