//! The stack's error messages, as users read them: pinned. Each names the key at fault.

use dspex_telemetry::quickstart::{QuickstartError, backend};
use dspex_telemetry::{Config, StartError, Telemetry};
use dspex_telemetry_core::Dispatcher;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_texts_are_pinned() {
    let mut texts = Vec::new();
    for text in [
        "[metrics]\nwindow_size = 5",
        "[telemetry]\nhandlers = [\"pager\"]",
        "[reporter]\nreporting_interval = \"soon\"",
    ] {
        texts.push(Config::from_toml(text).unwrap_err().to_string());
    }
    texts.push(
        Config::from_toml_with_env(
            "[reporter]\nbackends = [{ type = \"statsd\", host = \"${STATSD_HOST}\" }]",
            |_| None,
        )
        .unwrap_err()
        .to_string(),
    );
    texts.push(
        Config::load("/nonexistent/telemetry.toml")
            .unwrap_err()
            .to_string(),
    );
    // Values out of range fail at start, naming the key; none installs a recorder.
    for text in [
        "[metrics]\nwindow_size_ms = 0",
        "[alerts]\nevaluation_interval_ms = 0",
        "[reporter]\nreporting_interval = 0",
    ] {
        let config = Config::from_toml(text).unwrap();
        let err = Telemetry::start(&config, &Dispatcher::new())
            .await
            .unwrap_err();
        texts.push(err.to_string());
    }
    texts.push(StartError::RecorderInstalled.to_string());
    texts.push(
        backend("type = \"carrier-pigeon\"")
            .unwrap_err()
            .to_string(),
    );
    texts.push(QuickstartError::Pool("no python3 on the PATH".into()).to_string());
    insta::assert_snapshot!(texts.join("\n"));
}
