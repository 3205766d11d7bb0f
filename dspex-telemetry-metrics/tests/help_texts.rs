//! Snapshot of every catalog metric's HELP text (each names its unit).

use dspex_telemetry_metrics::catalog::dspex_metrics;

#[test]
fn every_help_text_names_its_unit() {
    let mut lines: Vec<String> = dspex_metrics()
        .iter()
        .map(|d| format!("{}: {}", d.name(), d.help()))
        .collect();
    lines.dedup();
    insta::assert_snapshot!(lines.join("\n"));
}
