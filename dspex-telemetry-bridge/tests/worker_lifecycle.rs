//! Workers' lives: a parallel start, `queued` before `dispatched`, exit reasons with the
//! signal, recycling past a memory cap or a number of requests, and resource usage that
//! follows the worker's real memory.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dspex_telemetry_bridge::{Pool, PoolConfig, ResourceUsage};
use dspex_telemetry_core::{Dispatcher, Event, EventName, TraceContext, WithTraceContext, context};
use serde_json::json;

#[derive(Debug, Clone)]
struct Seen {
    name: String,
    measurements: Vec<(String, f64)>,
    metadata: Vec<(String, String)>,
    trace: Option<String>,
}

impl Seen {
    fn md(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn m(&self, key: &str) -> Option<f64> {
        self.measurements
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn recording_dispatcher() -> (Dispatcher, Log) {
    let d = Dispatcher::new();
    let log: Log = Arc::default();
    let sink = log.clone();
    d.attach_prefix(
        "rec",
        EventName::from_static(&["dspex", "pool"]),
        move |e: &Event<'_>| {
            sink.lock().unwrap().push(Seen {
                name: e.name().to_string(),
                measurements: e
                    .measurements()
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.as_f64()))
                    .collect(),
                metadata: e
                    .metadata()
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_string()))
                    .collect(),
                trace: context::current().map(|c| c.trace_id().to_string()),
            })
        },
    )
    .unwrap();
    (d, log)
}

fn events(log: &Log, name: &str) -> Vec<Seen> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.name == name)
        .cloned()
        .collect()
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("python")
}

async fn pool(d: &Dispatcher, tweak: impl FnOnce(&mut PoolConfig)) -> Pool {
    let mut config = PoolConfig {
        size: 1,
        python_path: vec![fixtures()],
        dispatcher: d.clone(),
        health_interval: None,
        ..PoolConfig::default()
    };
    tweak(&mut config);
    Pool::start(config)
        .await
        .expect("python3 must be installed for the bridge tests")
}

async fn pid(pool: &Pool) -> u32 {
    let pid = pool
        .call("lifecycle_fixtures", "pid", vec![])
        .await
        .unwrap();
    pid.as_u64().unwrap() as u32
}

/// Waits (up to 20 s) until `ready` holds: no sleeping on the machine's speed.
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let limit = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < limit, "{what}: not reached within 20 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_start_in_parallel() {
    // Each worker's start waits 0.8 s in its preload: one after another, four would take
    // 3.2 s; together, about 0.8 s.
    let start = |size| async move {
        let (d, log) = recording_dispatcher();
        let began = Instant::now();
        let pool = pool(&d, |c| {
            c.size = size;
            c.preload = vec!["slow_start".into()];
        })
        .await;
        let ready = began.elapsed();
        assert_eq!(events(&log, "dspex.pool.worker.spawned").len(), size);
        pool.shutdown().await;
        ready
    };
    let one = start(1).await;
    let four = start(4).await;
    assert!(one >= Duration::from_millis(800), "{one:?}");
    // Their waits overlap: one after another, four would take at least 3.2 s.
    assert!(
        four < Duration::from_millis(3200),
        "4 workers ready in {four:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_always_precedes_dispatched() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |c| c.size = 2).await;
    // Each call in a trace of its own, so that its two events can be paired.
    let calls: Vec<_> = (0..400)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(
                async move {
                    pool.call("lifecycle_fixtures", "pid", vec![])
                        .await
                        .unwrap();
                }
                .with_trace_context(TraceContext::new_root()),
            )
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    let log = log.lock().unwrap().clone();
    let mut checked = 0;
    for (i, seen) in log.iter().enumerate() {
        if seen.name != "dspex.pool.request.dispatched" {
            continue;
        }
        let trace = seen
            .trace
            .as_ref()
            .expect("dispatched in the caller's trace");
        let queued = log[..i]
            .iter()
            .filter(|s| s.name == "dspex.pool.request.queued" && s.trace.as_ref() == Some(trace))
            .count();
        assert_eq!(queued, 1, "request {trace}: dispatched before queued");
        checked += 1;
    }
    assert_eq!(checked, 400);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_reasons_carry_the_signal() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |_| {}).await;
    for (signal, name) in [("-KILL", "SIGKILL"), ("-SEGV", "SIGSEGV")] {
        let worker = pid(&pool).await;
        let status = std::process::Command::new("kill")
            .arg(signal)
            .arg(worker.to_string())
            .status()
            .unwrap();
        assert!(status.success());
        until("the worker's exit", || {
            events(&log, "dspex.pool.worker.exited")
                .iter()
                .any(|e| e.md("os_pid") == Some(&worker.to_string()))
        })
        .await;
        let exited = events(&log, "dspex.pool.worker.exited");
        let exit = exited
            .iter()
            .find(|e| e.md("os_pid") == Some(&worker.to_string()))
            .unwrap();
        assert_eq!(exit.md("reason"), Some("crashed"), "{exit:?}");
        assert_eq!(exit.md("signal"), Some(name), "{exit:?}");
        assert_eq!(exit.md("exit_code"), None, "{exit:?}");
    }
    // A worker that ends on shutdown exits with code 0, and no signal.
    let last = pid(&pool).await;
    pool.shutdown().await;
    let exited = events(&log, "dspex.pool.worker.exited");
    let exit = exited
        .iter()
        .find(|e| e.md("os_pid") == Some(&last.to_string()))
        .unwrap();
    assert_eq!(
        (exit.md("reason"), exit.md("exit_code"), exit.md("signal")),
        (Some("shutdown"), Some("0"), None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_is_recycled_after_n_requests_finishing_its_call() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |c| c.max_worker_requests = Some(3)).await;
    let mut pids = Vec::new();
    for _ in 0..7 {
        pids.push(pid(&pool).await);
    }
    assert_eq!(pids[0], pids[1]);
    assert_eq!(pids[1], pids[2]);
    assert_ne!(pids[2], pids[3]);
    assert_eq!(pids[3], pids[5]);
    assert_ne!(pids[5], pids[6]);
    let exits = events(&log, "dspex.pool.worker.exited");
    assert_eq!(exits.len(), 2, "{exits:?}");
    for exit in &exits {
        assert_eq!(exit.md("reason"), Some("recycled_requests"));
        assert_eq!(exit.md("exit_code"), Some("0"), "it exited on its own");
    }
    let restarts = events(&log, "dspex.pool.worker.restarted");
    assert_eq!(restarts[0].md("reason"), Some("recycled_requests"));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_past_its_memory_cap_is_recycled_after_its_call() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |c| c.max_worker_memory_bytes = Some(150 << 20)).await;
    let first = pid(&pool).await;
    // Below the cap: the worker stays.
    let grown = pool
        .call("lifecycle_fixtures", "grow", vec![json!(64)])
        .await;
    assert_eq!(
        grown.unwrap(),
        json!(first),
        "the call that grows it succeeds"
    );
    assert_eq!(pid(&pool).await, first);
    // Past it: the call that grew it gets its answer, then the worker goes.
    let grown = pool
        .call("lifecycle_fixtures", "grow", vec![json!(128)])
        .await;
    assert_eq!(grown.unwrap(), json!(first));
    let second = pid(&pool).await;
    assert_ne!(second, first);
    let held = pool
        .call("lifecycle_fixtures", "held_megabytes", vec![])
        .await;
    assert_eq!(held.unwrap(), json!(0), "a fresh worker");
    let exits = events(&log, "dspex.pool.worker.exited");
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(exits[0].md("reason"), Some("recycled_memory"));
    assert_eq!(exits[0].md("os_pid"), Some(first.to_string().as_str()));
    assert_eq!(exits[0].md("exit_code"), Some("0"));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_events_follow_the_workers_real_memory() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |c| {
        c.size = 2;
        c.health_interval = Some(Duration::from_millis(50));
    })
    .await;
    let worker = pool
        .call("lifecycle_fixtures", "grow", vec![json!(0)])
        .await
        .unwrap();
    let worker = worker.to_string();
    let latest = |log: &Log| {
        events(log, "dspex.pool.worker.usage")
            .into_iter()
            .rev()
            .find(|e| e.md("os_pid") == Some(worker.as_str()))
    };
    until("a usage event", || latest(&log).is_some()).await;
    let before = latest(&log).unwrap();
    let before_bytes = before.m("memory_bytes").unwrap();
    // The OS's own reading agrees with the event's.
    let os = ResourceUsage::of(worker.parse().unwrap()).unwrap();
    assert!(
        (os.memory_bytes as f64 - before_bytes).abs() < (8 << 20) as f64,
        "{os:?} vs {before:?}"
    );
    assert!(before.m("cpu_seconds").unwrap() >= 0.0);
    assert!(before.md("worker_id").is_some());

    // 200 MiB more, held by that worker (the pool has two: call until it is the one).
    loop {
        let who = pool
            .call("lifecycle_fixtures", "grow", vec![json!(200)])
            .await
            .unwrap();
        if who.as_u64().map(|p| p.to_string()).as_deref() == Some(worker.as_str()) {
            break;
        }
    }
    until("the usage event to show the growth", || {
        latest(&log)
            .and_then(|e| e.m("memory_bytes"))
            .unwrap_or(0.0)
            >= before_bytes + (190 << 20) as f64
    })
    .await;
    // The health event sums the workers' memory and carries this process's own.
    let health = events(&log, "dspex.pool.health").pop().unwrap();
    assert!(health.m("workers_memory_bytes").unwrap() >= (200 << 20) as f64);
    assert!(
        health.m("process_memory_bytes").unwrap() > 0.0,
        "{health:?}"
    );
    assert!(health.m("process_cpu_seconds").is_some(), "{health:?}");
    let usage: Vec<Option<ResourceUsage>> = pool.worker_usage();
    assert_eq!(usage.len(), 2);
    assert!(usage.iter().all(Option::is_some), "{usage:?}");
    pool.shutdown().await;
}
