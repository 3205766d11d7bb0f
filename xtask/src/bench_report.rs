//! `cargo xtask bench-report`: turns criterion's output into `docs/benchmarks.md`.
//!
//! Reads `target/criterion/<group>/<bench>/new/estimates.json` (the median's point estimate)
//! for every bench of the last run, and writes a table of medians and ratios against the
//! baseline each target names. Nothing in the table is typed by hand.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A target from the issue tracker: `bench` over `baseline` must be at most `max_ratio`.
struct Target {
    bench: &'static str,
    baseline: &'static str,
    max_ratio: f64,
    /// Why the target can be missed, and what would close it; printed when it is.
    if_missed: &'static str,
}

/// Why the bridge's instrumentation share can miss its target on this kind of machine.
const BRIDGE_SHARE: &str = "on this 2-vCPU VM a round trip's cost is set mostly by cold caches: the Rust process and the \
                    worker migrate between the two cores at almost every call, so each line of code or data the \
                    instrumented path touches is fetched again, on the Rust side and (by eviction) on the \
                    worker's. As a scale: 4 µs of pure spinning added before each call costs 5 % of the round \
                    trip. `cargo run --release -p dspex-telemetry-benches --example bridge_cpu_share -- <callers> \
                    <rounds>` runs the same paired rounds and splits the difference between the Rust process's \
                    and the workers' CPU time.";

/// Telemetry's share of the three-layer request, at most.
const THREE_LAYER_MAX_SHARE: f64 = 0.05;

/// Where the three-layer request's telemetry goes, as profiled (shown when its target is missed).
const THREE_LAYER_MISSED: &str = "the parts table under `three_layer_bench` splits it. At 1 caller the request runs on \
    one core at a time (the caller, then the worker), so what telemetry adds on that path shows whole: the span \
    records and the workers' timing of their own spans (`spans_recorded`; counted with callgrind, the pool reads the \
    spans in the replies in about 7 000 instructions a request and turns them into records in about 7 500), and each \
    event of the metric catalog into the window and every backend. The OTLP collector works beside it, on its own thread: \
    per span about 3 300 instructions to turn a record into `SpanData`, then about 12 700 in `opentelemetry-otlp` \
    to turn `SpanData` into a request body (its conversion to the protobuf types allocates each attribute's key and \
    value again; prost's encoding measures each nested message once per level of nesting). With 8 spans a request \
    that is the collector thread's 16 to 18 µs of CPU a request, and at 8 callers, where the two cores are \
    saturated, CPU time anywhere is wall time.";

/// The instrumentation target, checked on the paired rounds (`bridge-paired.json`).
const BRIDGE_MAX_RATIO: f64 = 1.05;

/// Why our span path is behind fastrace's, as profiled (shown under the missed targets).
const SPAN_PATH_MISSED: &str = "the caller's side of a span makes no lock and no allocation, but it does more work than \
    fastrace's: counted with callgrind in one loop of this span (`span_profile`), about 1 690 instructions a span on \
    the caller's thread against fastrace's 1 100. Encoding the record into the thread's ring is about 740 of them: \
    every key and value is copied (60 to 70 instructions for each of the six attributes), where fastrace keeps \
    pointers to static strings; the core's span path (the context swapped in and out, routing-table probes, the \
    clock read twice) is most of the rest. The two are within this machine's run-to-run spread of each other: \
    0.95× to 1.01× in four runs of `cargo bench … -- otlp_span`.";

const STACK_MISSED: &str = "besides the span path (see `otlp_span`), each bridge call's `stop` records its duration and count \
    into four recorders (the window, Prometheus, StatsD and OTLP metrics) through `metrics-util`'s fanout, where the \
    baseline records into Prometheus alone: about 1 400 instructions a call for the stop event's handlers, counted with \
    callgrind.";

const TARGETS: &[Target] = &[
    Target {
        bench: "event_path/dspex_event_to_window_and_prometheus",
        baseline: "event_path/histogram_macro_to_prometheus",
        max_ratio: 1.0,
        if_missed: "for a bridge call's `stop` the catalog records two metrics (duration and count) into two \
                    recorders (the window and Prometheus), where the baseline records one histogram into one; the \
                    next row compares the same work.",
    },
    Target {
        bench: "event_path/dspex_event_to_window_and_prometheus",
        baseline: "event_path/histogram_and_counter_macros_to_prometheus",
        max_ratio: 1.0,
        if_missed: "",
    },
    Target {
        bench: "window/record",
        baseline: "window/metrics_util_summary_add",
        max_ratio: 0.5,
        if_missed: "`Summary::add` takes `&mut self` (one writer, no atomics) and reads no clock; the window is \
                    shared by every recording thread and reads a clock to pick its sub-window. Its counters are \
                    made in pages as values reach them, so a quiet series holds 1.6 KiB instead of 29 KiB: \
                    finding a counter is one load more (the page's address), about 0.7 ns a record (5.2 ns \
                    with one flat array, measured before the change).",
    },
    Target {
        bench: "bridge/uninstrumented_1",
        baseline: "bridge/bare_pipe_echo_1",
        max_ratio: 1.3,
        if_missed: "",
    },
    Target {
        bench: "pool_start/dspy_4_forked",
        baseline: "pool_start/dspy_1",
        max_ratio: 1.5,
        if_missed: "",
    },
    Target {
        bench: "pool_start/dspy_4",
        baseline: "pool_start/dspy_1",
        max_ratio: 1.5,
        if_missed: "without `fork_workers` each worker imports DSPy itself, about 0.8 s of one core's time; \
                    they start in parallel, and four of them on this 2-core machine share two cores, so they \
                    take about twice one's time. With `fork_workers` (the row above) DSPy is imported once.",
    },
    Target {
        bench: "otlp_span/dspex_bridge_call_span",
        baseline: "otlp_span/tracing_opentelemetry_span",
        max_ratio: 0.25,
        if_missed: "",
    },
    Target {
        bench: "otlp_span/dspex_bridge_call_span",
        baseline: "otlp_span/fastrace_span",
        max_ratio: 1.0,
        if_missed: SPAN_PATH_MISSED,
    },
    Target {
        bench: "whole_stack/dspex_1",
        baseline: "whole_stack/metrics_fastrace_1",
        max_ratio: 1.0,
        if_missed: STACK_MISSED,
    },
    Target {
        bench: "whole_stack/dspex_2",
        baseline: "whole_stack/metrics_fastrace_2",
        max_ratio: 1.0,
        if_missed: STACK_MISSED,
    },
    Target {
        bench: "whole_stack/dspex_1",
        baseline: "whole_stack/metrics_tracing_opentelemetry_1",
        max_ratio: 1.0,
        if_missed: "",
    },
    Target {
        bench: "whole_stack/dspex_2",
        baseline: "whole_stack/metrics_tracing_opentelemetry_2",
        max_ratio: 1.0,
        if_missed: "",
    },
    Target {
        bench: "exporters/backends_down",
        baseline: "exporters/backends_up",
        max_ratio: 1.1,
        if_missed: "the two rows differ only in whether the servers answer; the exporters' tasks run on their \
                    own runtime thread, and on this 2-core machine their retries compete with the caller for \
                    a core.",
    },
    Target {
        bench: "execute/no_handler",
        baseline: "baseline/atomic_add",
        max_ratio: 1.5,
        if_missed: "",
    },
    Target {
        bench: "execute/one_noop_handler",
        baseline: "baseline/atomic_add",
        max_ratio: 4.0,
        if_missed: "",
    },
    Target {
        bench: "span/no_handler",
        baseline: "baseline/atomic_add",
        max_ratio: 2.0,
        if_missed: "",
    },
];

/// Which suites the report covers, in order, with the benches' folder names, the bench each
/// row is divided by, and what that column is called.
const SUITES: &[(&str, &[&str], &str, &str)] = &[
    (
        "telemetry_bench",
        &[
            "baseline",
            "execute",
            "span",
            "context",
            "traceparent",
            "window",
            "event_path",
            "exporters",
            "otlp_span",
            "whole_stack",
        ],
        "baseline/atomic_add",
        "× atomic add",
    ),
    (
        "bridge_performance_bench",
        &["bridge", "bridge_ops", "pool_start"],
        "bridge/bare_pipe_echo_1",
        "× bare pipe echo",
    ),
    (
        "metrics_endpoint_bench",
        &["metrics_endpoint"],
        "",
        "× metrics-exporter-prometheus's listener, same bench",
    ),
];

const PAIRED_INTRO: &str = "## bridge_performance_bench: paired rounds\n\n\
    Criterion samples each configuration for seconds, one after the other; here their medians drift \
    apart by several percent from one run to the next. After its criterion benches, \
    `bridge_performance_bench` alternates rounds of 400 calls with telemetry off and on on one pool \
    and compares each \"on\" round with its neighbour (median and quartiles of the ratios; mean \
    difference of the CPU time each side of the pipe spent per call). The instrumentation target is \
    checked on these.\n\n";

const WHOLE_STACK_INTRO: &str = "## telemetry_bench: the whole stack against the alternatives\n\n\
    Per bridge call, per thread (wall time; every thread makes the same calls at once). `dspex`: a \
    bridge-call span through the stack `Telemetry::start` runs — the metric catalog into the sliding \
    window, Prometheus, StatsD and OTLP metrics, alerts evaluating every second, the span exported \
    over OTLP/HTTP. The alternatives do less: the `metrics` macros (duration histogram and call \
    counter) into the Prometheus recorder, and the same span (six attributes) with `tracing` + \
    `tracing-opentelemetry` and the SDK's batch processor, or with `fastrace` and its OpenTelemetry \
    reporter; both export over OTLP/HTTP with the official exporter. Every span reaches a local \
    sink; flushes between chunks of 512 calls are not timed, nor a first chunk each thread makes to set itself up.\n\n";

/// The `whole_stack` comparison, if it ran.
fn whole_stack(doc: &mut String, all: &[(String, f64)]) {
    let find = |n: String| all.iter().find(|(name, _)| *name == n).map(|r| r.1);
    let rows: Vec<_> = [1, 2]
        .into_iter()
        .filter_map(|threads| {
            Some((
                threads,
                find(format!("whole_stack/dspex_{threads}"))?,
                find(format!(
                    "whole_stack/metrics_tracing_opentelemetry_{threads}"
                ))?,
                find(format!("whole_stack/metrics_fastrace_{threads}"))?,
            ))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    doc.push_str(WHOLE_STACK_INTRO);
    doc.push_str(
        "| threads | dspex, whole stack | `metrics` + Prometheus, `tracing` + `tracing-opentelemetry` | dspex × it | `metrics` + Prometheus, `fastrace` | dspex × it |\n\
         |---:|---:|---:|---:|---:|---:|\n",
    );
    for (threads, ours, tracing, fastrace) in rows {
        let _ = writeln!(
            doc,
            "| {threads} | {} | {} | {:.2} | {} | {:.2} |",
            format_ns(ours),
            format_ns(tracing),
            ours / tracing,
            format_ns(fastrace),
            ours / fastrace
        );
    }
    doc.push('\n');
}

/// A table of paired rounds, one row per `(first column, row)`.
/// The Python side's cost per call with OpenTelemetry absent and present
/// (`python-otel.json`, written by the bridge bench).
fn python_otel(doc: &mut String, criterion: &Path) {
    let Some(rows) = fs::read_to_string(criterion.join("python-otel.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Vec<serde_json::Value>>(&t).ok())
    else {
        return;
    };
    let cpu = |variant: &str| {
        rows.iter()
            .find(|r| r["variant"] == variant)
            .and_then(|r| r["cpu_us"].as_f64())
    };
    let Some(absent) = cpu("absent") else { return };
    doc.push_str(
        "## bridge_performance_bench: the Python side with OpenTelemetry\n\n\
         The worker's CPU time per call (user and system, read from the OS; median of 15 rounds of \
         5 000 calls, so ±2 µs from the clock's 10 ms ticks) and the round trip's wall time, one \
         caller, Python's spans listened for. `absent`: an interpreter without OpenTelemetry, the \
         call times one `dspex_span`. `present`: the same call in an interpreter with \
         OpenTelemetry's SDK (`dspex_worker.tracer_provider()` installed): the call's context is \
         attached to OpenTelemetry and detached, and the `dspex_span` is current there too. \
         `present_otel_span`: the call times one OpenTelemetry span instead, sent back through \
         the worker's span processor.\n\n\
         | variant | worker CPU per call | × absent | wall per call |\n|---|---:|---:|---:|\n",
    );
    for r in &rows {
        let n = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            doc,
            "| `{}` | {:.1} µs | {:.2} | {:.1} µs |",
            r["variant"].as_str().unwrap_or("?"),
            n("cpu_us"),
            n("cpu_us") / absent,
            n("wall_us")
        );
    }
    doc.push('\n');
}

fn paired_table<'a>(
    doc: &mut String,
    first: &str,
    unit: &str,
    rows: impl Iterator<Item = (String, &'a PairedRow)>,
) {
    let _ = writeln!(
        doc,
        "| {first} | rounds × {unit} | off | on | wall on/off (quartiles) | Rust CPU on − off | workers' CPU on − off |\n\
         |---|---:|---:|---:|---:|---:|---:|"
    );
    for (label, r) in rows {
        let _ = writeln!(
            doc,
            "| {label} | {} × {} | {} | {} | {:.3} ({:.3}–{:.3}) | {:+.2} µs | {:+.2} µs |",
            r.rounds,
            r.per_round,
            format_ns(r.off_us * 1e3),
            format_ns(r.on_us * 1e3),
            r.ratio,
            r.q1,
            r.q3,
            r.rust_cpu_diff_us,
            r.workers_cpu_diff_us
        );
    }
    doc.push('\n');
}

/// `three_layer_bench`'s criterion rows: time per request and throughput, off and on.
fn three_layer_latency(doc: &mut String, criterion: &Path) {
    let rows = collect(criterion, "three_layer");
    let find = |n: String| rows.iter().find(|(name, _)| *name == n).map(|r| r.1);
    let mut table = String::new();
    for callers in [1, 8] {
        let (Some(off), Some(on)) = (
            find(format!("three_layer/request_off_{callers}")),
            find(format!("three_layer/request_on_{callers}")),
        ) else {
            continue;
        };
        let _ = writeln!(
            table,
            "| {callers} | {} | {} | {:.2} | {:.0} | {:.0} |",
            format_ns(off),
            format_ns(on),
            on / off,
            1e9 / off,
            1e9 / on
        );
    }
    if table.is_empty() {
        return;
    }
    doc.push_str(
        "## three_layer_bench: end to end\n\n\
         An application request (a traced, contract-checked prediction, a tool call, a session \
         variable set and get) through the bridge to a Python worker (two per pool), from 1 and 8 \
         concurrent callers; criterion's median time per request (at 8 callers, requests overlap: \
         the time per request is the inverse of the throughput).\n\n\
         | callers | telemetry off | whole stack on | on/off | requests/s off | requests/s on |\n\
         |---:|---:|---:|---:|---:|---:|\n",
    );
    doc.push_str(&table);
    doc.push('\n');
}

/// One row of `bridge-paired.json`.
struct PairedRow {
    callers: u64,
    rounds: u64,
    per_round: u64,
    off_us: f64,
    on_us: f64,
    ratio: f64,
    q1: f64,
    q3: f64,
    rust_cpu_diff_us: f64,
    workers_cpu_diff_us: f64,
}

/// The paired rounds the bridge bench wrote, if it ran.
/// The `event_path` target over separate runs of the bench: each of the last three at most this.
const EVENT_PATH_RUNS_MAX: f64 = 0.9;

/// The last three runs of the `event_path` benches (`event-path-runs.json`, which
/// `telemetry_bench` adds to at each run) as a table; their ratios, oldest first.
fn event_path_runs(doc: &mut String, criterion: &Path) -> Vec<f64> {
    let Some(runs) = fs::read_to_string(criterion.join("event-path-runs.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Vec<serde_json::Value>>(&t).ok())
    else {
        return Vec::new();
    };
    let last = &runs[runs.len().saturating_sub(3)..];
    doc.push_str(
        "## telemetry_bench: event_path, the last three runs\n\n\
         Each a separate `cargo bench -p dspex-telemetry-benches --bench telemetry_bench -- \
         event_path`; criterion's medians.\n\n\
         | run | ours (window and Prometheus) | `histogram!` into Prometheus | ratio | \
         `histogram!` and `counter!` | ratio |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut ratios = Vec::new();
    for (i, run) in last.iter().enumerate() {
        let n = |k: &str| run[k].as_f64().unwrap_or(f64::NAN);
        let (ours, one, both) = (
            n("ours_ns"),
            n("histogram_ns"),
            n("histogram_and_counter_ns"),
        );
        let _ = writeln!(
            doc,
            "| {} | {} | {} | {:.2}× | {} | {:.2}× |",
            i + 1,
            format_ns(ours),
            format_ns(one),
            ours / one,
            format_ns(both),
            ours / both
        );
        ratios.push(ours / one);
    }
    doc.push('\n');
    ratios
}

fn paired_rounds(criterion: &Path) -> Option<Vec<PairedRow>> {
    paired_rows(criterion, "bridge-paired.json")
        .map(|rows| rows.into_iter().map(|(_, row)| row).collect())
}

/// The rows of a paired-rounds file, each with its `operation` (empty if it has none).
fn paired_rows(criterion: &Path, file: &str) -> Option<Vec<(String, PairedRow)>> {
    let text = fs::read_to_string(criterion.join(file)).ok()?;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&text).ok()?;
    rows.iter()
        .map(|r| {
            let num = |path: &[&str]| {
                path.iter()
                    .try_fold(r, |v, k| v.get(k))
                    .and_then(serde_json::Value::as_f64)
            };
            let operation = r["operation"].as_str().unwrap_or_default().to_owned();
            Some((
                operation,
                PairedRow {
                    callers: num(&["callers"])? as u64,
                    rounds: num(&["rounds"])? as u64,
                    per_round: num(&["per_round"])? as u64,
                    off_us: num(&["wall", "off_us"])?,
                    on_us: num(&["wall", "on_us"])?,
                    ratio: num(&["wall", "ratio"])?,
                    q1: num(&["wall", "ratio_q1"])?,
                    q3: num(&["wall", "ratio_q3"])?,
                    rust_cpu_diff_us: num(&["rust_cpu", "mean_difference_us"])?,
                    workers_cpu_diff_us: num(&["workers_cpu", "mean_difference_us"])?,
                },
            ))
        })
        .collect()
}

fn median_ns(dir: &Path) -> Option<f64> {
    let text = fs::read_to_string(dir.join("new").join("estimates.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("median")?.get("point_estimate")?.as_f64()
}

/// Every bench under `criterion/<group>`, named `group/…` by its folders (criterion nests a
/// bench named `a/b` as folders `a/b`).
fn collect(criterion: &Path, group: &str) -> Vec<(String, f64)> {
    fn walk(dir: &Path, name: &str, out: &mut Vec<(String, f64)>) {
        if let Some(median) = median_ns(dir) {
            out.push((name.to_owned(), median));
            return;
        }
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let child = entry.file_name().to_string_lossy().into_owned();
            if child != "report" && child != "new" && child != "base" && entry.path().is_dir() {
                walk(&entry.path(), &format!("{name}/{child}"), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&criterion.join(group), group, &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn format_ns(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:.2} ns")
    }
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "rustc (unknown version)".into());
    format!("{cpu}, {cores} cores; {rustc}")
}

/// Writes the report; errors name what is missing.
pub fn run(root: &Path) -> Result<PathBuf, String> {
    let criterion = root.join("target").join("criterion");
    let mut doc = String::new();
    doc.push_str("# Benchmarks\n\n");
    doc.push_str("Generated by `cargo xtask bench-report` from criterion's output of the last run; do not edit.\n\n");
    doc.push_str("Run a suite, then regenerate this page:\n\n```sh\n");
    for (suite, ..) in SUITES {
        let _ = writeln!(
            doc,
            "cargo bench -p dspex-telemetry-benches --bench {suite}"
        );
    }
    doc.push_str("cargo bench -p dspex-telemetry-benches --bench memory_bench\n");
    doc.push_str("cargo bench -p dspex-telemetry-benches --bench three_layer_bench\n");
    doc.push_str("cargo xtask bench-report\n```\n\n");
    let _ = writeln!(doc, "Machine: {}.\n", machine());
    doc.push_str(
        "Every bench runs on the caller's thread; baselines run in the same process and run.\n\n",
    );

    let mut all = Vec::new();
    for (suite, groups, floor_name, unit) in SUITES {
        let rows: Vec<(String, f64)> = groups.iter().flat_map(|g| collect(&criterion, g)).collect();
        if rows.is_empty() {
            return Err(format!(
                "no criterion results for {suite} under {}: run `cargo bench -p dspex-telemetry-benches --bench {suite}` first",
                criterion.display()
            ));
        }
        let floor = rows.iter().find(|(n, _)| n == floor_name).map(|r| r.1);
        let _ = writeln!(doc, "## {suite}\n");
        let _ = writeln!(doc, "| bench | median | {unit} |\n|---|---:|---:|");
        for (name, median) in &rows {
            // With no floor for the suite, each of ours is divided by its baseline's row.
            let divisor = floor.or_else(|| {
                let baseline = name.strip_suffix("/ours")?.to_owned() + "/prometheus_exporter";
                rows.iter().find(|(n, _)| *n == baseline).map(|r| r.1)
            });
            let ratio = divisor.map_or("–".into(), |f| format!("{:.2}", median / f));
            let _ = writeln!(doc, "| `{name}` | {} | {ratio} |", format_ns(*median));
        }
        doc.push('\n');
        all.extend(rows);
    }

    whole_stack(&mut doc, &all);
    let paired = paired_rounds(&criterion);
    if let Some(rows) = &paired {
        doc.push_str(PAIRED_INTRO);
        let rows = rows.iter().map(|r| (r.callers.to_string(), r));
        paired_table(&mut doc, "callers", "calls", rows);
    }
    if let Some(rows) = paired_rows(&criterion, "bridge-ops-paired.json") {
        doc.push_str(
            "The operations, paired the same way (one caller; telemetry is the metric catalog, spans \
             and pool events into the window, and the trace sent to Python):\n\n",
        );
        let rows = rows
            .iter()
            .map(|(operation, r)| (format!("`{operation}`"), r));
        paired_table(&mut doc, "operation", "operations", rows);
    }
    python_otel(&mut doc, &criterion);
    three_layer_latency(&mut doc, &criterion);
    if let Some(rows) = fs::read_to_string(criterion.join("three-layer.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Vec<serde_json::Value>>(&t).ok())
    {
        doc.push_str(
            "## three_layer_bench: telemetry's share of a request\n\n\
             The same request, with the whole stack on \
             (window, Prometheus, StatsD and OTLP metrics, OTLP spans including Python's, alerts \
             every second) against a pool whose dispatcher has nothing attached; paired rounds of \
             200 requests (`cargo bench -p dspex-telemetry-benches --bench three_layer_bench`).\n\n\
             Wall time per request, and CPU time per request on each side of the pipe: this \
             process (callers, pool, and the stack's background threads) and the round's Python \
             workers.\n\n\
             | callers | off | on | on/off (median of pairs) | share of the request in telemetry | Rust CPU off / on | workers' CPU off / on |\n\
             |---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &rows {
            let n = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            let _ = writeln!(
                doc,
                "| {} | {:.1} µs | {:.1} µs | {:.3} | {:.1} % | {:.1} / {:.1} µs | {:.1} / {:.1} µs |",
                n("callers"),
                n("off_us"),
                n("on_us"),
                n("ratio"),
                100.0 * n("telemetry_share"),
                n("rust_cpu_off_us"),
                n("rust_cpu_on_us"),
                n("workers_cpu_off_us"),
                n("workers_cpu_on_us"),
            );
        }
        doc.push('\n');
        if let Some(parts) = fs::read_to_string(criterion.join("three-layer-parts.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Vec<serde_json::Value>>(&t).ok())
        {
            doc.push_str(
                "Where it goes: the same request with one part of the stack on at a time, one \
                 process each, 1 caller (`cargo run --release -p dspex-telemetry-benches \
                 --example three_layer_parts -- PART`). `context`: no handler, the trace still \
                 carried into Python; `window`: the metric catalog into the window; \
                 `spans_recorded`: the window and a span sink that keeps nothing (span records \
                 made, the workers timing their spans and sending them back, the pool reading \
                 them); `spans_collected`: the window and the OTLP span pipeline with an exporter \
                 that discards its batches (the threads' rings, the collector making `SpanData`); \
                 `prometheus`, `statsd`: the window and that backend; `otlp`: the window, and \
                 spans and metrics to an OTLP/HTTP collector; `alerts`: the window and the alerts \
                 evaluating every second; `full`: everything.\n\n\
                 | part on | share of the request | Rust CPU added | workers' CPU added | OTLP collector thread |\n\
                 |---|---:|---:|---:|---:|\n",
            );
            for r in &parts {
                let n = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
                let _ = writeln!(
                    doc,
                    "| {} | {:.1} % | {:.1} µs | {:.1} µs | {} |",
                    r["part"].as_str().unwrap_or("?"),
                    100.0 * n("telemetry_share"),
                    n("rust_cpu_on_us") - n("rust_cpu_off_us"),
                    n("workers_cpu_on_us") - n("workers_cpu_off_us"),
                    r["collector_us"]
                        .as_f64()
                        .map_or("—".to_owned(), |us| format!("{us:.1} µs")),
                );
            }
            doc.push('\n');
        }
    }
    if let Some(memory) = fs::read_to_string(criterion.join("memory.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    {
        let n = |k: &str| memory[k].as_f64().unwrap_or(f64::NAN);
        doc.push_str(
            "## memory_bench\n\nBytes live on the heap, counted by a global allocator (`cargo bench -p \
             dspex-telemetry-benches --bench memory_bench`).\n\n| figure | value |\n|---|---:|\n",
        );
        let _ = writeln!(
            doc,
            "| one sliding-window series after 100 000 samples (`memory_bytes`) | {:.0} B |",
            n("window_series_bytes")
        );
        let _ = writeln!(
            doc,
            "| heap allocations on the caller's thread per bridge-call span exported through `OtlpTraces`, steady state (counting allocator) | {} |",
            n("otlp_span_caller_allocations_per_span")
        );
        let _ = writeln!(
            doc,
            "| a bridge call's `stop` series (duration and count) in the window, after 100 000 events | {:.0} B |",
            n("stop_event_series_heap_bytes")
        );
        let _ = writeln!(
            doc,
            "| 10 000 methods through the catalog into the window and Prometheus, one call each (a window series makes its bucket pages as its values reach them, up to the figure above; the window keeps 1 000 series per metric, the rest fold into one) | {:.1} MB ({:.0} B per method) |",
            n("catalog_10000_series_bytes") / 1e6,
            n("catalog_10000_series_bytes") / 1e4
        );
        let _ = writeln!(
            doc,
            "| baseline: the same 10 000 methods, one call each, the same three series (`histogram!`, `counter!`, the error counter at 0) into Prometheus alone | {:.1} MB ({:.0} B per method) |",
            n("prometheus_10000_series_bytes") / 1e6,
            n("prometheus_10000_series_bytes") / 1e4
        );
        let _ = writeln!(
            doc,
            "| ratio, ours to Prometheus alone (target ≤ 2×) | {:.2}× |",
            n("catalog_10000_series_bytes") / n("prometheus_10000_series_bytes")
        );
        let _ = writeln!(
            doc,
            "| Prometheus text render of the 10 000 methods (median of 5) | {:.1} ms |\n",
            n("prometheus_render_10000_series_ms")
        );
    }

    let event_runs = event_path_runs(&mut doc, &criterion);
    let mut missed = Vec::new();
    doc.push_str(
        "## Targets\n\n| bench | baseline | ratio | target | met |\n|---|---|---:|---:|---|\n",
    );
    for (i, ratio) in event_runs.iter().enumerate() {
        let met = if *ratio <= EVENT_PATH_RUNS_MAX {
            "yes"
        } else {
            "**no**"
        };
        let _ = writeln!(
            doc,
            "| `event_path/dspex_event_to_window_and_prometheus`, run {} of the last {} | \
             `event_path/histogram_macro_to_prometheus` | {ratio:.2}× | ≤ {EVENT_PATH_RUNS_MAX}× | {met} |",
            i + 1,
            event_runs.len(),
        );
    }
    if event_runs.len() < 3 {
        let _ = writeln!(
            doc,
            "| `event_path/dspex_event_to_window_and_prometheus`, three runs | \
             `event_path/histogram_macro_to_prometheus` | {} of 3 measured | ≤ {EVENT_PATH_RUNS_MAX}× | **no** |",
            event_runs.len()
        );
    }
    for callers in [1, 2, 8] {
        let row = paired
            .as_ref()
            .and_then(|rows| rows.iter().find(|r| r.callers == callers));
        let name = format!("bridge/paired_{callers}: wall, instrumented");
        let line = match row {
            Some(r) => format!(
                "| `{name}` | the same rounds, uninstrumented | {:.3}× | ≤ {BRIDGE_MAX_RATIO}× | {} |",
                r.ratio,
                if r.ratio <= BRIDGE_MAX_RATIO {
                    "yes"
                } else {
                    "**no**"
                }
            ),
            None => format!(
                "| `{name}` | the same rounds, uninstrumented | not measured | ≤ {BRIDGE_MAX_RATIO}× | **no** |"
            ),
        };
        doc.push_str(&line);
        doc.push('\n');
        if line.ends_with("**no** |") {
            missed.push(format!("- `{name}`: {BRIDGE_SHARE}"));
        }
    }
    let three_layer = fs::read_to_string(criterion.join("three-layer.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Vec<serde_json::Value>>(&t).ok())
        .unwrap_or_default();
    let mut share_missed = false;
    for callers in [1, 8] {
        let share = three_layer
            .iter()
            .find(|r| r["callers"].as_u64() == Some(callers))
            .and_then(|r| r["telemetry_share"].as_f64());
        let name = format!("three_layer/paired_{callers}: telemetry's share of a request");
        let line = match share {
            Some(share) => format!(
                "| `{name}` | the same rounds, nothing attached | {:.1} % | ≤ {:.0} % | {} |",
                100.0 * share,
                100.0 * THREE_LAYER_MAX_SHARE,
                if share <= THREE_LAYER_MAX_SHARE {
                    "yes"
                } else {
                    "**no**"
                }
            ),
            None => format!(
                "| `{name}` | the same rounds, nothing attached | not measured | ≤ {:.0} % | **no** |",
                100.0 * THREE_LAYER_MAX_SHARE
            ),
        };
        doc.push_str(&line);
        doc.push('\n');
        share_missed |= line.ends_with("**no** |");
    }
    if share_missed {
        missed.push(format!(
            "- `three_layer/paired_{{1,8}}: telemetry's share of a request`: {THREE_LAYER_MISSED}"
        ));
    }
    for t in TARGETS {
        let find = |n: &str| all.iter().find(|(name, _)| name == n).map(|r| r.1);
        let line = match (find(t.bench), find(t.baseline)) {
            (Some(b), Some(base)) => {
                let ratio = b / base;
                let met = if ratio <= t.max_ratio {
                    "yes"
                } else {
                    "**no**"
                };
                format!(
                    "| `{}` | `{}` | {ratio:.2}× | ≤ {}× | {met} |",
                    t.bench, t.baseline, t.max_ratio
                )
            }
            _ => format!(
                "| `{}` | `{}` | not measured | ≤ {}× | **no** |",
                t.bench, t.baseline, t.max_ratio
            ),
        };
        doc.push_str(&line);
        doc.push('\n');
        if line.ends_with("**no** |") && !t.if_missed.is_empty() {
            missed.push(format!("- `{}`: {}", t.bench, t.if_missed));
        }
    }
    if !missed.is_empty() {
        doc.push_str("\nWhere a target is missed:\n\n");
        doc.push_str(&missed.join("\n"));
        doc.push('\n');
    }
    let path = root.join("docs").join("benchmarks.md");
    fs::write(&path, doc).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}
