"""`annotator kit build|verify`: field kits for an air-gapped machine."""

from __future__ import annotations

from pathlib import Path

import click

from annotator.cli import stderr
from annotator.errors import AnnotatorError


@click.group()
def kit() -> None:
    """Field kits: the software, model, rubric and sample for an air-gapped machine."""


@kit.command("build")
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="The kit folder to create (KIT.tar.gz with --archive).",
)
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    help="Model or LoRA adapter GGUF to ship [default: none; the embedded Gemma 3 "
    "270M comes with the wheels].",
)
@click.option(
    "--base",
    type=click.Path(path_type=Path),
    help="The base GGUF an adapter --model runs on, when it is not the embedded model.",
)
@click.option(
    "--rubric",
    "rubric_path",
    type=click.Path(path_type=Path),
    help="Rubric TOML to ship [needed with --sample when the model carries none].",
)
@click.option(
    "--sample", type=click.Path(path_type=Path), help="A data file the kit's start.sh labels first."
)
@click.option("--extras", default="", help="Extras to include, e.g. train,export [default: none].")
@click.option("--archive", is_flag=True, help="Write one KIT.tar.gz instead of a folder.")
@click.option(
    "--llama-wheel",
    type=click.Path(path_type=Path),
    help="A portable llama-cpp-python wheel with its WHEEL.build.json record, as an "
    "earlier kit build made it [default: built here once, then reused].",
)
@click.option(
    "--sign",
    "sign_key",
    type=click.Path(path_type=Path),
    help="Sign MANIFEST.json with this SSH key (ssh-keygen -Y sign), for "
    "`kit verify --signers` [default: not signed].",
)
def kit_build(
    out, model, base, rubric_path, sample, extras, archive, llama_wheel, sign_key
) -> None:
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
    written = build_kit(
        out,
        model=model,
        base=base,
        rubric=rubric_path,
        sample=sample,
        extras=wanted,
        archive=archive,
        llama_wheel=llama_wheel,
        sign=sign_key,
        say=stderr,
    )
    size = (
        written.stat().st_size
        if written.is_file()
        else sum(p.stat().st_size for p in written.rglob("*") if p.is_file())
    )
    stderr(f"wrote {written}: {size / 1e6:.0f} MB in {time.perf_counter() - started:.0f} s")
    digest = manifest_digest(written)
    stderr(
        "the kit's digest (MANIFEST.json's sha256, below): send it to the laptop by another "
        f"way than the kit; there: annotator kit verify KIT --digest {digest} (or python3 "
        f"KIT/verify.py KIT --digest {digest})"
    )
    click.echo(f"{digest}  MANIFEST.json")


def _digest_option(ctx, param, value):
    from annotator.kit.verify import is_digest

    if value is not None and not is_digest(value):
        raise click.BadParameter("not a sha256 (64 hex digits)")
    return value


@kit.command("verify")
@click.argument("kit_dir", type=click.Path(path_type=Path))
@click.option(
    "--digest",
    callback=_digest_option,
    help="MANIFEST.json's sha256 as `kit build` printed it, received by another way "
    "than the kit: the kit must be the one that was built.",
)
@click.option(
    "--signers",
    type=click.Path(path_type=Path),
    help="An allowed_signers file (ssh-keygen): MANIFEST.json must be signed "
    "(kit build --sign) by one of its keys.",
)
def kit_verify(kit_dir, digest, signers) -> None:
    """Check every file's size and sha256 against MANIFEST.json, that the kit is for this
    Python and platform and that this CPU runs its llama.cpp build; one line per problem,
    naming the file."""
    from annotator.kit.build import verify_kit
    from annotator.kit.verify import llama_summary, read_manifest, signer_of

    problems = verify_kit(kit_dir, digest=digest, signers=signers)
    for line in problems:
        stderr(line)
    if problems:
        raise AnnotatorError(f"{kit_dir}: refused ({len(problems)} problem(s) above)")
    manifest, _ = read_manifest(kit_dir)
    signer = signer_of(kit_dir, signers)[0] if signers else None
    click.echo(
        f"{kit_dir}: intact, for this Python and platform"
        f"{', MANIFEST.json has the digest given' if digest else ''}"
        f"{f', signed by {signer}' if signer else ''}"
    )
    click.echo(llama_summary(manifest or {}))
