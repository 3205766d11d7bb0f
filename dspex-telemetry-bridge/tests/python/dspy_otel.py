"""DSPy instrumented by OpenInference, as DSPy users trace it, in a worker whose OpenTelemetry
spans go back to Rust (`dspex_worker.tracer_provider()`); the model is litellm's mock
(`dspy_offline`). Needs opentelemetry-sdk and openinference-instrumentation-dspy."""

import dspex_worker
from openinference.instrumentation.dspy import DSPyInstrumentor

import dspy
from dspy_offline import MODEL  # noqa: F401 - configures the offline model

provider = dspex_worker.tracer_provider()
DSPyInstrumentor().instrument(tracer_provider=provider)
dspex_worker.copy_context_into_threads()


def predict(question):
    return dspy.Predict("question -> answer")(question=question)


def batch(questions, num_threads=4):
    predict = dspy.Predict("question -> answer")
    examples = [dspy.Example(question=q).with_inputs("question") for q in questions]
    return predict.batch(examples, num_threads=num_threads)


class Lookup(dspy.Module):
    """A module that asks the model, then fails."""

    def __init__(self):
        super().__init__()
        self.predict = dspy.Predict("question -> answer")

    def forward(self, question):
        self.predict(question=question)
        raise ValueError(f"no record for {question!r}")


def raising(question):
    return Lookup()(question=question)
