//! The pool against real Python processes: results, errors, trace propagation, Python spans,
//! deadlines, crashes, a full queue, chatty user code, malformed frames, shutdown.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dspex_telemetry_bridge::{BridgeError, Pool, PoolConfig, StartError};
use dspex_telemetry_core::{
    CorrelationId, Dispatcher, Event, EventName, TraceContext, TraceState, WithTraceContext,
    catalog, context,
};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Seen {
    name: String,
    measurements: Vec<(String, i64)>,
    metadata: Vec<(String, String)>,
    ctx: Option<TraceContext>,
}

impl Seen {
    fn md(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn m(&self, key: &str) -> Option<i64> {
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
        EventName::from_static(&["dspex"]),
        move |e: &Event<'_>| {
            sink.lock().unwrap().push(Seen {
                name: e.name().to_string(),
                measurements: e
                    .measurements()
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.as_i64().unwrap_or(v.as_f64() as i64)))
                    .collect(),
                metadata: e
                    .metadata()
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_string()))
                    .collect(),
                ctx: context::current(),
            })
        },
    )
    .unwrap();
    (d, log)
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("python")
}

async fn pool(d: &Dispatcher, tweak: impl FnOnce(&mut PoolConfig)) -> Pool {
    let mut config = PoolConfig {
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

/// Waits (up to 10 s) until `ready` holds: no sleeping on the machine's speed.
async fn until(mut ready: impl FnMut() -> bool) {
    let limit = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < limit, "condition not reached within 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn events(log: &Log, name: &str) -> Vec<Seen> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.name == name)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_and_python_errors_come_back() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |_| {}).await;
    assert_eq!(
        pool.call("bridge_fixtures", "add", vec![json!(2), json!(3)])
            .await,
        Ok(json!(5))
    );
    assert_eq!(
        pool.call("builtins", "sorted", vec![json!([3, 1, 2])])
            .await,
        Ok(json!([1, 2, 3]))
    );
    match pool
        .call("bridge_fixtures", "fail", vec![json!("bad input")])
        .await
    {
        Err(BridgeError::Python {
            kind,
            message,
            traceback,
        }) => {
            assert_eq!(
                (kind.as_str(), message.as_str()),
                ("ValueError", "bad input")
            );
            assert!(traceback.unwrap().contains("raise ValueError"));
        }
        other => panic!("expected a Python error, got {other:?}"),
    }
    // NaN is not JSON: the call fails as a Python error, and the worker stays.
    match pool.call("bridge_fixtures", "not_json", vec![]).await {
        Err(BridgeError::Python { kind, message, .. }) => {
            assert_eq!(kind, "ValueError");
            assert!(message.contains("cannot be sent as JSON"), "{message}");
        }
        other => panic!("expected a Python error, got {other:?}"),
    }
    assert!(
        events(&log, "dspex.pool.worker.exited").is_empty(),
        "no worker was replaced"
    );
    let missing = pool.call("no_such_module", "f", vec![]).await.unwrap_err();
    assert!(
        matches!(missing, BridgeError::Python { ref kind, .. } if kind == "ModuleNotFoundError"),
        "{missing:?}"
    );
    let stops = events(&log, "dspex.bridge.call.stop");
    assert_eq!(stops.len(), 2);
    assert_eq!(stops[0].md("module"), Some("bridge_fixtures"));
    assert_eq!(stops[0].md("result_type"), Some("int"));
    assert_eq!(
        stops[0].md("args"),
        Some("[2,3]"),
        "args go to events (never to labels)"
    );
    let exceptions = events(&log, "dspex.bridge.call.exception");
    assert_eq!(exceptions.len(), 3);
    assert_eq!(exceptions[0].md("error"), Some("python_exception"));
    assert_eq!(exceptions[0].md("reason"), Some("ValueError: bad input"));
    assert!(
        events(&log, "dspex.pool.request.dispatched")
            .iter()
            .all(|e| e.m("queue_time").is_some())
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_reaches_python_and_python_spans_come_back_as_children() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |_| {}).await;
    let root =
        TraceContext::new_root().with_correlation_id(CorrelationId::parse("order-77").unwrap());
    let seen = pool
        .call("bridge_fixtures", "whoami", vec![])
        .with_trace_context(root.clone())
        .await
        .unwrap();
    assert_eq!(seen["trace_id"], json!(root.trace_id().to_string()));
    assert_eq!(seen["correlation_id"], json!("order-77"));
    assert!(
        seen["baggage"]
            .as_str()
            .unwrap()
            .contains("correlation_id=order-77")
    );
    assert_eq!(seen["tracestate"], json!(""), "no tracestate: an empty one");
    // A vendor's tracestate reaches Python as it came, beside a baggage with a space.
    let mut with_state = root
        .clone()
        .with_tracestate(TraceState::parse(["congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"]).unwrap());
    with_state.add_baggage("note", "a b").unwrap();
    let seen = pool
        .call("bridge_fixtures", "whoami", vec![])
        .with_trace_context(with_state)
        .await
        .unwrap();
    assert_eq!(
        seen["tracestate"],
        json!("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    );
    assert!(
        seen["baggage"].as_str().unwrap().contains("note=a%20b"),
        "{seen}"
    );
    assert_eq!(seen["correlation_id"], json!("order-77"));

    log.lock().unwrap().clear();
    let before = dspex_telemetry_core::system_time_ns();
    pool.call("bridge_fixtures", "nested", vec![json!(3)])
        .with_trace_context(root.clone())
        .await
        .unwrap();
    let after = dspex_telemetry_core::system_time_ns();
    let bridge = events(&log, "dspex.bridge.call.start")
        .remove(0)
        .ctx
        .unwrap();
    assert_eq!(bridge.trace_id(), root.trace_id());
    assert_eq!(
        bridge.parent_span_id(),
        None,
        "the root made with new_root is no span: the call is the trace's root"
    );
    let spans = events(&log, "dspex.python.span");
    let by_name = |n: &str| {
        spans
            .iter()
            .find(|s| s.md("name") == Some(n))
            .unwrap_or_else(|| panic!("no span {n}: {spans:?}"))
    };
    let call = by_name("python bridge_fixtures.nested");
    let retrieve = by_name("retrieve");
    let rank = by_name("rank");
    assert_eq!(
        call.md("parent_span_id"),
        Some(bridge.span_id().to_string().as_str())
    );
    assert_eq!(retrieve.md("parent_span_id"), call.md("span_id"));
    assert_eq!(rank.md("parent_span_id"), retrieve.md("span_id"));
    assert_eq!(retrieve.md("k"), Some("3"));
    assert_eq!(retrieve.md("found"), Some("6"), "set inside the block");
    // A decorated function's span, and a block that raised.
    let (score, lookup) = (by_name("score"), by_name("lookup"));
    assert_eq!(score.md("parent_span_id"), rank.md("span_id"));
    assert_eq!(lookup.md("parent_span_id"), retrieve.md("span_id"));
    assert_eq!(lookup.md("status"), Some("error"));
    assert_eq!(lookup.md("message"), Some("KeyError: 'missing'"));
    for s in [call, retrieve, rank, score] {
        assert_eq!(s.md("trace_id"), Some(root.trace_id().to_string().as_str()));
        assert_eq!(s.md("status"), Some("ok"));
        let (start, end) = (s.m("start_time").unwrap(), s.m("end_time").unwrap());
        assert!(
            before <= start && start <= end && end <= after,
            "{start}..{end} outside {before}..{after}"
        );
    }
    assert!(rank.m("duration").unwrap() >= 2_000_000);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_code_printing_to_stdout_breaks_nothing() {
    let (d, _log) = recording_dispatcher();
    let pool = pool(&d, |_| {}).await;
    assert_eq!(
        pool.call("bridge_fixtures", "chatty", vec![json!(500)])
            .await,
        Ok(json!(42))
    );
    assert_eq!(
        pool.call("bridge_fixtures", "add", vec![json!(1), json!(1)])
            .await,
        Ok(json!(2))
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_worker_is_cut_off_at_the_deadline_and_replaced() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |c| {
        c.size = 1;
        c.call_timeout = Duration::from_millis(500);
    })
    .await;
    let started = Instant::now();
    let outcome = pool.call("bridge_fixtures", "sleep", vec![json!(30)]).await;
    let took = started.elapsed();
    assert_eq!(
        outcome,
        Err(BridgeError::DeadlineExceeded(Duration::from_millis(500)))
    );
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(
        pool.call("bridge_fixtures", "add", vec![json!(1), json!(2)])
            .await,
        Ok(json!(3))
    );
    assert_eq!(
        events(&log, "dspex.pool.worker.exited")[0].md("reason"),
        Some("killed_deadline")
    );
    assert_eq!(events(&log, "dspex.pool.worker.restarted").len(), 1);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |c| {
        c.size = 1;
        c.max_queue_depth = 2;
    })
    .await;
    let busy = tokio::spawn({
        let pool = pool.clone();
        async move {
            pool.call("bridge_fixtures", "sleep", vec![json!(0.5)])
                .await
        }
    });
    until(|| pool.health().busy == 1).await;
    let queued: Vec<_> = (0..2)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.call("bridge_fixtures", "add", vec![json!(i), json!(1)])
                    .await
            })
        })
        .collect();
    until(|| pool.health().queue_depth == 2).await;
    let started = Instant::now();
    let refused = pool
        .call("bridge_fixtures", "add", vec![json!(0), json!(0)])
        .await;
    assert_eq!(refused, Err(BridgeError::QueueFull { depth: 2 }));
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "refused at once, not after the busy call"
    );
    assert_eq!(busy.await.unwrap(), Ok(json!(0.5)));
    for (i, q) in queued.into_iter().enumerate() {
        assert_eq!(q.await.unwrap(), Ok(json!(i + 1)));
    }
    let exhausted = events(&log, "dspex.pool.exhausted");
    assert_eq!(exhausted.len(), 1);
    assert_eq!(exhausted[0].m("max_queue_depth"), Some(2));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_call_fails_that_call_and_is_replaced() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |c| c.size = 1).await;
    let pid = pool
        .call("bridge_fixtures", "pid", vec![])
        .await
        .unwrap()
        .as_i64()
        .unwrap();
    let call = tokio::spawn({
        let pool = pool.clone();
        async move { pool.call("bridge_fixtures", "sleep", vec![json!(5)]).await }
    });
    until(|| pool.health().busy == 1).await;
    kill(pid);
    let outcome = call.await.unwrap();
    assert!(
        matches!(outcome, Err(BridgeError::WorkerCrashed(_))),
        "{outcome:?}"
    );
    let new_pid = pool
        .call("bridge_fixtures", "pid", vec![])
        .await
        .unwrap()
        .as_i64()
        .unwrap();
    assert_ne!(new_pid, pid);
    assert_eq!(
        events(&log, "dspex.pool.worker.exited")[0].md("reason"),
        Some("crashed")
    );
    assert_eq!(
        events(&log, "dspex.bridge.call.exception")[0].md("error"),
        Some("worker_crashed")
    );
    pool.shutdown().await;
}

fn kill(pid: i64) {
    let status = std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_calls_with_random_kills_each_end_with_exactly_one_outcome() {
    const CALLS: usize = 2_000;
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |c| {
        c.size = 3;
        c.max_queue_depth = CALLS;
    })
    .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = tokio::spawn({
        let (log, stop) = (log.clone(), stop.clone());
        async move {
            let mut kills = 0;
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(40)).await;
                let pids: Vec<i64> = events(&log, "dspex.pool.worker.spawned")
                    .iter()
                    .filter_map(|s| s.md("os_pid").and_then(|p| p.parse().ok()))
                    .collect();
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if let Some(pid) = pids.get((n >> 33) as usize % pids.len().max(1)) {
                    let _ = std::process::Command::new("kill")
                        .arg("-9")
                        .arg(pid.to_string())
                        .stderr(std::process::Stdio::null())
                        .status();
                    kills += 1;
                }
            }
            kills
        }
    });
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                (
                    i,
                    pool.call("bridge_fixtures", "add", vec![json!(i), json!(1)])
                        .await,
                )
            })
        })
        .collect();
    let (mut ok, mut crashed) = (0, 0);
    for call in calls {
        let (i, outcome) = call.await.expect("no call panicked");
        match outcome {
            Ok(v) => {
                assert_eq!(v, json!(i + 1));
                ok += 1;
            }
            Err(BridgeError::WorkerCrashed(_)) => crashed += 1,
            Err(other) => panic!("call {i}: unexpected {other:?}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let kills = killer.await.unwrap();
    assert_eq!(ok + crashed, CALLS);
    assert!(kills > 0);
    let ends = events(&log, "dspex.bridge.call.stop").len()
        + events(&log, "dspex.bridge.call.exception").len();
    assert_eq!(ends, CALLS, "one stop or exception per call");
    assert_eq!(events(&log, "dspex.bridge.call.exception").len(), crashed);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_fails_the_call_and_replaces_the_worker() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |c| c.size = 1).await;
    let outcome = pool.call("bridge_fixtures", "junk", vec![]).await;
    assert!(
        matches!(outcome, Err(BridgeError::Protocol(_))),
        "{outcome:?}"
    );
    assert_eq!(
        pool.call("bridge_fixtures", "add", vec![json!(2), json!(2)])
            .await,
        Ok(json!(4))
    );
    assert_eq!(
        events(&log, "dspex.pool.worker.exited")[0].md("reason"),
        Some("protocol_error")
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_calls_finish_then_refuses() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |c| c.size = 1).await;
    let in_flight = tokio::spawn({
        let pool = pool.clone();
        async move {
            pool.call("bridge_fixtures", "sleep", vec![json!(0.3)])
                .await
        }
    });
    until(|| pool.health().busy == 1).await;
    pool.shutdown().await;
    assert_eq!(in_flight.await.unwrap(), Ok(json!(0.3)));
    assert_eq!(
        pool.call("bridge_fixtures", "add", vec![json!(1), json!(1)])
            .await,
        Err(BridgeError::ShutDown)
    );
    assert_eq!(
        events(&log, "dspex.pool.worker.exited")[0].md("reason"),
        Some("shutdown")
    );
    assert!(events(&log, "dspex.pool.worker.restarted").is_empty());
}

#[tokio::test]
async fn bad_configuration_fails_at_start_naming_the_key() {
    let err = Pool::start(PoolConfig {
        size: 0,
        ..PoolConfig::default()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(err, StartError::Config { key: "size", .. }),
        "{err}"
    );
    let err = Pool::start(PoolConfig {
        python: "no-such-python-here".into(),
        ..PoolConfig::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, StartError::Spawn { .. }), "{err}");
    // A frame's length is sent in 4 bytes: no cap above u32::MAX, none below 1 KiB.
    for max_frame_bytes in [1023, (u64::from(u32::MAX) + 1) as usize] {
        let err = Pool::start(PoolConfig {
            max_frame_bytes,
            ..PoolConfig::default()
        })
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                StartError::Config {
                    key: "max_frame_bytes",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "invalid `max_frame_bytes`: must be between 1024 and 4294967295 (u32::MAX)"
        );
    }
    let _ = catalog::POOL_HEALTH;
    let _: Value = json!(null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_objects_keep_state_in_their_worker_and_are_lost_with_it() {
    let (d, log) = recording_dispatcher();
    let pool = pool(&d, |c| c.size = 2).await;
    let predictor = pool
        .create_instance(
            "bridge_fixtures",
            "Predictor",
            vec![json!("question -> answer")],
        )
        .await
        .unwrap();
    assert_eq!(predictor.class(), "bridge_fixtures.Predictor");
    let mut pids = Vec::new();
    for n in 1..=5 {
        let out = pool
            .call_method(&predictor, "forward", vec![json!("why")])
            .await
            .unwrap();
        assert_eq!(out["calls"], json!(n), "state kept between calls");
        pids.push(out["pid"].as_i64().unwrap());
    }
    pids.dedup();
    assert_eq!(
        pids.len(),
        1,
        "every call ran in the worker holding the object"
    );
    let starts = events(&log, "dspex.bridge.call.start");
    assert!(
        starts.iter().any(
            |s| s.md("operation") == Some("call_method") && s.md("function") == Some("forward")
        )
    );

    kill(pids[0]);
    until(|| events(&log, "dspex.pool.worker.restarted").len() == 1).await;
    assert_eq!(
        pool.call_method(&predictor, "forward", vec![json!("why")])
            .await,
        Err(BridgeError::InstanceLost)
    );
    assert_eq!(pool.drop_instance(&predictor).await, Ok(false));

    let fresh = pool
        .create_instance("bridge_fixtures", "Predictor", vec![json!("s")])
        .await
        .unwrap();
    assert_eq!(
        pool.call_method(&fresh, "forward", vec![json!("q")])
            .await
            .unwrap()["calls"],
        json!(1)
    );
    assert_eq!(pool.drop_instance(&fresh).await, Ok(true));
    pool.shutdown().await;
}

/// Python spans are timed and sent back only while someone listens for them; the trace always
/// travels, and user code sees it either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_spans_are_collected_only_while_someone_listens() {
    let d = Dispatcher::new();
    d.attach(
        "stop",
        dspex_telemetry_core::catalog::BRIDGE_CALL.stop().clone(),
        |_: &Event<'_>| {},
    )
    .unwrap();
    let pool = pool(&d, |_| {}).await;
    let root = TraceContext::new_root();
    let seen = pool
        .call("bridge_fixtures", "collecting", vec![])
        .with_trace_context(root.clone())
        .await
        .unwrap();
    assert_eq!(seen["collecting"], json!(false));
    assert_eq!(
        seen["trace"]["trace_id"],
        json!(root.trace_id().to_string())
    );
    assert_eq!(seen["trace"]["span_id"].as_str().map(str::len), Some(16));
    assert_eq!(
        pool.call("bridge_fixtures", "nested", vec![json!(1)])
            .with_trace_context(root.clone())
            .await
            .unwrap(),
        json!("done"),
        "dspex_span works without collection"
    );

    let spans = Arc::new(Mutex::new(0usize));
    let sink = spans.clone();
    d.attach(
        "spans",
        dspex_telemetry_core::catalog::PYTHON_SPAN.clone(),
        move |_: &Event<'_>| *sink.lock().unwrap() += 1,
    )
    .unwrap();
    let seen = pool
        .call("bridge_fixtures", "collecting", vec![])
        .with_trace_context(root.clone())
        .await
        .unwrap();
    assert_eq!(seen["collecting"], json!(true));
    pool.call("bridge_fixtures", "nested", vec![json!(1)])
        .with_trace_context(root)
        .await
        .unwrap();
    // The two calls' own spans and the four blocks `nested` timed.
    assert_eq!(*spans.lock().unwrap(), 6);
    pool.shutdown().await;
}

/// Drives the worker script directly with raw request frames (trace header, newline, JSON).
#[test]
fn the_worker_answers_a_bad_request_frame_with_a_protocol_error_and_keeps_serving() {
    use std::io::{Read, Write};
    let mut child = std::process::Command::new("python3")
        .args(["-u", "-c", dspex_telemetry_bridge::WORKER_SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 must be installed");
    let (mut input, mut output) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let mut read_reply = move || -> Value {
        let mut len = [0u8; 4];
        output.read_exact(&mut len).unwrap();
        let mut reply = vec![0; u32::from_be_bytes(len) as usize];
        output.read_exact(&mut reply).unwrap();
        serde_json::from_slice(&reply).unwrap()
    };
    let ready = read_reply();
    let mut exchange = |body: &[u8]| -> Value {
        input.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
        input.write_all(body).unwrap();
        input.flush().unwrap();
        read_reply()
    };
    assert_eq!(ready["ready"], json!(true));
    let ping = br#"{"op": "ping", "id": 7}"#;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    // A header that is not ASCII, and a frame with no newline: errors, not crashes.
    for bad in [[&b"\xff\xfe\n"[..], ping].concat(), ping.to_vec()] {
        let reply = exchange(&bad);
        assert_eq!(reply["ok"], json!(false), "{reply}");
        assert_eq!(reply["error"]["type"], json!("ProtocolError"), "{reply}");
    }
    // A good one is served, with the trace the header carried.
    let header = format!("{traceparent} 1234567890abcdef  ");
    let reply = exchange(&[header.as_bytes(), b"\n", ping].concat());
    assert_eq!(
        (reply["ok"].clone(), reply["id"].clone()),
        (json!(true), json!(7))
    );
    assert_eq!(
        reply["trace_seen"]["trace_id"],
        json!("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(reply["trace_seen"]["span_id"], json!("1234567890abcdef"));
    // Without a header: no trace.
    let reply = exchange(&[b"\n", &ping[..]].concat());
    assert_eq!(reply["trace_seen"]["trace_id"], Value::Null);
    drop(input);
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_args_text_is_left_out_when_no_handler_reads_it() {
    use dspex_telemetry_core::{Attachment, Reads, catalog};
    let d = Dispatcher::new();
    let seen: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let keys = |sink: Arc<Mutex<Vec<Vec<String>>>>| {
        move |e: &Event<'_>| {
            let keys = e.metadata().iter().map(|(k, _)| k.to_owned()).collect();
            sink.lock().unwrap().push(keys);
        }
    };
    // A handler that reads labels only, as the metrics handler declares.
    d.attach_all([Attachment::new(
        "labels",
        catalog::BRIDGE_CALL.stop().clone(),
        keys(seen.clone()),
    )
    .reading(Reads::Only(vec!["module", "function"]))])
        .unwrap();
    let p = pool(&d, |_| {}).await;
    assert_eq!(
        p.call("builtins", "abs", vec![json!(-3)]).await.unwrap(),
        json!(3)
    );
    // Another that reads everything: the text is back.
    d.attach(
        "all",
        catalog::BRIDGE_CALL.stop().clone(),
        keys(seen.clone()),
    )
    .unwrap();
    assert_eq!(
        p.call("builtins", "abs", vec![json!(-4)]).await.unwrap(),
        json!(4)
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(!seen[0].contains(&"args".to_owned()), "{seen:?}");
    assert!(seen[0].contains(&"module".to_owned()));
    assert!(
        seen[1..].iter().all(|k| k.contains(&"args".to_owned())),
        "{seen:?}"
    );
    p.shutdown().await;
}
