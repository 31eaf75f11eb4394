"""Export as a LoRA adapter: a run trained from a GGUF base ships as a small adapter GGUF that
llama.cpp applies to that unchanged base file.

End to end on CPU with real parts: `annotator train` runs a few steps on the embedded Gemma 3
270M GGUF (dequantized), `annotator export --adapter` writes and drift-checks the adapter, and
`annotator annotate` runs base + adapter in llama.cpp.
"""

from __future__ import annotations  # noqa: I001  (`import train` must precede torch)

import json

import annotator.train  # noqa: F401  (first, before torch: OpenMP wait policy and hub settings)

import pytest
from helpers.train import SMOKE_TOML, smoke_rows, tiny_dir, write_labeled
from test_train_cli import FAST

from annotator.errors import AnnotatorError
from annotator.modelfile import default_model_path, read_model_info, sha256_file
from conftest import run_cli
from annotator.export.adapter import read_adapter

# Every test here builds or exports a model: the long tier (`make test-long`).
pytestmark = pytest.mark.long


@pytest.fixture(scope="module")
def adapter_run(tmp_path_factory):
    """The embedded Gemma 3 270M GGUF (the demo's base), a short run trained from it, and the
    run exported with --adapter."""
    path = tmp_path_factory.mktemp("adapter")
    (path / "rubric.toml").write_text(SMOKE_TOML)
    write_labeled(path / "a.csv", smoke_rows(16, seed=1, prefix="a"))
    base = default_model_path()
    trained = run_cli(
        "train",
        "--data",
        str(path / "a.csv"),
        "--rubric",
        str(path / "rubric.toml"),
        "--out",
        str(path / "run"),
        *FAST,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    out = path / "tiny.lora.gguf"
    exported = run_cli(
        "export",
        str(path / "run" / "merged"),
        "--out",
        str(out),
        "--adapter",
        "--threads",
        "1",
        "--bootstrap",
        "50",
        "--min-agreement",
        "0",
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    return path, base, out


def test_the_adapter_file_is_small_and_says_what_it_runs_on(adapter_run):
    _path, base, out = adapter_run
    info = read_model_info(out)
    assert info.is_adapter and info.quantization == "LoRA adapter"
    assert info.base_sha256 == sha256_file(base)
    assert info.rubric is not None and info.rubric.name == "smoke"
    assert out.stat().st_size < base.stat().st_size / 4
    shown = run_cli("inspect", str(out))
    assert shown.returncode == 0, shown.stderr
    assert f"base sha256   {sha256_file(base)}" in shown.stdout


def test_base_plus_adapter_answers_like_the_merged_model(adapter_run):
    """The drift check compared base + adapter (llama.cpp) with the merged fp32 model (torch):
    the adapter moved the answers (the run used a high learning rate) and the file keeps them."""
    _path, _, out = adapter_run
    report = json.loads(out.with_name("tiny.lora.export.json").read_text())
    assert report["status"] == "accepted"
    for dim in report["drift"]["dimensions"]:
        assert dim["exact_agreement"] >= 0.9, dim


def test_annotate_runs_the_adapter_on_its_base(adapter_run):
    path, base, out = adapter_run
    done = run_cli(
        "annotate",
        str(path / "run" / "validation.jsonl"),
        "--project",
        str(path / "p.db"),
        "--model",
        str(out),
        "--base",
        str(base),
        "--threads",
        "1",
    )
    assert done.returncode == 0, done.stderr
    assert "(LoRA adapter)" in done.stderr and "skipped 0 rows" in done.stderr


def test_an_adapter_on_another_base_is_refused_in_one_line(adapter_run):
    from annotator.export.convert import convert_to_f16

    path, _, out = adapter_run
    other = path / "tiny.gguf"
    convert_to_f16(tiny_dir(), other, {}, model_name="tiny")
    done = run_cli(
        "annotate",
        str(path / "run" / "validation.jsonl"),
        "--project",
        str(path / "q.db"),
        "--model",
        str(out),
        "--base",
        str(other),
        "--threads",
        "1",
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "--base" in lines[0]
    assert not (path / "q.db").exists()  # refused before the project was created


def test_export_adapter_refuses_a_run_without_a_gguf_base(tmp_path):
    """A run trained from a Hugging Face model has no GGUF for an adapter to run on."""
    import tomllib

    from annotator.export.metadata import TrainingRecord
    from annotator.export.pipeline import adapter_base
    from annotator.rubric import rubric_from_dict

    rubric = rubric_from_dict(tomllib.loads(SMOKE_TOML), "smoke")
    record = TrainingRecord(rubric, 1, {"base_detail": {"kind": "hf", "path": "/x"}})
    with pytest.raises(AnnotatorError, match="trained from a GGUF base"):
        adapter_base(record)


def test_adapter_settings_llama_cpp_cannot_apply_are_refused(tmp_path):
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_dora": True})
    )
    with pytest.raises(AnnotatorError, match="use_dora"):
        read_adapter(tmp_path, "gemma3_text", 2)
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8})
    )
    with pytest.raises(AnnotatorError, match="not 'llama'"):
        read_adapter(tmp_path, "llama", 2)
