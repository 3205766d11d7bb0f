//! Throughput against a real OTLP decoder: 50 000 spans a second offered for 10 s from one
//! thread, and at least 99 % of them exported. The thread's buffer is 4 MiB (80 ms of spans at
//! that rate) so that a collector thread held up by a busy machine does not cost spans; the
//! rest of the configuration is the default.

mod support;

use std::time::{Duration, Instant};

use dspex_telemetry_core::{Dispatcher, TraceContext, catalog, metadata};
use dspex_telemetry_exporters::otlp::{OtlpConfig, OtlpTraces};
use support::{OtlpReceiver, ReceiverOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_spans_a_second_for_ten_seconds_are_exported() {
    let receiver = OtlpReceiver::start_with(
        0,
        ReceiverOptions {
            count_only: true,
            ..ReceiverOptions::default()
        },
    )
    .await;
    let d = Dispatcher::new();
    let traces = OtlpTraces::start(
        OtlpConfig {
            endpoint: Some(format!("http://{}", receiver.addr).into()),
            thread_buffer_bytes: 4 * 1024 * 1024,
            ..OtlpConfig::default()
        },
        &d,
        "otlp",
    )
    .unwrap();
    const RATE: u64 = 50_000;
    const SECONDS: u64 = 10;
    let offered = tokio::task::spawn_blocking({
        let d = d.clone();
        move || {
            let started = Instant::now();
            let mut sent = 0u64;
            let root = TraceContext::new_root();
            let _scope = root.attach();
            while sent < RATE * SECONDS {
                // Keep to the rate: 50 spans a millisecond.
                let due = started.elapsed().as_micros() as u64 * RATE / 1_000_000;
                if sent >= due {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                for _ in 0..(due - sent).min(1_000) {
                    d.span(
                        &catalog::BRIDGE_CALL,
                        metadata! { "module" => "dspy", "function" => "Predict" },
                        || ((), metadata! { "success" => true }),
                    );
                    sent += 1;
                }
            }
            (sent, started.elapsed())
        }
    })
    .await
    .unwrap();
    let (sent, took) = offered;
    // A machine too busy to keep the rate offers the same spans more slowly.
    assert!(
        took < Duration::from_secs(SECONDS * 2),
        "offering took {took:?}: the machine could not come near the rate"
    );
    traces.flush().await;
    let stats = traces.stats();
    let received = receiver.count().await;
    traces.shutdown().await;
    assert_eq!(received, stats.exported, "{stats:?}");
    assert!(
        received * 100 >= sent * 99,
        "{received} of {sent} spans exported ({stats:?})"
    );
}
