"""Functions that push a worker to its edges: its stderr, its children, its frames, its encoding."""

import dataclasses
import json
import os
import struct
import subprocess
import sys
import threading
import time

import dspex_worker


def pid():
    return os.getpid()


def say(text):
    print(text, file=sys.stderr, flush=True)
    return os.getpid()


def bad_stderr():
    # Not UTF-8: a lone continuation byte, an invalid start byte, a cut sequence.
    sys.stderr.buffer.write(b"bytes \x80\xff\xfe \xc3( and an escape \x1b[31m\n")
    sys.stderr.buffer.flush()
    return os.getpid()


def long_stderr_line(n):
    sys.stderr.buffer.write(b"x" * n)  # no newline
    sys.stderr.buffer.flush()
    return n


def sleeper():
    """Starts `sleep 60` and returns at once: the child outlives the call."""
    return subprocess.Popen(["sleep", "60"]).pid


def forked_sleeper():
    """Forks a copy of this worker that sleeps; it holds every descriptor the worker holds."""
    child = os.fork()
    if child == 0:
        try:
            time.sleep(60)
        finally:
            os._exit(0)
    return child


def sleeper_then_hang(pid_file):
    child = subprocess.Popen(["sleep", "60"])
    with open(pid_file, "w") as out:
        out.write(str(child.pid))
    time.sleep(60)


def forked_writer(delay):
    """Forks a child that, after the call has returned, writes a reply frame of its own."""
    fd = dspex_worker._proto_out.fileno()
    frame = json.dumps({"id": 1, "ok": True, "result": "stray"}).encode()
    child = os.fork()
    if child == 0:
        try:
            time.sleep(delay)
            os.write(fd, struct.pack(">I", len(frame)) + frame)
        finally:
            os._exit(0)
    return child


def stdin_reader():
    """Starts a child that reads its standard input, as a careless tool might."""
    return subprocess.Popen(["head", "-c", "4"], stdout=subprocess.DEVNULL).pid


def thread_writer(delay):
    """Leaves a thread behind that writes a frame while the worker waits for a request."""
    out = dspex_worker._proto_out
    frame = json.dumps({"id": 1, "ok": True, "result": "stray"}).encode()

    def write():
        time.sleep(delay)
        out.write(struct.pack(">I", len(frame)) + frame)
        out.flush()

    threading.Thread(target=write, daemon=True).start()
    return os.getpid()


def wrong_id(reply_id):
    """Writes a reply to another request, then returns as usual."""
    out = dspex_worker._proto_out
    frame = json.dumps({"id": reply_id, "ok": True, "result": "not yours"}).encode()
    out.write(struct.pack(">I", len(frame)) + frame)
    out.flush()
    return "mine"


def text_of(n):
    return "x" * n


class BadRepr:
    def __repr__(self):
        raise RuntimeError("repr refused")


def bad_repr():
    return {"value": BadRepr()}


def deep(n):
    value = []
    for _ in range(n - 1):
        value = [value]
    return value


class Opaque:
    """An object with no JSON form (not a dataclass, no toDict or model_dump)."""


def not_serializable():
    return {"value": Opaque()}


@dataclasses.dataclass
class Point:
    x: int
    labels: tuple


class PredictionLike:
    """Shaped like dspy.Prediction: its fields through toDict()."""

    def __init__(self, **fields):
        self._store = fields

    def toDict(self):  # noqa: N802 - DSPy's name
        return dict(self._store)


def structured():
    return {
        "point": Point(3, ("a", "b")),
        "tags": {"b", "a", "c"},
        "mixed": frozenset([1]),
        "pair": (1, 2),
        "prediction": PredictionLike(answer="4", points=[Point(1, ())]),
    }


class SilentError(Exception):
    def __str__(self):
        raise RuntimeError("str refused")


def raise_silent():
    raise SilentError()


_forked = {}


def _pipes_are_devnull():
    return all(os.readlink(f"/proc/self/fd/{fd}") == os.devnull for fd in dspex_worker._proto_fds)


def fork_from_thread(delay):
    """Leaves a thread behind that forks while the worker waits for the next request.

    The child forks a grandchild; each checks that /dev/null has taken the frame pipes' place
    and exits. The thread waits (up to 5 s) for the child; `fork_outcome` tells what it saw.
    """
    _forked.clear()

    def fork():
        time.sleep(delay)
        child = os.fork()
        if child == 0:
            code = 0 if _pipes_are_devnull() else 3
            grandchild = os.fork()
            if grandchild == 0:
                os._exit(0 if _pipes_are_devnull() else 4)
            _, status = os.waitpid(grandchild, 0)
            os._exit(code or os.waitstatus_to_exitcode(status))
        limit = time.monotonic() + 5
        while time.monotonic() < limit:
            done, status = os.waitpid(child, os.WNOHANG)
            if done:
                _forked["exit"] = os.waitstatus_to_exitcode(status)
                return
            time.sleep(0.01)
        _forked["exit"] = "still running"
        os.kill(child, 9)
        os.waitpid(child, 0)

    threading.Thread(target=fork, daemon=True).start()
    return os.getpid()


def fork_outcome():
    limit = time.monotonic() + 10
    while "exit" not in _forked and time.monotonic() < limit:
        time.sleep(0.01)
    return _forked.get("exit")


def spanned_unencodable():
    """Times a block, then returns what JSON has no form for."""
    with dspex_worker.dspex_span("before"):
        pass
    return {"value": Opaque()}
