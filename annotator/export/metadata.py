"""What an exported GGUF says about itself: the rubric, the prompt format and the provenance.

train/ leaves `annotator_provenance.json` beside the merged model. Here it is checked, turned
into the key/value pairs written under the project's namespace (`annotator.*`, the keys the
core reads), and, once the file exists, read back the way every user of the file will read it:
through `annotator.modelfile.read_model_info`, which treats metadata as untrusted data.

A model file travels to the field, so by default its provenance keeps hashes, counts, file
names without their folders and settings only (`shipped_provenance`): no path of the training
machine, no item id. `export --full-provenance` keeps the record as train wrote it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from annotator import __version__
from annotator.errors import AnnotatorError
from annotator.inference import prompt
from annotator.modelfile import (
    KEY_PROMPT_FORMAT,
    KEY_PROVENANCE,
    KEY_RUBRIC,
    ModelInfo,
    read_model_info,
)
from annotator.rubric import Rubric, rubric_from_json

PROVENANCE_FILE = "annotator_provenance.json"
# The contract with train/: every key must be present. "rubric" travels under its own key.
PROVENANCE_KEYS = (
    "base",
    "data_sha256",
    "split",
    "settings",
    "validation_alpha",
    "rubric",
    "prompt_format",
    "date",
    "tool_version",
    "merge_check",
)
_TEXT_KEYS = ("base", "date", "tool_version")
# The core refuses metadata strings above 1,000,000 characters; stay well below it.
_MAX_PROVENANCE = 200_000
# Where train's record holds paths of the training machine (file names are kept).
_PATH_FIELDS = (
    ("base",),
    ("base_detail", "path"),
    ("base_detail", "dequantized_to"),
    ("settings", "base"),
    ("settings", "out"),
    ("settings", "data", "rubric"),
    ("settings", "augment", "paraphrases"),
)


@dataclass(frozen=True)
class TrainingRecord:
    """The merged model's provenance, checked, with its rubric parsed."""

    rubric: Rubric
    prompt_format: int
    record: dict[str, Any]  # the provenance file as read (rubric text included)


def load_training_record(merged_dir: str | Path) -> TrainingRecord:
    """Read and check RUN_DIR/merged/annotator_provenance.json. One-line errors name the key."""
    path = Path(merged_dir) / PROVENANCE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AnnotatorError(
            f"{path}: missing (is {merged_dir} a merged model from `annotator train`?)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotatorError(f"{path}: cannot read ({exc})") from exc
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        raise AnnotatorError(f"{path}: not valid JSON") from None
    if not isinstance(record, dict):
        raise AnnotatorError(f"{path}: must be a JSON object")
    missing = [k for k in PROVENANCE_KEYS if k not in record]
    if missing:
        raise AnnotatorError(f"{path}: missing key(s) {', '.join(missing)}")
    for key in _TEXT_KEYS:
        if not isinstance(record[key], str) or not record[key].strip():
            raise AnnotatorError(f"{path}: {key} must be non-empty text")
    # train records one sha256 per labelled file (--data may repeat).
    hashes = record["data_sha256"]
    if isinstance(hashes, str):
        hashes = [hashes]
    if (
        not isinstance(hashes, list)
        or not hashes
        or not all(isinstance(h, str) and len(h) == 64 for h in hashes)
    ):
        raise AnnotatorError(f"{path}: data_sha256 must be a list of sha256 hex digests")
    if not isinstance(record["rubric"], str):
        raise AnnotatorError(f"{path}: rubric must be the rubric's canonical JSON text")
    rubric = rubric_from_json(record["rubric"], f"{path} [rubric]")
    fmt = record["prompt_format"]
    if isinstance(fmt, bool) or not isinstance(fmt, int):
        raise AnnotatorError(f"{path}: prompt_format must be an integer")
    # A model trained on another prompt layout would be read with the wrong one: labels would
    # still come out (the engine is constrained), only wrong. Refuse instead.
    if fmt != prompt.PROMPT_FORMAT:
        raise AnnotatorError(
            f"{path}: trained with prompt format {fmt}, this annotator "
            f"renders format {prompt.PROMPT_FORMAT}"
        )
    return TrainingRecord(rubric, fmt, record)


def shipped_provenance(record: dict[str, Any]) -> dict[str, Any]:
    """`record` without what identifies the training machine or the data's items: paths become
    file names, validation ids become their count and sha256 (as train records the training
    ids), and any other absolute path left anywhere becomes its file name."""
    slim = copy.deepcopy(record)
    for keys in _PATH_FIELDS:
        parent = slim
        for key in keys[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and isinstance(parent.get(keys[-1]), str):
            parent[keys[-1]] = _file_name(parent[keys[-1]])
    data = slim.get("settings", {}).get("data") if isinstance(slim.get("settings"), dict) else None
    if isinstance(data, dict) and isinstance(data.get("paths"), list):
        data["paths"] = [_file_name(str(p)) for p in data["paths"]]
    if isinstance(data, dict) and isinstance(data.get("project"), str):
        data["project"] = _file_name(data["project"])
    split = slim.get("split")
    if isinstance(split, dict) and isinstance(split.get("validation_ids"), list):
        ids = sorted(str(i) for i in split.pop("validation_ids"))
        split["validation_ids_sha256"] = hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()
    return _without_absolute_paths(slim)


def _file_name(path: str) -> str:
    return PureWindowsPath(path).name if "\\" in path else PurePosixPath(path).name


def _without_absolute_paths(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_absolute_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_absolute_paths(v) for v in value]
    if isinstance(value, str) and (
        PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute()
    ):
        return _file_name(value)
    return value


def file_metadata(
    training: TrainingRecord,
    export: dict[str, Any],
    description: str = "",
    full_provenance: bool = False,
) -> dict[str, str | int]:
    """The key/value pairs to write into the GGUF.

    The rubric is stored in canonical form (what its hash is computed from), re-serialized
    from the parsed rubric so the file carries exactly what validates. The provenance record
    drops the rubric text (it has its own key) and gains the rubric's hash and `export`; it is
    the `shipped_provenance` unless `full_provenance`.
    """
    provenance = {
        k: v for k, v in training.record.items() if k in PROVENANCE_KEYS and k != "rubric"
    }
    if not full_provenance:
        provenance = shipped_provenance(provenance)
    provenance["rubric_sha256"] = training.rubric.hash
    provenance["export"] = {"tool_version": __version__, **export}
    try:
        provenance_json = json.dumps(
            provenance, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
    except ValueError as exc:  # NaN/inf: not JSON, and the core's reader would refuse them
        raise AnnotatorError(f"provenance cannot be stored as JSON ({exc})") from exc
    if len(provenance_json) > _MAX_PROVENANCE:
        raise AnnotatorError(
            f"provenance is too large to embed ({len(provenance_json)} characters)"
        )
    kv: dict[str, str | int] = {
        KEY_RUBRIC: training.rubric.canonical_json(),
        KEY_PROMPT_FORMAT: training.prompt_format,
        KEY_PROVENANCE: provenance_json,
    }
    if description.strip():
        kv["general.description"] = description.strip()
    return kv


def verify_file(path: Path, training: TrainingRecord) -> ModelInfo:
    """Read the written file back as any user would (untrusted) and check what it carries."""
    info = read_model_info(path)
    if info.rubric is None or info.rubric.hash != training.rubric.hash:
        raise AnnotatorError(f"{path}: the rubric read back differs from the one written")
    if info.prompt_format != training.prompt_format:
        raise AnnotatorError(f"{path}: the prompt format read back differs from the one written")
    if not info.provenance or info.provenance.get("rubric_sha256") != training.rubric.hash:
        raise AnnotatorError(f"{path}: the provenance read back differs from the one written")
    return info


def drift_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The drift check's outcome as the file records it: the verdict, the threshold, the item
    count and per dimension alpha(file, merged) and alpha(file, human). No item ids."""

    def alpha(pair: dict) -> float | None:
        value = pair.get("alpha") if isinstance(pair, dict) else None
        return None if value is None else round(float(value), 4)

    return {
        "passed": bool(result["passed"]),
        "threshold": result["threshold"],
        "items": result["items"],
        "dimensions": {
            d["dimension"]: {
                "vs_merged": alpha(d["quantized_vs_merged"]),
                "vs_human": alpha(d["quantized_vs_human"]),
                "basis": d.get("basis"),
            }
            for d in result["dimensions"]
        },
    }


def record_drift(path: Path, drift: dict[str, Any]) -> None:
    """Rewrite `path` with `drift` added to its provenance (under "export"): only the metadata
    changes, every tensor is copied byte for byte. The check ran on these very tensors, so
    the file can say how it went; `inspect` shows it."""
    import gguf

    reader = gguf.GGUFReader(path)
    field = reader.get_field(KEY_PROVENANCE)
    if field is None:
        raise AnnotatorError(f"{path}: no {KEY_PROVENANCE} to add the drift check to")
    provenance = json.loads(field.contents())
    provenance.setdefault("export", {})["drift_check"] = drift
    text = json.dumps(
        provenance, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    )
    out = path.with_name(path.name + ".meta")
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    writer = gguf.GGUFWriter(str(out), arch=arch, endianess=reader.endianess)
    for key, kv in reader.fields.items():
        if key == gguf.Keys.General.ARCHITECTURE or key.startswith("GGUF."):
            continue  # the writer writes these itself
        kind = kv.types[0]
        sub = kv.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = text if key == KEY_PROVENANCE else kv.contents()
        writer.add_key_value(key, value, kind, sub_type=sub)
    for tensor in reader.tensors:
        writer.add_tensor_info(
            tensor.name,
            tensor.data.shape,
            tensor.data.dtype,
            tensor.data.nbytes,
            tensor.tensor_type,
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    del reader
    out.replace(path)
