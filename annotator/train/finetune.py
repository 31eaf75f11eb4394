"""Fine-tune a base model on labelled items: `annotator train` does `main(FinetuneArgs)`.

The run, in order: claim RUN_DIR; read the labelled files; split by item (before any
augmentation) and write the split and RUN_DIR/validation.jsonl; make the base a Hugging Face
checkpoint; add LoRA; train with loss on answer tokens only, validating with the engine's
decoding and a head fitted on the validation items' hidden states (train.validate), keeping
the adapter that ranks best (train.curve.SELECTION) and stopping after `--patience`
evaluations without a better one; write the curve (train.curve); merge (train.merge).
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from annotator.console import progress
from annotator.errors import AnnotatorError
from annotator.multilabel import expand
from annotator.rubric import Rubric, load_rubric
from annotator.train import curve
from annotator.train.args import FinetuneArgs
from annotator.train.augment import instruction_texts, read_paraphrases
from annotator.train.base import (
    Hardware,
    add_lora,
    check_base,
    load_model,
    load_tokenizer,
    prepare_base,
    resolve_hardware,
)
from annotator.train.data import (
    Encoder,
    Example,
    LabeledData,
    Split,
    batches,
    neutral_token,
    read_labeled,
    split_items,
    training_examples,
    validation_examples,
    write_validation,
)
from annotator.train.logs import claim_run_dir, log_start, start_logging
from annotator.train.loss import answer_loss
from annotator.train.scoring import score_and_read
from annotator.train.targets import Targets, resolve
from annotator.train.validate import Evaluation, evaluation, validation_loss

log = logging.getLogger("train")


@dataclass
class Outcome:
    run_dir: Path
    best: Evaluation | None
    before: Evaluation | None
    steps: int
    seconds: float
    history: list[Evaluation]
    stopped_early: bool = False


@dataclass
class Inputs:
    """What a run reads before it claims a run directory (so a mistake leaves nothing behind)."""

    rubric: Rubric
    data: LabeledData
    split: Split
    texts: list[str]
    hardware: Hardware


def main(args: FinetuneArgs) -> Outcome:
    inputs = read_inputs(args)
    run_dir = claim_run_dir(args.out)
    stop_logging = start_logging(run_dir)
    try:
        return _run(args, run_dir, inputs)
    except AnnotatorError as exc:
        log.error("%s", exc)
        raise
    except Exception:
        log.exception("training failed")  # the traceback goes into RUN_DIR/train.log too
        raise
    finally:
        stop_logging()


def read_inputs(args: FinetuneArgs) -> Inputs:
    check_base(args.base)
    people = load_rubric(args.data.rubric)
    data = read_labeled(args.data, people)
    rubric = expand(people)  # multi-label: trained as a yes/no dimension per value
    split = split_items(data.items, args.data.val_fraction, args.train.seed)
    paraphrases = read_paraphrases(args.augment.paraphrases) if args.augment.paraphrases else []
    texts = instruction_texts(rubric, args.augment, paraphrases)
    return Inputs(rubric, data, split, texts, resolve_hardware(args.hardware))


def _run(args: FinetuneArgs, run_dir: Path, inputs: Inputs) -> Outcome:
    started = time.time()
    rubric, data, split, hardware = inputs.rubric, inputs.data, inputs.split, inputs.hardware
    log_start(args, run_dir, inputs)
    (run_dir / "split.json").write_text(json.dumps(split.record, indent=1) + "\n")
    write_validation(run_dir / "validation.jsonl", rubric, split.validation)

    base_dir, base_record = prepare_base(args.base, run_dir)
    tokenizer = load_tokenizer(base_dir)
    model = load_model(base_dir, hardware)
    model = add_lora(model, args.lora, hardware, args.train.seed)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info(
        "LoRA r=%d alpha=%d on %s: %s trainable parameters",
        args.lora.r,
        args.lora.alpha,
        ", ".join(sorted(model.peft_config["default"].target_modules)),
        f"{trainable:,}",
    )

    trainer = Trainer(args, hardware, rubric, tokenizer, model, split, run_dir, inputs.texts)
    del model  # the trainer owns it; merge frees it before loading the merged model
    trainer.fit()
    if trainer.best is None:
        raise AnnotatorError("no validation ran: nothing to keep")

    from annotator.train.merge import merge_run

    merge_run(
        trainer=trainer,
        base_dir=base_dir,
        base_record=base_record,
        data_sha256=data.sha256,
        split=split,
        run_dir=run_dir,
    )
    seconds = time.time() - started
    log.info("done in %.0f s: %s", seconds, run_dir / "merged")
    return Outcome(
        run_dir,
        trainer.best,
        trainer.before,
        trainer.step,
        seconds,
        trainer.history,
        trainer.stopped_early,
    )


class Trainer:
    """The training loop; holds the best adapter weights seen so far."""

    def __init__(
        self,
        args: FinetuneArgs,
        hardware: Hardware,
        rubric: Rubric,
        tokenizer,
        model,
        split: Split,
        run_dir: Path,
        texts: list[str],
    ):
        self.args, self.hardware, self.rubric = args, hardware, rubric
        self.tokenizer, self.model, self.split, self.run_dir = tokenizer, model, split, run_dir
        self.texts = texts
        targets = Targets(tokenizer, rubric, resolve(args.loss, rubric, split.train))
        self.encoder = Encoder(tokenizer, rubric, args.data.max_tokens, targets)
        self.neutral_id = neutral_token(tokenizer)
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.neutral_id
        )
        self.device = torch.device(hardware.device)
        self.val_examples = validation_examples(self.encoder, split.validation)
        self.step = 0
        self.train_seconds = 0.0
        self.train_tokens = 0
        self.best: Evaluation | None = None
        self.before: Evaluation | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[Evaluation] = []
        self.stale = 0  # evaluations since the kept one
        self.stopped_early = False

    # -- the loop -----------------------------------------------------------------------------

    def fit(self) -> None:
        t = self.args.train
        per_epoch = math.ceil(len(self.split.train) / t.batch_size)
        total = per_epoch * t.epochs
        if t.max_steps is not None:
            total = min(total, t.max_steps)
        if total < 1:
            raise AnnotatorError("no training steps (check --epochs and --max-steps)")
        optimizer = self._optimizer()
        from transformers import get_linear_schedule_with_warmup

        warmup = math.ceil(t.warmup * total)
        schedule = get_linear_schedule_with_warmup(optimizer, warmup, total)
        every = self.args.eval.every or per_epoch
        patience = self.args.eval.patience
        log.info(
            "training %d steps (%d per epoch, batch %d = %d x %d accumulated), warmup %d, "
            "validating every %d steps, early stopping %s",
            total,
            per_epoch,
            t.batch_size,
            t.micro_batch_size,
            t.batch_size // t.micro_batch_size,
            warmup,
            every,
            f"after {patience} evaluations without a better one" if patience else "off",
        )
        if self.args.eval.before:
            self.before = self.evaluate(epoch=0.0)
            curve.report(self.before, "before training")
            self._write_curve()

        self.model.train()
        torch.manual_seed(t.seed)
        losses: list[float] = []
        log_every = max(1, total // 20)
        with progress(total, "training", terminal_only=True) as advance:
            for epoch in range(t.epochs):
                examples = training_examples(
                    self.encoder,
                    self.split.train,
                    self.args.augment,
                    self.texts,
                    self.neutral_id,
                    t.seed,
                    epoch,
                )
                for batch in batches(examples, t.batch_size):
                    if self.step >= total:
                        break
                    started = time.time()
                    loss, batch_tokens = self._train_step(batch, optimizer)
                    schedule.step()
                    self.train_seconds += time.time() - started  # validation time excluded
                    self.train_tokens += batch_tokens
                    self.step += 1
                    losses.append(loss)
                    rate = self.train_tokens / max(self.train_seconds, 1e-9)
                    advance(1, f"loss {loss:.4f}  {rate:,.0f} tok/s")
                    if self.step % log_every == 0:
                        log.info(
                            "step %d/%d  epoch %.2f  loss %.4f  lr %.2e  %.0f tokens/s",
                            self.step,
                            total,
                            self.step / per_epoch,
                            loss,
                            schedule.get_last_lr()[0],
                            rate,
                        )
                    if self.step % every == 0 or self.step == total:
                        result = self.evaluate(self.step / per_epoch, sum(losses) / len(losses))
                        losses = []
                        self._consider(result)
                        self.model.train()
                        if patience and self.stale >= patience:
                            self.stopped_early = True
                            log.info(
                                "stopping early at step %d: no better validation in %d "
                                "evaluations (--patience)",
                                self.step,
                                patience,
                            )
                            break
                if self.step >= total or self.stopped_early:
                    break
        self._write_curve()
        if self.best_state is not None and self.best is not None:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, self.best_state)
            log.info(
                "kept the adapter of step %d (mean head alpha %s, mean alpha %s)",
                self.best.step,
                curve.fmt(self.best.mean_head_alpha),
                curve.fmt(self.best.mean_alpha),
            )

    def _optimizer(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        t = self.args.train
        if self.hardware.optimizer == "adamw8bit":
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(params, lr=t.lr, weight_decay=t.weight_decay)
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)

    def _train_step(self, batch: list[Example], optimizer) -> tuple[float, int]:
        """One optimizer step over `batch` (micro-batches accumulated); returns the mean
        answer-token loss and the number of tokens processed."""
        t = self.args.train
        answer_tokens = sum(sum(e.answer_mask) for e in batch)
        total_loss = 0.0
        for micro in batches(batch, t.micro_batch_size):
            with self.autocast():
                loss_sum, _ = answer_loss(self.model, micro, self.pad_id, self.device)
            # Normalise by the whole batch's answer tokens: every answer token weighs the same
            # however the batch is cut into micro-batches.
            (loss_sum / answer_tokens).backward()
            total_loss += loss_sum.item()
        if t.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad], t.max_grad_norm
            )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total_loss / answer_tokens, sum(len(e.ids) for e in batch)

    def autocast(self):
        if self.hardware.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.hardware.device, dtype=self.hardware.dtype)

    # -- validation ---------------------------------------------------------------------------

    def evaluate(self, epoch: float, train_loss: float | None = None) -> Evaluation:
        """The engine's decoding on the validation items, alpha per dimension against the
        human labels (at each dimension's level) of its answers and of a head on the same
        pass's hidden states, and the answer-token loss."""
        items = self.split.validation
        log.info("validating on %d items (step %d)", len(items), self.step)
        started = time.time()
        with self.autocast():
            scored = score_and_read(
                self.model,
                self.tokenizer,
                self.rubric,
                [i.fields for i in items],
                batch_size=self.args.eval.batch_size,
                max_tokens=self.args.data.max_tokens,
            )
            val_loss = self.validation_loss()
        result = evaluation(self.rubric, items, scored, self.step, epoch, val_loss)
        result.train_loss = train_loss
        result.notes["seconds"] = f"{time.time() - started:.1f}"
        self.history.append(result)
        with (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(result.as_dict()) + "\n")
        return result

    def validation_loss(self) -> float:
        return validation_loss(
            self.model, self.val_examples, self.args.eval.batch_size, self.pad_id, self.device
        )

    def _consider(self, result: Evaluation) -> None:
        better = self.best is None or result.key() > self.best.key()
        self.stale = 0 if better else self.stale + 1
        curve.report(result, "best so far" if better else "")
        if better:
            from peft import get_peft_model_state_dict

            self.best = result
            self.best_state = {
                k: v.detach().to("cpu", copy=True)
                for k, v in get_peft_model_state_dict(self.model).items()
            }
            self.model.save_pretrained(self.run_dir / "adapter")
        self._write_curve()

    def _write_curve(self) -> None:
        patience, stopped = self.args.eval.patience, self.stopped_early
        curve.write(self.run_dir, self.history, self.best, patience, stopped)
