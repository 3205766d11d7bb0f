//! The quickstart: the whole stack at work on a mixed workload, as `cargo run --release -p
//! dspex-telemetry --example quickstart` shows it.
//!
//! Simulated users send correlated requests (a contract-checked prediction, session
//! variables, three tools). The quickstart has no language model: each prediction reports the
//! model call a DSPy program would make, as the `[:dspex, :lm, :call]` event the bridge emits
//! for those it sees in a worker (two simulated models, about one call in a hundred failing).
//! From 35 % to 60 % of the run, `web_search` slows to ~800 ms and
//! `flaky_lookup` fails half the time: the tool p99 and error-rate alerts fire, and resolve
//! once the window (10 s with the built-in configuration) no longer holds the bad phase.
//! Along the way a worker crashes once (and is replaced), a burst overflows the request queue,
//! sessions expire, some predictions fail their contract and some answers fail their cast, so
//! every panel of the generated dashboard has data.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dspex_telemetry_bridge::{Pool, PoolConfig, Sessions, Signature, ToolCall};
use dspex_telemetry_core::{
    CorrelationId, Dispatcher, Measurements, Metadata, WithTraceContext, catalog,
};
use dspex_telemetry_exporters::reporter::BackendConfig;
use dspex_telemetry_metrics::SeriesValue;
use serde_json::{Map, Value, json};

use crate::{Config, StartError, Telemetry};

/// The quickstart's configuration when no file is given: a 10 s window evaluated every
/// second, so a short run shows alerts fire and resolve.
pub const QUICKSTART_TOML: &str = r#"
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

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the workload runs (default 45 s).
    pub duration: Duration,
    /// Python workers (default 4).
    pub workers: usize,
    /// The configuration; the Prometheus backend is added when it has none.
    pub config: Config,
    /// Where `/metrics` listens when the configuration has no Prometheus backend (default
    /// `127.0.0.1:9568`; port 0 picks a free one).
    pub listen: String,
    /// Redraw a live view every second (a terminal) instead of a line every 5 s.
    pub live: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            duration: Duration::from_secs(45),
            workers: 4,
            config: Config::from_toml(QUICKSTART_TOML).expect("the built-in configuration"),
            listen: "127.0.0.1:9568".into(),
            live: false,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Requests the simulated users sent.
    pub requests: u64,
    /// Requests that ended in an error (the deliberate ones included).
    pub failed_requests: u64,
    /// Alerts that fired, and that resolved, as the run saw them.
    pub fired: u64,
    /// See `fired`.
    pub resolved: u64,
    /// One line per alert fired or resolved, with the time into the run.
    pub transcript: Vec<String>,
}

/// Why the quickstart could not run.
#[derive(Debug, thiserror::Error)]
pub enum QuickstartError {
    /// The stack did not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The Python workers did not start.
    #[error("cannot start the Python workers: {0}")]
    Pool(String),
    /// A backend flag did not make a valid backend.
    #[error("invalid backend: {0}")]
    Backend(String),
}

/// A `[[reporter.backends]]` entry from its TOML.
pub fn backend(entry: &str) -> Result<BackendConfig, QuickstartError> {
    toml::from_str(entry)
        .map_err(|e| QuickstartError::Backend(crate::config::toml_error(entry, &e).1))
}

/// How the run goes at `progress` (0 to 1): its name, `web_search`'s delay in ms and
/// `flaky_lookup`'s failure rate.
fn phase(progress: f64) -> (&'static str, u64, f64) {
    if (0.35..0.60).contains(&progress) {
        ("degraded", 800, 0.5)
    } else if progress >= 0.60 {
        ("recovered", 30, 0.01)
    } else {
        ("normal", 30, 0.01)
    }
}

/// Reports the language-model call behind request `n` of `user`'s prediction, as the bridge
/// reports a DSPy program's: its model, duration and tokens, or its error.
fn simulated_lm_call(user: u64, n: u64, prompt_chars: usize) {
    let spread = (n * 7 + user * 3) % 10;
    let (model, duration_ms) = if n % 4 == 0 {
        ("quickstart/large", 600 + 90 * spread)
    } else {
        ("quickstart/small", 150 + 25 * spread)
    };
    let mut m = Measurements::new().with("duration", duration_ms * 1_000_000);
    let mut md = Metadata::new().with("model", model);
    // One call in a hundred per user, the users' failures apart, so no error-rate alert fires.
    if n % 100 == 16 * user + 5 {
        md.insert("status", "error");
        md.insert("error", "RateLimitError");
    } else {
        md.insert("status", "ok");
        let (prompt, completion) = (40 + prompt_chars as u64 / 4, 12 + 8 * spread);
        m.insert("prompt_tokens", prompt);
        m.insert("completion_tokens", completion);
        m.insert("total_tokens", prompt + completion);
    }
    Dispatcher::global().execute(&catalog::LM_CALL, &m, &md);
}

/// One operation's row in the live view: its window's figures (durations in milliseconds).
#[derive(Debug, Clone, PartialEq)]
pub struct OperationRow {
    /// The operation: the metric's name without `dspex_`, then its label values.
    pub what: String,
    /// Calls in the window.
    pub count: u64,
    /// Calls per second over the window.
    pub rate_per_sec: f64,
    /// Failed calls, in percent of the calls.
    pub error_percent: f64,
    /// Latency percentiles, in milliseconds.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p95_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
}

/// What the live view shows at one moment; [`LiveView::render`] draws it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveView {
    /// Time into the run, and its length.
    pub elapsed: Duration,
    /// See `elapsed`.
    pub total: Duration,
    /// The workload's phase.
    pub phase: String,
    /// Requests sent so far.
    pub requests: u64,
    /// Where `/metrics` listens.
    pub metrics_addr: Option<String>,
    /// One row per operation in the window.
    pub rows: Vec<OperationRow>,
    /// Workers idle, busy and starting, and requests queued.
    pub pool: [f64; 4],
    /// Resident memory of the workers together and of this process, in bytes.
    pub memory: [f64; 2],
    /// The active alerts' messages.
    pub alerts: Vec<String>,
}

/// The width of the columns after the operation's: count, rate, errors and three
/// percentiles.
const FIGURES_WIDTH: usize = 1 + 6 + 1 + 7 + 1 + 7 + 3 * (1 + 9);

/// A duration given in milliseconds, in the unit that reads best: `850 µs`, `12.4 ms`,
/// `1.25 s`.
pub fn format_duration_ms(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        return "—".into();
    }
    match ms {
        ms if ms < 0.01 => format!("{:.1} µs", ms * 1e3),
        ms if ms < 1.0 => format!("{:.0} µs", ms * 1e3),
        ms if ms < 10.0 => format!("{ms:.2} ms"),
        ms if ms < 1000.0 => format!("{ms:.1} ms"),
        ms => format!("{:.2} s", ms / 1e3),
    }
}

/// `text` cut to `width` characters, ending with `…` when cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

impl LiveView {
    /// What the stack's window, pool gauges and alerts say now.
    fn now(
        telemetry: &Telemetry,
        elapsed: Duration,
        total: Duration,
        phase: &str,
        requests: u64,
    ) -> Self {
        LiveView {
            elapsed,
            total,
            phase: phase.to_owned(),
            requests,
            metrics_addr: telemetry.prometheus_addr().map(|a| a.to_string()),
            rows: operation_rows(telemetry),
            pool: [
                gauge(telemetry, "dspex_pool_workers", Some(("state", "idle"))),
                gauge(telemetry, "dspex_pool_workers", Some(("state", "busy"))),
                gauge(telemetry, "dspex_pool_workers", Some(("state", "starting"))),
                gauge(telemetry, "dspex_pool_queue_depth", None),
            ],
            memory: [
                gauge(telemetry, "dspex_pool_worker_memory_bytes", None),
                gauge(telemetry, "dspex_process_memory_bytes", None),
            ],
            alerts: telemetry
                .active_alerts()
                .into_iter()
                .map(|a| a.message.clone())
                .collect(),
        }
    }

    /// The view as text, no line wider than `width` characters (at least 69: the figures'
    /// columns and 16 of the operation's name): operations
    /// sorted by name, durations in the unit that reads best, `—` where a window holds no
    /// calls, long names and alert messages cut with `…`.
    pub fn render(&self, width: usize) -> String {
        let width = width.max(FIGURES_WIDTH + 16);
        let name_width = width.saturating_sub(FIGURES_WIDTH).clamp(16, 60);
        let metrics = self
            .metrics_addr
            .as_deref()
            .map_or("-".to_owned(), |a| format!("http://{a}/metrics"));
        let mut out = fit(
            &format!(
                "dspex-telemetry quickstart — {}/{}s — phase: {} — {} requests",
                self.elapsed.as_secs(),
                self.total.as_secs(),
                self.phase,
                self.requests
            ),
            width,
        );
        out.push('\n');
        out += &fit(&format!("/metrics on {metrics}"), width);
        out.push_str("\n\n");
        let figures = |count: &str, rate: &str, errors: &str, [p50, p95, p99]: [&str; 3]| {
            format!(" {count:>6} {rate:>7} {errors:>7} {p50:>9} {p95:>9} {p99:>9}")
        };
        let head = fit("operation (in the window)", name_width);
        out += &format!(
            "{head:<name_width$}{}\n",
            figures("count", "rate/s", "errors", ["p50", "p95", "p99"])
        );
        let mut rows: Vec<&OperationRow> = self.rows.iter().collect();
        rows.sort_by(|a, b| a.what.cmp(&b.what));
        for row in rows {
            let what = fit(&row.what, name_width);
            let line = if row.count == 0 {
                figures("—", "—", "—", ["—", "—", "—"])
            } else {
                figures(
                    &row.count.to_string(),
                    &format!("{:.1}", row.rate_per_sec),
                    &format!("{:.1}%", row.error_percent),
                    [
                        &format_duration_ms(row.p50_ms),
                        &format_duration_ms(row.p95_ms),
                        &format_duration_ms(row.p99_ms),
                    ],
                )
            };
            out += &format!("{what:<name_width$}{line}\n");
        }
        let [idle, busy, starting, queued] = self.pool;
        out += &fit(
            &format!("\npool: {idle} idle, {busy} busy, {starting} starting, queue depth {queued}"),
            width + 1,
        );
        out.push('\n');
        const MIB: f64 = 1024.0 * 1024.0;
        out += &fit(
            &format!(
                "memory: {:.1} MiB in the workers, {:.1} MiB in this process",
                self.memory[0] / MIB,
                self.memory[1] / MIB
            ),
            width,
        );
        out += &format!("\nactive alerts: {}\n", self.alerts.len());
        for alert in &self.alerts {
            out += &fit(&format!("  {alert}"), width);
            out.push('\n');
        }
        out
    }
}

/// The terminal's width in columns (100 when it cannot be told).
fn terminal_width() -> usize {
    terminal_size::terminal_size().map_or(100, |(w, _)| usize::from(w.0))
}

/// The rows of the live view: each operation's window.
fn operation_rows(telemetry: &Telemetry) -> Vec<OperationRow> {
    let window = telemetry.window();
    let mut rows = Vec::new();
    for series in window.snapshot() {
        let Some(base) = series.name.strip_suffix("_duration") else {
            continue;
        };
        if !matches!(series.value, SeriesValue::Histogram(_)) {
            continue;
        }
        let labels = series.label_pairs();
        let Some(op) = window.operation(base, &labels) else {
            continue;
        };
        let what = format!(
            "{} {}",
            base.trim_start_matches("dspex_"),
            labels.iter().map(|(_, v)| *v).collect::<Vec<_>>().join(",")
        );
        let error_percent = if op.count == 0 {
            0.0
        } else {
            100.0 * op.error_count as f64 / op.count as f64
        };
        rows.push(OperationRow {
            what,
            count: op.count,
            rate_per_sec: op.rate_per_sec,
            error_percent,
            p50_ms: op.p50,
            p95_ms: op.p95,
            p99_ms: op.p99,
        });
    }
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

/// A Prometheus scrape configuration for the quickstart's `/metrics` at `addr`.
pub fn scrape_config(addr: &str) -> String {
    format!(
        "scrape_configs:\n  - job_name: dspex-quickstart\n    scrape_interval: 1s\n    static_configs:\n      - targets: [\"{addr}\"]\n"
    )
}

/// One simulated user's requests until `until`.
#[allow(clippy::too_many_arguments)]
async fn user(
    user: u64,
    pool: Pool,
    sessions: Arc<Sessions>,
    signature: Signature,
    started: Instant,
    total: Duration,
    requests: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
) {
    let mut session = sessions.create();
    let mut n = 0u64;
    while started.elapsed() < total {
        n += 1;
        let (_, delay_ms, failure_rate) =
            phase(started.elapsed().as_secs_f64() / total.as_secs_f64());
        let id = CorrelationId::parse(&format!("user-{user}-request-{n}")).expect("a valid id");
        let request = async {
            let mut inputs = Map::new();
            // One prediction in 50 sends a number where the contract wants a string, and one
            // in 50 gets an answer whose confidence is not a number (the cast fails).
            let question: Value = match n % 50 {
                0 => json!(n),
                25 => json!(format!("an unsure question {n} from user {user}")),
                _ => json!(format!("question {n} from user {user}")),
            };
            simulated_lm_call(user, n, question.to_string().len());
            inputs.insert("question".into(), question);
            let answer = pool
                .predict(&signature, "quickstart_tools", "predict", inputs)
                .await?;
            sessions.set(&session, "last_answer", answer["answer"].clone())?;
            let call = ToolCall {
                session_id: Some(&session),
                caller: Some("agent"),
                timeout: None,
            };
            pool.execute_tool("calculator", vec![json!(n), json!(3)], call.clone())
                .await?;
            pool.execute_tool(
                "web_search",
                vec![json!("telemetry"), json!(delay_ms)],
                call.clone(),
            )
            .await?;
            let _ = pool
                .execute_tool("flaky_lookup", vec![json!("k"), json!(failure_rate)], call)
                .await;
            sessions.get(&session, "last_answer")?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        };
        if request
            // Each request is a trace whose root span lasts as long as the request.
            .in_new_trace(Some(id))
            .await
            .is_err()
        {
            failures.fetch_add(1, Ordering::Relaxed);
        }
        requests.fetch_add(1, Ordering::Relaxed);
        // A session lasts 20 requests.
        if n % 20 == 0 {
            let _ = sessions.expire(&session, "completed");
            session = sessions.create();
        }
    }
    let _ = sessions.expire(&session, "closed");
}

/// Runs the quickstart, printing to `out`; returns what happened. Starts the stack on the
/// process's global recorder (once per process) and the global dispatcher.
pub async fn run(
    mut options: Options,
    out: &mut (dyn Write + Send),
) -> Result<Summary, QuickstartError> {
    let has_prometheus = options
        .config
        .reporter
        .backends
        .iter()
        .any(|b| matches!(b, BackendConfig::Prometheus(_)));
    if !has_prometheus {
        options.config.reporter.backends.push(backend(&format!(
            "type = \"prometheus\"\nlisten = {:?}\n",
            options.listen
        ))?);
    }
    let dispatcher = Dispatcher::global().clone();
    let telemetry = Telemetry::start(&options.config, &dispatcher).await?;
    let pool = Pool::start(PoolConfig {
        size: options.workers.max(1),
        max_queue_depth: 64,
        python_path: vec![
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("examples")
                .join("python"),
        ],
        preload: vec!["quickstart_tools".into()],
        health_interval: Some(Duration::from_millis(500)),
        dispatcher: dispatcher.clone(),
        ..PoolConfig::default()
    })
    .await
    .map_err(|e| QuickstartError::Pool(e.to_string()))?;
    if let Some(addr) = telemetry.prometheus_addr() {
        let _ = writeln!(
            out,
            "/metrics on http://{addr}/metrics; for Prometheus to scrape it:\n\n{}",
            scrape_config(&addr.to_string())
        );
        let _ = out.flush();
    }
    let sessions = Arc::new(Sessions::new(dispatcher.clone(), Duration::from_secs(300)));
    let signature = Signature::parse("question: str -> answer: str, confidence: float")
        .expect("a valid signature");
    let started = Instant::now();
    let total = options.duration;
    let requests = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let users: Vec<_> = (0..6)
        .map(|u| {
            tokio::spawn(user(
                u,
                pool.clone(),
                sessions.clone(),
                signature.clone(),
                started,
                total,
                requests.clone(),
                failures.clone(),
            ))
        })
        .collect();

    let every = if options.live {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let mut summary = Summary::default();
    let mut firing: BTreeMap<String, String> = BTreeMap::new();
    let mut next_print = Instant::now();
    let (mut crashed, mut burst) = (false, false);
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let elapsed = started.elapsed();
        let progress = elapsed.as_secs_f64() / total.as_secs_f64();
        let (name, _, _) = phase(progress);
        if progress >= 0.2 && !crashed {
            // A worker dies mid-call: the call fails, the worker is replaced.
            crashed = true;
            let pool = pool.clone();
            tokio::spawn(async move { pool.call("os", "_exit", vec![json!(1)]).await });
        }
        if progress >= 0.45 && !burst {
            // More requests at once than the queue holds: the pool refuses the rest.
            burst = true;
            for _ in 0..96 {
                let pool = pool.clone();
                tokio::spawn(async move { pool.call("time", "sleep", vec![json!(0.01)]).await });
            }
        }
        let now: BTreeMap<String, String> = telemetry
            .active_alerts()
            .into_iter()
            .map(|a| (a.id.clone(), a.message.clone()))
            .collect();
        let fired: Vec<&String> = now
            .iter()
            .filter(|(id, _)| !firing.contains_key(*id))
            .map(|(_, t)| t)
            .collect();
        let resolved: Vec<&String> = firing
            .iter()
            .filter(|(id, _)| !now.contains_key(*id))
            .map(|(_, t)| t)
            .collect();
        summary.fired += fired.len() as u64;
        summary.resolved += resolved.len() as u64;
        let changes = fired
            .into_iter()
            .map(|t| ("FIRED   ", t))
            .chain(resolved.into_iter().map(|t| ("RESOLVED", t)));
        for (what, text) in changes {
            let line = format!("{:>5.1}s {what} {text}", elapsed.as_secs_f64());
            if !options.live {
                let _ = writeln!(out, "{line}");
            }
            summary.transcript.push(line);
        }
        firing = now;
        if Instant::now() >= next_print {
            next_print += every;
            let done = requests.load(Ordering::Relaxed);
            if options.live {
                let view = LiveView::now(&telemetry, elapsed, total, name, done);
                let _ = write!(out, "\x1b[2J\x1b[H{}", view.render(terminal_width()));
            } else {
                let _ = writeln!(
                    out,
                    "{:>5.1}s phase={name} requests={done} active_alerts={}",
                    elapsed.as_secs_f64(),
                    firing.len()
                );
            }
            let _ = out.flush();
        }
    }
    for u in users {
        let _ = u.await;
    }
    summary.requests = requests.load(Ordering::Relaxed);
    summary.failed_requests = failures.load(Ordering::Relaxed);
    let last = LiveView::now(
        &telemetry,
        started.elapsed(),
        total,
        "done",
        summary.requests,
    )
    .render(if options.live { terminal_width() } else { 100 });
    pool.shutdown().await;
    let _ = writeln!(out, "\n{last}");
    let _ = writeln!(
        out,
        "Summary: {} requests ({} ended in an error), {} alerts fired, {} resolved.",
        summary.requests, summary.failed_requests, summary.fired, summary.resolved
    );
    if options.live {
        let _ = writeln!(out, "Alert transcript:");
        for line in &summary.transcript {
            let _ = writeln!(out, "  {line}");
        }
    }
    telemetry.shutdown().await;
    Ok(summary)
}
