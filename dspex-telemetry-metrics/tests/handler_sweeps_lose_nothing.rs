//! Sweeping the metrics handler (letting go of idle label sets) while other threads record
//! loses no event and double-counts none; a swept label set used again records into the
//! series it had, if the recorder still holds it.

use std::sync::atomic::{AtomicBool, Ordering};

use dspex_telemetry_core::{Dispatcher, catalog, measurements, metadata};
use dspex_telemetry_metrics::{
    MetricsHandler, RecorderConfig, WindowedRecorder, catalog as metric_catalog,
};

#[test]
fn events_recorded_during_sweeps_are_all_counted() {
    let recorder = WindowedRecorder::new(RecorderConfig::default()).unwrap();
    let d = Dispatcher::new();
    let handler = metrics::with_local_recorder(&recorder, || {
        MetricsHandler::attach(&d, "m", metric_catalog::dspex_metrics(), 1_000).unwrap()
    });
    let done = AtomicBool::new(false);
    const CALLS: u64 = 20_000;
    let mut released = 0;
    std::thread::scope(|s| {
        for t in 0..2 {
            let (d, recorder, done) = (&d, &recorder, &done);
            s.spawn(move || {
                metrics::with_local_recorder(recorder, || {
                    for i in 0..CALLS {
                        // A steady label set, and a new one now and then that goes idle.
                        let function = if i % 100 == 0 {
                            format!("once-{t}-{i}")
                        } else {
                            "steady".to_owned()
                        };
                        d.execute(
                            catalog::BRIDGE_CALL.stop(),
                            &measurements! { "duration" => 1_000_000 },
                            &metadata! { "module" => "app", "function" => function.as_str() },
                        );
                    }
                });
                done.store(true, Ordering::Release);
            });
        }
        while !done.load(Ordering::Acquire) {
            released += handler.sweep(1);
            std::thread::yield_now();
        }
    });
    let steady = recorder
        .operation("dspex_bridge_call_method", &[("method", "app.steady")])
        .unwrap();
    assert_eq!(steady.count, 2 * (CALLS - CALLS / 100));
    let total: u64 = recorder
        .snapshot()
        .iter()
        .filter(|s| s.name == "dspex_bridge_call_method_count")
        .map(|s| match &s.value {
            dspex_telemetry_metrics::SeriesValue::Counter(c) => c.total,
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(total, 2 * CALLS, "every call counted once");
    assert!(released > 0, "the idle label sets were let go");
}
