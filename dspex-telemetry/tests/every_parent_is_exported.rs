//! What reaches a real OTLP decoder has no missing parents: in every trace, each span's parent
//! is a span of that trace, or the remote caller's. Traces started with `start_trace()`,
//! requests through the tower layer (with a caller's `traceparent` and `tracestate`, and
//! without), a future run in a new trace (whose root is no span, or, the quickstart's way, a
//! span), each across the bridge into Python's spans.

#[path = "../../dspex-telemetry-exporters/tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::PathBuf;

use dspex_telemetry::bridge::{Pool, PoolConfig};
use dspex_telemetry::core::http::CorrelationLayer;
use dspex_telemetry::core::{
    CorrelationId, Dispatcher, TraceContext, WithTraceContext, catalog, context, metadata,
    with_span,
};
use dspex_telemetry::{Config, Telemetry};
use serde_json::{Value, json};
use support::OtlpReceiver;
use tower::{Layer, ServiceExt, service_fn};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

async fn bridge_call(pool: &Pool) {
    let done = pool
        .call("bridge_fixtures", "nested", vec![json!(2)])
        .in_current_trace()
        .await
        .expect("the call succeeds");
    assert_eq!(done, json!("done"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_parent_is_a_span_of_its_trace_or_the_remote_callers() {
    let receiver = OtlpReceiver::start().await;
    let config = Config::from_toml(&format!(
        "[reporter]\nreporting_interval = 60000\n\
         [[reporter.backends]]\ntype = \"opentelemetry\"\nendpoint = \"http://{}\"\n",
        receiver.addr
    ))
    .expect("config");
    let d = Dispatcher::global();
    let telemetry = Telemetry::start(&config, d)
        .await
        .expect("the stack starts");
    let pool = Pool::start(PoolConfig {
        size: 1,
        python_path: vec![
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../dspex-telemetry-bridge/tests/python"),
        ],
        dispatcher: d.clone(),
        health_interval: None,
        ..PoolConfig::default()
    })
    .await
    .expect("a worker starts");

    // 1. start_trace(): its root is a span.
    let started = {
        let _trace = context::start_trace();
        let root = context::current().unwrap();
        with_span("checkout", || {
            d.span(&catalog::CONTRACT_VALIDATE, metadata! {}, || {
                ((), metadata! {})
            })
        });
        bridge_call(&pool).await;
        root.trace_id().to_string()
    };

    // 2. The tower layer: each request is a server span, under the caller's span or a root.
    let service = CorrelationLayer::new().layer(service_fn({
        let pool = pool.clone();
        move |_request: http::Request<()>| {
            let pool = pool.clone();
            async move {
                with_span("handler.work", || ());
                bridge_call(&pool).await;
                Ok::<_, Infallible>(http::Response::new(()))
            }
        }
    }));
    let from_caller = http::Request::builder()
        .uri("/answer")
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .header("tracestate", "vendor=opaque,other=2")
        .body(())
        .unwrap();
    service.clone().oneshot(from_caller).await.unwrap();
    let fresh = http::Request::builder().uri("/answer").body(()).unwrap();
    service.oneshot(fresh).await.unwrap();

    // 3. A future run in a new trace whose root is no span: its first span is the root.
    let quick = TraceContext::new_root_with_correlation(CorrelationId::parse("order-5").unwrap());
    let quick_trace = quick.trace_id().to_string();
    d.span_async(&catalog::TOOLS_EXECUTE, metadata! {}, async {
        bridge_call(&pool).await;
        ((), metadata! {})
    })
    .with_trace_context(quick)
    .await;

    // 4. The quickstart's way: a future in a new trace whose root is a span.
    let rooted = async {
        bridge_call(&pool).await;
        context::current().unwrap().trace_id().to_string()
    }
    .in_new_trace(Some(CorrelationId::parse("order-6").unwrap()))
    .await;

    telemetry.flush_spans().await;
    let spans = receiver.spans().await;
    pool.shutdown().await;
    telemetry.shutdown().await;

    let mut traces: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for span in &spans {
        traces
            .entry(span["trace_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(span);
    }
    assert_eq!(traces.len(), 5, "five traces: {spans:#?}");
    for (trace, spans) in &traces {
        let ids: BTreeSet<&str> = spans
            .iter()
            .map(|s| s["span_id"].as_str().unwrap())
            .collect();
        for span in spans {
            let parent = span["parent_span_id"].as_str().unwrap();
            assert!(
                parent.is_empty()
                    || ids.contains(parent)
                    || (trace == CALLER_TRACE && parent == CALLER_SPAN),
                "{} in trace {trace} names parent {parent}, which is not exported: {spans:#?}",
                span["name"]
            );
        }
        // Every trace went through the bridge into Python's spans.
        for name in ["dspex.bridge.call", "retrieve", "rank", "lookup"] {
            assert!(
                spans.iter().any(|s| s["name"] == name),
                "no {name} in trace {trace}"
            );
        }
    }
    let roots = |trace: &str| -> Vec<String> {
        traces[trace]
            .iter()
            .filter(|s| s["parent_span_id"] == "")
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        roots(&started),
        ["dspex.trace"],
        "start_trace's root is a span"
    );
    assert_eq!(
        roots(&quick_trace),
        ["dspex.tools.execute"],
        "the first span is the root"
    );
    assert_eq!(
        roots(&rooted),
        ["dspex.trace"],
        "in_new_trace's root is a span"
    );

    // The caller's request: one server span, the caller's child, with the tracestate kept.
    let caller = &traces[CALLER_TRACE];
    let server: Vec<_> = caller
        .iter()
        .filter(|s| s["parent_span_id"] == CALLER_SPAN)
        .collect();
    assert_eq!(server.len(), 1, "{caller:#?}");
    assert_eq!(server[0]["name"], "GET");
    assert_eq!(server[0]["kind"], 2, "SPAN_KIND_SERVER");
    assert_eq!(server[0]["attributes"]["http.response.status_code"], 200);
    assert_eq!(server[0]["attributes"]["url.path"], "/answer");
    assert!(
        caller
            .iter()
            .all(|s| s["trace_state"] == "vendor=opaque,other=2"),
        "{caller:#?}"
    );
    // The request without a caller: its server span is the trace's root.
    let fresh = traces
        .keys()
        .find(|t| {
            ![
                started.as_str(),
                quick_trace.as_str(),
                rooted.as_str(),
                CALLER_TRACE,
            ]
            .contains(&t.as_str())
        })
        .unwrap();
    assert_eq!(roots(fresh), ["GET"]);
}
