//! The spec's Slack handler, as a custom [`AlertHandler`]: a message with the alert's type,
//! severity and details, coloured by severity, posted to a Slack incoming webhook.
//!
//! Run: `cargo run -p dspex-telemetry-alerts --example slack_handler` (prints the payload of a
//! sample alert; give it a webhook URL to post it there).

use std::time::Duration;

use dspex_telemetry_alerts::{
    Alert, AlertHandler, AlertType, HandlerFuture, HandlerSetupError, HttpClient, Notification,
    Severity, Transition, WebhookHandler, WindowSummary,
};
use serde_json::{Value, json};

/// Posts alerts to Slack.
pub struct SlackHandler {
    webhook: WebhookHandler,
}

impl SlackHandler {
    /// A handler for a Slack incoming webhook URL (`https://hooks.slack.com/services/…`; the
    /// path is the token, so it never shows in errors or logs).
    pub fn new(webhook_url: &str) -> Result<Self, HandlerSetupError> {
        Ok(SlackHandler {
            webhook: WebhookHandler::new(webhook_url, Vec::new(), Duration::from_secs(5))?,
        })
    }

    /// The same through `client` (a CA of one's own, a shared pool of connections).
    pub fn with_client(client: &HttpClient, webhook_url: &str) -> Result<Self, HandlerSetupError> {
        Ok(SlackHandler {
            webhook: WebhookHandler::with_client(
                client,
                webhook_url,
                Vec::new(),
                Duration::from_secs(5),
            )?,
        })
    }
}

/// The spec's `severity_color`.
fn severity_color(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "danger",
        Severity::High => "warning",
        _ => "good",
    }
}

/// The Slack message for a notification, as in the spec.
pub fn slack_payload(n: &Notification) -> Value {
    let a = &n.alert;
    json!({
        "text": a.message,
        "attachments": [{
            "color": if n.transition == Transition::Resolved { "good" } else { severity_color(a.severity) },
            "fields": [
                {"title": "Type", "value": a.alert_type.as_str()},
                {"title": "Severity", "value": a.severity.as_str()},
                {"title": "Details", "value": format!(
                    "{} {} = {} (threshold {}), {} calls, {} errors",
                    a.metric, a.statistic, a.value, a.threshold, a.window.count, a.window.error_count
                )},
            ]
        }]
    })
}

impl AlertHandler for SlackHandler {
    fn name(&self) -> &str {
        "slack"
    }

    fn handle_alert<'a>(&'a self, n: &'a Notification) -> HandlerFuture<'a> {
        Box::pin(async move {
            let body = serde_json::to_vec(&slack_payload(n))?;
            self.webhook.post_json(body).await
        })
    }
}

/// A sample alert, for the printout.
pub fn sample() -> Notification {
    let alert = Alert {
        id: "tool_execution_p99_ms{tool_name=\"web_search\"}".into(),
        rule: "tool_execution_p99_ms".into(),
        alert_type: AlertType::PerformanceDegradation,
        severity: Severity::High,
        metric: "dspex_tools_execute".into(),
        labels: vec![("tool_name".into(), "web_search".into())],
        statistic: "p99".into(),
        value: 1240.0,
        threshold: 500.0,
        factor: 2.48,
        unit: "ms".into(),
        window: WindowSummary {
            count: 118,
            error_count: 2,
            p50: 210.0,
            p95: 980.0,
            p99: 1240.0,
            span_ms: 60_000,
        },
        started_at_ms: 1_700_000_000_000,
        resolved_at_ms: None,
        exemplars: Vec::new(),
        message: "[HIGH] performance degradation on dspex_tools_execute {tool_name=\"web_search\"}: p99 1240 ms over the 500 ms threshold (2.48× slower, 118 calls in the last 60 s)".into(),
    };
    Notification {
        transition: Transition::Fired,
        alert,
    }
}

#[allow(dead_code)]
fn main() {
    let n = sample();
    println!(
        "{}",
        serde_json::to_string_pretty(&slack_payload(&n)).unwrap_or_default()
    );
    if let Some(url) = std::env::args().nth(1) {
        let handler = match SlackHandler::new(&url) {
            Ok(handler) => handler,
            Err(e) => {
                eprintln!("invalid `{}`: {e}", e.key());
                return;
            }
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        if let Err(e) = rt.block_on(handler.handle_alert(&n)) {
            eprintln!("not sent: {e}");
        }
    }
}
