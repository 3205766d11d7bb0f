//! `metrics_endpoint_bench`: how fast our `/metrics` endpoint answers, against
//! metrics-exporter-prometheus's own HTTP listener serving the same series, in the same run:
//!
//! | bench | what it times |
//! |---|---|
//! | `metrics_endpoint/scrape/*` | one scrape on a fresh connection, nothing else open |
//! | `metrics_endpoint/scrape_beside_2050_held/*` | one scrape while 2 000 idle and 50 slowloris connections are held open |
//! | `metrics_endpoint/2000_concurrent_scrapes/*` | 2 000 scrapes started together, until the last is answered |
//!
//! Both servers hold 200 methods' counters and duration histograms (the catalog's buckets) and
//! run on the same two-thread tokio runtime as the clients.
//!
//! Run: `cargo bench -p dspex-telemetry-benches --bench metrics_endpoint_bench`, then `cargo
//! xtask bench-report`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use dspex_telemetry_exporters::prometheus::{
    PrometheusConfig, PrometheusEndpoint, prometheus_recorder,
};
use dspex_telemetry_metrics::catalog as metric_catalog;
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// The same series into whichever recorder is current.
fn record_series() {
    for i in 0..200 {
        let method = format!("dspy.Module{i}");
        metrics::counter!("dspex_bridge_call_method_count", "method" => method.clone())
            .increment(i + 1);
        for ms in [3.0, 40.0, 900.0] {
            metrics::histogram!("dspex_bridge_call_method_duration", "method" => method.clone())
                .record(ms);
        }
    }
}

/// Ours, on a free port.
fn ours(rt: &Runtime) -> (SocketAddr, PrometheusEndpoint) {
    let recorder = prometheus_recorder(&metric_catalog::dspex_metrics()).expect("a recorder");
    metrics::with_local_recorder(&recorder, record_series);
    let endpoint = rt
        .block_on(PrometheusEndpoint::start(
            &PrometheusConfig {
                listen: "127.0.0.1:0".parse().expect("an address"),
                ..PrometheusConfig::default()
            },
            recorder.handle(),
        ))
        .expect("our endpoint");
    (endpoint.local_addr(), endpoint)
}

/// metrics-exporter-prometheus's listener, on a free port.
fn theirs(rt: &Runtime) -> SocketAddr {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let _guard = rt.enter();
    let (recorder, exporter) = PrometheusBuilder::new()
        .set_buckets(metric_catalog::DURATION_BUCKETS_MS)
        .expect("buckets")
        .with_http_listener(addr)
        .build()
        .expect("the exporter");
    metrics::with_local_recorder(&recorder, record_series);
    rt.spawn(exporter);
    // Served until the process ends; the recorder's handle stays with the exporter.
    std::mem::forget(recorder);
    rt.block_on(async {
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the exporter did not listen");
    });
    addr
}

/// One scrape with `Connection: close`; panics unless it is a 200 with the series.
async fn scrape(addr: SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut answer = Vec::with_capacity(64 * 1024);
    stream.read_to_end(&mut answer).await.expect("read");
    assert!(answer.starts_with(b"HTTP/1.1 200"), "not a 200");
    assert!(answer.len() > 10_000, "a short answer");
}

/// 2 000 idle connections and 50 that send headers slowly, held until dropped.
struct Held {
    _idle: Vec<TcpStream>,
    slow: Vec<tokio::task::JoinHandle<()>>,
}

impl Held {
    fn open(rt: &Runtime, addr: SocketAddr) -> Held {
        rt.block_on(async {
            let mut idle = Vec::new();
            for _ in 0..2000 {
                idle.push(TcpStream::connect(addr).await.expect("connect"));
            }
            let mut slow = Vec::new();
            for _ in 0..50 {
                let mut stream = TcpStream::connect(addr).await.expect("connect");
                slow.push(tokio::spawn(async move {
                    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\n").await;
                    loop {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        if stream.write_all(b"x-slow: 1\r\n").await.is_err() {
                            return;
                        }
                    }
                }));
            }
            Held { _idle: idle, slow }
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for task in &self.slow {
            task.abort();
        }
    }
}

fn endpoint_benches(c: &mut Criterion) {
    let rt = runtime();
    let (our_addr, _endpoint) = ours(&rt);
    let their_addr = theirs(&rt);
    let servers = [("ours", our_addr), ("prometheus_exporter", their_addr)];

    let mut group = c.benchmark_group("metrics_endpoint");
    for (name, addr) in servers {
        group.bench_with_input(BenchmarkId::new("scrape", name), &addr, |b, &addr| {
            b.iter(|| rt.block_on(scrape(addr)))
        });
    }
    for (name, addr) in servers {
        let held = Held::open(&rt, addr);
        group.bench_with_input(
            BenchmarkId::new("scrape_beside_2050_held", name),
            &addr,
            |b, &addr| b.iter(|| rt.block_on(scrape(addr))),
        );
        drop(held);
    }
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for (name, addr) in servers {
        group.bench_with_input(
            BenchmarkId::new("2000_concurrent_scrapes", name),
            &addr,
            |b, &addr| {
                b.iter_custom(|iterations| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        total += rt.block_on(async {
                            let started = Instant::now();
                            let scrapes: Vec<_> =
                                (0..2000).map(|_| tokio::spawn(scrape(addr))).collect();
                            for s in scrapes {
                                s.await.expect("a scrape");
                            }
                            started.elapsed()
                        });
                    }
                    total
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, endpoint_benches);
criterion_main!(benches);
