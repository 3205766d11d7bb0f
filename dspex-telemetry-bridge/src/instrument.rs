//! Instrumentation for those who bring their own bridge (PyO3, gRPC, HTTP): wrap a call as a
//! bridge call or a tool execution and get the same events and trace context as the pool's.

use std::fmt::Display;
use std::future::Future;

use dspex_telemetry_core::{Dispatcher, catalog, context, metadata};

/// The trace to send with an outgoing call, as the pool sends it to its workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingTrace {
    /// The W3C `traceparent` (the current span is the parent).
    pub traceparent: String,
    /// The W3C `tracestate` the trace came with (empty when there is none).
    pub tracestate: String,
    /// The W3C `baggage`, with the correlation id when one was given.
    pub baggage: String,
    /// The correlation id.
    pub correlation_id: String,
}

/// The current trace in the form a remote call carries (gRPC metadata, HTTP headers, a PyO3
/// call's keyword arguments); `None` outside a trace.
pub fn outgoing_trace() -> Option<OutgoingTrace> {
    context::current().map(|ctx| OutgoingTrace {
        traceparent: ctx.traceparent().to_string(),
        tracestate: ctx.tracestate().to_header(),
        baggage: ctx.outgoing_baggage().to_header(),
        correlation_id: ctx.correlation_id().to_string(),
    })
}

/// Runs `call` as a `[:dspex, :bridge, :call]` span for `module.function`: `success` on stop,
/// `kind` and `reason` on exception. Inside it, [`outgoing_trace`] gives what to send along.
///
/// ```
/// use dspex_telemetry_bridge::instrument::{bridge_call, outgoing_trace};
/// use dspex_telemetry_core::Dispatcher;
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async {
/// let dispatcher = Dispatcher::new();
/// let answer: Result<String, String> = bridge_call(&dispatcher, "dspy", "Predict", async {
///     // e.g. a PyO3 call, passing outgoing_trace() along
///     let _trace = outgoing_trace();
///     Ok("42".to_owned())
/// })
/// .await;
/// assert_eq!(answer.unwrap(), "42");
/// # });
/// ```
pub async fn bridge_call<T, E, F>(
    dispatcher: &Dispatcher,
    module: &str,
    function: &str,
    call: F,
) -> Result<T, E>
where
    E: Display,
    F: Future<Output = Result<T, E>>,
{
    dispatcher
        .try_span_async(
            &catalog::BRIDGE_CALL,
            metadata! { "module" => module, "function" => function },
            async {
                let result = call.await;
                let ok = result.is_ok();
                (result, metadata! { "success" => ok })
            },
        )
        .await
}

/// Runs `execution` as a `[:dspex, :tools, :execute]` span for tool `tool_name`.
pub async fn tool_execution<T, E, F>(
    dispatcher: &Dispatcher,
    tool_name: &str,
    session_id: Option<&str>,
    execution: F,
) -> Result<T, E>
where
    E: Display,
    F: Future<Output = Result<T, E>>,
{
    let mut md = metadata! { "tool_name" => tool_name };
    if let Some(s) = session_id {
        md.insert("session_id", s);
    }
    dispatcher
        .try_span_async(&catalog::TOOLS_EXECUTE, md, async {
            (execution.await, metadata! {})
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use dspex_telemetry_core::{Event, EventName, TraceContext, WithTraceContext};
    use std::sync::{Arc, Mutex};

    type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

    #[tokio::test]
    async fn wrapped_calls_emit_the_pools_events_and_carry_the_trace() {
        let d = Dispatcher::new();
        let seen: Seen = Arc::default();
        let sink = seen.clone();
        d.attach_prefix(
            "rec",
            EventName::from_static(&["dspex"]),
            move |e: &Event<'_>| {
                let kind = e.metadata().get("kind").map(|v| v.to_string());
                sink.lock().unwrap().push((e.name().to_string(), kind));
            },
        )
        .unwrap();
        let root = TraceContext::new_root();
        let sent = bridge_call(&d, "m", "f", async { Ok::<_, String>(outgoing_trace()) })
            .with_trace_context(root.clone())
            .await
            .unwrap()
            .unwrap();
        assert!(sent.traceparent.contains(&root.trace_id().to_string()));
        assert!(
            !sent.traceparent.contains(&root.span_id().to_string()),
            "the bridge span is the parent"
        );
        let failed: Result<(), String> =
            tool_execution(&d, "search", Some("s-1"), async { Err("down".to_owned()) }).await;
        assert!(failed.is_err());
        let seen = seen.lock().unwrap();
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "dspex.bridge.call.start",
                "dspex.bridge.call.stop",
                "dspex.tools.execute.start",
                "dspex.tools.execute.exception"
            ]
        );
        assert_eq!(seen[3].1.as_deref(), Some("error"));
        assert!(outgoing_trace().is_none());
    }
}
