"""The annotation engine: a GGUF model in llama.cpp, constrained and deterministic.

How an item is labelled:
  1. The rubric prefix is evaluated once per run and stays in the KV cache.
  2. Per item the cache is cut back to the prefix and the item tokens plus the first cue are
     evaluated, so every item, the first included, is computed the same way whatever came
     before it (same results in any item order).
  3. Per dimension the next-token logits are read only at the token ids that can start an
     allowed value. Values whose tokens share a prefix form a trie; branches are resolved with
     extra forward steps, so each value gets its exact sequence probability. The answer is the
     most probable allowed value: never free text, never a parse.
  4. The chosen value's tokens and the next cue are appended and evaluated in one step.

Texts that do not fit the context are cut by `fit_item` (see its docstring) and flagged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import llama_cpp

from annotator import __version__, prompt
from annotator.errors import AnnotatorError
from annotator.llama_quiet import quiet_llama
from annotator.rubric import Rubric, Value
from annotator.trie import Node, build_trie, lead_and_branch, only_leaf, restricted_softmax


@dataclass(frozen=True)
class EngineSettings:
    """Fixed for a run and recorded with it: changing any of these may change logits."""

    n_ctx: int = 4096
    n_batch: int = 512
    n_ubatch: int = 512
    n_threads: int = 0  # 0: the CPUs this process may use
    flash_attn: bool = False
    gpu: str = "auto"  # auto | cpu | cuda

    def resolved(self) -> EngineSettings:
        threads = self.n_threads or len(os.sched_getaffinity(0))
        return EngineSettings(self.n_ctx, self.n_batch, min(self.n_ubatch, self.n_batch),
                              threads, self.flash_attn, self.gpu)


@dataclass(frozen=True)
class Decision:
    value: Value
    prob: float  # probability among the allowed values
    margin: float  # prob minus the runner-up's prob


@dataclass(frozen=True)
class ItemResult:
    decisions: dict[str, Decision]
    n_tokens: int  # item tokens evaluated (after any truncation)
    truncated_tokens: int  # tokens cut from the item's inputs; 0 when it fit


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


def load_llama(model_path: str | Path, settings: EngineSettings,
               adapter: str | Path | None = None) -> llama_cpp.Llama:
    """The model in llama.cpp with the run's fixed settings (one load serves metadata and work),
    with a LoRA adapter GGUF applied on top when `adapter` is given."""
    s = settings.resolved()
    backend, _ = backend_choice(s.gpu)
    quiet_llama()
    try:
        return llama_cpp.Llama(
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
            raise AnnotatorError(f"{adapter}: llama.cpp cannot apply this adapter to {model_path}") from exc
        raise AnnotatorError(f"{model_path}: damaged or truncated GGUF file (llama.cpp cannot load it)") from exc


class Engine:
    def __init__(self, model_path: str | Path, rubric: Rubric, settings: EngineSettings,
                 llm: llama_cpp.Llama | None = None):
        """`llm`: a model already loaded by `load_llama` with the same settings."""
        self.rubric = rubric
        self.settings = settings.resolved()
        self.backend, self.backend_reason = backend_choice(self.settings.gpu)
        s = self.settings
        self.llm = llm if llm is not None else load_llama(model_path, s)
        if self.llm.n_ctx() < s.n_ctx:
            raise AnnotatorError(f"{model_path}: context {s.n_ctx} is more than the model allows")

        self.prefix_tokens = self._tok(prompt.render_prefix(rubric), bos=True)
        self.cue_tokens = [self._tok(prompt.render_cue(d)) for d in rubric.dimensions]
        self.value_tokens = [
            [[t for piece in prompt.render_answer(v) for t in self._tok(piece)] for v in d.values]
            for d in rubric.dimensions
        ]
        # Per dimension: the tokens every value starts with (evaluated with the cue, no choice
        # there) and the trie node where the values branch.
        self.tries = [lead_and_branch(build_trie(d, seqs))
                      for d, seqs in zip(rubric.dimensions, self.value_tokens, strict=True)]
        answers = sum(len(c) + max(map(len, seqs)) for c, seqs in zip(self.cue_tokens, self.value_tokens, strict=True))
        self.item_budget = s.n_ctx - len(self.prefix_tokens) - answers
        if self.item_budget < 32:
            raise AnnotatorError(
                f"the rubric needs {s.n_ctx - self.item_budget} of {s.n_ctx} context tokens; "
                "raise --n-ctx"
            )
        self._eval_prefix()

    # -- public -----------------------------------------------------------------------------

    def annotate(self, fields: Mapping[str, str]) -> ItemResult:
        item_tokens, cut = self.fit_item(fields)
        self.llm.n_tokens = len(self.prefix_tokens)
        pending = item_tokens + self._cue_and_lead(0)
        decisions: dict[str, Decision] = {}
        last = len(self.rubric.dimensions) - 1
        for index, dim in enumerate(self.rubric.dimensions):
            self.llm.eval(pending)
            decision, rest = self._decide(index)
            decisions[dim.name] = decision
            if index < last:
                pending = rest + self._cue_and_lead(index + 1)
        return ItemResult(decisions, len(item_tokens), cut)

    def fit_item(self, fields: Mapping[str, str]) -> tuple[list[int], int]:
        """The item's tokens and how many were cut to fit the context.

        Truncation rule: when the item is longer than the context left after the rubric and
        the answers, the inputs are cut from the end of the last input (in rubric order); when
        that input is exhausted the one before it is cut, and so on. A cut input ends in
        " [...]" so the model can see the text was shortened.
        """
        tokens = self._tok(prompt.render_item(self.rubric, fields))
        overflow = len(tokens) - self.item_budget
        if overflow <= 0:
            return tokens, 0
        original = len(tokens)
        cut_fields = dict(fields)
        for inp in reversed(self.rubric.inputs):
            while overflow > 0:
                text_tokens = self._tok(cut_fields[inp.column].strip())
                keep = len(text_tokens) - overflow - 8  # 8: room for the marker and re-merging
                if keep <= 0:
                    cut_fields[inp.column] = "[...]"
                    tokens = self._tok(prompt.render_item(self.rubric, cut_fields))
                    overflow = len(tokens) - self.item_budget
                    break
                kept = self.llm.detokenize(text_tokens[:keep]).decode("utf-8", errors="ignore")
                cut_fields[inp.column] = kept.rstrip() + " [...]"
                tokens = self._tok(prompt.render_item(self.rubric, cut_fields))
                overflow = len(tokens) - self.item_budget
            if overflow <= 0:
                return tokens, original - len(tokens)
        raise AnnotatorError("the input labels alone do not fit the context; raise --n-ctx")

    def describe(self) -> dict[str, object]:
        """What a run records: settings, backend and versions."""
        return {
            "settings": asdict(self.settings),
            "backend": self.backend,
            "backend_reason": self.backend_reason,
            "versions": runtime_versions(),
            "prompt_format": prompt.PROMPT_FORMAT,
            "prefix_tokens": len(self.prefix_tokens),
        }

    def close(self) -> None:
        self.llm.close()

    # -- internals --------------------------------------------------------------------------

    def _tok(self, text: str, bos: bool = False) -> list[int]:
        # special=False: control-token text inside an item stays plain text.
        return self.llm.tokenize(text.encode("utf-8"), add_bos=bos, special=False)

    def _eval_prefix(self) -> None:
        self.llm.reset()
        self.llm.eval(self.prefix_tokens)

    def _cue_and_lead(self, index: int) -> list[int]:
        return self.cue_tokens[index] + self.tries[index][0]

    def _next_logits(self, token_ids: list[int]) -> list[float]:
        # Read only the candidate ids: no pass over the whole vocabulary in Python.
        logits = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return [logits[t] for t in token_ids]

    def _value_probs(self, node: Node, probs: list[float], mass: float) -> None:
        """Fill `probs` with each value's probability below `node`.

        The cache holds the tokens on the path to `node`; it is left as it was found.
        """
        forced: list[int] = []
        while node.value_index is None and len(node.children) == 1:
            token, node = next(iter(node.children.items()))
            forced.append(token)
        if node.value_index is not None:
            probs[node.value_index] = mass
            return
        start = self.llm.n_tokens
        if forced:
            self.llm.eval(forced)
        tokens = list(node.children)
        shares = restricted_softmax(self._next_logits(tokens))
        for token, share in zip(tokens, shares, strict=True):
            child, share = node.children[token], mass * share
            leaf = only_leaf(child)
            if leaf is not None:
                probs[leaf] = share
            else:
                at = self.llm.n_tokens
                self.llm.eval([token])
                self._value_probs(child, probs, share)
                self.llm.n_tokens = at
        self.llm.n_tokens = start

    def _decide(self, index: int) -> tuple[Decision, list[int]]:
        """The decision for dimension `index` and the tokens of its value not yet evaluated."""
        dim, lead, branch = self.rubric.dimensions[index], *self.tries[index]
        probs = [0.0] * len(dim.values)
        self._value_probs(branch, probs, 1.0)
        # Highest probability wins; exact ties go to the value listed first (deterministic).
        order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))
        best, second = order[0], order[1]
        decision = Decision(dim.values[best], probs[best], probs[best] - probs[second])
        return decision, self.value_tokens[index][best][len(lead):]








def runtime_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"annotator": __version__}
    for name in ("llama-cpp-python", "gguf", "krippendorff", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    found["llama.cpp system"] = llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
    return found
