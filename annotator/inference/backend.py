"""llama.cpp as a run uses it: the settings fixed for a run."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace


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
