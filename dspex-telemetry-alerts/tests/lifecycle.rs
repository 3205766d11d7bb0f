//! The lifecycle with an injected clock: pending until `occurrence_threshold`, one
//! notification per `min_interval_ms`, resolution when the window recovers; units right; every
//! alert type's message pinned for fire and resolve.

use std::sync::Arc;

use dspex_telemetry_alerts::thresholds::Thresholds;
use dspex_telemetry_alerts::{
    AlertEngine, AlertType, Notification, Severity, Suppression, Transition,
};
use dspex_telemetry_metrics::{ManualClock, RecorderConfig, WindowedRecorder};

fn window() -> (WindowedRecorder, ManualClock) {
    let clock = ManualClock::new(0);
    let recorder =
        WindowedRecorder::with_clock(RecorderConfig::default(), Arc::new(clock.clone())).unwrap();
    (recorder, clock)
}

fn calls(recorder: &WindowedRecorder, method: &str, ms: f64, n: usize, errors: usize) {
    let method = method.to_owned();
    metrics::with_local_recorder(recorder, || {
        for _ in 0..n {
            metrics::histogram!("dspex_bridge_call_method_duration", "method" => method.clone())
                .record(ms);
        }
        metrics::counter!("dspex_bridge_call_method_errors", "method" => method.clone())
            .increment(errors as u64);
    });
}

fn engine(thresholds: Thresholds, occurrence_threshold: u32, min_interval_ms: u64) -> AlertEngine {
    AlertEngine::new(
        thresholds.rules(),
        Suppression {
            min_interval_ms,
            occurrence_threshold,
        },
    )
}

fn p99_only() -> Thresholds {
    Thresholds {
        bridge_call_p99_ms: Some(1000.0),
        ..Thresholds::none()
    }
}

#[test]
fn units_are_milliseconds_and_the_factor_is_observed_over_threshold() {
    let (w, _) = window();
    calls(&w, "dspy.Predict", 1200.0, 30, 0);
    calls(&w, "dspy.ChainOfThought", 900.0, 30, 0);
    let fired = engine(p99_only(), 1, 0).evaluate(&w, 10_000);
    assert_eq!(fired.len(), 1, "{fired:#?}");
    let alert = &fired[0].alert;
    assert_eq!(
        alert.labels,
        vec![("method".to_owned(), "dspy.Predict".to_owned())]
    );
    assert_eq!(alert.alert_type, AlertType::PerformanceDegradation);
    assert!(
        (alert.factor - 1.2).abs() <= 1.2 * 0.01,
        "factor {}",
        alert.factor
    );
    assert_eq!(alert.severity, Severity::Low);
}

#[test]
fn a_breach_below_the_occurrence_threshold_stays_silent() {
    let (w, _) = window();
    calls(&w, "dspy.Predict", 2500.0, 30, 0);
    let mut e = engine(p99_only(), 3, 0);
    assert!(e.evaluate(&w, 1_000).is_empty());
    assert!(e.evaluate(&w, 2_000).is_empty());
    assert!(e.active().is_empty(), "pending is not firing");
    let third = e.evaluate(&w, 3_000);
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].alert.severity, Severity::High, "2.5× over");
    assert_eq!(e.active().len(), 1);
}

#[test]
fn repeated_breaches_inside_min_interval_notify_once_then_again_after_it() {
    let (w, clock) = window();
    calls(&w, "dspy.Predict", 1500.0, 30, 0);
    let mut e = engine(p99_only(), 1, 60_000);
    let mut notified = Vec::new();
    for t in (0..60_000).step_by(10_000) {
        clock.set_ms(t);
        calls(&w, "dspy.Predict", 1500.0, 5, 0);
        notified.extend(e.evaluate(&w, 1_000_000 + t));
    }
    assert_eq!(
        notified.len(),
        1,
        "six breaching evaluations within a minute: {notified:#?}"
    );
    clock.set_ms(60_000);
    calls(&w, "dspy.Predict", 1500.0, 5, 0);
    let again = e.evaluate(&w, 1_060_000);
    assert_eq!(
        again.len(),
        1,
        "still firing after min_interval_ms: notified again"
    );
    assert_eq!(again[0].transition, Transition::Fired);
    assert_eq!(again[0].alert.started_at_ms, 1_000_000, "the same firing");
}

#[test]
fn recovery_resolves_and_notifies() {
    let (w, clock) = window();
    calls(&w, "dspy.Predict", 3500.0, 30, 0);
    let mut e = engine(p99_only(), 1, 0);
    assert_eq!(e.evaluate(&w, 1_000)[0].alert.severity, Severity::Critical);
    // A minute later the slow calls have left the window; fast ones came.
    clock.advance_ms(61_000);
    calls(&w, "dspy.Predict", 40.0, 30, 0);
    let resolved = e.evaluate(&w, 62_000);
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].transition, Transition::Resolved);
    assert_eq!(resolved[0].alert.resolved_at_ms, Some(62_000));
    assert!(e.active().is_empty());
    assert!(e.evaluate(&w, 63_000).is_empty(), "resolved once");
}

#[test]
fn a_firing_suppressed_by_min_interval_resolves_silently() {
    let (w, clock) = window();
    calls(&w, "dspy.Predict", 1500.0, 30, 0);
    let mut e = engine(p99_only(), 1, 300_000);
    assert_eq!(e.evaluate(&w, 0).len(), 1);
    clock.advance_ms(61_000);
    calls(&w, "dspy.Predict", 10.0, 30, 0);
    assert_eq!(e.evaluate(&w, 61_000).len(), 1, "resolved");
    // It breaches again within five minutes of the last notification: no notification, and
    // so no resolved one either.
    calls(&w, "dspy.Predict", 5000.0, 100, 0);
    assert!(e.evaluate(&w, 62_000).is_empty());
    assert_eq!(e.active().len(), 1, "it fires, unannounced");
    clock.advance_ms(61_000);
    calls(&w, "dspy.Predict", 10.0, 30, 0);
    assert!(e.evaluate(&w, 123_000).is_empty());
}

#[test]
fn one_error_in_one_call_is_not_a_spike_but_ten_percent_of_thirty_is() {
    let (w, _) = window();
    let rates = Thresholds {
        error_rate_percent: Some(5.0),
        ..Thresholds::none()
    };
    calls(&w, "dspy.Predict", 10.0, 1, 1);
    assert!(
        engine(rates, 1, 0).evaluate(&w, 0).is_empty(),
        "below min_samples"
    );
    calls(&w, "dspy.Predict", 10.0, 29, 2);
    let fired = engine(rates, 1, 0).evaluate(&w, 0);
    assert_eq!(fired.len(), 1);
    let alert = &fired[0].alert;
    assert_eq!(alert.alert_type, AlertType::ErrorSpike);
    assert_eq!((alert.window.error_count, alert.window.count), (3, 30));
    assert!((alert.value - 10.0).abs() < 1e-9);
    assert_eq!(alert.severity, Severity::High, "2× the threshold");
}

/// Language-model calls, from their events through the catalog: the default thresholds raise
/// an error spike for the model whose calls fail, and none for the one under the threshold.
#[test]
fn failing_language_model_calls_are_an_error_spike_of_their_model() {
    use dspex_telemetry_core::{Dispatcher, Measurements, Metadata, catalog};
    use dspex_telemetry_metrics::{MetricsHandler, catalog as metric_catalog};
    let (w, _) = window();
    let d = Dispatcher::new();
    metrics::with_local_recorder(&w, || {
        let _metrics =
            MetricsHandler::attach(&d, "metrics", metric_catalog::dspex_metrics(), 100).unwrap();
        for (model, errors) in [("openai/gpt-4o-mini", 4), ("openai/gpt-4o", 1)] {
            for i in 0..40 {
                let status = if i < errors { "error" } else { "ok" };
                d.execute(
                    &catalog::LM_CALL,
                    &Measurements::new().with("duration", 800_000_000u64),
                    &Metadata::new().with("model", model).with("status", status),
                );
            }
        }
    });
    let fired = engine(Thresholds::default(), 1, 0).evaluate(&w, 0);
    assert_eq!(fired.len(), 1, "{fired:#?}");
    let alert = &fired[0].alert;
    assert_eq!(alert.rule, "lm_call_error_rate_percent");
    assert_eq!(alert.alert_type, AlertType::ErrorSpike);
    assert_eq!(
        alert.labels,
        vec![("model".to_owned(), "openai/gpt-4o-mini".to_owned())]
    );
    assert_eq!((alert.window.error_count, alert.window.count), (4, 40));
    assert_eq!(alert.severity, Severity::High, "10 % is 2× the threshold");
}

#[test]
fn queue_time_and_an_exhausted_pool_are_resource_exhaustion() {
    let (w, _) = window();
    metrics::with_local_recorder(&w, || {
        for _ in 0..30 {
            metrics::histogram!("dspex_pool_queue_time", "pool" => "default").record(6000.0);
        }
        metrics::counter!("dspex_pool_exhausted_total", "pool" => "default").increment(2);
    });
    let queue = Thresholds {
        queue_time_ms: Some(5000.0),
        ..Thresholds::none()
    };
    let mut fired = engine(queue, 1, 0).evaluate(&w, 0);
    fired.sort_by(|a, b| a.alert.rule.cmp(&b.alert.rule));
    assert_eq!(fired.len(), 2, "{fired:#?}");
    assert!(
        fired
            .iter()
            .all(|n| n.alert.alert_type == AlertType::ResourceExhaustion)
    );
    assert_eq!(fired[0].alert.rule, "pool_exhausted");
    assert_eq!(fired[0].alert.severity, Severity::Critical);
    assert_eq!(fired[1].alert.rule, "queue_time_ms");
}

/// Every alert type's fired and resolved message, and the notification as JSON.
#[test]
fn messages_and_notifications_are_pinned() {
    let (w, clock) = window();
    calls(&w, "dspy.Predict", 1850.0, 40, 4);
    metrics::with_local_recorder(&w, || {
        for _ in 0..30 {
            metrics::histogram!("dspex_pool_queue_time", "pool" => "default").record(7500.0);
        }
    });
    let mut e = engine(Thresholds::default(), 1, 0);
    // Recorded at t = 0, read at t = 30 s.
    clock.set_ms(30_000);
    let mut all: Vec<Notification> = e.evaluate(&w, 1_700_000_000_000);
    clock.advance_ms(61_000);
    all.extend(e.evaluate(&w, 1_700_000_061_000));
    all.sort_by(|a, b| {
        (a.alert.rule.as_str(), a.transition as u8)
            .cmp(&(b.alert.rule.as_str(), b.transition as u8))
    });
    let messages: Vec<String> = all.iter().map(|n| n.alert.message.clone()).collect();
    insta::assert_snapshot!(messages.join("\n"));
    let first = all
        .iter()
        .find(|n| n.alert.rule == "bridge_call_p99_ms" && n.transition == Transition::Fired)
        .unwrap();
    insta::assert_snapshot!(serde_json::to_string_pretty(first).unwrap());
}

/// A user rule on any metric of the window: a statistic, a comparison (here: below), a
/// threshold, a minimum sample count and a `for` duration.
#[test]
fn user_rules_wait_out_their_for_duration() {
    use dspex_telemetry_alerts::{Comparison, Rule, Source, Statistic};
    let (w, clock) = window();
    let rule = Rule {
        name: "cache_hit_ratio_low".into(),
        source: Source::Histogram("app_cache_hit_ratio".into()),
        statistic: Statistic::Mean,
        comparison: Comparison::Below,
        threshold: 0.8,
        min_samples: 10,
        for_ms: 30_000,
        alert_type: AlertType::PerformanceDegradation,
        severity: None,
        unit: "",
    };
    let mut e = AlertEngine::new(
        vec![rule],
        Suppression {
            min_interval_ms: 0,
            occurrence_threshold: 1,
        },
    );
    let record = |n: usize, v: f64| {
        metrics::with_local_recorder(&w, || {
            for _ in 0..n {
                metrics::histogram!("app_cache_hit_ratio", "cache" => "users").record(v);
            }
        })
    };
    record(5, 0.4);
    assert!(e.evaluate(&w, 0).is_empty(), "5 samples: below min_samples");
    record(5, 0.4);
    for t in [0u64, 10_000, 20_000] {
        clock.set_ms(t);
        assert!(
            e.evaluate(&w, 1_000 + t).is_empty(),
            "breaching for {t} ms, not yet 30 s"
        );
    }
    clock.set_ms(30_000);
    let fired = e.evaluate(&w, 31_000);
    assert_eq!(fired.len(), 1);
    let alert = &fired[0].alert;
    assert_eq!(alert.labels, vec![("cache".to_owned(), "users".to_owned())]);
    assert!(
        (alert.factor - 2.0).abs() < 0.02,
        "0.8 / 0.4 = 2: {}",
        alert.factor
    );
    assert_eq!(alert.severity, Severity::High);
}
