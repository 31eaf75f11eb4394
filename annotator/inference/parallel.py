"""Several items at once: parallel sequences in one llama_decode call (`--parallel N`).

On a GPU one decode of N short items costs little more than one item, so throughput grows
with N. It is an option, not the default: a batch of several sequences is computed with other
matrix shapes than one sequence alone, which can move logits in the last bits and, on a near
tie, a label (`bench/annotate.py` reports how many). The sequential engine stays the
reference.

How: a second llama.cpp context on the same loaded model, with N sequences, each in its own KV
stream of n_ctx cells (a unified cache would make every sequence attend over all cells). The
rubric prefix is evaluated once into sequence 0 and copied to the others
(`llama_memory_seq_cp`). Each item runs the engine's own step generator (`Engine._item_steps`)
on its sequence. Every round takes the next step of every item in flight, packs their tokens
into decodes of at most n_batch tokens (a long step spans several), and sends each item the
logits (and hidden state) it asked for. The hidden state is the engine's layer tap's row for the
token the step names (annotator/inference/layer_tap.py). With one sequence the rows come back in
batch order. With several, llama.cpp may regroup a decode's tokens by sequence, so a piece that
wants a hidden state has its last few tokens (from that token on) decoded on their own, one
sequence per decode, after the rest went in the shared batch. A finished item's sequence is cut
back to the prefix and takes the next item.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import llama_cpp

from annotator.errors import AnnotatorError
from annotator.inference.backend import EngineSettings
from annotator.inference.steps import Reading, Step, StepResult, Steps

_END = object()  # ParallelDecoder.run: no item left


@dataclass
class _Piece:
    seq: int
    pos: int
    tokens: list[int]
    wants: list[int]  # candidate ids to read after this piece's last token ([]: none)
    hidden: int = 0  # read the hidden state at the k-th token from the end too (0: no)


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
            raise AnnotatorError(
                f"--parallel {self.n_seq}: llama.cpp could not make a context "
                f"of {params.n_ctx} tokens for {self.n_seq} sequences"
            )
        adapter = getattr(llm, "_lora_adapter", None)  # a LoRA adapter applies here too
        if adapter is not None:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
            scales = (ctypes.c_float * 1)(llm.lora_scale)
            llama_cpp.llama_set_adapters_lora(self.ctx, adapters, 1, scales)
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        # The context copies the Llama's parameters, the tap's callback included.
        self.tap = getattr(llm, "layer_tap", None)
        self._decode([_Piece(0, 0, prefix, [])])
        for seq in range(1, self.n_seq):
            llama_cpp.llama_memory_seq_cp(self.memory, 0, seq, -1, -1)

    def run(self, items: Iterable[Steps | None]) -> Iterator[StepResult]:
        """Drive the items' step generators (taken lazily); yield results in item order, each
        as soon as it and every item before it are done, and before the next item is taken.
        A `None` among the items means none is ready now: the items in flight are finished
        (and their results yielded) before the next is asked for."""
        results: dict[int, StepResult] = {}
        source = iter(items)
        active: dict[int, tuple[int, Steps, Step]] = {}  # seq -> (item index, steps, next step)
        taken = reported = 0
        dry = exhausted = False  # dry: the items said none is ready; exhausted: none is left

        def start(seq: int) -> None:
            nonlocal taken, dry, exhausted
            while not (dry or exhausted):
                steps = next(source, _END)
                if steps is _END:
                    exhausted = True
                elif steps is None:
                    dry = True
                else:
                    index, taken = taken, taken + 1
                    step = self._first(steps, index, results)
                    if step is not None:
                        active[seq] = (index, steps, step)
                        return

        while True:
            while reported in results:  # saved by the caller before the next item is taken
                yield results.pop(reported)
                reported += 1
            for seq in range(self.n_seq):
                if seq not in active:
                    start(seq)
            if not active:
                if exhausted and not results:
                    return
                dry = False  # everything taken is done and yielded: ask again
                continue
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
        tails = [n for n, p in enumerate(pieces) if p.hidden] if self.n_seq > 1 and self.tap else []
        if not tails:
            self._decode_group(pieces, list(range(len(pieces))), replies)
            return replies
        # The tail of a piece that wants a hidden state (from that token on) is decoded alone,
        # after the rest of it went in the shared batch.
        given, pieces = len(pieces), list(pieces)
        for n in tails:
            p = pieces[n]
            cut = len(p.tokens) - p.hidden
            pieces[n] = _Piece(p.seq, p.pos + cut, p.tokens[cut:], p.wants, p.hidden)
            if cut:
                pieces.append(_Piece(p.seq, p.pos, p.tokens[:cut], []))
        shared = [n for n in range(len(pieces)) if n not in tails]
        replies += [None] * (len(pieces) - len(replies))
        self._decode_group(pieces, shared, replies)
        for n in tails:
            self._decode_group(pieces, [n], replies)
        return replies[:given]

    def _decode_group(
        self, pieces: list[_Piece], group: list[int], replies: list[Reading | None]
    ) -> None:
        """Decode the pieces `group` names, in as many decodes as n_batch needs; the tap (when
        a piece wants a hidden state) keeps every row of them, in batch order."""
        tapped = self.tap is not None and any(pieces[n].hidden for n in group)
        rows_at: list[tuple[int, int]] = []  # (piece index, row among all rows of the group)
        total = 0
        for n in group:
            total += len(pieces[n].tokens)
            if pieces[n].hidden:
                rows_at.append((n, total - pieces[n].hidden))
        with self.tap.reading(tapped) if self.tap is not None else contextlib.nullcontext():
            self._decode_pieces(pieces, group, replies)
        if tapped:
            rows = self.tap.rows()
            if len(rows) != total:
                raise AnnotatorError(
                    f"llama.cpp computed {len(rows)} hidden rows for {total} "
                    "tokens; use --parallel 1"
                )
            for n, row in rows_at:
                reply = replies[n]
                assert reply is not None
                replies[n] = reply._replace(hidden=rows[row].copy())

    def _decode_pieces(
        self, pieces: list[_Piece], group: list[int], replies: list[Reading | None]
    ) -> None:
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

    def _flush(
        self, pieces: list[_Piece], reads: list[tuple[int, int]], replies: list[Reading | None]
    ) -> None:
        code = llama_cpp.llama_decode(self.ctx, self.batch)
        if code != 0:
            raise AnnotatorError(
                f"llama_decode failed ({code}) with {self.n_seq} parallel "
                "sequences; lower --parallel or --n-ctx"
            )
        for number, row in reads:
            logits = llama_cpp.llama_get_logits_ith(self.ctx, row)
            replies[number] = Reading([logits[t] for t in pieces[number].wants], None)
        reads.clear()
        self.batch.n_tokens = 0
