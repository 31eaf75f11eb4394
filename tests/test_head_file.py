"""`calibrate --out` on the embedded base writes a head file of a few kB that runs on that base,
with the labels of a full copy; on an adapter it writes the adapter with the head. Real parts:
the packaged Gemma 3 270M in llama.cpp, the bundled GoEmotions adapter, `inspect` as a command.
One module fixture labels three items and writes both files (the full copy costs most: gguf's
reader parses the base's 262k-token vocabulary in Python)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import gguf
import numpy as np
import pytest
from conftest import SAMPLES, run_cli, write_csv
from test_calibrate import RUBRIC
from test_calibration import tiny_model_file

from annotator.calibration.headfile import (
    ADAPTER_COPY,
    FULL_COPY,
    HEAD_FILE,
    embedded_sha256,
    write_model_with_head,
)
from annotator.calibration.heads import Head, fit_dimension
from annotator.errors import AnnotatorError
from annotator.inference.backend import EngineSettings
from annotator.jobs.job import open_job
from annotator.modelfile import (
    KEY_BASE_SHA256,
    KEY_CALIBRATION,
    KEY_PROMPT_FORMAT,
    read_model_info,
    sha256_file,
)
from annotator.project.store import Store

SETTINGS = EngineSettings(n_ctx=1024)


def _annotate(data, project, **kwargs) -> dict:
    """Label `data` into `project` in this process; {item id: labels}."""
    job = open_job(data, project, settings=SETTINGS, **kwargs)
    try:
        return {item.id: result.decisions for item, result in job.run()}
    finally:
        job.close()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, default_model):
    """Three items labelled with the embedded model (run 1), a head fitted on their stored
    states (each item's state, jittered, labelled with its own value: the head tells the
    three apart), written as the head file and as a full copy (`--full`)."""
    tmp = tmp_path_factory.mktemp("headfile")
    (tmp / "rubric.toml").write_text(RUBRIC)
    items = list(csv.DictReader((SAMPLES / "goemotions" / "items.csv").open(encoding="utf-8")))
    data = write_csv(tmp / "items.csv", items[:3], ["id", "text"])
    db = tmp / "p.db"
    _annotate(data, db, rubric_path=tmp / "rubric.toml")
    rng = np.random.default_rng(0)
    with Store(db) as store:
        run, rubric = store.run(1), store.rubric()
        states = [np.frombuffer(o.hidden, "<f2").reshape(2, -1) for o in store.outputs(1)]
        spread = np.std(states, axis=0)
        jittered = np.stack(
            [states[i % 3] + 0.05 * spread * rng.normal(size=spread.shape) for i in range(24)]
        )
        positions = [i % 3 for i in range(24)]
        fit = fit_dimension(rubric.dimension("positivity"), jittered, positions, positions)
        head = Head(
            {"positivity": fit.head}, 640, {"items": 24}, run.settings["settings"]["hidden_layer"]
        )
        small, full = tmp / "tone-head.gguf", tmp / "tone-full.gguf"
        assert write_model_with_head(store, run, head, small) == HEAD_FILE
        assert write_model_with_head(store, run, head, full, full=True) == FULL_COPY
    return tmp, small, full, data, [r["id"] for r in items[:3]]


def test_the_head_file_is_kilobytes_and_names_its_base(shipped):
    tmp, small, full, _, ids = shipped
    size = small.stat().st_size
    assert size < 64_000 and full.stat().st_size > 200e6  # 253 MB for the embedded model
    info = read_model_info(small)
    assert info.is_adapter and info.is_head_file
    assert info.base_sha256 == embedded_sha256()
    assert info.quantization == "calibration head (no weights)"
    assert info.head(info.rubric).dims.keys() == {"positivity"}
    assert info.provenance["kind"] == "calibration head"
    assert info.provenance["run"]["model_sha256"] == embedded_sha256()
    assert info.provenance["run"]["settings"]["n_ctx"] == 1024
    assert gguf.GGUFReader(small).tensors == []  # no weights: llama.cpp changes nothing
    # Nothing confidential: no path, no item id.
    raw = small.read_bytes()
    assert str(tmp).encode() not in raw and tmp.name.encode() not in raw
    assert not [i for i in ids if i.encode() in raw]
    # The kit takes it as a model (an adapter on the embedded base, which every kit carries).
    from annotator.kit.build import _check_inputs

    assert _check_inputs(small, None, None, None)["info"].is_head_file
    shown = run_cli("inspect", str(small))
    assert shown.returncode == 0, shown.stderr
    assert f"base sha256   {embedded_sha256()} (runs on that base model)" in shown.stdout
    assert "quantization  calibration head (no weights)" in shown.stdout
    assert "calibration   head on positivity (24 reviewed items" in shown.stdout
    assert "  calibrated   " in shown.stdout and "  from run     model sha256 " in shown.stdout
    # --json is strict JSON: no Infinity or NaN, which json.dumps writes unless told not to.
    as_json = run_cli("inspect", "--json", str(small))
    assert as_json.returncode == 0, as_json.stderr
    record = json.loads(as_json.stdout, parse_constant=_not_json)
    assert record["calibration"]["dims"].keys() == {"positivity"}


def _not_json(constant: str):
    raise AssertionError(f"inspect --json wrote {constant}")


def test_the_head_file_labels_as_the_full_copy_does(shipped):
    tmp, small, full, data, _ = shipped
    by_small = _annotate(data, tmp / "small.db", model=small)
    by_full = _annotate(data, tmp / "full.db", model=full)
    assert len(by_small) == 3 and by_small == by_full  # values, probabilities and margins
    # The head labelled them, not the rule: it tells the three items apart.
    assert len({d["positivity"].value for d in by_small.values()}) == 3
    with Store(tmp / "small.db") as a, Store(tmp / "full.db") as b:
        head = a.run(1).settings["readout"]["head"]
        assert head == b.run(1).settings["readout"]["head"] and "positivity" in head["dims"]
        assert a.run(1).settings["base_model"]["sha256"] == embedded_sha256()


def _rewritten(small, out, **changes):
    """The head file's metadata with `changes`, as a new file."""
    metadata = dict(read_model_info(small).metadata)
    metadata.pop("general.type")
    metadata.pop("general.architecture")
    return tiny_model_file(out, {**metadata, **changes})


def test_a_head_file_for_another_base_or_without_its_base_is_refused_in_one_line(shipped, tmp_path):
    _, small, _, new, _ = shipped
    other = _rewritten(small, tmp_path / "other.gguf", **{KEY_BASE_SHA256: "0" * 64})
    with pytest.raises(AnnotatorError) as caught:
        _annotate(new, tmp_path / "p.db", model=other)
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith(f"{other}: made for the base model with sha256 000000000000...")
    with pytest.raises(AnnotatorError) as caught:
        _annotate(new, tmp_path / "p.db", model=small, base=tmp_path / "gone.gguf")
    assert str(caught.value) == (
        f"{small}: runs on the base model with sha256 {embedded_sha256()[:12]}..., which is "
        f"not at {tmp_path / 'gone.gguf'}; pass that model with --base"
    )
    assert not (tmp_path / "p.db").exists()  # refused before the project was opened


def test_a_truncated_or_damaged_head_file_is_refused_in_one_line(shipped, tmp_path):
    _, small, _, new, _ = shipped
    cut = tmp_path / "cut.gguf"
    raw = small.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    for read in (read_model_info, lambda m: _annotate(new, tmp_path / "p.db", model=m)):
        with pytest.raises(AnnotatorError) as caught:
            read(cut)  # `inspect`, then `annotate --model`
        assert (
            str(caught.value) == f"{cut}: damaged or truncated GGUF file (llama.cpp cannot load it)"
        )
    # The metadata checks of any model file apply: here a prompt format that is no number.
    odd = _rewritten(small, tmp_path / "odd.gguf", **{KEY_PROMPT_FORMAT: "one"})
    with pytest.raises(AnnotatorError) as caught:
        read_model_info(odd)
    assert str(caught.value).startswith(f"{odd}: metadata {KEY_PROMPT_FORMAT} must be a non-neg")
    bad = _rewritten(small, tmp_path / "bad.gguf", **{KEY_CALIBRATION: '{"format": 2}'})
    with pytest.raises(AnnotatorError) as caught:
        _annotate(new, tmp_path / "p.db", model=bad)
    line = str(caught.value)
    assert "\n" not in line and line.startswith(f"{bad} [{KEY_CALIBRATION}]")


def test_on_an_adapter_the_adapter_is_written_with_the_head(shipped, tmp_path):
    """A run whose model is the bundled LoRA adapter (the fixture's run, as if labelled with
    it): `--out` copies the adapter's tensors and adds the head, on the same base; `--full` is
    refused (there is no full model to copy)."""
    tmp, small, _, _, _ = shipped
    adapter = SAMPLES / "goemotions" / "goemotions-lora.gguf"
    head = read_model_info(small).head(read_model_info(small).rubric)
    out = tmp_path / "adapter-head.gguf"
    with Store(tmp / "p.db") as store:
        run = replace(store.run(1), model_path=str(adapter), model_sha256=sha256_file(adapter))
        assert write_model_with_head(store, run, head, out) == ADAPTER_COPY
        with pytest.raises(AnnotatorError, match="is a LoRA adapter; --full copies only full"):
            write_model_with_head(store, run, head, tmp_path / "x.gguf", full=True)
    assert not (tmp_path / "x.gguf").exists()
    written, source = read_model_info(out), read_model_info(adapter)
    assert written.is_adapter and not written.is_head_file
    assert written.base_sha256 == source.base_sha256
    assert written.head(written.rubric).sha256 == head.sha256
    before, after = gguf.GGUFReader(adapter).tensors, gguf.GGUFReader(out).tensors
    assert [t.name for t in after] == [t.name for t in before] and len(after) > 0
    assert out.stat().st_size < adapter.stat().st_size + 64_000


def test_inspect_json_writes_a_non_finite_number_as_null():
    from annotator.cli.info import _finite

    record = {"thresholds": [float("-inf"), 0.5], "alpha": float("nan"), "n": (1, float("inf"))}
    assert json.loads(json.dumps(_finite(record), allow_nan=False)) == {
        "thresholds": [None, 0.5],
        "alpha": None,
        "n": [1, None],
    }
