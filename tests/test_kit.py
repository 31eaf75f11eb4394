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
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import SAMPLES, run_cli

GOEMO = SAMPLES / "goemotions"
ADAPTER = GOEMO / "goemotions-lora.gguf"


def field_env(home: Path) -> dict:
    """A laptop's environment: no pip configuration or index, nothing from this machine's
    pip settings (this machine has a local wheel folder and extra indexes configured)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "ANNOTATOR_", "VIRTUAL_ENV", "PYTHON"))
    }
    return {**env, "HOME": str(home), "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1"}


def sh(*args, env: dict, offline: bool = False) -> subprocess.CompletedProcess:
    cmd = ["unshare", "-n", *args] if offline else list(args)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def llama_wheel(tmp_path_factory) -> Path:
    """The wheel pip compiled for this venv, recorded as the kit's portable build: a stand-in
    (compiling the portable build takes minutes); the kits are installed on this machine,
    where that build runs."""
    from annotator.kit.llama_wheel import portable_cmake_args, record_llama_build

    wheel = _pip_cached_llama_wheel()
    assert wheel is not None, "pip's cache must hold the llama-cpp-python wheel built for .venv"
    copy = tmp_path_factory.mktemp("llama") / wheel.name
    shutil.copyfile(wheel, copy)
    record_llama_build(copy, portable_cmake_args())
    return copy


@pytest.fixture(scope="module")
def kit(tmp_path_factory, llama_wheel) -> Path:
    out = tmp_path_factory.mktemp("kit") / "field-kit"
    done = run_cli(
        "kit",
        "build",
        "--out",
        str(out),
        "--model",
        str(ADAPTER),
        "--sample",
        str(GOEMO / "items.csv"),
        "--llama-wheel",
        str(llama_wheel),
    )
    assert done.returncode == 0, done.stderr
    assert "llama-cpp-python 0.3.36: the portable CPU build" in done.stderr
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
    labelled = sh(
        "sh",
        str(kit / "start.sh"),
        "--no-app",
        offline=True,
        env={**env, "ANNOTATOR_VENV": str(venv), "ANNOTATOR_PROJECT": str(work / "f.db")},
    )
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
    llama = manifest["llama_cpp"]  # which build the kit carries
    assert llama["wheel"] in wheels and llama["portable"] and llama["gpu"] is False
    assert "-DGGML_NATIVE=OFF" in llama["cmake_args"] and "avx2" in llama["cpu_features"]
    assert "GoEmotions" in manifest["model"]["description"]
    assert any("Gemma Terms of Use" in line for line in manifest["licences"])
    assert "licenses/gemma-GEMMA_TERMS.html" in listed
    assert "sh install.sh && sh start.sh" in (kit / "README.md").read_text()
    assert run_cli("kit", "verify", str(kit)).returncode == 0


@pytest.mark.long
def test_offline_install_labels_the_sample_byte_identically(kit, installed, tmp_path):
    work, venv, env, done = installed
    # doctor (install.sh's self-check) shows the kit the environment came from
    assert f"kit                {kit}" in done.stdout
    field = work / "field.csv"
    out = sh(
        str(venv / "bin" / "annotator"),
        "results",
        str(work / "f.db"),
        "--out",
        str(field),
        env=env,
        offline=True,
    )
    assert out.returncode == 0, out.stderr
    project, here = tmp_path / "here.db", tmp_path / "here.csv"
    done = run_cli(
        "annotate", str(GOEMO / "items.csv"), "--model", str(ADAPTER), "--project", str(project)
    )
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
    rel = (
        next(f["path"] for f in manifest["files"] if f["path"].startswith("wheels/numpy-"))
        if which == "wheel"
        else manifest["model"]["file"]
    )
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


@pytest.mark.long
def test_archive_holds_the_kit_folder(tmp_path, llama_wheel):
    out = tmp_path / "kit"
    key, signer = _ssh_key(tmp_path, "team")
    (tmp_path / "allowed_signers").write_text(signer)
    done = run_cli(
        "kit",
        "build",
        "--out",
        str(out),
        "--archive",
        "--llama-wheel",
        str(llama_wheel),
        "--sign",
        str(key),
    )
    assert done.returncode == 0, done.stderr
    assert not out.exists() and (tmp_path / "kit.tar.gz").is_file()
    with tarfile.open(tmp_path / "kit.tar.gz") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    unpacked = tmp_path / "unpacked" / "kit"
    assert run_cli("kit", "verify", str(unpacked)).returncode == 0
    # the digest to pass to the laptop by another way than the kit, as sha256sum writes it
    from annotator.kit.verify import sha256_of

    assert done.stdout == f"{sha256_of(unpacked / 'MANIFEST.json')}  MANIFEST.json\n"
    assert "--digest" in done.stderr
    signed = run_cli("kit", "verify", str(unpacked), "--signers", str(tmp_path / "allowed_signers"))
    assert signed.returncode == 0 and "signed by team@field" in signed.stdout, signed.stderr
    manifest = json.loads((unpacked / "MANIFEST.json").read_text())
    assert manifest["model"] is None and manifest["base"]["file_name"].endswith(".gguf")
    assert not (unpacked / "start.sh").exists()


def test_a_sample_without_a_rubric_is_refused_before_any_download(tmp_path):
    done = run_cli(
        "kit", "build", "--out", str(tmp_path / "k"), "--sample", str(GOEMO / "items.csv")
    )
    assert done.returncode == 1 and "--sample needs --rubric" in done.stderr
    assert not list(tmp_path.iterdir())


def test_the_wheelhouse_follows_the_installed_requirement_closure():
    """What `--extras` adds is read from the installed metadata: the base kit has no torch."""
    from annotator.errors import AnnotatorError
    from annotator.kit.wheelhouse import requirement_closure

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


# -- which llama-cpp-python build the kit carries, and whether this CPU runs it ------------
# Crafted wheels (zip files with the right names and libraries) stand in for real builds:
# compiling llama-cpp-python takes minutes.

LLAMA_WHEEL = "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
CPU_LIBS = (
    "llama_cpp/lib/libllama.so",
    "llama_cpp/lib/libggml.so",
    "llama_cpp/lib/libggml-base.so",
    "llama_cpp/lib/libggml-cpu.so",
)


def fake_wheel(folder: Path, name: str, libs=CPU_LIBS) -> Path:
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    dist, version = name.split("-")[:2]
    with zipfile.ZipFile(folder / name, "w") as wheel:
        for lib in libs:
            wheel.writestr(lib, b"\x7fELF" + lib.encode())
        wheel.writestr(f"{dist}-{version}.dist-info/WHEEL", "Wheel-Version: 1.0\n")
    return folder / name


def fake_pip(monkeypatch, cached: list[Path]):
    """pip as `_wheelhouse` sees it: its cache lists `cached`; nothing is downloaded."""
    from annotator.kit import wheelhouse

    def pip(*args, check=True):
        if args[0] == "cache":
            return "".join(f"{p}\n" for p in cached)
        raise AssertionError(f"pip {args} was not expected")

    monkeypatch.setattr(wheelhouse, "_pip", pip)
    monkeypatch.setattr(wheelhouse, "_project_wheel", lambda folder: None)


def test_a_cached_wheel_is_picked_by_its_tags_not_by_the_last_name_match(tmp_path, monkeypatch):
    from annotator.kit import wheelhouse

    cache = tmp_path / "pip-cache"
    fits = fake_wheel(cache / "a", "fakedist-1.0-py3-none-any.whl", libs=())
    others = [
        fake_wheel(cache / "b", "fakedist-1.0-cp27-cp27mu-manylinux1_x86_64.whl", libs=()),
        fake_wheel(cache / "c", "fakedist-1.0-cp311-cp311-win_amd64.whl", libs=()),
    ]
    fake_pip(monkeypatch, [fits, *others])  # the last match by name is another platform's
    house = tmp_path / "wheels"
    wheelhouse._wheelhouse(house, {"fakedist": "1.0"}, lambda _: None)
    assert sorted(p.name for p in house.iterdir()) == [fits.name]


def test_the_llama_wheel_in_pips_cache_is_never_shipped(tmp_path, monkeypatch):
    """pip's cache holds a CUDA build under the right name and version: the kit builds (once,
    kept in its own cache) and ships the portable CPU build instead."""
    import zipfile

    from annotator.kit import llama_wheel as kit_llama
    from annotator.kit import wheelhouse

    cuda = fake_wheel(
        tmp_path / "pip-cache", LLAMA_WHEEL, libs=(*CPU_LIBS, "llama_cpp/lib/libggml-cuda.so")
    )
    fake_pip(monkeypatch, [cuda])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    builds = []

    def compile_llama(version, dest, cmake_args, say):
        builds.append(cmake_args)
        return fake_wheel(dest, f"llama_cpp_python-{version}-py3-none-linux_x86_64.whl")

    monkeypatch.setattr(kit_llama, "_compile_llama", compile_llama, raising=False)
    for n in (1, 2):
        house = tmp_path / f"wheels{n}"
        wheelhouse._wheelhouse(house, {"llama-cpp-python": "0.3.36"}, lambda _: None)
        [shipped] = house.iterdir()
        assert not any("cuda" in f for f in zipfile.ZipFile(shipped).namelist())
    assert len(builds) == 1  # the second kit reuses the build
    assert {"-DGGML_NATIVE=OFF", "-DGGML_CUDA=OFF", "-DGGML_BACKEND_DL=OFF"} <= set(builds[0])
    assert "-DGGML_AVX512=OFF" in builds[0]


@pytest.mark.parametrize("case", ["cuda", "windows", "no-record", "other-bytes", "native"])
def test_a_llama_wheel_not_a_recorded_portable_cpu_build_is_refused(tmp_path, case):
    from annotator.kit.llama_wheel import portable_cmake_args, record_llama_build

    libs = (*CPU_LIBS, "llama_cpp/lib/libggml-cuda.so") if case == "cuda" else CPU_LIBS
    name = LLAMA_WHEEL.replace("linux_x86_64", "win_amd64") if case == "windows" else LLAMA_WHEEL
    wheel = fake_wheel(tmp_path / "w", name, libs)
    args = portable_cmake_args()
    if case == "native":
        args = [a.replace("GGML_NATIVE=OFF", "GGML_NATIVE=ON") for a in args]
    if case != "no-record":
        record_llama_build(wheel, args)
    if case == "other-bytes":
        fake_wheel(tmp_path / "w", name, (*libs, "llama_cpp/lib/extra.so"))
    done = run_cli("kit", "build", "--out", str(tmp_path / "k"), "--llama-wheel", str(wheel))
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"annotator: error: {wheel}: "), line
    assert {
        "cuda": "a GPU build (ggml-cuda)",
        "windows": "not for this Python and platform",
        "no-record": "no build record",
        "other-bytes": "not the wheel its build record",
        "native": "GGML_NATIVE=ON",
    }[case] in line
    assert not (tmp_path / "k").exists()


def _pip_cached_llama_wheel() -> Path | None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "cache", "list", "--format=abspath", "llama_cpp_python"],
        capture_output=True,
        text=True,
    )
    found = [
        Path(p) for p in done.stdout.split() if Path(p).name.startswith("llama_cpp_python-0.3.36-")
    ]
    return found[-1] if found else None


def test_the_wheel_pip_built_here_is_a_cpu_build_with_no_record():
    """The real wheel pip compiled for this venv: its libraries say CPU only, and the kit
    refuses it (built with -march=native for all it can tell), naming it."""
    from annotator.errors import AnnotatorError
    from annotator.kit.llama_wheel import check_llama_wheel, llama_wheel_libraries

    wheel = _pip_cached_llama_wheel()
    if wheel is None:
        pytest.skip("pip's cache holds no llama-cpp-python 0.3.36 wheel (cache disabled)")
    libs = llama_wheel_libraries(wheel)
    assert "libggml-cpu.so" in libs and not any("cuda" in lib for lib in libs)
    with pytest.raises(AnnotatorError, match="no build record"):
        check_llama_wheel(wheel)


def tiny_kit(folder: Path, llama: dict | None) -> Path:
    """A kit with no files but its manifest: enough for the checks of the manifest itself."""
    from annotator.kit import verify as kit_verify

    folder.mkdir()
    manifest = {
        "kit_format": 2,
        "python_tag": kit_verify.python_tag(),
        "platform": kit_verify.platform_name(),
        "files": [],
        "llama_cpp": llama,
    }
    (folder / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return folder


def llama_build(features: list[str]) -> dict:
    return {
        "wheel": f"wheels/{LLAMA_WHEEL}",
        "version": "0.3.36",
        "portable": True,
        "gpu": False,
        "runtime_dispatch": False,
        "cpu_features": features,
        "cmake_args": ["-DGGML_NATIVE=OFF"],
    }


def test_verify_says_whether_this_cpu_runs_the_llama_build(tmp_path, monkeypatch):
    from annotator.kit import verify as kit_verify

    kit = tiny_kit(tmp_path / "kit", llama_build(["avx", "avx2", "avx512f", "fma"]))
    monkeypatch.setattr(kit_verify, "cpu_flags", lambda: {"avx", "avx2", "fma"}, raising=False)
    [line] = kit_verify.check_kit(kit)
    assert line.startswith(f"{kit / 'MANIFEST.json'}: this CPU lacks avx512f")
    assert "illegal instruction" in line
    monkeypatch.setattr(kit_verify, "cpu_flags", lambda: {"avx", "avx2", "avx512f", "fma"})
    assert kit_verify.check_kit(kit) == []
    assert "this CPU has every feature it needs" in kit_verify.llama_summary(
        json.loads((kit / "MANIFEST.json").read_text())
    )
    # the kit build checks its kit, but not against the building machine's CPU
    monkeypatch.setattr(kit_verify, "cpu_flags", lambda: set())
    assert kit_verify.check_kit(kit, cpu=False) == []


def test_kit_verify_names_a_missing_cpu_feature_or_build_record_in_one_line(tmp_path):
    kit = tiny_kit(tmp_path / "kit", llama_build(["no_such_cpu_flag"]))
    done = run_cli("kit", "verify", str(kit))
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == (
        f"{kit / 'MANIFEST.json'}: this CPU lacks no_such_cpu_flag, which the kit's "
        "llama.cpp build needs (it would stop with 'illegal instruction'); build the kit "
        "for this CPU"
    )
    old = tiny_kit(tmp_path / "old", None)
    done = run_cli("kit", "verify", str(old))
    assert done.returncode == 1 and "no record of its llama.cpp build" in done.stderr
    fine = tiny_kit(tmp_path / "fine", llama_build([]))
    done = run_cli("kit", "verify", str(fine))
    assert done.returncode == 0, done.stderr
    assert "llama.cpp: portable CPU build" in done.stdout


def test_a_digest_passed_out_of_band_must_match_the_manifest(tmp_path):
    from annotator.kit import verify as kit_verify

    kit = tiny_kit(tmp_path / "kit", llama_build([]))
    digest = kit_verify.sha256_of(kit / "MANIFEST.json")
    other = "0" * 64
    assert run_cli("kit", "verify", str(kit), "--digest", digest.upper()).returncode == 0
    verify_py = [sys.executable, kit_verify.__file__, str(kit)]
    for cmd in (["kit", "verify", str(kit), "--digest", other], None):
        done = (
            run_cli(*cmd)
            if cmd
            else subprocess.run([*verify_py, "--digest", other], capture_output=True, text=True)
        )
        assert done.returncode == 1
        first = done.stderr.splitlines()[0].removeprefix("kit refused: ")
        assert first == (
            f"{kit / 'MANIFEST.json'}: sha256 {digest} is not the digest given "
            f"({other}): not the kit that was built; install nothing from it"
        )
    done = subprocess.run([*verify_py, "--digest", digest], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    done = run_cli("kit", "verify", str(kit), "--digest", "abc")
    assert done.returncode == 2 and "64 hex digits" in done.stderr


def _ssh_key(folder: Path, name: str) -> tuple[Path, str]:
    """A new ed25519 key (no passphrase) and its allowed_signers line."""
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen (OpenSSH) is not installed")
    key = folder / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
        check=True,
        capture_output=True,
    )
    return key, f"{name}@field {key.with_suffix('.pub').read_text().strip()}\n"


def test_a_signed_kit_is_checked_against_the_allowed_signers(tmp_path):
    from annotator.kit.build import sign_manifest

    team, team_line = _ssh_key(tmp_path, "team")
    _, other_line = _ssh_key(tmp_path, "other")
    (tmp_path / "team_signers").write_text(team_line)
    (tmp_path / "other_signers").write_text(other_line)
    kit = tiny_kit(tmp_path / "kit", llama_build([]))
    unsigned = run_cli("kit", "verify", str(kit), "--signers", str(tmp_path / "team_signers"))
    assert unsigned.returncode == 1
    assert unsigned.stderr.splitlines()[0] == f"{kit / 'MANIFEST.json.sig'}: missing (not signed)"
    sign_manifest(kit, team)
    done = run_cli("kit", "verify", str(kit), "--signers", str(tmp_path / "team_signers"))
    assert done.returncode == 0, done.stderr
    assert "signed by team@field" in done.stdout
    from annotator.kit import verify as kit_verify

    verify_py = [sys.executable, kit_verify.__file__, str(kit), "--signers"]
    assert subprocess.run([*verify_py, str(tmp_path / "team_signers")]).returncode == 0
    other = subprocess.run(
        [*verify_py, str(tmp_path / "other_signers")], capture_output=True, text=True
    )
    assert other.returncode == 1
    assert other.stderr.splitlines()[0] == (
        f"kit refused: {kit / 'MANIFEST.json.sig'}: not signed by a key in "
        f"{tmp_path / 'other_signers'}"
    )
    manifest = json.loads((kit / "MANIFEST.json").read_text())
    manifest["files"].append(
        {"path": "wheels/evil-1.0-py3-none-any.whl", "size": 2, "sha256": "0" * 64}
    )
    (kit / "MANIFEST.json").write_text(json.dumps(manifest))
    done = run_cli("kit", "verify", str(kit), "--signers", str(tmp_path / "team_signers"))
    assert done.returncode == 1
    [first, _] = done.stderr.splitlines()
    assert first.startswith(f"{kit / 'MANIFEST.json.sig'}: does not match MANIFEST.json")
