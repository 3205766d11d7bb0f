//! Spans over TLS to a real OTLP decoder (the official protobuf classes; HTTP/protobuf and
//! gRPC, gzip on) with a CA the test makes; the OTLP retry (503 with `Retry-After`, then 200:
//! delivered exactly once); a collector that never answers (shutdown within its deadline); a
//! user's own exporter (the SDK's in-memory one) receiving our spans with their parents.

mod support;

use std::time::{Duration, Instant};

use dspex_telemetry_core::{Dispatcher, TraceContext, catalog, metadata};
use dspex_telemetry_exporters::Secret;
use dspex_telemetry_exporters::otlp::{Compression, OtlpConfig, OtlpTraces, Protocol};
use serde_json::Value;
use support::{OtlpReceiver, ReceiverOptions, test_ca};

fn certificates(name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("dspex-otlp-tls-{name}-{}", std::process::id()));
    test_ca(&dir)
}

/// Three spans: a bridge call with a child tool span, and a failed contract check.
fn some_spans(d: &Dispatcher) -> TraceContext {
    let root = TraceContext::new_root();
    root.in_scope(|| {
        d.span(
            &catalog::BRIDGE_CALL,
            metadata! { "module" => "dspy", "function" => "Predict" },
            || {
                d.span(
                    &catalog::TOOLS_EXECUTE,
                    metadata! { "tool_name" => "search" },
                    || ((), metadata! {}),
                );
                ((), metadata! { "success" => true })
            },
        );
        let _: Result<(), String> = d.try_span(&catalog::CONTRACT_VALIDATE, metadata! {}, || {
            (Err("bad field".into()), metadata! {})
        });
    });
    root
}

fn check_the_three(spans: &[Value], root: &TraceContext) {
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let by = |name: &str| {
        spans
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {spans:#?}"))
    };
    let (call, tool, contract) = (
        by("dspex.bridge.call"),
        by("dspex.tools.execute"),
        by("dspex.contract.validate"),
    );
    for span in [call, tool, contract] {
        assert_eq!(span["trace_id"], root.trace_id().to_string());
        assert_eq!(span["resource"]["service.name"], "tls-test");
        assert_eq!(span["headers"]["x-api-key"], "k-123");
    }
    assert_eq!(tool["parent_span_id"], call["span_id"]);
    assert_eq!(
        call["parent_span_id"], "",
        "the root made with new_root is no span: the call is the trace's root"
    );
    assert_eq!(call["kind"], 3, "a bridge call is a client span");
    assert_eq!(call["attributes"]["code.function"], "Predict");
    assert_eq!(contract["status_code"], 2);
    assert_eq!(contract["status_message"], "bad field");
}

fn tls_config(endpoint: String, protocol: Protocol, ca: &std::path::Path) -> OtlpConfig {
    OtlpConfig {
        endpoint: Some(endpoint.into()),
        protocol: Some(protocol),
        certificate: Some(ca.to_path_buf()),
        compression: Some(Compression::Gzip),
        headers: vec![("x-api-key".into(), Secret::new("k-123"))],
        service_name: Some("tls-test".into()),
        ..OtlpConfig::default()
    }
}

/// The three spans sent over TLS (with a CA the test makes, gzip on) to a receiver serving
/// TLS, checked as they arrived; returns the receiver and what arrived.
async fn over_tls(protocol: Protocol) -> (OtlpReceiver, Vec<Value>) {
    let (ca, cert, key) = certificates(&format!("{protocol:?}"));
    let receiver = OtlpReceiver::start_with(
        0,
        ReceiverOptions {
            tls: Some((cert, key)),
            ..ReceiverOptions::default()
        },
    )
    .await;
    let port = match protocol {
        Protocol::HttpProtobuf => receiver.addr.port(),
        Protocol::Grpc => receiver.grpc.port(),
    };
    let d = Dispatcher::new();
    let traces = OtlpTraces::start(
        tls_config(format!("https://127.0.0.1:{port}"), protocol, &ca),
        &d,
        "otlp",
    )
    .unwrap();
    let root = some_spans(&d);
    traces.flush().await;
    let stats = traces.stats();
    let spans = receiver.spans().await;
    check_the_three(&spans, &root);
    assert_eq!((stats.exported, stats.dropped), (3, 0), "{stats:?}");
    traces.shutdown().await;
    (receiver, spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_decoder_over_https_with_gzip() {
    let (receiver, _) = over_tls(Protocol::HttpProtobuf).await;
    assert_eq!(receiver.attempts().await, ["gzip"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_decoder_over_grpc_with_tls_and_gzip() {
    let (_, spans) = over_tls(Protocol::Grpc).await;
    // gzip is on: grpcio decoded the compressed messages (it does not show their encoding).
    assert!(spans.iter().all(|s| s["transport"] == "grpc"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_without_our_ca_is_refused() {
    let (_, cert, key) = certificates("untrusted");
    let receiver = OtlpReceiver::start_with(
        0,
        ReceiverOptions {
            tls: Some((cert, key)),
            ..ReceiverOptions::default()
        },
    )
    .await;
    let d = Dispatcher::new();
    let traces = OtlpTraces::start(
        OtlpConfig {
            endpoint: Some(format!("https://127.0.0.1:{}", receiver.addr.port()).into()),
            timeout: Some(Duration::from_secs(2)),
            ..OtlpConfig::default()
        },
        &d,
        "otlp",
    )
    .unwrap();
    some_spans(&d);
    traces.flush().await;
    let stats = traces.stats();
    assert_eq!(stats.exported, 0, "{stats:?}");
    assert_eq!(stats.dropped, 3, "{stats:?}");
    assert!(receiver.spans().await.is_empty());
    traces.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_with_retry_after_then_200_delivers_exactly_once() {
    let receiver = OtlpReceiver::start_with(
        0,
        ReceiverOptions {
            answers: vec![503, 200],
            ..ReceiverOptions::default()
        },
    )
    .await;
    let d = Dispatcher::new();
    let traces = OtlpTraces::start(
        OtlpConfig {
            endpoint: Some(format!("http://{}", receiver.addr).into()),
            ..OtlpConfig::default()
        },
        &d,
        "otlp",
    )
    .unwrap();
    let started = Instant::now();
    d.span(&catalog::BRIDGE_CALL, metadata! {}, || ((), metadata! {}));
    traces.flush().await;
    let waited = started.elapsed();
    let spans = receiver.spans().await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(receiver.attempts().await.len(), 2);
    assert!(
        waited >= Duration::from_millis(900),
        "Retry-After: 1 was honoured ({waited:?})"
    );
    let stats = traces.stats();
    assert_eq!((stats.exported, stats.failed_requests), (1, 0), "{stats:?}");
    traces.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_costs_at_most_the_shutdown_deadline() {
    for protocol in [Protocol::HttpProtobuf, Protocol::Grpc] {
        let receiver = OtlpReceiver::start_with(
            0,
            ReceiverOptions {
                hang: true,
                ..ReceiverOptions::default()
            },
        )
        .await;
        // gRPC: a port that accepts and never speaks HTTP/2.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = match protocol {
            Protocol::HttpProtobuf => format!("http://{}", receiver.addr),
            Protocol::Grpc => format!("http://{}", silent.local_addr().unwrap()),
        };
        let d = Dispatcher::new();
        let traces = OtlpTraces::start(
            OtlpConfig {
                endpoint: Some(endpoint.into()),
                protocol: Some(protocol),
                timeout: Some(Duration::from_secs(60)),
                shutdown_timeout: Duration::from_secs(1),
                export_interval: Duration::from_millis(50),
                ..OtlpConfig::default()
            },
            &d,
            "otlp",
        )
        .unwrap();
        for _ in 0..10 {
            d.span(&catalog::BRIDGE_CALL, metadata! {}, || ((), metadata! {}));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let stats = traces.stats();
        traces.shutdown().await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(1_600),
            "{protocol:?}: shutdown took {took:?} ({stats:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_own_exporter_receives_our_spans_with_their_parents() {
    let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    let d = Dispatcher::new();
    let traces =
        OtlpTraces::start_with_exporter(exporter.clone(), OtlpConfig::default(), &d, "mine")
            .unwrap();
    let root = some_spans(&d);
    traces.flush().await;
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let by = |name: &str| spans.iter().find(|s| s.name == name).unwrap();
    let (call, tool) = (by("dspex.bridge.call"), by("dspex.tools.execute"));
    assert_eq!(tool.parent_span_id, call.span_context.span_id());
    assert_eq!(
        call.parent_span_id,
        opentelemetry::trace::SpanId::INVALID,
        "the root made with new_root is no span: the bridge call is the trace's root"
    );
    assert_eq!(
        call.span_context.trace_id().to_bytes(),
        root.trace_id().to_bytes()
    );
    assert_eq!(call.span_kind, opentelemetry::trace::SpanKind::Client);
    assert_eq!(traces.stats().exported, 3);
    traces.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_from_many_threads_and_threads_that_ended_all_arrive() {
    for (ring, spans_per_thread) in [(256 * 1024, 500u64), (4096, 2_000)] {
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let d = Dispatcher::new();
        let traces = OtlpTraces::start_with_exporter(
            exporter.clone(),
            OtlpConfig {
                thread_buffer_bytes: ring,
                ..OtlpConfig::default()
            },
            &d,
            "mine",
        )
        .unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let d = d.clone();
                std::thread::spawn(move || {
                    for _ in 0..spans_per_thread {
                        d.span(
                            &catalog::TOOLS_EXECUTE,
                            metadata! { "tool_name" => "t" },
                            || ((), metadata! {}),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        traces.flush().await;
        let stats = traces.stats();
        let got = exporter.get_finished_spans().unwrap().len() as u64;
        // Every span is exported or counted as dropped, whatever the machine's load.
        assert_eq!(got, stats.exported, "{stats:?}");
        assert_eq!(got + stats.dropped, 4 * spans_per_thread, "{stats:?}");
        if ring == 256 * 1024 {
            // 500 spans fit a thread's ring whether or not the collector comes by: none lost.
            assert_eq!(stats.dropped, 0, "{stats:?}");
        } else {
            assert!(got > 0, "{stats:?}");
        }
        traces.shutdown().await;
    }
}

/// Records small enough to be written in place and large ones written through a measured
/// buffer, in a ring small enough that many wrap around its end: each arrives whole, with the
/// value it was given, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_large_records_arrive_whole_across_the_rings_end() {
    let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    let d = Dispatcher::new();
    let traces = OtlpTraces::start_with_exporter(
        exporter.clone(),
        OtlpConfig {
            thread_buffer_bytes: 8192,
            ..OtlpConfig::default()
        },
        &d,
        "mine",
    )
    .unwrap();
    let _trace = dspex_telemetry_core::context::start_trace();
    let mut sent = Vec::new();
    for i in 0..300usize {
        // Every third record is larger than what is written in place.
        let args = if i % 3 == 0 {
            format!("{i}:{}", "x".repeat(700 + i))
        } else {
            format!("{i}")
        };
        d.span(
            &catalog::BRIDGE_CALL,
            metadata! { "module" => "dspy", "args" => args.as_str() },
            || ((), metadata! { "worker_id" => i }),
        );
        sent.push(args);
        if i % 10 == 9 {
            // Room for the collector: ten records, at most ~15 KiB, against an 8 KiB ring.
            traces.flush().await;
        }
    }
    traces.flush().await;
    let stats = traces.stats();
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len() as u64, stats.exported, "{stats:?}");
    assert_eq!(spans.len() as u64 + stats.dropped, 300, "{stats:?}");
    assert!(spans.len() >= 200, "{stats:?}");
    for span in &spans {
        let attr = |k: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.clone())
        };
        let Some(opentelemetry::Value::I64(i)) = attr("dspex.worker_id") else {
            panic!("{span:?}")
        };
        assert_eq!(
            attr("dspex.args").map(|v| v.as_str().into_owned()),
            Some(sent[i as usize].clone()),
            "record {i} arrives whole"
        );
        assert_eq!(attr("dspex.module"), Some("dspy".into()));
    }
    traces.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_from_another_process_keeps_its_facts_with_a_users_exporter() {
    use dspex_telemetry_core::{
        Metadata, SpanAttributes, SpanKind, SpanMetadata, SpanName, SpanRecord, SpanStatus,
        TraceFlags, TraceState, Value as V,
    };
    let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    let d = Dispatcher::new();
    let traces =
        OtlpTraces::start_with_exporter(exporter.clone(), OtlpConfig::default(), &d, "mine")
            .unwrap();
    let facts = [
        ("process.pid".to_string(), V::from(4242i64)),
        ("process.runtime.name".to_string(), V::from("cpython")),
    ];
    let (metadata, tracestate) = (Metadata::new(), TraceState::new());
    let root = TraceContext::new_root();
    d.export_span(&SpanRecord {
        trace_id: root.trace_id(),
        span_id: dspex_telemetry_core::SpanId::random(),
        parent_span_id: None,
        parent_is_remote: false,
        flags: TraceFlags::SAMPLED,
        tracestate: &tracestate,
        name: SpanName::Text("python work"),
        kind: SpanKind::Internal,
        start_unix_ns: 1_000,
        end_unix_ns: 2_000,
        status: SpanStatus::Unset,
        metadata: SpanMetadata::one(&metadata),
        attributes: SpanAttributes::EMPTY,
        correlation_id: None,
        events: &[],
        resource: SpanAttributes::new(&facts),
    });
    traces.flush().await;
    let spans = exporter.get_finished_spans().unwrap();
    let attribute = |k: &str| {
        spans[0]
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attribute("process.pid").as_deref(), Some("4242"));
    assert_eq!(
        attribute("process.runtime.name").as_deref(),
        Some("cpython")
    );
    traces.shutdown().await;
}
