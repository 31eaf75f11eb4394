"""The base model: where it comes from, which device and precision it runs in, and LoRA on it.

A base is a Hugging Face model directory or a GGUF file. A GGUF file is dequantized into a
Hugging Face checkpoint once (RUN_DIR/base), so the packaged Gemma 3 270M can be fine-tuned
with nothing downloaded. QLoRA (4-bit NF4 base, bf16 compute, 8-bit AdamW, gradient
checkpointing) needs CUDA; without it training falls back to plain LoRA in fp32 and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from annotator.errors import AnnotatorError
from annotator.modelfile import sha256_file
from annotator.train.args import HardwareArgs, LoraArgs

log = logging.getLogger("train")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class Hardware:
    """The resolved hardware settings of a run (recorded in provenance)."""

    device: str  # "cuda" or "cpu"
    quantize: str  # "nf4" or "none"
    dtype: torch.dtype  # compute dtype
    optimizer: str  # "adamw8bit" or "adamw"
    gradient_checkpointing: bool
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "device": self.device,
            "quantize": self.quantize,
            "dtype": str(self.dtype).removeprefix("torch."),
            "optimizer": self.optimizer,
            "gradient_checkpointing": self.gradient_checkpointing,
            "notes": list(self.notes),
        }


def resolve_hardware(args: HardwareArgs) -> Hardware:
    notes: list[str] = []
    cuda = torch.cuda.is_available()
    device = args.device
    if device == "auto":
        device = "cuda" if cuda else "cpu"
    if device == "cuda" and not cuda:
        raise AnnotatorError("--device cuda: torch sees no CUDA device")
    if device not in ("cuda", "cpu"):
        raise AnnotatorError(f"--device must be auto, cuda or cpu, not {device!r}")
    quantize = args.quantize
    if quantize == "auto":
        quantize = "nf4" if device == "cuda" else "none"
        if device == "cpu":
            notes.append(
                "no CUDA device: plain LoRA in fp32 on CPU instead of QLoRA "
                "(4-bit base, bf16, 8-bit AdamW need CUDA); expect it to be slow"
            )
    elif quantize == "nf4" and device == "cpu":
        notes.append("4-bit NF4 base on CPU: bitsandbytes' CPU kernels, slow (meant for checks)")
    if quantize not in ("nf4", "none"):
        raise AnnotatorError(f"--quantize must be auto, nf4 or none, not {quantize!r}")
    if device == "cuda" and torch.cuda.is_bf16_supported():
        dtype = torch.bfloat16
    else:
        dtype = torch.float32
        if device == "cuda":
            notes.append("this GPU has no bf16: computing in fp32")
    optimizer = args.optimizer
    if optimizer == "auto":
        optimizer = "adamw8bit" if device == "cuda" else "adamw"
    if optimizer not in ("adamw8bit", "adamw"):
        raise AnnotatorError(f"--optimizer must be auto, adamw8bit or adamw, not {optimizer!r}")
    checkpointing = args.gradient_checkpointing
    if checkpointing is None:
        checkpointing = device == "cuda"
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    return Hardware(device, quantize, dtype, optimizer, checkpointing, notes)


# -- where the base comes from ----------------------------------------------------------------


def check_base(base: Path) -> str:
    """ "hf" or "gguf" for a usable base path; AnnotatorError naming the problem otherwise."""
    base = Path(base)
    if base.is_dir():
        if not (base / "config.json").is_file():
            raise AnnotatorError(f"{base}: not a Hugging Face model directory (no config.json)")
        if not any(p.name.endswith(_WEIGHT_SUFFIXES) for p in base.iterdir()):
            raise AnnotatorError(f"{base}: no weight files (*.safetensors, *.bin)")
        return "hf"
    if not base.is_file():
        raise AnnotatorError(f"{base}: base model not found (a model directory or a .gguf file)")
    with base.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise AnnotatorError(f"{base}: not a GGUF file and not a model directory")
    return "gguf"


def prepare_base(base: Path, run_dir: Path) -> tuple[Path, dict]:
    """(a Hugging Face model directory, what provenance records about the base)."""
    base = Path(base)
    if check_base(base) == "hf":
        weights = sorted(p for p in base.iterdir() if p.name.endswith(_WEIGHT_SUFFIXES))
        return base, {
            "kind": "hf",
            "path": str(base.resolve()),
            "weights_sha256": {p.name: sha256_file(p) for p in weights},
        }
    out = run_dir / "base"
    log.info("dequantizing %s into a Hugging Face checkpoint at %s", base.name, out)
    dequantize_gguf(base, out)
    return out, {
        "kind": "gguf",
        "path": str(base.resolve()),
        "sha256": sha256_file(base),
        "dequantized_to": str(out),
    }


def dequantize_gguf(gguf_path: Path, out: Path) -> None:
    """GGUF -> Hugging Face checkpoint (fp32) with its tokenizer, via transformers' reader."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.resolve().parent), gguf_path.name
    try:
        with _gguf_parsed_once():
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=name, dtype=torch.float32, local_files_only=True
            )
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise AnnotatorError(f"{gguf_path}: transformers cannot load this GGUF ({exc})") from exc
    # The weights are plain fp32 tensors now; the GGUF "quantizer" state would make
    # save_pretrained refuse or write a config that points back at the GGUF file.
    clear_quantizer(model)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def clear_quantizer(model) -> None:
    """Forget how the weights were loaded (GGUF, or bitsandbytes after dequantize()), so the
    model saves as a plain checkpoint whose config points at no quantizer."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "is_quantized", False):
        model.is_quantized = False


@contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """transformers parses the GGUF header three times (tokenizer, config, weights); with a
    262k-entry vocabulary each parse takes ~10-30 s of pure Python. Parse it once.

    transformers does `from gguf import GGUFReader` inside its loader, so the module attribute
    is swapped for a memoizing factory for the duration, and put back afterwards.
    """
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple, object] = {}

    def reader(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = original(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader = reader  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        gguf.GGUFReader = original  # type: ignore[misc]
        readers.clear()


# -- loading ----------------------------------------------------------------------------------


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


def quantization_config(hardware: Hardware):
    """The 4-bit NF4 setting used to train; merge reloads the base with the same one."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=hardware.dtype,
    )


def load_model(
    model_dir: Path,
    hardware: Hardware,
    quantize: str | None = None,
    dtype: torch.dtype | None = None,
):
    """The base model on the run's device: 4-bit NF4 (quantize "nf4") or in `dtype`."""
    from transformers import AutoModelForCausalLM

    quantize = quantize or hardware.quantize
    dtype = dtype or hardware.dtype
    if quantize == "nf4":
        # Non-quantized parts (embeddings, norms) load in fp32: kbit preparation wants them so.
        model = AutoModelForCausalLM.from_pretrained(
            model_dir,
            quantization_config=quantization_config(hardware),
            dtype=torch.float32,
            device_map={"": 0 if hardware.device == "cuda" else "cpu"},
            local_files_only=True,
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, local_files_only=True)
        model.to(torch.device(hardware.device))
    model.config.use_cache = False  # training and scoring run whole sequences
    return model


def add_lora(model, lora: LoraArgs, hardware: Hardware, seed: int):
    """Wrap `model` with trainable LoRA adapters on every attention and MLP projection."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in lora.targets if t in present]
    missing = [t for t in lora.targets if t not in present]
    if not targets:
        raise AnnotatorError(f"the model has none of the LoRA target modules {list(lora.targets)}")
    if missing:
        log.warning("model has no %s modules; LoRA on %s", missing, targets)
    kwargs = {"use_reentrant": False}
    if hardware.quantize == "nf4":
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=hardware.gradient_checkpointing,
            gradient_checkpointing_kwargs=kwargs,
        )
    elif hardware.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)  # the adapters' random initialisation
    return get_peft_model(model, config)
