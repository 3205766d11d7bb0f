"""A module whose import raises an exception whose str() raises too."""


class SilentPreloadError(Exception):
    def __str__(self):
        raise RuntimeError("no text")


raise SilentPreloadError()
