//! A tour of the core: one correlated request through nested spans, a failing tool, an async
//! step on another thread, and a handler that prints every DSPex event it sees.
//!
//! Run: `cargo run -p dspex-telemetry-core --example core_tour --all-features`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dspex_telemetry_core::http::{CORRELATION_HEADER, extract, inject};
use dspex_telemetry_core::{
    CorrelationId, Event, EventName, Metadata, WithTraceContext, attach_prefix, catalog, context,
    metadata, span, span_async, try_span, with_span,
};

mod printer {
    use super::*;

    /// Prints one line per event: name, duration, metadata and the trace it belongs to.
    pub fn line(event: &Event<'_>) -> String {
        let mut text = format!("{:<34}", event.name().to_string());
        if let Some(d) = event.measurements().get("duration") {
            text.push_str(&format!(" {:>8.3} ms", d.as_f64() / 1e6));
        } else {
            text.push_str("            ");
        }
        let md: Vec<String> = event
            .metadata()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        text.push_str(&format!("  {}", md.join(" ")));
        if let Some(ctx) = context::current() {
            text.push_str(&format!(
                "  [corr={} span={} parent={}]",
                ctx.correlation_id(),
                ctx.span_id(),
                ctx.parent_span_id().map_or("-".into(), |p| p.to_string())
            ));
        }
        text
    }
}

fn attach_printer(lines: Arc<Mutex<Vec<String>>>, events: Arc<AtomicU64>) {
    attach_prefix(
        "printer",
        EventName::from_static(&["dspex"]),
        move |event: &Event<'_>| {
            events.fetch_add(1, Ordering::Relaxed);
            let line = printer::line(event);
            println!("{line}");
            lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        },
    )
    .expect("the printer attaches once");
}

fn main() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let events = Arc::new(AtomicU64::new(0));
    attach_printer(lines.clone(), events.clone());

    // An incoming request with a correlation id, as an HTTP server would see it.
    let mut headers = http::HeaderMap::new();
    headers.insert(
        CORRELATION_HEADER,
        http::HeaderValue::from_static("order-7731"),
    );
    let request_ctx = extract(&headers);
    println!("request correlated as {}\n", request_ctx.correlation_id());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("a tokio runtime");

    request_ctx.in_scope(|| {
        with_span("business.process_request", || {
            context::add_baggage("tenant", "acme").expect("a short baggage entry");

            let answer = span(
                &catalog::BRIDGE_CALL,
                metadata! { "module" => "dspy", "function" => "Predict" },
                || {
                    std::thread::sleep(Duration::from_millis(3));
                    (
                        "Telemetry is data about a system's behaviour.",
                        metadata! { "success" => true },
                    )
                },
            );
            println!("  -> answer: {answer}");

            let failed: Result<String, String> = try_span(
                &catalog::TOOLS_EXECUTE,
                metadata! { "tool_name" => "web_search" },
                || {
                    (
                        Err("upstream timed out after 2s".to_owned()),
                        Metadata::new(),
                    )
                },
            );
            println!("  -> tool: {failed:?}");

            // Async work on the runtime's threads stays in the same trace.
            let task = span_async(
                &catalog::CONTRACT_VALIDATE,
                metadata! { "signature" => "question -> answer" },
                async {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    (true, metadata! { "valid" => true })
                },
            )
            .in_current_trace();
            let valid = runtime
                .block_on(runtime.spawn(task))
                .expect("the task completes");
            println!("  -> contract valid: {valid}");

            // What a call to another service would carry.
            let mut outgoing = http::HeaderMap::new();
            inject(&context::current().expect("inside the span"), &mut outgoing);
            for (name, value) in &outgoing {
                println!(
                    "  outgoing {name}: {}",
                    value.to_str().unwrap_or("<binary>")
                );
            }
        })
    });

    let correlation = CorrelationId::parse("order-7731").expect("valid");
    let lines = lines.lock().unwrap_or_else(|e| e.into_inner());
    let correlated = lines
        .iter()
        .filter(|l| l.contains(&format!("corr={correlation}")))
        .count();
    println!(
        "\n{} events, {} of them correlated with {correlation}",
        events.load(Ordering::Relaxed),
        correlated
    );
    assert_eq!(
        correlated as u64,
        events.load(Ordering::Relaxed),
        "every event carried the request's correlation id"
    );
}
