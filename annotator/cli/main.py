"""The `annotator` command. Each subcommand imports what it needs when it runs.

Errors the user can fix (a bad file, row or key) are `AnnotatorError`s and print as one line;
item text never reaches the terminal except through `results`, which exists to show it.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import click

from annotator import __version__
from annotator.errors import AnnotatorError

DEFAULTS = {"n_ctx": 4096, "n_batch": 512}


# The GPU-box commands, imported only when named or listed (`annotator --help`). Their modules
# import no part of their extras, so the core never imports torch.
LAZY_COMMANDS = {"train": "annotator.train.cli:train_command", "export": "annotator.export.cli:export_command"}


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module, name = LAZY_COMMANDS[cmd_name].split(":")
            return getattr(importlib.import_module(module), name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="annotator")
def cli() -> None:
    """Offline rubric annotation with a small model in one GGUF file.

    Label a data file against a rubric with llama.cpp, spot-check the labels, and measure
    agreement (Krippendorff's alpha) between the model and reviewers, per dimension.
    Nothing here uses the network.
    """


@cli.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--rubric", "rubric_path", type=click.Path(path_type=Path),
              help="Rubric TOML. Default: the rubric the model file carries.")
@click.option("--project", required=True, type=click.Path(path_type=Path),
              help="Project file (SQLite); created if missing, resumed if it exists.")
@click.option("--model", type=click.Path(path_type=Path),
              help="GGUF model, or a LoRA adapter GGUF from `annotator export --adapter`. "
                   "Default: the embedded Gemma 3 270M (assembled on first use).")
@click.option("--base", type=click.Path(path_type=Path),
              help="The base GGUF an adapter --model runs on [default: the embedded model].")
@click.option("--id-col", default=None, help="Column holding item ids [default: id, else row number].")
@click.option("--n-ctx", default=DEFAULTS["n_ctx"], show_default=True, help="Context size in tokens.")
@click.option("--n-batch", default=DEFAULTS["n_batch"], show_default=True, help="Batch size in tokens.")
@click.option("--threads", default=0, help="CPU threads [default: all this process may use].")
@click.option("--flash-attn/--no-flash-attn", default=False, show_default=True)
@click.option("--gpu", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: CUDA when the build and a device allow it, else CPU.")
@click.option("--parallel", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Items decoded together as parallel sequences (for GPUs). Batching can move "
                   "a near-tie label; 1 is the deterministic reference.")
@click.option("--rule", type=click.Choice(["auto", "argmax", "median", "mean"]), default="auto",
              show_default=True,
              help="How a label is read from the values' probabilities: auto is median for "
                   "ordinal, mean for interval, argmax for nominal dimensions.")
@click.option("--prior", type=click.Choice(["none", "content-free"]), default="none",
              show_default=True,
              help="content-free: divide by the model's answer to an empty item first.")
@click.option("--tie-margin", default=0.1, show_default=True,
              help="Flag a label whose margin (how far the rule is from choosing another "
                   "value, 0-1) is below this.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Engine processes on this machine, one project; --threads is split "
                   "between them.")
@click.option("--ray", "ray_address", metavar="auto|local|ADDRESS",
              help="Label on a Ray cluster ([cluster] extra): auto = the cluster this machine "
                   "joined, local = a one-machine cluster, else the head's HOST:PORT. The model "
                   "file must be at the same path on every node (its sha256 is checked there).")
@click.option("--actors", default=0, type=click.IntRange(0, 10000),
              help="With --ray: engines (each loads the model once) [default: cluster CPUs / "
                   "--threads]. --threads is per actor there [default: 1].")
@click.option("--block-timeout", type=click.FloatRange(min=1), metavar="SECONDS",
              help="With --ray: an actor that returns no block of items in this time is taken "
                   "as hung; it is restarted and the block runs again [default: 120 + 30 per "
                   "item of the block].")
def annotate(data, rubric_path, project, model, base, id_col, n_ctx, n_batch, threads, flash_attn,
             gpu, parallel, rule, prior, tie_margin, workers, ray_address, actors,
             block_timeout) -> None:
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
    from annotator.inference.engine import EngineSettings
    from annotator.jobs.job import open_job

    settings = EngineSettings(n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_threads=threads,
                              flash_attn=flash_attn, gpu=gpu, n_parallel=parallel)
    job_args = dict(data=data, project=project, rubric_path=rubric_path, model=model,
                    id_col=id_col or "id", id_col_given=id_col is not None, settings=settings,
                    tie_margin=tie_margin, base=base,
                    readout=Readout(rule=rule, prior=prior))
    if ray_address:
        from annotator.jobs.cluster import annotate_command

        if workers > 1:
            raise AnnotatorError("--workers is for one machine; with --ray use --actors")

        ran = annotate_command(job_args, ray_address, actors, _stderr, progress, block_timeout)
        _annotate_summary(ran.summary, ran.skipped, tie_margin, ran.interrupted)
        return
    if workers > 1:
        from annotator.jobs.workers import run_workers

        outcome = run_workers(workers, settings, job_args, _stderr, progress)
        for line in outcome.failed:
            _stderr(f"  {line}" + ("" if outcome.unfinished else
                                   "; the other workers finished its items"))
        _annotate_summary(outcome.summary, outcome.skipped, tie_margin, outcome.interrupted)
        if outcome.unfinished:
            raise AnnotatorError(f"{len(outcome.failed)} of {workers} workers failed and the "
                                 "items are not all labelled; run the same command again to "
                                 "resume")
        return
    job = open_job(**job_args)
    say = _stderr
    say(f"model {job.model.path.name} ({job.model.quantization}) on {job.engine.backend.upper()}: "
        f"{job.engine.backend_reason}")
    say(f"rubric {job.rubric.name!r} {job.rubric.hash[:12]}; run {job.run_id}"
        + (" (resumed)" if job.resumed else ""))
    if job.engine.head is not None:
        say(f"calibration head from the model file on {', '.join(sorted(job.engine.head.dims))}")
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
    say = _stderr
    say(f"done {s.done_before + s.done_now} of {s.items} items"
        + ("" if s.counted_all else " read so far") + f" ({s.done_now} now, "
        f"{s.done_before} before), skipped {s.skipped} rows, flagged {s.flagged} "
        f"({s.truncated} truncated, {s.near_ties} near ties < {tie_margin})"
        + (f"; {s.done_now / s.seconds:.2f} items/s" if s.seconds > 0 else ""))
    for skip in skipped[:10]:
        say(f"  skipped row {skip.row}" + (f" (id {skip.id})" if skip.id else "") + f": {skip.reason}")
    if len(skipped) > 10:
        say(f"  ... and {len(skipped) - 10} more (all stored in the project)")
    if interrupted:
        say("interrupted: finished items are saved; run the same command again to resume")
        sys.exit(130)


@cli.command()
@click.argument("project", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path),
              help="Write .csv or .jsonl; without it, print a table.")
@click.option("--run", "run_id", type=int, help="Run number [default: the latest].")
@click.option("--probs", "with_probs", is_flag=True,
              help="Add every value's probability: <dimension>_p_<value> columns.")
@click.option("--raw-cells", is_flag=True,
              help="CSV/TSV: write cells exactly as they are. By default a cell a spreadsheet "
                   "would run as a formula (starting with = + - @, tab or CR, other than a "
                   "plain number such as -1) gets a leading single quote.")
def results(project, out, run_id, with_probs, raw_cells) -> None:
    """One row per item: id, each dimension's value, <dimension>_p (its probability),
    <dimension>_margin (how far the rule is from another value) and truncated (tokens cut to
    fit the context)."""
    from annotator.project.results import print_table, result_rows, write_results
    from annotator.project.store import Store

    with Store(project) as store:
        rubric = store.rubric()
        if rubric is None:
            raise AnnotatorError(f"{project}: no annotation run yet")
        run = store.run(run_id)
        rows = result_rows(rubric, store.outputs(run.id), with_probs)
    if out is None:
        print_table(rubric, rows)
    else:
        write_results(out, rubric, rows, with_probs, raw_cells)
        _stderr(f"wrote {len(rows)} rows to {out}")


@cli.group()
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
    _stderr(f"stored {report.stored} labels from {report.reviewer!r} for {report.items} items")
    for problem in report.problems[:20]:
        _stderr(f"  {problem}")
    if len(report.problems) > 20:
        _stderr(f"  ... and {len(report.problems) - 20} more problems")




@review.command("export")
@click.argument("project", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Labelled file to write (.csv, .tsv or .jsonl), as `annotator train --data` reads.")
@click.option("--reviewer", help="Only this reviewer's labels [default: every reviewer].")
@click.option("--queue", type=click.Choice(["audit", "hard", "import", "all"]), default="all",
              show_default=True, help="Only reviews from this queue.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--raw-cells", is_flag=True,
              help="CSV/TSV: write cells exactly as they are. By default a cell a spreadsheet "
                   "would run as a formula (starting with = + - @, tab or CR, other than a "
                   "plain number such as -1) gets a leading single quote.")
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
        report = export_reviews(store, out, reviewer=reviewer, queue=queue, force=force,
                                raw_cells=raw_cells)
    _stderr(f"wrote {report.items} items ({report.labels} labels) to {out}; "
            f"{report.conflicts} conflicting cells left blank")
    if report.incomplete:
        _stderr(f"  {report.incomplete} items lack a label for some dimension; "
                "`annotator train` skips such rows")


cli.add_command(review, name="reviews")  # `annotator reviews export` works too


@cli.command()
@click.argument("project", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--reviewer", help="Fit on this reviewer's labels [default: every reviewer's].")
@click.option("--run", "run_id", type=int, help="Run to read again [default: the latest].")
@click.option("--rule", type=click.Choice(["auto", "argmax", "median", "mean"]),
              help="Decision rule for dimensions without a head [default: the run's].")
@click.option("--prior", type=click.Choice(["none", "content-free", "batch"]),
              help="Prior to divide by first; batch: the run's mean distribution [default: the run's].")
@click.option("--head/--no-head", "fit_head", default=True, show_default=True,
              help="Fit a calibration head on the reviewed audit and imported items.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a copy of the run's model file that carries the head.")
def calibrate(project, reviewer, run_id, rule, prior, fit_head, out) -> None:
    """Read a run's labels out again, without running the model, into a new run.

    Fits a small head per ordinal or interval dimension (a ridge probe on the mean of the
    model's middle-block hidden states at the item's answers, with thresholds that keep the
    reviewed labels' value shares) on items reviewed in
    the audit sample or imported, and applies a decision rule or prior to the rest. Items
    that helped fit the head get leave-one-out labels, so `agree` on the new run stays honest.
    """
    from annotator.calibration.calibrate import calibrate as run_calibration
    from annotator.calibration.calibrate import describe_run, run_model_file, write_model_with_head
    from annotator.project.store import Store

    with Store(project) as store:
        # --out copies the run's model file: refused before anything is written when the
        # file now at its path is not the one the run used (its sha256).
        source = run_model_file(store, store.run(run_id)) if out is not None else None
        result = run_calibration(store, run_id, reviewer, rule, prior, fit_head)
        new_run = store.run(result.run_id)
        for dim, n in result.fitted.items():
            assert result.head is not None
            loo = result.head.dims[dim].loo_alpha
            # Against the reviewers' rounded mean label: less noisy than any one reviewer, so
            # higher than `agree` (each reviewer alone) will show.
            _stderr(f"  {dim}: head fitted on {n} reviewed items; leave-one-out alpha vs the "
                    "reviewers' mean " + ("undefined" if loo is None else f"{loo:.3f}"))
        for dim, why in result.left_out.items():
            _stderr(f"  {dim}: no head ({why})")
        _stderr(f"run {result.run_id} from run {result.parent}: {describe_run(new_run)}")
        _stderr(f"`annotator agree {project} --run {result.run_id}` compares it with reviewers")
        if out is not None:
            if result.head is None:
                raise AnnotatorError("no dimension had enough reviewed items for a head; "
                                     "nothing to write to --out")
            write_model_with_head(store, new_run, result.head, out, source)
            from annotator.modelfile import sha256_file

            _stderr(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, sha256 "
                    f"{sha256_file(out)[:16]}...): annotate --model {out.name} applies the head")
@cli.command()
@click.argument("project", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--reviewer", help="Only this reviewer [default: each reviewer].")
@click.option("--bootstrap", default=1000, show_default=True, help="Bootstrap resamples (0: none).")
@click.option("--run", "run_id", type=int, help="Run number [default: the latest].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def agree(project, reviewer, bootstrap, run_id, as_json) -> None:
    """Krippendorff's alpha per dimension: model vs each reviewer, and between reviewers.

    Uses each dimension's level (nominal, ordinal, interval) and full value domain, with a 95%
    interval from resampling items. Only audit-sample and imported reviews count; reviews
    from the "hardest first" queue are chosen by the model's doubt and would bias alpha.
    """
    from annotator.project.reviews import agreement_report
    from annotator.project.store import Store

    with Store(project) as store:
        report = agreement_report(store, run_id=run_id, reviewer=reviewer, bootstrap=bootstrap)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        from annotator.console import print_agreement

        print_agreement(report)


@cli.command()
def doctor() -> None:
    """Versions, backend (CUDA or CPU and why), the default model's path and sha256, and the
    field kit this environment was installed from, if any."""
    from annotator.inference.engine import backend_choice, runtime_versions
    from annotator.kit.build import installed_kit
    from annotator.modelfile import default_model_path, sha256_file

    for name, version in runtime_versions().items():
        click.echo(f"{name:18} {version}")
    backend, why = backend_choice("auto")
    click.echo(f"{'backend':18} {backend.upper()}: {why}")
    path = default_model_path()
    click.echo(f"{'default model':18} {path}")
    click.echo(f"{'sha256':18} {sha256_file(path)}")
    kit = installed_kit()
    if kit is not None:
        click.echo(f"{'kit':18} {kit.get('kit')} (built {kit.get('built')}, MANIFEST.json "
                   f"sha256 {str(kit.get('manifest_sha256'))[:12]}..., installed {kit.get('installed')})")


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help="Print everything the file says about itself as JSON, the whole provenance "
                   "record included.")
def inspect(model, as_json) -> None:
    """Architecture, size, quantization, sha256, any rubric the GGUF file carries, its
    calibration head and a short summary of its provenance (how it was trained and checked)."""
    from annotator.calibration.calibrate import describe_head
    from annotator.modelfile import read_model_info, sha256_file
    from annotator.provenance import summary_lines

    info = read_model_info(model)
    if as_json:
        click.echo(json.dumps({
            "file": str(info.path), "name": info.name, "architecture": info.architecture,
            "size": info.size, "quantization": info.quantization,
            "context_length": info.context_length, "sha256": sha256_file(info.path),
            "description": info.description, "is_adapter": info.is_adapter,
            "base_sha256": info.base_sha256, "prompt_format": info.prompt_format,
            "rubric": None if info.rubric is None else json.loads(info.rubric.canonical_json()),
            "rubric_sha256": None if info.rubric is None else info.rubric.hash,
            "provenance": info.provenance,
            "calibration": None if info.rubric is None or (head := info.head(info.rubric)) is None
            else head.describe(),
        }, indent=2, sort_keys=True))
        return
    click.echo(f"file          {info.path}")
    click.echo(f"name          {info.name}")
    click.echo(f"architecture  {info.architecture}")
    click.echo(f"size          {info.size / 1e6:.1f} MB ({info.size} bytes)")
    click.echo(f"quantization  {info.quantization}")
    click.echo(f"context       {info.context_length}")
    click.echo(f"sha256        {sha256_file(info.path)}")
    if info.description:
        click.echo(f"description   {info.description}")
    if info.is_adapter:
        click.echo(f"base sha256   {info.base_sha256 or 'not recorded'} (runs on that base model)")
    if info.rubric is None:
        click.echo("rubric        none (pass --rubric when annotating)")
    else:
        r = info.rubric
        click.echo(f"rubric        {r.name!r} {r.hash[:12]} (prompt format {info.prompt_format})")
        for dim in r.dimensions:
            click.echo(f"  {dim.name}: {dim.scale} {', '.join(map(str, dim.values))}")
        if (head := info.head(r)) is not None:
            click.echo(f"calibration   {describe_head(head)}")
    if info.provenance:
        click.echo("provenance    (all of it: inspect --json)")
        for label, text in summary_lines(info.provenance):
            click.echo(f"  {label:12} {text}")


@cli.command()
@click.argument("project", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), help="Data file to annotate.")
@click.option("--rubric", "rubric_path", type=click.Path(path_type=Path), help="Rubric TOML.")
@click.option("--model", type=click.Path(path_type=Path),
              help="GGUF model or LoRA adapter [default: the project's last one; for the "
                   "bundled sample its fine-tuned adapter; else the embedded model].")
@click.option("--base", type=click.Path(path_type=Path),
              help="The base GGUF an adapter --model runs on [default: the embedded model].")
def tui(project, data, rubric_path, model, base) -> None:
    """Open the terminal app: annotate, browse, blind spot-check review, agreement."""
    from annotator.tui.app import run_app

    run_app(project=project, data=data, rubric=rubric_path, model=model, base=base)


@cli.group()
def kit() -> None:
    """Field kits: the software, model, rubric and sample for an air-gapped machine."""


@kit.command("build")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="The kit folder to create (KIT.tar.gz with --archive).")
@click.option("--model", type=click.Path(path_type=Path),
              help="Model or LoRA adapter GGUF to ship [default: none; the embedded Gemma 3 "
                   "270M comes with the wheels].")
@click.option("--base", type=click.Path(path_type=Path),
              help="The base GGUF an adapter --model runs on, when it is not the embedded model.")
@click.option("--rubric", "rubric_path", type=click.Path(path_type=Path),
              help="Rubric TOML to ship [needed with --sample when the model carries none].")
@click.option("--sample", type=click.Path(path_type=Path),
              help="A data file the kit's start.sh labels first.")
@click.option("--extras", default="", help="Extras to include, e.g. train,export [default: none].")
@click.option("--archive", is_flag=True, help="Write one KIT.tar.gz instead of a folder.")
@click.option("--llama-wheel", type=click.Path(path_type=Path),
              help="A portable llama-cpp-python wheel with its WHEEL.build.json record, as an "
                   "earlier kit build made it [default: built here once, then reused].")
@click.option("--sign", "sign_key", type=click.Path(path_type=Path),
              help="Sign MANIFEST.json with this SSH key (ssh-keygen -Y sign), for "
                   "`kit verify --signers` [default: not signed].")
def kit_build(out, model, base, rubric_path, sample, extras, archive, llama_wheel,
              sign_key) -> None:
    """Build a kit on a connected machine of the same platform and Python as the laptop.

    Wheels of every distribution needed, at the versions installed here (llama-cpp-python as
    a portable CPU build: GGML_NATIVE=OFF, compiled once; other locally built ones from pip's
    cache), the project as a wheel, the files given, licence texts, install.sh, start.sh,
    verify.py, a README, and MANIFEST.json with every file's size and sha256. Prints
    MANIFEST.json's sha256: pass it to the laptop by another way than the kit, for
    `kit verify --digest`.
    """
    import time

    from annotator.kit.build import build_kit, manifest_digest

    started = time.perf_counter()
    wanted = [e.strip() for e in extras.split(",") if e.strip()]
    written = build_kit(out, model=model, base=base, rubric=rubric_path, sample=sample,
                        extras=wanted, archive=archive, llama_wheel=llama_wheel, sign=sign_key,
                        say=_stderr)
    size = (written.stat().st_size if written.is_file()
            else sum(p.stat().st_size for p in written.rglob("*") if p.is_file()))
    _stderr(f"wrote {written}: {size / 1e6:.0f} MB in {time.perf_counter() - started:.0f} s")
    digest = manifest_digest(written)
    _stderr("the kit's digest (MANIFEST.json's sha256, below): send it to the laptop by another "
            f"way than the kit; there: annotator kit verify KIT --digest {digest} (or python3 "
            f"KIT/verify.py KIT --digest {digest})")
    click.echo(f"{digest}  MANIFEST.json")


def _digest_option(ctx, param, value):
    from annotator.kit.verify import is_digest

    if value is not None and not is_digest(value):
        raise click.BadParameter("not a sha256 (64 hex digits)")
    return value


@kit.command("verify")
@click.argument("kit_dir", type=click.Path(path_type=Path))
@click.option("--digest", callback=_digest_option,
              help="MANIFEST.json's sha256 as `kit build` printed it, received by another way "
                   "than the kit: the kit must be the one that was built.")
@click.option("--signers", type=click.Path(path_type=Path),
              help="An allowed_signers file (ssh-keygen): MANIFEST.json must be signed "
                   "(kit build --sign) by one of its keys.")
def kit_verify(kit_dir, digest, signers) -> None:
    """Check every file's size and sha256 against MANIFEST.json, that the kit is for this
    Python and platform and that this CPU runs its llama.cpp build; one line per problem,
    naming the file."""
    from annotator.kit.build import verify_kit
    from annotator.kit.verify import llama_summary, read_manifest, signer_of

    problems = verify_kit(kit_dir, digest=digest, signers=signers)
    for line in problems:
        _stderr(line)
    if problems:
        raise AnnotatorError(f"{kit_dir}: refused ({len(problems)} problem(s) above)")
    manifest, _ = read_manifest(kit_dir)
    signer = signer_of(kit_dir, signers)[0] if signers else None
    click.echo(f"{kit_dir}: intact, for this Python and platform"
               f"{', MANIFEST.json has the digest given' if digest else ''}"
               f"{f', signed by {signer}' if signer else ''}")
    click.echo(llama_summary(manifest or {}))


from annotator.cli.project import project  # noqa: E402  (the group lives in its own module)

cli.add_command(project)


def _stderr(message: str) -> None:
    click.echo(message, err=True)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except AnnotatorError as exc:
        click.echo(f"annotator: error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
