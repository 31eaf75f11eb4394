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
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import llama_cpp

from annotator import __version__, prompt
from annotator.errors import AnnotatorError
from annotator.llama_quiet import quiet_llama
from annotator.parallel import ParallelDecoder, Step, StepResult
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
    n_parallel: int = 1  # items decoded together as parallel sequences; 1: one at a time

    def resolved(self) -> EngineSettings:
        threads = self.n_threads or len(os.sched_getaffinity(0))
        return replace(self, n_ubatch=min(self.n_ubatch, self.n_batch), n_threads=threads)


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
        self._parallel = (ParallelDecoder(self.llm, self.prefix_tokens, s)
                          if s.n_parallel > 1 else None)

    # -- public -----------------------------------------------------------------------------

    def annotate(self, fields: Mapping[str, str]) -> ItemResult:
        item_tokens, cut = self.fit_item(fields)
        decisions = self._run_steps(self._item_steps(item_tokens))
        return ItemResult(decisions, len(item_tokens), cut)

    def annotate_many(self, items: Iterable[Mapping[str, str]]) -> Iterator[ItemResult]:
        """Results in item order, items taken lazily. With `n_parallel` > 1, up to that many
        items are decoded together as parallel sequences (annotator/parallel.py)."""
        if self._parallel is None:
            for fields in items:
                yield self.annotate(fields)
            return
        sizes: list[tuple[int, int]] = []  # per item: tokens evaluated, tokens cut

        def steps() -> Iterator[Generator[Step, list[float] | None, StepResult]]:
            for fields in items:
                tokens, cut = self.fit_item(fields)
                sizes.append((len(tokens), cut))
                yield self._item_steps(tokens)

        for index, decisions in enumerate(self._parallel.run(steps())):
            yield ItemResult(decisions, *sizes[index])

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
        if self._parallel is not None:
            self._parallel.close()
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

    # Labelling an item is a generator of steps: (position, tokens to evaluate there, token ids
    # whose logits are wanted after the last of them; [] for none). A driver evaluates each
    # step and sends back those logits. The sequential driver below and the parallel one in
    # annotator/parallel.py run the same steps, so the decision logic exists once.

    def _item_steps(self, item_tokens: list[int]) -> Generator[Step, list[float] | None,
                                                                 dict[str, Decision]]:
        pos = len(self.prefix_tokens)
        pending = item_tokens + self._cue_and_lead(0)
        decisions: dict[str, Decision] = {}
        last = len(self.rubric.dimensions) - 1
        for index, dim in enumerate(self.rubric.dimensions):
            decision, rest = yield from self._decide(index, pos, pending)
            decisions[dim.name] = decision
            pos += len(pending)
            if index < last:
                pending = rest + self._cue_and_lead(index + 1)
        return decisions

    def _run_steps(self, steps: Generator[Step, list[float] | None, StepResult]) -> StepResult:
        """The sequential driver: one sequence in the Llama's own context."""
        reply: list[float] | None = None
        try:
            while True:
                pos, tokens, candidates = steps.send(reply)
                self.llm.n_tokens = pos  # eval() first drops the cache beyond this point
                self.llm.eval(tokens)
                reply = self._next_logits(candidates) if candidates else None
        except StopIteration as done:
            return done.value

    def _next_logits(self, token_ids: list[int]) -> list[float]:
        # Read only the candidate ids: no pass over the whole vocabulary in Python.
        logits = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return [logits[t] for t in token_ids]

    def _value_probs(self, node: Node, probs: list[float], mass: float, pos: int,
                     tokens: list[int]) -> Generator[Step, list[float] | None, None]:
        """Evaluate `tokens` at `pos` (they lead to `node`), then fill `probs` with each value's
        probability below `node`: the branches are explored from there."""
        forced: list[int] = []
        while node.value_index is None and len(node.children) == 1:
            token, node = next(iter(node.children.items()))
            forced.append(token)
        if forced:
            yield pos, tokens, []
            pos, tokens = pos + len(tokens), forced
        candidates = list(node.children)
        logits = yield pos, tokens, candidates
        assert logits is not None
        end = pos + len(tokens)
        for token, share in zip(candidates, restricted_softmax(logits), strict=True):
            child, share = node.children[token], mass * share
            leaf = only_leaf(child)
            if leaf is not None:
                probs[leaf] = share
            else:
                yield from self._value_probs(child, probs, share, end, [token])

    def _decide(self, index: int, pos: int, pending: list[int]
                ) -> Generator[Step, list[float] | None, tuple[Decision, list[int]]]:
        """Evaluate `pending` (item or previous answer, cue, lead) at `pos` and decide dimension
        `index`: the decision and the tokens of its value not yet evaluated."""
        dim, lead, branch = self.rubric.dimensions[index], *self.tries[index]
        probs = [0.0] * len(dim.values)
        yield from self._value_probs(branch, probs, 1.0, pos, pending)
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
