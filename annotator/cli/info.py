"""`annotator doctor`, `inspect` (what a model file says about itself) and `tui` (the app)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click


@click.command()
def doctor() -> None:
    """Versions, backend (CUDA or CPU and why), the default model's path and sha256, and the
    field kit this environment was installed from, if any."""
    from annotator.inference.backend import backend_choice, runtime_versions
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
        click.echo(
            f"{'kit':18} {kit.get('kit')} (built {kit.get('built')}, MANIFEST.json "
            f"sha256 {str(kit.get('manifest_sha256'))[:12]}..., installed {kit.get('installed')})"
        )


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print everything the file says about itself as JSON, the whole provenance "
    "record included.",
)
def inspect(model, as_json) -> None:
    """Architecture, size, quantization, sha256, any rubric the GGUF file carries, its
    calibration head and a short summary of its provenance (how it was trained and checked)."""
    from annotator.calibration.calibrate import describe_head
    from annotator.modelfile import read_model_info, sha256_file
    from annotator.provenance import summary_lines

    info = read_model_info(model)
    if as_json:
        click.echo(
            json.dumps(
                _finite(
                    {
                        "file": str(info.path),
                        "name": info.name,
                        "architecture": info.architecture,
                        "size": info.size,
                        "quantization": info.quantization,
                        "context_length": info.context_length,
                        "sha256": sha256_file(info.path),
                        "description": info.description,
                        "is_adapter": info.is_adapter,
                        "base_sha256": info.base_sha256,
                        "prompt_format": info.prompt_format,
                        "rubric": None
                        if info.rubric is None
                        else json.loads(info.rubric.canonical_json()),
                        "rubric_sha256": None if info.rubric is None else info.rubric.hash,
                        "provenance": info.provenance,
                        "calibration": None
                        if info.rubric is None or (head := info.head(info.rubric)) is None
                        else head.describe(),
                    }
                ),
                indent=2,
                sort_keys=True,
                allow_nan=False,
            )
        )
        return
    click.echo(f"file          {info.path}")
    click.echo(f"name          {info.name}")
    click.echo(f"architecture  {info.architecture}")
    shown = f"{info.size / 1e6:.1f} MB" if info.size >= 1e6 else f"{info.size / 1e3:.1f} kB"
    click.echo(f"size          {shown} ({info.size} bytes)")  # kB: a head file
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


@click.command()
@click.argument("project", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), help="Data file to annotate.")
@click.option("--rubric", "rubric_path", type=click.Path(path_type=Path), help="Rubric TOML.")
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    help="GGUF model or LoRA adapter [default: the project's last one; for the "
    "bundled sample its fine-tuned adapter; else the embedded model].",
)
@click.option(
    "--base",
    type=click.Path(path_type=Path),
    help="The base GGUF an adapter --model runs on [default: the embedded model].",
)
def tui(project, data, rubric_path, model, base) -> None:
    """Open the terminal app: annotate, browse, blind spot-check review, agreement."""
    from annotator.tui.app import run_app

    run_app(project=project, data=data, rubric=rubric_path, model=model, base=base)


def _finite(value):
    """JSON has no Infinity or NaN (json.dumps would write them and strict readers refuse the
    output): a non-finite number, such as an open-ended head threshold, becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
