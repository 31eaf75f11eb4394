"""`annotator export RUN_DIR/merged --out MODEL.gguf`: the command line over export.pipeline.

A click command that `annotator` loads when it is named or listed (as it does train.cli's):
this module imports no part of the [export] extra; the pipeline is imported inside the
command. Errors the user can fix are AnnotatorErrors, which the `annotator` command prints as
one line; a refused file is one of them (exit status 1).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from annotator.errors import AnnotatorError
from annotator.export.convert import QUANTS


@click.command(name="export", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("merged", type=click.Path(path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The model file to write (MODEL.gguf). Reports go next to it.",
)
@click.option(
    "--quant",
    type=click.Choice(list(QUANTS)),
    default="q4_k_m",
    show_default=True,
    help="Quantization (f16: no quantization).",
)
@click.option(
    "--check",
    "check",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Items with human labels for the drift check [default: RUN_DIR/validation.jsonl].",
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(0.0, 1.0),
    default=0.9,
    show_default=True,
    help="Refuse the file when alpha(quantized, merged) is below this on any dimension.",
)
@click.option("--n-ctx", default=4096, show_default=True, help="Engine context for the check.")
@click.option("--threads", default=0, help="CPU threads [default: all this process may use].")
@click.option(
    "--gpu",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Engine backend for the drift check.",
)
@click.option(
    "--bootstrap",
    default=1000,
    show_default=True,
    help="Bootstrap resamples for the alpha intervals (0: none).",
)
@click.option("--force", is_flag=True, help="Replace an existing MODEL.gguf.")
@click.option("--verbose", is_flag=True, help="Show the converter's log lines.")
@click.option(
    "--description",
    default="",
    help="Stored as general.description and shown by `inspect` and the app: what the "
    "model labels, its training data and their license.",
)
@click.option(
    "--adapter",
    is_flag=True,
    help="Write RUN_DIR/adapter as a LoRA adapter GGUF (a few MB) for the base GGUF the "
    "run trained from, instead of a full model; --quant does not apply.",
)
@click.option(
    "--full-provenance",
    is_flag=True,
    help="Keep train's whole provenance record in the file: the training machine's "
    "paths and the validation item ids. By default the file keeps hashes, "
    "counts, file names without folders and settings only.",
)
def export_command(
    merged,
    out,
    quant,
    check,
    min_agreement,
    n_ctx,
    threads,
    gpu,
    bootstrap,
    force,
    verbose,
    description,
    adapter,
    full_provenance,
) -> None:
    """Convert a merged model to a checked GGUF file ([export] extra).

    MERGED is RUN_DIR/merged from `annotator train`. HF -> GGUF f16 (llama.cpp's converter) ->
    QUANT (llama.cpp), with the rubric, prompt format and provenance in the file's metadata.
    Then a drift check: the file, through the annotator's engine, against the merged model and
    the human labels on the validation items. The file keeps its name only if alpha(quantized,
    merged) >= --min-agreement on every dimension; otherwise it is left as MODEL.gguf.rejected
    and the command fails.

    With --adapter (runs trained from a GGUF base, such as the embedded model) the file is a
    llama.cpp LoRA adapter that `annotator annotate --model` applies on top of that unchanged
    base file: nothing is re-quantized, so small models keep what they learned.
    """
    try:
        from annotator.export.pipeline import ExportOptions, export_model
        from annotator.export.report import format_report
    except ImportError as exc:
        raise AnnotatorError(
            f"export needs the [export] extra: pip install '.[export]' ({exc})"
        ) from exc

    opts = ExportOptions(
        merged_dir=merged,
        out=out,
        quant=quant,
        check=check,
        min_agreement=min_agreement,
        n_ctx=n_ctx,
        threads=threads,
        gpu=gpu,
        bootstrap=bootstrap,
        force=force,
        verbose=verbose,
        description=description,
        adapter=adapter,
        full_provenance=full_provenance,
    )
    result = export_model(opts, say=lambda line: click.echo(line, err=True))
    click.echo(format_report(result.report), nl=False)
    json_path, text_path = result.report_files
    click.echo(f"report    {json_path}\n          {text_path}")
    click.echo(f"wrote     {result.path}")
    click.echo(f"size      {result.size} bytes ({result.size / 1e6:.1f} MB)")
    click.echo(f"sha256    {result.sha256}")
    if not result.accepted:
        raise AnnotatorError(
            f"{out}: refused, {result.report['reason']}; the file is left as "
            f"{result.path} (report: {text_path})"
        )


def main(args: list[str]) -> None:
    """Entry point for `annotator export ARGS...`. Usage errors raise click exceptions and
    user errors AnnotatorError, both of which the `annotator` command reports in one line."""
    export_command.main(args=list(args), prog_name="annotator export", standalone_mode=False)


if __name__ == "__main__":  # python -m export.cli ...
    try:
        main(sys.argv[1:])
    except AnnotatorError as exc:
        click.echo(f"annotator: error: {exc}", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
