//! Handlers against real HTTP servers on 127.0.0.1: a webhook receiver gets the payload; one
//! answering 500 then 200 gets it after a retry; one that hangs stalls neither evaluation nor
//! the other handlers; a real Alertmanager shows fired alerts and ends resolved ones. Payloads
//! pinned for fire and resolve.

#[path = "../examples/slack_handler.rs"]
mod slack;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dspex_telemetry_alerts::thresholds::Thresholds;
use dspex_telemetry_alerts::{
    AlertEngine, AlertHandler, AlertService, AlertmanagerHandler, Notification, Secret,
    Suppression, Transition, WebhookHandler,
};
use dspex_telemetry_core::{Dispatcher, Event, catalog};
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

/// A real Alertmanager on 127.0.0.1, killed on drop.
struct Alertmanager {
    addr: SocketAddr,
    child: Child,
    dir: std::path::PathBuf,
}

impl Alertmanager {
    async fn start() -> Self {
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
        let dir =
            std::env::temp_dir().join(format!("dspex-alertmanager-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: none\nreceivers:\n  - name: none\n",
        )
        .unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("alertmanager.log")).unwrap())
            .spawn()
            .expect("start alertmanager");
        let am = Alertmanager {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
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
        let stream = tokio::net::TcpStream::connect(self.addr).await.ok()?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(connection);
        let request = Request::get("/api/v2/alerts")
            .header("host", self.addr.to_string())
            .body(Full::new(Bytes::new()))
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = response.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice(&body).ok()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_shows_fired_alerts_and_ends_resolved_ones() {
    let am = Alertmanager::start().await;
    let handler =
        AlertmanagerHandler::new(&format!("http://{}", am.addr), Duration::from_secs(5)).unwrap();
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
