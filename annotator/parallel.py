"""Several items at once: parallel sequences in one llama_decode call (`--parallel N`).

On a GPU one decode of N short items costs little more than one item, so throughput grows
with N. It is an option, not the default: a batch of several sequences is computed with other
matrix shapes than one sequence alone, which can move logits in the last bits and, on a near
tie, a label (`bench/annotate.py` reports how many). The sequential engine stays the
reference.

How: a second llama.cpp context on the same loaded model, with N sequences, each in its own
KV stream of n_ctx cells (a unified cache would make every sequence attend over all cells).
The rubric prefix is evaluated once into sequence 0 and copied to the others
(`llama_memory_seq_cp`). Each item runs the engine's own step
generator (`Engine._item_steps`) on its sequence. Every round takes the next step of every
item in flight, packs their tokens into decodes of at most n_batch tokens (a long step spans
several), and sends each item the logits (and hidden state) it asked for. The hidden state is
the engine's layer tap's row for the piece's last token (annotator/layer_tap.py). With
several sequences llama.cpp may regroup a decode's tokens by sequence, so the last token of
each piece that wants one goes in a decode of its own, one token per sequence in sequence
order, where the rows come back in batch order. A finished item's sequence is cut back to
the prefix and takes the next item.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import llama_cpp
import numpy as np

from annotator.errors import AnnotatorError

if TYPE_CHECKING:
    from annotator.engine import EngineSettings


class Reading(NamedTuple):
    """What a driver sends back for a step that asked for logits."""

    logits: list[float]  # at the candidate ids, in their order
    hidden: np.ndarray | None  # the hidden state there (the tapped block), when asked for


# (position, tokens to evaluate there, token ids whose logits are wanted after the last one,
# whether the hidden state is wanted there too)
Step = tuple[int, list[int], list[int], bool]
StepResult = Any  # what an item's generator returns (the engine's raw outputs)
Steps = Generator[Step, "Reading | None", StepResult]


@dataclass
class _Piece:
    seq: int
    pos: int
    tokens: list[int]
    wants: list[int]  # candidate ids to read after this piece's last token ([]: none)
    hidden: bool = False  # read the hidden state at its last token too


class ParallelDecoder:
    def __init__(self, llm: llama_cpp.Llama, prefix: list[int], settings: EngineSettings):
        self.n_seq = settings.n_parallel
        self.n_batch = settings.n_batch
        self.prefix_len = len(prefix)
        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        params.n_ctx = self.n_seq * settings.n_ctx  # split evenly between the streams
        params.n_seq_max = self.n_seq
        params.kv_unified = False
        self.ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not self.ctx:
            raise AnnotatorError(f"--parallel {self.n_seq}: llama.cpp could not make a context "
                                 f"of {params.n_ctx} tokens for {self.n_seq} sequences")
        adapter = getattr(llm, "_lora_adapter", None)  # a LoRA adapter applies here too
        if adapter is not None:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
            scales = (ctypes.c_float * 1)(llm.lora_scale)
            llama_cpp.llama_set_adapters_lora(self.ctx, adapters, 1, scales)
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.n_embd = llm.n_embd()
        # The context copies the Llama's parameters, the tap's callback included.
        self.tap = getattr(llm, "layer_tap", None)
        self._decode([_Piece(0, 0, prefix, [])])
        for seq in range(1, self.n_seq):
            llama_cpp.llama_memory_seq_cp(self.memory, 0, seq, -1, -1)

    def run(self, items: Iterable[Steps]) -> Iterator[StepResult]:
        """Drive the items' step generators (taken lazily); yield results in item order, each
        as soon as it and every item before it are done."""
        results: dict[int, StepResult] = {}
        waiting = iter(enumerate(items))
        active: dict[int, tuple[int, Steps, Step]] = {}  # seq -> (item index, steps, next step)
        reported = 0

        def start(seq: int) -> None:
            for index, steps in waiting:
                step = self._first(steps, index, results)
                if step is not None:
                    active[seq] = (index, steps, step)
                    return

        for seq in range(self.n_seq):
            start(seq)
        while active:
            pieces = [_Piece(seq, *step) for seq, (_, _, step) in active.items()]
            replies = self._decode(pieces)
            for seq, reply in zip(list(active), replies, strict=True):
                index, steps, _ = active[seq]
                try:
                    active[seq] = (index, steps, steps.send(reply))
                except StopIteration as done:
                    results[index] = done.value
                    del active[seq]
                    llama_cpp.llama_memory_seq_rm(self.memory, seq, self.prefix_len, -1)
                    start(seq)
            while reported in results:
                yield results.pop(reported)
                reported += 1
        while reported in results:
            yield results.pop(reported)
            reported += 1

    def close(self) -> None:
        if self.batch is not None:
            llama_cpp.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx:
            llama_cpp.llama_free(self.ctx)
            self.ctx = None

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _first(steps: Steps, index: int, results: dict[int, StepResult]) -> Step | None:
        try:
            return steps.send(None)
        except StopIteration as done:  # an item that needs no evaluation at all
            results[index] = done.value
            return None

    def _decode(self, pieces: list[_Piece]) -> list[Reading | None]:
        """Evaluate every piece on its sequence; return the wanted readings per piece."""
        for p in pieces:  # each sequence holds exactly `pos` tokens before its piece
            llama_cpp.llama_memory_seq_rm(self.memory, p.seq, p.pos, -1)
        replies: list[Reading | None] = [None] * len(pieces)
        if self.n_seq > 1:  # the last token of a piece that wants a hidden state, alone
            split = []
            for p in pieces:
                if p.hidden and len(p.tokens) > 1:
                    split.append(_Piece(p.seq, p.pos, p.tokens[:-1], []))
                    p.pos, p.tokens = p.pos + len(p.tokens) - 1, p.tokens[-1:]
            if split:
                self._decode_group(split, list(range(len(split))), [None] * len(split))
        for hidden in (False, True):
            group = sorted((n for n, p in enumerate(pieces) if p.hidden == hidden),
                           key=lambda n: pieces[n].seq)
            if group:
                self._decode_group(pieces, group, replies)
        return replies

    def _decode_group(self, pieces: list[_Piece], group: list[int],
                      replies: list[Reading | None]) -> None:
        batch = self.batch
        batch.n_tokens = 0
        reads: list[tuple[int, int]] = []  # (piece index, row in the batch)
        for number in group:
            p = pieces[number]
            for offset, token in enumerate(p.tokens):
                if batch.n_tokens == self.n_batch:
                    self._flush(pieces, reads, replies)
                row = batch.n_tokens
                batch.token[row] = token
                batch.pos[row] = p.pos + offset
                batch.n_seq_id[row] = 1
                batch.seq_id[row][0] = p.seq
                last = offset == len(p.tokens) - 1
                batch.logits[row] = last and bool(p.wants)
                if batch.logits[row]:
                    reads.append((number, row))
                batch.n_tokens += 1
        if batch.n_tokens:
            self._flush(pieces, reads, replies)

    def _flush(self, pieces: list[_Piece], reads: list[tuple[int, int]],
               replies: list[Reading | None]) -> None:
        tapped = self.tap is not None and any(pieces[n].hidden for n, _ in reads)
        with self.tap.reading() if tapped else contextlib.nullcontext():
            code = llama_cpp.llama_decode(self.ctx, self.batch)
        if code != 0:
            raise AnnotatorError(f"llama_decode failed ({code}) with {self.n_seq} parallel "
                                 "sequences; lower --parallel or --n-ctx")
        rows = self.tap.rows() if tapped else None
        if rows is not None and len(rows) != self.batch.n_tokens:
            raise AnnotatorError(f"llama.cpp computed {len(rows)} rows for a decode of "
                                 f"{self.batch.n_tokens} tokens; use --parallel 1")
        for number, row in reads:
            logits = llama_cpp.llama_get_logits_ith(self.ctx, row)
            hidden = rows[row].copy() if rows is not None and pieces[number].hidden else None
            replies[number] = Reading([logits[t] for t in pieces[number].wants], hidden)
        reads.clear()
        self.batch.n_tokens = 0
