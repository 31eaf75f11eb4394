"""The settings of a training run, grouped as in LitGPT: one dataclass per concern.

Defaults follow the paper's recipe (arXiv 2604.00586): LoRA r=16, alpha=32, dropout 0 on every
attention and MLP projection; lr 5e-5, linear schedule with 5% warmup, weight decay 0.01,
8-bit AdamW, seed 3407, batch 32, 5 epochs, 20% of items held out for validation.
All of it is recorded in the run's provenance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class DataArgs:
    paths: list[Path]
    """Labelled files (.csv, .tsv, .jsonl): the rubric's input columns plus one column per
    dimension. Same id rules as `annotate`; several files need an id column each."""
    rubric: Path
    """Rubric TOML: inputs, dimensions and their allowed values."""
    id_col: str = "id"
    """Column holding item ids (else the row number, as in `annotate`)."""
    id_col_given: bool = False
    """Whether the user named `id_col` (then a file without it is an error)."""
    rater_col: str | None = None
    """Column naming each row's rater: rows sharing an id are that item's ratings, one per
    rater (without it, every row of a repeated id is one more rating)."""
    project: Path | None = None
    """A project file (instead of `paths`): its items and every reviewer's reviews, one
    rating per reviewer (the value `annotator reviews export` would take for them)."""
    val_fraction: float = 0.2
    """Share of items held out for validation. The split is by item (items with identical
    inputs stay together) and happens before any augmentation."""
    max_tokens: int = 2048
    """Longest training sequence. Longer items are cut with the engine's rule (end of the last
    input first, marked " [...]"); validation cuts them the same way."""


@dataclass
class AugmentArgs:
    templates: bool = True
    """Vary the instructions: the rubric's own text, a few fixed wrappers of it, and any
    paraphrases given. Validation always uses the rubric's own text, as inference does."""
    paraphrases: Path | None = None
    """Text file of paraphrased instructions, one per block, blocks separated by a line
    holding only `---`. Empty blocks are an error (never an empty prompt)."""
    reorder_inputs: bool = True
    """Show the rubric's inputs in a random order (rubrics with two or more inputs)."""
    shuffle_values: bool = True
    """Shuffle the allowed values shown for nominal dimensions (scales keep their order)."""
    token_dropout: float = 0.03
    """Fraction of an example's prompt tokens (rubric and item text; never BOS, cues or
    answers) replaced with a neutral token (pad, else unk)."""
    token_dropout_share: float = 0.5
    """Probability that a training example gets token dropout at all. Validation never does."""


@dataclass
class LossArgs:
    target: str = "auto"
    """soft: train each answer towards the raters' distribution; majority: towards the
    majority value only; auto: soft when some item has more than one rating."""
    loss: str = "ce"
    """Ordinal and interval dimensions: ce (cross-entropy), expected (squared error of the
    probability-weighted score against the raters' mean, positions scaled to [0, 1]) or
    both (their sum). Nominal dimensions always use cross-entropy."""
    class_weights: str = "none"
    """Nominal dimensions: balanced (weight each value by n / (k * its training count)) or
    none."""


@dataclass
class LoraArgs:
    r: int = 16
    """LoRA rank."""
    alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = 0.0
    """Dropout on the LoRA input."""
    targets: tuple[str, ...] = LORA_TARGETS
    """Modules that get an adapter: every attention and MLP projection."""


@dataclass
class TrainArgs:
    epochs: int = 5
    """Passes over the training items (each pass draws fresh augmentations)."""
    batch_size: int = 32
    """Examples per optimizer step."""
    micro_batch_size: int = 4
    """Examples per forward pass; batch_size / micro_batch_size steps of gradient accumulation."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (tests, quick looks); None: all epochs."""
    lr: float = 5e-5
    """Peak learning rate (linear warmup, then linear decay to 0)."""
    warmup: float = 0.05
    """Share of the optimizer steps spent warming up."""
    weight_decay: float = 0.01
    """AdamW weight decay on the adapter weights."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0: none)."""
    seed: int = 3407
    """Seed of the split, the augmentations, the adapter's initialisation and data order."""


@dataclass
class EvalArgs:
    every: int = 0
    """Validate every this many optimizer steps; 0: at the end of each epoch (and always at
    the last step)."""
    before: bool = True
    """Validate the untrained base first, to report alpha before training."""
    batch_size: int = 8
    """Sequences per forward pass when scoring validation items."""
    patience: int = 3
    """Stop training after this many validations in a row without a better one (the kept
    checkpoint ranks as train.curve.SELECTION says); 0: never stop early."""


@dataclass
class HardwareArgs:
    device: str = "auto"
    """auto (CUDA when present, else CPU), cuda or cpu."""
    quantize: str = "auto"
    """auto (nf4 on CUDA, none on CPU), nf4 (4-bit base, bitsandbytes) or none."""
    optimizer: str = "auto"
    """auto (adamw8bit with a quantized base on CUDA, else adamw), adamw8bit or adamw."""
    gradient_checkpointing: bool | None = None
    """Recompute activations in the backward pass; None: on for CUDA, off for CPU."""
    threads: int = 0
    """CPU threads for torch (0: the CPUs this process may use)."""


@dataclass
class FinetuneArgs:
    base: Path
    """A Hugging Face model directory, or a GGUF file (dequantized into RUN_DIR/base)."""
    out: Path
    """Run directory; when it exists and is not empty, RUN_DIR-2, -3, ... is used instead."""
    data: DataArgs
    augment: AugmentArgs = field(default_factory=AugmentArgs)
    loss: LossArgs = field(default_factory=LossArgs)
    lora: LoraArgs = field(default_factory=LoraArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    eval: EvalArgs = field(default_factory=EvalArgs)
    hardware: HardwareArgs = field(default_factory=HardwareArgs)

    def as_dict(self) -> dict:
        """JSON-ready (paths as text), for the log and the provenance."""
        found = _jsonable(asdict(self))
        assert isinstance(found, dict)
        return found


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
