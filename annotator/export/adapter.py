"""A trained LoRA adapter (RUN_DIR/adapter, PEFT) -> a llama.cpp LoRA adapter GGUF.

Why ship an adapter at all: when training started from a GGUF base (the embedded Gemma 3 270M,
dequantized), the adapter learned a correction to exactly those quantized weights. llama.cpp
applies an adapter GGUF on top of that same base file at run time, so base file + adapter is
the trained model again, without re-quantizing the merged weights (which, on a 270M model,
wiped out what LoRA had learned: see the CHANGELOG). And it is small (a few MB), so a team
that already has the base model receives only the adapter.

The GGUF layout is llama.cpp's (`convert_lora_to_gguf.py`, which the converter package does
not ship): `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`, and per
target weight `<gguf tensor name>.lora_a` / `.lora_b`. Tensor names come from gguf's own
name map for the architecture; nothing here invents a name.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from annotator.errors import AnnotatorError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# HF model_type -> llama.cpp architecture, for architectures whose converter writes the
# projection weights unchanged (LLaMA-style converters permute q/k rows, which the adapter's
# B matrices would need too; those are refused rather than converted wrongly).
_PARTS = {".lora_A.weight": ".lora_a", ".lora_B.weight": ".lora_b"}  # PEFT -> llama.cpp
ARCHITECTURES = {"gemma3_text": "gemma3", "gemma3": "gemma3", "qwen3": "qwen3", "qwen2": "qwen2"}


def read_adapter(
    adapter_dir: Path, model_type: str, n_layers: int
) -> tuple[str, float, dict[str, np.ndarray]]:
    """(llama.cpp architecture, adapter.lora.alpha, {gguf tensor name: float16 array})."""
    import gguf
    from safetensors.numpy import load_file

    config_path = adapter_dir / ADAPTER_CONFIG
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnnotatorError(
            f"{config_path}: missing (is {adapter_dir} RUN_DIR/adapter?)"
        ) from None
    except (OSError, ValueError) as exc:
        raise AnnotatorError(f"{config_path}: cannot read ({exc})") from exc
    if config.get("peft_type") != "LORA":
        raise AnnotatorError(f"{config_path}: peft_type must be LORA")
    for key in ("use_dora", "rank_pattern", "alpha_pattern", "modules_to_save"):
        if config.get(key):
            raise AnnotatorError(f"{config_path}: {key} is not supported by llama.cpp adapters")
    arch = ARCHITECTURES.get(model_type)
    if arch is None:
        raise AnnotatorError(
            f"adapter export supports {', '.join(sorted(set(ARCHITECTURES.values())))}"
            f" models, not {model_type!r}; export the merged model instead"
        )
    rank = int(config["r"])
    # PEFT scales B·A by lora_alpha/r (alpha/sqrt(r) with rsLoRA); llama.cpp by alpha/r.
    scaling = config["lora_alpha"] / (rank**0.5 if config.get("use_rslora") else rank)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], n_layers)
    tensors: dict[str, np.ndarray] = {}
    weights_path = adapter_dir / ADAPTER_WEIGHTS
    if not weights_path.is_file():
        raise AnnotatorError(f"{weights_path}: missing")
    for name, array in sorted(load_file(str(weights_path)).items()):
        part = next((p for p in _PARTS if name.endswith(p)), None)
        if part is None:
            raise AnnotatorError(f"{weights_path}: unexpected tensor {name!r}")
        hf_name = name.removeprefix("base_model.model.").removesuffix(part) + ".weight"
        suffix = _PARTS[part]
        target = names.get_name(hf_name, try_suffixes=(".weight",))
        if target is None:
            raise AnnotatorError(f"{weights_path}: no llama.cpp tensor for {hf_name!r}")
        tensors[target + suffix] = array.astype(np.float16)
    if not tensors:
        raise AnnotatorError(f"{weights_path}: no LoRA tensors")
    return arch, float(scaling * rank), tensors


def write_adapter_gguf(
    out: Path, arch: str, alpha: float, tensors: dict[str, np.ndarray], kv: dict[str, str | int]
) -> None:
    """Write the adapter GGUF with our `annotator.*` keys (strings and integers)."""
    import gguf

    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for key, value in kv.items():
        if isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_string(key, value)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
