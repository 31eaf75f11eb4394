"""llama.cpp as a run uses it: the settings fixed for a run, the backend chosen for them,
loading a model (with a layer tap for hidden states), and the versions a run records."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import llama_cpp

from annotator import __version__
from annotator.errors import AnnotatorError
from annotator.inference.layer_tap import LayerTap, contexts_with
from annotator.inference.llama_quiet import quiet_llama


@dataclass(frozen=True)
class EngineSettings:
    """Fixed for a run and recorded with it: changing any of these may change logits."""

    n_ctx: int = 4096
    n_batch: int = 512
    n_ubatch: int = 512
    n_threads: int = 0  # 0: the CPUs this process may use
    flash_attn: bool = False
    gpu: str = "auto"  # auto | cpu | cuda
    n_parallel: int = 1  # items decoded together as parallel sequences; 1: one at a time
    read_hidden: bool = True  # read the hidden state at each decision
    hidden_layer: int | None = None  # the block whose output is read; None: the middle one

    def resolved(self) -> EngineSettings:
        threads = self.n_threads or len(os.sched_getaffinity(0))
        return replace(self, n_ubatch=min(self.n_ubatch, self.n_batch), n_threads=threads)


def backend_choice(gpu: str) -> tuple[str, str]:
    """('cuda' or 'cpu', why) for this build and the user's --gpu choice."""
    offload = bool(llama_cpp.llama_supports_gpu_offload())
    if gpu == "cpu":
        return "cpu", "CPU requested"
    if offload:
        return "cuda", "llama.cpp build supports GPU offload; all layers offloaded"
    if gpu == "cuda":
        raise AnnotatorError("--gpu cuda: this llama-cpp-python build has no GPU support")
    return "cpu", "this llama-cpp-python build has no GPU offload (CPU build)"


def load_llama(
    model_path: str | Path, settings: EngineSettings, adapter: str | Path | None = None
) -> llama_cpp.Llama:
    """The model in llama.cpp with the run's fixed settings (one load serves metadata and work),
    with a LoRA adapter GGUF applied on top when `adapter` is given. With `read_hidden` its
    contexts carry a layer tap (`llm.layer_tap`) that the engine aims at a block."""
    s = settings.resolved()
    backend, _ = backend_choice(s.gpu)
    quiet_llama()
    tap = LayerTap() if s.read_hidden else None
    try:
        with contexts_with(tap) if tap is not None else contextlib.nullcontext():
            llm = llama_cpp.Llama(
                model_path=str(model_path),
                n_ctx=s.n_ctx,
                n_batch=s.n_batch,
                n_ubatch=s.n_ubatch,
                n_threads=s.n_threads,
                n_threads_batch=s.n_threads,
                flash_attn=s.flash_attn,
                n_gpu_layers=-1 if backend == "cuda" else 0,
                seed=0,
                logits_all=False,
                lora_path=None if adapter is None else str(adapter),
                verbose=False,
            )
    except (ValueError, RuntimeError) as exc:
        if adapter is not None and "LoRA" in str(exc):
            raise AnnotatorError(
                f"{adapter}: llama.cpp cannot apply this adapter to {model_path}"
            ) from exc
        raise AnnotatorError(
            f"{model_path}: damaged or truncated GGUF file (llama.cpp cannot load it)"
        ) from exc
    llm.layer_tap = tap  # type: ignore[attr-defined]
    return llm


def runtime_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"annotator": __version__}
    for name in ("llama-cpp-python", "gguf", "krippendorff", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    found["llama.cpp system"] = (
        llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
    )
    return found
