//! Memory, counted by the allocator: 100 000 distinct label values through the catalog and
//! through a user's own `counter!` cost about what the cap's label sets cost; nothing grows
//! with the values past the cap.

use dspex_telemetry_core::{Dispatcher, catalog, measurements, metadata};
use dspex_telemetry_metrics::{
    CardinalityLayer, ManualClock, MetricsHandler, RecorderConfig, WindowedRecorder,
    catalog as metric_catalog,
};
use metrics_exporter_prometheus::PrometheusBuilder;
use metrics_util::layers::{FanoutBuilder, Layer};

#[path = "support/counting_allocator.rs"]
mod counting_allocator;

const CAP: usize = 1_000;

#[test]
fn a_hundred_thousand_label_values_cost_what_the_cap_costs() {
    // A clock that stands still: a sub-window that starts mid-test would make its counter
    // pages for every series then, which is not what this test measures.
    let window = WindowedRecorder::with_clock(
        RecorderConfig::default(),
        std::sync::Arc::new(ManualClock::new(0)),
    )
    .unwrap();
    let prometheus = PrometheusBuilder::new().build_recorder();
    // Prometheus buffers histogram samples until its upkeep, which a scrape or its upkeep
    // task runs, and frees the drained blocks later (epoch-based reclamation): run it before
    // each measure, until two measures in a row agree (at most ten times; the least is kept).
    let handle = prometheus.handle();
    let live = || {
        let mut least = isize::MAX;
        for _ in 0..10 {
            handle.run_upkeep();
            let now = counting_allocator::live();
            if now == least {
                break;
            }
            least = least.min(now);
        }
        least
    };
    let fanout = FanoutBuilder::default()
        .add_recorder(window.clone())
        .add_recorder(prometheus)
        .build();
    let capped = CardinalityLayer::new(CAP, 256).layer(fanout);
    let d = Dispatcher::new();
    let before = live();
    let (at_cap, after) = metrics::with_local_recorder(&capped, || {
        let _handler =
            MetricsHandler::attach(&d, "m", metric_catalog::dspex_metrics(), CAP).unwrap();
        let feed = |from: usize, to: usize| {
            for i in from..to {
                let tool = format!("tool-{i}");
                d.execute(
                    catalog::TOOLS_EXECUTE.stop(),
                    &measurements! { "duration" => 1_000_000 },
                    &metadata! { "tool_name" => tool.as_str() },
                );
                metrics::counter!("user_requests_total", "user" => tool).increment(1);
            }
        };
        // The cap's label sets, plus the overflow series of each metric.
        feed(0, CAP + 10);
        let at_cap = live() - before;
        feed(CAP + 10, 100_000);
        let after = live() - before;
        // Another 100 000: past the remembered folded sets, nothing is kept.
        feed(100_000, 200_000);
        let more = live() - before - after;
        assert!(more < 64 * 1024, "{more} more bytes for the second 100 000");
        (at_cap, after)
    });
    let growth = after - at_cap;
    eprintln!("at the cap: {at_cap} bytes; after 100 000 values: {after} bytes (+{growth})");
    assert!(at_cap > 0);
    // What grows past the cap: the remembered hashes of folded label sets (under 16 bytes
    // each, about 1 MB for these 99 000), not the series.
    assert!(
        growth < 99_000 * 16 && growth < at_cap / 5,
        "+{growth} bytes past the cap, against {at_cap} bytes at the cap"
    );
    assert_eq!(window.series_count(), 3 * (CAP + 1) + CAP + 1);
}
