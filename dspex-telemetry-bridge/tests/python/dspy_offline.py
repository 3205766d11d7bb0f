"""DSPy configured offline for the tests: litellm's mock response stands in for the model
(no network, no key) and reports token usage (10 prompt, 20 completion), as a real one does."""

import os

# litellm would fetch its model price map from the network on first use.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402
import pydantic  # noqa: E402

MODEL = "openai/gpt-4o-mini"
# What the model "answers": the fields in DSPy's chat format (reasoning is read by
# ChainOfThought, ignored by Predict).
ANSWER = "[[ ## reasoning ## ]]\nTwo plus two is four.\n\n[[ ## answer ## ]]\n4\n\n[[ ## completed ## ]]"


def lm(fails=False):
    response = RuntimeError("the model is down") if fails else ANSWER
    return dspy.LM(MODEL, mock_response=response, cache=False, num_retries=0)


dspy.configure(lm=lm())


def use_failing_lm():
    """From now on, this worker's model fails every call."""
    dspy.configure(lm=lm(fails=True))
    return True


class Verdict(pydantic.BaseModel):
    answer: str
    confidence: float


def verdict():
    return {"verdict": Verdict(answer="4", confidence=0.9), "example": dspy.Example(question="2+2?", answer="4")}


def batch(questions):
    """Predict.batch over several questions (DSPy runs them on its own threads)."""
    predict = dspy.Predict("question -> answer")
    examples = [dspy.Example(question=q).with_inputs("question") for q in questions]
    return predict.batch(examples, num_threads=2)
