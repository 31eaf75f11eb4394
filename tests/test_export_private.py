"""What an exported file reveals: a model trained from files in a folder with a distinctive
name, on items with distinctive ids, is exported; neither the name nor any id is anywhere in
the GGUF's bytes, though train's own record (which stays on the training machine) has both.
`--full-provenance` is the explicit way to keep them.

Real parts: `annotator train` for a few steps on the tiny two-layer Gemma, `annotator export`
through llama.cpp's converter and quantizer, the drift check in the engine.
"""

from __future__ import annotations  # noqa: I001  (`import train` must precede torch)

import json

import annotator.train  # noqa: F401  (first, before torch: OpenMP wait policy and hub settings)

import pytest
from helpers.train import SMOKE_TOML, smoke_rows, tiny_dir, write_labeled
from test_train_cli import FAST

from annotator.modelfile import read_model_info
from conftest import run_cli

# Every test here builds or exports a model: the long tier (`make test-long`).
pytestmark = pytest.mark.long

SECRET_DIR = "casefiles-ostrowski-unit9"
SECRET_ID = "caseid-qv"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    secret = tmp_path_factory.mktemp("export-private") / SECRET_DIR
    secret.mkdir()
    (secret / "rubric.toml").write_text(SMOKE_TOML)
    rows = smoke_rows(16, seed=3, prefix=SECRET_ID)
    write_labeled(secret / "labels.csv", rows)
    done = run_cli(
        "train",
        "--base",
        str(tiny_dir()),
        "--data",
        str(secret / "labels.csv"),
        "--rubric",
        str(secret / "rubric.toml"),
        "--out",
        str(secret / "run"),
        *FAST,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return secret, [r["id"] for r in rows]


def _export(secret, name, *extra):
    out = secret.parent / name
    done = run_cli(
        "export",
        str(secret / "run" / "merged"),
        "--out",
        str(out),
        "--quant",
        "q8_0",
        "--threads",
        "1",
        "--bootstrap",
        "0",
        "--min-agreement",
        "0",
        *extra,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_the_exported_file_holds_no_folder_name_and_no_item_id(trained):
    secret, ids = trained
    record = (secret / "run" / "merged" / "annotator_provenance.json").read_text()
    assert SECRET_DIR in record and any(i in record for i in ids)  # the input had both
    out = _export(secret, "model.gguf")
    raw = out.read_bytes()
    assert SECRET_DIR.encode() not in raw
    assert SECRET_ID.encode() not in raw
    assert not [i for i in ids if i.encode() in raw]
    prov = read_model_info(out).provenance
    split = prov["split"]
    assert split["train_count"] + split["validation_count"] == 16
    assert len(split["validation_ids_sha256"]) == 64 and "validation_ids" not in split
    assert prov["settings"]["data"]["paths"] == ["labels.csv"]
    assert prov["settings"]["data"]["rubric"] == "rubric.toml" and prov["settings"]["out"] == "run"
    # inspect shows a short summary; --json gives the whole (already slim) record
    shown = run_cli("inspect", str(out))
    assert shown.returncode == 0, shown.stderr
    assert f"{split['train_count']} trained, {split['validation_count']} validation" in shown.stdout
    assert "LoRA r=4 alpha=8, lr 0.02" in shown.stdout and "provenance" in shown.stdout
    drift = prov["export"]["drift_check"]  # the check's outcome is in the file, without ids
    assert drift["passed"] is True and drift["items"] == split["validation_count"]
    assert (
        f"drift check  passed on {drift['items']} items: alpha(file, merged model)" in shown.stdout
    )
    as_json = json.loads(run_cli("inspect", "--json", str(out)).stdout)
    assert as_json["provenance"] == prov and as_json["rubric"]["name"] == "smoke"


def test_full_provenance_is_an_explicit_choice(trained):
    secret, ids = trained
    raw = _export(secret, "model-full.gguf", "--full-provenance").read_bytes()
    assert SECRET_DIR.encode() in raw
    assert any(i.encode() in raw for i in ids)
