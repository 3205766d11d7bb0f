"""For the forked-worker tests: which process imported this module, and who serves."""

import os
import time

# With `fork_workers`, the template imports this once; its workers inherit it.
IMPORTED_BY = os.getpid()
# An import that takes a while, as DSPy's or a model's does.
time.sleep(0.5)


def imported_by():
    return IMPORTED_BY


def pid():
    return os.getpid()
