"""Python side of the quickstart: a predictor with nested spans, and tools of different speeds.

The Rust side chooses how slow `web_search` is and how often `flaky_lookup` fails, so that one
phase of the run degrades and the alerts fire, then resolve.
"""

import random
import time

from dspex_worker import current_trace, dspex_span, register_tool


def predict(question):
    with dspex_span("retrieve", k=3):
        time.sleep(random.uniform(0.002, 0.006))
    with dspex_span("generate"):
        time.sleep(random.uniform(0.004, 0.012))
    # An unsure model answers without a number: casting the answer to its contract fails.
    confidence = "n/a" if "unsure" in question else round(random.uniform(0.6, 0.99), 2)
    return {
        "answer": f"An answer to {question!r}",
        "confidence": confidence,
        "correlation_id": current_trace()["correlation_id"],
    }


@register_tool("calculator")
def calculator(a, b):
    return a * b


@register_tool("web_search")
def web_search(query, delay_ms):
    time.sleep(delay_ms / 1000)
    return [f"{query} result {i}" for i in range(3)]


@register_tool("flaky_lookup")
def flaky_lookup(key, failure_rate):
    if random.random() < failure_rate:
        raise ConnectionError("lookup backend unavailable")
    time.sleep(0.003)
    return {"key": key, "value": len(key)}
