//! OpenTelemetry's current context and ours, joined (feature `opentelemetry`).
//!
//! - A span started where no dspex context is current continues OpenTelemetry's current span:
//!   the one `tracing-opentelemetry` keeps on the entered `tracing` span, or any the code
//!   attached. The service's trace and ours are then one.
//! - While a dspex span (or a context continuing a caller's) is current, it is also
//!   OpenTelemetry's current span context: `tracing` spans created there (through
//!   `tracing-opentelemetry`), or any OpenTelemetry span, become its children.

use opentelemetry::trace::{
    SpanContext, SpanId as OtelSpanId, TraceContextExt, TraceFlags as OtelFlags,
    TraceId as OtelTraceId, TraceState as OtelTraceState,
};

use crate::context::TraceContext;
use crate::ids::{SpanId, TraceFlags, TraceId};
use crate::tracestate::TraceState;

/// OpenTelemetry's current span, as a context that stands for it (the spans started in it are
/// its children); `None` when there is no valid one.
pub(crate) fn current_parent() -> Option<TraceContext> {
    opentelemetry::Context::map_current(|cx| {
        if !cx.has_active_span() {
            return None;
        }
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return None;
        }
        let header = sc.trace_state().header();
        let tracestate = match header.is_empty() {
            true => TraceState::new(),
            false => TraceState::parse([header.as_str()]).unwrap_or_default(),
        };
        Some(
            TraceContext::standing_for(
                TraceId::from_bytes(sc.trace_id().to_bytes()),
                SpanId::from_bytes(sc.span_id().to_bytes()),
                TraceFlags::from_bits(sc.trace_flags().to_u8()),
                sc.is_remote(),
            )
            .with_tracestate(tracestate),
        )
    })
}

/// Makes `ctx` OpenTelemetry's current span context until the guard drops: the span itself,
/// or, for a context that is no span, the span it stands for (none for a new trace's).
pub(crate) fn attach(ctx: &TraceContext) -> Option<opentelemetry::ContextGuard> {
    let (span_id, remote) = match (ctx.is_span(), ctx.parent_span_id()) {
        (true, _) => (ctx.span_id(), false),
        (false, Some(parent)) => (parent, ctx.parent_is_remote()),
        (false, None) => return None,
    };
    let tracestate = match ctx.tracestate().is_empty() {
        true => OtelTraceState::NONE,
        false => ctx
            .tracestate()
            .to_header()
            .parse()
            .unwrap_or(OtelTraceState::NONE),
    };
    let sc = SpanContext::new(
        OtelTraceId::from_bytes(ctx.trace_id().to_bytes()),
        OtelSpanId::from_bytes(span_id.to_bytes()),
        OtelFlags::new(ctx.flags().bits()),
        remote,
        tracestate,
    );
    Some(opentelemetry::Context::map_current(|cx| cx.with_remote_span_context(sc)).attach())
}
