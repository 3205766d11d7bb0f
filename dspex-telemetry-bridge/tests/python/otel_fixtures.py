"""OpenTelemetry spans in a worker, sent back to Rust (`dspex_worker.tracer_provider()`).
Needs opentelemetry-sdk."""

import contextvars
import threading
import time

import dspex_worker
from opentelemetry import baggage, trace

dspex_worker.tracer_provider()
tracer = trace.get_tracer("otel_fixtures")


def nested():
    """An OpenTelemetry span around a worker span around another OpenTelemetry span; what
    OpenTelemetry saw of the caller (tracestate, baggage)."""
    with tracer.start_as_current_span("outer", kind=trace.SpanKind.CLIENT) as span:
        span.set_attribute("rows", 3)
        span.add_event("retry", {"attempt": 2})
        with dspex_worker.dspex_span("middle"):
            with tracer.start_as_current_span("inner"):
                pass
    context = trace.get_current_span().get_span_context()
    return {
        "trace_id": "%032x" % context.trace_id,
        "span_id": "%016x" % context.span_id,
        "remote": context.is_remote,
        "tracestate": context.trace_state.to_header(),
        "baggage": dict(baggage.get_all()),
    }


def late(delay):
    """Starts a thread, in this request's context, that ends a span after the reply."""

    def later():
        time.sleep(delay)
        with tracer.start_as_current_span("late"):
            pass

    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(later,)).start()
    return "started"


def long_attribute(length):
    with tracer.start_as_current_span("long") as span:
        span.set_attribute("text", "x" * length)
    return "ok"


def many_spans(count, size):
    """`count` spans of `size` bytes of attributes each: more than a frame holds."""
    for i in range(count):
        with tracer.start_as_current_span(f"bulk {i}") as span:
            span.set_attribute("text", "y" * size)
    return "ok"


def failing():
    with tracer.start_as_current_span("failing"):
        raise KeyError("missing")
