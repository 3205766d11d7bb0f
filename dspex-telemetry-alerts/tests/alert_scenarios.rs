//! What a user writes to pin their alerts: their own configuration (a changed threshold,
//! every kind of handler), a traffic pattern through the public `Scenario` helper, and a
//! snapshot of the notifications with every payload.

use dspex_telemetry_alerts::AlertsConfig;
use dspex_telemetry_alerts::scenario::Scenario;

const CONFIG: &str = r#"
thresholds = { tool_execution_p99_ms = 250, error_rate_percent = 10 }
evaluation_interval_ms = 10000

[suppression]
occurrence_threshold = 1
min_interval_ms = 20000

[[alert_handlers]]
type = "log"
level = "error"

[[alert_handlers]]
type = "webhook"
url = "https://hooks.example.com/services/T000/B000/XXXX"

[[alert_handlers]]
type = "alertmanager"
url = "https://alertmanager.example.com:9093"
"#;

#[test]
fn a_slow_tool_and_a_failing_model_fire_and_resolve_as_pinned() {
    let config: AlertsConfig = toml::from_str(CONFIG).expect("the configuration");
    let steps = Scenario::new(&config)
        .calls(
            "dspex_tools_execute",
            &[("tool_name", "web_search")],
            0..40_000,
            250,
            120.0,
        )
        .calls(
            "dspex_tools_execute",
            &[("tool_name", "web_search")],
            40_000..70_000,
            250,
            400.0,
        )
        .calls(
            "dspex_tools_execute",
            &[("tool_name", "web_search")],
            70_000..200_000,
            250,
            120.0,
        )
        .failing_calls(
            "dspex_lm_call",
            &[("model", "openai/gpt-4o-mini")],
            0..200_000,
            500,
            900.0,
            4,
        )
        .run(200_000)
        .expect("the scenario runs");
    insta::assert_snapshot!(
        "lines",
        steps
            .iter()
            .map(|s| s.line())
            .collect::<Vec<_>>()
            .join("\n")
    );
    insta::assert_json_snapshot!("steps", steps);
    // The snapshot holds a notification again while the model keeps failing: min_interval_ms.
    let model: Vec<u64> = steps
        .iter()
        .filter(|s| s.alert.contains("gpt-4o-mini"))
        .map(|s| s.at_ms)
        .collect();
    assert!(model.len() >= 2, "{model:?}");
    assert!(model.windows(2).all(|w| w[1] - w[0] >= 20_000), "{model:?}");
}

#[test]
fn a_configuration_that_does_not_build_names_the_key() {
    let config: AlertsConfig =
        toml::from_str("evaluation_interval_ms = 0").expect("parses; the range is checked later");
    let error = Scenario::new(&config).run(10_000).unwrap_err();
    assert_eq!(error.key, "evaluation_interval_ms");
}
