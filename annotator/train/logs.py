"""The run directory and its log (RUN_DIR/train.log and stderr); the progress bar is
annotator.console's.

Log lines carry counts, ids, losses and alphas, never item text.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("train")


def claim_run_dir(out: Path) -> Path:
    """RUN_DIR, or RUN_DIR-2, -3, ... when it exists and is not empty: a run never
    overwrites an earlier one."""
    out = Path(out)
    candidate, number = out, 1
    while True:
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            if candidate.is_dir() and not any(candidate.iterdir()):
                return candidate
        number += 1
        candidate = out.with_name(f"{out.name}-{number}")


def start_logging(run_dir: Path) -> Callable[[], None]:
    """Log to RUN_DIR/train.log (with times) and to stderr; returns a function that stops it."""
    from rich.console import Console
    from rich.logging import RichHandler

    log.setLevel(logging.INFO)
    log.propagate = False
    to_file = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    console = Console(stderr=True)
    to_screen: logging.Handler
    if console.is_terminal:  # shares the console with the progress bar, which stays below
        to_screen = RichHandler(console=console, show_path=False, show_time=False, markup=False)
        to_screen.setFormatter(logging.Formatter("%(message)s"))
    else:  # pipes and CI logs: plain lines, unwrapped
        to_screen = logging.StreamHandler(sys.stderr)
        to_screen.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log.addHandler(to_file)
    log.addHandler(to_screen)
    _quiet_libraries()

    def stop() -> None:
        for handler in (to_file, to_screen):
            log.removeHandler(handler)
            handler.close()

    return stop


def log_start(args, run_dir: Path, inputs) -> None:
    """What a run starts from (train.finetune's FinetuneArgs and Inputs): counts, no text."""
    rubric, data, split, hardware = inputs.rubric, inputs.data, inputs.split, inputs.hardware
    if run_dir != Path(args.out):
        log.warning("%s is taken: this run writes to %s", args.out, run_dir)
    log.info("run directory %s", run_dir)
    for note in hardware.notes:
        log.warning(note)
    log.info(
        "device %s, base %s, compute %s, optimizer %s, gradient checkpointing %s",
        hardware.device,
        "4-bit NF4" if hardware.quantize == "nf4" else "not quantized",
        str(hardware.dtype).removeprefix("torch."),
        hardware.optimizer,
        "on" if hardware.gradient_checkpointing else "off",
    )
    log.info(
        "rubric %r %s: %d dimension(s); %d instruction text(s) for training",
        rubric.name,
        rubric.hash[:12],
        len(rubric.dimensions),
        len(inputs.texts),
    )
    log.info(
        "read %d labelled items from %d file(s); skipped %d rows",
        len(data.items),
        len(data.sha256),
        len(data.skipped),
    )
    for name, skip in data.skipped[:20]:
        log.warning(
            "skipped %s row %d%s: %s",
            name,
            skip.row,
            f" (id {skip.id})" if skip.id else "",
            skip.reason,
        )
    if len(data.skipped) > 20:
        log.warning("... and %d more skipped rows", len(data.skipped) - 20)
    log.info(
        "split (seed %d, by item, before augmentation): %d train items, %d validation items",
        args.train.seed,
        len(split.train),
        len(split.validation),
    )


def _quiet_libraries() -> None:
    # Library chatter (weight-loading bars, deprecation notices) would bury the run's own log.
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    logging.getLogger("peft").setLevel(logging.ERROR)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\.")
