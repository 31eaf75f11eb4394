"""A middle layer's hidden state, copied out of llama.cpp's graph while it is computed.

A calibration head (annotator/calibration/heads.py) reads the residual stream after the first
half of the model's blocks at each decision point, not the final hidden state: the final layer
is specialised to predict the next token, the middle of the network holds more of what the text
is about. On the rubric development set a ridge head on the middle layer agreed with the raters
about twice as well as one on the final state, by cross-validation over held-out dialogues
(bench/quality.py usr-tc; see the CHANGELOG).

llama.cpp names each block's output `l_out-<block>` and calls an evaluation callback
(`cb_eval`, fixed when a context is made) for every node of every graph it computes, first
asking whether the caller wants that node's data. The tap answers no at once unless it is
armed (the engine arms it only for decodes whose last token is a decision point), and yes
for its one tensor, whose rows (one per token of the micro-batch) it copies with
`ggml_backend_tensor_get`, which works on any backend (CPU or CUDA). No extra decode, no
vocabulary logits for extra tokens.

The callback is also the only Python code that runs while llama.cpp computes, so a Ctrl-C
that comes then is raised inside it, where ctypes would print it and drop it (and the
callback's answer, lost with it, can stop the graph half-way). Decodes therefore run inside
`reading()`, which keeps such an interrupt and raises it once the decode has returned, before
anything reads its results: the command stops between items, as it does without the tap.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np

GGML_TYPE_F32 = 0


def _ggml() -> ctypes.CDLL:
    folder = Path(llama_cpp.__file__).resolve().parent / "lib"
    for name in ("libggml-base.so", "libggml-base.dylib", "ggml-base.dll"):
        if (folder / name).exists():
            lib = ctypes.CDLL(str(folder / name))
            break
    else:  # a build that links ggml statically into libllama
        lib = llama_cpp.llama_cpp._lib  # type: ignore[attr-defined]
    lib.ggml_get_name.argtypes = [ctypes.c_void_p]
    lib.ggml_get_name.restype = ctypes.c_char_p
    lib.ggml_nbytes.argtypes = [ctypes.c_void_p]
    lib.ggml_nbytes.restype = ctypes.c_size_t
    lib.ggml_backend_tensor_get.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_size_t,
    ]
    lib.ggml_backend_tensor_get.restype = None
    return lib


class LayerTap:
    """Copies a block's output rows from armed decodes (`set_layer` once the model is loaded
    and its block count known)."""

    def __init__(self) -> None:
        self._lib = _ggml()
        self._name = b""  # the tensor it copies, `l_out-<block>`
        self.armed = False
        self._chunks: list[np.ndarray] = []  # one (tokens, n_embd) array per graph computed
        self.n_embd = 0
        self._interrupt: BaseException | None = None  # a Ctrl-C that came during a decode
        # Kept on the object: llama.cpp holds only the function pointer.
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_node)

    def set_layer(self, layer: int, n_embd: int) -> None:
        self.n_embd = n_embd
        self._name = f"l_out-{layer}".encode()

    @contextlib.contextmanager
    def reading(self, armed: bool = True) -> Iterator[None]:
        """Around decodes: with `armed`, keep the tapped rows (`rows()` then holds them). Either
        way, a Ctrl-C that came while llama.cpp computed is raised on leaving the block."""
        self._chunks = []
        self._interrupt = None
        self.armed = armed
        previous = sys.unraisablehook

        def keep_interrupt(unraisable) -> None:
            # An exception out of a ctypes callback reaches sys.unraisablehook, not the caller.
            if (
                isinstance(unraisable.exc_value, KeyboardInterrupt)
                and getattr(unraisable.object, "__self__", None) is self
            ):
                self._interrupt = unraisable.exc_value
            else:
                previous(unraisable)

        sys.unraisablehook = keep_interrupt
        try:
            yield
        finally:
            sys.unraisablehook = previous
            self.armed = False
        if self._interrupt is not None:
            interrupt, self._interrupt = self._interrupt, None
            raise interrupt

    def rows(self) -> np.ndarray:
        """Every token's row from the last armed decode(s), in the order computed."""
        return np.concatenate(self._chunks) if self._chunks else np.zeros((0, self.n_embd))

    def _on_node(self, tensor: int, ask: bool, _user: int) -> bool:
        if not self.armed:
            return not ask  # ask: not wanted; after a compute (never reached): carry on
        if self._lib.ggml_get_name(tensor) != self._name:
            return not ask
        if ask:
            return True
        size = self._lib.ggml_nbytes(tensor)
        if (
            ctypes.c_int32.from_address(tensor).value == GGML_TYPE_F32
            and size % (4 * self.n_embd) == 0
        ):
            out = np.empty(size // 4, dtype=np.float32)
            self._lib.ggml_backend_tensor_get(tensor, out.ctypes.data, 0, size)
            self._chunks.append(out.reshape(-1, self.n_embd))
        return True  # False would stop the graph's computation


@contextlib.contextmanager
def contexts_with(tap: LayerTap) -> Iterator[None]:
    """While open, llama.cpp contexts that llama-cpp-python makes call `tap`'s callback
    (`Llama` builds its context parameters inside its constructor, with no way to pass one)."""
    module = llama_cpp.llama_cpp
    default = module.llama_context_default_params

    def with_tap():
        params = default()
        params.cb_eval = tap.callback
        params.cb_eval_user_data = None
        return params

    module.llama_context_default_params = with_tap
    try:
        yield
    finally:
        module.llama_context_default_params = default
