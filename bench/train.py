"""QLoRA (4-bit NF4 base) vs plain bf16 LoRA: training tokens/s and peak GPU memory.

    python bench/train.py [--seq-len 512] [--batch 8] [--steps 12] [--json out.json]

The model has Qwen3-1.7B's configuration with random weights (nothing is downloaded: speed
and memory do not depend on the weights' values). Both variants run the training code of
`annotator train` (train.base.load_model/add_lora, train.finetune.answer_loss): LoRA r=16 on
every attention and MLP projection, bf16 autocast, gradient checkpointing, 8-bit AdamW; they
differ only in the base weights (4-bit NF4 vs bf16). Sequences are random tokens whose last
`--answer-tokens` count as the answer, as in a rubric item. Needs a CUDA GPU; without one it
says so and exits (status 2). `--allow-cpu --layers 1` smoke-tests this script on a CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import annotator.train  # noqa: F401  (before torch: OpenMP and hub settings)

QWEN3_1_7B = dict(  # Qwen/Qwen3-1.7B config.json
    vocab_size=151936,
    hidden_size=2048,
    intermediate_size=6144,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40960,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    hidden_act="silu",
    attention_bias=False,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    bos_token_id=151643,
    eos_token_id=151645,
)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per sequence")
    parser.add_argument("--batch", type=int, default=8, help="sequences per step (one micro-batch)")
    parser.add_argument("--steps", type=int, default=12, help="timed optimizer steps")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed steps first")
    parser.add_argument("--answer-tokens", type=int, default=8, help="loss tokens per sequence")
    parser.add_argument("--layers", type=int, default=None, help="fewer layers (smoke tests)")
    parser.add_argument("--no-checkpointing", action="store_true", help="keep activations")
    parser.add_argument("--allow-cpu", action="store_true", help="run on CPU (script check only)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print(
            "bench/train.py: no CUDA GPU visible to torch "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}). "
            "This benchmark compares QLoRA with bf16 LoRA on a GPU; run it on the GPU box.",
            file=sys.stderr,
        )
        return 2
    device = "cuda" if torch.cuda.is_available() else "cpu"

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        model_dir = Path(tmp) / "qwen3-1.7b-random"
        started = time.time()
        n_params = make_model(model_dir, args.layers, device)
        print(
            f"random Qwen3-1.7B-shaped model: {n_params / 1e9:.2f} B parameters, written in "
            f"{time.time() - started:.0f} s",
            file=sys.stderr,
        )
        results = []
        for quantize in ("nf4", "none"):
            results.append(measure(model_dir, quantize, device, args))
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
            print(json.dumps(results[-1]), file=sys.stderr)

    print_table(results, args)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "settings": vars(args) | {"json": str(args.json)},
                    "device": device_name(device),
                    "results": results,
                },
                indent=1,
            )
        )
    return 0


def make_model(out: Path, layers: int | None, device: str) -> int:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(**(QWEN3_1_7B | ({"num_hidden_layers": layers} if layers else {})))
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3ForCausalLM._from_config(config, dtype=torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return n


def measure(model_dir: Path, quantize: str, device: str, args) -> dict:
    import torch

    from annotator.train.args import LoraArgs
    from annotator.train.base import Hardware, add_lora, load_model
    from annotator.train.data import Example
    from annotator.train.loss import answer_loss

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    hardware = Hardware(
        device=device,
        quantize=quantize,
        dtype=dtype,
        optimizer="adamw8bit",
        gradient_checkpointing=not args.no_checkpointing,
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_memory = torch.cuda.memory_allocated()
    started = time.time()
    model = add_lora(load_model(model_dir, hardware), LoraArgs(), hardware, seed=3407)
    load_seconds = time.time() - started
    weights_memory = torch.cuda.memory_allocated() - base_memory if device == "cuda" else None
    model.train()

    import bitsandbytes as bnb

    optimizer = bnb.optim.AdamW8bit(
        [p for p in model.parameters() if p.requires_grad], lr=5e-5, weight_decay=0.01
    )
    generator = torch.Generator().manual_seed(0)
    kinds = ["item"] * (args.seq_len - args.answer_tokens) + ["answer"] * args.answer_tokens

    def batch() -> list[Example]:
        ids = torch.randint(10, 150000, (args.batch, args.seq_len), generator=generator)
        return [Example(f"x{i}", row.tolist(), list(kinds)) for i, row in enumerate(ids)]

    def step() -> None:
        examples = batch()
        autocast = torch.autocast(device, dtype=dtype) if dtype != torch.float32 else _null()
        with autocast:
            loss, count = answer_loss(model, examples, 0, torch.device(device))
        (loss / count).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup_steps):
        step()
    sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.time()
    for _ in range(args.steps):
        step()
    sync(device)
    seconds = time.time() - started
    result = {
        "variant": "QLoRA (4-bit NF4 base)" if quantize == "nf4" else "LoRA (bf16 base)",
        "tokens_per_s": round(args.steps * args.batch * args.seq_len / seconds, 1),
        "s_per_step": round(seconds / args.steps, 3),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if device == "cuda"
        else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)
        if device == "cuda"
        else None,
        "weights_memory_gib": round(weights_memory / 2**30, 2)
        if weights_memory is not None
        else None,
        "load_s": round(load_seconds, 1),
    }
    return result  # the model and optimizer go with this frame; main() collects


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({os.cpu_count()} cores)"


def print_table(results: list[dict], args) -> None:
    print(
        f"Qwen3-1.7B shape, random weights; batch {args.batch} x {args.seq_len} tokens, "
        f"LoRA r=16 on all projections, 8-bit AdamW, "
        f"gradient checkpointing {'off' if args.no_checkpointing else 'on'}"
    )
    print(f"{'variant':26} {'tokens/s':>10} {'s/step':>8} {'peak GiB':>9} {'weights GiB':>12}")
    for r in results:
        peak = "-" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.2f}"
        weights = "-" if r["weights_memory_gib"] is None else f"{r['weights_memory_gib']:.2f}"
        print(
            f"{r['variant']:26} {r['tokens_per_s']:>10,.0f} {r['s_per_step']:>8.3f} {peak:>9} {weights:>12}"
        )


if __name__ == "__main__":
    sys.exit(main())
