"""`annotator review import|export` (reviewers' labels), `calibrate` and `agree`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from annotator.cli import stderr
from annotator.errors import AnnotatorError


@click.group()
def review() -> None:
    """Reviewers' labels (spot checks)."""


@review.command("import")
@click.argument("project", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("labels", type=click.Path(path_type=Path))
@click.option("--reviewer", required=True, help="Name stored with every label.")
def review_import(project, labels, reviewer) -> None:
    """Import spot labels from LABELS (.csv/.jsonl with `id` and dimension columns).

    Blank cells mean "not reviewed". Unknown ids and invalid values are reported, not stored.
    """
    from annotator.project.reviews import import_reviews
    from annotator.project.store import Store

    with Store(project) as store:
        report = import_reviews(store, labels, reviewer)
    stderr(f"stored {report.stored} labels from {report.reviewer!r} for {report.items} items")
    for problem in report.problems[:20]:
        stderr(f"  {problem}")
    if len(report.problems) > 20:
        stderr(f"  ... and {len(report.problems) - 20} more problems")


@review.command("export")
@click.argument("project", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Labelled file to write (.csv, .tsv or .jsonl), as `annotator train --data` reads.",
)
@click.option("--reviewer", help="Only this reviewer's labels [default: every reviewer].")
@click.option(
    "--queue",
    type=click.Choice(["audit", "hard", "import", "teach", "all"]),
    default="all",
    show_default=True,
    help="Only reviews from this queue.",
)
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option(
    "--raw-cells",
    is_flag=True,
    help="CSV/TSV: write cells exactly as they are. By default a cell a spreadsheet "
    "would run as a formula (starting with = + - @, tab or CR, other than a "
    "plain number such as -1) gets a leading single quote.",
)
def review_export(project, out, reviewer, queue, force, raw_cells) -> None:
    """Write the reviewed items to OUT for the next training round.

    One row per reviewed item: id, the rubric's input columns and one column per dimension
    (blank where not reviewed). Where reviewers disagree on a cell it is left blank.
    For training, prefer .jsonl: it keeps every text exactly, while a CSV text cell starting
    with = + - @ keeps its protective quote unless --raw-cells.
    """
    from annotator.project.reviews import export_reviews
    from annotator.project.store import Store

    with Store(project) as store:
        report = export_reviews(
            store, out, reviewer=reviewer, queue=queue, force=force, raw_cells=raw_cells
        )
    stderr(
        f"wrote {report.items} items ({report.labels} labels) to {out}; "
        f"{report.conflicts} conflicting cells left blank"
    )
    if report.incomplete:
        stderr(
            f"  {report.incomplete} items lack a label for some dimension; "
            "`annotator train` skips such rows"
        )


@click.command()
@click.argument("project", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--reviewer", help="Fit on this reviewer's labels [default: every reviewer's].")
@click.option("--run", "run_id", type=int, help="Run to read again [default: the latest].")
@click.option(
    "--rule",
    type=click.Choice(["auto", "argmax", "median", "mean"]),
    help="Decision rule for dimensions without a head [default: the run's].",
)
@click.option(
    "--prior",
    type=click.Choice(["none", "content-free", "batch"]),
    help="Prior to divide by first; batch: the run's mean distribution [default: the run's].",
)
@click.option(
    "--head/--no-head",
    "fit_head",
    default=True,
    show_default=True,
    help="Fit a calibration head on the reviewed audit, imported and teach items.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a file that carries the head for `annotate --model`: on the embedded "
    "model a head file of a few kB that runs on it; on an adapter the adapter with the "
    "head; on another model a copy of it.",
)
@click.option(
    "--full",
    is_flag=True,
    help="With --out on a full model: a copy of the whole model with the head (hundreds of "
    "MB), for a machine without the embedded model.",
)
@click.option(
    "--curve",
    is_flag=True,
    help="Only print how the head's alpha grows with the number of reviewed items "
    "(25, 50, 100, 200), per dimension; writes nothing.",
)
def calibrate(project, reviewer, run_id, rule, prior, fit_head, out, full, curve) -> None:
    """Read a run's labels out again, without running the model, into a new run.

    Fits a small head per dimension on items reviewed in the audit sample, imported, or
    reviewed in the app's teach queue (which alpha never counts): ordinal and interval, a
    ridge probe on the mean of the model's middle-block hidden states
    at the item's answers, with thresholds that keep the reviewed labels' value shares;
    nominal, a class-weighted logistic regression on those states or on the model's own
    value probabilities, whichever cross-validates better (first among the settings that keep
    the accuracy of the model's own answer and raise its macro-F1). Dimensions without one get the
    decision rule or prior. Items that helped fit a head get leave-one-out (nominal:
    out-of-fold) labels, so `agree` on the new run stays honest.

    With --curve: for each size, heads fitted on 20 random subsets of that many reviewed items
    label held-out items (never sharing an input text with a fitted one); the mean alpha
    against each reviewer ± the 95% interval of that mean, and the size from which another 50
    reviews would move alpha by less than that interval.
    """
    if curve:
        if out is not None:
            raise click.UsageError("--curve writes nothing: leave out --out")
        _print_curve(project, reviewer, run_id)
        return
    from annotator.calibration.calibrate import calibrate as run_calibration
    from annotator.calibration.calibrate import describe_run
    from annotator.calibration.headfile import HEAD_FILE, run_model_file, write_model_with_head
    from annotator.calibration.nominal import FOLDS, NominalHead
    from annotator.project.store import Store

    if full and out is None:
        raise click.UsageError("--full needs --out")
    with Store(project) as store:
        # --out reads the run's model file: refused before anything is written when the
        # file now at its path is not the one the run used (its sha256).
        source = run_model_file(store, store.run(run_id)) if out is not None else None
        result = run_calibration(store, run_id, reviewer, rule, prior, fit_head)
        new_run = store.run(result.run_id)
        for dim, n in result.fitted.items():
            assert result.head is not None
            head = result.head.dims[dim]
            loo = head.loo_alpha
            shown = "undefined" if loo is None else f"{loo:.3f}"
            # Against the reviewers' rounded mean (nominal: most given) label: less noisy than
            # any one reviewer, so higher than `agree` (each reviewer alone) will show.
            if isinstance(head, NominalHead):
                stderr(
                    f"  {dim}: logistic head fitted on {n} reviewed items; {FOLDS}-fold "
                    f"cross-validated alpha vs the reviewers' majority {shown}, macro-F1 "
                    f"{head.cv_macro_f1:.3f} ({len(head.classes)} values seen; on the "
                    + ("model's value probabilities" if head.inputs == "probs" else "hidden states")
                    + f", class balance power {head.power:g}); accuracy {head.cv_accuracy:.3f}, "
                    f"the model's own answer {head.model_accuracy:.3f}"
                )
            else:
                stderr(
                    f"  {dim}: head fitted on {n} reviewed items; leave-one-out alpha vs the "
                    f"reviewers' mean {shown}"
                )
        for dim, why in result.left_out.items():
            stderr(f"  {dim}: no head ({why})")
        stderr(f"run {result.run_id} from run {result.parent}: {describe_run(new_run)}")
        stderr(f"`annotator agree {project} --run {result.run_id}` compares it with reviewers")
        if out is not None:
            if result.head is None:
                raise AnnotatorError(
                    "no dimension had enough reviewed items for a head; nothing to write to --out"
                )
            kind = write_model_with_head(store, new_run, result.head, out, source, full)
            from annotator.modelfile import sha256_file

            size = out.stat().st_size
            shown = f"{size / 1e3:.0f} kB" if size < 1e6 else f"{size / 1e6:.1f} MB"
            stderr(
                f"wrote {out}, {kind} ({shown}, sha256 {sha256_file(out)[:16]}...): "
                f"annotate --model {out.name} applies the head"
                + (
                    " on the embedded model (--full: a copy with the model)"
                    if kind == HEAD_FILE
                    else ""
                )
            )


def _print_curve(project: Path, reviewer: str | None, run_id: int | None) -> None:
    from annotator.calibration.curve import describe, learning_curves
    from annotator.project.store import Store

    with Store(project) as store:
        curves, groups = learning_curves(store, run_id, reviewer)
    for line in describe(curves, groups):
        click.echo(line)


@click.command()
@click.argument("project", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--reviewer", help="Only this reviewer [default: each reviewer].")
@click.option("--bootstrap", default=1000, show_default=True, help="Bootstrap resamples (0: none).")
@click.option("--run", "run_id", type=int, help="Run number [default: the latest].")
@click.option("--pairs", is_flag=True, help="Also print each pair of coders per dimension.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def agree(project, reviewer, bootstrap, run_id, pairs, as_json) -> None:
    """Krippendorff's alpha per dimension: model vs each reviewer, and between reviewers.

    One line per dimension: the reviewers' alpha among themselves (the ceiling), the model's
    mean alpha against each reviewer, its share of the ceiling, its 95% interval, and a
    verdict on both Krippendorff's conventions (0.8 reliable, 0.667 tentative) and the
    ceiling. Uses each dimension's level (nominal, ordinal, interval) and full value domain, and
    for a multi-label dimension the MASI distance between sets; intervals resample items. Only
    audit-sample and imported reviews count (the first lines say how many of each); reviews
    from the "hardest first" and "teach" queues are chosen by the model's doubt and would bias
    alpha.
    """
    from annotator.project.reviews import agreement_report
    from annotator.project.store import Store

    with Store(project) as store:
        report = agreement_report(store, run_id=run_id, reviewer=reviewer, bootstrap=bootstrap)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        from annotator.console import print_agreement

        print_agreement(report, pairs=pairs)
