"""One export, start to finish: check inputs, convert, quantize, read back, drift-check, decide.

Every input is checked before the minutes of conversion start. The model is built inside a
temporary folder next to the output (same disk, so the final move is a rename) and only
reaches its final name once the drift check has passed; a failing file is kept as
MODEL.gguf.rejected for inspection, never under the name `annotator annotate` would be given.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from annotator.errors import AnnotatorError
from annotator.export import adapter, convert, drift, metadata
from annotator.export.report import write_report
from annotator.inference.backend import EngineSettings
from annotator.modelfile import KEY_BASE_SHA256, default_model_path, sha256_file


@dataclass(frozen=True)
class ExportOptions:
    merged_dir: Path
    """RUN_DIR/merged: a Hugging Face model dir with annotator_provenance.json (from train/)."""
    out: Path
    """Where the model goes (MODEL.gguf); reports go next to it."""
    quant: str = "q4_k_m"
    """q4_k_m, q5_k_m, q8_0 (llama.cpp quantization), or f16 (the converter's output as is)."""
    check: Path | None = None
    """Items with human labels for the drift check; default RUN_DIR/validation.jsonl."""
    min_agreement: float = 0.9
    """Refuse the file when alpha(quantized, merged) is below this on any dimension."""
    n_ctx: int = 4096
    """Engine context for the drift check (as `annotator annotate --n-ctx`)."""
    threads: int = 0
    """CPU threads for quantizing and the drift check; 0: all this process may use."""
    gpu: str = "auto"
    """Engine backend for the drift check: auto, cpu or cuda."""
    bootstrap: int = 1000
    """Bootstrap resamples for the alpha intervals (0: none)."""
    force: bool = False
    """Replace an existing MODEL.gguf."""
    verbose: bool = False
    """Show the converter's own log lines."""
    description: str = ""
    """general.description: what the model is for, its training data and their license."""
    adapter: bool = False
    """Write RUN_DIR/adapter as a LoRA adapter GGUF for the base GGUF training started from,
    instead of a full model (no re-quantization: the base file + adapter is the trained model)."""
    full_provenance: bool = False
    """Keep train's whole provenance record (paths of the training machine, validation item
    ids) instead of hashes, counts, file names and settings."""


@dataclass(frozen=True)
class ExportResult:
    path: Path  # MODEL.gguf, or MODEL.gguf.rejected when the drift check failed
    accepted: bool
    sha256: str
    size: int
    report: dict[str, Any]
    report_files: tuple[Path, Path]


def export_model(opts: ExportOptions, say: Callable[[str], None] = lambda _: None) -> ExportResult:
    """Run the export; `say` gets one line per step (progress for the terminal)."""
    _check_options(opts)
    training = metadata.load_training_record(opts.merged_dir)
    check_path = opts.check or opts.merged_dir.parent / "validation.jsonl"
    if opts.check is None and not check_path.is_file():
        raise AnnotatorError(
            f"{check_path}: no validation items for the drift check (pass --check DATA)"
        )
    items, problems = drift.load_check_items(check_path, training.rubric)
    convert.check_converter()
    if not opts.verbose:
        # The converter and gguf's writer warn about things that are normal for these models
        # ("Duplicated key name", "Unknown RoPE type: default"); the drift check is what says
        # whether the conversion is sound.
        for name in ("hf-to-gguf", "gguf"):
            logging.getLogger(name).setLevel(logging.ERROR)

    timings: dict[str, float] = {}
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    base = adapter_base(training) if opts.adapter else None
    with tempfile.TemporaryDirectory(prefix=f".{opts.out.name}.", dir=opts.out.parent) as tmp:
        if base is not None:
            built, f16_bytes = _build_adapter(opts, training, Path(tmp), say, timings)
        else:
            built, f16_bytes = _build_model(opts, training, Path(tmp), say, timings)

        # Read back the way every user of the file will: untrusted metadata, validated.
        info = metadata.verify_file(built, training)
        assert info.rubric is not None  # verify_file checked it
        say(f"drift check on {len(items)} items from {check_path}")
        started = time.perf_counter()
        settings = EngineSettings(n_ctx=opts.n_ctx, n_threads=opts.threads, gpu=opts.gpu)
        quantized, engine = drift.engine_answers(built, info.rubric, items, settings, base)
        timings["check_quantized_s"] = time.perf_counter() - started
        started = time.perf_counter()
        merged = drift.merged_answers(opts.merged_dir, training.rubric, items, opts.n_ctx)
        timings["check_merged_s"] = time.perf_counter() - started
        result = drift.compare(
            training.rubric, items, quantized, merged, opts.min_agreement, opts.bootstrap
        )
        # The file records how its check went (inspect shows it), then is read back again.
        metadata.record_drift(built, metadata.drift_summary(result))
        info = metadata.verify_file(built, training)

        final = opts.out if result["passed"] else opts.out.with_name(opts.out.name + ".rejected")
        os.replace(built, final)

    size = final.stat().st_size
    digest = sha256_file(final)
    reason = "" if result["passed"] else _rejection(result)
    report = {
        "status": "accepted" if result["passed"] else "rejected",
        "reason": reason,
        "file": str(final),
        "source": str(opts.merged_dir),
        "quant": info.quantization,
        "base": None if base is None else {"path": str(base), "sha256": info.base_sha256},
        "size": size,
        "sha256": digest,
        "f16_bytes": f16_bytes,
        "check_items": str(check_path),
        "problems": problems,
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "engine": engine,
        "provenance": info.provenance,
        "drift": result,
    }
    files = write_report(report, opts.out)
    return ExportResult(final, result["passed"], digest, size, report, files)


def _build_model(
    opts: ExportOptions,
    training: metadata.TrainingRecord,
    tmp: Path,
    say: Callable[[str], None],
    timings: dict[str, float],
) -> tuple[Path, int]:
    """HF -> GGUF f16 -> QUANT inside `tmp`: (the file, the f16 file's size)."""
    f16 = tmp / "model-f16.gguf"
    say(f"converting {opts.merged_dir} to GGUF f16 (llama.cpp converter)")
    started = time.perf_counter()
    kv = metadata.file_metadata(
        training, _export_record(opts), opts.description, opts.full_provenance
    )
    convert.convert_to_f16(opts.merged_dir, f16, kv, model_name=f"{training.rubric.name} annotator")
    timings["convert_s"] = time.perf_counter() - started
    f16_bytes = f16.stat().st_size
    if opts.quant == "f16":
        return f16, f16_bytes
    say(f"quantizing to {opts.quant.upper()} (llama.cpp)")
    built = tmp / "model-quantized.gguf"
    started = time.perf_counter()
    convert.quantize(f16, built, opts.quant, opts.threads)
    timings["quantize_s"] = time.perf_counter() - started
    f16.unlink()  # free the disk before the drift check
    return built, f16_bytes


def _build_adapter(
    opts: ExportOptions,
    training: metadata.TrainingRecord,
    tmp: Path,
    say: Callable[[str], None],
    timings: dict[str, float],
) -> tuple[Path, int]:
    """RUN_DIR/adapter -> LoRA adapter GGUF inside `tmp`: (the file, 0: there is no f16 stage)."""
    adapter_dir = opts.merged_dir.parent / "adapter"
    say(f"writing {adapter_dir} as a llama.cpp LoRA adapter (f16)")
    started = time.perf_counter()
    config = _read_json(opts.merged_dir / "config.json")
    arch, alpha, tensors = adapter.read_adapter(
        adapter_dir, str(config.get("model_type")), int(config.get("num_hidden_layers", 0))
    )
    kv = metadata.file_metadata(
        training, _export_record(opts), opts.description, opts.full_provenance
    )
    kv[KEY_BASE_SHA256] = training.record["base_detail"]["sha256"]
    built = tmp / "adapter.gguf"
    adapter.write_adapter_gguf(built, arch, alpha, tensors, kv)
    timings["convert_s"] = time.perf_counter() - started
    return built, 0


def adapter_base(training: metadata.TrainingRecord) -> Path:
    """The base GGUF the run was trained from, present and unchanged: the adapter's base."""
    detail = training.record.get("base_detail")
    if not isinstance(detail, dict) or detail.get("kind") != "gguf":
        raise AnnotatorError(
            "--adapter needs a run trained from a GGUF base (--base M.gguf or "
            "the embedded model); this run's base is a Hugging Face model, so "
            "export the merged model instead"
        )
    path, want = Path(str(detail.get("path"))), str(detail.get("sha256"))
    if not path.is_file():
        default = default_model_path()
        if default.is_file() and sha256_file(default) == want:
            return default
        raise AnnotatorError(f"{path}: the run's base GGUF is missing (needed for --adapter)")
    if sha256_file(path) != want:
        raise AnnotatorError(
            f"{path}: changed since training (sha256 differs from the run's record)"
        )
    return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AnnotatorError(f"{path}: cannot read ({exc})") from exc
    if not isinstance(value, dict):
        raise AnnotatorError(f"{path}: must be a JSON object")
    return value


def _check_options(opts: ExportOptions) -> None:
    if opts.quant not in convert.QUANTS:
        raise AnnotatorError(f"--quant {opts.quant}: use one of {', '.join(convert.QUANTS)}")
    if not 0.0 <= opts.min_agreement <= 1.0:
        raise AnnotatorError("--min-agreement must be between 0 and 1")
    if not opts.merged_dir.is_dir():
        raise AnnotatorError(f"{opts.merged_dir}: not a directory (expected RUN_DIR/merged)")
    if opts.out.suffix != ".gguf":
        raise AnnotatorError(f"{opts.out}: the output name must end in .gguf")
    if opts.out.exists() and not opts.force:
        raise AnnotatorError(f"{opts.out}: already exists (pass --force to replace it)")


def _export_record(opts: ExportOptions) -> dict[str, Any]:
    """What the file records about its own making (the drift result lives in the report)."""
    return {
        "date": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "quant": "lora-f16" if opts.adapter else opts.quant,
        "converter": f"{convert.CONVERTER_DIST} {version(convert.CONVERTER_DIST)}",
        "quantizer": f"llama-cpp-python {version('llama-cpp-python')}",
        "min_agreement": opts.min_agreement,
    }


def _rejection(result: dict[str, Any]) -> str:
    failing = []
    for d in result["dimensions"]:
        if not d["passed"]:
            alpha = d["quantized_vs_merged"]["alpha"]
            shown = "undefined" if alpha is None else f"{alpha:.3f}"
            failing.append(f"{d['dimension']} ({shown})")
    return f"alpha(quantized, merged) below {result['threshold']} on " + ", ".join(failing)
