"""export/ without a model: the drift gate, the check items, the provenance, the report, and
the input checks that run before any conversion. Fast; no torch needed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

from annotator.errors import AnnotatorError
from annotator.export import drift, metadata
from annotator.export.report import format_report, report_paths, write_report
from annotator.inference import prompt
from annotator.inference.engine import Decision
from annotator.modelfile import KEY_PROMPT_FORMAT, KEY_PROVENANCE, KEY_RUBRIC
from annotator.rubric import rubric_from_dict

RUBRIC = rubric_from_dict(
    {
        "name": "r",
        "instructions": "Rate it.",
        "inputs": [{"column": "text", "label": "TEXT"}],
        "dimensions": [
            {
                "name": "tone",
                "question": "Tone?",
                "scale": "nominal",
                "values": ["pos", "neg", "neu"],
            },
            {"name": "score", "question": "Score?", "scale": "ordinal", "values": [1, 2, 3, 4, 5]},
        ],
    },
    "test",
)


def answers(tone: list[str], score: list[int]) -> drift.Answers:
    return [
        {"tone": Decision(t, 0.9, 0.5), "score": Decision(s, 0.8, 0.4)}
        for t, s in zip(tone, score, strict=True)
    ]


def items(n: int, human=None) -> list[drift.CheckItem]:
    human = human or [{"tone": None, "score": None}] * n
    return [drift.CheckItem(f"i{k}", {"text": f"t{k}"}, human[k]) for k in range(n)]


TONES = ["pos", "neg", "neu", "pos", "neg", "neu", "pos", "neg"]
SCORES = [1, 2, 3, 4, 5, 4, 3, 2]


# -- the gate -------------------------------------------------------------------------------


def test_identical_varied_answers_pass_with_alpha_one():
    result = drift.compare(RUBRIC, items(8), answers(TONES, SCORES), answers(TONES, SCORES), 0.9, 0)
    assert result["passed"]
    for d in result["dimensions"]:
        assert d["quantized_vs_merged"]["alpha"] == pytest.approx(1.0) and d["basis"] == "alpha"
        assert d["exact_agreement"] == 1.0 and d["disagreements"] == 0


def test_disagreement_below_the_threshold_fails_that_dimension_only():
    drifted = [5, 1, 3, 2, 5, 1, 3, 5]
    result = drift.compare(
        RUBRIC, items(8), answers(TONES, drifted), answers(TONES, SCORES), 0.9, 0
    )
    assert not result["passed"]
    by = {d["dimension"]: d for d in result["dimensions"]}
    assert by["tone"]["passed"] and not by["score"]["passed"]
    assert by["score"]["quantized_vs_merged"]["alpha"] < 0.9 and by["score"]["disagreements"] == 5
    # The threshold is an option: the same answers pass a lax one.
    lax = drift.compare(RUBRIC, items(8), answers(TONES, drifted), answers(TONES, SCORES), -1.0, 0)
    assert lax["passed"]


def test_no_variation_falls_back_to_identical_answers_and_says_so():
    same = answers(["neu"] * 5, [3] * 5)
    result = drift.compare(RUBRIC, items(5), same, same, 0.9, 0)
    assert result["passed"]
    assert all(d["basis"].startswith("identical answers") for d in result["dimensions"])
    one_off = answers(["neu"] * 4 + ["pos"], [3] * 5)
    result = drift.compare(RUBRIC, items(5), one_off, same, 0.9, 0)
    tone = result["dimensions"][0]
    assert not tone["passed"] and tone["basis"] == "alpha"  # 4 of 5 alike is not agreement


def test_one_item_cannot_pass():
    one = answers(["neu"], [3])
    result = drift.compare(RUBRIC, items(1), one, one, 0.9, 0)
    assert not result["passed"]
    assert "fewer than 2 items" in result["dimensions"][0]["basis"]


def test_human_alphas_use_only_labelled_items():
    human = [
        {"tone": t, "score": s if k % 2 else None}
        for k, (t, s) in enumerate(zip(TONES, SCORES, strict=True))
    ]
    result = drift.compare(
        RUBRIC, items(8, human), answers(TONES, SCORES), answers(TONES, SCORES), 0.9, 50
    )
    by = {d["dimension"]: d for d in result["dimensions"]}
    assert by["tone"]["quantized_vs_human"]["n"] == 8 and by["tone"]["human_labels"] == 8
    assert by["score"]["quantized_vs_human"]["n"] == 4 and by["score"]["human_labels"] == 4
    assert by["tone"]["merged_vs_human"]["alpha"] == pytest.approx(1.0)
    low, high = by["tone"]["quantized_vs_merged"]["ci95"]
    assert low == pytest.approx(1.0) and high == pytest.approx(1.0)
    assert result["answers"][1]["human"] == {"tone": "neg", "score": 2}


# -- check items and merged-model scores ------------------------------------------------------


def test_check_items_read_labels_and_report_bad_ones(tmp_path):
    path = tmp_path / "validation.jsonl"
    rows = [
        {"id": "a", "text": "one", "tone": "pos", "score": 4},
        {"id": "b", "text": "two", "tone": "", "score": "5"},
        {"id": "c", "text": "three", "tone": "happy", "score": 9},
        {"id": "d", "text": "four"},
        {"id": "e", "text": ""},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    found, problems = drift.load_check_items(path, RUBRIC)
    assert [i.id for i in found] == ["a", "b", "c", "d"]
    assert found[0].human == {"tone": "pos", "score": 4}
    assert found[1].human == {"tone": None, "score": 5}
    assert found[2].human == {"tone": None, "score": None}
    assert found[3].human == {"tone": None, "score": None}
    assert len(problems) == 3
    assert any("happy" in p for p in problems) and any("empty text" in p for p in problems)


def test_check_items_need_at_least_one_item(tmp_path):
    path = tmp_path / "v.csv"
    path.write_text("id,text\n1,\n")
    with pytest.raises(AnnotatorError, match="no usable items"):
        drift.load_check_items(path, RUBRIC)


def test_merged_scores_are_checked_against_the_rubric():
    good = drift.decisions_from_scores(
        RUBRIC, [{"tone": ("pos", 0.7, 0.4), "score": (2, 0.6, 0.1)}]
    )
    assert good == [{"tone": Decision("pos", 0.7, 0.4), "score": Decision(2, 0.6, 0.1)}]
    with pytest.raises(AnnotatorError, match="not one of its values"):
        drift.decisions_from_scores(RUBRIC, [{"tone": ("happy", 1.0, 1.0), "score": (2, 1, 1)}])
    with pytest.raises(AnnotatorError, match="dimension score"):
        drift.decisions_from_scores(RUBRIC, [{"tone": ("pos", 1.0, 1.0)}])


# -- the provenance record ----------------------------------------------------------------------


def record(**override) -> dict:
    data = {
        "base": "google/gemma-3-270m",
        "data_sha256": "ab" * 32,
        "split": {"seed": 1},
        "settings": {"r": 16},
        "validation_alpha": {"tone": 0.8},
        "rubric": RUBRIC.canonical_json(),
        "prompt_format": prompt.PROMPT_FORMAT,
        "date": "2026-01-01",
        "tool_version": "0.1.0",
        "merge_check": {"max_abs_diff": 0.01},
    }
    data.update(override)
    return data


def write_record(tmp_path, data) -> object:
    merged = tmp_path / "merged"
    merged.mkdir(exist_ok=True)
    (merged / metadata.PROVENANCE_FILE).write_text(
        data if isinstance(data, str) else json.dumps(data)
    )
    return merged


def test_training_record_round_trip_to_file_metadata(tmp_path):
    training = metadata.load_training_record(write_record(tmp_path, record()))
    assert training.rubric == RUBRIC
    kv = metadata.file_metadata(training, {"quant": "q4_k_m"})
    assert (
        kv[KEY_RUBRIC] == RUBRIC.canonical_json() and kv[KEY_PROMPT_FORMAT] == prompt.PROMPT_FORMAT
    )
    provenance = json.loads(kv[KEY_PROVENANCE])
    assert "rubric" not in provenance and provenance["rubric_sha256"] == RUBRIC.hash
    # The file keeps the base's name without its folders, unless asked for everything.
    assert provenance["base"] == "gemma-3-270m" and provenance["export"]["quant"] == "q4_k_m"
    assert set(metadata.PROVENANCE_KEYS) - {"rubric"} <= set(provenance)
    full = json.loads(metadata.file_metadata(training, {}, full_provenance=True)[KEY_PROVENANCE])
    assert full["base"] == "google/gemma-3-270m"


@pytest.mark.parametrize(
    "data, message",
    [
        ("not json", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        (record(base=None) | {"base": 3}, "base must be non-empty text"),
        ({k: v for k, v in record().items() if k != "merge_check"}, "missing key(s) merge_check"),
        (record(prompt_format=99), "trained with prompt format 99"),
        (record(prompt_format="1"), "prompt_format must be an integer"),
        (record(rubric={"name": "x"}), "canonical JSON text"),
        (
            record(rubric=json.dumps({"name": "{0.__class__}", "instructions": "i"})),
            "invalid rubric",
        ),
    ],
)
def test_bad_training_records_are_refused_in_one_line(tmp_path, data, message):
    with pytest.raises(AnnotatorError) as caught:
        metadata.load_training_record(write_record(tmp_path, data))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_unembeddable_provenance_is_refused(tmp_path):
    training = metadata.load_training_record(
        write_record(tmp_path, record(validation_alpha=float("nan")))
    )
    with pytest.raises(AnnotatorError, match="cannot be stored as JSON"):
        metadata.file_metadata(training, {})
    training = metadata.load_training_record(write_record(tmp_path, record(settings="x" * 300_000)))
    with pytest.raises(AnnotatorError, match="too large"):
        metadata.file_metadata(training, {})


# -- the report ---------------------------------------------------------------------------------


def test_report_table_and_files(tmp_path):
    drifted = [5, 1, 3, 2, 5, 1, 3, 5]
    result = drift.compare(
        RUBRIC, items(8), answers(TONES, drifted), answers(TONES, SCORES), 0.9, 0
    )
    out = tmp_path / "m.gguf"
    report = {
        "status": "rejected",
        "reason": "alpha below",
        "file": str(out) + ".rejected",
        "source": "run/merged",
        "quant": "Q4_K_M",
        "size": 10,
        "sha256": "f" * 64,
        "check_items": "run/validation.jsonl",
        "problems": ["row 3: bad"],
        "drift": result,
    }
    json_path, text_path = write_report(report, out)
    assert (
        (json_path, text_path)
        == report_paths(out)
        == (tmp_path / "m.export.json", tmp_path / "m.export.txt")
    )
    assert json.loads(json_path.read_text())["drift"]["passed"] is False
    text = text_path.read_text()
    assert text == format_report(report)
    table = text.splitlines()
    header = next(line for line in table if line.startswith("dimension"))
    assert "q~merged" in header and "q~human" in header and "merged~human" in header
    assert any(line.startswith("score") and "FAIL" in line for line in table)
    assert any(line.startswith("tone") and "1.000" in line and "pass" in line for line in table)
    assert "status    REJECTED: alpha below" in text and "note: row 3: bad" in text


# -- input checks, before any conversion ----------------------------------------------------------


def run_export_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "annotator.export.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_cli_refuses_bad_inputs_in_one_line_before_converting(tmp_path):
    merged = write_record(tmp_path, record())
    out = tmp_path / "m.gguf"
    cases = [
        ((str(tmp_path / "nope"), "--out", str(out)), "not a directory"),
        ((str(merged), "--out", str(tmp_path / "m.bin")), "must end in .gguf"),
        ((str(merged), "--out", str(out)), "validation.jsonl: no validation items"),
        (
            (str(merged), "--out", str(out), "--check", str(tmp_path / "missing.jsonl")),
            "cannot read",
        ),
    ]
    for args, message in cases:
        done = run_export_cli(*args)
        assert done.returncode == 1, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("annotator: error: ") and message in lines[0]
    out.write_bytes(b"old")
    done = run_export_cli(str(merged), "--out", str(out))
    assert "already exists (pass --force" in done.stderr and out.read_bytes() == b"old"
    done = run_export_cli(str(merged), "--out", str(out), "--quant", "q3")
    assert done.returncode == 2 and "Invalid value for '--quant'" in done.stderr
    done = run_export_cli(str(merged), "--out", str(out), "--min-agreement", "1.5")
    assert done.returncode == 2


def test_cli_help_lists_the_options():
    done = run_export_cli("--help")
    assert done.returncode == 0
    for option in ("--out", "--quant", "--check", "--min-agreement", "--force"):
        assert option in done.stdout
    assert "q4_k_m" in done.stdout and "0.9" in done.stdout
