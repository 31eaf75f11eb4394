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


def test_lever_table_scores_raters_and_flags_a_collapsed_coder():
    """bench/lever_table.py on the real USR Topical-Chat labels: a coder that copies rater 1
    agrees with the raters, one that always says the lowest value is flagged as collapsed."""
    from annotator.rubric import load_rubric
    from bench import datasets, lever_table
    from bench.rubric_quality import RUBRIC, split

    rubric = load_rubric(RUBRIC)
    fit, test = split(datasets.usr_topical_chat(), 20, 3407)
    dims = [d.name for d in rubric.dimensions]
    rows = fit + test
    copy = {r["id"]: {d: (r[f"{d}_rater1"], []) for d in dims} for r in rows}
    lowest = {r["id"]: {d.name: (d.values[0], []) for d in rubric.dimensions} for r in rows}
    labels = {"base+head": copy, "constant": lowest}
    found = lever_table.measure(rubric, labels, fit, test, set(), bootstrap=20)
    copied, constant = found["coders"]["base+head"], found["coders"]["constant"]
    assert copied["n"] == len(test) == 120
    assert copied["collapsed"] == [] and copied["mean"]["alpha"] > 0.3
    low, high = copied["mean"]["ci95"]
    assert low <= copied["mean"]["alpha"] <= high
    assert constant["collapsed"] == dims
    assert constant["minus base+head"]["alpha"] < 0
    assert copied["fit_items"] == len(fit) and copied["fit_mean_alpha"] > 0.3
    recipe = dict(steps=1, batch=8, lr=2e-4, rank=16, max_tokens=512, device="cpu", quantize="none")
    report = dict(fit_items=240, test_items=120, head_items=0, recipe=recipe, levers=found)
    table = lever_table.format_table(report)
    assert "| constant |" in table and "| base+head |" in table
