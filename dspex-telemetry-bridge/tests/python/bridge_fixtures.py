"""Functions the bridge tests call in real Python workers."""

import os
import struct
import sys
import time

from dspex_worker import current_trace, dspex_span


def add(a, b):
    return a + b


def fail(message):
    raise ValueError(message)


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def not_json():
    return {"score": float("nan"), "when": object()}


def pid():
    return os.getpid()


def chatty(lines):
    for i in range(lines):
        print(f"user output line {i}")
        sys.stdout.write("\x00\x00\x00\x10not a frame at all\n")
    sys.stdout.flush()
    return 42


def whoami():
    return current_trace()


def collecting():
    import dspex_worker

    # Whether the worker collects this call's spans (only when the Rust side listens for them).
    return {"collecting": dspex_worker._collected is not None, "trace": current_trace()}


@dspex_span("score")
def _score():
    return 1


def nested(k):
    with dspex_span("retrieve", k=k) as attributes:
        with dspex_span("rank"):
            time.sleep(0.002)
            _score()
        attributes["found"] = k * 2
        try:
            with dspex_span("lookup"):
                raise KeyError("missing")
        except KeyError:
            pass
    return "done"


def junk():
    import dspex_worker

    out = dspex_worker._proto_out
    out.write(struct.pack(">I", 5) + b"hello")
    out.flush()
    time.sleep(10)


class Predictor:
    """A stateful object held by one worker."""

    def __init__(self, signature):
        self.signature = signature
        self.calls = 0

    def __call__(self, question):
        self.calls += 1
        return {"answer": f"{question}?", "calls": self.calls, "pid": os.getpid()}

    def forward(self, question):
        return self(question)


def opentelemetry_seen():
    """What the worker knows of OpenTelemetry: whether it found its API, whether it is imported."""
    import sys

    import dspex_worker

    return {"api": bool(dspex_worker._otel), "imported": "opentelemetry" in sys.modules}
