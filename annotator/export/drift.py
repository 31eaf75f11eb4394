"""The drift check: does the quantized file still answer like the merged model it came from?

Three coders label the same validation items: the quantized GGUF (through the annotator's own
Engine, exactly as `annotator annotate` will run it), the merged HF model (torch-side scoring
from train/, the same constrained decoding), and the humans whose labels trained the model.
Per dimension we report alpha(quantized, merged) and alpha(quantized, human) next to
alpha(merged, human), at the dimension's level of measurement, and gate on the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotator.agreement import agreement
from annotator.calibration.readout import Readout
from annotator.data import read_items
from annotator.errors import AnnotatorError
from annotator.inference.backend import EngineSettings, load_llama
from annotator.inference.engine import Decision, Engine
from annotator.multilabel import as_answers, expand
from annotator.rubric import Rubric, Value

Answers = list[dict[str, Decision]]  # one dict per item, dimension name -> decision


@dataclass(frozen=True)
class CheckItem:
    id: str
    fields: dict[str, str]  # input column -> text
    human: dict[str, Value | None]  # dimension -> the human label, None where missing


def load_check_items(path: str | Path, rubric: Rubric) -> tuple[list[CheckItem], list[str]]:
    """Items with their human labels from a .jsonl/.csv/.tsv file (train's validation.jsonl).

    Inputs are read like `annotator annotate` reads them. A dimension's column is optional (a
    missing or blank label is missing data, not an error); a label that is not one of the
    dimension's values is reported and treated as missing. Returns (items, problems).
    """
    people, rubric = rubric, expand(rubric)  # multi-label: checked value by value
    rows, items, skipped = read_items(path, [i.column for i in rubric.inputs])
    records = {number: record for number, record in rows.records if isinstance(record, dict)}
    problems = [f"row {s.row}: {s.reason}" for s in skipped]
    found: list[CheckItem] = []
    for item in items:
        record = records[item.row]
        human: dict[str, Value | None] = {}
        for dim in people.dimensions:  # a set (values joined by ";") for each of its values
            if dim.multi and (raw := record.get(dim.name)) not in (None, ""):
                try:
                    record.update(as_answers(people, {dim.name: dim.parse_value(raw)}))
                except ValueError as exc:
                    problems.append(f"row {item.row} (id {item.id}): {dim.name}: {exc}")
        for dim in rubric.dimensions:
            raw = record.get(dim.name)
            human[dim.name] = None
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                continue
            try:
                human[dim.name] = dim.parse_value(raw)
            except ValueError as exc:
                problems.append(f"row {item.row} (id {item.id}): {dim.name}: {exc}")
        found.append(CheckItem(item.id, item.fields, human))
    if not found:
        raise AnnotatorError(f"{path}: no usable items for the drift check")
    return found, problems


def engine_answers(
    model_path: Path,
    rubric: Rubric,
    items: Sequence[CheckItem],
    settings: EngineSettings,
    base: Path | None = None,
) -> tuple[Answers, dict[str, Any]]:
    """The GGUF's answers through the annotator's Engine, and the engine's description
    (settings, backend, versions) plus how many items had to be cut to fit the context.
    With `base`, `model_path` is a LoRA adapter GGUF applied on top of that base model."""
    llm = load_llama(base, settings, adapter=model_path) if base is not None else None
    # argmax, as the merged model's torch-side scoring decides: the check compares models,
    # not decision rules.
    engine = Engine(model_path, rubric, settings, llm=llm, readout=Readout(rule="argmax"))
    try:
        results = [engine.annotate(item.fields) for item in items]
        description = engine.describe()
    finally:
        engine.close()
    description["truncated_items"] = sum(r.truncated_tokens > 0 for r in results)
    return [r.decisions for r in results], description


def merged_answers(
    merged_dir: Path, rubric: Rubric, items: Sequence[CheckItem], n_ctx: int
) -> Answers:
    """The merged HF model's answers, scored torch-side by train.scoring (same decoding as the
    engine, long items cut by the engine's rule for the same context size), in float32: the
    reference the quantized file is measured against."""
    try:
        from annotator.train.scoring import score_items
    except ImportError as exc:
        raise AnnotatorError(
            f"the drift check scores the merged model with train.scoring, which "
            f"is not available ({exc})"
        ) from exc
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rubric = expand(rubric)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(merged_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        merged_dir, dtype=torch.float32, local_files_only=True
    )
    model.to(device)  # type: ignore[arg-type]  # transformers' stubs mistype Module.to
    model.eval()
    with torch.inference_mode():
        raw = score_items(
            model, tokenizer, rubric, [dict(item.fields) for item in items], max_tokens=n_ctx
        )
    return decisions_from_scores(rubric, raw)


def decisions_from_scores(rubric: Rubric, raw: Sequence[dict[str, tuple]]) -> Answers:
    """train.scoring's (value, prob, margin) tuples as Decisions, checked against the rubric."""
    answers: Answers = []
    for index, scores in enumerate(raw):
        item: dict[str, Decision] = {}
        for dim in rubric.dimensions:
            try:
                value, prob, margin = scores[dim.name]
            except (KeyError, TypeError, ValueError):
                raise AnnotatorError(
                    f"merged-model scoring gave no decision for item {index}, dimension {dim.name}"
                ) from None
            if value not in dim.values:
                raise AnnotatorError(
                    f"merged-model scoring gave {value!r} for {dim.name}, "
                    "which is not one of its values"
                )
            item[dim.name] = Decision(value, float(prob), float(margin))
        answers.append(item)
    return answers


def compare(
    rubric: Rubric,
    items: Sequence[CheckItem],
    quantized: Answers,
    merged: Answers,
    threshold: float,
    bootstrap: int = 1000,
) -> dict[str, Any]:
    """Per-dimension agreement of the three coders and the verdict.

    A dimension passes when alpha(quantized, merged) >= threshold. Where alpha is undefined
    because both coders gave one and the same value on every item (no variation to measure),
    the share of identical answers stands in for it, and the report says so. Fewer than two
    items cannot pass.
    """
    if not (len(items) == len(quantized) == len(merged)):
        raise ValueError("one answer per item expected from each coder")
    rubric = expand(rubric)
    dims = []
    for dim in rubric.dimensions:
        q = [a[dim.name].value for a in quantized]
        m = [a[dim.name].value for a in merged]
        h = [item.human.get(dim.name) for item in items]
        pairs = {
            "quantized_vs_merged": agreement(dim, ("quantized", "merged"), [q, m], bootstrap),
            "quantized_vs_human": agreement(dim, ("quantized", "human"), [q, h], bootstrap),
            "merged_vs_human": agreement(dim, ("merged", "human"), [m, h], bootstrap),
        }
        same = sum(a == b for a, b in zip(q, m, strict=True))
        exact = same / len(items) if items else 0.0
        qm = pairs["quantized_vs_merged"]
        if qm.alpha is not None:
            passed, basis = qm.alpha >= threshold, "alpha"
        elif qm.n >= 2 and same == len(items):
            passed, basis = exact >= threshold, "identical answers, no variation"
        else:
            passed, basis = False, f"alpha undefined ({qm.note})"
        dims.append(
            {
                "dimension": dim.name,
                "level": dim.scale,
                "n": len(items),
                "human_labels": sum(v is not None for v in h),
                "exact_agreement": exact,
                "disagreements": len(items) - same,
                **{name: a.as_dict() for name, a in pairs.items()},
                "passed": passed,
                "basis": basis,
            }
        )
    return {
        "threshold": threshold,
        "items": len(items),
        "passed": all(d["passed"] for d in dims),
        "dimensions": dims,
        "answers": [
            {
                "id": item.id,
                "quantized": {k: [d.value, d.prob, d.margin] for k, d in qa.items()},
                "merged": {k: [d.value, d.prob, d.margin] for k, d in ma.items()},
                "human": item.human,
            }
            for item, qa, ma in zip(items, quantized, merged, strict=True)
        ],
    }
