# dspy_setup.py, in a folder of `python_path`: the workers import it at start.
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import
import dspy  # noqa: E402

model = os.environ.get("DSPEX_LM_MODEL")
if model:  # a real model; its key comes from the usual variable (OPENAI_API_KEY, …)
    dspy.configure(lm=dspy.LM(model))
else:  # offline: litellm's mock response, which reports token usage as a real model does
    answer = "[[ ## reasoning ## ]]\nThe pool runs Python workers.\n\n[[ ## answer ## ]]\nThe bridge.\n"
    dspy.configure(lm=dspy.LM("openai/gpt-4o-mini", mock_response=answer, cache=False))
