//! Tools registered in Python, sessions, and the validate → call → cast flow, with their events.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dspex_telemetry_bridge::{
    BridgeError, Pool, PoolConfig, SessionError, Sessions, Signature, StartError, ToolCall,
};
use dspex_telemetry_core::{Dispatcher, Event, EventName, TraceContext, WithTraceContext, context};
use serde_json::{Map, json};

type Log = Arc<
    Mutex<
        Vec<(
            String,
            Vec<(String, String)>,
            Vec<(String, i64)>,
            Option<TraceContext>,
        )>,
    >,
>;

fn recording() -> (Dispatcher, Log) {
    let d = Dispatcher::new();
    let log: Log = Arc::default();
    let sink = log.clone();
    d.attach_prefix(
        "rec",
        EventName::from_static(&["dspex"]),
        move |e: &Event<'_>| {
            sink.lock().unwrap().push((
                e.name().to_string(),
                e.metadata()
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_string()))
                    .collect(),
                e.measurements()
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.as_i64().unwrap_or(0)))
                    .collect(),
                context::current(),
            ))
        },
    )
    .unwrap();
    (d, log)
}

fn md(log: &Log, event: &str) -> Vec<Vec<(String, String)>> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|e| e.0 == event)
        .map(|e| e.1.clone())
        .collect()
}

fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

async fn pool(d: &Dispatcher) -> Pool {
    Pool::start(PoolConfig {
        python_path: vec![
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests")
                .join("python"),
        ],
        preload: vec!["bridge_tools".into()],
        dispatcher: d.clone(),
        health_interval: None,
        size: 1,
        ..PoolConfig::default()
    })
    .await
    .expect("python3 must be installed for the bridge tests")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_run_by_name_and_time_out_with_kind_timeout() {
    let (d, log) = recording();
    let pool = pool(&d).await;
    let call = ToolCall {
        session_id: Some("s-1"),
        caller: Some("agent"),
        timeout: None,
    };
    assert_eq!(
        pool.execute_tool("web_search", vec![json!("rust")], call.clone())
            .await,
        Ok(json!(["result for rust"]))
    );
    let unknown = pool
        .execute_tool("nope", vec![], call.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, BridgeError::Python { ref kind, .. } if kind == "LookupError"),
        "{unknown:?}"
    );
    let late = pool
        .execute_tool(
            "slow",
            vec![json!(10)],
            ToolCall {
                timeout: Some(Duration::from_millis(300)),
                ..call
            },
        )
        .await;
    assert_eq!(
        late,
        Err(BridgeError::DeadlineExceeded(Duration::from_millis(300)))
    );
    let stops = md(&log, "dspex.tools.execute.stop");
    assert_eq!(get(&stops[0], "tool_name"), Some("web_search"));
    assert_eq!(get(&stops[0], "session_id"), Some("s-1"));
    assert_eq!(get(&stops[0], "caller"), Some("agent"));
    assert_eq!(get(&stops[0], "result_type"), Some("list"));
    let exceptions = md(&log, "dspex.tools.execute.exception");
    assert_eq!(
        exceptions
            .iter()
            .map(|m| get(m, "kind").unwrap())
            .collect::<Vec<_>>(),
        ["error", "timeout"]
    );
    pool.shutdown().await;
}

#[tokio::test]
async fn a_preload_that_fails_to_import_fails_the_start() {
    let err = Pool::start(PoolConfig {
        preload: vec!["no_such_tools_module".into()],
        health_interval: None,
        ..PoolConfig::default()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StartError::Spawn { reason, .. } if reason.contains("no_such_tools_module")),
        "{err}"
    );
}

#[test]
fn sessions_emit_their_lifecycle_and_variable_events() {
    let (d, log) = recording();
    let sessions = Sessions::new(d, Duration::from_millis(50));
    let id = sessions.create();
    sessions.set(&id, "history", json!(["q1", "q2"])).unwrap();
    assert_eq!(
        sessions.get(&id, "history").unwrap(),
        Some(json!(["q1", "q2"]))
    );
    assert_eq!(sessions.get(&id, "missing").unwrap(), None);
    assert_eq!(
        sessions.set("nope", "x", json!(1)),
        Err(SessionError::NotFound("nope".into()))
    );
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(sessions.sweep(), 1);
    assert!(sessions.is_empty());
    let log = log.lock().unwrap();
    let names: Vec<&str> = log.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "dspex.session.created",
            "dspex.session.variable.set",
            "dspex.session.variable.get",
            "dspex.session.variable.get",
            "dspex.session.expired"
        ]
    );
    assert_eq!(get(&log[1].1, "var_type"), Some("list"));
    assert_eq!(log[1].2, [("size".to_owned(), 11)]);
    assert_eq!(get(&log[2].1, "found"), Some("true"));
    assert_eq!(get(&log[3].1, "found"), Some("false"));
    assert_eq!(get(&log[4].1, "reason"), Some("ttl"));
    let expired = &log[4].2;
    assert!(expired.iter().any(|(k, v)| k == "operations" && *v == 3));
    assert!(expired.iter().any(|(k, v)| k == "lifetime_ms" && *v >= 50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_validates_calls_and_casts_in_one_trace() {
    let (d, log) = recording();
    let pool = pool(&d).await;
    let sig = Signature::parse("question: str -> answer: str, confidence: float").unwrap();
    let mut inputs = Map::new();
    inputs.insert("question".into(), json!("What is telemetry?"));
    let root = TraceContext::new_root();
    let out = pool
        .predict(&sig, "bridge_tools", "predict", inputs.clone())
        .with_trace_context(root.clone())
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"answer": "A: What is telemetry?", "confidence": 0.9})
    );
    {
        let log = log.lock().unwrap();
        let names: Vec<&str> = log
            .iter()
            .map(|e| e.0.as_str())
            .filter(|n| !n.starts_with("dspex.pool"))
            .collect();
        assert_eq!(
            names,
            [
                "dspex.contract.validate.start",
                "dspex.contract.validate.stop",
                "dspex.bridge.call.start",
                "dspex.python.span",
                "dspex.bridge.call.stop",
                "dspex.types.cast.start",
                "dspex.types.cast.stop",
                "dspex.types.cast.start",
                "dspex.types.cast.stop",
            ]
        );
        // Every event of the request, the pool's queue events included, is in the caller's trace
        // (the workers' own lifecycle events, from the pool's start, are not a request's).
        let outside: Vec<&str> = log
            .iter()
            .filter(|e| !e.0.starts_with("dspex.pool.worker"))
            .filter(|e| e.3.as_ref().is_none_or(|c| c.trace_id() != root.trace_id()))
            .map(|e| e.0.as_str())
            .collect();
        assert!(outside.is_empty(), "outside the trace: {outside:?}");
        assert!(log.iter().any(|e| e.0 == "dspex.pool.request.dispatched"));
    }
    let missing = pool
        .predict(&sig, "bridge_tools", "predict", Map::new())
        .await
        .unwrap_err();
    assert_eq!(
        missing,
        BridgeError::Contract(vec!["missing input `question`".into()])
    );
    let uncastable = pool
        .predict(&sig, "bridge_tools", "predict_without_answer", inputs)
        .await
        .unwrap_err();
    assert!(
        matches!(uncastable, BridgeError::Cast { ref field, .. } if field == "answer"),
        "{uncastable:?}"
    );
    let validate = md(&log, "dspex.contract.validate.exception");
    assert_eq!(get(&validate[0], "violations"), Some("1"));
    pool.shutdown().await;
}
