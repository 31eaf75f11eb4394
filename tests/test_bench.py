"""Smoke test of the annotation speed benchmark: tiny sizes, every figure printed."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.long
def test_annotate_benchmark_prints_every_figure(tmp_path, default_model):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "annotate.py"),
            "--short",
            "3",
            "--long",
            "1",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    text = run.stdout
    for workload in ("short:", "long:"):
        assert workload in text
    for figure in (
        "items/s",
        "C/A",
        "C/B",
        "efficiency L-time / C-time",
        "differs from A",
        "first label",
        "peak RSS",
        "model file",
        "reading hidden states: N-time / C-time",
    ):
        assert text.count(figure) >= 2, figure
    for mode in ("A free generation", "B GBNF grammar", "C annotator Engine", "L limit"):
        assert text.count(mode) == 2, mode
    medians = json.loads(out.read_text())["medians"]
    for workload in ("short", "long"):
        figures = medians[workload]
        assert all(figures[f"{m}_items_per_s"] > 0 for m in "ABCLN")
        assert figures["N_time_over_C_time"] > 0
        assert 0 < figures["first_label_seconds"] < figures["cli_seconds"]
        assert 0 <= figures["C_differs_from_B"] <= 1
        assert figures["B_failed"] == 0  # the grammar only allows valid answers
