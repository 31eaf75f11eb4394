"""The pieces of `train`'s calibrated files that need no model: the comparison and its line, the
per-file lines, and the one-line reasons a run gets no calibrated files (the whole path runs
end to end in tests/test_train_calibrated.py, long tier)."""

from __future__ import annotations

import json

import pytest
from test_export_units import RUBRIC, record, write_record

from annotator.export.calibrated import after_training, skip_reason
from annotator.export.calibrated_compare import (
    compare,
    comparison_line,
    refused_line,
    side_line,
)

NAMES = {"fine_tuned": "calibrated.gguf", "base": "base-calibrated.gguf"}


def test_the_comparison_uses_dimensions_defined_on_both_sides():
    found = compare({"tone": 0.5, "score": 0.3, "x": None}, {"tone": 0.2, "score": None, "x": 1})
    assert found["dimensions"] == ["tone"]
    assert found["fine_tuned"] == 0.5 and found["base"] == 0.2
    assert found["difference"] == pytest.approx(0.3) and found["better"] == "fine_tuned"
    assert compare({"tone": 0.4}, {"tone": 0.4})["better"] == "base"  # a tie ships the base
    assert compare({"tone": None}, {"tone": 0.4})["better"] is None


def test_the_line_says_which_file_is_better_and_by_how_much():
    better = comparison_line(compare({"tone": 0.45}, {"tone": 0.2}), 25, NAMES)
    assert better == (
        "calibrated: the fine-tuned file beats the base, both with heads: mean alpha 0.450 vs "
        "0.200 (+0.250) on 25 validation items; ship calibrated.gguf"
    )
    worse = comparison_line(compare({"tone": 0.1}, {"tone": 0.3}), 25, NAMES)
    assert worse == (
        "calibrated: the fine-tuned file with its head does NOT beat the base with a head: "
        "mean alpha 0.100 vs 0.300 (-0.200) on 25 validation items; both written, "
        "base-calibrated.gguf is the better one"
    )
    unwritten = comparison_line(compare({"tone": 0.1}, {"tone": 0.3}), 25, {"fine_tuned": "c"})
    assert unwritten.endswith("(-0.200) on 25 validation items; the base is the better one")
    none = comparison_line(compare({"tone": None}, {"tone": 0.3}), 25, NAMES)
    assert "nothing to compare" in none and "\n" not in none


def test_each_side_gets_a_line_with_its_file_or_why_not(tmp_path):
    side = {
        "alpha": {"tone": 0.4213, "score": None},
        "file": {"name": "base-calibrated.gguf", "kind": "head file", "size": 9_100},
        "note": "",
    }
    assert side_line("base", side, tmp_path) == (
        f"base + head: alpha tone 0.421, score undefined; {tmp_path / 'base-calibrated.gguf'} "
        "(head file, 9 kB)"
    )
    side.update(file=None, note="the base is not the embedded model")
    assert side_line("base", side, tmp_path).endswith(
        "; no file (the base is not the embedded model)"
    )


def _run_dir(tmp_path, kind: str, labels: list[tuple[str, int]]):
    tmp_path.mkdir()
    write_record(tmp_path, record(base_detail={"kind": kind, "path": "/b", "sha256": "0" * 64}))
    with (tmp_path / "validation.jsonl").open("w") as handle:
        for n, (tone, score) in enumerate(labels):
            handle.write(json.dumps({"id": f"v{n}", "text": "t", "tone": tone, "score": score}))
            handle.write("\n")
    return tmp_path


def test_why_a_run_gets_no_calibrated_files(tmp_path):
    varied = [(["pos", "neg"][n % 2], 1 + n % 3) for n in range(20)]
    hf = _run_dir(tmp_path / "hf", "hf", varied)
    assert "base is a Hugging Face model" in skip_reason(hf)
    few = _run_dir(tmp_path / "few", "gguf", varied[:19])
    assert skip_reason(few) == (
        "19 validation items; a head needs 20 labelled items with two values or more "
        "(more data or a larger --val-fraction)"
    )
    one_value = _run_dir(tmp_path / "one", "gguf", [("pos", 2)] * 30)
    assert skip_reason(one_value).startswith("30 validation items; a head needs 20")
    assert skip_reason(_run_dir(tmp_path / "ok", "gguf", varied)) is None
    assert RUBRIC.dimensions[0].name == "tone"  # the record's rubric, which the labels follow


def test_after_training_says_in_one_line_why_there_are_no_files(tmp_path, monkeypatch):
    said: list[str] = []
    hf = _run_dir(tmp_path / "hf", "hf", [("pos", 1)] * 20)
    after_training(hf, "cpu", 1, said.append, said.append)
    assert len(said) == 1 and said[0].startswith("no calibrated files: the run's base is a")

    def missing() -> None:
        raise ImportError("No module named 'gguf'")

    monkeypatch.setattr("annotator.export.convert.check_converter", missing)
    said.clear()
    ok = _run_dir(tmp_path / "ok", "gguf", [(["pos", "neg"][n % 2], 1 + n % 3) for n in range(20)])
    after_training(ok, "cpu", 1, said.append, said.append)
    assert said == [
        "no calibrated files: they need the [export] extra: pip install '.[export]' "
        "(No module named 'gguf')"
    ]
    assert sorted(p.name for p in ok.iterdir()) == ["merged", "validation.jsonl"]  # as it was


def test_the_interval_resamples_the_same_items_for_both_files():
    from annotator.export.calibrated_compare import difference_interval

    human = {"score": [1, 2, 3, 4, 5] * 6, "tone": ["pos", "neg", "neu"] * 10}
    same = difference_interval(RUBRIC, ["score", "tone"], human, human, human, resamples=200)
    assert same == [0.0, 0.0]  # paired: identical labels differ by nothing in every resample
    noisy = {"score": [3, 2, 3, 4, 3] * 6, "tone": ["pos", "neg", "pos"] * 10}
    low, high = difference_interval(RUBRIC, ["score", "tone"], human, noisy, human, resamples=200)
    assert 0 < low < high <= 1  # the first file (the human labels themselves) is better
    line = comparison_line(
        {**compare({"score": 1.0}, {"score": 0.5}), "interval": [low, high]}, 30, NAMES
    )
    assert f"(+0.500; 95% interval {low:+.3f} to {high:+.3f}) on 30 validation items" in line
    assert difference_interval(RUBRIC, [], human, noisy, human) is None


def test_a_refused_adapter_leaves_the_base_file_to_ship(tmp_path, monkeypatch):
    reason = "alpha(quantized, merged) below 0.9 on tone (0.755)"
    line = refused_line(reason, "adapter.export.txt", 24, {"base": "base-calibrated.gguf"})
    assert line == (
        "calibrated: the fine-tuned adapter was refused by export's drift check (alpha(quantized, "
        "merged) below 0.9 on tone (0.755); see adapter.export.txt), so only the base got a "
        "head on the 24 validation items; ship base-calibrated.gguf"
    )
    assert refused_line(reason, "r.txt", 24, {"base": None}).endswith("for the base either")
    base = {"alpha": {"tone": 0.3}, "file": {"name": "b.gguf", "kind": "head file", "size": 9}}
    record = {"fine_tuned": None, "base": {**base, "note": ""}, "line": line}
    monkeypatch.setattr("annotator.export.calibrated.calibrate_run", lambda *a: record)
    monkeypatch.setattr("annotator.export.convert.check_converter", lambda: None)
    ok = _run_dir(tmp_path / "ok", "gguf", [(["pos", "neg"][n % 2], 1 + n % 3) for n in range(20)])
    said: list[str] = []
    after_training(ok, "cpu", 1, said.append, said.append)
    assert said[0].startswith("base + head: alpha tone 0.300; ") and said[1] == line
    assert len(said) == 3 and said[2].startswith("calibration record: ")
