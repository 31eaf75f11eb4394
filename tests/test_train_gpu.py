"""Train tests, part 4: QLoRA proper on CUDA (4-bit NF4 base, bf16, 8-bit AdamW, gradient
checkpointing), end to end on the tiny model. Skipped where torch sees no CUDA device."""

from __future__ import annotations  # noqa: I001  (`import train` must precede torch)

import json

import annotator.train  # noqa: F401  (first, before torch: OpenMP wait policy and hub settings)

import pytest
import torch
from helpers.train import SMOKE_TOML, smoke_rows, tiny_dir, write_labeled

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_qlora_defaults_on_cuda_train_validate_and_merge(tmp_path):
    from annotator.train.cli import main

    (tmp_path / "rubric.toml").write_text(SMOKE_TOML)
    data = write_labeled(tmp_path / "a.csv", smoke_rows(24))
    main(
        [
            "--base",
            str(tiny_dir()),
            "--data",
            str(data),
            "--rubric",
            str(tmp_path / "rubric.toml"),
            "--out",
            str(tmp_path / "run"),
            "--batch-size",
            "8",
            "--micro-batch-size",
            "4",
            "--max-steps",
            "4",
            "--eval-every",
            "2",
            "--lr",
            "0.02",
        ]
    )
    prov = json.loads((tmp_path / "run" / "merged" / "annotator_provenance.json").read_text())
    resolved = prov["settings"]["hardware"]["resolved"]
    assert resolved == {
        **resolved,
        "device": "cuda",
        "quantize": "nf4",
        "optimizer": "adamw8bit",
        "gradient_checkpointing": True,
    }
    assert resolved["dtype"] in ("bfloat16", "float32")  # fp32 only on GPUs without bf16
    check = prov["merge_check"]
    assert "dequantized" in check["merged_into"]
    # adapter model: NF4 kernels in bf16; merged: fp32 weights. Close, not identical.
    for dim in check["dimensions"].values():
        assert dim["max_prob_diff"] < 0.05
    config = json.loads((tmp_path / "run" / "merged" / "config.json").read_text())
    assert "quantization_config" not in config
