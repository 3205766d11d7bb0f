//! Through the assembled stack, a user's own `counter!` is capped like the catalog's metrics:
//! the `/metrics` scrape and the window hold at most `max_series_per_metric` label sets plus
//! the overflow series, and label values are cut to `max_label_value_bytes`.

use dspex_telemetry::{Config, Telemetry};
use dspex_telemetry_core::Dispatcher;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_own_counter_is_capped_in_the_scrape_and_the_window() {
    let config = Config::from_toml(
        "[metrics]\nmax_series_per_metric = 100\nmax_label_value_bytes = 64\n\
         [[reporter.backends]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let telemetry = Telemetry::start(&config, &Dispatcher::new())
        .await
        .expect("the stack starts");
    for i in 0..5_000 {
        metrics::counter!("shop_orders_total", "customer" => format!("customer-{i}")).increment(1);
    }
    metrics::counter!("shop_orders_total", "customer" => "x".repeat(10_000)).increment(1);
    let body = scrape(telemetry.prometheus_addr().expect("/metrics")).await;
    let series: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("shop_orders_total{"))
        .collect();
    assert_eq!(series.len(), 101, "100 label sets and the overflow series");
    assert!(
        series
            .iter()
            .any(|l| l.contains("overflow=\"true\"") && l.ends_with(" 4901")),
        "{series:?}"
    );
    assert!(series.iter().all(|l| l.len() < 200), "values are cut");
    let stats = telemetry.cardinality();
    assert_eq!(stats.overflowed_label_sets, 4_901);
    assert_eq!(
        telemetry
            .window()
            .counter("shop_orders_total", &[("overflow", "true")])
            .unwrap()
            .total,
        4_901
    );
    telemetry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_value_cap_out_of_bounds_is_refused_naming_the_key() {
    let config = Config::from_toml("[metrics]\nmax_label_value_bytes = 4").unwrap();
    let err = Telemetry::start(&config, &Dispatcher::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`metrics.max_label_value_bytes`"), "{err}");
}
