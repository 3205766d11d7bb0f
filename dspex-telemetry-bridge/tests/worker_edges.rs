//! Real Python workers at their edges: stderr that is not UTF-8, children that outlive a call,
//! replies to another request, frames over `max_frame_bytes`, results that cannot be encoded.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dspex_telemetry_bridge::{BridgeError, Pool, PoolConfig, StartError};
use dspex_telemetry_core::{Dispatcher, Event, EventName};
use serde_json::{Value, json};

/// `(event name, reason metadata)` of every pool event.
type Log = Arc<Mutex<Vec<(String, Option<String>)>>>;

fn recording_dispatcher() -> (Dispatcher, Log) {
    let d = Dispatcher::new();
    let log: Log = Arc::default();
    let sink = log.clone();
    d.attach_prefix(
        "rec",
        EventName::from_static(&["dspex", "pool"]),
        move |e: &Event<'_>| {
            let reason = e
                .metadata()
                .iter()
                .find(|(k, _)| *k == "reason")
                .map(|(_, v)| v.to_string());
            sink.lock().unwrap().push((e.name().to_string(), reason));
        },
    )
    .unwrap();
    (d, log)
}

fn exits(log: &Log) -> Vec<Option<String>> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(name, _)| name == "dspex.pool.worker.exited")
        .map(|(_, reason)| reason.clone())
        .collect()
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("python")
}

/// A pool of one worker, so that successive calls meet the same process.
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

async fn call(pool: &Pool, function: &str, args: Vec<Value>) -> Result<Value, BridgeError> {
    pool.call("edge_fixtures", function, args).await
}

async fn pid(pool: &Pool) -> i64 {
    call(pool, "pid", vec![]).await.unwrap().as_i64().unwrap()
}

/// Waits (up to 10 s) until `ready` holds.
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let limit = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < limit, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a process runs (a zombie does not: it has ended, its parent has not reaped it).
fn running(pid: i64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) state ...": the state follows the last parenthesis.
    let state = stat
        .rsplit(") ")
        .next()
        .and_then(|rest| rest.chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

fn python_error(outcome: Result<Value, BridgeError>) -> (String, String) {
    match outcome {
        Err(BridgeError::Python { kind, message, .. }) => (kind, message),
        other => panic!("expected a Python error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_that_is_not_utf8_is_drained_and_later_prints_still_work() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |_| {}).await;
    let worker = call(&pool, "bad_stderr", vec![]).await.unwrap();
    // The drain keeps reading: every later print to stderr in that worker succeeds.
    for i in 0..20 {
        assert_eq!(
            call(&pool, "say", vec![json!(format!("line {i}"))]).await,
            Ok(worker.clone()),
            "print {i} after bytes that are not UTF-8"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A line far longer than any log line, without a newline, is drained too.
    assert_eq!(
        call(&pool, "long_stderr_line", vec![json!(4 << 20)]).await,
        Ok(json!(4 << 20))
    );
    assert_eq!(
        call(&pool, "say", vec![json!("after a long line")]).await,
        Ok(worker)
    );
    assert!(exits(&log).is_empty(), "{:?}", exits(&log));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_of_a_worker_are_killed_with_it_at_shutdown() {
    let (d, _log) = recording_dispatcher();
    let pool = pool(&d, |_| {}).await;
    let spawned = call(&pool, "sleeper", vec![])
        .await
        .unwrap()
        .as_i64()
        .unwrap();
    let forked = call(&pool, "forked_sleeper", vec![])
        .await
        .unwrap()
        .as_i64()
        .unwrap();
    assert!(running(spawned) && running(forked));
    pool.shutdown().await;
    until("the worker's children are gone after shutdown", || {
        !running(spawned) && !running(forked)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_of_a_replaced_worker_are_killed_with_it() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |c| c.call_timeout = Duration::from_millis(1500)).await;
    let pid_file = std::env::temp_dir().join(format!(
        "dspex-bridge-sleeper-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    let outcome = call(
        &pool,
        "sleeper_then_hang",
        vec![json!(pid_file.to_str().unwrap())],
    )
    .await;
    assert!(
        matches!(outcome, Err(BridgeError::DeadlineExceeded(_))),
        "{outcome:?}"
    );
    let child: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = std::fs::remove_file(&pid_file);
    until("the replaced worker's child is gone", || !running(child)).await;
    // The worker's group is killed first; its exit event follows once it is reaped.
    until("the replaced worker's exit event", || {
        !exits(&log).is_empty()
    })
    .await;
    assert_eq!(exits(&log), [Some("killed_deadline".to_owned())]);
    assert_eq!(
        call(&pool, "text_of", vec![json!(2)]).await,
        Ok(json!("xx"))
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_child_cannot_write_into_the_protocol() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |_| {}).await;
    let worker = pid(&pool).await;
    let child = call(&pool, "forked_writer", vec![json!(0.1)])
        .await
        .unwrap()
        .as_i64()
        .unwrap();
    until("the forked child has tried its write", || !running(child)).await;
    // The next call is served, by the same worker: no stray reply came before its own.
    assert_eq!(pid(&pool).await, worker);
    assert_eq!(call(&pool, "text_of", vec![json!(1)]).await, Ok(json!("x")));
    assert!(exits(&log).is_empty(), "{:?}", exits(&log));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_process_reads_no_requests() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |_| {}).await;
    let worker = pid(&pool).await;
    let child = call(&pool, "stdin_reader", vec![])
        .await
        .unwrap()
        .as_i64()
        .unwrap();
    // Its standard input is empty: it ends at once rather than wait for the next request.
    until("the child reading stdin has ended", || !running(child)).await;
    assert_eq!(pid(&pool).await, worker);
    assert!(exits(&log).is_empty(), "{:?}", exits(&log));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_writes_while_idle_is_replaced_before_the_next_call() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |_| {}).await;
    let worker = call(&pool, "thread_writer", vec![json!(0.1)])
        .await
        .unwrap()
        .as_i64()
        .unwrap();
    until("the worker is retired", || !exits(&log).is_empty()).await;
    assert_eq!(exits(&log), [Some("protocol_error".to_owned())]);
    // The next call is innocent: it is served, by a fresh worker.
    assert_ne!(pid(&pool).await, worker);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_another_request_fails_the_call_and_replaces_the_worker() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |_| {}).await;
    let worker = pid(&pool).await;
    match call(&pool, "wrong_id", vec![json!(424242)]).await {
        Err(BridgeError::Protocol(message)) => {
            assert!(message.contains("424242"), "{message}");
            assert!(!message.contains("Some("), "{message}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    // The next call is served by a fresh worker (started once the old one's exit is reported).
    let fresh = pid(&pool).await;
    assert_ne!(fresh, worker);
    assert_eq!(exits(&log), [Some("protocol_error".to_owned())]);
    // What the worker sent as an id is bounded and escaped in the error.
    let forged = format!("a\nforged line{}", "y".repeat(100_000));
    match call(&pool, "wrong_id", vec![json!(forged)]).await {
        Err(BridgeError::Protocol(message)) => {
            assert!(message.len() < 1000, "{} bytes", message.len());
            assert!(!message.contains('\n'), "{message}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert_ne!(pid(&pool).await, fresh);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_max_frame_bytes_fails_without_being_sent() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |c| c.max_frame_bytes = 64 * 1024).await;
    let worker = pid(&pool).await;
    let outcome = pool
        .call("builtins", "len", vec![json!("z".repeat(100_000))])
        .await;
    assert!(
        matches!(outcome, Err(BridgeError::RequestTooLarge { max: 65536 })),
        "{outcome:?}"
    );
    let message = outcome.unwrap_err().to_string();
    assert!(
        message.contains("max_frame_bytes") && message.contains("65536"),
        "{message}"
    );
    // The worker was not touched: the next call is served by it.
    assert_eq!(pid(&pool).await, worker);
    // Just under the cap goes through.
    assert_eq!(
        call(&pool, "text_of", vec![json!(60_000)])
            .await
            .unwrap()
            .as_str()
            .map(str::len),
        Some(60_000)
    );
    assert!(exits(&log).is_empty(), "{:?}", exits(&log));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_over_max_frame_bytes_is_a_python_error_and_the_worker_stays() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |c| c.max_frame_bytes = 64 * 1024).await;
    let worker = pid(&pool).await;
    let (kind, message) = python_error(call(&pool, "text_of", vec![json!(100_000)]).await);
    assert_eq!(kind, "ValueError");
    assert!(
        message.contains("max_frame_bytes") && message.contains("65536"),
        "{message}"
    );
    assert_eq!(pid(&pool).await, worker);
    assert!(exits(&log).is_empty(), "{:?}", exits(&log));
    pool.shutdown().await;
}

/// Drives the worker script directly: a request frame over the cap the pool gave it.
#[test]
fn the_worker_refuses_a_request_frame_over_its_cap_and_keeps_serving() {
    use std::io::{Read, Write};
    let mut child = std::process::Command::new("python3")
        .args(["-u", "-c", dspex_telemetry_bridge::WORKER_SCRIPT])
        .env("DSPEX_WORKER_MAX_FRAME_BYTES", "2048")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 must be installed");
    let (mut input, mut output) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let mut read_reply = move || -> Value {
        let mut len = [0u8; 4];
        output
            .read_exact(&mut len)
            .expect("a reply, not the end of the worker");
        let mut reply = vec![0; u32::from_be_bytes(len) as usize];
        output.read_exact(&mut reply).unwrap();
        serde_json::from_slice(&reply).unwrap()
    };
    assert_eq!(read_reply()["ready"], json!(true));
    let mut send = |body: &[u8]| {
        input.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
        input.write_all(body).unwrap();
        input.flush().unwrap();
    };
    let big = format!(
        "\n{{\"op\": \"ping\", \"id\": 1, \"pad\": \"{}\"}}",
        "p".repeat(4000)
    );
    send(big.as_bytes());
    let reply = read_reply();
    assert_eq!(reply["ok"], json!(false), "{reply}");
    assert_eq!(reply["error"]["type"], json!("ProtocolError"), "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("max_frame_bytes") && message.contains("2048"),
        "{message}"
    );
    // The frame was skipped whole: the next request is read from its start.
    send(b"\n{\"op\": \"ping\", \"id\": 2}");
    let reply = read_reply();
    assert_eq!((&reply["ok"], &reply["id"]), (&json!(true), &json!(2)));
    drop(input);
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_that_cannot_be_encoded_are_python_errors_and_the_worker_stays() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |_| {}).await;
    let worker = pid(&pool).await;

    let (kind, message) = python_error(call(&pool, "bad_repr", vec![]).await);
    assert_eq!(kind, "TypeError");
    assert!(message.contains("BadRepr"), "{message}");
    assert_eq!(pid(&pool).await, worker);

    let (kind, message) = python_error(call(&pool, "not_serializable", vec![]).await);
    assert_eq!(kind, "TypeError");
    assert!(
        message.contains("edge_fixtures.Opaque has no JSON form"),
        "{message}"
    );
    assert_eq!(pid(&pool).await, worker);

    // What has a faithful form takes it: dataclasses, sets, tuples, `toDict()` (a DSPy
    // Prediction's fields), nested.
    let structured = call(&pool, "structured", vec![]).await.unwrap();
    assert_eq!(
        structured,
        json!({
            "point": {"x": 3, "labels": ["a", "b"]},
            "tags": ["a", "b", "c"],
            "mixed": [1],
            "pair": [1, 2],
            "prediction": {"answer": "4", "points": [{"x": 1, "labels": []}]},
        })
    );

    // Deeper than the pool reads (126 levels under the reply), and deeper than Python's
    // encoder goes.
    for depth in [127, 200, 5000] {
        let (kind, message) = python_error(call(&pool, "deep", vec![json!(depth)]).await);
        assert_eq!(kind, "RecursionError", "{depth}: {message}");
        assert!(message.contains("JSON"), "{message}");
        assert_eq!(pid(&pool).await, worker);
    }
    // As deep as the pool reads comes back.
    let mut expected = json!([]);
    for _ in 1..126 {
        expected = json!([expected]);
    }
    assert_eq!(call(&pool, "deep", vec![json!(126)]).await, Ok(expected));
    assert_eq!(pid(&pool).await, worker);

    // An exception whose text cannot be made.
    let (kind, _) = python_error(call(&pool, "raise_silent", vec![]).await);
    assert_eq!(kind, "SilentError");
    assert_eq!(pid(&pool).await, worker);

    assert!(exits(&log).is_empty(), "{:?}", exits(&log));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_forked_by_a_thread_while_the_worker_waits_for_a_request_exits() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |_| {}).await;
    let worker = call(&pool, "fork_from_thread", vec![json!(0.2)])
        .await
        .unwrap()
        .as_i64()
        .unwrap();
    // The thread forks while the worker's main thread reads the next request. The child and
    // its own child find /dev/null in the pipes' place and exit (0) at once.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(call(&pool, "fork_outcome", vec![]).await, Ok(json!(0)));
    assert_eq!(pid(&pool).await, worker);
    assert_eq!(
        call(&pool, "text_of", vec![json!(2)]).await,
        Ok(json!("xx"))
    );
    assert!(exits(&log).is_empty(), "{:?}", exits(&log));
    pool.shutdown().await;
}

#[tokio::test]
async fn a_preload_error_whose_text_cannot_be_made_still_fails_the_start() {
    let err = Pool::start(PoolConfig {
        size: 1,
        python_path: vec![fixtures()],
        preload: vec!["edge_silent_preload".into()],
        health_interval: None,
        ..PoolConfig::default()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StartError::Spawn { reason, .. }
            if reason.contains("edge_silent_preload") && reason.contains("SilentPreloadError")),
        "{err}"
    );
}

/// Drives the worker script directly: a timed call whose result cannot be encoded.
#[test]
fn an_error_reply_for_a_result_that_cannot_be_encoded_keeps_the_calls_spans() {
    use std::io::{Read, Write};
    let mut child = std::process::Command::new("python3")
        .args(["-u", "-c", dspex_telemetry_bridge::WORKER_SCRIPT])
        .env("PYTHONPATH", fixtures())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 must be installed");
    let (mut input, mut output) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let mut read_reply = move || -> Value {
        let mut len = [0u8; 4];
        output
            .read_exact(&mut len)
            .expect("a reply, not the end of the worker");
        let mut reply = vec![0; u32::from_be_bytes(len) as usize];
        output.read_exact(&mut reply).unwrap();
        serde_json::from_slice(&reply).unwrap()
    };
    assert_eq!(read_reply()["ready"], json!(true));
    let header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 00f067aa0ba902b7 c ";
    let request = json!({
        "op": "call", "id": 1, "module": "edge_fixtures",
        "function": "spanned_unencodable", "timed": true,
    });
    let body = format!("{header}\n{request}");
    input.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    input.write_all(body.as_bytes()).unwrap();
    input.flush().unwrap();
    let reply = read_reply();
    assert_eq!(
        (&reply["ok"], &reply["id"]),
        (&json!(false), &json!(1)),
        "{reply}"
    );
    assert_eq!(reply["error"]["type"], json!("TypeError"), "{reply}");
    assert!(reply["call_span"].is_array(), "{reply}");
    // Wire form: [name, span_id, parent_span_id, start_ns, end_ns, status, message, attributes],
    // the ids as ints, the parent null for the call's own span.
    let spans = reply["spans"].as_array().expect("the call's spans");
    assert_eq!(spans.len(), 1, "{reply}");
    assert_eq!(spans[0][0], json!("before"));
    assert!(spans[0][1].as_u64().is_some_and(|id| id != 0), "{reply}");
    assert_eq!(spans[0][2], Value::Null);
    drop(input);
    assert!(child.wait().unwrap().success());
}
