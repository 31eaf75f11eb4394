#!/usr/bin/env bash
# For the first lent CUDA machine (no network): install what its image lacks from carried
# files, then measure (steps 1-2 in under 8 minutes, step 3 about 10 more)
#   1. the engine on CUDA, without and with --parallel 8 (bench/annotate.py: items/s, and the
#      share of labels --parallel changes), and the share of labels CUDA changes against the
#      CPU (the 40 GoEmotions sample items, `annotate --gpu cpu` vs `--gpu cuda`);
#   2. a few QLoRA steps (bitsandbytes NF4) against bf16 LoRA (bench/train.py: tokens/s, peak
#      memory);
#   3. the USR Topical-Chat lever recipe of bench/finetune_quality.py (LoRA soft-CE, the CPU
#      recipe: 12 steps x batch 8, lr 2e-4, rank 16, 512 tokens) once as QLoRA (nf4) and once
#      as bf16 LoRA, each in its own folder: the minutes of each command and test alpha,
#      argmax and +head (QUALITY=0 skips it; STEPS=N sets the steps of both; ~2 x 5 min).
#
#   bench/gpu.sh [--dry-run]
#
# --dry-run: on a CPU, tiny sizes, install commands printed instead of run; checks the script.
# Carried files, in CARRY (default carry/), made on a connected machine of the same platform:
#   llama_cpp_python-0.3.36.tar.gz  the sdist, trimmed under 64 MiB (its vendored llama.cpp
#                                   without models/, docs/, media/ and tests)
#   bitsandbytes-*.whl              when the image has no bitsandbytes
#   scikit_build_core-*.whl, cmake-*.whl, ninja-*.whl   build requirements, unless installed
# Results: OUT (default runs/gpu/): annotate.json, cpu-vs-cuda.txt, train.json, log.txt,
# finetune-nf4/ and finetune-none/ (levers.json, levers.md) and qlora-vs-bf16.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
PY=${PY:-.venv/bin/python}
CARRY=${CARRY:-carry}
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1

run() { if ((DRY)); then echo "would run: $*"; else "$@"; fi; }
step() { echo; echo "== $* ($(date -u +%H:%M:%S))"; }

step "install"
if ! "$PY" -c 'import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)'; then
    sdist=$(ls "$CARRY"/llama_cpp_python-*.tar.gz 2>/dev/null | head -1 || true)
    if [[ -z "$sdist" ]] && ((!DRY)); then
        echo "llama-cpp-python has no CUDA offload and $CARRY/ has no llama_cpp_python-*.tar.gz"
        exit 2
    fi
    # Build requirements come from the carried wheels too: nothing is fetched.
    run env CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=native" \
        "$PY" -m pip install --no-index --find-links "$CARRY" --no-deps --force-reinstall \
        "${sdist:-$CARRY/llama_cpp_python-0.3.36.tar.gz}"
fi
if ! "$PY" -c 'import bitsandbytes' 2>/dev/null; then
    run "$PY" -m pip install --no-index --find-links "$CARRY" --no-deps bitsandbytes
fi
"$PY" -m annotator doctor | grep -E '^(backend|llama-cpp-python)'

if ((DRY)); then
    SHORT=4 LONG=1 GPU=cpu
    TRAIN=(--allow-cpu --layers 1 --steps 1 --warmup-steps 0 --seq-len 64 --batch 2)
else
    SHORT=200 LONG=24 GPU=cuda
    TRAIN=(--steps 8 --warmup-steps 2)
fi

step "engine: bench/annotate.py, --parallel 8"
timeout 300 "$PY" bench/annotate.py --short "$SHORT" --long "$LONG" --parallel 8 \
    --json "$OUT/annotate.json"

step "labels: CPU against $GPU, 40 GoEmotions sample items"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for backend in cpu "$GPU"; do
    timeout 120 "$PY" -m annotator annotate annotator/samples/goemotions/items.csv \
        --rubric annotator/samples/goemotions/rubric.toml --project "$tmp/$backend.db" \
        --gpu "$backend" 2>&1 | tail -1
    "$PY" -m annotator results "$tmp/$backend.db" --out "$tmp/$backend.csv" 2>/dev/null
done
"$PY" - "$tmp/cpu.csv" "$tmp/$GPU.csv" <<'EOF' | tee "$OUT/cpu-vs-cuda.txt"
import csv, sys
a, b = ([r["emotion"] for r in csv.DictReader(open(p, encoding="utf-8"))] for p in sys.argv[1:])
print(f"labels that differ between CPU and this backend: {sum(x != y for x, y in zip(a, b))} of {len(a)}")
EOF

step "training: QLoRA (NF4) against bf16 LoRA, bench/train.py"
timeout 240 "$PY" bench/train.py "${TRAIN[@]}" --json "$OUT/train.json"

if [[ "${QUALITY:-1}" == 1 ]]; then
    for quant in nf4 none; do
        step "quality recipe on $GPU: LoRA soft-ce, train --quantize $quant"
        run timeout 600 "$PY" bench/finetune_quality.py --out "$OUT/finetune-$quant" \
            --levers soft-ce --steps "${STEPS:-12}" --device "$GPU" --quantize "$quant" \
            --threads 8 || echo "finetune_quality ($quant) failed: see $OUT/finetune-$quant"
    done
    if ((!DRY)); then
        "$PY" - "$OUT"/finetune-{nf4,none}/levers.json <<'EOF' | tee "$OUT/qlora-vs-bf16.txt"
import json, sys
for path, name in zip(sys.argv[1:], ("QLoRA (nf4)", "bf16 LoRA")):
    try:
        r = json.load(open(path))
    except OSError as exc:
        print(f"{name}: no figures ({exc})")
        continue
    c = r["costs"]["soft-ce"]["minutes"]
    m = {k: v["mean"]["alpha"] for k, v in r["levers"]["coders"].items() if "soft-ce" in k}
    print(f"{name}: train {c.get('train')} min, export {c.get('export')} min; test mean alpha {m}")
EOF
    fi
fi

step "done: figures in $OUT/"
