//! The whole stack at work: Python workers serving a mixed workload, latency percentiles per
//! operation, errors, alerts firing and resolving, `/metrics` for Prometheus.
//!
//! Run: `cargo run --release -p dspex-telemetry --example quickstart -- [--duration SECS]
//! [--workers N] [--listen ADDR] [--config FILE] [--statsd HOST:PORT] [--push-gateway URL]
//! [--otlp URL]`
//!
//! Simulated users send correlated requests (a contract-checked prediction, session
//! variables, three tools). From 35 % to 60 % of the run, `web_search` slows to ~800 ms and
//! `flaky_lookup` fails half the time: the tool p99 and error-rate alerts fire, and resolve
//! once the window (10 s here) no longer holds the bad phase. A live view refreshes every
//! second on a terminal, or prints a line every 5 s otherwise; a summary ends the run.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dspex_telemetry::bridge::{Pool, PoolConfig, Sessions, Signature, ToolCall};
use dspex_telemetry::core::{CorrelationId, Dispatcher, TraceContext, WithTraceContext};
use dspex_telemetry::exporters::reporter::BackendConfig;
use dspex_telemetry::metrics::SeriesValue;
use dspex_telemetry::{Config, Telemetry};
use serde_json::{Map, json};

struct Args {
    duration: Duration,
    workers: usize,
    listen: String,
    config: Option<PathBuf>,
    statsd: Option<String>,
    push_gateway: Option<String>,
    otlp: Option<String>,
}

fn usage(error: &str) -> ! {
    eprintln!(
        "quickstart: {error}\nusage: quickstart [--duration SECS] [--workers N] [--listen ADDR] [--config FILE] \
         [--statsd HOST:PORT] [--push-gateway URL] [--otlp URL]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        duration: Duration::from_secs(45),
        workers: 4,
        listen: "127.0.0.1:9568".into(),
        config: None,
        statsd: None,
        push_gateway: None,
        otlp: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--duration" => {
                let secs: u64 = value().parse().unwrap_or_else(|_| usage("--duration takes seconds"));
                args.duration = Duration::from_secs(secs.max(5));
            }
            "--workers" => {
                args.workers = value().parse().unwrap_or_else(|_| usage("--workers takes a number"))
            }
            "--listen" => args.listen = value(),
            "--config" => args.config = Some(PathBuf::from(value())),
            "--statsd" => args.statsd = Some(value()),
            "--push-gateway" => args.push_gateway = Some(value()),
            "--otlp" => args.otlp = Some(value()),
            "-h" | "--help" => usage("the options are"),
            other => usage(&format!("unknown option {other}")),
        }
    }
    args
}

/// The quickstart's configuration when no file is given: a 10 s window evaluated every
/// second, so a short run shows alerts fire and resolve.
const QUICKSTART_TOML: &str = r#"
[metrics]
window_size_ms = 10000
sub_windows = 5

[alerts]
evaluation_interval_ms = 1000

[alerts.suppression]
occurrence_threshold = 2
min_interval_ms = 5000

[[alerts.alert_handlers]]
type = "log"
level = "warn"

[reporter]
reporting_interval = 5000
"#;

fn config(args: &Args) -> Config {
    let mut config = match &args.config {
        Some(path) => Config::load(path).unwrap_or_else(|e| usage(&e.to_string())),
        None => Config::from_toml(QUICKSTART_TOML).expect("the built-in configuration"),
    };
    // Backends from the flags, written as the `[[reporter.backends]]` entries they stand for.
    let backend = |toml_text: String| -> BackendConfig {
        toml::from_str(&toml_text).unwrap_or_else(|e| usage(&format!("{e}")))
    };
    let has_prometheus = config
        .reporter
        .backends
        .iter()
        .any(|b| matches!(b, BackendConfig::Prometheus(_)));
    if !has_prometheus {
        let mut entry = format!("type = \"prometheus\"\nlisten = {:?}\n", args.listen);
        if let Some(url) = &args.push_gateway {
            entry += &format!("push_gateway = {url:?}\n");
        }
        config.reporter.backends.push(backend(entry));
    }
    if let Some(addr) = &args.statsd {
        let (host, port) = addr
            .rsplit_once(':')
            .unwrap_or_else(|| usage("--statsd takes HOST:PORT"));
        let port: u16 = port.parse().unwrap_or_else(|_| usage("--statsd takes HOST:PORT"));
        config
            .reporter
            .backends
            .push(backend(format!("type = \"statsd\"\nhost = {host:?}\nport = {port}\n")));
    }
    if let Some(endpoint) = &args.otlp {
        config.reporter.backends.push(backend(format!(
            "type = \"opentelemetry\"\nenabled = true\nendpoint = {endpoint:?}\n"
        )));
    }
    config
}

/// How the run goes at `progress` (0 to 1): (web_search delay in ms, flaky_lookup failure rate).
fn phase(progress: f64) -> (&'static str, u64, f64) {
    if (0.35..0.60).contains(&progress) {
        ("degraded", 800, 0.5)
    } else if progress >= 0.60 {
        ("recovered", 30, 0.01)
    } else {
        ("normal", 30, 0.01)
    }
}

/// One row of the live view: an operation's window.
fn operation_rows(telemetry: &Telemetry) -> Vec<String> {
    let window = telemetry.window();
    let mut rows = Vec::new();
    for series in window.snapshot() {
        let Some(base) = series.name.strip_suffix("_duration") else {
            continue;
        };
        if !matches!(series.value, SeriesValue::Histogram(_)) || base.starts_with("dspex_session") {
            continue;
        }
        let labels: Vec<(&str, &str)> = series
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let Some(op) = window.operation(base, &labels) else {
            continue;
        };
        let what = format!(
            "{} {}",
            base.trim_start_matches("dspex_"),
            labels.iter().map(|(_, v)| *v).collect::<Vec<_>>().join(",")
        );
        let errors = if op.count == 0 { 0.0 } else { 100.0 * op.error_count as f64 / op.count as f64 };
        rows.push(format!(
            "{what:<44} {:>6} {:>7.1} {:>6.1}% {:>8.1} {:>8.1} {:>8.1}",
            op.count, op.rate_per_sec, errors, op.p50, op.p95, op.p99
        ));
    }
    rows.sort();
    rows
}

fn gauge(telemetry: &Telemetry, name: &str, label: Option<(&str, &str)>) -> f64 {
    telemetry
        .window()
        .snapshot()
        .into_iter()
        .filter(|s| s.name == name)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v)))
        .map(|s| match s.value {
            SeriesValue::Gauge(g) => g,
            _ => 0.0,
        })
        .sum()
}

fn view(telemetry: &Telemetry, elapsed: Duration, total: Duration, phase: &str, requests: u64) -> String {
    let mut out = format!(
        "dspex-telemetry quickstart — {:>3}/{}s — phase: {phase} — {requests} requests — /metrics on http://{}/metrics\n\n",
        elapsed.as_secs(),
        total.as_secs(),
        telemetry.prometheus_addr().map_or("-".into(), |a| a.to_string()),
    );
    out += &format!(
        "{:<44} {:>6} {:>7} {:>7} {:>8} {:>8} {:>8}\n",
        "operation (last 10 s window)", "count", "rate/s", "errors", "p50 ms", "p95 ms", "p99 ms"
    );
    for row in operation_rows(telemetry) {
        out += &row;
        out.push('\n');
    }
    out += &format!(
        "\npool: {} idle, {} busy, {} starting, queue depth {}\n",
        gauge(telemetry, "dspex_pool_workers", Some(("state", "idle"))),
        gauge(telemetry, "dspex_pool_workers", Some(("state", "busy"))),
        gauge(telemetry, "dspex_pool_workers", Some(("state", "starting"))),
        gauge(telemetry, "dspex_pool_queue_depth", None),
    );
    let active = telemetry.active_alerts();
    out += &format!("active alerts: {}\n", active.len());
    for alert in active {
        out += &format!("  [{}] {}\n", alert.severity.as_str(), alert.message);
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    let config = config(&args);
    let dispatcher = Dispatcher::global().clone();
    let telemetry = match Telemetry::start(&config, &dispatcher).await {
        Ok(t) => t,
        Err(e) => usage(&e.to_string()),
    };
    let pool = Pool::start(PoolConfig {
        size: args.workers,
        python_path: vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples").join("python")],
        preload: vec!["quickstart_tools".into()],
        health_interval: Some(Duration::from_millis(500)),
        dispatcher: dispatcher.clone(),
        ..PoolConfig::default()
    })
    .await
    .unwrap_or_else(|e| usage(&format!("cannot start the Python workers: {e}")));
    let sessions = Arc::new(Sessions::new(dispatcher.clone(), Duration::from_secs(300)));
    let signature = Signature::parse("question: str -> answer: str, confidence: float")
        .expect("a valid signature");
    let started = Instant::now();
    let total = args.duration;
    let requests = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let users: Vec<_> = (0..6)
        .map(|user| {
            let (pool, sessions, signature) = (pool.clone(), sessions.clone(), signature.clone());
            let (requests, failures) = (requests.clone(), failures.clone());
            tokio::spawn(async move {
                let session = sessions.create();
                let mut n = 0u64;
                while started.elapsed() < total {
                    n += 1;
                    let (_, delay_ms, failure_rate) = phase(started.elapsed().as_secs_f64() / total.as_secs_f64());
                    let id = CorrelationId::parse(&format!("user-{user}-request-{n}")).expect("a valid id");
                    let request = async {
                        let mut inputs = Map::new();
                        inputs.insert("question".into(), json!(format!("question {n} from user {user}")));
                        let answer = pool.predict(&signature, "quickstart_tools", "predict", inputs).await?;
                        sessions.set(&session, "last_answer", answer["answer"].clone())?;
                        let call = ToolCall { session_id: Some(&session), caller: Some("agent"), timeout: None };
                        pool.execute_tool("calculator", vec![json!(n), json!(3)], call.clone()).await?;
                        pool.execute_tool("web_search", vec![json!("telemetry"), json!(delay_ms)], call.clone()).await?;
                        let _ = pool.execute_tool("flaky_lookup", vec![json!("k"), json!(failure_rate)], call).await;
                        sessions.get(&session, "last_answer")?;
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                    };
                    if request
                        .with_trace_context(TraceContext::new_root_with_correlation(id))
                        .await
                        .is_err()
                    {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    requests.fetch_add(1, Ordering::Relaxed);
                }
                let _ = sessions.expire(&session, "closed");
            })
        })
        .collect();

    let live = std::io::stdout().is_terminal();
    let every = if live { Duration::from_secs(1) } else { Duration::from_secs(5) };
    let mut transcript: Vec<String> = Vec::new();
    let mut firing: BTreeMap<String, String> = BTreeMap::new();
    let (mut fired, mut resolved) = (0u64, 0u64);
    let mut next_print = Instant::now();
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let elapsed = started.elapsed();
        let (name, _, _) = phase(elapsed.as_secs_f64() / total.as_secs_f64());
        // Alerts that fired or resolved since the last look.
        let now: BTreeMap<String, String> = telemetry
            .active_alerts()
            .into_iter()
            .map(|a| (a.id.clone(), format!("[{}] {}", a.severity.as_str(), a.message)))
            .collect();
        for (id, text) in &now {
            if !firing.contains_key(id) {
                fired += 1;
                let line = format!("{:>5.1}s FIRED    {text}", elapsed.as_secs_f64());
                if !live {
                    println!("{line}");
                }
                transcript.push(line);
            }
        }
        for (id, text) in &firing {
            if !now.contains_key(id) {
                resolved += 1;
                let line = format!("{:>5.1}s RESOLVED {text}", elapsed.as_secs_f64());
                if !live {
                    println!("{line}");
                }
                transcript.push(line);
            }
        }
        firing = now;
        if Instant::now() >= next_print {
            next_print += every;
            let screen = view(&telemetry, elapsed, total, name, requests.load(Ordering::Relaxed));
            if live {
                print!("\x1b[2J\x1b[H{screen}");
            } else {
                let p99s: Vec<String> = operation_rows(&telemetry)
                    .iter()
                    .filter(|r| r.starts_with("tools_execute"))
                    .map(|r| r.split_whitespace().take(2).collect::<Vec<_>>().join(" ") + " p99 " + r.split_whitespace().last().unwrap_or("?"))
                    .collect();
                println!(
                    "{:>5.1}s phase={name} requests={} active_alerts={} {}",
                    elapsed.as_secs_f64(),
                    requests.load(Ordering::Relaxed),
                    firing.len(),
                    p99s.join("; ")
                );
            }
        }
    }
    for user in users {
        let _ = user.await;
    }
    let last = view(&telemetry, started.elapsed(), total, "done", requests.load(Ordering::Relaxed));
    pool.shutdown().await;
    println!("\n{last}");
    println!("Summary: {} requests ({} ended in an error), {fired} alerts fired, {resolved} resolved.", requests.load(Ordering::Relaxed), failures.load(Ordering::Relaxed));
    if live {
        println!("Alert transcript:");
        for line in &transcript {
            println!("  {line}");
        }
    }
    telemetry.shutdown().await;
}
