//! Spans reach a real OTLP decoder (the official Python protobuf classes, over HTTP and over
//! gRPC with `grpcio`): a bridge call with a Python child span arrives with the same trace id,
//! correct parent links, the correlation id as an attribute, and error status on failures; a
//! receiver that is down costs counted drops, and delivery resumes when it is back.

mod support;

use dspex_telemetry_bridge::{Pool, PoolConfig};
use dspex_telemetry_core::{CorrelationId, Dispatcher, TraceContext, WithTraceContext};
use dspex_telemetry_exporters::Secret;
use dspex_telemetry_exporters::otlp::{OtlpConfig, OtlpTraces, Protocol};
use serde_json::{Value, json};
use support::OtlpReceiver;

fn config(receiver: &OtlpReceiver) -> OtlpConfig {
    OtlpConfig {
        endpoint: Some(format!("http://{}", receiver.addr).into()),
        headers: vec![("x-api-key".into(), Secret::new("k-123"))],
        service_name: Some("dspex-test".into()),
        service_version: Some("1.2.3".into()),
        ..OtlpConfig::default()
    }
}

fn by_name<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_call_and_its_python_spans_arrive_as_one_trace_over_http() {
    a_bridge_call_and_its_python_spans_arrive_as_one_trace(Protocol::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_call_and_its_python_spans_arrive_as_one_trace_over_grpc() {
    a_bridge_call_and_its_python_spans_arrive_as_one_trace(Protocol::Grpc).await;
}

async fn a_bridge_call_and_its_python_spans_arrive_as_one_trace(protocol: Protocol) {
    let receiver = OtlpReceiver::start().await;
    let d = Dispatcher::new();
    let endpoint = match protocol {
        Protocol::HttpProtobuf => receiver.addr,
        Protocol::Grpc => receiver.grpc,
    };
    let traces = OtlpTraces::start(
        OtlpConfig {
            endpoint: Some(format!("http://{endpoint}").into()),
            protocol: Some(protocol),
            ..config(&receiver)
        },
        &d,
        "otlp",
    )
    .unwrap();
    let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../dspex-telemetry-bridge/tests/python");
    let pool = Pool::start(PoolConfig {
        python_path: vec![fixtures],
        dispatcher: d.clone(),
        health_interval: None,
        ..PoolConfig::default()
    })
    .await
    .expect("python3 must be installed");
    let root =
        TraceContext::new_root().with_correlation_id(CorrelationId::parse("order-77").unwrap());
    let answer = pool
        .call("bridge_fixtures", "nested", vec![json!(3)])
        .with_trace_context(root.clone())
        .await
        .unwrap();
    assert_eq!(answer, json!("done"));
    let failed = pool
        .call("bridge_fixtures", "fail", vec![json!("boom")])
        .with_trace_context(root.clone())
        .await;
    assert!(failed.is_err());
    traces.flush().await;
    let spans = receiver.spans().await;

    let trace_id = root.trace_id().to_string();
    let calls: Vec<&Value> = spans
        .iter()
        .filter(|s| s["name"] == "dspex.bridge.call")
        .collect();
    assert_eq!(calls.len(), 2, "{spans:#?}");
    let call = calls
        .iter()
        .find(|s| s["attributes"]["dspex.function"] == "nested")
        .unwrap();
    assert_eq!(call["trace_id"], json!(trace_id));
    assert_eq!(
        call["parent_span_id"],
        json!(""),
        "the root made with new_root is no span: the call is the trace's root"
    );
    assert_eq!(call["kind"], json!(3), "a bridge call is a client span");
    assert_eq!(
        call["attributes"]["dspex.correlation_id"],
        json!("order-77")
    );
    assert_eq!(call["status_code"], json!(0));
    let python = by_name(&spans, "python bridge_fixtures.nested");
    let retrieve = by_name(&spans, "retrieve");
    let rank = by_name(&spans, "rank");
    assert_eq!(python["parent_span_id"], call["span_id"]);
    assert_eq!(retrieve["parent_span_id"], python["span_id"]);
    assert_eq!(rank["parent_span_id"], retrieve["span_id"]);
    for s in [python, retrieve, rank] {
        assert_eq!(s["trace_id"], json!(trace_id));
        assert_eq!(s["attributes"]["dspex.correlation_id"], json!("order-77"));
        let (start, end) = (s["start"].as_u64().unwrap(), s["end"].as_u64().unwrap());
        assert!(start <= end);
        assert!(
            call["start"].as_u64().unwrap() <= start
                && end <= call["end"].as_u64().unwrap() + 1_000_000,
            "{s} lies within its bridge call {call}"
        );
    }
    assert_eq!(
        retrieve["attributes"]["dspex.k"],
        json!(3),
        "attribute types are kept"
    );
    let fail = calls
        .iter()
        .find(|s| s["attributes"]["dspex.function"] == "fail")
        .unwrap();
    assert_eq!(
        fail["status_code"],
        json!(2),
        "a failed call is an error span"
    );
    assert_eq!(fail["attributes"]["error.type"], json!("error"));
    assert_eq!(
        call["attributes"]["code.namespace"],
        json!("bridge_fixtures")
    );
    assert_eq!(call["attributes"]["code.function"], json!("nested"));
    assert!(
        fail["status_message"].as_str().unwrap().contains("boom"),
        "{fail}"
    );
    assert_eq!(call["resource"]["service.name"], json!("dspex-test"));
    assert_eq!(call["resource"]["service.version"], json!("1.2.3"));
    assert_eq!(call["headers"]["x-api-key"], json!("k-123"));
    assert!(
        !format!("{:?}", config(&receiver)).contains("k-123"),
        "the header value is a secret"
    );
    let transport = match protocol {
        Protocol::HttpProtobuf => "http",
        Protocol::Grpc => "grpc",
    };
    assert!(spans.iter().all(|s| s["transport"] == transport));
    let stats = traces.stats();
    assert_eq!(stats.exported, spans.len() as u64);
    assert_eq!((stats.dropped, stats.failed_requests), (0, 0));
    traces.shutdown().await;
    pool.shutdown().await;
}

/// The spans of the service and of two workers (three resources) interleave in the queue;
/// they still leave in few requests: one per resource per round, not one per run of spans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_resources_are_batched_one_request_per_resource() {
    let receiver = OtlpReceiver::start().await;
    let d = Dispatcher::new();
    let traces = OtlpTraces::start(config(&receiver), &d, "otlp").unwrap();
    let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../dspex-telemetry-bridge/tests/python");
    let pool = Pool::start(PoolConfig {
        size: 2,
        python_path: vec![fixtures],
        dispatcher: d.clone(),
        health_interval: None,
        ..PoolConfig::default()
    })
    .await
    .expect("python3 must be installed");
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.call("bridge_fixtures", "nested", vec![json!(2)])
                    .with_trace_context(TraceContext::new_root())
                    .await
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), json!("done"));
    }
    traces.flush().await;
    let spans = receiver.spans().await;
    let workers: std::collections::BTreeSet<String> = spans
        .iter()
        .filter(|s| s["name"] == "python bridge_fixtures.nested")
        .map(|s| s["resource"]["process.pid"].to_string())
        .collect();
    assert_eq!(workers.len(), 2, "both workers served: {workers:?}");
    let mut per_trace = std::collections::BTreeMap::<String, usize>::new();
    for s in &spans {
        *per_trace.entry(s["trace_id"].to_string()).or_default() += 1;
    }
    assert_eq!(per_trace.len(), 100, "every call's trace arrived");
    assert!(
        per_trace
            .values()
            .all(|&n| n == spans.len() / 100 && n >= 4),
        "the call span and its Python spans, alike for every call: {per_trace:?}"
    );
    let requests = receiver.attempts().await.len();
    assert!(
        requests <= 3 * 2,
        "{requests} requests for {} spans of three resources",
        spans.len()
    );
    traces.shutdown().await;
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_costs_counted_drops_and_delivery_resumes() {
    let receiver = OtlpReceiver::start().await;
    let port = receiver.addr.port();
    let config = config(&receiver);
    drop(receiver);
    let d = Dispatcher::new();
    let traces = OtlpTraces::start(
        OtlpConfig {
            max_queue: 100,
            timeout: Some(std::time::Duration::from_secs(2)),
            ..config
        },
        &d,
        "otlp",
    )
    .unwrap();
    // Down: 500 spans at once; the queue holds 100 (more are dropped at once), and the
    // requests for those fail.
    for i in 0..500 {
        with_span_on(&d, &format!("work-{i}"));
    }
    traces.flush().await;
    let stats = traces.stats();
    assert_eq!(stats.exported, 0);
    assert!(stats.failed_requests >= 1, "{stats:?}");
    assert_eq!(stats.dropped, 500, "{stats:?}");

    let receiver = OtlpReceiver::start_on(port).await;
    with_span_on(&d, "after");
    traces.flush().await;
    let spans = receiver.spans().await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0]["name"], json!("after"));
    traces.shutdown().await;
}

/// A user's own span: the event `with_span` emits on the global dispatcher, emitted on `d`.
fn with_span_on(d: &Dispatcher, name: &str) {
    d.span(
        &dspex_telemetry_core::catalog::TRACE_SPAN,
        dspex_telemetry_core::Metadata::new().with("name", name.to_owned()),
        || ((), dspex_telemetry_core::Metadata::new()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_travel_over_grpc_too() {
    let receiver = OtlpReceiver::start().await;
    let d = Dispatcher::new();
    let traces = OtlpTraces::start(
        OtlpConfig {
            endpoint: Some(format!("http://{}", receiver.grpc).into()),
            protocol: Some(Protocol::Grpc),
            ..config(&receiver)
        },
        &d,
        "otlp",
    )
    .unwrap();
    let root = TraceContext::new_root();
    root.in_scope(|| {
        d.span(
            &dspex_telemetry_core::catalog::TRACE_SPAN,
            dspex_telemetry_core::metadata! { "name" => "grpc-outer" },
            || {
                dspex_telemetry_core::context::set_attributes([
                    ("business.data_size", 512.into()),
                    ("business.user_tier", "gold".into()),
                ]);
                ((), dspex_telemetry_core::Metadata::new())
            },
        );
        d.span(
            &dspex_telemetry_core::catalog::TOOLS_EXECUTE,
            dspex_telemetry_core::metadata! { "tool_name" => "search" },
            || ((), dspex_telemetry_core::Metadata::new()),
        );
    });
    traces.flush().await;
    let spans = receiver.spans().await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    for s in &spans {
        assert_eq!(s["transport"], json!("grpc"));
        assert_eq!(s["trace_id"], json!(root.trace_id().to_string()));
        assert_eq!(s["parent_span_id"], json!(""), "the root is no span");
        assert_eq!(s["headers"]["x-api-key"], json!("k-123"));
    }
    let outer = by_name(&spans, "grpc-outer");
    assert_eq!(outer["attributes"]["business.data_size"], json!(512));
    assert_eq!(outer["attributes"]["business.user_tier"], json!("gold"));
    let tool = by_name(&spans, "dspex.tools.execute");
    assert!(
        tool["attributes"].get("business.data_size").is_none(),
        "attributes stay on their span"
    );
    assert_eq!(tool["attributes"]["dspex.tool_name"], json!("search"));
    assert_eq!(
        tool["attributes"]["dspex.correlation_id"],
        json!(root.trace_id().to_string()),
        "without a correlation id given, the trace id is the correlation id"
    );
    assert_eq!(traces.stats().exported, 2);
    traces.shutdown().await;
}

/// Our exporter, configured as the stack configures it, added to a service's own
/// `SdkTracerProvider` (its batch processor on a thread of its own): the service's spans reach
/// the decoder with the configured headers and resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_exporter_in_a_services_own_provider_delivers_its_spans() {
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    let receiver = OtlpReceiver::start().await;
    for protocol in [Protocol::HttpProtobuf, Protocol::Grpc] {
        let endpoint = match protocol {
            Protocol::HttpProtobuf => format!("http://{}", receiver.addr),
            Protocol::Grpc => format!("http://{}", receiver.grpc),
        };
        let resolved = OtlpConfig {
            endpoint: Some(endpoint.into()),
            protocol: Some(protocol),
            service_name: Some("their-service".into()),
            headers: vec![("x-api-key".to_owned(), Secret::new("k-9"))],
            ..OtlpConfig::default()
        }
        .resolve(dspex_telemetry_exporters::otlp::Signal::Traces)
        .expect("resolves");
        let exporter =
            dspex_telemetry_exporters::otlp::span_exporter(&resolved).expect("our exporter");
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resolved.resource())
            .build();
        provider
            .tracer("service")
            .in_span(format!("their work over {protocol:?}"), |_| ());
        let flushed = provider.clone();
        tokio::task::spawn_blocking(move || flushed.force_flush())
            .await
            .unwrap()
            .expect("the service's provider flushes through our exporter");
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
    let spans = receiver.spans().await;
    for protocol in ["HttpProtobuf", "Grpc"] {
        let span = spans
            .iter()
            .find(|s| s["name"] == format!("their work over {protocol}"))
            .unwrap_or_else(|| panic!("no span over {protocol}: {spans:#?}"));
        assert_eq!(span["resource"]["service.name"], "their-service");
        assert_eq!(span["headers"]["x-api-key"], "k-9", "{span:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_services_own_tracer_provider_sends_its_spans_with_ours_through_our_processor() {
    use opentelemetry::trace::{Span as _, TraceContextExt, Tracer, TracerProvider as _};

    let receiver = OtlpReceiver::start().await;
    let d = Dispatcher::new();
    let traces = OtlpTraces::start(config(&receiver), &d, "otlp").unwrap();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(traces.span_processor())
        .build();
    let tracer = provider.tracer("checkout");
    let (order_trace, order_span) = tracer.in_span("handle order", |cx| {
        let mut charge = tracer.start_with_context("charge card", &cx);
        charge.set_attribute(opentelemetry::KeyValue::new("amount", 42_i64));
        charge.end();
        let own = cx.span().span_context().clone();
        (own.trace_id().to_string(), own.span_id().to_string())
    });
    with_span_on(&d, "our work");
    // The SDK's flush blocks until our collector has sent what it holds.
    let flushing = provider.clone();
    tokio::task::spawn_blocking(move || flushing.force_flush())
        .await
        .unwrap()
        .expect("flushed");
    traces.flush().await;
    let spans = receiver.spans().await;
    let order = by_name(&spans, "handle order");
    let charge = by_name(&spans, "charge card");
    by_name(&spans, "our work");
    assert_eq!(order["trace_id"], json!(order_trace));
    assert_eq!(order["span_id"], json!(order_span));
    assert_eq!(charge["trace_id"], json!(order_trace));
    assert_eq!(charge["parent_span_id"], json!(order_span));
    assert_eq!(charge["attributes"]["amount"], json!(42));
    assert_eq!(
        order["resource"]["service.name"],
        json!("dspex-test"),
        "the service's spans go out under our exporter's resource"
    );
    assert_eq!(order["headers"]["x-api-key"], json!("k-123"));
    let stats = traces.stats();
    assert_eq!(stats.exported, 3, "{stats:?}");
    assert_eq!((stats.dropped, stats.failed_requests), (0, 0));

    // After our shutdown, the provider's flush says the pipeline has stopped, at once, and
    // its later spans go nowhere.
    traces.shutdown().await;
    tracer.in_span("too late", |_| {});
    let flushed = tokio::task::spawn_blocking(move || provider.force_flush())
        .await
        .unwrap();
    assert!(flushed.is_err(), "{flushed:?}");
    assert!(
        receiver
            .spans()
            .await
            .iter()
            .all(|s| s["name"] != "too late")
    );
}
