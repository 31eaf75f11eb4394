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
  4. The most probable value's tokens and the next cue are appended and evaluated in one step.
  5. The label is what the run's readout (annotator/calibration/readout.py: a decision rule, a
     prior, a fitted head from annotator/calibration/heads.py) makes of each dimension's
     distribution and hidden state. The prompt always continues with the most probable value, so
     the model's pass never depends on the readout and a readout can be applied again to outputs.

The hidden state at each decision point (the cue's last token, before the answer) is read from
the same evaluation: the residual stream after the middle block, copied out of llama.cpp's
graph as the decode that holds that token computes it (annotator/inference/layer_tap.py).
Texts that do not fit the context are cut by `fit_item` (see its docstring) and flagged. A
multi-label dimension is decided as a yes/no dimension per value (annotator/multilabel.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import llama_cpp
import numpy as np

from annotator.calibration.readout import CONTENT_FREE_TEXTS, Readout, mean_distribution
from annotator.errors import AnnotatorError
from annotator.inference import prompt
from annotator.inference.backend import (
    EngineSettings,
    backend_choice,
    load_llama,
    runtime_versions,
)
from annotator.inference.layer_tap import LayerTap
from annotator.inference.parallel import ParallelDecoder
from annotator.inference.steps import RawItem, Reading, Step, Steps
from annotator.inference.trie import (
    Node,
    build_trie,
    lead_and_branch,
    only_leaf,
    restricted_softmax,
)
from annotator.multilabel import expand
from annotator.rubric import Rubric, Value

if TYPE_CHECKING:
    from annotator.calibration.heads import Head


@dataclass(frozen=True)
class Decision:
    value: Value
    prob: float  # the model's probability of this value among the allowed values
    margin: float  # how far the readout's decision is from flipping, 0..1 (readout.py)
    probs: tuple[float, ...] = ()  # every allowed value's probability, in rubric order


@dataclass(frozen=True)
class ItemResult:
    decisions: dict[str, Decision]
    n_tokens: int  # item tokens evaluated (after any truncation)
    truncated_tokens: int  # tokens cut from the item's inputs; 0 when it fit
    hidden: np.ndarray | None = None  # (dimensions, n_embd) float32 hidden states, or None

    def stored_probs(self) -> dict[str, list[float]]:
        """Every value's probability per dimension, as a project stores it."""
        return {k: list(d.probs) for k, d in self.decisions.items()}

    def stored_hidden(self) -> bytes | None:
        """The hidden states as a project stores them: float16, dimensions x n_embd."""
        from annotator.calibration.features import float16_states

        return None if self.hidden is None else float16_states(self.hidden).astype("<f2").tobytes()


def _check_head(head: Head, model_path: str | Path, llm: llama_cpp.Llama) -> None:
    """A head read from `model_path` fits the model it runs on: its n_embd and its block."""
    from annotator.modelfile import KEY_CALIBRATION

    n_embd, n_layer = llm.n_embd(), int(llama_cpp.llama_model_n_layer(llm.model))
    if head.n_embd != n_embd:
        raise AnnotatorError(
            f"{model_path}: metadata {KEY_CALIBRATION}: the head has n_embd "
            f"{head.n_embd}, the model {n_embd}; it was fitted on another model"
        )
    if not 0 <= head.layer < n_layer:
        raise AnnotatorError(
            f"{model_path}: metadata {KEY_CALIBRATION}: the head reads block "
            f"{head.layer}, the model has {n_layer} blocks"
        )


class Engine:
    def __init__(
        self,
        model_path: str | Path,
        rubric: Rubric,
        settings: EngineSettings,
        llm: llama_cpp.Llama | None = None,
        readout: Readout | None = None,
        head: Head | None = None,
    ):
        """`llm`: a model already loaded by `load_llama` with the same settings. `readout`
        turns distributions into labels (default: `--rule auto`); `head`, a fitted calibration head,
        labels the dimensions it covers from their hidden states (it needs read_hidden)."""
        self.rubric = rubric = expand(rubric)
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
        self.tries = [
            lead_and_branch(build_trie(d, seqs))
            for d, seqs in zip(rubric.dimensions, self.value_tokens, strict=True)
        ]
        answers = sum(
            len(c) + max(map(len, seqs))
            for c, seqs in zip(self.cue_tokens, self.value_tokens, strict=True)
        )
        self.item_budget = s.n_ctx - len(self.prefix_tokens) - answers
        if self.item_budget < 32:
            raise AnnotatorError(
                f"the rubric needs {s.n_ctx - self.item_budget} of {s.n_ctx} context tokens; "
                "raise --n-ctx"
            )
        if head is not None and not s.read_hidden:
            raise AnnotatorError("this model's calibration head needs hidden states (read_hidden)")
        if head is not None:
            _check_head(head, model_path, self.llm)
        self.head = head
        self.tap: LayerTap | None = getattr(self.llm, "layer_tap", None) if s.read_hidden else None
        if s.read_hidden:
            self.settings = s = replace(s, hidden_layer=self._aim_tap(s.hidden_layer, head))
        self._eval_prefix()
        self.readout = self._with_content_free_prior(readout or Readout())
        self._parallel = (
            ParallelDecoder(self.llm, self.prefix_tokens, s) if s.n_parallel > 1 else None
        )

    # -- public -----------------------------------------------------------------------------

    def annotate(self, fields: Mapping[str, str]) -> ItemResult:
        item_tokens, cut = self.fit_item(fields)
        raw = self._run_steps(self._item_steps(item_tokens))
        return self._result(raw, len(item_tokens), cut)

    def annotate_many(self, items: Iterable[Mapping[str, str] | None]) -> Iterator[ItemResult]:
        """Results in item order, items taken lazily; a result is yielded as soon as it and
        those before it are done, before the next item is taken. With `n_parallel` > 1, up to that many items are decoded together as
        parallel sequences (annotator/inference/parallel.py). A `None` among the items means none is
        ready now: the items in hand are finished (and yielded) before the next is asked for."""
        if self._parallel is None:
            for fields in items:
                if fields is not None:
                    yield self.annotate(fields)
            return
        sizes: list[tuple[int, int]] = []  # per item: tokens evaluated, tokens cut

        def steps() -> Iterator[Steps | None]:
            for fields in items:
                if fields is None:
                    yield None
                    continue
                tokens, cut = self.fit_item(fields)
                sizes.append((len(tokens), cut))
                yield self._item_steps(tokens)

        for index, raw in enumerate(self._parallel.run(steps())):
            yield self._result(raw, *sizes[index])

    def label(self, raw: RawItem) -> dict[str, Decision]:
        """The readout's decisions (the head's where it covers a dimension) for a raw pass."""
        decisions = {}
        for index, dim in enumerate(self.rubric.dimensions):
            probs = raw.probs[index]
            if self.head is not None and dim.name in self.head.dims:
                assert raw.hidden is not None
                chosen, margin = self.head.choose(dim, raw.hidden, probs)
            else:
                chosen, margin = self.readout.choose(dim, probs)
            decisions[dim.name] = Decision(dim.values[chosen], probs[chosen], margin, tuple(probs))
        return decisions

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
        """What a run records: settings, backend, versions and the readout."""
        readout = self.readout.describe(self.rubric)
        if self.head is not None:
            readout["head"] = self.head.describe()
        return {
            "settings": asdict(self.settings),
            "backend": self.backend,
            "backend_reason": self.backend_reason,
            "versions": runtime_versions(),
            "prompt_format": prompt.PROMPT_FORMAT,
            "prefix_tokens": len(self.prefix_tokens),
            "readout": readout,
        }

    def close(self) -> None:
        if self._parallel is not None:
            self._parallel.close()
        self.llm.close()

    # -- internals --------------------------------------------------------------------------

    def _tok(self, text: str, bos: bool = False) -> list[int]:
        # special=False: control-token text inside an item stays plain text.
        return self.llm.tokenize(text.encode("utf-8"), add_bos=bos, special=False)

    def _aim_tap(self, asked: int | None, head: Head | None) -> int:
        """The block whose output is read: the head's (it was fitted on it), else `asked`, else
        the middle block (after half of the model's blocks)."""
        if self.tap is None:
            raise AnnotatorError("reading hidden states needs a model loaded by load_llama")
        n_layer = int(llama_cpp.llama_model_n_layer(self.llm.model))
        layer = asked if asked is not None else max(0, n_layer // 2 - 1)
        if head is not None:
            if asked is not None and asked != head.layer:
                raise AnnotatorError(
                    f"the calibration head reads block {head.layer}, not block {asked}"
                )
            layer = head.layer
        if not 0 <= layer < n_layer:
            raise AnnotatorError(f"block {layer} does not exist: the model has {n_layer}")
        self.tap.set_layer(layer, self.llm.n_embd())
        return layer

    def _eval_prefix(self) -> None:
        self.llm.reset()
        self._eval(self.prefix_tokens)

    def _eval(self, tokens: list[int], armed: bool = False) -> None:
        """Evaluate `tokens` where the Llama stands; `armed`: the tap keeps their rows. A context
        with a tap's callback always decodes inside `reading` (annotator/inference/layer_tap.py)."""
        tap: LayerTap | None = getattr(self.llm, "layer_tap", None)
        with tap.reading(armed) if tap is not None else contextlib.nullcontext():
            self.llm.eval(tokens)

    def _with_content_free_prior(self, readout: Readout) -> Readout:
        """The readout with the content-free prior: the mean distribution over items whose
        inputs say nothing. Computed for every run (three short items), so that it is on record
        and `annotator calibrate` can apply it later."""
        passes = []
        for text in CONTENT_FREE_TEXTS:
            tokens, _ = self.fit_item({i.column: text for i in self.rubric.inputs})
            passes.append(self._run_steps(self._item_steps(tokens)).probs)
        priors = {
            dim.name: tuple(mean_distribution([p[index] for p in passes]))
            for index, dim in enumerate(self.rubric.dimensions)
        }
        return replace(readout, priors={**priors, **readout.priors})

    def _result(self, raw: RawItem, n_tokens: int, cut: int) -> ItemResult:
        return ItemResult(self.label(raw), n_tokens, cut, raw.hidden)

    def _cue_and_lead(self, index: int) -> list[int]:
        return self.cue_tokens[index] + self.tries[index][0]

    # Labelling an item is a generator of steps (annotator/inference/steps.py): the sequential
    # driver below and the parallel one in annotator/inference/parallel.py run the same steps,
    # so the decision logic exists once.

    def _item_steps(self, item_tokens: list[int]) -> Steps:
        pos = len(self.prefix_tokens)
        pending = item_tokens + self._cue_and_lead(0)
        probs: list[list[float]] = []
        hidden: list[np.ndarray] = []
        last = len(self.rubric.dimensions) - 1
        for index in range(len(self.rubric.dimensions)):
            dim_probs, state, rest = yield from self._decide(index, pos, pending)
            probs.append(dim_probs)
            if state is not None:
                hidden.append(state)
            pos += len(pending)
            if index < last:
                pending = rest + self._cue_and_lead(index + 1)
        return RawItem(probs, np.stack(hidden) if hidden else None)

    def _run_steps(self, steps: Steps) -> RawItem:
        """The sequential driver: one sequence in the Llama's own context."""
        reply: Reading | None = None
        try:
            while True:
                pos, tokens, candidates, hidden_at = steps.send(reply)
                self.llm.n_tokens = pos  # eval() first drops the cache beyond this point
                self._eval(tokens, armed=bool(hidden_at) and self.tap is not None)
                state = self.tap.rows()[-hidden_at].copy() if hidden_at and self.tap else None
                reply = Reading(self._next_logits(candidates), state) if candidates else None
        except StopIteration as done:
            return done.value

    def _next_logits(self, token_ids: list[int]) -> list[float]:
        # Read only the candidate ids: no pass over the whole vocabulary in Python.
        logits = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return [logits[t] for t in token_ids]

    def _value_probs(
        self,
        node: Node,
        probs: list[float],
        mass: float,
        pos: int,
        tokens: list[int],
        hidden_at: int = 0,
    ) -> Generator[Step, Reading | None, np.ndarray | None]:
        """Evaluate `tokens` at `pos` (they lead to `node`), then fill `probs` with each value's
        probability below `node`: the branches are explored from there. With `hidden_at` k,
        return the hidden state at the k-th of `tokens` from the end."""
        forced: list[int] = []
        while node.value_index is None and len(node.children) == 1:
            token, node = next(iter(node.children.items()))
            forced.append(token)
        assert not (forced and hidden_at), "a branch node has no forced tokens"
        if forced:
            yield pos, tokens, [], 0
            pos, tokens = pos + len(tokens), forced
        candidates = list(node.children)
        reading = yield pos, tokens, candidates, hidden_at
        assert reading is not None
        end = pos + len(tokens)
        for token, share in zip(candidates, restricted_softmax(reading.logits), strict=True):
            child, share = node.children[token], mass * share
            leaf = only_leaf(child)
            if leaf is not None:
                probs[leaf] = share
            else:
                yield from self._value_probs(child, probs, share, end, [token])
        return reading.hidden

    def _decide(
        self, index: int, pos: int, pending: list[int]
    ) -> Generator[Step, Reading | None, tuple[list[float], np.ndarray | None, list[int]]]:
        """Evaluate `pending` (item or previous answer, cue, lead) at `pos` and read dimension
        `index`: every value's probability, the hidden state (when read), and the tokens of the
        most probable value not yet evaluated (the prompt continues with it).

        The hidden state is read at the cue's last token (the question's ":"), before the
        tokens every value starts with: there the model has read the question and not yet
        begun to answer. (The first of those, a space, carries very large activations in the
        middle blocks, and a head on it agreed less with people by cross-validation.)"""
        dim, lead, branch = self.rubric.dimensions[index], *self.tries[index]
        probs = [0.0] * len(dim.values)
        hidden_at = 1 + len(lead) if self.settings.read_hidden else 0
        hidden = yield from self._value_probs(branch, probs, 1.0, pos, pending, hidden_at)
        # Exact ties go to the value listed first (deterministic).
        best = min(range(len(probs)), key=lambda i: (-probs[i], i))
        return probs, hidden, self.value_tokens[index][best][len(lead) :]
