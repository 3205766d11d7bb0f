//! The `/metrics` endpoint when the process runs out of file descriptors: with its limit at
//! 256 and 300 idle connections held by another process, accepting fails, the endpoint closes
//! the connection idle longest to make room, and a scrape is still answered. (Alone in its
//! file: it lowers the whole process's descriptor limit.)

use std::process::Command;
use std::time::Duration;

use dspex_telemetry_exporters::prometheus::{
    PrometheusConfig, PrometheusEndpoint, prometheus_recorder,
};
use dspex_telemetry_metrics::catalog as metric_catalog;

/// Holds 300 connections open, then scrapes; prints the scrape's status and seconds taken.
const CLIENT: &str = r#"
import resource, socket, sys, time
# The limit was lowered for the endpoint's process, and inherited: raise this one's again.
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
port = int(sys.argv[1])
held = []
for _ in range(300):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    held.append(s)
time.sleep(0.3)
started = time.monotonic()
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.split(b" ")[1].decode(), round(time.monotonic() - started, 3))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_is_answered_when_descriptors_run_out() {
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
    let limit = libc::rlimit {
        rlim_cur: 256,
        rlim_max: libc::RLIM_INFINITY,
    };
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut current), 0);
        let lowered = libc::rlimit {
            rlim_max: current.rlim_max,
            ..limit
        };
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &lowered),
            0,
            "lower the descriptor limit"
        );
    }
    let port = endpoint.local_addr().port().to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", CLIENT, &port])
            .output()
            .expect("python3 runs the client")
    })
    .await
    .unwrap();
    // SAFETY: as above; the limit goes back to what it was.
    unsafe {
        libc::setrlimit(libc::RLIMIT_NOFILE, &current);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut words = text.split_whitespace();
    assert_eq!(words.next(), Some("200"), "{text}");
    let seconds: f64 = words.next().and_then(|s| s.parse().ok()).unwrap();
    assert!(seconds < 5.0, "the scrape took {seconds} s");
    let stats = endpoint.stats();
    assert!(
        stats.accept_errors > 0,
        "descriptors did run out: {stats:?}"
    );
    assert!(stats.evicted > 0, "{stats:?}");
    eprintln!("scrape at the descriptor limit: {seconds} s; {stats:?}");
    tokio::time::sleep(Duration::from_millis(10)).await;
    endpoint.shutdown().await;
}
