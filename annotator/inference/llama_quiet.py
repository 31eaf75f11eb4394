"""Keep llama.cpp's own log lines off the user's terminal.

llama-cpp-python installs a log callback that prints llama.cpp's messages to stderr and resets
its logger level on every model load, so we replace the callback with one that drops them.
Load failures still surface as exceptions, which become one-line errors.
"""

import ctypes

import llama_cpp


@llama_cpp.llama_log_callback
def _drop(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    return None


def quiet_llama() -> None:
    llama_cpp.llama_log_set(_drop, ctypes.c_void_p(0))
