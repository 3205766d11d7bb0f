//! The generated files under `telemetry/`: written here, checked against the code by tests.

use std::fs;
use std::path::{Path, PathBuf};

use dspex_telemetry::{Config, generate};

/// Writes `telemetry/prometheus_alerts.yml`: the default thresholds over the default window
/// (what a service's own configuration gets from `dspex_telemetry::generate`).
pub fn write_alert_rules(root: &Path) -> Result<PathBuf, String> {
    let yaml = generate::alert_rules(&Config::default(), &[]);
    write(root, "prometheus_alerts.yml", &yaml)
}

/// Writes `telemetry/grafana_dashboard.json` from the metric catalog.
pub fn write_dashboard(root: &Path) -> Result<PathBuf, String> {
    let json = generate::dashboard(&dspex_telemetry::Config::default(), &[]);
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
