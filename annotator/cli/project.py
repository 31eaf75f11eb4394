"""`annotator project split|merge`: shares for field laptops, and bringing them back."""

from __future__ import annotations

from pathlib import Path

import click

from annotator.cli import stderr


@click.group()
def project() -> None:
    """Split a job into shares for several laptops; merge their projects into one."""


@project.command("split")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--parts", required=True, type=click.IntRange(2, 1000), help="Number of shares.")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the shares (share-K.db and share-K.csv/.tsv/.jsonl).",
)
@click.option(
    "--rubric",
    "rubric_path",
    type=click.Path(path_type=Path),
    help="Rubric TOML [default: the project's, else the one the model carries].",
)
@click.option(
    "--model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The model (or adapter) every share must be labelled with; its sha256 is "
    "fixed in each share [default: the project's last run's, else the embedded "
    "model].",
)
@click.option(
    "--id-col", default=None, help="Column holding item ids [default: id, else row number]."
)
def split(source, parts, out, rubric_path, model, id_col) -> None:
    """Split SOURCE (a data file or a project .db) into --parts shares of consecutive items.

    Each share is a project (the items, the rubric and the model's sha256, which `annotate`
    then insists on) and a data file with the same items. On each laptop:
    `annotator annotate OUT/share-K.csv --project OUT/share-K.db --model M.gguf`, then
    review; back at the office `annotator project merge OUT/share-*.db --into P.db`.
    """
    from annotator.project.shares import split as do_split

    report = do_split(
        source,
        parts,
        out,
        rubric_path=rubric_path,
        model=model,
        id_col=id_col or "id",
        id_col_given=id_col is not None,
    )
    for share in report.shares:
        stderr(f"{share.project} + {share.data.name}: {share.items} items")
    stderr(
        f"rubric {report.rubric.name!r} {report.rubric.hash[:12]}, model sha256 "
        f"{report.model_sha256[:12]} fixed in every share"
    )
    if report.not_shared:
        stderr(
            f"{report.not_shared} rows of {source} cannot be labelled and are in no share "
            "(`annotator annotate` on the whole file records them with the reason)"
        )


@project.command("merge")
@click.argument(
    "sources", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--into",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The merged project (created if missing; merging again adds what is new).",
)
def merge(sources, into) -> None:
    """Bring the runs, labels, skipped rows and reviews of SOURCES into one project.

    Refuses a project with another rubric or model sha256. A run with the same model, rubric
    and settings as one already there joins it; an item labelled differently twice is kept,
    in a run of its own. Reviews keep their reviewer and queue.
    """
    from annotator.project.shares import merge as do_merge

    r = do_merge(list(sources), into)
    stderr(
        f"merged {r.sources} projects into {into}: {r.items} new items, {r.labels} labels "
        f"({r.labels_already} already there), runs {r.runs_new} new + {r.runs_joined} "
        f"joined, {r.skipped} skipped rows, {r.reviews} reviews"
    )
    if r.reviews_replaced:
        stderr(
            f"  {r.reviews_replaced} reviews replaced by a later review of the same "
            "reviewer, item, dimension and queue"
        )
    for run_id, count in sorted(r.kept_by_run.items()):
        stderr(
            f"  {count} items labelled differently twice: the other labels are kept in run "
            f"{run_id} (`annotator results {into} --run {run_id}`)"
        )
    for run_id, backends in sorted(r.machines.items()):
        stderr(
            f"  run {run_id} joins labels from machines that differ in backend, versions or "
            f"priors (backends: {', '.join(backends)}); each machine is recorded with it"
        )
