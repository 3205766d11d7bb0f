"""The bridge bench's Python side with and without OpenTelemetry: with its SDK in the
interpreter, spans go back to Rust through the worker's processor."""

import dspex_worker

try:
    from opentelemetry import trace
except ImportError:  # the interpreter without OpenTelemetry
    trace = None
else:
    dspex_worker.tracer_provider()
    tracer = trace.get_tracer("otel_cost")


def work():
    """A call that times one block with the worker's own span."""
    with dspex_worker.dspex_span("step"):
        return 1


def work_otel_span():
    """A call that times one block with an OpenTelemetry span."""
    with tracer.start_as_current_span("step"):
        return 1
