"""`train` ends with calibrated files: the run's adapter GGUF and the base, each with a head.

After a run trained from a GGUF base (the embedded Gemma 3 270M by default), in order:
  1. the adapter is exported as `annotator export --adapter` does (export.pipeline, drift
     check included) to RUN_DIR/adapter.gguf; when the drift check refuses it, the steps
     below run for the base alone and the line says so (base-calibrated.gguf to ship);
  2. the validation items (RUN_DIR/validation.jsonl) are labelled through llama.cpp twice into
     a project, RUN_DIR/validation.db: with base + adapter, and with the base alone; so the
     heads read the hidden states the laptop will compute from the shipped file itself;
  3. the validation labels are imported as one reviewer's reviews and `annotator calibrate`'s
     own code (calibration.calibrate) fits a head per dimension on each run: leave-one-out
     (nominal: out-of-fold) labels, so the alpha reported is out-of-sample;
  4. calibration.headfile writes RUN_DIR/calibrated.gguf (the adapter with its head) and
     RUN_DIR/base-calibrated.gguf (the head file of a few kB for the embedded base);
  5. one line says which is better on the validation items and by how much, and
     RUN_DIR/calibration.json records the figures (`annotator calibrate RUN_DIR/validation.db
     --run N --out F` refits either head later; a project's own reviews refit the shipped one).

A dimension's alpha is that of the calibrated run's labels against the validation labels: the
head's leave-one-out labels where it has a head, the decision rule's elsewhere. With several
raters per item the validation labels are their majority (validation.jsonl holds one label).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from annotator.calibration.heads import MIN_ITEMS
from annotator.errors import AnnotatorError
from annotator.export.calibrated_compare import (
    compare,
    comparison_line,
    difference_interval,
    mean_alpha,
    refused_line,
    side_line,
)
from annotator.inference.backend import EngineSettings
from annotator.rubric import Rubric

ADAPTER_FILE = "adapter.gguf"
CALIBRATED_FILE = "calibrated.gguf"
BASE_FILE = "base-calibrated.gguf"
PROJECT_FILE = "validation.db"
RECORD_FILE = "calibration.json"
REVIEWER = "validation"
SIDES = {"fine_tuned": "fine-tuned file", "base": "base"}

Say = Callable[[str], object]


@dataclass(frozen=True)
class Side:
    """One model's figures on the validation items."""

    alpha: dict[str, float | None]  # per dimension: the calibrated labels vs the validation's
    alpha_without_head: dict[str, float | None]  # the decision rule's labels vs the validation's
    head: dict[str, Any] | None  # Head.describe(), None when no dimension got a head
    left_out: dict[str, str]  # dimension -> why it has no head
    run: int  # the calibrated run in RUN_DIR/validation.db
    file: dict[str, Any] | None  # name, kind, size, sha256; None when not written
    note: str = ""  # why no file was written
    labels: dict[str, list] = field(default_factory=dict)  # per dimension, one per item

    def as_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "mean_alpha": mean_alpha(self.alpha),
            "alpha_without_head": self.alpha_without_head,
            "head": self.head,
            "left_out": self.left_out,
            "run": self.run,
            "file": self.file,
            "note": self.note,
        }


def skip_reason(run_dir: Path) -> str | None:
    """Why this run gets no calibrated files (one line), or None. Cheap: no model is read."""
    from annotator.export import drift, metadata

    training = metadata.load_training_record(run_dir / "merged")
    detail = training.record.get("base_detail")
    if not isinstance(detail, dict) or detail.get("kind") != "gguf":
        return (
            "the run's base is a Hugging Face model, not a GGUF file an adapter runs on; "
            "`annotator export` the merged model, annotate, then `annotator calibrate`"
        )
    items, _ = drift.load_check_items(run_dir / "validation.jsonl", training.rubric)
    if not any(_enough(dim.name, items) for dim in training.rubric.dimensions):
        return (
            f"{len(items)} validation items; a head needs {MIN_ITEMS} labelled items with two "
            "values or more (more data or a larger --val-fraction)"
        )
    return None


def _enough(dim: str, items: list) -> bool:
    values = [i.human.get(dim) for i in items if i.human.get(dim) is not None]
    return len(values) >= MIN_ITEMS and len(set(map(json.dumps, values))) >= 2


def calibrate_run(run_dir: Path, settings: EngineSettings, say: Say) -> dict[str, Any]:
    """Steps 1-5 of the module docstring; returns the record written to RUN_DIR/calibration.json.
    Needs the [export] extra; AnnotatorError on anything the user can fix."""
    from annotator.calibration.calibrate import calibrate
    from annotator.export.metadata import load_training_record
    from annotator.export.pipeline import ExportOptions, adapter_base, export_model
    from annotator.project.reviews import import_reviews
    from annotator.project.store import Store

    started = time.perf_counter()
    training = load_training_record(run_dir / "merged")
    base = adapter_base(training)
    adapter = run_dir / ADAPTER_FILE
    exported = export_model(
        ExportOptions(
            merged_dir=run_dir / "merged",
            out=adapter,
            adapter=True,
            threads=settings.n_threads,
            gpu=settings.gpu,
            bootstrap=200,
        ),
        say=say,
    )
    # An adapter export's drift check refused (its labels through llama.cpp differ from the
    # merged model's: typical of a near-collapsed adapter, whose answers are near ties) ships
    # nothing fine-tuned; the base still gets its head file, so the run ends with one to ship.
    refused = None if exported.accepted else exported.report["reason"]
    validation = run_dir / "validation.jsonl"
    project = run_dir / PROJECT_FILE
    with Store(project) as store:  # the base carries no rubric: the project holds the run's
        store.bind_rubric(training.rubric)
    runs = {}
    if refused is None:
        runs["fine_tuned"] = (
            _label(validation, project, adapter, base, settings, "base + adapter", say),
            run_dir / CALIBRATED_FILE,
        )
    runs["base"] = (
        _label(validation, project, base, None, settings, "base alone", say),
        run_dir / BASE_FILE,
    )
    with Store(project) as store:
        imported = import_reviews(store, validation, REVIEWER)
        if imported.problems:
            raise AnnotatorError(f"{validation}: {imported.problems[0]}")
        say(f"fitting heads on {imported.items} validation items (leave-one-out)")
        human = _human(store, training.rubric)
        sides, files = {}, {}
        for key, (run_id, out) in runs.items():
            result = calibrate(store, run_id, REVIEWER)
            sides[key] = _side(store, training.rubric, result, out, human)
            files[key] = out.name if sides[key].file is not None else None
    if refused is None:
        comparison = compare(sides["fine_tuned"].alpha, sides["base"].alpha)
        comparison["interval"] = difference_interval(
            training.rubric,
            comparison["dimensions"],
            sides["fine_tuned"].labels,
            sides["base"].labels,
            human,
        )
        line = comparison_line(comparison, imported.items, files)
    else:
        comparison = {"better": "base", "refused": refused}
        line = refused_line(refused, exported.report_files[1].name, imported.items, files)
    record = {
        "items": imported.items,
        "labels": "validation.jsonl (several raters: their majority)",
        "adapter": {
            "file": ADAPTER_FILE if refused is None else None,
            "sha256": exported.sha256,
            "size": exported.size,
            "export_report": exported.report_files[0].name,
            "refused": refused,
        },
        "project": PROJECT_FILE,
        "fine_tuned": None,
        **{key: side.as_dict() for key, side in sides.items()},
        "comparison": comparison,
        "line": line,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (run_dir / RECORD_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


def _label(
    data: Path,
    project: Path,
    model: Path,
    base: Path | None,
    settings: EngineSettings,
    what: str,
    say: Say,
) -> int:
    """Label `data` with `model` (on `base`, an adapter) into `project`; the run's id."""
    from annotator.console import progress
    from annotator.jobs.job import Job
    from annotator.jobs.spec import JobSpec

    spec = JobSpec(data, project, model=model, base=base, settings=settings, id_col_given=True)
    job = Job.open(spec)
    try:
        say(f"labelling {len(job.todo)} validation items with the {what} (llama.cpp)")
        with progress(len(job.todo), what, rate_unit="items", terminal_only=True) as advance:
            for _ in job.run():
                advance()
        return job.run_id
    finally:
        job.close()


def _human(store, rubric: Rubric) -> dict[str, list]:
    """The validation labels per dimension, items in id order (None where missing)."""
    from annotator.project.reviews import unbiased_labels

    given = unbiased_labels(store.reviews()).get(REVIEWER, {})
    ids = sorted({item_id for item_id, _ in given})
    return {"": ids} | {d.name: [given.get((i, d.name)) for i in ids] for d in rubric.dimensions}


def _side(store, rubric: Rubric, result, out: Path, human: dict[str, list]) -> Side:
    """The figures of one calibrated run, and its file written to `out` when it has a head
    (the base's only as a head file: a full copy of another base is left to the user).
    `human`: `_human`'s labels, whose "" key lists the items."""
    from annotator.agreement import agreement
    from annotator.calibration.headfile import HEAD_FILE, embedded_sha256, write_model_with_head
    from annotator.modelfile import sha256_file

    def labels(run_id: int) -> dict[str, list]:
        by_item = {o.item_id: o.labels for o in store.outputs(run_id)}
        return {
            d.name: [by_item[i][d.name].value if i in by_item else None for i in human[""]]
            for d in rubric.dimensions
        }

    def alphas(found: dict[str, list]) -> dict[str, float | None]:
        return {
            d.name: agreement(
                d, ("model", REVIEWER), [found[d.name], human[d.name]], bootstrap=0
            ).alpha
            for d in rubric.dimensions
        }

    run = store.run(result.run_id)
    file, note = None, ""
    if result.head is None:
        note = "no dimension got a head: " + "; ".join(
            f"{k}: {v}" for k, v in result.left_out.items()
        )
    elif out.name == BASE_FILE and run.model_sha256 != embedded_sha256():
        note = (
            "the base is not the embedded model, so its head would need a full copy of it: "
            f"`annotator calibrate {PROJECT_FILE} --run {result.run_id} --out FILE` writes one"
        )
    else:
        kind = write_model_with_head(store, run, result.head, out)
        assert out.name != BASE_FILE or kind == HEAD_FILE
        file = {
            "name": out.name,
            "kind": kind,
            "size": out.stat().st_size,
            "sha256": sha256_file(out),
        }
    calibrated = labels(result.run_id)
    return Side(
        alpha=alphas(calibrated),
        alpha_without_head=alphas(labels(result.parent)),
        head=None if result.head is None else result.head.describe(),
        left_out=dict(result.left_out),
        run=result.run_id,
        file=file,
        note=note,
        labels=calibrated,
    )


def after_training(run_dir: Path, device: str, threads: int, echo: Say, note: Say) -> None:
    """What `train` does last (unless --no-calibrate): `echo` gets one line when the run gets
    no calibrated files and why, else a line per file and the comparison line; `note` gets
    the progress lines. A failure after training raises AnnotatorError naming the run."""
    reason = skip_reason(run_dir)
    if reason is not None:
        echo(f"no calibrated files: {reason}")
        return
    try:
        from annotator.export.convert import check_converter

        check_converter()
    except ImportError as exc:
        echo(f"no calibrated files: they need the [export] extra: pip install '.[export]' ({exc})")
        return
    except AnnotatorError as exc:
        echo(f"no calibrated files: {exc}")
        return
    gpu = device if device in ("cuda", "cpu") else "auto"
    settings = EngineSettings(n_threads=threads, gpu=gpu)
    try:
        record = calibrate_run(run_dir, settings, note)
    except AnnotatorError as exc:
        raise AnnotatorError(
            f"{run_dir}: trained and merged, but the calibrated files failed: {exc}"
        ) from exc
    for key, what in SIDES.items():
        if record[key] is not None:  # None: the fine-tuned adapter's export was refused
            echo(side_line(what, record[key], run_dir))
    echo(record["line"])
    echo(f"calibration record: {run_dir / RECORD_FILE}")
