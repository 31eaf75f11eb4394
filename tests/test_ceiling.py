"""The dashboard's summary per dimension (annotator.ceiling) and `annotator agree` at 80
columns: the reviewers' own alpha as the ceiling, the model's mean alpha against them, and a
verdict on both scales."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli
from helpers.dialogue import DIMENSIONS, RUBRIC, dialogue_project

from annotator.ceiling import Ceiling, ceiling
from annotator.project.reviews import agreement_report
from annotator.project.store import Store


def test_the_summary_is_the_pairwise_alphas_it_summarises(tmp_path):
    with Store(dialogue_project(tmp_path)) as store:
        report = agreement_report(store, bootstrap=50)
    for dim in report["dimensions"]:
        by = {tuple(c["coders"]): c["alpha"] for c in dim["comparisons"]}
        summary = dim["ceiling"]
        assert summary["raters"] == by[("rater1", "rater2", "rater3")]
        pairs = [by[("model", r)] for r in ("rater1", "rater2", "rater3")]
        assert summary["model"] == pytest.approx(np.mean(pairs))
        assert summary["share"] == pytest.approx(summary["model"] / summary["raters"])
        low, high = summary["ci95"]
        assert low <= summary["model"] <= high and summary["n"] == 60


def test_the_verdict_compares_the_model_with_the_ceiling_and_the_conventions():
    def verdict(model, raters, gap_high):
        return Ceiling(60, raters, model, None, None, gap_high).verdict

    # A hard dimension: the reviewers agree little, the model as much as they do.
    assert verdict(0.45, 0.42, 0.1) == "unreliable, ≥ ceiling"
    assert verdict(0.40, 0.48, 0.02) == "unreliable, ≈ ceiling"
    assert verdict(0.20, 0.48, -0.1) == "unreliable, < ceiling"
    assert verdict(0.85, 0.9, 0.01) == "reliable, ≈ ceiling"
    assert verdict(0.7, 0.9, -0.05) == "tentative, < ceiling"
    assert verdict(0.7, None, None) == "tentative"  # one reviewer: no ceiling
    assert verdict(None, 0.5, None) == "undefined"
    # A share of a ceiling at or below chance means nothing.
    assert Ceiling(60, -0.1, 0.2, None, None, None).share is None


def test_the_gap_interval_is_paired_and_one_reviewer_has_no_ceiling():
    dim = RUBRIC.dimensions[0]  # 0/1
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 80).tolist()
    noisy = [v if rng.random() < 0.8 else 1 - v for v in truth]
    # The model equals one reviewer and the other two agree with it: at the ceiling.
    same = ceiling(dim, truth, [truth, truth, noisy], bootstrap=100)
    assert same.model is not None and same.raters is not None
    assert same.relation in ("≥ ceiling", "≈ ceiling") and same.gap_high is not None
    alone = ceiling(dim, truth, [noisy], bootstrap=20)
    assert alone.raters is None and alone.verdict in ("reliable", "tentative", "unreliable")


def test_agree_prints_one_line_per_dimension_within_80_columns(tmp_path):
    project = str(dialogue_project(tmp_path))
    env = {"COLUMNS": "80"}
    done = run_cli("agree", project, "--bootstrap", "50", env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    for name, _ in DIMENSIONS:
        (row,) = [line for line in lines if line.startswith(name)]  # one line, not wrapped
        assert "ceiling" in row and "%" in row
    assert "model vs" not in done.stdout  # the pairs only on request
    pairs = run_cli("agree", project, "--bootstrap", "50", "--pairs", env=env)
    assert pairs.returncode == 0, pairs.stderr
    assert max(len(line) for line in pairs.stdout.splitlines()) <= 80
    assert pairs.stdout.count("ceiling: rater1 vs rater2 vs rater3") == len(DIMENSIONS)
