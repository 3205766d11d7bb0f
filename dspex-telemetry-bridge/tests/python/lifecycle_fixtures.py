"""Functions for the worker lifecycle tests: who serves, and memory that grows."""

import os

# What `grow` allocated, held for the worker's life.
_held = []


def pid():
    return os.getpid()


def grow(megabytes):
    """Holds `megabytes` more of resident memory (written, so the pages are really in use)."""
    _held.append(b"x" * (megabytes << 20))
    return os.getpid()


def held_megabytes():
    return sum(len(block) for block in _held) >> 20
