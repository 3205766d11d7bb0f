//! The alerts' error messages, as users read them: pinned.

use dspex_telemetry_alerts::{AlertsConfig, HandlerError};

#[test]
fn error_texts_are_pinned() {
    let mut texts = Vec::new();
    for text in [
        "evaluation_interval_ms = 0",
        "[thresholds]\nbridge_call_p99_ms = -1",
        "[[alert_handlers]]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/x\"",
        "[[alert_handlers]]\ntype = \"alertmanager\"\nurl = \"not a url\"",
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
        HandlerError::Refused {
            target: "http://127.0.0.1:8080/alerts".into(),
            status: 500,
            body: "upstream unavailable".into(),
        }
        .to_string(),
    );
    texts.push(
        HandlerError::Unreachable {
            target: "http://127.0.0.1:8080/alerts".into(),
            reason: "no answer within 5s".into(),
        }
        .to_string(),
    );
    insta::assert_snapshot!(texts.join("\n---\n"));
}
