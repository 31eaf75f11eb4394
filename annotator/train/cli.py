"""`annotator train`: command-line options to FinetuneArgs, then train.finetune.main.

    annotator train --data LABELED [--data MORE] --rubric RUBRIC.toml --out RUN_DIR [--base BASE]
    annotator train --from-project P.db --rubric RUBRIC.toml --out RUN_DIR

A click command that `annotator` loads when it is named or listed: this module imports only
click and train.args (defaults come from there), so `annotator --help` stays torch-free; the
[train] extra is imported inside the command. Options out of range are usage errors (exit
status 2); errors the user can fix later raise AnnotatorError, which `annotator` prints as one
line. `main(argv)` runs the command without the `annotator` group (tests).
"""

from __future__ import annotations

from pathlib import Path

import click

from annotator.train.args import (
    AugmentArgs,
    DataArgs,
    EvalArgs,
    FinetuneArgs,
    HardwareArgs,
    LoraArgs,
    LossArgs,
    TrainArgs,
)

PATH = click.Path(path_type=Path)
SHARE = click.FloatRange(0, 1, max_open=True)  # [0, 1)
AT_LEAST_1 = click.IntRange(min=1)
# Defaults come from the dataclasses (train/args.py documents each field).
AUG, LORA, TRAIN, EVAL, HW = AugmentArgs(), LoraArgs(), TrainArgs(), EvalArgs(), HardwareArgs()
LOSS = LossArgs()


@click.command(
    "train", context_settings={"help_option_names": ["-h", "--help"], "show_default": True}
)
@click.option(
    "--data",
    "paths",
    multiple=True,
    type=PATH,
    metavar="LABELED",
    help="Labelled file (.csv, .tsv, .jsonl); repeat for several. Rows sharing an id are "
    "ratings of one item.",
)
@click.option(
    "--from-project",
    "project",
    type=PATH,
    metavar="P.db",
    help="Train on a project's items and every reviewer's reviews (instead of --data).",
)
@click.option(
    "--rater-column",
    "rater_col",
    metavar="NAME",
    help="Column naming each row's rater (one rating per rater and item).",
)
@click.option("--rubric", required=True, type=PATH, help="Rubric TOML.")
@click.option(
    "--out",
    required=True,
    type=PATH,
    metavar="RUN_DIR",
    help="Run directory (RUN_DIR-2, -3, ... when it exists).",
)
@click.option(
    "--base",
    type=PATH,
    help="Hugging Face model directory or .gguf file [default: the embedded Gemma 3 270M].",
)
@click.option(
    "--id-col", default=None, help="Column holding item ids [default: id, else row number]."
)
@click.option(
    "--val-fraction",
    default=DataArgs.val_fraction,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Share of items held out for validation (by item).",
)
@click.option(
    "--max-tokens",
    default=DataArgs.max_tokens,
    type=AT_LEAST_1,
    help="Longest training sequence; longer items are cut.",
)
@click.option(
    "--templates/--no-templates",
    default=AUG.templates,
    help="Training examples: vary the instructions (fixed wrappers and --paraphrases).",
)
@click.option(
    "--paraphrases", type=PATH, help="File of paraphrased instructions separated by --- lines."
)
@click.option(
    "--reorder-inputs/--no-reorder-inputs",
    default=AUG.reorder_inputs,
    help="Training examples: show the inputs in random order.",
)
@click.option(
    "--shuffle-values/--no-shuffle-values",
    default=AUG.shuffle_values,
    help="Training examples: shuffle the values listed for nominal dimensions.",
)
@click.option(
    "--token-dropout",
    default=AUG.token_dropout,
    type=SHARE,
    help="Fraction of prompt tokens replaced with pad/unk (0: off).",
)
@click.option(
    "--token-dropout-share",
    default=AUG.token_dropout_share,
    type=click.FloatRange(0, 1),
    help="Probability that a training example gets token dropout.",
)
@click.option(
    "--target",
    default=LOSS.target,
    type=click.Choice(["auto", "soft", "majority"]),
    help="soft: the raters' distribution; majority: one value; auto: soft when an item has "
    "several ratings.",
)
@click.option(
    "--loss",
    default=LOSS.loss,
    type=click.Choice(["ce", "expected", "both"]),
    help="Ordinal/interval dimensions: cross-entropy, expected-score squared error, or both.",
)
@click.option(
    "--class-weights",
    default=LOSS.class_weights,
    type=click.Choice(["none", "balanced"]),
    help="Nominal dimensions: weight values by their inverse training frequency.",
)
@click.option("--lora-r", default=LORA.r, type=AT_LEAST_1, help="LoRA rank.")
@click.option(
    "--lora-alpha", default=LORA.alpha, help="LoRA scaling (the update is scaled by alpha / r)."
)
@click.option("--lora-dropout", default=LORA.dropout, help="Dropout on the LoRA input.")
@click.option(
    "--epochs", default=TRAIN.epochs, type=AT_LEAST_1, help="Passes over the training items."
)
@click.option(
    "--batch-size", default=TRAIN.batch_size, type=AT_LEAST_1, help="Examples per optimizer step."
)
@click.option(
    "--micro-batch-size",
    default=TRAIN.micro_batch_size,
    type=AT_LEAST_1,
    help="Examples per forward pass (at most --batch-size).",
)
@click.option(
    "--max-steps",
    default=TRAIN.max_steps,
    type=AT_LEAST_1,
    help="Stop after this many optimizer steps [default: all epochs].",
)
@click.option(
    "--lr", default=TRAIN.lr, help="Peak learning rate (linear warmup, then linear decay)."
)
@click.option(
    "--warmup", default=TRAIN.warmup, type=SHARE, help="Share of the steps spent warming up."
)
@click.option("--weight-decay", default=TRAIN.weight_decay, help="AdamW weight decay.")
@click.option(
    "--seed", default=TRAIN.seed, help="Seed of the split, augmentations and initialisation."
)
@click.option(
    "--eval-every",
    default=EVAL.every,
    type=click.IntRange(min=0),
    help="Optimizer steps between validations (0: after each epoch).",
)
@click.option(
    "--eval-before/--no-eval-before", default=EVAL.before, help="Validate the untrained base first."
)
@click.option(
    "--eval-batch-size",
    default=EVAL.batch_size,
    type=AT_LEAST_1,
    help="Sequences per forward pass when validating.",
)
@click.option(
    "--patience",
    default=EVAL.patience,
    type=click.IntRange(min=0),
    help="Stop after this many validations without a better one (0: never stop early).",
)
@click.option(
    "--device",
    default=HW.device,
    type=click.Choice(["auto", "cuda", "cpu"]),
    help="auto: CUDA when present, else CPU.",
)
@click.option(
    "--quantize",
    default=HW.quantize,
    type=click.Choice(["auto", "nf4", "none"]),
    help="The base's weights; auto: nf4 (4-bit) on CUDA, none on CPU.",
)
@click.option(
    "--optimizer",
    default=HW.optimizer,
    type=click.Choice(["auto", "adamw8bit", "adamw"]),
    help="auto: adamw8bit with a 4-bit base, else adamw.",
)
@click.option(
    "--gradient-checkpointing/--no-gradient-checkpointing",
    default=HW.gradient_checkpointing,
    help="Recompute activations in the backward pass [default: on for CUDA].",
)
@click.option(
    "--calibrate/--no-calibrate",
    default=True,
    help="Runs from a GGUF base ([export] extra): then write RUN_DIR/adapter.gguf, fit heads "
    "on the validation items through llama.cpp, and write calibrated.gguf (the adapter with "
    "its head) and base-calibrated.gguf (the base's head file), compared in one line.",
)
@click.option(
    "--threads",
    default=HW.threads,
    show_default=False,
    help="CPU threads for torch (and llama.cpp for --calibrate) [default: all this process "
    "may use].",
)
def train_command(calibrate: bool, **options) -> None:
    """Fine-tune a base model on labelled items ([train] extra).

    LoRA on the training items, validation with the engine's decoding, then the best adapter
    merged into the base. LABELED files hold the rubric's input columns and one column per
    dimension; ids as in `annotate`. Rows sharing an id (or a project's reviews from several
    reviewers, --from-project) are one item's ratings: it trains on their distribution
    (--target). Items are split into training and validation (by item)
    before augmentation.

    Each validation scores the model's answers and a calibration head fitted on the
    validation items' hidden states (as `annotator calibrate` fits one; out-of-fold alpha),
    and the share of the commonest label. The adapter kept is the best: not collapsed, then
    the highest mean head alpha, then mean answer alpha, then lowest validation loss (ties:
    the earlier). Training stops after --patience validations without a better one.

    RUN_DIR receives train.log, split.json, validation.jsonl, metrics.jsonl, curve.json,
    curve.md, adapter/ and merged/ (the merged Hugging Face model and
    annotator_provenance.json), for `annotator export`. An existing RUN_DIR is never
    overwritten: RUN_DIR-2, -3, ... is used instead. From a GGUF base (--calibrate): also
    adapter.gguf, calibrated.gguf, base-calibrated.gguf, validation.db and calibration.json,
    whose comparison line says which file to ship.

    Exit status 1 when the kept adapter collapsed (one value for every validation item on a
    dimension where the human labels have two or more; judged from 20 validation items, as
    is a head): the summary names the dimensions and the files stay, but the run is not a
    success.

    On CUDA: QLoRA (4-bit NF4 base, bf16, 8-bit AdamW, gradient checkpointing). Without CUDA:
    plain LoRA in fp32 on CPU (slow: small models and demos). Nothing uses the network.
    """
    args = finetune_args(**options)
    try:  # --help and option errors work without the extra; training needs it
        from annotator.train.finetune import main as finetune
    except ImportError as exc:
        from annotator.errors import AnnotatorError

        raise AnnotatorError(
            f"training needs the [train] extra: pip install '.[train]' ({exc})"
        ) from exc

    outcome = finetune(args)
    best = outcome.best
    before = outcome.before
    click.echo(f"run directory: {outcome.run_dir}")
    if before is not None:
        click.echo("validation alpha before: " + _alphas(before.alpha))
    if best is not None:
        click.echo(f"validation alpha after (step {best.step}): " + _alphas(best.alpha))
    click.echo(f"merged model: {outcome.run_dir / 'merged'}")
    from annotator.train import curve  # the curve, and no success for a collapsed run

    click.echo("\n".join(curve.table(outcome.history, best)))
    collapsed = curve.collapse_error(best, outcome.run_dir)
    if collapsed is not None:
        click.echo(f"COLLAPSED: {curve.collapsed(best)}: one value for every validation item")
    if calibrate:
        from annotator.export.calibrated import after_training

        note = lambda line: click.echo(line, err=True)  # noqa: E731
        after_training(
            outcome.run_dir, args.hardware.device, args.hardware.threads, click.echo, note
        )
    if collapsed is not None:
        raise collapsed


def finetune_args(
    *,
    paths,
    project,
    rater_col,
    target,
    loss,
    class_weights,
    rubric,
    out,
    base,
    id_col,
    val_fraction,
    max_tokens,
    templates,
    paraphrases,
    reorder_inputs,
    shuffle_values,
    token_dropout,
    token_dropout_share,
    lora_r,
    lora_alpha,
    lora_dropout,
    epochs,
    batch_size,
    micro_batch_size,
    max_steps,
    lr,
    warmup,
    weight_decay,
    seed,
    eval_every,
    eval_before,
    eval_batch_size,
    patience,
    device,
    quantize,
    optimizer,
    gradient_checkpointing,
    threads,
) -> FinetuneArgs:
    """The command's options as the dataclasses train.finetune reads."""
    if bool(paths) == (project is not None):
        raise click.UsageError("give --data files or --from-project, one of the two")
    if base is None:
        from annotator.modelfile import default_model_path

        base = default_model_path()
    return FinetuneArgs(
        base=base,
        out=out,
        data=DataArgs(
            paths=list(paths),
            rubric=rubric,
            id_col=id_col or "id",
            id_col_given=id_col is not None,
            rater_col=rater_col,
            project=project,
            val_fraction=val_fraction,
            max_tokens=max_tokens,
        ),
        augment=AugmentArgs(
            templates=templates,
            paraphrases=paraphrases,
            reorder_inputs=reorder_inputs,
            shuffle_values=shuffle_values,
            token_dropout=token_dropout,
            token_dropout_share=token_dropout_share,
        ),
        loss=LossArgs(target=target, loss=loss, class_weights=class_weights),
        lora=LoraArgs(r=lora_r, alpha=lora_alpha, dropout=lora_dropout),
        train=TrainArgs(
            epochs=epochs,
            batch_size=batch_size,
            micro_batch_size=min(micro_batch_size, batch_size),
            max_steps=max_steps,
            lr=lr,
            warmup=warmup,
            weight_decay=weight_decay,
            seed=seed,
        ),
        eval=EvalArgs(
            every=eval_every, before=eval_before, batch_size=eval_batch_size, patience=patience
        ),
        hardware=HardwareArgs(
            device=device,
            quantize=quantize,
            optimizer=optimizer,
            gradient_checkpointing=gradient_checkpointing,
            threads=threads,
        ),
    )


def main(argv: list[str]) -> None:
    """`annotator train ARGV...` without the group: click usage errors raise click exceptions
    and user errors AnnotatorError (as `export.cli.main` does)."""
    train_command.main(args=list(argv), prog_name="annotator train", standalone_mode=False)


def _alphas(alpha: dict) -> str:
    return ", ".join(f"{k} {'undefined' if v is None else f'{v:.3f}'}" for k, v in alpha.items())
