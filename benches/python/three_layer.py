"""Python side of `three_layer_bench`: a predictor and a tool that answer at once, so the
bench times the layers and their telemetry, not a model."""

from dspex_worker import current_trace, dspex_span, register_tool


def predict(question):
    with dspex_span("generate"):
        answer = f"An answer to {question!r}"
    return {"answer": answer, "confidence": 0.9, "correlation_id": current_trace()["correlation_id"]}


@register_tool("lookup")
def lookup(key):
    return {"key": key, "value": len(key)}
