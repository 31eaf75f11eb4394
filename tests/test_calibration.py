"""Calibration heads (annotator/calibration.py): fitting, thresholds, the JSON a file carries."""

import json

import numpy as np
import pytest

from annotator.calibration.heads import fit_dimension, head_from_json, share_thresholds
from annotator.errors import AnnotatorError
from annotator.rubric import Dimension

DIM = Dimension("quality", "?", "ordinal", (1, 2, 3))


def synthetic(n: int, signal: float, seed: int = 0):
    """Hidden states whose first coordinates carry a label (with noise), like a probe's data."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=n, p=[0.2, 0.5, 0.3])
    states = rng.normal(0, 1, size=(n, 64)).astype(np.float32)
    states[:, :4] += signal * labels[:, None]
    return states, labels


def test_shares_are_kept_where_rounding_would_collapse():
    scores = np.linspace(0.9, 1.1, 100)  # a regression squeezed towards the mean
    labels = [0] * 20 + [1] * 50 + [2] * 30
    cuts = share_thresholds(scores, labels, 3)
    given = [sum(s >= c for c in cuts) for s in scores]
    assert [given.count(v) for v in range(3)] == [20, 50, 30]
    assert {round(s) for s in scores} == {1}  # rounding: one value for every item


def test_a_head_finds_a_signal_and_reports_it_out_of_fold():
    states, labels = synthetic(200, signal=0.8)
    fit = fit_dimension(DIM, states, labels.astype(float), list(labels))
    assert fit.head.loo_alpha is not None and fit.head.loo_alpha > 0.5
    assert len(set(fit.loo_labels)) == 3
    new_states, new_labels = synthetic(100, signal=0.8, seed=1)
    predicted = [fit.head.choose(s)[0] for s in new_states]
    assert np.mean(np.array(predicted) == new_labels) > 0.6


def test_no_signal_gives_no_agreement_out_of_fold():
    rng = np.random.default_rng(3)
    states = rng.normal(size=(120, 64)).astype(np.float32)
    labels = rng.choice(3, size=120)
    fit = fit_dimension(DIM, states, labels.astype(float), list(labels))
    # In-sample a 64-feature regression would fit noise; leave-one-out it cannot.
    assert fit.head.loo_alpha is None or fit.head.loo_alpha < 0.25


def test_head_json_round_trip_and_untrusted_input():
    from annotator.calibration.heads import Head

    states, labels = synthetic(60, signal=1.0)
    fit = fit_dimension(DIM, states, labels.astype(float), list(labels))
    head = Head({"quality": fit.head}, 64, {"items": 60}, 3)
    again = head_from_json(head.to_json(), "m.gguf")
    assert again.sha256 == head.sha256
    assert again.choose(DIM, states[0]) == head.choose(DIM, states[0])
    data = json.loads(head.to_json())
    data["dims"]["quality"]["thresholds"] = [2.0, 1.0]
    with pytest.raises(AnnotatorError, match=r"m.gguf: calibration head dims.quality"):
        head_from_json(json.dumps(data), "m.gguf")
    data = json.loads(head.to_json())
    data["n_embd"] = 65
    with pytest.raises(AnnotatorError, match="m.gguf"):
        head_from_json(json.dumps(data), "m.gguf")
    with pytest.raises(AnnotatorError, match="not valid JSON"):
        head_from_json("{", "m.gguf")
    assert again.layer == 3
    data = json.loads(head.to_json())
    data["layer"] = "middle"
    with pytest.raises(AnnotatorError, match="layer"):
        head_from_json(json.dumps(data), "m.gguf")
    # A head from before the block was recorded read the final state: refused, not misread.
    data = json.loads(head.to_json())
    data["format"] = 1
    with pytest.raises(AnnotatorError, match="fit it again"):
        head_from_json(json.dumps(data), "m.gguf")


def test_states_beyond_float16_are_clipped_alike_when_stored_and_scored():
    """A head scores the float16 states a project stores; a fresh run's float32 states with
    an activation beyond float16's range must score the same, not as infinite."""
    from annotator.calibration.features import features, float16_states

    rng = np.random.default_rng(1)
    states = rng.normal(size=(3, 64)).astype(np.float32)
    states[0, 5] = 90000.0
    stored = np.frombuffer(float16_states(states).astype("<f2").tobytes(), dtype="<f2").reshape(
        3, 64
    )
    assert np.isfinite(features(states)).all()
    assert np.array_equal(features(states), features(stored))


RUBRIC = {
    "name": "q",
    "instructions": "Rate it.",
    "inputs": [{"column": "text", "label": "TEXT"}],
    "dimensions": [
        {"name": "quality", "question": "How good?", "scale": "ordinal", "values": [1, 2, 3]}
    ],
}


def tiny_model_file(path, metadata: dict[str, str]):
    """A small GGUF file (a LoRA adapter's header, no tensors) carrying `metadata` as text."""
    import gguf

    writer = gguf.GGUFWriter(path, "gemma3")
    writer.add_type("adapter")
    for key, value in metadata.items():
        writer.add_string(key, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def crafted_head() -> dict:
    from annotator.calibration.heads import Head

    states, labels = synthetic(60, signal=1.0)
    fit = fit_dimension(DIM, states, labels.astype(float), list(labels))
    return json.loads(Head({"quality": fit.head}, 64, {"items": 60}, 3).to_json())


def _set(data: dict, path: str, value) -> dict:
    *parents, last = path.split("/")
    for key in parents:
        data = data[key]
    data[last] = value


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        ("dims/quality/n", float("inf"), "dims.quality.n must be an integer"),
        ("dims/quality/n", 2.5, "dims.quality.n must be an integer"),
        ("dims/quality/n", 0, "dims.quality.n must be between"),
        ("dims/quality/spread", -1.0, "dims.quality.spread must be at least 0"),
        ("dims/quality/ridge", -1.0, "dims.quality.ridge must be at least 0"),
        ("dims/quality/bias", 10**400, "dims.quality.bias must be finite"),
        ("dims/quality/bias", "0.5", "dims.quality.bias must be a number"),
        ("dims/quality/loo_alpha", 7.0, "dims.quality.loo_alpha must be at most 1"),
        ("dims/quality/thresholds", "12", "dims.quality.thresholds must be a list"),
        ("dims/\x1b[2Jquality", 1, "not printable"),
        ("fitted/items", "\x1b]0;owned\x07", "fitted.items is not printable"),
        ("fitted/items", -3, "fitted.items must be at least 0"),
        ("n_embd", True, "n_embd must be an integer"),
    ],
    ids=lambda value: repr(value)[:24],
)
def test_every_number_and_name_of_a_head_in_a_model_file_is_checked(
    tmp_path, where, value, message
):
    """A head read from a GGUF file: one line naming the file and the key, never a
    traceback, never a control character echoed."""
    from annotator.modelfile import KEY_CALIBRATION, KEY_RUBRIC, read_model_info
    from annotator.rubric import rubric_from_dict

    rubric = rubric_from_dict(RUBRIC, "test")
    head = crafted_head()
    _set(head, where, value)
    path = tiny_model_file(
        tmp_path / "m.gguf",
        {KEY_RUBRIC: rubric.canonical_json(), KEY_CALIBRATION: json.dumps(head)},
    )
    info = read_model_info(path)
    with pytest.raises(AnnotatorError) as caught:
        info.head(rubric)
    text = str(caught.value)
    assert text.startswith(f"{path} [{KEY_CALIBRATION}]: calibration head ")
    assert message in text and text.isprintable()


def test_a_good_head_in_a_model_file_reads_back(tmp_path):
    from annotator.modelfile import KEY_CALIBRATION, KEY_RUBRIC, read_model_info
    from annotator.rubric import rubric_from_dict

    rubric = rubric_from_dict(RUBRIC, "test")
    path = tiny_model_file(
        tmp_path / "m.gguf",
        {KEY_RUBRIC: rubric.canonical_json(), KEY_CALIBRATION: json.dumps(crafted_head())},
    )
    head = read_model_info(path).head(rubric)
    assert head.n_embd == 64 and head.dims["quality"].n == 60


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("annotator.base_sha256", "\x1b[2J" + "0" * 60, "annotator.base_sha256 must be a sha256"),
        ("annotator.prompt_format", "9" * 5000, "annotator.prompt_format must be a non-negative"),
        ("gemma3.context_length", "-4096", "gemma3.context_length must be a non-negative"),
    ],
    ids=lambda value: repr(value)[:24],
)
def test_other_numbers_a_model_file_says_about_itself_are_checked(tmp_path, key, value, message):
    from annotator.modelfile import read_model_info

    path = tiny_model_file(tmp_path / "m.gguf", {key: value})
    with pytest.raises(AnnotatorError) as caught:
        read_model_info(path)
    assert str(caught.value).startswith(f"{path}: metadata ") and message in str(caught.value)
    assert str(caught.value).isprintable()


def test_a_provenance_number_too_large_for_a_float_is_shown_as_unknown():
    from annotator.provenance import summary_lines

    lines = dict(summary_lines({"validation_alpha": {"quality": 10**400, "other": float("nan")}}))
    assert lines["val. alpha"] == "quality ?, other ?"
