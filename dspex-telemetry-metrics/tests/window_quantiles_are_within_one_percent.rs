//! Property tests: p50/p95/p99 from the window are within 1 % relative error of the exact
//! nearest-rank value over the same samples, for several distributions.

use std::sync::Arc;

use dspex_telemetry_metrics::{ManualClock, SeriesWindow, WindowConfig, WindowShape};
use proptest::prelude::*;

/// SplitMix64: reproducible samples from proptest's seed.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }
}

#[derive(Debug, Clone, Copy)]
enum Distribution {
    Uniform,
    LogNormal,
    Bimodal,
    Pareto,
    Constant,
}

fn samples(dist: Distribution, n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng(seed);
    let config = WindowConfig::default();
    (0..n)
        .map(|_| {
            let x = match dist {
                Distribution::Uniform => 1.0 + 999.0 * rng.unit(),
                Distribution::LogNormal => (50f64.ln() + 1.2 * rng.normal()).exp(),
                Distribution::Bimodal => {
                    if rng.unit() < 0.7 {
                        (5f64.ln() + 0.2 * rng.normal()).exp()
                    } else {
                        (800f64.ln() + 0.3 * rng.normal()).exp()
                    }
                }
                Distribution::Pareto => 1.0 / rng.unit().powf(1.0 / 1.2),
                Distribution::Constant => 42.0,
            };
            // The accuracy bound holds over the configured value range.
            x.clamp(config.min_value, config.max_value)
        })
        .collect()
}

fn exact(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn check(dist: Distribution, n: usize, seed: u64) -> Result<(), TestCaseError> {
    let xs = samples(dist, n, seed);
    let shape = Arc::new(WindowShape::new(WindowConfig::default()).unwrap());
    let window = SeriesWindow::new(shape, Arc::new(ManualClock::new(5_000)));
    for &x in &xs {
        window.record(x);
    }
    let snap = window.snapshot();
    let mut sorted = xs.clone();
    sorted.sort_by(f64::total_cmp);
    prop_assert_eq!(snap.count, n as u64);
    prop_assert_eq!(snap.min, sorted[0]);
    prop_assert_eq!(snap.max, sorted[n - 1]);
    for (q, got) in [
        (0.5, snap.p50),
        (0.95, snap.p95),
        (0.99, snap.p99),
        (0.9, snap.quantile(0.9)),
    ] {
        let want = exact(&sorted, q);
        let err = (got - want).abs() / want;
        prop_assert!(
            err < 0.01,
            "{:?} n={} q={}: window {} exact {} error {:.4}%",
            dist,
            n,
            q,
            got,
            want,
            err * 100.0
        );
    }
    Ok(())
}

fn distribution() -> impl Strategy<Value = Distribution> {
    prop_oneof![
        Just(Distribution::Uniform),
        Just(Distribution::LogNormal),
        Just(Distribution::Bimodal),
        Just(Distribution::Pareto),
        Just(Distribution::Constant),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn quantiles_are_within_one_percent(dist in distribution(), n in 1usize..20_000, seed in any::<u64>()) {
        check(dist, n, seed)?;
    }

    #[test]
    fn tiny_sample_counts_are_within_one_percent(dist in distribution(), n in 1usize..8, seed in any::<u64>()) {
        check(dist, n, seed)?;
    }
}
