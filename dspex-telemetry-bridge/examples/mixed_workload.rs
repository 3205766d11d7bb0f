//! A small mixed workload against real Python workers, then what the events said.
//!
//! Run: `cargo run -p dspex-telemetry-bridge --example mixed_workload`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dspex_telemetry_bridge::{Pool, PoolConfig, Sessions, Signature, ToolCall};
use dspex_telemetry_core::{
    CorrelationId, Dispatcher, Event, EventName, TraceContext, WithTraceContext,
};
use serde_json::{Map, json};

#[derive(Default)]
struct Tally {
    events: BTreeMap<String, u64>,
    durations_ms: BTreeMap<String, Vec<f64>>,
    exceptions: BTreeMap<String, u64>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dispatcher = Dispatcher::new();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let sink = tally.clone();
    dispatcher.attach_prefix(
        "tally",
        EventName::from_static(&["dspex"]),
        move |e: &Event<'_>| {
            let mut t = sink.lock().unwrap_or_else(|p| p.into_inner());
            let name = e.name().to_string();
            *t.events.entry(name.clone()).or_default() += 1;
            if let Some(d) = e.measurements().get("duration") {
                t.durations_ms
                    .entry(name.clone())
                    .or_default()
                    .push(d.as_f64() / 1e6);
            }
            if name.ends_with(".exception") {
                let kind = e
                    .metadata()
                    .get("kind")
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                *t.exceptions
                    .entry(format!("{name} kind={kind}"))
                    .or_default() += 1;
            }
        },
    )?;

    let pool = Pool::start(PoolConfig {
        size: 2,
        python_path: vec![
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("examples")
                .join("python"),
        ],
        preload: vec!["workload".into()],
        dispatcher: dispatcher.clone(),
        health_interval: Some(Duration::from_millis(200)),
        ..PoolConfig::default()
    })
    .await?;
    let sessions = Arc::new(Sessions::new(dispatcher.clone(), Duration::from_secs(60)));
    let signature = Signature::parse("question: str -> answer: str, confidence: float")?;

    let users: Vec<_> = (0..8)
        .map(|user| {
            let (pool, sessions, signature) = (pool.clone(), sessions.clone(), signature.clone());
            async move {
                let session = sessions.create();
                let correlation = CorrelationId::parse(&format!("user-{user}-request"))?;
                let trace = TraceContext::new_root_with_correlation(correlation.clone());
                let work = async {
                    for round in 0..5 {
                        let mut inputs = Map::new();
                        inputs.insert(
                            "question".into(),
                            json!(format!("question {round} from user {user}")),
                        );
                        let answer = pool
                            .predict(&signature, "workload", "predict", inputs)
                            .await?;
                        assert_eq!(
                            answer["correlation_id"],
                            json!(correlation.as_str()),
                            "the id reached Python"
                        );
                        sessions.set(&session, "last_answer", answer["answer"].clone())?;
                        let call = ToolCall {
                            session_id: Some(&session),
                            caller: Some("agent"),
                            timeout: None,
                        };
                        pool.execute_tool(
                            "calculator",
                            vec![json!(format!("{round} * 3"))],
                            call.clone(),
                        )
                        .await?;
                        let _ = pool
                            .execute_tool("flaky_search", vec![json!("telemetry")], call.clone())
                            .await;
                        sessions.get(&session, "last_answer")?;
                    }
                    let slow = ToolCall {
                        timeout: Some(Duration::from_millis(50)),
                        ..Default::default()
                    };
                    let _ = pool.execute_tool("slow_tool", vec![json!(1)], slow).await;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                };
                work.with_trace_context(trace).await?;
                sessions.expire(&session, "closed")?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            }
        })
        .map(tokio::spawn)
        .collect();
    for user in users {
        if let Err(e) = user.await? {
            eprintln!("a user's run failed: {e}");
        }
    }
    pool.shutdown().await;

    let t = tally.lock().unwrap_or_else(|p| p.into_inner());
    println!(
        "{:<36} {:>6} {:>9} {:>9}",
        "event", "count", "p50 ms", "max ms"
    );
    for (name, count) in &t.events {
        let (p50, max) = match t.durations_ms.get(name) {
            Some(d) if !d.is_empty() => {
                let mut d = d.clone();
                d.sort_by(f64::total_cmp);
                (
                    format!("{:.2}", d[(d.len() - 1) / 2]),
                    format!("{:.2}", d[d.len() - 1]),
                )
            }
            _ => ("-".into(), "-".into()),
        };
        println!("{name:<36} {count:>6} {p50:>9} {max:>9}");
    }
    println!();
    for (what, n) in &t.exceptions {
        println!("{n:>4} × {what}");
    }
    Ok(())
}
