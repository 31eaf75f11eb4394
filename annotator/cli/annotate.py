"""`annotator annotate` (label a data file into a project) and `annotator results`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from annotator.cli import stderr
from annotator.errors import AnnotatorError

DEFAULTS = {"n_ctx": 4096, "n_batch": 512}


@click.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option(
    "--rubric",
    "rubric_path",
    type=click.Path(path_type=Path),
    help="Rubric TOML. Default: the rubric the model file carries.",
)
@click.option(
    "--project",
    required=True,
    type=click.Path(path_type=Path),
    help="Project file (SQLite); created if missing, resumed if it exists.",
)
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    help="GGUF model, or a LoRA adapter GGUF from `annotator export --adapter`. "
    "Default: the embedded Gemma 3 270M (assembled on first use).",
)
@click.option(
    "--base",
    type=click.Path(path_type=Path),
    help="The base GGUF an adapter --model runs on [default: the embedded model].",
)
@click.option(
    "--id-col", default=None, help="Column holding item ids [default: id, else row number]."
)
@click.option(
    "--n-ctx", default=DEFAULTS["n_ctx"], show_default=True, help="Context size in tokens."
)
@click.option(
    "--n-batch", default=DEFAULTS["n_batch"], show_default=True, help="Batch size in tokens."
)
@click.option("--threads", default=0, help="CPU threads [default: all this process may use].")
@click.option("--flash-attn/--no-flash-attn", default=False, show_default=True)
@click.option(
    "--gpu",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="auto: CUDA when the build and a device allow it, else CPU.",
)
@click.option(
    "--parallel",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Items decoded together as parallel sequences (for GPUs). Batching can move "
    "a near-tie label; 1 is the deterministic reference.",
)
@click.option(
    "--rule",
    type=click.Choice(["auto", "argmax", "median", "mean"]),
    default="auto",
    show_default=True,
    help="How a label is read from the values' probabilities: auto is median for "
    "ordinal, mean for interval, argmax for nominal dimensions.",
)
@click.option(
    "--prior",
    type=click.Choice(["none", "content-free"]),
    default="none",
    show_default=True,
    help="content-free: divide by the model's answer to an empty item first.",
)
@click.option(
    "--tie-margin",
    default=0.1,
    show_default=True,
    help="Flag a label whose margin (how far the rule is from choosing another "
    "value, 0-1) is below this.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Engine processes on this machine, one project; --threads is split between them.",
)
@click.option(
    "--ray",
    "ray_address",
    metavar="auto|local|ADDRESS",
    help="Label on a Ray cluster ([cluster] extra): auto = the cluster this machine "
    "joined, local = a one-machine cluster, else the head's HOST:PORT. The model "
    "file must be at the same path on every node (its sha256 is checked there).",
)
@click.option(
    "--actors",
    default=0,
    type=click.IntRange(0, 10000),
    help="With --ray: engines (each loads the model once) [default: cluster CPUs / "
    "--threads]. --threads is per actor there [default: 1].",
)
@click.option(
    "--block-timeout",
    type=click.FloatRange(min=1),
    metavar="SECONDS",
    help="With --ray: an actor that returns no block of items in this time is taken "
    "as hung; it is restarted and the block runs again [default: 120 + 30 per "
    "item of the block].",
)
def annotate(
    data,
    rubric_path,
    project,
    model,
    base,
    id_col,
    n_ctx,
    n_batch,
    threads,
    flash_attn,
    gpu,
    parallel,
    rule,
    prior,
    tie_margin,
    workers,
    ray_address,
    actors,
    block_timeout,
) -> None:
    """Label every item of DATA (.csv, .tsv, .jsonl) into the project.

    Rerunning resumes: items already labelled by the same model, rubric and settings are
    skipped. Rows that cannot be labelled are recorded with the reason, never dropped. Every
    value's probability and the model's hidden state at each answer are stored, so
    `annotator calibrate` can read the labels out again. A calibration head the model file
    carries labels the dimensions it covers. Several processes may annotate one project at
    once (--workers, or separate commands): each item is claimed first, so it is labelled once.
    """
    from annotator.calibration.readout import Readout
    from annotator.console import progress
    from annotator.inference.backend import EngineSettings
    from annotator.jobs.spec import JobSpec

    settings = EngineSettings(
        n_ctx=n_ctx,
        n_batch=n_batch,
        n_ubatch=n_batch,
        n_threads=threads,
        flash_attn=flash_attn,
        gpu=gpu,
        n_parallel=parallel,
    )
    spec = JobSpec(
        data=data,
        project=project,
        rubric_path=rubric_path,
        model=model,
        id_col=id_col or "id",
        id_col_given=id_col is not None,
        settings=settings,
        tie_margin=tie_margin,
        base=base,
        readout=Readout(rule=rule, prior=prior),
    )
    if ray_address:
        from annotator.jobs.cluster import annotate_command

        if workers > 1:
            raise AnnotatorError("--workers is for one machine; with --ray use --actors")

        ran = annotate_command(spec, ray_address, actors, stderr, progress, block_timeout)
        _annotate_summary(ran.summary, ran.skipped, tie_margin, ran.interrupted)
        return
    if workers > 1:
        from annotator.jobs.workers import run_workers

        outcome = run_workers(workers, spec, stderr, progress)
        for line in outcome.failed:
            stderr(
                f"  {line}"
                + ("" if outcome.unfinished else "; the other workers finished its items")
            )
        _annotate_summary(outcome.summary, outcome.skipped, tie_margin, outcome.interrupted)
        if outcome.unfinished:
            raise AnnotatorError(
                f"{len(outcome.failed)} of {workers} workers failed and the "
                "items are not all labelled; run the same command again to "
                "resume"
            )
        return
    from annotator.jobs.job import Job

    job = Job.open(spec)
    for line in job.start_lines():
        stderr(line)
    s = job.summary
    interrupted = False
    try:
        with progress(len(job.todo), "annotating", rate_unit="items") as advance:
            for _ in job.run():
                advance()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        job.close()
    _annotate_summary(s, job.skipped, tie_margin, interrupted)


def _annotate_summary(s, skipped, tie_margin: float, interrupted: bool) -> None:
    say = stderr
    say(
        f"done {s.done_before + s.done_now} of {s.items} items"
        + ("" if s.counted_all else " read so far")
        + f" ({s.done_now} now, "
        f"{s.done_before} before), skipped {s.skipped} rows, flagged {s.flagged} "
        f"({s.truncated} truncated, {s.near_ties} near ties < {tie_margin})"
        + (f"; {s.done_now / s.seconds:.2f} items/s" if s.seconds > 0 else "")
    )
    for skip in skipped[:10]:
        say(
            f"  skipped row {skip.row}"
            + (f" (id {skip.id})" if skip.id else "")
            + f": {skip.reason}"
        )
    if len(skipped) > 10:
        say(f"  ... and {len(skipped) - 10} more (all stored in the project)")
    if interrupted:
        say("interrupted: finished items are saved; run the same command again to resume")
        sys.exit(130)


@click.command()
@click.argument("project", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Write .csv or .jsonl; without it, print a table.",
)
@click.option("--run", "run_id", type=int, help="Run number [default: the latest].")
@click.option(
    "--probs",
    "with_probs",
    is_flag=True,
    help="Add every value's probability: <dimension>_p_<value> columns.",
)
@click.option(
    "--raw-cells",
    is_flag=True,
    help="CSV/TSV: write cells exactly as they are. By default a cell a spreadsheet "
    "would run as a formula (starting with = + - @, tab or CR, other than a "
    "plain number such as -1) gets a leading single quote.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["labelstudio", "prodigy", "argilla"]),
    help="Write --out for another tool's import: labelstudio, a JSON list of tasks with "
    "the run's labels as predictions; prodigy, JSONL choice tasks with them pre-selected "
    "(one dimension: see --dimension); argilla, a JSON list of records with them as "
    "suggestions. Fields kept by `annotator import` go back in.",
)
@click.option(
    "--dimension", help="With --format prodigy: the dimension to write [default: the only one]."
)
def results(project, out, run_id, with_probs, raw_cells, fmt, dimension) -> None:
    """One row per item: id, each dimension's value, <dimension>_p (its probability),
    <dimension>_margin (how far the rule is from another value) and truncated (tokens cut to
    fit the context). A multi-label dimension: its values joined by ";" and a 0/1 column per
    value. With --format, one task per item in that tool's import shape instead."""
    from annotator.project.results import print_table, result_rows, write_results
    from annotator.project.store import Store

    if fmt is not None and out is None:
        raise click.UsageError("--format needs --out")
    if dimension is not None and fmt != "prodigy":
        raise click.UsageError("--dimension is for --format prodigy")
    with Store(project) as store:
        rubric = store.rubric()
        if rubric is None:
            raise AnnotatorError(f"{project}: no annotation run yet")
        run = store.run(run_id)
        if fmt is not None:
            from annotator.formats.results import write_results_as

            n = write_results_as(store, rubric, run, fmt, out, dimension)
            stderr(f"wrote {n} {'records' if fmt == 'argilla' else 'tasks'} to {out}")
            return
        rows = result_rows(rubric, store.outputs(run.id), with_probs)
    if out is None:
        print_table(rubric, rows)
    else:
        write_results(out, rubric, rows, with_probs, raw_cells)
        stderr(f"wrote {len(rows)} rows to {out}")
