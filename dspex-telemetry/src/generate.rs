//! The Grafana dashboard and the Prometheus alert rules for a service's own configuration
//! and metrics: the DSPex catalog's panels and your metrics' (a panel per definition), the
//! rules of your thresholds over your window. Call these from your own xtask (for your own
//! metrics), or run `dspex-telemetry dashboard --config telemetry.toml` and `dspex-telemetry
//! alert-rules --config telemetry.toml` (the catalog's); the project's own `cargo xtask dashboard` and
//! `alert-rules` use them with the default configuration.
//!
//! ```
//! use dspex_telemetry::{Config, generate};
//! use dspex_telemetry::core::EventName;
//! use dspex_telemetry::metrics::MetricDefinition;
//!
//! let config = Config::from_toml("[alerts.thresholds]\nbridge_call_p99_ms = 250").unwrap();
//! let mine = [MetricDefinition::counter(
//!     "checkout_orders_total",
//!     [EventName::from_static(&["shop", "checkout", "stop"])],
//! )
//! .tags(&["region"])];
//! let dashboard = generate::dashboard(&config, &mine);
//! assert!(dashboard.to_string().contains("rate(checkout_orders_total["));
//! assert!(dashboard.to_string().contains(r#""color":"red","value":250.0"#));
//! let rules = generate::alert_rules(&config, &mine);
//! assert!(rules.contains("> 250"));
//! ```

use dspex_telemetry_exporters::grafana;
use dspex_telemetry_metrics::{MetricDefinition, catalog};

use crate::Config;

/// The catalog's definitions followed by `extra` (a service's own), each name once.
fn with_catalog(extra: &[MetricDefinition]) -> Vec<MetricDefinition> {
    let mut all = catalog::dspex_metrics();
    for d in extra {
        if all.iter().all(|known| known.name() != d.name()) {
            all.push(d.clone());
        }
    }
    all
}

/// The Grafana dashboard (JSON model) for the DSPex catalog and `extra`, your own metric
/// definitions (a row "Your metrics" holds a panel for each), with `config`'s alert
/// thresholds drawn as red lines on the latency and error-rate panels.
pub fn dashboard(config: &Config, extra: &[MetricDefinition]) -> serde_json::Value {
    let t = &config.alerts.thresholds;
    grafana::dashboard_with(
        &with_catalog(extra),
        &grafana::ThresholdLines {
            bridge_call_p99_ms: t.bridge_call_p99_ms,
            tool_execution_p99_ms: t.tool_execution_p99_ms,
            error_rate_percent: t.error_rate_percent,
        },
    )
}

/// The Prometheus alert rules (YAML) of `config`'s thresholds over its window
/// (`[metrics] window_size_ms`), for the DSPex catalog and `extra`.
pub fn alert_rules(config: &Config, extra: &[MetricDefinition]) -> String {
    dspex_telemetry_alerts::prometheus_rules(
        &config.alerts.thresholds.rules(),
        config.metrics.window_size_ms,
        &with_catalog(extra),
    )
}
