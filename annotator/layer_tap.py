"""A middle layer's hidden state, copied out of llama.cpp's graph while it is computed.

A calibration head (annotator/calibration.py) reads the residual stream after the first half
of the model's blocks at each decision point, not the final hidden state: the final layer is
specialised to predict the next token, the middle of the network holds more of what the
text is about. On the rubric development set a ridge head on the middle layer agreed with
the raters about twice as well as one on the final state, by cross-validation over held-out
dialogues (bench/quality.py usr-tc; see the CHANGELOG).

llama.cpp names each block's output `l_out-<block>` and calls an evaluation callback
(`cb_eval`, fixed when a context is made) for every node of every graph it computes, first
asking whether the caller wants that node's data. The tap answers no at once unless it is
armed (the engine arms it only for decodes whose last token is a decision point), and yes
for its one tensor, whose rows (one per token of the micro-batch) it copies with
`ggml_backend_tensor_get`, which works on any backend (CPU or CUDA). No extra decode, no
vocabulary logits for extra tokens.
"""

from __future__ import annotations

import contextlib
import ctypes
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
    lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                            ctypes.c_size_t]
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
        # Kept on the object: llama.cpp holds only the function pointer.
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_node)

    def set_layer(self, layer: int, n_embd: int) -> None:
        self.n_embd = n_embd
        self._name = f"l_out-{layer}".encode()

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Arm the tap for the decodes inside the block; `rows()` then holds their rows."""
        self._chunks = []
        self.armed = True
        try:
            yield
        finally:
            self.armed = False

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
        if ctypes.c_int32.from_address(tensor).value == GGML_TYPE_F32 and size % (4 * self.n_embd) == 0:
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
