//! The quickstart's live view for fixed data: durations in the unit that reads best, idle
//! rows as `—`, nothing wider than the terminal, at two widths.

use std::time::Duration;

use dspex_telemetry::quickstart::{LiveView, OperationRow, format_duration_ms, scrape_config};

fn row(what: &str, count: u64, p50_ms: f64, p95_ms: f64, p99_ms: f64) -> OperationRow {
    OperationRow {
        what: what.into(),
        count,
        rate_per_sec: count as f64 / 10.0,
        error_percent: if count == 0 { 0.0 } else { 2.5 },
        p50_ms,
        p95_ms,
        p99_ms,
    }
}

fn view() -> LiveView {
    LiveView {
        elapsed: Duration::from_secs(17),
        total: Duration::from_secs(45),
        phase: "degraded".into(),
        requests: 1234,
        metrics_addr: Some("127.0.0.1:9568".into()),
        rows: vec![
            row("tools_execute web_search", 120, 802.4, 1210.0, 1530.0),
            row("types_cast float", 300, 0.0042, 0.0125, 0.31),
            row("bridge_call_method quickstart_tools.predict", 240, 8.2, 11.7, 12.9),
            row("session_lifetime expired_by_a_very_long_label_value_that_goes_on_and_on", 0, 0.0, 0.0, 0.0),
        ],
        pool: [3.0, 1.0, 0.0, 2.0],
        memory: [4.0 * 52_428_800.0, 31_457_280.0],
        alerts: vec![
            "Tool web_search p99 latency 1530.0 ms exceeds the threshold of 1000 ms for the last 10 s window, \
             after 2 consecutive evaluations"
                .into(),
        ],
    }
}

#[test]
fn the_live_view_at_120_columns() {
    let text = view().render(120);
    assert!(text.lines().all(|l| l.chars().count() <= 120), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn the_live_view_at_80_columns() {
    let text = view().render(80);
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn durations_pick_their_unit() {
    assert_eq!(format_duration_ms(0.0042), "4.2 µs");
    assert_eq!(format_duration_ms(0.31), "310 µs");
    assert_eq!(format_duration_ms(8.2), "8.20 ms");
    assert_eq!(format_duration_ms(802.4), "802.4 ms");
    assert_eq!(format_duration_ms(1530.0), "1.53 s");
    assert_eq!(format_duration_ms(f64::NAN), "—");
}

#[test]
fn the_scrape_configuration_names_the_address() {
    insta::assert_snapshot!(scrape_config("127.0.0.1:9568"));
}
