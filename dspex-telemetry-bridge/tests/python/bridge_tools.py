"""Tools and predictors for the bridge tests."""

import time

from dspex_worker import register_tool


@register_tool("web_search")
def search(query):
    return [f"result for {query}"]


@register_tool()
def slow(seconds):
    time.sleep(seconds)
    return "late"


def predict(question):
    return {"answer": f"A: {question}", "confidence": "0.9"}


def predict_without_answer(question):
    return {"confidence": 1.0}
