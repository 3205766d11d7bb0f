"""The dspex-telemetry Python worker: serves calls from the Rust pool over a framed pipe.

Protocol: each frame is a 4-byte big-endian length followed by that many bytes. A request's
bytes are its trace header (ASCII, empty without a trace), a newline, then UTF-8 JSON; a reply's
are UTF-8 JSON. Requests arrive on stdin and replies leave on stdout; the worker takes both
pipes for itself at start, on descriptors no child inherits: anything user code prints goes to
stderr and cannot corrupt a frame, a child process reads an empty stdin, and in a child forked
from the worker /dev/null takes the pipes' place.

Frames are at most `max_frame_bytes` (the pool passes it as DSPEX_WORKER_MAX_FRAME_BYTES). A
request frame over it is skipped and answered with a ProtocolError; a reply over it, or one
that cannot be encoded as JSON the pool reads (not serializable, NaN, nested too deep), fails
its call with a Python error instead, and the worker serves the next call.

The trace header carries the caller's trace (traceparent, baggage, correlation id) as one
string. The worker serves one request at a time and keeps the header, as it came, in a global
for the length of the request: it is decoded and parsed only when user code asks for it
(`current_trace()`, `dspex_span`), so a request pays nothing for its trace otherwise. When
the Rust side listens for Python spans it also sends `"timed": true`: the worker then times the
call as a span that is a child of the caller's span, and returns every span opened meanwhile
(the call's own, and those user code opens with `dspex_span`) with the reply.

With `fork_workers`, the pool starts this script once as a template (`--template <socket>
<modules…>`), which imports the preloaded modules and forks each worker, and each worker as a
stub (`--fork <socket>`) that hands its pipes to the template and ends as its worker ends.

When DSPy is imported (by a preload or a call), the worker registers a DSPy callback: module
and LM calls become spans of the request (when timed), and each LM call (model, times, tokens,
error) goes back with the reply as `"lm"`.

When the interpreter has OpenTelemetry's API (`opentelemetry`), each request with a trace runs
with the call's span as OpenTelemetry's current span (remote; with the caller's tracestate and
baggage), detached when the request ends, and the worker's own spans are current in
OpenTelemetry while they are open: spans that instrumentation opens (OpenInference's for DSPy,
say) join the caller's trace. `SpanProcessor` (or `tracer_provider()`) sends the spans
OpenTelemetry ends during a request back with its reply, so the worker needs no exporter of its
own; `copy_context_into_threads()` carries the context into `ThreadPoolExecutor` threads
(DSPy's `Parallel` and `batch`). Without OpenTelemetry, nothing of this runs.

Standard library only.
"""

import contextlib
import contextvars
import dataclasses
import importlib
import json
import os
import random
import struct
import sys
import time
import traceback

# The largest frame either way; the pool sets it (`max_frame_bytes`).
MAX_FRAME = 16 * 1024 * 1024
# The deepest nesting of a reply the pool reads (serde_json's limit).
_MAX_DEPTH = 127

# The trace header of the request being served, as the Rust side sent it (ASCII bytes, empty
# without a trace; decoded and parsed only when asked for): "<traceparent> <span id of this
# call> <correlation id> <baggage>". The worker serves one request at a time, so a global
# holds it; it is cleared when the request ends.
_header = b""
# The id (an int) of the innermost `dspex_span` open, if any (else the call's own span, whose id
# is in the trace).
_span_id = contextvars.ContextVar("dspex_span_id", default=None)
# The spans timed during the request being served, when the Rust side asked for them (None
# otherwise); like the header, it lives for the length of the request.
_collected = None

# The language-model calls made during the request being served (by DSPy, seen through its
# callbacks), returned with the reply; None between requests.
_lm_calls = None

# The traceparent (version 00) is 55 characters; this call's span id follows it.
_CALL_SPAN_ID = slice(56, 72)


def _parent_id():
    """The id (an int) of the innermost span open in this worker, the parent of a span starting
    now; None when it is the call's own span (the Rust side knows its id)."""
    if _otel_trace_id:
        # OpenTelemetry's current span, when it is in the request's trace: it is the innermost
        # (the worker's spans are current there too while they are open).
        context = _otel.get_current_span().get_span_context()
        if context.trace_id == _otel_trace_id:
            return context.span_id
    return _span_id.get()


def _current_span_id():
    """The innermost open span's id in hex (the call's own when no other is open)."""
    span_id = _parent_id()
    if span_id is None:
        return _header[_CALL_SPAN_ID].decode("ascii") if _header else None
    return "%016x" % span_id


TOOLS = {}
INSTANCES = {}
_next_instance = [0]


def register_tool(name=None):
    """Registers a function as a tool the Rust side can execute by name.

    Use it in a module the pool preloads (`PoolConfig::preload`):

        @register_tool("web_search")
        def search(query): ...
    """

    def register(function):
        TOOLS[name or function.__name__] = function
        return function

    return register


def current_trace():
    """The trace this worker is serving: trace id, span id, correlation id, baggage and
    tracestate headers."""
    if not _header:
        return {
            "trace_id": None, "span_id": None, "correlation_id": None, "baggage": "",
            "tracestate": "",
        }
    trace, _, tracestate = _header.decode("ascii").partition("\t")
    # "<traceparent> <span id of this call> <correlation id> <baggage>[\t<tracestate>]", parsed
    # only when asked for.
    traceparent, _, correlation_id, baggage = (trace.split(" ", 3) + ["", "", "", ""])[:4]
    trace_id, _ = _parse_traceparent(traceparent)
    return {
        "trace_id": trace_id,
        "span_id": _current_span_id(),
        "correlation_id": correlation_id or trace_id,
        "baggage": baggage,
        "tracestate": tracestate,
    }


def _finish_span(name, span_id, parent, start, status, message, attributes):
    # Wire form: [name, span_id, parent_span_id, start_ns, end_ns, status, message, attributes]:
    # the ids as ints, the parent None for the call's own span, the attributes None when empty.
    _keep(_collected, [name, span_id, parent, start, _time_ns(), status, message, attributes or None])


def _keep(spans, wire):
    """Adds a span to the request's list, up to _SPANS_MAX; past it, counts it as dropped."""
    if spans is None:
        return
    if len(spans) < _SPANS_MAX:
        spans.append(wire)
    else:
        _spans_dropped[0] += 1


class dspex_span(contextlib.ContextDecorator):  # noqa: N801 - used as a function
    """Times a block as a child span of the current one; it is returned to Rust with the reply.

    `with dspex_span("retrieve", k=3) as attributes:` (add to `attributes` inside the block),
    or `@dspex_span("retrieve")` on a function. When the Rust side does not listen for Python
    spans, nothing is collected: the block runs as it is, and costs no ids or clock reads.
    """

    def __init__(self, name, **attributes):
        self._name = name
        self._attributes = attributes
        self._open = None

    def _recreate_cm(self):
        # Each call of a decorated function times a span of its own.
        return dspex_span(self._name, **self._attributes)

    def __enter__(self):
        if _collected is not None:
            parent = _parent_id()
            span_id = _getrandbits(64) or 1
            self._open = (span_id, parent, _enter_span(span_id), _time_ns())
        return self._attributes

    def __exit__(self, kind, exc, _traceback):
        if self._open is None:
            return False
        span_id, parent, token, start = self._open
        self._open = None
        _leave_span(token, parent)
        attributes = self._attributes
        if kind is None:
            status, message = "ok", None
        else:
            status, message = "error", f"{kind.__name__}: {_text(exc)}"
        _finish_span(
            self._name, span_id, parent, start, status, message,
            {k: _jsonable(v) for k, v in attributes.items()} if attributes else None,
        )
        return False


def _enter_span(span_id):
    """Makes the worker's span `span_id` current (for OpenTelemetry too, while a request's
    context is attached); the token to leave it with."""
    token = _span_id.set(span_id)
    if not _otel_trace_id:
        return token, None
    try:
        api = _otel
        context = api.SpanContext(
            _otel_trace_id, span_id, is_remote=False, trace_flags=_otel_flags,
            trace_state=_otel_state,
        )
        return token, api.attach(api.set_span_in_context(api.NonRecordingSpan(context)))
    except Exception:  # noqa: BLE001 - telemetry never fails a call
        return token, None


def _leave_span(token, parent):
    """Leaves a span entered with `_enter_span` (`parent` current again)."""
    token, otel_token = token
    try:
        _span_id.reset(token)
    except ValueError:
        # Ended in another context than it started in: OpenTelemetry's token belongs to that
        # one too (detaching it here would only log an error).
        _span_id.set(parent)
        return
    if otel_token is not None:
        try:
            _otel.detach(otel_token)
        except Exception:  # noqa: BLE001 - telemetry never fails a call
            pass


# OpenTelemetry's API when the interpreter has it (looked for once, at the first request with
# a trace): an _OtelApi; False without it.
_otel = None
# The trace id (an int) of the request being served while its OpenTelemetry context is
# attached, 0 otherwise; and its flags and tracestate, as OpenTelemetry holds them.
_otel_trace_id = 0
_otel_flags = None
_otel_state = None
# OpenTelemetry spans that ended while no request was served (a thread that outlived its call):
# they go back with the next reply, at most _LATE_SPANS_MAX of them.
_late_spans = []
_LATE_SPANS_MAX = 1024
# The most spans one reply carries, and the longest text attribute (in characters) of an
# OpenTelemetry span sent back; an attribute past it is cut and ends with "…".
_SPANS_MAX = 4096
_ATTRIBUTE_TEXT_MAX = 4096
# Spans left out of the request being served (past _SPANS_MAX, or too large for its reply).
_spans_dropped = [0]


class _OtelApi:
    """The parts of OpenTelemetry's API a request uses, looked up once."""

    def __init__(self):
        from opentelemetry import context, trace
        from opentelemetry.baggage.propagation import W3CBaggagePropagator

        self.attach, self.detach = context.attach, context.detach
        self.get_current_span, self.set_span_in_context = trace.get_current_span, trace.set_span_in_context
        self.SpanContext, self.NonRecordingSpan = trace.SpanContext, trace.NonRecordingSpan
        self.TraceFlags, self.TraceState = trace.TraceFlags, trace.TraceState
        self.baggage = W3CBaggagePropagator()


def _otel_api():
    global _otel
    if _otel is None:
        try:
            _otel = _OtelApi()
        except Exception:  # noqa: BLE001 - not installed, or broken: the worker runs without it
            _otel = False
    return _otel


def _otel_attach():
    """Attaches the request's trace as OpenTelemetry's current context: the call's span
    (remote) current, with the caller's tracestate and baggage. The token to detach it with, or
    None (no OpenTelemetry, no trace)."""
    global _otel_trace_id, _otel_flags, _otel_state
    api = _otel_api()
    if not api:
        return None
    try:
        trace, _, tracestate = _header.decode("ascii").partition("\t")
        traceparent, call_span, _correlation_id, baggage = (trace.split(" ", 3) + ["", "", "", ""])[:4]
        if len(traceparent) != 55 or len(call_span) != 16:
            return None
        # The Rust side sends valid W3C values: they are read as they are. The call's span
        # (timed by this worker) is the parent of what runs in it.
        trace_id = int(traceparent[3:35], 16)
        flags = api.TraceFlags(int(traceparent[53:55], 16))
        state = api.TraceState.from_header([tracestate]) if tracestate else None
        parent = api.SpanContext(trace_id, int(call_span, 16), is_remote=True, trace_flags=flags, trace_state=state)
        ctx = api.set_span_in_context(api.NonRecordingSpan(parent))
        if baggage:
            ctx = api.baggage.extract({"baggage": baggage}, context=ctx)
        token = api.attach(ctx)
        _otel_trace_id, _otel_flags, _otel_state = trace_id, flags, state
        return token
    except Exception as exc:  # noqa: BLE001 - telemetry never fails a call
        print(f"dspex_worker: the trace was not handed to OpenTelemetry: {type(exc).__name__}: {_text(exc)}", file=sys.stderr)
        return None


def _otel_detach(token):
    global _otel_trace_id
    _otel_trace_id = 0
    try:
        _otel.detach(token)
    except Exception:  # noqa: BLE001 - detached already
        pass


def _otel_value(value):
    if isinstance(value, str):
        return value if len(value) <= _ATTRIBUTE_TEXT_MAX else value[:_ATTRIBUTE_TEXT_MAX] + "…"
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return [_otel_value(v) for v in value[:64]]
    return _otel_value(_text(value))


def _otel_attributes(attributes):
    return {str(k): _otel_value(v) for k, v in list((attributes or {}).items())[:128]}


_KINDS = {0: "internal", 1: "server", 2: "client", 3: "producer", 4: "consumer"}


def _otel_wire(span):
    """The wire form of an ended OpenTelemetry span: the worker's nine-field form, whose last
    field holds what the worker's own spans do not have (trace id, kind, events); its attributes
    keep their names."""
    context, parent, status = span.context, span.parent, span.status
    failed = status.status_code.name == "ERROR"
    message = None
    events = []
    for event in list(span.events)[:32]:
        attributes = _otel_attributes(event.attributes)
        events.append([event.name, event.timestamp, attributes])
        if failed and event.name == "exception" and message is None:
            message = f"{attributes.get('exception.type', 'Exception')}: {attributes.get('exception.message', '')}"
    if failed:
        message = status.description or message or "error"
    extras = {"trace_id": "%032x" % context.trace_id, "kind": _KINDS.get(span.kind.value, "internal")}
    if events:
        extras["events"] = events
    return [
        span.name, "%016x" % context.span_id, None if parent is None else "%016x" % parent.span_id,
        span.start_time, span.end_time, "error" if failed else "ok", message,
        _otel_attributes(span.attributes), extras,
    ]


class SpanProcessor:
    """An OpenTelemetry span processor that sends the spans ended in this worker back to the
    Rust side with the reply of the request they belong to, where they are exported with the
    call's other spans: the worker needs no exporter, collector address or network.

        from opentelemetry.sdk.trace import TracerProvider
        provider = TracerProvider()
        provider.add_span_processor(dspex_worker.SpanProcessor())

    or `dspex_worker.tracer_provider()`, which does this. Spans are sent only while the Rust
    side listens for Python spans; one that ends after its request did (a thread that outlived
    the call) goes with the next reply. A span that cannot be converted is dropped, never the
    call.
    """

    def on_start(self, span, parent_context=None):
        pass

    def _on_ending(self, span):
        pass

    def on_end(self, span):
        try:
            wire = _otel_wire(span)
        except Exception:  # noqa: BLE001 - telemetry never fails a call
            return
        spans = _collected
        if spans is not None:
            _keep(spans, wire)
        elif span.context.trace_id != _otel_trace_id and len(_late_spans) < _LATE_SPANS_MAX:
            # Not the untimed request's own (nobody listens for those): a span that outlived
            # its call, sent with the next timed reply.
            _late_spans.append(wire)

    def shutdown(self):
        pass

    def force_flush(self, timeout_millis=30000):
        return True


def tracer_provider(set_global=True):
    """An OpenTelemetry SDK `TracerProvider` whose spans come back to Rust (`SpanProcessor`),
    made the global one unless `set_global` is False. Needs `opentelemetry-sdk`."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    provider.add_span_processor(SpanProcessor())
    if set_global:
        trace.set_tracer_provider(provider)
    return provider


_threads_carry_context = False


def copy_context_into_threads():
    """From now on, a function submitted to any `concurrent.futures.ThreadPoolExecutor` runs in
    a copy of the submitter's context (`contextvars`): the current trace, OpenTelemetry's
    current span and the worker's follow it into the pool's threads, as DSPy's `Parallel` and
    `Module.batch` use them. Call it once, in a module the pool preloads; later calls do
    nothing."""
    global _threads_carry_context
    if _threads_carry_context:
        return
    from concurrent.futures import ThreadPoolExecutor

    submit = ThreadPoolExecutor.submit

    def submit_in_context(self, fn, /, *args, **kwargs):
        return submit(self, contextvars.copy_context().run, fn, *args, **kwargs)

    submit_in_context.__doc__ = submit.__doc__
    ThreadPoolExecutor.submit = submit_in_context
    _threads_carry_context = True


def _new_span_id():
    # Unique, not secret: a seeded generator is enough and costs no system call.
    return _getrandbits(64) or 1


_getrandbits = random.getrandbits
_time_ns = time.time_ns


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a span attribute must not fail the call
        return f"<{type(value).__name__} without a repr>"


def _text(value):
    """str(value), or a stand-in when its __str__ raises."""
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - the text of an error must not fail the worker
        return f"<{type(value).__name__}: str() failed>"


def _parse_traceparent(header):
    # The Rust side sends version 00: "00-<32 hex>-<16 hex>-<2 hex>".
    if not header or len(header) < 55 or header[2] != "-" or header[35] != "-":
        return None, None
    return header[3:35], header[36:52]


def _read_exact(stream, n):
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


# Keeps brackets alone, objects' as arrays' (in valid JSON the kind does not change the depth).
_BRACKETS_ONLY = (bytes.maketrans(b"{}", b"[]"), bytes(b for b in range(256) if b not in b"[]{}"))


def _nests_deeper_than(body, limit):
    """Whether the JSON text `body` nests arrays and objects more than `limit` deep."""
    # Fewer openings than the limit cannot nest deeper: most replies stop here.
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    # Out of the strings: escaped backslashes, then escaped quotes, go first (a backslash is
    # only ever in a string); what lies between the quotes left is string.
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(body.split(b'"')[::2]).translate(*_BRACKETS_ONLY)
    # Each pass removes exactly the innermost level: `replace` does not look again at the
    # pairs its removals bring together.
    for _ in range(limit):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"")
    return bool(brackets)


def _structured(value):
    """The JSON form of a result JSON has no form for (json.dumps calls it for each such value,
    and again for what it returns): a dspy.Prediction or Example as its fields (`toDict()`), a
    pydantic model as `model_dump(mode="json")`, a dataclass as its fields, a set as a list
    (sorted when its items sort). Anything else is a TypeError naming its type: never a repr.
    Tuples are lists already.
    """
    kind = type(value)
    to_dict = getattr(kind, "toDict", None)
    if callable(to_dict):
        return value.toDict()
    model_dump = getattr(kind, "model_dump", None)
    if callable(model_dump):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    raise TypeError(
        f"a value of type {kind.__module__}.{kind.__qualname__} has no JSON form: return a dict, "
        "list, tuple, str, int, float, bool or None, or a dataclass, a pydantic model, a set, "
        "a dspy.Prediction or Example"
    )


def _encode(message):
    """A reply's frame body. A reply that cannot be sent as the pool reads it (not JSON, too
    deep, too large) becomes an error reply to the same request: the call fails, not the worker.
    """
    try:
        # Strict JSON: NaN and infinities are not JSON; an object JSON has no form for is a
        # TypeError, not its repr.
        body = json.dumps(message, allow_nan=False, default=_structured).encode("utf-8")
        if _nests_deeper_than(body, _MAX_DEPTH):
            why = f"the result nests deeper than {_MAX_DEPTH - 1} levels, the most the pool reads"
            failure = ("RecursionError", f"the reply cannot be sent as JSON: {why}")
        elif len(body) > MAX_FRAME and message.get("spans") and _fits_without_spans(message):
            # The spans are telemetry: they give way, not the call.
            lighter = {k: v for k, v in message.items() if k != "spans"}
            lighter["spans_dropped"] = message.get("spans_dropped", 0) + len(message["spans"])
            return _encode(lighter)
        elif len(body) > MAX_FRAME:
            why = f"its frame would be {len(body)} bytes, over max_frame_bytes ({MAX_FRAME} bytes)"
            failure = ("ValueError", f"the reply cannot be sent: {why}")
        else:
            return body
    except Exception as exc:  # noqa: BLE001 - whatever encoding raises fails the call alone
        failure = (type(exc).__name__, f"the reply cannot be sent as JSON: {_text(exc)}")
    kind, why = failure
    reply = {"id": message.get("id"), "ok": False, "error": {"type": kind, "message": why}}
    if message.get("spans_dropped"):
        reply["spans_dropped"] = message["spans_dropped"]
    if isinstance(message.get("call_span"), list):
        reply["call_span"] = message["call_span"]
    if isinstance(message.get("lm"), list):
        reply["lm"] = message["lm"]
    # The spans the call collected go back all the same, unless they are what cannot be sent.
    if isinstance(message.get("spans"), list):
        try:
            body = json.dumps({**reply, "spans": message["spans"]}, allow_nan=False).encode("utf-8")
            if len(body) <= MAX_FRAME:
                return body
        except Exception:  # noqa: BLE001 - the error reply goes without them
            pass
        reply["spans_dropped"] = reply.get("spans_dropped", 0) + len(message["spans"])
    return json.dumps(reply, default=repr).encode("utf-8")


def _fits_without_spans(message):
    """Whether the reply, without its spans, fits in a frame."""
    try:
        lighter = {k: v for k, v in message.items() if k != "spans"}
        return len(json.dumps(lighter, allow_nan=False, default=_structured).encode("utf-8")) <= MAX_FRAME
    except Exception:  # noqa: BLE001 - then it does not
        return False


def _write_frame(out, message):
    body = _encode(message)
    out.write(struct.pack(">I", len(body)) + body)
    out.flush()


def _skip(stream, n):
    """Reads and drops `n` bytes; False if the stream ended first."""
    while n > 0:
        chunk = stream.read(min(n, 1 << 16))
        if not chunk:
            return False
        n -= len(chunk)
    return True


# The callback the worker registers with DSPy once DSPy is imported (None before).
_dspy_callback = None
# The most history entries of an LM searched for a call's token usage.
_HISTORY_LOOKBACK = 8


def _watch_dspy():
    """Registers the worker's callback with DSPy, once DSPy is imported (by a preload, or by a
    call), and again if user code replaced DSPy's callbacks. Costs a dictionary lookup while
    DSPy is not imported; the worker itself never imports it.
    """
    global _dspy_callback
    dspy = sys.modules.get("dspy")
    if dspy is None or not hasattr(dspy, "settings"):
        return
    try:
        if _dspy_callback is None:
            _dspy_callback = _make_dspy_callback()
        callbacks = dspy.settings.callbacks
        if _dspy_callback not in callbacks:
            # In place: `dspy.configure` may only be called by the thread that first did.
            callbacks.append(_dspy_callback)
    except Exception as exc:  # noqa: BLE001 - telemetry never fails a call
        _dspy_callback = _dspy_callback or False
        print(f"dspex_worker: DSPy's callbacks are not watched: {type(exc).__name__}: {_text(exc)}", file=sys.stderr)


def _usage(instance, outputs):
    """The token usage DSPy recorded for the LM call that returned `outputs` (its history entry
    holds that very list), as (prompt, completion, total); None where it recorded none.
    """
    history = getattr(instance, "history", None) or ()
    for entry in history[-1 : -_HISTORY_LOOKBACK - 1 : -1]:
        if isinstance(entry, dict) and entry.get("outputs") is outputs:
            usage = entry.get("usage") or {}

            def count(key):
                value = usage.get(key)
                return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

            prompt, completion, total = count("prompt_tokens"), count("completion_tokens"), count("total_tokens")
            if total is None and prompt is not None and completion is not None:
                total = prompt + completion
            return prompt, completion, total
    return None, None, None


def _make_dspy_callback():
    from dspy.utils.callback import BaseCallback

    class DspexCallback(BaseCallback):
        """Times DSPy's module and LM calls as spans of the request (when the Rust side listens
        for Python spans), and records each LM call (model, time, tokens, error) for the
        `[:dspex, :lm, :call]` events and the `dspex_lm_*` metrics.
        """

        def __init__(self):
            super().__init__()
            self._open = {}

        def _start(self, call_id, name, attributes, lm):
            span = None
            if _collected is not None:
                parent = _parent_id()
                span_id = _new_span_id()
                span = (span_id, parent, _enter_span(span_id))
            self._open[call_id] = (name, attributes, lm, span, time.time_ns())

        def _end(self, call_id, outputs, exception):
            opened = self._open.pop(call_id, None)
            if opened is None:
                return
            name, attributes, lm, span, start = opened
            end = time.time_ns()
            error = None if exception is None else f"{type(exception).__name__}: {_text(exception)}"
            if lm is not None:
                model = attributes["gen_ai.request.model"]
                prompt, completion, total = _usage(lm, outputs) if exception is None else (None, None, None)
                calls = _lm_calls
                if calls is not None:
                    calls.append([model, start, end, None if exception is None else type(exception).__name__,
                                  error, prompt, completion, total])
                if prompt is not None:
                    attributes["gen_ai.usage.input_tokens"] = prompt
                if completion is not None:
                    attributes["gen_ai.usage.output_tokens"] = completion
            if span is not None:
                span_id, parent, token = span
                _leave_span(token, parent)
                _finish_span(name, span_id, parent, start, "ok" if error is None else "error", error, attributes)

        def on_module_start(self, call_id, instance, inputs):
            module = type(instance).__name__
            self._start(call_id, f"{module}.forward", {"dspy.module": module}, None)

        def on_module_end(self, call_id, outputs, exception=None):
            self._end(call_id, outputs, exception)

        def on_lm_start(self, call_id, instance, inputs):
            model = _text(getattr(instance, "model", None) or type(instance).__name__)[:200]
            self._start(call_id, f"chat {model}", {"gen_ai.request.model": model}, instance)

        def on_lm_end(self, call_id, outputs, exception=None):
            self._end(call_id, outputs, exception)

    return DspexCallback()


def _call_target(module_name, path):
    target = importlib.import_module(module_name)
    _watch_dspy()
    for part in path.split("."):
        target = getattr(target, part)
    return target


def _call(request):
    target = _call_target(request["module"], request["function"])
    return target(*request.get("args", []), **request.get("kwargs", {}))


def _run(request):
    op = request.get("op")
    args, kwargs = request.get("args", []), request.get("kwargs", {})
    if op == "call":
        return _call(request)
    if op == "tool":
        tool = TOOLS.get(request["name"])
        if tool is None:
            raise LookupError(f"no tool named {request['name']!r} is registered")
        return tool(*args, **kwargs)
    if op == "call_method":
        instance = INSTANCES.get(request["instance"])
        if instance is None:
            raise LookupError(f"no object {request['instance']} in this worker")
        return getattr(instance, request["method"])(*args, **kwargs)
    if op == "create_instance":
        cls = _call_target(request["module"], request["class"])
        _next_instance[0] += 1
        INSTANCES[_next_instance[0]] = cls(*args, **kwargs)
        return _next_instance[0]
    if op == "drop_instance":
        return INSTANCES.pop(request["instance"], None) is not None
    if op == "ping":
        return "pong"
    raise LookupError(f"unknown op {op!r}")


def _serve_one(request, traced):
    # The Rust side names this call's span (its id is in the trace); nested `dspex_span` blocks
    # become its children. Timing the call and collecting spans happen only when asked for.
    global _collected, _lm_calls, _late_spans
    timed = False
    _spans_dropped[0] = 0
    if traced and request.get("timed"):
        timed = True
        spans = _collected = []
        if _late_spans:
            # Swapped first: a thread may be adding to the list meanwhile.
            late, _late_spans = _late_spans, []
            spans.extend(late)
        start = time.time_ns()
    lm_calls = _lm_calls = []
    _watch_dspy()
    reply = {"id": request.get("id")}
    failure = None
    otel_token = _otel_attach() if traced and _otel is not False else None
    try:
        reply.update(ok=True, result=_run(request))
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
        try:
            trace = traceback.format_exc(limit=20)
        except Exception:  # noqa: BLE001 - a traceback that cannot be made is left out
            trace = None
        failure = f"{type(exc).__name__}: {_text(exc)}"
        reply.update(
            ok=False,
            error={"type": type(exc).__name__, "message": _text(exc), "traceback": trace},
        )
    if otel_token is not None:
        _otel_detach(otel_token)
    _lm_calls = None
    if lm_calls:
        # Wire form: [model, start_ns, end_ns, error_type, error, prompt, completion, total tokens].
        reply["lm"] = lm_calls
    if timed:
        reply["call_span"] = [start, time.time_ns()] + (["error", failure] if failure else [])
        _collected = None
        if spans:
            reply["spans"] = spans
        if _spans_dropped[0]:
            reply["spans_dropped"] = _spans_dropped[0]
    if request.get("op") == "ping":
        reply["trace_seen"] = current_trace()
    return reply


# The frame pipes (on the worker's own descriptors, not 0 and 1) and their descriptors, set at start.
_proto_in = None
_proto_out = None
_proto_fds = ()


def _close_pipes_in_child():
    # A process forked from the worker (os.fork, multiprocessing) gets copies of every
    # descriptor, the frame pipes among them: it must neither read requests nor write replies.
    # /dev/null takes the pipes' place under the same descriptors. The buffered streams over
    # them are left alone: a thread of the worker that no longer exists in the child may hold
    # their lock (reading the next request), and any method of theirs would wait for it
    # forever. A grandchild does the same again, on descriptors that are /dev/null already.
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
    except OSError:
        return
    try:
        for fd in _proto_fds:
            if fd != devnull:
                try:
                    os.dup2(devnull, fd, inheritable=False)
                except OSError:
                    pass
    finally:
        if devnull not in _proto_fds:
            os.close(devnull)


def _runtime():
    """The interpreter, as its spans' resource describes it."""
    return {
        "name": sys.implementation.name,
        "version": ".".join(str(part) for part in sys.version_info[:3]),
        "description": sys.version,
    }


def _preload(modules, out):
    """Imports the modules a worker preloads; False, having told the pool why, if one fails."""
    sys.modules.setdefault("dspex_worker", sys.modules[__name__])
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - reported to the pool, which refuses to start
            _write_frame(out, {"ready": False, "error": f"preloading {module}: {type(exc).__name__}: {_text(exc)}"})
            return False
    _watch_dspy()
    return True


def _template(path, modules):
    """The template a pool with `fork_workers` forks its workers from: it imports the preloaded
    modules once, then listens on the Unix socket `path` (in a folder only this user may
    enter). A stub the pool started as a worker connects and sends its three standard
    descriptors (its frame pipes and stderr) with its process group; the template forks a
    child that takes them as its own, joins the stub's group and serves as a worker. When the
    child ends, the template reaps it and tells the stub how ("exit N" or "signal N"), which
    the stub repeats as its own end, so the pool sees the worker's exit status. It exits when
    its standard input closes (the pool stopped it).
    """
    import selectors
    import signal
    import socket

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if not _preload(modules, out):
        return
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "stub")
    selector.register(wake_r, selectors.EVENT_READ, "child")
    selector.register(0, selectors.EVENT_READ, "pool")
    children = {}  # pid -> the stub's connection
    _write_frame(out, {"ready": True, "pid": os.getpid(), "template": True})
    while True:
        for key, _ in selector.select():
            if key.data == "pool":
                if not os.read(0, 512):
                    return
            elif key.data == "child":
                os.read(wake_r, 512)
                while True:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    stub = children.pop(pid, None)
                    if stub is None:
                        continue
                    how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.waitstatus_to_exitcode(status)}"
                    try:
                        stub.sendall(how.encode("ascii"))
                    except OSError:
                        pass
                    stub.close()
            else:
                stub, _ = listener.accept()
                fds = []
                try:
                    message, fds, _, _ = socket.recv_fds(stub, 64, 3)
                    kind, _, group = message.decode("ascii").partition(" ")
                    if kind != "fork" or len(fds) != 3:
                        raise ValueError("not a fork request")
                    group = int(group)
                except (OSError, ValueError, UnicodeDecodeError):
                    for fd in fds:
                        os.close(fd)
                    stub.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    # The worker: none of the template's descriptors or handlers.
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    selector.close()
                    listener.close()
                    for other in children.values():
                        other.close()
                    stub.close()
                    out.close()
                    os.close(wake_r)
                    os.close(wake_w)
                    try:
                        os.setpgid(0, group)
                    except OSError:
                        pass
                    for target, fd in enumerate(fds):
                        os.dup2(fd, target)
                    for fd in fds:
                        if fd > 2:
                            os.close(fd)
                    code = 0
                    try:
                        main(preload=())
                    except SystemExit as exit:
                        code = exit.code if isinstance(exit.code, int) else 1
                    except BaseException:  # noqa: BLE001 - the worker ends here, never in the template's loop
                        traceback.print_exc()
                        code = 1
                    finally:
                        try:
                            sys.stderr.flush()
                        finally:
                            os._exit(code)
                for fd in fds:
                    os.close(fd)
                children[pid] = stub


def _stub(path):
    """A worker started from the template: hands this process's standard descriptors to the
    template, which forks the worker that serves on them, then ends as the worker ends."""
    import signal
    import socket

    try:
        template = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        template.connect(path)
        socket.send_fds(template, [f"fork {os.getpgid(0)}".encode("ascii")], [0, 1, 2])
    except OSError as exc:
        out = os.fdopen(1, "wb")
        _write_frame(out, {"ready": False, "error": f"the template process cannot fork a worker: {_text(exc)}"})
        return 1
    # Only the worker keeps the frame pipes: their ends close when it dies.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    how = b""
    while True:
        chunk = template.recv(64)
        if not chunk:
            break
        how += chunk
    kind, _, number = how.decode("ascii", "replace").partition(" ")
    if kind == "signal" and number.isdigit():
        try:  # SIGKILL and SIGSTOP have no handler to reset
            signal.signal(int(number), signal.SIG_DFL)
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), int(number))
    if kind == "exit" and number.lstrip("-").isdigit():
        return int(number)
    # The template ended without a word.
    print("dspex_worker: the template process ended before the worker", file=sys.stderr)
    return 70


def main(preload=None):
    global _proto_in, _proto_out, _proto_fds, _header, _collected, _lm_calls, MAX_FRAME
    MAX_FRAME = int(os.environ.pop("DSPEX_WORKER_MAX_FRAME_BYTES", MAX_FRAME))
    # Take the real stdin and stdout for frames, on descriptors children do not inherit (dup
    # makes them non-inheritable); fd 0 becomes /dev/null, fd 1 (and so print) goes to stderr.
    proto_in = _proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = _proto_out = os.fdopen(os.dup(1), "wb")
    _proto_fds = (proto_in.fileno(), proto_out.fileno())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    os.register_at_fork(after_in_child=_close_pipes_in_child)
    if not _preload(sys.argv[1:] if preload is None else preload, proto_out):
        return
    _write_frame(proto_out, {"ready": True, "pid": os.getpid(), "tools": sorted(TOOLS), "runtime": _runtime()})
    while True:
        header = _read_exact(proto_in, 4)
        if header is None:
            return
        (length,) = struct.unpack(">I", header)
        if length > MAX_FRAME:
            # Skipped whole, so that the next frame is read from its start.
            if not _skip(proto_in, length):
                return
            why = f"a request frame of {length} bytes exceeds the worker's limit, max_frame_bytes ({MAX_FRAME} bytes)"
            _write_frame(proto_out, {"id": None, "ok": False, "error": {"type": "ProtocolError", "message": why}})
            continue
        body = _read_exact(proto_in, length)
        if body is None:
            return
        header, _, payload = body.partition(b"\n")
        try:
            if not header.isascii():
                raise ValueError("the trace header is not ASCII")
            request = json.loads(payload)
        except ValueError as exc:
            _write_frame(proto_out, {"id": None, "ok": False, "error": {"type": "ProtocolError", "message": str(exc)}})
            continue
        _header = header
        try:
            contextvars.copy_context().run(lambda: _write_frame(proto_out, _serve_one(request, bool(header))))
        finally:
            _header = b""
            _collected = None
            _lm_calls = None


if __name__ == "__main__":
    if sys.argv[1:2] == ["--template"]:
        MAX_FRAME = int(os.environ.pop("DSPEX_WORKER_MAX_FRAME_BYTES", MAX_FRAME))
        os.environ["DSPEX_WORKER_MAX_FRAME_BYTES"] = str(MAX_FRAME)
        _template(sys.argv[2], sys.argv[3:])
    elif sys.argv[1:2] == ["--fork"]:
        sys.exit(_stub(sys.argv[2]))
    else:
        main()
