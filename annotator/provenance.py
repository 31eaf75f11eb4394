"""A model file's provenance as a few readable lines for `annotator inspect`.

The record comes from the file, so it is untrusted: every value is type-checked and made
printable, and a missing or odd value is shown as "?" rather than failing.
"""

from __future__ import annotations

import math
from typing import Any

from annotator.errors import printable


def summary_lines(prov: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) pairs: when, on how many items, which recipe, validation alpha, checks."""
    if prov.get("kind") == "calibration head":  # a head file: no training, a calibrated run
        return _head_file_lines(prov)
    settings = _dict(prov.get("settings"))
    split = _dict(prov.get("split"))
    export = _dict(prov.get("export"))
    lines = [
        (
            "trained",
            f"{_text(prov.get('date'))} with annotator {_text(prov.get('tool_version'))}"
            f" on base {_text(prov.get('base'))}",
        )
    ]
    data = prov.get("data_sha256")
    files = len(data) if isinstance(data, list) else 1
    lines.append(
        (
            "items",
            f"{_text(split.get('train_count'))} trained, "
            f"{_text(split.get('validation_count'))} validation "
            f"(split seed {_text(split.get('seed'))}; {files} data file(s), "
            "sha256 recorded)",
        )
    )
    lora, train = _dict(settings.get("lora")), _dict(settings.get("train"))
    resolved = _dict(_dict(settings.get("hardware")).get("resolved"))
    lines.append(
        (
            "recipe",
            f"LoRA r={_text(lora.get('r'))} alpha={_text(lora.get('alpha'))}, "
            f"lr {_text(train.get('lr'))}, batch {_text(train.get('batch_size'))}, "
            f"{_text(settings.get('steps'))} steps (best {_text(settings.get('best_step'))}), "
            f"{_text(resolved.get('device'))} {_text(resolved.get('dtype'))}",
        )
    )
    targets = _dict(prov.get("targets"))
    if targets:
        lines.append(
            (
                "targets",
                f"{_text(targets.get('target'))}; ordinal/interval loss "
                f"{_text(targets.get('ordinal_interval_loss'))}; nominal class weights "
                f"{_text(targets.get('class_weights'))}",
            )
        )
    alphas = _dict(prov.get("validation_alpha"))
    shown = ", ".join(f"{_text(k)} {_number(v)}" for k, v in list(alphas.items())[:12]) or "?"
    lines.append(("val. alpha", shown))
    merge = _dict(prov.get("merge_check"))
    if merge:
        same = "identical" if merge.get("all_same") is True else "NOT all identical"
        lines.append(
            (
                "merge check",
                f"merged vs adapter answers {same} on {_text(merge.get('items'))} validation items",
            )
        )
    if export:
        lines.append(("export", f"{_text(export.get('quant'))} on {_text(export.get('date'))}"))
        lines.append(("drift check", _drift(export)))
    return lines


def _head_file_lines(prov: dict[str, Any]) -> list[tuple[str, str]]:
    """A head file's record (annotator/calibration/headfile.py): when, on which base, and the
    run it was fitted on, by digests."""
    run = _dict(prov.get("run"))
    settings = _dict(run.get("settings"))
    return [
        (
            "calibrated",
            f"{_text(prov.get('date'))} with annotator {_text(prov.get('tool_version'))}"
            f" on base {_text(prov.get('base'))}",
        ),
        (
            "from run",
            f"model sha256 {_text(run.get('model_sha256'))[:12]}, reviews sha256 "
            f"{_text(run.get('reviews_sha256'))[:12]}, {_text(run.get('backend'))}, "
            f"n_ctx {_text(settings.get('n_ctx'))}, block {_text(settings.get('hidden_layer'))}",
        ),
    ]


def _drift(export: dict) -> str:
    """The drift check as the file records it (files exported before it was recorded only
    say what it demanded)."""
    check = _dict(export.get("drift_check"))
    if not check:
        return (
            f"not recorded; export keeps a file only at alpha(file, merged model) >= "
            f"{_text(export.get('min_agreement'))} per dimension"
        )
    verdict = "passed" if check.get("passed") is True else "FAILED"
    dims = _dict(check.get("dimensions"))
    alphas = ", ".join(
        f"{_text(name)} {_number(_dict(d).get('vs_merged'))}" for name, d in list(dims.items())[:12]
    )
    return (
        f"{verdict} on {_text(check.get('items'))} items: alpha(file, merged model) "
        f"{alphas or '?'} (threshold {_text(check.get('threshold'))})"
    )


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str:
    if value is None or isinstance(value, (dict, list)):
        return "?"
    return printable(value, 80)


def _number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "undefined" if value is None else "?"
    try:
        shown = float(value)
    except OverflowError:  # an integer with hundreds of digits
        return "?"
    return f"{shown:.3f}" if math.isfinite(shown) else "?"
