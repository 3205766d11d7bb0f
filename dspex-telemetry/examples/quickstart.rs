//! The whole stack at work: Python workers serving a mixed workload, latency percentiles per
//! operation, errors, alerts firing and resolving, `/metrics` for Prometheus (see
//! `dspex_telemetry::quickstart`).
//!
//! Run: `cargo run --release -p dspex-telemetry --example quickstart -- [--duration SECS]
//! [--workers N] [--listen ADDR] [--config FILE] [--statsd HOST:PORT] [--push-gateway URL]
//! [--otlp URL]`
//!
//! It first prints where `/metrics` listens and a Prometheus scrape configuration for it. On a
//! terminal it then redraws a live view every second, as wide as the terminal (durations in
//! µs, ms or s, `—` for operations with no calls in the window); otherwise it prints a line
//! every 5 s and each alert as it fires and resolves. It ends with a summary.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use dspex_telemetry::Config;
use dspex_telemetry::quickstart::{self, Options, backend};

fn usage(error: &str) -> ! {
    eprintln!(
        "quickstart: {error}\nusage: quickstart [--duration SECS] [--workers N] [--listen ADDR] [--config FILE] \
         [--statsd HOST:PORT] [--push-gateway URL] [--otlp URL]"
    );
    std::process::exit(2)
}

fn options() -> Options {
    let mut options = Options {
        live: std::io::stdout().is_terminal(),
        ..Options::default()
    };
    let (mut statsd, mut push_gateway, mut otlp) = (None, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--duration" => {
                let secs: u64 = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--duration takes seconds"));
                options.duration = Duration::from_secs(secs.max(5));
            }
            "--workers" => {
                options.workers = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--workers takes a number"))
            }
            "--listen" => options.listen = value(),
            "--config" => {
                let path = PathBuf::from(value());
                options.config = Config::load(&path).unwrap_or_else(|e| usage(&e.to_string()));
            }
            "--statsd" => statsd = Some(value()),
            "--push-gateway" => push_gateway = Some(value()),
            "--otlp" => otlp = Some(value()),
            "-h" | "--help" => usage("the options are"),
            other => usage(&format!("unknown option {other}")),
        }
    }
    // Backends from the flags, as the `[[reporter.backends]]` entries they stand for.
    let mut add = |entry: String| match backend(&entry) {
        Ok(b) => options.config.reporter.backends.push(b),
        Err(e) => usage(&e.to_string()),
    };
    if let Some(url) = push_gateway {
        add(format!(
            "type = \"prometheus\"\nlisten = {:?}\npush_gateway = {url:?}\n",
            options.listen
        ));
    }
    if let Some(addr) = statsd {
        let (host, port) = addr
            .rsplit_once(':')
            .unwrap_or_else(|| usage("--statsd takes HOST:PORT"));
        let port: u16 = port
            .parse()
            .unwrap_or_else(|_| usage("--statsd takes HOST:PORT"));
        add(format!(
            "type = \"statsd\"\nhost = {host:?}\nport = {port}\n"
        ));
    }
    if let Some(endpoint) = otlp {
        add(format!(
            "type = \"opentelemetry\"\nenabled = true\nendpoint = {endpoint:?}\n"
        ));
    }
    options
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let options = options();
    let mut out = std::io::stdout();
    if let Err(e) = quickstart::run(options, &mut out).await {
        usage(&e.to_string());
    }
}
