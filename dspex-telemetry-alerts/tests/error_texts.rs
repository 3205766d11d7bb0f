//! The alerts' error messages, as users read them: pinned.

use dspex_telemetry_alerts::{AlertsConfig, HandlerError, HttpError};

#[test]
fn error_texts_are_pinned() {
    let mut texts = Vec::new();
    for text in [
        "evaluation_interval_ms = 0",
        "[thresholds]\nbridge_call_p99_ms = -1",
        "[[alert_handlers]]\ntype = \"alertmanager\"\nurl = \"not a url\"",
        "[[alert_handlers]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:99999/hooks/s3cr3t\"",
        "[[alert_handlers]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:abc/hooks/s3cr3t\"",
        "[[alert_handlers]]\ntype = \"webhook\"\nurl = \"https:///hooks/s3cr3t\"",
        "[[alert_handlers]]\ntype = \"alertmanager\"\nurl = \"https://ops:s3cr3t@am.example.com\"",
        "[[alert_handlers]]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/x\"\ntimeout_ms = 0",
        "[[alert_handlers]]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/x\"\nheaders = { authorization = \"Bearer s3cr3t\\nx-forged: 1\" }",
        "[[alert_handlers]]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/x\"\ncertificate = \"/nonexistent/ca.pem\"",
        "[[alert_handlers]]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/x\"\nheaders = { \"bad header\" = \"x\" }",
    ] {
        let config: AlertsConfig = toml::from_str(text).unwrap();
        texts.push(config.build().map(|_| ()).unwrap_err().to_string());
    }
    for text in [
        "[suppression]\nmin_interval = 5",
        "[[alert_handlers]]\ntype = \"pager\"",
    ] {
        texts.push(
            toml::from_str::<AlertsConfig>(text)
                .unwrap_err()
                .to_string(),
        );
    }
    texts.push(
        HandlerError::Http(HttpError::Status {
            url: "http://127.0.0.1:8080/…".into(),
            status: http::StatusCode::INTERNAL_SERVER_ERROR,
            body: "upstream unavailable".into(),
        })
        .to_string(),
    );
    texts.push(
        HandlerError::Http(HttpError::Timeout {
            url: "https://hooks.example.com/…".into(),
            timeout: std::time::Duration::from_secs(5),
        })
        .to_string(),
    );
    assert!(
        texts.iter().all(|t| !t.contains("s3cr3t")),
        "a secret in an error: {texts:#?}"
    );
    insta::assert_snapshot!(texts.join("\n---\n"));
}
