//! `fork_workers`: workers forked from a template that imported the preloads once. They serve
//! as spawned ones do, start at once, report their own exit status and signal, and leave
//! nothing behind.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dspex_telemetry_bridge::{Pool, PoolConfig};
use dspex_telemetry_core::{Dispatcher, Event, EventName};
use serde_json::json;

/// The template folders of this process.
fn template_folders() -> HashSet<String> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&format!("dspex-pool-{}-", std::process::id())))
        .collect()
}

/// The tests of this file take turns: one checks that its pool leaves no template folder,
/// and times its start.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `(event name, metadata)` of every pool event.
type Log = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

fn recording_dispatcher() -> (Dispatcher, Log) {
    let d = Dispatcher::new();
    let log: Log = Arc::default();
    let sink = log.clone();
    d.attach_prefix(
        "rec",
        EventName::from_static(&["dspex", "pool"]),
        move |e: &Event<'_>| {
            let md = e
                .metadata()
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_string()))
                .collect();
            sink.lock().unwrap().push((e.name().to_string(), md));
        },
    )
    .unwrap();
    (d, log)
}

fn exits(log: &Log) -> Vec<Vec<(String, String)>> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(name, _)| name == "dspex.pool.worker.exited")
        .map(|(_, md)| md.clone())
        .collect()
}

fn md<'a>(md: &'a [(String, String)], key: &str) -> Option<&'a str> {
    md.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

async fn pool(d: &Dispatcher, tweak: impl FnOnce(&mut PoolConfig)) -> Pool {
    let mut config = PoolConfig {
        size: 1,
        python_path: vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python")],
        preload: vec!["fork_fixtures".into()],
        fork_workers: true,
        dispatcher: d.clone(),
        health_interval: None,
        ..PoolConfig::default()
    };
    tweak(&mut config);
    Pool::start(config)
        .await
        .expect("python3 must be installed for the bridge tests")
}

async fn call(pool: &Pool, function: &str) -> u32 {
    let value = pool.call("fork_fixtures", function, vec![]).await.unwrap();
    value.as_u64().unwrap() as u32
}

fn alive(pid: u32) -> bool {
    // Signal 0 checks the process exists (a zombie counts, so a reaped one does not).
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn kill(signal: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let limit = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < limit, "{what}: not reached within 20 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_forked_from_one_import_and_start_at_once() {
    let _turn = ONE_AT_A_TIME.lock().await;
    // (A test before this one may still be removing its own.)
    let before = template_folders();
    let (d, log) = recording_dispatcher();
    let began = Instant::now();
    let pool = pool(&d, |c| c.size = 4).await;
    let ready = began.elapsed();
    // The preload (0.5 s) ran once, in the template: one after another, or each on its own,
    // four imports would take 2 s of waiting.
    assert!(ready < Duration::from_millis(1500), "ready in {ready:?}");
    let mut workers = HashSet::new();
    let mut template = HashSet::new();
    for _ in 0..40 {
        workers.insert(call(&pool, "pid").await);
        template.insert(call(&pool, "imported_by").await);
    }
    assert_eq!(template.len(), 1, "one import, in the template");
    let template = *template.iter().next().unwrap();
    assert!(
        !workers.contains(&template),
        "the workers are not the template"
    );
    // The spawned events name the processes that serve.
    let spawned: HashSet<u32> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(name, _)| name == "dspex.pool.worker.spawned")
        .map(|(_, m)| md(m, "os_pid").unwrap().parse().unwrap())
        .collect();
    assert_eq!(spawned.len(), 4);
    assert!(workers.is_subset(&spawned), "{workers:?} ⊄ {spawned:?}");

    // Shutdown leaves nothing: workers, template, its socket's folder.
    pool.shutdown().await;
    for pid in spawned.iter().chain([&template]) {
        assert!(!alive(*pid), "process {pid} outlived the pool");
    }
    let left: Vec<_> = template_folders().difference(&before).cloned().collect();
    assert_eq!(
        left,
        Vec::<String>::new(),
        "the template's folder is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_worker_reports_its_own_exit_and_signal_and_is_forked_again() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |_| {}).await;
    for (signal, name) in [("-KILL", "SIGKILL"), ("-SEGV", "SIGSEGV")] {
        let worker = call(&pool, "pid").await;
        kill(signal, worker);
        until("the worker's exit", || {
            exits(&log)
                .iter()
                .any(|e| md(e, "os_pid") == Some(worker.to_string().as_str()))
        })
        .await;
        let exit = exits(&log)
            .into_iter()
            .find(|e| md(e, "os_pid") == Some(worker.to_string().as_str()))
            .unwrap();
        assert_eq!(md(&exit, "reason"), Some("crashed"), "{exit:?}");
        assert_eq!(md(&exit, "signal"), Some(name), "{exit:?}");
        assert_ne!(call(&pool, "pid").await, worker, "a new worker serves");
    }
    // Recycled and shut down workers exit with code 0, through the template.
    let last = call(&pool, "pid").await;
    pool.shutdown().await;
    let exit = exits(&log)
        .into_iter()
        .find(|e| md(e, "os_pid") == Some(last.to_string().as_str()))
        .unwrap();
    assert_eq!(
        (
            md(&exit, "reason"),
            md(&exit, "exit_code"),
            md(&exit, "signal")
        ),
        (Some("shutdown"), Some("0"), None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycling_forks_a_fresh_worker_and_a_dead_template_is_replaced() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |c| c.max_worker_requests = Some(2)).await;
    let first = call(&pool, "pid").await;
    assert_eq!(call(&pool, "pid").await, first);
    let second = call(&pool, "pid").await;
    assert_ne!(second, first);
    let recycled = exits(&log);
    assert_eq!(md(&recycled[0], "reason"), Some("recycled_requests"));
    assert_eq!(md(&recycled[0], "exit_code"), Some("0"));

    // The template dies: the running worker serves on; the next worker needs a new template.
    let template = call(&pool, "imported_by").await;
    kill("-KILL", template);
    until("the template's end", || !alive(template)).await;
    let third = call(&pool, "pid").await;
    assert_ne!(third, second);
    let new_template = call(&pool, "imported_by").await;
    assert_ne!(new_template, template);
    assert_eq!(
        pool.call("builtins", "sum", vec![json!([1, 2])])
            .await
            .unwrap(),
        json!(3)
    );
    pool.shutdown().await;
    assert!(!alive(new_template));
}

#[tokio::test]
async fn a_preload_that_fails_in_the_template_fails_the_start() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (d, _log) = recording_dispatcher();
    let started = Pool::start(PoolConfig {
        size: 2,
        preload: vec!["no_such_module_anywhere".into()],
        fork_workers: true,
        dispatcher: d,
        health_interval: None,
        ..PoolConfig::default()
    })
    .await;
    let error = started.unwrap_err().to_string();
    assert!(
        error.contains("template") && error.contains("no_such_module_anywhere"),
        "{error}"
    );
}
