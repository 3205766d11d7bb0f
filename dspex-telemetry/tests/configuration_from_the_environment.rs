//! Secrets and endpoints from the environment: `${VAR}` in any string of the TOML, a clear
//! error naming the key and the variable when one is missing, a stack started from a
//! configuration whose addresses and token come from the environment alone, and
//! `dspex-telemetry config`, which prints the effective configuration with secrets redacted.

#[path = "../../dspex-telemetry-exporters/tests/support/mod.rs"]
mod support;

use std::collections::HashMap;

use dspex_telemetry::core::Dispatcher;
use dspex_telemetry::{Config, ConfigError, Telemetry};

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

#[test]
fn variables_expand_in_nested_strings_and_a_missing_one_names_its_key() {
    let text = r#"
        [[alerts.alert_handlers]]
        type = "webhook"
        url = "https://${HOOK_HOST}/alerts"
        headers = { authorization = "Bearer ${HOOK_TOKEN}", note = "$${literal} and ${unterminated" }
    "#;
    let config = Config::from_toml_with_env(
        text,
        env(&[("HOOK_HOST", "hooks.example.com"), ("HOOK_TOKEN", "t0ken")]),
    )
    .expect("expanded");
    let debug = format!("{config:?}");
    assert!(debug.contains("hooks.example.com"), "{debug}");
    assert!(
        !debug.contains("t0ken"),
        "a header's value never shows: {debug}"
    );
    let handler = &config.alerts.alert_handlers[0];
    let dspex_telemetry::alerts::HandlerConfig::Webhook { headers, .. } = handler else {
        panic!("{handler:?}")
    };
    assert_eq!(headers["authorization"].expose(), "Bearer t0ken");
    assert_eq!(headers["note"].expose(), "${literal} and ${unterminated");

    let missing = Config::from_toml_with_env(text, env(&[("HOOK_HOST", "h")])).unwrap_err();
    assert!(
        matches!(&missing, ConfigError::Env { key, variable }
            if key == "alerts.alert_handlers[0].headers.authorization" && variable == "HOOK_TOKEN"),
        "{missing:?}"
    );
    assert_eq!(
        missing.to_string(),
        "invalid `alerts.alert_handlers[0].headers.authorization`: the environment variable HOOK_TOKEN is not set"
    );
    // A value from the environment that is of the wrong type is never quoted back.
    let wrong = Config::from_toml_with_env(
        "[metrics]\nwindow_size_ms = \"${W}\"",
        env(&[("W", "s3cret-ish")]),
    )
    .unwrap_err()
    .to_string();
    assert!(!wrong.contains("s3cret-ish"), "{wrong}");
    assert!(
        wrong.contains("window_size_ms") || wrong.contains("u64"),
        "{wrong}"
    );
    // After expansion the keys are checked as ever.
    let unknown =
        Config::from_toml_with_env("[metrics]\nwindow = \"${W}\"", env(&[("W", "1")])).unwrap_err();
    assert!(unknown.to_string().contains("window"), "{unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_starts_from_addresses_and_a_token_in_the_environment_alone() {
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let text = r#"
        [reporter]
        reporting_interval = 60000
        [[reporter.backends]]
        type = "prometheus"
        listen = "${METRICS_LISTEN}"
        bearer_token = "${METRICS_TOKEN}"
    "#;
    let config = Config::from_toml_with_env(
        text,
        env(&[("METRICS_LISTEN", &listen), ("METRICS_TOKEN", "scrape-me")]),
    )
    .expect("the configuration");
    let (telemetry, _recorder) = Telemetry::start_composed(&config, &Dispatcher::new())
        .await
        .expect("the stack starts");
    assert_eq!(telemetry.prometheus_addr().map(|a| a.port()), Some(port));
    let addr = telemetry.prometheus_addr().unwrap();
    let (status, _) = support::http_get(addr, "/metrics", &[]).await.unwrap();
    assert_eq!(status, 401, "the token from the environment is required");
    let (status, _) = support::http_get(addr, "/metrics", &[("authorization", "Bearer scrape-me")])
        .await
        .unwrap();
    assert_eq!(status, 200);
    telemetry.shutdown().await;
}

#[test]
fn the_config_command_prints_the_effective_configuration_without_secrets() {
    let dir = std::env::temp_dir().join(format!("dspex-config-cmd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("telemetry.toml");
    std::fs::write(
        &file,
        "[[alerts.alert_handlers]]\ntype = \"webhook\"\n\
         url = \"https://hooks.example.com/services/${HOOK_PATH}\"\n\
         headers = { x-api-key = \"${API_KEY}\" }\n",
    )
    .unwrap();
    let run = |vars: &[(&str, &str)]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dspex-telemetry"))
            .args(["config", "--config"])
            .arg(&file)
            .envs(vars.iter().copied())
            .output()
            .expect("the binary runs")
    };
    let out = run(&[("HOOK_PATH", "T000/B000/XXXX"), ("API_KEY", "k-123-secret")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("window_size_ms"),
        "defaults filled in: {text}"
    );
    assert!(text.contains("hooks.example.com"), "{text}");
    for secret in ["k-123-secret", "T000/B000/XXXX"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    let out = run(&[("HOOK_PATH", "T000/B000/XXXX")]);
    assert!(!out.status.success());
    let error = String::from_utf8(out.stderr).unwrap();
    assert!(
        error.contains(
            "`alerts.alert_handlers[0].headers.x-api-key`: the environment variable API_KEY is not set"
        ),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
