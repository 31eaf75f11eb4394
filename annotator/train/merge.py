"""Merge the kept adapter into the base weights and check that the merge changed nothing.

Where the adapter was trained against a 4-bit base, it learned a correction to the
*dequantized* NF4 weights, not to the original ones. So the merge reloads the base exactly as
training saw it (same NF4 setting), dequantizes it to fp32 and adds the adapter there: the
merged model is the trained model, in plain weights. (Merging into the original weights would
add the quantization error back; merging into 4-bit weights would requantize the update.)
Then the merged model's answers and logits on the validation items are compared with the
adapter model's, and the result goes into provenance as "merge_check": measured, not assumed.
"""

from __future__ import annotations

import datetime
import gc
import json
import logging
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from annotator import __version__
from annotator.agreement import agreement
from annotator.inference import prompt
from annotator.rubric import Rubric
from annotator.train.base import Hardware, clear_quantizer, load_model
from annotator.train.data import Split
from annotator.train.scoring import Decision, last_logits, score_items

log = logging.getLogger("train")
PROVENANCE = "annotator_provenance.json"
_LOGIT_CHECK_ITEMS = 8


def merge_run(
    trainer, base_dir: Path, base_record: dict, data_sha256: list[str], split: Split, run_dir: Path
) -> dict:
    """Write RUN_DIR/merged (model, tokenizer, provenance); return the merge check."""
    rubric, hardware, tokenizer = trainer.rubric, trainer.hardware, trainer.tokenizer
    fields = [i.fields for i in split.validation]
    max_tokens = trainer.args.data.max_tokens
    batch = trainer.args.eval.batch_size

    # The adapter model's answers and logits, then free it before building the merged model.
    with trainer.autocast():
        adapter_scores = score_items(
            trainer.model, tokenizer, rubric, fields, batch_size=batch, max_tokens=max_tokens
        )
        probes = [
            e.ids[: _prompt_length(e.kinds)] for e in trainer.val_examples[:_LOGIT_CHECK_ITEMS]
        ]
        adapter_logits = last_logits(trainer.model, probes, batch)
    trainer.model = None
    gc.collect()
    if hardware.device == "cuda":
        torch.cuda.empty_cache()

    merged = merge_adapter(base_dir, run_dir / "adapter", hardware)
    merged_scores = score_items(
        merged, tokenizer, rubric, fields, batch_size=batch, max_tokens=max_tokens
    )
    merged_logits = last_logits(merged, probes, batch)
    labels = [i.labels for i in split.validation]
    check = compare(rubric, labels, adapter_scores, merged_scores, adapter_logits, merged_logits)
    check["merged_into"] = (
        "fp32 weights dequantized from the same 4-bit NF4 base the adapter was trained on"
        if hardware.quantize == "nf4"
        else "fp32 base weights"
    )
    log.info(
        "merge check on %d validation items: %s answers identical; max |logit diff| %.2e "
        "(largest |logit| %.1f)",
        check["items"],
        "all" if check["all_same"] else "NOT all",
        check["max_abs_logit_diff"],
        check["max_abs_logit"],
    )
    if not check["all_same"]:
        log.warning(
            "the merged model answers differently from the adapter model on some "
            "validation items: see merge_check in the provenance"
        )

    out = run_dir / "merged"
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    best, before = trainer.best, trainer.before
    settings = trainer.args.as_dict()
    provenance = {
        "base": base_record["path"],  # text: what export and `inspect` show
        "base_detail": base_record,  # kind (hf or gguf), sha256 of the file or weight files
        "data_sha256": data_sha256,
        "split": split.record,
        "targets": trainer.encoder.targets.record(),
        "settings": {
            **settings,
            "hardware": {**settings["hardware"], "resolved": hardware.as_dict()},
            "steps": trainer.step,
            "best_step": best.step,
            "train_seconds": round(getattr(trainer, "train_seconds", 0.0), 1),
            "train_tokens": getattr(trainer, "train_tokens", None),
            "instruction_texts": len(trainer.texts),
            "neutral_token_id": trainer.neutral_id,
            "versions": versions(),
        },
        "validation_alpha": best.alpha,
        "validation_mean_alpha": best.mean_alpha,
        "validation_head_alpha": best.head_alpha,
        "validation_accuracy": best.accuracy,
        "validation_alpha_before": before.alpha if before else None,
        "merge_check": check,
        "rubric": rubric.canonical_json(),
        "prompt_format": prompt.PROMPT_FORMAT,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "tool_version": __version__,
    }
    (out / PROVENANCE).write_text(
        json.dumps(provenance, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    log.info("merged model written to %s", out)
    return check


def merge_adapter(base_dir: Path, adapter_dir: Path, hardware: Hardware):
    """The base (as training saw it) with the adapter merged in, as a plain fp32 model."""
    from peft import PeftModel

    if hardware.quantize == "nf4":
        model = load_model(base_dir, hardware, quantize="nf4")
        model.dequantize()  # NF4 -> fp32: the weights the adapter was trained against
        clear_quantizer(model)
    else:
        model = load_model(base_dir, hardware, quantize="none", dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=False)
    model = model.merge_and_unload()
    model.to(torch.float32)
    model.config.use_cache = True  # the merged model is for inference
    model.eval()
    return model


def compare(
    rubric: Rubric,
    labels: list[dict],
    adapter: list[dict[str, Decision]],
    merged: list[dict[str, Decision]],
    adapter_logits: list[torch.Tensor],
    merged_logits: list[torch.Tensor],
) -> dict:
    """Per dimension: identical answers, the largest probability gap, alpha between the two
    models' answers, and each model's alpha against the human labels; plus the largest logit
    gap at the first decision of up to 8 validation prompts."""
    dims = {}
    for dim in rubric.dimensions:
        a = [s[dim.name] for s in adapter]
        m = [s[dim.name] for s in merged]
        human = [row[dim.name] for row in labels]
        pairs = list(zip(a, m, strict=True))
        dims[dim.name] = {
            "same_answers": sum(x[0] == y[0] for x, y in pairs),
            "of": len(pairs),
            "max_prob_diff": max((abs(x[1] - y[1]) for x, y in pairs), default=0.0),
            "alpha_adapter_vs_merged": _alpha(dim, [x[0] for x in a], [y[0] for y in m]),
            "alpha_vs_labels": {
                "adapter": _alpha(dim, human, [x[0] for x in a]),
                "merged": _alpha(dim, human, [y[0] for y in m]),
            },
        }
    gaps = [float((x - y).abs().max()) for x, y in zip(adapter_logits, merged_logits, strict=True)]
    return {
        "items": len(adapter),
        "dimensions": dims,
        "all_same": all(d["same_answers"] == d["of"] for d in dims.values()),
        "max_abs_logit_diff": max(gaps, default=0.0),
        "max_abs_logit": max((float(x.abs().max()) for x in adapter_logits), default=0.0),
        "logit_probes": len(adapter_logits),
    }


def _alpha(dim, first: list, second: list) -> float | None:
    return agreement(dim, ("a", "b"), [first, second], bootstrap=0).alpha


def _prompt_length(kinds: list[str]) -> int:
    """Tokens up to and including the first cue: where inference reads its first decision."""
    first_cue = kinds.index("cue")
    end = first_cue
    while end < len(kinds) and kinds[end] == "cue":
        end += 1
    return end


def versions() -> dict[str, str]:
    found = {}
    for name in ("torch", "transformers", "peft", "accelerate", "bitsandbytes"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    if torch.cuda.is_available():
        found["cuda"] = str(torch.version.cuda)
        found["gpu"] = torch.cuda.get_device_name(0)
    return found
