"""`annotator train`: command-line options to FinetuneArgs, then train.finetune.main.

    annotator train --base BASE --data LABELED [--data MORE] --rubric RUBRIC.toml --out RUN_DIR

Errors the user can fix raise AnnotatorError, which `annotator` prints as one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from train.args import (
    AugmentArgs,
    DataArgs,
    EvalArgs,
    FinetuneArgs,
    HardwareArgs,
    LoraArgs,
    TrainArgs,
)

EPILOG = """\
BASE is a Hugging Face model directory or a GGUF file (dequantized into RUN_DIR/base; the
default is the packaged Gemma 3 270M). LABELED files (.csv, .tsv, .jsonl) hold the rubric's
input columns and one column per dimension; ids as in `annotate`. RUN_DIR receives train.log,
split.json, validation.jsonl, metrics.jsonl, adapter/ (best by mean validation alpha) and
merged/ (the merged Hugging Face model and annotator_provenance.json). An existing RUN_DIR is
never overwritten: RUN_DIR-2, -3, ... is used instead.

On CUDA: QLoRA (4-bit NF4 base, bf16, 8-bit AdamW, gradient checkpointing). Without CUDA:
plain LoRA in fp32 on CPU (slow: small models and demos). Nothing uses the network.
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="annotator train", description="Fine-tune a base model on labelled items "
        "(QLoRA), validate with the engine's decoding, merge.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    d, a, lo, t, e, h = DataArgs, AugmentArgs, LoraArgs(), TrainArgs(), EvalArgs(), HardwareArgs()
    g = p.add_argument_group("inputs and output")
    g.add_argument("--base", type=Path, help="HF model directory or .gguf file [default: packaged Gemma 3 270M]")
    g.add_argument("--data", type=Path, action="append", required=True, metavar="LABELED",
                   help="labelled file; repeat for several")
    g.add_argument("--rubric", type=Path, required=True, help="rubric TOML")
    g.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run directory")
    g.add_argument("--id-col", default=None, help="id column [default: id, else row number]")
    g.add_argument("--val-fraction", type=float, default=d.val_fraction, help="share of items held out (by item)")
    g.add_argument("--max-tokens", type=int, default=d.max_tokens, help="longest sequence; longer items are cut")

    g = p.add_argument_group("augmentation (training examples only)")
    g.add_argument("--templates", action=argparse.BooleanOptionalAction, default=a.templates,
                   help="vary the instructions (fixed wrappers + --paraphrases)")
    g.add_argument("--paraphrases", type=Path, help="file of paraphrased instructions separated by --- lines")
    g.add_argument("--reorder-inputs", action=argparse.BooleanOptionalAction, default=a.reorder_inputs,
                   help="show the inputs in random order")
    g.add_argument("--shuffle-values", action=argparse.BooleanOptionalAction, default=a.shuffle_values,
                   help="shuffle the values listed for nominal dimensions")
    g.add_argument("--token-dropout", type=float, default=a.token_dropout,
                   help="fraction of prompt tokens replaced with pad/unk (0: off)")
    g.add_argument("--token-dropout-share", type=float, default=a.token_dropout_share,
                   help="probability an example gets token dropout")

    g = p.add_argument_group("LoRA and optimisation")
    g.add_argument("--lora-r", type=int, default=lo.r)
    g.add_argument("--lora-alpha", type=int, default=lo.alpha)
    g.add_argument("--lora-dropout", type=float, default=lo.dropout)
    g.add_argument("--epochs", type=int, default=t.epochs)
    g.add_argument("--batch-size", type=int, default=t.batch_size, help="examples per optimizer step")
    g.add_argument("--micro-batch-size", type=int, default=t.micro_batch_size, help="examples per forward pass")
    g.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    g.add_argument("--lr", type=float, default=t.lr)
    g.add_argument("--warmup", type=float, default=t.warmup, help="share of steps warming up")
    g.add_argument("--weight-decay", type=float, default=t.weight_decay)
    g.add_argument("--seed", type=int, default=t.seed)

    g = p.add_argument_group("validation")
    g.add_argument("--eval-every", type=int, default=e.every, help="steps between validations [default: each epoch]")
    g.add_argument("--eval-before", action=argparse.BooleanOptionalAction, default=e.before,
                   help="validate the untrained base first")
    g.add_argument("--eval-batch-size", type=int, default=e.batch_size)

    g = p.add_argument_group("hardware")
    g.add_argument("--device", choices=["auto", "cuda", "cpu"], default=h.device)
    g.add_argument("--quantize", choices=["auto", "nf4", "none"], default=h.quantize,
                   help="auto: nf4 on CUDA, none on CPU")
    g.add_argument("--optimizer", choices=["auto", "adamw8bit", "adamw"], default=h.optimizer)
    g.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="[default: on for CUDA]")
    g.add_argument("--threads", type=int, default=h.threads, help="CPU threads for torch (0: all)")
    return p


def parse(argv: list[str]) -> FinetuneArgs:
    ns = parser().parse_args(argv)
    base = ns.base
    if base is None:
        from annotator.modelfile import default_model_path

        base = default_model_path()
    return FinetuneArgs(
        base=base,
        out=ns.out,
        data=DataArgs(paths=ns.data, rubric=ns.rubric, id_col=ns.id_col or "id",
                      id_col_given=ns.id_col is not None, val_fraction=ns.val_fraction,
                      max_tokens=ns.max_tokens),
        augment=AugmentArgs(templates=ns.templates, paraphrases=ns.paraphrases,
                            reorder_inputs=ns.reorder_inputs, shuffle_values=ns.shuffle_values,
                            token_dropout=ns.token_dropout, token_dropout_share=ns.token_dropout_share),
        lora=LoraArgs(r=ns.lora_r, alpha=ns.lora_alpha, dropout=ns.lora_dropout),
        train=TrainArgs(epochs=ns.epochs, batch_size=ns.batch_size,
                        micro_batch_size=min(ns.micro_batch_size, ns.batch_size),
                        max_steps=ns.max_steps, lr=ns.lr, warmup=ns.warmup,
                        weight_decay=ns.weight_decay, seed=ns.seed),
        eval=EvalArgs(every=ns.eval_every, before=ns.eval_before, batch_size=ns.eval_batch_size),
        hardware=HardwareArgs(device=ns.device, quantize=ns.quantize, optimizer=ns.optimizer,
                              gradient_checkpointing=ns.gradient_checkpointing, threads=ns.threads),
    )


def main(argv: list[str]) -> None:
    args = parse(argv)
    _check(args)
    try:  # --help and argument errors work without the extra; training needs it
        from train.finetune import main as finetune
    except ImportError as exc:
        from annotator.errors import AnnotatorError

        raise AnnotatorError(f"training needs the [train] extra: pip install '.[train]' ({exc})") from exc

    outcome = finetune(args)
    best = outcome.best
    before = outcome.before
    print(f"run directory: {outcome.run_dir}")
    if before is not None:
        print("validation alpha before: " + _alphas(before.alpha))
    if best is not None:
        print(f"validation alpha after (step {best.step}): " + _alphas(best.alpha))
    print(f"merged model: {outcome.run_dir / 'merged'}")


def _check(args: FinetuneArgs) -> None:
    from annotator.errors import AnnotatorError

    problems = []
    if not 0 <= args.augment.token_dropout < 1:
        problems.append("--token-dropout must be in [0, 1)")
    if not 0 <= args.augment.token_dropout_share <= 1:
        problems.append("--token-dropout-share must be in [0, 1]")
    if args.train.epochs < 1 or args.train.batch_size < 1 or args.train.micro_batch_size < 1:
        problems.append("--epochs, --batch-size and --micro-batch-size must be at least 1")
    if args.train.max_steps is not None and args.train.max_steps < 1:
        problems.append("--max-steps must be at least 1")
    if not 0 <= args.train.warmup < 1:
        problems.append("--warmup must be in [0, 1)")
    if args.lora.r < 1:
        problems.append("--lora-r must be at least 1")
    if args.eval.batch_size < 1 or args.eval.every < 0:
        problems.append("--eval-batch-size must be at least 1 and --eval-every at least 0")
    if problems:
        raise AnnotatorError("; ".join(problems))


def _alphas(alpha: dict) -> str:
    return ", ".join(f"{k} {'undefined' if v is None else f'{v:.3f}'}" for k, v in alpha.items())
