//! A collector that answers every export with a 10 MB error body full of newlines and
//! terminal escapes: the process does not grow by it, and the failures make one short,
//! escaped log line. Its own test binary: the log capture is process-wide.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use dspex_telemetry_core::{Dispatcher, catalog, metadata};
use dspex_telemetry_exporters::otlp::{OtlpConfig, OtlpTraces};
use support::{OtlpReceiver, ReceiverOptions};

/// Log lines written through `tracing`, kept for the test.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mb_error_body_stays_out_of_memory_and_logs() {
    let receiver = OtlpReceiver::start_with(
        0,
        ReceiverOptions {
            huge_error: 10 * 1024 * 1024,
            ..ReceiverOptions::default()
        },
    )
    .await;
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let d = Dispatcher::new();
    let traces = OtlpTraces::start(
        OtlpConfig {
            endpoint: Some(format!("http://{}", receiver.addr).into()),
            ..OtlpConfig::default()
        },
        &d,
        "otlp",
    )
    .unwrap();
    let before = resident_bytes();
    for _ in 0..5 {
        d.span(&catalog::BRIDGE_CALL, metadata! {}, || ((), metadata! {}));
        traces.flush().await;
    }
    let grown = resident_bytes().saturating_sub(before);
    let stats = traces.stats();
    assert_eq!(stats.failed_requests, 5, "{stats:?}");
    assert!(grown < 8 * 1024 * 1024, "the process grew by {grown} bytes");
    traces.shutdown().await;
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(warnings[0].len() < 400, "{}", warnings[0]);
    assert!(!text.contains('\x1b') && !text.contains("FORGED"), "{text}");
}
