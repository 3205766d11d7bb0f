//! Events from the dispatcher become `metrics` calls with the spec's names, converted units,
//! allow-listed labels only, through cached handles.

use dspex_telemetry_core::{Dispatcher, Event, catalog, measurements, metadata};
use dspex_telemetry_metrics::testing::{CapturingRecorder, Op};
use dspex_telemetry_metrics::{
    DefinitionError, MetricDefinition, MetricsError, MetricsHandler, RecorderConfig, TagSource,
    Unit, WindowedRecorder, catalog as metric_catalog,
};

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_bridge_call_becomes_duration_in_ms_count_and_errors_without_unbounded_labels() {
    let recorder = CapturingRecorder::default();
    let d = Dispatcher::new();
    metrics::with_local_recorder(&recorder, || {
        let _h = MetricsHandler::attach(&d, "m", metric_catalog::dspex_metrics(), 100).unwrap();
        recorder.clear();
        let md = metadata! { "module" => "dspy", "function" => "Predict", "args" => "{\"q\": 1}", "session_id" => "s-1" };
        d.execute(
            catalog::BRIDGE_CALL.stop(),
            &measurements! { "duration" => 2_500_000 },
            &md,
        );
        d.execute(
            catalog::BRIDGE_CALL.exception(),
            &measurements! { "duration" => 1_000_000 },
            &md.clone().with("kind", "error"),
        );
    });
    let method = labels(&[("method", "dspy.Predict")]);
    let duration = recorder.of("dspex_bridge_call_method_duration");
    assert_eq!(
        duration.iter().map(|c| c.op.clone()).collect::<Vec<_>>(),
        [Op::Record(2.5), Op::Record(1.0)]
    );
    assert!(duration.iter().all(|c| c.labels == method));
    assert_eq!(recorder.of("dspex_bridge_call_method_count").len(), 2);
    let errors = recorder.of("dspex_bridge_call_method_errors");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].op, Op::Increment(1));
    for c in recorder.captured() {
        for (k, v) in &c.labels {
            assert!(
                !["args", "session_id"].contains(&k.as_str()),
                "{k} became a label"
            );
            assert!(v != "s-1", "a session id became a label value");
        }
    }
}

#[test]
fn descriptions_name_their_unit() {
    let recorder = CapturingRecorder::default();
    let d = Dispatcher::new();
    metrics::with_local_recorder(&recorder, || {
        MetricsHandler::attach(&d, "m", metric_catalog::dspex_metrics(), 100).unwrap();
    });
    let described = recorder.of("dspex_bridge_call_method_duration");
    assert_eq!(
        described[0].op,
        Op::Describe(
            Some(metrics::Unit::Milliseconds),
            "Duration of bridge calls, successful or not (milliseconds).".into()
        )
    );
}

#[test]
fn sessions_pool_health_and_variable_operations_get_their_labels() {
    let recorder = CapturingRecorder::default();
    let d = Dispatcher::new();
    metrics::with_local_recorder(&recorder, || {
        let _h = MetricsHandler::attach(&d, "m", metric_catalog::dspex_metrics(), 100).unwrap();
        recorder.clear();
        d.execute(
            &catalog::SESSION_VARIABLE_SET,
            &measurements! { "size" => 10 },
            &metadata! { "var_name" => "t" },
        );
        d.execute(
            &catalog::SESSION_VARIABLE_GET,
            &measurements! { "size" => 10 },
            &metadata! { "found" => true },
        );
        d.execute(
            &catalog::POOL_HEALTH,
            &measurements! { "workers_idle" => 3, "workers_busy" => 1, "workers_starting" => 0, "queue_depth" => 7 },
            &metadata! { "pool" => "default" },
        );
        d.execute(
            &catalog::SESSION_EXPIRED,
            &measurements! { "lifetime_ms" => 90_000 },
            &metadata! { "reason" => "ttl" },
        );
    });
    let ops: Vec<_> = recorder
        .of("dspex_session_variable_operations_total")
        .into_iter()
        .map(|c| c.labels)
        .collect();
    assert_eq!(
        ops,
        [
            labels(&[("operation", "set")]),
            labels(&[("operation", "get")])
        ]
    );
    let workers: Vec<_> = recorder
        .of("dspex_pool_workers")
        .into_iter()
        .map(|c| (c.labels, c.op))
        .collect();
    assert_eq!(
        workers,
        [
            (
                labels(&[("pool", "default"), ("state", "idle")]),
                Op::GaugeSet(3.0)
            ),
            (
                labels(&[("pool", "default"), ("state", "busy")]),
                Op::GaugeSet(1.0)
            ),
            (
                labels(&[("pool", "default"), ("state", "starting")]),
                Op::GaugeSet(0.0)
            ),
        ]
    );
    assert_eq!(
        recorder.of("dspex_pool_queue_depth")[0].op,
        Op::GaugeSet(7.0)
    );
    assert_eq!(
        recorder.of("dspex_session_lifetime")[0].op,
        Op::Record(90_000.0)
    );
}

#[test]
fn the_window_sees_events_and_users_own_metrics_calls() {
    let recorder = WindowedRecorder::new(RecorderConfig::default()).unwrap();
    let d = Dispatcher::new();
    metrics::with_local_recorder(&recorder, || {
        let _h = MetricsHandler::attach(&d, "m", metric_catalog::dspex_metrics(), 100).unwrap();
        for i in 0..100 {
            let md = metadata! { "tool_name" => "search" };
            let event = if i % 10 == 0 {
                catalog::TOOLS_EXECUTE.exception()
            } else {
                catalog::TOOLS_EXECUTE.stop()
            };
            d.execute(
                event,
                &measurements! { "duration" => (i + 1) * 1_000_000 },
                &md,
            );
        }
        metrics::histogram!("myapp_business_duration", "operation" => "data_processing")
            .record(100.0);
    });
    let op = recorder
        .operation("dspex_tools_execute", &[("tool_name", "search")])
        .unwrap();
    assert_eq!(op.count, 100);
    assert_eq!(op.error_count, 10);
    assert!((op.error_rate - 0.10).abs() < 1e-9);
    assert!((op.p50 - 50.0).abs() <= 0.5, "p50 {}", op.p50);
    assert_eq!(
        recorder
            .histogram(
                "myapp_business_duration",
                &[("operation", "data_processing")]
            )
            .unwrap()
            .count,
        1
    );
}

#[test]
fn keep_and_drop_predicates_filter_events() {
    let recorder = CapturingRecorder::default();
    let d = Dispatcher::new();
    let slow_only =
        MetricDefinition::counter("slow_calls_total", [catalog::BRIDGE_CALL.stop().clone()]).keep(
            |e: &Event<'_>| {
                e.measurements()
                    .get("duration")
                    .is_some_and(|n| n.as_f64() > 1e9)
            },
        );
    let not_cached = MetricDefinition::counter(
        "uncached_calls_total",
        [catalog::BRIDGE_CALL.stop().clone()],
    )
    .drop_if(|e: &Event<'_>| {
        e.metadata()
            .get("cache_hit")
            .is_some_and(|v| *v == true.into())
    });
    metrics::with_local_recorder(&recorder, || {
        let _h = MetricsHandler::attach(&d, "m", vec![slow_only, not_cached], 100).unwrap();
        recorder.clear();
        d.execute(
            catalog::BRIDGE_CALL.stop(),
            &measurements! { "duration" => 2_000_000_000i64 },
            &metadata! { "cache_hit" => true },
        );
        d.execute(
            catalog::BRIDGE_CALL.stop(),
            &measurements! { "duration" => 5 },
            &metadata! { "cache_hit" => false },
        );
    });
    assert_eq!(recorder.of("slow_calls_total").len(), 1);
    assert_eq!(recorder.of("uncached_calls_total").len(), 1);
}

#[test]
fn label_sets_past_the_cap_go_to_one_overflow_series() {
    let recorder = WindowedRecorder::new(RecorderConfig::default()).unwrap();
    let d = Dispatcher::new();
    let def =
        MetricDefinition::counter("tool_calls_total", [catalog::TOOLS_EXECUTE.stop().clone()])
            .tags(&["tool_name"]);
    let handler = metrics::with_local_recorder(&recorder, || {
        let h = MetricsHandler::attach(&d, "m", vec![def], 10).unwrap();
        for i in 0..1_000 {
            let name = format!("tool-{i}");
            d.execute(
                catalog::TOOLS_EXECUTE.stop(),
                &measurements! {},
                &metadata! { "tool_name" => name.as_str() },
            );
        }
        h
    });
    assert_eq!(handler.overflowed(), 990);
    assert_eq!(
        recorder
            .counter("tool_calls_total", &[("overflow", "true")])
            .unwrap()
            .total,
        990
    );
    assert_eq!(recorder.series_count(), 11);
    handler.detach();
    assert!(d.list_handlers(None).is_empty());
}

#[test]
fn a_paused_handler_records_nothing_and_resumes_with_its_label_sets() {
    let recorder = WindowedRecorder::new(RecorderConfig::default()).unwrap();
    let d = Dispatcher::new();
    let defs = vec![
        MetricDefinition::counter("tool_calls_total", [catalog::TOOLS_EXECUTE.stop().clone()])
            .tags(&["tool_name"]),
        MetricDefinition::counter("queued_total", [catalog::POOL_REQUEST_QUEUED.clone()]),
    ];
    let stop = |name: &str| {
        d.execute(
            catalog::TOOLS_EXECUTE.stop(),
            &measurements! {},
            &metadata! { "tool_name" => name },
        )
    };
    let total = |name: &str| {
        recorder
            .counter("tool_calls_total", &[("tool_name", name)])
            .map_or(0, |c| c.total)
    };
    metrics::with_local_recorder(&recorder, || {
        let h = MetricsHandler::attach(&d, "m", defs, 1).unwrap();
        assert_eq!(d.list_handlers(None).len(), 2, "one handler per event");
        stop("a");
        h.pause();
        h.pause();
        assert!(d.list_handlers(None).is_empty());
        stop("a");
        h.resume().unwrap();
        // Already attached: refused, nothing changes.
        assert!(matches!(h.resume(), Err(MetricsError::Attach(_))));
        assert_eq!(d.list_handlers(None).len(), 2);
        stop("a");
        // The cap of one label set still counts the set resolved before the pause.
        stop("b");
        assert_eq!(h.overflowed(), 1);
        h.detach();
    });
    assert_eq!(
        total("a"),
        2,
        "the event emitted while paused was not recorded"
    );
    assert!(d.list_handlers(None).is_empty());
}

#[test]
fn the_handler_declares_the_metadata_its_labels_read() {
    let d = Dispatcher::new();
    let slow =
        MetricDefinition::counter("slow_calls_total", [catalog::TOOLS_EXECUTE.stop().clone()])
            .tags(&["tool_name"])
            .keep(|e| e.metadata().get("caller").is_some());
    metrics::with_local_recorder(&CapturingRecorder::default(), || {
        let h = MetricsHandler::attach(&d, "m", metric_catalog::dspex_metrics(), 10).unwrap();
        let stop = catalog::BRIDGE_CALL.stop();
        assert!(d.reads_key(stop, "module") && d.reads_key(stop, "function"));
        assert!(!d.reads_key(stop, "args"), "no label reads the arguments");
        assert!(!d.reads_key(&catalog::POOL_REQUEST_DISPATCHED, "args"));
        // A filter may read anything.
        let f = MetricsHandler::attach(&d, "f", vec![slow], 10).unwrap();
        assert!(d.reads_key(catalog::TOOLS_EXECUTE.stop(), "args"));
        assert!(!d.reads_key(stop, "args"));
        h.detach();
        f.detach();
    });
}

#[test]
fn bad_definitions_are_refused_with_the_reason() {
    let d = Dispatcher::new();
    let attach =
        |def: MetricDefinition| MetricsHandler::attach(&d, "m", vec![def], 10).unwrap_err();
    let stop = || [catalog::BRIDGE_CALL.stop().clone()];
    assert!(matches!(
        attach(MetricDefinition::counter("calls", stop()).tags(&["session_id"])),
        MetricsError::Definition(DefinitionError::ForbiddenTag { .. })
    ));
    assert!(matches!(
        attach(
            MetricDefinition::counter("calls", stop())
                .tag("who", TagSource::Join(&["module", "args"], "."))
        ),
        MetricsError::Definition(DefinitionError::ForbiddenTag { .. })
    ));
    assert!(matches!(
        attach(MetricDefinition::counter("9calls", stop())),
        MetricsError::Definition(DefinitionError::InvalidName(_))
    ));
    assert!(matches!(
        attach(MetricDefinition::distribution("d", stop(), &[5.0, 1.0])),
        MetricsError::Definition(DefinitionError::InvalidBuckets(_))
    ));
    assert!(matches!(
        attach(
            MetricDefinition::summary("s", stop())
                .measurement("size")
                .unit(Unit::Byte, Unit::Millisecond)
        ),
        MetricsError::Definition(DefinitionError::UnitMismatch(..))
    ));
    let twice = vec![
        MetricDefinition::counter("c", stop()),
        MetricDefinition::summary("c", stop()).measurement("duration"),
    ];
    assert_eq!(
        MetricsHandler::attach(&d, "m", twice, 10).unwrap_err(),
        MetricsError::Conflict("c".into())
    );
    assert!(
        d.list_handlers(None).is_empty(),
        "nothing stays attached after a refusal"
    );
}

#[test]
fn mapped_labels_render_once_per_value() {
    use dspex_telemetry_metrics::ValueMap;
    use std::borrow::Cow;
    fn outcome(v: Option<&dspex_telemetry_core::Value<'_>>) -> Cow<'static, str> {
        match v {
            Some(v) if *v == true.into() => Cow::Borrowed("ok"),
            Some(_) => Cow::Borrowed("error"),
            None => Cow::Borrowed("unknown"),
        }
    }
    let recorder = WindowedRecorder::new(RecorderConfig::default()).unwrap();
    let d = Dispatcher::new();
    let def = MetricDefinition::counter(
        "calls_by_outcome_total",
        [catalog::BRIDGE_CALL.stop().clone()],
    )
    .tag("outcome", TagSource::Mapped("success", ValueMap(outcome)));
    metrics::with_local_recorder(&recorder, || {
        let _h = MetricsHandler::attach(&d, "m", vec![def], 10).unwrap();
        for ok in [true, true, false] {
            d.execute(
                catalog::BRIDGE_CALL.stop(),
                &measurements! {},
                &metadata! { "success" => ok },
            );
        }
        d.execute(
            catalog::BRIDGE_CALL.stop(),
            &measurements! {},
            &metadata! {},
        );
    });
    let total = |v| {
        recorder
            .counter("calls_by_outcome_total", &[("outcome", v)])
            .map(|c| c.total)
    };
    assert_eq!(
        (total("ok"), total("error"), total("unknown")),
        (Some(2), Some(1), Some(1))
    );
}

#[test]
fn the_window_composes_with_other_recorders_through_a_fanout() {
    let window = WindowedRecorder::new(RecorderConfig::default()).unwrap();
    let capture = CapturingRecorder::default();
    let fanout = metrics_util::layers::FanoutBuilder::default()
        .add_recorder(window.clone())
        .add_recorder(capture.clone())
        .build();
    let d = Dispatcher::new();
    metrics::with_local_recorder(&fanout, || {
        let _h = MetricsHandler::attach(&d, "m", metric_catalog::dspex_metrics(), 100).unwrap();
        d.execute(
            catalog::TYPES_CAST.stop(),
            &measurements! { "duration" => 3_000_000 },
            &metadata! { "to_type" => "int" },
        );
    });
    assert_eq!(
        window
            .operation("dspex_types_cast", &[("to_type", "int")])
            .unwrap()
            .max,
        3.0
    );
    assert_eq!(
        capture.of("dspex_types_cast_duration").last().unwrap().op,
        Op::Record(3.0)
    );
}

/// Label sets are told apart by their values whatever their number and length: a metric with
/// 14 label parts (more than are kept inline) and values of every short length.
#[test]
fn many_labels_and_values_of_every_length_keep_their_own_series() {
    const KEYS: [&str; 13] = [
        "k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "k10", "k11", "k12",
    ];
    let recorder = WindowedRecorder::new(RecorderConfig::default()).unwrap();
    let d = Dispatcher::new();
    let event = dspex_telemetry_core::EventName::new(["app", "wide"]).unwrap();
    let mut def = MetricDefinition::counter("app_wide_total", [event.clone()])
        .tag("pair", TagSource::Join(&["k0", "k1"], "/"));
    for key in &KEYS[2..] {
        def = def.tag(key, TagSource::Metadata(key));
    }
    let values: Vec<String> = (0..18)
        .map(|n| "abcdefghijklmnopq"[..n].to_owned())
        .collect();
    metrics::with_local_recorder(&recorder, || {
        let _h = MetricsHandler::attach(&d, "m", vec![def], 1_000).unwrap();
        for round in 0..3 {
            for v in &values {
                let mut md = dspex_telemetry_core::Metadata::new();
                for key in &KEYS[..12] {
                    md = md.with(*key, "same");
                }
                md = md.with("k12", v.as_str());
                d.execute(&event, &measurements! {}, &md);
                // The same length, one byte changed in the middle: another series.
                if !v.is_empty() {
                    let mut other = v.clone().into_bytes();
                    other[v.len() / 2] = b'X';
                    let other = String::from_utf8(other).unwrap();
                    let md = md.clone().with("k12", other.as_str());
                    if round == 0 {
                        d.execute(&event, &measurements! {}, &md);
                    }
                }
            }
        }
    });
    let snapshot = recorder.snapshot();
    let series: Vec<_> = snapshot
        .iter()
        .filter(|s| s.name == "app_wide_total")
        .collect();
    assert_eq!(series.len(), 18 + 17, "one series per distinct value");
    for s in &series {
        let k12 = &s.labels.iter().find(|(k, _)| k == "k12").unwrap().1;
        let expected = if k12.contains('X') { 1 } else { 3 };
        assert_eq!(s.labels.len(), 12);
        let dspex_telemetry_metrics::SeriesValue::Counter(c) = &s.value else {
            panic!("{s:?} is not a counter");
        };
        assert_eq!(c.total, expected, "series {:?}", s.labels);
    }
}
