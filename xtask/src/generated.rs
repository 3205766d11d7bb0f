//! The generated files under `telemetry/`: written here, checked against the code by tests.

use std::fs;
use std::path::{Path, PathBuf};

use dspex_telemetry_alerts::{prometheus_rules, thresholds::Thresholds};
use dspex_telemetry_exporters::grafana;
use dspex_telemetry_metrics::{MetricsConfig, catalog};

/// Writes `telemetry/prometheus_alerts.yml`: the default thresholds over the default window.
pub fn write_alert_rules(root: &Path) -> Result<PathBuf, String> {
    let yaml = prometheus_rules(
        &Thresholds::default().rules(),
        MetricsConfig::default().window_size_ms,
        &catalog::dspex_metrics(),
    );
    write(root, "prometheus_alerts.yml", &yaml)
}

/// Writes `telemetry/grafana_dashboard.json` from the metric catalog.
pub fn write_dashboard(root: &Path) -> Result<PathBuf, String> {
    let json = grafana::dashboard(&catalog::dspex_metrics());
    let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())? + "\n";
    write(root, "grafana_dashboard.json", &text)
}

fn write(root: &Path, name: &str, text: &str) -> Result<PathBuf, String> {
    let dir = root.join("telemetry");
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(name);
    fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}
