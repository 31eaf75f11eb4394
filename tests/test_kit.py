"""Field kits, end to end with real parts: `annotator kit build` gathers real wheels (the
llama-cpp-python wheel from pip's cache), `install.sh` installs them with pip into a fresh
venv inside a network namespace with no network (`unshare -n`) and no pip configuration, and
the installed `annotator` labels the sample with the real model: the same bytes as here.
A damaged kit is refused by `kit verify` and by `install.sh`, naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import SAMPLES, run_cli

GOEMO = SAMPLES / "goemotions"
ADAPTER = GOEMO / "goemotions-lora.gguf"


def field_env(home: Path) -> dict:
    """A laptop's environment: no pip configuration or index, nothing from this machine's
    pip settings (this machine has a local wheel folder and extra indexes configured)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "ANNOTATOR_", "VIRTUAL_ENV", "PYTHON"))}
    return {**env, "HOME": str(home), "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1"}


def sh(*args, env: dict, offline: bool = False) -> subprocess.CompletedProcess:
    cmd = ["unshare", "-n", *args] if offline else list(args)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kit") / "field-kit"
    done = run_cli("kit", "build", "--out", str(out), "--model", str(ADAPTER),
                   "--sample", str(GOEMO / "items.csv"))
    assert done.returncode == 0, done.stderr
    assert "llama-cpp-python 0.3.36: the wheel built on this machine" in done.stderr
    return out


@pytest.fixture(scope="module")
def installed(kit, tmp_path_factory):
    """The kit installed and its sample labelled, all with the network cut."""
    assert subprocess.run(["unshare", "-n", "true"]).returncode == 0, "unshare -n must work"
    work = tmp_path_factory.mktemp("field")
    env = field_env(work / "home")
    venv = work / "venv"
    done = sh("sh", str(kit / "install.sh"), str(venv), env=env, offline=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    labelled = sh("sh", str(kit / "start.sh"), "--no-app", offline=True,
                  env={**env, "ANNOTATOR_VENV": str(venv), "ANNOTATOR_PROJECT": str(work / "f.db")})
    assert labelled.returncode == 0, labelled.stderr[-3000:]
    return work, venv, env, done


def test_the_kit_lists_every_file_with_its_sha256_and_licences(kit):
    manifest = json.loads((kit / "MANIFEST.json").read_text())
    listed = {f["path"] for f in manifest["files"]}
    on_disk = {p.relative_to(kit).as_posix() for p in kit.rglob("*") if p.is_file()}
    assert listed == on_disk - {"MANIFEST.json"}
    wheels = {p for p in listed if p.startswith("wheels/")}
    assert any(p.startswith("wheels/llama_cpp_python-0.3.36-") for p in wheels)
    assert any(p.startswith("wheels/rubric_annotator-0.1.0-") for p in wheels)
    assert not any(w.startswith(("wheels/torch-", "wheels/transformers-")) for w in wheels)
    assert manifest["distributions"]["textual"] == "8.2.8"
    assert manifest["python_tag"] == "cp311" and manifest["platform"]
    assert "GoEmotions" in manifest["model"]["description"]
    assert any("Gemma Terms of Use" in line for line in manifest["licences"])
    assert "licenses/gemma-GEMMA_TERMS.html" in listed
    assert "sh install.sh && sh start.sh" in (kit / "README.md").read_text()
    assert run_cli("kit", "verify", str(kit)).returncode == 0


def test_offline_install_labels_the_sample_byte_identically(kit, installed, tmp_path):
    work, venv, env, done = installed
    # doctor (install.sh's self-check) shows the kit the environment came from
    assert f"kit                {kit}" in done.stdout
    field = work / "field.csv"
    out = sh(str(venv / "bin" / "annotator"), "results", str(work / "f.db"), "--out", str(field),
             env=env, offline=True)
    assert out.returncode == 0, out.stderr
    project, here = tmp_path / "here.db", tmp_path / "here.csv"
    done = run_cli("annotate", str(GOEMO / "items.csv"), "--model", str(ADAPTER),
                   "--project", str(project))
    assert done.returncode == 0, done.stderr
    assert run_cli("results", str(project), "--out", str(here)).returncode == 0
    assert len(field.read_text().splitlines()) == 41
    assert field.read_bytes() == here.read_bytes()


def _damaged_copy(kit: Path, dest: Path, rel: str) -> Path:
    """A copy of the kit (hard links: no 300 MB copy) with one byte of `rel` flipped."""
    shutil.copytree(kit, dest, copy_function=os.link)
    target = dest / rel
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.unlink()  # a new file: the original kit keeps its bytes
    target.write_bytes(bytes(data))
    return dest


@pytest.mark.parametrize("which", ["wheel", "model"])
def test_a_flipped_byte_is_refused_by_verify_and_install(kit, tmp_path, which):
    manifest = json.loads((kit / "MANIFEST.json").read_text())
    rel = (next(f["path"] for f in manifest["files"] if f["path"].startswith("wheels/numpy-"))
           if which == "wheel" else manifest["model"]["file"])
    bad = _damaged_copy(kit, tmp_path / "bad", rel)
    done = run_cli("kit", "verify", str(bad))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0] == f"{bad / rel}: sha256 differs from the manifest (damaged or changed)"
    assert len(lines) == 2 and "refused" in lines[1]
    venv = tmp_path / "venv"
    installed = sh("sh", str(bad / "install.sh"), str(venv), env=field_env(tmp_path / "home"))
    assert installed.returncode == 1
    assert f"{bad / rel}: sha256 differs" in installed.stderr
    assert "nothing installed" in installed.stderr and not venv.exists()


def test_an_added_wheel_or_another_platform_is_refused(kit, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(kit, bad, copy_function=os.link)
    (bad / "wheels" / "evil-1.0-py3-none-any.whl").write_bytes(b"PK")
    manifest = json.loads((bad / "MANIFEST.json").read_text())
    manifest["python_tag"] = "cp39"
    (bad / "MANIFEST.json").unlink()
    (bad / "MANIFEST.json").write_text(json.dumps(manifest))
    done = run_cli("kit", "verify", str(bad))
    assert done.returncode == 1
    assert "the kit is for cp39 on" in done.stderr and "this machine runs cp311" in done.stderr
    assert f"{bad / 'wheels' / 'evil-1.0-py3-none-any.whl'}: not in the manifest" in done.stderr


def test_archive_holds_the_kit_folder(tmp_path):
    out = tmp_path / "kit"
    done = run_cli("kit", "build", "--out", str(out), "--archive")
    assert done.returncode == 0, done.stderr
    assert not out.exists() and (tmp_path / "kit.tar.gz").is_file()
    with tarfile.open(tmp_path / "kit.tar.gz") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    unpacked = tmp_path / "unpacked" / "kit"
    assert run_cli("kit", "verify", str(unpacked)).returncode == 0
    manifest = json.loads((unpacked / "MANIFEST.json").read_text())
    assert manifest["model"] is None and manifest["base"]["file_name"].endswith(".gguf")
    assert not (unpacked / "start.sh").exists()


def test_a_sample_without_a_rubric_is_refused_before_any_download(tmp_path):
    done = run_cli("kit", "build", "--out", str(tmp_path / "k"), "--sample",
                   str(GOEMO / "items.csv"))
    assert done.returncode == 1 and "--sample needs --rubric" in done.stderr
    assert not list(tmp_path.iterdir())


def test_the_wheelhouse_follows_the_installed_requirement_closure():
    """What `--extras` adds is read from the installed metadata: the base kit has no torch."""
    from annotator.errors import AnnotatorError
    from annotator.kit import requirement_closure

    base = requirement_closure("rubric-annotator")
    assert {"llama-cpp-python", "textual", "krippendorff", "gguf", "numpy"} <= set(base)
    assert "torch" not in base and "rubric-annotator" not in base
    train = requirement_closure("rubric-annotator", ["train"])
    assert {"torch", "peft", "transformers"} <= set(train) and set(base) < set(train)
    with pytest.raises(AnnotatorError, match="no extra 'gpu'"):
        requirement_closure("rubric-annotator", ["gpu"])


def test_an_archive_or_a_folder_without_manifest_is_refused_in_one_line(tmp_path):
    archive = tmp_path / "kit.tar.gz"
    archive.write_bytes(b"")
    done = run_cli("kit", "verify", str(archive))
    assert done.returncode == 1 and "unpack it first (tar xzf kit.tar.gz)" in done.stderr
    done = run_cli("kit", "verify", str(tmp_path))
    assert f"{tmp_path / 'MANIFEST.json'}: missing" in done.stderr
