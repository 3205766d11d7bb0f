"""A module that takes a while to import, as one that loads a model or DSPy does (it waits,
so that its workers' starts overlap whatever the number of cores)."""

import time

time.sleep(0.8)
