//! The `/metrics` endpoint under hostile and heavy clients: with 2 000 idle and 50 slowloris
//! connections open, a scrape is still answered within 1 s (the connection cap closes the
//! connection idle longest; the header-read deadline closes the slowloris ones); 2 000
//! concurrent scrapes are all answered, sharing renders; a shared render never predates the
//! scrape it answers.

mod support;

use std::time::{Duration, Instant};

use dspex_telemetry_exporters::prometheus::{
    PrometheusConfig, PrometheusEndpoint, prometheus_recorder,
};
use dspex_telemetry_metrics::catalog as metric_catalog;
use support::http_get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn endpoint(config: PrometheusConfig) -> PrometheusEndpoint {
    let recorder = prometheus_recorder(&metric_catalog::dspex_metrics()).unwrap();
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("dspex_bridge_call_method_count", "method" => "dspy.Predict")
            .increment(7);
    });
    PrometheusEndpoint::start(
        &PrometheusConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..config
        },
        recorder.handle(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_is_answered_within_1_s_beside_2000_idle_and_50_slowloris_connections() {
    let endpoint = endpoint(PrometheusConfig {
        header_read_timeout: Duration::from_secs(3),
        ..PrometheusConfig::default()
    })
    .await;
    let addr = endpoint.local_addr();
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut slowloris = Vec::new();
    for i in 0..50 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slowloris.push(tokio::spawn(async move {
            // One more header line every 200 ms, never the end of the headers; returns when
            // the endpoint has closed the connection.
            let started = Instant::now();
            let mut buf = [0u8; 256];
            loop {
                tokio::select! {
                    read = stream.read(&mut buf) => {
                        if matches!(read, Ok(0) | Err(_)) {
                            return started.elapsed();
                        }
                    }
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {
                        if stream.write_all(format!("x-slow-{i}: 1\r\n").as_bytes()).await.is_err() {
                            return started.elapsed();
                        }
                    }
                }
            }
        }));
    }

    // The endpoint has taken every connection from its listen queue (closing the idle ones
    // past its cap): the connections are open, as a service's would be before a scrape.
    let settle = Instant::now() + Duration::from_secs(10);
    while endpoint.stats().accepted < 2050 {
        assert!(
            Instant::now() < settle,
            "not every connection was accepted: {:?}",
            endpoint.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(1), http_get(addr, "/metrics", &[]))
            .await
            .expect("a scrape answered within 1 s")
            .unwrap();
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert!(
        body.contains(r#"dspex_bridge_call_method_count{method="dspy.Predict"} 7"#),
        "{body}"
    );
    let stats = endpoint.stats();
    assert!(stats.accepted >= 2051, "{stats:?}");
    assert!(stats.open <= 512, "the cap holds: {stats:?}");
    assert!(stats.evicted >= 2051 - 512, "{stats:?}");
    eprintln!("scrape beside 2 050 held connections: {took:?}; {stats:?}");

    // Every slowloris connection is closed: made room for, or past its header deadline.
    for task in slowloris {
        let lived = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("a slowloris connection outlived the header deadline")
            .unwrap();
        assert!(lived < Duration::from_secs(6), "{lived:?}");
    }
    drop(idle);
    endpoint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_scrapes_are_all_answered_sharing_renders() {
    let endpoint = endpoint(PrometheusConfig::default()).await;
    let addr = endpoint.local_addr();
    let started = Instant::now();
    let scrapes: Vec<_> = (0..2000)
        .map(|_| tokio::spawn(async move { http_get(addr, "/metrics", &[]).await }))
        .collect();
    let mut answered = 0;
    for scrape in scrapes {
        let (status, body) = tokio::time::timeout(Duration::from_secs(60), scrape)
            .await
            .expect("every scrape answered within 60 s")
            .unwrap()
            .unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("dspex_bridge_call_method_count"));
        answered += 1;
    }
    assert_eq!(answered, 2000);
    let stats = endpoint.stats();
    assert_eq!(stats.accepted, 2000, "{stats:?}");
    assert!(
        stats.renders < 2000,
        "scrapes arriving together share a render: {stats:?}"
    );
    eprintln!(
        "2 000 concurrent scrapes: {:?}; {stats:?}",
        started.elapsed()
    );
    endpoint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_render_is_never_older_than_the_scrape() {
    let recorder = prometheus_recorder(&metric_catalog::dspex_metrics()).unwrap();
    let endpoint = PrometheusEndpoint::start(
        &PrometheusConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..PrometheusConfig::default()
        },
        recorder.handle(),
    )
    .await
    .unwrap();
    let addr = endpoint.local_addr();
    for n in 1..=20u64 {
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("app_scrapes_seen").increment(1);
        });
        // Two scrapes at once after each increment: both see it, whichever render they share.
        let (a, b) = tokio::join!(
            http_get(addr, "/metrics", &[]),
            http_get(addr, "/metrics", &[])
        );
        for (status, body) in [a.unwrap(), b.unwrap()] {
            assert_eq!(status, 200);
            assert!(
                body.contains(&format!("app_scrapes_seen {n}\n")),
                "{n}: {body}"
            );
        }
    }
    endpoint.shutdown().await;
}
