"""`annotator train` ends with calibrated files: end to end on CPU with real parts.

A short run trains from the embedded Gemma 3 270M GGUF; train then exports the adapter GGUF,
labels the validation items through llama.cpp with base + adapter and with the base alone,
fits heads on the validation labels, and writes the adapter with its head and the base's head
file, with the comparison in one line and in RUN_DIR/calibration.json. Then a project labelled
with the calibrated file is calibrated again on its own reviews (`calibrate --out`).
"""

from __future__ import annotations  # noqa: I001  (`import train` must precede torch)

import json
import subprocess
import sys

import annotator.train  # noqa: F401  (first, before torch: OpenMP wait policy and hub settings)

import pytest
from helpers.train import SMOKE_TOML, smoke_rows, write_labeled
from test_train_cli import FAST

from annotator.modelfile import default_model_path, read_model_info, sha256_file
from annotator.rubric import load_rubric
from conftest import ROOT, run_cli

pytestmark = pytest.mark.long  # trains, exports and labels: minutes


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    """One step of training from the embedded model (the calibrated files do not depend on how
    much it learned), 21 validation items: a head needs 20."""
    path = tmp_path_factory.mktemp("calibrated")
    (path / "rubric.toml").write_text(SMOKE_TOML)
    write_labeled(path / "a.csv", smoke_rows(84, seed=4, prefix="c"))
    args = ["--data", str(path / "a.csv"), "--rubric", str(path / "rubric.toml")]
    args += ["--out", str(path / "run"), "--val-fraction", "0.25", "--no-eval-before"]
    args += [*FAST[:4], "--max-steps", "1", "--eval-every", "1", *FAST[8:]]
    # run_cli's 10 minutes, and more: dequantizing, training, merging, exporting and labelling
    # twice take several minutes on a busy 2-core machine.
    done = subprocess.run(
        [sys.executable, "-m", "annotator", "train", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1800,
    )
    # One step at this learning rate leaves the embedded model giving one value to all 21
    # validation items on both dimensions (measured: argmax alpha -0.22 and 0.01, head 0.16
    # and 0.26): train writes every file, then reports the collapse as an error.
    assert done.returncode == 0 or "error: training collapsed" in done.stderr, done.stderr[-3000:]
    return path, done


def test_train_writes_both_calibrated_files_and_says_which_is_better(calibrated_run):
    path, done = calibrated_run
    run = path / "run"
    record = json.loads((run / "calibration.json").read_text())
    n = record["items"]
    assert n == sum(1 for _ in (run / "validation.jsonl").open()) and n >= 20
    lines = [line for line in done.stdout.splitlines() if line.startswith("calibrated: ")]
    assert lines == [record["line"]]
    comparison = record["comparison"]
    verdict = "beats the base" if comparison["better"] == "fine_tuned" else "does NOT beat"
    assert verdict in lines[0] and f"on {n} validation items" in lines[0]
    assert f"({comparison['difference']:+.3f}; 95% interval " in lines[0]
    low, high = comparison["interval"]
    assert -2 <= low <= high <= 2

    tuned = read_model_info(run / "calibrated.gguf")
    assert tuned.is_adapter and not tuned.is_head_file
    assert tuned.base_sha256 == sha256_file(default_model_path())
    base = read_model_info(run / "base-calibrated.gguf")
    assert base.is_head_file and (run / "base-calibrated.gguf").stat().st_size < 100_000
    rubric = load_rubric(path / "rubric.toml")
    for key, info in (("fine_tuned", tuned), ("base", base)):
        side = record[key]
        assert side["file"]["sha256"] == sha256_file(run / side["file"]["name"])
        head = info.head(rubric)
        assert head is not None and head.sha256 == side["head"]["sha256"]
        # The alpha reported is that of the leave-one-out (out-of-fold) labels: the head's own.
        for dim, summary in side["head"]["dims"].items():
            assert side["alpha"][dim] == pytest.approx(summary["loo_alpha"], abs=1e-6), dim
    # The adapter inside calibrated.gguf is the exported one (drift-checked, report beside it).
    report = json.loads((run / "adapter.export.json").read_text())
    assert report["status"] == "accepted" and report["sha256"] == record["adapter"]["sha256"]


def test_a_project_recalibrates_the_calibrated_file_on_its_reviews(calibrated_run):
    path, _ = calibrated_run
    run, project, out = path / "run", path / "team.db", path / "team.gguf"
    labelled = run_cli(
        "annotate",
        str(run / "validation.jsonl"),
        "--project",
        str(project),
        "--model",
        str(run / "calibrated.gguf"),
        "--threads",
        "1",
    )
    assert labelled.returncode == 0, labelled.stderr
    reviewed = run_cli(
        "review", "import", str(project), str(run / "validation.jsonl"), "--reviewer", "ana"
    )
    assert reviewed.returncode == 0, reviewed.stderr
    refit = run_cli("calibrate", str(project), "--out", str(out))
    assert refit.returncode == 0, refit.stderr
    info = read_model_info(out)
    assert info.is_adapter and not info.is_head_file
    assert info.head(load_rubric(path / "rubric.toml")) is not None


def test_an_adapter_export_refuses_still_ends_with_the_base_file(
    calibrated_run, tmp_path, monkeypatch
):
    """When export's drift check refuses the adapter (here its verdict is overridden: the
    export, labelling and head fit are real), the base still gets its head file, and the line
    says to ship it."""
    import dataclasses

    from annotator.export import pipeline
    from annotator.export.calibrated import calibrate_run
    from annotator.inference.backend import EngineSettings

    path, _ = calibrated_run
    run = tmp_path / "run"
    run.mkdir()
    for name in ("merged", "adapter", "validation.jsonl"):
        (run / name).symlink_to(path / "run" / name)
    real = pipeline.export_model

    def refused(opts, say=lambda _: None):
        done = real(opts, say)
        return dataclasses.replace(done, accepted=False, report={**done.report, "reason": "x"})

    monkeypatch.setattr(pipeline, "export_model", refused)
    record = calibrate_run(run, EngineSettings(n_threads=1), lambda _: None)
    assert record["fine_tuned"] is None and record["adapter"]["refused"] == "x"
    assert record["line"].startswith("calibrated: the fine-tuned adapter was refused by export")
    assert record["line"].endswith("; ship base-calibrated.gguf")
    assert not (run / "calibrated.gguf").exists()
    assert read_model_info(run / "base-calibrated.gguf").is_head_file
    assert record["base"]["file"]["sha256"] == sha256_file(run / "base-calibrated.gguf")
    assert json.loads((run / "calibration.json").read_text())["line"] == record["line"]
