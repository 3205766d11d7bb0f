"""Python side of the mixed-workload example: a predictor, tools, and nested spans."""

import random
import time

from dspex_worker import current_trace, dspex_span, register_tool


def predict(question):
    with dspex_span("retrieve", k=3):
        time.sleep(random.uniform(0.001, 0.004))
    with dspex_span("generate"):
        time.sleep(random.uniform(0.002, 0.008))
    return {"answer": f"An answer to {question!r}", "confidence": "0.87", "correlation_id": current_trace()["correlation_id"]}


@register_tool("calculator")
def calculator(expression):
    a, op, b = expression.split()
    return {"+": float(a) + float(b), "*": float(a) * float(b)}[op]


@register_tool("flaky_search")
def flaky_search(query):
    if random.random() < 0.2:
        raise ConnectionError("search backend unavailable")
    time.sleep(0.002)
    return [f"{query} result {i}" for i in range(3)]


@register_tool("slow_tool")
def slow_tool(seconds):
    time.sleep(seconds)
    return "done"
